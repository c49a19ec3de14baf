//! cgroup2 id -> path. A cgroup2 id is the inode number of the cgroup's
//! directory, so the mapping comes from the directory tree; a process's
//! /proc/<pid>/cgroup line gives a fast first guess that is checked by inode.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Deep enough for nested systemd inside containers inside pods.
const MAX_DEPTH: usize = 32;
/// Bounds one scan of a pathological tree.
const MAX_DIRS_PER_SCAN: usize = 200_000;
/// Rescans triggered by unknown ids are at most this frequent: an id whose
/// cgroup is already gone would otherwise trigger a scan per event.
const RESCAN_INTERVAL: Duration = Duration::from_secs(1);
const MAX_CACHED: usize = 100_000;

pub struct CgroupIndex {
    root: PathBuf,
    by_id: HashMap<u64, String>,
    last_scan: Option<Instant>,
}

impl CgroupIndex {
    pub fn new(root: PathBuf) -> CgroupIndex {
        CgroupIndex {
            root,
            by_id: HashMap::new(),
            last_scan: None,
        }
    }

    /// The path (relative to the cgroup2 root, starting with `/`) of cgroup
    /// `id`. `hint` is a path the caller believes it has, e.g. from
    /// /proc/<pid>/cgroup.
    pub fn resolve(&mut self, id: u64, hint: Option<&str>) -> Option<String> {
        if let Some(path) = self.by_id.get(&id) {
            return Some(path.clone());
        }
        if let Some(hint) = hint
            && inode_of(&self.root, hint) == Some(id)
        {
            self.remember(id, hint.to_string());
            return Some(hint.to_string());
        }
        let due = self
            .last_scan
            .is_none_or(|at| at.elapsed() >= RESCAN_INTERVAL);
        if due {
            self.scan();
            return self.by_id.get(&id).cloned();
        }
        None
    }

    fn remember(&mut self, id: u64, path: String) {
        if self.by_id.len() >= MAX_CACHED {
            self.by_id.clear();
        }
        self.by_id.insert(id, path);
    }

    fn scan(&mut self) {
        self.last_scan = Some(Instant::now());
        let mut stack = vec![(self.root.clone(), String::from("/"), 0usize)];
        let mut seen = 0usize;
        while let Some((dir, relative, depth)) = stack.pop() {
            seen += 1;
            if seen > MAX_DIRS_PER_SCAN {
                break;
            }
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            self.remember(meta.ino(), relative.clone());
            if depth >= MAX_DEPTH {
                continue;
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let child = if relative == "/" {
                        format!("/{name}")
                    } else {
                        format!("{relative}/{name}")
                    };
                    stack.push((entry.path(), child, depth + 1));
                }
            }
        }
    }
}

/// Inode of `<root><relative>`, the cgroup2 id of that cgroup.
pub fn inode_of(root: &Path, relative: &str) -> Option<u64> {
    let path = root.join(relative.trim_start_matches('/'));
    fs::metadata(path).ok().map(|m| m.ino())
}

/// The cgroup2 mount point from /proc/self/mountinfo: pure cgroup2 systems
/// mount it at /sys/fs/cgroup, hybrid ones at /sys/fs/cgroup/unified, so it
/// is looked up, never assumed. A mount of the hierarchy's root (`/`) is
/// preferred: only below it do paths equal what /proc/<pid>/cgroup shows. A
/// sub-tree mount (e.g. inside a container) is the fallback.
///
/// An agent in a container finds the host's hierarchy mounted under its
/// `host_root` (a hostPath of / at /host): mounts there come first.
pub fn cgroup2_mount_from(mountinfo: &str, host_root: &Path) -> Option<PathBuf> {
    // (under the host root, of the hierarchy's root): best first.
    let mut best: Option<((bool, bool), PathBuf)> = None;
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
        let rank = (mount_point.starts_with(host_root), *root == "/");
        if best.as_ref().is_none_or(|(best_rank, _)| rank > *best_rank) {
            best = Some((rank, mount_point));
        }
    }
    best.map(|(_, mount_point)| mount_point)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain directory tree has the same id = inode property, so the
    /// index logic is testable without privileges.
    #[test]
    fn resolves_ids_by_scanning_and_by_hint() {
        let root = std::env::temp_dir().join(format!("ro-cgroup-index-{}", std::process::id()));
        let deep = root.join("system.slice/crio.service");
        fs::create_dir_all(&deep).unwrap();
        let deep_id = fs::metadata(&deep).unwrap().ino();
        let root_id = fs::metadata(&root).unwrap().ino();

        let mut index = CgroupIndex::new(root.clone());
        assert_eq!(
            index.resolve(deep_id, None),
            Some("/system.slice/crio.service".into())
        );
        assert_eq!(index.resolve(root_id, None), Some("/".into()));

        let mut index = CgroupIndex::new(root.clone());
        // A right hint resolves without a scan; a wrong one is not trusted.
        assert_eq!(
            index.resolve(deep_id, Some("/system.slice/crio.service")),
            Some("/system.slice/crio.service".into())
        );
        let slice_id = fs::metadata(root.join("system.slice")).unwrap().ino();
        assert_eq!(
            index.resolve(slice_id, Some("/system.slice/crio.service")),
            Some("/system.slice".into())
        );
        // Unknown ids stay unknown (and do not rescan within the interval).
        assert_eq!(index.resolve(u64::MAX, None), None);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn finds_cgroup2_in_hybrid_and_pure_layouts() {
        let hybrid = "\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd";
        assert_eq!(
            cgroup2_mount_from(hybrid, Path::new("/")),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot";
        assert_eq!(
            cgroup2_mount_from(pure, Path::new("/")),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let spaced = r"40 24 0:31 / /mnt/my\040cgroups rw - cgroup2 none rw";
        assert_eq!(
            cgroup2_mount_from(spaced, Path::new("/")),
            Some(PathBuf::from("/mnt/my cgroups"))
        );
        let none = "22 1 0:21 / /proc rw - proc proc rw\n23 1 0:5 / /dev rw - devtmpfs udev rw";
        assert_eq!(cgroup2_mount_from(none, Path::new("/")), None);
        assert_eq!(cgroup2_mount_from("", Path::new("/")), None);
    }

    #[test]
    fn prefers_hierarchy_root_and_decodes_escapes() {
        let text = "\
50 40 0:38 /kubepods /host/sub rw - cgroup2 cgroup2 rw
51 40 0:38 / /mnt/my\\040cgroup rw shared:3 - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_mount_from(text, Path::new("/")),
            Some(PathBuf::from("/mnt/my cgroup"))
        );
        // Only a sub-tree mount: still better than nothing.
        assert_eq!(
            cgroup2_mount_from(text.lines().next().unwrap(), Path::new("/")),
            Some(PathBuf::from("/host/sub"))
        );
        // A backslash that starts no escape stays as it is.
        assert_eq!(
            cgroup2_mount_from("1 2 0:3 / /a\\9b rw - cgroup2 none rw", Path::new("/")),
            Some(PathBuf::from("/a\\9b"))
        );
    }

    #[test]
    fn prefers_a_mount_under_the_host_root() {
        let text = "\
30 20 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
31 20 0:38 /kubepods /host/sys/fs/cgroup/sub rw - cgroup2 cgroup2 rw
32 20 0:38 / /host/sys/fs/cgroup rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_mount_from(text, Path::new("/host")),
            Some(PathBuf::from("/host/sys/fs/cgroup"))
        );
        // A sub-tree under the host root beats the container's own root.
        let sub_only = text.lines().take(2).collect::<Vec<_>>().join("\n");
        assert_eq!(
            cgroup2_mount_from(&sub_only, Path::new("/host")),
            Some(PathBuf::from("/host/sys/fs/cgroup/sub"))
        );
        // Nothing under it: the agent's own mount, as without --host-root.
        assert_eq!(
            cgroup2_mount_from(text.lines().next().unwrap(), Path::new("/host")),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            cgroup2_mount_from(text, Path::new("/")),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
    }
}
