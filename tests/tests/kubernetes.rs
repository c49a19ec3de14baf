//! The Kubernetes source: kubelet `Pulling` events for this node, joined to
//! the pod specs, as pull intents and as `observer.kubernetes` in the report.
//!
//! No Kubernetes API server runs on these machines, so every test here is
//! run against recorded API responses (an EventList, a watch stream with a
//! BOOKMARK, Pods, a ReplicaSet, a 404 and a 403 Status, in the API server's
//! wire format, `tests/fixtures/kubernetes/`) served by a local HTTP server
//! on 127.0.0.1 (`tests/scripts/fake_apiserver.py`). The client side is all
//! real: kube-rs' kubeconfig loading, watcher, backoff and GETs.

use std::{
    net::TcpListener,
    time::{Duration, Instant, SystemTime},
};

use observer_report::{
    observer::KubernetesState,
    on_behalf_of::{PolicySource, PolicyWhy},
};
use observer_tests::{
    Agent,
    fake_apiserver::{FakeApiServer, write_kubeconfig},
    find_executable,
    observe::{agent_args, assert_valid_report, read_report},
    require_root_and_tools,
};
use registry_observer::sources::{
    kubernetes,
    kubernetes::{Access, KubernetesSource, events::FIELD_SELECTOR},
    pull_intent::{PullIntent, intent_channel},
};
use serde_json::{Value, json};

const PYTHON: &str = "/usr/bin/python3";
/// Six of the recorded events are this node's kubelet pulling a pod's image
/// (one of them a repeat); one is another node's, one is not `Pulling`.
const INTENTS: usize = 6;

/// 2026-11-20T10:00:00Z, when the fixtures were recorded, plus `seconds`.
fn recorded(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_168_800 + seconds)
}

/// The library-level test: the source, run against the recorded API, sends
/// one intent per pull of this node's kubelet, each joined to its pod spec.
#[test]
fn pulling_events_become_intents_joined_to_the_pod_spec() {
    // No privilege needed: only the fake server and the library run.
    assert!(
        find_executable(PYTHON).is_some(),
        "{PYTHON} is missing; `cargo xtask setup` installs it"
    );
    let server = FakeApiServer::start(false);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (intents, status) = runtime.block_on(async {
        let prepared = kubernetes::prepare(&Access::Kubeconfig(server.kubeconfig()))
            .await
            .expect("the kubeconfig loads");
        let (sink, mut feed) = intent_channel(64);
        // No time window: the recorded events are from the past.
        let source = KubernetesSource::spawn(prepared, "worker-0".into(), sink, None);
        let mut intents: Vec<PullIntent> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while intents.len() < INTENTS && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            intents.extend(feed.drain());
        }
        // Anything extra (a repeat, an ignored event) would arrive by now.
        tokio::time::sleep(Duration::from_millis(500)).await;
        intents.extend(feed.drain());
        (intents, source.finish().await)
    });
    let names: Vec<(&str, Option<&str>)> = intents
        .iter()
        .map(|i| (i.pod.name.as_str(), i.container.as_deref()))
        .collect();
    assert_eq!(
        names,
        [
            ("ovnkube-node-x7k2p", Some("ovnkube-controller")),
            ("mirror-7d9f8b6c5d-abcde", Some("mirror")),
            ("bundle-unpack-9x8y7", Some("util")),
            ("catalog-operator-5f6g7", Some("registry-server")),
            ("ovnkube-node-x7k2p", Some("ovnkube-controller")),
            ("restricted-0", Some("app")),
        ],
        "{status:#?}"
    );

    // A stored Always with a :latest tag: defaulted from the tag, or written.
    let ovn = &intents[0];
    assert_eq!(ovn.pod.namespace, "openshift-ovn-kubernetes");
    assert_eq!(
        ovn.pod.uid.as_deref(),
        Some("6f1d2c3b-aaaa-4bbb-8ccc-123456789abc")
    );
    assert_eq!(ovn.image, "quay.io/openshift/ovn-kubernetes:latest");
    assert_eq!(ovn.at, recorded(1));
    let policy = ovn.policy.as_ref().expect("the pod was read");
    assert_eq!(policy.effective, "Always");
    assert_eq!(policy.why, PolicyWhy::LatestTag);
    assert_eq!(policy.source, PolicySource::PodSpec);
    assert_eq!(policy.field.as_deref(), Some("spec.containers[1].image"));
    assert_eq!(policy.owner.as_deref(), Some("DaemonSet/ovnkube-node"));
    assert!(
        policy.fix.as_deref().unwrap().contains("IfNotPresent"),
        "{policy:?}"
    );
    // The kubelet pulled again: the same event, count 2, a later time.
    assert_eq!(intents[4].at, recorded(7));
    assert_eq!(intents[4].policy, ovn.policy);

    // An explicit Always (a digest would default to IfNotPresent), owned by
    // a ReplicaSet whose Deployment holds the template to change.
    let mirror = intents[1].policy.as_ref().expect("the pod was read");
    assert_eq!(
        (mirror.effective.as_str(), mirror.why),
        ("Always", PolicyWhy::Explicit)
    );
    assert_eq!(
        mirror.field.as_deref(),
        Some("spec.containers[0].imagePullPolicy")
    );
    assert_eq!(mirror.owner.as_deref(), Some("Deployment/mirror"));

    // IfNotPresent with a tag: pulled because absent; pinning is the advice.
    let catalog = intents[3].policy.as_ref().expect("the pod was read");
    assert_eq!(
        (catalog.effective.as_str(), catalog.why),
        ("IfNotPresent", PolicyWhy::DefaultIfNotPresent)
    );
    assert_eq!(catalog.owner, None);

    // A pod gone by the time it is read (404), and one the agent may not
    // read (403): the pull is still an intent, without policy, and counted.
    assert_eq!(intents[2].policy, None);
    assert_eq!(intents[2].image, "quay.io/operator-framework/olm:latest");
    assert_eq!(intents[5].policy, None);

    assert_eq!(status.state, KubernetesState::Connected, "{status:#?}");
    assert_eq!(status.reason, None);
    assert_eq!(
        status.api_server.as_deref(),
        Some(&*format!("{}/", server.url()))
    );
    assert_eq!(status.node_name.as_deref(), Some("worker-0"));
    assert_eq!(status.events_seen, 8, "{status:#?}");
    assert_eq!(status.events_used, INTENTS as u64);
    assert_eq!(
        status.events_ignored,
        [
            ("not_pulling".to_string(), 1),
            ("other_node".to_string(), 1)
        ]
        .into()
    );
    assert_eq!(status.pods_gone, 1);
    // ovnkube's second pull came within the cache's lifetime.
    assert_eq!(status.pods_fetched, 3, "{status:#?}");
    assert_eq!(status.failures, [("forbidden".to_string(), 1)].into());
    assert!(
        status.last_error.as_deref().unwrap().contains("forbidden"),
        "{status:#?}"
    );

    // What was asked: the narrowest field selector, on the list and the
    // watch, with the kubeconfig's token; one GET per pod, one for the
    // ReplicaSet.
    let requests = server.requests();
    let events: Vec<&Value> = requests
        .iter()
        .filter(|r| r["path"] == "/api/v1/events")
        .collect();
    assert!(events.len() >= 2, "{requests:#?}");
    for request in &events {
        assert_eq!(request["query"]["fieldSelector"], FIELD_SELECTOR);
        assert_eq!(request["authorization"], "Bearer test-token");
    }
    assert!(events[0]["query"].get("watch").is_none(), "{requests:#?}");
    assert_eq!(events[1]["query"]["watch"], "true");
    assert_eq!(events[1]["query"]["allowWatchBookmarks"], "true");
    assert_eq!(events[1]["query"]["resourceVersion"], "1005");
    let gets = |path: &str| requests.iter().filter(|r| r["path"] == path).count();
    assert_eq!(
        gets("/api/v1/namespaces/openshift-ovn-kubernetes/pods/ovnkube-node-x7k2p"),
        1
    );
    assert_eq!(
        gets("/apis/apps/v1/namespaces/shop/replicasets/mirror-7d9f8b6c5d"),
        1
    );
    assert_eq!(
        gets("/api/v1/namespaces/openshift-ovn-kubernetes/pods/ovnkube-node-q2w3e"),
        0,
        "another node's pod is never read"
    );
}

fn agent_run(extra: &[&str], dir: &std::path::Path) -> (observer_tests::AgentOutput, Value) {
    let report = dir.join("report.json");
    let mut args = agent_args(&report);
    args.extend(
        [
            "--metrics-addr",
            "off",
            "--control-socket",
            &dir.join("control.sock").display().to_string(),
            "--duration",
            "4s",
        ]
        .map(String::from),
    );
    args.extend(extra.iter().map(|s| s.to_string()));
    let output = Agent::run_to_exit(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        Duration::from_secs(90),
    );
    assert_valid_report(&report);
    (output, read_report(&report))
}

/// The agent against the recorded API (times moved to now): the report
/// says connected, with the counts.
#[test]
fn the_agent_reports_a_connected_api_with_counts() {
    require_root_and_tools(&[PYTHON]);
    let server = FakeApiServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig();
    let (output, report) = agent_run(
        &[
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "--node-name",
            "worker-0",
        ],
        dir.path(),
    );
    assert_eq!(output.status.code(), Some(0), "{}", output.stderr);
    let kubernetes = &report["observer"]["kubernetes"];
    assert_eq!(kubernetes["state"], "connected", "{kubernetes:#}");
    assert_eq!(kubernetes["reason"], Value::Null);
    assert_eq!(kubernetes["node_name"], "worker-0");
    assert_eq!(kubernetes["field_selector"], FIELD_SELECTOR);
    assert_eq!(kubernetes["events_seen"], 8, "{kubernetes:#}");
    assert_eq!(kubernetes["events_used"], INTENTS, "{kubernetes:#}");
    assert_eq!(
        kubernetes["events_ignored"],
        json!({"not_pulling": 1, "other_node": 1})
    );
    assert_eq!(kubernetes["pods_gone"], 1);
    assert_eq!(kubernetes["failures"], json!({"forbidden": 1}));
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r["query"]["fieldSelector"] == FIELD_SELECTOR),
        "the agent asked with the field selector"
    );
}

/// An API server that does not answer: the run completes, the exit code is
/// the run's own (the API is optional), and the report says why.
#[test]
fn an_unreachable_api_is_reported_and_changes_no_exit_code() {
    require_root_and_tools(&[]);
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bound, then released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kubeconfig = write_kubeconfig(dir.path(), &format!("http://127.0.0.1:{port}"));
    let (output, report) = agent_run(
        &[
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "--node-name",
            "worker-0",
        ],
        dir.path(),
    );
    assert_eq!(output.status.code(), Some(0), "{}", output.stderr);
    let kubernetes = &report["observer"]["kubernetes"];
    assert_eq!(kubernetes["state"], "unavailable", "{kubernetes:#}");
    let reason = kubernetes["reason"].as_str().unwrap();
    assert!(reason.contains("refused"), "{reason}");
    assert!(kubernetes["failures"]["connect"].as_u64().unwrap() >= 1);
    assert_eq!(kubernetes["events_seen"], 0);
    assert!(
        output.stderr.contains("the Kubernetes API was unavailable"),
        "{}",
        output.stderr
    );
}

/// Without --kubeconfig and outside a pod, the API is not contacted.
#[test]
fn without_kubeconfig_or_pod_the_api_is_off() {
    require_root_and_tools(&[]);
    assert!(
        std::env::var_os(kubernetes::IN_CLUSTER_ENV).is_none(),
        "this test needs {} unset (it runs the agent as outside a pod)",
        kubernetes::IN_CLUSTER_ENV
    );
    let dir = tempfile::tempdir().unwrap();
    let (output, report) = agent_run(&[], dir.path());
    assert_eq!(output.status.code(), Some(0), "{}", output.stderr);
    let kubernetes = &report["observer"]["kubernetes"];
    assert_eq!(kubernetes["state"], "off", "{kubernetes:#}");
    assert!(
        kubernetes["reason"]
            .as_str()
            .unwrap()
            .contains("--kubeconfig"),
        "{kubernetes:#}"
    );
    assert_eq!(kubernetes["api_server"], Value::Null);
}

/// A kubeconfig that cannot be read is the user's to fix: exit 2, naming it.
#[test]
fn an_unreadable_kubeconfig_exits_2_naming_it() {
    require_root_and_tools(&[]);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.kubeconfig");
    let output = Agent::run_to_exit(
        &[
            "--report",
            &dir.path().join("r.json").display().to_string(),
            "--kubeconfig",
            &missing.display().to_string(),
            "--duration",
            "1s",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(output.status.code(), Some(2), "{}", output.stderr);
    assert!(
        output.stderr.contains(&missing.display().to_string()),
        "{}",
        output.stderr
    );
}
