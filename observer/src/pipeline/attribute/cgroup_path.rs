//! What a cgroup2 path says about who runs in it: a systemd unit, a
//! container (runtime + id), a Kubernetes pod uid. Pure string parsing.
//!
//! Shapes (shared/DOMAIN.md):
//! - CRI-O, systemd driver: `/kubepods.slice/kubepods-<qos>.slice/
//!   kubepods-<qos>-pod<uid_with_underscores>.slice/crio-<id>.scope`, maybe
//!   with crun's nested `container` subgroup below it;
//! - containerd, systemd driver: `.../cri-containerd-<id>.scope`;
//!   cgroupfs driver: `/kubepods/<qos>/pod<uid>/<id>`;
//! - podman: `/machine.slice/libpod-<id>.scope`, `/libpod_parent/libpod-<id>`;
//! - docker: `/system.slice/docker-<id>.scope`, cgroupfs `/docker/<id>`;
//! - host services: `/system.slice/<unit>.service`, `.scope` units, user
//!   sessions under `/user.slice/...`; nested systemd (systemd-nspawn
//!   payloads) repeats the same shapes deeper in the tree.

use observer_report::process::Container;
use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CgroupOwner {
    /// Innermost systemd unit that is not a container's scope.
    pub unit: Option<String>,
    pub container: Option<Container>,
    /// Kubernetes pod uid, dashed form.
    pub pod_uid: Option<String>,
}

pub fn parse(path: &str) -> CgroupOwner {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut owner = CgroupOwner::default();
    let mut in_kubepods = false;
    for (index, segment) in segments.iter().enumerate() {
        if *segment == "kubepods" || segment.starts_with("kubepods.slice") {
            in_kubepods = true;
        }
        if let Some(uid) = pod_uid(segment, in_kubepods) {
            owner.pod_uid = Some(uid);
            continue;
        }
        let parent = index.checked_sub(1).map(|i| segments[i]);
        if let Some(container) = container(segment, parent, owner.pod_uid.is_some()) {
            owner.container = Some(container);
            continue;
        }
        if owner.container.is_none() && is_unit(segment) {
            owner.unit = Some(segment.to_string());
        }
    }
    // A container's own scope is not the unit of interest, but a unit deeper
    // than the container (systemd inside a container) is.
    owner
}

/// `kubepods-besteffort-pod<uid>.slice`, `kubepods-pod<uid>.slice`
/// (guaranteed QoS) or cgroupfs `pod<uid>` below `kubepods`.
fn pod_uid(segment: &str, in_kubepods: bool) -> Option<String> {
    let raw = if let Some(slice) = segment.strip_suffix(".slice") {
        let (_, after) = slice.rsplit_once("-pod")?;
        if !slice.starts_with("kubepods") {
            return None;
        }
        after.replace('_', "-")
    } else if in_kubepods {
        segment.strip_prefix("pod")?.to_string()
    } else {
        return None;
    };
    is_uid(&raw).then_some(raw)
}

fn is_uid(text: &str) -> bool {
    text.len() == 36
        && text.chars().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_container_id(text: &str) -> bool {
    text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit())
}

fn container(segment: &str, parent: Option<&str>, in_pod: bool) -> Option<Container> {
    let scope = segment.strip_suffix(".scope").unwrap_or(segment);
    // Longer prefixes first: `crio-conmon-` before `crio-`.
    const PREFIXES: &[(&str, &str, bool)] = &[
        ("crio-conmon-", "cri-o", true),
        ("crio-", "cri-o", false),
        ("cri-containerd-", "containerd", false),
        ("libpod-conmon-", "podman", true),
        ("libpod-", "podman", false),
        ("docker-", "docker", false),
    ];
    for (prefix, runtime, monitor) in PREFIXES {
        if let Some(id) = scope.strip_prefix(prefix)
            && is_container_id(id)
        {
            return Some(Container {
                runtime: (*runtime).to_string(),
                id: id.to_string(),
                monitor: *monitor,
            });
        }
    }
    if is_container_id(segment) {
        // Bare ids: cgroupfs layouts. CRI-O always prefixes `crio-`, so a bare
        // id in a pod is containerd's; under /docker it is docker's.
        let runtime = if in_pod {
            "containerd"
        } else if parent == Some("docker") {
            "docker"
        } else {
            return None;
        };
        return Some(Container {
            runtime: runtime.to_string(),
            id: segment.to_string(),
            monitor: false,
        });
    }
    None
}

fn is_unit(segment: &str) -> bool {
    [".service", ".scope", ".socket", ".mount", ".swap", ".timer"]
        .iter()
        .any(|suffix| segment.len() > suffix.len() && segment.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn owner(
        unit: Option<&str>,
        container: Option<(&str, bool)>,
        pod: Option<&str>,
    ) -> CgroupOwner {
        CgroupOwner {
            unit: unit.map(String::from),
            container: container.map(|(runtime, monitor)| Container {
                runtime: runtime.into(),
                id: ID.into(),
                monitor,
            }),
            pod_uid: pod.map(String::from),
        }
    }

    #[test]
    fn real_path_shapes() {
        let uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        let uid_ = uid.replace('-', "_");
        let cases: Vec<(String, CgroupOwner)> = vec![
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/crio-{ID}.scope"
                ),
                owner(None, Some(("cri-o", false)), Some(uid)),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/crio-{ID}.scope/container"
                ),
                owner(None, Some(("cri-o", false)), Some(uid)),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{uid_}.slice/crio-conmon-{ID}.scope"),
                owner(None, Some(("cri-o", true)), Some(uid)),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/cri-containerd-{ID}.scope"
                ),
                owner(None, Some(("containerd", false)), Some(uid)),
            ),
            (
                format!("/kubepods/besteffort/pod{uid}/{ID}"),
                owner(None, Some(("containerd", false)), Some(uid)),
            ),
            (
                format!("/kubepods/burstable/pod{uid}/crio-{ID}"),
                owner(None, Some(("cri-o", false)), Some(uid)),
            ),
            (
                format!("/kubepods/besteffort/pod{uid}"),
                owner(None, None, Some(uid)),
            ),
            (
                format!("/machine.slice/libpod-{ID}.scope"),
                owner(None, Some(("podman", false)), None),
            ),
            (
                format!("/libpod_parent/libpod-{ID}"),
                owner(None, Some(("podman", false)), None),
            ),
            (
                format!("/machine.slice/libpod-conmon-{ID}.scope"),
                owner(None, Some(("podman", true)), None),
            ),
            (
                format!("/system.slice/docker-{ID}.scope"),
                owner(None, Some(("docker", false)), None),
            ),
            (
                format!("/docker/{ID}"),
                owner(None, Some(("docker", false)), None),
            ),
            (
                "/system.slice/crio.service".into(),
                owner(Some("crio.service"), None, None),
            ),
            (
                "/system.slice/rpm-ostreed.service".into(),
                owner(Some("rpm-ostreed.service"), None, None),
            ),
            (
                "/user.slice/user-1000.slice/session-3.scope".into(),
                owner(Some("session-3.scope"), None, None),
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/podman.service".into(),
                owner(Some("podman.service"), None, None),
            ),
            (
                "/payload/system.slice/kubelet.service".into(),
                owner(Some("kubelet.service"), None, None),
            ),
            ("/".into(), owner(None, None, None)),
            ("/ro-test-12-1".into(), owner(None, None, None)),
        ];
        for (path, expected) in cases {
            assert_eq!(parse(&path), expected, "{path}");
        }
    }

    #[test]
    fn look_alikes_are_not_containers_or_pods() {
        assert_eq!(parse("/system.slice/crio-short.scope").container, None);
        assert_eq!(parse(&format!("/somewhere/{ID}")).container, None);
        assert_eq!(parse("/kubepods/besteffort/podnot-a-uid").pod_uid, None);
        assert_eq!(parse("/system.slice/mypod1234.slice").pod_uid, None);
        assert_eq!(parse("/system.slice/.service").unit, None);
    }
}
