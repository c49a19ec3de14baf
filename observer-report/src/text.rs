//! The summary as text: a table for the terminal, markdown for a
//! pull-request comment. One row per phase and component.

use std::time::SystemTime;

use comfy_table::{Table, presets};

use super::{
    Report,
    groups::{ComponentGroup, by_phase_and_component, outcomes_text},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Markdown,
}

pub fn summarize(report: &Report, format: Format) -> String {
    let groups = by_phase_and_component(report);
    let mut out = String::new();
    let heading = headline(report);
    match format {
        Format::Table => out.push_str(&format!("{heading}\n")),
        Format::Markdown => out.push_str(&format!("### registry-observer\n\n{heading}\n\n")),
    }
    let cluster = !report.nodes.is_empty();
    let mut table = Table::new();
    table.load_style(match format {
        Format::Table => presets::UTF8_FULL_CONDENSED,
        Format::Markdown => presets::ASCII_MARKDOWN,
    });
    let mut header = vec![
        "phase",
        "component",
        "verdict",
        "hosts",
        "evidence",
        "outcomes",
        "events",
    ];
    if cluster {
        header.push("nodes");
    }
    header.extend(["first seen", "last seen"]);
    table.set_header(header);
    let mut rows = 0;
    for group in &groups {
        if group.components.is_empty() {
            let mut row = vec![
                group.phase.clone(),
                "-".into(),
                "clean".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "0".into(),
            ];
            if cluster {
                row.push("-".into());
            }
            row.extend(["-".into(), "-".into()]);
            table.add_row(row);
            rows += 1;
        }
        for component in &group.components {
            table.add_row(row(&group.phase, component, cluster, format));
            rows += 1;
        }
    }
    if rows > 0 {
        out.push_str(&table.to_string());
        out.push('\n');
    }
    out
}

fn headline(report: &Report) -> String {
    let summary = &report.summary;
    // A snapshot (`GET /report` while the run went on) says so, and when it
    // was taken: it is not a finished run, and a cluster report merged from
    // one is not final either.
    let snapshots: Vec<String> = report
        .nodes
        .iter()
        .filter(|n| n.observer.snapshot)
        .map(|n| format!("{} at {}", n.name, time(n.observer.ended_at)))
        .collect();
    let scope = match &report.observer {
        Some(observer) => {
            let host = observer.hostname.as_deref().unwrap_or("(unknown host)");
            if observer.snapshot {
                format!(
                    "node {host}, snapshot taken at {} (the run goes on)",
                    time(observer.ended_at)
                )
            } else {
                format!("node {host}")
            }
        }
        None if snapshots.is_empty() => format!("cluster of {} node(s)", report.nodes.len()),
        None => format!(
            "cluster of {} node(s), {} of them snapshot(s) of a run that goes on ({})",
            report.nodes.len(),
            snapshots.len(),
            snapshots.join(", ")
        ),
    };
    let snapshot = report.observer.as_ref().is_some_and(|o| o.snapshot) || !snapshots.is_empty();
    let incomplete: Vec<String> = report
        .observer
        .iter()
        .chain(report.nodes.iter().map(|n| &n.observer))
        .filter_map(|o| o.incompleteness())
        .collect();
    let completeness = match (incomplete.is_empty(), snapshot) {
        (true, false) => "complete".to_string(),
        (true, true) => "complete so far".to_string(),
        (false, _) => format!("INCOMPLETE: {}", incomplete.join("; ")),
    };
    let not_enforced = if summary.not_enforced > 0 {
        format!(", {} not enforced", summary.not_enforced)
    } else {
        String::new()
    };
    format!(
        "{scope}: {} attempt(s), {} violation(s), {} allowed{not_enforced}; observation {completeness}",
        summary.attempts, summary.violations, summary.allowed
    )
}

fn row(phase: &str, group: &ComponentGroup, cluster: bool, format: Format) -> Vec<String> {
    let join = |items: Vec<String>| items.join(", ");
    let mut row = vec![
        phase.to_string(),
        component_cell(group, format),
        if group.violation {
            "violation".into()
        } else if group.allowances.is_empty() && !group.not_enforced_hosts.is_empty() {
            "not enforced".into()
        } else {
            "allowed".into()
        },
        join(group.hosts.iter().map(|h| code(h, format)).collect()),
        join(
            group
                .evidence
                .iter()
                .map(|e| e.as_str().to_string())
                .collect(),
        ),
        outcomes_text(&group.outcomes),
        group.events.to_string(),
    ];
    if cluster {
        row.push(join(group.nodes.iter().cloned().collect()));
    }
    row.push(time(group.first_seen));
    row.push(time(group.last_seen));
    row
}

/// Whom a runtime or tool worked for follow its name: `containerd for
/// shop/web-1`; past three, how many more.
const ON_BEHALF_OF_SHOWN: usize = 3;

fn component_cell(group: &ComponentGroup, format: Format) -> String {
    let component = code(&group.component, format);
    if group.on_behalf_of.is_empty() {
        return component;
    }
    let mut names: Vec<String> = group
        .on_behalf_of
        .iter()
        .take(ON_BEHALF_OF_SHOWN)
        .map(|name| code(name, format))
        .collect();
    let more = group.on_behalf_of.len().saturating_sub(ON_BEHALF_OF_SHOWN);
    if more > 0 {
        names.push(format!("+{more} more"));
    }
    format!("{component} for {}", names.join(", "))
}

/// Component and host names can hold `|` or `*`; code spans keep markdown
/// from reading them as table or emphasis syntax.
fn code(text: &str, format: Format) -> String {
    match format {
        Format::Table => text.to_string(),
        Format::Markdown => format!("`{}`", text.replace('`', "'").replace('|', "\\|")),
    }
}

fn time(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        attempt::Evidence,
        fixtures::{allowed, at, attempt, node_report},
        merge,
        on_behalf_of::{Clue, Confidence, OnBehalfOf, OnBehalfOfKind, OnBehalfOfPod},
    };

    fn report() -> Report {
        let mut crio = attempt("boot", "crio", "quay.io", 10);
        crio.on_behalf_of = Some(OnBehalfOf {
            kind: OnBehalfOfKind::Pod,
            pod: Some(OnBehalfOfPod {
                uid: Some("u-1".into()),
                namespace: Some("openshift-ovn-kubernetes".into()),
                name: Some("ovnkube-upgrades-prepuller-x7k2p".into()),
                container: Some("pull".into()),
            }),
            unit: None,
            process: None,
            image: Some("quay.io/ovn/ovn:latest".into()),
            evidence: vec![Clue::CriContainerCreated],
            ancestry: None,
            confidence: Confidence::High,
            candidates: 1,
            policy: None,
            explanation: "crio contacted quay.io for the pre-puller".into(),
        });
        crio.evidence.insert(Evidence::TlsSni);
        crio.outcomes = BTreeMap::from([("timed_out".into(), 1), ("established".into(), 2)]);
        node_report(
            "node-a",
            &["boot", "upgrade", "after"],
            vec![
                crio,
                allowed(
                    attempt("boot", "kubelet", "registry.redhat.io", 20),
                    "mirror",
                ),
                attempt("upgrade", "machine-config-daemon", "quay.io", 200),
                attempt("upgrade", "machine-config-daemon", "*.quay.io", 210),
            ],
        )
    }

    #[test]
    fn table_has_a_row_per_phase_and_component() {
        let text = summarize(&report(), Format::Table);
        assert!(
            text.starts_with(
                "node node-a: 4 attempt(s), 3 violation(s), 1 allowed; observation complete\n"
            ),
            "{text}"
        );
        let rows: Vec<&str> = text.lines().filter(|l| l.contains('│')).collect();
        // Header, crio, kubelet, machine-config-daemon, the clean phase.
        assert_eq!(rows.len(), 5, "{text}");
        assert!(
            rows[1].contains("boot")
                && rows[1]
                    .contains("crio for openshift-ovn-kubernetes/ovnkube-upgrades-prepuller-x7k2p")
                && rows[1].contains("dns_query, tls_sni")
                && rows[1].contains("established 2, timed_out 1"),
            "{text}"
        );
        assert!(
            rows[2].contains("kubelet") && rows[2].contains("allowed"),
            "{text}"
        );
        assert!(
            rows[3].contains("machine-config-daemon")
                && rows[3].contains("*.quay.io, quay.io")
                && rows[3].contains(" 4 ")
                && rows[3].contains("2027-01-15T08:03:20Z")
                && rows[3].contains("2027-01-15T08:03:31Z"),
            "{text}"
        );
        assert!(
            rows[4].contains("after") && rows[4].contains("clean"),
            "{text}"
        );
        assert!(
            !text.contains("nodes"),
            "no node column for one node: {text}"
        );
    }

    #[test]
    fn markdown_is_a_pipe_table_with_code_spans() {
        let text = summarize(&report(), Format::Markdown);
        assert!(
            text.starts_with("### registry-observer\n\nnode node-a:"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("| upgrade") && l.contains("`*.quay.io`, `quay.io`")),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("|---") || l.starts_with("|--")),
            "{text}"
        );
    }

    #[test]
    fn a_snapshot_says_so_and_when_it_was_taken() {
        let mut report = report();
        let observer = report.observer.as_mut().unwrap();
        observer.snapshot = true;
        observer.ended_at = at(400);
        for format in [Format::Table, Format::Markdown] {
            let text = summarize(&report, format);
            assert!(
                text.contains(
                    "node node-a, snapshot taken at 2027-01-15T08:06:40Z (the run goes on): \
                     4 attempt(s), 3 violation(s), 1 allowed; observation complete so far\n"
                ),
                "{text}"
            );
        }
        // The final report says nothing of snapshots.
        let text = summarize(&self::report(), Format::Table);
        assert!(
            !text.contains("snapshot") && !text.contains("so far"),
            "{text}"
        );
    }

    #[test]
    fn a_cluster_merged_from_a_snapshot_is_not_final() {
        let mut snapshot = node_report("node-b", &["boot"], vec![]);
        let observer = snapshot.observer.as_mut().unwrap();
        observer.snapshot = true;
        observer.ended_at = at(400);
        let cluster = merge::merge(vec![
            ("a.json".into(), report()),
            ("b.json".into(), snapshot),
        ]);
        let text = summarize(&cluster, Format::Table);
        assert!(
            text.starts_with(
                "cluster of 2 node(s), 1 of them snapshot(s) of a run that goes on \
                 (node-b at 2027-01-15T08:06:40Z): 4 attempt(s), 3 violation(s), 1 allowed; \
                 observation complete so far\n"
            ),
            "{text}"
        );
        let finals = merge::merge(vec![("a.json".into(), report())]);
        let text = summarize(&finals, Format::Table);
        assert!(
            text.starts_with("cluster of 1 node(s): ") && !text.contains("so far"),
            "{text}"
        );
    }

    #[test]
    fn incompleteness_is_in_the_headline() {
        let mut report = report();
        let observer = report.observer.as_mut().unwrap();
        observer.events_lost = 3;
        observer.complete = false;
        let text = summarize(&report, Format::Table);
        assert!(
            text.lines()
                .next()
                .unwrap()
                .ends_with("observation INCOMPLETE: 3 event(s) lost (see observer.losses)"),
            "{text}"
        );
    }
}
