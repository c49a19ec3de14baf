//! What every program shares: the ring buffer, the loss counters, the agent's
//! own tgid, and filling an event header.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_ktime_get_boot_ns,
    },
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use observer_common::{COMM_LEN, Counter, EventHeader, EventKind};

/// The one ring buffer all events go through. Its size is set by the agent
/// at load time (`EbpfLoader::map_max_entries`); this is only the default.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 21, 0);

/// Per-CPU counters indexed by [`Counter`]: every event the kernel could not
/// deliver is counted here, so the agent can report exact losses.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// The agent's own tgid, set at load time, so its DNS lookups of catalog
/// names are not reported as registry attempts.
#[unsafe(no_mangle)]
static OBSERVER_TGID: u32 = 0;

/// Submit without waking the reader: the agent drains on a short timer, and
/// a wakeup per event would cost several times the program itself.
pub const SUBMIT_FLAGS: u64 = aya_ebpf::bindings::BPF_RB_NO_WAKEUP as u64;

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, so no other writer races this increment.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
pub fn observer_tgid() -> u32 {
    // SAFETY: a read-only global rewritten by the loader; volatile so the
    // compiler does not fold the default value in.
    unsafe { core::ptr::read_volatile(&OBSERVER_TGID) }
}

/// Header for an event raised in the context of the task that acts (connect,
/// egress packets).
#[inline(always)]
pub fn task_header(kind: EventKind, cgroup_id: u64) -> EventHeader {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid = bpf_get_current_uid_gid() as u32;
    EventHeader {
        kind: kind as u32,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid,
        // SAFETY: helper without arguments.
        boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        cgroup_id,
        comm: bpf_get_current_comm().unwrap_or([0u8; COMM_LEN]),
    }
}

/// Header for an event raised outside the owning task (packet ingress runs
/// in softirq context, where "current" is whoever was interrupted).
#[inline(always)]
pub fn socket_header(kind: EventKind, cgroup_id: u64) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        tgid: 0,
        tid: 0,
        uid: u32::MAX,
        // SAFETY: helper without arguments.
        boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        cgroup_id,
        comm: [0u8; COMM_LEN],
    }
}
