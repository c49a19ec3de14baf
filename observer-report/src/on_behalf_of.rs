//! Whom a container runtime's or an image tool's attempt was made for
//! (`attempts[].on_behalf_of`), and the pull policy behind a kubelet pull.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBehalfOfKind {
    Pod,
    Unit,
    Process,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    High,
    Medium,
    Low,
}

/// How we know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Clue {
    /// The CRI listed a new container of the pod with an image from this
    /// registry, created within the window after the contact.
    CriContainerCreated,
    /// The kubelet's `Pulling` event for the pod, within the window before.
    KubeletPulling,
    /// The image was not on the node before the contact and was after it.
    ImagePulled,
    /// The image was on the node before the contact: a re-check.
    ImagePresentBefore,
    /// The contacted host is a registries.conf mirror of the image's
    /// registry.
    Mirror,
    /// The process ancestry (`ancestry` holds the chain).
    Ancestry,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnBehalfOfPod {
    pub uid: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub container: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnBehalfOfProcess {
    pub pid: u32,
    pub comm: String,
    pub exe: Option<String>,
}

/// Who the attempt was made for, and how we know.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnBehalfOf {
    pub kind: OnBehalfOfKind,
    pub pod: Option<OnBehalfOfPod>,
    pub unit: Option<String>,
    pub process: Option<OnBehalfOfProcess>,
    /// The image the pod needed, as its spec (or the runtime) names it.
    pub image: Option<String>,
    pub evidence: Vec<Clue>,
    /// For tools: the process chain, `skopeo <- sh <- machine-config-daemon`.
    pub ancestry: Option<String>,
    pub confidence: Confidence,
    /// Pods equally likely to have caused a runtime's contact (the chosen
    /// one included); 1 for a single candidate and for tools.
    pub candidates: u32,
    /// The pull policy that made the kubelet pull, why, and what to change.
    pub policy: Option<PolicyJoin>,
    /// One sentence for humans.
    pub explanation: String,
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
