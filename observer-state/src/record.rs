//! What the agent keeps in its spool, and how the state is rebuilt from it.
//! Pure: records in, state out.
//!
//! Every record holds absolute values (the whole attempt after an event,
//! the run's counts so far), never increments, so replaying a record twice
//! (a segment read again, a record written again after a restart) changes
//! nothing, and the latest record wins.

use std::{collections::HashMap, time::SystemTime};

use observer_report::{
    Attempt, PhaseMarker,
    attempt::AttemptKey,
    time::{parse_rfc3339, rfc3339},
};
use serde::{Deserialize, Serialize};

/// One record of the spool (JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DurableRecord {
    /// The whole state: the first record of a base segment.
    Checkpoint { state: DurableState },
    /// An agent started on the state dir.
    RunStarted { run: RunStart },
    /// An attempt as an event left it, with the ring position of that
    /// event's kernel record (absent for records older than positions).
    Attempt {
        attempt: Box<Attempt>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ring_position: Option<u64>,
    },
    /// A phase began.
    Phase { marker: PhaseMarker },
    /// The current run's counts so far; also says it was alive then.
    Counts { counts: RunCounts },
    /// The current run ended and said so.
    RunEnded { ended: Ended },
}

/// When and how a run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    /// For a crash: its last sign of life (its latest counts, else its
    /// start), since the moment itself left no trace.
    #[serde(serialize_with = "rfc3339", deserialize_with = "parse_rfc3339")]
    pub at: SystemTime,
    pub how: RunEnd,
}

/// How an agent's run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEnd {
    /// Its duration ran out or its command exited.
    Clean,
    /// Stopped by a signal it handled (SIGTERM, SIGINT).
    Signal { signal: String },
    /// It left no end record: killed (SIGKILL, OOM) or the node lost power.
    /// Found by the next run on the same dir.
    Crashed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStart {
    #[serde(serialize_with = "rfc3339", deserialize_with = "parse_rfc3339")]
    pub started_at: SystemTime,
    pub pid: u32,
    pub version: String,
    /// The pinned ring buffer it read (service mode): `<boot id>/<map id>`,
    /// unique for the ring's life (bpffs is empty after a reboot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring: Option<String>,
    /// On the ring the run before read: the events the kernel could not
    /// put in it while no agent drained it (it was full), from the pinned
    /// loss counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_while_down: Option<u64>,
}

/// A run's counts, absolute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCounts {
    /// When these counts were taken: the run was alive then.
    #[serde(serialize_with = "rfc3339", deserialize_with = "parse_rfc3339")]
    pub at: SystemTime,
    pub events_total: u64,
    pub events_lost: u64,
    /// The pinned loss counters' raw sum (service mode): what the next
    /// agent compares with to count the losses while no agent drained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_lost_raw: Option<u64>,
}

/// How far the record has applied a pinned ring buffer: records at or
/// before `applied_through` are in the record already (an agent killed
/// after appending their effect, before consuming them, left them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingCursor {
    /// As [`RunStart::ring`].
    pub ring: String,
    pub applied_through: u64,
}

impl RingCursor {
    /// Notes that the record at `position` of `ring` was applied: the
    /// cursor moves forward on the same ring and starts anew on another.
    pub fn advance(cursor: &mut Option<RingCursor>, ring: &str, position: u64) {
        match cursor {
            Some(cursor) if cursor.ring == ring => {
                cursor.applied_through = cursor.applied_through.max(position);
            }
            _ => {
                *cursor = Some(RingCursor {
                    ring: ring.to_string(),
                    applied_through: position,
                })
            }
        }
    }
}

/// One agent run on the dir, as the record knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub start: RunStart,
    /// The latest counts it wrote (the last sign of life, for a crash).
    pub counts: Option<RunCounts>,
    /// None while it runs (or until the next run finds it crashed).
    pub ended: Option<Ended>,
}

/// Everything the record holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DurableState {
    pub attempts: Vec<Attempt>,
    pub phases: Vec<PhaseMarker>,
    pub runs: Vec<Run>,
    /// The latest ring position whose effect is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_cursor: Option<RingCursor>,
    /// Index of `attempts` by key; rebuilt on load.
    #[serde(skip)]
    index: HashMap<AttemptKey, usize>,
}

/// The bytes of a [`DurableRecord::Attempt`] for `attempt`, serialized from
/// the borrowed attempt: the agent writes one per registry event, and a
/// copy of the attempt (argv, ancestors, pod labels) for each would be the
/// larger part of the cost.
pub fn attempt_record_bytes(attempt: &Attempt, ring_position: Option<u64>) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    enum Borrowed<'a> {
        Attempt {
            attempt: &'a Attempt,
            #[serde(skip_serializing_if = "Option::is_none")]
            ring_position: Option<u64>,
        },
    }
    serde_json::to_vec(&Borrowed::Attempt {
        attempt,
        ring_position,
    })
    .expect("attempts serialize")
}

/// Decodes spool payloads; returns the records and how many could not be
/// read (their checksum held, but this build does not know them).
pub fn decode_all(payloads: &[Vec<u8>]) -> (Vec<DurableRecord>, u64) {
    let mut unreadable = 0;
    let records = payloads
        .iter()
        .filter_map(|bytes| {
            serde_json::from_slice(bytes)
                .map_err(|_| unreadable += 1)
                .ok()
        })
        .collect();
    (records, unreadable)
}

impl DurableState {
    pub fn new(attempts: Vec<Attempt>, phases: Vec<PhaseMarker>, runs: Vec<Run>) -> DurableState {
        let mut state = DurableState {
            attempts,
            phases,
            runs,
            ring_cursor: None,
            index: HashMap::new(),
        };
        state.reindex();
        state
    }

    /// The ring position the record has applied through, for a checkpoint.
    pub fn with_ring_cursor(mut self, cursor: Option<RingCursor>) -> DurableState {
        self.ring_cursor = cursor;
        self
    }

    /// Rebuilds the state from records in spool order.
    pub fn replay<'a>(records: impl IntoIterator<Item = &'a DurableRecord>) -> DurableState {
        let mut state = DurableState::default();
        for record in records {
            state.apply(record);
        }
        state
    }

    pub fn apply(&mut self, record: &DurableRecord) {
        match record {
            DurableRecord::Checkpoint { state } => {
                *self = state.clone();
                self.reindex();
            }
            DurableRecord::RunStarted { run } => {
                // A run that left no end record when the next began crashed.
                if self.runs.last().is_some_and(|last| last.start == *run) {
                    return;
                }
                if let Some(previous) = self.runs.last_mut()
                    && previous.ended.is_none()
                {
                    previous.ended = Some(Ended {
                        at: previous
                            .counts
                            .as_ref()
                            .map_or(previous.start.started_at, |c| c.at),
                        how: RunEnd::Crashed,
                    });
                }
                self.runs.push(Run {
                    start: run.clone(),
                    counts: None,
                    ended: None,
                });
            }
            DurableRecord::Attempt {
                attempt,
                ring_position,
            } => {
                if let (Some(position), Some(ring)) = (
                    ring_position,
                    self.runs.last().and_then(|run| run.start.ring.as_ref()),
                ) {
                    RingCursor::advance(&mut self.ring_cursor, ring, *position);
                }
                let key = AttemptKey::of(attempt);
                match self.index.get(&key) {
                    Some(&at) => self.attempts[at] = (**attempt).clone(),
                    None => {
                        self.index.insert(key, self.attempts.len());
                        self.attempts.push((**attempt).clone());
                    }
                }
            }
            DurableRecord::Phase { marker } => {
                if !self.phases.contains(marker) {
                    self.phases.push(marker.clone());
                }
            }
            DurableRecord::Counts { counts } => {
                if let Some(run) = self.runs.last_mut() {
                    run.counts = Some(counts.clone());
                }
            }
            DurableRecord::RunEnded { ended } => {
                if let Some(run) = self.runs.last_mut() {
                    run.ended = Some(ended.clone());
                }
            }
        }
    }

    fn reindex(&mut self) {
        self.index = self
            .attempts
            .iter()
            .enumerate()
            .map(|(at, attempt)| (AttemptKey::of(attempt), at))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use observer_report::{fixtures, phase::PhaseSource};

    use super::*;

    fn start(seconds: u64, pid: u32) -> DurableRecord {
        DurableRecord::RunStarted {
            run: RunStart {
                started_at: fixtures::at(seconds),
                pid,
                version: "0.1.0".into(),
                ring: None,
                lost_while_down: None,
            },
        }
    }

    fn attempt(count: u64) -> DurableRecord {
        let mut attempt = fixtures::attempt("boot", "kubelet", "quay.io", 10);
        attempt.count = count;
        DurableRecord::Attempt {
            attempt: Box::new(attempt),
            ring_position: None,
        }
    }

    fn counts(seconds: u64, events: u64) -> DurableRecord {
        DurableRecord::Counts {
            counts: RunCounts {
                at: fixtures::at(seconds),
                events_total: events,
                events_lost: 0,
                kernel_lost_raw: None,
            },
        }
    }

    #[test]
    fn the_latest_attempt_wins_and_replaying_twice_changes_nothing() {
        let records = vec![start(0, 10), attempt(1), attempt(2), attempt(5)];
        let state = DurableState::replay(&records);
        assert_eq!(state.attempts.len(), 1);
        assert_eq!(state.attempts[0].count, 5);
        let twice: Vec<DurableRecord> = records.iter().chain(&records).cloned().collect();
        assert_eq!(DurableState::replay(&twice), state);
    }

    #[test]
    fn a_run_without_an_end_record_crashed_at_its_last_sign_of_life() {
        let records = vec![
            start(0, 10),
            counts(5, 100),
            counts(9, 150),
            // kill -9 here: no RunEnded.
            start(20, 11),
            counts(25, 30),
            DurableRecord::RunEnded {
                ended: Ended {
                    at: fixtures::at(30),
                    how: RunEnd::Signal {
                        signal: "SIGTERM".into(),
                    },
                },
            },
        ];
        let state = DurableState::replay(&records);
        assert_eq!(state.runs.len(), 2);
        let crashed = state.runs[0].ended.as_ref().unwrap();
        assert_eq!(crashed.how, RunEnd::Crashed);
        assert_eq!(crashed.at, fixtures::at(9));
        assert_eq!(state.runs[0].counts.as_ref().unwrap().events_total, 150);
        assert_eq!(
            state.runs[1].ended.as_ref().unwrap().how,
            RunEnd::Signal {
                signal: "SIGTERM".into()
            }
        );
    }

    #[test]
    fn the_ring_cursor_is_the_latest_position_of_the_current_runs_ring() {
        let on_ring = |seconds, ring: &str| DurableRecord::RunStarted {
            run: RunStart {
                started_at: fixtures::at(seconds),
                pid: 7,
                version: "0.1.0".into(),
                ring: Some(ring.into()),
                lost_while_down: None,
            },
        };
        let at = |position| {
            let DurableRecord::Attempt { attempt, .. } = attempt(1) else {
                unreachable!()
            };
            DurableRecord::Attempt {
                attempt,
                ring_position: Some(position),
            }
        };
        let state = DurableState::replay(&[on_ring(0, "b/1"), at(64), at(4096), at(128)]);
        let cursor = state.ring_cursor.clone().unwrap();
        assert_eq!(
            (cursor.ring.as_str(), cursor.applied_through),
            ("b/1", 4096)
        );
        // Through a checkpoint, and a later run on the same ring goes on.
        let state = DurableState::replay(&[
            DurableRecord::Checkpoint { state },
            on_ring(5, "b/1"),
            at(8192),
        ]);
        assert_eq!(state.ring_cursor.as_ref().unwrap().applied_through, 8192);
        // A new ring (a reboot, or pins replaced) starts its own cursor.
        let state = DurableState::replay(&[
            DurableRecord::Checkpoint { state },
            on_ring(9, "c/3"),
            at(16),
        ]);
        let cursor = state.ring_cursor.unwrap();
        assert_eq!((cursor.ring.as_str(), cursor.applied_through), ("c/3", 16));
        // Without a ring (a plain run), positions mean nothing.
        let state = DurableState::replay(&[start(0, 10), at(64)]);
        assert_eq!(state.ring_cursor, None);
    }

    #[test]
    fn a_checkpoint_replaces_everything_before_it_and_later_records_merge_into_it() {
        let before = DurableState::replay(&[start(0, 10), attempt(3)]);
        let records = vec![
            DurableRecord::Checkpoint {
                state: before.clone(),
            },
            attempt(4),
            DurableRecord::Phase {
                marker: PhaseMarker {
                    name: "upgrade".into(),
                    started_at: fixtures::at(40),
                    source: PhaseSource::Mark,
                },
            },
        ];
        let state = DurableState::replay(&records);
        assert_eq!(state.attempts.len(), 1, "merged by key after a checkpoint");
        assert_eq!(state.attempts[0].count, 4);
        assert_eq!(state.runs, before.runs);
        assert_eq!(state.phases.len(), 1);
    }

    #[test]
    fn records_round_trip_through_json() {
        let records = vec![
            start(0, 10),
            attempt(2),
            counts(5, 10),
            DurableRecord::RunEnded {
                ended: Ended {
                    at: fixtures::at(6) + Duration::from_millis(250),
                    how: RunEnd::Clean,
                },
            },
        ];
        for record in &records {
            let json = serde_json::to_vec(record).unwrap();
            let back: DurableRecord = serde_json::from_slice(&json).unwrap();
            assert_eq!(&back, record, "{}", String::from_utf8_lossy(&json));
        }
        let state = DurableState::replay(&records);
        let json = serde_json::to_vec(&DurableRecord::Checkpoint {
            state: state.clone(),
        })
        .unwrap();
        let DurableRecord::Checkpoint { state: back } = serde_json::from_slice(&json).unwrap()
        else {
            panic!("not a checkpoint")
        };
        // The index is rebuilt when a checkpoint is applied, not stored.
        assert_eq!(
            DurableState::replay(&[DurableRecord::Checkpoint { state: back }]),
            state
        );
    }

    #[test]
    fn an_attempt_written_from_a_borrow_reads_as_an_attempt_record() {
        let DurableRecord::Attempt { attempt, .. } = attempt(7) else {
            unreachable!()
        };
        let bytes = attempt_record_bytes(&attempt, Some(24));
        let read: DurableRecord = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            read,
            DurableRecord::Attempt {
                attempt,
                ring_position: Some(24)
            }
        );
    }
}
