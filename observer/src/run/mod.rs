//! `registry-observer run`, in stages, each in its own module and each
//! handing the next what it needs: `prepare` (what the user must fix, exit
//! 2) -> the `endpoints` (up before the slow load) and the sources ->
//! `attach` (the kernel programs) -> the reader and the pipeline ->
//! `observe` (until the end is asked for) -> `stop` (detach, drain,
//! correlate) -> the report, built by `report` from a snapshot of the
//! pipeline: the same function serves `GET /report` while the agent runs.

mod attach;
mod durable;
mod endpoints;
mod observe;
mod prepare;
pub mod report;
mod stop;

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime},
};

use anyhow::Context;
use observer_report::{self as report_file, Report, junit, text};
use observer_state::record::{DurableState, Ended, Run, RunCounts, RunEnd, RunStart};
use tokio::sync::{mpsc, watch};

use crate::{
    bpf::read::{self, KernelCounters, KernelRing, ReadCounters},
    clock::Clock,
    control::notify::{self, Notifier},
    outputs::{Live, console::Console, durable::Durable, metrics::Metrics},
    pipeline::{
        Pipeline, PipelineStats,
        attribute::{Attributor, component_rules::ComponentRule},
        classify::{AddressBook, Classifier, Pattern},
        connections::{Connections, MAX_CONNECTIONS},
        input::{PipelineHandle, Settings},
        phase::{PhaseName, PhaseTimeline},
        record::Recorder,
        scope::CommandCgroup,
    },
    run::{
        attach::Attached,
        endpoints::Endpoints,
        prepare::Prepared,
        report::{RecordFacts, StageCounts},
        stop::Running,
    },
    setup::config::Config,
    sources::{
        cri::{self, CriWatcher},
        kubernetes::{self, KubernetesSource},
        pull_intent::{self, INTENT_QUEUE, IntentLog, intent_channel},
        resolver,
    },
};

pub struct RunOptions {
    pub report: PathBuf,
    pub registries: Vec<Pattern>,
    pub duration: Option<Duration>,
    pub fail_on_violation: bool,
    pub allow_incomplete: bool,
    pub phase: PhaseName,
    pub resolve_interval: Duration,
    /// Empty: the default CRI sockets that exist (under `host_root`).
    pub cri_sockets: Vec<PathBuf>,
    /// The host's root filesystem as the agent sees it (`/` unless it runs
    /// in a container that mounts it elsewhere).
    pub host_root: PathBuf,
    pub component_rules: Vec<ComponentRule>,
    pub kubernetes: KubernetesOptions,
    pub metrics_addr: MetricsAddr,
    /// None: the default path, where another agent's socket is a warning.
    pub control_socket: Option<PathBuf>,
    pub events: Option<PathBuf>,
    pub events_max_bytes: u64,
    pub junit: Option<PathBuf>,
    pub ring_buffer_bytes: u32,
    /// Bound of the attempts table (`Recorder`).
    pub max_attempts: usize,
    /// `--state-dir`: the durable record to continue.
    pub state_dir: Option<PathBuf>,
    /// With `--state-dir`: where the maps and links are pinned.
    pub pin_dir: Option<PathBuf>,
    /// How often DIR/report.json is rewritten.
    pub snapshot_interval: Duration,
    /// Test-only: programs the kernel is made to refuse.
    pub refuse_programs: Vec<String>,
    /// Print refused programs' whole verifier logs.
    pub verbose: bool,
    pub command: Vec<String>,
    /// The `--config` file, re-read on SIGHUP.
    pub config_path: Option<PathBuf>,
    /// Its contents (the defaults without one).
    pub config: Config,
}

/// The Kubernetes API source (`kubernetes/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesOptions {
    /// `--kubeconfig`, else the config's.
    pub kubeconfig: Option<PathBuf>,
    /// The config's `kubernetes.enabled`: false keeps in-cluster use off.
    pub enabled: bool,
    /// Whose kubelet events count.
    pub node_name: String,
}

/// Where the HTTP endpoint listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsAddr {
    Off,
    /// The default loopback address: if it is taken (another agent, another
    /// service) the run goes on without the endpoint, with a warning.
    Default(SocketAddr),
    /// Given with --metrics-addr: failing to listen is an error.
    Explicit(SocketAddr),
}

/// Bounds the address book; far above the registry addresses any node sees.
const ADDRESS_BOOK_CAPACITY: usize = 65_536;
/// See `AddressBook::min_retention_ns`.
const MIN_ADDRESS_RETENTION: Duration = Duration::from_secs(600);

/// Runs the observer; returns the process exit code.
pub async fn run(options: RunOptions) -> anyhow::Result<i32> {
    let Prepared {
        settings,
        cgroup_root,
        events_log,
        kubernetes: kubernetes_prepared,
        continued,
        pins,
    } = prepare::prepare(&options).await?;
    let Settings {
        catalog,
        policy,
        registries_conf,
        component_rules,
    } = settings;
    let exact_names: Vec<String> = catalog.exact_names().map(String::from).collect();

    let (queue_tx, queue_rx) = mpsc::channel(read::QUEUE_CAPACITY);
    let (stop_tx, stop_rx) = watch::channel(false);
    let pipeline_handle = PipelineHandle::new(queue_tx.downgrade());
    let metrics = Arc::new(Metrics::new());
    let ready: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
    let live: Arc<OnceLock<endpoints::Live>> = Arc::new(OnceLock::new());
    let endpoints = Endpoints::start(
        &options,
        Arc::clone(&metrics),
        pipeline_handle.clone(),
        Arc::clone(&ready),
        Arc::clone(&live),
        stop_rx.clone(),
    )?;

    // Pull intents (a pod needs an image now) from every source go through
    // one bounded queue into a log read at report time, off the event path.
    // Each source gets a clone of the sink (the Kubernetes API source too).
    let (intent_sink, intent_feed) = intent_channel(INTENT_QUEUE);
    let (stop_intents, intents_stopped) = tokio::sync::oneshot::channel();
    let intent_collector = tokio::spawn(pull_intent::collect(
        intent_feed,
        IntentLog::default(),
        intents_stopped,
    ));
    // Started before the (slow) load so the first pod listing is in before
    // events flow.
    let (cri_watcher, pod_source) = CriWatcher::spawn(
        cri::choose_sockets(&options.cri_sockets, &options.host_root, Path::exists),
        format!(
            "no CRI socket found (looked for {}); give one with --cri-socket PATH",
            cri::DEFAULT_SOCKETS.join(", ")
        ),
        {
            // A departed pod's attempt series go, so churn cannot grow them.
            let metrics = Arc::clone(&metrics);
            Box::new(move |uid: &str| metrics.forget_pod(uid))
        },
        intent_sink.clone(),
    );
    let started_at = SystemTime::now();
    // Started before the (slow) load, like the CRI watcher, so the initial
    // list is in when events flow.
    let kubernetes_source = KubernetesSource::spawn(
        kubernetes_prepared,
        options.kubernetes.node_name.clone(),
        intent_sink,
        started_at.checked_sub(kubernetes::LOOKBACK),
    );
    let clock = Clock::now();
    let phase_changed = Arc::new(tokio::sync::Notify::new());
    // A continued record goes on in its last phase (a restart during an
    // upgrade is still the upgrade); --phase starts a new record only.
    let (mut durable, continued_record, restored_attempts, phases, ring_cursor) = match continued {
        Some(continued) => {
            let DurableState {
                attempts,
                phases: markers,
                runs,
                ring_cursor,
                ..
            } = continued.state;
            let phases = if markers.is_empty() {
                PhaseTimeline::starting(&options.phase, started_at)
            } else {
                PhaseTimeline::continuing(markers)
            };
            let damaged = continued.damage.len() as u64 + continued.unreadable;
            let durable = Durable::new(continued.writer, runs.clone(), ring_cursor.clone());
            (
                Some(durable),
                Some((runs, damaged)),
                attempts,
                phases,
                ring_cursor,
            )
        }
        None => (
            None,
            None,
            vec![],
            PhaseTimeline::starting(&options.phase, started_at),
            None,
        ),
    };

    let attached = attach::attach(&cgroup_root, &options, pins).await?;
    let mut facts = attached.facts(started_at, &options, &cgroup_root);
    let pinning = attached.probes.pinning.clone();

    let Attached {
        probes,
        maps,
        command_cgroup,
        pins,
    } = attached;
    let kernel_counters = Arc::new(KernelCounters::new(
        maps.counters,
        pinning.as_ref().is_some_and(|p| p.adopted),
    ));
    // The run joins the record once its programs observe: the time before
    // (a failed start included) stays in the gap, unless the pinned
    // programs observed it (then only what the full ring lost is).
    if let (Some(durable), Some((previous, damaged))) = (durable.as_mut(), continued_record) {
        let ring = pinning.as_ref().map(|p| p.ring.clone());
        let lost_while_down = previous
            .last()
            .filter(|run| ring.is_some() && run.start.ring == ring)
            .and_then(|run| run.counts.as_ref()?.kernel_lost_raw)
            .map(|before| kernel_counters.baseline_lost().saturating_sub(before));
        let this_run = RunStart {
            started_at: SystemTime::now(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ring,
            lost_while_down,
        };
        durable.start(&this_run);
        facts.record = Some(RecordFacts {
            previous,
            this_run,
            damaged,
        });
    }
    let read_counters = Arc::new(ReadCounters::default());
    // Records the spool holds already (an agent killed between appending
    // and consuming them) are skipped once, on the same ring only.
    let applied_through = match (&pinning, ring_cursor) {
        (Some(pinning), Some(cursor)) if cursor.ring == pinning.ring => {
            Some(cursor.applied_through)
        }
        _ => None,
    };
    let ring = KernelRing::new(maps.events, Arc::clone(&read_counters), applied_through)
        .context("mapping the ring buffer's consumer page")?;
    let _ = live.set(endpoints::Live {
        facts: facts.clone(),
        counts: {
            let kernel_counters = Arc::clone(&kernel_counters);
            let read_counters = Arc::clone(&read_counters);
            let pinned = pinning.is_some();
            let cri_status = cri_watcher.status_reader();
            let kubernetes_status = kubernetes_source.status_reader();
            let events_file_dropped = events_log.dropped_counter();
            Box::new(move || StageCounts {
                read: read_counters.snapshot(),
                kernel: kernel_counters.since_start(),
                kernel_lost_raw: pinned.then(|| kernel_counters.raw_lost()),
                events_file_dropped: events_file_dropped.load(std::sync::atomic::Ordering::Relaxed),
                cri: cri_status(),
                kubernetes: kubernetes_status(),
                ..StageCounts::default()
            })
        },
    });
    // Missing hooks do not stop the agent (what is attached still sees
    // evidence), but the run will be incomplete: say so where it is asked.
    let _ = ready.set(attach::readiness(&probes.missing));
    let command_mode = command_cgroup.is_some();
    // Live lines go to stdout when watching the machine; with a command they
    // go to stderr so the command's own stdout stays its own.
    let live_output: Box<dyn io::Write + Send> = if command_mode {
        Box::new(io::stderr())
    } else {
        Box::new(io::stdout())
    };
    let pipeline = Pipeline {
        connections: Connections::new(MAX_CONNECTIONS),
        classifier: Classifier::new(
            catalog,
            AddressBook::new(
                ADDRESS_BOOK_CAPACITY,
                MIN_ADDRESS_RETENTION.as_nanos() as u64,
            ),
        ),
        attributor: Attributor::new(options.host_root.join("proc"), cgroup_root.clone())
            .with_pods(pod_source)
            .with_rules(component_rules),
        recorder: {
            let mut recorder = Recorder::with_max_attempts(options.max_attempts);
            recorder.restore(restored_attempts);
            recorder
        },
        scope: command_cgroup.as_ref().map(CommandCgroup::scope),
        clock,
        phases,
        policy,
        registries_conf,
        outputs: Live {
            console: Console::new(live_output),
            metrics: Arc::clone(&metrics),
            events_log,
            durable: durable.take(),
            phase_changed: Some(Arc::clone(&phase_changed)),
        },
        stats: PipelineStats::default(),
    };
    let processor = tokio::task::spawn_blocking(move || pipeline.run(ring, queue_rx));
    let resolver = (!options.resolve_interval.is_zero()).then(|| {
        tokio::spawn(resolver::resolve_catalog(
            exact_names,
            options.resolve_interval,
            queue_tx.clone(),
        ))
    });
    // The reloader holds a sender too; it is stopped before the pipeline
    // is awaited.
    let reloader = tokio::spawn(observe::reload_on_hangup(
        options.config_path.clone(),
        options.host_root.clone(),
        options.registries.clone(),
        options.component_rules.clone(),
        queue_tx.clone(),
    ));
    // The durable record's counts and fsync, once a second, and its
    // report.json, every interval and at each phase marker.
    let durable_tasks = match (&options.state_dir, &facts.record) {
        (Some(dir), Some(_)) => vec![
            tokio::spawn(tick_every_second(
                pipeline_handle.clone(),
                Arc::clone(&live),
            )),
            tokio::spawn(durable::write_snapshots(
                dir.clone(),
                options.junit.is_some(),
                options.snapshot_interval,
                Arc::clone(&phase_changed),
                Arc::clone(&live),
                pipeline_handle.clone(),
            )),
        ],
        _ => vec![],
    };
    // From here the reloader and the resolver hold the only strong
    // senders: when they end, the pipeline drains the ring and ends (phase
    // and snapshot requests hold weak ones, which do not keep it open).
    drop(queue_tx);

    print_observing(&options, &facts, &endpoints, command_cgroup.as_ref());
    // Under systemd (`Type=notify`); None otherwise.
    let notifier = Notifier::from_env().map(Arc::new);
    let watchdog = notifier
        .as_ref()
        .and_then(|notifier| tell_systemd_ready(notifier, &facts, pipeline_handle.clone()));

    // A command that exits ends the run cleanly.
    let mut stopped_by = RunEnd::Clean;
    let command_status = match &command_cgroup {
        Some(cgroup) => Some(observe::run_command(&options.command, cgroup).await),
        None => {
            stopped_by = observe::wait_for_stop(options.duration).await?;
            None
        }
    };
    let command_exit_code = command_status.as_ref().map(|status| {
        let (code, error) = observe::command_result(status);
        if let Some(error) = error {
            eprintln!(
                "registry-observer: cannot run `{}`: {error}",
                options.command[0]
            );
        }
        code
    });

    if let Some(watchdog) = watchdog {
        watchdog.abort();
        let _ = watchdog.await;
    }
    if let Some(notifier) = &notifier {
        let _ = notifier.send("STOPPING=1");
    }
    let running = Running {
        probes,
        pins,
        stop: stop_tx,
        read: Arc::clone(&read_counters),
        resolver,
        reloader,
        endpoints,
        pipeline: processor,
        cri: cri_watcher,
        kubernetes: kubernetes_source,
        stop_intents,
        intents: intent_collector,
        kernel_counters: Arc::clone(&kernel_counters),
        durable_tasks,
    };
    let (report, durable) =
        stop::stop(running, &facts, command_exit_code, stopped_by.clone()).await?;
    drop(command_cgroup);
    write_outputs(&options, &report)?;
    if let Some(dir) = &options.state_dir {
        durable::write_report_files(dir, options.junit.is_some(), &report);
    }
    if let (Some(durable), Some(record)) = (durable, &facts.record) {
        let kernel_lost_raw = pinning.is_some().then(|| kernel_counters.raw_lost());
        finish_record(durable, record, &report, stopped_by, kernel_lost_raw);
    }
    Ok(conclude(&options, &report))
}

/// How often the durable record gets the run's counts and an fsync.
const TICK: Duration = Duration::from_secs(1);

async fn tick_every_second(pipeline: PipelineHandle, live: Arc<OnceLock<endpoints::Live>>) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(live) = live.get() else { continue };
        let lost_while_down = live
            .facts
            .record
            .as_ref()
            .map_or(0, RecordFacts::lost_while_down);
        if pipeline
            .tick(run_counts(&(live.counts)(), lost_while_down))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// This run's event counts, for its durable record: what the pinned ring
/// lost before it began draining counts as this run's.
fn run_counts(counts: &StageCounts, lost_while_down: u64) -> RunCounts {
    let kernel_lost: u64 = counts
        .kernel
        .iter()
        .filter(|(counter, _)| counter.is_loss())
        .map(|(_, n)| n)
        .sum();
    RunCounts {
        at: SystemTime::now(),
        events_total: counts.read.records - counts.read.already_applied
            + kernel_lost
            + lost_while_down,
        events_lost: kernel_lost + lost_while_down,
        kernel_lost_raw: counts.kernel_lost_raw,
    }
}

/// The run's end in the durable record, and a checkpoint of the whole
/// record (the final report's attempts and phases, every run) so the next
/// start replays one record.
fn finish_record(
    durable: Durable,
    record: &RecordFacts,
    report: &Report,
    how: RunEnd,
    kernel_lost_raw: Option<u64>,
) {
    let observer = report.observer.as_ref().expect("a node report");
    let (earlier_total, earlier_lost) = record.earlier_counts();
    let counts = RunCounts {
        at: observer.ended_at,
        events_total: observer.events_total.saturating_sub(earlier_total),
        events_lost: observer.events_lost.saturating_sub(earlier_lost),
        kernel_lost_raw,
    };
    let ended = Ended {
        at: observer.ended_at,
        how,
    };
    let mut runs = record.previous.clone();
    runs.push(Run {
        start: record.this_run.clone(),
        counts: Some(counts.clone()),
        ended: Some(ended.clone()),
    });
    let state = DurableState::new(report.attempts.clone(), report.phases.clone(), runs)
        .with_ring_cursor(durable.ring_cursor());
    durable.finish(&counts, ended, state);
}

/// Tells systemd the agent is ready, now that every hook is attached and
/// the pipeline runs; with `WatchdogSec=`, starts a task that pings only
/// after the pipeline answered, so a stuck pipeline gets the agent
/// restarted. Returns the watchdog task.
fn tell_systemd_ready(
    notifier: &Arc<Notifier>,
    facts: &report::RunFacts,
    pipeline: PipelineHandle,
) -> Option<tokio::task::JoinHandle<()>> {
    let status = if facts.hooks_missing.is_empty() {
        "observing, every hook attached".to_string()
    } else {
        format!(
            "observing, incomplete: {} hook(s) not attached",
            facts.hooks_missing.len()
        )
    };
    if let Err(e) = notifier.send(&format!("READY=1\nSTATUS={status}")) {
        eprintln!("registry-observer: warning: cannot tell systemd it is ready: {e}");
    }
    let interval = notify::watchdog_interval(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )?;
    let notifier = Arc::clone(notifier);
    Some(tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            if pipeline.counters().await.is_err() {
                return;
            }
            let _ = notifier.send("WATCHDOG=1");
        }
    }))
}

/// The line that says the agent is observing, and what and where.
fn print_observing(
    options: &RunOptions,
    facts: &report::RunFacts,
    endpoints: &Endpoints,
    command_cgroup: Option<&CommandCgroup>,
) {
    let what = match command_cgroup {
        Some(cgroup) => format!(
            "`{}` in cgroup {}",
            options.command.join(" "),
            cgroup.relative_path()
        ),
        None => "the whole machine".to_string(),
    };
    let mut observing = format!(
        "registry-observer: observing {what} (hooks: {}); phase: {}; report: {}",
        facts.hooks.join(", "),
        options.phase,
        options.report.display()
    );
    if let Some(url) = &endpoints.metrics_url {
        observing.push_str(&format!("; metrics: {url}"));
    }
    if let Some(path) = &endpoints.control_path {
        observing.push_str(&format!("; control socket: {path}"));
    }
    if command_cgroup.is_some() {
        eprintln!("{observing}");
    } else {
        println!("{observing}");
    }
}

/// The report file and the JUnit file.
fn write_outputs(options: &RunOptions, report: &Report) -> anyhow::Result<()> {
    report_file::write(&options.report, report)?;
    if let Some(path) = &options.junit {
        let xml = junit::to_junit(report).context("writing JUnit XML")?;
        report_file::write_atomically(path, xml.as_bytes())
            .with_context(|| format!("writing the JUnit file {}", path.display()))?;
    }
    Ok(())
}

/// Says how the run went on stderr; returns the exit code.
fn conclude(options: &RunOptions, report: &Report) -> i32 {
    let summary = &report.summary;
    let allow_entries = report.policy.iter().flat_map(|p| p.allow.iter());
    for (index, entry) in allow_entries.enumerate() {
        if entry.matched_after_expiry > 0 {
            eprintln!(
                "registry-observer: allow entry {index} ({:?}) expired on {}; the {} attempt(s) it matched are violations",
                entry.reason,
                entry.expires.as_deref().unwrap_or("?"),
                entry.matched_after_expiry
            );
        }
    }
    let mut judged = String::new();
    if summary.allowed > 0 {
        judged.push_str(&format!(", {} allowed", summary.allowed));
    }
    if summary.not_enforced > 0 {
        judged.push_str(&format!(", {} not enforced", summary.not_enforced));
    }
    eprintln!(
        "registry-observer: {} registry attempt(s), {} violation(s){judged}, by {}; report written to {}",
        summary.attempts,
        summary.violations,
        if summary.components.is_empty() {
            "no component".to_string()
        } else {
            summary.components.join(", ")
        },
        options.report.display()
    );
    eprint!("{}", text::summarize(report, text::Format::Table));
    let observer = report.observer.as_ref().expect("a node report");
    let incompleteness = observer.incompleteness();
    if let Some(reason) = &incompleteness {
        eprintln!(
            "registry-observer: warning: the observation is incomplete: {reason}{}",
            if options.allow_incomplete {
                " (--allow-incomplete: not failing the run)"
            } else {
                "; exiting 3 (--allow-incomplete to accept)"
            }
        );
    }
    exit_code(
        ExitPolicy {
            fail_on_violation: options.fail_on_violation,
            allow_incomplete: options.allow_incomplete,
        },
        RunOutcome {
            violations: summary.violations,
            incomplete: incompleteness.is_some(),
            command: observer.command_exit_code,
        },
    )
}

#[derive(Clone, Copy, Debug)]
pub struct ExitPolicy {
    pub fail_on_violation: bool,
    pub allow_incomplete: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct RunOutcome {
    pub violations: usize,
    /// Events were lost, the events file has gaps, or a hook was missing.
    pub incomplete: bool,
    /// The wrapped command's exit code.
    pub command: Option<i32>,
}

/// Precedence: 2 (usage or config, decided before a run starts) > 3
/// (incomplete: a lossy run proves nothing, even its violations may be
/// partial) > 1 (violations, with --fail-on-violation) > the wrapped
/// command's code > 0.
pub fn exit_code(policy: ExitPolicy, outcome: RunOutcome) -> i32 {
    if outcome.incomplete && !policy.allow_incomplete {
        3
    } else if policy.fail_on_violation && outcome.violations > 0 {
        1
    } else {
        outcome.command.unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(
        fail_on_violation: bool,
        allow_incomplete: bool,
        violations: usize,
        incomplete: bool,
        command: Option<i32>,
    ) -> i32 {
        exit_code(
            ExitPolicy {
                fail_on_violation,
                allow_incomplete,
            },
            RunOutcome {
                violations,
                incomplete,
                command,
            },
        )
    }

    #[test]
    fn exit_codes() {
        assert_eq!(code(false, false, 3, false, None), 0);
        assert_eq!(code(true, false, 3, false, None), 1);
        assert_eq!(code(true, false, 0, false, None), 0);
        assert_eq!(code(false, false, 3, false, Some(5)), 5);
        assert_eq!(code(true, false, 1, false, Some(5)), 1);
        assert_eq!(code(true, false, 0, false, Some(5)), 5);
    }

    fn missing_hook(hook: &'static str) -> crate::bpf::load::MissingHook {
        crate::bpf::load::MissingHook {
            hook,
            reason: "EINVAL".into(),
            evidence: "some evidence",
            verifier_log: None,
            permission_denied: false,
        }
    }

    #[test]
    fn readiness_names_the_hooks_this_kernel_refused() {
        assert_eq!(attach::readiness(&[]), "ready: every hook is attached\n");
        assert_eq!(
            attach::readiness(&[missing_hook("sendmsg4"), missing_hook("process_exec")]),
            "ready, but incomplete: hook(s) not attached: sendmsg4, process_exec\n"
        );
    }

    #[test]
    fn an_incomplete_run_never_passes_silently() {
        // Clean but lossy: 3, whatever else happened.
        assert_eq!(code(false, false, 0, true, None), 3);
        assert_eq!(code(true, false, 2, true, None), 3);
        assert_eq!(code(false, false, 0, true, Some(0)), 3);
        assert_eq!(code(false, false, 0, true, Some(9)), 3);
        // Accepted explicitly: the usual rules apply.
        assert_eq!(code(false, true, 0, true, None), 0);
        assert_eq!(code(true, true, 2, true, None), 1);
        assert_eq!(code(false, true, 0, true, Some(9)), 9);
    }
}
