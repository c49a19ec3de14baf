//! Attempts grouped by phase, then by component: the shape the summary
//! table and the JUnit file both show.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::SystemTime,
};

use super::{Report, add_outcomes};
use crate::{
    attempt::Evidence,
    attempt::{Allowance, Attempt, Verdict},
    on_behalf_of::{OnBehalfOf, OnBehalfOfKind},
};

pub struct PhaseGroup {
    pub phase: String,
    /// None for a phase that only appears on attempts (no marker).
    pub started_at: Option<SystemTime>,
    pub components: Vec<ComponentGroup>,
}

pub struct ComponentGroup {
    pub component: String,
    /// True when any of its attempts in this phase is a violation.
    pub violation: bool,
    pub hosts: BTreeSet<String>,
    /// Hosts of its violations only.
    pub violation_hosts: BTreeSet<String>,
    pub evidence: BTreeSet<Evidence>,
    pub events: u64,
    /// The attempts' `outcomes`, summed per key.
    pub outcomes: BTreeMap<String, u64>,
    pub nodes: BTreeSet<String>,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
    /// Allowed hosts and why.
    pub allowances: BTreeMap<String, Allowance>,
    /// Hosts contacted in a phase outside the policy's `enforce_phases`.
    pub not_enforced_hosts: BTreeSet<String>,
    /// Processes (comm, exe) seen, for the JUnit failure text.
    pub processes: BTreeSet<String>,
    /// Whom a runtime or tool worked for (`ns/pod`, a unit, a program):
    /// its attempts' `on_behalf_of`.
    pub on_behalf_of: BTreeSet<String>,
}

/// How a summary names whom an attempt was made for.
pub fn on_behalf_of_name(found: &OnBehalfOf) -> Option<String> {
    match found.kind {
        OnBehalfOfKind::Pod => {
            let pod = found.pod.as_ref()?;
            match (&pod.namespace, &pod.name) {
                (Some(namespace), Some(name)) => Some(format!("{namespace}/{name}")),
                _ => pod.uid.as_ref().map(|uid| format!("pod/{uid}")),
            }
        }
        OnBehalfOfKind::Unit => found.unit.clone(),
        OnBehalfOfKind::Process => found.process.as_ref().map(|p| {
            p.exe
                .as_deref()
                .and_then(|exe| exe.rsplit('/').next())
                .unwrap_or(&p.comm)
                .to_string()
        }),
    }
}

/// Phases in marker order (then any other phase named by an attempt,
/// alphabetically); components alphabetically. Phases without attempts are
/// kept: "nothing happened during upgrade" is a result.
pub fn by_phase_and_component(report: &Report) -> Vec<PhaseGroup> {
    let mut order: Vec<(String, Option<SystemTime>)> = Vec::new();
    for marker in &report.phases {
        if !order.iter().any(|(name, _)| *name == marker.name) {
            order.push((marker.name.clone(), Some(marker.started_at)));
        }
    }
    let extra: BTreeSet<&str> = report
        .attempts
        .iter()
        .map(|a| a.phase.as_str())
        .filter(|phase| !order.iter().any(|(name, _)| name == phase))
        .collect();
    order.extend(extra.into_iter().map(|p| (p.to_string(), None)));

    order
        .into_iter()
        .map(|(phase, started_at)| {
            let mut components: BTreeMap<&str, ComponentGroup> = BTreeMap::new();
            for attempt in report.attempts.iter().filter(|a| a.phase == phase) {
                add(
                    components
                        .entry(&attempt.component)
                        .or_insert_with(|| empty(attempt)),
                    attempt,
                );
            }
            PhaseGroup {
                phase,
                started_at,
                components: components.into_values().collect(),
            }
        })
        .collect()
}

/// `refused 2, established 1`: outcomes as the summary and JUnit show
/// them, most frequent first; empty when none was seen.
pub fn outcomes_text(outcomes: &BTreeMap<String, u64>) -> String {
    let mut counted: Vec<(&String, &u64)> = outcomes.iter().collect();
    counted.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    counted
        .iter()
        .map(|(outcome, count)| format!("{outcome} {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn empty(attempt: &Attempt) -> ComponentGroup {
    ComponentGroup {
        component: attempt.component.clone(),
        violation: false,
        hosts: BTreeSet::new(),
        violation_hosts: BTreeSet::new(),
        evidence: BTreeSet::new(),
        events: 0,
        outcomes: BTreeMap::new(),
        nodes: BTreeSet::new(),
        first_seen: attempt.first_seen,
        last_seen: attempt.last_seen,
        allowances: BTreeMap::new(),
        not_enforced_hosts: BTreeSet::new(),
        processes: BTreeSet::new(),
        on_behalf_of: BTreeSet::new(),
    }
}

fn add(group: &mut ComponentGroup, attempt: &Attempt) {
    // A connect() into a catalog CIDR has no name: show the range.
    let host = attempt.host_or_range();
    match attempt.verdict {
        Verdict::Violation => {
            group.violation = true;
            group.violation_hosts.insert(host.clone());
        }
        Verdict::Allowed => {
            if let Some(allowance) = &attempt.allowed_by {
                group.allowances.insert(host.clone(), allowance.clone());
            }
        }
        Verdict::NotEnforced => {
            group.not_enforced_hosts.insert(host.clone());
        }
    }
    group.hosts.insert(host);
    group.evidence.extend(attempt.evidence.iter().copied());
    group.events += attempt.count;
    add_outcomes(&mut group.outcomes, &attempt.outcomes);
    if let Some(node) = &attempt.node {
        group.nodes.insert(node.clone());
    }
    group.first_seen = group.first_seen.min(attempt.first_seen);
    group.last_seen = group.last_seen.max(attempt.last_seen);
    if let Some(name) = attempt.on_behalf_of.as_ref().and_then(on_behalf_of_name) {
        group.on_behalf_of.insert(name);
    }
    let process = &attempt.process;
    group.processes.insert(match &process.exe {
        Some(exe) => format!("{} ({exe})", process.comm),
        None => process.comm.clone(),
    });
}
