//! What every program shares: the ring buffer, the loss counters, the agent's
//! own tgid, and filling an event header.

use core::{ffi::c_void, ptr::addr_of_mut};

use aya_ebpf::{
    helpers::generated::{bpf_get_current_comm, bpf_get_current_uid_gid, bpf_ktime_get_boot_ns},
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use observer_common::{COMM_LEN, Counter, EventHeader, EventKind, KernelOffsets, SocketOwner};

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

/// Kernel struct field offsets from the running kernel's BTF, set at load
/// time (see [`KernelOffsets`]); all zero, and `valid == 0`, until then.
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets {
    valid: 0,
    task_pid: 0,
    task_tgid: 0,
    task_real_parent: 0,
    task_start_boottime: 0,
    task_mm: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    binprm_filename: 0,
    sock_err: 0,
    sock_cookie: 0,
};

/// 1 when cgroup_skb programs may call the current-task helpers
/// (`bpf_get_current_pid_tgid`, `_uid_gid`, `_comm`), as probed by the agent
/// on the running kernel; 0 makes the packet programs take the sender from
/// [`crate::owner`] instead. A constant of a frozen read-only map, so the
/// verifier never walks the branch this kernel cannot have (and rejects
/// nothing in it).
#[unsafe(no_mangle)]
static SKB_TASK_CONTEXT: u32 = 0;

/// Test-only: bit `program_index(name)` set makes that program take a path
/// the verifier rejects (see [`refuse_if_asked`]). Always 0 unless the agent
/// was started with its hidden refusal switch.
#[unsafe(no_mangle)]
static REFUSE_PROGRAMS: u32 = 0;

#[inline(always)]
pub fn skb_task_context() -> bool {
    // SAFETY: as for observer_tgid.
    unsafe { core::ptr::read_volatile(&SKB_TASK_CONTEXT) != 0 }
}

/// Makes the verifier refuse this program when its bit in
/// [`REFUSE_PROGRAMS`] is set: an out-of-bounds read of the program's
/// context, which every program type rejects ("invalid bpf_context
/// access"). With the bit clear the verifier proves the branch dead and
/// removes it.
#[inline(always)]
pub fn refuse_if_asked(ctx: *mut c_void, program: u32) {
    // SAFETY: as for observer_tgid.
    let mask = unsafe { core::ptr::read_volatile(&REFUSE_PROGRAMS) };
    if mask & (1 << program) != 0 {
        // SAFETY: never runs: a program that reaches this read is rejected
        // at load time.
        unsafe { core::ptr::read_volatile((ctx as *const u8).add(4093) as *const u32) };
    }
}

#[inline(always)]
pub fn offsets() -> KernelOffsets {
    // SAFETY: as for observer_tgid.
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}

/// Reads a `T` at `base + offset` from kernel memory; `None` on a fault.
#[inline(always)]
pub fn read_kernel<T>(base: u64, offset: u32) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an
    // error, never a fault.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel((base + offset as u64) as *const T).ok() }
}

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

/// Writes the header of an event raised in the context of the acting task
/// (connect, egress packets) straight into reserved ring-buffer memory.
/// Building it on the stack first makes LLVM copy `comm` byte by byte,
/// several times; this is most of a small program's cost.
///
/// # Safety
/// `header` must point into a live ring-buffer reservation.
#[inline(always)]
pub unsafe fn write_task_header(
    header: *mut EventHeader,
    kind: EventKind,
    pid_tgid: u64,
    cgroup_id: u64,
) {
    // SAFETY: the caller guarantees `header` is valid for writes.
    unsafe {
        addr_of_mut!((*header).kind).write(kind as u32);
        addr_of_mut!((*header).tgid).write((pid_tgid >> 32) as u32);
        addr_of_mut!((*header).tid).write(pid_tgid as u32);
        addr_of_mut!((*header).uid).write(bpf_get_current_uid_gid() as u32);
        addr_of_mut!((*header).boot_ns).write(bpf_ktime_get_boot_ns());
        addr_of_mut!((*header).cgroup_id).write(cgroup_id);
        let comm = addr_of_mut!((*header).comm);
        if bpf_get_current_comm(comm.cast::<c_void>(), COMM_LEN as u32) != 0 {
            comm.write([0u8; COMM_LEN]);
        }
    }
}

/// Writes the header of an event from the socket owner the connect or
/// sendmsg hook recorded (see [`crate::owner`]).
///
/// # Safety
/// As for [`write_task_header`].
#[inline(always)]
pub unsafe fn write_owner_header(
    header: *mut EventHeader,
    kind: EventKind,
    owner: &SocketOwner,
    cgroup_id: u64,
) {
    // SAFETY: the caller guarantees `header` is valid for writes.
    unsafe {
        addr_of_mut!((*header).kind).write(kind as u32);
        addr_of_mut!((*header).tgid).write((owner.pid_tgid >> 32) as u32);
        addr_of_mut!((*header).tid).write(owner.pid_tgid as u32);
        addr_of_mut!((*header).uid).write(owner.uid);
        addr_of_mut!((*header).boot_ns).write(bpf_ktime_get_boot_ns());
        addr_of_mut!((*header).cgroup_id).write(cgroup_id);
        addr_of_mut!((*header).comm).write(owner.comm);
    }
}

/// Writes the header of an event raised outside the owning task (packet
/// ingress runs in softirq context, where "current" is whoever was
/// interrupted).
///
/// # Safety
/// As for [`write_task_header`].
#[inline(always)]
pub unsafe fn write_socket_header(header: *mut EventHeader, kind: EventKind, cgroup_id: u64) {
    // SAFETY: the caller guarantees `header` is valid for writes.
    unsafe {
        addr_of_mut!((*header).kind).write(kind as u32);
        addr_of_mut!((*header).tgid).write(0);
        addr_of_mut!((*header).tid).write(0);
        addr_of_mut!((*header).uid).write(u32::MAX);
        addr_of_mut!((*header).boot_ns).write(bpf_ktime_get_boot_ns());
        addr_of_mut!((*header).cgroup_id).write(cgroup_id);
        addr_of_mut!((*header).comm).write([0u8; COMM_LEN]);
    }
}
