//! The agent's outputs, each read by a real, independent consumer: phases
//! switched over the control socket (`registry-observer mark`) and over
//! HTTP (`curl -d`), `/metrics` scraped with curl and checked by
//! `promtool check metrics` and Python's prometheus_client OpenMetrics
//! parser, JUnit parsed by Python's junitparser, the JSONL trail parsed
//! line by line, reports validated by Python's jsonschema (the report
//! written at exit and the snapshots `GET /report` serves while the agent
//! runs), and `report merge`/`report diff` run on the reports of two real
//! runs. Losses are forced for real (a one-page ring buffer and a burst of
//! DNS packets) to check exit code 3.
//!
//! Privileged: real kernel programs, the testbed's dnsmasq and TLS registry,
//! real skopeo/getent clients in the testbed's network namespace. Nothing is
//! mocked.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use observer_tests::{
    Agent, AgentOutput, TestCgroup, Testbed, agent_binary,
    observe::{
        self, CLIENT_TIMEOUT, PYTHON, assert_valid_report, attempts_in, failed_lookup, read_report,
    },
    output_within, require_root_and_tools, run_checked,
};
use serde_json::Value;

/// From Debian's prometheus package.
const PROMTOOL: &str = "promtool";

/// The e2e testbed, plus the consumers of the outputs: promtool, curl, and
/// (in PYTHON) junitparser and prometheus_client, installed by `cargo
/// xtask setup`.
fn setup() -> Testbed {
    require_root_and_tools(&[PROMTOOL, "curl"]);
    observe::setup()
}

/// A loopback port nobody listens on now (the agent binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a loopback port")
        .port()
}

/// Everything a test's agent writes, in the testbed's temp dir.
struct Outputs {
    report: PathBuf,
    junit: PathBuf,
    events: PathBuf,
    socket: PathBuf,
    metrics: String,
}

impl Outputs {
    fn new(testbed: &Testbed, name: &str) -> Outputs {
        let dir = testbed.temp_dir();
        Outputs {
            report: dir.join(format!("{name}.json")),
            junit: dir.join(format!("{name}.xml")),
            events: dir.join(format!("{name}.jsonl")),
            socket: dir.join(format!("{name}.sock")),
            metrics: format!("127.0.0.1:{}", free_port()),
        }
    }

    /// The e2e tests' agent options (see [`observe::agent_args`]) with
    /// every output switched on.
    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut args = observe::agent_args(&self.report);
        for (flag, value) in [
            ("--junit", self.junit.display().to_string()),
            ("--events", self.events.display().to_string()),
            ("--control-socket", self.socket.display().to_string()),
            ("--metrics-addr", self.metrics.clone()),
        ] {
            args.extend([flag.to_string(), value]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.metrics)
    }
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// A JSON file other than a report (a line of the events trail).
fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Runs a Python snippet with Debian's interpreter; panics with its stderr
/// unless it succeeds. Returns stdout.
fn python(script: &str, args: &[&Path]) -> String {
    let output = output_within(
        Command::new(PYTHON).arg("-c").arg(script).args(args),
        CLIENT_TIMEOUT,
    )
    .expect("running python");
    assert!(
        output.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `curl` with a 10 s limit; returns (HTTP status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let output = output_within(
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
            .args(args),
        CLIENT_TIMEOUT,
    )
    .expect("running curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        status.trim().parse().unwrap_or_else(|_| {
            panic!(
                "curl {args:?} gave no status: {text} {}",
                String::from_utf8_lossy(&output.stderr)
            )
        }),
        body.to_string(),
    )
}

fn skopeo_inspect(testbed: &Testbed, cgroup: &TestCgroup) {
    run_checked(
        testbed
            .netns_command_in(cgroup, "skopeo")
            .arg("inspect")
            .arg("--cert-dir")
            .arg(testbed.cert_dir())
            .arg(testbed.image_ref()),
        CLIENT_TIMEOUT,
    )
    .expect("skopeo inspect through the testbed registry");
}

/// `GET /report` with curl: (HTTP status, Content-Type, body).
fn get_report(out: &Outputs) -> (u16, String, String) {
    let output = output_within(
        Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-w",
                "\n%{content_type}\n%{http_code}",
            ])
            .arg(out.url("/report")),
        CLIENT_TIMEOUT,
    )
    .expect("running curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut parts = text.rsplitn(3, '\n');
    let (status, content_type, body) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    (
        status.trim().parse().unwrap_or_else(|_| {
            panic!(
                "curl GET /report gave no status: {text} {}",
                String::from_utf8_lossy(&output.stderr)
            )
        }),
        content_type.to_string(),
        body.to_string(),
    )
}

/// Polls `GET /report` every 200 ms, for up to 10 s, until `holds` accepts
/// the snapshot; panics naming `what` if none did. Every answer must be a
/// 200 with a JSON body marked `observer.snapshot: true` (the programs are
/// attached once [`Agent::start`] returns, so a 503 or 404 fails at once).
/// The last snapshot is written to `NAME.json` in the testbed's temp dir and
/// validated against docs/report.schema.json like a report file.
fn snapshot_until(
    testbed: &Testbed,
    out: &Outputs,
    name: &str,
    what: &str,
    holds: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, content_type, body) = get_report(out);
        assert_eq!(status, 200, "GET /report while the agent runs: {body}");
        assert!(
            content_type.starts_with("application/json"),
            "GET /report answered with Content-Type {content_type:?}"
        );
        let snapshot: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET /report is not JSON ({e}): {body}"));
        assert_eq!(
            snapshot["observer"]["snapshot"], true,
            "a snapshot says it is one: {:#}",
            snapshot["observer"]
        );
        let done = holds(&snapshot);
        if done || Instant::now() >= deadline {
            let path = testbed.temp_dir().join(format!("{name}.json"));
            std::fs::write(&path, &body).unwrap();
            assert_valid_report(&path);
            assert!(done, "no snapshot within 10 s held {what}: {snapshot:#}");
            return snapshot;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A report's attempts in `cgroup` to `host`.
fn attempts_to(report: &Value, cgroup: &TestCgroup, host: &str) -> Vec<Value> {
    attempts_in(report, cgroup)
        .into_iter()
        .filter(|a| a["host"] == host)
        .collect()
}

/// What makes attempts one entry (docs/REPORT.md): phase, host (and the
/// catalog entry, for host-less ones), cgroup and process image.
fn aggregation_key(attempt: &Value) -> String {
    serde_json::json!([
        attempt["phase"],
        attempt["host"],
        attempt["registry"]["pattern"],
        attempt["cgroup"]["id"],
        attempt["process"]["comm"],
        attempt["process"]["exe"],
        attempt["process"]["cmdline"],
    ])
    .to_string()
}

/// Every entry `snapshot` holds in `cgroup` to `host` is in `report` exactly
/// once, and has only grown since: count no lower, first seen no later
/// (an event read late may have happened earlier), last seen no earlier.
fn assert_held_once(report: &Value, snapshot: &Value, cgroup: &TestCgroup, host: &str) {
    let later = attempts_to(report, cgroup, host);
    for seen in attempts_to(snapshot, cgroup, host) {
        let same: Vec<&Value> = later
            .iter()
            .filter(|a| aggregation_key(a) == aggregation_key(&seen))
            .collect();
        assert_eq!(
            same.len(),
            1,
            "the snapshot's attempt {seen:#} once in the later report: {later:#?}"
        );
        // RFC 3339 UTC with milliseconds: ordered as strings.
        let time = |a: &Value, field: &str| a[field].as_str().map(String::from);
        assert!(
            same[0]["count"].as_u64() >= seen["count"].as_u64()
                && time(same[0], "first_seen") <= time(&seen, "first_seen")
                && time(same[0], "last_seen") >= time(&seen, "last_seen"),
            "an attempt only grows after a snapshot: {seen:#} then {:#}",
            same[0]
        );
    }
}

/// One run through three phases, with every output read by its consumer.
#[test]
fn phases_metrics_junit_and_events_of_one_run() {
    let testbed = setup();
    let out = Outputs::new(&testbed, "phases");
    let agent = Agent::start(&strs(&out.args(&["--fail-on-violation"])));
    assert!(
        agent.stdout_so_far().contains(&format!(
            "metrics: {}; control socket: {}",
            out.url("/metrics"),
            out.socket.display()
        )),
        "{}",
        agent.stdout_so_far()
    );
    assert_eq!(curl(&[&out.url("/healthz")]).0, 200);
    assert_eq!(
        curl(&[&out.url("/readyz")]),
        (200, "ready: every hook is attached\n".into())
    );

    // boot: a lookup of a registry name that does not resolve.
    let boot = TestCgroup::create("boot");
    failed_lookup(&testbed, &boot, "registry.redhat.io");

    // upgrade, over the control socket.
    let mark = run_checked(
        Command::new(agent_binary())
            .args(["mark", "upgrade", "--socket"])
            .arg(&out.socket),
        CLIENT_TIMEOUT,
    )
    .expect("registry-observer mark upgrade");
    let said = String::from_utf8_lossy(&mark.stdout);
    assert!(said.starts_with("phase upgrade started at "), "{said}");
    let upgrade = TestCgroup::create("upgrade");
    skopeo_inspect(&testbed, &upgrade);

    // post-upgrade, over HTTP (JSON body); a bad name is refused.
    let (status, body) = curl(&["-d", "Not A Phase", &out.url("/phase")]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid phase name"), "{body}");
    let (status, body) = curl(&["-d", r#"{"phase": "post-upgrade"}"#, &out.url("/phase")]);
    assert_eq!(status, 200, "{body}");
    let post = TestCgroup::create("post");
    failed_lookup(&testbed, &post, "registry.access.redhat.com");

    // /metrics, classic text: promtool must accept it.
    let metrics_file = testbed.temp_dir().join("metrics.txt");
    let (status, text) = curl(&[&out.url("/metrics")]);
    assert_eq!(status, 200);
    std::fs::write(&metrics_file, &text).unwrap();
    let check = output_within(
        Command::new("sh").arg("-c").arg(format!(
            "{PROMTOOL} check metrics < '{}'",
            metrics_file.display()
        )),
        CLIENT_TIMEOUT,
    )
    .expect("running promtool");
    assert!(
        check.status.success(),
        "promtool check metrics rejected /metrics:\n{}{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    // OpenMetrics, as Prometheus asks for it: parsed by prometheus_client's
    // strict OpenMetrics parser, and the skopeo connect found in it.
    let openmetrics_file = testbed.temp_dir().join("metrics.om");
    let (status, openmetrics) = curl(&[
        "-H",
        "Accept: application/openmetrics-text;version=1.0.0",
        &out.url("/metrics"),
    ]);
    assert_eq!(status, 200);
    std::fs::write(&openmetrics_file, &openmetrics).unwrap();
    let samples = python(
        "import sys\n\
         from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
         for family in text_string_to_metric_families(open(sys.argv[1]).read()):\n\
         \x20   for s in family.samples:\n\
         \x20       labels = ','.join(f'{k}={v}' for k, v in sorted(s.labels.items()))\n\
         \x20       print(f'{s.name}|{labels}|{s.value}')",
        &[&openmetrics_file],
    );
    let attempts_sample = |phase: &str, component: &str, evidence: &str| {
        samples
            .lines()
            .filter(|l| l.starts_with("registry_observer_attempts_total|"))
            .find(|l| {
                l.contains(&format!("phase={phase},"))
                    && l.contains(&format!("component={component},"))
                    && l.contains(&format!("evidence={evidence},"))
            })
            .map(|l| l.rsplit('|').next().unwrap().parse::<f64>().unwrap())
    };
    let connects = attempts_sample("upgrade", "skopeo", "connect")
        .unwrap_or_else(|| panic!("no skopeo connect sample:\n{samples}"));
    assert!(connects >= 1.0, "{samples}");
    // The ClientHello that named the registry is its own event, labelled
    // with the strongest evidence; the TLS parser counted its stream.
    let hellos = attempts_sample("upgrade", "skopeo", "tls_sni")
        .unwrap_or_else(|| panic!("no skopeo tls_sni sample:\n{samples}"));
    assert!(hellos >= 1.0, "{samples}");
    let parsed_tls = samples
        .lines()
        .find_map(|l| l.strip_prefix("registry_observer_payload_streams_parsed_total|parser=tls|"))
        .unwrap_or_else(|| panic!("no TLS parser series:\n{samples}"));
    assert!(parsed_tls.parse::<f64>().unwrap() >= 1.0, "{samples}");
    // Kernel counters that cut events short are health series too.
    assert!(
        samples.lines().any(|l| l.starts_with(
            "registry_observer_events_truncated_total|reason=exec_args_missing,stage=kernel_ring|"
        )),
        "{samples}"
    );
    assert!(
        samples
            .lines()
            .any(|l| l.starts_with("registry_observer_attempts_total|category=image-registry,component=getent,evidence=dns_query,namespace=,phase=boot,registry=registry.redhat.io,verdict=violation|")),
        "{samples}"
    );
    assert!(
        samples.lines().any(|l| l
            == "registry_observer_events_lost_total|reason=attempts_table_full,stage=record|0"),
        "{samples}"
    );
    assert!(
        samples
            .lines()
            .any(|l| l.starts_with("registry_observer_build_info|version=")),
        "{samples}"
    );
    // The marked phase outside the policy's enforce_phases: its verdict.
    assert!(
        samples
            .lines()
            .any(|l| l.starts_with("registry_observer_attempts_total|")
                && l.contains("phase=post-upgrade,")
                && l.contains("verdict=not_enforced|")),
        "{samples}"
    );

    let output = agent.stop();
    assert_eq!(
        output.status.code(),
        Some(1),
        "violations fail the run: {output:?}"
    );
    assert!(
        output.stderr.contains("│ upgrade") && output.stderr.contains("┆ skopeo"),
        "the exit summary table is on stderr: {}",
        output.stderr
    );

    // The report: three phases, each attempt in its own.
    assert_valid_report(&out.report);
    let report = read_report(&out.report);
    let phases: Vec<(&str, &str)> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["source"].as_str().unwrap()))
        .collect();
    assert_eq!(
        phases,
        [
            ("boot", "start"),
            ("upgrade", "mark"),
            ("post-upgrade", "http")
        ]
    );
    let summarized: Vec<&str> = report["summary"]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        summarized,
        ["boot", "upgrade", "post-upgrade"],
        "{report:#}"
    );
    for (cgroup, phase, host) in [
        (&boot, "boot", "registry.redhat.io"),
        (&upgrade, "upgrade", "quay.io"),
        (&post, "post-upgrade", "registry.access.redhat.com"),
    ] {
        let attempts = attempts_in(&report, cgroup);
        assert!(!attempts.is_empty(), "no attempt in {phase}: {report:#}");
        // The default policy enforces boot and upgrade; post-upgrade,
        // switched to at run time, is judged by its own phase.
        let verdict = if phase == "post-upgrade" {
            "not_enforced"
        } else {
            "violation"
        };
        for attempt in attempts {
            assert_eq!(attempt["phase"], phase, "{attempt:#}");
            assert_eq!(attempt["host"], host, "{attempt:#}");
            assert_eq!(attempt["verdict"], verdict, "{attempt:#}");
        }
    }
    assert!(
        report["summary"]["not_enforced"].as_u64() >= Some(1),
        "{:#}",
        report["summary"]
    );
    // The capture's facts survive next to the phases: the lookups failed
    // with NXDOMAIN, skopeo's TLS connection was established and named
    // quay.io in its ClientHello.
    for cgroup in [&boot, &post] {
        for attempt in attempts_in(&report, cgroup) {
            assert!(
                attempt["outcomes"]["dns_nxdomain"].as_u64() >= Some(1),
                "{attempt:#}"
            );
        }
    }
    let skopeo = attempts_in(&report, &upgrade);
    assert!(
        skopeo
            .iter()
            .any(|a| observe::evidence(a).contains(&"tls_sni")
                && a["outcomes"]["established"].as_u64() >= Some(1)),
        "{skopeo:#?}"
    );

    // JUnit, read by junitparser: a suite per phase, skopeo failing in
    // upgrade with the host and evidence in the failure.
    let cases = python(
        "import sys\n\
         from junitparser import JUnitXml, Failure\n\
         for suite in JUnitXml.fromfile(sys.argv[1]):\n\
         \x20   for case in suite:\n\
         \x20       failures = [r for r in case.result if isinstance(r, Failure)]\n\
         \x20       detail = ' '.join((f.message or '') + ' ' + (f.text or '') for f in failures).replace('\\n', ' ')\n\
         \x20       print(f\"{suite.name}|{case.name}|{'failed' if failures else 'passed'}|{detail}\")",
        &[&out.junit],
    );
    let skopeo = cases
        .lines()
        .find(|l| l.starts_with("phase upgrade|skopeo|"))
        .unwrap_or_else(|| panic!("no skopeo case in the upgrade suite:\n{cases}"));
    assert!(skopeo.contains("|failed|"), "{skopeo}");
    assert!(
        skopeo.contains("skopeo contacted quay.io during phase upgrade"),
        "{skopeo}"
    );
    assert!(
        skopeo.contains("connect") && skopeo.contains("first seen:"),
        "{skopeo}"
    );
    let suites: std::collections::BTreeSet<&str> = cases
        .lines()
        .map(|l| l.split('|').next().unwrap())
        .collect();
    assert!(
        ["phase boot", "phase upgrade", "phase post-upgrade"]
            .iter()
            .all(|s| suites.contains(s)),
        "{cases}"
    );
    // Not enforced is not a failure: the post-upgrade cases pass, and the
    // JUnit file says why the contact did not count.
    let post_cases: Vec<&str> = cases
        .lines()
        .filter(|l| l.starts_with("phase post-upgrade|"))
        .collect();
    assert!(
        !post_cases.is_empty() && post_cases.iter().all(|l| l.contains("|passed|")),
        "{cases}"
    );
    let junit_text = std::fs::read_to_string(&out.junit).unwrap();
    assert!(
        junit_text.contains(
            "not enforced: registry.access.redhat.com: phase post-upgrade is outside the policy"
        ),
        "{junit_text}"
    );

    // The JSONL trail: every line JSON; the phase changes and skopeo's
    // attempt with its phase are in it.
    let trail = std::fs::read_to_string(&out.events).unwrap();
    let lines: Vec<Value> = trail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect();
    let phase_lines: Vec<(&str, &str)> = lines
        .iter()
        .filter(|l| l["type"] == "phase")
        .map(|l| (l["name"].as_str().unwrap(), l["source"].as_str().unwrap()))
        .collect();
    assert_eq!(phase_lines, [("upgrade", "mark"), ("post-upgrade", "http")]);
    assert!(
        lines.iter().any(|l| l["type"] == "attempt"
            && l["cgroup"]["id"].as_u64() == Some(upgrade.id())
            && l["phase"] == "upgrade"
            && l["time"].is_string()),
        "{trail}"
    );
    assert_eq!(report["observer"]["losses"]["events_file"], 0);
}

/// `--events-max-size` rotates the trail: PATH.1 .. PATH.5, newest first,
/// every file whole JSON lines.
#[test]
fn events_file_rotates_by_size() {
    let testbed = setup();
    let out = Outputs::new(&testbed, "rotate");
    // Each attempt line is well over 300 bytes: every event rotates.
    let agent = Agent::start(&strs(&out.args(&["--events-max-size", "300B"])));
    let cgroup = TestCgroup::create("rotate");
    // Names under the catalog's `*.gcr.io` that dnsmasq does not know.
    for n in 0..8 {
        failed_lookup(&testbed, &cgroup, &format!("rot{n}.gcr.io"));
    }
    let output = agent.stop();
    assert!(output.status.success(), "{output:?}");
    let file = |n: u32| {
        let mut name = out.events.clone().into_os_string();
        if n > 0 {
            name.push(format!(".{n}"));
        }
        PathBuf::from(name)
    };
    for n in 0..=5 {
        let text = std::fs::read_to_string(file(n))
            .unwrap_or_else(|e| panic!("{}: {e}", file(n).display()));
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect();
        assert_eq!(lines.len(), 1, "{}: {text}", file(n).display());
    }
    assert!(!file(6).exists(), "only five rotated files are kept");
    // The live file holds the last event, PATH.1 the one before.
    let name = |n| read_json(&file(n))["host"].as_str().map(String::from);
    assert!(name(0).is_some() && name(1).is_some());
    let report = read_report(&out.report);
    assert!(attempts_in(&report, &cgroup).len() >= 8, "{report:#}");
}

/// `GET /report` while the agent runs: a snapshot holds the attempt seen so
/// far and says it is a snapshot; the agent observes on, a later snapshot
/// holds the next attempt too, and the report written at exit holds both,
/// each once, with counts no lower than the snapshots', and says nothing of
/// snapshots.
///
/// Real: the agent and its kernel programs, the testbed's dnsmasq and TLS
/// registry, getent and skopeo in the testbed's network namespace and in
/// cgroups of their own, curl as the HTTP client, Python's jsonschema as
/// the validator of every snapshot and of the final report. Nothing is
/// mocked.
#[test]
fn a_snapshot_from_the_running_agent_holds_what_it_saw_and_the_final_report_holds_everything() {
    let testbed = setup();
    let out = Outputs::new(&testbed, "snapshot");
    let agent = Agent::start(&strs(&out.args(&[])));

    // Attempt 1: a failed lookup of a registry name.
    let first = TestCgroup::create("snapshot-first");
    failed_lookup(&testbed, &first, "registry.redhat.io");
    let early = snapshot_until(
        &testbed,
        &out,
        "snapshot-early",
        "getent's lookup of registry.redhat.io",
        |s| !attempts_to(s, &first, "registry.redhat.io").is_empty(),
    );
    let observer = &early["observer"];
    assert!(observer["started_at"].is_string(), "{observer:#}");
    let attempts = early["attempts"].as_array().unwrap();
    assert_eq!(
        early["summary"]["attempts"].as_u64(),
        Some(attempts.len() as u64),
        "a whole report, summary included: {early:#}"
    );
    // On whose behalf is decided only when the run ends.
    assert!(
        attempts.iter().all(|a| a["on_behalf_of"].is_null()),
        "{attempts:#?}"
    );
    // Only the method GET is served; serving writes no report file.
    let (status, body) = curl(&["-X", "DELETE", &out.url("/report")]);
    assert_eq!(status, 405, "{body}");
    assert!(
        !out.report.exists(),
        "a snapshot is served, the report file is written only at exit"
    );

    // The agent observes on: attempt 2, another host in another cgroup.
    assert_eq!(curl(&[&out.url("/healthz")]).0, 200);
    let second = TestCgroup::create("snapshot-second");
    skopeo_inspect(&testbed, &second);
    let late = snapshot_until(
        &testbed,
        &out,
        "snapshot-late",
        "getent's lookup and skopeo's contact of quay.io",
        |s| {
            !attempts_to(s, &first, "registry.redhat.io").is_empty()
                && !attempts_to(s, &second, "quay.io").is_empty()
        },
    );
    assert_eq!(late["observer"]["started_at"], observer["started_at"]);
    assert!(
        late["observer"]["ended_at"].as_str() > observer["ended_at"].as_str(),
        "ended_at is when each snapshot was taken: {} then {}",
        observer["ended_at"],
        late["observer"]["ended_at"]
    );
    assert_held_once(&late, &early, &first, "registry.redhat.io");
    assert!(
        late["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["on_behalf_of"].is_null()),
        "skopeo's on_behalf_of is decided at exit, not in a snapshot: {late:#}"
    );

    let output = agent.stop();
    assert!(output.status.success(), "{output:?}");
    assert_valid_report(&out.report);
    let report = read_report(&out.report);
    assert_eq!(
        report["observer"].get("snapshot"),
        None,
        "the report written at exit is final: {:#}",
        report["observer"]
    );
    assert_eq!(report["observer"]["started_at"], observer["started_at"]);
    assert!(
        report["observer"]["ended_at"].as_str() > late["observer"]["ended_at"].as_str(),
        "{:#}",
        report["observer"]
    );
    // Attempt 1 once, not doubled by the snapshots, its counts grown or
    // kept; attempt 2 there too; no entry twice.
    assert_held_once(&report, &early, &first, "registry.redhat.io");
    assert_held_once(&report, &late, &first, "registry.redhat.io");
    assert_held_once(&report, &late, &second, "quay.io");
    assert!(
        !attempts_to(&report, &second, "quay.io").is_empty(),
        "{report:#}"
    );
    let mut keys: Vec<String> = report["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(aggregation_key)
        .collect();
    let all = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        all,
        "an attempt twice in the report: {report:#}"
    );
}

/// Two real runs, then `report merge` and `report diff` on their reports.
#[test]
fn merge_and_diff_reports_of_two_runs() {
    let testbed = setup();
    let dir = testbed.temp_dir();
    let run = |name: &str, script: &str| -> PathBuf {
        let out = Outputs::new(&testbed, name);
        let mut args = out.args(&["--"]);
        args.extend(["sh".into(), "-c".into(), script.to_string()]);
        let result = Agent::run_to_exit(&strs(&args), Duration::from_secs(120));
        assert!(result.status.success(), "{result:?}");
        assert_valid_report(&out.report);
        out.report
    };
    let netns = testbed.netns();
    let clean = run(
        "clean",
        &format!("ip netns exec {netns} getent hosts notaregistry.test"),
    );
    let skopeo = run(
        "skopeo",
        &format!(
            "ip netns exec {netns} skopeo inspect --cert-dir {} {}",
            testbed.cert_dir().display(),
            testbed.image_ref()
        ),
    );

    let report = |args: &[&str]| -> AgentOutput {
        let output = output_within(
            Command::new(agent_binary()).arg("report").args(args),
            CLIENT_TIMEOUT,
        )
        .expect("running registry-observer report");
        AgentOutput {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    };
    let path = |p: &Path| p.display().to_string();

    let merged = dir.join("cluster.json");
    let output = report(&["merge", "-o", &path(&merged), &path(&clean), &path(&skopeo)]);
    assert!(output.status.success(), "{output:?}");
    assert_valid_report(&merged);
    let cluster = read_report(&merged);
    let nodes = cluster["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{cluster:#}");
    // Both runs were on this machine: the second node is named by its file.
    assert_eq!(
        nodes[1]["name"],
        format!("{} ({})", nodes[0]["name"].as_str().unwrap(), path(&skopeo))
    );
    assert_eq!(nodes[0]["attempts"], 0);
    assert!(nodes[1]["violations"].as_u64().unwrap() >= 1);
    let quay = cluster["summary"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "quay.io")
        .unwrap_or_else(|| panic!("{cluster:#}"));
    assert_eq!(quay["nodes"].as_object().unwrap().len(), 1, "{quay:#}");
    assert!(
        cluster["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["node"] == nodes[1]["name"])
    );
    let markdown = report(&["summarize", "--format", "markdown", &path(&merged)]);
    assert!(markdown.status.success(), "{markdown:?}");
    assert!(
        markdown.stdout.contains("cluster of 2 node(s)")
            && markdown
                .stdout
                .lines()
                .any(|l| l.starts_with("| boot") && l.contains("`quay.io`")),
        "{}",
        markdown.stdout
    );

    // The skopeo run regressed against the clean one...
    let output = report(&["diff", &path(&clean), &path(&skopeo)]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        output.stdout.starts_with("REGRESSION: "),
        "{}",
        output.stdout
    );
    assert!(
        output.stdout.contains("-> quay.io (phase boot)"),
        "{}",
        output.stdout
    );
    // ...not the other way round, nor against itself or the merged report.
    for (base, new) in [(&skopeo, &clean), (&skopeo, &skopeo), (&merged, &skopeo)] {
        let output = report(&["diff", &path(base), &path(new)]);
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        assert!(
            output.stdout.starts_with("no new violation"),
            "{}",
            output.stdout
        );
    }

    // A truncated report: exit 2, the file and the position named.
    let text = std::fs::read_to_string(&skopeo).unwrap();
    let broken = dir.join("broken.json");
    std::fs::write(&broken, &text[..text.len() / 2]).unwrap();
    for args in [
        vec!["diff".to_string(), path(&clean), path(&broken)],
        vec!["merge".to_string(), path(&clean), path(&broken)],
        vec!["summarize".to_string(), path(&broken)],
    ] {
        let output = report(&strs(&args));
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        let line = output.stderr.trim();
        assert!(
            line.starts_with(&format!("registry-observer: {}:", path(&broken))),
            "{line}"
        );
        let position: Vec<&str> = line
            .trim_start_matches(&format!("registry-observer: {}:", path(&broken)))
            .splitn(3, ':')
            .collect();
        assert!(
            position[0].parse::<u32>().unwrap() > 1 && position[1].parse::<u32>().is_ok(),
            "no LINE:COLUMN in {line}"
        );
        assert_eq!(output.stdout, "", "nothing half-written to stdout");
    }
}

/// A one-page ring buffer and a burst of 3000 DNS packets overflow the
/// kernel side for real: the run exits 3 and says why, unless
/// `--allow-incomplete`.
#[test]
fn lost_events_exit_3_unless_allowed() {
    let testbed = setup();
    let burst = format!(
        "ip netns exec {} {PYTHON} -c \"\
import socket\n\
query = bytes.fromhex('abcd01000001000000000000') + b'\\x05burst\\x04test\\x00\\x00\\x01\\x00\\x01'\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
for _ in range(3000): s.sendto(query, ('{}', 53))\n\"",
        testbed.netns(),
        testbed.host_ip()
    );
    for (extra, expected) in [(None, 3), (Some("--allow-incomplete"), 0)] {
        let out = Outputs::new(&testbed, "lossy");
        let mut args = out.args(&["--ring-buffer-bytes", "4096"]);
        args.extend(extra.map(String::from));
        args.extend(["--".into(), "sh".into(), "-c".into(), burst.clone()]);
        let output = Agent::run_to_exit(&strs(&args), Duration::from_secs(120));
        assert_eq!(output.status.code(), Some(expected), "{output:?}");
        assert!(
            output.stderr.contains("the observation is incomplete"),
            "{}",
            output.stderr
        );
        assert_valid_report(&out.report);
        let report = read_report(&out.report);
        let observer = &report["observer"];
        assert_eq!(observer["complete"], false, "{observer:#}");
        assert!(
            observer["losses"]["kernel"]["dns_reserve_failed"]
                .as_u64()
                .unwrap()
                > 0,
            "{observer:#}"
        );
        let lost = observer["events_lost"].as_u64().unwrap();
        assert!(
            lost >= observer["losses"]["kernel"]["dns_reserve_failed"]
                .as_u64()
                .unwrap()
                && lost < observer["events_total"].as_u64().unwrap(),
            "some events delivered, the rest counted as lost: {observer:#}"
        );
    }
}

/// A bounded attempts table: with `--max-attempts 1`, the second distinct
/// attempt is in no attempt, but it is counted in the report, on /metrics
/// and on its live line, and the run is incomplete (exit 3). Real lookups
/// from two cgroups in the testbed's namespace.
#[test]
fn a_full_attempts_table_is_counted_and_makes_the_run_incomplete() {
    let testbed = setup();
    let out = Outputs::new(&testbed, "full-table");
    let agent = Agent::start(&strs(&out.args(&["--max-attempts", "1"])));
    let first = TestCgroup::create("table-first");
    failed_lookup(&testbed, &first, "registry.redhat.io");
    let second = TestCgroup::create("table-second");
    failed_lookup(&testbed, &second, "registry.access.redhat.com");
    assert!(
        agent.wait_for_stdout("registry.access.redhat.com", Duration::from_secs(10)),
        "{}",
        agent.stdout_so_far()
    );
    let (status, metrics) = curl(&[&out.url("/metrics")]);
    assert_eq!(status, 200);
    let lost_in_metrics: u64 = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "registry_observer_events_lost_total{stage=\"record\",reason=\"attempts_table_full\"}",
            )
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no attempts_table_full series:\n{metrics}"));
    assert!(lost_in_metrics >= 1, "{metrics}");

    let output = agent.stop();
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(
        output
            .stdout
            .lines()
            .any(|l| l.contains("registry.access.redhat.com") && l.contains("not recorded")),
        "{}",
        output.stdout
    );
    assert!(
        output.stderr.contains("the attempts table was full"),
        "{}",
        output.stderr
    );
    assert_valid_report(&out.report);
    let report = read_report(&out.report);
    // One attempt kept: the first lookup's, or another test's that ran
    // beside this one (the agent watches the whole machine); the second
    // lookup came when the table was full either way.
    let attempts = report["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert!(attempts_in(&report, &second).is_empty(), "{attempts:#?}");
    let observer = &report["observer"];
    assert_eq!(observer["complete"], false, "{observer:#}");
    // The scrape came before the last events may have been processed.
    let lost_in_report = observer["losses"]["attempts_table"].as_u64().unwrap();
    assert!(
        lost_in_report >= lost_in_metrics,
        "the report counts at least what /metrics had: {observer:#}"
    );
}

/// `mark` without an agent: exit 2, naming the socket it tried.
#[test]
fn mark_without_an_agent_names_the_socket() {
    require_root_and_tools(&[]);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");
    let output = output_within(
        Command::new(agent_binary())
            .args(["mark", "upgrade", "--socket"])
            .arg(&socket),
        CLIENT_TIMEOUT,
    )
    .expect("running registry-observer mark");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&socket.display().to_string())
            && stderr.contains("is `registry-observer run` running?"),
        "{stderr}"
    );
}

/// A kernel that refuses hooks: the agent runs on with what attached, and
/// the run is incomplete (exit 3 unless `--allow-incomplete`). The refusal
/// is real: the agent runs in a mount namespace of its own where
/// /sys/kernel/btf/vmlinux is /dev/null, so it cannot find the kernel field
/// offsets the lineage and connection-state programs need.
#[test]
fn missing_hooks_exit_3_unless_allowed() {
    require_root_and_tools(&["unshare", "mount"]);
    let testbed = setup();
    let wrapper = testbed.temp_dir().join("agent-without-btf");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             exec unshare --mount --propagation private sh -c \
             'mount --bind /dev/null /sys/kernel/btf/vmlinux && exec \"$0\" \"$@\"' '{}' \"$@\"\n",
            agent_binary().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    for (extra, expected) in [(None, 3), (Some("--allow-incomplete"), 0)] {
        let out = Outputs::new(&testbed, "no-btf");
        let mut args = out.args(&[]);
        args.extend(extra.map(String::from));
        args.extend(["--".into(), "true".into()]);
        let output = Agent::run_binary_to_exit(&wrapper, &strs(&args), Duration::from_secs(120));
        assert_eq!(output.status.code(), Some(expected), "{output:?}");
        for said in [
            "warning: hook process_exec is not attached: kernel field offsets unavailable",
            "the observation is incomplete: hook(s) not attached: process_exec, process_fork, process_exit, sock_state",
        ] {
            assert!(
                output.stderr.contains(said),
                "{said:?} in {}",
                output.stderr
            );
        }
        assert_valid_report(&out.report);
        let report = read_report(&out.report);
        let observer = &report["observer"];
        assert_eq!(observer["complete"], false, "{observer:#}");
        assert_eq!(observer["events_lost"], 0, "{observer:#}");
        let missing: Vec<&str> = observer["hooks_missing"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["hook"].as_str().unwrap())
            .collect();
        assert_eq!(
            missing,
            ["process_exec", "process_fork", "process_exit", "sock_state"],
            "{observer:#}"
        );
        // What did attach still observes.
        let hooks = observer["hooks"].as_array().unwrap();
        assert!(hooks.contains(&"connect4".into()), "{observer:#}");
    }
}

/// The release engineer's case: during boot an allowlisted component (getent,
/// with a reason, a link and an expiry date) contacts a registry; after
/// `mark upgrade` a component that is not allowlisted (skopeo) does. Verdicts,
/// the exit code with --fail-on-violation, JUnit (read by junitparser) and
/// /metrics all say the same.
#[test]
fn an_allowlisted_and_a_violating_component_across_two_phases() {
    let testbed = setup();
    let out = Outputs::new(&testbed, "allowlist");
    let config = testbed.temp_dir().join("allowlist.yaml");
    std::fs::write(
        &config,
        "policy:\n  allow:\n    - component: getent\n      host: registry.redhat.io\n      \
         reason: probe tolerated until OCPBUGS-00002 ships\n      \
         link: https://issues.example/OCPBUGS-00002\n      expires: 2099-12-31\n",
    )
    .unwrap();
    let config_arg = config.display().to_string();
    let agent = Agent::start(&strs(&out.args(&[
        "--fail-on-violation",
        "--config",
        &config_arg,
    ])));
    let boot = TestCgroup::create("allowed");
    failed_lookup(&testbed, &boot, "registry.redhat.io");
    run_checked(
        Command::new(agent_binary())
            .args(["mark", "upgrade", "--socket"])
            .arg(&out.socket),
        CLIENT_TIMEOUT,
    )
    .expect("registry-observer mark upgrade");
    let upgrade = TestCgroup::create("violating");
    skopeo_inspect(&testbed, &upgrade);
    let wait = std::time::Instant::now();
    let metrics = loop {
        let (status, body) = curl(&[&out.url("/metrics")]);
        assert_eq!(status, 200);
        if body.contains("component=\"skopeo\"") || wait.elapsed() > Duration::from_secs(10) {
            break body;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = agent.stop();
    assert_eq!(output.status.code(), Some(1), "{output:?}");

    let report = read_report(&out.report);
    assert_valid_report(&out.report);
    let allowed = attempts_in(&report, &boot);
    assert!(!allowed.is_empty());
    for attempt in &allowed {
        assert_eq!(attempt["phase"], "boot");
        assert_eq!(attempt["verdict"], "allowed", "{attempt:#}");
        assert_eq!(
            attempt["allowed_by"]["reason"],
            "probe tolerated until OCPBUGS-00002 ships"
        );
        assert_eq!(attempt["allowed_by"]["expires"], "2099-12-31");
    }
    let violating = attempts_in(&report, &upgrade);
    assert!(!violating.is_empty());
    for attempt in &violating {
        assert_eq!(attempt["phase"], "upgrade");
        assert_eq!(attempt["verdict"], "violation", "{attempt:#}");
    }

    let line_with = |parts: &[&str]| {
        metrics.lines().any(|l| {
            l.starts_with("registry_observer_attempts_total{")
                && parts.iter().all(|p| l.contains(p))
        })
    };
    assert!(
        line_with(&[
            "component=\"getent\"",
            "phase=\"boot\"",
            "verdict=\"allowed\""
        ]),
        "{metrics}"
    );
    assert!(
        line_with(&[
            "component=\"skopeo\"",
            "phase=\"upgrade\"",
            "verdict=\"violation\""
        ]),
        "{metrics}"
    );

    let cases = python(
        "import sys\n\
         from junitparser import JUnitXml, Failure\n\
         for suite in JUnitXml.fromfile(sys.argv[1]):\n\
         \x20   for case in suite:\n\
         \x20       failed = any(isinstance(r, Failure) for r in case.result)\n\
         \x20       out = (case.system_out or '').replace('\\n', ' ')\n\
         \x20       print(f\"{suite.name}|{case.name}|{'failed' if failed else 'passed'}|{out}\")",
        &[&out.junit],
    );
    let getent = cases
        .lines()
        .find(|l| l.starts_with("phase boot|getent|"))
        .unwrap_or_else(|| panic!("no getent case in the boot suite:\n{cases}"));
    assert!(getent.contains("|passed|"), "{getent}");
    assert!(
        getent.contains("probe tolerated until OCPBUGS-00002 ships"),
        "{getent}"
    );
    let skopeo = cases
        .lines()
        .find(|l| l.starts_with("phase upgrade|skopeo|"))
        .unwrap_or_else(|| panic!("no skopeo case in the upgrade suite:\n{cases}"));
    assert!(skopeo.contains("|failed|"), "{skopeo}");
}
