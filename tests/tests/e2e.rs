//! End to end: the real `registry-observer` binary with its real eBPF
//! programs, real clients (skopeo, getent, python) resolving through a real
//! dnsmasq and talking to a real TLS registry, all inside a network namespace
//! the test creates. Every assertion is made on the written report (and the
//! live output), as a user would read them.
//!
//! These tests need root and the testbed tools; they fail (never skip) when
//! those are missing.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use observer_tests::{
    Agent, TestCgroup, Testbed, agent_binary,
    observe::{
        CLIENT_TIMEOUT, PYTHON, agent_args, assert_complete, assert_valid_report, attempts_in,
        evidence, in_netns, read_report, setup, start_agent,
    },
    output_within, require_root_and_tools, run_checked,
};
use serde_json::Value;

/// `getent hosts registry.redhat.io` in `cgroup`: NXDOMAIN from the
/// testbed's dnsmasq, which is checked to have seen the query.
fn failed_registry_lookup(testbed: &Testbed, cgroup: &TestCgroup) -> std::process::Output {
    let result = output_within(
        &mut in_netns(testbed, cgroup, &["getent", "hosts", "registry.redhat.io"]),
        CLIENT_TIMEOUT,
    )
    .expect("running getent");
    testbed
        .wait_for_dns_log("registry.redhat.io", Duration::from_secs(5))
        .expect("dnsmasq saw the query");
    result
}

fn skopeo_inspect_argv(testbed: &Testbed) -> Vec<String> {
    vec![
        "skopeo".into(),
        "inspect".into(),
        "--cert-dir".into(),
        testbed.cert_dir().display().to_string(),
        testbed.image_ref(),
    ]
}

#[test]
fn skopeo_inspect_is_one_attempt_with_dns_query_and_connect() {
    let testbed = setup();
    let report_path = testbed.temp_dir().join("skopeo.json");
    let cgroup = TestCgroup::create("skopeo");
    let agent = start_agent(&report_path);

    let argv = skopeo_inspect_argv(&testbed);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    run_checked(&mut in_netns(&testbed, &cgroup, &argv), CLIENT_TIMEOUT)
        .expect("skopeo inspect through the testbed registry");

    let output = agent.stop();
    assert!(output.status.success(), "agent failed: {output:?}");
    let report = read_report(&report_path);
    assert_valid_report(&report_path);
    assert_complete(&report);

    let attempts = attempts_in(&report, &cgroup);
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    let attempt = &attempts[0];
    assert_eq!(attempt["host"], "quay.io");
    let evidence = evidence(attempt);
    // skopeo is a Go client: its ClientHello carries a post-quantum key
    // share and the SNI is still read from it.
    assert!(
        evidence.contains(&"dns_query")
            && evidence.contains(&"connect")
            && evidence.contains(&"tls_sni"),
        "{evidence:?}"
    );
    assert_eq!(attempt["process"]["comm"], "skopeo");
    assert_eq!(attempt["cgroup"]["path"], cgroup.relative_path());
    assert_eq!(
        attempt["dest"],
        serde_json::json!({"ip": testbed.host_ip().to_string(), "port": 443})
    );
    assert_eq!(attempt["registry"]["category"], "image-registry");
    assert_eq!(attempt["verdict"], "violation");
    assert!(attempt["count"].as_u64().unwrap() >= 2, "{attempt:#}");
    // The live line was printed too.
    assert!(
        output
            .stdout
            .lines()
            .any(|l| l.contains("quay.io") && l.contains("skopeo") && l.contains("connect")),
        "{}",
        output.stdout
    );
}

#[test]
fn a_failed_lookup_of_a_registry_name_is_an_attempt() {
    let testbed = setup();
    let report_path = testbed.temp_dir().join("nxdomain.json");
    let cgroup = TestCgroup::create("nxdomain");
    let agent = start_agent(&report_path);

    let result = failed_registry_lookup(&testbed, &cgroup);
    // getent exits 2 when the name does not exist: the NXDOMAIN happened.
    assert_eq!(result.status.code(), Some(2), "{result:?}");

    let output = agent.stop();
    assert!(output.status.success(), "agent failed: {output:?}");
    let report = read_report(&report_path);
    assert_valid_report(&report_path);
    let attempts = attempts_in(&report, &cgroup);
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(attempts[0]["host"], "registry.redhat.io");
    assert_eq!(evidence(&attempts[0]), vec!["dns_query"]);
    assert_eq!(attempts[0]["dest"], Value::Null);
    assert_eq!(attempts[0]["process"]["comm"], "getent");
    // Every query (A, AAAA) was answered NXDOMAIN: the attempt says so.
    assert_eq!(
        attempts[0]["outcomes"],
        serde_json::json!({"dns_nxdomain": attempts[0]["count"]}),
        "{:#}",
        attempts[0]
    );
}

#[test]
fn non_registry_connects_are_ignored_and_ipv6_registry_connects_count() {
    let testbed = setup();
    let report_path = testbed.temp_dir().join("ipv6.json");
    let plain = TestCgroup::create("plain");
    let registry = TestCgroup::create("ipv6");
    let agent = start_agent(&report_path);

    // notaregistry.test resolves (to the testbed's second address) and is
    // connected to; nothing listens there, so the connection is refused.
    let connect_plain = "import socket\n\
        s = socket.create_connection(('notaregistry.test', 80), timeout=5)";
    let result = output_within(
        &mut in_netns(&testbed, &plain, &[PYTHON, "-c", connect_plain]),
        CLIENT_TIMEOUT,
    )
    .expect("running python");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("ConnectionRefusedError"), "{stderr}");

    // registry.example.test has an AAAA record for ::1; connect over IPv6
    // only (refused too: it is the attempt that counts).
    let connect_v6 = "import socket\n\
        family, kind, proto, _, addr = socket.getaddrinfo('registry.example.test', 5000, socket.AF_INET6, socket.SOCK_STREAM)[0]\n\
        assert addr[0] == '::1', addr\n\
        s = socket.socket(family, kind, proto)\n\
        print(s.connect_ex(addr))";
    let result = run_checked(
        &mut in_netns(&testbed, &registry, &[PYTHON, "-c", connect_v6]),
        CLIENT_TIMEOUT,
    )
    .expect("IPv6 connect to registry.example.test");
    assert_ne!(String::from_utf8_lossy(&result.stdout).trim(), "0");

    let output = agent.stop();
    assert!(output.status.success(), "agent failed: {output:?}");
    let report = read_report(&report_path);
    assert_valid_report(&report_path);
    assert_complete(&report);

    assert_eq!(attempts_in(&report, &plain), Vec::<Value>::new());
    let attempts = attempts_in(&report, &registry);
    let connect = attempts
        .iter()
        .find(|a| evidence(a).contains(&"connect"))
        .unwrap_or_else(|| panic!("no connect attempt: {attempts:#?}"));
    assert_eq!(connect["host"], "registry.example.test");
    assert_eq!(
        connect["dest"],
        serde_json::json!({"ip": "::1", "port": 5000})
    );
    assert_eq!(connect["registry"]["source"], "command-line");
    assert!(
        evidence(connect).contains(&"dns_answer"),
        "the address was learned from the AAAA answer: {connect:#}"
    );
}

#[test]
fn detaches_everything_from_the_root_cgroup_on_exit() {
    require_root_and_tools(&["bpftool"]);
    // Holding a testbed serializes this test with the others, whose agents
    // attach programs of the same names.
    let testbed = setup();
    let attached = observer_tests::programs_on_cgroup2_root;
    // Tracing programs hang off BTF tracepoints, not the cgroup; their
    // links are the agent's file descriptors (never pinned), which /proc
    // shows as `link_type: raw_tracepoint` with the tracepoint's name.
    let tracepoints = |pid: u32| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
            .expect("the agent's fdinfo")
            .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
            .filter(|info| info.contains("link_type:\traw_tracepoint"))
            .filter_map(|info| {
                let line = info.lines().find(|l| l.starts_with("tp_name:"))?;
                Some(line.split_whitespace().nth(1)?.to_string())
            })
            .collect();
        names.sort();
        names
    };
    let before = attached();
    let agent = start_agent(&testbed.temp_dir().join("detach.json"));
    let ours: Vec<_> = attached().difference(&before).cloned().collect();
    let mut names: Vec<&str> = ours.iter().map(|(_, name)| name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "connect4",
            "connect6",
            "sendmsg4",
            "sendmsg6",
            "skb_egress",
            "skb_ingress"
        ],
        "{ours:?}"
    );
    let agent_pid = agent.pid();
    assert_eq!(
        tracepoints(agent_pid),
        [
            "inet_sock_set_state",
            "sched_process_exec",
            "sched_process_exit",
            "sched_process_fork"
        ]
    );
    let output = agent.stop();
    assert!(output.status.success(), "{output:?}");
    let after = attached();
    for program in &ours {
        assert!(
            !after.contains(program),
            "{program:?} still attached: {after:?}"
        );
    }
    // With the process gone, so are its links: none was pinned.
    assert!(
        !std::path::Path::new(&format!("/proc/{agent_pid}")).exists(),
        "the agent exited"
    );
}

/// `run -- COMMAND`: exit 1 with --fail-on-violation when the command touched
/// a registry, the command's own code otherwise, and only the command's own
/// attempts in the report.
#[test]
fn wrapped_command_exit_codes_and_scope() {
    let testbed = setup();
    let report_path = testbed.temp_dir().join("wrapped.json");
    let run = |command: &[&str]| run_wrapped(&report_path, command);

    let skopeo = format!(
        "ip netns exec {} {}",
        testbed.netns(),
        skopeo_inspect_argv(&testbed).join(" ")
    );
    let output = run(&["sh", "-c", &skopeo]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report = read_report(&report_path);
    assert_valid_report(&report_path);
    assert_eq!(report["observer"]["mode"], "command");
    assert_eq!(report["observer"]["command_exit_code"], 0);
    let command_cgroup = report["observer"]["command_cgroup"]
        .as_str()
        .unwrap()
        .to_string();
    let attempts = report["attempts"].as_array().unwrap();
    assert!(
        attempts.iter().any(|a| a["host"] == "quay.io"
            && a["process"]["comm"] == "skopeo"
            && evidence(a).contains(&"connect")),
        "{attempts:#?}"
    );
    for attempt in attempts {
        assert_eq!(
            attempt["cgroup"]["path"],
            command_cgroup.as_str(),
            "{attempt:#}"
        );
    }
    // The cgroup made for the command is gone again.
    assert!(
        !observer_tests::cgroup2_root()
            .join(command_cgroup.trim_start_matches('/'))
            .exists()
    );

    // No registry touched: the command's own exit code, 0 or not.
    let lookup = format!(
        "ip netns exec {} getent hosts notaregistry.test",
        testbed.netns()
    );
    let output = run(&["sh", "-c", &lookup]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(read_report(&report_path)["summary"]["attempts"], 0);
    let output = run(&["sh", "-c", "exit 7"]);
    assert_eq!(output.status.code(), Some(7), "{output:?}");
    let output = run(&["/nonexistent/command"]);
    assert_eq!(output.status.code(), Some(127), "{output:?}");
    assert!(output.stderr.contains("cannot run"), "{}", output.stderr);

    // A registry lookup made outside the command while it runs is not its.
    let started = testbed.temp_dir().join("started");
    let release = testbed.temp_dir().join("release");
    let wait_script = format!(
        "touch {s}; i=0; while [ ! -e {r} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done",
        s = started.display(),
        r = release.display()
    );
    let output = std::thread::scope(|scope| {
        let wrapper = scope.spawn(|| run(&["sh", "-c", &wait_script]));
        wait_for_file(&started, Duration::from_secs(60));
        let outsider = TestCgroup::create("outsider");
        failed_registry_lookup(&testbed, &outsider);
        std::fs::write(&release, b"").unwrap();
        wrapper.join().expect("wrapper thread")
    });
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(read_report(&report_path)["summary"]["attempts"], 0);
}

/// `registry-observer run --fail-on-violation ... -- COMMAND`, to its end.
fn run_wrapped(report: &Path, command: &[&str]) -> observer_tests::AgentOutput {
    let mut args = vec!["--fail-on-violation".to_string()];
    args.extend(agent_args(report));
    args.push("--".into());
    args.extend(command.iter().map(|s| s.to_string()));
    Agent::run_to_exit(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        Duration::from_secs(120),
    )
}

fn wait_for_file(path: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn agent_binary_exists() {
    assert!(agent_binary().is_file());
}
