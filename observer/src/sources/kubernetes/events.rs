//! Reads a kubelet `Pulling` event (core/v1 Event) into what a pull intent
//! needs: the pod, its container, the image and when the pull started.
//!
//! Pure. The kubelet writes these from `pkg/kubelet/images/image_manager.go`
//! (`m.logIt(ref, Normal, events.PullingImage, ..., fmt.Sprintf("Pulling
//! image %q", image))`): reason `Pulling`, source component `kubelet`, source
//! host its node name, and an involved object that is the pod with the
//! container's field path (`spec.containers{name}`) from
//! `kubecontainer.GenerateContainerRef`. Newer kubelets name the image with
//! the default tag applied (`nginx` -> `nginx:latest`).

use std::time::SystemTime;

use k8s_openapi::api::core::v1::Event;
use observer_lint::finding::ContainerList;

use crate::sources::pull_intent::IntentPod;

/// The narrowest selector the API server accepts for core/v1 Events. Its
/// selectable fields (`pkg/registry/core/event/strategy.go`,
/// `EventToSelectableFields`) are `involvedObject.*`, `reason`, `source`
/// (the source's *component*), `type`, `reportingComponent` and the
/// metadata: `source.host` is not selectable, so the node is checked here.
pub const FIELD_SELECTOR: &str = "involvedObject.kind=Pod,reason=Pulling,source=kubelet";

/// A `Pulling` event for this node, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullingEvent {
    pub pod: IntentPod,
    /// From the field path; None for a pod-level reference.
    pub container: Option<(ContainerList, String)>,
    /// As the message names it.
    pub image: String,
    /// The latest occurrence: repeated pulls update the same event.
    pub at: SystemTime,
    /// Which occurrence this is, so a relist (or a bookmark-less restart)
    /// does not count it twice.
    pub occurrence: Occurrence,
}

/// One occurrence of an event: the event object and its repeat count.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Occurrence {
    /// `metadata.uid`, else `namespace/name`.
    pub event: String,
    /// `series.count`, else `count`, else 1.
    pub count: i32,
}

/// Why an event gave no intent; each is counted in the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ignored {
    /// Not `reason: Pulling` (the server ignored the selector, or a proxy
    /// in between did).
    NotPulling,
    /// Not reported by a kubelet.
    NotKubelet,
    /// Another node's kubelet.
    OtherNode,
    /// About something other than a pod, or a pod without name/namespace.
    NotPod,
    /// The message is not `Pulling image "..."`.
    UnreadableMessage,
    /// No time at all.
    NoTime,
    /// It happened before the window the run cares about.
    Stale,
    /// This occurrence already gave an intent (a relist delivers every
    /// event again); counted by the source, which remembers occurrences.
    AlreadySeen,
}

impl Ignored {
    pub fn name(self) -> &'static str {
        match self {
            Ignored::NotPulling => "not_pulling",
            Ignored::NotKubelet => "not_kubelet",
            Ignored::OtherNode => "other_node",
            Ignored::NotPod => "not_pod",
            Ignored::UnreadableMessage => "unreadable_message",
            Ignored::NoTime => "no_time",
            Ignored::Stale => "stale",
            Ignored::AlreadySeen => "already_seen",
        }
    }
}

/// Reads `event` if it is the kubelet of `node` starting a pull at or after
/// `not_before`.
pub fn read_pulling(
    event: &Event,
    node: &str,
    not_before: Option<SystemTime>,
) -> Result<PullingEvent, Ignored> {
    if event.reason.as_deref() != Some("Pulling") {
        return Err(Ignored::NotPulling);
    }
    let source = event.source.as_ref();
    let component = source
        .and_then(|s| s.component.as_deref())
        .or(event.reporting_component.as_deref());
    if component != Some("kubelet") {
        return Err(Ignored::NotKubelet);
    }
    // The kubelet's node name is the lowercased hostname unless overridden;
    // `reportingInstance` carries it on events written by the newer API.
    let host = source
        .and_then(|s| s.host.as_deref())
        .or(event.reporting_instance.as_deref());
    if !host.is_some_and(|host| host.eq_ignore_ascii_case(node)) {
        return Err(Ignored::OtherNode);
    }
    let object = &event.involved_object;
    let (Some("Pod"), Some(namespace), Some(name)) = (
        object.kind.as_deref(),
        object.namespace.as_deref().filter(|s| !s.is_empty()),
        object.name.as_deref().filter(|s| !s.is_empty()),
    ) else {
        return Err(Ignored::NotPod);
    };
    let image = event
        .message
        .as_deref()
        .and_then(image_of_message)
        .ok_or(Ignored::UnreadableMessage)?;
    let at = occurrence_time(event).ok_or(Ignored::NoTime)?;
    if not_before.is_some_and(|limit| at < limit) {
        return Err(Ignored::Stale);
    }
    let metadata = &event.metadata;
    let event_id = metadata
        .uid
        .clone()
        .filter(|uid| !uid.is_empty())
        .unwrap_or_else(|| {
            format!(
                "{}/{}",
                metadata.namespace.as_deref().unwrap_or(""),
                metadata.name.as_deref().unwrap_or("")
            )
        });
    let count = event
        .series
        .as_ref()
        .and_then(|s| s.count)
        .or(event.count)
        .unwrap_or(1);
    Ok(PullingEvent {
        pod: IntentPod {
            uid: object.uid.clone().filter(|uid| !uid.is_empty()),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        },
        container: object
            .field_path
            .as_deref()
            .and_then(container_of_field_path),
        image,
        at,
        occurrence: Occurrence {
            event: event_id,
            count,
        },
    })
}

/// `spec.containers{name}`, `spec.initContainers{name}` or
/// `spec.ephemeralContainers{name}`, as `GenerateContainerRef` writes them.
pub fn container_of_field_path(path: &str) -> Option<(ContainerList, String)> {
    let (list, rest) = path.strip_prefix("spec.")?.split_once('{')?;
    let name = rest.strip_suffix('}')?;
    if name.is_empty() {
        return None;
    }
    let list = ContainerList::ALL.into_iter().find(|l| l.field() == list)?;
    Some((list, name.to_owned()))
}

/// The image of `Pulling image "quay.io/x:latest"`. Go's `%q` escapes `"`
/// and `\`; references cannot hold other characters it would escape, so any
/// other escape makes the message unreadable rather than guessed at.
pub fn image_of_message(message: &str) -> Option<String> {
    let quoted = message
        .strip_prefix("Pulling image \"")?
        .strip_suffix('"')?;
    let mut image = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                escaped @ ('"' | '\\') => image.push(escaped),
                _ => return None,
            },
            '"' => return None,
            other => image.push(other),
        }
    }
    (!image.is_empty()).then_some(image)
}

/// The latest occurrence the event records: a series' last observation
/// (events.k8s.io-style writers), the legacy `lastTimestamp` (bumped with
/// `count` when the kubelet pulls again), else the single `eventTime` or
/// `firstTimestamp`.
fn occurrence_time(event: &Event) -> Option<SystemTime> {
    event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| t.0)
        .or(event.last_timestamp.as_ref().map(|t| t.0))
        .or(event.event_time.as_ref().map(|t| t.0))
        .or(event.first_timestamp.as_ref().map(|t| t.0))
        .map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    /// A legacy kubelet event as `kubectl get events -o json` shows one.
    fn kubelet_event() -> serde_json::Value {
        json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": "ovnkube-node-x7k2p.1879a3c1d2e3f4a5",
                "namespace": "openshift-ovn-kubernetes",
                "uid": "0b6c1f3e-5d1a-4c9e-9f57-0d1e2f3a4b5c",
                "resourceVersion": "48213"
            },
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": "ovnkube-node-x7k2p",
                "namespace": "openshift-ovn-kubernetes",
                "uid": "6f1d2c3b-aaaa-4bbb-8ccc-123456789abc",
                "fieldPath": "spec.containers{ovnkube-controller}",
                "resourceVersion": "48200"
            },
            "reason": "Pulling",
            "message": "Pulling image \"quay.io/openshift/ovn-kubernetes:latest\"",
            "source": {"component": "kubelet", "host": "worker-0"},
            "firstTimestamp": "2026-11-20T10:00:00Z",
            "lastTimestamp": "2026-11-20T10:00:00Z",
            "count": 1,
            "type": "Normal",
            "eventTime": null,
            "reportingComponent": "kubelet",
            "reportingInstance": "worker-0"
        })
    }

    fn event(value: serde_json::Value) -> Event {
        serde_json::from_value(value).expect("a valid Event")
    }

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).unwrap()
    }

    #[test]
    fn reads_a_kubelet_pulling_event() {
        let read = read_pulling(&event(kubelet_event()), "worker-0", None).unwrap();
        assert_eq!(
            read,
            PullingEvent {
                pod: IntentPod {
                    uid: Some("6f1d2c3b-aaaa-4bbb-8ccc-123456789abc".into()),
                    namespace: "openshift-ovn-kubernetes".into(),
                    name: "ovnkube-node-x7k2p".into(),
                },
                container: Some((ContainerList::Containers, "ovnkube-controller".into())),
                image: "quay.io/openshift/ovn-kubernetes:latest".into(),
                at: at("2026-11-20T10:00:00Z"),
                occurrence: Occurrence {
                    event: "0b6c1f3e-5d1a-4c9e-9f57-0d1e2f3a4b5c".into(),
                    count: 1
                },
            }
        );
        // Node names compare like DNS names.
        assert!(read_pulling(&event(kubelet_event()), "Worker-0", None).is_ok());
    }

    #[test]
    fn a_repeated_pull_is_a_new_occurrence_at_its_last_time() {
        let mut legacy = kubelet_event();
        legacy["count"] = json!(3);
        legacy["lastTimestamp"] = json!("2026-11-20T10:05:00Z");
        let read = read_pulling(&event(legacy), "worker-0", None).unwrap();
        assert_eq!(read.occurrence.count, 3);
        assert_eq!(read.at, at("2026-11-20T10:05:00Z"));

        // events.k8s.io-style writers: eventTime, then a series.
        let mut series = kubelet_event();
        for field in ["firstTimestamp", "lastTimestamp", "count"] {
            series.as_object_mut().unwrap().remove(field);
        }
        series["eventTime"] = json!("2026-11-20T10:00:00.250000Z");
        let first = read_pulling(&event(series.clone()), "worker-0", None).unwrap();
        assert_eq!(first.at, at("2026-11-20T10:00:00.25Z"));
        assert_eq!(first.occurrence.count, 1);
        series["series"] = json!({"count": 2, "lastObservedTime": "2026-11-20T10:07:00.500000Z"});
        let second = read_pulling(&event(series), "worker-0", None).unwrap();
        assert_eq!(second.at, at("2026-11-20T10:07:00.5Z"));
        assert_eq!(second.occurrence.count, 2);
    }

    #[test]
    fn ignores_what_is_not_this_nodes_kubelet_pulling_a_pods_image() {
        let with = |field: &str, value: serde_json::Value| {
            let mut e = kubelet_event();
            e[field] = value;
            read_pulling(&event(e), "worker-0", None).unwrap_err()
        };
        assert_eq!(with("reason", json!("Pulled")), Ignored::NotPulling);
        assert_eq!(
            with(
                "source",
                json!({"component": "kubelet", "host": "worker-1"})
            ),
            Ignored::OtherNode
        );
        assert_eq!(
            with("source", json!({"component": "default-scheduler"})),
            Ignored::NotKubelet
        );
        assert_eq!(
            with(
                "involvedObject",
                json!({"kind": "Node", "name": "worker-0", "uid": "worker-0"})
            ),
            Ignored::NotPod
        );
        assert_eq!(
            with("message", json!("Pulling image quay.io/x")),
            Ignored::UnreadableMessage
        );
        let mut timeless = kubelet_event();
        for field in ["firstTimestamp", "lastTimestamp"] {
            timeless.as_object_mut().unwrap().remove(field);
        }
        assert_eq!(
            read_pulling(&event(timeless), "worker-0", None).unwrap_err(),
            Ignored::NoTime
        );
        let limit = at("2026-11-20T10:00:00Z") + Duration::from_secs(1);
        assert_eq!(
            read_pulling(&event(kubelet_event()), "worker-0", Some(limit)).unwrap_err(),
            Ignored::Stale
        );
    }

    #[test]
    fn field_paths_name_every_container_list() {
        assert_eq!(
            container_of_field_path("spec.initContainers{setup}"),
            Some((ContainerList::InitContainers, "setup".into()))
        );
        assert_eq!(
            container_of_field_path("spec.ephemeralContainers{debugger-7x}"),
            Some((ContainerList::EphemeralContainers, "debugger-7x".into()))
        );
        for odd in [
            "",
            "spec.containers",
            "spec.containers{}",
            "spec.volumes{data}",
            "status.containers{a}",
            "spec.containers{a",
        ] {
            assert_eq!(container_of_field_path(odd), None, "{odd:?}");
        }
    }

    #[test]
    fn images_come_out_of_gos_quoting() {
        assert_eq!(
            image_of_message("Pulling image \"nginx:latest\"").as_deref(),
            Some("nginx:latest")
        );
        assert_eq!(
            image_of_message(r#"Pulling image "a\\b\"c""#).as_deref(),
            Some(r#"a\b"c"#)
        );
        for odd in [
            "Pulling image \"\"",
            "Pulling image \"a\\u00e9\"",
            "Pulling image \"a\" extra",
            "Pulling image \"a\"b\"",
            "pulling image \"a\"",
            "Successfully pulled image \"a\" in 1s",
        ] {
            assert_eq!(image_of_message(odd), None, "{odd:?}");
        }
    }
}
