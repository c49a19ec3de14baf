//! cgroup/connect4, connect6, sendmsg4 and sendmsg6: every connect() on the
//! machine, as the caller asked for it, including the ones that will fail,
//! and every sendto()/sendmsg() with an address on an unconnected UDP socket.

use core::ptr::addr_of_mut;

use core::ffi::c_void;

use aya_ebpf::EbpfContext;
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_get_current_cgroup_id, bpf_get_socket_cookie},
    },
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use observer_common::{
    AF_INET, AF_INET6, ConnectEvent, Counter, EventKind, OP_CONNECT, OP_SENDMSG, program_index,
};

use crate::{
    emit::{self, EVENTS, SUBMIT_FLAGS},
    owner, tcp,
};

const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
/// Datagrams to port 53 are captured whole by the packet programs; a
/// sendmsg event per DNS query would only repeat them.
const DNS_PORT: u16 = 53;

/// cgroup_sock_addr programs allow the call by returning 1.
const ALLOW: i32 = 1;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    emit::refuse_if_asked(ctx.as_ptr(), const { program_index("connect4") });
    sock_addr4(&ctx, OP_CONNECT);
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    emit::refuse_if_asked(ctx.as_ptr(), const { program_index("connect6") });
    sock_addr6(&ctx, OP_CONNECT);
    ALLOW
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    emit::refuse_if_asked(ctx.as_ptr(), const { program_index("sendmsg4") });
    sock_addr4(&ctx, OP_SENDMSG);
    ALLOW
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    emit::refuse_if_asked(ctx.as_ptr(), const { program_index("sendmsg6") });
    sock_addr6(&ctx, OP_SENDMSG);
    ALLOW
}

#[inline(always)]
fn sock_addr4(ctx: &SockAddrContext, op: u32) {
    // SAFETY: the kernel hands us a valid bpf_sock_addr for this hook.
    let sa = unsafe { &*ctx.sock_addr };
    // Words are in network byte order already; copied verbatim.
    emit_connect(
        ctx,
        op,
        AF_INET,
        sa.user_port,
        sa.protocol,
        [sa.user_ip4, 0, 0, 0],
    );
}

#[inline(always)]
fn sock_addr6(ctx: &SockAddrContext, op: u32) {
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
    emit_connect(ctx, op, AF_INET6, sa.user_port, sa.protocol, words);
}

#[inline(always)]
fn emit_connect(
    ctx: &SockAddrContext,
    op: u32,
    family: u16,
    user_port: u32,
    protocol: u32,
    addr_words: [u32; 4],
) {
    // user_port holds the port in network byte order in its low 16 bits.
    let port = u16::from_be(user_port as u16);
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == emit::observer_tgid() {
        return;
    }
    // SAFETY: the hook's context is a valid argument for the helper.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr as *mut c_void) };
    if port == DNS_PORT && protocol == IPPROTO_UDP {
        owner::remember(cookie, pid_tgid);
        if op == OP_SENDMSG {
            return;
        }
    }
    if protocol == IPPROTO_TCP && op == OP_CONNECT {
        tcp::track(cookie, port);
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
        addr_of_mut!((*event).port).write(port);
        addr_of_mut!((*event).protocol).write(protocol);
        addr_of_mut!((*event).addr)
            .cast::<[u32; 4]>()
            .write(addr_words);
        addr_of_mut!((*event).cookie).write(cookie);
        addr_of_mut!((*event).op).write(op);
        addr_of_mut!((*event)._pad).write(0);
    }
    entry.submit(SUBMIT_FLAGS);
}
