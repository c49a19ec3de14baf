//! Reports for the unit tests of the report's submodules.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, SystemTime},
};

use super::{Losses, ObserverSection, Report, SCHEMA_VERSION, summarize};
use crate::{
    attempt::{Allowance, Attempt, Category, Evidence, RegistryRef, Source, Verdict},
    observer::{AttributionStats, CriStatus, KubernetesStatus, PayloadStats},
    phase::{PhaseMarker, PhaseSource},
    process::{CgroupRef, ProcessInfo},
};

/// 2027-01-15T08:00:00Z plus `seconds`.
pub fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
}

pub fn attempt(phase: &str, component: &str, host: &str, seen: u64) -> Attempt {
    Attempt {
        host: Some(host.into()),
        registry: RegistryRef {
            pattern: host.into(),
            category: Category::ImageRegistry,
            source: Source::Builtin,
            blocked: false,
        },
        dest: None,
        evidence: BTreeSet::from([Evidence::DnsQuery]),
        process: ProcessInfo {
            pid: 7,
            comm: "skopeo".into(),
            uid: Some(0),
            exe: Some("/usr/bin/skopeo".into()),
            cmdline: None,
            ancestors: vec![],
        },
        cgroup: CgroupRef {
            id: 1,
            path: Some(format!("/system.slice/{component}.service")),
        },
        unit: Some(format!("{component}.service")),
        container: None,
        pod: None,
        component: component.into(),
        phase: phase.into(),
        verdict: Verdict::Violation,
        allowed_by: None,
        mirror_fallback: false,
        first_seen: at(seen),
        last_seen: at(seen + 1),
        count: 2,
        node: None,
        outcomes: BTreeMap::new(),
        on_behalf_of: None,
    }
}

pub fn allowed(mut attempt: Attempt, reason: &str) -> Attempt {
    attempt.verdict = Verdict::Allowed;
    attempt.allowed_by = Some(Allowance {
        reason: reason.into(),
        link: None,
        expires: None,
    });
    attempt
}

pub fn node_report(hostname: &str, phases: &[&str], attempts: Vec<Attempt>) -> Report {
    Report {
        schema_version: SCHEMA_VERSION,
        observer: Some(ObserverSection {
            version: "0.1.0".into(),
            hostname: Some(hostname.into()),
            kernel: Some("6.18.0".into()),
            started_at: at(0),
            ended_at: at(600),
            snapshot: false,
            mode: "machine".into(),
            command: None,
            command_exit_code: None,
            command_cgroup: None,
            cgroup2_mount: "/sys/fs/cgroup".into(),
            hooks: vec!["connect4".into()],
            dns_sender: None,
            hooks_missing: vec![],
            events_total: 10,
            events_lost: 0,
            losses: Losses::default(),
            parse_errors: BTreeMap::new(),
            truncated: BTreeMap::new(),
            payload_parsers: PayloadStats::default(),
            attribution: AttributionStats::default(),
            cri: CriStatus::default(),
            kubernetes: KubernetesStatus::default(),
            on_behalf_of: Default::default(),
            complete: true,
            runs: vec![],
            gaps: vec![],
        }),
        nodes: vec![],
        phases: phases
            .iter()
            .enumerate()
            .map(|(n, name)| PhaseMarker {
                name: name.to_string(),
                started_at: at(n as u64 * 100),
                source: if n == 0 {
                    PhaseSource::Start
                } else {
                    PhaseSource::Mark
                },
            })
            .collect(),
        summary: summarize(&attempts),
        policy: None,
        registries_conf: None,
        attempts,
    }
}
