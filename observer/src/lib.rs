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
/// setup): printed as one sentence (its Display), exit code 2. It holds the
/// typed error of the stage that refused, or a sentence.
#[cfg(feature = "agent")]
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(Box<dyn std::error::Error + Send + Sync>);

#[cfg(feature = "agent")]
impl UsageError {
    /// `.map_err(UsageError::new)?` on any error (or a `String`).
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> UsageError {
        UsageError(error.into())
    }

    /// The error it holds, for `downcast_ref`.
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

#[cfg(all(test, feature = "agent"))]
mod tests {
    use super::UsageError;

    #[test]
    fn a_usage_error_shows_and_keeps_what_it_holds() {
        let io = std::io::Error::other("no such thing");
        let usage = UsageError::new(io);
        assert_eq!(usage.to_string(), "no such thing");
        assert!(usage.get_ref().downcast_ref::<std::io::Error>().is_some());
        assert_eq!(UsageError::new("a sentence").to_string(), "a sentence");
    }
}
