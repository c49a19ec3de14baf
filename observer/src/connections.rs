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
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use observer_common::TCP_SEGMENTS_PER_CONNECTION;

use crate::{
    decode::{self, Actor, ConnectOutcome, DecodeError, Observation},
    payload::{Finding, Mode, PayloadStats, Progress, Segment, StreamAssembler},
};

const DNS_PORT: u16 = 53;

/// Connections remembered at once. The kernel captures the first segments
/// within milliseconds of connect(); entries beyond this bound are the
/// oldest, long decided.
pub const MAX_CONNECTIONS: usize = 65_536;

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
    max_connections: usize,
    next_serial: u64,
    stats: PayloadStats,
    /// Payload segments of connections the table no longer (or never) held.
    pub orphan_segments: u64,
}

impl Connections {
    pub fn new(max_connections: usize) -> Connections {
        Connections {
            by_cookie: HashMap::new(),
            max_connections,
            next_serial: 0,
            stats: PayloadStats::default(),
            orphan_segments: 0,
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

    /// The connection left SYN_SENT.
    pub fn ended_handshake(&mut self, cookie: u64, outcome: ConnectOutcome) {
        if let Some(connection) = self.by_cookie.get_mut(&cookie) {
            connection.outcome = Some(outcome);
            if outcome != ConnectOutcome::Established {
                // Nothing will be sent: close the streams and count them.
                let Connection {
                    egress, ingress, ..
                } = connection;
                for side in std::iter::once(egress).chain(ingress.as_mut()) {
                    if let Some(finding) = side.assembler.finish() {
                        self.stats.record(&finding);
                    }
                }
            }
        }
    }

    /// How the connection's handshake ended, once known.
    pub fn outcome(&self, cookie: u64) -> Option<ConnectOutcome> {
        self.by_cookie.get(&cookie).and_then(|c| c.outcome)
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
        self.stats.record(&finding);
        let (actor, dest) = (connection.actor.clone(), connection.dest);
        // The packet's time, not the connect()'s.
        let actor = Actor {
            boot_ns: packet_actor.boot_ns,
            ..actor
        };
        derive(finding, actor, cookie, dest, egress)
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .by_cookie
            .iter()
            .min_by_key(|(_, c)| c.serial)
            .map(|(cookie, _)| *cookie);
        if let Some(cookie) = oldest
            && let Some(mut connection) = self.by_cookie.remove(&cookie)
        {
            let Connection {
                egress, ingress, ..
            } = &mut connection;
            for side in std::iter::once(egress).chain(ingress.as_mut()) {
                if let Some(finding) = side.assembler.finish() {
                    self.stats.record(&finding);
                }
            }
        }
    }
}

/// A finding as an observation by the connecting process.
fn derive(finding: Finding, actor: Actor, cookie: u64, dest: SocketAddr, egress: bool) -> Joined {
    let observation = match finding {
        Finding::Tls { sni: Some(sni) } => Observation::TlsHello {
            actor,
            cookie,
            dest,
            sni,
        },
        Finding::HttpConnect { host, port } => Observation::ProxyConnect {
            actor,
            cookie,
            proxy: dest,
            host,
            port,
        },
        Finding::HttpRequest { host: Some(host) } => Observation::HttpRequest {
            actor,
            cookie,
            dest,
            host,
        },
        Finding::DnsMessage { message, .. } => {
            let server: IpAddr = dest.ip();
            return match decode::decode_dns_message(&message, actor, egress, server, true) {
                Ok(Some(observation)) => Joined::Observation(observation),
                Ok(None) => Joined::Nothing,
                Err(error) => Joined::DnsError(error),
            };
        }
        Finding::Tls { sni: None }
        | Finding::HttpRequest { host: None }
        | Finding::Unparsed { .. }
        | Finding::NotRecognized => return Joined::Nothing,
    };
    Joined::Observation(observation)
}
