//! Which pod a container belongs to, as the CRI API last told us, plus
//! tombstones for pods and containers that are gone. Pure: the CRI client
//! (`cri.rs`) feeds listings in, attribution reads a published snapshot.
//!
//! Tombstones matter because the pods that contact registries during an
//! upgrade are often short-lived (`version-*`, bundle unpack jobs, a
//! `skopeo` run): an attempt seen while such a pod lived must still resolve
//! to its name when the report is written after the pod was removed.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant, SystemTime},
};

use observer_report::process::Pod;

/// How long a removed pod or container stays resolvable.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(600);
/// Bounds memory under churn: the oldest tombstones go first.
pub const MAX_TOMBSTONES: usize = 4096;

/// A pod sandbox as the CRI reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEntry {
    /// The sandbox id (also the id of the sandbox's own cgroup).
    pub sandbox_id: String,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// A container as the CRI reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerEntry {
    pub id: String,
    pub sandbox_id: String,
    /// The container's name in the pod spec.
    pub name: String,
    /// The image as the kubelet asked for it: ListContainers' `image`
    /// (containerd 1.6 answers the name as requested, e.g.
    /// `quay.io/t/app:latest`; a runtime may answer an image id instead,
    /// which `images::requested_image` maps back to a name).
    pub image: String,
    /// The image id (`image_ref`; containerd: `sha256:<config digest>`).
    pub image_id: String,
    /// When the runtime created it; None when it did not say.
    pub created_at: Option<SystemTime>,
}

/// An image as ListImages reports it: its id and every name it has.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageEntry {
    pub id: String,
    /// `quay.io/t/app:latest`: fully qualified as the runtime stores them.
    pub repo_tags: Vec<String>,
    /// `quay.io/t/app@sha256:...`.
    pub repo_digests: Vec<String>,
}

/// One complete listing from one runtime.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub pods: Vec<PodEntry>,
    pub containers: Vec<ContainerEntry>,
    pub images: Vec<ImageEntry>,
}

#[derive(Clone, Debug)]
struct Kept<T> {
    entry: T,
    /// When the entry disappeared from the listing; None while it is live.
    gone_at: Option<Instant>,
}

/// Pods and containers by id, live and tombstoned.
#[derive(Clone, Debug)]
pub struct PodDirectory {
    pods: HashMap<String, Kept<PodEntry>>,
    uid_to_sandbox: HashMap<String, String>,
    containers: HashMap<String, Kept<ContainerEntry>>,
    max_tombstones: usize,
}

impl Default for PodDirectory {
    fn default() -> PodDirectory {
        PodDirectory::with_max_tombstones(MAX_TOMBSTONES)
    }
}

impl PodDirectory {
    pub fn with_max_tombstones(max_tombstones: usize) -> PodDirectory {
        PodDirectory {
            pods: HashMap::new(),
            uid_to_sandbox: HashMap::new(),
            containers: HashMap::new(),
            max_tombstones,
        }
    }

    /// Replaces the live set with `listing` (from every runtime merged):
    /// entries no longer listed become tombstones; tombstones older than
    /// [`TOMBSTONE_TTL`], or beyond [`MAX_TOMBSTONES`], are dropped.
    /// Returns the uids of the pods this listing no longer holds.
    pub fn apply(&mut self, listing: Listing, now: Instant) -> Vec<String> {
        let live_pods: HashMap<String, PodEntry> = listing
            .pods
            .into_iter()
            .map(|p| (p.sandbox_id.clone(), p))
            .collect();
        let live_containers: HashMap<String, ContainerEntry> = listing
            .containers
            .into_iter()
            .map(|c| (c.id.clone(), c))
            .collect();
        let departed: Vec<String> = self
            .pods
            .iter()
            .filter(|(id, kept)| kept.gone_at.is_none() && !live_pods.contains_key(*id))
            .map(|(_, kept)| kept.entry.uid.clone())
            .collect();
        bury_missing(&mut self.pods, &live_pods, now);
        bury_missing(&mut self.containers, &live_containers, now);
        for (id, entry) in live_pods {
            self.uid_to_sandbox
                .insert(entry.uid.clone(), entry.sandbox_id.clone());
            self.pods.insert(
                id,
                Kept {
                    entry,
                    gone_at: None,
                },
            );
        }
        for (id, entry) in live_containers {
            self.containers.insert(
                id,
                Kept {
                    entry,
                    gone_at: None,
                },
            );
        }
        expire(&mut self.pods, now, self.max_tombstones);
        expire(&mut self.containers, now, self.max_tombstones);
        let pods = &self.pods;
        self.uid_to_sandbox
            .retain(|_, sandbox| pods.contains_key(sandbox));
        departed
    }

    /// The pod a cgroup belongs to: by container id (a container, or the
    /// sandbox's own cgroup), else by the pod uid in the cgroup path.
    pub fn resolve(&self, pod_uid: Option<&str>, container_id: Option<&str>) -> Option<Pod> {
        if let Some(id) = container_id {
            if let Some(container) = self.containers.get(id)
                && let Some(pod) = self.pods.get(&container.entry.sandbox_id)
            {
                return Some(named(&pod.entry, Some(&container.entry.name)));
            }
            if let Some(pod) = self.pods.get(id) {
                return Some(named(&pod.entry, None));
            }
        }
        let sandbox = self.uid_to_sandbox.get(pod_uid?)?;
        self.pods.get(sandbox).map(|pod| named(&pod.entry, None))
    }

    /// Whether a container was in any listing so far (live or tombstoned):
    /// the CRI watcher reports each container once, when it first appears.
    pub fn knows_container(&self, id: &str) -> bool {
        self.containers.contains_key(id)
    }

    pub fn live_pods(&self) -> usize {
        self.pods.values().filter(|p| p.gone_at.is_none()).count()
    }

    pub fn tombstones(&self) -> usize {
        self.pods.values().filter(|p| p.gone_at.is_some()).count()
            + self
                .containers
                .values()
                .filter(|c| c.gone_at.is_some())
                .count()
    }
}

fn named(pod: &PodEntry, container: Option<&str>) -> Pod {
    Pod {
        uid: pod.uid.clone(),
        namespace: Some(pod.namespace.clone()),
        name: Some(pod.name.clone()),
        container: container.map(String::from),
        labels: pod.labels.clone(),
    }
}

fn bury_missing<T, U>(
    kept: &mut HashMap<String, Kept<T>>,
    live: &HashMap<String, U>,
    now: Instant,
) {
    for (id, entry) in kept.iter_mut() {
        if entry.gone_at.is_none() && !live.contains_key(id) {
            entry.gone_at = Some(now);
        }
    }
}

fn expire<T>(kept: &mut HashMap<String, Kept<T>>, now: Instant, max_tombstones: usize) {
    kept.retain(|_, e| {
        e.gone_at
            .is_none_or(|gone| now.saturating_duration_since(gone) < TOMBSTONE_TTL)
    });
    let buried = kept.values().filter(|e| e.gone_at.is_some()).count();
    if buried > max_tombstones {
        let mut by_age: Vec<(Instant, String)> = kept
            .iter()
            .filter_map(|(id, e)| e.gone_at.map(|gone| (gone, id.clone())))
            .collect();
        by_age.sort();
        for (_, id) in by_age.into_iter().take(buried - max_tombstones) {
            kept.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

    fn pod(sandbox: &str, uid: &str, name: &str) -> PodEntry {
        PodEntry {
            sandbox_id: sandbox.into(),
            uid: uid.into(),
            namespace: "openshift-machine-config-operator".into(),
            name: name.into(),
            labels: BTreeMap::from([("k8s-app".into(), "machine-config-daemon".into())]),
        }
    }

    fn container(id: &str, sandbox: &str, name: &str) -> ContainerEntry {
        ContainerEntry {
            id: id.into(),
            sandbox_id: sandbox.into(),
            name: name.into(),
            ..ContainerEntry::default()
        }
    }

    fn listing(pods: Vec<PodEntry>, containers: Vec<ContainerEntry>) -> Listing {
        Listing {
            pods,
            containers,
            images: vec![],
        }
    }

    #[test]
    fn resolves_by_container_then_sandbox_then_uid() {
        let mut directory = PodDirectory::default();
        directory.apply(
            listing(
                vec![pod("sb1", UID, "machine-config-daemon-x7k2p")],
                vec![container("c1", "sb1", "machine-config-daemon")],
            ),
            Instant::now(),
        );
        let by_container = directory.resolve(Some(UID), Some("c1")).unwrap();
        assert_eq!(
            by_container.name.as_deref(),
            Some("machine-config-daemon-x7k2p")
        );
        assert_eq!(
            by_container.namespace.as_deref(),
            Some("openshift-machine-config-operator")
        );
        assert_eq!(
            by_container.container.as_deref(),
            Some("machine-config-daemon")
        );
        assert_eq!(by_container.labels["k8s-app"], "machine-config-daemon");
        // The pause/sandbox process's cgroup is named by the sandbox id.
        let sandbox = directory.resolve(Some(UID), Some("sb1")).unwrap();
        assert_eq!(sandbox.container, None);
        assert!(sandbox.is_named());
        // An unknown container in a known pod still names the pod.
        let by_uid = directory.resolve(Some(UID), Some("unknown")).unwrap();
        assert_eq!(by_uid.uid, UID);
        assert_eq!(by_uid.container, None);
        assert_eq!(directory.resolve(None, Some("unknown")), None);
        assert_eq!(
            directory.resolve(Some("ffffffff-0000-0000-0000-000000000000"), None),
            None
        );
    }

    #[test]
    fn removed_pods_stay_resolvable_until_their_tombstone_expires() {
        let mut directory = PodDirectory::default();
        let t0 = Instant::now();
        let departed = directory.apply(
            listing(
                vec![pod("sb1", UID, "version-4-16-x8d7f")],
                vec![container("c1", "sb1", "cluster-version-operator")],
            ),
            t0,
        );
        assert!(departed.is_empty());
        // The pod lived two seconds: the next listing no longer has it, and
        // says so once (metrics drop its series then).
        let departed = directory.apply(Listing::default(), t0 + Duration::from_secs(2));
        assert_eq!(departed, vec![UID.to_string()]);
        assert_eq!(directory.live_pods(), 0);
        assert_eq!(directory.tombstones(), 2);
        let later = directory.resolve(Some(UID), Some("c1")).unwrap();
        assert_eq!(later.name.as_deref(), Some("version-4-16-x8d7f"));
        // A pod that comes back (same sandbox) is live again.
        directory.apply(
            listing(vec![pod("sb1", UID, "version-4-16-x8d7f")], vec![]),
            t0 + Duration::from_secs(3),
        );
        assert_eq!(directory.live_pods(), 1);
        directory.apply(Listing::default(), t0 + Duration::from_secs(4));
        directory.apply(
            Listing::default(),
            t0 + Duration::from_secs(4) + TOMBSTONE_TTL,
        );
        assert_eq!(directory.resolve(Some(UID), Some("c1")), None);
        assert_eq!(directory.tombstones(), 0);
    }

    #[test]
    fn tombstones_are_bounded_oldest_first() {
        const MAX: usize = 64;
        let mut directory = PodDirectory::with_max_tombstones(MAX);
        let t0 = Instant::now();
        let uid = |i: usize| format!("00000000-0000-0000-0000-{i:012}");
        for i in 0..MAX + 10 {
            let at = t0 + Duration::from_millis(i as u64);
            directory.apply(
                listing(vec![pod(&format!("sb{i}"), &uid(i), "p")], vec![]),
                at,
            );
        }
        directory.apply(Listing::default(), t0 + Duration::from_secs(10));
        assert_eq!(directory.tombstones(), MAX);
        // All were buried at once here; which ones survive is arbitrary but
        // the count is exact. Bury in steps to check the order.
        let mut directory = PodDirectory::with_max_tombstones(MAX);
        for i in 0..MAX + 1 {
            let at = t0 + Duration::from_millis(i as u64);
            // Each listing holds only pod i: pod i-1 is buried at `at`.
            directory.apply(
                listing(vec![pod(&format!("sb{i}"), &uid(i), "p")], vec![]),
                at,
            );
        }
        directory.apply(Listing::default(), t0 + Duration::from_secs(10));
        assert_eq!(directory.tombstones(), MAX);
        assert_eq!(
            directory.resolve(Some(&uid(0)), None),
            None,
            "oldest dropped"
        );
        assert!(directory.resolve(Some(&uid(1)), None).is_some());
        assert!(directory.resolve(Some(&uid(MAX)), None).is_some());
    }
}
