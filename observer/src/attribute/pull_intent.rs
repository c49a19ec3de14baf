//! Pull intents: signs that a pod on this node needs an image at a given
//! time. A container runtime's registry contact is true but useless to the
//! user ("containerd did it"); intents are what lets a later stage say which
//! pod it was done for (`on_behalf_of`).
//!
//! Sources push intents through an [`IntentSink`]; the correlating stage
//! drains the [`IntentFeed`]. Two sources exist:
//! - the CRI watcher: a container that appeared in a listing, with its image
//!   and creation time (the kubelet pulls just before CreateContainer);
//! - the Kubernetes API: the kubelet's `Pulling` events for this node, joined
//!   to the pod's stored spec (its effective pull policy and why).
//!
//! The channel is bounded: a burst beyond it is counted in `dropped`, never
//! lost silently and never blocking a source.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// The pod an intent is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IntentPod {
    /// None when the source does not say (an event names the pod by
    /// namespace and name; its `involvedObject.uid` may be empty).
    pub uid: Option<String>,
    pub namespace: String,
    pub name: String,
}

/// Which source said it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentSignal {
    /// The CRI listed a new container of the pod using the image; `at` is the
    /// container's creation time, so the pull came shortly before it.
    CriContainerCreated,
    /// The kubelet's `Pulling` event for the pod's container; `at` is when
    /// the kubelet started the pull.
    KubeletPulling,
}

/// Why a pull policy is in effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyWhy {
    /// `imagePullPolicy` is written in the spec.
    Explicit,
    /// No policy written and the tag is `latest`: Kubernetes defaulted it to
    /// Always. (A live pod stores the defaulted value, so a stored `Always`
    /// with a `latest` tag says "maybe defaulted"; see `PolicySource`.)
    LatestTag,
    /// No policy written and neither tag nor digest: parsed as `latest`.
    NoTag,
    /// No policy written, any other reference: IfNotPresent.
    DefaultIfNotPresent,
}

/// Where the policy was learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicySource {
    /// The pod's spec as the API server stores it (after defaulting).
    PodSpec,
    /// Inferred from the image reference alone (no spec available): what
    /// Kubernetes would default to if the spec sets no policy.
    ImageReference,
}

/// The pod spec behind a pull: which policy made the kubelet pull, why, and
/// the field to change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyJoin {
    /// `Always`, `IfNotPresent` or `Never`, as Kubernetes writes it.
    pub effective: String,
    pub why: PolicyWhy,
    pub source: PolicySource,
    /// JSON path of the field to change in the pod spec, e.g.
    /// `spec.containers[1].imagePullPolicy` or `spec.initContainers[0].image`.
    pub field: Option<String>,
    /// The pod's controller (`DaemonSet/ovnkube-node`), whose template holds
    /// the line to change; None for a bare pod or when unknown.
    pub owner: Option<String>,
    /// One sentence: what to change.
    pub fix: Option<String>,
}

/// One sign that `pod` needs `image` around `at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullIntent {
    pub pod: IntentPod,
    /// The container's name in the pod spec, when the source says.
    pub container: Option<String>,
    /// The image as the spec (or the runtime) names it.
    pub image: String,
    pub at: SystemTime,
    pub signal: IntentSignal,
    /// Known when the source read the pod spec (the Kubernetes API).
    pub policy: Option<PolicyJoin>,
}

/// Intents queued before the correlating stage drains them; a kubelet
/// starting a node's pods makes a few hundred at most.
pub const INTENT_QUEUE: usize = 4096;

/// The sending side, cloned into each source. Never blocks.
#[derive(Clone)]
pub struct IntentSink {
    sender: mpsc::Sender<PullIntent>,
    dropped: Arc<AtomicU64>,
}

impl IntentSink {
    /// Queues `intent`; a full queue (or a stopped receiver) counts it as
    /// dropped instead of blocking the source.
    pub fn send(&self, intent: PullIntent) {
        if self.sender.try_send(intent).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The receiving side, held by the correlating stage.
pub struct IntentFeed {
    receiver: mpsc::Receiver<PullIntent>,
    dropped: Arc<AtomicU64>,
}

impl IntentFeed {
    /// Everything queued now, without waiting.
    pub fn drain(&mut self) -> Vec<PullIntent> {
        let mut intents = Vec::new();
        while let Ok(intent) = self.receiver.try_recv() {
            intents.push(intent);
        }
        intents
    }

    /// Intents that did not fit in the queue, for the report.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

pub fn intent_channel(capacity: usize) -> (IntentSink, IntentFeed) {
    let (sender, receiver) = mpsc::channel(capacity);
    let dropped = Arc::new(AtomicU64::new(0));
    (
        IntentSink {
            sender,
            dropped: Arc::clone(&dropped),
        },
        IntentFeed { receiver, dropped },
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn intent(name: &str) -> PullIntent {
        PullIntent {
            pod: IntentPod {
                uid: None,
                namespace: "ns".into(),
                name: name.into(),
            },
            container: Some("c".into()),
            image: "quay.io/a/b:latest".into(),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1),
            signal: IntentSignal::KubeletPulling,
            policy: None,
        }
    }

    #[test]
    fn a_full_queue_counts_what_it_drops_and_keeps_the_rest() {
        let (sink, mut feed) = intent_channel(2);
        for name in ["a", "b", "c"] {
            sink.send(intent(name));
        }
        let names: Vec<String> = feed.drain().into_iter().map(|i| i.pod.name).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(feed.dropped(), 1);
        assert!(feed.drain().is_empty());
    }
}
