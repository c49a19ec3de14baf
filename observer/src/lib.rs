//! registry-observer: who tried to reach an image registry, when, and how we
//! know.
//!
//! The agent (`run`, behind the default `agent` feature) in import order:
//! each top-level module may use the ones before it, never one after
//! (`tests::layering` checks it):
//!
//! `clock`, `textfile` (used by all) -> `bpf` (load the kernel programs,
//! read their ring buffer) -> `sources` (CRI, Kubernetes API, pull
//! intents, the resolver) -> `pipeline` (decode -> join -> classify ->
//! attribute -> record -> verdict, on one thread) -> `correlate`
//! (on-behalf-of, at report time) -> `outputs` (console, events file,
//! metrics) -> `control` (control socket, HTTP endpoint) -> `setup`
//! (config, preflight) -> `run` (prepare, attach, observe, stop, report)
//! -> `cli`.
//!
//! The report format, `lint` and `webhook` are crates of their own
//! (observer-report, observer-lint, observer-webhook), so `cli` builds them
//! without the agent.

#[cfg(feature = "agent")]
pub mod bpf;
pub mod cli;
#[cfg(feature = "agent")]
pub mod clock;
#[cfg(feature = "agent")]
pub mod control;
#[cfg(feature = "agent")]
pub mod correlate;
#[cfg(feature = "agent")]
pub mod outputs;
#[cfg(feature = "agent")]
pub mod pipeline;
#[cfg(feature = "agent")]
pub mod run;
#[cfg(feature = "agent")]
pub mod setup;
#[cfg(feature = "agent")]
pub mod sources;
#[cfg(feature = "agent")]
pub mod textfile;

#[cfg(all(test, feature = "agent"))]
mod layering;

/// An error that is the user's to fix (privileges, paths, the machine's
/// setup): printed as one sentence, exit code 2.
#[cfg(feature = "agent")]
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
