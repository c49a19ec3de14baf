//! Joins a pull to the pod spec behind it: the effective pull policy, why it
//! is in effect, the field to change and the controller whose template holds
//! it.
//!
//! Pure, on the pod as the API server returns it (`serde_json::Value`). The
//! defaulting and the fix sentences are lint's (`lint::check_pod_spec`,
//! `lint::default_pull_policy`, `lint::policy::check_container`), so a pull
//! explained here and a manifest checked by `registry-observer lint` say
//! the same thing.
//!
//! A live pod stores the defaulted value (shared/DOMAIN.md): a stored
//! `Always` with a `latest` tag or no tag may have been written or defaulted
//! from the tag, so it is reported with the tag as the reason and lint's
//! implicit-always fix (which covers both); a stored value that defaulting
//! would not give was written.

use observer_lint::{
    self as lint, ImageReference, PullPolicy,
    finding::{ContainerList, JsonPath, Rule, Segment, Workload},
    pull_policy::check_container,
};
use observer_report::on_behalf_of::{PolicyJoin, PolicySource, PolicyWhy};
use serde_json::Value;

/// A pod's controlling owner (`ownerReferences[]` with `controller: true`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub kind: String,
    pub name: String,
}

impl Owner {
    /// `DaemonSet/ovnkube-node`, as the report writes owners.
    pub fn display(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

/// The controller of any object (a pod, a ReplicaSet).
pub fn controller_of(object: &Value) -> Option<Owner> {
    object["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|owner| owner["controller"].as_bool() == Some(true))
        .and_then(|owner| {
            Some(Owner {
                kind: owner["kind"].as_str()?.to_owned(),
                name: owner["name"].as_str()?.to_owned(),
            })
        })
}

/// The pod's uid, to tell a recreated pod of the same name from the one an
/// event was about.
pub fn uid_of(pod: &Value) -> Option<&str> {
    pod["metadata"]["uid"].as_str()
}

/// The policy behind a pull of `image` for `container` (by list and name,
/// as the event names it) in `pod`. Without a container name the first
/// container whose image is `image` (or `image` without the `:latest` the
/// kubelet appends) is taken. None when the pod has no such container.
/// `owner` is the controller to name (the caller may have resolved a
/// ReplicaSet to its Deployment).
pub fn join(
    pod: &Value,
    container: Option<(ContainerList, &str)>,
    image: &str,
    owner: Option<String>,
) -> Option<PolicyJoin> {
    let metadata = &pod["metadata"];
    let workload = Workload {
        kind: "Pod".to_owned(),
        namespace: metadata["namespace"].as_str().map(str::to_owned),
        name: metadata["name"].as_str().unwrap_or("(unnamed)").to_owned(),
        owner: owner.clone(),
    };
    let checked = lint::check_pod_spec(&pod["spec"], &workload, &JsonPath::default().key("spec"));
    let found = checked.into_iter().find(|c| match container {
        Some((list, name)) => c.container.list == list && c.container.name == name,
        None => {
            c.container.image == image
                || image.strip_suffix(":latest") == Some(c.container.image.as_str())
        }
    })?;
    let spec_image = found.container.image.as_str();
    // The API treats an empty policy as an absent one.
    let written = lookup(pod, &found.container.path)
        .and_then(|entry| entry["imagePullPolicy"].as_str())
        .filter(|text| !text.is_empty());
    let default = lint::default_pull_policy(spec_image);
    let by_tag = || match ImageReference::parse(spec_image) {
        Ok(reference) if reference.tag.is_some() => PolicyWhy::LatestTag,
        _ => PolicyWhy::NoTag,
    };
    let (effective, why, judged_as_written) = match written.map(|t| (t, PullPolicy::parse(t))) {
        None => (
            policy_name(default).to_owned(),
            match default {
                PullPolicy::Always => by_tag(),
                _ => PolicyWhy::DefaultIfNotPresent,
            },
            None,
        ),
        // Defaulting gives this value too: written or defaulted, the tag is
        // why it holds; lint judges it as unwritten (implicit-always).
        Some((text, Some(policy))) if policy == default => (
            text.to_owned(),
            match default {
                PullPolicy::Always => by_tag(),
                _ => PolicyWhy::DefaultIfNotPresent,
            },
            None,
        ),
        Some((text, _)) => (text.to_owned(), PolicyWhy::Explicit, Some(text)),
    };
    let findings = check_container(&workload, &found.container, judged_as_written);
    // The first finding is the one that makes the node pull (always-rules
    // come first in lint's order), else the pinning advice.
    let finding = findings
        .iter()
        .find(|f| matches!(f.rule, Rule::ExplicitAlways | Rule::ImplicitAlways))
        .or_else(|| findings.first());
    Some(PolicyJoin {
        effective,
        why,
        source: PolicySource::PodSpec,
        field: finding.map(|f| dotted(&f.path)),
        owner,
        fix: finding.map(|f| f.fix.clone()),
    })
}

fn policy_name(policy: PullPolicy) -> &'static str {
    match policy {
        PullPolicy::Always => "Always",
        PullPolicy::IfNotPresent => "IfNotPresent",
        PullPolicy::Never => "Never",
    }
}

fn lookup<'a>(value: &'a Value, path: &JsonPath) -> Option<&'a Value> {
    path.0.iter().try_fold(value, |at, segment| match segment {
        Segment::Key(key) => at.get(key),
        Segment::Index(i) => at.get(i),
    })
}

/// `spec.containers[1].imagePullPolicy`: the form `kubectl explain` and
/// `oc patch` users read, rather than lint's JSON Pointer.
pub fn dotted(path: &JsonPath) -> String {
    let mut text = String::new();
    for segment in &path.0 {
        match segment {
            Segment::Key(key) => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(key);
            }
            Segment::Index(i) => text.push_str(&format!("[{i}]")),
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// A DaemonSet's pod as the API server stores it: every policy written
    /// (defaulted at admission).
    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "ovnkube-node-x7k2p",
                "namespace": "openshift-ovn-kubernetes",
                "uid": "6f1d2c3b-aaaa-4bbb-8ccc-123456789abc",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": "worker-0", "uid": "n"},
                    {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ovnkube-node",
                     "uid": "d", "controller": true, "blockOwnerDeletion": true}
                ]
            },
            "spec": {
                "initContainers": [
                    {"name": "setup", "image": format!("quay.io/openshift/tools@{DIGEST}"),
                     "imagePullPolicy": "Always"}
                ],
                "containers": [
                    {"name": "nbdb", "image": "quay.io/openshift/ovn:v4.19",
                     "imagePullPolicy": "IfNotPresent"},
                    {"name": "ovnkube-controller", "image": "quay.io/openshift/ovn-kubernetes:latest",
                     "imagePullPolicy": "Always"},
                    {"name": "sidecar", "image": "quay.io/openshift/sidecar",
                     "imagePullPolicy": "Always"},
                    {"name": "pinned", "image": format!("quay.io/openshift/pinned@{DIGEST}"),
                     "imagePullPolicy": "IfNotPresent"},
                    {"name": "never", "image": "quay.io/openshift/never:latest",
                     "imagePullPolicy": "Never"}
                ]
            }
        })
    }

    fn joined(list: ContainerList, name: &str, image: &str) -> PolicyJoin {
        let owner = controller_of(&pod()).map(|o| o.display());
        join(&pod(), Some((list, name)), image, owner).expect("the container exists")
    }

    #[test]
    fn an_always_that_defaulting_would_not_give_was_written() {
        let join = joined(
            ContainerList::InitContainers,
            "setup",
            &format!("quay.io/openshift/tools@{DIGEST}"),
        );
        assert_eq!(join.effective, "Always");
        assert_eq!(join.why, PolicyWhy::Explicit);
        assert_eq!(join.source, PolicySource::PodSpec);
        assert_eq!(
            join.field.as_deref(),
            Some("spec.initContainers[0].imagePullPolicy")
        );
        assert_eq!(join.owner.as_deref(), Some("DaemonSet/ovnkube-node"));
        assert_eq!(
            join.fix.as_deref(),
            Some("set imagePullPolicy: IfNotPresent (the digest already pins the image)")
        );
    }

    #[test]
    fn a_stored_always_with_latest_or_no_tag_may_be_defaulted() {
        let latest = joined(
            ContainerList::Containers,
            "ovnkube-controller",
            "quay.io/openshift/ovn-kubernetes:latest",
        );
        assert_eq!(latest.effective, "Always");
        assert_eq!(latest.why, PolicyWhy::LatestTag);
        assert_eq!(latest.field.as_deref(), Some("spec.containers[1].image"));
        assert_eq!(
            latest.fix.as_deref(),
            Some(
                "set imagePullPolicy: IfNotPresent and pin the image by digest \
                 (image@sha256:<digest>)"
            )
        );
        // The kubelet names the image with the default tag applied.
        let untagged = joined(
            ContainerList::Containers,
            "sidecar",
            "quay.io/openshift/sidecar:latest",
        );
        assert_eq!(untagged.why, PolicyWhy::NoTag);
        assert_eq!(untagged.field.as_deref(), Some("spec.containers[2].image"));
    }

    #[test]
    fn if_not_present_pulls_say_how_to_pin_or_nothing() {
        let tagged = joined(
            ContainerList::Containers,
            "nbdb",
            "quay.io/openshift/ovn:v4.19",
        );
        assert_eq!(tagged.effective, "IfNotPresent");
        assert_eq!(tagged.why, PolicyWhy::DefaultIfNotPresent);
        assert_eq!(tagged.field.as_deref(), Some("spec.containers[0].image"));
        assert!(
            tagged
                .fix
                .as_deref()
                .unwrap()
                .starts_with("pin the digest: "),
            "{tagged:?}"
        );
        let pinned = joined(
            ContainerList::Containers,
            "pinned",
            &format!("quay.io/openshift/pinned@{DIGEST}"),
        );
        assert_eq!(pinned.effective, "IfNotPresent");
        assert_eq!((pinned.field, pinned.fix), (None, None));
        // Never with a latest tag: written (defaulting would say Always).
        let never = joined(
            ContainerList::Containers,
            "never",
            "quay.io/openshift/never:latest",
        );
        assert_eq!(never.effective, "Never");
        assert_eq!(never.why, PolicyWhy::Explicit);
    }

    #[test]
    fn an_unwritten_policy_is_defaulted_here_as_the_api_would() {
        let pod = json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [
                {"name": "a", "image": "nginx"},
                {"name": "b", "image": "quay.io/t/b:v1", "imagePullPolicy": ""}
            ]}
        });
        let a = join(
            &pod,
            Some((ContainerList::Containers, "a")),
            "nginx:latest",
            None,
        )
        .unwrap();
        assert_eq!((a.effective.as_str(), a.why), ("Always", PolicyWhy::NoTag));
        assert_eq!(a.owner, None);
        let b = join(&pod, None, "quay.io/t/b:v1", None).unwrap();
        assert_eq!(
            (b.effective.as_str(), b.why),
            ("IfNotPresent", PolicyWhy::DefaultIfNotPresent)
        );
        assert_eq!(b.field.as_deref(), Some("spec.containers[1].image"));
    }

    #[test]
    fn containers_are_found_by_list_and_name_or_by_image() {
        let pod = pod();
        // A name in another list is another container.
        assert_eq!(
            join(&pod, Some((ContainerList::Containers, "setup")), "x", None),
            None
        );
        let by_image = join(&pod, None, "quay.io/openshift/sidecar:latest", None).unwrap();
        assert_eq!(by_image.field.as_deref(), Some("spec.containers[2].image"));
        assert_eq!(join(&pod, None, "quay.io/elsewhere/x:1", None), None);
        assert_eq!(join(&json!({"kind": "Pod"}), None, "x", None), None);
    }

    #[test]
    fn controllers_and_paths() {
        assert_eq!(
            controller_of(&pod()),
            Some(Owner {
                kind: "DaemonSet".into(),
                name: "ovnkube-node".into()
            })
        );
        assert_eq!(controller_of(&json!({"metadata": {}})), None);
        assert_eq!(uid_of(&pod()), Some("6f1d2c3b-aaaa-4bbb-8ccc-123456789abc"));
        let path = JsonPath::default()
            .key("spec")
            .key("ephemeralContainers")
            .index(3)
            .key("image");
        assert_eq!(dotted(&path), "spec.ephemeralContainers[3].image");
    }
}
