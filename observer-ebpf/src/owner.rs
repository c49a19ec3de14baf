//! Who sends on a DNS socket, for kernels whose packet programs cannot ask
//! for the current task (cgroup_skb gained `bpf_get_current_pid_tgid` and
//! friends only in newer kernels; Debian 11's 5.10 and 12's 6.1 refuse it).
//!
//! Every UDP DNS datagram passes a cgroup sock_addr hook first: connect()
//! for connected sockets (glibc's and Go's resolvers), sendmsg() with an
//! address for unconnected ones. That hook runs in the sender's context and
//! records it here by socket cookie; the egress packet program reads it
//! back. Only a socket connected before the agent started is unknown, and
//! counted (`Counter::DnsSenderUnknown`).

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{bpf_get_current_comm, bpf_get_current_uid_gid},
    macros::map,
    maps::LruHashMap,
};
use observer_common::{COMM_LEN, SocketOwner};

use crate::emit;

/// LRU: sockets close without telling us; old entries make room.
#[map]
static SOCKET_OWNERS: LruHashMap<u64, SocketOwner> = LruHashMap::with_max_entries(16384, 0);

/// Records the current task as the owner of the socket `cookie`; called by
/// the sock_addr hooks for DNS destinations. A no-op where the packet
/// programs ask the kernel themselves.
#[inline(always)]
pub fn remember(cookie: u64, pid_tgid: u64) {
    if emit::skb_task_context() {
        return;
    }
    let mut owner = SocketOwner {
        pid_tgid,
        // SAFETY: no arguments; allowed in sock_addr programs.
        uid: unsafe { bpf_get_current_uid_gid() } as u32,
        _pad: 0,
        comm: [0u8; COMM_LEN],
    };
    // SAFETY: `comm` is COMM_LEN bytes of the local.
    let ret =
        unsafe { bpf_get_current_comm(owner.comm.as_mut_ptr() as *mut c_void, COMM_LEN as u32) };
    if ret != 0 {
        owner.comm = [0u8; COMM_LEN];
    }
    // A failed insert leaves the next datagram unattributed, which the
    // packet program counts.
    let _ = SOCKET_OWNERS.insert(&cookie, &owner, 0);
}

/// The recorded owner of socket `cookie`.
#[inline(always)]
pub fn lookup(cookie: u64) -> Option<SocketOwner> {
    // SAFETY: the value is copied out at once; a concurrent update can at
    // worst mix two owners of the same socket.
    unsafe { SOCKET_OWNERS.get(&cookie).copied() }
}
