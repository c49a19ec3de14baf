//! `--format sarif`: SARIF 2.1.0 for code-scanning UIs (one run, one rule
//! per lint rule, one result per finding; unreadable inputs are tool
//! execution notifications and make the invocation unsuccessful).
//!
//! A small typed model of the part of SARIF written here, not the
//! serde-sarif crate: that crate generates its types from the whole schema at
//! build time (schemafy, syn, typed-builder), a heavy build for the dozen
//! fields used. The tests validate the output against a schema.

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::Serialize;

use crate::{
    finding::{Rule, Severity},
    input::STDIN_NAME,
    outcome::Outcome,
};

const SARIF_SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

/// Characters a path must not carry raw in a URI reference (RFC 3986).
const URI_UNSAFE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

#[derive(Serialize)]
struct Log {
    #[serde(rename = "$schema")]
    schema: &'static str,
    version: &'static str,
    runs: Vec<Run>,
}

#[derive(Serialize)]
struct Run {
    tool: Tool,
    invocations: Vec<Invocation>,
    results: Vec<SarifResult>,
}

#[derive(Serialize)]
struct Tool {
    driver: Driver,
}

#[derive(Serialize)]
struct Driver {
    name: &'static str,
    version: &'static str,
    rules: Vec<ReportingDescriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReportingDescriptor {
    id: &'static str,
    short_description: Message,
    full_description: Message,
    help: Message,
    default_configuration: Configuration,
}

#[derive(Serialize)]
struct Configuration {
    level: &'static str,
}

#[derive(Serialize)]
struct Message {
    text: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Invocation {
    execution_successful: bool,
    tool_execution_notifications: Vec<Notification>,
}

#[derive(Serialize)]
struct Notification {
    level: &'static str,
    message: Message,
    locations: Vec<Location>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifResult {
    rule_id: &'static str,
    rule_index: usize,
    level: &'static str,
    message: Message,
    locations: Vec<Location>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Location {
    physical_location: PhysicalLocation,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    logical_locations: Vec<LogicalLocation>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PhysicalLocation {
    artifact_location: ArtifactLocation,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<Region>,
}

#[derive(Serialize)]
struct ArtifactLocation {
    uri: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Region {
    start_line: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_column: Option<usize>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LogicalLocation {
    fully_qualified_name: String,
    kind: &'static str,
}

fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

/// A relative URI reference for a relative path (what code-scanning UIs
/// resolve against the repository), a `file://` URI for an absolute one.
fn artifact_uri(file: &str) -> String {
    if file == STDIN_NAME {
        return "stdin".to_owned();
    }
    let encoded = utf8_percent_encode(file, URI_UNSAFE).to_string();
    if file.starts_with('/') {
        format!("file://{encoded}")
    } else {
        encoded
    }
}

fn location(file: &str, line: Option<usize>, column: Option<usize>) -> PhysicalLocation {
    PhysicalLocation {
        artifact_location: ArtifactLocation {
            uri: artifact_uri(file),
        },
        region: line.map(|start_line| Region {
            start_line,
            start_column: column,
        }),
    }
}

pub fn render(outcome: &Outcome) -> String {
    let rules = Rule::ALL
        .iter()
        .map(|rule| ReportingDescriptor {
            id: rule.id(),
            short_description: Message {
                text: rule.summary().to_owned(),
            },
            full_description: Message {
                text: rule.rationale().to_owned(),
            },
            help: Message {
                text: format!(
                    "{}. {} Each result says the fix; `registry-observer lint --help` lists the rules.",
                    rule.summary(),
                    rule.rationale()
                ),
            },
            default_configuration: Configuration {
                level: level(rule.severity()),
            },
        })
        .collect();
    let results = outcome
        .findings()
        .map(|(container, line, finding)| {
            let pods = match container.pods {
                1 => String::new(),
                n => format!(
                    " ({n} pods of {})",
                    finding.workload.owner.as_deref().unwrap_or("?")
                ),
            };
            SarifResult {
                rule_id: finding.rule.id(),
                rule_index: Rule::ALL
                    .iter()
                    .position(|r| *r == finding.rule)
                    .unwrap_or(0),
                level: level(finding.severity),
                message: Message {
                    text: format!(
                        "{} {} {}{pods}: {} Fix: {}.",
                        finding.workload,
                        finding.container.list.field(),
                        finding.container.name,
                        finding.message,
                        finding.fix
                    ),
                },
                locations: vec![Location {
                    physical_location: location(&container.location.file, Some(line), None),
                    logical_locations: vec![LogicalLocation {
                        fully_qualified_name: format!(
                            "document {}{}",
                            container.location.document, finding.path
                        ),
                        kind: "object",
                    }],
                }],
            }
        })
        .collect();
    let notifications = outcome
        .problems
        .iter()
        .map(|problem| Notification {
            level: "error",
            message: Message {
                text: problem.to_string(),
            },
            locations: vec![Location {
                physical_location: location(&problem.file, problem.line, problem.column),
                logical_locations: Vec::new(),
            }],
        })
        .collect::<Vec<_>>();
    let log = Log {
        schema: SARIF_SCHEMA,
        version: "2.1.0",
        runs: vec![Run {
            tool: Tool {
                driver: Driver {
                    name: "registry-observer",
                    version: env!("CARGO_PKG_VERSION"),
                    rules,
                },
            },
            invocations: vec![Invocation {
                execution_successful: notifications.is_empty(),
                tool_execution_notifications: notifications,
            }],
            results,
        }],
    };
    let mut text = serde_json::to_string_pretty(&log).expect("plain data serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_uri_references() {
        assert_eq!(artifact_uri("deploy/app.yaml"), "deploy/app.yaml");
        assert_eq!(artifact_uri("my dir/a#1.yaml"), "my%20dir/a%231.yaml");
        assert_eq!(artifact_uri("/abs/x.yaml"), "file:///abs/x.yaml");
        assert_eq!(artifact_uri(STDIN_NAME), "stdin");
    }
}
