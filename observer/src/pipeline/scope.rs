//! `run -- COMMAND`: the command runs in a fresh cgroup of its own, and only
//! events from that cgroup (or cgroups below it) count.

use std::{
    fs, io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use crate::pipeline::attribute::cgroups;

/// A cgroup created for the observed command; removed on drop when empty.
pub struct CommandCgroup {
    dir: PathBuf,
    relative: String,
    id: u64,
}

impl CommandCgroup {
    pub fn create(cgroup_root: &Path) -> io::Result<CommandCgroup> {
        let relative = format!("/registry-observer-{}", std::process::id());
        let dir = cgroup_root.join(relative.trim_start_matches('/'));
        fs::create_dir(&dir)?;
        let id = cgroups::inode_of(cgroup_root, &relative)
            .ok_or_else(|| io::Error::other("the new cgroup vanished"))?;
        Ok(CommandCgroup { dir, relative, id })
    }

    pub fn scope(&self) -> Scope {
        Scope {
            cgroup_id: self.id,
            cgroup_path: self.relative.clone(),
        }
    }

    pub fn relative_path(&self) -> &str {
        &self.relative
    }

    /// Makes `command` enter this cgroup between fork and exec, so not even
    /// its first syscall runs outside it.
    pub fn enter_on_spawn(&self, command: &mut tokio::process::Command) -> io::Result<()> {
        let procs = fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.procs"))?;
        let fd = procs.as_raw_fd();
        // SAFETY: the closure only calls write(2), which is async-signal-safe,
        // on an fd that stays open until spawn returns (moved in below).
        unsafe {
            command.pre_exec(move || {
                let _keep_open = &procs;
                // Writing "0" moves the writing process itself.
                if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
        Ok(())
    }
}

impl Drop for CommandCgroup {
    fn drop(&mut self) {
        // Fails with EBUSY if the command left processes behind; those keep
        // running and the directory stays, which is the honest outcome.
        if let Err(e) = fs::remove_dir(&self.dir) {
            eprintln!(
                "registry-observer: could not remove {} ({e}); processes started by the command may still run there",
                self.dir.display()
            );
        }
    }
}

/// Which events belong to the observed command.
#[derive(Clone, Debug)]
pub struct Scope {
    pub cgroup_id: u64,
    pub cgroup_path: String,
}

impl Scope {
    /// `path` is the event's cgroup path, when it could be resolved.
    pub fn contains(&self, cgroup_id: u64, path: Option<&str>) -> bool {
        cgroup_id == self.cgroup_id
            || path.is_some_and(|p| {
                p.strip_prefix(&self.cgroup_path)
                    .is_some_and(|rest| rest.starts_with('/'))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_covers_its_cgroup_and_below_only() {
        let scope = Scope {
            cgroup_id: 5,
            cgroup_path: "/registry-observer-7".into(),
        };
        assert!(scope.contains(5, None));
        assert!(scope.contains(6, Some("/registry-observer-7/child")));
        assert!(!scope.contains(6, Some("/registry-observer-70")));
        assert!(!scope.contains(6, Some("/")));
        assert!(!scope.contains(6, None));
    }
}
