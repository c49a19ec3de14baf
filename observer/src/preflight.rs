//! Checks made before anything is loaded, so that a machine that cannot run
//! the observer gets one sentence saying what is missing and how to fix it.

use std::{fs, path::PathBuf};

/// Capability numbers (include/uapi/linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// The cgroup2 mount point from /proc/self/mountinfo: pure cgroup2 systems
/// mount it at /sys/fs/cgroup, hybrid ones at /sys/fs/cgroup/unified, so it
/// is looked up, never assumed. A mount of the hierarchy's root (`/`) is
/// preferred: only below it do paths equal what /proc/<pid>/cgroup shows. A
/// sub-tree mount (e.g. inside a container) is the fallback.
pub fn cgroup2_mount_from(mountinfo: &str) -> Option<PathBuf> {
    let mut fallback = None;
    for line in mountinfo.lines() {
        // "<id> <parent> <maj:min> <root> <mount point> <opts> [optional...] - <fstype> <source> <super opts>"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() != Some("cgroup2") {
            continue;
        }
        let fields: Vec<&str> = left.split_whitespace().collect();
        let (Some(root), Some(mount_point)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        let mount_point = PathBuf::from(unescape_mountinfo(mount_point));
        if *root == "/" {
            return Some(mount_point);
        }
        fallback.get_or_insert(mount_point);
    }
    fallback
}

/// Decodes the `\ooo` octal escapes the kernel uses for space, tab, newline
/// and backslash in mountinfo paths.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4);
        if bytes[i] == b'\\'
            && let Some(digits) = octal.filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)))
        {
            out.push((digits[0] - b'0') * 64 + (digits[1] - b'0') * 8 + (digits[2] - b'0'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
        assert_eq!(cgroup2_mount_from(""), None);
    }

    #[test]
    fn prefers_hierarchy_root_and_decodes_escapes() {
        let text = "\
50 40 0:38 /kubepods /host/sub rw - cgroup2 cgroup2 rw
51 40 0:38 / /mnt/my\\040cgroup rw shared:3 - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_mount_from(text),
            Some(PathBuf::from("/mnt/my cgroup"))
        );
        // Only a sub-tree mount: still better than nothing.
        assert_eq!(
            cgroup2_mount_from(text.lines().next().unwrap()),
            Some(PathBuf::from("/host/sub"))
        );
        // A backslash that starts no escape stays as it is.
        assert_eq!(
            cgroup2_mount_from("1 2 0:3 / /a\\9b rw - cgroup2 none rw"),
            Some(PathBuf::from("/a\\9b"))
        );
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
