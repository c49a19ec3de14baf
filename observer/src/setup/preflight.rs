//! Checks made before anything is loaded, so that a machine that cannot run
//! the observer gets one sentence saying what is missing and how to fix it.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use crate::pipeline::attribute::cgroups::cgroup2_mount_from;

/// Capability numbers (include/uapi/linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// What this machine or this invocation lacks, as one sentence with the fix
/// (the cause is part of it, so there is no `source()`).
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("cannot read /proc/self/mountinfo ({0}); is /proc mounted?")]
    Mountinfo(io::Error),
    #[error(
        "no cgroup2 filesystem is mounted; the observer attaches to the cgroup2 root. \
         Mount it with `mount -t cgroup2 none /sys/fs/cgroup/unified` (hybrid systems) \
         or boot with systemd.unified_cgroup_hierarchy=1"
    )]
    NoCgroup2,
    #[error(
        "--host-root {}: give an absolute path (the host's / as mounted in this container, e.g. /host)",
        host_root.display()
    )]
    HostRootNotAbsolute { host_root: PathBuf },
    #[error(
        "--host-root {}: {} does not exist; mount the host's root there (e.g. a hostPath volume of / with hostPID: true), or leave --host-root at /",
        host_root.display(),
        init.display()
    )]
    HostRootWithoutProc { host_root: PathBuf, init: PathBuf },
    #[error(
        "missing privileges ({}): loading eBPF programs and attaching them to the cgroup2 root needs root; run with sudo",
        missing.join(", ")
    )]
    MissingPrivileges { missing: Vec<&'static str> },
    #[error("cannot read /proc/self/status ({0})")]
    ProcStatus(io::Error),
    #[error("cannot find CapEff in /proc/self/status")]
    NoCapEff,
}

/// The cgroup2 mount the programs attach to, from the agent's own mount
/// table (preferring one under `host_root`).
pub fn cgroup2_mount(host_root: &Path) -> Result<PathBuf, PreflightError> {
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").map_err(PreflightError::Mountinfo)?;
    cgroup2_mount_from(&mountinfo, host_root).ok_or(PreflightError::NoCgroup2)
}

/// `--host-root DIR` must hold the host's /proc: without it every process
/// detail would silently be missing.
pub fn check_host_root(host_root: &Path) -> Result<(), PreflightError> {
    if !host_root.is_absolute() {
        return Err(PreflightError::HostRootNotAbsolute {
            host_root: host_root.to_path_buf(),
        });
    }
    let init = host_root.join("proc/1/stat");
    if !init.exists() {
        return Err(PreflightError::HostRootWithoutProc {
            host_root: host_root.to_path_buf(),
            init,
        });
    }
    Ok(())
}

/// Effective capabilities from a /proc/<pid>/status text.
pub fn effective_caps(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// The privileges to load cgroup programs and attach them to the root. A
/// kernel that still refuses (lockdown, LSM policy) is explained when the
/// load fails.
pub fn check_privileges(caps: u64) -> Result<(), PreflightError> {
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PreflightError::MissingPrivileges { missing })
    }
}

pub fn check_own_privileges() -> Result<(), PreflightError> {
    let status = fs::read_to_string("/proc/self/status").map_err(PreflightError::ProcStatus)?;
    let caps = effective_caps(&status).ok_or(PreflightError::NoCapEff)?;
    check_privileges(caps)
}

/// The inode of the kernel's initial PID namespace, fixed at build time
/// (`PROC_PID_INIT_INO`, include/linux/proc_ns.h).
const INIT_PID_NAMESPACE_INODE: u64 = 0xEFFF_FFFC;

/// True when `/proc/self/ns/pid` (its link text, `pid:[INODE]`) is not the
/// kernel's initial PID namespace: the kernel hooks report initial-namespace
/// pids, which this process's /proc does not know. (`NSpid` in
/// /proc/self/status cannot tell: a container's own procfs lists only the
/// levels from its own namespace down, so it shows one pid there too.)
pub fn in_nested_pid_namespace(ns_link: &str) -> bool {
    ns_link
        .trim()
        .strip_prefix("pid:[")
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inode| inode.parse::<u64>().ok())
        .is_some_and(|inode| inode != INIT_PID_NAMESPACE_INODE)
}

pub fn kernel_release() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn hostname() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileges_name_what_is_missing() {
        assert!(check_privileges(0x000001ffffffffff).is_ok());
        let err = check_privileges(0).unwrap_err();
        assert!(
            matches!(&err, PreflightError::MissingPrivileges { missing } if missing == &["CAP_BPF", "CAP_NET_ADMIN"]),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "missing privileges (CAP_BPF, CAP_NET_ADMIN): loading eBPF programs and attaching them to the cgroup2 root needs root; run with sudo"
        );
        let only_admin = (1u64 << CAP_SYS_ADMIN) | (1u64 << CAP_NET_ADMIN);
        assert!(check_privileges(only_admin).is_ok());
        let bpf_and_net = (1u64 << CAP_BPF) | (1u64 << CAP_NET_ADMIN);
        assert!(check_privileges(bpf_and_net).is_ok());
        let err = check_privileges(1u64 << CAP_BPF).unwrap_err().to_string();
        assert!(err.contains("(CAP_NET_ADMIN)"), "{err}");
        assert_eq!(
            effective_caps("Name:\tx\nCapEff:\t000001ffffffffff\n"),
            Some(0x1ffffffffff)
        );
    }

    #[test]
    fn host_root_and_cgroup2_messages() {
        let err = check_host_root(Path::new("host")).unwrap_err();
        assert!(matches!(err, PreflightError::HostRootNotAbsolute { .. }));
        assert_eq!(
            err.to_string(),
            "--host-root host: give an absolute path (the host's / as mounted in this container, e.g. /host)"
        );
        let empty = tempfile::tempdir().unwrap();
        let err = check_host_root(empty.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "--host-root {0}: {0}/proc/1/stat does not exist; mount the host's root there (e.g. a hostPath volume of / with hostPID: true), or leave --host-root at /",
                empty.path().display()
            )
        );
        assert_eq!(
            PreflightError::NoCgroup2.to_string(),
            "no cgroup2 filesystem is mounted; the observer attaches to the cgroup2 root. Mount it with `mount -t cgroup2 none /sys/fs/cgroup/unified` (hybrid systems) or boot with systemd.unified_cgroup_hierarchy=1"
        );
    }

    #[test]
    fn detects_nested_pid_namespaces() {
        assert!(!in_nested_pid_namespace("pid:[4026531836]"));
        assert!(in_nested_pid_namespace("pid:[4026532301]"));
        // Unreadable or unexpected: no warning rather than a wrong one.
        assert!(!in_nested_pid_namespace(""));
        assert!(!in_nested_pid_namespace("net:[4026531840]"));
    }
}
