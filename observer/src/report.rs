//! The JSON report: what was attempted, and how complete the observation
//! was. The schema is docs/report.schema.json; bump SCHEMA_VERSION on any
//! incompatible change.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Write,
    path::Path,
    time::SystemTime,
};

use anyhow::Context;
use serde::Serialize;

use crate::{
    attribute::{AttributionStats, cri::CriStatus},
    classify::{Category, registries_conf::RegistriesConfReport},
    payload::PayloadStats,
    policy::PolicyReport,
    record::{Attempt, Verdict, rfc3339},
};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub observer: ObserverSection,
    pub summary: Summary,
    /// The policy in force and what each allowlist entry did.
    pub policy: PolicyReport,
    /// What was imported from registries.conf; null when not read.
    pub registries_conf: Option<RegistriesConfReport>,
    pub attempts: Vec<Attempt>,
}

#[derive(Debug, Serialize)]
pub struct ObserverSection {
    pub version: &'static str,
    pub hostname: Option<String>,
    pub kernel: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub started_at: SystemTime,
    #[serde(serialize_with = "rfc3339")]
    pub ended_at: SystemTime,
    /// `machine` (every process) or `command` (one command and its children).
    pub mode: &'static str,
    pub command: Option<Vec<String>>,
    pub command_exit_code: Option<i32>,
    /// The cgroup the command ran in (mode `command`).
    pub command_cgroup: Option<String>,
    pub cgroup2_mount: String,
    pub hooks: Vec<&'static str>,
    /// Hooks this kernel refused: their evidence is missing from the run.
    pub hooks_missing: Vec<HookMissing>,
    /// Records the kernel produced: delivered plus lost.
    pub events_total: u64,
    pub events_lost: u64,
    pub losses: Losses,
    /// Records or payloads that did not parse, by parser.
    pub parse_errors: BTreeMap<&'static str, u64>,
    /// Events that arrived incomplete, by kernel counter: DNS and TCP
    /// payloads longer than the capture (parsed as far as they went), execs
    /// whose argv or file name could not be read.
    pub truncated: BTreeMap<&'static str, u64>,
    /// TLS, HTTP and DNS-over-TCP streams: parsed, and unparsed by reason.
    pub payload_parsers: PayloadStats,
    pub attribution: AttributionStats,
    /// Whether pods could be named through the CRI API, and if not why.
    pub cri: CriStatus,
    /// True when every hook was attached for the whole run and no event was
    /// lost: only then does "no attempts" mean none happened.
    pub complete: bool,
}

#[derive(Debug, Serialize)]
pub struct HookMissing {
    pub hook: &'static str,
    pub reason: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Losses {
    /// Kernel side: ring buffer full or payload copy failed, by counter.
    pub kernel: BTreeMap<&'static str, u64>,
    /// User side: the agent's queue between reader and pipeline was full.
    pub user_queue: u64,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Summary {
    pub attempts: usize,
    pub violations: usize,
    pub allowed: usize,
    /// Attempts in phases the policy does not cover.
    pub not_enforced: usize,
    /// Attempts to sources that have mirrors (possible mirror fallbacks).
    pub mirror_fallbacks: usize,
    pub hosts: Vec<HostSummary>,
    pub components: Vec<String>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct HostSummary {
    pub host: String,
    pub category: Category,
    pub attempts: usize,
    pub events: u64,
    pub components: BTreeSet<String>,
}

pub fn summarize(attempts: &[Attempt]) -> Summary {
    let mut hosts: BTreeMap<String, HostSummary> = BTreeMap::new();
    for attempt in attempts {
        // Unnamed attempts (a connect() into a catalog CIDR) group by range.
        let host = attempt
            .host
            .clone()
            .unwrap_or_else(|| attempt.registry.pattern.clone());
        let summary = hosts.entry(host.clone()).or_insert_with(|| HostSummary {
            host,
            category: attempt.registry.category,
            attempts: 0,
            events: 0,
            components: BTreeSet::new(),
        });
        summary.attempts += 1;
        summary.events += attempt.count;
        summary.components.insert(attempt.component.clone());
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
    }
}

/// Writes atomically: a reader (or a crash) never sees half a report.
pub fn write(path: &Path, report: &Report) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(report).context("serializing the report")?;
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&json)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing the report to {}", path.display()))
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
    if path.is_dir() {
        return Err(format!(
            "the report path {} is a directory; give a file name, e.g. --report {}/registry-report.json",
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
            "cannot write the report to {} ({e}); choose a writable location with --report PATH",
            path.display()
        )),
    }
}
