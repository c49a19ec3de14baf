//! `report merge`: many nodes' reports -> one cluster report. Every attempt
//! is kept and tagged with its node; the summary counts per node and gives
//! first/last seen across nodes.

use std::collections::{BTreeMap, BTreeSet};

use super::{NodeEntry, Report, SCHEMA_VERSION, is_violation, summarize};
use crate::{attempt::Attempt, phase::PhaseMarker};

/// `inputs`: (file name as given, its report). Cluster reports may be
/// merged again; their nodes are carried over.
pub fn merge(inputs: Vec<(String, Report)>) -> Report {
    let mut nodes: Vec<NodeEntry> = Vec::new();
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut taken: BTreeSet<String> = BTreeSet::new();
    for (source, report) in inputs {
        match report.observer {
            Some(observer) => {
                let wanted = observer
                    .hostname
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| file_stem(&source));
                let name = unique(&wanted, &source, &mut taken);
                let node_attempts: Vec<Attempt> = report
                    .attempts
                    .into_iter()
                    .map(|mut a| {
                        a.node = Some(name.clone());
                        a
                    })
                    .collect();
                let mut node = node_entry(name, source, observer, report.phases, &node_attempts);
                node.policy = report.policy;
                node.registries_conf = report.registries_conf;
                nodes.push(node);
                attempts.extend(node_attempts);
            }
            None => {
                let mut renamed: BTreeMap<String, String> = BTreeMap::new();
                for mut node in report.nodes {
                    let name = unique(&node.name, &source, &mut taken);
                    renamed.insert(node.name.clone(), name.clone());
                    node.name = name;
                    nodes.push(node);
                }
                attempts.extend(report.attempts.into_iter().map(|mut a| {
                    if let Some(node) = &a.node {
                        a.node = renamed.get(node).cloned().or(a.node);
                    }
                    a
                }));
            }
        }
    }
    let phases = earliest_phases(nodes.iter().flat_map(|n| n.phases.iter()));
    Report {
        schema_version: SCHEMA_VERSION,
        observer: None,
        nodes,
        phases,
        summary: summarize(&attempts),
        policy: None,
        registries_conf: None,
        attempts,
    }
}

fn node_entry(
    name: String,
    source: String,
    observer: super::ObserverSection,
    phases: Vec<PhaseMarker>,
    attempts: &[Attempt],
) -> NodeEntry {
    NodeEntry {
        name,
        source,
        observer,
        phases,
        policy: None,
        registries_conf: None,
        attempts: attempts.len(),
        violations: attempts.iter().filter(|a| is_violation(a.verdict)).count(),
        events: attempts.iter().map(|a| a.count).sum(),
    }
}

/// Two reports from one host (two runs, or a reinstalled node) stay apart.
fn unique(wanted: &str, source: &str, taken: &mut BTreeSet<String>) -> String {
    let mut name = wanted.to_string();
    if taken.contains(&name) {
        name = format!("{wanted} ({source})");
    }
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{wanted} ({source}) #{n}");
        n += 1;
    }
    taken.insert(name.clone());
    name
}

fn file_stem(source: &str) -> String {
    std::path::Path::new(source)
        .file_stem()
        .map_or_else(|| source.to_string(), |s| s.to_string_lossy().into_owned())
}

/// One marker per phase name: its earliest start on any node, in order.
fn earliest_phases<'a>(markers: impl Iterator<Item = &'a PhaseMarker>) -> Vec<PhaseMarker> {
    let mut earliest: BTreeMap<&str, &PhaseMarker> = BTreeMap::new();
    for marker in markers {
        earliest
            .entry(&marker.name)
            .and_modify(|m| {
                if marker.started_at < m.started_at {
                    *m = marker;
                }
            })
            .or_insert(marker);
    }
    let mut phases: Vec<PhaseMarker> = earliest.into_values().cloned().collect();
    phases.sort_by_key(|m| m.started_at);
    phases
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{at, attempt, node_report};

    #[test]
    fn nodes_keep_their_attempts_and_counts() {
        let a = node_report(
            "node-a",
            &["boot", "upgrade"],
            vec![
                attempt("boot", "crio", "quay.io", 50),
                attempt("upgrade", "machine-config-daemon", "quay.io", 300),
            ],
        );
        let mut b = node_report(
            "node-b",
            &["boot", "upgrade"],
            vec![attempt("upgrade", "machine-config-daemon", "quay.io", 250)],
        );
        // node-b was marked earlier.
        b.phases[1].started_at = at(90);
        let merged = merge(vec![("a.json".into(), a), ("b.json".into(), b)]);
        assert!(merged.observer.is_none());
        let names: Vec<&str> = merged.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["node-a", "node-b"]);
        assert_eq!(merged.nodes[0].attempts, 2);
        assert_eq!(merged.nodes[0].violations, 2);
        assert_eq!(merged.nodes[0].events, 4);
        assert_eq!(merged.nodes[1].source, "b.json");
        assert_eq!(merged.attempts.len(), 3);
        assert_eq!(merged.attempts[2].node.as_deref(), Some("node-b"));
        let quay = &merged.summary.hosts[0];
        assert_eq!(quay.host, "quay.io");
        assert_eq!(
            quay.nodes,
            BTreeMap::from([("node-a".into(), 4), ("node-b".into(), 2)])
        );
        assert_eq!(quay.first_seen, at(50));
        assert_eq!(quay.last_seen, at(301));
        let phases: Vec<(&str, _)> = merged
            .phases
            .iter()
            .map(|p| (p.name.as_str(), p.started_at))
            .collect();
        assert_eq!(phases, [("boot", at(0)), ("upgrade", at(90))]);
        // The merged report is itself a readable report.
        let json = serde_json::to_string(&merged).unwrap();
        let again = super::super::parse("merged.json", &json).unwrap();
        assert_eq!(again.nodes, merged.nodes);
    }

    #[test]
    fn outcomes_stay_on_their_attempts_and_sum_per_host() {
        let mut on_a = attempt("boot", "crio", "quay.io", 1);
        on_a.outcomes = BTreeMap::from([("refused".into(), 2), ("established".into(), 1)]);
        let mut on_b = attempt("boot", "crio", "quay.io", 2);
        on_b.outcomes = BTreeMap::from([("refused".into(), 1), ("dns_nxdomain".into(), 4)]);
        let merged = merge(vec![
            (
                "a.json".into(),
                node_report("node-a", &["boot"], vec![on_a]),
            ),
            (
                "b.json".into(),
                node_report("node-b", &["boot"], vec![on_b]),
            ),
        ]);
        assert_eq!(merged.attempts[0].outcomes["refused"], 2);
        assert_eq!(merged.attempts[1].outcomes["dns_nxdomain"], 4);
        assert_eq!(
            merged.summary.hosts[0].outcomes,
            BTreeMap::from([
                ("dns_nxdomain".into(), 4),
                ("established".into(), 1),
                ("refused".into(), 3)
            ])
        );
        // Merging the cluster report again changes nothing per host.
        let again = merge(vec![("cluster.json".into(), merged.clone())]);
        assert_eq!(again.summary.hosts, merged.summary.hosts);
    }

    #[test]
    fn a_snapshot_stays_marked_on_its_node_through_merges() {
        let mut snapshot = node_report(
            "node-a",
            &["boot"],
            vec![attempt("boot", "crio", "quay.io", 1)],
        );
        snapshot.observer.as_mut().unwrap().snapshot = true;
        let finished = node_report("node-b", &["boot"], vec![]);
        let merged = merge(vec![
            ("a.json".into(), snapshot),
            ("b.json".into(), finished),
        ]);
        let marked: Vec<(&str, bool)> = merged
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.observer.snapshot))
            .collect();
        assert_eq!(marked, [("node-a", true), ("node-b", false)]);
        // In the JSON only the snapshot's node carries the field.
        let value = serde_json::to_value(&merged).unwrap();
        assert_eq!(value["nodes"][0]["observer"]["snapshot"], true);
        assert!(value["nodes"][1]["observer"].get("snapshot").is_none());
        // Read back and merged again, the mark is kept.
        let json = serde_json::to_string(&merged).unwrap();
        let again = merge(vec![(
            "cluster.json".into(),
            super::super::parse("cluster.json", &json).unwrap(),
        )]);
        assert_eq!(again.nodes, merged.nodes);
        assert!(again.nodes[0].observer.snapshot);
    }

    #[test]
    fn same_host_twice_and_cluster_inputs_stay_distinct() {
        let a = node_report(
            "node-a",
            &["boot"],
            vec![attempt("boot", "crio", "quay.io", 1)],
        );
        let again = a.clone();
        let first = merge(vec![("run1.json".into(), a), ("run2.json".into(), again)]);
        let names: Vec<&str> = first.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["node-a", "node-a (run2.json)"]);
        assert_eq!(
            first.attempts[1].node.as_deref(),
            Some("node-a (run2.json)")
        );

        let c = node_report("node-c", &["boot"], vec![]);
        let second = merge(vec![("cluster.json".into(), first), ("c.json".into(), c)]);
        assert_eq!(second.nodes.len(), 3);
        assert_eq!(second.attempts.len(), 2);
        assert_eq!(second.summary.hosts[0].nodes.len(), 2);
    }
}
