//! A kernel that refuses some programs: the agent runs on with the rest,
//! names each refused program with the verifier's key line and the evidence
//! lost, and exits 3 (incomplete); only when nothing that sees attempts is
//! left does it exit 2, naming every refusal and the kernel release.
//!
//! The refusals are real: the agent's hidden `--test-refuse-program` switch
//! makes the named program take a path the verifier rejects (an
//! out-of-bounds context read), so the kernel itself says no, exactly as an
//! older kernel does for a helper it lacks.
//!
//! Root and the testbed tools are required; these tests fail (never skip)
//! without them.

use std::time::Duration;

use observer_tests::{
    Agent, TestCgroup,
    observe::{
        agent_args, assert_valid_report, attempts_in, evidence, in_netns, read_report, setup,
    },
    output_within, programs_on_cgroup2_root,
};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// skb_egress is the program that sees DNS queries. Refused, the agent
/// still sees the connect() (connect4) and, through skb_ingress, the
/// answer that names it; the report says what is missing and why.
#[test]
fn a_refused_program_leaves_the_rest_running_and_the_run_incomplete() {
    let testbed = setup();
    let report_path = testbed.temp_dir().join("refused.json");
    let cgroup = TestCgroup::create("refused");
    let mut args = agent_args(&report_path);
    args.extend(["--test-refuse-program".into(), "skb_egress".into()]);
    let agent = Agent::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut skopeo = in_netns(&testbed, &cgroup, &["skopeo", "inspect", "--cert-dir"]);
    skopeo.arg(testbed.cert_dir()).arg(testbed.image_ref());
    let output = output_within(&mut skopeo, CLIENT_TIMEOUT).expect("running skopeo");
    assert!(output.status.success(), "{output:?}");
    let stopped = agent.stop();
    assert_eq!(stopped.status.code(), Some(3), "{}", stopped.stderr);
    assert!(
        stopped.stderr.contains(
            "hook skb_egress is not attached: the verifier refused it: invalid bpf_context access"
        ) && stopped.stderr.contains("missing as a result: DNS queries"),
        "{}",
        stopped.stderr
    );

    assert_valid_report(&report_path);
    let report = read_report(&report_path);
    let observer = &report["observer"];
    assert_eq!(observer["complete"], false, "{observer:#}");
    let missing = observer["hooks_missing"].as_array().expect("an array");
    assert_eq!(missing.len(), 1, "{missing:#?}");
    assert_eq!(missing[0]["hook"], "skb_egress");
    let reason = missing[0]["reason"].as_str().expect("a reason");
    assert!(
        reason.starts_with("the verifier refused it: invalid bpf_context access off=4093")
            && reason.contains("EACCES"),
        "{reason}"
    );
    assert!(
        missing[0]["evidence"]
            .as_str()
            .is_some_and(|e| e.contains("dns_query")),
        "{missing:#?}"
    );
    let hooks: Vec<&str> = observer["hooks"]
        .as_array()
        .expect("an array")
        .iter()
        .map(|h| h.as_str().expect("a name"))
        .collect();
    assert!(!hooks.contains(&"skb_egress"), "{hooks:?}");
    assert!(
        hooks.contains(&"connect4") && hooks.contains(&"skb_ingress"),
        "{hooks:?}"
    );

    // What is left still sees the attempt: the connect, named by the answer.
    let attempts = attempts_in(&report, &cgroup);
    let attempt = attempts
        .iter()
        .find(|a| a["host"] == "quay.io")
        .unwrap_or_else(|| panic!("no quay.io attempt: {attempts:#?}"));
    let evidence = evidence(attempt);
    assert!(evidence.contains(&"connect"), "{evidence:?}");
    assert!(!evidence.contains(&"dns_query"), "{evidence:?}");
    assert_eq!(attempt["process"]["comm"], "skopeo");
}

/// Every program that sees attempts refused: nothing useful is attached,
/// so the agent exits 2 before observing, naming each refusal with the
/// verifier's words and the kernel release, and printing the logs.
#[test]
fn nothing_useful_attached_exits_2_with_the_kernels_words() {
    observer_tests::require_root_and_tools(&["bpftool"]);
    // Holding a testbed serializes this test with the others, whose agents
    // attach programs of the same names.
    let testbed = setup();
    let before = programs_on_cgroup2_root();
    let report = testbed.temp_dir().join("never.json");
    let report_arg = report.display().to_string();
    let mut args = vec![
        "--report",
        &report_arg,
        "--metrics-addr",
        "off",
        "--catalog-resolve-interval",
        "0",
    ];
    for program in ["connect4", "connect6", "skb_egress", "sendmsg4", "sendmsg6"] {
        args.extend(["--test-refuse-program", program]);
    }
    let output = Agent::run_to_exit(&args, Duration::from_secs(60));
    assert_eq!(output.status.code(), Some(2), "{}", output.stderr);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let first = output.stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains(&format!(
            "no kernel program that sees registry attempts could be attached on kernel {}",
            release.trim()
        )),
        "{}",
        output.stderr
    );
    // Refused by the verifier, not for want of privileges: no such advice.
    assert!(!output.stderr.contains("run as root"), "{}", output.stderr);
    for program in ["connect4", "connect6", "skb_egress", "sendmsg4", "sendmsg6"] {
        assert!(
            output.stderr.contains(&format!(
                "  {program}: the verifier refused it: invalid bpf_context access"
            )),
            "{program}: {}",
            output.stderr
        );
        assert!(
            output
                .stderr
                .contains(&format!("--- verifier log of {program} ---")),
            "{program}: {}",
            output.stderr
        );
    }
    assert!(!report.exists(), "no report without an observation");
    // The programs that did load (skb_ingress, the tracepoints) are gone
    // with the failed start.
    assert_eq!(programs_on_cgroup2_root(), before);
}

/// An unknown name for the test switch is a usage error naming the
/// programs there are.
#[test]
fn refusing_an_unknown_program_is_a_usage_error() {
    observer_tests::require_root_and_tools(&[]);
    let output = Agent::run_to_exit(
        &["--metrics-addr", "off", "--test-refuse-program", "connect5"],
        Duration::from_secs(60),
    );
    assert_eq!(output.status.code(), Some(2), "{}", output.stderr);
    assert!(
        output
            .stderr
            .contains("cannot refuse \"connect5\": not a program (programs: connect4, connect6"),
        "{}",
        output.stderr
    );
}
