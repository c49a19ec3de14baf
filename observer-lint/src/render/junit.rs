//! `--format junit`: a test suite per input, a test case per checked
//! container. A case fails when one of its findings is at or above
//! `--fail-level` (so the JUnit verdict is the exit code's); every finding is
//! listed in the case's system-out. Inputs that could not be read are
//! test cases with an error.

use std::fmt::Write;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use crate::outcome::{FailLevel, LocatedContainer, Outcome};

pub fn render(outcome: &Outcome, fail_level: FailLevel) -> String {
    let mut report = Report::new("registry-observer lint");
    let mut suites: Vec<TestSuite> = outcome
        .inputs
        .iter()
        .map(|(name, _)| TestSuite::new(name.as_str()))
        .collect();
    let suite_of = |suites: &mut Vec<TestSuite>, file: &str| -> usize {
        match suites.iter().position(|s| s.name.as_str() == file) {
            Some(i) => i,
            None => {
                suites.push(TestSuite::new(file));
                suites.len() - 1
            }
        }
    };
    for container in &outcome.containers {
        let i = suite_of(&mut suites, &container.location.file);
        suites[i].add_test_case(test_case(container, fail_level));
    }
    for problem in &outcome.problems {
        let i = suite_of(&mut suites, &problem.file);
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
        status
            .set_message(problem.to_string())
            .set_type("unreadable-input");
        let name = match problem.document {
            Some(document) => format!("document {document}"),
            None => "read".to_owned(),
        };
        let mut case = TestCase::new(name, status);
        case.set_classname(problem.file.as_str());
        suites[i].add_test_case(case);
    }
    report.add_test_suites(suites);
    report
        .to_string()
        .expect("serializing JUnit XML to memory cannot fail")
}

fn test_case(container: &LocatedContainer, fail_level: FailLevel) -> TestCase {
    let failing: Vec<_> = container
        .findings
        .iter()
        .filter(|(_, f)| fail_level.fails(f.severity))
        .collect();
    let status = match failing.first() {
        None => TestCaseStatus::success(),
        Some((line, first)) => {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            let mut description = String::new();
            for (line, finding) in &failing {
                let _ = writeln!(
                    description,
                    "line {line}: {}: {}\nfix: {}",
                    finding.rule, finding.message, finding.fix
                );
            }
            status
                .set_message(format!("line {line}: {}", first.message))
                .set_type(first.rule.id())
                .set_description(description);
            status
        }
    };
    let workload = &container.workload;
    let name = format!(
        "{} {}{} {} {}",
        workload.kind,
        workload
            .namespace
            .as_deref()
            .map(|n| format!("{n}/"))
            .unwrap_or_default(),
        workload.name,
        container.container.list.field(),
        container.container.name,
    );
    let mut case = TestCase::new(name, status);
    case.set_classname(format!(
        "{}:{} (document {})",
        container.location.file, container.location.line, container.location.document
    ));
    if !container.findings.is_empty() {
        let mut out = String::new();
        for (line, finding) in &container.findings {
            let _ = writeln!(
                out,
                "line {line}: {}[{}] {}\nfix: {}",
                finding.severity.as_str(),
                finding.rule,
                finding.message,
                finding.fix
            );
        }
        case.set_system_out(out);
    }
    case
}
