//! `registry-observer webhook`: the real binary serving HTTPS on 127.0.0.1,
//! real AdmissionReview v1 JSON posted by curl with `--cacert` (so TLS is
//! verified as the API server verifies it), certificates made by the
//! openssl CLI, the served certificate read back by `openssl s_client`.
//!
//! No Kubernetes API server runs here: curl makes the call the API server
//! would make, with review bodies shaped as the API server sends them (uid,
//! kind, resource, operation, userInfo, object). Nothing else is mocked.
//! Traffic stays on 127.0.0.1.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use observer_tests::{
    Service, agent_binary, no_agent_binary, output_within, require_root_and_tools, run_checked,
    workspace_root,
};
use serde_json::{Value, json};

const TOOLS: &[&str] = &["openssl", "curl"];
const TIMEOUT: Duration = Duration::from_secs(30);
const READY_PREFIX: &str = "registry-observer webhook: serving https://";
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A test CA in a temporary directory, issuing server certificates for
/// 127.0.0.1 with chosen serial numbers.
struct Pki {
    dir: tempfile::TempDir,
}

/// Files of one issued pair.
struct Pair {
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        require_root_and_tools(TOOLS);
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = Pki { dir };
        pki.openssl(&[
            "req",
            "-x509",
            "-nodes",
            "-days",
            "2",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-subj",
            "/CN=registry-observer test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ]);
        std::fs::write(
            pki.path("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n\
             basicConstraints=CA:FALSE\n",
        )
        .unwrap();
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca(&self) -> PathBuf {
        self.path("ca.crt")
    }

    fn openssl(&self, args: &[&str]) {
        run_checked(
            Command::new("openssl")
                .current_dir(self.dir.path())
                .args(args),
            TIMEOUT,
        )
        .expect("openssl");
    }

    /// A server pair signed by the CA, with `serial`.
    fn issue(&self, name: &str, serial: u32) -> Pair {
        let (key, csr, cert) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        self.openssl(&[
            "req",
            "-nodes",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-subj",
            "/CN=webhook",
            "-keyout",
            &key,
            "-out",
            &csr,
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            &serial.to_string(),
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            &cert,
        ]);
        Pair {
            cert: self.path(&cert),
            key: self.path(&key),
        }
    }
}

/// Replaces `to` with a copy of `from` the way rotations do: write aside,
/// rename over.
fn install(from: &Path, to: &Path) {
    let staging = to.with_extension("staging");
    std::fs::copy(from, &staging).unwrap();
    std::fs::rename(&staging, to).unwrap();
}

/// A running webhook and what curl needs to reach it.
struct Webhook {
    service: Service,
    port: u16,
    ca: PathBuf,
    scratch: tempfile::TempDir,
}

struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl Webhook {
    fn start(pki: &Pki, pair: &Pair, extra: &[&str]) -> Webhook {
        Webhook::start_binary(&agent_binary(), pki, pair, extra)
    }

    fn start_binary(binary: &Path, pki: &Pki, pair: &Pair, extra: &[&str]) -> Webhook {
        let cert = pair.cert.to_str().unwrap();
        let key = pair.key.to_str().unwrap();
        let mut args = vec![
            "webhook",
            "--cert",
            cert,
            "--key",
            key,
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend(extra);
        let (service, line) = Service::start(binary, &args, READY_PREFIX, TIMEOUT);
        let port = line[READY_PREFIX.len()..]
            .split(' ')
            .next()
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Webhook {
            service,
            port,
            ca: pki.ca(),
            scratch: tempfile::tempdir().unwrap(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// curl with the test CA; `args` before the URL.
    fn curl(&self, args: &[&str], path: &str) -> Reply {
        let out = self.scratch.path().join("reply");
        let output = output_within(
            Command::new("curl")
                .args(["-sS", "--max-time", "20", "--cacert"])
                .arg(&self.ca)
                .arg("-o")
                .arg(&out)
                .args(["-w", "%{http_code}"])
                .args(args)
                .arg(self.url(path)),
            TIMEOUT,
        )
        .expect("curl runs");
        assert!(
            output.status.success(),
            "curl failed: {}\nwebhook stderr: {}",
            String::from_utf8_lossy(&output.stderr),
            self.service.stderr_so_far()
        );
        Reply {
            status: String::from_utf8_lossy(&output.stdout)
                .trim()
                .parse()
                .unwrap(),
            body: std::fs::read_to_string(&out).unwrap_or_default(),
        }
    }

    fn post(&self, body: &[u8], content_type: &str) -> Reply {
        let file = self.scratch.path().join("body.json");
        std::fs::write(&file, body).unwrap();
        let data = format!("@{}", file.display());
        let header = format!("Content-Type: {content_type}");
        self.curl(&["-H", &header, "--data-binary", &data], "/validate")
    }

    fn review(&self, review: &Value) -> Value {
        let reply = self.post(&serde_json::to_vec(review).unwrap(), "application/json");
        assert_eq!(reply.status, 200, "{}", reply.body);
        let answer = reply.json();
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(
            answer["response"]["uid"], review["request"]["uid"],
            "uid echoed"
        );
        answer["response"].clone()
    }

    fn metric(&self, series: &str) -> u64 {
        let reply = self.curl(&[], "/metrics");
        assert_eq!(reply.status, 200);
        reply
            .body
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} not in\n{}", reply.body))
    }

    /// The serial number of the certificate the server presents now.
    fn served_serial(&self) -> String {
        let script = format!(
            "openssl s_client -connect 127.0.0.1:{} -servername localhost </dev/null 2>/dev/null \
             | openssl x509 -noout -serial",
            self.port
        );
        let output = run_checked(Command::new("sh").args(["-c", &script]), TIMEOUT)
            .expect("openssl s_client");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

/// An AdmissionReview v1 as the API server sends it for a CREATE.
fn review(uid: &str, namespace: &str, object: Value) -> Value {
    let kind = object["kind"].as_str().unwrap().to_owned();
    let (group, resource) = match kind.as_str() {
        "Pod" => ("", "pods"),
        "CronJob" => ("batch", "cronjobs"),
        _ => ("apps", "deployments"),
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": resource},
            "requestKind": {"group": group, "version": "v1", "kind": kind},
            "requestResource": {"group": group, "version": "v1", "resource": resource},
            "name": object["metadata"]["name"],
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    })
}

fn pod_always(namespace: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "pre-puller", "namespace": namespace},
        "spec": {"containers": [{"name": "pull", "image": format!("quay.io/ovn/pre-puller@{DIGEST}"), "imagePullPolicy": "Always"}]}
    })
}

fn deployment_latest() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {
            "containers": [{"name": "nginx", "image": "quay.io/shop/nginx:latest"}]
        }}}
    })
}

fn cronjob_init() -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "report", "namespace": "shop"},
        "spec": {"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "OnFailure",
            "initContainers": [{"name": "fetch", "image": "quay.io/shop/fetch"}],
            "containers": [{"name": "run", "image": format!("quay.io/shop/report@{DIGEST}"), "imagePullPolicy": "IfNotPresent"}]
        }}}}}
    })
}

fn deployment_clean() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {"template": {"spec": {
            "containers": [{"name": "api", "image": format!("quay.io/shop/api@{DIGEST}"), "imagePullPolicy": "IfNotPresent"}]
        }}}
    })
}

fn warnings(response: &Value) -> Vec<String> {
    response["warnings"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|w| w.as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn warn_mode_warns_and_bad_requests_get_http_errors() {
    let pki = Pki::new();
    let pair = pki.issue("server", 1);
    let webhook = Webhook::start(&pki, &pair, &["--exclude-namespace", "kube-*"]);

    let pod = webhook.review(&review("uid-pod", "shop", pod_always("shop")));
    assert_eq!(pod["allowed"], true);
    let pod_warnings = warnings(&pod);
    assert_eq!(pod_warnings.len(), 1, "{pod_warnings:#?}");
    assert!(
        pod_warnings[0].starts_with(
            "error Pod shop/pre-puller container \"pull\": imagePullPolicy Always pulls on every start; \
             fix: set imagePullPolicy: IfNotPresent"
        ),
        "{}",
        pod_warnings[0]
    );

    let deployment = webhook.review(&review("uid-deploy", "shop", deployment_latest()));
    assert_eq!(deployment["allowed"], true);
    let text = warnings(&deployment).join("\n");
    assert!(
        text.contains("error Deployment shop/web container \"nginx\": no imagePullPolicy and a latest/no tag defaults to Always"),
        "{text}"
    );
    assert!(
        text.contains("warning Deployment shop/web container \"nginx\": image pinned by tag"),
        "{text}"
    );

    let cronjob = webhook.review(&review("uid-cron", "shop", cronjob_init()));
    assert_eq!(cronjob["allowed"], true);
    let text = warnings(&cronjob).join("\n");
    assert!(
        text.contains("error CronJob shop/report initContainer \"fetch\": no imagePullPolicy"),
        "{text}"
    );
    assert!(
        !text.contains("\"run\""),
        "the pinned container is clean: {text}"
    );

    let clean = webhook.review(&review("uid-clean", "shop", deployment_clean()));
    assert_eq!(clean["allowed"], true);
    assert!(clean.get("warnings").is_none(), "{clean}");

    let excluded = webhook.review(&review(
        "uid-kube",
        "kube-system",
        pod_always("kube-system"),
    ));
    assert_eq!(excluded["allowed"], true);
    assert!(excluded.get("warnings").is_none(), "{excluded}");

    // Malformed JSON: 400 saying so, and the next request is served.
    let reply = webhook.post(
        b"{\"apiVersion\": \"admission.k8s.io/v1\", ",
        "application/json",
    );
    assert_eq!(reply.status, 400);
    assert!(reply.body.contains("not JSON"), "{}", reply.body);
    let reply = webhook.post(
        br#"{"apiVersion": "v1", "kind": "Pod"}"#,
        "application/json",
    );
    assert_eq!(reply.status, 400);
    assert!(
        reply.body.contains("expected an AdmissionReview"),
        "{}",
        reply.body
    );
    let again = webhook.review(&review("uid-after-400", "shop", pod_always("shop")));
    assert_eq!(warnings(&again).len(), 1);

    // Over 8 MiB: with a Content-Length (refused before reading) and chunked
    // (refused while reading).
    let huge = vec![b' '; 9 << 20];
    let reply = webhook.post(&huge, "application/json");
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert!(reply.body.contains("larger than 8 MiB"), "{}", reply.body);
    let file = webhook.scratch.path().join("huge");
    std::fs::write(&file, &huge).unwrap();
    let reply = webhook.curl(
        &[
            "-H",
            "Content-Type: application/json",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &format!("@{}", file.display()),
        ],
        "/validate",
    );
    assert_eq!(reply.status, 413, "{}", reply.body);

    let reply = webhook.post(b"{}", "application/x-www-form-urlencoded");
    assert_eq!(reply.status, 415);
    assert!(reply.body.contains("application/json"), "{}", reply.body);
    let reply = webhook.curl(&[], "/validate");
    assert_eq!(reply.status, 405);

    let reply = webhook.curl(&[], "/healthz");
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok\n"));
    assert_eq!(webhook.curl(&[], "/readyz").status, 200);

    let counted = |outcome: &str| {
        webhook.metric(&format!(
            "registry_observer_webhook_reviews_total{{mode=\"warn\",outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!(counted("warned"), 4, "pod, deployment, cronjob, pod again");
    assert_eq!(counted("allowed"), 2, "clean, excluded");
    assert_eq!(counted("denied"), 0);
    assert_eq!(counted("error"), 6, "2 x 400, 2 x 413, 415, 405");

    let output = webhook.service.stop();
    assert!(output.status.success(), "{output:?}");
    assert!(
        output
            .stderr
            .contains("CREATE v1 Pod shop/pre-puller (uid uid-pod): allowed with 1 warning(s)")
    );
}

#[test]
fn deny_mode_rejects_naming_container_field_and_fix() {
    let pki = Pki::new();
    let pair = pki.issue("server", 2);
    let webhook = Webhook::start(
        &pki,
        &pair,
        &[
            "--mode",
            "deny",
            "--include-namespace",
            "shop",
            "--include-namespace",
            "team-*",
        ],
    );

    let pod = webhook.review(&review("uid-1", "shop", pod_always("shop")));
    assert_eq!(pod["allowed"], false);
    assert_eq!(pod["status"]["code"], 403);
    let message = pod["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "- Pod shop/pre-puller container \"pull\" (/spec/containers/0/imagePullPolicy): \
             imagePullPolicy: Always"
        ),
        "{message}"
    );
    assert!(
        message
            .contains("fix: set imagePullPolicy: IfNotPresent (the digest already pins the image)"),
        "{message}"
    );

    let cronjob = webhook.review(&review("uid-2", "team-reports", cronjob_init()));
    assert_eq!(cronjob["allowed"], false);
    let message = cronjob["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "CronJob shop/report initContainer \"fetch\" \
             (/spec/jobTemplate/spec/template/spec/initContainers/0/image)"
        ),
        "{message}"
    );
    // Below --fail-level (error): a tag instead of a digest is a warning.
    assert!(
        warnings(&cronjob)
            .iter()
            .any(|w| w.contains("image pinned by tag"))
    );

    let tagged = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "tagged", "namespace": "shop"},
        "spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "quay.io/shop/app:v1.2", "imagePullPolicy": "IfNotPresent"}
        ]}}}
    });
    let allowed = webhook.review(&review("uid-3", "shop", tagged));
    assert_eq!(allowed["allowed"], true);
    assert_eq!(warnings(&allowed).len(), 1);

    let elsewhere = webhook.review(&review("uid-4", "other", pod_always("other")));
    assert_eq!(elsewhere["allowed"], true, "not an included namespace");
    assert!(elsewhere.get("warnings").is_none());

    let counted = |outcome: &str| {
        webhook.metric(&format!(
            "registry_observer_webhook_reviews_total{{mode=\"deny\",outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!(
        (counted("denied"), counted("warned"), counted("allowed")),
        (2, 1, 1)
    );
}

#[test]
fn a_changed_certificate_is_served_without_restart_and_a_broken_one_is_not() {
    let pki = Pki::new();
    let first = pki.issue("first", 0x0a);
    let second = pki.issue("second", 0x0b);
    let third = pki.issue("third", 0x0c);
    let live = Pair {
        cert: pki.path("tls.crt"),
        key: pki.path("tls.key"),
    };
    install(&first.cert, &live.cert);
    install(&first.key, &live.key);
    let webhook = Webhook::start(&pki, &live, &[]);
    assert_eq!(webhook.served_serial(), "serial=0A");

    install(&second.key, &live.key);
    install(&second.cert, &live.cert);
    let deadline = Instant::now() + Duration::from_secs(15);
    while webhook.served_serial() != "serial=0B" {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within 15 s"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        webhook.metric("registry_observer_webhook_certificate_reloads_total{result=\"ok\"}") >= 1
    );

    // A certificate whose key is not in tls.key: logged, counted, ignored.
    let failed_before =
        webhook.metric("registry_observer_webhook_certificate_reloads_total{result=\"failed\"}");
    install(&third.cert, &live.cert);
    assert!(
        webhook
            .service
            .wait_for_stderr("still serving the previous pair", Duration::from_secs(15)),
        "{}",
        webhook.service.stderr_so_far()
    );
    assert!(
        webhook
            .service
            .stderr_so_far()
            .contains("does not belong to the certificate")
    );
    assert_eq!(
        webhook.metric("registry_observer_webhook_certificate_reloads_total{result=\"failed\"}"),
        failed_before + 1
    );
    assert_eq!(webhook.served_serial(), "serial=0B");
    let still = webhook.review(&review("uid-after-reload", "shop", deployment_clean()));
    assert_eq!(still["allowed"], true);
}

#[test]
fn an_unusable_certificate_or_key_at_start_exits_2_naming_the_file() {
    let pki = Pki::new();
    let good = pki.issue("good", 3);
    let other = pki.issue("other", 4);
    let garbage = pki.path("garbage.key");
    std::fs::write(&garbage, "-----BEGIN PRIVATE KEY-----\nnot base64\n").unwrap();
    let missing = pki.path("missing.crt");
    for (cert, key, needles) in [
        (
            &good.cert,
            &garbage,
            vec![garbage.display().to_string(), "--key".to_owned()],
        ),
        (
            &missing,
            &good.key,
            vec![missing.display().to_string(), "--cert".to_owned()],
        ),
        (
            &good.cert,
            &other.key,
            vec![
                other.key.display().to_string(),
                "does not belong".to_owned(),
            ],
        ),
    ] {
        let output = output_within(
            Command::new(agent_binary())
                .args(["webhook", "--listen", "127.0.0.1:0", "--cert"])
                .arg(cert)
                .arg("--key")
                .arg(key),
            TIMEOUT,
        )
        .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one sentence: {stderr}");
        for needle in needles {
            assert!(stderr.contains(&needle), "{stderr} lacks {needle}");
        }
    }
    // Bad flags: exit 2 too, with the reason.
    let output = output_within(
        Command::new(agent_binary()).args([
            "webhook",
            "--cert",
            "c",
            "--key",
            "k",
            "--exclude-namespace",
            "Kube_System",
        ]),
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("a-z, 0-9 and -"));
}

#[test]
fn help_teaches_with_examples_and_the_failure_policy() {
    let output = output_within(
        Command::new(agent_binary()).args(["webhook", "--help"]),
        TIMEOUT,
    )
    .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "Examples:",
        "--mode deny",
        "failurePolicy",
        "fails open",
        "8 MiB",
        "docs/WEBHOOK.md",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

/// The binary built without the agent (stable, no bpf-linker) answers
/// every review exactly as the full binary does: the webhook's image needs
/// no kernel programs.
#[test]
fn the_build_without_the_agent_answers_reviews_as_the_full_one_does() {
    let pki = Pki::new();
    let pair = pki.issue("server", 1);
    let flags = ["--mode", "deny", "--exclude-namespace", "kube-*"];
    let full = Webhook::start(&pki, &pair, &flags);
    let without_agent = Webhook::start_binary(&no_agent_binary(), &pki, &pair, &flags);
    let reviews = [
        review("uid-pod", "shop", pod_always("shop")),
        review("uid-deploy", "shop", deployment_latest()),
        review("uid-clean", "shop", deployment_clean()),
        review("uid-kube", "kube-system", pod_always("kube-system")),
    ];
    for request in &reviews {
        let expected = full.review(request);
        assert_eq!(without_agent.review(request), expected, "{request}");
    }
    // Not vacuous: the pod is denied, the clean Deployment allowed.
    assert_eq!(without_agent.review(&reviews[0])["allowed"], false);
    assert_eq!(without_agent.review(&reviews[2])["allowed"], true);
}

/// Reads every document of deploy/webhook/*.yaml.
fn deploy_documents() -> Vec<Value> {
    let dir = workspace_root().join("deploy/webhook");
    let mut documents = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // kubectl's split: a line that is `---` and nothing else.
        for document in text.split("\n---\n") {
            let value: Value = serde_yaml_ng::from_str(document)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            documents.push(value);
        }
    }
    documents
}

fn find<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    documents
        .iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/webhook"))
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

/// The manifests fit together and fit the server: the webhook calls the
/// Service's port and the server's path, the Service reaches the port the
/// container's --listen binds, the probes use HTTPS routes the server has,
/// and the Deployment's own arguments start the real binary.
#[test]
fn deploy_manifests_match_the_server_and_each_other() {
    let documents = deploy_documents();
    let namespace = find(&documents, "Namespace")["metadata"]["name"]
        .as_str()
        .unwrap();
    let service = find(&documents, "Service");
    let deployment = find(&documents, "Deployment");
    let configuration = find(&documents, "ValidatingWebhookConfiguration");
    assert_eq!(service["metadata"]["namespace"], namespace);
    assert_eq!(deployment["metadata"]["namespace"], namespace);

    let webhooks = configuration["webhooks"].as_array().unwrap();
    assert_eq!(webhooks.len(), 1);
    let hook = &webhooks[0];
    assert_eq!(hook["failurePolicy"], "Fail", "deny mode ships Fail");
    assert_eq!(hook["sideEffects"], "None");
    assert_eq!(strings(&hook["admissionReviewVersions"]), ["v1"]);
    let timeout = hook["timeoutSeconds"].as_u64().unwrap();
    assert!((1..=30).contains(&timeout));
    let client = &hook["clientConfig"]["service"];
    assert_eq!(client["name"], service["metadata"]["name"]);
    assert_eq!(client["namespace"], namespace);
    assert_eq!(client["path"], "/validate");
    let service_port = &service["spec"]["ports"][0];
    assert_eq!(client["port"], service_port["port"]);
    let excluded = &hook["namespaceSelector"]["matchExpressions"][0];
    assert_eq!(excluded["key"], "kubernetes.io/metadata.name");
    assert_eq!(excluded["operator"], "NotIn");
    let excluded = strings(&excluded["values"]);
    assert!(excluded.contains(&namespace) && excluded.contains(&"kube-system"));
    let mut resources = Vec::new();
    for rule in hook["rules"].as_array().unwrap() {
        assert_eq!(strings(&rule["operations"]), ["CREATE", "UPDATE"]);
        resources.extend(strings(&rule["resources"]));
    }
    for resource in [
        "pods",
        "deployments",
        "daemonsets",
        "statefulsets",
        "replicasets",
        "jobs",
        "cronjobs",
    ] {
        assert!(resources.contains(&resource), "no rule for {resource}");
    }

    let template = &deployment["spec"]["template"];
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    for (key, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&template["metadata"]["labels"][key], value);
    }
    let pod = &template["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    let port = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == service_port["targetPort"])
        .expect("the Service's targetPort names a container port");
    let args = strings(&container["args"]);
    assert_eq!(args[0], "webhook");
    let flag = |name: &str| -> Vec<&str> {
        args.iter()
            .filter_map(|a| a.strip_prefix(&format!("--{name}=")))
            .collect()
    };
    let listen = flag("listen")[0];
    assert_eq!(
        listen.rsplit(':').next().unwrap(),
        port["containerPort"].to_string()
    );
    assert_eq!(flag("mode"), ["deny"]);
    for probe in ["livenessProbe", "readinessProbe"] {
        let http = &container[probe]["httpGet"];
        assert_eq!(http["scheme"], "HTTPS", "{probe}");
        assert_eq!(http["port"], port["name"], "{probe}");
        assert!(["/healthz", "/readyz"].contains(&http["path"].as_str().unwrap()));
    }
    // --cert and --key live in the mounted Secret.
    let mount = &container["volumeMounts"][0];
    let mount_path = mount["mountPath"].as_str().unwrap();
    let secret = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(
        secret["secret"]["secretName"],
        service["metadata"]["annotations"]["service.beta.openshift.io/serving-cert-secret-name"]
    );
    for name in ["cert", "key"] {
        assert!(
            flag(name)[0].starts_with(&format!("{mount_path}/")),
            "--{name} outside the Secret"
        );
    }

    // The container's own arguments start the real server (files and the
    // address swapped for the test's), and the probes' routes answer.
    let pki = Pki::new();
    let pair = pki.issue("server", 5);
    let mut real: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| {
            !["--cert=", "--key=", "--listen="]
                .iter()
                .any(|f| a.starts_with(f))
        })
        .skip(1)
        .collect();
    real.extend(["--verbose"]);
    let webhook = Webhook::start(&pki, &pair, &real);
    for probe in ["livenessProbe", "readinessProbe"] {
        let path = container[probe]["httpGet"]["path"].as_str().unwrap();
        assert_eq!(webhook.curl(&[], path).status, 200, "{probe} {path}");
    }
    let own = webhook.review(&review("uid-own", namespace, pod_always(namespace)));
    assert_eq!(
        own["allowed"], true,
        "its own namespace is excluded by flag too"
    );
    let denied = webhook.review(&review("uid-shop", "shop", pod_always("shop")));
    assert_eq!(denied["allowed"], false);

    // The webhook's own Deployment passes lint: IfNotPresent, no :latest.
    let lint = output_within(
        Command::new(agent_binary())
            .args(["lint", "deploy/webhook"])
            .current_dir(workspace_root()),
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(
        lint.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&lint.stdout)
    );
}

/// deploy/webhook/ against the Kubernetes API schemas, offline and strict
/// (unknown fields are errors): PyPI's kubernetes-validate, installed by
/// `cargo xtask setup` into target/test-venv.
#[test]
fn deploy_manifests_validate_against_the_kubernetes_schemas() {
    let validator = workspace_root().join("target/test-venv/bin/kubernetes-validate");
    assert!(
        validator.is_file(),
        "{} is missing: `cargo xtask setup` installs it",
        validator.display()
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(workspace_root().join("deploy/webhook"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "{files:?}");
    let output = output_within(
        Command::new(&validator)
            .args(["--strict", "--no-warn"])
            .args(&files),
        Duration::from_secs(120),
    )
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    // Every resource was checked: five of them (the PodDisruptionBudget
    // shares deployment.yaml).
    assert_eq!(text.matches(" passed for resource ").count(), 5, "{text}");

    // And the validator is not a rubber stamp: a misspelt field fails.
    let scratch = tempfile::tempdir().unwrap();
    let typo = scratch.path().join("typo.yaml");
    let original = std::fs::read_to_string(
        workspace_root().join("deploy/webhook/validatingwebhookconfiguration.yaml"),
    )
    .unwrap();
    std::fs::write(&typo, original.replace("failurePolicy:", "failurPolicy:")).unwrap();
    let output = output_within(
        Command::new(&validator).arg("--strict").arg(&typo),
        Duration::from_secs(120),
    )
    .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("failurPolicy"));
}

/// A client that sends headers and then stalls gets 408 when the 10 s read
/// timeout passes, instead of holding the connection; other clients are
/// served meanwhile.
#[test]
fn a_stalled_body_times_out_and_others_are_served_meanwhile() {
    let pki = Pki::new();
    let pair = pki.issue("server", 6);
    let webhook = Webhook::start(&pki, &pair, &[]);
    // Promises 100 bytes, sends none, keeps the connection open for 13 s.
    let script = format!(
        "(printf 'POST /validate HTTP/1.1\\r\\nHost: localhost\\r\\nContent-Type: application/json\\r\\n\
         Content-Length: 100\\r\\n\\r\\n'; sleep 13) \
         | openssl s_client -quiet -connect 127.0.0.1:{} -CAfile {} 2>/dev/null",
        webhook.port,
        webhook.ca.display()
    );
    let started = Instant::now();
    let stalled = std::thread::spawn(move || {
        output_within(Command::new("sh").args(["-c", &script]), TIMEOUT).expect("s_client")
    });
    std::thread::sleep(Duration::from_millis(500));
    let served = webhook.review(&review("uid-meanwhile", "shop", deployment_clean()));
    assert_eq!(served["allowed"], true);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "served while the other stalls"
    );
    let output = stalled.join().unwrap();
    let reply = String::from_utf8_lossy(&output.stdout);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("did not arrive within 10s"), "{reply}");
    assert_eq!(
        webhook.metric("registry_observer_webhook_reviews_total{mode=\"warn\",outcome=\"error\"}"),
        1
    );
}
