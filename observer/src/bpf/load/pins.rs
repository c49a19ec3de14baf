//! Service mode's pins: the maps and links left in bpffs so the programs
//! keep observing while no agent runs, and the next agent adopts them.
//!
//! Layout of the pin dir (`/sys/fs/bpf/registry-observer` by default):
//! `maps/<MAP>` for the maps the programs share with user space and with
//! each other, `links/<hook>` for each program's link. Programs themselves
//! are not pinned: a link holds its program, and each agent loads its own
//! (its globals, the agent's tgid among them, are frozen in `.rodata`) and
//! swaps it into the pinned link.
//!
//! aya 0.14 has no public `BPF_LINK_UPDATE` for cgroup links and no query
//! of a cgroup's effective programs, so both are raw bpf(2) calls here,
//! each a few fields of `union bpf_attr` (include/uapi/linux/bpf.h).

use std::{
    ffi::CString,
    fs::{self, File},
    io,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

/// The pin dir of `run --state-dir` unless `--pin-dir` says otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/registry-observer";

/// The maps pinned, by their names in the object: the ring and the loss
/// counters (which user space reads) and the tables programs share across
/// events (a socket's owner, a connection's capture budget), which a new
/// program must see as the old one left them.
pub const PINNED_MAPS: [&str; 4] = ["EVENTS", "COUNTERS", "SOCKET_OWNERS", "TCP_CAPTURE"];

/// statfs(2) f_type of bpffs (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_F_QUERY_EFFECTIVE: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(
        "{dir} is not on a BPF filesystem (bpffs); service mode pins its programs there: mount it with `mount -t bpf bpf /sys/fs/bpf`, or give --pin-dir a directory on bpffs"
    )]
    NotBpffs { dir: PathBuf },
    #[error("cannot create the pin dir {dir}: {source}")]
    Create {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "another registry-observer agent holds the pin dir {dir}; two agents on one set of pins would read each other's ring buffer (give each its own --pin-dir, or stop the other)"
    )]
    Busy { dir: PathBuf },
    #[error("cannot remove the pin {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A pin dir, held (flock) for as long as this value lives.
pub struct PinDir {
    dir: PathBuf,
    _lock: File,
}

impl PinDir {
    /// Creates the dir (its parent must be on bpffs) and takes its lock.
    pub fn open(dir: &Path) -> Result<PinDir, PinError> {
        let bpffs = dir
            .ancestors()
            .find(|ancestor| ancestor.exists())
            .is_some_and(is_bpffs);
        if !bpffs {
            return Err(PinError::NotBpffs {
                dir: dir.to_path_buf(),
            });
        }
        for sub in ["maps", "links"] {
            fs::create_dir_all(dir.join(sub)).map_err(|source| PinError::Create {
                dir: dir.to_path_buf(),
                source,
            })?;
        }
        let lock = File::open(dir).map_err(|source| PinError::Create {
            dir: dir.to_path_buf(),
            source,
        })?;
        // SAFETY: flock on a valid fd has no memory effects.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(PinError::Busy {
                dir: dir.to_path_buf(),
            });
        }
        Ok(PinDir {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join("maps").join(name)
    }

    pub fn link(&self, hook: &str) -> PathBuf {
        self.dir.join("links").join(hook)
    }

    /// A link's pin while it replaces the one at [`PinDir::link`] (bpffs
    /// refuses names with a dot).
    pub fn new_link(&self, hook: &str) -> PathBuf {
        self.dir.join("links").join(format!("{hook}-new"))
    }

    /// Whether anything is pinned: an earlier agent's programs to adopt.
    pub fn has_pins(&self) -> bool {
        ["maps", "links"].iter().any(|sub| {
            fs::read_dir(self.dir.join(sub)).is_ok_and(|mut entries| entries.next().is_some())
        })
    }

    /// Unpins every link (their programs detach as the last reference
    /// goes), then every map; returns the pins removed.
    pub fn remove_all(&self) -> Result<Vec<PathBuf>, PinError> {
        let mut removed = Vec::new();
        for sub in ["links", "maps"] {
            let Ok(entries) = fs::read_dir(self.dir.join(sub)) else {
                continue;
            };
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for path in paths {
                fs::remove_file(&path).map_err(|source| PinError::Remove {
                    path: path.clone(),
                    source,
                })?;
                removed.push(path);
            }
        }
        Ok(removed)
    }

    /// Removes the (empty) dir itself, for `detach`.
    pub fn remove_dir(self) -> Result<(), PinError> {
        for sub in ["links", "maps"] {
            let path = self.dir.join(sub);
            if path.exists() {
                fs::remove_dir(&path).map_err(|source| PinError::Remove { path, source })?;
            }
        }
        fs::remove_dir(&self.dir).map_err(|source| PinError::Remove {
            path: self.dir.clone(),
            source,
        })
    }
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into a zeroed local struct.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } == 0) && stat.f_type as i64 == BPF_FS_MAGIC
}

/// `union bpf_attr`, as zeroed bytes the calls below fill in: the kernel
/// accepts a larger attr whose tail is zero.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }

    fn u32_at(&mut self, offset: usize, value: u32) -> &mut Self {
        self.0[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
        self
    }

    fn u64_at(&mut self, offset: usize, value: u64) -> &mut Self {
        self.0[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
        self
    }

    fn call(&mut self, command: libc::c_long) -> io::Result<libc::c_long> {
        // SAFETY: bpf(2) reads (and for queries writes) within the attr
        // and the buffers it points to, which outlive the call.
        let result = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                command,
                self.0.as_mut_ptr(),
                self.0.len() as libc::c_uint,
            )
        };
        if result < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(result)
        }
    }
}

/// BPF_OBJ_GET: a new fd for the object pinned at `path`.
pub fn open_pinned(path: &Path) -> io::Result<OwnedFd> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // pathname @0 (u64), bpf_fd @8, file_flags @12.
    let fd = Attr::new()
        .u64_at(0, c_path.as_ptr() as u64)
        .call(BPF_OBJ_GET)?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// BPF_LINK_UPDATE: `link` runs `program` from now on, atomically (the
/// kernel swaps the program pointer; no event sees neither). Cgroup links
/// support it; tracing links answer EINVAL, a link whose cgroup is gone
/// ENOLINK.
pub fn update_link(link: BorrowedFd<'_>, program: BorrowedFd<'_>) -> io::Result<()> {
    // link_fd @0, new_prog_fd @4, flags @8, old_prog_fd @12.
    Attr::new()
        .u32_at(0, link.as_raw_fd() as u32)
        .u32_at(4, program.as_raw_fd() as u32)
        .call(BPF_LINK_UPDATE)?;
    Ok(())
}

/// BPF_PROG_QUERY with BPF_F_QUERY_EFFECTIVE: the ids of the programs that
/// run for `attach_type` on the cgroup `cgroup` (its own and inherited).
pub fn effective_programs(cgroup: BorrowedFd<'_>, attach_type: u32) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    // target_fd @0, attach_type @4, query_flags @8, attach_flags @12,
    // prog_ids @16 (u64), prog_cnt @24 (in: room, out: count).
    let mut attr = Attr::new();
    attr.u32_at(0, cgroup.as_raw_fd() as u32)
        .u32_at(4, attach_type)
        .u32_at(8, BPF_F_QUERY_EFFECTIVE)
        .u64_at(16, ids.as_mut_ptr() as u64)
        .u32_at(24, ids.len() as u32);
    attr.call(BPF_PROG_QUERY)?;
    let count = u32::from_ne_bytes(attr.0[24..28].try_into().expect("4 bytes")) as usize;
    ids.truncate(count.min(ids.len()));
    Ok(ids)
}
