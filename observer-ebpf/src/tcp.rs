//! The first payload segments of every new TCP connection: a TLS ClientHello
//! (SNI), an HTTP CONNECT or Host header, a DNS-over-TCP message. User space
//! reassembles and parses them.
//!
//! The connect hooks enter each new TCP socket's cookie in [`TCP_CAPTURE`]
//! with a budget of segments; the packet programs copy payload segments of
//! sockets found there until the budget is spent. Packets of all other
//! connections cost a few direct reads and, when they carry payload, one
//! hash lookup.

use core::{ffi::c_void, ptr::addr_of_mut};

use aya_ebpf::{
    helpers::generated::{bpf_get_socket_cookie, bpf_skb_cgroup_id, bpf_skb_load_bytes},
    macros::map,
    maps::LruHashMap,
    programs::SkBuffContext,
};
use observer_common::{
    Counter, DIRECTION_EGRESS, EventKind, TCP_CAPTURE_LEN, TCP_SEGMENTS_PER_CONNECTION,
    TcpPayloadEvent,
};

use crate::{
    emit::{self, EVENTS, SUBMIT_FLAGS},
    skb::{self, verifier_bounded_len},
};

const DNS_PORT: u16 = 53;

/// Segments left to capture for one connection, per direction.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Budget {
    egress: u8,
    ingress: u8,
    _pad: [u8; 6],
}

/// Connections whose first bytes are still wanted, by socket cookie. LRU: a
/// connection that never sends is evicted instead of filling the table.
#[map]
static TCP_CAPTURE: LruHashMap<u64, Budget> = LruHashMap::with_max_entries(65536, 0);

/// Called by the connect hooks for every TCP connect(). Answers from the
/// server are only wanted for DNS over TCP.
#[inline(always)]
pub fn track(cookie: u64, port: u16) {
    let budget = Budget {
        egress: TCP_SEGMENTS_PER_CONNECTION,
        ingress: if port == DNS_PORT {
            TCP_SEGMENTS_PER_CONNECTION
        } else {
            0
        },
        _pad: [0; 6],
    };
    if TCP_CAPTURE.insert(&cookie, &budget, 0).is_err() {
        emit::count(Counter::TcpTrackFailed);
    }
}

/// Where the TCP payload starts and the source port, read with direct
/// packet access when the headers are in the linear area (nearly always),
/// else with the load helper.
#[inline(always)]
fn tcp_bounds(ctx: &SkBuffContext, l4_offset: u32) -> Option<(u32, u16)> {
    let skb = ctx.skb.skb;
    // SAFETY: see skb::transport_protocol.
    let (data, data_end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    let header = data + l4_offset as usize;
    let (src_port, offset_byte) = if header + 13 <= data_end {
        // SAFETY: in bounds, checked against data_end just above.
        unsafe {
            (
                u16::from_be_bytes(*(header as *const [u8; 2])),
                *((header + 12) as *const u8),
            )
        }
    } else {
        let bytes: [u8; 13] = ctx.load(l4_offset as usize).ok()?;
        (u16::from_be_bytes([bytes[0], bytes[1]]), bytes[12])
    };
    let header_len = ((offset_byte >> 4) as u32) * 4;
    Some((l4_offset + header_len, src_port))
}

#[inline(always)]
pub fn capture(ctx: &SkBuffContext, ethertype: u16, direction: u16) {
    let Some(l4_offset) = skb::network_header_len(ctx, ethertype) else {
        return;
    };
    let Some((payload_offset, src_port)) = tcp_bounds(ctx, l4_offset) else {
        return;
    };
    let len = ctx.len();
    if len <= payload_offset {
        // Handshake and pure ACKs: most TCP packets stop here.
        return;
    }
    let egress = direction == DIRECTION_EGRESS;
    if !egress && src_port != DNS_PORT {
        return;
    }
    let skb = ctx.skb.skb;
    // SAFETY: valid __sk_buff from the hook; allowed in cgroup_skb.
    let cookie = unsafe { bpf_get_socket_cookie(skb as *mut c_void) };
    let Some(budget) = TCP_CAPTURE.get_ptr_mut(&cookie) else {
        return;
    };
    // SAFETY: a live map value; a racing update costs at most one segment
    // more or less.
    let left = unsafe {
        if egress {
            addr_of_mut!((*budget).egress)
        } else {
            addr_of_mut!((*budget).ingress)
        }
    };
    // SAFETY: as above.
    unsafe {
        if *left == 0 {
            return;
        }
        *left -= 1;
    }
    emit_segment(ctx, ethertype, direction, cookie, l4_offset, payload_offset);
}

#[inline(always)]
fn emit_segment(
    ctx: &SkBuffContext,
    ethertype: u16,
    direction: u16,
    cookie: u64,
    l4_offset: u32,
    payload_offset: u32,
) {
    let Some(packet) = skb::locate(ctx, ethertype) else {
        return;
    };
    let Ok(header) = ctx.load::<[u8; 8]>(l4_offset as usize) else {
        return;
    };
    let wire_len = ctx.len() - payload_offset;
    let mut captured_len = wire_len;
    if captured_len > TCP_CAPTURE_LEN as u32 {
        captured_len = TCP_CAPTURE_LEN as u32;
        emit::count(Counter::TcpTruncated);
    }
    let skb = ctx.skb.skb;
    let Some(mut entry) = EVENTS.reserve::<TcpPayloadEvent>(0) else {
        emit::count(Counter::TcpReserveFailed);
        return;
    };
    let event = entry.as_mut_ptr();
    let load_len = verifier_bounded_len(captured_len, TCP_CAPTURE_LEN as u32);
    // SAFETY: `event` points at a reserved record of the right size and
    // load_len is within 1..=TCP_CAPTURE_LEN, the size of `payload`.
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
        emit::count(Counter::TcpLoadFailed);
        return;
    }
    // SAFETY: valid __sk_buff; plain field writes into the reservation.
    unsafe {
        let cgroup_id = bpf_skb_cgroup_id(skb);
        emit::write_socket_header(
            addr_of_mut!((*event).header),
            EventKind::TcpPayload,
            cgroup_id,
        );
        addr_of_mut!((*event).cookie).write(cookie);
        addr_of_mut!((*event).direction).write(direction);
        addr_of_mut!((*event).family).write(packet.family);
        addr_of_mut!((*event).src_port).write(u16::from_be_bytes([header[0], header[1]]));
        addr_of_mut!((*event).dst_port).write(u16::from_be_bytes([header[2], header[3]]));
        addr_of_mut!((*event).seq).write(u32::from_be_bytes([
            header[4], header[5], header[6], header[7],
        ]));
        addr_of_mut!((*event).wire_len).write(wire_len);
        addr_of_mut!((*event).captured_len).write(captured_len);
        addr_of_mut!((*event)._pad).write(0);
        addr_of_mut!((*event).src_addr).write(packet.src_addr);
        addr_of_mut!((*event).dst_addr).write(packet.dst_addr);
    }
    entry.submit(SUBMIT_FLAGS);
}
