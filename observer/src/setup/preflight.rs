//! Checks made before anything is loaded, so that a machine that cannot run
//! the observer gets one sentence saying what is missing and how to fix it.

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::pipeline::attribute::cgroups::cgroup2_mount_from;

/// Capability numbers (include/uapi/linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// The cgroup2 mount the programs attach to, from the agent's own mount
/// table (preferring one under `host_root`).
pub fn cgroup2_mount(host_root: &Path) -> Result<PathBuf, String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo ({e}); is /proc mounted?"))?;
    cgroup2_mount_from(&mountinfo, host_root).ok_or_else(|| {
        "no cgroup2 filesystem is mounted; the observer attaches to the cgroup2 root. \
         Mount it with `mount -t cgroup2 none /sys/fs/cgroup/unified` (hybrid systems) \
         or boot with systemd.unified_cgroup_hierarchy=1"
            .to_string()
    })
}

/// `--host-root DIR` must hold the host's /proc: without it every process
/// detail would silently be missing.
pub fn check_host_root(host_root: &Path) -> Result<(), String> {
    if !host_root.is_absolute() {
        return Err(format!(
            "--host-root {}: give an absolute path (the host's / as mounted in this container, e.g. /host)",
            host_root.display()
        ));
    }
    let init = host_root.join("proc/1/stat");
    if !init.exists() {
        return Err(format!(
            "--host-root {}: {} does not exist; mount the host's root there (e.g. a hostPath volume of / with hostPID: true), or leave --host-root at /",
            host_root.display(),
            init.display()
        ));
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
pub fn check_privileges(caps: u64) -> Result<(), String> {
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
        Err(format!(
            "missing privileges ({}): loading eBPF programs and attaching them to the cgroup2 root needs root; run with sudo",
            missing.join(", ")
        ))
    }
}

pub fn check_own_privileges() -> Result<(), String> {
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status ({e})"))?;
    let caps = effective_caps(&status)
        .ok_or_else(|| "cannot find CapEff in /proc/self/status".to_string())?;
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
        assert_eq!(check_privileges(0x000001ffffffffff), Ok(()));
        let err = check_privileges(0).unwrap_err();
        assert!(err.contains("CAP_BPF") && err.contains("CAP_NET_ADMIN") && err.contains("sudo"));
        let only_admin = (1u64 << CAP_SYS_ADMIN) | (1u64 << CAP_NET_ADMIN);
        assert_eq!(check_privileges(only_admin), Ok(()));
        let bpf_and_net = (1u64 << CAP_BPF) | (1u64 << CAP_NET_ADMIN);
        assert_eq!(check_privileges(bpf_and_net), Ok(()));
        let err = check_privileges(1u64 << CAP_BPF).unwrap_err();
        assert!(err.contains("(CAP_NET_ADMIN)"), "{err}");
        assert_eq!(
            effective_caps("Name:\tx\nCapEff:\t000001ffffffffff\n"),
            Some(0x1ffffffffff)
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
