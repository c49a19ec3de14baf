//! Stage 1 of a run, before anything is attached: what the user must fix
//! (bad configuration, missing privileges, unwritable outputs, a kubeconfig
//! that does not work) fails here with exit 2, on any machine.

use std::path::{Path, PathBuf};

use observer_report as report;

use crate::{
    UsageError,
    bpf::load::pins::PinDir,
    outputs::events_log::EventsLog,
    pipeline::input::Settings,
    run::{
        RunOptions,
        durable::{self, Continued},
    },
    setup::{config, preflight},
    sources::kubernetes,
};

/// What the later stages start from.
pub struct Prepared {
    pub settings: Settings,
    /// Where cgroup2 is mounted: the programs attach to its root.
    pub cgroup_root: PathBuf,
    pub events_log: EventsLog,
    pub kubernetes: kubernetes::Prepared,
    /// `--state-dir`: the record this run continues.
    pub continued: Option<Continued>,
    /// Service mode: the pin dir, held for the run.
    pub pins: Option<PinDir>,
}

pub async fn prepare(options: &RunOptions) -> Result<Prepared, UsageError> {
    // Bad configuration first: it is the user's to fix on any machine.
    preflight::check_host_root(&options.host_root).map_err(UsageError::new)?;
    let settings = config::settings(
        &options.config,
        &options.host_root,
        &options.registries,
        &options.component_rules,
    )
    .map_err(UsageError::new)?;
    preflight::check_own_privileges().map_err(UsageError::new)?;
    let cgroup_root = preflight::cgroup2_mount(&options.host_root).map_err(UsageError::new)?;
    report::check_writable(&options.report).map_err(UsageError::new)?;
    if let Some(junit) = &options.junit {
        report::check_output_writable(junit, "JUnit file", "--junit", "junit.xml")
            .map_err(UsageError::new)?;
    }
    // With --host-root, process details come from the host's /proc there.
    if options.host_root == Path::new("/")
        && std::fs::read_link("/proc/self/ns/pid")
            .is_ok_and(|link| preflight::in_nested_pid_namespace(&link.to_string_lossy()))
    {
        eprintln!(
            "registry-observer: warning: running in a nested PID namespace; process details will be missing (run with the host's PID namespace, e.g. hostPID: true, or give the host's / with --host-root)"
        );
    }
    let events_log = match &options.events {
        Some(path) => EventsLog::open(path, options.events_max_bytes).map_err(UsageError::new)?,
        None => EventsLog::disabled(),
    };
    // A kubeconfig the user named must be usable (exit 2 otherwise); an
    // API server that does not answer is only reported.
    let access = kubernetes::choose_access(
        options.kubernetes.kubeconfig.as_deref(),
        options.kubernetes.enabled,
        std::env::var(kubernetes::IN_CLUSTER_ENV).ok().as_deref(),
    );
    let continued = match &options.state_dir {
        Some(dir) => Some(durable::open(dir, &options.host_root)?),
        None => None,
    };
    // After the state dir's lock: the dir's agent is the pins' only reader.
    let pins = match &options.pin_dir {
        Some(dir) => Some(PinDir::open(dir).map_err(UsageError::new)?),
        None => None,
    };
    let kubernetes = kubernetes::prepare(&access)
        .await
        .map_err(UsageError::new)?;
    Ok(Prepared {
        settings,
        cgroup_root,
        events_log,
        kubernetes,
        continued,
        pins,
    })
}
