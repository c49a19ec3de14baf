//! Stage 5, attribute: who made an attempt. Process facts from /proc while
//! the process lives (what was available is recorded, the rest stays null),
//! then cgroup id -> path -> systemd unit / container / pod, then a
//! component name a human recognizes.

pub mod cgroup_path;
pub mod cgroups;
pub mod lineage;
pub mod procfs;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use serde::Serialize;

pub use self::cgroup_path::{CgroupOwner, Container};
use self::{
    cgroups::CgroupIndex,
    lineage::ProcessTable,
    procfs::{ProcessFacts, StatFields},
};
use crate::decode::{Actor, Comm, Observation};

/// Ancestors recorded per process: enough to reach systemd or a container
/// runtime from any realistic process tree.
const MAX_ANCESTORS: usize = 16;
const MAX_CACHED_PROCESSES: usize = 8192;
/// Processes the lineage table follows: a busy node runs a few thousand.
const MAX_LINEAGE_PROCESSES: usize = 32768;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub comm: String,
    pub uid: Option<u32>,
    /// None when the process was gone before /proc could be read.
    pub exe: Option<String>,
    pub cmdline: Option<Vec<String>>,
    /// Parent first, up to pid 1.
    pub ancestors: Vec<Ancestor>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ancestor {
    pub pid: u32,
    pub comm: String,
    pub exe: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CgroupRef {
    pub id: u64,
    /// Relative to the cgroup2 root; None when the cgroup was already gone.
    pub path: Option<String>,
}

/// Everything attribution found for one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub process: ProcessInfo,
    pub cgroup: CgroupRef,
    pub owner: CgroupOwner,
    pub component: String,
}

/// Counts of attributions that had to do with less than everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AttributionStats {
    /// The process had exited before /proc was read and no exec event
    /// described it (it started before the agent).
    pub process_gone: u64,
    /// The process had exited before /proc was read; its exec and fork
    /// events described it.
    pub from_lineage: u64,
    /// The cgroup id matched no directory (removed, or outside our view).
    pub cgroup_unknown: u64,
}

struct CachedProcess {
    comm: Comm,
    facts: Option<ProcessFacts>,
    ancestors: Vec<Ancestor>,
}

pub struct Attributor {
    proc_root: PathBuf,
    cgroups: CgroupIndex,
    processes: HashMap<u32, CachedProcess>,
    lineage: ProcessTable,
    stats: AttributionStats,
}

impl Attributor {
    pub fn new(proc_root: PathBuf, cgroup_root: PathBuf) -> Attributor {
        Attributor {
            proc_root,
            cgroups: CgroupIndex::new(cgroup_root),
            processes: HashMap::new(),
            lineage: ProcessTable::new(MAX_LINEAGE_PROCESSES),
            stats: AttributionStats::default(),
        }
    }

    /// Feeds exec, fork and exit events to the process table.
    pub fn follow(&mut self, observation: &Observation) {
        self.lineage.apply(observation);
    }

    pub fn stats(&self) -> &AttributionStats {
        &self.stats
    }

    /// Resolves a cgroup id to its path (also used to scope `run -- CMD`).
    pub fn cgroup_path(&mut self, cgroup_id: u64, hint: Option<&str>) -> Option<String> {
        self.cgroups.resolve(cgroup_id, hint)
    }

    pub fn attribute(&mut self, actor: &Actor) -> Origin {
        let cached = self.process(actor);
        let facts = cached.facts.clone();
        let ancestors = cached.ancestors.clone();
        let hint = facts.as_ref().and_then(|f| f.cgroup.clone());
        let path = self.cgroups.resolve(actor.cgroup_id, hint.as_deref());
        if path.is_none() {
            self.stats.cgroup_unknown += 1;
        }
        let owner = path.as_deref().map(cgroup_path::parse).unwrap_or_default();
        let process = ProcessInfo {
            pid: actor.tgid,
            // The leader's comm names the program; the kernel's is the
            // thread's (dig's resolver thread is "isc-net-0000").
            comm: facts
                .as_ref()
                .map_or_else(|| actor.comm.to_text(), |f| f.stat.comm.clone()),
            uid: actor.uid,
            exe: facts.as_ref().and_then(|f| f.exe.clone()),
            cmdline: facts.as_ref().and_then(|f| f.cmdline.clone()),
            ancestors,
        };
        let component = component(&owner, &process);
        Origin {
            process,
            cgroup: CgroupRef {
                id: actor.cgroup_id,
                path,
            },
            owner,
            component,
        }
    }

    /// Cached per (tgid, thread comm). A process is identified by (tgid,
    /// start time), never a bare pid: facts are used only when /proc's
    /// process started before the event, otherwise the pid was reused.
    fn process(&mut self, actor: &Actor) -> &CachedProcess {
        let stale = self
            .processes
            .get(&actor.tgid)
            .is_none_or(|cached| cached.comm != actor.comm || cached.facts.is_none());
        if stale {
            if self.processes.len() >= MAX_CACHED_PROCESSES {
                self.processes.clear();
            }
            let mut facts = procfs::read_process(&self.proc_root, actor.tgid)
                .filter(|facts| started_before(facts.stat.start_ticks, actor.boot_ns));
            if facts.is_none() {
                facts = self.lineage.get(actor.tgid, actor.boot_ns).map(|known| {
                    self.stats.from_lineage += 1;
                    ProcessFacts {
                        stat: StatFields {
                            comm: known.comm.clone(),
                            ppid: known.ppid,
                            start_ticks: 0,
                        },
                        exe: known.exe.clone(),
                        cmdline: known.argv.clone(),
                        cgroup: None,
                    }
                });
            }
            if facts.is_none() {
                self.stats.process_gone += 1;
            }
            let ancestors = facts
                .as_ref()
                .map(|f| read_ancestors(&self.proc_root, &self.lineage, f.stat.ppid, actor.boot_ns))
                .unwrap_or_default();
            self.processes.insert(
                actor.tgid,
                CachedProcess {
                    comm: actor.comm,
                    facts,
                    ancestors,
                },
            );
        }
        &self.processes[&actor.tgid]
    }
}

/// /proc's start time (clock ticks of CLOCK_BOOTTIME) is at or before the
/// event, allowing one tick of rounding.
fn started_before(start_ticks: u64, event_boot_ns: u64) -> bool {
    // SAFETY: sysconf has no memory effects.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let tick_ns = 1_000_000_000 / ticks_per_second;
    start_ticks.saturating_mul(tick_ns) <= event_boot_ns.saturating_add(tick_ns)
}

/// Parent first: from /proc while an ancestor lives (or its pid was not
/// reused since `at_ns`), else from the lineage table.
fn read_ancestors(
    proc_root: &Path,
    lineage: &ProcessTable,
    mut pid: u32,
    at_ns: u64,
) -> Vec<Ancestor> {
    let mut ancestors = Vec::new();
    while pid != 0 && ancestors.len() < MAX_ANCESTORS {
        let live = procfs::read_stat(proc_root, pid)
            .filter(|stat| started_before(stat.start_ticks, at_ns));
        let (ancestor, parent) = match live {
            Some(stat) => (
                Ancestor {
                    pid,
                    comm: stat.comm,
                    exe: procfs::read_exe(proc_root, pid),
                },
                stat.ppid,
            ),
            None => match lineage.get(pid, at_ns) {
                Some(known) => (
                    Ancestor {
                        pid,
                        comm: known.comm.clone(),
                        exe: known.exe.clone(),
                    },
                    known.ppid,
                ),
                None => break,
            },
        };
        ancestors.push(ancestor);
        if pid == 1 {
            break;
        }
        pid = parent;
    }
    ancestors
}

/// A stable, human name for who is responsible: the pod, else the
/// container, else the systemd unit, else the executable, else the comm.
pub fn component(owner: &CgroupOwner, process: &ProcessInfo) -> String {
    if let Some(uid) = &owner.pod_uid {
        return format!("pod/{uid}");
    }
    if let Some(container) = &owner.container {
        return format!("{}/{}", container.runtime, &container.id[..12]);
    }
    if let Some(unit) = &owner.unit {
        return unit.strip_suffix(".service").unwrap_or(unit).to_string();
    }
    if let Some(exe) = &process.exe {
        let name = exe.rsplit('/').next().unwrap_or(exe);
        // A replaced binary shows as "name (deleted)".
        return name.trim_end_matches(" (deleted)").to_string();
    }
    process.comm.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(exe: Option<&str>) -> ProcessInfo {
        ProcessInfo {
            pid: 1,
            comm: "skopeo".into(),
            uid: Some(0),
            exe: exe.map(String::from),
            cmdline: None,
            ancestors: vec![],
        }
    }

    #[test]
    fn component_prefers_pod_then_container_then_unit_then_exe() {
        let id = "ab".repeat(32);
        let pod = cgroup_path::parse(&format!(
            "/kubepods/besteffort/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/{id}"
        ));
        assert_eq!(
            component(&pod, &process(None)),
            "pod/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
        );
        let podman = cgroup_path::parse(&format!("/machine.slice/libpod-{id}.scope"));
        assert_eq!(component(&podman, &process(None)), "podman/abababababab");
        let unit = cgroup_path::parse("/system.slice/rpm-ostreed.service");
        assert_eq!(component(&unit, &process(None)), "rpm-ostreed");
        let none = CgroupOwner::default();
        assert_eq!(
            component(&none, &process(Some("/usr/bin/skopeo (deleted)"))),
            "skopeo"
        );
        assert_eq!(component(&none, &process(None)), "skopeo");
    }

    #[test]
    fn attributes_this_process_with_ancestors_and_cgroup() {
        let cgroup_root = crate::preflight::cgroup2_mount_from(
            &std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
        );
        // Without a cgroup2 mount (some build containers) the cgroup part
        // resolves to nothing; the privileged tests require the mount.
        let cgroup_root = cgroup_root.unwrap_or_else(|| PathBuf::from("/nonexistent"));
        let me = procfs::read_process(Path::new("/proc"), std::process::id()).unwrap();
        let cgroup_id = me
            .cgroup
            .as_deref()
            .and_then(|p| cgroups::inode_of(&cgroup_root, p))
            .unwrap_or(0);
        let mut attributor = Attributor::new("/proc".into(), cgroup_root);
        let actor = Actor {
            tgid: std::process::id(),
            tid: std::process::id(),
            uid: Some(0),
            // A thread name, as the kernel reports for a renamed thread.
            comm: "worker-thread".into(),
            cgroup_id,
            boot_ns: crate::clock::boot_ns(),
        };
        let origin = attributor.attribute(&actor);
        assert_eq!(origin.process.exe, me.exe);
        assert_eq!(origin.process.comm, me.stat.comm);
        assert_eq!(origin.process.ancestors[0].pid, me.stat.ppid);
        if cgroup_id != 0 {
            assert_eq!(origin.cgroup.path, me.cgroup);
        }
        assert_eq!(attributor.stats().process_gone, 0);
        // An event from before this process started belongs to an earlier
        // holder of the pid: its facts must not be borrowed.
        let mut attributor = Attributor::new("/proc".into(), PathBuf::from("/nonexistent"));
        let earlier = Actor {
            boot_ns: 0,
            ..actor
        };
        assert_eq!(attributor.attribute(&earlier).process.exe, None);
        assert_eq!(attributor.stats().process_gone, 1);
    }
}
