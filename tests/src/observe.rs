//! What the end-to-end tests share: running the agent the way tests must
//! (no DNS of its own, the test registry in its catalog), reading and
//! validating its report, and running clients in the testbed.

use std::{path::Path, process::Command, time::Duration};

use serde_json::Value;

use crate::{
    Agent, TESTBED_TOOLS, TestCgroup, Testbed, output_within, require_root_and_tools,
    workspace_root,
};

pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Debian's interpreter, which has python3-jsonschema (installed by setup).
pub const PYTHON: &str = "/usr/bin/python3";

pub fn setup() -> Testbed {
    require_root_and_tools(TESTBED_TOOLS);
    require_root_and_tools(&[PYTHON, "getent", "skopeo"]);
    Testbed::start().expect("starting the testbed")
}

/// The agent's options in tests: a report in the testbed's temp dir, no DNS
/// lookups of its own (they would go to the host's resolver), and the test
/// registry name added to the catalog.
pub fn agent_args(report: &Path) -> Vec<String> {
    vec![
        "--report".into(),
        report.display().to_string(),
        "--catalog-resolve-interval".into(),
        "0".into(),
        "--registry".into(),
        "registry.example.test".into(),
    ]
}

pub fn start_agent(report: &Path) -> Agent {
    let args = agent_args(report);
    Agent::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

pub fn read_report(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no report at {}: {e}", path.display()));
    serde_json::from_str(&text).expect("the report is JSON")
}

/// Validates with an independent implementation (Python's jsonschema)
/// against the published schema.
pub fn assert_valid_report(path: &Path) {
    let schema = workspace_root().join("docs/report.schema.json");
    let script = "import json,sys,jsonschema\n\
        schema=json.load(open(sys.argv[1])); report=json.load(open(sys.argv[2]))\n\
        jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(report)";
    let output = output_within(
        Command::new(PYTHON)
            .args(["-c", script])
            .arg(&schema)
            .arg(path),
        CLIENT_TIMEOUT,
    )
    .expect("running the schema validator");
    assert!(
        output.status.success(),
        "report {} does not match docs/report.schema.json:\n{}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn attempts_in(report: &Value, cgroup: &TestCgroup) -> Vec<Value> {
    report["attempts"]
        .as_array()
        .expect("attempts is an array")
        .iter()
        .filter(|a| a["cgroup"]["id"].as_u64() == Some(cgroup.id()))
        .cloned()
        .collect()
}

pub fn evidence(attempt: &Value) -> Vec<&str> {
    attempt["evidence"]
        .as_array()
        .expect("evidence is an array")
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect()
}

pub fn assert_complete(report: &Value) {
    let observer = &report["observer"];
    assert_eq!(observer["events_lost"], 0, "{observer:#}");
    assert_eq!(observer["complete"], true, "{observer:#}");
    assert_eq!(
        observer["parse_errors"],
        serde_json::json!({}),
        "{observer:#}"
    );
}

/// A command run in `cgroup` inside the testbed's network namespace.
pub fn in_netns(testbed: &Testbed, cgroup: &TestCgroup, argv: &[&str]) -> Command {
    let mut command = cgroup.command("ip");
    command.args(["netns", "exec", testbed.netns()]).args(argv);
    command
}

/// `getent hosts NAME` in `cgroup` inside the testbed: NXDOMAIN from its
/// dnsmasq, which is checked to have seen the query. On a loaded machine a
/// query can fail before it reaches dnsmasq (getent exits 2 for that too),
/// so a lookup dnsmasq did not log is tried again, three times at most.
pub fn failed_lookup(testbed: &Testbed, cgroup: &TestCgroup, name: &str) {
    let mut last_error = None;
    for _ in 0..3 {
        let result = output_within(
            testbed
                .netns_command_in(cgroup, "getent")
                .args(["hosts", name]),
            CLIENT_TIMEOUT,
        )
        .expect("running getent");
        assert_eq!(result.status.code(), Some(2), "{result:?}");
        match testbed.wait_for_dns_log(name, Duration::from_secs(10)) {
            Ok(_) => return,
            Err(e) => last_error = Some(e),
        }
    }
    panic!("dnsmasq never saw the query: {:?}", last_error);
}
