//! Connection outcome: a TCP socket leaving SYN_SENT is either established
//! or closed with an error (refused, timed out, unreachable). Joined in user
//! space to the connect() by socket cookie.

use core::{ffi::c_void, ptr::addr_of_mut};

use aya_ebpf::{EbpfContext, macros::btf_tracepoint, programs::BtfTracePointContext};
use observer_common::{Counter, EventKind, SockStateEvent, TCP_SYN_SENT, program_index};

use crate::emit::{self, EVENTS, SUBMIT_FLAGS, read_kernel};

/// inet_sock_set_state(const struct sock *sk, int oldstate, int newstate).
/// Runs wherever the state changes (often softirq), so the header carries
/// no task; the cookie names the connection.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn sock_state(ctx: BtfTracePointContext) -> i32 {
    emit::refuse_if_asked(ctx.as_ptr(), const { program_index("sock_state") });
    let old_state: i32 = ctx.arg(1);
    if old_state != TCP_SYN_SENT as i32 {
        return 0;
    }
    let offsets = emit::offsets();
    if offsets.valid == 0 {
        return 0;
    }
    let new_state: i32 = ctx.arg(2);
    let sk: *mut c_void = ctx.arg(0);
    // The cookie the connect hook generated (bpf_get_socket_cookie stores
    // it in the socket). Read, not asked for: tracing programs may call
    // that helper only from Linux 5.12 on. 0 (no cookie yet) joins nothing.
    let cookie: u64 = read_kernel(sk as u64, offsets.sock_cookie).unwrap_or(0);
    // sk_err is an int; a positive errno once set.
    let sk_err: i32 = read_kernel(sk as u64, offsets.sock_err).unwrap_or(0);
    let Some(mut entry) = EVENTS.reserve::<SockStateEvent>(0) else {
        emit::count(Counter::StateReserveFailed);
        return 0;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: plain field writes into the reservation.
    unsafe {
        emit::write_socket_header(addr_of_mut!((*event).header), EventKind::SockState, 0);
        addr_of_mut!((*event).cookie).write(cookie);
        addr_of_mut!((*event).old_state).write(old_state as u16);
        addr_of_mut!((*event).new_state).write(new_state as u16);
        addr_of_mut!((*event).sk_err).write(sk_err.unsigned_abs());
    }
    entry.submit(SUBMIT_FLAGS);
    0
}
