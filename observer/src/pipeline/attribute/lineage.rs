//! The process table built from the kernel's exec, fork and exit events.
//!
//! /proc answers only while a process lives; a `skopeo` that connects and
//! exits 50 ms later is gone before it can be read. Exec events carry the
//! executable and argv, fork events the parent, so such a process and its
//! ancestors stay known. Entries are keyed by tgid and checked against their
//! start time, so a reused pid never inherits another process's facts.

use std::collections::{HashMap, VecDeque};

use crate::pipeline::decode::Observation;

/// What the kernel told us about one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lineage {
    pub tgid: u32,
    pub ppid: u32,
    /// CLOCK_BOOTTIME ns at fork.
    pub start_ns: u64,
    pub comm: String,
    /// The path execve() was given; None for a process seen only forking
    /// from a parent we do not know.
    pub exe: Option<String>,
    pub argv: Option<Vec<String>>,
    pub exited_ns: Option<u64>,
}

#[derive(Debug)]
pub struct ProcessTable {
    by_tgid: HashMap<u32, Lineage>,
    /// (tgid, start_ns) of exited processes in exit order: the first to go
    /// when the table is full, in O(1). Entries of processes replaced since
    /// (pid reuse) are skipped.
    exited: VecDeque<(u32, u64)>,
    max_processes: usize,
}

impl ProcessTable {
    pub fn new(max_processes: usize) -> ProcessTable {
        ProcessTable {
            by_tgid: HashMap::new(),
            exited: VecDeque::new(),
            max_processes,
        }
    }

    /// Applies an exec, fork or exit; other observations are ignored.
    pub fn apply(&mut self, observation: &Observation) {
        match observation {
            Observation::Exec {
                actor,
                ppid,
                start_ns,
                filename,
                argv,
            } => {
                let entry = Lineage {
                    tgid: actor.tgid,
                    ppid: *ppid,
                    start_ns: *start_ns,
                    comm: actor.comm.to_text(),
                    exe: filename.clone(),
                    argv: argv.clone(),
                    exited_ns: None,
                };
                self.insert(entry);
            }
            Observation::Fork {
                actor,
                child_tgid,
                child_start_ns,
            } => {
                // Until it execs, a child runs its parent's image.
                let parent = self.get(actor.tgid, actor.boot_ns);
                let entry = Lineage {
                    tgid: *child_tgid,
                    ppid: actor.tgid,
                    start_ns: *child_start_ns,
                    comm: parent.map_or_else(|| actor.comm.to_text(), |p| p.comm.clone()),
                    exe: parent.and_then(|p| p.exe.clone()),
                    argv: parent.and_then(|p| p.argv.clone()),
                    exited_ns: None,
                };
                self.insert(entry);
            }
            Observation::Exit { actor, start_ns } => {
                if let Some(entry) = self.by_tgid.get_mut(&actor.tgid)
                    && entry.start_ns == *start_ns
                    && entry.exited_ns.is_none()
                {
                    entry.exited_ns = Some(actor.boot_ns);
                    self.exited.push_back((actor.tgid, *start_ns));
                }
            }
            _ => {}
        }
    }

    /// The process that held `tgid` at `at_ns`, if the kernel told us about
    /// it: started at or before, and not exited before.
    pub fn get(&self, tgid: u32, at_ns: u64) -> Option<&Lineage> {
        self.by_tgid
            .get(&tgid)
            .filter(|e| e.start_ns <= at_ns && e.exited_ns.is_none_or(|exit| exit >= at_ns))
    }

    pub fn len(&self) -> usize {
        self.by_tgid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_tgid.is_empty()
    }

    fn insert(&mut self, entry: Lineage) {
        if !self.by_tgid.contains_key(&entry.tgid) && self.by_tgid.len() >= self.max_processes {
            self.make_room();
        }
        self.by_tgid.insert(entry.tgid, entry);
    }

    /// Drops the process that exited first; only if none has exited (a
    /// table full of live processes), the one started first, by a scan.
    /// Runs only when an insert would exceed the bound.
    fn make_room(&mut self) {
        while let Some((tgid, start_ns)) = self.exited.pop_front() {
            if self
                .by_tgid
                .get(&tgid)
                .is_some_and(|e| e.start_ns == start_ns && e.exited_ns.is_some())
            {
                self.by_tgid.remove(&tgid);
                return;
            }
        }
        let oldest = self
            .by_tgid
            .values()
            .min_by_key(|e| e.start_ns)
            .map(|e| e.tgid);
        if let Some(tgid) = oldest {
            self.by_tgid.remove(&tgid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::decode::Actor;

    fn actor(tgid: u32, comm: &str, boot_ns: u64) -> Actor {
        Actor {
            tgid,
            tid: tgid,
            uid: Some(0),
            comm: comm.into(),
            cgroup_id: 1,
            boot_ns,
        }
    }

    fn exec(tgid: u32, ppid: u32, start_ns: u64, exe: &str, at: u64) -> Observation {
        Observation::Exec {
            actor: actor(tgid, exe.rsplit('/').next().unwrap(), at),
            ppid,
            start_ns,
            filename: Some(exe.into()),
            argv: Some(vec![exe.into(), "inspect".into()]),
        }
    }

    #[test]
    fn fork_then_exec_then_exit_keeps_the_process_known() {
        let mut table = ProcessTable::new(16);
        table.apply(&exec(100, 1, 10, "/usr/bin/bash", 10));
        table.apply(&Observation::Fork {
            actor: actor(100, "bash", 20),
            child_tgid: 101,
            child_start_ns: 20,
        });
        // Before its exec the child is a copy of bash.
        let child = table.get(101, 25).unwrap();
        assert_eq!(
            (child.ppid, child.exe.as_deref()),
            (100, Some("/usr/bin/bash"))
        );
        table.apply(&exec(101, 100, 20, "/usr/bin/skopeo", 30));
        table.apply(&Observation::Exit {
            actor: actor(101, "skopeo", 80),
            start_ns: 20,
        });
        // An event from before the exit still finds it; the argv is the
        // new image's.
        let skopeo = table.get(101, 50).unwrap();
        assert_eq!(skopeo.exe.as_deref(), Some("/usr/bin/skopeo"));
        assert_eq!(skopeo.argv.as_ref().unwrap()[1], "inspect");
        assert_eq!(skopeo.comm, "skopeo");
        // Not before it started, not after it exited.
        assert!(table.get(101, 10).is_none());
        assert!(table.get(101, 81).is_none());
    }

    #[test]
    fn a_reused_pid_replaces_the_old_process_and_stale_exits_are_ignored() {
        let mut table = ProcessTable::new(16);
        table.apply(&exec(200, 1, 10, "/usr/bin/old", 10));
        table.apply(&exec(200, 1, 500, "/usr/bin/new", 500));
        // The exit of the earlier holder (other start time) arrives late.
        table.apply(&Observation::Exit {
            actor: actor(200, "old", 600),
            start_ns: 10,
        });
        let entry = table.get(200, 700).unwrap();
        assert_eq!(entry.exe.as_deref(), Some("/usr/bin/new"));
        assert_eq!(entry.exited_ns, None);
    }

    #[test]
    fn the_table_stays_bounded_dropping_exited_processes_first() {
        let mut table = ProcessTable::new(4);
        for tgid in 1..=4 {
            table.apply(&exec(tgid, 1, tgid as u64, "/bin/x", tgid as u64));
        }
        table.apply(&Observation::Exit {
            actor: actor(2, "x", 10),
            start_ns: 2,
        });
        table.apply(&exec(5, 1, 20, "/bin/y", 20));
        assert_eq!(table.len(), 4);
        assert!(table.get(2, 5).is_none(), "the exited process went first");
        for tgid in [1, 3, 4, 5] {
            assert!(table.get(tgid, 30).is_some(), "{tgid}");
        }
    }
}
