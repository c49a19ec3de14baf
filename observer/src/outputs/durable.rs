//! The durable record (`run --state-dir`): each attempt an event left, each
//! phase marker, and the run's counts every tick, appended to the state
//! dir's spool. `write()` puts a record in the page cache, which outlives
//! `kill -9`; each tick's `fsync` is for power loss.
//!
//! The spool is compacted while the agent runs: once it has grown past
//! [`CHECKPOINT_BYTES`] (and twice its last checkpoint), the next tick
//! writes the whole record as a checkpoint and the older segments go, so a
//! run of months stays within the spool's size bound instead of losing its
//! oldest records.
//!
//! A full or failing disk never stops the agent: records that could not be
//! written are counted (`observer.losses.state_dir`) and the first failure
//! is said once.

use observer_report::{Attempt, PhaseMarker};
use observer_state::{
    record::{
        DurableRecord, DurableState, Ended, RingCursor, Run, RunCounts, RunStart,
        attempt_record_bytes,
    },
    spool::SpoolWriter,
};

/// The spool grows to at least this before a checkpoint compacts it: a
/// checkpoint writes every attempt, so not too often.
pub const CHECKPOINT_BYTES: u64 = 32 << 20;

pub struct Durable {
    writer: SpoolWriter,
    losses: DurableLosses,
    warned: bool,
    /// The runs before this one, and this one: a checkpoint holds them all.
    previous_runs: Vec<Run>,
    this_run: Option<RunStart>,
    last_counts: Option<RunCounts>,
    checkpoint_bytes: u64,
    /// Spool size right after the last checkpoint.
    after_checkpoint: u64,
    /// The ring position of the kernel record being applied.
    position: Option<u64>,
    /// How far the record has applied this run's pinned ring (or the ring
    /// an earlier run left, until this run applies one of its own).
    cursor: Option<RingCursor>,
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
    pub fn new(
        writer: SpoolWriter,
        previous_runs: Vec<Run>,
        cursor: Option<RingCursor>,
    ) -> Durable {
        let mut durable = Durable::with_checkpoint_bytes(writer, previous_runs, CHECKPOINT_BYTES);
        durable.cursor = cursor;
        durable
    }

    pub fn with_checkpoint_bytes(
        writer: SpoolWriter,
        previous_runs: Vec<Run>,
        checkpoint_bytes: u64,
    ) -> Durable {
        Durable {
            writer,
            losses: DurableLosses::default(),
            warned: false,
            previous_runs,
            this_run: None,
            last_counts: None,
            checkpoint_bytes,
            after_checkpoint: 0,
            position: None,
            cursor: None,
        }
    }

    pub fn losses(&self) -> DurableLosses {
        self.losses
    }

    /// This run begins: recorded and made durable before any event.
    pub fn start(&mut self, run: &RunStart) {
        self.this_run = Some(run.clone());
        self.append(&DurableRecord::RunStarted { run: run.clone() });
        if let Err(e) = self.writer.sync() {
            self.fail(&format!("syncing it: {e}"));
        }
    }

    /// The kernel record whose attempts follow (None: none).
    pub fn ring_position(&mut self, position: Option<u64>) {
        self.position = position;
    }

    pub fn attempt(&mut self, attempt: &Attempt) {
        let position = self
            .position
            .filter(|_| self.this_run.as_ref().is_some_and(|run| run.ring.is_some()));
        self.append_bytes(&attempt_record_bytes(attempt, position));
        if let (Some(ring), Some(position)) = (
            self.this_run.as_ref().and_then(|run| run.ring.as_deref()),
            position,
        ) {
            RingCursor::advance(&mut self.cursor, ring, position);
        }
    }

    /// How far the record has applied the pinned ring, for the final
    /// checkpoint.
    pub fn ring_cursor(&self) -> Option<RingCursor> {
        self.cursor.clone()
    }

    pub fn phase(&mut self, marker: &PhaseMarker) {
        self.append(&DurableRecord::Phase {
            marker: marker.clone(),
        });
    }

    /// The run's counts so far, made durable with everything before them.
    /// Returns whether the spool wants a checkpoint now.
    pub fn tick(&mut self, counts: &RunCounts) -> bool {
        self.last_counts = Some(counts.clone());
        self.append(&DurableRecord::Counts {
            counts: counts.clone(),
        });
        if let Err(e) = self.writer.sync() {
            self.fail(&format!("syncing it: {e}"));
        }
        let bytes = self.writer.bytes();
        bytes > self.checkpoint_bytes && bytes > 2 * self.after_checkpoint
    }

    /// Writes the whole record (the recorder's attempts as they stand, the
    /// phases, every run with this one still going) as a checkpoint; the
    /// older segments go.
    pub fn checkpoint(&mut self, attempts: &[Attempt], phases: &[PhaseMarker]) {
        let mut runs = self.previous_runs.clone();
        runs.extend(self.this_run.clone().map(|start| Run {
            start,
            counts: self.last_counts.clone(),
            ended: None,
        }));
        let state = DurableState::new(attempts.to_vec(), phases.to_vec(), runs)
            .with_ring_cursor(self.cursor.clone());
        match self
            .writer
            .checkpoint(&record_bytes(&DurableRecord::Checkpoint { state }))
        {
            Ok(()) => self.after_checkpoint = self.writer.bytes(),
            Err(e) => {
                self.losses.records += 1;
                self.fail(&format!("writing a checkpoint: {e}"));
            }
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
        self.append_bytes(&record_bytes(record));
    }

    fn append_bytes(&mut self, bytes: &[u8]) {
        match self.writer.append(bytes) {
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

#[cfg(test)]
mod tests {
    use observer_report::fixtures;
    use observer_state::spool::{self, Limits};

    use super::*;

    fn replay(dir: &std::path::Path) -> DurableState {
        let recovered = spool::read(dir, Some("node")).unwrap();
        let records: Vec<DurableRecord> = recovered
            .records
            .iter()
            .map(|r| serde_json::from_slice(r).unwrap())
            .collect();
        DurableState::replay(&records)
    }

    #[test]
    fn a_growing_spool_is_compacted_by_a_checkpoint_and_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            segment_bytes: 4096,
            max_bytes: 1 << 20,
        };
        let (writer, _) = SpoolWriter::open(dir.path(), "node", limits).unwrap();
        let mut durable = Durable::with_checkpoint_bytes(writer, vec![], 16 << 10);
        durable.start(&RunStart {
            started_at: fixtures::at(0),
            pid: 42,
            version: "0.1.0".into(),
            ring: None,
            lost_while_down: None,
        });
        let mut attempt = fixtures::attempt("boot", "kubelet", "quay.io", 10);
        let counts = |at| RunCounts {
            at: fixtures::at(at),
            events_total: at,
            events_lost: 0,
            kernel_lost_raw: None,
        };
        let mut checkpoints = 0;
        for second in 1..=200 {
            attempt.count = second;
            durable.attempt(&attempt);
            if durable.tick(&counts(second)) {
                durable.checkpoint(std::slice::from_ref(&attempt), &[]);
                checkpoints += 1;
            }
        }
        assert!(checkpoints >= 1, "the spool outgrew 16 KiB");
        assert!(
            durable.writer.bytes() < 24 << 10,
            "{}",
            durable.writer.bytes()
        );
        assert_eq!(durable.losses(), DurableLosses::default());
        let state = replay(dir.path());
        assert_eq!(state.attempts.len(), 1);
        assert_eq!(
            state.attempts[0].count, 200,
            "the latest, after the checkpoint"
        );
        assert_eq!(state.runs.len(), 1);
        assert_eq!(state.runs[0].start.pid, 42);
        assert_eq!(state.runs[0].counts.as_ref().unwrap().events_total, 200);
        assert!(state.runs[0].ended.is_none(), "still running");
    }
}
