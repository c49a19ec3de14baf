//! Stage 5, attribute: who made an attempt. Process facts from /proc while
//! the process lives (what was available is recorded, the rest stays null),
//! then cgroup id -> path -> systemd unit / container / pod uid, then the
//! pod's name, namespace and labels from the CRI API (`cri`, `pods`), then
//! a component name a human recognizes (`component`, `component_rules`).

pub mod cgroup_path;
pub mod cgroups;
pub mod component;
pub mod component_rules;
pub mod lineage;
pub mod procfs;

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
};

use observer_report::{
    observer::AttributionStats,
    process::{Ancestor, CgroupRef, Pod, ProcessInfo},
};

pub use self::cgroup_path::CgroupOwner;
use self::{
    cgroups::CgroupIndex,
    component_rules::ComponentRule,
    lineage::ProcessTable,
    procfs::{ProcessFacts, StatFields},
};
use crate::{
    pipeline::decode::{Actor, Comm, Observation},
    sources::{cri::PodSource, pods::PodDirectory},
};

/// Ancestors recorded per process: enough to reach systemd or a container
/// runtime from any realistic process tree.
const MAX_ANCESTORS: usize = 16;
const MAX_CACHED_PROCESSES: usize = 8192;
/// Processes the lineage table follows: a busy node runs a few thousand.
const MAX_LINEAGE_PROCESSES: usize = 32768;
/// Bounds the set of pods and containers an early listing was asked for.
const MAX_ASKED: usize = 4096;

/// Everything attribution found for one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub process: ProcessInfo,
    pub cgroup: CgroupRef,
    pub owner: CgroupOwner,
    /// From the cgroup path's uid, named through the CRI API when it knew.
    pub pod: Option<Pod>,
    pub component: String,
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
    pods: PodSource,
    /// Pod uids and container ids an early listing was already asked for:
    /// one the runtime does not know must not make it list on every event.
    asked: HashSet<String>,
    rules: Vec<ComponentRule>,
    stats: AttributionStats,
}

impl Attributor {
    pub fn new(proc_root: PathBuf, cgroup_root: PathBuf) -> Attributor {
        Attributor {
            proc_root,
            cgroups: CgroupIndex::new(cgroup_root),
            processes: HashMap::new(),
            lineage: ProcessTable::new(MAX_LINEAGE_PROCESSES),
            pods: PodSource::fixed(PodDirectory::default()),
            asked: HashSet::new(),
            rules: Vec::new(),
            stats: AttributionStats::default(),
        }
    }

    /// Feeds exec, fork and exit events to the process table.
    pub fn follow(&mut self, observation: &Observation) {
        self.lineage.apply(observation);
    }

    /// Names pods through `pods` (the CRI watcher's snapshots).
    pub fn with_pods(mut self, pods: PodSource) -> Attributor {
        self.pods = pods;
        self
    }

    /// User rules naming components, first match wins.
    pub fn with_rules(mut self, rules: Vec<ComponentRule>) -> Attributor {
        self.rules = rules;
        self
    }

    /// Replaces the rules (a reload); attempts already recorded keep the
    /// component they were given.
    pub fn set_rules(&mut self, rules: Vec<ComponentRule>) {
        self.rules = rules;
    }

    pub fn stats(&self) -> &AttributionStats {
        &self.stats
    }

    /// Counted at report time by the on-behalf-of correlation.
    pub fn count_runtime_pull_unattributed(&mut self) {
        self.stats.runtime_pulls_unattributed += 1;
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
        let pod = self.pod_of(&owner);
        let component = component::component(&self.rules, &owner, pod.as_ref(), &process);
        Origin {
            process,
            cgroup: CgroupRef {
                id: actor.cgroup_id,
                path,
            },
            owner,
            pod,
            component,
        }
    }

    /// The pod of a cgroup, named if the last CRI listing knew it; a miss
    /// asks the watcher for an early listing and never waits for it.
    fn pod_of(&mut self, owner: &CgroupOwner) -> Option<Pod> {
        let container_id = owner
            .container
            .as_ref()
            .filter(|c| is_cri_runtime(&c.runtime))
            .map(|c| c.id.as_str());
        if owner.pod_uid.is_none() && container_id.is_none() {
            return None;
        }
        let named = self
            .pods
            .current()
            .resolve(owner.pod_uid.as_deref(), container_id);
        if named.is_none() {
            let key = container_id
                .or(owner.pod_uid.as_deref())
                .unwrap_or_default();
            if self.asked.len() >= MAX_ASKED {
                self.asked.clear();
            }
            if self.asked.insert(key.to_string()) {
                self.pods.request_refresh();
            }
        }
        named.or_else(|| owner.pod_uid.as_deref().map(Pod::uid_only))
    }

    /// At report time: names the pod of an attempt recorded before the CRI
    /// listing had it, from `directory` (the final listing, tombstones
    /// included), and recomputes its component. Counts what stays unnamed.
    /// Returns the new (pod, component) when the pod got a name.
    pub fn name_late(
        &mut self,
        directory: &PodDirectory,
        cri_answered: bool,
        owner: &CgroupOwner,
        recorded: Option<&Pod>,
        process: &ProcessInfo,
    ) -> Option<(Pod, String)> {
        if recorded.is_some_and(Pod::is_named) {
            return None;
        }
        let container_id = owner
            .container
            .as_ref()
            .filter(|c| is_cri_runtime(&c.runtime))
            .map(|c| c.id.as_str());
        let uid = recorded
            .map(|p| p.uid.as_str())
            .or(owner.pod_uid.as_deref());
        if uid.is_none() && container_id.is_none() {
            return None;
        }
        match directory.resolve(uid, container_id) {
            Some(pod) => {
                let component = component::component(&self.rules, owner, Some(&pod), process);
                Some((pod, component))
            }
            None => {
                let reason = if cri_answered {
                    "unknown_to_cri"
                } else {
                    "cri_unavailable"
                };
                *self
                    .stats
                    .pods_unnamed
                    .entry(reason.to_string())
                    .or_default() += 1;
                None
            }
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
            let live = procfs::read_process(&self.proc_root, actor.tgid)
                .filter(|facts| started_before(facts.stat.start_ticks, actor.boot_ns));
            let known = self.lineage.get(actor.tgid, actor.boot_ns);
            let facts = match (live, known) {
                // An exiting process (a zombie) still has a stat file but no
                // exe or cmdline: the exec event has them.
                (Some(mut live), Some(known)) => {
                    if live.exe.is_none() {
                        live.exe = known.exe.clone();
                    }
                    if live.cmdline.is_none() {
                        live.cmdline = known.argv.clone();
                    }
                    Some(live)
                }
                (Some(live), None) => Some(live),
                (None, Some(known)) => {
                    self.stats.from_lineage += 1;
                    Some(ProcessFacts {
                        stat: StatFields {
                            comm: known.comm.clone(),
                            ppid: known.ppid,
                            start_ticks: 0,
                        },
                        exe: known.exe.clone(),
                        cmdline: known.argv.clone(),
                        cgroup: None,
                    })
                }
                (None, None) => None,
            };
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

/// Runtimes whose containers the CRI API names (podman and docker have no
/// pods).
fn is_cri_runtime(runtime: &str) -> bool {
    matches!(runtime, "cri-o" | "containerd")
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
        let known = lineage.get(pid, at_ns);
        let (ancestor, parent) = match live {
            Some(stat) => (
                Ancestor {
                    pid,
                    comm: stat.comm,
                    // A zombie has no exe link; its exec event named it.
                    exe: procfs::read_exe(proc_root, pid)
                        .or_else(|| known.and_then(|k| k.exe.clone())),
                },
                stat.ppid,
            ),
            None => match known {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn pods_missing_from_the_listing_are_named_late_or_counted() {
        let uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        let id = "ab".repeat(32);
        let owner = cgroup_path::parse(&format!("/kubepods/besteffort/pod{uid}/{id}"));
        let process = ProcessInfo {
            pid: 1,
            comm: "skopeo".into(),
            uid: Some(0),
            exe: Some("/usr/bin/skopeo".into()),
            cmdline: None,
            ancestors: vec![],
        };
        let mut directory = PodDirectory::default();
        directory.apply(
            crate::sources::pods::Listing {
                pods: vec![crate::sources::pods::PodEntry {
                    sandbox_id: "sb".into(),
                    uid: uid.into(),
                    namespace: "openshift-machine-config-operator".into(),
                    name: "machine-config-daemon-x7k2p".into(),
                    labels: BTreeMap::new(),
                }],
                containers: vec![crate::sources::pods::ContainerEntry {
                    id: id.clone(),
                    sandbox_id: "sb".into(),
                    name: "machine-config-daemon".into(),
                    ..crate::sources::pods::ContainerEntry::default()
                }],
                images: vec![],
            },
            std::time::Instant::now(),
        );
        let rules = vec![
            ComponentRule::parse("namespace=openshift-machine-config-operator:machine-config")
                .unwrap(),
        ];
        let mut attributor =
            Attributor::new("/proc".into(), PathBuf::from("/nonexistent")).with_rules(rules);
        let recorded = Pod::uid_only(uid);
        let (pod, component) = attributor
            .name_late(&directory, true, &owner, Some(&recorded), &process)
            .expect("named from the final listing");
        assert_eq!(pod.name.as_deref(), Some("machine-config-daemon-x7k2p"));
        assert_eq!(pod.container.as_deref(), Some("machine-config-daemon"));
        assert_eq!(component, "machine-config");
        // Already named: left alone, not counted.
        assert_eq!(
            attributor.name_late(&directory, true, &owner, Some(&pod), &process),
            None
        );
        // Not in the listing: counted by why.
        let empty = PodDirectory::default();
        attributor.name_late(&empty, true, &owner, Some(&recorded), &process);
        attributor.name_late(&empty, false, &owner, Some(&recorded), &process);
        attributor.name_late(&empty, false, &owner, Some(&recorded), &process);
        // Not a pod at all: nothing to name, nothing counted.
        let unit = cgroup_path::parse("/system.slice/crio.service");
        assert_eq!(
            attributor.name_late(&empty, false, &unit, None, &process),
            None
        );
        assert_eq!(
            attributor.stats().pods_unnamed,
            BTreeMap::from([
                ("cri_unavailable".to_string(), 2),
                ("unknown_to_cri".to_string(), 1)
            ])
        );
    }

    #[test]
    fn attributes_this_process_with_ancestors_and_cgroup() {
        let cgroup_root = cgroups::cgroup2_mount_from(
            &std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
            Path::new("/"),
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
