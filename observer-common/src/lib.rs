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

use bytemuck::{Pod, Zeroable};

/// Length of `task_struct::comm` (include/linux/sched.h, TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;

/// Bytes of a DNS message captured per packet. 512 is the classic UDP DNS
/// limit (RFC 1035 §4.2.1): queries essentially always fit.
pub const DNS_CAPTURE_LEN: usize = 512;

/// Bytes of TCP payload captured per segment: a whole Ethernet-sized segment,
/// so a ClientHello split over two segments is captured in full.
pub const TCP_CAPTURE_LEN: usize = 2048;

/// Payload segments captured per new TCP connection and direction: a
/// ClientHello, CONNECT request or DNS message fits in far fewer.
pub const TCP_SEGMENTS_PER_CONNECTION: u8 = 4;

/// Bytes of the executable path captured at exec (PATH_MAX is 4096; real
/// paths are short and a cut one is still recognizable).
pub const FILENAME_CAPTURE_LEN: usize = 256;

/// Bytes of argv captured at exec, NUL-separated as in /proc/PID/cmdline.
pub const ARGS_CAPTURE_LEN: usize = 1024;

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
    /// A process image was replaced by execve (tp_btf/sched_process_exec).
    Exec = 3,
    /// A new process (not a thread) was forked (tp_btf/sched_process_fork).
    Fork = 4,
    /// A process's leader thread exited (tp_btf/sched_process_exit).
    Exit = 5,
    /// A payload segment at the start of a new TCP connection (cgroup_skb).
    TcpPayload = 6,
    /// A TCP connection left SYN_SENT (tp_btf/inet_sock_set_state).
    SockState = 7,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::Connect,
        EventKind::DnsPacket,
        EventKind::Exec,
        EventKind::Fork,
        EventKind::Exit,
        EventKind::TcpPayload,
        EventKind::SockState,
    ];

    pub const fn from_id(id: u32) -> Option<Self> {
        match id {
            1 => Some(EventKind::Connect),
            2 => Some(EventKind::DnsPacket),
            3 => Some(EventKind::Exec),
            4 => Some(EventKind::Fork),
            5 => Some(EventKind::Exit),
            6 => Some(EventKind::TcpPayload),
            7 => Some(EventKind::SockState),
            _ => None,
        }
    }

    /// The exact size of this kind's record in the ring buffer.
    pub const fn record_size(self) -> usize {
        match self {
            EventKind::Connect => size_of::<ConnectEvent>(),
            EventKind::DnsPacket => size_of::<DnsPacketEvent>(),
            EventKind::Exec => size_of::<ExecEvent>(),
            EventKind::Fork | EventKind::Exit => size_of::<TaskEvent>(),
            EventKind::TcpPayload => size_of::<TcpPayloadEvent>(),
            EventKind::SockState => size_of::<SockStateEvent>(),
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Connect => "connect",
            EventKind::DnsPacket => "dns_packet",
            EventKind::Exec => "exec",
            EventKind::Fork => "fork",
            EventKind::Exit => "exit",
            EventKind::TcpPayload => "tcp_payload",
            EventKind::SockState => "sock_state",
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
    /// Reserve failed for an exec, fork or exit event: lineage lost.
    ProcessReserveFailed = 4,
    /// argv or the file name could not be read at exec: the event went out
    /// without them (user space falls back to /proc).
    ExecArgsMissing = 5,
    /// Reserve failed for a TCP payload segment: lost.
    TcpReserveFailed = 6,
    /// `bpf_skb_load_bytes` failed for a TCP payload segment: lost.
    TcpLoadFailed = 7,
    /// A TCP segment longer than [`TCP_CAPTURE_LEN`]: captured, cut short.
    TcpTruncated = 8,
    /// Reserve failed for a connection state change: outcome lost.
    StateReserveFailed = 9,
    /// A new TCP connection could not be entered in the capture table: its
    /// first bytes (SNI, CONNECT) are not captured.
    TcpTrackFailed = 10,
    /// A DNS query on a kernel whose packet programs cannot ask for the
    /// current task, from a socket whose owner was not learnt at
    /// connect()/sendmsg() (it was connected before the agent started): it
    /// went out without pid and command, attributed by its cgroup alone.
    DnsSenderUnknown = 11,
}

impl Counter {
    pub const COUNT: u32 = 12;
    pub const ALL: [Counter; 12] = [
        Counter::ConnectReserveFailed,
        Counter::DnsReserveFailed,
        Counter::DnsLoadFailed,
        Counter::DnsTruncated,
        Counter::ProcessReserveFailed,
        Counter::ExecArgsMissing,
        Counter::TcpReserveFailed,
        Counter::TcpLoadFailed,
        Counter::TcpTruncated,
        Counter::StateReserveFailed,
        Counter::TcpTrackFailed,
        Counter::DnsSenderUnknown,
    ];

    /// True when this counter counts events that never reached user space.
    /// The others count events that arrived incomplete.
    pub const fn is_loss(self) -> bool {
        !matches!(
            self,
            Counter::DnsTruncated
                | Counter::ExecArgsMissing
                | Counter::TcpTruncated
                | Counter::DnsSenderUnknown
        )
    }

    pub const fn name(self) -> &'static str {
        match self {
            Counter::ConnectReserveFailed => "connect_reserve_failed",
            Counter::DnsReserveFailed => "dns_reserve_failed",
            Counter::DnsLoadFailed => "dns_load_failed",
            Counter::DnsTruncated => "dns_truncated",
            Counter::ProcessReserveFailed => "process_reserve_failed",
            Counter::ExecArgsMissing => "exec_args_missing",
            Counter::TcpReserveFailed => "tcp_reserve_failed",
            Counter::TcpLoadFailed => "tcp_load_failed",
            Counter::TcpTruncated => "tcp_truncated",
            Counter::StateReserveFailed => "state_reserve_failed",
            Counter::TcpTrackFailed => "tcp_track_failed",
            Counter::DnsSenderUnknown => "dns_sender_unknown",
        }
    }
}

/// Every kernel program, by the name the loader knows it under. A program's
/// index here is its bit in the loader's test-only refusal mask
/// (`REFUSE_PROGRAMS`): a program whose bit is set takes a path the
/// verifier rejects, so tests can watch the agent survive a real refusal.
pub const PROGRAMS: [&str; 10] = [
    "connect4",
    "connect6",
    "sendmsg4",
    "sendmsg6",
    "skb_egress",
    "skb_ingress",
    "process_exec",
    "process_fork",
    "process_exit",
    "sock_state",
];

/// The index of `name` in [`PROGRAMS`] (usable in constants: the kernel
/// programs name their own bit with it).
pub const fn program_index(name: &str) -> u32 {
    let mut i = 0;
    while i < PROGRAMS.len() {
        if const_str_eq(PROGRAMS[i], name) {
            return i as u32;
        }
        i += 1;
    }
    panic!("not a program in PROGRAMS")
}

const fn const_str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// What the connect and sendmsg hooks remember of a DNS socket's owner, by
/// socket cookie, for packet programs on kernels that do not let them ask
/// for the current task (cgroup_skb may call `bpf_get_current_pid_tgid`
/// only on newer kernels).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct SocketOwner {
    pub pid_tgid: u64,
    pub uid: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}

/// [`ConnectEvent::op`]: which hook saw the destination.
pub const OP_CONNECT: u32 = 0;
/// sendto()/sendmsg() with an address on an unconnected UDP socket.
pub const OP_SENDMSG: u32 = 1;

/// TCP states as the kernel numbers them (include/net/tcp_states.h).
pub const TCP_ESTABLISHED: u16 = 1;
pub const TCP_SYN_SENT: u16 = 2;
pub const TCP_CLOSE: u16 = 7;

/// Offsets of the kernel struct fields the tracing programs read, found by
/// the agent in the running kernel's BTF (/sys/kernel/btf/vmlinux) and set as
/// a global at load time: layouts differ between kernel builds, and aya's
/// Rust programs cannot use CO-RE relocations. `valid == 0` turns the lineage
/// and outcome programs into no-ops.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct KernelOffsets {
    pub valid: u32,
    /// task_struct.pid, .tgid, .real_parent, .start_boottime, .mm
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_start_boottime: u32,
    pub task_mm: u32,
    /// mm_struct.arg_start, .arg_end
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    /// linux_binprm.filename
    pub binprm_filename: u32,
    /// sock.sk_err
    pub sock_err: u32,
    /// sock.__sk_common.skc_cookie (`sk_cookie`)
    pub sock_cookie: u32,
}

/// Direction of a captured DNS packet, seen from the local socket.
pub const DIRECTION_EGRESS: u16 = 0;
pub const DIRECTION_INGRESS: u16 = 1;

/// Fields every event starts with.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
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
    /// The socket's cookie: joins this call to the connection's payload and
    /// state events, which run outside the process.
    pub cookie: u64,
    /// [`OP_CONNECT`] or [`OP_SENDMSG`].
    pub op: u32,
    pub _pad: u32,
}

/// A UDP datagram to (egress) or from (ingress) port 53, with the start of
/// its payload.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
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

/// execve() of a new image, raised in the task itself after the exec
/// succeeded; the header's comm is the new one.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// tgid of the real parent.
    pub ppid: u32,
    pub _pad: u32,
    /// task_struct.start_boottime (ns of CLOCK_BOOTTIME): with the tgid, the
    /// process identity /proc/PID/stat's starttime field gives.
    pub start_ns: u64,
    /// Bytes of `filename` that hold data, without the NUL; 0 if unread.
    pub filename_len: u32,
    /// Bytes of `args` that hold data; 0 if unread.
    pub args_len: u32,
    /// The path execve() was given.
    pub filename: [u8; FILENAME_CAPTURE_LEN],
    /// argv, NUL-separated, cut at [`ARGS_CAPTURE_LEN`].
    pub args: [u8; ARGS_CAPTURE_LEN],
}

/// Fork of a new process ([`EventKind::Fork`], header = the parent) or exit
/// of a process ([`EventKind::Exit`], header = the exiting process).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct TaskEvent {
    pub header: EventHeader,
    /// Fork: the child's tgid. Exit: the exiting tgid.
    pub tgid: u32,
    pub _pad: u32,
    /// start_boottime of the process named by `tgid`.
    pub start_ns: u64,
}

/// One payload segment at the start of a TCP connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct TcpPayloadEvent {
    pub header: EventHeader,
    pub cookie: u64,
    /// [`DIRECTION_EGRESS`] or [`DIRECTION_INGRESS`].
    pub direction: u16,
    pub family: u16,
    /// Ports in host byte order.
    pub src_port: u16,
    pub dst_port: u16,
    /// TCP sequence number of the segment's first payload byte.
    pub seq: u32,
    /// Payload bytes in the segment.
    pub wire_len: u32,
    /// Bytes of `payload` that hold data.
    pub captured_len: u32,
    pub _pad: u32,
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub payload: [u8; TCP_CAPTURE_LEN],
}

/// A TCP connection left SYN_SENT: established, or closed with `sk_err`
/// (ECONNREFUSED after a reset, ETIMEDOUT, ...).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct SockStateEvent {
    pub header: EventHeader,
    pub cookie: u64,
    pub old_state: u16,
    pub new_state: u16,
    /// The socket's pending error (an errno), 0 for none.
    pub sk_err: u32,
}

// Layout guards: a failure here means a field change added implicit padding or
// moved a field; fix the struct (explicit `_pad` fields), never the assert.
const _: () = {
    assert!(size_of::<EventHeader>() == 48);
    assert!(offset_of!(EventHeader, boot_ns) == 16);
    assert!(offset_of!(EventHeader, cgroup_id) == 24);
    assert!(offset_of!(EventHeader, comm) == 32);

    assert!(size_of::<ConnectEvent>() == 88);
    assert!(offset_of!(ConnectEvent, cookie) == 72);
    assert!(offset_of!(ConnectEvent, op) == 80);
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

    assert!(size_of::<ExecEvent>() == 72 + FILENAME_CAPTURE_LEN + ARGS_CAPTURE_LEN);
    assert!(offset_of!(ExecEvent, start_ns) == 56);
    assert!(offset_of!(ExecEvent, filename) == 72);
    assert!(size_of::<TaskEvent>() == 64);
    assert!(offset_of!(TaskEvent, start_ns) == 56);
    assert!(size_of::<TcpPayloadEvent>() == 112 + TCP_CAPTURE_LEN);
    assert!(offset_of!(TcpPayloadEvent, seq) == 64);
    assert!(offset_of!(TcpPayloadEvent, src_addr) == 80);
    assert!(offset_of!(TcpPayloadEvent, payload) == 112);
    assert!(size_of::<SockStateEvent>() == 64);
    assert!(offset_of!(SockStateEvent, sk_err) == 60);
    assert!(size_of::<KernelOffsets>() == 44);
    assert!(size_of::<SocketOwner>() == 32);

    // The kernel reserves ring-buffer records at 8-byte alignment.
    assert!(size_of::<ConnectEvent>().is_multiple_of(8));
    assert!(size_of::<DnsPacketEvent>().is_multiple_of(8));
    assert!(size_of::<ExecEvent>().is_multiple_of(8));
    assert!(size_of::<TaskEvent>().is_multiple_of(8));
    assert!(size_of::<TcpPayloadEvent>().is_multiple_of(8));
    assert!(size_of::<SockStateEvent>().is_multiple_of(8));
};

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: plain-old-data with no implicit padding (asserted above), valid
    // for every bit pattern.
    unsafe impl aya::Pod for EventHeader {}
    unsafe impl aya::Pod for ConnectEvent {}
    unsafe impl aya::Pod for DnsPacketEvent {}
    unsafe impl aya::Pod for ExecEvent {}
    unsafe impl aya::Pod for TaskEvent {}
    unsafe impl aya::Pod for TcpPayloadEvent {}
    unsafe impl aya::Pod for SockStateEvent {}
    unsafe impl aya::Pod for KernelOffsets {}
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
    Exec(ExecEvent),
    Fork(TaskEvent),
    Exit(TaskEvent),
    TcpPayload(TcpPayloadEvent),
    SockState(SockStateEvent),
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
        // The length was checked against the kind's size; pod_read_unaligned
        // copes with the buffer's alignment.
        use bytemuck::pod_read_unaligned as read;
        Ok(match kind {
            EventKind::Connect => Record::Connect(read(bytes)),
            EventKind::DnsPacket => Record::DnsPacket(read(bytes)),
            EventKind::Exec => Record::Exec(read(bytes)),
            EventKind::Fork => Record::Fork(read(bytes)),
            EventKind::Exit => Record::Exit(read(bytes)),
            EventKind::TcpPayload => Record::TcpPayload(read(bytes)),
            EventKind::SockState => Record::SockState(read(bytes)),
        })
    }

    pub fn header(&self) -> &EventHeader {
        match self {
            Record::Connect(e) => &e.header,
            Record::DnsPacket(e) => &e.header,
            Record::Exec(e) => &e.header,
            Record::Fork(e) | Record::Exit(e) => &e.header,
            Record::TcpPayload(e) => &e.header,
            Record::SockState(e) => &e.header,
        }
    }

    /// The record's bytes, as the kernel laid them out.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Record::Connect(e) => record_bytes(e),
            Record::DnsPacket(e) => record_bytes(e),
            Record::Exec(e) => record_bytes(e),
            Record::Fork(e) | Record::Exit(e) => record_bytes(e),
            Record::TcpPayload(e) => record_bytes(e),
            Record::SockState(e) => record_bytes(e),
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
            cookie: 77,
            op: OP_CONNECT,
            _pad: 0,
        }
    }

    fn exec() -> ExecEvent {
        let mut filename = [0u8; FILENAME_CAPTURE_LEN];
        filename[..15].copy_from_slice(b"/usr/bin/skopeo");
        let mut args = [0u8; ARGS_CAPTURE_LEN];
        args[..15].copy_from_slice(b"skopeo\0inspect\0");
        ExecEvent {
            header: header(EventKind::Exec),
            ppid: 1,
            _pad: 0,
            start_ns: 5_000_000,
            filename_len: 15,
            args_len: 15,
            filename,
            args,
        }
    }

    fn task(kind: EventKind) -> TaskEvent {
        TaskEvent {
            header: header(kind),
            tgid: 5000,
            _pad: 0,
            start_ns: 6_000_000,
        }
    }

    fn tcp() -> TcpPayloadEvent {
        let mut payload = [0u8; TCP_CAPTURE_LEN];
        payload[..5].copy_from_slice(&[0x16, 3, 1, 2, 0]);
        TcpPayloadEvent {
            header: header(EventKind::TcpPayload),
            cookie: 77,
            direction: DIRECTION_EGRESS,
            family: AF_INET,
            src_port: 40000,
            dst_port: 443,
            seq: 1000,
            wire_len: 1448,
            captured_len: 1448,
            _pad: 0,
            src_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            payload,
        }
    }

    fn state() -> SockStateEvent {
        SockStateEvent {
            header: header(EventKind::SockState),
            cookie: 77,
            old_state: TCP_SYN_SENT,
            new_state: TCP_CLOSE,
            sk_err: 111,
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
                EventKind::Exec => Record::Exec(exec()),
                EventKind::Fork => Record::Fork(task(kind)),
                EventKind::Exit => Record::Exit(task(kind)),
                EventKind::TcpPayload => Record::TcpPayload(tcp()),
                EventKind::SockState => Record::SockState(state()),
            };
            let bytes = expected.bytes();
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
        assert_eq!(EventKind::from_id(8), None);
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
                expected: 88
            })
        );
        let mut unknown = [0u8; 88];
        unknown[..4].copy_from_slice(&99u32.to_ne_bytes());
        assert_eq!(
            Record::read(&unknown),
            Err(RecordError::UnknownKind { id: 99 })
        );
    }
}
