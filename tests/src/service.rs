//! A long-running registry-observer subcommand other than `run` (the
//! webhook): started, waited for, and stopped by its PID.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::process::{Collector, die_with_parent, poll_until, stop_child, wait_timeout};

/// A started process that printed its ready line. Dropping it stops it
/// (SIGTERM, then SIGKILL after 5 s).
pub struct Service {
    child: Option<Child>,
    stdout: Collector,
    stderr: Collector,
    binary: PathBuf,
}

/// What a stopped service printed and how it exited.
#[derive(Debug)]
pub struct ServiceOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Service {
    /// Starts `binary args...` and waits up to `timeout` for a stdout line
    /// starting with `ready_prefix`; returns that line with the service.
    /// Panics with the output if the process exits or is not ready in time.
    pub fn start(
        binary: &Path,
        args: &[&str],
        ready_prefix: &str,
        timeout: Duration,
    ) -> (Service, String) {
        let mut cmd = Command::new(binary);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", binary.display()));
        let stdout = Collector::spawn(child.stdout.take().expect("piped stdout"));
        let stderr = Collector::spawn(child.stderr.take().expect("piped stderr"));
        let mut service = Service {
            child: Some(child),
            stdout,
            stderr,
            binary: binary.to_path_buf(),
        };
        let mut exited = None;
        let mut line = None;
        let child = service.child.as_mut().expect("just spawned");
        poll_until(timeout, || {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                return true;
            }
            line = service
                .stdout
                .text()
                .split_inclusive('\n')
                .find(|l| l.ends_with('\n') && l.starts_with(ready_prefix))
                .map(|l| l.trim_end().to_owned());
            line.is_some()
        });
        match (line, exited) {
            (Some(line), _) => (service, line),
            (None, exited) => {
                let child = service.child.as_mut().expect("still owned");
                let _ = stop_child(child, libc::SIGKILL, Duration::ZERO);
                service.stdout.wait_eof(Duration::from_secs(2));
                service.stderr.wait_eof(Duration::from_secs(2));
                panic!(
                    "{} {args:?} {} before printing {ready_prefix:?}\n--- stderr ---\n{}\n--- stdout ---\n{}",
                    service.binary.display(),
                    match exited {
                        Some(status) => format!("exited ({status})"),
                        None => format!("was not ready within {timeout:?}"),
                    },
                    service.stderr.text(),
                    service.stdout.text()
                );
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Stderr printed so far.
    pub fn stderr_so_far(&self) -> String {
        self.stderr.text()
    }

    /// Waits (bounded) until stderr contains `needle`; true if it did.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> bool {
        poll_until(timeout, || self.stderr.text().contains(needle))
    }

    /// SIGTERM (what Kubernetes sends) and a bounded wait; panics if it does
    /// not exit within 10 s (then SIGKILLs it).
    pub fn stop(mut self) -> ServiceOutput {
        let mut child = self.child.take().expect("running");
        let status = match crate::process::send_signal(&mut child, libc::SIGTERM)
            .and_then(|()| wait_timeout(&mut child, Duration::from_secs(10)))
        {
            Ok(Some(status)) => status,
            other => {
                let _ = stop_child(&mut child, libc::SIGKILL, Duration::ZERO);
                panic!(
                    "pid {} did not exit within 10 s of SIGTERM ({other:?})\n--- stderr ---\n{}",
                    child.id(),
                    self.stderr.text()
                );
            }
        };
        self.stdout.wait_eof(Duration::from_secs(2));
        self.stderr.wait_eof(Duration::from_secs(2));
        ServiceOutput {
            status,
            stdout: self.stdout.text(),
            stderr: self.stderr.text(),
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && let Err(e) = stop_child(&mut child, libc::SIGTERM, Duration::from_secs(5))
        {
            eprintln!("observer-tests: stopping {}: {e:#}", self.binary.display());
        }
    }
}
