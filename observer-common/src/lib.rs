//! The event ABI between the kernel programs (observer-ebpf) and the agent.
//!
//! Every record the kernel submits to the ring buffer starts with an
//! [`EventHeader`] whose `kind` is one of [`EventKind`]'s stable ids, followed
//! by that kind's fields. Types are `#[repr(C)]` with explicit padding so both
//! sides agree byte for byte; the const asserts below fail the build if a field
//! change introduces implicit padding or moves a field.
//!
//! Rules for changing this file: never renumber a kind or a counter, add new
//! kinds with new ids, and grow a record only at its end (the agent checks
//! the exact size of each kind when it decodes).

#![no_std]

use core::mem::{offset_of, size_of};

/// Length of `task_struct::comm` (include/linux/sched.h, TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;

/// Bytes of a DNS message captured per packet. 512 is the classic UDP DNS
/// limit (RFC 1035 §4.2.1): queries essentially always fit.
pub const DNS_CAPTURE_LEN: usize = 512;

/// Address families as the kernel numbers them (include/linux/socket.h).
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Stable event kind ids. Never renumber: recorded event streams and older
/// agents rely on them.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A `connect()` on an IPv4 or IPv6 socket (cgroup/connect4, connect6).
    Connect = 1,
    /// A UDP packet to or from port 53 (cgroup_skb egress or ingress).
    DnsPacket = 2,
}

impl EventKind {
    pub const ALL: [EventKind; 2] = [EventKind::Connect, EventKind::DnsPacket];

    pub const fn from_id(id: u32) -> Option<Self> {
        match id {
            1 => Some(EventKind::Connect),
            2 => Some(EventKind::DnsPacket),
            _ => None,
        }
    }

    /// The exact size of this kind's record in the ring buffer.
    pub const fn record_size(self) -> usize {
        match self {
            EventKind::Connect => size_of::<ConnectEvent>(),
            EventKind::DnsPacket => size_of::<DnsPacketEvent>(),
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Connect => "connect",
            EventKind::DnsPacket => "dns_packet",
        }
    }
}

/// Indices of the kernel's per-CPU counters (map `COUNTERS`). The agent sums
/// them across CPUs. Never renumber.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// `bpf_ringbuf_reserve` failed for a connect event: the event is lost.
    ConnectReserveFailed = 0,
    /// `bpf_ringbuf_reserve` failed for a DNS packet: the event is lost.
    DnsReserveFailed = 1,
    /// `bpf_skb_load_bytes` failed while copying a DNS payload: event lost.
    DnsLoadFailed = 2,
    /// A DNS payload longer than [`DNS_CAPTURE_LEN`]: captured, but cut short.
    DnsTruncated = 3,
}

impl Counter {
    pub const COUNT: u32 = 4;
    pub const ALL: [Counter; 4] = [
        Counter::ConnectReserveFailed,
        Counter::DnsReserveFailed,
        Counter::DnsLoadFailed,
        Counter::DnsTruncated,
    ];

    /// True when this counter counts events that never reached user space.
    pub const fn is_loss(self) -> bool {
        !matches!(self, Counter::DnsTruncated)
    }

    pub const fn name(self) -> &'static str {
        match self {
            Counter::ConnectReserveFailed => "connect_reserve_failed",
            Counter::DnsReserveFailed => "dns_reserve_failed",
            Counter::DnsLoadFailed => "dns_load_failed",
            Counter::DnsTruncated => "dns_truncated",
        }
    }
}

/// Direction of a captured DNS packet, seen from the local socket.
pub const DIRECTION_EGRESS: u16 = 0;
pub const DIRECTION_INGRESS: u16 = 1;

/// Fields every event starts with.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    /// An [`EventKind`] id.
    pub kind: u32,
    /// Thread-group id (the user-visible pid) of the current task; 0 when the
    /// hook runs outside the process that owns the socket (packet ingress).
    pub tgid: u32,
    /// Thread id of the current task; 0 as for `tgid`.
    pub tid: u32,
    /// Real uid of the current task; `u32::MAX` when unknown.
    pub uid: u32,
    /// `bpf_ktime_get_boot_ns()`: CLOCK_BOOTTIME, so it counts suspend too.
    pub boot_ns: u64,
    /// cgroup2 id (the inode of the cgroup's directory) of the task, or of
    /// the socket for packet events.
    pub cgroup_id: u64,
    /// `comm` of the current task, NUL padded.
    pub comm: [u8; COMM_LEN],
}

/// `connect()` on an AF_INET or AF_INET6 socket, as the caller asked for it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectEvent {
    pub header: EventHeader,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u16,
    /// Destination port, host byte order.
    pub port: u16,
    /// IPPROTO_TCP (6), IPPROTO_UDP (17), ...
    pub protocol: u32,
    /// Destination address in network byte order; IPv4 uses the first 4 bytes.
    pub addr: [u8; 16],
}

/// A UDP datagram to (egress) or from (ingress) port 53, with the start of
/// its payload.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsPacketEvent {
    pub header: EventHeader,
    /// [`DIRECTION_EGRESS`] or [`DIRECTION_INGRESS`].
    pub direction: u16,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u16,
    /// UDP payload length on the wire.
    pub wire_len: u32,
    /// Bytes of `payload` that hold data (<= [`DNS_CAPTURE_LEN`]).
    pub captured_len: u32,
    /// UDP ports, host byte order.
    pub src_port: u16,
    pub dst_port: u16,
    /// Addresses in network byte order; IPv4 uses the first 4 bytes.
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub payload: [u8; DNS_CAPTURE_LEN],
}

// Layout guards: a failure here means a field change added implicit padding or
// moved a field; fix the struct (explicit `_pad` fields), never the assert.
const _: () = {
    assert!(size_of::<EventHeader>() == 48);
    assert!(offset_of!(EventHeader, boot_ns) == 16);
    assert!(offset_of!(EventHeader, cgroup_id) == 24);
    assert!(offset_of!(EventHeader, comm) == 32);

    assert!(size_of::<ConnectEvent>() == 72);
    assert!(offset_of!(ConnectEvent, family) == 48);
    assert!(offset_of!(ConnectEvent, port) == 50);
    assert!(offset_of!(ConnectEvent, protocol) == 52);
    assert!(offset_of!(ConnectEvent, addr) == 56);

    assert!(size_of::<DnsPacketEvent>() == 608);
    assert!(offset_of!(DnsPacketEvent, direction) == 48);
    assert!(offset_of!(DnsPacketEvent, wire_len) == 52);
    assert!(offset_of!(DnsPacketEvent, captured_len) == 56);
    assert!(offset_of!(DnsPacketEvent, src_port) == 60);
    assert!(offset_of!(DnsPacketEvent, src_addr) == 64);
    assert!(offset_of!(DnsPacketEvent, dst_addr) == 80);
    assert!(offset_of!(DnsPacketEvent, payload) == 96);

    // The kernel reserves ring-buffer records at 8-byte alignment.
    assert!(size_of::<ConnectEvent>().is_multiple_of(8));
    assert!(size_of::<DnsPacketEvent>().is_multiple_of(8));
};

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: plain-old-data with no implicit padding (asserted above), valid
    // for every bit pattern.
    unsafe impl aya::Pod for EventHeader {}
    unsafe impl aya::Pod for ConnectEvent {}
    unsafe impl aya::Pod for DnsPacketEvent {}
}

/// A ring-buffer record, checked and copied out of the raw bytes.
#[expect(
    clippy::large_enum_variant,
    reason = "records are decoded one at a time and dropped at once; boxing would need an allocator in this no_std crate"
)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    Connect(ConnectEvent),
    DnsPacket(DnsPacketEvent),
}

/// Why a ring-buffer record could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// Shorter than an [`EventHeader`].
    TooShort { len: usize },
    /// The header names a kind this agent does not know.
    UnknownKind { id: u32 },
    /// The length does not match the kind's record size.
    SizeMismatch {
        kind: EventKind,
        len: usize,
        expected: usize,
    },
}

impl Record {
    /// Reads one record from the bytes the kernel submitted.
    pub fn read(bytes: &[u8]) -> Result<Record, RecordError> {
        if bytes.len() < size_of::<EventHeader>() {
            return Err(RecordError::TooShort { len: bytes.len() });
        }
        let id = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let kind = EventKind::from_id(id).ok_or(RecordError::UnknownKind { id })?;
        let expected = kind.record_size();
        if bytes.len() != expected {
            return Err(RecordError::SizeMismatch {
                kind,
                len: bytes.len(),
                expected,
            });
        }
        // SAFETY: the length was checked against the kind's size, the types
        // are plain-old-data valid for any bit pattern, and read_unaligned
        // copes with the buffer's alignment.
        Ok(unsafe {
            match kind {
                EventKind::Connect => {
                    Record::Connect(core::ptr::read_unaligned(bytes.as_ptr().cast()))
                }
                EventKind::DnsPacket => {
                    Record::DnsPacket(core::ptr::read_unaligned(bytes.as_ptr().cast()))
                }
            }
        })
    }

    pub fn header(&self) -> &EventHeader {
        match self {
            Record::Connect(e) => &e.header,
            Record::DnsPacket(e) => &e.header,
        }
    }
}

/// The bytes of a record as the kernel lays them out (used by tests and
/// benchmarks to replay events).
pub fn record_bytes<T: Copy>(record: &T) -> &[u8] {
    // SAFETY: only called with the #[repr(C)] records above, which have no
    // padding, so every byte is initialised.
    unsafe { core::slice::from_raw_parts((record as *const T).cast::<u8>(), size_of::<T>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: EventKind) -> EventHeader {
        EventHeader {
            kind: kind as u32,
            tgid: 4242,
            tid: 4243,
            uid: 1000,
            boot_ns: 123_456_789,
            cgroup_id: 0xdead_beef,
            comm: *b"skopeo\0\0\0\0\0\0\0\0\0\0",
        }
    }

    fn connect() -> ConnectEvent {
        ConnectEvent {
            header: header(EventKind::Connect),
            family: AF_INET6,
            port: 443,
            protocol: 6,
            addr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        }
    }

    fn dns() -> DnsPacketEvent {
        let mut payload = [0u8; DNS_CAPTURE_LEN];
        for (i, b) in payload.iter_mut().enumerate() {
            *b = i as u8;
        }
        DnsPacketEvent {
            header: header(EventKind::DnsPacket),
            direction: DIRECTION_INGRESS,
            family: AF_INET,
            wire_len: 700,
            captured_len: DNS_CAPTURE_LEN as u32,
            src_port: 53,
            dst_port: 40000,
            src_addr: [198, 18, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst_addr: [198, 18, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            payload,
        }
    }

    #[test]
    fn every_kind_round_trips() {
        for kind in EventKind::ALL {
            // Exhaustive on purpose: a new kind fails to compile here until
            // it has a round-trip case.
            let expected = match kind {
                EventKind::Connect => Record::Connect(connect()),
                EventKind::DnsPacket => Record::DnsPacket(dns()),
            };
            let bytes = match &expected {
                Record::Connect(e) => record_bytes(e),
                Record::DnsPacket(e) => record_bytes(e),
            };
            assert_eq!(bytes.len(), kind.record_size());
            assert_eq!(Record::read(bytes), Ok(expected), "{kind:?}");
            assert_eq!(Record::read(bytes).unwrap().header().kind, kind as u32);
        }
    }

    #[test]
    fn kind_ids_are_stable() {
        assert_eq!(EventKind::Connect as u32, 1);
        assert_eq!(EventKind::DnsPacket as u32, 2);
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_id(kind as u32), Some(kind));
        }
        assert_eq!(EventKind::from_id(0), None);
        assert_eq!(EventKind::from_id(3), None);
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        assert_eq!(Counter::ALL.len() as u32, Counter::COUNT);
    }

    #[test]
    fn malformed_records_are_rejected() {
        let e = connect();
        let bytes = record_bytes(&e);
        assert_eq!(
            Record::read(&bytes[..10]),
            Err(RecordError::TooShort { len: 10 })
        );
        assert_eq!(
            Record::read(&bytes[..60]),
            Err(RecordError::SizeMismatch {
                kind: EventKind::Connect,
                len: 60,
                expected: 72
            })
        );
        let mut unknown = [0u8; 72];
        unknown[..4].copy_from_slice(&99u32.to_ne_bytes());
        assert_eq!(
            Record::read(&unknown),
            Err(RecordError::UnknownKind { id: 99 })
        );
    }
}
