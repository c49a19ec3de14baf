//! The component: a stable, human name for who is responsible for an
//! attempt. Pure. In order (docs/ATTRIBUTION.md has examples):
//!
//! 1. the first user rule that matches (`component_rules`);
//! 2. a pod's owner, from the labels controllers put on their pods;
//! 3. a pod's well-known name labels (`app.kubernetes.io/name`, `k8s-app`,
//!    `app`, `component`);
//! 4. the pod's name without generated suffixes;
//! 5. `pod/<uid>` when the CRI API never named the pod;
//! 6. `<runtime>/<short id>` for a container outside Kubernetes;
//! 7. the systemd unit without `.service`;
//! 8. the executable's file name, else the comm.

use std::collections::BTreeMap;

use super::{
    CgroupOwner, Pod, ProcessInfo,
    component_rules::{self, ComponentRule, Subject},
};

/// Labels whose value is the application's name, most specific first.
const NAME_LABELS: &[&str] = &["app.kubernetes.io/name", "k8s-app", "app", "component"];

/// The alphabet of Kubernetes' generated name suffixes and pod-template
/// hashes (`rand.String`, `SafeEncodeString`): no vowels, no 0/1/3.
const GENERATED: &str = "bcdfghjklmnpqrstvwxz2456789";

pub fn component(
    rules: &[ComponentRule],
    owner: &CgroupOwner,
    pod: Option<&Pod>,
    process: &ProcessInfo,
) -> String {
    let subject = Subject {
        namespace: pod.and_then(|p| p.namespace.as_deref()),
        pod_name: pod.and_then(|p| p.name.as_deref()),
        labels: pod.map(|p| &p.labels),
        unit: owner.unit.as_deref(),
        exe: process.exe.as_deref(),
    };
    if let Some(named) = component_rules::first_match(rules, &subject) {
        return named.to_string();
    }
    if let Some(pod) = pod {
        return match &pod.name {
            Some(name) => pod_component(name, &pod.labels),
            None => format!("pod/{}", pod.uid),
        };
    }
    if let Some(container) = &owner.container {
        return format!("{}/{}", container.runtime, &container.id[..12]);
    }
    if let Some(unit) = &owner.unit {
        return unit.strip_suffix(".service").unwrap_or(unit).to_string();
    }
    if let Some(exe) = &process.exe {
        let name = exe.rsplit('/').next().unwrap_or(exe);
        // A replaced binary shows as "name (deleted)".
        return name.trim_end_matches(" (deleted)").to_string();
    }
    process.comm.clone()
}

/// The owner's name when the controller's labels tell how the pod name was
/// made, else a name label, else the pod name without generated suffixes.
pub fn pod_component(name: &str, labels: &BTreeMap<String, String>) -> String {
    if let Some((_, owner)) = pod_owner(name, labels) {
        return owner;
    }
    let label = |key: &str| labels.get(key).map(String::as_str);
    if let Some(app) = NAME_LABELS.iter().find_map(|key| label(key))
        && !app.is_empty()
    {
        return app.to_string();
    }
    // No controller labels: strip `-<xxxxx>`, then a `-<hash>` before it.
    match strip_generated_suffix(name) {
        Some(rest) => match rest.rsplit_once('-') {
            Some((base, hash))
                if !base.is_empty() && (8..=10).contains(&hash.len()) && is_generated(hash) =>
            {
                base.to_string()
            }
            _ => rest.to_string(),
        },
        None => name.to_string(),
    }
}

/// The controller whose template holds the pod's spec, as (kind, name),
/// when its labels tell how the pod name was made. A CronJob's Job is
/// named as the CronJob, whose template is the one to change.
pub fn pod_owner(name: &str, labels: &BTreeMap<String, String>) -> Option<(&'static str, String)> {
    let label = |key: &str| labels.get(key).map(String::as_str);
    // Deployment -> ReplicaSet `<deployment>-<hash>` -> pod `<rs>-<xxxxx>`.
    if let Some(hash) = label("pod-template-hash")
        && let Some(rest) = strip_generated_suffix(name)
        && let Some(deployment) = rest.strip_suffix(hash).and_then(|r| r.strip_suffix('-'))
        && !deployment.is_empty()
    {
        return Some(("Deployment", deployment.to_string()));
    }
    // StatefulSet pods are `<set>-<ordinal>`.
    if label("statefulset.kubernetes.io/pod-name") == Some(name)
        && let Some((set, ordinal)) = name.rsplit_once('-')
        && !set.is_empty()
        && !ordinal.is_empty()
        && ordinal.bytes().all(|b| b.is_ascii_digit())
    {
        return Some(("StatefulSet", set.to_string()));
    }
    // DaemonSet pods carry `controller-revision-hash` and
    // `pod-template-generation`, and are `<daemonset>-<xxxxx>`.
    if label("pod-template-generation").is_some()
        && label("controller-revision-hash").is_some()
        && let Some(daemonset) = strip_generated_suffix(name)
    {
        return Some(("DaemonSet", daemonset.to_string()));
    }
    // Job pods name their job; a CronJob's jobs are `<cronjob>-<minutes>`.
    if let Some(job) = label("batch.kubernetes.io/job-name").or(label("job-name")) {
        return Some(match job.rsplit_once('-') {
            Some((cronjob, stamp))
                if !cronjob.is_empty()
                    && stamp.len() >= 8
                    && stamp.bytes().all(|b| b.is_ascii_digit()) =>
            {
                ("CronJob", cronjob.to_string())
            }
            _ => ("Job", job.to_string()),
        });
    }
    None
}

/// `name-x7k2p` -> `name` when the suffix is five generated characters.
fn strip_generated_suffix(name: &str) -> Option<&str> {
    let (base, suffix) = name.rsplit_once('-')?;
    (!base.is_empty() && suffix.len() == 5 && is_generated(suffix)).then_some(base)
}

fn is_generated(text: &str) -> bool {
    text.chars().all(|c| GENERATED.contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::attribute::cgroup_path;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn process(exe: Option<&str>) -> ProcessInfo {
        ProcessInfo {
            pid: 1,
            comm: "skopeo".into(),
            uid: Some(0),
            exe: exe.map(String::from),
            cmdline: None,
            ancestors: vec![],
        }
    }

    #[test]
    fn pod_names_lose_their_generated_parts() {
        let cases = [
            // Deployment: hash label tells exactly what to strip.
            (
                "cluster-version-operator-5c8b9d7f4d-x7k2p",
                labels(&[("pod-template-hash", "5c8b9d7f4d"), ("k8s-app", "cvo")]),
                "cluster-version-operator",
            ),
            // DaemonSet.
            (
                "machine-config-daemon-x7k2p",
                labels(&[
                    ("controller-revision-hash", "6f9c8d7b5"),
                    ("pod-template-generation", "3"),
                    ("k8s-app", "machine-config-daemon"),
                ]),
                "machine-config-daemon",
            ),
            // StatefulSet.
            (
                "alertmanager-main-1",
                labels(&[
                    ("statefulset.kubernetes.io/pod-name", "alertmanager-main-1"),
                    ("controller-revision-hash", "alertmanager-main-5d8f"),
                ]),
                "alertmanager-main",
            ),
            // Job, and a CronJob's job.
            (
                "version-4.16.3-x8d7f-9bq2w",
                labels(&[("job-name", "version-4.16.3-x8d7f")]),
                "version-4.16.3-x8d7f",
            ),
            (
                "collect-profiles-28461230-4xw9z",
                labels(&[("batch.kubernetes.io/job-name", "collect-profiles-28461230")]),
                "collect-profiles",
            ),
            // Name labels when no controller label explains the name.
            (
                "redhat-operators-abcde",
                labels(&[
                    ("olm.catalogSource", "redhat-operators"),
                    ("app", "catalog"),
                ]),
                "catalog",
            ),
            // Nothing but the name.
            (
                "ovnkube-node-pre-puller-5c8b9d7f4d-x7k2p",
                labels(&[]),
                "ovnkube-node-pre-puller",
            ),
            ("image-pruner-x7k2p", labels(&[]), "image-pruner"),
            // Real words are not generated suffixes (vowels), static pods keep
            // their node-name suffix.
            ("etcd-master-0", labels(&[]), "etcd-master-0"),
            ("registry-check", labels(&[]), "registry-check"),
            ("a-b", labels(&[]), "a-b"),
            ("-x7k2p", labels(&[]), "-x7k2p"),
            // A wrong hash label falls through to the heuristics.
            (
                "web-5c8b9d7f4d-x7k2p",
                labels(&[("pod-template-hash", "zzzz")]),
                "web",
            ),
        ];
        for (name, labels, expected) in cases {
            assert_eq!(pod_component(name, &labels), expected, "{name}");
        }
    }

    #[test]
    fn component_order_rules_pod_container_unit_exe_comm() {
        let id = "ab".repeat(32);
        let uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        let in_pod = cgroup_path::parse(&format!("/kubepods/besteffort/pod{uid}/{id}"));
        let unnamed = Pod::uid_only(uid);
        assert_eq!(
            component(&[], &in_pod, Some(&unnamed), &process(None)),
            format!("pod/{uid}")
        );
        let named = Pod {
            namespace: Some("openshift-machine-config-operator".into()),
            name: Some("machine-config-daemon-x7k2p".into()),
            container: Some("machine-config-daemon".into()),
            ..Pod::uid_only(uid)
        };
        assert_eq!(
            component(&[], &in_pod, Some(&named), &process(None)),
            "machine-config-daemon"
        );
        let rules =
            [
                ComponentRule::parse("namespace=openshift-machine-config-operator:machine-config")
                    .unwrap(),
            ];
        assert_eq!(
            component(&rules, &in_pod, Some(&named), &process(None)),
            "machine-config"
        );
        let podman = cgroup_path::parse(&format!("/machine.slice/libpod-{id}.scope"));
        assert_eq!(
            component(&rules, &podman, None, &process(None)),
            "podman/abababababab"
        );
        let unit = cgroup_path::parse("/system.slice/rpm-ostreed.service");
        assert_eq!(component(&[], &unit, None, &process(None)), "rpm-ostreed");
        let unit_rule = [ComponentRule::parse("unit=rpm-ostreed.service:machine-config").unwrap()];
        assert_eq!(
            component(&unit_rule, &unit, None, &process(None)),
            "machine-config"
        );
        let none = CgroupOwner::default();
        assert_eq!(
            component(
                &[],
                &none,
                None,
                &process(Some("/usr/bin/skopeo (deleted)"))
            ),
            "skopeo"
        );
        assert_eq!(component(&[], &none, None, &process(None)), "skopeo");
    }
}
