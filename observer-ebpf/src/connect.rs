//! cgroup/connect4 and cgroup/connect6: every connect() on the machine, as
//! the caller asked for it, including the ones that will fail.

use core::ptr::addr_of_mut;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_get_current_cgroup_id},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use observer_common::{AF_INET, AF_INET6, ConnectEvent, Counter, EventKind};

use crate::emit::{self, EVENTS, SUBMIT_FLAGS};

/// cgroup_sock_addr programs allow the call by returning 1.
const ALLOW: i32 = 1;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel hands us a valid bpf_sock_addr for this hook.
    let sa = unsafe { &*ctx.sock_addr };
    // Words are in network byte order already; copied verbatim.
    emit_connect(AF_INET, sa.user_port, sa.protocol, [sa.user_ip4, 0, 0, 0]);
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    // SAFETY: as above.
    let sa = unsafe { &*ctx.sock_addr };
    // One constant-offset load per word: copying the array as a whole makes
    // LLVM compute a pointer into the context, which the verifier rejects.
    // SAFETY: volatile reads of context fields.
    let words = unsafe {
        [
            core::ptr::read_volatile(&sa.user_ip6[0]),
            core::ptr::read_volatile(&sa.user_ip6[1]),
            core::ptr::read_volatile(&sa.user_ip6[2]),
            core::ptr::read_volatile(&sa.user_ip6[3]),
        ]
    };
    emit_connect(AF_INET6, sa.user_port, sa.protocol, words);
    ALLOW
}

#[inline(always)]
fn emit_connect(family: u16, user_port: u32, protocol: u32, addr_words: [u32; 4]) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == emit::observer_tgid() {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<ConnectEvent>(0) else {
        emit::count(Counter::ConnectReserveFailed);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved record of the right size, 8-byte
    // aligned (ring-buffer records are), so `addr` at offset 56 is aligned
    // for u32 words.
    unsafe {
        emit::write_task_header(
            addr_of_mut!((*event).header),
            EventKind::Connect,
            pid_tgid,
            bpf_get_current_cgroup_id(),
        );
        addr_of_mut!((*event).family).write(family);
        // user_port holds the port in network byte order in its low 16 bits.
        addr_of_mut!((*event).port).write(u16::from_be(user_port as u16));
        addr_of_mut!((*event).protocol).write(protocol);
        addr_of_mut!((*event).addr)
            .cast::<[u32; 4]>()
            .write(addr_words);
    }
    entry.submit(SUBMIT_FLAGS);
}
