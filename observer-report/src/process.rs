//! Who made an attempt: the process, its cgroup, its container and pod.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub comm: String,
    pub uid: Option<u32>,
    /// None when the process was gone before /proc could be read.
    pub exe: Option<String>,
    pub cmdline: Option<Vec<String>>,
    /// Parent first, up to pid 1.
    pub ancestors: Vec<Ancestor>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    pub pid: u32,
    pub comm: String,
    pub exe: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupRef {
    pub id: u64,
    /// Relative to the cgroup2 root; None when the cgroup was already gone.
    pub path: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// `cri-o`, `containerd`, `podman` or `docker`.
    pub runtime: String,
    /// Full 64-hex container id.
    pub id: String,
    /// True for the runtime's monitor (conmon) rather than the container.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub monitor: bool,
}

/// What attribution learns about the pod of a process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    pub uid: String,
    /// Null until the CRI API named the pod (see `observer.cri` in the
    /// report for why it may not have).
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The container's name in the pod spec; null for the sandbox itself or
    /// when only the pod is known.
    pub container: Option<String>,
    /// Reports before the CRI stage lack labels: empty.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Pod {
    /// A pod known only by the uid in its cgroup path.
    pub fn uid_only(uid: &str) -> Pod {
        Pod {
            uid: uid.to_string(),
            namespace: None,
            name: None,
            container: None,
            labels: BTreeMap::new(),
        }
    }

    pub fn is_named(&self) -> bool {
        self.name.is_some()
    }
}
