//! Stage 3, decode: kernel records -> [`Observation`]s.
//!
//! Pure: bytes in, typed facts out. DNS payloads are parsed with hickory-proto
//! section by section, so a capture cut short at 512 bytes still yields its
//! header, question and whatever answers fit. Anything that does not parse is
//! reported as a [`DecodeError`] for the caller to count; nothing here panics
//! on input.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use hickory_proto::{
    op::{Header, MessageType, OpCode, Query, ResponseCode},
    rr::{RData, Record as DnsRecord},
    serialize::binary::{BinDecodable, BinDecoder},
};
use observer_common::{
    AF_INET, AF_INET6, COMM_LEN, ConnectEvent, DIRECTION_EGRESS, DnsPacketEvent, EventHeader,
    ExecEvent, OP_SENDMSG, Record, RecordError, SockStateEvent, TCP_CLOSE, TCP_ESTABLISHED,
    TaskEvent, TcpPayloadEvent,
};

/// A task's comm as the kernel gave it: NUL-padded bytes. It stays bytes on
/// the per-event path (every connect() on the machine is decoded) and becomes
/// text only for the few events that turn out to be registry attempts.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Comm([u8; COMM_LEN]);

impl Comm {
    pub fn to_text(&self) -> String {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        String::from_utf8_lossy(&self.0[..len]).into_owned()
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_text())
    }
}

/// As the kernel does, keeps at most COMM_LEN - 1 bytes.
impl From<&str> for Comm {
    fn from(text: &str) -> Comm {
        let mut bytes = [0u8; COMM_LEN];
        let len = text.len().min(COMM_LEN - 1);
        bytes[..len].copy_from_slice(&text.as_bytes()[..len]);
        Comm(bytes)
    }
}

impl PartialEq<&str> for Comm {
    fn eq(&self, other: &&str) -> bool {
        *self == Comm::from(*other)
    }
}

/// Who acted, as the kernel saw it at the hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// 0 when the hook ran outside the owning task (packet ingress).
    pub tgid: u32,
    pub tid: u32,
    pub uid: Option<u32>,
    pub comm: Comm,
    pub cgroup_id: u64,
    /// CLOCK_BOOTTIME nanoseconds.
    pub boot_ns: u64,
}

impl Actor {
    fn from_header(header: &EventHeader) -> Actor {
        Actor {
            tgid: header.tgid,
            tid: header.tid,
            uid: (header.uid != u32::MAX).then_some(header.uid),
            comm: Comm(header.comm),
            cgroup_id: header.cgroup_id,
            boot_ns: header.boot_ns,
        }
    }
}

/// How a TCP connection attempt ended, from the socket's state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConnectOutcome {
    Established,
    /// The peer answered with a reset (ECONNREFUSED).
    Refused,
    /// No answer (ETIMEDOUT).
    TimedOut,
    /// No route (EHOSTUNREACH, ENETUNREACH).
    Unreachable,
    /// Closed before completion without an error (the caller gave up).
    Aborted,
    /// Any other error, by errno.
    Error(u32),
}

impl ConnectOutcome {
    pub fn from_state(new_state: u16, sk_err: u32) -> Option<ConnectOutcome> {
        match (new_state, sk_err) {
            (TCP_ESTABLISHED, _) => Some(ConnectOutcome::Established),
            (TCP_CLOSE, 0) => Some(ConnectOutcome::Aborted),
            (TCP_CLOSE, err) if err == libc::ECONNREFUSED as u32 => Some(ConnectOutcome::Refused),
            (TCP_CLOSE, err) if err == libc::ETIMEDOUT as u32 => Some(ConnectOutcome::TimedOut),
            (TCP_CLOSE, err)
                if err == libc::EHOSTUNREACH as u32 || err == libc::ENETUNREACH as u32 =>
            {
                Some(ConnectOutcome::Unreachable)
            }
            (TCP_CLOSE, err) => Some(ConnectOutcome::Error(err)),
            _ => None,
        }
    }

    /// The name used in the report's `outcomes` counts.
    pub fn name(self) -> String {
        match self {
            ConnectOutcome::Established => "established".into(),
            ConnectOutcome::Refused => "refused".into(),
            ConnectOutcome::TimedOut => "timed_out".into(),
            ConnectOutcome::Unreachable => "unreachable".into(),
            ConnectOutcome::Aborted => "aborted".into(),
            ConnectOutcome::Error(errno) => format!("error_{errno}"),
        }
    }
}

/// One fact decoded from one kernel record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// A process called connect(), or sendto()/sendmsg() with an address
    /// on an unconnected UDP socket (`sendmsg`).
    Connect {
        actor: Actor,
        dest: IpAddr,
        port: u16,
        protocol: u32,
        cookie: u64,
        sendmsg: bool,
    },
    /// A process image was replaced by execve().
    Exec {
        actor: Actor,
        ppid: u32,
        /// CLOCK_BOOTTIME ns when the process started (fork time).
        start_ns: u64,
        /// The path execve() was given; None when the kernel could not
        /// read it.
        filename: Option<String>,
        /// argv as far as captured; None when unread.
        argv: Option<Vec<String>>,
    },
    /// A process forked a new process (header = the parent).
    Fork {
        actor: Actor,
        child_tgid: u32,
        child_start_ns: u64,
    },
    /// A process ended.
    Exit { actor: Actor, start_ns: u64 },
    /// A payload segment at the start of a TCP connection. The actor has no
    /// task (packets are sent from softirq too); the cookie names the
    /// connection.
    TcpPayload {
        actor: Actor,
        cookie: u64,
        egress: bool,
        src: SocketAddr,
        dst: SocketAddr,
        seq: u32,
        wire_len: u32,
        bytes: Vec<u8>,
    },
    /// A TCP connection attempt ended.
    ConnectDone {
        actor: Actor,
        cookie: u64,
        outcome: ConnectOutcome,
    },
    /// A process sent a DNS query.
    DnsQuery {
        actor: Actor,
        /// Lower-case, without the trailing dot.
        name: String,
        qtype: String,
        server: IpAddr,
        /// Sent over TCP (reassembled by the connection stage).
        over_tcp: bool,
    },
    /// Derived by the connection stage: a TLS ClientHello named a server.
    TlsHello {
        actor: Actor,
        cookie: u64,
        dest: SocketAddr,
        /// Lower-case server name (SNI).
        sni: String,
    },
    /// Derived by the connection stage: an HTTP proxy was asked to
    /// `CONNECT host:port`; `proxy` is where the connection went.
    ProxyConnect {
        actor: Actor,
        cookie: u64,
        proxy: SocketAddr,
        /// Lower-case name, or an IP address.
        host: String,
        port: u16,
    },
    /// Derived by the connection stage: a plain HTTP request named a host
    /// (absolute-form target or Host header).
    HttpRequest {
        actor: Actor,
        cookie: u64,
        dest: SocketAddr,
        host: String,
    },
    /// A DNS response arrived for a local socket.
    DnsResponse {
        actor: Actor,
        name: String,
        rcode: ResponseCode,
        /// CNAME targets in answer order: the names the question is an
        /// alias of (lower-case, no trailing dot).
        aliases: Vec<String>,
        /// Addresses from A/AAAA records, with their TTLs in seconds.
        addresses: Vec<(IpAddr, u32)>,
    },
}

impl Observation {
    pub fn actor(&self) -> &Actor {
        match self {
            Observation::Connect { actor, .. }
            | Observation::Exec { actor, .. }
            | Observation::Fork { actor, .. }
            | Observation::Exit { actor, .. }
            | Observation::TcpPayload { actor, .. }
            | Observation::ConnectDone { actor, .. }
            | Observation::TlsHello { actor, .. }
            | Observation::ProxyConnect { actor, .. }
            | Observation::HttpRequest { actor, .. }
            | Observation::DnsQuery { actor, .. }
            | Observation::DnsResponse { actor, .. } => actor,
        }
    }
}

/// Why a record produced no observation.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("malformed ring-buffer record: {0:?}")]
    Record(RecordError),
    #[error("unsupported address family {0}")]
    Family(u16),
    #[error("malformed DNS message: {0}")]
    Dns(String),
}

impl DecodeError {
    /// The counter this error is reported under in the report.
    pub fn parser(&self) -> &'static str {
        match self {
            DecodeError::Record(_) | DecodeError::Family(_) => "record",
            DecodeError::Dns(_) => "dns",
        }
    }
}

/// Decodes one raw ring-buffer record. `Ok(None)` means a well-formed record
/// that carries nothing of interest (a DNS message that is neither a standard
/// query nor its response, or a query without a question).
pub fn decode(bytes: &[u8]) -> Result<Option<Observation>, DecodeError> {
    match Record::read(bytes).map_err(DecodeError::Record)? {
        Record::Connect(event) => decode_connect(&event).map(Some),
        Record::DnsPacket(event) => decode_dns(&event),
        Record::Exec(event) => Ok(Some(decode_exec(&event))),
        Record::Fork(event) => Ok(Some(Observation::Fork {
            actor: Actor::from_header(&event.header),
            child_tgid: event.tgid,
            child_start_ns: event.start_ns,
        })),
        Record::Exit(TaskEvent {
            header, start_ns, ..
        }) => Ok(Some(Observation::Exit {
            actor: Actor::from_header(&header),
            start_ns,
        })),
        Record::TcpPayload(event) => decode_tcp(&event).map(Some),
        Record::SockState(event) => Ok(decode_state(&event)),
    }
}

fn decode_connect(event: &ConnectEvent) -> Result<Observation, DecodeError> {
    Ok(Observation::Connect {
        actor: Actor::from_header(&event.header),
        dest: ip_from_wire(event.family, &event.addr)?,
        port: event.port,
        protocol: event.protocol,
        cookie: event.cookie,
        sendmsg: event.op == OP_SENDMSG,
    })
}

fn decode_exec(event: &ExecEvent) -> Observation {
    let filename_len = (event.filename_len as usize).min(event.filename.len());
    let args_len = (event.args_len as usize).min(event.args.len());
    Observation::Exec {
        actor: Actor::from_header(&event.header),
        ppid: event.ppid,
        start_ns: event.start_ns,
        filename: (filename_len > 0)
            .then(|| String::from_utf8_lossy(&event.filename[..filename_len]).into_owned()),
        argv: (args_len > 0).then(|| split_args(&event.args[..args_len])),
    }
}

/// argv as NUL-separated bytes, possibly cut inside the last argument.
pub fn split_args(bytes: &[u8]) -> Vec<String> {
    let trimmed = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    trimmed
        .split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

fn decode_tcp(event: &TcpPayloadEvent) -> Result<Observation, DecodeError> {
    let captured = (event.captured_len as usize).min(event.payload.len());
    Ok(Observation::TcpPayload {
        actor: Actor::from_header(&event.header),
        cookie: event.cookie,
        egress: event.direction == DIRECTION_EGRESS,
        src: SocketAddr::new(ip_from_wire(event.family, &event.src_addr)?, event.src_port),
        dst: SocketAddr::new(ip_from_wire(event.family, &event.dst_addr)?, event.dst_port),
        seq: event.seq,
        wire_len: event.wire_len,
        bytes: event.payload[..captured].to_vec(),
    })
}

fn decode_state(event: &SockStateEvent) -> Option<Observation> {
    Some(Observation::ConnectDone {
        actor: Actor::from_header(&event.header),
        cookie: event.cookie,
        outcome: ConnectOutcome::from_state(event.new_state, event.sk_err)?,
    })
}

/// Addresses arrive as 16 bytes in network order; IPv4 uses the first four.
/// IPv4-mapped IPv6 destinations (`::ffff:a.b.c.d`, dual-stack sockets) are
/// reported as the IPv4 address they reach.
fn ip_from_wire(family: u16, addr: &[u8; 16]) -> Result<IpAddr, DecodeError> {
    match family {
        AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(
            addr[0], addr[1], addr[2], addr[3],
        ))),
        AF_INET6 => {
            let v6 = Ipv6Addr::from(*addr);
            Ok(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        other => Err(DecodeError::Family(other)),
    }
}

fn decode_dns(event: &DnsPacketEvent) -> Result<Option<Observation>, DecodeError> {
    let captured = (event.captured_len as usize).min(event.payload.len());
    decode_dns_message(
        &event.payload[..captured],
        Actor::from_header(&event.header),
        event.direction == DIRECTION_EGRESS,
        ip_from_wire(event.family, &event.dst_addr)?,
        false,
    )
}

/// One DNS message, from a UDP datagram or reassembled from a TCP stream
/// (length prefix removed). `server` is the destination of a query.
pub fn decode_dns_message(
    payload: &[u8],
    actor: Actor,
    egress: bool,
    server: IpAddr,
    over_tcp: bool,
) -> Result<Option<Observation>, DecodeError> {
    let message = parse_dns(payload)?;
    let Some(name) = message.question_name else {
        return Ok(None);
    };
    let observation = match message.header.metadata.message_type {
        MessageType::Query if egress => Observation::DnsQuery {
            actor,
            name,
            qtype: message.question_type,
            server,
            over_tcp,
        },
        MessageType::Response if !egress => Observation::DnsResponse {
            actor,
            name,
            rcode: message.header.metadata.response_code,
            aliases: message.aliases,
            addresses: message.addresses,
        },
        // A server's own traffic, or a response leaving a local resolver:
        // not a client's lookup.
        _ => return Ok(None),
    };
    Ok(Some(observation))
}

/// The parts of a DNS message this stage uses.
#[derive(Debug)]
struct DnsMessage {
    header: Header,
    question_name: Option<String>,
    question_type: String,
    aliases: Vec<String>,
    addresses: Vec<(IpAddr, u32)>,
}

/// Parses header and first question strictly (an error means the payload is
/// not DNS), then answers leniently: a capture cut at 512 bytes ends inside
/// the answer section, and the answers read before the cut are still true.
fn parse_dns(payload: &[u8]) -> Result<DnsMessage, DecodeError> {
    let dns_error = |e: &dyn std::fmt::Display| DecodeError::Dns(e.to_string());
    let mut decoder = BinDecoder::new(payload);
    let header = Header::read(&mut decoder).map_err(|e| dns_error(&e))?;
    if header.metadata.op_code != OpCode::Query || header.counts.queries == 0 {
        return Ok(DnsMessage {
            header,
            question_name: None,
            question_type: String::new(),
            aliases: Vec::new(),
            addresses: Vec::new(),
        });
    }
    let query = Query::read(&mut decoder).map_err(|e| dns_error(&e))?;
    // Further questions are practically never sent (RFC 9619); skip them so
    // the decoder reaches the answers.
    for _ in 1..header.counts.queries {
        Query::read(&mut decoder).map_err(|e| dns_error(&e))?;
    }
    let mut addresses = Vec::new();
    let mut aliases = Vec::new();
    if header.metadata.message_type == MessageType::Response {
        for _ in 0..header.counts.answers {
            let Ok(record) = DnsRecord::read(&mut decoder) else {
                break;
            };
            match &record.data {
                RData::A(a) => addresses.push((IpAddr::V4(a.0), record.ttl)),
                RData::AAAA(aaaa) => addresses.push((IpAddr::V6(aaaa.0), record.ttl)),
                // The addresses at the end of a chain belong to the question
                // name and to every alias on the way; classify picks the
                // first name of the chain the catalog knows.
                RData::CNAME(target) => aliases.push(normalize_name(&target.0.to_ascii())),
                _ => {}
            }
        }
    }
    Ok(DnsMessage {
        header,
        question_name: Some(normalize_name(&query.name().to_ascii())),
        question_type: query.query_type().to_string(),
        aliases,
        addresses,
    })
}

/// The report's name for a failed DNS answer (RFC 1035 §4.1.1 and RFC 6895
/// mnemonics, lower-case).
pub fn dns_outcome_name(rcode: ResponseCode) -> String {
    match rcode {
        ResponseCode::NXDomain => "dns_nxdomain".into(),
        ResponseCode::ServFail => "dns_servfail".into(),
        ResponseCode::Refused => "dns_refused".into(),
        ResponseCode::FormErr => "dns_formerr".into(),
        ResponseCode::NotImp => "dns_notimp".into(),
        other => format!("dns_rcode_{}", u16::from(other)),
    }
}

/// Host names are compared lower-case and without the root dot.
pub fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::{Message, MessageType, OpCode, Query},
        rr::{Name, RData, Record as DnsRecord, RecordType, rdata},
        serialize::binary::BinEncodable,
    };
    use observer_common::{DIRECTION_INGRESS, DNS_CAPTURE_LEN, EventKind, record_bytes};

    use super::*;

    fn header(kind: EventKind) -> EventHeader {
        let mut comm = [0u8; COMM_LEN];
        comm[..6].copy_from_slice(b"skopeo");
        EventHeader {
            kind: kind as u32,
            tgid: 77,
            tid: 78,
            uid: 0,
            boot_ns: 5,
            cgroup_id: 9,
            comm,
        }
    }

    fn dns_event(direction: u16, payload: &[u8], wire_len: usize) -> DnsPacketEvent {
        let mut buf = [0u8; DNS_CAPTURE_LEN];
        let n = payload.len().min(DNS_CAPTURE_LEN);
        buf[..n].copy_from_slice(&payload[..n]);
        let mut server = [0u8; 16];
        server[..4].copy_from_slice(&[198, 18, 0, 1]);
        DnsPacketEvent {
            header: header(EventKind::DnsPacket),
            direction,
            family: AF_INET,
            wire_len: wire_len as u32,
            captured_len: n as u32,
            src_port: if direction == DIRECTION_EGRESS {
                40000
            } else {
                53
            },
            dst_port: if direction == DIRECTION_EGRESS {
                53
            } else {
                40000
            },
            src_addr: [0; 16],
            dst_addr: server,
            payload: buf,
        }
    }

    fn query_bytes(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        message.to_bytes().unwrap()
    }

    fn response_bytes(name: &str, answers: usize) -> Vec<u8> {
        let owner = Name::from_ascii(name).unwrap();
        let mut message = Message::new(0x1234, MessageType::Response, OpCode::Query);
        message.add_query(Query::query(owner.clone(), RecordType::A));
        for i in 0..answers {
            let ip = Ipv4Addr::new(198, 18, (i / 250) as u8, (i % 250) as u8 + 1);
            message.add_answer(DnsRecord::from_rdata(
                owner.clone(),
                30,
                RData::A(rdata::A(ip)),
            ));
        }
        message.to_bytes().unwrap()
    }

    #[test]
    fn query_yields_name_type_and_server() {
        let bytes = query_bytes("Quay.IO.", RecordType::AAAA);
        let event = dns_event(DIRECTION_EGRESS, &bytes, bytes.len());
        let Some(Observation::DnsQuery {
            actor,
            name,
            qtype,
            server,
            over_tcp: false,
        }) = decode(record_bytes(&event)).unwrap()
        else {
            panic!("not a query");
        };
        assert_eq!(name, "quay.io");
        assert_eq!(qtype, "AAAA");
        assert_eq!(server, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(actor.comm, "skopeo");
        assert_eq!((actor.tgid, actor.tid, actor.cgroup_id), (77, 78, 9));
    }

    #[test]
    fn response_yields_addresses_with_ttl() {
        let bytes = response_bytes("quay.io.", 2);
        let event = dns_event(DIRECTION_INGRESS, &bytes, bytes.len());
        let Some(Observation::DnsResponse {
            name,
            rcode,
            addresses,
            ..
        }) = decode(record_bytes(&event)).unwrap()
        else {
            panic!("not a response");
        };
        assert_eq!(name, "quay.io");
        assert_eq!(rcode, ResponseCode::NoError);
        assert_eq!(
            addresses,
            vec![
                (IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)), 30),
                (IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)), 30)
            ]
        );
    }

    #[test]
    fn truncated_response_keeps_the_answers_that_fit() {
        // ~40 answers do not fit in the 512 captured bytes.
        let bytes = response_bytes("quay.io.", 40);
        assert!(bytes.len() > DNS_CAPTURE_LEN);
        let event = dns_event(DIRECTION_INGRESS, &bytes, bytes.len());
        let Some(Observation::DnsResponse { addresses, .. }) =
            decode(record_bytes(&event)).unwrap()
        else {
            panic!("not a response");
        };
        assert!(
            addresses.len() > 10 && addresses.len() < 40,
            "{}",
            addresses.len()
        );
    }

    #[test]
    fn direction_must_match_message_type() {
        // A response leaving the machine is a local DNS server answering.
        let bytes = response_bytes("quay.io.", 1);
        let event = dns_event(DIRECTION_EGRESS, &bytes, bytes.len());
        assert_eq!(decode(record_bytes(&event)).unwrap(), None);
    }

    #[test]
    fn garbage_and_adversarial_payloads_are_errors_not_panics() {
        // Not DNS queries at all (opcode 15): well-formed enough to say so.
        for payload in [vec![0xff; 12], vec![0xff; 512]] {
            let event = dns_event(DIRECTION_EGRESS, &payload, payload.len());
            assert_eq!(decode(record_bytes(&event)), Ok(None));
        }
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x12],
            // A query header that promises a question and stops.
            vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0],
        ];
        // Header claims one question whose name is a compression pointer to
        // itself: a loop.
        let mut looped = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        looped.extend_from_slice(&[0xc0, 12, 0x00, 0x01, 0x00, 0x01]);
        cases.push(looped);
        // A forward pointer past the end of the message.
        let mut forward = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        forward.extend_from_slice(&[0xc0, 200, 0x00, 0x01, 0x00, 0x01]);
        cases.push(forward);
        // A name longer than 255 bytes: 5 labels of 63.
        let mut long = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.extend_from_slice(&[0, 0x00, 0x01, 0x00, 0x01]);
        cases.push(long);
        for payload in cases {
            let event = dns_event(DIRECTION_EGRESS, &payload, payload.len());
            match decode(record_bytes(&event)) {
                Err(DecodeError::Dns(_)) => {}
                other => panic!("{payload:02x?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn comm_becomes_text_only_on_demand() {
        // The kernel fills all 16 bytes only with a terminating NUL; a full
        // buffer without one must still read safely.
        let full = Comm(*b"0123456789abcdef");
        assert_eq!(full.to_text(), "0123456789abcdef");
        assert_eq!(Comm::from("isc-net-0000").to_text(), "isc-net-0000");
        assert_eq!(
            Comm::from("a-very-long-thread-name").to_text(),
            "a-very-long-thr"
        );
        assert_eq!(format!("{:?}", Comm::from("dig")), "\"dig\"");
        assert!(Comm::from("dig") == "dig" && Comm::from("dig") != "dug");
    }

    #[test]
    fn connect_maps_v4_mapped_v6_to_v4() {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12..].copy_from_slice(&[198, 18, 0, 1]);
        let event = ConnectEvent {
            header: header(EventKind::Connect),
            family: AF_INET6,
            port: 443,
            protocol: 6,
            addr,
            cookie: 1,
            op: 0,
            _pad: 0,
        };
        let Some(Observation::Connect { dest, port, .. }) = decode(record_bytes(&event)).unwrap()
        else {
            panic!("not a connect");
        };
        assert_eq!(dest, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(port, 443);
    }

    #[test]
    fn unknown_family_and_bad_sizes_are_errors() {
        let mut event = ConnectEvent {
            header: header(EventKind::Connect),
            family: 1,
            port: 1,
            protocol: 6,
            addr: [0; 16],
            cookie: 1,
            op: 0,
            _pad: 0,
        };
        assert_eq!(decode(record_bytes(&event)), Err(DecodeError::Family(1)));
        event.family = AF_INET;
        let bytes = record_bytes(&event);
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Record(_))
        ));
    }
}
