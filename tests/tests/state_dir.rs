//! `run --state-dir`: one record across agent runs. A run killed with
//! `kill -9` keeps what it recorded; its programs stay attached (pinned),
//! so what happens while no agent runs is drained by the next run on the
//! same dir, which continues the record without duplicating it and records
//! the crash; a second agent on a dir in use is refused. Under a load of
//! lookups, a `kill -9` and a restart lose and double nothing; a SIGTERM
//! and a restart swap the programs in the pinned links, one copy each.
//!
//! Real, nothing mocked: the agent's kernel programs, the testbed's dnsmasq
//! and real lookups (`getent`, glibc's resolver in a Python loop) in the
//! testbed's network namespace, each in a cgroup of its own; bpftool for
//! what the kernel has attached.
//!
//! Root and the testbed tools are required; the tests fail, never skip,
//! without them.

use std::{path::Path, process::Command, time::Duration};

use observer_tests::{
    Agent, AgentOutput, TESTBED_TOOLS, TestCgroup, TestPins, Testbed, no_agent_binary,
    observe::{CLIENT_TIMEOUT, assert_valid_report, failed_lookup, read_report},
    output_within, require_root_and_tools,
};
use serde_json::Value;

/// The agent's options in these tests: the state dir and the test's own
/// pin dir, the report, no HTTP endpoint, its own control socket, no DNS
/// of its own.
fn agent_args<'a>(
    state: &'a Path,
    pins: &'a TestPins,
    report: &'a Path,
    socket: &'a Path,
) -> Vec<&'a str> {
    vec![
        "--state-dir",
        state.to_str().unwrap(),
        "--pin-dir",
        pins.path_str(),
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

fn start(state_dir: &Path, pins: &TestPins, report: &Path, socket: &Path) -> Agent {
    let mut args = agent_args(state_dir, pins, report, socket);
    args.extend(["--snapshot-interval", "1s"]);
    Agent::start(&args)
}

/// `run --state-dir STATE --duration 1s` to its end, the report at `report`.
fn run_for_a_second(state: &Path, pins: &TestPins, report: &Path, socket: &Path) -> AgentOutput {
    let mut args = agent_args(state, pins, report, socket);
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
    let pins = TestPins::new("killed");

    // Run 1: one attempt, then kill -9 (no report, no end record).
    let first_report = dir.join("first.json");
    let agent = start(&state, &pins, &first_report, &socket);
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
    // Its programs stay attached: a lookup now is captured in the pinned
    // ring buffer, for the next run to drain.
    let while_down = TestCgroup::create("state-down");
    failed_lookup(&testbed, &while_down, "registry.connect.redhat.com");

    // Run 2 on the same dir: a second agent there is refused meanwhile.
    let report = dir.join("second.json");
    let agent = start(&state, &pins, &report, &socket);
    let other_pins = TestPins::new("killed-other");
    let other = run_for_a_second(
        &state,
        &other_pins,
        &dir.join("other.json"),
        &dir.join("other.sock"),
    );
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
    // The pinned programs observed while no agent ran: no gap.
    assert_eq!(stopped.status.code(), Some(0), "{stopped:?}");

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
    let drained = attempts_for(&report, "registry.connect.redhat.com", &while_down);
    assert_eq!(
        drained.len(),
        1,
        "the lookup made while no agent ran, drained by run 2: {report:#}"
    );
    let observer = &report["observer"];
    let runs = observer["runs"].as_array().expect("observer.runs");
    assert_eq!(runs.len(), 2, "{runs:#?}");
    assert_eq!(runs[0]["ended"], "crashed", "{runs:#?}");
    assert_eq!(runs[1]["ended"], "signal", "{runs:#?}");
    assert_eq!(runs[1]["signal"], "SIGINT", "{runs:#?}");
    assert_ne!(runs[0]["pid"], runs[1]["pid"]);
    assert!(observer.get("gaps").is_none(), "no gap: {observer:#}");
    assert_eq!(observer["complete"], true);
    assert_eq!(
        observer["started_at"], runs[0]["started_at"],
        "one record since run 1"
    );

    // Run 3 after a clean stop: everything is still there, once.
    let third_report = dir.join("third.json");
    let out = run_for_a_second(&state, &pins, &third_report, &socket);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
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
    assert!(third["observer"].get("gaps").is_none());

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
    let pins = TestPins::new("torn");
    let agent = start(&state, &pins, &dir.join("a.json"), &socket);
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
    let out = run_for_a_second(&state, &pins, &report, &socket);
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
    let out = run_for_a_second(&state, &pins, &dir.join("refused.json"), &socket);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        out.stderr.contains("newer registry-observer"),
        "{}",
        out.stderr
    );
}

/// A client that resolves `quay.io` through glibc (the testbed's dnsmasq
/// answers it) `rate` times a second for `seconds`, one A query per lookup
/// (no retries: `RES_OPTIONS=attempts:1`), and prints how many lookups it
/// made: the client side's count.
const LOOKUP_LOOP: &str = r#"
import socket, sys, time
rate, seconds = int(sys.argv[1]), float(sys.argv[2])
done = 0
start = time.monotonic()
while time.monotonic() - start < seconds:
    try:
        socket.getaddrinfo("quay.io.", 443, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        pass
    done += 1
    ahead = done / rate - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(ahead)
print(done)
"#;

/// [`LOOKUP_LOOP`] in the testbed's namespace, in `cgroup`.
fn lookup_loop(testbed: &Testbed, cgroup: &TestCgroup, rate: u32, seconds: u32) -> Command {
    let mut command = testbed.netns_command_in(cgroup, "python3");
    command.env("RES_OPTIONS", "attempts:1 timeout:5").args([
        "-c",
        LOOKUP_LOOP,
        &rate.to_string(),
        &seconds.to_string(),
    ]);
    command
}

/// The lookups the loop says it made; it must have ended well.
fn lookups_made(client: &std::process::Output) -> u64 {
    assert!(client.status.success(), "{client:?}");
    String::from_utf8_lossy(&client.stdout)
        .trim()
        .parse()
        .expect("the loop's count")
}

/// The DNS queries for quay.io from `cgroup`, summed over its attempts.
fn queries_recorded(report: &Value, cgroup: &TestCgroup) -> u64 {
    attempts_for(report, "quay.io", cgroup)
        .iter()
        .filter(|a| {
            a["evidence"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e.as_str().is_some_and(|e| e.starts_with("dns_query")))
        })
        .map(|a| a["count"].as_u64().unwrap())
        .sum()
}

/// Several hundred lookups a second for 20 s; the agent is killed with
/// `kill -9` a third of the way in and started again a few seconds later.
/// The final report counts exactly the lookups the client made: the ring
/// buffer held what the killed agent had not applied and what was
/// captured while no agent ran, and what the spool already held is not
/// applied twice.
#[test]
fn kill_9_under_load_loses_and_doubles_nothing() {
    require_root_and_tools(TESTBED_TOOLS);
    require_root_and_tools(&["python3", "bpftool"]);
    let testbed = Testbed::start().expect("starting the testbed");
    let dir = testbed.temp_dir();
    let state = dir.join("state");
    let socket = dir.join("load.sock");
    let pins = TestPins::new("load");
    let agent = start(&state, &pins, &dir.join("killed.json"), &socket);
    let cgroup = TestCgroup::create("state-load");
    let client = lookup_loop(&testbed, &cgroup, 400, 20)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting the lookup loop");
    std::thread::sleep(Duration::from_secs(7));
    let killed = agent.kill();
    assert_eq!(killed.status.code(), None, "{killed:?}");
    std::thread::sleep(Duration::from_secs(3));
    let report = dir.join("final.json");
    let agent = start(&state, &pins, &report, &socket);
    let made = lookups_made(&client.wait_with_output().expect("the lookup loop"));
    assert!(made >= 20 * 200, "several hundred a second: {made}");
    // Until the agent has drained the last of them (bounded).
    let snapshot = state_report_until(&state, |r| queries_recorded(r, &cgroup) >= made);
    assert_eq!(queries_recorded(&snapshot, &cgroup), made);
    let stopped = agent.stop();
    assert_eq!(stopped.status.code(), Some(0), "complete: {stopped:?}");
    assert_valid_report(&report);
    let report = read_report(&report);
    assert_eq!(
        queries_recorded(&report, &cgroup),
        made,
        "every lookup once: {}",
        serde_json::to_string_pretty(&attempts_for(&report, "quay.io", &cgroup)).unwrap()
    );
    let runs = report["observer"]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{runs:#?}");
    assert_eq!(runs[0]["ended"], "crashed");
    assert!(report["observer"].get("gaps").is_none(), "{report:#}");
    assert_eq!(report["observer"]["events_lost"], 0);
}

/// A SIGTERM'd agent leaves its programs attached; the next one swaps its
/// own into the pinned links (each start loads its programs afresh, with
/// its own frozen globals, so a newer build takes the same path): every
/// hook keeps one link, now running the new program, the old programs are
/// gone from the cgroup2 root, and what happened between the two runs is
/// in the record. `detach` then removes
/// every pin and program.
#[test]
fn sigterm_and_restart_swap_the_programs_with_no_gap_and_one_copy() {
    require_root_and_tools(TESTBED_TOOLS);
    require_root_and_tools(&["getent", "bpftool"]);
    let testbed = Testbed::start().expect("starting the testbed");
    let dir = testbed.temp_dir();
    let state = dir.join("state");
    let socket = dir.join("swap.sock");
    let pins = TestPins::new("swap");
    let agent = start(&state, &pins, &dir.join("first.json"), &socket);
    let before = pins.linked_programs();
    assert_eq!(before.len(), 10, "a pinned link per hook: {before:?}");
    let stopped = agent.terminate();
    assert_eq!(stopped.status.code(), Some(0), "{stopped:?}");
    assert_eq!(pins.linked_programs(), before, "still attached after exit");

    let between = TestCgroup::create("state-between");
    failed_lookup(&testbed, &between, "registry.connect.redhat.com");

    let report = dir.join("second.json");
    let agent = start(&state, &pins, &report, &socket);
    assert!(
        agent
            .stderr_so_far()
            .contains("adopted the pinned programs"),
        "{}",
        agent.stderr_so_far()
    );
    let after = pins.linked_programs();
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "the same hooks, one link each"
    );
    let on_root = observer_tests::programs_on_cgroup2_root();
    let root_ids: std::collections::BTreeSet<u64> = on_root.iter().map(|(id, _)| *id).collect();
    for (hook, old) in &before {
        let new = after[hook];
        assert_ne!(new, *old, "{hook} runs the new agent's program");
        assert!(
            !root_ids.contains(old),
            "{hook}'s old program {old} is detached: {on_root:?}"
        );
    }
    for cgroup_hook in [
        "connect4",
        "connect6",
        "skb_egress",
        "skb_ingress",
        "sendmsg4",
        "sendmsg6",
    ] {
        assert!(
            root_ids.contains(&after[cgroup_hook]),
            "{cgroup_hook} is on the cgroup2 root: {on_root:?}"
        );
    }
    let stopped = agent.stop();
    assert_eq!(stopped.status.code(), Some(0), "{stopped:?}");
    let report = read_report(&report);
    assert_eq!(
        attempts_for(&report, "registry.connect.redhat.com", &between).len(),
        1,
        "the lookup between the runs: {report:#}"
    );
    let runs = report["observer"]["runs"].as_array().unwrap();
    assert_eq!(runs[0]["ended"], "signal");
    assert_eq!(runs[0]["signal"], "SIGTERM");
    assert!(report["observer"].get("gaps").is_none(), "{report:#}");

    // Uninstall: every pin goes, and the programs with them.
    let out = pins.detach();
    assert!(out.status.success(), "{out:?}");
    assert!(!pins.path().exists());
    let root_ids: std::collections::BTreeSet<u64> = observer_tests::programs_on_cgroup2_root()
        .iter()
        .map(|(id, _)| *id)
        .collect();
    for (hook, id) in &after {
        assert!(!root_ids.contains(id), "{hook} detached");
    }
}

/// A tmpfs of `size` mounted at `path` for one test; unmounted on drop.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        let out = output_within(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(path),
            CLIENT_TIMEOUT,
        )
        .expect("mount");
        assert!(out.status.success(), "mounting a tmpfs: {out:?}");
        SmallDisk {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// A state dir on a disk that fills up: the agent goes on observing, says
/// so once, counts every record it could not write
/// (`observer.losses.state_dir`), and its final report (written elsewhere)
/// still holds every lookup; the run is incomplete (exit 3).
#[test]
fn a_full_state_dir_disk_is_counted_and_the_agent_goes_on() {
    require_root_and_tools(TESTBED_TOOLS);
    require_root_and_tools(&["python3", "mount", "umount"]);
    let testbed = Testbed::start().expect("starting the testbed");
    let dir = testbed.temp_dir();
    let state = dir.join("state");
    let _disk = SmallDisk::mount(&state, "256k");
    let pins = TestPins::new("full");
    let report = dir.join("full.json");
    let agent = start(&state, &pins, &report, &dir.join("full.sock"));
    let cgroup = TestCgroup::create("state-full");
    let made = lookups_made(
        &output_within(
            &mut lookup_loop(&testbed, &cgroup, 300, 4),
            Duration::from_secs(60),
        )
        .expect("the lookup loop"),
    );
    // Each lookup appends an attempt record of about a kilobyte: far more
    // than 256 KiB.
    assert!(made > 600, "{made}");
    assert!(
        agent.wait_for_stdout("quay.io", Duration::from_secs(10)),
        "still observing"
    );
    std::thread::sleep(Duration::from_secs(2));
    let stopped = agent.stop();
    assert_eq!(stopped.status.code(), Some(3), "incomplete: {stopped:?}");
    assert_eq!(
        stopped.stderr.matches("the state dir's spool:").count(),
        1,
        "said once: {}",
        stopped.stderr
    );
    assert_valid_report(&report);
    let report = read_report(&report);
    assert_eq!(queries_recorded(&report, &cgroup), made, "every lookup");
    let losses = &report["observer"]["losses"];
    assert!(
        losses["state_dir"].as_u64().unwrap() > 0,
        "records not written are counted: {losses:#}"
    );
    assert_eq!(report["observer"]["complete"], false);
}
