//! `--host-root`: an agent whose own /proc is not the host's (as in a
//! container that mounts the host's / at /host) reads process details from
//! the host's /proc under the root it is given.
//!
//! Real, nothing mocked: the agent runs in a PID namespace of its own
//! (`unshare --pid --mount`) with a fresh procfs on /proc that shows only
//! that namespace, and the host's / bind-mounted at a directory the test
//! makes, the way a DaemonSet's hostPath volume would be. The kernel
//! programs report host pids, so only the host's /proc knows them. The
//! client is a real Python resolver in the testbed's network namespace,
//! asking the testbed's dnsmasq.
//!
//! Root and the testbed tools are required; the test fails, never skips,
//! without them.

use std::{path::Path, time::Duration};

use observer_tests::{
    Agent, AgentOutput, TESTBED_TOOLS, Testbed, agent_binary,
    observe::{PYTHON, assert_valid_report, read_report},
    require_root_and_tools,
};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(120);

/// A script that starts `agent` in new PID and mount namespaces: the
/// host's / stays visible at `host_root`, and /proc is remounted for the new
/// PID namespace. `--kill-child` passes a stop on.
fn nested_wrapper(agent: &Path, host_root: &Path) -> String {
    format!(
        "#!/bin/sh\n\
         exec unshare --mount --propagation private --pid --fork --kill-child=SIGINT -- \
         sh -c 'mount --rbind / \"$0\" && mount -t proc proc /proc && exec \"$@\"' \
         '{}' '{}' \"$@\"\n",
        host_root.display(),
        agent.display()
    )
}

/// Looks up a registry name (NXDOMAIN from the testbed) and stays alive,
/// so its /proc entry exists when the agent reads it.
const CLIENT: &str = "import socket, time\n\
try:\n    socket.getaddrinfo('registry.redhat.io', 443)\n\
except socket.gaierror:\n    pass\n\
time.sleep(3)\n";

/// `registry-observer run [extra] -- ip netns exec NS python3 -c CLIENT`
/// inside the nested namespaces; returns its output and report.
fn run_nested(testbed: &Testbed, name: &str, extra: &[&str]) -> (AgentOutput, Value) {
    let dir = testbed.temp_dir();
    let wrapper = dir.join("nested-agent");
    let host_root = dir.join("host");
    std::fs::create_dir_all(&host_root).unwrap();
    std::fs::write(&wrapper, nested_wrapper(&agent_binary(), &host_root)).unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let report = dir.join(format!("{name}.json"));
    let socket = dir.join(format!("{name}.sock"));
    let mut args = vec![
        "--report",
        report.to_str().unwrap(),
        "--catalog-resolve-interval",
        "0",
        "--metrics-addr",
        "off",
        "--control-socket",
        socket.to_str().unwrap(),
    ];
    args.extend(extra.iter().copied());
    args.extend([
        "--",
        "ip",
        "netns",
        "exec",
        testbed.netns(),
        PYTHON,
        "-c",
        CLIENT,
    ]);
    let out = Agent::run_binary_to_exit(&wrapper, &args, TIMEOUT);
    assert!(
        Path::new(&report).exists(),
        "no report from the nested agent: {out:?}"
    );
    assert_valid_report(&report);
    (out, read_report(&report))
}

fn python_attempt(report: &Value) -> &Value {
    report["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["host"] == "registry.redhat.io")
        .unwrap_or_else(|| panic!("no attempt for registry.redhat.io: {report:#}"))
}

#[test]
fn process_details_come_from_the_host_root_when_the_agents_own_proc_is_not_the_hosts() {
    require_root_and_tools(TESTBED_TOOLS);
    require_root_and_tools(&[PYTHON, "unshare", "mount", "ip"]);
    let testbed = Testbed::start().expect("starting the testbed");

    let host_root = testbed.temp_dir().join("host");
    let host_root = host_root.to_str().unwrap().to_string();
    let (out, with) = run_nested(&testbed, "with-host-root", &["--host-root", &host_root]);
    assert!(
        !out.stderr.contains("nested PID namespace"),
        "--host-root names the host's /proc, so no warning: {}",
        out.stderr
    );
    let attempt = python_attempt(&with);
    assert!(
        attempt["process"]["exe"]
            .as_str()
            .is_some_and(|exe| exe.contains("python")),
        "{attempt:#}"
    );
    let stats = &with["observer"]["attribution"];
    assert_eq!(stats["process_gone"], 0, "{stats:#}");
    assert_eq!(
        stats["from_lineage"], 0,
        "read from the host's /proc: {stats:#}"
    );

    // The same run without it: the agent's /proc does not know host pids,
    // it says so, and the process is described from its exec event at
    // best. This is what makes the check above able to fail.
    let (out, without) = run_nested(&testbed, "without-host-root", &[]);
    assert!(
        out.stderr.contains("nested PID namespace"),
        "{}",
        out.stderr
    );
    let stats = &without["observer"]["attribution"];
    let not_from_proc =
        stats["process_gone"].as_u64().unwrap() + stats["from_lineage"].as_u64().unwrap();
    assert!(not_from_proc >= 1, "{stats:#}");
    python_attempt(&without);

    // A root without the host's /proc is refused before anything loads.
    let empty = testbed.temp_dir().join("empty-root");
    std::fs::create_dir_all(&empty).unwrap();
    let out = Agent::run_to_exit(
        &["--host-root", empty.to_str().unwrap(), "--duration", "1s"],
        TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        out.stderr.contains("proc/1/stat does not exist"),
        "{}",
        out.stderr
    );
}
