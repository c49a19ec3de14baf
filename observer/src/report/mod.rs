//! The JSON report: what was attempted, and how complete the observation
//! was. The schema is docs/report.schema.json; bump SCHEMA_VERSION on any
//! incompatible change.
//!
//! Submodules turn reports into other things, as pure functions: `text`
//! (summary tables), `junit`, `merge` (nodes -> cluster) and `diff`
//! (baseline -> new).

pub mod diff;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod groups;
pub mod junit;
pub mod merge;
pub mod text;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Write,
    path::Path,
    time::SystemTime,
};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::{
    attribute::{AttributionStats, cri::CriStatus, on_behalf_of::OnBehalfOfStats},
    classify::{Category, registries_conf::RegistriesConfReport},
    kubernetes::KubernetesStatus,
    payload::PayloadStats,
    phase::PhaseMarker,
    policy::PolicyReport,
    record::{Attempt, Verdict, parse_rfc3339, rfc3339},
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
/// `observer.kubernetes`.
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
pub struct ObserverSection {
    pub version: String,
    pub hostname: Option<String>,
    pub kernel: Option<String>,
    #[serde(serialize_with = "rfc3339", deserialize_with = "parse_rfc3339")]
    pub started_at: SystemTime,
    #[serde(serialize_with = "rfc3339", deserialize_with = "parse_rfc3339")]
    pub ended_at: SystemTime,
    /// `machine` (every process) or `command` (one command and its children).
    pub mode: String,
    pub command: Option<Vec<String>>,
    pub command_exit_code: Option<i32>,
    /// The cgroup the command ran in (mode `command`).
    pub command_cgroup: Option<String>,
    pub cgroup2_mount: String,
    pub hooks: Vec<String>,
    /// How the packet programs learnt a DNS query's sender on this kernel:
    /// `current_task` or `socket_owner` (absent in older reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_sender: Option<String>,
    /// Hooks this kernel refused: their evidence is missing from the run.
    #[serde(default)]
    pub hooks_missing: Vec<HookMissing>,
    /// Records the kernel produced: delivered plus lost.
    pub events_total: u64,
    pub events_lost: u64,
    pub losses: Losses,
    /// Records or payloads that did not parse, by parser.
    pub parse_errors: BTreeMap<String, u64>,
    /// Events that arrived incomplete, by kernel counter: DNS and TCP
    /// payloads longer than the capture (parsed as far as they went), execs
    /// whose argv or file name could not be read. Version 1 reports had
    /// only `dns_truncated`; it reads into `truncated.dns_truncated`.
    #[serde(
        default,
        alias = "dns_truncated",
        deserialize_with = "truncated_counts"
    )]
    pub truncated: BTreeMap<String, u64>,
    /// TLS, HTTP and DNS-over-TCP streams: parsed, and unparsed by reason.
    #[serde(default)]
    pub payload_parsers: PayloadStats,
    #[serde(default)]
    pub attribution: AttributionStats,
    /// Whether pods could be named through the CRI API, and if not why.
    #[serde(default)]
    pub cri: CriStatus,
    /// Whether the Kubernetes API (kubelet `Pulling` events, pod specs) was
    /// used, and what came of it.
    #[serde(default)]
    pub kubernetes: KubernetesStatus,
    /// Pull intents seen and how runtime and tool attempts were attributed
    /// to whom they worked for.
    #[serde(default)]
    pub on_behalf_of: OnBehalfOfStats,
    /// True when every hook was attached for the whole run and no event was
    /// lost: only then does "no attempts" mean none happened.
    pub complete: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HookMissing {
    pub hook: String,
    /// The kernel's key words: the verifier's refusal line and the errno.
    pub reason: String,
    /// The evidence missing as a result (absent in reports before it was
    /// recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

/// `truncated` is a map of counters; a version 1 report's `dns_truncated`
/// is a bare count, the same counter.
fn truncated_counts<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Truncated {
        Counters(BTreeMap<String, u64>),
        DnsOnly(u64),
    }
    Ok(match Truncated::deserialize(deserializer)? {
        Truncated::Counters(counters) => counters,
        Truncated::DnsOnly(0) => BTreeMap::new(),
        Truncated::DnsOnly(n) => BTreeMap::from([("dns_truncated".to_string(), n)]),
    })
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Losses {
    /// Kernel side: ring buffer full or payload copy failed, by counter.
    pub kernel: BTreeMap<String, u64>,
    /// User side: the agent's queue between reader and pipeline was full.
    pub user_queue: u64,
    /// `--events` lines dropped because the writer fell behind or could not
    /// write: the attempts are all in the report, the trail has gaps.
    #[serde(default)]
    pub events_file: u64,
}

impl ObserverSection {
    /// Why the run cannot prove absence, if it cannot.
    pub fn incompleteness(&self) -> Option<String> {
        let mut reasons = Vec::new();
        if self.events_lost > 0 {
            reasons.push(format!(
                "{} event(s) lost (see observer.losses)",
                self.events_lost
            ));
        }
        if !self.hooks_missing.is_empty() {
            let hooks: Vec<&str> = self.hooks_missing.iter().map(|h| h.hook.as_str()).collect();
            reasons.push(format!(
                "hook(s) not attached: {} (see observer.hooks_missing)",
                hooks.join(", ")
            ));
        }
        if self.losses.events_file > 0 {
            reasons.push(format!(
                "{} line(s) of the events file dropped",
                self.losses.events_file
            ));
        }
        if !self.complete && reasons.is_empty() {
            reasons.push("the observation was incomplete".into());
        }
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }
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

/// Writes atomically: a reader (or a crash) never sees half a report.
pub fn write(path: &Path, report: &Report) -> anyhow::Result<()> {
    let mut json = serde_json::to_vec_pretty(report).context("serializing the report")?;
    json.push(b'\n');
    write_atomically(path, &json)
        .with_context(|| format!("writing the report to {}", path.display()))
}

/// A temporary sibling, fsync'd, then renamed over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A report file that could not be read: says which file and where.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReportFileError(pub String);

/// Reads a report for `summarize`, `merge` or `diff`.
pub fn load(path: &Path) -> Result<Report, ReportFileError> {
    let shown = path.display();
    let text = fs::read_to_string(path)
        .map_err(|e| ReportFileError(format!("{shown}: cannot read the report: {e}")))?;
    parse(&shown.to_string(), &text)
}

/// Parses report text; errors start with `NAME:LINE:COLUMN:`.
pub fn parse(name: &str, text: &str) -> Result<Report, ReportFileError> {
    let at = |e: &serde_json::Error| {
        // serde_json appends " at line L column C"; the position leads here.
        let message = e.to_string();
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(m, _)| m)
            .to_string();
        format!("{name}:{}:{}: {message}", e.line(), e.column())
    };
    match serde_json::from_str::<Report>(text) {
        Ok(report) => {
            if !READABLE_SCHEMA_VERSIONS.contains(&report.schema_version) {
                return Err(unsupported_version(name, report.schema_version));
            }
            if report.observer.is_none() && report.nodes.is_empty() {
                return Err(ReportFileError(format!(
                    "{name}: neither `observer` (a node's report) nor `nodes` (a cluster report): not a registry-observer report"
                )));
            }
            Ok(report)
        }
        Err(e) => {
            // A newer version fails on its new shape; say so rather than
            // naming a field.
            let version = serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| v.get("schema_version")?.as_u64());
            match version {
                Some(v) if !READABLE_SCHEMA_VERSIONS.contains(&(v as u32)) => {
                    Err(unsupported_version(name, v as u32))
                }
                _ => Err(ReportFileError(at(&e))),
            }
        }
    }
}

fn unsupported_version(name: &str, version: u32) -> ReportFileError {
    ReportFileError(format!(
        "{name}: schema_version {version} is not supported; this registry-observer reads versions {READABLE_SCHEMA_VERSIONS:?} (use a matching release)"
    ))
}

fn temp_sibling(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Fails early, before anything is attached, if the report could not be
/// written at the end: an observation whose report is lost is wasted.
pub fn check_writable(path: &Path) -> Result<(), String> {
    check_output_writable(path, "report", "--report", "registry-report.json")
}

/// [`check_writable`] for any file written at exit: `what` names it in the
/// message, `flag` and `example` say how to fix it.
pub fn check_output_writable(
    path: &Path,
    what: &str,
    flag: &str,
    example: &str,
) -> Result<(), String> {
    if path.is_dir() {
        return Err(format!(
            "the {what} path {} is a directory; give a file name, e.g. {flag} {}/{example}",
            path.display(),
            path.display()
        ));
    }
    let tmp = temp_sibling(path);
    match fs::File::create(&tmp) {
        Ok(_) => {
            let _ = fs::remove_file(&tmp);
            Ok(())
        }
        Err(e) => Err(format!(
            "cannot write the {what} to {} ({e}); choose a writable location with {flag} PATH",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        classify::Evidence,
        report::fixtures::{self, attempt, node_report},
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
