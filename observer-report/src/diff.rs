//! `report diff BASE NEW`: what a new release contacts that the baseline
//! did not. Nodes are ignored (clusters differ in node names); a violation
//! is identified by (phase, component, host).

use std::collections::BTreeSet;

use serde::Serialize;

use super::{Report, is_violation};
use crate::attempt::Attempt;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ViolationKey {
    pub phase: String,
    pub component: String,
    pub host: String,
}

#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// Components that contacted any registry only in NEW.
    pub new_components: Vec<String>,
    /// Registry hosts contacted only in NEW.
    pub new_hosts: Vec<String>,
    /// Violations in NEW that BASE did not have: a regression.
    pub new_violations: Vec<ViolationKey>,
    /// Violations in BASE that NEW no longer has.
    pub resolved_violations: Vec<ViolationKey>,
}

impl Diff {
    pub fn regressed(&self) -> bool {
        !self.new_violations.is_empty()
    }
}

pub fn diff(base: &Report, new: &Report) -> Diff {
    let components = |r: &Report| -> BTreeSet<String> {
        r.attempts.iter().map(|a| a.component.clone()).collect()
    };
    let hosts = |r: &Report| -> BTreeSet<String> {
        r.attempts.iter().map(Attempt::host_or_range).collect()
    };
    let violations = |r: &Report| -> BTreeSet<ViolationKey> {
        r.attempts
            .iter()
            .filter(|a| is_violation(a.verdict))
            .map(|a| ViolationKey {
                phase: a.phase.clone(),
                component: a.component.clone(),
                host: a.host_or_range(),
            })
            .collect()
    };
    let (base_violations, new_violations) = (violations(base), violations(new));
    Diff {
        new_components: components(new)
            .difference(&components(base))
            .cloned()
            .collect(),
        new_hosts: hosts(new).difference(&hosts(base)).cloned().collect(),
        new_violations: new_violations
            .difference(&base_violations)
            .cloned()
            .collect(),
        resolved_violations: base_violations
            .difference(&new_violations)
            .cloned()
            .collect(),
    }
}

/// Human text; the first line is the verdict.
pub fn render(diff: &Diff, base_name: &str, new_name: &str) -> String {
    let mut out = if diff.regressed() {
        format!(
            "REGRESSION: {} new violation(s) in {new_name} compared with {base_name}\n",
            diff.new_violations.len()
        )
    } else {
        format!("no new violation in {new_name} compared with {base_name}\n")
    };
    let mut section = |title: &str, lines: Vec<String>| {
        if !lines.is_empty() {
            out.push_str(&format!("\n{title}:\n"));
            for line in lines {
                out.push_str(&format!("  {line}\n"));
            }
        }
    };
    let key = |v: &ViolationKey| format!("{} -> {} (phase {})", v.component, v.host, v.phase);
    section(
        "new violations",
        diff.new_violations.iter().map(key).collect(),
    );
    section("new components", diff.new_components.clone());
    section("new hosts", diff.new_hosts.clone());
    section(
        "resolved violations",
        diff.resolved_violations.iter().map(key).collect(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{allowed, attempt, node_report};

    #[test]
    fn new_violations_components_and_hosts() {
        let base = node_report(
            "a",
            &["boot"],
            vec![
                attempt("boot", "crio", "quay.io", 1),
                attempt("boot", "kubelet", "registry.redhat.io", 1),
            ],
        );
        let new = node_report(
            "b",
            &["boot", "upgrade"],
            vec![
                attempt("boot", "crio", "quay.io", 1),
                attempt("upgrade", "machine-config-daemon", "quay.io", 1),
                allowed(attempt("boot", "rpm-ostreed", "ghcr.io", 1), "ok"),
            ],
        );
        let d = diff(&base, &new);
        assert_eq!(d.new_components, ["machine-config-daemon", "rpm-ostreed"]);
        assert_eq!(d.new_hosts, ["ghcr.io"]);
        assert_eq!(
            d.new_violations,
            [ViolationKey {
                phase: "upgrade".into(),
                component: "machine-config-daemon".into(),
                host: "quay.io".into()
            }]
        );
        assert_eq!(d.resolved_violations.len(), 1);
        assert!(d.regressed());
        let text = render(&d, "base.json", "new.json");
        assert!(
            text.starts_with(
                "REGRESSION: 1 new violation(s) in new.json compared with base.json\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  machine-config-daemon -> quay.io (phase upgrade)\n"),
            "{text}"
        );
    }

    #[test]
    fn same_contacts_on_other_nodes_are_no_regression() {
        let mut base = node_report("a", &["boot"], vec![attempt("boot", "crio", "quay.io", 1)]);
        let new = node_report("b", &["boot"], vec![attempt("boot", "crio", "quay.io", 9)]);
        base.attempts[0].node = Some("a".into());
        let d = diff(&base, &new);
        assert_eq!(d, Diff::default());
        assert!(!d.regressed());
        assert!(render(&d, "x", "y").starts_with("no new violation in y compared with x\n"));
    }

    #[test]
    fn not_enforced_contacts_and_cidr_hosts_are_no_regression_but_are_listed() {
        let base = node_report("a", &["boot"], vec![]);
        let mut late = attempt("install", "kubelet", "quay.io", 1);
        late.verdict = crate::attempt::Verdict::NotEnforced;
        let mut cidr = attempt("install", "python3", "198.18.0.0/15", 1);
        cidr.host = None;
        cidr.verdict = crate::attempt::Verdict::NotEnforced;
        let new = node_report("b", &["install"], vec![late, cidr]);
        let d = diff(&base, &new);
        assert!(d.new_violations.is_empty());
        assert!(!d.regressed());
        assert_eq!(d.new_hosts, ["198.18.0.0/15", "quay.io"]);
    }
}
