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
}
