//! cgroup2 discovery and throw-away cgroups whose id a test can predict.
//!
//! The cgroup2 mount differs between machines (`/sys/fs/cgroup/unified` in
//! hybrid layouts, `/sys/fs/cgroup` on pure cgroup2 nodes), so it is always
//! looked up in /proc/self/mountinfo.

use std::{
    fs::{File, OpenOptions},
    os::{
        fd::AsRawFd,
        unix::{fs::MetadataExt, process::CommandExt},
    },
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use crate::process::poll_until;

/// (id, name) of the programs attached directly to the cgroup2 root, from
/// `bpftool cgroup show` ("ID AttachType AttachFlags Name" rows).
pub fn programs_on_cgroup2_root() -> std::collections::BTreeSet<(u64, String)> {
    let output = crate::run_checked(
        Command::new("bpftool")
            .args(["cgroup", "show"])
            .arg(cgroup2_root()),
        Duration::from_secs(60),
    )
    .expect("bpftool cgroup show");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let id = fields.first()?.parse().ok()?;
            Some((id, fields.last()?.to_string()))
        })
        .collect()
}

/// The cgroup2 mount point of this machine, found by the agent's own
/// parser (its table tests live in `registry_observer::pipeline::attribute::cgroups`).
///
/// Panics if there is none: every test that needs it would be meaningless.
pub fn cgroup2_root() -> PathBuf {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_else(|e| panic!("cannot read /proc/self/mountinfo: {e}"));
    registry_observer::pipeline::attribute::cgroups::cgroup2_mount_from(
        &text,
        std::path::Path::new("/"),
    )
    .unwrap_or_else(|| {
        panic!("no cgroup2 mount in /proc/self/mountinfo; this harness needs the unified hierarchy")
    })
}

static CGROUP_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh cgroup2 directory directly under the cgroup2 root, removed on drop.
///
/// Its id (the directory's inode) is what `bpf_get_current_cgroup_id()`
/// returns for processes inside it, so a test can assert that the agent
/// attributed an event to exactly this cgroup.
#[derive(Debug)]
pub struct TestCgroup {
    path: PathBuf,
    relative: String,
    id: u64,
}

impl TestCgroup {
    /// Creates `<cgroup2 root>/<hint>-<our pid>-<counter>`; the pid and
    /// counter keep parallel tests and earlier runs from colliding.
    /// Panics on failure.
    pub fn create(name_hint: &str) -> TestCgroup {
        let hint: String = name_hint
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let hint = if hint.is_empty() { "test".into() } else { hint };
        let n = CGROUP_COUNTER.fetch_add(1, Ordering::SeqCst) + 1;
        let name = format!("{hint}-{}-{n}", std::process::id());
        let path = cgroup2_root().join(&name);
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", path.display()));
        let id = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("cannot stat cgroup {}: {e}", path.display()))
            .ino();
        TestCgroup {
            path,
            relative: format!("/{name}"),
            id,
        }
    }

    /// Absolute directory of the cgroup.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as /proc/<pid>/cgroup shows it (`0::<this>`), e.g. `/ro-test-123-1`.
    pub fn relative_path(&self) -> &str {
        &self.relative
    }

    /// The cgroup2 id: the inode number of the directory.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A `Command` whose child joins this cgroup before it execs `program`,
    /// so even its first instruction (and first connect) is attributed here.
    ///
    /// `cgroup.procs` is opened now, in the parent; the child only writes "0"
    /// (meaning "myself") to the inherited descriptor, which is
    /// async-signal-safe. The descriptor is close-on-exec.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let procs_path = self.path.join("cgroup.procs");
        let procs: File = OpenOptions::new()
            .write(true)
            .open(&procs_path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", procs_path.display()));
        let mut cmd = Command::new(program);
        // SAFETY: the closure only calls write(2) on a descriptor it owns.
        unsafe {
            cmd.pre_exec(move || {
                let written = libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1);
                if written != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// PIDs currently in this cgroup or any child cgroup a test made below it.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for dir in dirs_depth_first(&self.path) {
            if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
        }
        pids
    }
}

/// `root` and every directory below it, children before parents (the order
/// in which cgroup directories can be removed).
pub(crate) fn dirs_depth_first(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.extend(dirs_depth_first(&entry.path()));
            }
        }
    }
    out.push(root.to_path_buf());
    out
}

impl Drop for TestCgroup {
    /// Gives processes up to 5 s to leave, SIGKILLs any that remain (by PID:
    /// they are in a cgroup only this test uses), then removes the directory
    /// and any sub-cgroups a test made. Never panics: it may run during one.
    fn drop(&mut self) {
        if !poll_until(Duration::from_secs(5), || self.pids().is_empty()) {
            let stragglers = self.pids();
            eprintln!(
                "observer-tests: cgroup {} still has pids {stragglers:?}; killing them",
                self.relative
            );
            for pid in stragglers {
                if let Ok(pid) = libc::pid_t::try_from(pid) {
                    // SAFETY: kill has no memory-safety preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            poll_until(Duration::from_secs(5), || self.pids().is_empty());
        }
        for dir in dirs_depth_first(&self.path) {
            if let Err(e) = std::fs::remove_dir(&dir) {
                eprintln!(
                    "observer-tests: cannot remove cgroup {}: {e}",
                    dir.display()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_mountinfo_has_a_cgroup2_mount() {
        let root = cgroup2_root();
        assert!(
            root.join("cgroup.procs").exists(),
            "{} is not a cgroup2 root",
            root.display()
        );
    }
}
