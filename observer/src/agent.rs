//! `registry-observer run`: wires the stages together and owns the run's
//! lifetime (attach, observe, stop, detach, report).

use std::{
    collections::BTreeMap,
    io,
    net::IpAddr,
    path::{Path, PathBuf},
    process::ExitStatus,
    time::{Duration, SystemTime},
};

use anyhow::Context;
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
        cri::{self, CriWatcher},
    },
    classify::{AddressBook, Classifier, Pattern},
    clock::{self, Clock},
    config::{self, Config},
    connections::{Connections, MAX_CONNECTIONS},
    export::Console,
    load,
    pipeline::{Pipeline, PipelineStats},
    policy, preflight,
    read::{self, Input},
    record::Recorder,
    report::{self, HookMissing, Losses, ObserverSection, Report},
    scope::CommandCgroup,
};

pub struct RunOptions {
    pub report: PathBuf,
    pub registries: Vec<Pattern>,
    pub duration: Option<Duration>,
    pub fail_on_violation: bool,
    pub phase: String,
    pub resolve_interval: Duration,
    /// Empty: the default CRI sockets that exist.
    pub cri_sockets: Vec<PathBuf>,
    pub component_rules: Vec<ComponentRule>,
    pub command: Vec<String>,
    /// The `--config` file, re-read on SIGHUP.
    pub config_path: Option<PathBuf>,
    /// Its contents (the defaults without one).
    pub config: Config,
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
    report::check_writable(&options.report).map_err(UsageError)?;
    if std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|status| preflight::in_nested_pid_namespace(&status))
    {
        eprintln!(
            "registry-observer: warning: running in a nested PID namespace; process details will be missing (run with the host's PID namespace, e.g. hostPID: true)"
        );
    }

    let config::Setup {
        catalog,
        policy,
        registries_conf,
        component_rules,
    } = setup;
    let exact_names: Vec<String> = catalog.exact_names().map(String::from).collect();

    // Started first so the first pod listing is in before events flow.
    let (cri_watcher, pod_source) = CriWatcher::spawn(
        cri::choose_sockets(&options.cri_sockets, Path::exists),
        format!(
            "no CRI socket found (looked for {}); give one with --cri-socket PATH",
            cri::DEFAULT_SOCKETS.join(", ")
        ),
    );

    let started_at = SystemTime::now();
    let clock = Clock::now();
    let root = cgroup_root.clone();
    let (probes, maps) = tokio::task::spawn_blocking(move || load::load_and_attach(&root))
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

    let (queue_tx, queue_rx) = mpsc::channel(read::QUEUE_CAPACITY);
    let (stop_tx, stop_rx) = watch::channel(false);
    let load::Maps { events, counters } = maps;
    let reader = tokio::spawn(read::run_reader(events, queue_tx.clone(), stop_rx));
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
        phase: options.phase.clone(),
        policy,
        registries_conf,
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
    let reloader = tokio::spawn(reload_on_hangup(
        options.config_path.clone(),
        options.registries.clone(),
        options.component_rules.clone(),
        queue_tx.clone(),
    ));
    drop(queue_tx);

    let what = match &command_cgroup {
        Some(cgroup) => format!(
            "`{}` in cgroup {}",
            options.command.join(" "),
            cgroup.relative_path()
        ),
        None => "the whole machine".to_string(),
    };
    let observing = format!(
        "registry-observer: observing {what} (hooks: {}); report: {}",
        probes.attached.join(", "),
        options.report.display()
    );
    for (hook, reason) in &probes.missing {
        eprintln!("registry-observer: warning: hook {hook} is not attached: {reason}");
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
    let hooks = probes.attached.clone();
    let hooks_missing: Vec<HookMissing> = probes
        .missing
        .iter()
        .map(|(hook, reason)| HookMissing {
            hook,
            reason: reason.clone(),
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
    let mut pipeline = processor.await.context("the pipeline failed")?;
    let (pod_directory, cri_status) = cri_watcher.finish().await;
    // Before the policy judges again below: a pod named late can change the
    // component and namespace an allow entry matches.
    pipeline.name_pods_late(&pod_directory, cri_status.state == cri::CriState::Connected);
    let kernel = read::kernel_counters(&counters);
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

    let mut losses = Losses {
        user_queue: read_stats.queue_full,
        ..Losses::default()
    };
    let mut truncated = BTreeMap::new();
    for (counter, value) in kernel {
        if counter.is_loss() {
            losses.kernel.insert(counter.name(), value);
        } else {
            truncated.insert(counter.name(), value);
        }
    }
    let kernel_lost: u64 = losses.kernel.values().sum();
    let events_lost = kernel_lost + losses.user_queue;
    let mut attempts = pipeline.recorder.into_attempts();
    // Judged again by the policy in force at the end (a reload may have
    // changed it), so verdicts and the policy section agree.
    for attempt in &mut attempts {
        pipeline.policy.judge(attempt);
    }
    let ended_at = SystemTime::now();
    let policy_report = policy::report(&pipeline.policy, &attempts, ended_at);
    let summary = report::summarize(&attempts);
    let report = Report {
        schema_version: report::SCHEMA_VERSION,
        observer: ObserverSection {
            version: env!("CARGO_PKG_VERSION"),
            hostname: preflight::hostname(),
            kernel: preflight::kernel_release(),
            started_at,
            ended_at,
            mode: if command_mode { "command" } else { "machine" },
            command: command_mode.then(|| options.command.clone()),
            command_exit_code,
            command_cgroup: command_cgroup_path,
            cgroup2_mount: cgroup_root.display().to_string(),
            complete: events_lost == 0 && hooks_missing.is_empty(),
            hooks,
            hooks_missing,
            events_total: read_stats.records + kernel_lost,
            events_lost,
            losses,
            parse_errors: pipeline.stats.parse_errors.clone(),
            truncated,
            payload_parsers: pipeline.connections.stats().clone(),
            attribution: pipeline.attributor.stats().clone(),
            cri: cri_status,
        },
        summary,
        policy: policy_report,
        registries_conf: pipeline.registries_conf.as_ref().map(|c| c.report()),
        attempts,
    };
    report::write(&options.report, &report)?;

    let summary = &report.summary;
    for (index, entry) in report.policy.allow.iter().enumerate() {
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
    if events_lost > 0 {
        eprintln!(
            "registry-observer: warning: {events_lost} event(s) were lost (see observer.losses in the report); the report is incomplete"
        );
    }
    Ok(exit_code(
        options.fail_on_violation,
        summary.violations,
        command_exit_code,
    ))
}

/// 1 when violations fail the run, else the command's code (0 without one).
pub fn exit_code(fail_on_violation: bool, violations: usize, command: Option<i32>) -> i32 {
    if fail_on_violation && violations > 0 {
        1
    } else {
        command.unwrap_or(0)
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

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(false, 3, None), 0);
        assert_eq!(exit_code(true, 3, None), 1);
        assert_eq!(exit_code(true, 0, None), 0);
        assert_eq!(exit_code(false, 3, Some(5)), 5);
        assert_eq!(exit_code(true, 1, Some(5)), 1);
        assert_eq!(exit_code(true, 0, Some(5)), 5);
    }
}
