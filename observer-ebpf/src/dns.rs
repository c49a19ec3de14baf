//! DNS over UDP: copy datagrams to (egress) or from (ingress) port 53 to
//! user space, which parses the messages.

use core::{ffi::c_void, ptr::addr_of_mut};

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_get_socket_cookie, bpf_skb_cgroup_id, bpf_skb_load_bytes},
    },
    programs::SkBuffContext,
};
use observer_common::{
    Counter, DIRECTION_EGRESS, DNS_CAPTURE_LEN, DnsPacketEvent, EventKind, SocketOwner,
};

use crate::{
    emit::{self, EVENTS, SUBMIT_FLAGS},
    owner,
    skb::{self, verifier_bounded_len},
};

/// Who sent a datagram, as far as this kernel lets a packet program know.
enum Sender {
    /// Ingress: the packet arrives in softirq context; its socket's cgroup
    /// is the owner.
    None,
    /// Egress on kernels where cgroup_skb may ask for the current task.
    Current(u64),
    /// Egress elsewhere: the owner the connect/sendmsg hook recorded.
    Owner(SocketOwner),
    /// Egress from a socket whose owner was never recorded.
    Unknown,
}

#[inline(always)]
fn sender(ctx: &SkBuffContext, egress: bool) -> Sender {
    if !egress {
        Sender::None
    } else if emit::skb_task_context() {
        Sender::Current(bpf_get_current_pid_tgid())
    } else {
        // SAFETY: valid __sk_buff from the hook; allowed in cgroup_skb.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb as *mut c_void) };
        match owner::lookup(cookie) {
            Some(owner) => Sender::Owner(owner),
            None => Sender::Unknown,
        }
    }
}

const DNS_PORT: u16 = 53;
const UDP_HEADER_LEN: u32 = 8;

#[inline(always)]
pub fn capture(ctx: &SkBuffContext, ethertype: u16, direction: u16) {
    // Ports first, with direct reads: other UDP traffic stops here.
    let Some(l4_offset) = skb::network_header_len(ctx, ethertype) else {
        return;
    };
    let Some((src_port, dst_port)) = skb::ports(ctx, l4_offset) else {
        return;
    };
    let egress = direction == DIRECTION_EGRESS;
    if (if egress { dst_port } else { src_port }) != DNS_PORT {
        return;
    }
    let Some(packet) = skb::locate(ctx, ethertype) else {
        return;
    };
    let Ok(udp) = ctx.load::<[u8; 8]>(packet.l4_offset as usize) else {
        return;
    };
    let payload_offset = packet.l4_offset + UDP_HEADER_LEN;
    let payload_len = (u16::from_be_bytes([udp[4], udp[5]]) as u32).saturating_sub(UDP_HEADER_LEN);
    let skb = ctx.skb.skb;
    // SAFETY: valid __sk_buff pointer from the hook; the helper is allowed in
    // cgroup_skb. The socket's cgroup is the owner of the exchange, also on
    // ingress where no task context exists.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    let sender = sender(ctx, egress);
    let sender_tgid = match &sender {
        Sender::Current(pid_tgid) => (*pid_tgid >> 32) as u32,
        Sender::Owner(owner) => (owner.pid_tgid >> 32) as u32,
        Sender::None | Sender::Unknown => 0,
    };
    if sender_tgid != 0 && sender_tgid == emit::observer_tgid() {
        return;
    }

    // The UDP length field may claim more than the packet holds.
    let in_packet = ctx.len().saturating_sub(payload_offset);
    let mut captured_len = if payload_len < in_packet {
        payload_len
    } else {
        in_packet
    };
    if captured_len > DNS_CAPTURE_LEN as u32 {
        captured_len = DNS_CAPTURE_LEN as u32;
        emit::count(Counter::DnsTruncated);
    }

    let Some(mut entry) = EVENTS.reserve::<DnsPacketEvent>(0) else {
        emit::count(Counter::DnsReserveFailed);
        return;
    };
    let event = entry.as_mut_ptr();
    if captured_len > 0 {
        let load_len = verifier_bounded_len(captured_len, DNS_CAPTURE_LEN as u32);
        // SAFETY: `event` points at a reserved record of the right size and
        // load_len is within 1..=DNS_CAPTURE_LEN, the size of `payload`.
        let ret = unsafe {
            bpf_skb_load_bytes(
                skb as *const c_void,
                payload_offset,
                addr_of_mut!((*event).payload) as *mut c_void,
                load_len,
            )
        };
        if ret != 0 {
            entry.discard(0);
            emit::count(Counter::DnsLoadFailed);
            return;
        }
    }
    // SAFETY: writes of plain fields into the reserved record; `payload` was
    // filled above (bytes past captured_len are never read by user space).
    unsafe {
        let header = addr_of_mut!((*event).header);
        match &sender {
            Sender::Current(pid_tgid) => {
                emit::write_task_header(header, EventKind::DnsPacket, *pid_tgid, cgroup_id)
            }
            Sender::Owner(owner) => {
                emit::write_owner_header(header, EventKind::DnsPacket, owner, cgroup_id)
            }
            Sender::Unknown => {
                emit::count(Counter::DnsSenderUnknown);
                emit::write_socket_header(header, EventKind::DnsPacket, cgroup_id)
            }
            Sender::None => emit::write_socket_header(header, EventKind::DnsPacket, cgroup_id),
        }
        addr_of_mut!((*event).direction).write(direction);
        addr_of_mut!((*event).family).write(packet.family);
        addr_of_mut!((*event).wire_len).write(payload_len);
        addr_of_mut!((*event).captured_len).write(captured_len);
        addr_of_mut!((*event).src_port).write(src_port);
        addr_of_mut!((*event).dst_port).write(dst_port);
        addr_of_mut!((*event).src_addr).write(packet.src_addr);
        addr_of_mut!((*event).dst_addr).write(packet.dst_addr);
    }
    entry.submit(SUBMIT_FLAGS);
}
