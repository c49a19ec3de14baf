//! registry-observer: who tried to reach an image registry, when, and how we
//! know.
//!
//! Stages, one module each, data flowing one way:
//! load -> read -> decode -> classify -> attribute -> record -> export.
//! `agent` wires them for `registry-observer run`; `pipeline` runs the
//! middle stages on one thread.

pub mod agent;
pub mod attribute;
pub mod classify;
pub mod cli;
pub mod clock;
pub mod config;
pub mod decode;
pub mod export;
pub mod load;
pub mod pipeline;
pub mod policy;
pub mod preflight;
pub mod read;
pub mod record;
pub mod report;
pub mod scope;
pub mod textfile;

/// An error that is the user's to fix (privileges, paths, the machine's
/// setup): printed as one sentence, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
