//! What the CRI says about images, for on-behalf-of attribution. Pure: the
//! CRI watcher (`cri.rs`) feeds listings in.
//!
//! - [`container_intents`]: a container seen for the first time becomes a
//!   `CriContainerCreated` pull intent (the kubelet pulls just before
//!   CreateContainer), named with the image as the kubelet asked for it.
//! - [`ImageLedger`]: which image names were present on the node since
//!   when, so a registry contact for an image already present (a re-check
//!   that only `imagePullPolicy: Always` causes) is told apart from a first
//!   pull.
//!
//! What containerd 1.6 answers (seen through its CRI, see the
//! `on_behalf_of` integration test): ListContainers `image.image` is the
//! name as requested (`quay.io/t/app:latest`) and `image_ref` the image id
//! (`sha256:<config digest>`); ContainerStatus `image_ref` is a repo digest
//! (`quay.io/t/app@sha256:...`); ListImages gives the id with every
//! `repo_tags` and `repo_digests` entry, fully qualified. Other runtimes may
//! answer an id in `image.image`: it is mapped back through ListImages.

use std::{
    collections::{HashMap, HashSet},
    time::SystemTime,
};

use observer_lint::reference::ImageReference;
use observer_report::on_behalf_of::IntentSignal;

use super::{
    pods::{ImageEntry, Listing, PodDirectory},
    pull_intent::{IntentPod, PullIntent},
};

/// Image names the ledger remembers: a node holds a few hundred images
/// with a few names each.
pub const MAX_IMAGE_NAMES: usize = 16_384;

/// Pull intents for the containers of `listing` that `directory` has never
/// seen, created at or after `not_before` (an older container's pull
/// happened before anything this run could observe).
pub fn container_intents(
    directory: &PodDirectory,
    listing: &Listing,
    not_before: SystemTime,
) -> Vec<PullIntent> {
    let pods: HashMap<&str, _> = listing
        .pods
        .iter()
        .map(|pod| (pod.sandbox_id.as_str(), pod))
        .collect();
    listing
        .containers
        .iter()
        .filter(|container| !directory.knows_container(&container.id))
        .filter_map(|container| {
            let created_at = container.created_at?;
            if created_at < not_before {
                return None;
            }
            let pod = pods.get(container.sandbox_id.as_str())?;
            let image = requested_image(&container.image, &container.image_id, &listing.images)?;
            Some(PullIntent {
                pod: IntentPod {
                    uid: Some(pod.uid.clone()),
                    namespace: pod.namespace.clone(),
                    name: pod.name.clone(),
                },
                container: Some(container.name.clone()),
                image,
                at: created_at,
                signal: IntentSignal::CriContainerCreated,
                policy: None,
            })
        })
        .collect()
}

/// The image name as the kubelet asked for it: `image` unless it is an
/// image id, then the first name ListImages gives that id.
pub fn requested_image(image: &str, image_id: &str, images: &[ImageEntry]) -> Option<String> {
    if !image.is_empty() && !is_image_id(image) {
        return Some(image.to_string());
    }
    let id = if image.is_empty() { image_id } else { image };
    let bare = |text: &str| text.trim_start_matches("sha256:").to_string();
    images
        .iter()
        .find(|entry| bare(&entry.id) == bare(id))
        .and_then(|entry| {
            entry
                .repo_tags
                .first()
                .or(entry.repo_digests.first())
                .cloned()
        })
}

fn is_image_id(text: &str) -> bool {
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether an image was on the node at a moment, as far as listings tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// No image listing was ever taken (no CRI): nothing is known.
    Unknown,
    /// Listed at or before the moment (and not removed since).
    PresentBefore,
    /// Not listed then; first listed at this time (after a pull).
    AppearedAt(SystemTime),
    /// Never listed.
    Absent,
}

#[derive(Clone, Copy, Debug)]
struct Held {
    /// The listing that first held the name (since its last removal).
    since: SystemTime,
    /// The listing that no longer held it.
    gone_at: Option<SystemTime>,
}

/// Image names (tags and digests, fully qualified) present on the node,
/// each with the time of the first listing that held it.
#[derive(Clone, Debug)]
pub struct ImageLedger {
    names: HashMap<String, Held>,
    max_names: usize,
    listings: u64,
    /// Names not remembered because the ledger was full.
    dropped: u64,
}

impl Default for ImageLedger {
    fn default() -> ImageLedger {
        ImageLedger::with_max_names(MAX_IMAGE_NAMES)
    }
}

impl ImageLedger {
    pub fn with_max_names(max_names: usize) -> ImageLedger {
        ImageLedger {
            names: HashMap::new(),
            max_names,
            listings: 0,
            dropped: 0,
        }
    }

    /// Applies a complete image listing (every runtime merged) taken `now`.
    pub fn apply(&mut self, images: &[ImageEntry], now: SystemTime) {
        self.listings += 1;
        let listed: HashSet<&str> = images
            .iter()
            .flat_map(|image| image.repo_tags.iter().chain(&image.repo_digests))
            .map(String::as_str)
            .collect();
        for (name, held) in &mut self.names {
            if held.gone_at.is_none() && !listed.contains(name.as_str()) {
                held.gone_at = Some(now);
            }
        }
        for name in listed {
            match self.names.get_mut(name) {
                Some(held) if held.gone_at.is_none() => {}
                // Removed and pulled again: present from now on.
                Some(held) => {
                    *held = Held {
                        since: now,
                        gone_at: None,
                    }
                }
                None => {
                    if self.names.len() >= self.max_names {
                        self.forget_removed();
                    }
                    if self.names.len() >= self.max_names {
                        self.dropped += 1;
                        continue;
                    }
                    self.names.insert(
                        name.to_string(),
                        Held {
                            since: now,
                            gone_at: None,
                        },
                    );
                }
            }
        }
    }

    /// Names removed from the node go first when the ledger is full.
    fn forget_removed(&mut self) {
        self.names.retain(|_, held| held.gone_at.is_none());
    }

    /// Whether `image` (as a pod spec names it) was on the node at `at`.
    pub fn presence(&self, image: &str, at: SystemTime) -> Presence {
        if self.listings == 0 {
            return Presence::Unknown;
        }
        let held: Vec<&Held> = stored_names(image)
            .iter()
            .filter_map(|name| self.names.get(name))
            .collect();
        if held
            .iter()
            .any(|h| h.since <= at && h.gone_at.is_none_or(|gone| gone > at))
        {
            return Presence::PresentBefore;
        }
        match held
            .iter()
            .map(|h| h.since)
            .filter(|since| *since > at)
            .min()
        {
            Some(since) => Presence::AppearedAt(since),
            None => Presence::Absent,
        }
    }

    pub fn listings(&self) -> u64 {
        self.listings
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The names a runtime stores `image` under: fully qualified, with its tag
/// (`latest` when neither tag nor digest is written) and with its digest.
fn stored_names(image: &str) -> Vec<String> {
    let Ok(reference) = ImageReference::parse(image) else {
        return vec![image.to_string()];
    };
    let qualified = reference.fully_qualified();
    let name = format!(
        "{}/{}",
        qualified.registry.as_deref().unwrap_or_default(),
        qualified.path
    );
    let mut names = Vec::new();
    if let Some(tag) = qualified.defaulting_tag() {
        names.push(format!("{name}:{tag}"));
    }
    if let Some(digest) = &qualified.digest {
        names.push(format!("{name}@{digest}"));
    }
    names
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use super::*;
    use crate::sources::pods::{ContainerEntry, PodEntry};

    const ID: &str = "sha256:7a9193d7cafcbcd2a2bd99921010fa591f2cfc85de0c4654f3f190b85fa35f7f";
    const DIGEST: &str = "sha256:5ccd293c5a86c356b56137babd9a2742304f3a81d131c9cbe8c054d273887f1e";

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    fn image(tags: &[&str], digests: &[&str]) -> ImageEntry {
        ImageEntry {
            id: ID.into(),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: digests.iter().map(|d| d.to_string()).collect(),
        }
    }

    fn listing(containers: Vec<ContainerEntry>, images: Vec<ImageEntry>) -> Listing {
        Listing {
            pods: vec![PodEntry {
                sandbox_id: "sb".into(),
                uid: "u-1".into(),
                namespace: "shop".into(),
                name: "web-1".into(),
                labels: BTreeMap::new(),
            }],
            containers,
            images,
        }
    }

    fn container(id: &str, image: &str, created: u64) -> ContainerEntry {
        ContainerEntry {
            id: id.into(),
            sandbox_id: "sb".into(),
            name: "app".into(),
            image: image.into(),
            image_id: ID.into(),
            created_at: Some(at(created)),
        }
    }

    #[test]
    fn each_new_container_is_one_intent_named_as_requested() {
        let mut directory = PodDirectory::default();
        let first = listing(
            vec![
                container("c1", "quay.io/t/app:latest", 10),
                // Created before the run could see its pull: no intent.
                container("c0", "quay.io/t/old:1", 1),
                // An id instead of a name: named through ListImages.
                container("c2", ID, 11),
            ],
            vec![image(&["quay.io/t/app:latest"], &[])],
        );
        let intents = container_intents(&directory, &first, at(5));
        let got: Vec<(&str, Option<&str>, &str, SystemTime)> = intents
            .iter()
            .map(|i| {
                (
                    i.pod.name.as_str(),
                    i.pod.uid.as_deref(),
                    i.image.as_str(),
                    i.at,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("web-1", Some("u-1"), "quay.io/t/app:latest", at(10)),
                ("web-1", Some("u-1"), "quay.io/t/app:latest", at(11)),
            ]
        );
        assert!(
            intents
                .iter()
                .all(|i| i.signal == IntentSignal::CriContainerCreated
                    && i.container.as_deref() == Some("app"))
        );
        // Seen once: the next listing of the same containers says nothing.
        directory.apply(first.clone(), std::time::Instant::now());
        assert!(container_intents(&directory, &first, at(5)).is_empty());
        // An id no image has: no name to give, no intent.
        assert_eq!(requested_image(&"ab".repeat(32), "", &[]), None);
        assert_eq!(
            requested_image("", ID, &[image(&[], &["quay.io/t/app@sha256:1"])]),
            Some("quay.io/t/app@sha256:1".to_string())
        );
    }

    #[test]
    fn presence_tells_a_re_check_from_a_first_pull() {
        let mut ledger = ImageLedger::default();
        assert_eq!(ledger.presence("nginx", at(0)), Presence::Unknown);
        ledger.apply(
            &[image(
                &["docker.io/library/nginx:latest"],
                &[&format!("docker.io/library/nginx@{DIGEST}")],
            )],
            at(0),
        );
        ledger.apply(
            &[
                image(&["docker.io/library/nginx:latest"], &[]),
                image(&["quay.io/t/app:latest"], &[]),
            ],
            at(4),
        );
        // Short names and missing tags are qualified as the runtime does.
        assert_eq!(ledger.presence("nginx", at(2)), Presence::PresentBefore);
        assert_eq!(
            ledger.presence("docker.io/library/nginx:latest", at(2)),
            Presence::PresentBefore
        );
        assert_eq!(
            ledger.presence("quay.io/t/app:latest", at(2)),
            Presence::AppearedAt(at(4))
        );
        assert_eq!(
            ledger.presence("quay.io/t/app", at(5)),
            Presence::PresentBefore
        );
        assert_eq!(
            ledger.presence("quay.io/t/other:1", at(5)),
            Presence::Absent
        );
        // By digest: listed at 0, gone at 4.
        assert_eq!(
            ledger.presence(&format!("nginx@{DIGEST}"), at(1)),
            Presence::PresentBefore
        );
        assert_eq!(
            ledger.presence(&format!("nginx@{DIGEST}"), at(5)),
            Presence::Absent
        );
        // Removed, then pulled again: present from its return only.
        ledger.apply(&[], at(6));
        ledger.apply(&[image(&["quay.io/t/app:latest"], &[])], at(8));
        assert_eq!(
            ledger.presence("quay.io/t/app:latest", at(7)),
            Presence::AppearedAt(at(8))
        );
        assert_eq!(ledger.listings(), 4);
    }

    #[test]
    fn a_full_ledger_forgets_removed_names_then_counts_what_it_drops() {
        let mut ledger = ImageLedger::with_max_names(2);
        ledger.apply(&[image(&["quay.io/a:1", "quay.io/b:1"], &[])], at(0));
        // a and b are gone: they make room for c and d.
        ledger.apply(&[image(&["quay.io/c:1", "quay.io/d:1"], &[])], at(1));
        assert_eq!(ledger.dropped(), 0);
        assert_eq!(
            ledger.presence("quay.io/c:1", at(2)),
            Presence::PresentBefore
        );
        // Full of live names: the third is counted, not remembered.
        ledger.apply(
            &[image(&["quay.io/c:1", "quay.io/d:1", "quay.io/e:1"], &[])],
            at(2),
        );
        assert_eq!(ledger.dropped(), 1);
        assert_eq!(ledger.presence("quay.io/e:1", at(3)), Presence::Absent);
    }
}
