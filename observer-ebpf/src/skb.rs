//! cgroup_skb egress/ingress: every packet on the machine passes here. The
//! programs find the transport header and hand DNS datagrams to [`crate::dns`]
//! and TCP segments with payload to [`crate::tcp`]; everything else is let
//! through after a few direct packet reads.

use aya_ebpf::{EbpfContext, macros::cgroup_skb, programs::SkBuffContext};
use observer_common::{AF_INET, AF_INET6, DIRECTION_EGRESS, DIRECTION_INGRESS, program_index};

use crate::{dns, emit, tcp};

/// cgroup_skb programs let the packet through by returning 1.
const PASS: i32 = 1;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
const IPV6_HEADER_LEN: u32 = 40;

#[cgroup_skb(egress)]
pub fn skb_egress(ctx: SkBuffContext) -> i32 {
    emit::refuse_if_asked(ctx.as_ptr(), const { program_index("skb_egress") });
    dispatch(&ctx, DIRECTION_EGRESS);
    PASS
}

#[cgroup_skb(ingress)]
pub fn skb_ingress(ctx: SkBuffContext) -> i32 {
    emit::refuse_if_asked(ctx.as_ptr(), const { program_index("skb_ingress") });
    dispatch(&ctx, DIRECTION_INGRESS);
    PASS
}

/// The network-layer facts of a packet: addresses and where its transport
/// header starts.
pub struct Packet {
    pub family: u16,
    pub protocol: u8,
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub l4_offset: u32,
}

#[inline(always)]
fn dispatch(ctx: &SkBuffContext, direction: u16) {
    let ethertype = u16::from_be(ctx.skb.protocol() as u16);
    let protocol = match transport_protocol(ctx, ethertype) {
        Some(known) => known,
        None => match locate(ctx, ethertype) {
            Some(packet) => packet.protocol,
            None => return,
        },
    };
    match protocol {
        IPPROTO_UDP => dns::capture(ctx, ethertype, direction),
        IPPROTO_TCP => tcp::capture(ctx, ethertype, direction),
        _ => {}
    }
}

/// The first two 16-bit words of the transport header (the ports of UDP
/// and TCP), with direct packet access when they are in the linear area.
#[inline(always)]
pub fn ports(ctx: &SkBuffContext, l4_offset: u32) -> Option<(u16, u16)> {
    let skb = ctx.skb.skb;
    // SAFETY: as in transport_protocol.
    let (data, data_end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    let header = data + l4_offset as usize;
    let bytes: [u8; 4] = if header + 4 <= data_end {
        // SAFETY: in bounds, checked just above.
        unsafe { *(header as *const [u8; 4]) }
    } else {
        ctx.load(l4_offset as usize).ok()?
    };
    Some((
        u16::from_be_bytes([bytes[0], bytes[1]]),
        u16::from_be_bytes([bytes[2], bytes[3]]),
    ))
}

/// Length of the network header, where the transport header starts; `None`
/// for non-first IPv4 fragments and anything that is not IP.
#[inline(always)]
pub fn network_header_len(ctx: &SkBuffContext, ethertype: u16) -> Option<u32> {
    match ethertype {
        ETH_P_IPV6 => Some(IPV6_HEADER_LEN),
        ETH_P_IP => {
            let skb = ctx.skb.skb;
            // SAFETY: as in transport_protocol.
            let (data, data_end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
            let (version_ihl, frag) = if data + 8 <= data_end {
                // SAFETY: in bounds, checked just above.
                unsafe { (*(data as *const u8), *((data + 6) as *const [u8; 2])) }
            } else {
                let bytes: [u8; 8] = ctx.load(0).ok()?;
                (bytes[0], [bytes[6], bytes[7]])
            };
            let ihl = ((version_ihl & 0x0f) as u32) * 4;
            if version_ihl >> 4 != 4 || ihl < 20 || u16::from_be_bytes(frag) & 0x1fff != 0 {
                return None;
            }
            Some(ihl)
        }
        _ => None,
    }
}

/// The transport protocol read with direct packet access: no helper call for
/// the common case. `None` when the header is not in the linear area, leaving
/// the decision to the helper-based parse in [`locate`].
#[inline(always)]
fn transport_protocol(ctx: &SkBuffContext, ethertype: u16) -> Option<u8> {
    let skb = ctx.skb.skb;
    // SAFETY: reading __sk_buff fields; the verifier turns data/data_end
    // into packet pointers (direct packet access is allowed read-only in
    // cgroup_skb programs).
    let (data, data_end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    let (needed, offset) = match ethertype {
        ETH_P_IP => (20, 9),
        ETH_P_IPV6 => (40, 6),
        _ => return Some(0),
    };
    if data + needed > data_end {
        return None;
    }
    // SAFETY: in bounds, checked against data_end just above.
    Some(unsafe { *((data + offset) as *const u8) })
}

/// Parses the IPv4 or IPv6 header. cgroup_skb sees packets from the network
/// header on. IPv6 extension headers and non-first IPv4 fragments are
/// skipped: DNS queries and connection openings practically never carry them.
#[inline(always)]
pub fn locate(ctx: &SkBuffContext, ethertype: u16) -> Option<Packet> {
    let mut src_addr = [0u8; 16];
    let mut dst_addr = [0u8; 16];
    if ethertype == ETH_P_IP {
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
        let protocol: u8 = ctx.load(9).ok()?;
        let src: [u8; 4] = ctx.load(12).ok()?;
        let dst: [u8; 4] = ctx.load(16).ok()?;
        src_addr[..4].copy_from_slice(&src);
        dst_addr[..4].copy_from_slice(&dst);
        Some(Packet {
            family: AF_INET,
            protocol,
            src_addr,
            dst_addr,
            l4_offset: ihl,
        })
    } else if ethertype == ETH_P_IPV6 {
        let protocol: u8 = ctx.load(6).ok()?;
        src_addr = ctx.load(8).ok()?;
        dst_addr = ctx.load(24).ok()?;
        Some(Packet {
            family: AF_INET6,
            protocol,
            src_addr,
            dst_addr,
            l4_offset: IPV6_HEADER_LEN,
        })
    } else {
        None
    }
}

/// Returns `len` (which must be in 1..=`max`, `max` a power of two) in a
/// form the verifier can bound. LLVM otherwise spills the checked value and
/// reloads it without its lower bound, and the verifier then rejects the
/// helper call with "invalid zero-sized read". The volatile read hides the
/// value from the optimizer so the mask survives; for lengths in range it is
/// the identity.
#[inline(always)]
pub fn verifier_bounded_len(len: u32, max: u32) -> u32 {
    // SAFETY: volatile read of a local.
    let opaque = unsafe { core::ptr::read_volatile(&len) };
    (opaque.wrapping_sub(1) & (max - 1)) + 1
}
