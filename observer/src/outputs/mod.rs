//! Where observations go as they happen: one human line per attempt
//! (`console`), the JSONL trail (`events_log`) and the Prometheus registry
//! (`metrics`). The report file is written by `run` from a snapshot, with
//! `observer_report`.

pub mod console;
pub mod durable;
pub mod events_log;
pub mod metrics;

use std::{sync::Arc, time::SystemTime};

use observer_report::{Attempt, PhaseMarker};

use observer_state::record::RunCounts;

use crate::{
    outputs::{
        console::Console,
        durable::Durable,
        events_log::{EventsLog, Line},
        metrics::Metrics,
    },
    pipeline::{Outputs, attribute::Origin, classify::Match},
};

/// The outputs of `registry-observer run`, fed by the pipeline.
pub struct Live {
    pub console: Console,
    pub metrics: Arc<Metrics>,
    pub events_log: EventsLog,
    /// With `--state-dir`.
    pub durable: Option<Durable>,
    /// Told of each phase marker (the state dir's report.json is rewritten
    /// then).
    pub phase_changed: Option<Arc<tokio::sync::Notify>>,
}

impl Outputs for Live {
    fn attempt(&mut self, at: SystemTime, matched: &Match, origin: &Origin, attempt: &Attempt) {
        if let Some(durable) = &mut self.durable {
            durable.attempt(attempt);
        }
        self.console
            .line(&console::format_line(at, matched, origin));
        self.metrics.record_event(attempt, &matched.evidence);
        if self.events_log.enabled() {
            self.events_log.send(Line::Attempt {
                time: at,
                attempt: Box::new(attempt.clone()),
            });
        }
    }

    fn not_recorded(&mut self, at: SystemTime, matched: &Match, origin: &Origin) {
        self.console.line(&format!(
            "{} (not recorded: the attempts table is full, see --max-attempts)",
            console::format_line(at, matched, origin)
        ));
        self.metrics.attempt_not_recorded();
    }

    fn attempt_updated(&mut self, attempt: &Attempt) {
        if let Some(durable) = &mut self.durable {
            durable.attempt(attempt);
        }
    }

    fn tick(&mut self, counts: &RunCounts) -> bool {
        self.durable
            .as_mut()
            .is_some_and(|durable| durable.tick(counts))
    }

    fn checkpoint(&mut self, attempts: &[Attempt], phases: &[PhaseMarker]) {
        if let Some(durable) = &mut self.durable {
            durable.checkpoint(attempts, phases);
        }
    }

    fn ring_position(&mut self, position: Option<u64>) {
        if let Some(durable) = &mut self.durable {
            durable.ring_position(position);
        }
    }

    fn phase(&mut self, at: SystemTime, marker: &PhaseMarker) {
        if let Some(durable) = &mut self.durable {
            durable.phase(marker);
        }
        if let Some(changed) = &self.phase_changed {
            changed.notify_one();
        }
        self.console.line(&console::format_phase_line(marker));
        self.events_log.send(Line::Phase {
            time: at,
            marker: marker.clone(),
        });
    }
}
