//! `registry-observer run`: wires the stages together and owns the run's
//! lifetime (attach, observe, stop, detach, report).

use std::{
    collections::BTreeMap,
    io,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::ExitStatus,
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime},
};

use anyhow::Context;
use aya::maps::{MapData, PerCpuArray};
use observer_report::{self as report, HookMissing, Losses, ObserverSection, Report, junit, text};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
    task::JoinSet,
};

use crate::{
    UsageError,
    attribute::{
        Attributor,
        component_rules::ComponentRule,
        cri::{self, CriFinal, CriWatcher},
        pull_intent::{self, INTENT_QUEUE, IntentLog, intent_channel},
    },
    classify::{AddressBook, Classifier, Pattern},
    clock::{self, Clock},
    config::{self, Config},
    connections::{Connections, MAX_CONNECTIONS},
    control::{self, ControlSocket, PhaseSwitch},
    events_log::EventsLog,
    export::Console,
    http,
    kubernetes::{self, KubernetesSource, KubernetesState},
    load,
    metrics::{HealthSnapshot, Metrics},
    phase::{PhaseName, PhaseTimeline},
    pipeline::{Pipeline, PipelineStats},
    policy, preflight,
    read::{self, Input, ReadCounters},
    record::Recorder,
    scope::CommandCgroup,
};

pub struct RunOptions {
    pub report: PathBuf,
    pub registries: Vec<Pattern>,
    pub duration: Option<Duration>,
    pub fail_on_violation: bool,
    pub allow_incomplete: bool,
    pub phase: PhaseName,
    pub resolve_interval: Duration,
    /// Empty: the default CRI sockets that exist.
    pub cri_sockets: Vec<PathBuf>,
    pub component_rules: Vec<ComponentRule>,
    pub kubernetes: KubernetesOptions,
    pub metrics_addr: MetricsAddr,
    /// None: the default path, where another agent's socket is a warning.
    pub control_socket: Option<PathBuf>,
    pub events: Option<PathBuf>,
    pub events_max_bytes: u64,
    pub junit: Option<PathBuf>,
    pub ring_buffer_bytes: u32,
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
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the observer; returns the process exit code.
pub async fn run(options: RunOptions) -> anyhow::Result<i32> {
    // Bad configuration first: it is the user's to fix on any machine.
    let setup = config::setup(
        &options.config,
        &options.registries,
        &options.component_rules,
    )
    .map_err(UsageError)?;
    preflight::check_own_privileges().map_err(UsageError)?;
    let cgroup_root = preflight::cgroup2_mount().map_err(UsageError)?;
    report::check_writable(&options.report).map_err(|e| UsageError(e.0))?;
    if let Some(junit) = &options.junit {
        report::check_output_writable(junit, "JUnit file", "--junit", "junit.xml")
            .map_err(|e| UsageError(e.0))?;
    }
    if std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|status| preflight::in_nested_pid_namespace(&status))
    {
        eprintln!(
            "registry-observer: warning: running in a nested PID namespace; process details will be missing (run with the host's PID namespace, e.g. hostPID: true)"
        );
    }
    let events_log = match &options.events {
        Some(path) => EventsLog::open(path, options.events_max_bytes).map_err(UsageError)?,
        None => EventsLog::disabled(),
    };
    // A kubeconfig the user named must be usable (exit 2 otherwise); an
    // API server that does not answer is only reported.
    let kubernetes_access = kubernetes::choose_access(
        options.kubernetes.kubeconfig.as_deref(),
        options.kubernetes.enabled,
        std::env::var(kubernetes::IN_CLUSTER_ENV).ok().as_deref(),
    );
    let kubernetes_prepared = kubernetes::prepare(&kubernetes_access)
        .await
        .map_err(UsageError)?;

    let config::Setup {
        catalog,
        policy,
        registries_conf,
        component_rules,
    } = setup;
    let exact_names: Vec<String> = catalog.exact_names().map(String::from).collect();

    // The endpoints come up before the (slow) load, so /healthz answers and
    // /readyz says "not yet" meanwhile; phase requests queue up.
    let (queue_tx, queue_rx) = mpsc::channel(read::QUEUE_CAPACITY);
    let (stop_tx, stop_rx) = watch::channel(false);
    let phase_switch = PhaseSwitch::new(queue_tx.downgrade());
    let metrics = Arc::new(Metrics::new());
    let ready: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
    let read_counters = Arc::new(ReadCounters::default());
    let kernel_counter_map: Arc<OnceLock<PerCpuArray<MapData, u64>>> = Arc::new(OnceLock::new());
    let events_file_dropped = events_log.dropped_counter();
    let (http_server, metrics_url) = match bind_metrics(options.metrics_addr)? {
        Some((listener, addr)) => {
            let (read_counters, kernel_counter_map) =
                (Arc::clone(&read_counters), Arc::clone(&kernel_counter_map));
            let endpoint = http::Endpoint {
                metrics: Arc::clone(&metrics),
                health: Box::new(move || {
                    let (kernel_losses, kernel_truncated) = kernel_counter_map
                        .get()
                        .map(kernel_counts)
                        .unwrap_or_default();
                    HealthSnapshot {
                        read: read_counters.snapshot(),
                        kernel_losses,
                        kernel_truncated,
                        events_file_dropped: events_file_dropped
                            .load(std::sync::atomic::Ordering::Relaxed),
                    }
                }),
                ready: Arc::clone(&ready),
                phases: phase_switch.clone(),
            };
            (
                Some(tokio::spawn(http::serve(
                    listener,
                    Arc::new(endpoint),
                    stop_rx.clone(),
                ))),
                Some(format!("http://{addr}/metrics")),
            )
        }
        None => (None, None),
    };
    let control = bind_control(options.control_socket.as_deref())?;
    let control_path = control.as_ref().map(|c| c.path().display().to_string());
    let control_server =
        control.map(|socket| tokio::spawn(socket.serve(phase_switch.clone(), stop_rx.clone())));

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
        cri::choose_sockets(&options.cri_sockets, Path::exists),
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
    let phases = PhaseTimeline::starting(&options.phase, started_at);
    let root = cgroup_root.clone();
    let ring_buffer_bytes = options.ring_buffer_bytes;
    let refuse = options.refuse_programs.clone();
    let (probes, maps) = tokio::task::spawn_blocking(move || {
        load::load_and_attach(&load::LoadRequest {
            cgroup_root: &root,
            ring_buffer_bytes,
            refuse: &refuse,
        })
    })
    .await
    .context("the loader task failed")?
    .map_err(|e| UsageError(format!("{e:#}")))?;

    let command_cgroup = if options.command.is_empty() {
        None
    } else {
        Some(CommandCgroup::create(&cgroup_root).with_context(|| {
            format!(
                "creating a cgroup for the command under {}",
                cgroup_root.display()
            )
        })?)
    };
    let command_mode = command_cgroup.is_some();

    let load::Maps { events, counters } = maps;
    let kernel_counters = kernel_counter_map.get_or_init(|| counters);
    let reader = tokio::spawn(read::run_reader(
        events,
        queue_tx.clone(),
        stop_rx.clone(),
        Arc::clone(&read_counters),
    ));
    // Missing hooks do not stop the agent (what is attached still sees
    // evidence), but the run will be incomplete: say so where it is asked.
    let _ = ready.set(readiness(&probes.missing));
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
        attributor: Attributor::new("/proc".into(), cgroup_root.clone())
            .with_pods(pod_source)
            .with_rules(component_rules),
        recorder: Recorder::default(),
        scope: command_cgroup.as_ref().map(CommandCgroup::scope),
        console: Console::new(live_output),
        clock,
        phases,
        policy,
        registries_conf,
        metrics: Arc::clone(&metrics),
        events_log,
        stats: PipelineStats::default(),
    };
    let processor = tokio::task::spawn_blocking(move || pipeline.run(queue_rx));
    let resolver = (!options.resolve_interval.is_zero()).then(|| {
        tokio::spawn(resolve_catalog(
            exact_names,
            options.resolve_interval,
            queue_tx.clone(),
        ))
    });
    // The reloader holds a sender too; it is stopped before the pipeline
    // is awaited.
    let reloader = tokio::spawn(reload_on_hangup(
        options.config_path.clone(),
        options.registries.clone(),
        options.component_rules.clone(),
        queue_tx.clone(),
    ));
    // From here the reader and the resolver hold the only strong senders:
    // when they end, the pipeline drains and ends (phase requests hold weak
    // ones, which do not keep it open).
    drop(queue_tx);

    let what = match &command_cgroup {
        Some(cgroup) => format!(
            "`{}` in cgroup {}",
            options.command.join(" "),
            cgroup.relative_path()
        ),
        None => "the whole machine".to_string(),
    };
    let mut observing = format!(
        "registry-observer: observing {what} (hooks: {}); phase: {}; report: {}",
        probes.attached.join(", "),
        options.phase,
        options.report.display()
    );
    if let Some(url) = &metrics_url {
        observing.push_str(&format!("; metrics: {url}"));
    }
    if let Some(path) = &control_path {
        observing.push_str(&format!("; control socket: {path}"));
    }
    warn_missing_hooks(&probes.missing, options.verbose);
    if let Some(why) = &probes.dns_sender_why {
        eprintln!(
            "registry-observer: note: {why}; a DNS query's sender is the socket's owner as the connect/sendmsg hooks saw it (queries on sockets connected before the agent started count as dns_sender_unknown)"
        );
    }
    if command_mode {
        eprintln!("{observing}");
    } else {
        println!("{observing}");
    }

    let command_status = match &command_cgroup {
        Some(cgroup) => Some(run_command(&options.command, cgroup).await),
        None => {
            wait_for_stop(options.duration).await?;
            None
        }
    };

    // Detach first, then drain: nothing can arrive after the final drain.
    let hooks: Vec<String> = probes.attached.iter().map(|h| h.to_string()).collect();
    let dns_sender = probes.dns_sender.as_str().to_string();
    let hooks_missing: Vec<HookMissing> = probes
        .missing
        .iter()
        .map(|missing| HookMissing {
            hook: missing.hook.to_string(),
            reason: missing.reason.clone(),
            evidence: Some(missing.evidence.to_string()),
        })
        .collect();
    drop(probes);
    let _ = stop_tx.send(true);
    let read_stats = reader.await.context("the ring-buffer reader failed")?;
    if let Some(resolver) = resolver {
        resolver.abort();
        let _ = resolver.await;
    }
    reloader.abort();
    let _ = reloader.await;
    for server in [http_server, control_server].into_iter().flatten() {
        let _ = server.await;
    }
    let mut pipeline = processor.await.context("the pipeline failed")?;
    let CriFinal {
        directory: pod_directory,
        images,
        status: cri_status,
    } = cri_watcher.finish().await;
    let kubernetes_status = kubernetes_source.finish().await;
    if kubernetes_status.state == KubernetesState::Unavailable {
        eprintln!(
            "registry-observer: warning: the Kubernetes API was unavailable ({}); pulls are not \
             joined to kubelet events or pod specs",
            kubernetes_status
                .reason
                .as_deref()
                .unwrap_or("no reason recorded")
        );
    }
    // Both sources' final intents are queued: take them, and stop.
    let _ = stop_intents.send(());
    let (intent_log, intents_dropped) = intent_collector
        .await
        .context("the pull-intent collector failed")?;
    // Before the policy judges again below: a pod named late can change the
    // component and namespace an allow entry matches.
    pipeline.name_pods_late(&pod_directory, cri_status.state == cri::CriState::Connected);
    // After the final listing, so containers created after a pull count.
    let on_behalf_of =
        pipeline.decide_on_behalf_of(&intent_log, intents_dropped, &images, &pod_directory);
    let kernel = read::kernel_counters(kernel_counters);
    let command_cgroup_path = command_cgroup
        .as_ref()
        .map(|c| c.relative_path().to_string());
    drop(command_cgroup);

    let (command_exit_code, command_error) = match &command_status {
        Some(Ok(status)) => (Some(exit_code_of(status)), None),
        Some(Err(e)) => (Some(spawn_failure_code(e)), Some(e)),
        None => (None, None),
    };
    if let Some(error) = command_error {
        eprintln!(
            "registry-observer: cannot run `{}`: {error}",
            options.command[0]
        );
    }

    let Pipeline {
        connections,
        recorder,
        attributor,
        phases,
        policy,
        registries_conf,
        events_log,
        stats,
        ..
    } = pipeline;
    let mut losses = Losses {
        user_queue: read_stats.queue_full,
        events_file: events_log.finish(),
        ..Losses::default()
    };
    let mut truncated = BTreeMap::new();
    for (counter, value) in kernel {
        if counter.is_loss() {
            losses.kernel.insert(counter.name().to_string(), value);
        } else {
            truncated.insert(counter.name().to_string(), value);
        }
    }
    let kernel_lost: u64 = losses.kernel.values().sum();
    let events_lost = kernel_lost + losses.user_queue;
    let mut recorder = recorder;
    recorder.close_unanswered_dns(SystemTime::now());
    let mut attempts = recorder.into_attempts();
    // Judged again by the policy in force at the end (a reload may have
    // changed it, a late pod name may match another entry), so verdicts,
    // the policy section, the summary and the JUnit file agree.
    for attempt in &mut attempts {
        policy.judge(attempt);
    }
    let ended_at = SystemTime::now();
    let policy_report = policy::report(&policy, &attempts, ended_at);
    let summary = report::summarize(&attempts);
    let report = Report {
        schema_version: report::SCHEMA_VERSION,
        observer: Some(ObserverSection {
            version: env!("CARGO_PKG_VERSION").to_string(),
            hostname: preflight::hostname(),
            kernel: preflight::kernel_release(),
            started_at,
            ended_at,
            mode: if command_mode { "command" } else { "machine" }.to_string(),
            command: command_mode.then(|| options.command.clone()),
            command_exit_code,
            command_cgroup: command_cgroup_path,
            cgroup2_mount: cgroup_root.display().to_string(),
            complete: events_lost == 0 && hooks_missing.is_empty(),
            hooks,
            dns_sender: Some(dns_sender),
            hooks_missing,
            events_total: read_stats.records + kernel_lost,
            events_lost,
            losses,
            parse_errors: stats
                .parse_errors
                .iter()
                .map(|(parser, n)| (parser.to_string(), *n))
                .collect(),
            truncated,
            payload_parsers: connections.stats().clone(),
            attribution: attributor.stats().clone(),
            cri: cri_status,
            kubernetes: kubernetes_status,
            on_behalf_of,
        }),
        nodes: vec![],
        phases: phases.markers(),
        summary,
        policy: Some(policy_report),
        registries_conf: registries_conf.as_ref().map(|c| c.report()),
        attempts,
    };
    report::write(&options.report, &report)?;
    if let Some(path) = &options.junit {
        let xml = junit::to_junit(&report).context("writing JUnit XML")?;
        report::write_atomically(path, xml.as_bytes())
            .with_context(|| format!("writing the JUnit file {}", path.display()))?;
    }

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
    eprint!("{}", text::summarize(&report, text::Format::Table));
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
    Ok(exit_code(
        ExitPolicy {
            fail_on_violation: options.fail_on_violation,
            allow_incomplete: options.allow_incomplete,
        },
        Outcome {
            violations: summary.violations,
            incomplete: incompleteness.is_some(),
            command: command_exit_code,
        },
    ))
}

/// One warning per program this kernel refused: why, and what evidence the
/// run lacks as a result; with `verbose`, the verifier's whole log.
fn warn_missing_hooks(missing: &[load::MissingHook], verbose: bool) {
    for hook in missing {
        eprintln!(
            "registry-observer: warning: hook {} is not attached: {}; missing as a result: {}",
            hook.hook, hook.reason, hook.evidence
        );
        match (&hook.verifier_log, verbose) {
            (Some(log), true) => eprintln!(
                "--- verifier log of {} ---\n{}\n--- end of verifier log ---",
                hook.hook,
                log.trim_end()
            ),
            (Some(_), false) => {
                eprintln!("registry-observer: (run with --verbose for the verifier's whole log)")
            }
            (None, _) => {}
        }
    }
    if !missing.is_empty() {
        eprintln!(
            "registry-observer: warning: the observation is incomplete (observer.hooks_missing in the report)"
        );
    }
}

/// The /readyz answer once the programs are attached.
fn readiness(missing: &[load::MissingHook]) -> String {
    if missing.is_empty() {
        "ready: every hook is attached\n".to_string()
    } else {
        let hooks: Vec<&str> = missing.iter().map(|missing| missing.hook).collect();
        format!(
            "ready, but incomplete: hook(s) not attached: {}\n",
            hooks.join(", ")
        )
    }
}

/// The kernel's counters by name, split as the report splits them: losses,
/// and events that went out cut short.
type NamedCounts = Vec<(&'static str, u64)>;

fn kernel_counts(counters: &PerCpuArray<MapData, u64>) -> (NamedCounts, NamedCounts) {
    let (losses, truncated): (Vec<_>, Vec<_>) = read::kernel_counters(counters)
        .into_iter()
        .partition(|(counter, _)| counter.is_loss());
    let named = |counts: Vec<(observer_common::Counter, u64)>| {
        counts
            .into_iter()
            .map(|(counter, value)| (counter.name(), value))
            .collect()
    };
    (named(losses), named(truncated))
}

fn bind_metrics(
    addr: MetricsAddr,
) -> Result<Option<(tokio::net::TcpListener, SocketAddr)>, UsageError> {
    match addr {
        MetricsAddr::Off => Ok(None),
        MetricsAddr::Explicit(addr) => http::bind(addr)
            .map(|l| Some((l, addr)))
            .map_err(UsageError),
        MetricsAddr::Default(addr) => match http::bind(addr) {
            Ok(listener) => Ok(Some((listener, addr))),
            Err(e) => {
                eprintln!("registry-observer: warning: {e}; running without the HTTP endpoint");
                Ok(None)
            }
        },
    }
}

fn bind_control(explicit: Option<&Path>) -> Result<Option<ControlSocket>, UsageError> {
    match explicit {
        Some(path) => ControlSocket::bind(path).map(Some).map_err(UsageError),
        None => match ControlSocket::bind(Path::new(control::DEFAULT_SOCKET)) {
            Ok(socket) => Ok(Some(socket)),
            Err(e) => {
                eprintln!(
                    "registry-observer: warning: {e}; running without a control socket (`registry-observer mark` will not reach this agent)"
                );
                Ok(None)
            }
        },
    }
}

#[derive(Clone, Copy, Debug)]
pub struct ExitPolicy {
    pub fail_on_violation: bool,
    pub allow_incomplete: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct Outcome {
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
pub fn exit_code(policy: ExitPolicy, outcome: Outcome) -> i32 {
    if outcome.incomplete && !policy.allow_incomplete {
        3
    } else if policy.fail_on_violation && outcome.violations > 0 {
        1
    } else {
        outcome.command.unwrap_or(0)
    }
}

/// Shell convention: 128 + signal for a command killed by a signal.
fn exit_code_of(status: &ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// Shell convention: 127 not found, 126 found but not executable.
fn spawn_failure_code(error: &io::Error) -> i32 {
    if error.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

async fn wait_for_stop(duration: Option<Duration>) -> anyhow::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let deadline = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
        _ = deadline => {}
    }
    Ok(())
}

/// Runs the command in its cgroup and waits for it. SIGINT and SIGTERM are
/// passed on; a second one kills the command.
async fn run_command(argv: &[String], cgroup: &CommandCgroup) -> io::Result<ExitStatus> {
    let mut command = tokio::process::Command::new(&argv[0]);
    command.args(&argv[1..]);
    cgroup.enter_on_spawn(&mut command)?;
    let mut child = command.spawn()?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut signals_passed = 0;
    loop {
        let signal = tokio::select! {
            status = child.wait() => return status,
            _ = interrupt.recv() => libc::SIGINT,
            _ = terminate.recv() => libc::SIGTERM,
        };
        signals_passed += 1;
        if let Some(pid) = child.id() {
            let signal = if signals_passed > 1 {
                libc::SIGKILL
            } else {
                signal
            };
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid as libc::pid_t, signal) };
        }
    }
}

/// On SIGHUP, re-reads the config file (if any) and registries.conf and
/// hands the result to the pipeline. A file that fails to load is reported
/// and the running configuration stays: nothing recorded is lost.
async fn reload_on_hangup(
    config_path: Option<PathBuf>,
    cli_registries: Vec<Pattern>,
    cli_rules: Vec<ComponentRule>,
    queue: mpsc::Sender<Input>,
) {
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hangup.recv().await.is_some() {
        let loaded = match &config_path {
            Some(path) => config::load(path).map_err(|e| e.to_string()),
            None => Ok(Config::default()),
        };
        match loaded.and_then(|config| config::setup(&config, &cli_registries, &cli_rules)) {
            Ok(setup) => {
                if queue.send(Input::Reload(Box::new(setup))).await.is_err() {
                    return;
                }
                eprintln!("registry-observer: configuration reloaded");
            }
            Err(error) => eprintln!(
                "registry-observer: reload failed, keeping the running configuration: {error}"
            ),
        }
    }
}

/// Resolves the catalog's exact names now and every `every`, so connect()s
/// to registry addresses are recognized even when their DNS lookup happened
/// before the observer started. The agent's own lookups are filtered out in
/// the kernel (its tgid is excluded).
async fn resolve_catalog(names: Vec<String>, every: Duration, queue: mpsc::Sender<Input>) {
    loop {
        let mut lookups = JoinSet::new();
        for name in names.iter().cloned() {
            lookups.spawn(async move {
                let lookup = tokio::net::lookup_host((name.clone(), 443));
                let addresses: Vec<IpAddr> =
                    match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                        Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
                        _ => Vec::new(),
                    };
                (name, addresses)
            });
        }
        while let Some(Ok((name, addresses))) = lookups.join_next().await {
            if addresses.is_empty() {
                continue;
            }
            let input = Input::Resolved {
                name,
                addresses,
                boot_ns: clock::boot_ns(),
            };
            if queue.send(input).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(every).await;
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
            Outcome {
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

    fn missing_hook(hook: &'static str) -> load::MissingHook {
        load::MissingHook {
            hook,
            reason: "EINVAL".into(),
            evidence: "some evidence",
            verifier_log: None,
            permission_denied: false,
        }
    }

    #[test]
    fn readiness_names_the_hooks_this_kernel_refused() {
        assert_eq!(readiness(&[]), "ready: every hook is attached\n");
        assert_eq!(
            readiness(&[missing_hook("sendmsg4"), missing_hook("process_exec")]),
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
