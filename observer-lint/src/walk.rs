//! Finds every container in a Kubernetes object and checks it.
//!
//! Pure: takes a `serde_json::Value` (from a manifest, `kubectl get -o json`
//! or an AdmissionReview) and returns what it found, with JSON paths that the
//! caller can map back to source lines.

use serde_json::Value;

use super::{
    finding::{Container, ContainerList, Finding, JsonPath, Workload},
    pull_policy::check_container,
};

/// Lists inside lists are unusual; this bounds recursion on hostile input.
const MAX_NESTING: usize = 16;

/// One container that was checked, with what was found (possibly nothing).
#[derive(Debug, Clone)]
pub struct CheckedContainer {
    pub workload: Workload,
    pub container: Container,
    pub findings: Vec<Finding>,
}

/// Where the pod spec sits in each workload kind. Kinds not listed here hold
/// no pod spec and are skipped.
fn pod_spec_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&["spec"]),
        "Deployment"
        | "DaemonSet"
        | "StatefulSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController"
        | "DeploymentConfig" => Some(&["spec", "template", "spec"]),
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template", "spec"]),
        "PodTemplate" => Some(&["template", "spec"]),
        _ => None,
    }
}

/// Checks every container of every workload in `object`: a workload, a
/// `List`/`*List` of them (`items`), or an OpenShift `Template` (`objects`).
pub fn check_object(object: &Value) -> Vec<CheckedContainer> {
    let mut checked = Vec::new();
    walk(object, &JsonPath::default(), 0, &mut checked);
    checked
}

fn walk(object: &Value, path: &JsonPath, depth: usize, checked: &mut Vec<CheckedContainer>) {
    if depth > MAX_NESTING {
        return;
    }
    let Some(kind) = object.get("kind").and_then(Value::as_str) else {
        return;
    };
    let members = if kind == "Template" {
        Some("objects")
    } else if kind.ends_with("List") {
        Some("items")
    } else {
        None
    };
    if let Some(field) = members {
        if let Some(items) = object.get(field).and_then(Value::as_array) {
            for (i, item) in items.iter().enumerate() {
                walk(item, &path.key(field).index(i), depth + 1, checked);
            }
        }
        return;
    }
    let Some(spec_path) = pod_spec_path(kind) else {
        return;
    };
    let mut spec = object;
    let mut spec_at = path.clone();
    for field in spec_path {
        match spec.get(field) {
            Some(next) => spec = next,
            None => return,
        }
        spec_at = spec_at.key(field);
    }
    let workload = workload_of(kind, object);
    checked.extend(check_pod_spec(spec, &workload, &spec_at));
}

fn workload_of(kind: &str, object: &Value) -> Workload {
    let metadata = object.get("metadata");
    let text = |field: &str| {
        metadata
            .and_then(|m| m.get(field))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let name = text("name")
        .or_else(|| text("generateName").map(|prefix| format!("{prefix}*")))
        .unwrap_or_else(|| "(unnamed)".to_owned());
    let owner = metadata
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .and_then(|owners| {
            owners
                .iter()
                .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
        })
        .map(|o| {
            let field = |f: &str| o.get(f).and_then(Value::as_str).unwrap_or("?");
            format!("{}/{}", field("kind"), field("name"))
        });
    Workload {
        kind: kind.to_owned(),
        namespace: text("namespace"),
        name,
        owner,
    }
}

/// Checks the containers, init containers and ephemeral containers of one
/// pod spec found at `path` in the object of `workload`.
pub fn check_pod_spec(spec: &Value, workload: &Workload, path: &JsonPath) -> Vec<CheckedContainer> {
    let mut checked = Vec::new();
    for list in ContainerList::ALL {
        let Some(containers) = spec.get(list.field()).and_then(Value::as_array) else {
            continue;
        };
        for (i, entry) in containers.iter().enumerate() {
            let scalar = |field: &str| match entry.get(field) {
                None | Some(Value::Null) => None,
                Some(Value::String(text)) => Some(text.clone()),
                Some(other) => Some(other.to_string()),
            };
            let container = Container {
                list,
                name: scalar("name").unwrap_or_else(|| format!("#{i}")),
                image: scalar("image").unwrap_or_default(),
                path: path.key(list.field()).index(i),
            };
            // The API treats an empty policy as an absent one.
            let policy = scalar("imagePullPolicy").filter(|p| !p.is_empty());
            let findings = check_container(workload, &container, policy.as_deref());
            checked.push(CheckedContainer {
                workload: workload.clone(),
                container,
                findings,
            });
        }
    }
    checked
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::finding::Rule;

    fn summary(object: &Value) -> Vec<(String, String, Vec<Rule>)> {
        check_object(object)
            .into_iter()
            .map(|c| {
                (
                    c.workload.to_string(),
                    c.container.path.to_string(),
                    c.findings.iter().map(|f| f.rule).collect(),
                )
            })
            .collect()
    }

    const PINNED: &str =
        "quay.io/t/a@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn finds_containers_in_every_workload_kind() {
        let template = json!({"spec": {"containers": [{"name": "c", "image": PINNED, "imagePullPolicy": "Always"}]}});
        for (kind, object, path) in [
            (
                "Pod",
                json!({"kind": "Pod", "spec": template["spec"]}),
                "/spec/containers/0",
            ),
            (
                "Deployment",
                json!({"kind": "Deployment", "spec": {"template": template}}),
                "/spec/template/spec/containers/0",
            ),
            (
                "DaemonSet",
                json!({"kind": "DaemonSet", "spec": {"template": template}}),
                "/spec/template/spec/containers/0",
            ),
            (
                "StatefulSet",
                json!({"kind": "StatefulSet", "spec": {"template": template}}),
                "/spec/template/spec/containers/0",
            ),
            (
                "ReplicaSet",
                json!({"kind": "ReplicaSet", "spec": {"template": template}}),
                "/spec/template/spec/containers/0",
            ),
            (
                "Job",
                json!({"kind": "Job", "spec": {"template": template}}),
                "/spec/template/spec/containers/0",
            ),
            (
                "CronJob",
                json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": template}}}}),
                "/spec/jobTemplate/spec/template/spec/containers/0",
            ),
            (
                "PodTemplate",
                json!({"kind": "PodTemplate", "template": template}),
                "/template/spec/containers/0",
            ),
        ] {
            let found = summary(&object);
            assert_eq!(found.len(), 1, "{kind}: {found:?}");
            assert_eq!(found[0].1, path, "{kind}");
            assert_eq!(found[0].2, vec![Rule::ExplicitAlways], "{kind}");
        }
    }

    #[test]
    fn checks_every_container_list_and_lists_of_objects() {
        let pod = json!({
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns",
                "ownerReferences": [
                    {"kind": "Node", "name": "n"},
                    {"kind": "DaemonSet", "name": "ds", "controller": true}]},
            "spec": {
                "initContainers": [{"name": "init", "image": "quay.io/t/i"}],
                "containers": [{"name": "main", "image": PINNED}],
                "ephemeralContainers": [{"name": "debug", "image": PINNED, "imagePullPolicy": "Always"}],
            }
        });
        let list = json!({"kind": "List", "items": [
            {"kind": "ConfigMap", "data": {}},
            {"kind": "PodList", "items": [pod]},
        ]});
        let found = summary(&list);
        let workload = "Pod ns/p (owned by DaemonSet/ds)".to_owned();
        assert_eq!(
            found,
            vec![
                (
                    workload.clone(),
                    "/items/1/items/0/spec/initContainers/0".into(),
                    vec![Rule::ImplicitAlways, Rule::TagNotDigest]
                ),
                (
                    workload.clone(),
                    "/items/1/items/0/spec/containers/0".into(),
                    vec![]
                ),
                (
                    workload,
                    "/items/1/items/0/spec/ephemeralContainers/0".into(),
                    vec![Rule::ExplicitAlways]
                ),
            ]
        );
    }

    #[test]
    fn odd_objects_are_checked_or_skipped_without_panicking() {
        // No kind, no spec, wrong types, an unnamed container, an OpenShift Template.
        assert!(check_object(&json!({"spec": {}})).is_empty());
        assert!(check_object(&json!({"kind": "Deployment"})).is_empty());
        assert!(check_object(&json!({"kind": "Pod", "spec": {"containers": "x"}})).is_empty());
        assert!(check_object(&json!([1, 2])).is_empty());
        let found = check_object(&json!({"kind": "Template", "objects": [
            {"kind": "Pod", "metadata": {"generateName": "job-"}, "spec": {"containers": [{"image": 7, "imagePullPolicy": ""}]}}
        ]}));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].workload.name, "job-*");
        assert_eq!(found[0].container.name, "#0");
        assert_eq!(found[0].container.image, "7");
        assert_eq!(found[0].findings[0].rule, Rule::ImplicitAlways);
        // Deep nesting stops instead of overflowing the stack.
        let mut deep = json!({"kind": "Pod", "spec": {"containers": [{"image": "a"}]}});
        for _ in 0..100 {
            deep = json!({"kind": "List", "items": [deep]});
        }
        assert!(check_object(&deep).is_empty());
    }
}
