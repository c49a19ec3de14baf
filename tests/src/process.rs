//! Bounded process handling: every wait has a deadline, every kill is by the
//! PID of a child we spawned and have not reaped yet (so the PID cannot have
//! been reused by an unrelated process).

use std::{
    io::Read,
    os::unix::process::CommandExt,
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// Reads a child's pipe on a background thread into a shared buffer, so the
/// output is available while the child runs, after it is killed, and even if
/// a grandchild keeps the pipe open past the child's exit.
pub(crate) struct Collector {
    buf: Arc<Mutex<Vec<u8>>>,
    eof: Arc<AtomicBool>,
}

impl Collector {
    pub(crate) fn spawn(mut reader: impl Read + Send + 'static) -> Collector {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let eof = Arc::new(AtomicBool::new(false));
        let (b, e) = (Arc::clone(&buf), Arc::clone(&eof));
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match reader.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => b
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            e.store(true, Ordering::SeqCst);
        });
        Collector { buf, eof }
    }

    /// Everything read so far, lossily decoded.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap_or_else(PoisonError::into_inner))
            .into_owned()
    }

    pub(crate) fn bytes(&self) -> Vec<u8> {
        self.buf
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits (bounded) for the pipe to close; false if it is still open.
    pub(crate) fn wait_eof(&self, timeout: Duration) -> bool {
        poll_until(timeout, || self.eof.load(Ordering::SeqCst))
    }
}

/// Calls `done` with a short backoff until it returns true or `timeout`
/// passes; returns its last answer.
pub(crate) fn poll_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Waits up to `timeout` for the child to exit; `None` if it is still running.
pub(crate) fn wait_timeout(
    child: &mut Child,
    timeout: Duration,
) -> std::io::Result<Option<ExitStatus>> {
    let mut status = None;
    let mut error = None;
    poll_until(timeout, || match child.try_wait() {
        Ok(Some(s)) => {
            status = Some(s);
            true
        }
        Ok(None) => false,
        Err(e) => {
            error = Some(e);
            true
        }
    });
    match error {
        Some(e) => Err(e),
        None => Ok(status),
    }
}

/// Sends `signal` to the child by PID, only while it is unreaped (a reaped
/// PID may already belong to someone else).
pub(crate) fn send_signal(child: &mut Child, signal: libc::c_int) -> std::io::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits in pid_t");
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, signal) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(e);
        }
    }
    Ok(())
}

/// Stops the child: `signal`, up to `grace` to exit, then SIGKILL and a
/// bounded wait. Returns the exit status, or an error if even SIGKILL did not
/// end it within 10 s (e.g. stuck in an uninterruptible sleep).
pub(crate) fn stop_child(
    child: &mut Child,
    signal: libc::c_int,
    grace: Duration,
) -> anyhow::Result<ExitStatus> {
    send_signal(child, signal)?;
    if let Some(status) = wait_timeout(child, grace)? {
        return Ok(status);
    }
    send_signal(child, libc::SIGKILL)?;
    match wait_timeout(child, Duration::from_secs(10))? {
        Some(status) => Ok(status),
        None => bail!("pid {} survived SIGKILL for 10 s", child.id()),
    }
}

/// Makes the kernel SIGKILL the child when the thread that spawned it dies,
/// so a harness killed outright (e.g. by a CI timeout) leaves no dnsmasq,
/// registry or agent behind. Tied to the spawning *thread*: spawn and drop
/// these processes on the same thread (tests do).
pub(crate) fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The command line, for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion within `timeout` and returns its output whatever
/// the exit status (for commands expected to fail). Stdin is null. On timeout
/// the child is SIGKILLed and the error carries what it printed.
pub fn output_within(cmd: &mut Command, timeout: Duration) -> anyhow::Result<Output> {
    let what = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot spawn `{what}`"))?;
    let stdout = Collector::spawn(child.stdout.take().expect("piped stdout"));
    let stderr = Collector::spawn(child.stderr.take().expect("piped stderr"));
    let status = match wait_timeout(&mut child, timeout)? {
        Some(status) => status,
        None => {
            let _ = stop_child(&mut child, libc::SIGKILL, Duration::ZERO);
            bail!(
                "`{what}` did not finish within {timeout:?}; stdout: {}; stderr: {}",
                stdout.text().trim(),
                stderr.text().trim()
            );
        }
    };
    // A grandchild may hold the pipes; take what arrived within a second.
    stdout.wait_eof(Duration::from_secs(1));
    stderr.wait_eof(Duration::from_secs(1));
    Ok(Output {
        status,
        stdout: stdout.bytes(),
        stderr: stderr.bytes(),
    })
}

/// Like [`output_within`] but an unsuccessful exit is an error that names the
/// command and includes its stderr and stdout.
pub fn run_checked(cmd: &mut Command, timeout: Duration) -> anyhow::Result<Output> {
    let out = output_within(cmd, timeout)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): stderr: {}; stdout: {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(out)
}
