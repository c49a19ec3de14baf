//! cgroup_skb egress/ingress: copy DNS over UDP (port 53) to user space.
//!
//! Egress keeps queries (destination port 53), ingress keeps responses
//! (source port 53). The programs only locate the UDP payload and copy its
//! first bytes; user space parses the DNS message.

use core::{ffi::c_void, ptr::addr_of_mut};

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_skb_cgroup_id, bpf_skb_load_bytes},
    },
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use observer_common::{
    AF_INET, AF_INET6, Counter, DIRECTION_EGRESS, DIRECTION_INGRESS, DNS_CAPTURE_LEN,
    DnsPacketEvent, EventKind,
};

use crate::emit::{self, EVENTS, SUBMIT_FLAGS};

/// cgroup_skb programs let the packet through by returning 1.
const PASS: i32 = 1;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_UDP: u8 = 17;
const DNS_PORT: u16 = 53;
const IPV6_HEADER_LEN: u32 = 40;
const UDP_HEADER_LEN: u32 = 8;

#[cgroup_skb(egress)]
pub fn dns_egress(ctx: SkBuffContext) -> i32 {
    capture(&ctx, DIRECTION_EGRESS);
    PASS
}

#[cgroup_skb(ingress)]
pub fn dns_ingress(ctx: SkBuffContext) -> i32 {
    capture(&ctx, DIRECTION_INGRESS);
    PASS
}

/// Where the UDP payload of a packet is, and its addressing.
struct Datagram {
    family: u16,
    src_addr: [u8; 16],
    dst_addr: [u8; 16],
    src_port: u16,
    dst_port: u16,
    payload_offset: u32,
    payload_len: u32,
}

#[inline(always)]
fn capture(ctx: &SkBuffContext, direction: u16) {
    let Some(datagram) = locate_udp(ctx) else {
        return;
    };
    let dns_port = if direction == DIRECTION_EGRESS {
        datagram.dst_port
    } else {
        datagram.src_port
    };
    if dns_port != DNS_PORT {
        return;
    }
    let skb = ctx.skb.skb;
    // SAFETY: valid __sk_buff pointer from the hook; the helper is allowed in
    // cgroup_skb. The socket's cgroup is the owner of the exchange, also on
    // ingress where no task context exists.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    let egress = direction == DIRECTION_EGRESS;
    let pid_tgid = if egress {
        bpf_get_current_pid_tgid()
    } else {
        0
    };
    if egress && (pid_tgid >> 32) as u32 == emit::observer_tgid() {
        return;
    }

    // The UDP length field may claim more than the packet holds.
    let in_packet = ctx.len().saturating_sub(datagram.payload_offset);
    let available = if datagram.payload_len < in_packet {
        datagram.payload_len
    } else {
        in_packet
    };
    let mut captured_len = available;
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
        let load_len = verifier_bounded_len(captured_len);
        // SAFETY: `event` points at a reserved record of the right size and
        // load_len is within 1..=DNS_CAPTURE_LEN, the size of `payload`.
        let ret = unsafe {
            bpf_skb_load_bytes(
                skb as *const c_void,
                datagram.payload_offset,
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
        if egress {
            emit::write_task_header(header, EventKind::DnsPacket, pid_tgid, cgroup_id);
        } else {
            emit::write_socket_header(header, EventKind::DnsPacket, cgroup_id);
        }
        addr_of_mut!((*event).direction).write(direction);
        addr_of_mut!((*event).family).write(datagram.family);
        addr_of_mut!((*event).wire_len).write(datagram.payload_len);
        addr_of_mut!((*event).captured_len).write(captured_len);
        addr_of_mut!((*event).src_port).write(datagram.src_port);
        addr_of_mut!((*event).dst_port).write(datagram.dst_port);
        addr_of_mut!((*event).src_addr).write(datagram.src_addr);
        addr_of_mut!((*event).dst_addr).write(datagram.dst_addr);
    }
    entry.submit(SUBMIT_FLAGS);
}

/// Returns `len` (which must be in 1..=DNS_CAPTURE_LEN) in a form the
/// verifier can bound. LLVM otherwise spills the checked value and reloads it
/// without its lower bound, and the verifier then rejects the helper call
/// with "invalid zero-sized read". The volatile read hides the value from the
/// optimizer so the mask survives; for lengths in range it is the identity.
#[inline(always)]
fn verifier_bounded_len(len: u32) -> u32 {
    // SAFETY: volatile read of a local.
    let opaque = unsafe { core::ptr::read_volatile(&len) };
    (opaque.wrapping_sub(1) & (DNS_CAPTURE_LEN as u32 - 1)) + 1
}

/// Rejects non-UDP packets (nearly all of them: every TCP segment on the
/// machine passes here) with direct packet reads instead of helper calls.
/// Answers "maybe" when the header is not in the linear area, leaving the
/// decision to the helper-based parse.
#[inline(always)]
fn may_be_udp(ctx: &SkBuffContext, protocol: u16) -> bool {
    let skb = ctx.skb.skb;
    // SAFETY: reading __sk_buff fields; the verifier turns data/data_end
    // into packet pointers (direct packet access is allowed read-only in
    // cgroup_skb programs).
    let (data, data_end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    let (needed, offset) = match protocol {
        ETH_P_IP => (20, 9),
        ETH_P_IPV6 => (40, 6),
        _ => return false,
    };
    if data + needed > data_end {
        return true;
    }
    // SAFETY: in bounds, checked against data_end just above.
    let next = unsafe { *((data + offset) as *const u8) };
    next == IPPROTO_UDP
}

/// Finds the UDP header of an IPv4 or IPv6 packet. cgroup_skb sees packets
/// from the network header on. IPv6 extension headers and non-first IPv4
/// fragments are skipped: DNS queries practically never carry them.
#[inline(always)]
fn locate_udp(ctx: &SkBuffContext) -> Option<Datagram> {
    let protocol = u16::from_be(ctx.skb.protocol() as u16);
    if !may_be_udp(ctx, protocol) {
        return None;
    }
    let mut src_addr = [0u8; 16];
    let mut dst_addr = [0u8; 16];
    let (family, l4_offset) = if protocol == ETH_P_IP {
        let version_ihl: u8 = ctx.load(0).ok()?;
        if version_ihl >> 4 != 4 {
            return None;
        }
        let ihl = ((version_ihl & 0x0f) as u32) * 4;
        if ihl < 20 {
            return None;
        }
        let frag: [u8; 2] = ctx.load(6).ok()?;
        if u16::from_be_bytes(frag) & 0x1fff != 0 {
            return None;
        }
        let proto: u8 = ctx.load(9).ok()?;
        if proto != IPPROTO_UDP {
            return None;
        }
        let src: [u8; 4] = ctx.load(12).ok()?;
        let dst: [u8; 4] = ctx.load(16).ok()?;
        src_addr[..4].copy_from_slice(&src);
        dst_addr[..4].copy_from_slice(&dst);
        (AF_INET, ihl)
    } else if protocol == ETH_P_IPV6 {
        let next_header: u8 = ctx.load(6).ok()?;
        if next_header != IPPROTO_UDP {
            return None;
        }
        src_addr = ctx.load(8).ok()?;
        dst_addr = ctx.load(24).ok()?;
        (AF_INET6, IPV6_HEADER_LEN)
    } else {
        return None;
    };
    let udp: [u8; 8] = ctx.load(l4_offset as usize).ok()?;
    let udp_len = u16::from_be_bytes([udp[4], udp[5]]) as u32;
    Some(Datagram {
        family,
        src_addr,
        dst_addr,
        src_port: u16::from_be_bytes([udp[0], udp[1]]),
        dst_port: u16::from_be_bytes([udp[2], udp[3]]),
        payload_offset: l4_offset + UDP_HEADER_LEN,
        payload_len: udp_len.saturating_sub(UDP_HEADER_LEN),
    })
}
