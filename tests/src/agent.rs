//! Running the real registry-observer binary under test.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use crate::service::{Service, ServiceOutput};

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
        target_dir().join("debug/registry-observer")
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

/// The binary built without the agent (`--no-default-features`: lint,
/// webhook, report only): `$REGISTRY_OBSERVER_NO_AGENT_BIN` if set, else
/// `<target>/no-agent/debug/registry-observer`, where `cargo xtask test`
/// builds it on stable with no bpf-linker on PATH. Panics if it does not
/// exist.
pub fn no_agent_binary() -> PathBuf {
    let path = match std::env::var_os("REGISTRY_OBSERVER_NO_AGENT_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => target_dir().join("no-agent/debug/registry-observer"),
    };
    assert!(
        path.is_file(),
        "the binary without the agent, {}, does not exist: `cargo xtask test` builds it \
         (cargo build -p registry-observer --no-default-features --target-dir target/no-agent), \
         or set REGISTRY_OBSERVER_NO_AGENT_BIN",
        path.display()
    );
    path
}

/// `$CARGO_TARGET_DIR` (relative to the workspace) or `<workspace>/target`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_relative() {
                crate::workspace_root().join(t)
            } else {
                t
            }
        })
        .unwrap_or_else(|| crate::workspace_root().join("target"))
}

/// What a finished agent printed and how it exited.
pub type AgentOutput = ServiceOutput;

/// A running `registry-observer run ...` process. Dropping it stops the
/// process (SIGINT, then SIGKILL) so a failing test leaves no programs
/// attached to the root cgroup.
#[derive(Debug)]
pub struct Agent {
    service: Service,
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
        agent.service.wait_ready(OBSERVING_PREFIX, READY_TIMEOUT);
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
        Agent::spawn(binary, args).service.wait_exit(timeout)
    }

    /// Sends SIGINT (what Ctrl-C or a service stop does) and waits up to
    /// 30 s for a clean exit; on timeout SIGKILLs it and panics with its
    /// output. A non-zero exit is returned, not judged.
    pub fn stop(self) -> AgentOutput {
        self.service.stop_within(STOP_TIMEOUT)
    }

    /// `kill -9`: what an OOM kill or a crash does. Waits for it to be gone
    /// and returns what it printed.
    pub fn kill(self) -> AgentOutput {
        // SAFETY: kill(2) on the agent's own pid, which this handle reaps.
        unsafe { libc::kill(self.service.pid() as libc::pid_t, libc::SIGKILL) };
        self.service.wait_exit(STOP_TIMEOUT)
    }

    /// SIGTERM (what systemd's stop sends) and a wait for the exit.
    pub fn terminate(self) -> AgentOutput {
        // SAFETY: kill(2) on the agent's own pid, which this handle reaps.
        unsafe { libc::kill(self.service.pid() as libc::pid_t, libc::SIGTERM) };
        self.service.wait_exit(STOP_TIMEOUT)
    }

    /// PID of the agent process.
    pub fn pid(&self) -> u32 {
        self.service.pid()
    }

    /// Stdout printed so far.
    pub fn stdout_so_far(&self) -> String {
        self.service.stdout_so_far()
    }

    /// Stderr printed so far.
    pub fn stderr_so_far(&self) -> String {
        self.service.stderr_so_far()
    }

    /// Waits (bounded) until stdout contains `needle`; true if it did.
    pub fn wait_for_stdout(&self, needle: &str, timeout: Duration) -> bool {
        self.service.wait_for_stdout(needle, timeout)
    }

    fn spawn(binary: &Path, args: &[&str]) -> Agent {
        let args: Vec<&str> = std::iter::once("run").chain(args.iter().copied()).collect();
        Agent {
            service: Service::spawn(binary, &args, libc::SIGINT),
        }
    }
}

/// A pin dir in bpffs for one test's service-mode agents (`run --state-dir
/// --pin-dir`), unique to the test and this process. Dropping it runs
/// `registry-observer detach` on it, so a failing test leaves nothing
/// attached to the cgroup2 root.
pub struct TestPins {
    path: PathBuf,
}

impl TestPins {
    pub fn new(name: &str) -> TestPins {
        TestPins {
            path: PathBuf::from(format!("/sys/fs/bpf/ro-test-{name}-{}", std::process::id())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("a UTF-8 path")
    }

    /// `registry-observer detach --pin-dir` on it.
    pub fn detach(&self) -> std::process::Output {
        crate::output_within(
            std::process::Command::new(agent_binary())
                .args(["detach", "--pin-dir"])
                .arg(&self.path),
            Duration::from_secs(60),
        )
        .expect("registry-observer detach")
    }

    /// The program id behind each pinned link, by hook name, from
    /// `bpftool link show pinned`.
    pub fn linked_programs(&self) -> std::collections::BTreeMap<String, u64> {
        let mut programs = std::collections::BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(self.path.join("links")) else {
            return programs;
        };
        for entry in entries.flatten() {
            let output = crate::run_checked(
                std::process::Command::new("bpftool")
                    .args(["-j", "link", "show", "pinned"])
                    .arg(entry.path()),
                Duration::from_secs(60),
            )
            .expect("bpftool link show pinned");
            let link: serde_json::Value =
                serde_json::from_slice(&output.stdout).expect("bpftool's JSON");
            programs.insert(
                entry.file_name().to_string_lossy().into_owned(),
                link["prog_id"].as_u64().expect("a prog_id"),
            );
        }
        programs
    }
}

impl Drop for TestPins {
    fn drop(&mut self) {
        if self.path.exists() {
            let _ = self.detach();
        }
    }
}
