//! AdmissionReview in, AdmissionReview out. Pure: bytes from the API server
//! become a response and an outcome; the server does the I/O and counting.
//!
//! The checks are lint's ([`crate::lint::check_object`]) on the request's
//! object, so the webhook and `registry-observer lint` never disagree.

use std::collections::HashSet;

use kube_core::{
    DynamicObject,
    admission::{
        AdmissionRequest, AdmissionResponse, AdmissionReview, META_API_VERSION_V1, META_KIND,
        Operation,
    },
    response::StatusSummary,
};
use serde_json::Value;

use super::config::{Mode, NamespaceSelection, Skipped};
use observer_lint::{
    FailLevel, Finding, PullPolicy, Rule, check_object, default_pull_policy, finding::ContainerList,
};

/// The API server truncates each warning beyond 256 runes, and all of a
/// response's warnings beyond 4096 (`truncateItemRunes`,
/// `truncateAtTotalRunes` in k8s.io/apiserver/pkg/endpoints/filters/
/// warning.go); the AdmissionResponse docs ask for 120 where possible.
pub const MAX_WARNING_CHARS: usize = 256;
pub const MAX_WARNINGS_TOTAL_CHARS: usize = 4096;
/// A denial lists this many findings, then says how many more there are.
pub const MAX_DENIED_LISTED: usize = 20;

/// Decides on AdmissionReviews.
#[derive(Debug, Clone)]
pub struct Reviewer {
    pub mode: Mode,
    /// In deny mode, findings at or above this severity deny.
    pub fail_level: FailLevel,
    pub namespaces: NamespaceSelection,
}

/// What happened to a review, for counters and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Allowed with no warning.
    Allowed,
    /// Allowed, with warnings.
    Warned,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Warned => "warned",
            Outcome::Denied => "denied",
        }
    }
}

/// A decided review.
#[derive(Debug)]
pub struct Reviewed {
    /// The AdmissionReview to send back (HTTP 200).
    pub response: AdmissionReview<DynamicObject>,
    pub outcome: Outcome,
    /// One line for the log: which object, and why this outcome.
    pub summary: String,
}

/// A request that is not an AdmissionReview v1 this webhook can answer: the
/// server replies 400 with this sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadReview(pub String);

impl Reviewer {
    /// Reads an AdmissionReview v1 from `body` and decides on it.
    pub fn review(&self, body: &[u8]) -> Result<Reviewed, BadReview> {
        let document: Value = serde_json::from_slice(body)
            .map_err(|e| BadReview(format!("the body is not JSON: {e}")))?;
        let api_version = document.get("apiVersion").and_then(Value::as_str);
        let kind = document.get("kind").and_then(Value::as_str);
        if kind != Some(META_KIND) || api_version != Some(META_API_VERSION_V1) {
            return Err(BadReview(format!(
                "expected an AdmissionReview with apiVersion {META_API_VERSION_V1}, got kind \
                 {kind:?} and apiVersion {api_version:?}; list only v1 in the webhook's \
                 admissionReviewVersions"
            )));
        }
        // Kept as JSON for lint, which reads any object shape; the typed
        // envelope is checked separately so a broken one is a 400.
        let object = document.pointer("/request/object").cloned();
        let old_object = document.pointer("/request/oldObject").cloned();
        let review: AdmissionReview<DynamicObject> = serde_path_to_error::deserialize(document)
            .map_err(|e| {
                BadReview(format!(
                    "not an AdmissionReview v1: at {}: {}",
                    e.path(),
                    e.inner()
                ))
            })?;
        let request: AdmissionRequest<DynamicObject> = review
            .try_into()
            .map_err(|_| BadReview("the AdmissionReview has no `request` to answer".to_owned()))?;
        Ok(self.decide(&request, object, old_object))
    }

    fn decide(
        &self,
        request: &AdmissionRequest<DynamicObject>,
        object: Option<Value>,
        old_object: Option<Value>,
    ) -> Reviewed {
        let what = describe_request(request);
        let allow = |why: String| Reviewed {
            response: AdmissionResponse::from(request).into_review(),
            outcome: Outcome::Allowed,
            summary: format!("{what}: allowed, {why}"),
        };
        if matches!(request.operation, Operation::Delete | Operation::Connect) {
            return allow(format!(
                "{} carries no pod spec to check",
                operation_name(&request.operation)
            ));
        }
        let Some(object) = object.filter(|o| !o.is_null()) else {
            return allow("the request has no object".to_owned());
        };
        match self.namespaces.judge(request.namespace.as_deref()) {
            Ok(()) => {}
            Err(Skipped::Excluded(pattern)) => {
                return allow(format!(
                    "namespace excluded by --exclude-namespace {pattern}"
                ));
            }
            Err(Skipped::NotIncluded) => {
                return allow(format!(
                    "namespace matches no --include-namespace ({})",
                    self.namespaces
                ));
            }
        }

        let checked = check_object(&complete(object, request));
        if checked.is_empty() {
            return allow(format!(
                "kind {} holds no pod spec with containers",
                request.kind.kind
            ));
        }
        let findings: Vec<&Finding> = checked.iter().flat_map(|c| &c.findings).collect();
        if findings.is_empty() {
            return allow(format!(
                "{} container(s) checked, no finding",
                checked.len()
            ));
        }

        // An UPDATE that keeps an existing finding (a label change on a pod
        // whose stored policy is Always) is not denied: it would block
        // controllers on objects admitted before the webhook existed. Only
        // what the update introduces is denied; the rest is a warning.
        let existing: HashSet<FindingKey> = match (&request.operation, old_object) {
            (Operation::Update, Some(old)) if !old.is_null() => {
                check_object(&complete(old, request))
                    .iter()
                    .flat_map(|c| &c.findings)
                    .map(FindingKey::of)
                    .collect()
            }
            _ => HashSet::new(),
        };
        let (denying, warning): (Vec<&Finding>, Vec<&Finding>) =
            findings.into_iter().partition(|finding| {
                self.mode == Mode::Deny
                    && self.fail_level.fails(finding.severity)
                    && !existing.contains(&FindingKey::of(finding))
            });

        let mut response = AdmissionResponse::from(request);
        let warnings = warnings_for(&warning);
        if !warnings.is_empty() {
            response.warnings = Some(warnings);
        }
        if denying.is_empty() {
            return Reviewed {
                response: response.into_review(),
                outcome: Outcome::Warned,
                summary: format!("{what}: allowed with {} warning(s)", warning.len()),
            };
        }
        let mut response = response.deny(denial_message(&denying));
        response.result.code = 403;
        response.result.reason = "Forbidden".to_owned();
        response.result.status = Some(StatusSummary::Failure);
        Reviewed {
            response: response.into_review(),
            outcome: Outcome::Denied,
            summary: format!(
                "{what}: denied for {} finding(s), {} more as warnings",
                denying.len(),
                warning.len()
            ),
        }
    }
}

/// `CREATE apps/v1 Deployment shop/web (uid ...)`, for the log.
fn describe_request(request: &AdmissionRequest<DynamicObject>) -> String {
    let kind = &request.kind;
    let group_version = if kind.group.is_empty() {
        kind.version.clone()
    } else {
        format!("{}/{}", kind.group, kind.version)
    };
    let name = if request.name.is_empty() {
        "(generated name)"
    } else {
        &request.name
    };
    let namespace = request
        .namespace
        .as_deref()
        .map(|n| format!("{n}/"))
        .unwrap_or_default();
    format!(
        "{} {group_version} {} {namespace}{name} (uid {})",
        operation_name(&request.operation),
        kind.kind,
        request.uid
    )
}

/// As the API spells it.
fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// The object as lint expects it: with `kind`, and with the namespace and
/// name the request carries when the object leaves them out (a CREATE's
/// namespace comes from the URL).
fn complete(mut object: Value, request: &AdmissionRequest<DynamicObject>) -> Value {
    let Some(fields) = object.as_object_mut() else {
        return object;
    };
    fields
        .entry("kind")
        .or_insert_with(|| Value::String(request.kind.kind.clone()));
    let metadata = fields
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(metadata) = metadata.as_object_mut() {
        let missing = |v: Option<&Value>| v.and_then(Value::as_str).is_none_or(str::is_empty);
        if let Some(namespace) = &request.namespace
            && missing(metadata.get("namespace"))
        {
            metadata.insert("namespace".to_owned(), Value::String(namespace.clone()));
        }
        if !request.name.is_empty() && missing(metadata.get("name")) {
            metadata.insert("name".to_owned(), Value::String(request.name.clone()));
        }
    }
    object
}

/// A finding's identity across an UPDATE: the same rule on the same
/// container (by name: containers may be reordered).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FindingKey {
    list: ContainerList,
    container: String,
    rule: Rule,
}

impl FindingKey {
    fn of(finding: &Finding) -> FindingKey {
        FindingKey {
            list: finding.container.list,
            container: finding.container.name.clone(),
            rule: finding.rule,
        }
    }
}

/// The problem in a few words, for a warning that fits the API server's
/// limits. A validating webhook sees objects after defaulting, so a Pod's
/// `Always` may have been written by Kubernetes itself: say so.
fn short_problem(finding: &Finding) -> &'static str {
    match finding.rule {
        Rule::ExplicitAlways if may_be_defaulted(finding) => {
            "imagePullPolicy Always (written, or defaulted for a latest/untagged image) pulls on every start"
        }
        Rule::ExplicitAlways => "imagePullPolicy Always pulls on every start",
        Rule::ImplicitAlways => "no imagePullPolicy and a latest/no tag defaults to Always",
        Rule::InvalidImage => "image reference does not parse (InvalidImageName)",
        Rule::InvalidPullPolicy => "imagePullPolicy is not Always, IfNotPresent or Never",
        Rule::TagNotDigest => "image pinned by tag, not digest",
        Rule::ShortName => "image names no registry",
    }
}

/// An explicit `Always` that the API server's defaulting may have written:
/// the user may never have typed it.
fn may_be_defaulted(finding: &Finding) -> bool {
    finding.rule == Rule::ExplicitAlways
        && default_pull_policy(&finding.container.image) == PullPolicy::Always
}

/// Where a finding is: `Deployment shop/web container "nginx"` (init and
/// ephemeral containers say so).
fn container_ref(finding: &Finding) -> String {
    let workload = &finding.workload;
    let namespace = workload
        .namespace
        .as_deref()
        .map(|n| format!("{n}/"))
        .unwrap_or_default();
    let list = match finding.container.list {
        ContainerList::Containers => "container",
        ContainerList::InitContainers => "initContainer",
        ContainerList::EphemeralContainers => "ephemeralContainer",
    };
    format!(
        "{} {namespace}{} {list} {:?}",
        workload.kind, workload.name, finding.container.name
    )
}

/// One warning per finding: where, what, fix; each within the API server's
/// per-warning limit and all within its total, the overflow summed up in a
/// last warning so nothing vanishes silently.
pub fn warnings_for(findings: &[&Finding]) -> Vec<String> {
    // Room for the closing "N more" line.
    const RESERVE: usize = 120;
    let mut warnings = Vec::new();
    let mut total = 0;
    for (index, finding) in findings.iter().enumerate() {
        let text = clip(
            &format!(
                "{} {}: {}; fix: {}",
                finding.severity.as_str(),
                container_ref(finding),
                short_problem(finding),
                finding.fix
            ),
            MAX_WARNING_CHARS,
        );
        let chars = text.chars().count();
        let last = index + 1 == findings.len();
        let budget = if last {
            MAX_WARNINGS_TOTAL_CHARS
        } else {
            MAX_WARNINGS_TOTAL_CHARS - RESERVE
        };
        if total + chars > budget {
            warnings.push(format!(
                "{} more finding(s) not shown; run `registry-observer lint` on this manifest",
                findings.len() - index
            ));
            break;
        }
        total += chars;
        warnings.push(text);
    }
    warnings
}

/// The `status.message` of a denial: every offending container with the
/// field and the fix, up to [`MAX_DENIED_LISTED`].
pub fn denial_message(findings: &[&Finding]) -> String {
    let mut message = format!(
        "registry-observer: {} finding(s) would make nodes contact an image registry, which \
         breaks booting and upgrading with no registry reachable:",
        findings.len()
    );
    for finding in findings.iter().take(MAX_DENIED_LISTED) {
        message.push_str(&format!(
            "\n- {} ({}): {}{} [{}]; fix: {}",
            container_ref(finding),
            finding.path,
            sanitize(&finding.message),
            if may_be_defaulted(finding) {
                " (Kubernetes writes Always itself for an image with a latest or no tag)"
            } else {
                ""
            },
            finding.rule,
            sanitize(&finding.fix)
        ));
    }
    if findings.len() > MAX_DENIED_LISTED {
        message.push_str(&format!(
            "\n- and {} more; run `registry-observer lint` on the manifest for all",
            findings.len() - MAX_DENIED_LISTED
        ));
    }
    message
}

/// Warnings travel as HTTP header values: control characters (from a
/// hostile or broken object) would make the API server drop them.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `text` sanitized and cut to `max` characters, marked with `…` when cut.
fn clip(text: &str, max: usize) -> String {
    let clean = sanitize(text);
    if clean.chars().count() <= max {
        return clean;
    }
    let mut cut: String = clean.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::NamespacePattern;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn reviewer(mode: Mode) -> Reviewer {
        Reviewer {
            mode,
            fail_level: FailLevel::Error,
            namespaces: NamespaceSelection::default(),
        }
    }

    /// An AdmissionReview v1 as the API server sends it (fields from a real
    /// request: uid, kind, resource, operation, userInfo, object).
    fn request(operation: &str, namespace: &str, object: Value, old: Option<Value>) -> Vec<u8> {
        let kind = object["kind"].as_str().unwrap_or("Pod").to_owned();
        let (group, resource) = match kind.as_str() {
            "Pod" => ("", "pods"),
            "CronJob" => ("batch", "cronjobs"),
            "ConfigMap" => ("", "configmaps"),
            _ => ("apps", "deployments"),
        };
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": group, "version": "v1", "kind": kind},
                "resource": {"group": group, "version": "v1", "resource": resource},
                "name": object["metadata"]["name"],
                "namespace": namespace,
                "operation": operation,
                "userInfo": {"username": "admin", "groups": ["system:authenticated"]},
                "object": object,
                "oldObject": old,
                "dryRun": false
            }
        }))
        .unwrap()
    }

    fn pod(containers: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": {"containers": containers}})
    }

    fn response(reviewed: &Reviewed) -> Value {
        serde_json::to_value(&reviewed.response).unwrap()
    }

    #[test]
    fn warn_mode_allows_with_one_short_warning_per_finding() {
        let body = request(
            "CREATE",
            "shop",
            pod(
                json!([{"name": "nginx", "image": "quay.io/shop/nginx:1.25", "imagePullPolicy": "Always"}]),
            ),
            None,
        );
        let reviewed = reviewer(Mode::Warn).review(&body).unwrap();
        assert_eq!(reviewed.outcome, Outcome::Warned);
        let out = response(&reviewed);
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(out["kind"], "AdmissionReview");
        assert_eq!(
            out["response"]["uid"],
            "705ab4f5-6393-11e8-b7cc-42010a800002"
        );
        assert_eq!(out["response"]["allowed"], true);
        let warnings: Vec<&str> = out["response"]["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        // explicit-always and tag-not-digest.
        assert_eq!(warnings.len(), 2, "{warnings:#?}");
        assert!(
            warnings[0]
                .starts_with("error Pod shop/web container \"nginx\": imagePullPolicy Always"),
            "{}",
            warnings[0]
        );
        assert!(warnings[0].contains("fix: set imagePullPolicy: IfNotPresent"));
        assert!(
            warnings[1]
                .starts_with("warning Pod shop/web container \"nginx\": image pinned by tag")
        );
        for warning in &warnings {
            assert!(warning.chars().count() <= MAX_WARNING_CHARS, "{warning}");
        }
        assert!(
            reviewed.summary.starts_with("CREATE v1 Pod shop/web"),
            "{}",
            reviewed.summary
        );
    }

    #[test]
    fn defaulted_always_is_explained() {
        // What a validating webhook sees for `image: nginx` after defaulting.
        let body = request(
            "CREATE",
            "shop",
            pod(json!([{"name": "c", "image": "nginx", "imagePullPolicy": "Always"}])),
            None,
        );
        let out = response(&reviewer(Mode::Warn).review(&body).unwrap());
        assert!(
            out["response"]["warnings"][0]
                .as_str()
                .unwrap()
                .contains("defaulted for a latest/untagged image")
        );
    }

    #[test]
    fn deny_mode_denies_errors_and_warns_the_rest() {
        let object = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"template": {"spec": {
                "initContainers": [{"name": "init", "image": "quay.io/shop/init:latest"}],
                "containers": [{"name": "app", "image": "quay.io/shop/app:v1", "imagePullPolicy": "IfNotPresent"}]
            }}}
        });
        let body = request("CREATE", "shop", object, None);
        let reviewed = reviewer(Mode::Deny).review(&body).unwrap();
        assert_eq!(reviewed.outcome, Outcome::Denied);
        let out = response(&reviewed);
        let answer = &out["response"];
        assert_eq!(answer["allowed"], false);
        assert_eq!(answer["status"]["code"], 403);
        assert_eq!(answer["status"]["reason"], "Forbidden");
        let message = answer["status"]["message"].as_str().unwrap();
        assert!(
            message.contains(
                "Deployment shop/web initContainer \"init\" (/spec/template/spec/initContainers/0/image)"
            ),
            "{message}"
        );
        assert!(message.contains("[implicit-always]"), "{message}");
        assert!(
            message.contains("fix: set imagePullPolicy: IfNotPresent"),
            "{message}"
        );
        // The app container's tag is only a warning at --fail-level error:
        // it is not in the denial, but in the warnings (with the init
        // container's own tag warning).
        assert!(!message.contains("\"app\""), "{message}");
        let warnings = answer["warnings"].as_array().unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:#?}");
        assert!(
            warnings
                .iter()
                .any(|w| w.as_str().unwrap().contains("container \"app\""))
        );

        // --fail-level warning denies the tag too.
        let strict = Reviewer {
            fail_level: FailLevel::Warning,
            ..reviewer(Mode::Deny)
        };
        let out = response(&strict.review(&body).unwrap());
        assert!(
            out["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("\"app\"")
        );
        assert!(out["response"].get("warnings").is_none());
    }

    #[test]
    fn clean_unknown_and_deleted_objects_are_allowed_silently() {
        let clean = pod(
            json!([{"name": "c", "image": format!("quay.io/t/app@{DIGEST}"), "imagePullPolicy": "IfNotPresent"}]),
        );
        let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"image": "nginx"}});
        for (operation, object, why) in [
            (
                "CREATE",
                clean.clone(),
                "1 container(s) checked, no finding",
            ),
            ("CREATE", config_map, "kind ConfigMap holds no pod spec"),
            ("DELETE", clean, "DELETE carries no pod spec"),
        ] {
            let reviewed = reviewer(Mode::Deny)
                .review(&request(operation, "shop", object, None))
                .unwrap();
            assert_eq!(reviewed.outcome, Outcome::Allowed);
            assert!(reviewed.summary.contains(why), "{}", reviewed.summary);
            let out = response(&reviewed);
            assert_eq!(out["response"]["allowed"], true);
            assert!(out["response"].get("warnings").is_none());
        }
    }

    #[test]
    fn excluded_namespaces_are_not_judged() {
        let bad = pod(json!([{"name": "c", "image": "nginx"}]));
        let reviewer = Reviewer {
            namespaces: NamespaceSelection {
                include: vec![],
                exclude: vec![NamespacePattern::parse("kube-*").unwrap()],
            },
            ..reviewer(Mode::Deny)
        };
        let reviewed = reviewer
            .review(&request("CREATE", "kube-system", bad.clone(), None))
            .unwrap();
        assert_eq!(reviewed.outcome, Outcome::Allowed);
        assert!(reviewed.summary.contains("--exclude-namespace kube-*"));
        let reviewed = reviewer
            .review(&request("CREATE", "shop", bad, None))
            .unwrap();
        assert_eq!(reviewed.outcome, Outcome::Denied);
    }

    #[test]
    fn updates_deny_only_what_they_introduce() {
        let always =
            pod(json!([{"name": "c", "image": "quay.io/t/a:v1", "imagePullPolicy": "Always"}]));
        let mut relabeled = always.clone();
        relabeled["metadata"]["labels"] = json!({"tier": "web"});
        let reviewed = reviewer(Mode::Deny)
            .review(&request("UPDATE", "shop", relabeled, Some(always.clone())))
            .unwrap();
        assert_eq!(reviewed.outcome, Outcome::Warned);
        let fixed = pod(
            json!([{"name": "c", "image": "quay.io/t/a:v1", "imagePullPolicy": "IfNotPresent"}]),
        );
        let reviewed = reviewer(Mode::Deny)
            .review(&request("UPDATE", "shop", always, Some(fixed)))
            .unwrap();
        assert_eq!(reviewed.outcome, Outcome::Denied);
    }

    #[test]
    fn the_request_fills_in_namespace_and_name() {
        let object = json!({"kind": "Pod", "metadata": {}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        let mut body: Value =
            serde_json::from_slice(&request("CREATE", "shop", object, None)).unwrap();
        body["request"]["name"] = json!("from-url");
        let reviewed = reviewer(Mode::Deny)
            .review(&serde_json::to_vec(&body).unwrap())
            .unwrap();
        let message = response(&reviewed)["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            message.contains("Pod shop/from-url container \"c\""),
            "{message}"
        );
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let reviewer = reviewer(Mode::Warn);
        let error = |body: &[u8]| reviewer.review(body).unwrap_err().0;
        assert!(error(b"{not json").contains("not JSON"));
        assert!(error(b"").contains("not JSON"));
        assert!(error(br#"{"kind": "Pod", "apiVersion": "v1"}"#).contains("AdmissionReview"));
        let v1beta1 = br#"{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1"}"#;
        assert!(error(v1beta1).contains("admissionReviewVersions"));
        let no_request = br#"{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}"#;
        assert!(error(no_request).contains("no `request`"));
        let no_uid = br#"{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
            "request": {"kind": {"group": "", "version": "v1", "kind": "Pod"}}}"#;
        let message = error(no_uid);
        assert!(
            message.contains("at request") && message.contains("uid"),
            "{message}"
        );
    }

    #[test]
    fn warnings_stay_within_the_api_servers_limits() {
        // 60 containers with long names and images: more than 4096 runes.
        let containers: Vec<Value> = (0..60)
            .map(|i| json!({"name": format!("c{i}-{}", "x".repeat(50)), "image": format!("quay.io/{}/img{i}", "y".repeat(150))}))
            .collect();
        let body = request("CREATE", "shop", pod(Value::Array(containers)), None);
        let out = response(&reviewer(Mode::Warn).review(&body).unwrap());
        let warnings: Vec<&str> = out["response"]["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        let total: usize = warnings.iter().map(|w| w.chars().count()).sum();
        assert!(total <= MAX_WARNINGS_TOTAL_CHARS, "{total}");
        assert!(
            warnings
                .iter()
                .all(|w| w.chars().count() <= MAX_WARNING_CHARS)
        );
        let last = warnings.last().unwrap();
        assert!(last.contains("more finding(s) not shown"), "{last}");
        // 60 containers x 2 findings (implicit-always, tag-not-digest): the
        // shown ones plus the rest counted.
        let shown = warnings.len() - 1;
        assert!(last.starts_with(&format!("{} more", 120 - shown)), "{last}");
        assert!(warnings.iter().any(|w| w.ends_with('…')));
    }

    #[test]
    fn denials_list_at_most_twenty_and_count_the_rest() {
        let containers: Vec<Value> = (0..25)
            .map(|i| json!({"name": format!("c{i}"), "image": "nginx:latest"}))
            .collect();
        let body = request("CREATE", "shop", pod(Value::Array(containers)), None);
        let out = response(&reviewer(Mode::Deny).review(&body).unwrap());
        let message = out["response"]["status"]["message"].as_str().unwrap();
        assert_eq!(message.lines().count(), 1 + MAX_DENIED_LISTED + 1);
        assert!(
            message.ends_with("and 5 more; run `registry-observer lint` on the manifest for all")
        );
    }

    #[test]
    fn control_characters_never_reach_a_header() {
        let body = request(
            "CREATE",
            "shop",
            pod(json!([{"name": "a\r\nInjected: yes", "image": "nginx"}])),
            None,
        );
        let out = response(&reviewer(Mode::Warn).review(&body).unwrap());
        for warning in out["response"]["warnings"].as_array().unwrap() {
            assert!(!warning.as_str().unwrap().chars().any(char::is_control));
        }
    }
}
