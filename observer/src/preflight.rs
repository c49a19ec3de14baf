//! Checks made before anything is loaded, so that a machine that cannot run
//! the observer gets one sentence saying what is missing and how to fix it.

use std::{fs, path::PathBuf};

/// Capability numbers (include/uapi/linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// The cgroup2 mount point from /proc/self/mountinfo: pure cgroup2 systems
/// mount it at /sys/fs/cgroup, hybrid ones at /sys/fs/cgroup/unified, so it
/// is looked up, never assumed.
pub fn cgroup2_mount_from(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // Fields: id parent maj:min root mount-point options [optional...] - fstype source super-options
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        let mount_point = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

pub fn cgroup2_mount() -> Result<PathBuf, String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo ({e}); is /proc mounted?"))?;
    cgroup2_mount_from(&mountinfo).ok_or_else(|| {
        "no cgroup2 filesystem is mounted; the observer attaches to the cgroup2 root. \
         Mount it with `mount -t cgroup2 none /sys/fs/cgroup/unified` (hybrid systems) \
         or boot with systemd.unified_cgroup_hierarchy=1"
            .to_string()
    })
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

/// True when this process sees a different pid namespace than the kernel's
/// initial one: pids from the kernel hooks would then not match /proc.
pub fn in_nested_pid_namespace(status: &str) -> bool {
    status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))
        .is_some_and(|pids| pids.split_whitespace().count() > 1)
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
    fn finds_cgroup2_in_hybrid_and_pure_layouts() {
        let hybrid = "\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd";
        assert_eq!(
            cgroup2_mount_from(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot";
        assert_eq!(
            cgroup2_mount_from(pure),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let spaced = r"40 24 0:31 / /mnt/my\040cgroups rw - cgroup2 none rw";
        assert_eq!(
            cgroup2_mount_from(spaced),
            Some(PathBuf::from("/mnt/my cgroups"))
        );
        let none = "22 1 0:21 / /proc rw - proc proc rw\n23 1 0:5 / /dev rw - devtmpfs udev rw";
        assert_eq!(cgroup2_mount_from(none), None);
    }

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
        assert!(!in_nested_pid_namespace("NSpid:\t4242\n"));
        assert!(in_nested_pid_namespace("NSpid:\t4242\t7\n"));
    }
}
