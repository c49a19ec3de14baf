//! Which registry names an IP address was recently given for.
//!
//! Fed by DNS answers seen on the wire and by the agent's own resolution of
//! catalog names; read when a connect() names only an address.
//!
//! Answers are scoped by the cgroup of the socket that received them: two
//! pods (or a pod and the host) may resolve differently, and a connect() is
//! judged by what its own cgroup was told when it was told anything. An
//! answer naming a non-registry host for an address the book already holds
//! is kept too (as a binding without a name), so a pod that resolved that
//! address for something else is not charged with a registry contact.

use std::{collections::HashMap, net::IpAddr};

/// How a binding was learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// From a DNS response captured on the wire.
    Answer,
    /// From the agent resolving catalog names itself.
    Resolved,
}

#[derive(Clone, Debug)]
struct Binding {
    /// Empty for an answer that named a non-registry host.
    name: String,
    learned: Learned,
    learned_ns: u64,
    expires_ns: u64,
    /// cgroup id of the receiving socket; 0 for the agent's own resolution,
    /// which holds for everyone.
    scope: u64,
}

/// Scope of bindings every cgroup shares.
pub const GLOBAL_SCOPE: u64 = 0;

/// Bounded IP -> names memory with expiry.
#[derive(Debug)]
pub struct AddressBook {
    by_ip: HashMap<IpAddr, Vec<Binding>>,
    max_addresses: usize,
    /// Clients connect after the TTL has run out (connection reuse, retries,
    /// and local answers often carry TTL 0), so bindings live at least this
    /// long.
    min_retention_ns: u64,
}

/// A name found for an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found<'a> {
    pub name: &'a str,
    pub learned: Learned,
}

impl AddressBook {
    pub fn new(max_addresses: usize, min_retention_ns: u64) -> AddressBook {
        AddressBook {
            by_ip: HashMap::new(),
            max_addresses,
            min_retention_ns,
        }
    }

    pub fn learn(&mut self, ip: IpAddr, name: &str, ttl_s: u32, now_ns: u64, learned: Learned) {
        self.learn_in(ip, name, ttl_s, now_ns, learned, GLOBAL_SCOPE);
    }

    /// Records that a socket in cgroup `scope` was told `ip` is a
    /// non-registry host; only for addresses the book already holds.
    pub fn learn_other(&mut self, ip: IpAddr, ttl_s: u32, now_ns: u64, scope: u64) {
        if self.by_ip.contains_key(&ip) {
            self.learn_in(ip, "", ttl_s, now_ns, Learned::Answer, scope);
        }
    }

    pub fn learn_in(
        &mut self,
        ip: IpAddr,
        name: &str,
        ttl_s: u32,
        now_ns: u64,
        learned: Learned,
        scope: u64,
    ) {
        let keep_ns = (u64::from(ttl_s) * 1_000_000_000).max(self.min_retention_ns);
        let expires_ns = now_ns.saturating_add(keep_ns);
        if !self.by_ip.contains_key(&ip) && self.by_ip.len() >= self.max_addresses {
            self.make_room(now_ns);
        }
        let bindings = self.by_ip.entry(ip).or_default();
        match bindings
            .iter_mut()
            .find(|b| b.name == name && b.scope == scope)
        {
            Some(binding) => {
                binding.expires_ns = binding.expires_ns.max(expires_ns);
                binding.learned_ns = now_ns;
                // A wire answer is the stronger evidence; keep it.
                if learned == Learned::Answer {
                    binding.learned = Learned::Answer;
                }
            }
            None => bindings.push(Binding {
                name: name.to_string(),
                learned,
                learned_ns: now_ns,
                expires_ns,
                scope,
            }),
        }
    }

    /// The name for `ip`: one the caller prefers (e.g. the connecting process
    /// looked it up itself) if any, else the most recently learned.
    pub fn lookup(
        &self,
        ip: &IpAddr,
        now_ns: u64,
        preferred: impl Fn(&str) -> bool,
    ) -> Option<Found<'_>> {
        self.lookup_from(ip, now_ns, GLOBAL_SCOPE, preferred)
    }

    /// As [`lookup`](Self::lookup) for a connect() from cgroup `scope`:
    /// when that cgroup received answers for `ip`, only those count (and an
    /// answer for a non-registry host means no registry name).
    pub fn lookup_from(
        &self,
        ip: &IpAddr,
        now_ns: u64,
        scope: u64,
        preferred: impl Fn(&str) -> bool,
    ) -> Option<Found<'_>> {
        let live = || {
            self.by_ip
                .get(ip)
                .into_iter()
                .flatten()
                .filter(|b| b.expires_ns > now_ns)
        };
        let own_scope = scope != GLOBAL_SCOPE && live().any(|b| b.scope == scope);
        // Another cgroup's non-registry answer says nothing about this one.
        live()
            .filter(|b| {
                if own_scope {
                    b.scope == scope
                } else {
                    !b.name.is_empty()
                }
            })
            .max_by_key(|b| (preferred(&b.name), b.learned_ns))
            .filter(|b| !b.name.is_empty())
            .map(|b| Found {
                name: &b.name,
                learned: b.learned,
            })
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    /// Drops expired bindings, then, if still full, the least recently
    /// learned address. Runs only when an insert would exceed the bound.
    fn make_room(&mut self, now_ns: u64) {
        self.by_ip.retain(|_, bindings| {
            bindings.retain(|b| b.expires_ns > now_ns);
            !bindings.is_empty()
        });
        if self.by_ip.len() >= self.max_addresses {
            let oldest = self
                .by_ip
                .iter()
                .min_by_key(|(_, bindings)| bindings.iter().map(|b| b.learned_ns).max())
                .map(|(ip, _)| *ip);
            if let Some(ip) = oldest {
                self.by_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const SEC: u64 = 1_000_000_000;
    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
    }

    #[test]
    fn ttl_zero_answers_are_kept_for_the_minimum_retention() {
        let mut book = AddressBook::new(16, 60 * SEC);
        book.learn(ip(1), "quay.io", 0, 0, Learned::Answer);
        assert_eq!(
            book.lookup(&ip(1), 59 * SEC, |_| false),
            Some(Found {
                name: "quay.io",
                learned: Learned::Answer
            })
        );
        assert_eq!(book.lookup(&ip(1), 61 * SEC, |_| false), None);
        // A long TTL outlives the minimum.
        book.learn(ip(2), "ghcr.io", 3600, 0, Learned::Resolved);
        assert!(book.lookup(&ip(2), 3000 * SEC, |_| false).is_some());
    }

    #[test]
    fn shared_addresses_prefer_the_callers_name_then_the_newest() {
        let mut book = AddressBook::new(16, 60 * SEC);
        book.learn(ip(1), "quay.io", 30, SEC, Learned::Answer);
        book.learn(ip(1), "registry.example.test", 30, 2 * SEC, Learned::Answer);
        let now = 3 * SEC;
        assert_eq!(
            book.lookup(&ip(1), now, |_| false).unwrap().name,
            "registry.example.test"
        );
        assert_eq!(
            book.lookup(&ip(1), now, |n| n == "quay.io").unwrap().name,
            "quay.io"
        );
        assert_eq!(book.lookup(&ip(9), now, |_| false), None);
    }

    #[test]
    fn answers_upgrade_resolved_bindings() {
        let mut book = AddressBook::new(16, 60 * SEC);
        book.learn(ip(1), "quay.io", 30, 0, Learned::Resolved);
        book.learn(ip(1), "quay.io", 30, SEC, Learned::Answer);
        book.learn(ip(1), "quay.io", 30, 2 * SEC, Learned::Resolved);
        assert_eq!(
            book.lookup(&ip(1), 3 * SEC, |_| false).unwrap().learned,
            Learned::Answer
        );
    }

    #[test]
    fn the_book_stays_bounded() {
        let mut book = AddressBook::new(4, 60 * SEC);
        for i in 0..20u8 {
            book.learn(ip(i), "quay.io", 30, u64::from(i) * SEC, Learned::Answer);
            assert!(book.len() <= 4);
        }
        // The newest survive.
        assert!(book.lookup(&ip(19), 20 * SEC, |_| false).is_some());
        assert_eq!(book.lookup(&ip(0), 20 * SEC, |_| false), None);
    }
}
