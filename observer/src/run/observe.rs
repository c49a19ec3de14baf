//! Stage 3 of a run: observing until the end is asked for (the duration,
//! SIGINT or SIGTERM) or the wrapped command exits; meanwhile SIGHUP
//! reloads the configuration.

use std::{io, path::PathBuf, process::ExitStatus, time::Duration};

use observer_state::record::RunEnd;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::{
    pipeline::{
        attribute::component_rules::ComponentRule, classify::Pattern, input::Input,
        scope::CommandCgroup,
    },
    setup::config::{self, Config},
};

/// How observing ended for a command: its exit code (shell conventions),
/// and the error if it could not be started.
pub fn command_result(status: &io::Result<ExitStatus>) -> (i32, Option<&io::Error>) {
    match status {
        Ok(status) => (exit_code_of(status), None),
        Err(e) => (spawn_failure_code(e), Some(e)),
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

/// Waits for the duration or a stop signal; says which ended the run.
pub async fn wait_for_stop(duration: Option<Duration>) -> anyhow::Result<RunEnd> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let deadline = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let signal = |name: &str| RunEnd::Signal {
        signal: name.to_string(),
    };
    Ok(tokio::select! {
        _ = interrupt.recv() => signal("SIGINT"),
        _ = terminate.recv() => signal("SIGTERM"),
        _ = deadline => RunEnd::Clean,
    })
}

/// Runs the command in its cgroup and waits for it. SIGINT and SIGTERM are
/// passed on; a second one kills the command.
pub async fn run_command(argv: &[String], cgroup: &CommandCgroup) -> io::Result<ExitStatus> {
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
pub async fn reload_on_hangup(
    config_path: Option<PathBuf>,
    host_root: PathBuf,
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
        match loaded.and_then(|config| {
            config::settings(&config, &host_root, &cli_registries, &cli_rules)
                .map_err(|e| e.to_string())
        }) {
            Ok(settings) => {
                if queue.send(Input::Reload(Box::new(settings))).await.is_err() {
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
