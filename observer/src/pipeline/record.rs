//! Stage 6, record: aggregate attributed matches into attempts.
//!
//! Repeated identical attempts (same phase, host, cgroup and process image)
//! become one entry with a count, first/last time and the union of evidence;
//! a DNS query and the connect() that follows it join into one attempt.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    time::SystemTime,
};

use observer_report::{
    attempt::{Attempt, AttemptKey, Dest, Evidence, RegistryRef, Verdict},
    process::{Pod, ProcessInfo},
};

use crate::pipeline::{
    attribute::{CgroupOwner, Origin},
    classify::Match,
};

/// Connections joined to attempts, by socket cookie: the handshake's
/// outcome arrives in its own event, before or after the match.
const MAX_JOINED_CONNECTIONS: usize = 65_536;

struct Joined {
    attempt: usize,
    outcome_counted: bool,
}

/// How many distinct attempts a run keeps by default. An attempt is a few
/// hundred bytes to a few KiB (argv, ancestors, pod labels), so this bounds
/// the table at tens of MiB; a node rarely has more than hundreds.
pub const DEFAULT_MAX_ATTEMPTS: usize = 20_000;

pub struct Recorder {
    attempts: Vec<Attempt>,
    /// Distinct attempts kept at most; a match that would start one more is
    /// counted in `not_recorded` instead (repeats of kept ones still merge).
    max_attempts: usize,
    not_recorded: u64,
    index: HashMap<AttemptKey, usize>,
    connections: HashMap<u64, Joined>,
    /// Registry queries not answered yet, by (cgroup id, host): the attempt
    /// and the time of the latest query. Only registry names, so small.
    unanswered_dns: HashMap<(u64, String), UnansweredDns>,
}

struct UnansweredDns {
    attempt: usize,
    queries: u64,
    last_query: SystemTime,
}

/// A query with no answer after this long is counted `dns_no_answer`
/// (resolvers retry after 5 s by default: resolv.conf(5) `timeout`).
pub const DNS_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder::with_max_attempts(DEFAULT_MAX_ATTEMPTS)
    }
}

impl Recorder {
    pub fn with_max_attempts(max_attempts: usize) -> Recorder {
        Recorder {
            attempts: Vec::new(),
            max_attempts,
            not_recorded: 0,
            index: HashMap::new(),
            connections: HashMap::new(),
            unanswered_dns: HashMap::new(),
        }
    }

    /// Matches that would have started an attempt beyond `max_attempts`:
    /// their contacts are in no attempt, so the run is incomplete.
    pub fn not_recorded(&self) -> u64 {
        self.not_recorded
    }

    /// Continues a record kept elsewhere (a state dir): later events with
    /// the same [`AttemptKey`] merge into these attempts, so a restart
    /// neither duplicates nor forgets them. Attempts beyond `max_attempts`
    /// are counted as not recorded.
    pub fn restore(&mut self, attempts: Vec<Attempt>) {
        for attempt in attempts {
            let key = AttemptKey::of(&attempt);
            if let Some(&index) = self.index.get(&key) {
                self.attempts[index] = attempt;
            } else if self.attempts.len() >= self.max_attempts {
                self.not_recorded += attempt.count;
            } else {
                self.index.insert(key, self.attempts.len());
                self.attempts.push(attempt);
            }
        }
    }

    /// Records one match; returns the attempt it was merged into, for the
    /// policy to judge (its verdict starts as a violation), or None when the
    /// table is full and the match is only counted.
    pub fn record(
        &mut self,
        matched: &Match,
        origin: &Origin,
        phase: &str,
        at: SystemTime,
    ) -> Option<&mut Attempt> {
        self.record_with_outcome(matched, origin, phase, at, None)
    }

    /// [`Recorder::record`] for a match whose connection already ended its
    /// handshake (a TLS ClientHello follows an established one): the
    /// returned attempt already counts that outcome.
    pub fn record_with_outcome(
        &mut self,
        matched: &Match,
        origin: &Origin,
        phase: &str,
        at: SystemTime,
        handshake_outcome: Option<&str>,
    ) -> Option<&mut Attempt> {
        let Some(index) = self.merge(matched, origin, phase, at) else {
            self.not_recorded += 1;
            return None;
        };
        if let (Some(cookie), Some(outcome)) = (matched.cookie, handshake_outcome) {
            self.connection_outcome(cookie, outcome);
        }
        if matched.evidence.contains(&Evidence::DnsQuery)
            && let Some(host) = &matched.host
        {
            let pending = self
                .unanswered_dns
                .entry((origin.cgroup.id, host.clone()))
                .or_insert(UnansweredDns {
                    attempt: index,
                    queries: 0,
                    last_query: at,
                });
            pending.attempt = index;
            pending.queries += 1;
            pending.last_query = pending.last_query.max(at);
        }
        Some(&mut self.attempts[index])
    }

    /// A DNS response for `host` reached a socket in `cgroup_id`: one query
    /// of it was answered (whatever the answer said).
    pub fn dns_answered(&mut self, cgroup_id: u64, host: &str) {
        let key = (cgroup_id, host.to_string());
        if let Some(pending) = self.unanswered_dns.get_mut(&key) {
            pending.queries -= 1;
            if pending.queries == 0 {
                self.unanswered_dns.remove(&key);
            }
        }
    }

    /// The attempts as a report at `now` states them, without changing
    /// the record (a report is taken while the agent runs, and again at
    /// the end): queries still unanswered [`DNS_ANSWER_TIMEOUT`] after the
    /// latest one are counted as `dns_no_answer` on their attempt (on a
    /// disconnected node, the DNS server may drop them). Queries sent
    /// within the timeout before `now` are left uncounted: their answer may
    /// simply not have come yet.
    pub fn attempts_at(&self, now: SystemTime) -> Vec<Attempt> {
        let mut attempts = self.attempts.clone();
        for pending in self.unanswered_dns.values() {
            let waited = now.duration_since(pending.last_query).unwrap_or_default();
            if waited >= DNS_ANSWER_TIMEOUT {
                *attempts[pending.attempt]
                    .outcomes
                    .entry("dns_no_answer".to_string())
                    .or_default() += pending.queries;
            }
        }
        attempts
    }

    /// Merges the match into its attempt; returns the attempt's index, or
    /// None when it would start one beyond `max_attempts`.
    fn merge(
        &mut self,
        matched: &Match,
        origin: &Origin,
        phase: &str,
        at: SystemTime,
    ) -> Option<usize> {
        let key = AttemptKey {
            phase: phase.to_string(),
            host: matched.host.clone(),
            registry: matched.entry.pattern.to_string(),
            cgroup_id: origin.cgroup.id,
            comm: origin.process.comm.clone(),
            exe: origin.process.exe.clone(),
            cmdline: origin.process.cmdline.clone(),
        };
        let dest = matched.dest.map(|addr: SocketAddr| Dest {
            ip: addr.ip().to_string(),
            port: addr.port(),
        });
        let index = match self.index.get(&key) {
            Some(&index) => {
                let attempt = &mut self.attempts[index];
                attempt.count += 1;
                attempt.first_seen = attempt.first_seen.min(at);
                attempt.last_seen = attempt.last_seen.max(at);
                attempt.evidence.extend(matched.evidence.iter().copied());
                if attempt.dest.is_none() {
                    attempt.dest = dest;
                }
                index
            }
            None if self.attempts.len() >= self.max_attempts => return None,
            None => {
                self.attempts.push(Attempt {
                    host: matched.host.clone(),
                    registry: RegistryRef {
                        pattern: matched.entry.pattern.to_string(),
                        category: matched.entry.category,
                        source: matched.entry.source,
                        blocked: matched.entry.blocked,
                    },
                    dest,
                    evidence: matched.evidence.iter().copied().collect(),
                    process: origin.process.clone(),
                    cgroup: origin.cgroup.clone(),
                    unit: origin.owner.unit.clone(),
                    container: origin.owner.container.clone(),
                    pod: origin.pod.clone(),
                    component: origin.component.clone(),
                    phase: phase.to_string(),
                    // Until the policy has judged it, a contact is a violation.
                    verdict: Verdict::Violation,
                    allowed_by: None,
                    mirror_fallback: matched.entry.mirrored,
                    first_seen: at,
                    last_seen: at,
                    count: 1,
                    node: None,
                    outcomes: BTreeMap::new(),
                    on_behalf_of: None,
                });
                self.index.insert(key, self.attempts.len() - 1);
                self.attempts.len() - 1
            }
        };
        if let Some(cookie) = matched.cookie {
            if self.connections.len() >= MAX_JOINED_CONNECTIONS {
                // Connections end within seconds of their match; forgetting
                // them all costs at most the outcomes of those in flight.
                self.connections.clear();
            }
            self.connections.entry(cookie).or_insert(Joined {
                attempt: index,
                outcome_counted: false,
            });
        }
        Some(index)
    }

    /// Counts how the TCP connection `cookie` ended, once, on the attempt it
    /// was joined to; a connection no attempt claims is ignored.
    /// Returns the attempt it changed.
    pub fn connection_outcome(&mut self, cookie: u64, outcome: &str) -> Option<&Attempt> {
        let joined = self.connections.get_mut(&cookie)?;
        if joined.outcome_counted {
            return None;
        }
        joined.outcome_counted = true;
        let attempt = &mut self.attempts[joined.attempt];
        *attempt.outcomes.entry(outcome.to_string()).or_default() += 1;
        Some(attempt)
    }

    /// Counts a failed DNS answer on the latest attempt that queried `host`
    /// from `cgroup_id` (the receiving socket's cgroup).
    /// Returns the attempt it changed.
    pub fn dns_outcome(&mut self, cgroup_id: u64, host: &str, outcome: &str) -> Option<&Attempt> {
        let attempt = self.attempts.iter_mut().rev().find(|a| {
            a.cgroup.id == cgroup_id
                && a.host.as_deref() == Some(host)
                && a.evidence.contains(&Evidence::DnsQuery)
        })?;
        *attempt.outcomes.entry(outcome.to_string()).or_default() += 1;
        Some(attempt)
    }

    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }

    /// Gives each attempt's (unit, container, pod uid) and recorded pod to
    /// `name`; a returned (pod, component) replaces the recorded ones. For
    /// pods the CRI API named only after their attempts were recorded.
    pub fn rename_pods(
        &mut self,
        mut name: impl FnMut(&CgroupOwner, Option<&Pod>, &ProcessInfo) -> Option<(Pod, String)>,
    ) {
        for attempt in &mut self.attempts {
            let owner = CgroupOwner {
                unit: attempt.unit.clone(),
                container: attempt.container.clone(),
                pod_uid: attempt.pod.as_ref().map(|p| p.uid.clone()),
            };
            if let Some((pod, component)) = name(&owner, attempt.pod.as_ref(), &attempt.process) {
                attempt.pod = Some(pod);
                attempt.component = component;
            }
        }
    }

    /// Gives every attempt to `decide`, which sets its `on_behalf_of`.
    pub fn decide_on_behalf_of(&mut self, mut decide: impl FnMut(&mut Attempt)) {
        for attempt in &mut self.attempts {
            decide(attempt);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{IpAddr, Ipv4Addr},
        time::Duration,
    };

    use observer_report::{attempt::Allowance, process::CgroupRef};

    use super::*;
    use crate::pipeline::{
        attribute::cgroup_path,
        classify::{Catalog, Entry},
    };

    fn entry() -> Entry {
        Catalog::builtin().lookup("quay.io").unwrap().clone()
    }

    fn origin(pid: u32, cgroup_id: u64) -> Origin {
        Origin {
            process: ProcessInfo {
                pid,
                comm: "skopeo".into(),
                uid: Some(0),
                exe: Some("/usr/bin/skopeo".into()),
                cmdline: Some(vec!["skopeo".into(), "inspect".into()]),
                ancestors: vec![],
            },
            cgroup: CgroupRef {
                id: cgroup_id,
                path: Some("/x".into()),
            },
            owner: CgroupOwner::default(),
            pod: None,
            component: "skopeo".into(),
        }
    }

    fn query() -> Match {
        Match {
            host: Some("quay.io".into()),
            entry: entry(),
            evidence: vec![Evidence::DnsQuery],
            dest: None,
            detail: Some("A".into()),
            cookie: None,
        }
    }

    fn connect() -> Match {
        Match {
            host: Some("quay.io".into()),
            entry: entry(),
            evidence: vec![Evidence::DnsAnswer, Evidence::Connect],
            dest: Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
                443,
            )),
            detail: None,
            cookie: Some(42),
        }
    }

    #[test]
    fn query_and_connect_join_into_one_attempt() {
        let mut recorder = Recorder::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        recorder.record(&query(), &origin(7, 1), "boot", t0);
        recorder.record(
            &query(),
            &origin(7, 1),
            "boot",
            t0 + Duration::from_millis(1),
        );
        let attempt = recorder
            .record(
                &connect(),
                &origin(7, 1),
                "boot",
                t0 + Duration::from_millis(5),
            )
            .unwrap()
            .clone();
        assert_eq!(recorder.attempts().len(), 1);
        assert_eq!(attempt.count, 3);
        assert_eq!(
            attempt.evidence.iter().copied().collect::<Vec<_>>(),
            vec![Evidence::DnsQuery, Evidence::DnsAnswer, Evidence::Connect]
        );
        assert_eq!(
            attempt.dest,
            Some(Dest {
                ip: "198.18.0.1".into(),
                port: 443
            })
        );
        assert_eq!(attempt.first_seen, t0);
        assert_eq!(attempt.last_seen, t0 + Duration::from_millis(5));
        let json = serde_json::to_value(&attempt).unwrap();
        assert_eq!(json["first_seen"], "2027-01-15T08:00:00.000Z");
        assert_eq!(
            json["evidence"],
            serde_json::json!(["dns_query", "dns_answer", "connect"])
        );
        assert_eq!(json["verdict"], "violation");
        assert_eq!(json["registry"]["category"], "image-registry");
    }

    #[test]
    fn unanswered_registry_queries_become_dns_no_answer_after_the_timeout() {
        let mut recorder = Recorder::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // Two queries (A, AAAA) from cgroup 1, one answered.
        recorder.record(&query(), &origin(7, 1), "boot", t0);
        recorder.record(&query(), &origin(7, 1), "boot", t0);
        recorder.dns_answered(1, "quay.io");
        // An answer for another cgroup's query does not count here.
        recorder.dns_answered(2, "quay.io");
        // A query from cgroup 2 sent just before the end: undecided.
        recorder.record(&query(), &origin(8, 2), "boot", t0 + Duration::from_secs(9));
        let attempts = recorder.attempts_at(t0 + Duration::from_secs(10));
        assert_eq!(attempts[0].outcomes.get("dns_no_answer"), Some(&1));
        assert_eq!(attempts[1].outcomes.get("dns_no_answer"), None);
        // Taking a report changes nothing: the record has no outcome yet,
        // and a later report counts the same query once, not twice.
        assert_eq!(recorder.attempts()[0].outcomes.get("dns_no_answer"), None);
        let later = recorder.attempts_at(t0 + Duration::from_secs(20));
        assert_eq!(later[0].outcomes.get("dns_no_answer"), Some(&1));
        assert_eq!(later[1].outcomes.get("dns_no_answer"), Some(&1));
    }

    #[test]
    fn different_phase_cgroup_or_command_stay_apart() {
        let mut recorder = Recorder::default();
        let t = SystemTime::now();
        recorder.record(&query(), &origin(7, 1), "boot", t);
        recorder.record(&query(), &origin(7, 1), "upgrade", t);
        recorder.record(&query(), &origin(7, 2), "boot", t);
        let mut other = origin(8, 1);
        other.process.cmdline = Some(vec!["skopeo".into(), "copy".into()]);
        recorder.record(&query(), &other, "boot", t);
        // Same command line in a new process: the same attempt repeated.
        recorder.record(&query(), &origin(9, 1), "boot", t);
        assert_eq!(recorder.attempts().len(), 4);
        assert_eq!(recorder.attempts()[0].count, 2);
    }

    #[test]
    fn pod_and_container_come_from_the_cgroup() {
        let mut recorder = Recorder::default();
        let id = "cd".repeat(32);
        let mut o = origin(7, 1);
        o.owner = cgroup_path::parse(&format!(
            "/kubepods/besteffort/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/{id}"
        ));
        o.pod = Some(Pod::uid_only("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"));
        let a = recorder
            .record(&query(), &o, "boot", SystemTime::now())
            .unwrap();
        assert_eq!(
            a.pod.as_ref().unwrap().uid,
            "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
        );
        assert_eq!(a.container.as_ref().unwrap().runtime, "containerd");
    }

    /// The policy judges every attempt with the attempt's own phase, the
    /// report's policy section counts what each entry did, and the new
    /// fields serialize as the schema says.
    #[test]
    fn policy_judges_each_attempt_with_its_own_phase() {
        use crate::pipeline::{verdict as policy, verdict::Policy};
        let policy: Policy = serde_json::from_value(serde_json::json!({
            "enforce_phases": ["upgrade"],
            "allow": [
                {"component": "skopeo", "host": "quay.io", "reason": "mcd", "link": "https://x/1"},
                {"component": "skopeo", "reason": "old", "expires": "2020-01-01"}
            ]
        }))
        .unwrap();
        let mut recorder = Recorder::default();
        let t = SystemTime::now();
        let mut mirrored = query();
        mirrored.entry.mirrored = true;
        mirrored.entry.blocked = true;
        for phase in ["boot", "upgrade"] {
            let attempt = recorder.record(&mirrored, &origin(7, 1), phase, t).unwrap();
            policy.judge(attempt);
        }
        let mut other = origin(8, 2);
        other.component = "podman".into();
        let attempt = recorder.record(&query(), &other, "upgrade", t).unwrap();
        policy.judge(attempt);
        let attempts = recorder.attempts();
        assert_eq!(attempts[0].verdict, Verdict::NotEnforced);
        assert_eq!(attempts[0].allowed_by, None);
        assert_eq!(attempts[1].verdict, Verdict::Allowed);
        assert_eq!(
            attempts[1].allowed_by,
            Some(Allowance {
                reason: "mcd".into(),
                link: Some("https://x/1".into()),
                expires: None
            })
        );
        assert_eq!(attempts[2].verdict, Verdict::Violation);
        let json = serde_json::to_value(&attempts[1]).unwrap();
        assert_eq!(json["verdict"], "allowed");
        assert_eq!(json["allowed_by"]["reason"], "mcd");
        assert_eq!(json["mirror_fallback"], true);
        assert_eq!(json["registry"]["blocked"], true);
        assert_eq!(
            serde_json::to_value(&attempts[0]).unwrap()["verdict"],
            "not_enforced"
        );

        let section = policy::report(&policy, attempts, t);
        assert_eq!(section.allow[0].allowed_attempts, 1);
        assert!(!section.allow[0].expired);
        // The expired entry matched the upgrade-phase skopeo attempt.
        assert!(section.allow[1].expired);
        assert_eq!(section.allow[1].matched_after_expiry, 1);
        let summary = observer_report::summarize(attempts);
        assert_eq!(
            (
                summary.violations,
                summary.allowed,
                summary.not_enforced,
                summary.mirror_fallbacks
            ),
            (1, 1, 1, 2)
        );
    }

    #[test]
    fn a_full_table_counts_new_attempts_and_still_merges_kept_ones() {
        let mut recorder = Recorder::with_max_attempts(2);
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert!(
            recorder
                .record(&query(), &origin(7, 1), "boot", t)
                .is_some()
        );
        assert!(
            recorder
                .record(&query(), &origin(7, 2), "boot", t)
                .is_some()
        );
        // A third distinct attempt: counted, not kept.
        assert!(
            recorder
                .record(&query(), &origin(7, 3), "boot", t)
                .is_none()
        );
        assert!(
            recorder
                .record(&query(), &origin(7, 3), "upgrade", t)
                .is_none()
        );
        // A repeat of a kept one still merges.
        let kept = recorder.record(&query(), &origin(7, 1), "boot", t).unwrap();
        assert_eq!(kept.count, 2);
        assert_eq!(recorder.attempts().len(), 2);
        assert_eq!(recorder.not_recorded(), 2);
    }

    #[test]
    fn a_restored_record_is_merged_into_not_duplicated() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut before = Recorder::default();
        before.record(&query(), &origin(7, 1), "boot", t);
        before.record(&query(), &origin(7, 1), "boot", t);
        before.record(&connect(), &origin(8, 2), "boot", t);
        let kept = before.attempts_at(t);
        // The key the recorder merges by is the one a restored attempt has.
        assert_ne!(AttemptKey::of(&kept[0]), AttemptKey::of(&kept[1]));

        let mut after = Recorder::default();
        after.restore(kept.clone());
        let merged = after
            .record(&query(), &origin(7, 1), "boot", t + Duration::from_secs(5))
            .unwrap()
            .clone();
        assert_eq!(merged.count, 3);
        assert_eq!(merged.first_seen, t);
        assert_eq!(after.attempts().len(), 2);
        // Restoring the same record twice changes nothing.
        after.restore(kept);
        assert_eq!(after.attempts().len(), 2);
    }

    #[test]
    fn an_outcome_hands_back_the_attempt_it_changed_once() {
        let mut recorder = Recorder::default();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let connect = connect();
        let cookie = connect.cookie.expect("a connect has a cookie");
        recorder.record(&connect, &origin(7, 1), "boot", t);
        let changed = recorder.connection_outcome(cookie, "refused").cloned();
        assert_eq!(
            changed.and_then(|a| a.outcomes.get("refused").copied()),
            Some(1)
        );
        // Counted once per connection: nothing changes the second time.
        assert!(recorder.connection_outcome(cookie, "refused").is_none());
        assert!(recorder.connection_outcome(cookie + 1, "refused").is_none());
        recorder.record(&query(), &origin(7, 1), "boot", t);
        let changed = recorder.dns_outcome(1, "quay.io", "dns_nxdomain").cloned();
        assert_eq!(
            changed.and_then(|a| a.outcomes.get("dns_nxdomain").copied()),
            Some(1)
        );
        assert!(recorder.dns_outcome(9, "quay.io", "dns_nxdomain").is_none());
    }
}
