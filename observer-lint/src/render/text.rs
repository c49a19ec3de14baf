//! `--format text`: `FILE:LINE: SEVERITY[RULE] ...` lines, a fix under each,
//! and one summary line.

use std::fmt::Write;

use crate::{
    finding::Severity,
    outcome::{FailLevel, Outcome},
};

pub fn render(outcome: &Outcome, fail_level: FailLevel) -> String {
    let mut out = String::new();
    for (container, line, finding) in outcome.findings() {
        let location = &container.location;
        let pods = match container.pods {
            1 => String::new(),
            n => format!(" and {} more pods like it", n - 1),
        };
        let _ = writeln!(
            out,
            "{}:{line}: {}[{}] {}{pods}, {} {:?} (document {}): {}\n    fix: {}",
            location.file,
            finding.severity.as_str(),
            finding.rule,
            finding.workload,
            container_word(container.container.list.field()),
            container.container.name,
            location.document,
            finding.message,
            finding.fix,
        );
    }
    for problem in &outcome.problems {
        let _ = writeln!(out, "{problem}");
    }
    let errors = outcome.count(Severity::Error);
    let warnings = outcome.count(Severity::Warning);
    let _ = write!(
        out,
        "{errors} error(s), {warnings} warning(s) in {} container(s) of {} document(s) in {} input(s)",
        outcome.containers.iter().map(|c| c.pods).sum::<usize>(),
        outcome.documents(),
        outcome.inputs.len(),
    );
    if !outcome.problems.is_empty() {
        let _ = write!(
            out,
            "; {} input(s) or document(s) could not be read",
            outcome.problems.len()
        );
    }
    let verdict = match outcome.exit_code(fail_level) {
        0 => "pass".to_owned(),
        1 => format!("fail (--fail-level {})", fail_level.as_str()),
        _ => "fail (unreadable input)".to_owned(),
    };
    let _ = writeln!(out, ": {verdict}");
    out
}

fn container_word(list: &str) -> &'static str {
    match list {
        "initContainers" => "init container",
        "ephemeralContainers" => "ephemeral container",
        _ => "container",
    }
}
