//! Privileged test harness for registry-observer.
//!
//! Everything here drives real components on a real kernel: a network
//! namespace with its own resolver (dnsmasq), a TLS image registry
//! (docker-registry) that answers as `quay.io`, real clients (skopeo, getent),
//! cgroup2 directories, and the agent binary itself. Tests that use it run as
//! root and must *fail* (never skip) when they cannot run, so a green run
//! always means the real thing was exercised.
//!
//! Network policy: all traffic stays on 198.18.0.0/15 addresses of interfaces
//! a [`Testbed`] creates, or on loopback inside its namespace; every name a
//! client resolves is resolved inside the namespace by the testbed's dnsmasq.

mod agent;
mod cgroup;
mod containerd;
pub mod fake_apiserver;
pub mod observe;
mod process;
mod service;
mod testbed;
pub mod vm;

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

pub use agent::{Agent, AgentOutput, OBSERVING_PREFIX, TestPins, agent_binary, no_agent_binary};
pub use cgroup::{TestCgroup, cgroup2_root, programs_on_cgroup2_root};
pub use containerd::{
    CONTAINERD_TOOLS, Containerd, POD_IMAGE, PodSpec, RunningPod, pod_uid, push_pod_image,
};
pub use process::{output_within, run_checked};
pub use service::{Service, ServiceOutput};
pub use testbed::{Daemon, TESTBED_TOOLS, Testbed};

/// Panics with one sentence naming what is missing: root, or the executables
/// in `tools` that are not on `PATH`.
///
/// Tests call this first so that a machine that was not set up makes them fail
/// loudly instead of silently skipping the real checks.
pub fn require_root_and_tools(tools: &[&str]) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        panic!(
            "these tests need root (running as uid {euid}): they create network namespaces, \
             cgroups and load eBPF programs; run them as root, e.g. with `cargo xtask test`"
        );
    }
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| find_executable(tool).is_none())
        .collect();
    if !missing.is_empty() {
        panic!(
            "missing executable{} on PATH: {}; `cargo xtask setup` installs {}",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", "),
            if missing.len() == 1 { "it" } else { "them" },
        );
    }
}

/// The absolute path `Command::new(tool)` would run, if any: `tool` itself
/// when it contains a slash, else the first executable match on `PATH`.
pub fn find_executable(tool: &str) -> Option<PathBuf> {
    let is_exec = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if tool.contains('/') {
        let p = PathBuf::from(tool);
        return is_exec(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| is_exec(p))
}

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}
