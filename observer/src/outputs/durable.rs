//! The durable record (`run --state-dir`): each attempt an event left, each
//! phase marker, and the run's counts every tick, appended to the state
//! dir's spool. `write()` puts a record in the page cache, which outlives
//! `kill -9`; each tick's `fsync` is for power loss.
//!
//! A full or failing disk never stops the agent: records that could not be
//! written are counted (`observer.losses.state_dir`) and the first failure
//! is said once.

use observer_report::{Attempt, PhaseMarker};
use observer_state::{
    record::{DurableRecord, DurableState, Ended, RunCounts, RunStart},
    spool::SpoolWriter,
};

pub struct Durable {
    writer: SpoolWriter,
    losses: DurableLosses,
    warned: bool,
}

/// What the spool lost, for `observer.losses`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DurableLosses {
    /// Records not written (disk full, I/O error).
    pub records: u64,
    /// Oldest segments removed to stay under the spool's size limit.
    pub segments_removed: u64,
}

impl Durable {
    pub fn new(writer: SpoolWriter) -> Durable {
        Durable {
            writer,
            losses: DurableLosses::default(),
            warned: false,
        }
    }

    pub fn losses(&self) -> DurableLosses {
        self.losses
    }

    /// This run begins: recorded and made durable before any event.
    pub fn start(&mut self, run: &RunStart) {
        self.append(&DurableRecord::RunStarted { run: run.clone() });
        if let Err(e) = self.writer.sync() {
            self.fail(&format!("syncing it: {e}"));
        }
    }

    pub fn attempt(&mut self, attempt: &Attempt) {
        self.append(&DurableRecord::Attempt {
            attempt: Box::new(attempt.clone()),
        });
    }

    pub fn phase(&mut self, marker: &PhaseMarker) {
        self.append(&DurableRecord::Phase {
            marker: marker.clone(),
        });
    }

    /// The run's counts so far, made durable with everything before them.
    pub fn tick(&mut self, counts: &RunCounts) {
        self.append(&DurableRecord::Counts {
            counts: counts.clone(),
        });
        if let Err(e) = self.writer.sync() {
            self.fail(&format!("syncing it: {e}"));
        }
    }

    /// The run's end: its last counts, how it ended, and a checkpoint of
    /// the whole record so the next start reads one segment.
    pub fn finish(
        mut self,
        counts: &RunCounts,
        ended: Ended,
        state: DurableState,
    ) -> DurableLosses {
        self.append(&DurableRecord::Counts {
            counts: counts.clone(),
        });
        self.append(&DurableRecord::RunEnded { ended });
        if let Err(e) = self
            .writer
            .checkpoint(&record_bytes(&DurableRecord::Checkpoint { state }))
        {
            self.losses.records += 1;
            self.fail(&format!("writing its checkpoint: {e}"));
        }
        self.losses
    }

    fn append(&mut self, record: &DurableRecord) {
        match self.writer.append(&record_bytes(record)) {
            Ok(removed) if removed.segments > 0 => {
                self.losses.segments_removed += removed.segments;
                self.fail(&format!(
                    "it outgrew its size limit; {} oldest segment(s) removed",
                    removed.segments
                ));
            }
            Ok(_) => {}
            Err(e) => {
                self.losses.records += 1;
                self.fail(&e.to_string());
            }
        }
    }

    fn fail(&mut self, what: &str) {
        if !self.warned {
            self.warned = true;
            eprintln!(
                "registry-observer: warning: the state dir's spool: {what}; the record there is incomplete (observer.losses.state_dir), the run goes on"
            );
        }
    }
}

fn record_bytes(record: &DurableRecord) -> Vec<u8> {
    serde_json::to_vec(record).expect("durable records serialize")
}
