//! Capture beyond a query and a connect(): DNS over TCP, answers joined to a
//! connect() by another process, SNI from a ClientHello split over several
//! segments, CONNECT through a real HTTP proxy, unconnected UDP, connection
//! outcomes, and the lineage of a process that is gone before /proc can be
//! read. Real clients (dig, python, bash, skopeo, tinyproxy) in the testbed's
//! network namespace; every assertion is on the agent's report.
//!
//! These tests need root and the testbed tools; they fail (never skip) when
//! those are missing.

use observer_tests::{
    TestCgroup, Testbed,
    observe::{
        CLIENT_TIMEOUT, PYTHON, assert_valid_report, attempts_in, evidence, in_netns, read_report,
        setup, start_agent,
    },
    output_within, require_root_and_tools,
};
use serde_json::{Value, json};

fn only_attempt(report: &Value, cgroup: &TestCgroup) -> Value {
    let attempts = attempts_in(report, cgroup);
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    attempts.into_iter().next().expect("one attempt")
}

fn run_in(testbed: &Testbed, cgroup: &TestCgroup, argv: &[&str]) -> std::process::Output {
    let output = output_within(&mut in_netns(testbed, cgroup, argv), CLIENT_TIMEOUT)
        .unwrap_or_else(|e| panic!("running {argv:?}: {e:#}"));
    assert!(output.status.success(), "{argv:?}: {output:?}");
    output
}

/// `dig +tcp`: the query travels in a TCP stream, length-prefixed; the
/// connection stage reassembles it and the query counts as `dns_query`.
#[test]
fn a_dns_query_over_tcp_is_an_attempt() {
    let testbed = setup();
    require_root_and_tools(&["dig"]);
    let report_path = testbed.temp_dir().join("dns-tcp.json");
    let cgroup = TestCgroup::create("dnstcp");
    let agent = start_agent(&report_path);
    let server = format!("@{}", testbed.host_ip());
    let output = run_in(
        &testbed,
        &cgroup,
        &["dig", "+tcp", "+short", &server, "quay.io"],
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        testbed.host_ip().to_string()
    );
    assert!(agent.stop().status.success());
    assert_valid_report(&report_path);
    let report = read_report(&report_path);
    let attempt = only_attempt(&report, &cgroup);
    assert_eq!(attempt["host"], "quay.io");
    assert_eq!(evidence(&attempt), ["dns_query"]);
    assert_eq!(attempt["process"]["comm"], "dig");
    let parsers = &report["observer"]["payload_parsers"]["dns_tcp"];
    // Query and answer, one stream each way.
    assert!(parsers["parsed"].as_u64() >= Some(2), "{parsers:#}");
}

/// One process resolves quay.io; another, in another cgroup, connects to
/// the address without looking anything up. The captured answer names the
/// address: host quay.io, evidence `dns_answer` + `connect`, and the
/// handshake's outcome.
#[test]
fn a_connect_to_an_address_learned_from_another_process_answer() {
    let testbed = setup();
    let report_path = testbed.temp_dir().join("answer-join.json");
    let resolver = TestCgroup::create("resolver");
    let connector = TestCgroup::create("connector");
    let agent = start_agent(&report_path);
    run_in(&testbed, &resolver, &["getent", "hosts", "quay.io"]);
    let connect = format!(
        "import socket\ns = socket.create_connection(('{}', 443), timeout=5)\ns.close()",
        testbed.host_ip()
    );
    run_in(&testbed, &connector, &[PYTHON, "-c", &connect]);
    assert!(agent.stop().status.success());
    assert_valid_report(&report_path);
    let report = read_report(&report_path);
    let attempt = only_attempt(&report, &connector);
    assert_eq!(attempt["host"], "quay.io");
    assert_eq!(evidence(&attempt), ["dns_answer", "connect"]);
    assert_eq!(
        attempt["dest"],
        json!({"ip": testbed.host_ip().to_string(), "port": 443})
    );
    assert_eq!(attempt["outcomes"], json!({"established": 1}));
}

/// A real TLS client (Python's ssl, OpenSSL) connects by address, with no
/// DNS at all, and a maximum segment size of 200 bytes so its ~520-byte
/// ClientHello spans several segments. Only the SNI names the registry.
#[test]
fn sni_names_the_registry_from_a_client_hello_split_over_segments() {
    let testbed = setup();
    let report_path = testbed.temp_dir().join("sni.json");
    let cgroup = TestCgroup::create("sni");
    let agent = start_agent(&report_path);
    let client = format!(
        "import socket, ssl\n\
         s = socket.socket()\n\
         s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 200)\n\
         s.settimeout(5)\n\
         s.connect(('{ip}', 443))\n\
         assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG) <= 200\n\
         ctx = ssl.create_default_context(cafile='{ca}')\n\
         ctx.check_hostname = False\n\
         t = ctx.wrap_socket(s, server_hostname='registry.example.test')\n\
         print(t.version())\n\
         t.close()",
        ip = testbed.host_ip(),
        ca = testbed.ca_cert().display()
    );
    let output = run_in(&testbed, &cgroup, &[PYTHON, "-c", &client]);
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("TLS"));
    assert!(agent.stop().status.success());
    assert_valid_report(&report_path);
    let report = read_report(&report_path);
    let attempt = only_attempt(&report, &cgroup);
    assert_eq!(attempt["host"], "registry.example.test");
    assert_eq!(evidence(&attempt), ["tls_sni"]);
    assert_eq!(attempt["outcomes"], json!({"established": 1}));
    let tls = &report["observer"]["payload_parsers"]["tls"];
    assert!(tls["parsed"].as_u64() >= Some(1), "{tls:#}");
}

/// skopeo through a real HTTP proxy (tinyproxy) with HTTPS_PROXY: skopeo
/// resolves nothing itself; its CONNECT names quay.io, so its attempt is
/// quay.io with evidence `http_connect`, not the proxy's address.
#[test]
fn skopeo_through_an_http_proxy_is_attributed_to_the_registry() {
    let testbed = setup();
    require_root_and_tools(&["tinyproxy"]);
    let report_path = testbed.temp_dir().join("proxy.json");
    let proxy_cgroup = TestCgroup::create("proxy");
    let client = TestCgroup::create("proxied");
    let (proxy, proxy_addr) = testbed
        .start_http_proxy(&proxy_cgroup)
        .expect("starting tinyproxy");
    let agent = start_agent(&report_path);
    let cert_dir = testbed.cert_dir().display().to_string();
    let proxy_url = format!("http://{proxy_addr}");
    let output = output_within(
        in_netns(
            &testbed,
            &client,
            &[
                "env",
                &format!("HTTPS_PROXY={proxy_url}"),
                "skopeo",
                "inspect",
                "--cert-dir",
                &cert_dir,
                &testbed.image_ref(),
            ],
        )
        .env_remove("NO_PROXY"),
        CLIENT_TIMEOUT,
    )
    .expect("running skopeo");
    assert!(output.status.success(), "{output:?}");
    assert!(agent.stop().status.success());
    drop(proxy);
    assert_valid_report(&report_path);
    let report = read_report(&report_path);
    let attempt = only_attempt(&report, &client);
    assert_eq!(attempt["host"], "quay.io");
    assert_eq!(evidence(&attempt), ["http_connect"], "{attempt:#}");
    assert_eq!(
        attempt["dest"],
        json!({"ip": proxy_addr.ip().to_string(), "port": proxy_addr.port()})
    );
    assert_eq!(attempt["process"]["comm"], "skopeo");
    // The proxy's own contact is reported too, as the proxy's.
    let proxied = attempts_in(&report, &proxy_cgroup);
    assert!(
        proxied.iter().any(|a| a["host"] == "quay.io"),
        "{proxied:#?}"
    );
}

/// A refused connection and an unconnected UDP datagram to a registry
/// address, from one process: outcome `refused`, evidence `sendmsg`.
#[test]
fn refused_connections_and_udp_datagrams_are_attempts() {
    let testbed = setup();
    let report_path = testbed.temp_dir().join("refused.json");
    let cgroup = TestCgroup::create("refused");
    let agent = start_agent(&report_path);
    let client = "import socket\n\
        ip = socket.gethostbyname('quay.io')\n\
        try:\n    socket.create_connection((ip, 444), timeout=5)\n\
        except ConnectionRefusedError:\n    print('refused')\n\
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
        u.sendto(b'x', (ip, 443))";
    let output = run_in(&testbed, &cgroup, &[PYTHON, "-c", client]);
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "refused");
    assert!(agent.stop().status.success());
    assert_valid_report(&report_path);
    let report = read_report(&report_path);
    let attempt = only_attempt(&report, &cgroup);
    assert_eq!(attempt["host"], "quay.io");
    assert_eq!(
        evidence(&attempt),
        ["dns_query", "dns_answer", "connect", "sendmsg"]
    );
    assert_eq!(attempt["outcomes"], json!({"refused": 1}));
}

/// bash opens /dev/tcp/quay.io/443 and exits at once, under a shell: the
/// attempt still has bash's executable, argv and its parent shell.
#[test]
fn a_process_that_connects_and_exits_at_once_is_fully_attributed() {
    let testbed = setup();
    require_root_and_tools(&["bash"]);
    let report_path = testbed.temp_dir().join("short-lived.json");
    let cgroup = TestCgroup::create("shortlived");
    let agent = start_agent(&report_path);
    let script = "exec 3<>/dev/tcp/quay.io/443";
    run_in(
        &testbed,
        &cgroup,
        &["sh", "-c", &format!("bash -c '{script}'; exit 0")],
    );
    assert!(agent.stop().status.success());
    assert_valid_report(&report_path);
    let report = read_report(&report_path);
    let attempt = only_attempt(&report, &cgroup);
    let process = &attempt["process"];
    assert_eq!(process["comm"], "bash", "{attempt:#}");
    assert!(
        process["exe"]
            .as_str()
            .is_some_and(|e| e.ends_with("/bash")),
        "{process:#}"
    );
    assert_eq!(process["cmdline"], json!(["bash", "-c", script]));
    let ancestors = process["ancestors"].as_array().expect("ancestors");
    assert_eq!(ancestors.first().map(|a| &a["comm"]), Some(&json!("sh")));
    assert!(
        ancestors[0]["exe"]
            .as_str()
            .is_some_and(|e| e.ends_with("sh")),
        "{ancestors:#?}"
    );
}

/// A registry query nobody answers (no DNS server at the address: the
/// disconnected case) is counted `dns_no_answer` once the answer is overdue.
#[test]
fn a_registry_query_without_an_answer_is_counted_as_such() {
    let testbed = setup();
    require_root_and_tools(&["dig"]);
    let report_path = testbed.temp_dir().join("no-answer.json");
    let cgroup = TestCgroup::create("noanswer");
    let agent = start_agent(&report_path);
    // Nothing listens on the namespace's loopback port 53.
    let output = output_within(
        &mut in_netns(
            &testbed,
            &cgroup,
            &["dig", "@127.0.0.1", "+tries=1", "+time=1", "quay.io"],
        ),
        CLIENT_TIMEOUT,
    )
    .expect("running dig");
    assert!(!output.status.success(), "dig got an answer: {output:?}");
    // The answer is overdue after DNS_ANSWER_TIMEOUT (5 s).
    std::thread::sleep(std::time::Duration::from_millis(5_500));
    assert!(agent.stop().status.success());
    assert_valid_report(&report_path);
    let report = read_report(&report_path);
    let attempt = only_attempt(&report, &cgroup);
    assert_eq!(evidence(&attempt), ["dns_query"]);
    assert_eq!(
        attempt["outcomes"],
        json!({"dns_no_answer": attempt["count"]}),
        "{attempt:#}"
    );
}
