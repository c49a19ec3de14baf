//! JUnit XML for CI systems: one testsuite per phase, one testcase per
//! component. A component that contacted a registry fails with the hosts,
//! the evidence and the first/last time; allowed contacts pass with the
//! reason in system-out; contacts in a phase the policy does not enforce
//! pass too (they are not violations), with `not enforced` lines in
//! system-out, rather than "skipped", which CI dashboards read as "did not
//! run"; a phase without attempts passes with one case.

use std::{collections::BTreeSet, time::SystemTime};

use quick_junit::{NonSuccessKind, Report as JUnitReport, TestCase, TestCaseStatus, TestSuite};

use super::{
    Report,
    groups::{by_phase_and_component, outcomes_text},
};

/// The testcase of a phase in which nothing contacted a registry.
pub const NO_ATTEMPT_CASE: &str = "no registry attempt";

pub fn to_junit(report: &Report) -> Result<String, quick_junit::SerializeError> {
    let mut junit = JUnitReport::new("registry-observer");
    for group in by_phase_and_component(report) {
        let mut suite = TestSuite::new(format!("phase {}", group.phase));
        if group.components.is_empty() {
            let mut case = TestCase::new(NO_ATTEMPT_CASE, TestCaseStatus::success());
            case.set_classname(format!("registry-observer.{}", group.phase));
            suite.add_test_case(case);
        }
        for component in &group.components {
            let status = if component.violation {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                status.set_type("registry-contact");
                status.set_message(format!(
                    "{} contacted {} during phase {}",
                    component.component,
                    list(&component.violation_hosts),
                    group.phase
                ));
                let evidence: BTreeSet<&str> =
                    component.evidence.iter().map(|e| e.as_str()).collect();
                let mut description = format!(
                    "hosts: {}\nevidence: {}\nevents: {}\nfirst seen: {}\nlast seen: {}\nprocesses: {}\n",
                    list(&component.violation_hosts),
                    list(&evidence),
                    component.events,
                    time(component.first_seen),
                    time(component.last_seen),
                    list(&component.processes),
                );
                if !component.outcomes.is_empty() {
                    description.push_str(&format!(
                        "outcomes: {}\n",
                        outcomes_text(&component.outcomes)
                    ));
                }
                if !component.nodes.is_empty() {
                    description.push_str(&format!("nodes: {}\n", list(&component.nodes)));
                }
                if !component.on_behalf_of.is_empty() {
                    description.push_str(&format!(
                        "on behalf of: {}\n",
                        list(&component.on_behalf_of)
                    ));
                }
                status.set_description(description);
                status
            } else {
                TestCaseStatus::success()
            };
            let mut case = TestCase::new(component.component.clone(), status);
            case.set_classname(format!("registry-observer.{}", group.phase));
            let mut notes: Vec<String> = component
                .not_enforced_hosts
                .iter()
                .map(|host| {
                    format!(
                        "not enforced: {host}: phase {} is outside the policy's enforce_phases",
                        group.phase
                    )
                })
                .collect();
            if !component.allowances.is_empty() {
                let reasons: Vec<String> = component
                    .allowances
                    .iter()
                    .map(|(host, allowance)| {
                        let mut line = format!("allowed: {host}: {}", allowance.reason);
                        if let Some(link) = &allowance.link {
                            line.push_str(&format!(" ({link})"));
                        }
                        if let Some(expires) = &allowance.expires {
                            line.push_str(&format!(", expires {expires}"));
                        }
                        line
                    })
                    .collect();
                notes.splice(0..0, reasons);
            }
            if !notes.is_empty() {
                case.set_system_out(notes.join("\n"));
            }
            suite.add_test_case(case);
        }
        junit.add_test_suite(suite);
    }
    junit.to_string()
}

fn list<T: AsRef<str>>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.as_ref().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn time(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        fixtures::{allowed, attempt, node_report},
        on_behalf_of::{Clue, Confidence, OnBehalfOf, OnBehalfOfKind},
    };

    #[test]
    fn suites_per_phase_cases_per_component() {
        let mut refused = attempt("boot", "machine-config-daemon", "quay.io", 5);
        refused.outcomes = BTreeMap::from([("refused".into(), 2)]);
        refused.on_behalf_of = Some(OnBehalfOf {
            kind: OnBehalfOfKind::Unit,
            pod: None,
            unit: Some("machine-config-daemon-pull.service".into()),
            process: None,
            image: None,
            evidence: vec![Clue::Ancestry],
            ancestry: Some("skopeo <- systemd".into()),
            confidence: Confidence::High,
            candidates: 1,
            policy: None,
            explanation: "skopeo was started directly by its unit".into(),
        });
        let mut mixed = attempt("boot", "machine-config-daemon", "registry.redhat.io", 7);
        mixed.outcomes = BTreeMap::from([("refused".into(), 1), ("established".into(), 1)]);
        let report = node_report(
            "node-a",
            &["boot", "upgrade"],
            vec![
                refused,
                mixed,
                allowed(
                    attempt("boot", "kubelet", "registry.redhat.io", 9),
                    "credential re-check",
                ),
            ],
        );
        let xml = to_junit(&report).unwrap();
        assert!(
            xml.contains("<testsuite name=\"phase boot\" tests=\"2\""),
            "{xml}"
        );
        assert!(xml.contains("failures=\"1\""), "{xml}");
        assert!(
            xml.contains(
                "<testcase name=\"machine-config-daemon\" classname=\"registry-observer.boot\">"
            ),
            "{xml}"
        );
        assert!(
            xml.contains("message=\"machine-config-daemon contacted quay.io, registry.redhat.io during phase boot\""),
            "{xml}"
        );
        assert!(xml.contains("evidence: dns_query"), "{xml}");
        assert!(
            xml.contains("on behalf of: machine-config-daemon-pull.service\n"),
            "{xml}"
        );
        // Summed per outcome over the component's attempts.
        assert!(
            xml.contains("outcomes: refused 3, established 1\n"),
            "{xml}"
        );
        assert!(
            xml.contains("first seen: 2027-01-15T08:00:05.000Z"),
            "{xml}"
        );
        assert!(xml.contains("last seen: 2027-01-15T08:00:08.000Z"), "{xml}");
        assert!(
            xml.contains(
                "<system-out>allowed: registry.redhat.io: credential re-check</system-out>"
            ),
            "{xml}"
        );
        // The quiet phase passes visibly.
        assert!(
            xml.contains("<testsuite name=\"phase upgrade\" tests=\"1\""),
            "{xml}"
        );
        assert!(xml.contains(NO_ATTEMPT_CASE), "{xml}");
    }

    #[test]
    fn not_enforced_contacts_pass_with_a_note() {
        let mut late = attempt("install", "kubelet", "quay.io", 3);
        late.verdict = crate::attempt::Verdict::NotEnforced;
        let report = node_report("node-a", &["install"], vec![late]);
        let xml = to_junit(&report).unwrap();
        assert!(xml.contains("failures=\"0\""), "{xml}");
        assert!(
            xml.contains("<system-out>not enforced: quay.io: phase install is outside the policy&apos;s enforce_phases</system-out>")
                || xml.contains("<system-out>not enforced: quay.io: phase install is outside the policy's enforce_phases</system-out>"),
            "{xml}"
        );
    }
}
