//! Stage 3b, join: TCP connections by socket cookie.
//!
//! The kernel reports a connection three ways, in separate events: the
//! connect() (in the process, with its identity), the first payload
//! segments (often sent from softirq, with no process), and the state change
//! that ends SYN_SENT. This stage keeps each connection's connect() actor and
//! destination by cookie, reassembles the first bytes of each direction
//! (TLS ClientHello, HTTP CONNECT/Host, DNS over TCP), and turns what they
//! say into observations carrying the connecting process. Pure: no I/O.

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
};

use observer_common::TCP_SEGMENTS_PER_CONNECTION;
use observer_report::observer::PayloadStats;

use crate::pipeline::{
    decode,
    decode::{Actor, ConnectOutcome, DecodeError, Observation},
    payload::{Mode, Progress, Segment, StreamAssembler, StreamFinding},
};

const DNS_PORT: u16 = 53;

/// Connections remembered at once. A connection is forgotten once its
/// streams are decided and its handshake outcome is known, or when it
/// failed; what stays are established connections that have not sent yet.
/// The first segments follow connect() within milliseconds, so this bounds
/// memory (~200 bytes each) without losing joins in practice; a segment of
/// an evicted connection is still joined by its packet's cgroup.
pub const MAX_CONNECTIONS: usize = 16_384;

struct Side {
    assembler: StreamAssembler,
    segments: u8,
}

impl Side {
    fn new(mode: Mode) -> Side {
        Side {
            assembler: StreamAssembler::new(mode),
            segments: 0,
        }
    }
}

struct Connection {
    actor: Actor,
    dest: SocketAddr,
    outcome: Option<ConnectOutcome>,
    egress: Side,
    /// Only DNS answers are wanted from servers.
    ingress: Option<Side>,
    /// Insertion order, for eviction.
    serial: u64,
}

impl Connection {
    /// Every wanted stream has given its finding.
    fn decided(&self) -> bool {
        self.egress.assembler.is_done()
            && self
                .ingress
                .as_ref()
                .is_none_or(|side| side.assembler.is_done())
    }
}

/// What one payload segment turned into.
#[derive(Debug, PartialEq)]
pub enum Joined {
    /// Nothing yet (or nothing of interest).
    Nothing,
    /// An observation on behalf of the connecting process.
    Observation(Observation),
    /// A DNS message that did not decode.
    DnsError(DecodeError),
}

pub struct Connections {
    by_cookie: HashMap<u64, Connection>,
    /// (cookie, serial) in insertion order, for O(1) eviction; entries whose
    /// connection was removed or replaced since are skipped.
    order: VecDeque<(u64, u64)>,
    max_connections: usize,
    next_serial: u64,
    stats: PayloadStats,
    /// Payload segments of connections the table no longer (or never) held.
    pub orphan_segments: u64,
    /// Connections removed once decided, with their handshake outcome:
    /// later segments of one (the TLS inside an HTTP CONNECT tunnel, the
    /// rest of a stream) are not orphans to parse afresh under the packet's
    /// actor, and the pipeline can still ask for the outcome of the
    /// connection whose segment just decided it. Bounded like the table.
    forgotten: HashMap<u64, Option<ConnectOutcome>>,
    forgotten_order: VecDeque<u64>,
}

impl Connections {
    pub fn new(max_connections: usize) -> Connections {
        Connections {
            by_cookie: HashMap::new(),
            order: VecDeque::new(),
            max_connections,
            next_serial: 0,
            stats: PayloadStats::default(),
            orphan_segments: 0,
            forgotten: HashMap::new(),
            forgotten_order: VecDeque::new(),
        }
    }

    pub fn stats(&self) -> &PayloadStats {
        &self.stats
    }

    /// A TCP connect(): remember who and where.
    pub fn opened(&mut self, cookie: u64, actor: &Actor, dest: SocketAddr) {
        if !self.by_cookie.contains_key(&cookie) && self.by_cookie.len() >= self.max_connections {
            self.evict_oldest();
        }
        self.next_serial += 1;
        self.order.push_back((cookie, self.next_serial));
        if self.order.len() > 2 * self.max_connections {
            // Mostly stale entries of connections already removed.
            let live = &self.by_cookie;
            self.order
                .retain(|(cookie, serial)| live.get(cookie).is_some_and(|c| c.serial == *serial));
        }
        let dns = dest.port() == DNS_PORT;
        let mode = if dns { Mode::DnsTcp } else { Mode::Auto };
        self.by_cookie.insert(
            cookie,
            Connection {
                actor: actor.clone(),
                dest,
                outcome: None,
                egress: Side::new(mode),
                ingress: dns.then(|| Side::new(Mode::DnsTcp)),
                serial: self.next_serial,
            },
        );
    }

    /// The connection left SYN_SENT. A connection that failed sends
    /// nothing more: it is forgotten (its outcome was returned to the
    /// caller to count).
    pub fn ended_handshake(&mut self, cookie: u64, outcome: ConnectOutcome) {
        let Some(connection) = self.by_cookie.get_mut(&cookie) else {
            return;
        };
        connection.outcome = Some(outcome);
        if outcome != ConnectOutcome::Established || connection.decided() {
            self.forget(cookie);
            // Not evicted: decided or failed, so later segments are no
            // orphans.
            self.remember_forgotten(cookie, Some(outcome));
        }
    }

    /// How the connection's handshake ended, once known.
    pub fn outcome(&self, cookie: u64) -> Option<ConnectOutcome> {
        match self.by_cookie.get(&cookie) {
            Some(connection) => connection.outcome,
            None => self.forgotten.get(&cookie).copied().flatten(),
        }
    }

    /// Remembers a removed connection's cookie and outcome (bounded).
    fn remember_forgotten(&mut self, cookie: u64, outcome: Option<ConnectOutcome>) {
        if self.forgotten.insert(cookie, outcome).is_none() {
            self.forgotten_order.push_back(cookie);
        }
        while self.forgotten_order.len() > self.max_connections {
            if let Some(oldest) = self.forgotten_order.pop_front() {
                self.forgotten.remove(&oldest);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_cookie.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_cookie.is_empty()
    }

    /// Removes a connection, counting its undecided streams.
    fn forget(&mut self, cookie: u64) {
        if let Some(mut connection) = self.by_cookie.remove(&cookie) {
            let Connection {
                egress, ingress, ..
            } = &mut connection;
            for side in std::iter::once(egress).chain(ingress.as_mut()) {
                if let Some(finding) = side.assembler.finish() {
                    crate::pipeline::payload::stats::count(&mut self.stats, &finding);
                }
            }
        }
    }

    /// One captured payload segment ([`Observation::TcpPayload`]; other
    /// observations give [`Joined::Nothing`]).
    pub fn segment(&mut self, observation: &Observation) -> Joined {
        let Observation::TcpPayload {
            actor: packet_actor,
            cookie,
            egress,
            src,
            dst,
            seq,
            wire_len,
            bytes,
        } = observation
        else {
            return Joined::Nothing;
        };
        let (cookie, egress) = (*cookie, *egress);
        if self.forgotten.contains_key(&cookie) {
            // Decided already; its first bytes were read.
            return Joined::Nothing;
        }
        if !self.by_cookie.contains_key(&cookie) {
            // The kernel captures only connections it saw connect; the
            // table may have evicted this one. Keep the packet's cgroup.
            self.orphan_segments += 1;
            let server = if egress { *dst } else { *src };
            self.opened(cookie, packet_actor, server);
        }
        let Some(connection) = self.by_cookie.get_mut(&cookie) else {
            return Joined::Nothing;
        };
        let side = if egress {
            &mut connection.egress
        } else {
            match connection.ingress.as_mut() {
                Some(side) => side,
                None => return Joined::Nothing,
            }
        };
        side.segments = side.segments.saturating_add(1);
        let progress = side.assembler.push(Segment {
            seq: *seq,
            wire_len: *wire_len,
            captured: bytes,
        });
        let finding = match progress {
            Progress::Done(finding) => Some(finding),
            // The kernel sends no more than its budget: decide now.
            Progress::NeedMore if side.segments >= TCP_SEGMENTS_PER_CONNECTION => {
                side.assembler.finish()
            }
            Progress::NeedMore | Progress::AlreadyDone => None,
        };
        let Some(finding) = finding else {
            return Joined::Nothing;
        };
        crate::pipeline::payload::stats::count(&mut self.stats, &finding);
        let (actor, dest) = (connection.actor.clone(), connection.dest);
        if connection.decided() && connection.outcome.is_some() {
            // Nothing more to learn from it.
            let outcome = connection.outcome;
            self.by_cookie.remove(&cookie);
            self.remember_forgotten(cookie, outcome);
        }
        // The packet's time, not the connect()'s.
        let actor = Actor {
            boot_ns: packet_actor.boot_ns,
            ..actor
        };
        derive(finding, actor, cookie, dest, egress)
    }

    fn evict_oldest(&mut self) {
        while let Some((cookie, serial)) = self.order.pop_front() {
            if self
                .by_cookie
                .get(&cookie)
                .is_some_and(|c| c.serial == serial)
            {
                self.forget(cookie);
                return;
            }
        }
    }
}

/// A finding as an observation by the connecting process.
fn derive(
    finding: StreamFinding,
    actor: Actor,
    cookie: u64,
    dest: SocketAddr,
    egress: bool,
) -> Joined {
    let observation = match finding {
        StreamFinding::Tls { sni: Some(sni) } => Observation::TlsHello {
            actor,
            cookie,
            dest,
            sni,
        },
        StreamFinding::HttpConnect { host, port } => Observation::ProxyConnect {
            actor,
            cookie,
            proxy: dest,
            host,
            port,
        },
        StreamFinding::HttpRequest { host: Some(host) } => Observation::HttpRequest {
            actor,
            cookie,
            dest,
            host,
        },
        StreamFinding::DnsMessage { message, .. } => {
            let server: IpAddr = dest.ip();
            return match decode::decode_dns_message(&message, actor, egress, server, true) {
                Ok(Some(observation)) => Joined::Observation(observation),
                Ok(None) => Joined::Nothing,
                Err(error) => Joined::DnsError(error),
            };
        }
        StreamFinding::Tls { sni: None }
        | StreamFinding::HttpRequest { host: None }
        | StreamFinding::Unparsed { .. }
        | StreamFinding::NotRecognized => return Joined::Nothing,
    };
    Joined::Observation(observation)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::pipeline::payload::testing::{rustls_client_hello, split};

    fn actor(tgid: u32, boot_ns: u64) -> Actor {
        Actor {
            tgid,
            tid: tgid,
            uid: Some(0),
            comm: "skopeo".into(),
            cgroup_id: 7,
            boot_ns,
        }
    }

    fn dest() -> SocketAddr {
        SocketAddr::new(Ipv4Addr::new(198, 18, 0, 1).into(), 443)
    }

    fn segment(cookie: u64, seq: u32, bytes: &[u8]) -> Observation {
        Observation::TcpPayload {
            // Sent from softirq: no task.
            actor: Actor {
                tgid: 0,
                tid: 0,
                uid: None,
                comm: "".into(),
                cgroup_id: 7,
                boot_ns: 50,
            },
            cookie,
            egress: true,
            src: SocketAddr::new(Ipv4Addr::new(198, 18, 0, 2).into(), 40000),
            dst: dest(),
            seq,
            wire_len: bytes.len() as u32,
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn a_client_hello_over_two_segments_becomes_sni_by_the_connecting_process() {
        let mut table = Connections::new(16);
        table.opened(1, &actor(42, 10), dest());
        table.ended_handshake(1, ConnectOutcome::Established);
        let hello = rustls_client_hello("quay.io");
        let segments = split(&hello, 1000, 77);
        assert!(segments.len() >= 2);
        let mut joined = Vec::new();
        for (seq, bytes) in &segments {
            joined.push(table.segment(&segment(1, *seq, bytes)));
        }
        let Some(Joined::Observation(Observation::TlsHello {
            actor, sni, cookie, ..
        })) = joined.pop()
        else {
            panic!("{joined:?}");
        };
        assert!(joined.iter().all(|j| *j == Joined::Nothing));
        assert_eq!((actor.tgid, sni.as_str(), cookie), (42, "quay.io", 1));
        // The packet's time, the connecting process.
        assert_eq!(actor.boot_ns, 50);
        assert_eq!(
            crate::pipeline::payload::stats::of_parser(
                table.stats(),
                crate::pipeline::payload::Parser::Tls
            )
            .parsed,
            1
        );
        // Decided and its outcome known: forgotten, but the pipeline can
        // still count the outcome on the attempt this segment made, and later
        // bytes of the stream (TLS inside a CONNECT tunnel) are no orphans.
        assert!(table.is_empty());
        assert_eq!(table.outcome(1), Some(ConnectOutcome::Established));
        let again = table.segment(&segment(1, segments[0].0 + 5000, &hello));
        assert_eq!(again, Joined::Nothing);
        assert_eq!(table.orphan_segments, 0);
    }

    #[test]
    fn failed_connections_are_forgotten_and_the_table_stays_bounded() {
        let mut table = Connections::new(100);
        table.opened(1, &actor(42, 10), dest());
        assert_eq!(table.outcome(1), None);
        table.ended_handshake(1, ConnectOutcome::Refused);
        assert!(table.is_empty());
        // Established connections that never send stay until evicted,
        // oldest first, in constant time.
        for cookie in 0..10_000u64 {
            table.opened(cookie, &actor(42, cookie), dest());
            table.ended_handshake(cookie, ConnectOutcome::Established);
        }
        assert_eq!(table.len(), 100);
        assert_eq!(table.outcome(9_999), Some(ConnectOutcome::Established));
        assert_eq!(table.outcome(9_899), None);
        assert!(table.order.len() <= 200);
        // A segment of an evicted connection still joins, by its packet.
        let hello = rustls_client_hello("quay.io");
        let first = split(&hello, 4096, 1).remove(0);
        let joined = table.segment(&segment(5, first.0, first.1));
        let Joined::Observation(Observation::TlsHello { actor, .. }) = joined else {
            panic!("{joined:?}");
        };
        assert_eq!((actor.tgid, actor.cgroup_id), (0, 7));
        assert_eq!(table.orphan_segments, 1);
    }
}
