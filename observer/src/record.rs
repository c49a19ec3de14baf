//! Stage 6, record: aggregate attributed matches into attempts.
//!
//! Repeated identical attempts (same phase, host, cgroup and process image)
//! become one entry with a count, first/last time and the union of evidence;
//! a DNS query and the connect() that follows it join into one attempt.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    time::SystemTime,
};

use serde::{Serialize, Serializer};

use crate::{
    attribute::{CgroupOwner, CgroupRef, Container, Origin, Pod, ProcessInfo},
    classify::{Category, Evidence, Match, Source},
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RegistryRef {
    /// The catalog pattern that matched (`quay.io`, `*.gcr.io`).
    pub pattern: String,
    pub category: Category,
    pub source: Source,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Dest {
    pub ip: String,
    pub port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Violation,
    Allowed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub host: Option<String>,
    pub registry: RegistryRef,
    /// The first destination connected to; null for DNS-only attempts.
    pub dest: Option<Dest>,
    pub evidence: BTreeSet<Evidence>,
    pub process: ProcessInfo,
    pub cgroup: CgroupRef,
    pub unit: Option<String>,
    pub container: Option<Container>,
    pub pod: Option<Pod>,
    pub component: String,
    pub phase: String,
    pub verdict: Verdict,
    #[serde(serialize_with = "rfc3339")]
    pub first_seen: SystemTime,
    #[serde(serialize_with = "rfc3339")]
    pub last_seen: SystemTime,
    /// Events merged into this attempt (each DNS query and connect()).
    pub count: u64,
}

pub fn rfc3339<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_millis(*time))
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct AttemptKey {
    phase: String,
    host: String,
    cgroup_id: u64,
    comm: String,
    exe: Option<String>,
    cmdline: Option<Vec<String>>,
}

#[derive(Default)]
pub struct Recorder {
    attempts: Vec<Attempt>,
    index: HashMap<AttemptKey, usize>,
}

impl Recorder {
    /// Records one match; returns the attempt it was merged into.
    pub fn record(
        &mut self,
        matched: &Match,
        origin: &Origin,
        phase: &str,
        at: SystemTime,
    ) -> &Attempt {
        let key = AttemptKey {
            phase: phase.to_string(),
            host: matched.host.clone(),
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
            None => {
                self.attempts.push(Attempt {
                    host: Some(matched.host.clone()),
                    registry: RegistryRef {
                        pattern: matched.entry.pattern.to_string(),
                        category: matched.entry.category,
                        source: matched.entry.source,
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
                    // Policy (allowlists) arrives with the policy stage; until
                    // then every registry contact is a violation.
                    verdict: Verdict::Violation,
                    first_seen: at,
                    last_seen: at,
                    count: 1,
                });
                self.index.insert(key, self.attempts.len() - 1);
                self.attempts.len() - 1
            }
        };
        &self.attempts[index]
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

    pub fn into_attempts(self) -> Vec<Attempt> {
        self.attempts
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{IpAddr, Ipv4Addr},
        time::Duration,
    };

    use super::*;
    use crate::{
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
            host: "quay.io".into(),
            entry: entry(),
            evidence: vec![Evidence::DnsQuery],
            dest: None,
            detail: Some("A".into()),
        }
    }

    fn connect() -> Match {
        Match {
            host: "quay.io".into(),
            entry: entry(),
            evidence: vec![Evidence::DnsAnswer, Evidence::Connect],
            dest: Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
                443,
            )),
            detail: None,
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
        let a = recorder.record(&query(), &o, "boot", SystemTime::now());
        assert_eq!(
            a.pod.as_ref().unwrap().uid,
            "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
        );
        assert_eq!(a.container.as_ref().unwrap().runtime, "containerd");
    }
}
