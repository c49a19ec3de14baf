//! registry-observer: who tried to reach an image registry, when, and how we
//! know.
//!
//! Stages, one module each, data flowing one way:
//! load -> read -> decode -> join (connections, process lineage) ->
//! classify -> attribute -> record -> export.
//! `payload` holds the pure parsers for the first bytes of TCP connections
//! (TLS SNI, HTTP proxy requests, DNS over TCP), used by `connections`.
//! `agent` wires them for `registry-observer run`; `pipeline` runs the
//! middle stages on one thread. Outputs besides the live lines: `report`
//! (JSON, and from it JUnit, summaries, merge and diff), `events_log`
//! (JSONL), `metrics` served by `http`; `phase` changes arrive through
//! `control` (the socket) or `http`. `lint` checks Kubernetes manifests for
//! image pull policies that contact a registry (its own stages inside);
//! `webhook` applies the same checks to AdmissionReviews over HTTPS.
//! `kubernetes` reads the kubelet's `Pulling` events from the API and joins
//! them to pod specs, as pull intents (`attribute::pull_intent`).

#[cfg(feature = "agent")]
pub mod agent;
#[cfg(feature = "agent")]
pub mod attribute;
#[cfg(feature = "agent")]
pub mod classify;
pub mod cli;
#[cfg(feature = "agent")]
pub mod clock;
#[cfg(feature = "agent")]
pub mod config;
#[cfg(feature = "agent")]
pub mod connections;
#[cfg(feature = "agent")]
pub mod control;
#[cfg(feature = "agent")]
pub mod decode;
#[cfg(feature = "agent")]
pub mod events_log;
#[cfg(feature = "agent")]
pub mod export;
#[cfg(feature = "agent")]
pub mod http;
#[cfg(feature = "agent")]
pub mod kubernetes;
#[cfg(feature = "agent")]
pub mod load;
#[cfg(feature = "agent")]
pub mod metrics;
#[cfg(feature = "agent")]
pub mod payload;
#[cfg(feature = "agent")]
pub mod phase;
#[cfg(feature = "agent")]
pub mod pipeline;
#[cfg(feature = "agent")]
pub mod policy;
#[cfg(feature = "agent")]
pub mod preflight;
#[cfg(feature = "agent")]
pub mod read;
#[cfg(feature = "agent")]
pub mod record;
#[cfg(feature = "agent")]
pub mod scope;
#[cfg(feature = "agent")]
pub mod textfile;

/// An error that is the user's to fix (privileges, paths, the machine's
/// setup): printed as one sentence, exit code 2.
#[cfg(feature = "agent")]
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
