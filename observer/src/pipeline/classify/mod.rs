//! Stage 4, classify: does an observation concern a registry, and which one?
//!
//! DNS queries match by name. connect() calls match when their destination
//! address was recently given for a registry name (captured DNS answers, or
//! the agent's own resolution of catalog names), or lies in a catalog CIDR.
//! DNS responses only teach addresses; they are not attempts by themselves.

pub mod address_book;
pub mod catalog;
pub mod registries_conf;

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
};

use observer_report::attempt::Evidence;

pub use self::{
    address_book::{AddressBook, Learned},
    catalog::{Catalog, Entry, Pattern, PatternError},
};
use crate::pipeline::decode::{Actor, Observation};

/// An observation that concerns a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    /// The registry name; None for a connect() matched only by a catalog
    /// CIDR (no DNS answer named the address).
    pub host: Option<String>,
    pub entry: Entry,
    pub evidence: Vec<Evidence>,
    pub dest: Option<SocketAddr>,
    /// Extra human detail for the live line (the DNS query type).
    pub detail: Option<String>,
    /// The TCP connection this match came from, to join its outcome.
    pub cookie: Option<u64>,
}

/// Remembered lookups per process, so a connect() to an address shared by
/// several registry names is attributed to the name that process asked for.
const DNS_PORT: u16 = 53;

const RECENT_QUERIES_PER_PROCESS: usize = 8;
const MAX_PROCESSES_WITH_QUERIES: usize = 4096;

pub struct Classifier {
    catalog: Catalog,
    book: AddressBook,
    recent_queries: HashMap<u32, VecDeque<String>>,
}

impl Classifier {
    pub fn new(catalog: Catalog, book: AddressBook) -> Classifier {
        Classifier {
            catalog,
            book,
            recent_queries: HashMap::new(),
        }
    }

    /// Swaps in a new catalog (a configuration reload); learned addresses
    /// and recent queries stay.
    pub fn set_catalog(&mut self, catalog: Catalog) {
        self.catalog = catalog;
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn is_registry(&self, name: &str) -> bool {
        self.catalog.lookup(name).is_some()
    }

    /// Addresses the agent resolved for a catalog name itself.
    pub fn learn_resolved(&mut self, name: &str, addresses: &[IpAddr], now_ns: u64) {
        for ip in addresses {
            self.book.learn(*ip, name, 0, now_ns, Learned::Resolved);
        }
    }

    pub fn classify(&mut self, observation: &Observation) -> Option<Match> {
        match observation {
            Observation::DnsQuery {
                actor,
                name,
                qtype,
                over_tcp,
                ..
            } => {
                let entry = self.catalog.lookup(name)?.clone();
                self.remember_query(actor.tgid, name);
                Some(Match {
                    host: Some(name.clone()),
                    entry,
                    evidence: vec![Evidence::DnsQuery],
                    dest: None,
                    detail: Some(if *over_tcp {
                        format!("{qtype} over TCP")
                    } else {
                        qtype.clone()
                    }),
                    cookie: None,
                })
            }
            Observation::DnsResponse {
                actor,
                name,
                aliases,
                addresses,
                ..
            } => {
                // The addresses at the end of a CNAME chain serve every name
                // on it: credit the first one the catalog knows (the question
                // if it is a registry name, else the nearest alias).
                let known = std::iter::once(name)
                    .chain(aliases)
                    .find(|n| self.catalog.lookup(n).is_some());
                for (ip, ttl) in addresses {
                    match known {
                        Some(known) => self.book.learn_in(
                            *ip,
                            known,
                            *ttl,
                            actor.boot_ns,
                            Learned::Answer,
                            actor.cgroup_id,
                        ),
                        None => self
                            .book
                            .learn_other(*ip, *ttl, actor.boot_ns, actor.cgroup_id),
                    }
                }
                None
            }
            Observation::Connect {
                actor,
                dest,
                port,
                cookie,
                sendmsg,
                ..
            } => {
                // A connect() to port 53 is a resolver talking to its DNS
                // server; DNS is judged by the names it asks for, and a
                // server may well share an address with a registry name.
                if *port == DNS_PORT {
                    return None;
                }
                let (host, entry, learned) = self.by_address(actor, dest)?;
                let mut evidence = match learned {
                    Learned::Answer => vec![Evidence::DnsAnswer],
                    Learned::Resolved => vec![],
                };
                evidence.push(if *sendmsg {
                    Evidence::Sendmsg
                } else {
                    Evidence::Connect
                });
                Some(Match {
                    host,
                    entry,
                    evidence,
                    dest: Some(SocketAddr::new(*dest, *port)),
                    detail: None,
                    cookie: (!*sendmsg).then_some(*cookie),
                })
            }
            Observation::TlsHello {
                cookie, dest, sni, ..
            } => self.by_name(sni, Evidence::TlsSni, *dest, *cookie),
            Observation::HttpRequest {
                cookie, dest, host, ..
            } => self.by_name(host, Evidence::HttpHost, *dest, *cookie),
            Observation::ProxyConnect {
                actor,
                cookie,
                proxy,
                host,
                port,
            } => {
                let mut matched = match host.parse::<IpAddr>() {
                    // CONNECT to an address: the address book names it.
                    Ok(ip) => {
                        let (host, entry, _) = self.by_address(actor, &ip)?;
                        Match {
                            host,
                            entry,
                            evidence: vec![Evidence::HttpConnect],
                            dest: Some(*proxy),
                            detail: None,
                            cookie: Some(*cookie),
                        }
                    }
                    Err(_) => self.by_name(host, Evidence::HttpConnect, *proxy, *cookie)?,
                };
                matched.detail = Some(format!("via proxy {proxy} to port {port}"));
                Some(matched)
            }
            Observation::Exec { .. }
            | Observation::Fork { .. }
            | Observation::Exit { .. }
            | Observation::TcpPayload { .. }
            | Observation::ConnectDone { .. } => None,
        }
    }

    /// A registry name the caller saw on the wire (SNI, Host, CONNECT).
    fn by_name(
        &self,
        host: &str,
        evidence: Evidence,
        dest: SocketAddr,
        cookie: u64,
    ) -> Option<Match> {
        let entry = self.catalog.lookup(host)?.clone();
        Some(Match {
            host: Some(host.to_string()),
            entry,
            evidence: vec![evidence],
            dest: Some(dest),
            detail: None,
            cookie: Some(cookie),
        })
    }

    /// The registry name an address was learned for, preferring names the
    /// process itself looked up and answers seen in its own cgroup; else the
    /// catalog CIDR holding the address (no name then, and no DNS evidence).
    fn by_address(&self, actor: &Actor, dest: &IpAddr) -> Option<(Option<String>, Entry, Learned)> {
        let asked = self.recent_queries.get(&actor.tgid);
        let found = self
            .book
            .lookup_from(dest, actor.boot_ns, actor.cgroup_id, |name| {
                asked.is_some_and(|names| names.iter().any(|n| n == name))
            });
        // A name is more telling than a range: prefer it when DNS gave one.
        if let Some(found) = found
            && let Some(entry) = self.catalog.lookup(found.name)
        {
            return Some((Some(found.name.to_string()), entry.clone(), found.learned));
        }
        let entry = self.catalog.lookup_address(dest)?.clone();
        Some((None, entry, Learned::Resolved))
    }

    fn remember_query(&mut self, tgid: u32, name: &str) {
        if !self.recent_queries.contains_key(&tgid)
            && self.recent_queries.len() >= MAX_PROCESSES_WITH_QUERIES
        {
            // Pids of finished processes pile up; a full reset costs at most
            // a less precise pick between names sharing one address.
            self.recent_queries.clear();
        }
        let names = self.recent_queries.entry(tgid).or_default();
        if names.iter().any(|n| n == name) {
            return;
        }
        if names.len() == RECENT_QUERIES_PER_PROCESS {
            names.pop_front();
        }
        names.push_back(name.to_string());
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use hickory_proto::op::ResponseCode;
    use observer_report::attempt::{Category, Source};

    use super::*;
    use crate::pipeline::decode::Actor;

    fn actor(tgid: u32, boot_ns: u64) -> Actor {
        Actor {
            tgid,
            tid: tgid,
            uid: Some(0),
            comm: "skopeo".into(),
            cgroup_id: 1,
            boot_ns,
        }
    }

    fn classifier() -> Classifier {
        let mut catalog = Catalog::builtin();
        catalog.add(
            Pattern::parse("registry.example.test").unwrap(),
            Category::ImageRegistry,
            Source::CommandLine,
        );
        Classifier::new(catalog, AddressBook::new(1024, 60_000_000_000))
    }

    fn query(tgid: u32, name: &str) -> Observation {
        Observation::DnsQuery {
            actor: actor(tgid, 1),
            name: name.into(),
            qtype: "A".into(),
            server: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            over_tcp: false,
        }
    }

    fn answer(name: &str, ip: IpAddr) -> Observation {
        Observation::DnsResponse {
            actor: actor(0, 2),
            name: name.into(),
            rcode: ResponseCode::NoError,
            aliases: vec![],
            addresses: vec![(ip, 0)],
        }
    }

    fn connect(tgid: u32, ip: IpAddr, port: u16) -> Observation {
        Observation::Connect {
            actor: actor(tgid, 3),
            dest: ip,
            port,
            protocol: 6,
            cookie: 99,
            sendmsg: false,
        }
    }

    fn in_cgroup(mut observation: Observation, cgroup_id: u64) -> Observation {
        match &mut observation {
            Observation::Connect { actor, .. } | Observation::DnsResponse { actor, .. } => {
                actor.cgroup_id = cgroup_id;
            }
            _ => unreachable!("only used on connects and answers"),
        }
        observation
    }

    #[test]
    fn cname_chains_credit_the_registry_name_on_the_chain() {
        let mut c = classifier();
        let ip = IpAddr::V4(Ipv4Addr::new(198, 18, 7, 7));
        // An alias outside the catalog whose chain reaches quay.io.
        let answer = Observation::DnsResponse {
            actor: actor(0, 2),
            name: "mirror.corp.example".into(),
            rcode: ResponseCode::NoError,
            aliases: vec!["quay.io".into(), "cdn.elb.example".into()],
            addresses: vec![(ip, 30)],
        };
        assert_eq!(c.classify(&answer), None);
        let m = c.classify(&connect(10, ip, 443)).unwrap();
        assert_eq!(m.host.as_deref(), Some("quay.io"));
        assert_eq!(m.cookie, Some(99));
    }

    #[test]
    fn answers_are_scoped_to_the_cgroup_that_received_them() {
        let mut c = classifier();
        let ip = IpAddr::V4(Ipv4Addr::new(198, 18, 8, 8));
        // cgroup 1 was told ip is quay.io; cgroup 2 was told it is a
        // non-registry host; cgroup 3 was told nothing.
        c.classify(&in_cgroup(answer("quay.io", ip), 1));
        c.classify(&in_cgroup(answer("intranet.example", ip), 2));
        assert_eq!(
            c.classify(&in_cgroup(connect(10, ip, 443), 1))
                .unwrap()
                .host
                .as_deref(),
            Some("quay.io")
        );
        assert_eq!(c.classify(&in_cgroup(connect(11, ip, 443), 2)), None);
        assert_eq!(
            c.classify(&in_cgroup(connect(12, ip, 443), 3))
                .unwrap()
                .host
                .as_deref(),
            Some("quay.io")
        );
        // A non-registry answer for an address the book never held is not
        // stored at all.
        let other = IpAddr::V4(Ipv4Addr::new(198, 18, 9, 9));
        c.classify(&in_cgroup(answer("intranet.example", other), 2));
        assert_eq!(c.classify(&in_cgroup(connect(11, other, 443), 2)), None);
    }

    #[test]
    fn payload_findings_classify_by_name_with_their_evidence() {
        let mut c = classifier();
        let dest = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9)), 443);
        let sni = Observation::TlsHello {
            actor: actor(10, 4),
            cookie: 5,
            dest,
            sni: "registry.example.test".into(),
        };
        let m = c.classify(&sni).unwrap();
        assert_eq!(
            (m.host.as_deref(), m.cookie),
            (Some("registry.example.test"), Some(5))
        );
        assert_eq!(m.evidence, vec![Evidence::TlsSni]);
        let proxy = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 3)), 3128);
        let tunnel = Observation::ProxyConnect {
            actor: actor(10, 5),
            cookie: 6,
            proxy,
            host: "quay.io".into(),
            port: 443,
        };
        let m = c.classify(&tunnel).unwrap();
        assert_eq!(m.evidence, vec![Evidence::HttpConnect]);
        assert_eq!(m.dest, Some(proxy));
        let elsewhere = Observation::HttpRequest {
            actor: actor(10, 6),
            cookie: 7,
            dest,
            host: "example.org".into(),
        };
        assert_eq!(c.classify(&elsewhere), None);
        // sendto() a registry address: evidence sendmsg, no connection.
        let ip = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        c.classify(&answer("quay.io", ip));
        let Observation::Connect {
            actor, dest, port, ..
        } = connect(10, ip, 443)
        else {
            unreachable!()
        };
        let datagram = Observation::Connect {
            actor,
            dest,
            port,
            protocol: 17,
            cookie: 8,
            sendmsg: true,
        };
        let m = c.classify(&datagram).unwrap();
        assert_eq!(m.evidence, vec![Evidence::DnsAnswer, Evidence::Sendmsg]);
        assert_eq!(m.cookie, None);
    }

    #[test]
    fn registry_query_then_connect_through_the_answer() {
        let mut c = classifier();
        let ip = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        let q = c.classify(&query(10, "quay.io")).unwrap();
        assert_eq!(q.evidence, vec![Evidence::DnsQuery]);
        assert_eq!(q.dest, None);
        assert_eq!(c.classify(&answer("quay.io", ip)), None);
        let m = c.classify(&connect(10, ip, 443)).unwrap();
        assert_eq!(m.host.as_deref(), Some("quay.io"));
        assert_eq!(m.evidence, vec![Evidence::DnsAnswer, Evidence::Connect]);
        assert_eq!(m.dest, Some(SocketAddr::new(ip, 443)));
        // The resolver's own UDP connect() to a server at that address.
        assert_eq!(c.classify(&connect(10, ip, 53)), None);
    }

    #[test]
    fn non_registry_names_and_addresses_do_not_match() {
        let mut c = classifier();
        let ip = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 3));
        assert_eq!(c.classify(&query(10, "notaregistry.test")), None);
        assert_eq!(c.classify(&answer("notaregistry.test", ip)), None);
        assert_eq!(c.classify(&connect(10, ip, 80)), None);
    }

    #[test]
    fn ipv6_connect_to_a_learned_address() {
        let mut c = classifier();
        let ip = IpAddr::V6(Ipv6Addr::LOCALHOST);
        c.classify(&answer("registry.example.test", ip));
        let m = c.classify(&connect(11, ip, 5000)).unwrap();
        assert_eq!(m.host.as_deref(), Some("registry.example.test"));
        assert_eq!(m.entry.source, Source::CommandLine);
    }

    #[test]
    fn shared_address_goes_to_the_name_the_process_asked_for() {
        let mut c = classifier();
        let ip = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        c.classify(&query(20, "quay.io"));
        c.classify(&answer("quay.io", ip));
        c.classify(&answer("registry.example.test", ip));
        assert_eq!(
            c.classify(&connect(20, ip, 443)).unwrap().host.as_deref(),
            Some("quay.io")
        );
        assert_eq!(
            c.classify(&connect(21, ip, 443)).unwrap().host.as_deref(),
            Some("registry.example.test")
        );
    }

    #[test]
    fn resolved_catalog_addresses_match_without_dns_evidence() {
        let mut c = classifier();
        let ip = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9));
        c.learn_resolved("registry.redhat.io", &[ip], 0);
        let m = c.classify(&connect(30, ip, 443)).unwrap();
        assert_eq!(m.host.as_deref(), Some("registry.redhat.io"));
        assert_eq!(m.evidence, vec![Evidence::Connect]);
    }

    #[test]
    fn connect_into_a_catalog_cidr_matches_without_a_name() {
        let mut catalog = Catalog::builtin();
        catalog.add(
            Pattern::parse_network("198.18.7.0/24").unwrap(),
            Category::ImageRegistry,
            Source::Config,
        );
        let mut c = Classifier::new(catalog, AddressBook::new(16, 60_000_000_000));
        let ip = IpAddr::V4(Ipv4Addr::new(198, 18, 7, 5));
        let m = c.classify(&connect(40, ip, 5000)).unwrap();
        assert_eq!(m.host, None);
        assert_eq!(m.entry.pattern.to_string(), "198.18.7.0/24");
        assert_eq!(m.evidence, vec![Evidence::Connect]);
        // DNS for the resolver inside the range is still not an attempt.
        assert_eq!(c.classify(&connect(40, ip, 53)), None);
        // Once DNS names the address, the name is preferred.
        c.classify(&answer("quay.io", ip));
        let named = c.classify(&connect(40, ip, 443)).unwrap();
        assert_eq!(named.host.as_deref(), Some("quay.io"));
        assert_eq!(named.entry.pattern.to_string(), "quay.io");
        // Outside the range and unnamed: nothing.
        let outside = IpAddr::V4(Ipv4Addr::new(198, 18, 8, 5));
        assert_eq!(c.classify(&connect(40, outside, 443)), None);
    }
}
