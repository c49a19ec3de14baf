//! Stage 2, read: drain the ring buffer on a short timer into a bounded
//! queue. The kernel submits without wakeups (a wakeup per event costs
//! several times the program), so the reader polls instead of waiting on
//! epoll. Losses are counted where they happen: the kernel counts failed
//! reserves, this stage counts a full queue.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use bytes::Bytes;
use observer_common::Counter;
use tokio::sync::{mpsc, watch};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    pub records: u64,
    /// Records dropped because the pipeline queue was full.
    pub queue_full: u64,
}

/// The reader's counts, readable while it runs (by /metrics).
#[derive(Debug, Default)]
pub struct ReadCounters {
    records: AtomicU64,
    queue_full: AtomicU64,
}

impl ReadCounters {
    pub fn snapshot(&self) -> ReadStats {
        ReadStats {
            records: self.records.load(Ordering::Relaxed),
            queue_full: self.queue_full.load(Ordering::Relaxed),
        }
    }
}

/// How often the ring buffer is drained; bounds the delay to the live line.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(10);
/// Queue between reader and pipeline, in records.
pub const QUEUE_CAPACITY: usize = 65_536;

/// Drains until `stop` turns true, then drains once more (programs are
/// detached by then, so nothing is left behind) and returns its counts.
pub async fn run_reader<T: From<Bytes>>(
    mut ring: RingBuf<MapData>,
    queue: mpsc::Sender<T>,
    mut stop: watch::Receiver<bool>,
    stats: Arc<ReadCounters>,
) -> ReadStats {
    let mut ticker = tokio::time::interval(DRAIN_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => drain(&mut ring, &queue, &stats),
            _ = stop.wait_for(|stop| *stop) => {
                drain(&mut ring, &queue, &stats);
                return stats.snapshot();
            }
        }
    }
}

fn drain<T: From<Bytes>>(
    ring: &mut RingBuf<MapData>,
    queue: &mpsc::Sender<T>,
    stats: &ReadCounters,
) {
    while let Some(item) = ring.next() {
        stats.records.fetch_add(1, Ordering::Relaxed);
        match queue.try_send(T::from(Bytes::copy_from_slice(&item))) {
            Ok(()) => {}
            // A closed queue (the pipeline is gone only during shutdown)
            // loses the record too.
            Err(mpsc::error::TrySendError::Full(_) | mpsc::error::TrySendError::Closed(_)) => {
                stats.queue_full.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
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
