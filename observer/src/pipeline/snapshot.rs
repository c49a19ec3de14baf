//! A copy of what the pipeline knows, for a report: taken while the agent
//! runs (`GET /report`) and once more at the end, by the same function, so
//! a snapshot and the final report can only differ by what happened in
//! between.

use std::{collections::BTreeMap, time::SystemTime};

use observer_report::{
    Attempt, PhaseMarker,
    observer::{AttributionStats, PayloadStats},
    policy::RegistriesConfReport,
};

use crate::pipeline::{Outputs, Pipeline, verdict::Policy};

/// The pipeline's part of a node report, at `taken_at`.
#[derive(Clone, Debug)]
pub struct PipelineSnapshot {
    pub taken_at: SystemTime,
    /// As recorded, with DNS queries unanswered for too long counted (see
    /// `Recorder::attempts_at`); judged again by [`Self::policy`] when the
    /// report is built.
    pub attempts: Vec<Attempt>,
    /// The policy in force (a reload may have changed it).
    pub policy: Policy,
    pub phases: Vec<PhaseMarker>,
    pub registries_conf: Option<RegistriesConfReport>,
    /// Records that did not decode, by parser.
    pub parse_errors: BTreeMap<String, u64>,
    pub payload_parsers: PayloadStats,
    pub attribution: AttributionStats,
    /// Registry events in no attempt: the table was full.
    pub not_recorded: u64,
}

/// The pipeline's own counters, for `/metrics` at scrape time: cheaper
/// than a snapshot (no attempts), and the pipeline updates no metric per
/// event but the attempts themselves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineCounters {
    /// Records that did not decode, by parser.
    pub parse_errors: BTreeMap<&'static str, u64>,
    pub payload_parsers: PayloadStats,
    pub attribution: AttributionStats,
    /// When the latest kernel record arrived.
    pub last_event_at: Option<SystemTime>,
}

impl<O: Outputs> Pipeline<O> {
    pub fn counters(&self) -> PipelineCounters {
        PipelineCounters {
            parse_errors: self.stats.parse_errors.clone(),
            payload_parsers: self.connections.stats().clone(),
            attribution: self.attributor.stats().clone(),
            last_event_at: self.stats.last_event_at,
        }
    }

    /// Copies the state a report needs; changes nothing, so observing goes
    /// on as if it had not been taken.
    pub fn snapshot(&self, now: SystemTime) -> PipelineSnapshot {
        PipelineSnapshot {
            taken_at: now,
            attempts: self.recorder.attempts_at(now),
            policy: self.policy.clone(),
            phases: self.phases.markers(),
            registries_conf: self.registries_conf.as_ref().map(|c| c.report()),
            parse_errors: self
                .stats
                .parse_errors
                .iter()
                .map(|(parser, n)| (parser.to_string(), *n))
                .collect(),
            payload_parsers: self.connections.stats().clone(),
            attribution: self.attributor.stats().clone(),
            not_recorded: self.recorder.not_recorded(),
        }
    }
}
