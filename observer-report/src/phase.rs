//! The `phases` list: when each phase of the run began, and who began it.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::time::{parse_rfc3339, rfc3339};

/// Who started a phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseSource {
    /// The phase the agent started in (`--phase`, default `boot`).
    Start,
    /// `registry-observer mark NAME` over the control socket.
    Mark,
    /// `POST /phase` on the HTTP endpoint.
    Http,
}

/// One entry of the report's `phases` list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseMarker {
    pub name: String,
    #[serde(serialize_with = "rfc3339", deserialize_with = "parse_rfc3339")]
    pub started_at: SystemTime,
    pub source: PhaseSource,
}
