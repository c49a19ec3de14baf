//! The node report, from the pipeline's snapshot and the other stages'
//! counts: one function for the report served while the agent runs
//! (`GET /report`) and for the file written when it stops.

use std::{collections::BTreeMap, time::SystemTime};

use observer_common::Counter;
use observer_report::{
    self as report, HookMissing, Losses, ObserverSection, Report,
    observer::{CriStatus, Gap, KubernetesStatus, OnBehalfOfStats, RunReport},
};
use observer_state::{
    build,
    record::{Ended, Run, RunEnd, RunStart},
};

use crate::{
    bpf::read::ReadStats,
    pipeline::{snapshot::PipelineSnapshot, verdict},
    setup::preflight,
};

/// What is known of the run once its programs are attached; fixed until
/// it ends.
#[derive(Clone, Debug)]
pub struct RunFacts {
    pub started_at: SystemTime,
    /// `run -- COMMAND`'s argv; None when watching the machine.
    pub command: Option<Vec<String>>,
    /// The command's cgroup, relative to the cgroup2 mount.
    pub command_cgroup: Option<String>,
    pub cgroup2_mount: String,
    pub hooks: Vec<String>,
    pub dns_sender: String,
    pub hooks_missing: Vec<HookMissing>,
    /// With `--state-dir`: the record this run continues.
    pub record: Option<RecordFacts>,
}

/// The runs before this one on the state dir, and this one's start.
#[derive(Clone, Debug)]
pub struct RecordFacts {
    pub previous: Vec<Run>,
    pub this_run: RunStart,
    /// Damaged or unreadable records skipped when it was read back.
    pub damaged: u64,
}

impl RecordFacts {
    /// Events produced and lost by the runs before this one, as each last
    /// recorded them.
    pub fn earlier_counts(&self) -> (u64, u64) {
        self.previous
            .iter()
            .filter_map(|run| run.counts.as_ref())
            .fold((0, 0), |(total, lost), c| {
                (total + c.events_total, lost + c.events_lost)
            })
    }

    /// What the pinned ring lost before this run began draining it.
    pub fn lost_while_down(&self) -> u64 {
        self.this_run.lost_while_down.unwrap_or(0)
    }
}

/// The counts kept outside the pipeline, as read when the report is built.
#[derive(Clone, Debug, Default)]
pub struct StageCounts {
    pub read: ReadStats,
    /// The kernel's counters (losses and truncations).
    pub kernel: Vec<(Counter, u64)>,
    /// JSONL lines the events file could not take.
    pub events_file_dropped: u64,
    pub cri: CriStatus,
    pub kubernetes: KubernetesStatus,
    /// Decided when the run ends; empty in a snapshot.
    pub on_behalf_of: OnBehalfOfStats,
    /// The command's exit code, once it has exited.
    pub command_exit_code: Option<i32>,
    /// Service mode: the pinned loss counters' raw sum, for the durable
    /// record (the next agent counts what was lost while none ran).
    pub kernel_lost_raw: Option<u64>,
    /// With `--state-dir`: what the spool lost (records, segments).
    pub state_dir_losses: (u64, u64),
    /// How this run ended; None while it runs.
    pub run_end: Option<RunEnd>,
}

/// A final report, or one taken while the agent goes on observing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    WhileRunning,
    AtTheEnd,
}

/// Builds the node report. Attempts are judged again by the policy in
/// force when the snapshot was taken (a reload may have changed it, a late
/// pod name may match another entry), so verdicts, the policy section, the
/// summary and the JUnit file agree.
pub fn node_report(
    facts: &RunFacts,
    snapshot: PipelineSnapshot,
    counts: StageCounts,
    taken: Taken,
) -> Report {
    let PipelineSnapshot {
        taken_at: ended_at,
        mut attempts,
        policy,
        phases,
        registries_conf,
        parse_errors,
        payload_parsers,
        attribution,
        not_recorded,
    } = snapshot;
    for attempt in &mut attempts {
        policy.judge(attempt);
    }
    let mut losses = Losses {
        // The pipeline reads the ring itself: no queue between them loses
        // records any more (kept in the schema, always 0).
        user_queue: 0,
        events_file: counts.events_file_dropped,
        attempts_table: not_recorded,
        state_dir: counts.state_dir_losses.0,
        state_dir_segments_removed: counts.state_dir_losses.1,
        state_dir_damaged: facts.record.as_ref().map_or(0, |r| r.damaged),
        ..Losses::default()
    };
    let mut truncated = BTreeMap::new();
    for (counter, value) in counts.kernel {
        if counter.is_loss() {
            losses.kernel.insert(counter.name().to_string(), value);
        } else {
            truncated.insert(counter.name().to_string(), value);
        }
    }
    let kernel_lost: u64 = losses.kernel.values().sum();
    let (runs, gaps) = match &facts.record {
        Some(record) => runs_and_gaps(record, ended_at, counts.run_end.as_ref()),
        None => (vec![], vec![]),
    };
    // Earlier runs' events count in the record they added to.
    let (earlier_total, earlier_lost) = facts
        .record
        .as_ref()
        .map_or((0, 0), RecordFacts::earlier_counts);
    // Lost while no agent drained the pinned ring: before this run's
    // baseline, after the previous run's last counts.
    let lost_while_down = facts
        .record
        .as_ref()
        .map_or(0, RecordFacts::lost_while_down);
    let events_lost = kernel_lost + lost_while_down + earlier_lost;
    // A record's start is its first run's (when that run began observing).
    let record_started_at = facts.record.as_ref().map_or(facts.started_at, |r| {
        r.previous
            .first()
            .map_or(r.this_run.started_at, |run| run.start.started_at)
    });
    let spool_intact =
        losses.state_dir + losses.state_dir_segments_removed + losses.state_dir_damaged == 0;
    let policy_report = verdict::report(&policy, &attempts, ended_at);
    let summary = report::summarize(&attempts);
    Report {
        schema_version: report::SCHEMA_VERSION,
        observer: Some(ObserverSection {
            version: env!("CARGO_PKG_VERSION").to_string(),
            hostname: preflight::hostname(),
            kernel: preflight::kernel_release(),
            started_at: record_started_at,
            ended_at,
            mode: if facts.command.is_some() {
                "command"
            } else {
                "machine"
            }
            .to_string(),
            command: facts.command.clone(),
            command_exit_code: counts.command_exit_code,
            command_cgroup: facts.command_cgroup.clone(),
            cgroup2_mount: facts.cgroup2_mount.clone(),
            complete: events_lost == 0
                && facts.hooks_missing.is_empty()
                && not_recorded == 0
                && gaps.is_empty()
                && spool_intact,
            hooks: facts.hooks.clone(),
            dns_sender: Some(facts.dns_sender.clone()),
            hooks_missing: facts.hooks_missing.clone(),
            events_total: counts.read.records - counts.read.already_applied
                + kernel_lost
                + lost_while_down
                + earlier_total,
            events_lost,
            losses,
            parse_errors,
            truncated,
            payload_parsers,
            attribution,
            cri: counts.cri,
            kubernetes: counts.kubernetes,
            on_behalf_of: counts.on_behalf_of,
            snapshot: taken == Taken::WhileRunning,
            runs,
            gaps,
        }),
        nodes: vec![],
        phases,
        summary,
        policy: Some(policy_report),
        registries_conf,
        attempts,
    }
}

/// The record's runs, this one last (still running unless `this_end`),
/// and the gaps between them.
fn runs_and_gaps(
    record: &RecordFacts,
    now: SystemTime,
    this_end: Option<&RunEnd>,
) -> (Vec<RunReport>, Vec<Gap>) {
    let mut runs = record.previous.clone();
    runs.push(Run {
        start: record.this_run.clone(),
        counts: None,
        ended: this_end.map(|how| Ended {
            at: now,
            how: how.clone(),
        }),
    });
    build::runs_and_gaps(&runs, now, this_end.is_none())
}

#[cfg(test)]
mod tests {
    use observer_report::{Verdict, fixtures};

    use super::*;

    fn facts(hooks_missing: Vec<HookMissing>) -> RunFacts {
        RunFacts {
            started_at: fixtures::at(0),
            command: None,
            command_cgroup: None,
            cgroup2_mount: "/sys/fs/cgroup".into(),
            hooks: vec!["connect4".into()],
            dns_sender: "current_task".into(),
            hooks_missing,
            record: None,
        }
    }

    fn snapshot(attempts: Vec<Attempt>) -> PipelineSnapshot {
        PipelineSnapshot {
            taken_at: fixtures::at(60),
            attempts,
            policy: Policy::default(),
            phases: vec![],
            registries_conf: None,
            parse_errors: BTreeMap::from([("dns".to_string(), 2)]),
            payload_parsers: Default::default(),
            attribution: Default::default(),
            not_recorded: 0,
        }
    }

    use observer_report::Attempt;

    use crate::pipeline::verdict::Policy;

    #[test]
    fn a_snapshot_says_so_and_the_final_report_does_not() {
        let attempts = vec![fixtures::attempt("boot", "kubelet", "quay.io", 10)];
        let running = node_report(
            &facts(vec![]),
            snapshot(attempts.clone()),
            StageCounts::default(),
            Taken::WhileRunning,
        );
        let done = node_report(
            &facts(vec![]),
            snapshot(attempts),
            StageCounts::default(),
            Taken::AtTheEnd,
        );
        let (running, done) = (running.observer.unwrap(), done.observer.unwrap());
        assert!(running.snapshot);
        assert!(!done.snapshot);
        assert_eq!(running.ended_at, fixtures::at(60));
        assert_eq!(running.parse_errors.get("dns"), Some(&2));
    }

    #[test]
    fn attempts_are_judged_by_the_snapshots_policy_and_summarized_from_that() {
        // Recorded as a violation under an earlier policy; the policy in
        // force does not enforce phase "upgrade".
        let mut recorded = fixtures::attempt("upgrade", "kubelet", "quay.io", 10);
        recorded.verdict = Verdict::Violation;
        let mut pipeline = snapshot(vec![recorded]);
        pipeline.policy.enforce_phases = vec!["boot".into()];
        let report = node_report(
            &facts(vec![]),
            pipeline,
            StageCounts::default(),
            Taken::AtTheEnd,
        );
        assert_eq!(report.attempts[0].verdict, Verdict::NotEnforced);
        assert_eq!(report.summary.violations, 0);
        assert_eq!(report.summary.not_enforced, 1);
    }

    #[test]
    fn kernel_losses_and_truncations_land_apart_and_losses_make_it_incomplete() {
        let lossy = StageCounts {
            read: ReadStats {
                records: 100,
                already_applied: 5,
            },
            kernel: Counter::ALL.iter().map(|c| (*c, 1)).collect(),
            events_file_dropped: 4,
            ..StageCounts::default()
        };
        let losses_in_kernel = Counter::ALL.iter().filter(|c| c.is_loss()).count() as u64;
        let observer = node_report(&facts(vec![]), snapshot(vec![]), lossy, Taken::WhileRunning)
            .observer
            .unwrap();
        assert_eq!(observer.losses.kernel.len() as u64, losses_in_kernel);
        assert_eq!(
            observer.truncated.len(),
            Counter::ALL.len() - losses_in_kernel as usize
        );
        assert_eq!(observer.losses.user_queue, 0);
        assert_eq!(observer.losses.events_file, 4);
        assert_eq!(observer.events_lost, losses_in_kernel);
        // Records an earlier agent applied (and counted) are not again.
        assert_eq!(observer.events_total, 100 - 5 + losses_in_kernel);
        assert!(!observer.complete);

        let clean = node_report(
            &facts(vec![]),
            snapshot(vec![]),
            StageCounts::default(),
            Taken::WhileRunning,
        );
        assert!(clean.observer.unwrap().complete);
        let missing = HookMissing {
            hook: "sendmsg4".into(),
            reason: "EINVAL".into(),
            evidence: Some("unconnected UDP".into()),
        };
        let refused = node_report(
            &facts(vec![missing]),
            snapshot(vec![]),
            StageCounts::default(),
            Taken::WhileRunning,
        );
        assert!(!refused.observer.unwrap().complete);
    }

    #[test]
    fn events_in_no_attempt_are_a_loss_and_make_it_incomplete() {
        let mut full = snapshot(vec![fixtures::attempt("boot", "kubelet", "quay.io", 10)]);
        full.not_recorded = 4;
        let observer = node_report(
            &facts(vec![]),
            full,
            StageCounts::default(),
            Taken::AtTheEnd,
        )
        .observer
        .unwrap();
        assert_eq!(observer.losses.attempts_table, 4);
        assert!(!observer.complete);
        assert!(
            observer
                .incompleteness()
                .is_some_and(|why| why.contains("attempts table was full")),
            "{:?}",
            observer.incompleteness()
        );
    }

    #[test]
    fn earlier_runs_make_one_record_with_its_gaps_and_crashes() {
        use observer_state::record::RunCounts;
        let run = |start: u64, pid: u32| RunStart {
            started_at: fixtures::at(start),
            pid,
            version: "0.1.0".into(),
            ring: None,
            lost_while_down: None,
        };
        let crashed = Run {
            start: run(0, 10),
            counts: Some(RunCounts {
                at: fixtures::at(9),
                events_total: 100,
                events_lost: 2,
                kernel_lost_raw: None,
            }),
            ended: None,
        };
        let stopped = Run {
            start: run(20, 11),
            counts: Some(RunCounts {
                at: fixtures::at(30),
                events_total: 50,
                events_lost: 0,
                kernel_lost_raw: None,
            }),
            ended: Some(Ended {
                at: fixtures::at(30),
                how: RunEnd::Signal {
                    signal: "SIGTERM".into(),
                },
            }),
        };
        let mut with_record = facts(vec![]);
        with_record.started_at = fixtures::at(40);
        with_record.record = Some(RecordFacts {
            previous: vec![crashed, stopped],
            this_run: run(40, 12),
            damaged: 0,
        });
        let observer = node_report(
            &with_record,
            snapshot(vec![]),
            StageCounts::default(),
            Taken::WhileRunning,
        )
        .observer
        .unwrap();
        let ended: Vec<&str> = observer.runs.iter().map(|r| r.ended.as_str()).collect();
        assert_eq!(ended, ["crashed", "signal", "running"]);
        assert_eq!(
            observer.runs[0].ended_at,
            fixtures::at(9),
            "its last sign of life"
        );
        assert_eq!(observer.gaps.len(), 2);
        assert_eq!(
            (observer.gaps[0].from, observer.gaps[0].to),
            (fixtures::at(9), fixtures::at(20))
        );
        assert!(observer.gaps[0].reason.contains("crashed"));
        assert_eq!(observer.started_at, fixtures::at(0), "the record's start");
        assert_eq!(observer.events_total, 150);
        assert_eq!(observer.events_lost, 2);
        assert!(!observer.complete);
    }
}
