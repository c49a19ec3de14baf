//! Process lineage: exec, fork and exit through BTF tracepoints, so a
//! process that connects and exits within milliseconds is still known by
//! its executable, argv and parent. Field offsets come from the running
//! kernel's BTF via [`crate::emit::offsets`].

use core::{ffi::c_void, ptr::addr_of_mut};

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_current_task, bpf_probe_read_kernel_str,
            bpf_probe_read_user,
        },
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use observer_common::{
    ARGS_CAPTURE_LEN, Counter, EventKind, ExecEvent, FILENAME_CAPTURE_LEN, TaskEvent, program_index,
};

use crate::{
    emit::{self, EVENTS, SUBMIT_FLAGS, read_kernel},
    skb::verifier_bounded_len,
};

/// sched_process_exec(struct task_struct *p, pid_t old_pid,
///                    struct linux_binprm *bprm): runs in the task after
/// the new image is in place, so comm, mm and argv are the new ones.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn process_exec(ctx: BtfTracePointContext) -> i32 {
    emit::refuse_if_asked(ctx.as_ptr(), const { program_index("process_exec") });
    exec(&ctx);
    0
}

/// sched_process_fork(struct task_struct *parent, struct task_struct *child):
/// runs in the parent.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn process_fork(ctx: BtfTracePointContext) -> i32 {
    emit::refuse_if_asked(ctx.as_ptr(), const { program_index("process_fork") });
    fork(&ctx);
    0
}

/// sched_process_exit(struct task_struct *p, ...): runs in the exiting task.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn process_exit(ctx: BtfTracePointContext) -> i32 {
    emit::refuse_if_asked(ctx.as_ptr(), const { program_index("process_exit") });
    exit();
    0
}

#[inline(always)]
fn exec(ctx: &BtfTracePointContext) {
    let offsets = emit::offsets();
    if offsets.valid == 0 {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: no arguments; returns the current task's address as a number.
    let task = unsafe { bpf_get_current_task() };
    let bprm: u64 = ctx.arg(2);
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        emit::count(Counter::ProcessReserveFailed);
        return;
    };
    let event = entry.as_mut_ptr();
    let parent: u64 = read_kernel(task, offsets.task_real_parent).unwrap_or(0);
    let ppid: u32 = if parent == 0 {
        0
    } else {
        read_kernel(parent, offsets.task_tgid).unwrap_or(0)
    };
    let start_ns: u64 = read_kernel(task, offsets.task_start_boottime).unwrap_or(0);

    // argv lives in the new image's memory, between mm->arg_start and
    // mm->arg_end, NUL-separated.
    let mut args_len: u32 = 0;
    let mm: u64 = read_kernel(task, offsets.task_mm).unwrap_or(0);
    if mm != 0 {
        let start: u64 = read_kernel(mm, offsets.mm_arg_start).unwrap_or(0);
        let end: u64 = read_kernel(mm, offsets.mm_arg_end).unwrap_or(0);
        if end > start {
            let wanted = if end - start > ARGS_CAPTURE_LEN as u64 {
                ARGS_CAPTURE_LEN as u32
            } else {
                (end - start) as u32
            };
            let len = verifier_bounded_len(wanted, ARGS_CAPTURE_LEN as u32);
            // SAFETY: the destination is the reserved `args` array and len
            // is within its size; the helper checks the user address.
            let ret = unsafe {
                bpf_probe_read_user(
                    addr_of_mut!((*event).args) as *mut c_void,
                    len,
                    start as *const c_void,
                )
            };
            if ret == 0 {
                args_len = len;
            }
        }
    }

    let mut filename_len: u32 = 0;
    let filename: u64 = if bprm == 0 {
        0
    } else {
        read_kernel(bprm, offsets.binprm_filename).unwrap_or(0)
    };
    if filename != 0 {
        // SAFETY: the destination is the reserved `filename` array; the
        // helper checks the kernel address and NUL-terminates.
        let ret = unsafe {
            bpf_probe_read_kernel_str(
                addr_of_mut!((*event).filename) as *mut c_void,
                FILENAME_CAPTURE_LEN as u32,
                filename as *const c_void,
            )
        };
        if ret > 0 {
            // The helper counts the NUL.
            filename_len = (ret - 1) as u32;
        }
    }
    if args_len == 0 || filename_len == 0 {
        emit::count(Counter::ExecArgsMissing);
    }
    // SAFETY: plain field writes into the reservation.
    unsafe {
        emit::write_task_header(
            addr_of_mut!((*event).header),
            EventKind::Exec,
            pid_tgid,
            bpf_get_current_cgroup_id(),
        );
        addr_of_mut!((*event).ppid).write(ppid);
        addr_of_mut!((*event)._pad).write(0);
        addr_of_mut!((*event).start_ns).write(start_ns);
        addr_of_mut!((*event).filename_len).write(filename_len);
        addr_of_mut!((*event).args_len).write(args_len);
    }
    entry.submit(SUBMIT_FLAGS);
}

#[inline(always)]
fn fork(ctx: &BtfTracePointContext) {
    let offsets = emit::offsets();
    if offsets.valid == 0 {
        return;
    }
    let child: u64 = ctx.arg(1);
    let child_pid: u32 = read_kernel(child, offsets.task_pid).unwrap_or(0);
    let child_tgid: u32 = read_kernel(child, offsets.task_tgid).unwrap_or(0);
    // Threads share their process's identity: only new processes matter.
    if child_pid == 0 || child_pid != child_tgid {
        return;
    }
    let start_ns: u64 = read_kernel(child, offsets.task_start_boottime).unwrap_or(0);
    emit_task(EventKind::Fork, child_tgid, start_ns);
}

#[inline(always)]
fn exit() {
    let offsets = emit::offsets();
    if offsets.valid == 0 {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    // Only the leader's exit ends the process as /proc shows it.
    if pid_tgid as u32 != (pid_tgid >> 32) as u32 {
        return;
    }
    // SAFETY: as in exec.
    let task = unsafe { bpf_get_current_task() };
    let start_ns: u64 = read_kernel(task, offsets.task_start_boottime).unwrap_or(0);
    emit_task(EventKind::Exit, (pid_tgid >> 32) as u32, start_ns);
}

#[inline(always)]
fn emit_task(kind: EventKind, tgid: u32, start_ns: u64) {
    let Some(mut entry) = EVENTS.reserve::<TaskEvent>(0) else {
        emit::count(Counter::ProcessReserveFailed);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: plain field writes into the reservation.
    unsafe {
        emit::write_task_header(
            addr_of_mut!((*event).header),
            kind,
            bpf_get_current_pid_tgid(),
            bpf_get_current_cgroup_id(),
        );
        addr_of_mut!((*event).tgid).write(tgid);
        addr_of_mut!((*event)._pad).write(0);
        addr_of_mut!((*event).start_ns).write(start_ns);
    }
    entry.submit(SUBMIT_FLAGS);
}
