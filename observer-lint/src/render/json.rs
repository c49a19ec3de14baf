//! `--format json`: one document, described by docs/lint.schema.json.

use serde::Serialize;

use crate::{
    finding::{ContainerList, JsonPath, Severity},
    outcome::{FailLevel, Outcome},
};

/// Bumped on any incompatible change.
const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
struct Document<'a> {
    schema_version: u32,
    fail_level: &'static str,
    summary: Summary,
    findings: Vec<Finding<'a>>,
    problems: Vec<Problem<'a>>,
}

#[derive(Serialize)]
struct Summary {
    inputs: usize,
    documents: usize,
    containers: usize,
    errors: usize,
    warnings: usize,
    problems: usize,
    exit_code: u8,
}

#[derive(Serialize)]
struct Finding<'a> {
    file: &'a str,
    document: usize,
    line: usize,
    rule: &'static str,
    severity: Severity,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
    /// Pods folded into this finding by `--cluster` (1 otherwise).
    pods: usize,
    container: &'a str,
    container_list: ContainerList,
    image: &'a str,
    path: &'a JsonPath,
    message: &'a str,
    fix: &'a str,
}

#[derive(Serialize)]
struct Problem<'a> {
    file: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    column: Option<usize>,
    message: &'a str,
}

pub fn render(outcome: &Outcome, fail_level: FailLevel) -> String {
    let document = Document {
        schema_version: SCHEMA_VERSION,
        fail_level: fail_level.as_str(),
        summary: Summary {
            inputs: outcome.inputs.len(),
            documents: outcome.documents(),
            containers: outcome.containers.iter().map(|c| c.pods).sum(),
            errors: outcome.count(Severity::Error),
            warnings: outcome.count(Severity::Warning),
            problems: outcome.problems.len(),
            exit_code: outcome.exit_code(fail_level),
        },
        findings: outcome
            .findings()
            .map(|(container, line, finding)| Finding {
                file: &container.location.file,
                document: container.location.document,
                line,
                rule: finding.rule.id(),
                severity: finding.severity,
                kind: &finding.workload.kind,
                namespace: finding.workload.namespace.as_deref(),
                name: &finding.workload.name,
                owner: finding.workload.owner.as_deref(),
                pods: container.pods,
                container: &finding.container.name,
                container_list: finding.container.list,
                image: &finding.container.image,
                path: &finding.path,
                message: &finding.message,
                fix: &finding.fix,
            })
            .collect(),
        problems: outcome
            .problems
            .iter()
            .map(|p| Problem {
                file: &p.file,
                document: p.document,
                line: p.line,
                column: p.column,
                message: &p.message,
            })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&document).expect("plain data serializes");
    text.push('\n');
    text
}
