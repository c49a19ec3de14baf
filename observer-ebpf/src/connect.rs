//! cgroup/connect4 and cgroup/connect6: every connect() on the machine, as
//! the caller asked for it, including the ones that will fail.

use aya_ebpf::{
    helpers::bpf_get_current_cgroup_id, macros::cgroup_sock_addr, programs::SockAddrContext,
};
use observer_common::{AF_INET, AF_INET6, ConnectEvent, Counter, EventKind};

use crate::emit::{self, EVENTS, SUBMIT_FLAGS};

/// cgroup_sock_addr programs allow the call by returning 1.
const ALLOW: i32 = 1;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel hands us a valid bpf_sock_addr for this hook.
    let sa = unsafe { &*ctx.sock_addr };
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&sa.user_ip4.to_ne_bytes());
    emit_connect(AF_INET, sa.user_port, sa.protocol, addr);
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    // SAFETY: as above.
    let sa = unsafe { &*ctx.sock_addr };
    let mut addr = [0u8; 16];
    // Each word is stored in network byte order already; copy it verbatim.
    addr[0..4].copy_from_slice(&sa.user_ip6[0].to_ne_bytes());
    addr[4..8].copy_from_slice(&sa.user_ip6[1].to_ne_bytes());
    addr[8..12].copy_from_slice(&sa.user_ip6[2].to_ne_bytes());
    addr[12..16].copy_from_slice(&sa.user_ip6[3].to_ne_bytes());
    emit_connect(AF_INET6, sa.user_port, sa.protocol, addr);
    ALLOW
}

#[inline(always)]
fn emit_connect(family: u16, user_port: u32, protocol: u32, addr: [u8; 16]) {
    let header = {
        // SAFETY: helper without arguments, valid in cgroup_sock_addr.
        let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
        emit::task_header(EventKind::Connect, cgroup_id)
    };
    if header.tgid == emit::observer_tgid() {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<ConnectEvent>(0) else {
        emit::count(Counter::ConnectReserveFailed);
        return;
    };
    entry.write(ConnectEvent {
        header,
        family,
        // user_port holds the port in network byte order in its low 16 bits.
        port: u16::from_be(user_port as u16),
        protocol,
        addr,
    });
    entry.submit(SUBMIT_FLAGS);
}
