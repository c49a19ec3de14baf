//! The JSON report: what was attempted, and how complete the observation
//! was. The schema is docs/report.schema.json; bump SCHEMA_VERSION on any
//! incompatible change.
//!
//! The one crate that knows the report format: the model (`attempt`,
//! `process`, `on_behalf_of`, `observer`, `policy`, `phase`, `time`), the
//! files (`file`), and pure functions that turn reports into other things:
//! `text` (summary tables), `junit`, `merge` (nodes -> cluster), `diff`
//! (baseline -> new) and `groups`. No kernel, no async runtime: `lint`,
//! `webhook` and the `report` subcommands build without the agent.

pub mod attempt;
pub mod diff;
pub mod file;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod groups;
pub mod junit;
pub mod merge;
pub mod observer;
pub mod on_behalf_of;
pub mod phase;
pub mod policy;
pub mod process;
pub mod text;
pub mod time;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

use crate::time::{parse_rfc3339, rfc3339};
pub use crate::{
    attempt::{Allowance, Attempt, Category, Dest, Evidence, RegistryRef, Source, Verdict},
    file::{
        NotWritable, ReportFileError, WriteError, check_output_writable, check_writable, load,
        parse, write, write_atomically,
    },
    observer::{HookMissing, Losses, ObserverSection},
    phase::PhaseMarker,
    policy::{PolicyReport, RegistriesConfReport},
};

/// 2: `phases`, `attempts[].allowed_by`, per-host first/last seen,
/// cluster reports (`nodes`, `attempts[].node`) from `report merge`; the
/// capture's `observer.hooks_missing`, `observer.truncated` (replacing
/// `dns_truncated`), `observer.payload_parsers`, `attempts[].outcomes`,
/// the sendmsg/TLS/HTTP evidence kinds and `attribution.from_lineage`;
/// the policy's `policy` and `registries_conf` sections, the
/// `not_enforced` verdict, `summary.not_enforced`/`mirror_fallbacks`,
/// `attempts[].mirror_fallback`, `registry.blocked`, host-less (CIDR)
/// attempts, `observer.cri`, pod labels and `attribution.pods_unnamed`;
/// `observer.kubernetes`; `observer.snapshot` (a report served by the
/// running agent, `GET /report`).
/// Every field version 2 added reads as empty/zero/false from version 1.
pub const SCHEMA_VERSION: u32 = 2;
/// Versions `report summarize|merge|diff` read. Version 1 reports lack the
/// fields version 2 added; they read as one phase-less node.
pub const READABLE_SCHEMA_VERSIONS: [u32; 2] = [1, 2];

/// A node's report (`observer` set, written by `run`) or a cluster report
/// (`nodes` set, written by `report merge`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observer: Option<ObserverSection>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeEntry>,
    /// Phase markers in order; in a cluster report, each phase's earliest
    /// start on any node.
    #[serde(default)]
    pub phases: Vec<PhaseMarker>,
    pub summary: Summary,
    /// The policy in force and what each allowlist entry did (a node's
    /// report); null in a cluster report, whose nodes carry their own.
    #[serde(default)]
    pub policy: Option<PolicyReport>,
    /// What was imported from registries.conf; null when not read.
    #[serde(default)]
    pub registries_conf: Option<RegistriesConfReport>,
    pub attempts: Vec<Attempt>,
}

/// One node of a cluster report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeEntry {
    /// The node's hostname, or the report's file name when it had none.
    pub name: String,
    /// The report file it came from.
    pub source: String,
    pub observer: ObserverSection,
    pub phases: Vec<PhaseMarker>,
    /// The node report's `policy` and `registries_conf` sections.
    #[serde(default)]
    pub policy: Option<PolicyReport>,
    #[serde(default)]
    pub registries_conf: Option<RegistriesConfReport>,
    /// Attempts, violations and events seen on this node.
    pub attempts: usize,
    pub violations: usize,
    pub events: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub attempts: usize,
    pub violations: usize,
    pub allowed: usize,
    /// Attempts in phases the policy does not cover: neither violations nor
    /// allowed.
    #[serde(default)]
    pub not_enforced: usize,
    /// Attempts to sources that have mirrors (possible mirror fallbacks).
    #[serde(default)]
    pub mirror_fallbacks: usize,
    pub hosts: Vec<HostSummary>,
    pub components: Vec<String>,
    /// Per phase that had attempts, in order of its first attempt.
    #[serde(default)]
    pub phases: Vec<PhaseSummary>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PhaseSummary {
    pub phase: String,
    pub attempts: usize,
    pub violations: usize,
    pub events: u64,
    pub components: BTreeSet<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HostSummary {
    pub host: String,
    pub category: Category,
    pub attempts: usize,
    pub events: u64,
    pub components: BTreeSet<String>,
    /// Earliest and latest event for this host (across nodes when merged).
    #[serde(
        default = "epoch",
        serialize_with = "rfc3339",
        deserialize_with = "parse_rfc3339"
    )]
    pub first_seen: SystemTime,
    #[serde(
        default = "epoch",
        serialize_with = "rfc3339",
        deserialize_with = "parse_rfc3339"
    )]
    pub last_seen: SystemTime,
    /// Events per node; only in cluster reports.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, u64>,
    /// The attempts' `outcomes`, summed per key (across nodes when merged).
    #[serde(default)]
    pub outcomes: BTreeMap<String, u64>,
}

/// Adds `from`'s counts to `into`, key by key.
pub fn add_outcomes(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (outcome, count) in from {
        *into.entry(outcome.clone()).or_default() += count;
    }
}

fn epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH
}

pub fn summarize(attempts: &[Attempt]) -> Summary {
    let mut hosts: BTreeMap<String, HostSummary> = BTreeMap::new();
    for attempt in attempts {
        // Unnamed attempts (a connect() into a catalog CIDR) group by range.
        let host = attempt.host_or_range();
        let summary = hosts.entry(host.clone()).or_insert_with(|| HostSummary {
            host,
            category: attempt.registry.category,
            attempts: 0,
            events: 0,
            components: BTreeSet::new(),
            first_seen: attempt.first_seen,
            last_seen: attempt.last_seen,
            nodes: BTreeMap::new(),
            outcomes: BTreeMap::new(),
        });
        summary.attempts += 1;
        add_outcomes(&mut summary.outcomes, &attempt.outcomes);
        summary.events += attempt.count;
        summary.components.insert(attempt.component.clone());
        summary.first_seen = summary.first_seen.min(attempt.first_seen);
        summary.last_seen = summary.last_seen.max(attempt.last_seen);
        if let Some(node) = &attempt.node {
            *summary.nodes.entry(node.clone()).or_default() += attempt.count;
        }
    }
    let components: BTreeSet<String> = attempts.iter().map(|a| a.component.clone()).collect();
    let count = |verdict: Verdict| attempts.iter().filter(|a| a.verdict == verdict).count();
    Summary {
        attempts: attempts.len(),
        violations: count(Verdict::Violation),
        allowed: count(Verdict::Allowed),
        not_enforced: count(Verdict::NotEnforced),
        mirror_fallbacks: attempts.iter().filter(|a| a.mirror_fallback).count(),
        hosts: hosts.into_values().collect(),
        components: components.into_iter().collect(),
        phases: summarize_phases(attempts),
    }
}

fn summarize_phases(attempts: &[Attempt]) -> Vec<PhaseSummary> {
    let mut phases: BTreeMap<&str, (SystemTime, PhaseSummary)> = BTreeMap::new();
    for attempt in attempts {
        let (first, summary) = phases.entry(&attempt.phase).or_insert_with(|| {
            (
                attempt.first_seen,
                PhaseSummary {
                    phase: attempt.phase.clone(),
                    attempts: 0,
                    violations: 0,
                    events: 0,
                    components: BTreeSet::new(),
                },
            )
        });
        *first = (*first).min(attempt.first_seen);
        summary.attempts += 1;
        summary.violations += usize::from(is_violation(attempt.verdict));
        summary.events += attempt.count;
        summary.components.insert(attempt.component.clone());
    }
    let mut ordered: Vec<(SystemTime, PhaseSummary)> = phases.into_values().collect();
    ordered.sort_by_key(|(first, _)| *first);
    ordered.into_iter().map(|(_, summary)| summary).collect()
}

/// Whether a verdict fails a CI gate. `not_enforced` (a phase outside the
/// policy's `enforce_phases`) does not: it is reported, not judged.
pub fn is_violation(verdict: Verdict) -> bool {
    match verdict {
        Verdict::Violation => true,
        Verdict::Allowed | Verdict::NotEnforced => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        fixtures::{self, attempt, node_report},
        observer::{CriStatus, KubernetesStatus, PayloadStats},
    };

    #[test]
    fn a_written_report_reads_back() {
        let report = node_report(
            "node-a",
            &["boot"],
            vec![attempt("boot", "crio", "quay.io", 1)],
        );
        let json = serde_json::to_string_pretty(&report).unwrap();
        let again = parse("r.json", &json).unwrap();
        assert_eq!(again.observer, report.observer);
        assert_eq!(again.attempts, report.attempts);
        assert_eq!(again.phases, report.phases);
        assert_eq!(again.summary, report.summary);
    }

    #[test]
    fn only_a_snapshot_carries_observer_snapshot() {
        let mut report = node_report("n", &["boot"], vec![]);
        let value = serde_json::to_value(&report).unwrap();
        assert!(
            value["observer"].get("snapshot").is_none(),
            "the final report has no snapshot field: {value:#}"
        );
        // Reports written before the field read as final.
        let again = parse("final.json", &value.to_string()).unwrap();
        assert!(!again.observer.unwrap().snapshot);
        report.observer.as_mut().unwrap().snapshot = true;
        let value = serde_json::to_value(&report).unwrap();
        assert_eq!(value["observer"]["snapshot"], true);
        let again = parse("snapshot.json", &value.to_string()).unwrap();
        assert_eq!(again.observer, report.observer);
    }

    #[test]
    fn summary_groups_by_phase_in_order_of_first_attempt() {
        let report = node_report(
            "n",
            &["boot", "upgrade"],
            vec![
                attempt("upgrade", "mcd", "quay.io", 300),
                attempt("boot", "crio", "quay.io", 10),
                attempt("upgrade", "crio", "ghcr.io", 200),
            ],
        );
        let phases: Vec<(&str, usize, u64, Vec<&str>)> = report
            .summary
            .phases
            .iter()
            .map(|p| {
                (
                    p.phase.as_str(),
                    p.attempts,
                    p.events,
                    p.components.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            phases,
            [
                ("boot", 1, 2, vec!["crio"]),
                ("upgrade", 2, 4, vec!["crio", "mcd"])
            ]
        );
        assert_eq!(report.summary.phases[1].violations, 2);
    }

    #[test]
    fn malformed_reports_name_file_line_and_column() {
        let error = parse(
            "bad.json",
            "{\n  \"schema_version\": 2,\n  \"attempts\": [,]\n}",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("bad.json:3:16: expected value"),
            "{error}"
        );
        let error = parse("t.json", "{\"schema_version\": 2, \"summary\": 5}")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("t.json:1:"), "{error}");
        assert!(error.contains("invalid type"), "{error}");
        let error = parse("e.json", "").unwrap_err().to_string();
        assert!(error.starts_with("e.json:1:0: EOF"), "{error}");
    }

    #[test]
    fn other_schema_versions_and_documents_are_refused_by_name() {
        let error = parse("v9.json", "{\"schema_version\": 9, \"new\": []}")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("v9.json: schema_version 9 is not supported"),
            "{error}"
        );
        let mut report = node_report("n", &[], vec![]);
        report.observer = None;
        let json = serde_json::to_string(&report).unwrap();
        let error = parse("x.json", &json).unwrap_err().to_string();
        assert!(error.contains("neither `observer`"), "{error}");
    }

    #[test]
    fn version_1_reports_still_read() {
        let mut value = serde_json::to_value(node_report(
            "n",
            &["boot"],
            vec![attempt("boot", "crio", "quay.io", 1)],
        ))
        .unwrap();
        value["schema_version"] = 1.into();
        let object = value.as_object_mut().unwrap();
        object.remove("phases");
        object["attempts"][0]
            .as_object_mut()
            .unwrap()
            .remove("allowed_by");
        for host in object["summary"]["hosts"].as_array_mut().unwrap() {
            let host = host.as_object_mut().unwrap();
            host.remove("first_seen");
            host.remove("last_seen");
        }
        // Version 1 had no capture fields beyond connect and DNS.
        let observer = object["observer"].as_object_mut().unwrap();
        for field in ["hooks_missing", "truncated", "payload_parsers"] {
            observer.remove(field);
        }
        observer.insert("dns_truncated".into(), 3.into());
        observer["attribution"]
            .as_object_mut()
            .unwrap()
            .remove("from_lineage");
        object["attempts"][0]
            .as_object_mut()
            .unwrap()
            .remove("outcomes");
        // Nor policy, registries.conf or CRI fields.
        object.remove("policy");
        object.remove("registries_conf");
        for field in ["not_enforced", "mirror_fallbacks"] {
            object["summary"].as_object_mut().unwrap().remove(field);
        }
        let attempt = object["attempts"][0].as_object_mut().unwrap();
        attempt.remove("mirror_fallback");
        attempt["registry"]
            .as_object_mut()
            .unwrap()
            .remove("blocked");
        attempt["pod"] = serde_json::json!({
            "uid": "0f1e2d3c", "namespace": null, "name": null, "container": null
        });
        let observer = object["observer"].as_object_mut().unwrap();
        observer.remove("cri");
        observer.remove("kubernetes");
        observer["attribution"]
            .as_object_mut()
            .unwrap()
            .remove("pods_unnamed");
        let report = parse("old.json", &value.to_string()).unwrap();
        assert_eq!(report.policy, None);
        assert_eq!(report.registries_conf, None);
        assert_eq!(report.summary.not_enforced, 0);
        assert!(!report.attempts[0].mirror_fallback);
        assert!(!report.attempts[0].registry.blocked);
        assert!(report.attempts[0].pod.as_ref().unwrap().labels.is_empty());
        assert_eq!(report.schema_version, 1);
        assert!(report.phases.is_empty());
        assert_eq!(report.attempts[0].allowed_by, None);
        assert!(report.attempts[0].outcomes.is_empty());
        let observer = report.observer.unwrap();
        assert_eq!(
            observer.truncated,
            BTreeMap::from([("dns_truncated".to_string(), 3)])
        );
        assert!(observer.hooks_missing.is_empty());
        assert_eq!(observer.payload_parsers, PayloadStats::default());
        assert_eq!(observer.cri, CriStatus::default());
        assert_eq!(observer.kubernetes, KubernetesStatus::default());
    }

    #[test]
    fn not_enforced_is_neither_violation_nor_allowed_and_cidr_hosts_group_by_range() {
        let mut late = attempt("install", "kubelet", "quay.io", 5);
        late.verdict = Verdict::NotEnforced;
        let mut cidr = attempt("boot", "python3", "198.18.0.0/15", 7);
        cidr.host = None;
        cidr.mirror_fallback = true;
        let report = node_report(
            "n",
            &["boot", "install"],
            vec![
                late,
                cidr,
                fixtures::allowed(attempt("boot", "crio", "quay.io", 9), "known"),
            ],
        );
        let summary = &report.summary;
        assert_eq!(
            (
                summary.attempts,
                summary.violations,
                summary.allowed,
                summary.not_enforced,
                summary.mirror_fallbacks
            ),
            (3, 1, 1, 1, 1)
        );
        let hosts: Vec<&str> = summary.hosts.iter().map(|h| h.host.as_str()).collect();
        assert_eq!(hosts, ["198.18.0.0/15", "quay.io"]);
        let install = summary
            .phases
            .iter()
            .find(|p| p.phase == "install")
            .unwrap();
        assert_eq!(install.violations, 0);
        // Round trip keeps the verdict, the null host and the policy section.
        let mut report = report;
        report.policy = Some(PolicyReport {
            enforce_phases: vec!["boot".into()],
            allow: vec![],
        });
        let again = parse("r.json", &serde_json::to_string(&report).unwrap()).unwrap();
        assert_eq!(again.attempts, report.attempts);
        assert_eq!(again.policy, report.policy);
    }

    #[test]
    fn capture_fields_read_back() {
        let mut report = node_report("n", &["boot"], vec![attempt("boot", "crio", "quay.io", 1)]);
        report.attempts[0].outcomes = BTreeMap::from([("refused".into(), 2)]);
        report.attempts[0].evidence.insert(Evidence::Sendmsg);
        let observer = report.observer.as_mut().unwrap();
        observer.hooks_missing = vec![HookMissing {
            hook: "sendmsg4".into(),
            reason: "EINVAL".into(),
            evidence: None,
        }];
        observer.truncated = BTreeMap::from([("tcp_truncated".into(), 5)]);
        observer.payload_parsers.tls.parsed = 7;
        observer
            .payload_parsers
            .http
            .unparsed
            .insert("too_many_headers".into(), 1);
        observer.attribution.from_lineage = 2;
        let json = serde_json::to_string(&report).unwrap();
        let again = parse("r.json", &json).unwrap();
        assert_eq!(again.observer, report.observer);
        assert_eq!(again.attempts, report.attempts);
    }

    #[test]
    fn a_missing_hook_makes_the_run_incomplete() {
        let mut report = node_report("n", &[], vec![]);
        let observer = report.observer.as_mut().unwrap();
        assert_eq!(observer.incompleteness(), None);
        observer.hooks_missing = vec![
            HookMissing {
                hook: "sendmsg4".into(),
                reason: "EINVAL".into(),
                evidence: None,
            },
            HookMissing {
                hook: "process_exec".into(),
                reason: "no BTF".into(),
                evidence: Some("process lineage".into()),
            },
        ];
        let reason = observer.incompleteness().unwrap();
        assert_eq!(
            reason,
            "hook(s) not attached: sendmsg4, process_exec (see observer.hooks_missing)"
        );
    }
}
