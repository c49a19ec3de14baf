//! `run --state-dir`: one record across agent runs. A run killed with
//! `kill -9` keeps what it recorded; the next run on the same dir continues
//! the record without duplicating it, records the crash and the time nobody
//! observed, and a second agent on a dir in use is refused.
//!
//! Real, nothing mocked: the agent's kernel programs, the testbed's dnsmasq
//! and real `getent` lookups in the testbed's network namespace, each in a
//! cgroup of its own.
//!
//! Root and the testbed tools are required; the tests fail, never skip,
//! without them.

use std::{path::Path, process::Command, time::Duration};

use observer_tests::{
    Agent, AgentOutput, TESTBED_TOOLS, TestCgroup, Testbed, no_agent_binary,
    observe::{CLIENT_TIMEOUT, assert_valid_report, failed_lookup, read_report},
    output_within, require_root_and_tools,
};
use serde_json::Value;

/// The agent's options in these tests: the state dir, the report, no HTTP
/// endpoint, its own control socket, no DNS of its own.
fn agent_args<'a>(state: &'a Path, report: &'a Path, socket: &'a Path) -> Vec<&'a str> {
    vec![
        "--state-dir",
        state.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--catalog-resolve-interval",
        "0",
        "--metrics-addr",
        "off",
        "--control-socket",
        socket.to_str().unwrap(),
    ]
}

fn start(state_dir: &Path, report: &Path, socket: &Path) -> Agent {
    let mut args = agent_args(state_dir, report, socket);
    args.extend(["--snapshot-interval", "1s"]);
    Agent::start(&args)
}

/// `run --state-dir STATE --duration 1s` to its end, the report at `report`.
fn run_for_a_second(state: &Path, report: &Path, socket: &Path) -> AgentOutput {
    let mut args = agent_args(state, report, socket);
    args.extend(["--duration", "1s"]);
    Agent::run_to_exit(&args, Duration::from_secs(60))
}

/// Polls DIR/report.json (bounded: 15 s) until `holds` accepts it.
fn state_report_until(state: &Path, holds: impl Fn(&Value) -> bool) -> Value {
    let path = state.join("report.json");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(report) = serde_json::from_str::<Value>(&text)
            && holds(&report)
        {
            return report;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never held what was expected: {:?}",
            path.display(),
            std::fs::read_to_string(&path)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The attempts for `host` made in `cgroup`: the agent watches the whole
/// machine, and the other test of this file runs beside this one.
fn attempts_for<'a>(report: &'a Value, host: &str, cgroup: &TestCgroup) -> Vec<&'a Value> {
    report["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["host"] == host && a["cgroup"]["id"].as_u64() == Some(cgroup.id()))
        .collect()
}

/// What identifies an attempt and how often it happened: compared across
/// runs, so an attempt the kernel reported in two shapes (a process read
/// from /proc, then from its exec event after it exited) is two here too.
fn shape(attempts: &[&Value]) -> Vec<String> {
    let mut shapes: Vec<String> = attempts
        .iter()
        .map(|a| {
            format!(
                "{} {} {} {} x{}",
                a["phase"],
                a["cgroup"]["id"],
                a["process"]["comm"],
                a["process"]["exe"],
                a["count"]
            )
        })
        .collect();
    shapes.sort();
    shapes
}

fn wait_for_line(agent: &Agent, host: &str) {
    assert!(
        agent.wait_for_stdout(host, Duration::from_secs(10)),
        "no live line for {host}: {}",
        agent.stdout_so_far()
    );
}

#[test]
fn a_killed_run_keeps_its_record_and_the_next_run_continues_it() {
    require_root_and_tools(TESTBED_TOOLS);
    require_root_and_tools(&["getent"]);
    let testbed = Testbed::start().expect("starting the testbed");
    let dir = testbed.temp_dir();
    let state = dir.join("state");
    let socket = dir.join("state.sock");

    // Run 1: one attempt, then kill -9 (no report, no end record).
    let first_report = dir.join("first.json");
    let agent = start(&state, &first_report, &socket);
    let first = TestCgroup::create("state-first");
    failed_lookup(&testbed, &first, "registry.redhat.io");
    wait_for_line(&agent, "registry.redhat.io");
    // What run 1 recorded, as its own report.json said a moment before the
    // kill (written each second; the lookup is long over by then).
    std::thread::sleep(Duration::from_millis(2500));
    let seen = read_report(&state.join("report.json"));
    let seen = shape(&attempts_for(&seen, "registry.redhat.io", &first));
    assert!(!seen.is_empty(), "run 1 saw the lookup");
    let killed: AgentOutput = agent.kill();
    assert_eq!(killed.status.code(), None, "killed by a signal: {killed:?}");
    assert!(!first_report.exists(), "a killed agent writes no report");

    // Run 2 on the same dir: a second agent there is refused meanwhile.
    let report = dir.join("second.json");
    let agent = start(&state, &report, &socket);
    let other = run_for_a_second(&state, &dir.join("other.json"), &dir.join("other.sock"));
    assert_eq!(other.status.code(), Some(2), "{other:?}");
    assert!(
        other
            .stderr
            .contains("another registry-observer uses the state dir"),
        "{}",
        other.stderr
    );
    let second = TestCgroup::create("state-second");
    failed_lookup(&testbed, &second, "registry.access.redhat.com");
    wait_for_line(&agent, "registry.access.redhat.com");
    // While it runs, DIR/report.json is rewritten as of now: both runs'
    // attempts, marked as a snapshot.
    let running = state_report_until(&state, |r| {
        !attempts_for(r, "registry.access.redhat.com", &second).is_empty()
    });
    assert_eq!(running["observer"]["snapshot"], true);
    assert_eq!(
        shape(&attempts_for(&running, "registry.redhat.io", &first)),
        seen
    );
    assert_eq!(running["observer"]["runs"][1]["ended"], "running");
    let stopped = agent.stop();
    // The gap while nobody observed makes the record incomplete.
    assert_eq!(stopped.status.code(), Some(3), "{stopped:?}");
    assert!(
        stopped.stderr.contains("nothing observed from"),
        "{}",
        stopped.stderr
    );

    assert_valid_report(&report);
    let report = read_report(&report);
    let before = attempts_for(&report, "registry.redhat.io", &first);
    let after = attempts_for(&report, "registry.access.redhat.com", &second);
    assert_eq!(
        shape(&before),
        seen,
        "the killed run's attempts, each once, with their counts: {report:#}"
    );
    assert!(!after.is_empty(), "{report:#}");
    let observer = &report["observer"];
    let runs = observer["runs"].as_array().expect("observer.runs");
    assert_eq!(runs.len(), 2, "{runs:#?}");
    assert_eq!(runs[0]["ended"], "crashed", "{runs:#?}");
    assert_eq!(runs[1]["ended"], "signal", "{runs:#?}");
    assert_eq!(runs[1]["signal"], "SIGINT", "{runs:#?}");
    assert_ne!(runs[0]["pid"], runs[1]["pid"]);
    let gaps = observer["gaps"].as_array().expect("observer.gaps");
    assert_eq!(gaps.len(), 1, "{gaps:#?}");
    assert_eq!(gaps[0]["to"], runs[1]["started_at"]);
    assert_eq!(observer["complete"], false);
    assert_eq!(
        observer["started_at"], runs[0]["started_at"],
        "one record since run 1"
    );

    // Run 3 after a clean stop: everything is still there, once.
    let third_report = dir.join("third.json");
    let out = run_for_a_second(&state, &third_report, &socket);
    assert_eq!(
        out.status.code(),
        Some(3),
        "still the gap of run 1: {out:?}"
    );
    let third = read_report(&third_report);
    assert_eq!(
        shape(&attempts_for(&third, "registry.redhat.io", &first)),
        seen,
        "counted once, not again per run"
    );
    assert_eq!(
        shape(&attempts_for(&third, "registry.access.redhat.com", &second)),
        shape(&after)
    );
    let runs = third["observer"]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[2]["ended"], "clean");
    assert_eq!(third["observer"]["gaps"].as_array().unwrap().len(), 2);

    // `report build` on the dir, by the build without the agent, is the
    // agent's own final report.
    let built = dir.join("built.json");
    let out = output_within(
        Command::new(no_agent_binary())
            .args(["report", "build"])
            .arg(&state)
            .arg("-o")
            .arg(&built),
        CLIENT_TIMEOUT,
    )
    .expect("registry-observer report build");
    assert!(out.status.success(), "{out:?}");
    assert_valid_report(&built);
    assert_eq!(
        read_report(&built),
        third,
        "report build equals the final report"
    );

    // At exit the state dir's report is the final one.
    let in_dir: Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("report.json")).unwrap()).unwrap();
    assert_eq!(in_dir, third, "DIR/report.json is the final report");
    assert!(in_dir["observer"].get("snapshot").is_none());

    // The spool is the agent's own: no stray files beside it.
    let listing =
        output_within(Command::new("ls").arg("-R").arg(&state), CLIENT_TIMEOUT).expect("ls");
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("spool.lock"), "{listing}");
}

/// The newest segment file in the spool.
fn newest_segment(state: &Path) -> std::path::PathBuf {
    let mut segments: Vec<_> = std::fs::read_dir(state.join("spool"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    segments.pop().expect("a segment")
}

/// A record cut short (what a crash mid-write leaves) is skipped and
/// counted, the records before it stand; a state dir from a newer format is
/// refused before anything is attached.
#[test]
fn a_torn_record_is_counted_and_a_newer_format_refused() {
    require_root_and_tools(TESTBED_TOOLS);
    require_root_and_tools(&["getent"]);
    let testbed = Testbed::start().expect("starting the testbed");
    let dir = testbed.temp_dir();
    let state = dir.join("state");
    let socket = dir.join("torn.sock");
    let agent = start(&state, &dir.join("a.json"), &socket);
    let cgroup = TestCgroup::create("state-torn");
    failed_lookup(&testbed, &cgroup, "registry.redhat.io");
    wait_for_line(&agent, "registry.redhat.io");
    let killed = agent.kill();
    assert_eq!(killed.status.code(), None, "{killed:?}");

    // Half a record frame at the end of the newest segment.
    let torn = newest_segment(&state);
    let mut bytes = std::fs::read(&torn).unwrap();
    bytes.extend_from_slice(&[0x40, 0, 0, 0, 0xde, 0xad]);
    std::fs::write(&torn, &bytes).unwrap();

    let report = dir.join("b.json");
    let out = run_for_a_second(&state, &report, &socket);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(out.stderr.contains("torn record"), "{}", out.stderr);
    assert_valid_report(&report);
    let report = read_report(&report);
    assert_eq!(report["observer"]["losses"]["state_dir_damaged"], 1);
    let shapes = shape(&attempts_for(&report, "registry.redhat.io", &cgroup));
    assert!(!shapes.is_empty(), "the records before the torn one stand");
    let mut distinct = shapes.clone();
    distinct.dedup();
    assert_eq!(distinct, shapes, "each attempt once");

    // A segment from a newer format: refused, named, nothing attached.
    let mut newer = b"ROSPOOL\n".to_vec();
    newer.extend_from_slice(&99u32.to_le_bytes());
    let text = b"node=x\nsequence=99999\nbase=0\n";
    newer.extend_from_slice(&(text.len() as u32).to_le_bytes());
    newer.extend_from_slice(text);
    std::fs::write(state.join("spool/spool-0000000000099999.seg"), newer).unwrap();
    let out = run_for_a_second(&state, &dir.join("refused.json"), &socket);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        out.stderr.contains("newer registry-observer"),
        "{}",
        out.stderr
    );
}
