//! Stage 2, read: the kernel's ring buffer as the pipeline consumes it.
//! The kernel submits without wakeups (a wakeup per event costs several
//! times the program), so the pipeline polls it on a short timer.
//!
//! A record leaves the ring only after the pipeline has applied it (and,
//! with `--state-dir`, appended its effect to the spool): the ring is the
//! one queue that survives the agent, so a `kill -9` loses nothing that was
//! captured. Each record comes with its ring position, which says on a
//! restart which records the spool already holds.

use std::{
    os::fd::AsFd,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use observer_common::Counter;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Records taken from the ring.
    pub records: u64,
    /// Records skipped on a restart because the spool already held their
    /// effect (an agent killed between appending and consuming them).
    pub already_applied: u64,
}

/// The reader's counts, readable while it runs (by /metrics).
#[derive(Debug, Default)]
pub struct ReadCounters {
    records: AtomicU64,
    already_applied: AtomicU64,
}

impl ReadCounters {
    pub fn snapshot(&self) -> ReadStats {
        ReadStats {
            records: self.records.load(Ordering::Relaxed),
            already_applied: self.already_applied.load(Ordering::Relaxed),
        }
    }
}

/// How often the ring buffer is drained; bounds the delay to the live line.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(10);
/// Queue for everything else the pipeline is told (resolved names,
/// reloads, phase changes, report requests), in messages.
pub const QUEUE_CAPACITY: usize = 4096;

/// The ring buffer with the position of each record.
pub struct KernelRing {
    ring: RingBuf<MapData>,
    /// The ring's consumer page, mapped read-only a second time: aya keeps
    /// its own copy of the position and exposes none.
    consumer: ConsumerPage,
    counters: Arc<ReadCounters>,
    /// Records at or before this position were applied by an earlier agent
    /// (the spool says so): skipped once.
    applied_through: Option<u64>,
}

impl KernelRing {
    pub fn new(
        ring: RingBuf<MapData>,
        counters: Arc<ReadCounters>,
        applied_through: Option<u64>,
    ) -> std::io::Result<KernelRing> {
        let consumer = ConsumerPage::map(&ring)?;
        Ok(KernelRing {
            ring,
            consumer,
            counters,
            applied_through,
        })
    }

    /// Hands at most `max` records to `apply` with their positions, each
    /// consumed only after `apply` returns; returns how many were read.
    pub fn drain(&mut self, max: usize, apply: &mut dyn FnMut(&[u8], u64)) -> usize {
        let (mut read, mut skipped) = (0, 0);
        while read < max {
            // The kernel's consumer position before this record: past
            // every record consumed so far, so increasing per record.
            let position = self.consumer.position();
            let Some(item) = self.ring.next() else { break };
            read += 1;
            match self.applied_through {
                Some(through) if position <= through => skipped += 1,
                _ => {
                    self.applied_through = None;
                    apply(&item, position);
                }
            }
            drop(item);
        }
        // Once per batch, not per record: /metrics reads them meanwhile.
        self.counters
            .records
            .fetch_add(read as u64, Ordering::Relaxed);
        if skipped > 0 {
            self.counters
                .already_applied
                .fetch_add(skipped, Ordering::Relaxed);
        }
        read
    }
}

/// Page 0 of a ring buffer map: the consumer position.
struct ConsumerPage {
    page: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only shared memory, read with atomic loads.
unsafe impl Send for ConsumerPage {}

impl ConsumerPage {
    fn map(ring: &RingBuf<MapData>) -> std::io::Result<ConsumerPage> {
        use std::os::fd::AsRawFd;
        // SAFETY: sysconf has no memory effects.
        let len = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        // SAFETY: a fresh shared read-only mapping of the map's first page,
        // which the kernel allows for ring buffers (the consumer page).
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                ring.as_fd().as_raw_fd(),
                0,
            )
        };
        if page == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(ConsumerPage { page, len })
    }

    fn position(&self) -> u64 {
        // SAFETY: the page is mapped for self's lifetime and the position
        // is an aligned unsigned long at its start.
        let atomic = unsafe { &*(self.page as *const AtomicU64) };
        atomic.load(Ordering::Acquire)
    }
}

impl Drop for ConsumerPage {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe { libc::munmap(self.page, self.len) };
    }
}

/// The kernel's loss counters as this run sees them: a pinned map adopted
/// from an earlier agent keeps counting across agents, so this run's
/// counts are taken from a baseline read when it adopted the map.
pub struct KernelCounters {
    map: PerCpuArray<MapData, u64>,
    baseline: Vec<(Counter, u64)>,
}

impl KernelCounters {
    /// `adopted`: the map was pinned by an earlier agent.
    pub fn new(map: PerCpuArray<MapData, u64>, adopted: bool) -> KernelCounters {
        let baseline = if adopted {
            kernel_counters(&map)
        } else {
            Counter::ALL.iter().map(|counter| (*counter, 0)).collect()
        };
        KernelCounters { map, baseline }
    }

    /// Each counter since this run adopted or created the map.
    pub fn since_start(&self) -> Vec<(Counter, u64)> {
        kernel_counters(&self.map)
            .into_iter()
            .zip(&self.baseline)
            .map(|((counter, now), (_, base))| (counter, now.saturating_sub(*base)))
            .collect()
    }

    /// The losses the map has counted in its life (pinned: across agents).
    pub fn raw_lost(&self) -> u64 {
        lost(&kernel_counters(&self.map))
    }

    /// The same when this run began.
    pub fn baseline_lost(&self) -> u64 {
        lost(&self.baseline)
    }
}

fn lost(counts: &[(Counter, u64)]) -> u64 {
    counts
        .iter()
        .filter(|(counter, _)| counter.is_loss())
        .map(|(_, n)| n)
        .sum()
}

/// Sums the kernel's per-CPU counters.
pub fn kernel_counters(counters: &PerCpuArray<MapData, u64>) -> Vec<(Counter, u64)> {
    Counter::ALL
        .iter()
        .map(|counter| {
            let total = counters
                .get(&(*counter as u32), 0)
                .map(|per_cpu| per_cpu.iter().sum())
                .unwrap_or(0);
            (*counter, total)
        })
        .collect()
}
