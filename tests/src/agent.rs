//! Running the real registry-observer binary under test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::process::{Collector, die_with_parent, poll_until, stop_child, wait_timeout};

/// The agent prints a stdout line starting with this once its kernel programs
/// are attached; before that, events could be missed.
pub const OBSERVING_PREFIX: &str = "registry-observer: observing";

/// How long the agent may take to load and attach (the first load on a cold
/// machine includes BTF parsing).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGINTed agent may take to detach, flush its report and exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The agent binary: `$REGISTRY_OBSERVER_BIN` if set, else
/// `$CARGO_TARGET_DIR/debug/registry-observer` if that variable is set, else
/// `<workspace>/target/debug/registry-observer`. Panics if it does not exist.
pub fn agent_binary() -> PathBuf {
    let path = if let Some(bin) = std::env::var_os("REGISTRY_OBSERVER_BIN") {
        PathBuf::from(bin)
    } else {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|t| {
                if t.is_relative() {
                    crate::workspace_root().join(t)
                } else {
                    t
                }
            })
            .unwrap_or_else(|| crate::workspace_root().join("target"));
        target.join("debug/registry-observer")
    };
    if !path.is_file() {
        panic!(
            "agent binary {} does not exist: run `cargo build -p registry-observer` first \
             (or `cargo xtask test`, which builds it), or set REGISTRY_OBSERVER_BIN",
            path.display()
        );
    }
    path
}

/// What a finished agent printed and how it exited.
#[derive(Debug)]
pub struct AgentOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A running `registry-observer run ...` process. Dropping it stops the
/// process (SIGINT, then SIGKILL) so a failing test leaves no programs
/// attached to the root cgroup.
pub struct Agent {
    child: Option<Child>,
    stdout: Collector,
    stderr: Collector,
    binary: PathBuf,
}

impl Agent {
    /// Starts [`agent_binary`] as `registry-observer run <args>` and waits
    /// until it says it is observing. Panics (with its stderr) if it exits
    /// or takes longer than 60 s.
    pub fn start(args: &[&str]) -> Agent {
        Agent::start_binary(&agent_binary(), args)
    }

    /// [`Agent::start`] with an explicit binary (used to test the harness
    /// itself with a stand-in).
    pub fn start_binary(binary: &Path, args: &[&str]) -> Agent {
        crate::require_root_and_tools(&[]);
        let mut agent = Agent::spawn(binary, args);
        let child = agent.child.as_mut().expect("just spawned");
        let mut exited = None;
        let ready = poll_until(READY_TIMEOUT, || {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                return true;
            }
            has_line_starting_with(&agent.stdout.text(), OBSERVING_PREFIX)
        });
        if let Some(status) = exited {
            agent.stdout.wait_eof(Duration::from_secs(2));
            agent.stderr.wait_eof(Duration::from_secs(2));
            panic!(
                "{} exited ({status}) before printing {OBSERVING_PREFIX:?}\n--- stderr ---\n{}\n--- stdout ---\n{}",
                agent.binary.display(),
                agent.stderr.text(),
                agent.stdout.text()
            );
        }
        if !ready {
            let child = agent.child.as_mut().expect("still running");
            let _ = stop_child(child, libc::SIGKILL, Duration::ZERO);
            panic!(
                "{} did not print {OBSERVING_PREFIX:?} within {READY_TIMEOUT:?}\n--- stderr ---\n{}\n--- stdout ---\n{}",
                agent.binary.display(),
                agent.stderr.text(),
                agent.stdout.text()
            );
        }
        agent
    }

    /// Runs `registry-observer run <args>` (typically ending in `-- COMMAND
    /// ...`) to completion within `timeout`; panics with its output if it
    /// does not finish in time. The exit status is returned, not judged.
    pub fn run_to_exit(args: &[&str], timeout: Duration) -> AgentOutput {
        Agent::run_binary_to_exit(&agent_binary(), args, timeout)
    }

    /// [`Agent::run_to_exit`] with an explicit binary.
    pub fn run_binary_to_exit(binary: &Path, args: &[&str], timeout: Duration) -> AgentOutput {
        crate::require_root_and_tools(&[]);
        let mut agent = Agent::spawn(binary, args);
        let mut child = agent.child.take().expect("just spawned");
        let status = match wait_timeout(&mut child, timeout) {
            Ok(Some(status)) => status,
            Ok(None) | Err(_) => {
                let _ = stop_child(&mut child, libc::SIGKILL, Duration::ZERO);
                panic!(
                    "{} run {args:?} did not exit within {timeout:?}\n--- stderr ---\n{}\n--- stdout ---\n{}",
                    binary.display(),
                    agent.stderr.text(),
                    agent.stdout.text()
                );
            }
        };
        agent.finish(status)
    }

    /// Sends SIGINT (what Ctrl-C or a service stop does) and waits up to
    /// 30 s for a clean exit; on timeout SIGKILLs it and panics with its
    /// output. A non-zero exit is returned, not judged.
    pub fn stop(mut self) -> AgentOutput {
        let mut child = self.child.take().expect("agent is running");
        if let Err(e) = crate::process::send_signal(&mut child, libc::SIGINT) {
            panic!("cannot SIGINT agent pid {}: {e}", child.id());
        }
        match wait_timeout(&mut child, STOP_TIMEOUT) {
            Ok(Some(status)) => self.finish(status),
            Ok(None) | Err(_) => {
                let _ = stop_child(&mut child, libc::SIGKILL, Duration::ZERO);
                panic!(
                    "agent pid {} did not exit within {STOP_TIMEOUT:?} of SIGINT; killed it\n--- stderr ---\n{}\n--- stdout ---\n{}",
                    child.id(),
                    self.stderr.text(),
                    self.stdout.text()
                );
            }
        }
    }

    /// PID of the agent process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent is running").id()
    }

    /// Stdout printed so far.
    pub fn stdout_so_far(&self) -> String {
        self.stdout.text()
    }

    /// Stderr printed so far.
    pub fn stderr_so_far(&self) -> String {
        self.stderr.text()
    }

    /// Waits (bounded) until stdout contains `needle`; true if it did.
    pub fn wait_for_stdout(&self, needle: &str, timeout: Duration) -> bool {
        poll_until(timeout, || self.stdout.text().contains(needle))
    }

    fn spawn(binary: &Path, args: &[&str]) -> Agent {
        let mut cmd = Command::new(binary);
        cmd.arg("run")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // If the harness is killed outright, do not leave the agent (and its
        // root-cgroup programs) running.
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", binary.display()));
        let stdout = Collector::spawn(child.stdout.take().expect("piped stdout"));
        let stderr = Collector::spawn(child.stderr.take().expect("piped stderr"));
        Agent {
            child: Some(child),
            stdout,
            stderr,
            binary: binary.to_path_buf(),
        }
    }

    /// Collects the output of an exited agent. Pipes inherited by a `--`
    /// command's leftover children may stay open: wait for them only briefly.
    fn finish(&self, status: ExitStatus) -> AgentOutput {
        self.stdout.wait_eof(Duration::from_secs(5));
        self.stderr.wait_eof(Duration::from_secs(5));
        AgentOutput {
            status,
            stdout: self.stdout.text(),
            stderr: self.stderr.text(),
        }
    }
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("binary", &self.binary)
            .field("pid", &self.child.as_ref().map(Child::id))
            .finish_non_exhaustive()
    }
}

impl Drop for Agent {
    /// Stops a still-running agent: SIGINT so it can detach cleanly, then
    /// SIGKILL after 5 s. Never panics.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && let Err(e) = stop_child(&mut child, libc::SIGINT, Duration::from_secs(5))
        {
            eprintln!("observer-tests: stopping agent: {e:#}");
        }
    }
}

/// True if `text` has a complete (newline-terminated) line starting with
/// `prefix`; a half-written line is not trusted yet.
fn has_line_starting_with(text: &str, prefix: &str) -> bool {
    text.split_inclusive('\n')
        .any(|line| line.ends_with('\n') && line.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_must_be_complete_and_at_line_start() {
        assert!(has_line_starting_with(
            "loading\nregistry-observer: observing 3 hooks\n",
            OBSERVING_PREFIX
        ));
        assert!(!has_line_starting_with(
            "registry-observer: observing",
            OBSERVING_PREFIX
        ));
        assert!(!has_line_starting_with(
            "x registry-observer: observing\n",
            OBSERVING_PREFIX
        ));
    }
}
