//! Policy end to end: the real agent with a `--config` file (YAML and TOML)
//! that adds catalog entries, imports a registries.conf fixture with a
//! mirror, and allowlists one component but not another; real clients
//! (getent, skopeo, python) in the testbed's network namespace. Assertions
//! are on the written report, which is also validated against the schema.
//!
//! Root and the testbed tools are required; the tests fail, never skip,
//! without them.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use observer_tests::{
    Agent, AgentOutput, TESTBED_TOOLS, TestCgroup, Testbed,
    observe::{PYTHON, assert_valid_report, read_report},
    output_within, require_root_and_tools,
};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(120);

fn setup() -> Testbed {
    require_root_and_tools(TESTBED_TOOLS);
    require_root_and_tools(&[PYTHON, "getent", "skopeo", "sh"]);
    Testbed::start().expect("starting the testbed")
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path.to_path_buf()
}

/// `registry-observer run ARGS -- sh -c SCRIPT`, to its end.
fn run_wrapped(args: &[&str], script: &str) -> AgentOutput {
    let mut argv: Vec<&str> = args.to_vec();
    argv.extend(["--catalog-resolve-interval", "0", "--", "sh", "-c", script]);
    Agent::run_to_exit(&argv, TIMEOUT)
}

fn attempts_by(report: &Value, comm: &str) -> Vec<Value> {
    report["attempts"]
        .as_array()
        .expect("attempts is an array")
        .iter()
        .filter(|a| a["process"]["comm"] == comm)
        .cloned()
        .collect()
}

/// One wrapped script runs three clients. getent's lookup of
/// registry.redhat.io is allowlisted for component `getent`; skopeo's pull
/// from quay.io matches only an entry that expired in 2020, and quay.io has
/// a mirror in the registries.conf fixture; python connects to an address
/// that only a catalog CIDR names.
#[test]
fn allowlist_decides_per_component_with_reasons_mirrors_and_expiry() {
    let testbed = setup();
    let dir = testbed.temp_dir();
    let conf_dir = dir.join("registries.conf.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let registries_conf = write(
        &dir.join("registries.conf"),
        "[[registry]]\nlocation = \"quay.io\"\n\n[[registry.mirror]]\nlocation = \"mirror.example.test:5000/quay\"\n",
    );
    let cidr_ip = testbed.other_ip();
    let config = write(
        &dir.join("policy.yaml"),
        &format!(
            "catalog:\n  entries:\n    - cidr: {cidr_ip}/32\n      category: blob-storage\n\
             registries_conf:\n  file: {}\n  dir: {}\n\
             policy:\n  allow:\n\
             \x20   - component: getent\n      host: registry.redhat.io\n      reason: lookups are tolerated in this test\n      link: https://issues.example/1\n\
             \x20   - component: skopeo\n      reason: a permission that ran out\n      expires: 2020-01-01\n",
            registries_conf.display(),
            conf_dir.display()
        ),
    );
    let report_path = dir.join("policy.json");
    let ns = testbed.netns();
    let skopeo = format!(
        "skopeo inspect --cert-dir {} {}",
        testbed.cert_dir().display(),
        testbed.image_ref()
    );
    // Nothing listens there: the refused connect() is the attempt.
    let connect = write(
        &dir.join("connect.py"),
        &format!(
            "import socket\ns = socket.socket()\ns.settimeout(5)\nprint(s.connect_ex(('{cidr_ip}', 80)))\n"
        ),
    );
    let script = format!(
        "ip netns exec {ns} getent hosts registry.redhat.io; \
         ip netns exec {ns} {skopeo} >/dev/null && \
         ip netns exec {ns} {PYTHON} {}",
        connect.display()
    );
    let output = run_wrapped(
        &[
            "--config",
            config.to_str().unwrap(),
            "--report",
            report_path.to_str().unwrap(),
            "--fail-on-violation",
        ],
        &script,
    );
    // skopeo's and python's attempts are violations.
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report = read_report(&report_path);
    assert_valid_report(&report_path);
    assert_eq!(report["observer"]["command_exit_code"], 0, "{output:?}");

    // getent's A and AAAA lookups are one attempt, or two when the process
    // had exited before /proc was read for one of them (exe then null).
    let getent = attempts_by(&report, "getent");
    assert!((1..=2).contains(&getent.len()), "{getent:#?}");
    for attempt in &getent {
        assert_eq!(attempt["host"], "registry.redhat.io");
        assert_eq!(attempt["component"], "getent");
        assert_eq!(attempt["verdict"], "allowed");
        assert_eq!(
            attempt["allowed_by"],
            serde_json::json!({
                "reason": "lookups are tolerated in this test",
                "link": "https://issues.example/1",
                "expires": null
            })
        );
        assert_eq!(attempt["mirror_fallback"], false);
    }

    let skopeo = attempts_by(&report, "skopeo");
    assert!(!skopeo.is_empty(), "{report:#}");
    for attempt in &skopeo {
        assert_eq!(attempt["host"], "quay.io", "{attempt:#}");
        assert_eq!(attempt["verdict"], "violation", "{attempt:#}");
        assert_eq!(attempt["allowed_by"], Value::Null);
        assert_eq!(attempt["mirror_fallback"], true, "{attempt:#}");
    }

    let by_address: Vec<&Value> = report["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["host"].is_null())
        .collect();
    assert_eq!(by_address.len(), 1, "{report:#}");
    let connect = by_address[0];
    assert_eq!(
        connect["registry"],
        serde_json::json!({
            "pattern": format!("{cidr_ip}/32"),
            "category": "blob-storage",
            "source": "config",
            "blocked": false
        })
    );
    assert_eq!(connect["evidence"], serde_json::json!(["connect"]));
    assert_eq!(
        connect["dest"],
        serde_json::json!({"ip": cidr_ip.to_string(), "port": 80})
    );
    assert_eq!(connect["verdict"], "violation");

    let allow = &report["policy"]["allow"];
    assert_eq!(
        report["policy"]["enforce_phases"],
        serde_json::json!(["boot", "upgrade"])
    );
    assert_eq!(
        allow[0]["allowed_attempts"].as_u64(),
        Some(getent.len() as u64),
        "{allow:#}"
    );
    assert_eq!(allow[0]["expired"], false);
    assert_eq!(allow[1]["expired"], true, "{allow:#}");
    assert_eq!(allow[1]["expires"], "2020-01-01");
    assert_eq!(allow[1]["allowed_attempts"], 0);
    assert_eq!(
        allow[1]["matched_after_expiry"].as_u64(),
        Some(skopeo.len() as u64),
        "{allow:#}"
    );
    assert!(
        output.stderr.contains("expired on 2020-01-01"),
        "{}",
        output.stderr
    );

    let imported = &report["registries_conf"];
    assert_eq!(
        imported["files"],
        serde_json::json!([registries_conf.display().to_string()])
    );
    assert_eq!(imported["mirrored"][0]["location"], "quay.io");
    assert_eq!(
        imported["mirrored"][0]["mirrors"],
        serde_json::json!(["mirror.example.test:5000/quay"])
    );

    let summary = &report["summary"];
    assert_eq!(
        summary["allowed"].as_u64(),
        Some(getent.len() as u64),
        "{summary:#}"
    );
    assert_eq!(
        summary["violations"].as_u64(),
        Some(skopeo.len() as u64 + 1)
    );
    assert_eq!(
        summary["mirror_fallbacks"].as_u64(),
        Some(skopeo.len() as u64)
    );
}

/// A TOML config whose initial phase is outside `enforce_phases`: the
/// attempt is recorded as `not_enforced`, and `--fail-on-violation` passes;
/// `--phase upgrade` on the command line overrides the file and fails.
#[test]
fn phases_outside_the_policy_are_not_enforced_and_flags_override_the_file() {
    let testbed = setup();
    let dir = testbed.temp_dir();
    let config = write(
        &dir.join("phases.toml"),
        "[registries_conf]\nenabled = false\n\n[policy]\nenforce_phases = [\"upgrade\"]\n\n\
         [phases]\ninitial = \"steady\"\n",
    );
    let report_path = dir.join("phases.json");
    let script = format!(
        "ip netns exec {} getent hosts registry.redhat.io; true",
        testbed.netns()
    );
    let args = |phase: Option<&'static str>| {
        let mut args = vec![
            "--config".to_string(),
            config.display().to_string(),
            "--report".into(),
            report_path.display().to_string(),
            "--fail-on-violation".into(),
        ];
        if let Some(phase) = phase {
            args.extend(["--phase".to_string(), phase.to_string()]);
        }
        args
    };

    let argv = args(None);
    let output = run_wrapped(
        &argv.iter().map(String::as_str).collect::<Vec<_>>(),
        &script,
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report = read_report(&report_path);
    assert_valid_report(&report_path);
    let attempts = attempts_by(&report, "getent");
    assert!(!attempts.is_empty(), "{report:#}");
    for attempt in &attempts {
        assert_eq!(attempt["phase"], "steady");
        assert_eq!(attempt["verdict"], "not_enforced");
    }
    assert_eq!(
        report["summary"]["not_enforced"].as_u64(),
        Some(attempts.len() as u64)
    );
    assert_eq!(report["summary"]["violations"], 0);
    assert_eq!(report["registries_conf"], Value::Null);

    let argv = args(Some("upgrade"));
    let output = run_wrapped(
        &argv.iter().map(String::as_str).collect::<Vec<_>>(),
        &script,
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report = read_report(&report_path);
    let attempts = attempts_by(&report, "getent");
    assert!(!attempts.is_empty(), "{report:#}");
    for attempt in &attempts {
        assert_eq!(attempt["phase"], "upgrade");
        assert_eq!(attempt["verdict"], "violation");
    }
}

/// SIGHUP re-reads the config. A broken file is reported with its line and
/// changes nothing: the agent keeps running and keeps what it recorded. A
/// fixed file then takes effect, and the report judges by it.
#[test]
fn a_failed_reload_keeps_the_running_configuration_and_the_data() {
    let testbed = setup();
    let dir = testbed.temp_dir();
    let config_path = dir.join("reload.yaml");
    write(&config_path, "registries_conf:\n  enabled: false\n");
    let report_path = dir.join("reload.json");
    let cgroup = TestCgroup::create("reload");
    let agent = Agent::start(&[
        "--config",
        config_path.to_str().unwrap(),
        "--report",
        report_path.to_str().unwrap(),
        "--catalog-resolve-interval",
        "0",
    ]);
    let lookup = || {
        let mut command = testbed.netns_command_in(&cgroup, "getent");
        command.args(["hosts", "registry.redhat.io"]);
        let result = output_within(&mut command, TIMEOUT).expect("running getent");
        assert_eq!(
            result.status.code(),
            Some(2),
            "NXDOMAIN expected: {result:?}"
        );
    };
    let hangup = |agent: &Agent| {
        // SAFETY: kill(2) on the agent's pid, which this test started.
        let rc = unsafe { libc::kill(agent.pid() as libc::pid_t, libc::SIGHUP) };
        assert_eq!(rc, 0, "SIGHUP to the agent");
    };
    let wait_for_stderr = |agent: &Agent, needle: &str, times: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while agent.stderr_so_far().matches(needle).count() < times {
            assert!(
                std::time::Instant::now() < deadline,
                "agent stderr lacks {needle:?}:\n{}",
                agent.stderr_so_far()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    lookup();
    assert!(
        agent.wait_for_stdout("registry.redhat.io", Duration::from_secs(10)),
        "{}",
        agent.stdout_so_far()
    );
    // One live line per event.
    let lines_for = |stdout: &str| {
        stdout
            .lines()
            .filter(|l| {
                l.contains("registry.redhat.io")
                    && l.ends_with(&format!("cgroup {}", cgroup.relative_path()))
            })
            .count() as u64
    };
    std::thread::sleep(Duration::from_millis(200));
    let before_failed_reload = lines_for(&agent.stdout_so_far());
    // A typo on line 3: unknown key `reasn`.
    write(
        &config_path,
        "policy:\n  allow:\n    - reasn: x\n      component: getent\n",
    );
    hangup(&agent);
    wait_for_stderr(&agent, "reload failed", 1);
    let stderr = agent.stderr_so_far();
    assert!(
        stderr.contains(&format!("config error: {}:3:", config_path.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("keeping the running configuration"),
        "{stderr}"
    );
    lookup();

    write(
        &config_path,
        "registries_conf:\n  enabled: false\npolicy:\n  allow:\n    - component: getent\n      reason: accepted after review\n",
    );
    hangup(&agent);
    wait_for_stderr(&agent, "configuration reloaded", 1);
    lookup();

    let output = agent.stop();
    assert!(output.status.success(), "{output:?}");
    let report = read_report(&report_path);
    assert_valid_report(&report_path);
    let attempts: Vec<&Value> = report["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["cgroup"]["id"].as_u64() == Some(cgroup.id()))
        .collect();
    // All three lookups (A and AAAA each), the first from before the
    // failed reload, are kept. Identical attempts merge with a count; a
    // lookup whose process was gone before /proc was read stays apart.
    assert!(!attempts.is_empty(), "{report:#}");
    let events: u64 = attempts.iter().map(|a| a["count"].as_u64().unwrap()).sum();
    assert_eq!(events, lines_for(&output.stdout), "{attempts:#?}");
    assert!(events >= before_failed_reload + 2, "{attempts:#?}");
    for attempt in &attempts {
        assert_eq!(attempt["verdict"], "allowed", "{attempt:#}");
        assert_eq!(attempt["allowed_by"]["reason"], "accepted after review");
    }
}
