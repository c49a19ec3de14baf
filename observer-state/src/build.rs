//! The report a state dir holds (`registry-observer report build DIR`),
//! whether or not an agent runs on it, and the runs-and-gaps view both the
//! agent's reports and this build give. Pure but for reading the dir.

use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

use observer_report::{
    Report, ReportFileError,
    observer::{Gap, RunReport},
};
use thiserror::Error;

use crate::{
    record::{self, DurableState, Run, RunEnd},
    spool::{self, Damage, OpenError},
};

/// The report the agent keeps in its state dir.
pub const REPORT_FILE: &str = "report.json";
/// The spool's directory inside the state dir.
pub const SPOOL_DIR: &str = "spool";

/// Each run as the report shows it, and the gaps: from one run's end (for
/// a crash, its last sign of life) to the next one's start, and after a
/// last run that crashed, to `now`. With `last_running`, the last run
/// without an end is still going (`ended_at` is `now`).
///
/// Between two runs on the same pinned ring buffer the programs went on
/// observing and the next run drained what they captured: no gap, unless
/// the ring filled up while nobody drained it (then the gap says how many
/// events were lost).
pub fn runs_and_gaps(
    runs: &[Run],
    now: SystemTime,
    last_running: bool,
) -> (Vec<RunReport>, Vec<Gap>) {
    let mut shown = Vec::new();
    let mut gaps = Vec::new();
    for (index, run) in runs.iter().enumerate() {
        let last = index + 1 == runs.len();
        let (ended_at, how) = match &run.ended {
            Some(ended) => (ended.at, Some(ended.how.clone())),
            None if last && last_running => (now, None),
            None => (
                run.counts.as_ref().map_or(run.start.started_at, |c| c.at),
                Some(RunEnd::Crashed),
            ),
        };
        let crashed = how == Some(RunEnd::Crashed);
        let (ended, signal) = match how {
            None => ("running", None),
            Some(RunEnd::Clean) => ("clean", None),
            Some(RunEnd::Signal { signal }) => ("signal", Some(signal)),
            Some(RunEnd::Crashed) => ("crashed", None),
        };
        let next = runs.get(index + 1);
        let pinned_across =
            next.filter(|next| next.start.ring.is_some() && next.start.ring == run.start.ring);
        if let Some(next) = pinned_across {
            let lost = next.start.lost_while_down.unwrap_or(0);
            if lost > 0 {
                gaps.push(Gap {
                    from: ended_at,
                    to: next.start.started_at,
                    reason: format!(
                        "the kernel programs stayed attached between two runs, but their ring buffer filled up with no agent draining it: {lost} event(s) lost"
                    ),
                });
            }
        }
        let gap_until = match next {
            Some(_) if pinned_across.is_some() => None,
            Some(next) => Some((next.start.started_at, "between two runs")),
            None if crashed => Some((now, "since its last run crashed")),
            None => None,
        };
        if let Some((to, when)) = gap_until {
            gaps.push(Gap {
                from: ended_at,
                to,
                reason: if crashed {
                    format!(
                        "the agent was not running {when}: the run before crashed (killed, OOM or power loss)"
                    )
                } else {
                    format!("the agent was not running {when}")
                },
            });
        }
        shown.push(RunReport {
            started_at: run.start.started_at,
            ended_at,
            pid: run.start.pid,
            version: run.start.version.clone(),
            ended: ended.to_string(),
            signal,
        });
    }
    (shown, gaps)
}

#[derive(Debug, Error)]
pub enum BuildError {
    #[error(
        "{dir} is not a registry-observer state dir (no {SPOOL_DIR}/ in it); give the --state-dir of an agent"
    )]
    NotAStateDir { dir: PathBuf },
    #[error(transparent)]
    Spool(#[from] OpenError),
    #[error(
        "{dir} holds no report yet ({REPORT_FILE} is written once the agent's programs are attached): {source}"
    )]
    NoReport {
        dir: PathBuf,
        #[source]
        source: ReportFileError,
    },
}

/// A state dir's report, and what reading it found.
#[derive(Debug)]
pub struct Built {
    pub report: Report,
    /// An agent holds the dir: the report is as of now, the run goes on.
    pub agent_running: bool,
    pub damage: Vec<Damage>,
    /// Records whose checksum held but which this build cannot read.
    pub unreadable: u64,
}

/// The report the state dir at `dir` holds now: the agent's latest report
/// (its facts: hooks, kernel, losses, sources) with the attempts, phases,
/// runs and gaps of the spool, which is never behind it.
pub fn build(dir: &Path, now: SystemTime) -> Result<Built, BuildError> {
    let spool_dir = dir.join(SPOOL_DIR);
    if !spool_dir.is_dir() {
        return Err(BuildError::NotAStateDir {
            dir: dir.to_path_buf(),
        });
    }
    let recovered = spool::read(&spool_dir, None)?;
    let agent_running = spool::in_use(&spool_dir);
    let (records, unreadable) = record::decode_all(&recovered.records);
    let state = DurableState::replay(&records);
    let mut report =
        observer_report::load(&dir.join(REPORT_FILE)).map_err(|source| BuildError::NoReport {
            dir: dir.to_path_buf(),
            source,
        })?;
    let (runs, gaps) = runs_and_gaps(&state.runs, now, agent_running);
    if let Some(observer) = report.observer.as_mut() {
        let ended_at = runs.last().map_or(observer.ended_at, |run| run.ended_at);
        let newer = runs.len() != observer.runs.len() || ended_at != observer.ended_at;
        observer.complete &= gaps.is_empty() && recovered.damage.is_empty() && unreadable == 0;
        observer.snapshot = agent_running || (observer.snapshot && !newer);
        observer.ended_at = ended_at;
        observer.runs = runs;
        observer.gaps = gaps;
    }
    if !state.attempts.is_empty() || report.attempts.is_empty() {
        report.summary = observer_report::summarize(&state.attempts);
        report.attempts = state.attempts;
    }
    if !state.phases.is_empty() {
        report.phases = state.phases;
    }
    Ok(Built {
        report,
        agent_running,
        damage: recovered.damage,
        unreadable,
    })
}

#[cfg(test)]
mod tests {
    use observer_report::fixtures;

    use super::*;
    use crate::{
        record::{DurableRecord, Ended, RunCounts, RunStart},
        spool::{Limits, SpoolWriter},
    };

    fn start(at: u64, pid: u32) -> RunStart {
        RunStart {
            started_at: fixtures::at(at),
            pid,
            version: "0.1.0".into(),
            ring: None,
            lost_while_down: None,
        }
    }

    fn write(writer: &mut SpoolWriter, record: DurableRecord) {
        writer
            .append(&serde_json::to_vec(&record).unwrap())
            .unwrap();
    }

    /// A state dir whose run wrote one attempt and its counts, then
    /// stopped as `ended` says (None: killed).
    fn state_dir(ended: Option<Ended>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let (mut writer, _) =
            SpoolWriter::open(&dir.path().join(SPOOL_DIR), "node", Limits::default()).unwrap();
        write(&mut writer, DurableRecord::RunStarted { run: start(0, 7) });
        let attempt = fixtures::attempt("boot", "kubelet", "quay.io", 10);
        write(
            &mut writer,
            DurableRecord::Attempt {
                attempt: Box::new(attempt.clone()),
                ring_position: None,
            },
        );
        write(
            &mut writer,
            DurableRecord::Counts {
                counts: RunCounts {
                    at: fixtures::at(20),
                    events_total: 5,
                    events_lost: 0,
                    kernel_lost_raw: None,
                },
            },
        );
        if let Some(ended) = ended {
            write(&mut writer, DurableRecord::RunEnded { ended });
        }
        writer.sync().unwrap();
        // The agent's last report.json, written before the attempt.
        let report = fixtures::node_report("node-a", &["boot"], vec![]);
        observer_report::write(&dir.path().join(REPORT_FILE), &report).unwrap();
        dir
    }

    #[test]
    fn a_killed_runs_dir_has_its_attempts_and_a_gap_until_now() {
        let dir = state_dir(None);
        let built = build(dir.path(), fixtures::at(100)).unwrap();
        assert!(!built.agent_running);
        assert_eq!(
            built.report.attempts.len(),
            1,
            "the spool is newer than report.json"
        );
        assert_eq!(built.report.summary.attempts, 1);
        let observer = built.report.observer.unwrap();
        assert_eq!(observer.runs.len(), 1);
        assert_eq!(observer.runs[0].ended, "crashed");
        assert_eq!(observer.runs[0].ended_at, fixtures::at(20));
        assert_eq!(observer.gaps.len(), 1);
        assert_eq!(
            (observer.gaps[0].from, observer.gaps[0].to),
            (fixtures::at(20), fixtures::at(100))
        );
        assert!(!observer.complete);
    }

    #[test]
    fn a_cleanly_stopped_dir_has_no_gap() {
        let dir = state_dir(Some(Ended {
            at: fixtures::at(30),
            how: RunEnd::Clean,
        }));
        let observer = build(dir.path(), fixtures::at(100))
            .unwrap()
            .report
            .observer
            .unwrap();
        assert_eq!(observer.runs[0].ended, "clean");
        assert!(observer.gaps.is_empty());
        assert!(observer.complete);
    }

    #[test]
    fn runs_on_one_pinned_ring_leave_no_gap_unless_it_overflowed() {
        let on_ring = |at, pid, ring: Option<&str>, lost| Run {
            start: RunStart {
                ring: ring.map(String::from),
                lost_while_down: lost,
                ..start(at, pid)
            },
            counts: None,
            ended: Some(Ended {
                at: fixtures::at(at + 10),
                how: RunEnd::Crashed,
            }),
        };
        let runs = [
            on_ring(0, 1, Some("b/7"), None),
            // Same ring, drained: the programs observed while it was down.
            on_ring(20, 2, Some("b/7"), Some(0)),
            // Same ring, which filled up.
            on_ring(40, 3, Some("b/7"), Some(12)),
            // Another ring (pins recreated): a gap like any restart.
            on_ring(60, 4, Some("b/9"), None),
        ];
        let (_, gaps) = runs_and_gaps(&runs, fixtures::at(100), true);
        let spans: Vec<_> = gaps.iter().map(|g| (g.from, g.to)).collect();
        assert_eq!(
            spans,
            [
                (fixtures::at(30), fixtures::at(40)),
                (fixtures::at(50), fixtures::at(60)),
                (fixtures::at(70), fixtures::at(100)),
            ]
        );
        assert!(
            gaps[0].reason.contains("12 event(s) lost"),
            "{}",
            gaps[0].reason
        );
        assert!(gaps[1].reason.contains("crashed"), "{}", gaps[1].reason);
    }

    #[test]
    fn what_is_not_a_state_dir_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let error = build(dir.path(), fixtures::at(0)).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("is not a registry-observer state dir"),
            "{error}"
        );
        std::fs::create_dir(dir.path().join(SPOOL_DIR)).unwrap();
        let error = build(dir.path(), fixtures::at(0)).unwrap_err();
        assert!(error.to_string().contains("holds no report yet"), "{error}");
    }
}
