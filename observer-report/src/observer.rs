//! The `observer` section: how the run went and how complete its view was
//! (hooks, losses, parsers, attribution, the CRI and Kubernetes sources).

use std::{collections::BTreeMap, time::SystemTime};

use serde::{Deserialize, Serialize};

use crate::{
    on_behalf_of::{IntentSignal, OnBehalfOfKind},
    time::{parse_rfc3339, rfc3339},
};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ObserverSection {
    pub version: String,
    pub hostname: Option<String>,
    pub kernel: Option<String>,
    #[serde(serialize_with = "rfc3339", deserialize_with = "parse_rfc3339")]
    pub started_at: SystemTime,
    /// When the run ended; in a snapshot, when the snapshot was taken.
    #[serde(serialize_with = "rfc3339", deserialize_with = "parse_rfc3339")]
    pub ended_at: SystemTime,
    /// True in a report the running agent served (`GET /report`): the
    /// pipeline's state at `ended_at`, while the run went on. Nothing in it
    /// is final: later events are missing, and on-behalf-of attribution,
    /// decided only when the run ends, is not in it (`attempts[].on_behalf_of`
    /// null). False, and absent from the JSON, in the report written at
    /// exit and in every report written before the field existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub snapshot: bool,
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
    /// With `--state-dir`: every agent run that added to this record, in
    /// order (absent for a single run without a state dir).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<RunReport>,
    /// Spans nothing observed: between one run's last sign of life and the
    /// next run's start. Any gap makes the record incomplete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<Gap>,
}

/// One agent run on a state dir.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunReport {
    #[serde(serialize_with = "rfc3339", deserialize_with = "parse_rfc3339")]
    pub started_at: SystemTime,
    /// When it ended; for a crash, its last sign of life; for the run
    /// still going (a snapshot), when the report was taken.
    #[serde(serialize_with = "rfc3339", deserialize_with = "parse_rfc3339")]
    pub ended_at: SystemTime,
    pub pid: u32,
    pub version: String,
    /// `clean` (its duration ran out or its command exited), `signal`
    /// (stopped by SIGTERM/SIGINT), `crashed` (it left no end: SIGKILL, OOM,
    /// power loss; found by the next run), `running`.
    pub ended: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
}

/// A span of time in which nothing was observed, and why.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Gap {
    #[serde(serialize_with = "rfc3339", deserialize_with = "parse_rfc3339")]
    pub from: SystemTime,
    #[serde(serialize_with = "rfc3339", deserialize_with = "parse_rfc3339")]
    pub to: SystemTime,
    pub reason: String,
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
    /// Registry events kept in no attempt because the attempts table was
    /// full (`--max-attempts`): their contacts are counted here only, so
    /// the run is incomplete.
    #[serde(default)]
    pub attempts_table: u64,
    /// With `--state-dir`: durable records not written (disk full, I/O
    /// error) and spool segments removed to stay under its size limit; the
    /// report of this run has them, the state dir's record does not.
    #[serde(default)]
    pub state_dir: u64,
    #[serde(default)]
    pub state_dir_segments_removed: u64,
    /// With `--state-dir`: damage found when the record was read back (a
    /// record torn by a crash, a corrupt record, one this build cannot
    /// read): what it held is not in the report.
    #[serde(default)]
    pub state_dir_damaged: u64,
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
        for gap in &self.gaps {
            reasons.push(format!(
                "nothing observed from {} to {} ({})",
                humantime::format_rfc3339_millis(gap.from),
                humantime::format_rfc3339_millis(gap.to),
                gap.reason
            ));
        }
        if self.losses.state_dir + self.losses.state_dir_segments_removed > 0 {
            reasons.push(format!(
                "the state dir's record lost {} record(s) and {} segment(s) (see observer.losses)",
                self.losses.state_dir, self.losses.state_dir_segments_removed
            ));
        }
        if self.losses.state_dir_damaged > 0 {
            reasons.push(format!(
                "{} damaged record(s) in the state dir were skipped (see observer.losses.state_dir_damaged)",
                self.losses.state_dir_damaged
            ));
        }
        if self.losses.attempts_table > 0 {
            reasons.push(format!(
                "{} registry event(s) in no attempt: the attempts table was full (raise --max-attempts)",
                self.losses.attempts_table
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

/// Counts of attributions that had to do with less than everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
// Counters added later (`from_lineage`) read as zero from older reports.
#[serde(default)]
pub struct AttributionStats {
    /// The process had exited before /proc was read and no exec event
    /// described it (it started before the agent).
    pub process_gone: u64,
    /// The process had exited before /proc was read; its exec and fork
    /// events described it.
    pub from_lineage: u64,
    /// The cgroup id matched no directory (removed, or outside our view).
    pub cgroup_unknown: u64,
    /// Attempts from a pod left without a name in the report, by reason:
    /// `cri_unavailable` (no CRI socket answered during the run),
    /// `unknown_to_cri` (the runtime answered but never listed it).
    pub pods_unnamed: BTreeMap<String, u64>,
    /// Container runtime contacts (containerd, crio, ...) that no pod's
    /// pull intent explains: they stay attributed to the runtime only
    /// (`observer.on_behalf_of` says how many intents there were).
    pub runtime_pulls_unattributed: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CriState {
    /// At least one socket answered at least once during the run.
    Connected,
    /// None did: pods are named by uid only.
    #[default]
    Unavailable,
}

/// How the CRI side of the run went, for the report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CriStatus {
    pub state: CriState,
    /// Why, when `unavailable`: one sentence.
    pub reason: Option<String>,
    pub sockets: Vec<SocketStatus>,
    /// Completed listings (all sockets asked once).
    pub refreshes: u64,
    /// Pods the last listing held, and removed ones still remembered.
    pub pods_live: usize,
    pub tombstones: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketStatus {
    pub path: String,
    /// From the CRI Version call, e.g. `containerd 1.6.20`.
    pub runtime: Option<String>,
    /// Successful listings from this socket.
    pub listings: u64,
    /// Failed connects and calls, by reason: `connect`, `timeout`, `call`,
    /// and `list_images` (pods are still named; image presence is not
    /// updated from this socket).
    pub failures: BTreeMap<String, u64>,
    pub last_error: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KubernetesState {
    /// Not used (no kubeconfig, not in a pod): `reason` says so.
    #[default]
    Off,
    /// The API server answered at least once.
    Connected,
    /// Configured, but no call succeeded: `reason` says why.
    Unavailable,
}

/// How the Kubernetes source went, for the report's `observer.kubernetes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesStatus {
    pub state: KubernetesState,
    pub reason: Option<String>,
    pub api_server: Option<String>,
    /// The node whose kubelet's events are used.
    pub node_name: Option<String>,
    pub field_selector: Option<String>,
    /// Event objects the watch delivered (new and updated).
    pub events_seen: u64,
    /// Those that became a pull intent.
    pub events_used: u64,
    /// The others, by reason (`other_node`, `stale`, `already_seen`, ...).
    pub events_ignored: BTreeMap<String, u64>,
    /// Pods read from the API (cache hits not counted).
    pub pods_fetched: u64,
    /// Pods that were gone (404, or recreated under the same name) when
    /// read: their intents carry no policy.
    pub pods_gone: u64,
    /// Failed calls by kind: `connect`, `timeout`, `unauthorized`,
    /// `forbidden`, `expired`, `throttled`, `server_error`, `api_error`,
    /// `decode`, `auth`, `other`; and `container_not_in_pod`.
    pub failures: BTreeMap<String, u64>,
    pub last_error: Option<String>,
}

/// Per parser: streams parsed and streams rejected, by reason.
///
/// Serializes as `{"tls":{"parsed":N,"unparsed":{"gap":N,...}},"http":...,
/// "dns_tcp":...,"dns_tcp_partial":N,"not_recognized":N}`; reads back (by
/// `report merge`) with absent parts as zero.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PayloadStats {
    pub tls: ParserStats,
    pub http: ParserStats,
    pub dns_tcp: ParserStats,
    /// DNS-over-TCP messages the stream ended inside, passed on cut short
    /// (also counted in `dns_tcp.parsed`).
    pub dns_tcp_partial: u64,
    /// Streams no parser claimed: other protocols, not errors.
    pub not_recognized: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ParserStats {
    pub parsed: u64,
    /// Keyed by [`super::UnparsedReason::as_str`]; only reasons that
    /// occurred appear.
    pub unparsed: BTreeMap<String, u64>,
}

impl ParserStats {
    /// Streams this parser rejected, whatever the reason (the issue's
    /// `sni_unparsed` for TLS).
    pub fn unparsed_total(&self) -> u64 {
        self.unparsed.values().sum()
    }
}

/// The report's `observer.on_behalf_of`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OnBehalfOfStats {
    /// Pull intents received, by signal (`cri_container_created`,
    /// `kubelet_pulling`).
    pub intents: BTreeMap<IntentSignal, u64>,
    /// Intents lost: the queue was full, or the log pushed out the oldest.
    pub intents_dropped: u64,
    /// Image names the CRI image ledger could not remember (it was full).
    pub images_dropped: u64,
    /// CRI image listings taken.
    pub image_listings: u64,
    /// Attempts given an `on_behalf_of`, by kind (`pod`, `unit`, `process`).
    pub attributed: BTreeMap<OnBehalfOfKind, u64>,
    /// Runtime contacts no intent explains (also in
    /// `attribution.runtime_pulls_unattributed`).
    pub unattributed: u64,
    /// Tool contacts whose caller could not be named (no ancestry).
    pub tools_unattributed: u64,
}
