//! A long-running registry-observer process under test (the agent's `run`,
//! the `webhook`): spawned with its output collected, waited for until it
//! prints its ready line, and stopped by its PID with the signal it treats
//! as "shut down cleanly".

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use crate::process::{Collector, die_with_parent, poll_until, stop_child, wait_timeout};

/// Pipes inherited by children a process leaves behind (a `run -- COMMAND`'s
/// leftovers) may stay open after it exits: wait for them only this long.
const EOF_WAIT: Duration = Duration::from_secs(5);
/// How long a dropped (still running) process gets after its stop signal.
const DROP_GRACE: Duration = Duration::from_secs(5);

/// A started process. Dropping it stops it (its stop signal, then SIGKILL
/// after 5 s), so a failing test leaves nothing running.
pub struct Service {
    child: Option<Child>,
    stdout: Collector,
    stderr: Collector,
    binary: PathBuf,
    /// SIGINT for the agent (Ctrl-C: detach and write the report), SIGTERM
    /// for the webhook (what Kubernetes sends).
    stop_signal: i32,
}

/// What a stopped process printed and how it exited.
#[derive(Debug)]
pub struct ServiceOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Service {
    /// Starts `binary args...` (stopped with SIGTERM) and waits up to
    /// `timeout` for a stdout line starting with `ready_prefix`; returns that
    /// line with the service. Panics with the output if the process exits or
    /// is not ready in time.
    pub fn start(
        binary: &Path,
        args: &[&str],
        ready_prefix: &str,
        timeout: Duration,
    ) -> (Service, String) {
        let mut service = Service::spawn(binary, args, libc::SIGTERM);
        let line = service.wait_ready(ready_prefix, timeout);
        (service, line)
    }

    /// Spawns `binary args...` without waiting for anything; `stop_signal`
    /// is what [`Service::stop`] and dropping send.
    pub fn spawn(binary: &Path, args: &[&str], stop_signal: i32) -> Service {
        let mut cmd = Command::new(binary);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // If the harness is killed outright, do not leave the process (and
        // the agent's root-cgroup programs) running.
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", binary.display()));
        let stdout = Collector::spawn(child.stdout.take().expect("piped stdout"));
        let stderr = Collector::spawn(child.stderr.take().expect("piped stderr"));
        Service {
            child: Some(child),
            stdout,
            stderr,
            binary: binary.to_path_buf(),
            stop_signal,
        }
    }

    /// Waits up to `timeout` for a complete stdout line starting with
    /// `ready_prefix` and returns it. Panics with the output (after killing
    /// the process) if it exits or is not ready in time.
    pub fn wait_ready(&mut self, ready_prefix: &str, timeout: Duration) -> String {
        let mut exited = None;
        let mut line = None;
        let child = self.child.as_mut().expect("running");
        poll_until(timeout, || {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                return true;
            }
            line = line_starting_with(&self.stdout.text(), ready_prefix);
            line.is_some()
        });
        if let Some(line) = line {
            return line;
        }
        let _ = stop_child(child, libc::SIGKILL, Duration::ZERO);
        self.stdout.wait_eof(Duration::from_secs(2));
        self.stderr.wait_eof(Duration::from_secs(2));
        panic!(
            "{} {} before printing {ready_prefix:?}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            self.binary.display(),
            match exited {
                Some(status) => format!("exited ({status})"),
                None => format!("was not ready within {timeout:?}"),
            },
            self.stderr.text(),
            self.stdout.text()
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
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

    /// Waits (bounded) until stderr contains `needle`; true if it did.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> bool {
        poll_until(timeout, || self.stderr.text().contains(needle))
    }

    /// Sends the stop signal and waits up to `timeout` for the exit; on
    /// timeout SIGKILLs it and panics with its output. A non-zero exit is
    /// returned, not judged.
    pub fn stop_within(mut self, timeout: Duration) -> ServiceOutput {
        let mut child = self.child.take().expect("running");
        let signal = self.stop_signal;
        match crate::process::send_signal(&mut child, signal)
            .and_then(|()| wait_timeout(&mut child, timeout))
        {
            Ok(Some(status)) => self.finish(status),
            other => {
                let _ = stop_child(&mut child, libc::SIGKILL, Duration::ZERO);
                panic!(
                    "{} pid {} did not exit within {timeout:?} of signal {signal} ({other:?}); \
                     killed it\n--- stderr ---\n{}\n--- stdout ---\n{}",
                    self.binary.display(),
                    child.id(),
                    self.stderr.text(),
                    self.stdout.text()
                );
            }
        }
    }

    /// [`Service::stop_within`] 10 s.
    pub fn stop(self) -> ServiceOutput {
        self.stop_within(Duration::from_secs(10))
    }

    /// Waits up to `timeout` for the process to exit by itself; panics with
    /// its output (after killing it) if it does not.
    pub fn wait_exit(mut self, timeout: Duration) -> ServiceOutput {
        let mut child = self.child.take().expect("running");
        match wait_timeout(&mut child, timeout) {
            Ok(Some(status)) => self.finish(status),
            Ok(None) | Err(_) => {
                let _ = stop_child(&mut child, libc::SIGKILL, Duration::ZERO);
                panic!(
                    "{} did not exit within {timeout:?}\n--- stderr ---\n{}\n--- stdout ---\n{}",
                    self.binary.display(),
                    self.stderr.text(),
                    self.stdout.text()
                );
            }
        }
    }

    fn finish(&self, status: ExitStatus) -> ServiceOutput {
        self.stdout.wait_eof(EOF_WAIT);
        self.stderr.wait_eof(EOF_WAIT);
        ServiceOutput {
            status,
            stdout: self.stdout.text(),
            stderr: self.stderr.text(),
        }
    }
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("binary", &self.binary)
            .field("pid", &self.child.as_ref().map(Child::id))
            .finish_non_exhaustive()
    }
}

impl Drop for Service {
    /// Stops a still-running process: its stop signal (the agent detaches
    /// cleanly on SIGINT), then SIGKILL after 5 s. Never panics.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && let Err(e) = stop_child(&mut child, self.stop_signal, DROP_GRACE)
        {
            eprintln!("observer-tests: stopping {}: {e:#}", self.binary.display());
        }
    }
}

/// The first complete (newline-terminated) line of `text` starting with
/// `prefix`; a half-written line is not trusted yet.
fn line_starting_with(text: &str, prefix: &str) -> Option<String> {
    text.split_inclusive('\n')
        .find(|line| line.ends_with('\n') && line.starts_with(prefix))
        .map(|line| line.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_must_be_complete_and_at_line_start() {
        let prefix = "registry-observer: observing";
        assert_eq!(
            line_starting_with("loading\nregistry-observer: observing 3 hooks\n", prefix),
            Some("registry-observer: observing 3 hooks".to_owned())
        );
        assert_eq!(
            line_starting_with("registry-observer: observing", prefix),
            None
        );
        assert_eq!(
            line_starting_with("x registry-observer: observing\n", prefix),
            None
        );
    }
}
