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

pub mod agent;
pub mod attribute;
pub mod classify;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connections;
pub mod control;
pub mod decode;
pub mod events_log;
pub mod export;
pub mod http;
pub mod kubernetes;
pub mod lint;
pub mod load;
pub mod metrics;
pub mod payload;
pub mod phase;
pub mod pipeline;
pub mod policy;
pub mod preflight;
pub mod read;
pub mod record;
pub mod report;
pub mod scope;
pub mod textfile;
pub mod webhook;

/// An error that is the user's to fix (privileges, paths, the machine's
/// setup): printed as one sentence, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
