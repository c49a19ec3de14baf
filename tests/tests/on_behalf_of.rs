//! On-behalf-of attribution end to end, with real components only: a real
//! containerd (1.6) asked through its CRI API to pull and create
//! containers exactly as the kubelet asks (RunPodSandbox, PullImage with
//! the pod's sandbox config, CreateContainer), pulling from the testbed's
//! TLS registry under the name `quay.io`; and a real skopeo run by a
//! stand-in machine-config daemon (a copy of the shell under that name).
//! In the first two tests the Kubernetes API is not involved: the pods are
//! known to the agent through the CRI only, so the policy is inferred from
//! the image reference, and nothing is mocked. The last one adds the
//! kubelet's side of the pull through the Kubernetes API, which is the one
//! part served by a stand-in (no API server runs here; see its doc comment).
//!
//! These tests need root and the tools; they fail (never skip) without them.

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use observer_tests::{
    Agent, CONTAINERD_TOOLS, Containerd, POD_IMAGE, PodSpec, TESTBED_TOOLS, TestCgroup, Testbed,
    fake_apiserver::FakeApiServer,
    observe::{CLIENT_TIMEOUT, PYTHON, agent_args, assert_valid_report, in_netns, read_report},
    output_within, pod_uid, push_pod_image, require_root_and_tools,
};
use registry_observer::sources::pull_intent::KUBELET_PULLING_BEFORE;
use serde_json::{Value, json};

/// What the pods pull: `:latest`, so Kubernetes would default the policy to
/// Always, the case this attribution exists for.
const PULLED_IMAGE: &str = "quay.io/t/app:latest";

fn setup() -> (Testbed, Containerd) {
    require_root_and_tools(TESTBED_TOOLS);
    require_root_and_tools(CONTAINERD_TOOLS);
    require_root_and_tools(&[PYTHON]);
    let testbed = Testbed::start().expect("starting the testbed");
    let containerd = Containerd::start(&testbed).expect("starting containerd");
    push_pod_image(&testbed, "t/app:latest").expect("pushing the image to pull");
    (testbed, containerd)
}

fn start_agent(report: &Path, containerd: &Containerd) -> Agent {
    let mut args = agent_args(report);
    args.push("--cri-socket".into());
    args.push(containerd.socket().display().to_string());
    Agent::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn pod(name: &str, uid: &str) -> PodSpec {
    PodSpec {
        name: name.into(),
        namespace: "shop".into(),
        uid: uid.into(),
        labels: HashMap::new(),
        container: "app".into(),
        // The image's own command (sleep) keeps it running.
        command: vec![],
    }
}

/// RunPodSandbox, PullImage (with the sandbox config, as the kubelet
/// does), CreateContainer + StartContainer.
fn pull_and_start(containerd: &mut Containerd, spec: &PodSpec) {
    let sandbox = containerd.run_sandbox(spec).expect("RunPodSandbox");
    containerd
        .pull_image(spec, PULLED_IMAGE)
        .unwrap_or_else(|e| panic!("PullImage: {e:#}\n--- containerd ---\n{}", containerd.log()));
    containerd
        .start_container(spec, &sandbox, PULLED_IMAGE)
        .expect("CreateContainer");
}

/// Waits (bounded) for the live line of containerd's registry contact.
fn wait_for_containerd_contact(agent: &Agent) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if agent
            .stdout_so_far()
            .lines()
            .any(|l| l.contains("quay.io") && l.contains(" containerd "))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "no live line of containerd contacting quay.io:\n{}",
        agent.stdout_so_far()
    );
}

/// containerd's attempts on quay.io (its DNS query and connects).
fn containerd_attempts(report: &Value) -> Vec<&Value> {
    report["attempts"]
        .as_array()
        .expect("attempts is an array")
        .iter()
        .filter(|a| a["process"]["comm"] == "containerd" && a["host"] == "quay.io")
        .collect()
}

/// Asserts that `attempt` was made on behalf of the pod `name` (uid `uid`,
/// namespace shop, container app) for [`PULLED_IMAGE`]; returns its
/// `on_behalf_of` for the checks that differ.
fn names_pod<'a>(attempt: &'a Value, name: &str, uid: &str) -> &'a Value {
    let found = &attempt["on_behalf_of"];
    assert_eq!(found["kind"], "pod", "{attempt:#}");
    assert_eq!(found["pod"]["namespace"], "shop", "{found:#}");
    assert_eq!(found["pod"]["name"], name, "{found:#}");
    assert_eq!(found["pod"]["uid"], uid, "{found:#}");
    assert_eq!(found["pod"]["container"], "app", "{found:#}");
    assert_eq!(found["image"], PULLED_IMAGE, "{found:#}");
    found
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().expect("a string"))
        .collect()
}

fn run_to_report(agent: Agent, report_path: &Path) -> Value {
    let output = agent.stop();
    assert!(output.status.success(), "agent failed: {output:?}");
    assert_valid_report(report_path);
    read_report(report_path)
}

#[test]
fn containerd_pulls_are_attributed_to_the_pod_that_needed_the_image() {
    let (testbed, mut containerd) = setup();

    // Run 1: the image is not on the node; web-1 needs it. cache-1 starts
    // at the same time from an image already present (no pull).
    let first_report = testbed.temp_dir().join("first.json");
    let agent = start_agent(&first_report, &containerd);
    let web = pod("web-1", &pod_uid(1));
    pull_and_start(&mut containerd, &web);
    let cache = pod("cache-1", &pod_uid(2));
    let sandbox = containerd.run_sandbox(&cache).expect("RunPodSandbox");
    containerd
        .start_container(&cache, &sandbox, POD_IMAGE)
        .expect("CreateContainer from a present image");
    wait_for_containerd_contact(&agent);
    let report = run_to_report(agent, &first_report);

    let attempts = containerd_attempts(&report);
    assert!(!attempts.is_empty(), "no containerd attempt: {report:#}");
    for attempt in &attempts {
        let found = names_pod(attempt, "web-1", &web.uid);
        let evidence = strings(&found["evidence"]);
        assert!(evidence.contains(&"cri_container_created"), "{found:#}");
        assert!(evidence.contains(&"image_pulled"), "{found:#}");
        assert_eq!(found["confidence"], "high", "{found:#}");
        assert_eq!(found["candidates"], 1, "{found:#}");
        assert_eq!(found["policy"]["effective"], "Always", "{found:#}");
        assert_eq!(found["policy"]["why"], "latest_tag", "{found:#}");
        assert_eq!(found["policy"]["source"], "image_reference", "{found:#}");
    }
    let all_named: Vec<&Value> = report["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["on_behalf_of"]["pod"]["name"])
        .collect();
    assert!(
        !all_named.contains(&&Value::from("cache-1")),
        "the pod that pulled nothing was named: {report:#}"
    );
    let stats = &report["observer"]["on_behalf_of"];
    assert!(
        stats["intents"]["cri_container_created"].as_u64() >= Some(2),
        "{stats:#}"
    );
    assert_eq!(stats["intents_dropped"], 0, "{stats:#}");
    assert!(stats["attributed"]["pod"].as_u64() >= Some(1), "{stats:#}");
    assert!(stats["image_listings"].as_u64() >= Some(1), "{stats:#}");
    assert_eq!(
        report["observer"]["attribution"]["runtime_pulls_unattributed"], 0,
        "{:#}",
        report["observer"]
    );

    // Run 2: the image is present; web-2's pull is a re-check that only
    // the Always policy (defaulted from :latest) causes. Run 1's containers
    // must be older than anything run 2 can match (a container created up
    // to 2 s before a contact may still be its pull's, for clock slack).
    std::thread::sleep(Duration::from_secs(3));
    let second_report = testbed.temp_dir().join("second.json");
    let agent = start_agent(&second_report, &containerd);
    let again = pod("web-2", &pod_uid(3));
    pull_and_start(&mut containerd, &again);
    wait_for_containerd_contact(&agent);
    let report = run_to_report(agent, &second_report);
    let attempts = containerd_attempts(&report);
    assert!(!attempts.is_empty(), "no containerd attempt: {report:#}");
    for attempt in &attempts {
        let found = names_pod(attempt, "web-2", &again.uid);
        assert_eq!(found["pod"]["uid"], again.uid.as_str(), "{found:#}");
        let evidence = strings(&found["evidence"]);
        assert!(evidence.contains(&"cri_container_created"), "{found:#}");
        assert!(evidence.contains(&"image_present_before"), "{found:#}");
        assert!(!evidence.contains(&"image_pulled"), "{found:#}");
        assert_eq!(found["confidence"], "high", "{found:#}");
        assert_eq!(found["policy"]["effective"], "Always", "{found:#}");
        let explanation = found["explanation"].as_str().unwrap();
        assert!(
            explanation.contains("was already on the node")
                && explanation.contains("defaulted from the :latest tag"),
            "{explanation}"
        );
    }
    drop(containerd);
}

/// The machine-config daemon's upgrade check: it runs `skopeo inspect`
/// through a shell. The stand-in is the system shell copied under the
/// daemon's name, so its exe and comm are what a node shows.
#[test]
fn skopeo_is_attributed_to_the_daemon_that_ran_it() {
    require_root_and_tools(TESTBED_TOOLS);
    require_root_and_tools(&[PYTHON, "skopeo", "sh"]);
    let testbed = Testbed::start().expect("starting the testbed");
    let daemon = testbed.temp_dir().join("machine-config-daemon");
    let shell = observer_tests::find_executable("sh").expect("sh on PATH");
    std::fs::copy(&shell, &daemon).expect("copying the shell");
    let report_path = testbed.temp_dir().join("tool.json");
    let args = agent_args(&report_path);
    let agent = Agent::start(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let cgroup = TestCgroup::create("obo-tool");
    // `; true` keeps each shell from exec'ing its last command, so the
    // chain is skopeo <- sh <- machine-config-daemon, as on a node.
    let script = format!(
        "sh -c 'skopeo inspect --retry-times 1 --cert-dir {} {} >/dev/null; true'; true",
        testbed.cert_dir().display(),
        testbed.image_ref()
    );
    let daemon_text = daemon.display().to_string();
    let output = output_within(
        &mut in_netns(&testbed, &cgroup, &[daemon_text.as_str(), "-c", &script]),
        CLIENT_TIMEOUT,
    )
    .expect("running the stand-in daemon");
    assert!(output.status.success(), "{output:?}");
    let report = run_to_report(agent, &report_path);

    let skopeo: Vec<&Value> = report["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| {
            a["cgroup"]["id"].as_u64() == Some(cgroup.id()) && a["process"]["comm"] == "skopeo"
        })
        .collect();
    assert!(!skopeo.is_empty(), "no skopeo attempt: {report:#}");
    for attempt in skopeo {
        let found = &attempt["on_behalf_of"];
        assert_eq!(found["kind"], "process", "{attempt:#}");
        // The kernel keeps 15 bytes of a comm; the exe has the full name.
        assert_eq!(found["process"]["comm"], "machine-config-", "{found:#}");
        assert_eq!(found["process"]["exe"], daemon_text.as_str(), "{found:#}");
        assert_eq!(strings(&found["evidence"]), ["ancestry"], "{found:#}");
        assert_eq!(
            found["ancestry"], "skopeo <- sh <- machine-config-daemon",
            "{found:#}"
        );
        assert_eq!(found["confidence"], "high", "{found:#}");
    }
    assert!(
        report["observer"]["on_behalf_of"]["attributed"]["process"].as_u64() >= Some(1),
        "{:#}",
        report["observer"]
    );
}

/// The node the agent watches the kubelet's events for (`--node-name`).
const NODE: &str = "worker-0";

/// The kubelet's side of a pull, from the Kubernetes API, joined with the
/// runtime's side, from the CRI: the containerd contact is attributed to
/// the pod with both signals, and the policy is the one the pod's stored
/// spec holds (written `Always`, owned by a DaemonSet), not one inferred
/// from the image reference.
///
/// The Kubernetes API is the only stand-in: no API server runs on these
/// machines, so the Pod and the kubelet's `Pulling` Event are written by
/// this test in the API server's wire format (as `kubectl get -o json`
/// shows them) and served by the local HTTP server of the Kubernetes
/// source's tests (`tests/scripts/fake_apiserver.py`). The agent's kube-rs
/// client, watcher and GETs are real, and so are containerd (driven
/// through its CRI as the kubelet drives it), the TLS registry and the
/// pull.
///
/// Ordering, as on a node: the kubelet records `Pulling` (stamped to the
/// second, as the API server stores legacy event times), then asks the
/// runtime to pull. The fake server sends its stream on the agent's first
/// watch, so the event is stamped when the test writes it, before the
/// agent starts; the pull starts once the agent has read the event and
/// joined it to the pod (its GET of the pod is in the server's log). So
/// the event precedes the agent's start, which the source's lookback
/// (`kubernetes::LOOKBACK`, 5 min) admits, and precedes the contact by the
/// agent's start-up, like a pull queued behind others: the test checks
/// that this gap is inside the correlator's window
/// (`KUBELET_PULLING_BEFORE`) rather than widening anything.
#[test]
fn a_kubelet_pulling_event_joins_the_pod_spec_to_the_runtime_pull() {
    let (testbed, mut containerd) = setup();
    let uid = pod_uid(4);
    // A DaemonSet's pod: the set's name and five characters of its own.
    let daemon_set = "node-agent";
    let spec = pod(&format!("{daemon_set}-{}", &uid[uid.len() - 5..]), &uid);

    let fixtures = testbed.temp_dir().join("kubernetes-api");
    let pulling_at = SystemTime::now();
    write_api_fixtures(&fixtures, &spec, daemon_set, pulling_at);
    let server = FakeApiServer::start_with(&fixtures, false);
    let report_path = testbed.temp_dir().join("kubelet.json");
    let mut args = agent_args(&report_path);
    args.extend([
        "--cri-socket".into(),
        containerd.socket().display().to_string(),
        "--kubeconfig".into(),
        server.kubeconfig().display().to_string(),
        "--node-name".into(),
        NODE.into(),
    ]);
    let agent = Agent::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_for_pod_read(&server, &agent, &spec);

    let sandbox = containerd.run_sandbox(&spec).expect("RunPodSandbox");
    let waited = SystemTime::now()
        .duration_since(pulling_at)
        .unwrap_or_default();
    assert!(
        waited < KUBELET_PULLING_BEFORE,
        "the pull starts {waited:?} after its Pulling event, beyond the {KUBELET_PULLING_BEFORE:?} \
         a kubelet's pull may queue: the agent started too slowly for this test to mean anything"
    );
    containerd
        .pull_image(&spec, PULLED_IMAGE)
        .unwrap_or_else(|e| panic!("PullImage: {e:#}\n--- containerd ---\n{}", containerd.log()));
    containerd
        .start_container(&spec, &sandbox, PULLED_IMAGE)
        .expect("CreateContainer");
    wait_for_containerd_contact(&agent);
    let report = run_to_report(agent, &report_path);

    let attempts = containerd_attempts(&report);
    assert!(!attempts.is_empty(), "no containerd attempt: {report:#}");
    for attempt in &attempts {
        let found = names_pod(attempt, &spec.name, &uid);
        let evidence = strings(&found["evidence"]);
        assert!(evidence.contains(&"kubelet_pulling"), "{found:#}");
        assert!(evidence.contains(&"cri_container_created"), "{found:#}");
        assert!(evidence.contains(&"image_pulled"), "{found:#}");
        assert_eq!(found["confidence"], "high", "{found:#}");
        // The other node's pull of the same image is not a candidate.
        assert_eq!(found["candidates"], 1, "{found:#}");
        let policy = &found["policy"];
        assert_eq!(policy["source"], "pod_spec", "{found:#}");
        assert_eq!(policy["effective"], "Always", "{found:#}");
        // A stored Always on a :latest tag: written or defaulted, the tag
        // is why, and the image line is the one to change.
        assert_eq!(policy["why"], "latest_tag", "{found:#}");
        assert_eq!(policy["field"], "spec.containers[0].image", "{found:#}");
        assert_eq!(
            policy["owner"],
            format!("DaemonSet/{daemon_set}").as_str(),
            "{found:#}"
        );
        let fix = policy["fix"].as_str().expect("a fix");
        assert!(fix.contains("IfNotPresent"), "{fix}");
    }

    let observer = &report["observer"];
    let kubernetes = &observer["kubernetes"];
    assert_eq!(kubernetes["state"], "connected", "{kubernetes:#}");
    assert_eq!(kubernetes["node_name"], NODE, "{kubernetes:#}");
    assert_eq!(kubernetes["events_used"], 1, "{kubernetes:#}");
    assert_eq!(
        kubernetes["events_ignored"]["other_node"], 1,
        "{kubernetes:#}"
    );
    assert_eq!(kubernetes["pods_fetched"], 1, "{kubernetes:#}");
    assert_eq!(kubernetes["failures"], json!({}), "{kubernetes:#}");
    let stats = &observer["on_behalf_of"];
    assert_eq!(stats["intents"]["kubelet_pulling"], 1, "{stats:#}");
    assert!(
        stats["intents"]["cri_container_created"].as_u64() >= Some(1),
        "{stats:#}"
    );
    assert_eq!(stats["intents_dropped"], 0, "{stats:#}");
    assert_eq!(
        observer["attribution"]["runtime_pulls_unattributed"], 0,
        "{observer:#}"
    );
    let other_pod = format!("/api/v1/namespaces/shop/pods/{OTHER_NODE_POD}");
    assert!(
        !server
            .requests()
            .iter()
            .any(|r| r["path"] == other_pod.as_str()),
        "another node's pod is never read"
    );
    drop(containerd);
}

/// A pod on another node pulling the same image at the same time.
const OTHER_NODE_POD: &str = "node-agent-zz9zz";

/// The API objects behind the pull, as the API server serves them: an
/// empty event list (nothing happened before the agent came), then on the
/// watch this node's kubelet `Pulling` for `spec`'s pod and another node's
/// for the same image; and the pod, owned by the DaemonSet `daemon_set`,
/// with `imagePullPolicy: Always` stored as admission leaves it.
fn write_api_fixtures(dir: &Path, spec: &PodSpec, daemon_set: &str, at: SystemTime) {
    // Legacy event times are whole seconds on the wire.
    let time = humantime::format_rfc3339_seconds(at).to_string();
    let pulling = |pod: &str, pod_uid: &str, node: &str, version: u32| {
        json!({
            "type": "ADDED",
            "object": {
                "kind": "Event",
                "apiVersion": "v1",
                "metadata": {
                    "name": format!("{pod}.18a0b1c2d3e4{version:04x}"),
                    "namespace": "shop",
                    "uid": format!("7e0c9a4b-1d2e-4f30-8a41-5b6c7d8e{version:04x}"),
                    "resourceVersion": version.to_string(),
                    "creationTimestamp": time,
                },
                "involvedObject": {
                    "kind": "Pod",
                    "namespace": "shop",
                    "name": pod,
                    "uid": pod_uid,
                    "apiVersion": "v1",
                    "resourceVersion": "1990",
                    "fieldPath": format!("spec.containers{{{}}}", spec.container),
                },
                "reason": "Pulling",
                "message": format!("Pulling image \"{PULLED_IMAGE}\""),
                "source": {"component": "kubelet", "host": node},
                "firstTimestamp": time,
                "lastTimestamp": time,
                "count": 1,
                "type": "Normal",
                "eventTime": null,
                "reportingComponent": "kubelet",
                "reportingInstance": node,
            }
        })
    };
    let watch = [
        pulling(&spec.name, &spec.uid, NODE, 2001),
        pulling(
            OTHER_NODE_POD,
            "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6",
            "worker-1",
            2002,
        ),
    ];
    let pod = json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": spec.name,
            "generateName": format!("{daemon_set}-"),
            "namespace": spec.namespace,
            "uid": spec.uid,
            "resourceVersion": "1990",
            "creationTimestamp": time,
            "labels": {"app": daemon_set, "pod-template-generation": "1"},
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "name": daemon_set,
                "uid": "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d",
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "containers": [{
                "name": spec.container,
                "image": PULLED_IMAGE,
                "imagePullPolicy": "Always",
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
            }],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "nodeName": NODE,
            "schedulerName": "default-scheduler",
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority",
            "priority": 0,
        },
        "status": {"phase": "Pending", "qosClass": "BestEffort", "startTime": time},
    });
    let pods = dir.join("pods").join(&spec.namespace);
    std::fs::create_dir_all(&pods).expect("creating the fixture dir");
    let write = |path: &Path, text: String| {
        std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()))
    };
    write(
        &dir.join("events-list.json"),
        json!({
            "kind": "EventList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": "2000"},
            "items": [],
        })
        .to_string(),
    );
    write(
        &dir.join("events-watch.jsonl"),
        watch.iter().map(|line| format!("{line}\n")).collect(),
    );
    write(&pods.join(format!("{}.json", spec.name)), pod.to_string());
}

/// Waits (bounded) until the agent has read the pod the event names: the
/// event arrived and is being joined to the spec, as the kubelet's event
/// precedes its pull.
fn wait_for_pod_read(server: &FakeApiServer, agent: &Agent, spec: &PodSpec) {
    let path = format!("/api/v1/namespaces/{}/pods/{}", spec.namespace, spec.name);
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if server.requests().iter().any(|r| r["path"] == path.as_str()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "the agent did not read {path} within 15 s; requests: {:#?}\n--- agent stderr ---\n{}",
        server.requests(),
        agent.stderr_so_far()
    );
}
