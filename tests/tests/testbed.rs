//! Smoke tests of the harness itself, without the agent: if these fail, agent
//! test failures mean nothing. Run as root (`cargo xtask test`).

use std::{os::unix::fs::MetadataExt, path::Path, process::Stdio, time::Duration};

use observer_tests::{
    Agent, TESTBED_TOOLS, TestCgroup, Testbed, output_within, require_root_and_tools, run_checked,
};

const T: Duration = Duration::from_secs(60);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn testbed_serves_the_image_and_answers_only_test_names() {
    require_root_and_tools(TESTBED_TOOLS);
    let bed = Testbed::start().expect("testbed starts");
    assert_eq!(bed.image_ref(), "docker://quay.io/t/busybox:1");
    assert!(
        bed.dns_log().lines().all(|l| !l.contains("query[")),
        "setup must not resolve names:\n{}",
        bed.dns_log()
    );

    // The real client call the machine-config daemon makes, through the
    // testbed's resolver and TLS with the test CA.
    let mut inspect = bed.netns_command("skopeo");
    inspect
        .args(["inspect", "--cert-dir"])
        .arg(bed.cert_dir())
        .arg(bed.image_ref());
    let out = run_checked(&mut inspect, T).expect("skopeo inspect through the testbed");
    let manifest: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("skopeo inspect prints JSON");
    assert_eq!(manifest["Name"], "quay.io/t/busybox", "{manifest}");
    assert_eq!(manifest["Layers"].as_array().map(Vec::len), Some(1));
    let log = bed
        .wait_for_dns_log("query[A] quay.io", Duration::from_secs(5))
        .expect("skopeo's lookup reached dnsmasq");
    assert!(
        log.contains(&format!("quay.io is {}", bed.host_ip())),
        "{log}"
    );
    // Go's resolver also asks AAAA: a name that exists must not get NXDOMAIN.
    assert!(log.contains("query[AAAA] quay.io"), "{log}");
    assert!(!log.contains("quay.io is NXDOMAIN"), "{log}");
    assert!(
        bed.registry_log().contains("/v2/t/busybox/manifests/1"),
        "registry saw no manifest request:\n{}",
        bed.registry_log()
    );

    // Any other name is NXDOMAIN, and the attempt is logged.
    let out = output_within(
        bed.netns_command("getent")
            .args(["hosts", "registry.redhat.io"]),
        T,
    )
    .unwrap();
    assert!(
        !out.status.success(),
        "registry.redhat.io must not resolve in the testbed: {}",
        text(&out.stdout)
    );
    let log = bed
        .wait_for_dns_log("query[A] registry.redhat.io", Duration::from_secs(5))
        .unwrap();
    assert!(log.contains("registry.redhat.io is NXDOMAIN"), "{log}");

    // registry.example.test has both the host address and ::1.
    let out = run_checked(
        bed.netns_command("getent")
            .args(["ahosts", "registry.example.test"]),
        T,
    )
    .unwrap();
    let addrs: Vec<String> = text(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    assert!(addrs.iter().any(|a| a == "::1"), "{addrs:?}");
    assert!(
        addrs.iter().any(|a| *a == bed.host_ip().to_string()),
        "{addrs:?}"
    );

    // notaregistry.test is the second host address.
    let out = run_checked(
        bed.netns_command("getent")
            .args(["hosts", "notaregistry.test"]),
        T,
    )
    .unwrap();
    assert!(
        text(&out.stdout).starts_with(&format!("{} ", bed.other_ip())),
        "{}",
        text(&out.stdout)
    );

    // A client can be in a test cgroup and the netns at once.
    let cg = TestCgroup::create("ro-test-client");
    let out = run_checked(
        bed.netns_command_in(&cg, "sh")
            .args(["-c", "cat /proc/self/cgroup; getent hosts quay.io"]),
        T,
    )
    .unwrap();
    let stdout = text(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l == format!("0::{}", cg.relative_path())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{} ", bed.host_ip())) && stdout.contains("quay.io"),
        "{stdout}"
    );

    // The namespace really has the advertised addresses.
    let out = run_checked(bed.netns_command("ip").args(["-o", "addr", "show"]), T).unwrap();
    let addrs = text(&out.stdout);
    assert!(
        addrs.contains(&format!("inet {}/24", bed.ns_ip())),
        "{addrs}"
    );
    assert!(addrs.contains("inet6 ::1/128"), "{addrs}");
}

#[test]
fn test_cgroup_holds_its_command_and_reports_its_inode_as_id() {
    require_root_and_tools(&["sleep"]);
    let cgroup_dir;
    {
        let cg = TestCgroup::create("ro-test");
        cgroup_dir = cg.path().to_path_buf();
        assert!(cg.relative_path().starts_with("/ro-test-"));
        assert_eq!(
            cg.path(),
            observer_tests::cgroup2_root().join(&cg.relative_path()[1..])
        );
        assert_eq!(cg.id(), std::fs::metadata(cg.path()).unwrap().ino());

        let mut child = cg
            .command("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let membership = std::fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
        let pids = cg.pids();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            membership
                .lines()
                .any(|l| l == format!("0::{}", cg.relative_path())),
            "child is not in {}: {membership}",
            cg.relative_path()
        );
        assert_eq!(pids, vec![child.id()]);
    }
    assert!(!cgroup_dir.exists(), "cgroup dir was not removed on drop");
}

#[test]
fn test_cgroup_drop_kills_stragglers() {
    require_root_and_tools(&["sleep"]);
    let cg = TestCgroup::create("ro-straggler");
    let dir = cg.path().to_path_buf();
    let mut child = cg.command("sleep").arg("60").spawn().unwrap();
    drop(cg);
    assert!(!dir.exists());
    // It was SIGKILLed by the drop, so this wait returns at once.
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
}

#[test]
fn testbed_is_removed_on_drop_even_when_the_test_panics() {
    require_root_and_tools(TESTBED_TOOLS);
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let bed = Testbed::start().expect("testbed starts");
        tx.send((
            bed.netns().to_owned(),
            bed.veth_host().to_owned(),
            bed.temp_dir().to_path_buf(),
            bed.dnsmasq_pid().unwrap(),
            bed.registry_pid().unwrap(),
        ))
        .unwrap();
        panic!("deliberate panic with a live testbed");
    }));
    assert!(result.is_err());
    let (netns, veth, dir, dnsmasq, registry) = rx.recv().unwrap();
    assert!(
        !Path::new("/run/netns").join(&netns).exists(),
        "{netns} left"
    );
    assert!(
        !Path::new("/etc/netns").join(&netns).exists(),
        "/etc/netns/{netns} left"
    );
    assert!(
        !Path::new("/sys/class/net").join(&veth).exists(),
        "{veth} left"
    );
    assert!(!dir.exists(), "{} left", dir.display());
    for pid in [dnsmasq, registry] {
        // Reaped children: their /proc entries are gone (or reused by an
        // unrelated process, which would not be one of ours).
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert!(
            !comm.starts_with("dnsmasq") && !comm.starts_with("docker-regis"),
            "pid {pid} ({comm}) still running"
        );
    }

    // The lock was poisoned by the panic; a new testbed still starts.
    let bed = Testbed::start().expect("testbed starts after a panicked one");
    assert_ne!(bed.netns(), netns);
}

/// The Agent wrapper, exercised with a stand-in script so that the harness is
/// proven before the real agent is run through it.
#[test]
fn agent_wrapper_waits_for_readiness_and_stops_with_sigint() {
    require_root_and_tools(&["sh", "sleep"]);
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake-observer");
    std::fs::write(
        &fake,
        "#!/bin/sh\n\
         [ \"$1\" = run ] || exit 64\n\
         shift\n\
         if [ \"$1\" = -- ]; then shift; echo \"ran: $*\"; echo to-stderr >&2; exit 3; fi\n\
         trap 'echo got SIGINT >&2; exit 0' INT\n\
         echo \"starting $*\"\n\
         sleep 0.2\n\
         echo 'registry-observer: observing (fake)'\n\
         i=0\n\
         while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\n\
         exit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let agent = Agent::start_binary(&fake, &["--report", "/dev/null"]);
    assert!(
        agent
            .stdout_so_far()
            .contains("starting --report /dev/null")
    );
    let out = agent.stop();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.contains("got SIGINT"), "{out:?}");

    let out = Agent::run_binary_to_exit(&fake, &["--", "true", "x"], T);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, "ran: true x\n");
    assert_eq!(out.stderr, "to-stderr\n");

    // A process that never becomes ready makes start panic with its stderr.
    std::fs::write(&fake, "#!/bin/sh\necho cannot attach >&2\nexit 2\n").unwrap();
    let err = std::panic::catch_unwind(|| Agent::start_binary(&fake, &[])).unwrap_err();
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("cannot attach"), "{msg}");
}
