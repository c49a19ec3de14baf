//! Attribution end to end, with real components only: pods run by a real
//! containerd driven through the CRI API (as the kubelet would), a podman
//! container, and a real systemd unit (systemd booted in systemd-nspawn).
//! Each makes a real registry attempt (DNS for quay.io through the
//! testbed's dnsmasq, then a connect to the testbed's registry), and the
//! assertions are on the agent's report. The Kubernetes API server is not
//! involved: the CRI API is where the agent gets pod names, so nothing is
//! mocked.
//!
//! These tests need root and the tools; they fail (never skip) without them.

use std::{
    collections::HashMap,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use observer_tests::{
    Agent, CONTAINERD_TOOLS, Containerd, PodSpec, TESTBED_TOOLS, TestCgroup, Testbed,
    observe::{PYTHON, assert_valid_report, read_report},
    output_within, pod_uid, require_root_and_tools, run_checked,
};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(60);

fn setup(extra_tools: &[&str]) -> Testbed {
    require_root_and_tools(TESTBED_TOOLS);
    require_root_and_tools(extra_tools);
    require_root_and_tools(&[PYTHON]);
    Testbed::start().expect("starting the testbed")
}

/// No DNS lookups by the agent itself (they would use the host's
/// resolver); `extra` adds e.g. `--cri-socket`.
fn start_agent(report: &Path, extra: &[&str]) -> Agent {
    let mut args = vec![
        "--report".to_string(),
        report.display().to_string(),
        "--catalog-resolve-interval".into(),
        "0".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Agent::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn attempts_where(report: &Value, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
    report["attempts"]
        .as_array()
        .expect("attempts is an array")
        .iter()
        .filter(|a| keep(a))
        .cloned()
        .collect()
}

fn evidence(attempt: &Value) -> Vec<String> {
    attempt["evidence"]
        .as_array()
        .expect("evidence is an array")
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect()
}

/// The registry attempt a container makes: the name lookup through the
/// testbed's dnsmasq (busybox's own resolver), `pause`, then a connect()
/// to the registry's port at the address the answer gave (busybox's nc:
/// static busybox cannot resolve names itself in a bare image, and its
/// wget crashes here). `then` follows.
fn registry_attempt_script(testbed: &Testbed, pause: &str, then: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "nslookup quay.io; {pause}; busybox nc -w 2 {} 443 </dev/null; {then}",
            testbed.host_ip()
        ),
    ]
}

/// DaemonSet-style pod: its labels say how its name was made.
fn daemonset_pod(uid: &str, command: Vec<String>) -> PodSpec {
    PodSpec {
        name: "machine-config-daemon-x7k2p".into(),
        namespace: "openshift-machine-config-operator".into(),
        uid: uid.to_string(),
        labels: HashMap::from([
            ("k8s-app".to_string(), "machine-config-daemon".to_string()),
            ("controller-revision-hash".into(), "6f9c8d7b5".into()),
            ("pod-template-generation".into(), "1".into()),
        ]),
        container: "machine-config-daemon".into(),
        command,
    }
}

/// Waits (bounded, 15 s) for a live line holding every one of `needles`:
/// other processes on the machine make registry attempts too.
fn wait_for_line(agent: &Agent, needles: &[&str]) -> bool {
    wait_for_line_where(agent, |line| needles.iter().all(|n| line.contains(n)))
}

fn wait_for_line_where(agent: &Agent, wanted: impl Fn(&str) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if agent.stdout_so_far().lines().any(&wanted) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn wait_for_dns_query(testbed: &Testbed, containerd: &Containerd) {
    if let Err(e) = testbed.wait_for_dns_log("quay.io", Duration::from_secs(20)) {
        panic!(
            "the pod made no DNS query: {e:#}\n--- containerd ---\n{}",
            containerd.log()
        );
    }
}

#[test]
fn containerd_pod_attempt_carries_pod_names_labels_and_component() {
    let testbed = setup(CONTAINERD_TOOLS);
    let mut containerd = Containerd::start(&testbed).expect("starting containerd");
    let report_path = testbed.temp_dir().join("pod.json");
    let socket = containerd.socket().display().to_string();
    let agent = start_agent(&report_path, &["--cri-socket", &socket]);

    let uid = pod_uid(1);
    let pod = containerd
        .run_pod(&daemonset_pod(
            &uid,
            registry_attempt_script(&testbed, "sleep 3", "sleep 100000"),
        ))
        .expect("running the pod through the CRI API");
    wait_for_dns_query(&testbed, &containerd);
    // The lookup came at once, likely before a listing had the pod (it is
    // named at report time); the connect comes after the 2 s refresh, so its
    // live line already names the pod.
    let named_connect = "pod openshift-machine-config-operator/machine-config-daemon-x7k2p";
    assert!(
        wait_for_line(&agent, &["connect -> ", named_connect]),
        "no live connect line names the pod:\n{}\n--- container log ---\n{}",
        agent.stdout_so_far(),
        containerd.container_log(&uid, "machine-config-daemon")
    );

    let output = agent.stop();
    assert!(output.status.success(), "agent failed: {output:?}");
    assert_valid_report(&report_path);
    let report = read_report(&report_path);
    let cri = &report["observer"]["cri"];
    assert_eq!(cri["state"], "connected", "{cri:#}");
    assert!(
        cri["sockets"][0]["runtime"]
            .as_str()
            .is_some_and(|r| r.starts_with("containerd")),
        "{cri:#}"
    );

    let attempts = attempts_where(&report, |a| a["pod"]["uid"] == uid.as_str());
    assert!(!attempts.is_empty(), "no attempt from the pod: {report:#}");
    for attempt in &attempts {
        assert_eq!(attempt["host"], "quay.io");
        let pod_json = &attempt["pod"];
        assert_eq!(
            pod_json["name"], "machine-config-daemon-x7k2p",
            "{attempt:#}"
        );
        assert_eq!(pod_json["namespace"], "openshift-machine-config-operator");
        assert_eq!(pod_json["container"], "machine-config-daemon");
        assert_eq!(pod_json["labels"]["k8s-app"], "machine-config-daemon");
        assert_eq!(attempt["container"]["runtime"], "containerd");
        assert_eq!(attempt["container"]["id"], pod.container_id.as_str());
        assert_eq!(attempt["component"], "machine-config-daemon");
        assert!(
            attempt["cgroup"]["path"]
                .as_str()
                .unwrap()
                .ends_with(&format!("pod{uid}/{}", pod.container_id)),
            "{attempt:#}"
        );
    }
    let all_evidence: Vec<String> = attempts.iter().flat_map(evidence).collect();
    assert!(
        all_evidence.iter().any(|e| e == "dns_query")
            && all_evidence.iter().any(|e| e == "connect"),
        "{all_evidence:?}"
    );
    assert_eq!(
        report["observer"]["attribution"]["pods_unnamed"],
        serde_json::json!({})
    );
    assert!(
        report["summary"]["components"]
            .as_array()
            .unwrap()
            .contains(&Value::from("machine-config-daemon"))
    );
    drop(containerd);
}

/// A pod that makes its attempt and is deleted within about two seconds,
/// as the CVO's `version-*` pods and bundle-unpack jobs are: the report,
/// written after the pod is gone, still names it (tombstones), and a
/// component rule names its component.
#[test]
fn a_pod_that_lived_two_seconds_still_resolves_in_the_report() {
    let testbed = setup(CONTAINERD_TOOLS);
    let mut containerd = Containerd::start(&testbed).expect("starting containerd");
    let report_path = testbed.temp_dir().join("short.json");
    let socket = containerd.socket().display().to_string();
    let agent = start_agent(
        &report_path,
        &[
            "--cri-socket",
            &socket,
            "--component-rule",
            "pod_name_prefix=version-:cluster-version",
        ],
    );

    let uid = pod_uid(2);
    let spec = PodSpec {
        name: "version-4.16.3-x8d7f-9bq2w".into(),
        namespace: "openshift-cluster-version".into(),
        uid: uid.clone(),
        labels: HashMap::from([("job-name".to_string(), "version-4.16.3-x8d7f".to_string())]),
        container: "rename-to-final-location".into(),
        command: registry_attempt_script(&testbed, "true", "exit 0"),
    };
    let born = Instant::now();
    let pod = containerd.run_pod(&spec).expect("running the pod");
    wait_for_dns_query(&testbed, &containerd);
    // The line names the pod by uid, or by name if a listing (the one a
    // miss asks for) came first.
    assert!(
        wait_for_line_where(&agent, |line| line.contains("connect -> ")
            && (line.contains(uid.as_str()) || line.contains(spec.name.as_str()))),
        "no connect from the pod:\n{}\n--- container log ---\n{}",
        agent.stdout_so_far(),
        containerd.container_log(&uid, "rename-to-final-location")
    );
    containerd
        .remove_pod(&pod.sandbox_id)
        .expect("removing the pod");
    let lived = born.elapsed();
    // Past the agent's refresh interval: its listings no longer have the pod.
    std::thread::sleep(Duration::from_secs(3));

    let output = agent.stop();
    assert!(output.status.success(), "agent failed: {output:?}");
    assert_valid_report(&report_path);
    let report = read_report(&report_path);
    let attempts = attempts_where(&report, |a| a["pod"]["uid"] == uid.as_str());
    assert!(!attempts.is_empty(), "no attempt from the pod: {report:#}");
    for attempt in &attempts {
        assert_eq!(
            attempt["pod"]["name"], "version-4.16.3-x8d7f-9bq2w",
            "{attempt:#}"
        );
        assert_eq!(attempt["pod"]["namespace"], "openshift-cluster-version");
        assert_eq!(attempt["pod"]["container"], "rename-to-final-location");
        assert_eq!(attempt["component"], "cluster-version");
    }
    let cri = &report["observer"]["cri"];
    assert!(cri["tombstones"].as_u64().unwrap() >= 1, "{cri:#}");
    eprintln!("the pod lived {lived:?}");
    drop(containerd);
}

/// The config file's `component_rules` and the policy's `namespace`
/// selector, on pods a real containerd runs: the file's rules apply after
/// `--component-rule`s (first match wins), and an allow entry for a
/// namespace allows exactly the attempts of pods the CRI API placed in it.
#[test]
fn config_component_rules_and_namespace_allow_entries_use_cri_pods() {
    let testbed = setup(CONTAINERD_TOOLS);
    let mut containerd = Containerd::start(&testbed).expect("starting containerd");
    let report_path = testbed.temp_dir().join("config-pods.json");
    let config_path = testbed.temp_dir().join("config-pods.yaml");
    let config = [
        "registries_conf: {enabled: false}",
        "component_rules:",
        "  - match: {namespace: openshift-machine-config-operator}",
        "    component: mco-from-file",
        "  - match: {namespace: openshift-marketplace, label: {olm.catalogSource: redhat-operators}}",
        "    component: catalog-from-file",
        "policy:",
        "  allow:",
        "    - namespace: openshift-machine-config-operator",
        "      host: quay.io",
        "      reason: config wiring test",
    ];
    std::fs::write(&config_path, config.join("\n") + "\n").unwrap();
    let socket = containerd.socket().display().to_string();
    let agent = start_agent(
        &report_path,
        &[
            "--config",
            &config_path.display().to_string(),
            "--cri-socket",
            &socket,
            "--component-rule",
            "namespace=openshift-marketplace:catalog-from-cli",
        ],
    );

    let mco_uid = pod_uid(6);
    containerd
        .run_pod(&daemonset_pod(
            &mco_uid,
            registry_attempt_script(&testbed, "sleep 3", "sleep 100000"),
        ))
        .expect("running the machine-config pod");
    let catalog_uid = pod_uid(7);
    let catalog_pod = PodSpec {
        name: "redhat-operators-q9xkd".into(),
        namespace: "openshift-marketplace".into(),
        uid: catalog_uid.clone(),
        labels: HashMap::from([(
            "olm.catalogSource".to_string(),
            "redhat-operators".to_string(),
        )]),
        container: "registry-server".into(),
        command: registry_attempt_script(&testbed, "sleep 3", "sleep 100000"),
    };
    containerd
        .run_pod(&catalog_pod)
        .expect("running the catalog pod");
    wait_for_dns_query(&testbed, &containerd);
    for pod in [
        "pod openshift-machine-config-operator/machine-config-daemon-x7k2p",
        "pod openshift-marketplace/redhat-operators-q9xkd",
    ] {
        assert!(
            wait_for_line(&agent, &["connect -> ", pod]),
            "no live connect line names {pod}:\n{}",
            agent.stdout_so_far()
        );
    }

    let output = agent.stop();
    assert!(output.status.success(), "agent failed: {output:?}");
    assert_valid_report(&report_path);
    let report = read_report(&report_path);
    let mco = attempts_where(&report, |a| a["pod"]["uid"] == mco_uid.as_str());
    let catalog = attempts_where(&report, |a| a["pod"]["uid"] == catalog_uid.as_str());
    assert!(!mco.is_empty() && !catalog.is_empty(), "{report:#}");
    for attempt in &mco {
        assert_eq!(attempt["component"], "mco-from-file", "{attempt:#}");
        assert_eq!(attempt["verdict"], "allowed", "{attempt:#}");
        assert_eq!(
            attempt["allowed_by"]["reason"], "config wiring test",
            "{attempt:#}"
        );
    }
    for attempt in &catalog {
        // The command line's rule came first.
        assert_eq!(attempt["component"], "catalog-from-cli", "{attempt:#}");
        assert_eq!(attempt["pod"]["namespace"], "openshift-marketplace");
        assert_eq!(attempt["verdict"], "violation", "{attempt:#}");
        assert_eq!(attempt["allowed_by"], Value::Null, "{attempt:#}");
    }
    let allow = &report["policy"]["allow"][0];
    assert_eq!(allow["allowed_attempts"], mco.len() as u64, "{allow:#}");
    drop(containerd);
}

/// Bad input: a CRI socket that does not exist. The run works, pod
/// attempts keep their cgroup-level facts (pod uid, container runtime and
/// id), the report says why names are missing and counts the attempts
/// affected, and stopping is not delayed.
#[test]
fn an_unreachable_cri_socket_degrades_to_cgroup_attribution() {
    let testbed = setup(CONTAINERD_TOOLS);
    let mut containerd = Containerd::start(&testbed).expect("starting containerd");
    let report_path = testbed.temp_dir().join("nocri.json");
    let agent = start_agent(&report_path, &["--cri-socket", "/nonexistent/cri.sock"]);

    let uid = pod_uid(3);
    let pod = containerd
        .run_pod(&daemonset_pod(
            &uid,
            registry_attempt_script(&testbed, "true", "sleep 100000"),
        ))
        .expect("running the pod");
    wait_for_dns_query(&testbed, &containerd);
    assert!(
        agent.wait_for_stdout(&format!("pod {uid}"), Duration::from_secs(10)),
        "{}",
        agent.stdout_so_far()
    );
    let stopping = Instant::now();
    let output = agent.stop();
    let stop_took = stopping.elapsed();
    assert!(output.status.success(), "agent failed: {output:?}");
    eprintln!("stopping with an unreachable CRI socket took {stop_took:?}");
    assert!(
        stop_took < Duration::from_secs(5),
        "stopping took {stop_took:?}"
    );
    assert!(
        output.stderr.contains("/nonexistent/cri.sock"),
        "no warning names the socket: {}",
        output.stderr
    );
    assert_valid_report(&report_path);
    let report = read_report(&report_path);
    let attempts = attempts_where(&report, |a| a["pod"]["uid"] == uid.as_str());
    assert!(!attempts.is_empty(), "no attempt from the pod: {report:#}");
    for attempt in &attempts {
        assert_eq!(attempt["pod"]["name"], Value::Null);
        assert_eq!(attempt["pod"]["namespace"], Value::Null);
        assert_eq!(attempt["container"]["runtime"], "containerd");
        assert_eq!(attempt["container"]["id"], pod.container_id.as_str());
        assert_eq!(attempt["component"], format!("pod/{uid}"));
    }
    let observer = &report["observer"];
    assert_eq!(observer["cri"]["state"], "unavailable", "{observer:#}");
    assert!(
        observer["cri"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("/nonexistent/cri.sock")),
        "{observer:#}"
    );
    assert!(
        observer["cri"]["sockets"][0]["failures"]["connect"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{observer:#}"
    );
    assert_eq!(
        observer["attribution"]["pods_unnamed"]["cri_unavailable"],
        attempts.len() as u64,
        "{observer:#}"
    );
    drop(containerd);
}

/// The podman configuration TESTBED.md found to work here: runc, cgroupfs,
/// raised rlimits.
fn podman_conf(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("containers.conf");
    std::fs::write(
        &path,
        "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
         [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n",
    )
    .unwrap();
    path
}

#[test]
fn podman_container_attempt_carries_runtime_and_id() {
    let testbed = setup(&["podman", "runc", "conmon"]);
    let dir = testbed.temp_dir().join("podman");
    std::fs::create_dir_all(&dir).unwrap();
    let conf = podman_conf(&dir);
    let podman = |args: &[&str]| {
        let mut command = Command::new("podman");
        command
            .env("CONTAINERS_CONF", &conf)
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--runroot")
            .arg(dir.join("runroot"))
            .args(args);
        command
    };
    // Pulled by address from the testbed's registry, before the agent
    // starts: only the container's own attempt is under test.
    let image = format!("{}:443/t/busybox:1", testbed.host_ip());
    let cert_dir = testbed.cert_dir().display().to_string();
    run_checked(
        &mut podman(&["pull", "--cert-dir", &cert_dir, &image]),
        TIMEOUT,
    )
    .expect("podman pull from the testbed registry");
    let report_path = testbed.temp_dir().join("podman.json");
    let agent = start_agent(&report_path, &[]);

    let network = format!("ns:/run/netns/{}", testbed.netns());
    let dns = testbed.host_ip().to_string();
    let script = registry_attempt_script(&testbed, "true", "exit 0");
    let mut args = vec!["run", "-d", "--network", &network, "--dns", &dns, &image];
    args.extend(script.iter().map(String::as_str));
    let started = run_checked(&mut podman(&args), TIMEOUT).expect("podman run");
    let id = String::from_utf8_lossy(&started.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    assert_eq!(id.len(), 64, "podman printed no container id: {started:?}");
    let waited = run_checked(&mut podman(&["wait", &id]), TIMEOUT);
    let removed = run_checked(&mut podman(&["rm", "-f", &id]), TIMEOUT);
    waited.expect("podman wait");
    removed.expect("podman rm");
    testbed
        .wait_for_dns_log("quay.io", Duration::from_secs(5))
        .expect("the container asked for quay.io");

    let output = agent.stop();
    assert!(output.status.success(), "agent failed: {output:?}");
    assert_valid_report(&report_path);
    let report = read_report(&report_path);
    let attempts = attempts_where(&report, |a| a["container"]["id"] == id.as_str());
    assert!(
        !attempts.is_empty(),
        "no attempt from container {id}: {report:#}"
    );
    for attempt in &attempts {
        assert_eq!(attempt["host"], "quay.io");
        assert_eq!(attempt["container"]["runtime"], "podman");
        assert_eq!(attempt["pod"], Value::Null);
        assert_eq!(attempt["component"], format!("podman/{}", &id[..12]));
        assert!(
            attempt["cgroup"]["path"]
                .as_str()
                .unwrap()
                .ends_with(&format!("libpod-{id}")),
            "{attempt:#}"
        );
    }
}

/// systemd booted in systemd-nspawn (PID 1 here is not systemd), joined to
/// the testbed's network namespace; a real service unit started by that
/// systemd makes the registry lookup.
#[test]
fn a_systemd_unit_is_named_as_the_unit() {
    let testbed = setup(&["systemd-nspawn", "nsenter"]);
    let cgroup = TestCgroup::create("nspawn");
    let report_path = testbed.temp_dir().join("unit.json");
    let agent = start_agent(&report_path, &[]);

    let machine = format!("ro{}", std::process::id());
    let mut nspawn = cgroup.command("systemd-nspawn");
    nspawn
        .args(["-D", "/", "--volatile=yes", "--register=no", "--keep-unit"])
        .arg(format!(
            "--network-namespace-path=/run/netns/{}",
            testbed.netns()
        ))
        .args([
            "-M",
            &machine,
            "-b",
            "--console=passive",
            "--",
            "systemd.firstboot=0",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut nspawn = ChildGuard(nspawn.spawn().expect("starting systemd-nspawn"));

    // The payload's PID 1 is systemd; wait until it answers systemctl.
    let inner = wait_for_inner_systemd(&cgroup);
    let nsenter = |args: &[&str]| {
        let mut command = Command::new("nsenter");
        command.args(["-t", &inner.to_string(), "-a"]).args(args);
        command
    };
    let busybox = observer_tests::find_executable("busybox").expect("busybox");
    let dns = testbed.host_ip().to_string();
    let unit = "registry-check.service";
    // A runtime unit file (/run is the payload's own tmpfs), started the
    // way systemd starts any service. (`systemd-run` needs a D-Bus daemon,
    // which this payload does not run; systemctl talks to systemd directly.)
    // The service stays up after its lookup, like a daemon: a unit whose
    // cgroup is removed before the agent reads it can only be reported by
    // cgroup id (counted as `cgroup_unknown`).
    let unit_file = format!(
        "[Unit]\nDescription=registry-observer test: a registry lookup from a unit\n\
         [Service]\nExecStart=/bin/sh -c '{} nslookup quay.io {dns}; exec sleep 120'\n",
        busybox.display()
    );
    let mut write = nsenter(&["sh", "-c", &format!("cat > /run/systemd/system/{unit}")]);
    write.stdin(std::process::Stdio::piped());
    let mut writer = write.spawn().expect("writing the unit file");
    std::io::Write::write_all(&mut writer.stdin.take().unwrap(), unit_file.as_bytes())
        .expect("writing the unit file");
    assert!(
        writer.wait().unwrap().success(),
        "writing the unit file failed"
    );
    // systemd may still be finishing its start-up (its private socket
    // comes and goes while it runs generators): retry, bounded.
    let mut reload = Err(anyhow::anyhow!("not tried"));
    for _ in 0..40 {
        reload = run_checked(&mut nsenter(&["systemctl", "daemon-reload"]), TIMEOUT);
        if reload.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    reload.expect("systemctl daemon-reload inside the nspawn container");
    run_checked(&mut nsenter(&["systemctl", "start", unit]), TIMEOUT)
        .expect("systemctl start inside the nspawn container");
    testbed
        .wait_for_dns_log("quay.io", Duration::from_secs(5))
        .expect("the unit asked for quay.io");
    assert!(
        wait_for_line(&agent, &["quay.io", &format!("unit {unit}")]),
        "no live line names the unit:\n{}",
        agent.stdout_so_far()
    );
    let _ = output_within(&mut nsenter(&["systemctl", "poweroff"]), TIMEOUT);
    nspawn.wait_bounded(Duration::from_secs(20));

    let output = agent.stop();
    assert!(output.status.success(), "agent failed: {output:?}");
    assert_valid_report(&report_path);
    let report = read_report(&report_path);
    let attempts = attempts_where(&report, |a| {
        a["cgroup"]["path"]
            .as_str()
            .is_some_and(|p| p.starts_with(cgroup.relative_path()))
    });
    assert!(
        !attempts.is_empty(),
        "no attempt from the nspawn cgroup: {report:#}"
    );
    for attempt in &attempts {
        assert_eq!(attempt["host"], "quay.io");
        assert_eq!(attempt["unit"], unit, "{attempt:#}");
        assert_eq!(attempt["component"], "registry-check");
        assert_eq!(attempt["container"], Value::Null);
        assert!(evidence(attempt).contains(&"dns_query".to_string()));
    }
}

/// The pid of systemd inside the nspawn payload, once `systemctl` there
/// answers (bounded).
fn wait_for_inner_systemd(cgroup: &TestCgroup) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let init = cgroup.pids().into_iter().find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
                s.lines()
                    .any(|l| l.starts_with("NSpid:") && l.trim_end().ends_with("\t1"))
            }) && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "systemd")
        });
        if let Some(pid) = init {
            let ready = output_within(
                Command::new("nsenter").args([
                    "-t",
                    &pid.to_string(),
                    "-a",
                    "systemctl",
                    "is-system-running",
                    "--wait",
                ]),
                Duration::from_secs(20),
            );
            if ready.is_ok() {
                return pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "systemd did not come up in systemd-nspawn within 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A child we spawned: SIGKILLed by its PID (never reaped before, so never
/// reused) if it is still running when the test ends.
struct ChildGuard(std::process::Child);

impl ChildGuard {
    /// Waits up to `timeout` for the child to exit by itself.
    fn wait_bounded(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ChildGuard {
    /// SIGTERM first (systemd-nspawn then shuts its payload down in
    /// order), SIGKILL after 10 s.
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
            self.wait_bounded(Duration::from_secs(10));
        }
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Bad input: a component rule that cannot mean anything exits 2 before
/// anything is attached, naming the rule and how to write one.
#[test]
fn a_bad_component_rule_is_a_usage_error_that_says_how_to_write_one() {
    let output = output_within(
        Command::new(observer_tests::agent_binary()).args([
            "run",
            "--component-rule",
            "ns=openshift-machine-config-operator:machine-config",
        ]),
        TIMEOUT,
    )
    .expect("running registry-observer");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unknown condition \"ns\"") && stderr.contains("namespace="),
        "{stderr}"
    );
}
