//! On behalf of whom: when the process behind an attempt only works for
//! someone else (a container runtime pulling for a pod, an image tool run
//! by a daemon), the pod or process that caused it. Pure: decided at report
//! time from the attempt, the run's pull intents (`pull_intent`), the image
//! ledger (`images`) and the final pod directory.
//!
//! - Runtimes (containerd, crio, dockerd; kubelet counts as one): pods that
//!   needed an image from the attempt's registry near the attempt's time.
//!   Candidates are ranked by what the image ledger says: an image that
//!   appeared on the node during the contact was pulled then; one present
//!   before was re-checked, which only `imagePullPolicy: Always` causes.
//! - Tools (skopeo, podman, rpm-ostree, ...): whoever ran them, found by
//!   walking the process ancestry past shells and other tools.
//!
//! The policy behind a pod's pull comes from the pod spec when a source
//! read it (the Kubernetes API); else it is inferred from the image
//! reference with Kubernetes' defaulting (`observer_lint::pull_policy`).

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use observer_lint::{
    pull_policy::{PullPolicy, default_pull_policy},
    reference::ImageReference,
};
use observer_report::{
    attempt::Attempt,
    observer::OnBehalfOfStats,
    on_behalf_of::{
        Clue, Confidence, IntentSignal, OnBehalfOf, OnBehalfOfKind, OnBehalfOfPod,
        OnBehalfOfProcess, PolicyJoin, PolicySource, PolicyWhy,
    },
    process::ProcessInfo,
};

use crate::{
    pipeline::{
        attribute::component::pod_owner,
        classify::{Catalog, Pattern, registries_conf, registries_conf::RegistriesConf},
    },
    sources::{
        images::{ImageLedger, Presence},
        pods::PodDirectory,
        pull_intent::{
            CONTAINER_CREATED_AFTER, CONTAINER_CREATED_BEFORE, KUBELET_PULLING_AFTER,
            KUBELET_PULLING_BEFORE, PullIntent,
        },
    },
};

/// Processes that pull images for pods they do not belong to. By
/// executable file name, then comm.
const RUNTIMES: &[&str] = &["containerd", "crio", "dockerd", "kubelet"];
/// Image tools: they contact registries for whoever runs them.
const TOOLS: &[&str] = &[
    "skopeo",
    "podman",
    "buildah",
    "rpm-ostree",
    "ostree",
    "oc",
    "ctr",
    "crictl",
    "nerdctl",
];
/// Programs that only pass control on (a shell a daemon runs a tool with,
/// `timeout`, `nsenter`): the ancestry walk goes past them.
const PASS_THROUGH: &[&str] = &[
    "sh", "bash", "dash", "ash", "zsh", "busybox", "env", "timeout", "nice", "ionice", "nohup",
    "flock", "xargs", "sudo", "su", "runuser", "setsid", "chroot", "nsenter", "unshare", "ip",
    "stdbuf", "chrt", "taskset", "setpriv",
];
/// Where an ancestry walk ends without a caller: a service manager or a
/// container's init. The attempt's own unit or pod is then the caller.
const SUPERVISORS: &[&str] = &[
    "systemd",
    "init",
    "conmon",
    "containerd-shim",
    "containerd-shim-runc-v2",
    "runc",
    "crun",
    "tini",
    "dumb-init",
    "catatonit",
    "pause",
];

/// What a decision came to, for the report's counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Neither a runtime nor a tool: the process acted for itself.
    NotApplicable,
    /// A runtime's contact that no intent explains.
    RuntimeUnattributed,
    /// A tool with no caller to name (no ancestors known).
    ToolUnattributed,
    Attributed(Box<OnBehalfOf>),
}

/// What the correlation reads besides the attempt.
pub struct Context<'a> {
    pub intents: &'a [PullIntent],
    pub images: &'a ImageLedger,
    /// The final listing, for a pod's labels (its owner).
    pub pods: &'a PodDirectory,
    pub catalog: &'a Catalog,
    pub registries_conf: Option<&'a RegistriesConf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ActorClass {
    Runtime,
    Tool,
    Other,
}

fn program_name(exe: Option<&str>, comm: &str) -> String {
    match exe {
        Some(exe) => exe
            .rsplit('/')
            .next()
            .unwrap_or(exe)
            .trim_end_matches(" (deleted)")
            .to_string(),
        None => comm.to_string(),
    }
}

/// The name a human knows a process by: its comm (`sh`, even when sh is
/// dash), unless the kernel cut it at 15 bytes (`machine-config-`), then
/// the executable's file name it was cut from.
fn display_name(exe: Option<&str>, comm: &str) -> String {
    let program = program_name(exe, comm);
    if comm.len() == 15 && program.starts_with(comm) {
        program
    } else {
        comm.to_string()
    }
}

fn classify_actor(process: &ProcessInfo) -> ActorClass {
    let names = [
        program_name(process.exe.as_deref(), &process.comm),
        process.comm.clone(),
    ];
    if names.iter().any(|n| RUNTIMES.contains(&n.as_str())) {
        ActorClass::Runtime
    } else if names.iter().any(|n| TOOLS.contains(&n.as_str())) {
        ActorClass::Tool
    } else {
        ActorClass::Other
    }
}

pub fn decide(attempt: &Attempt, context: &Context) -> Decision {
    match classify_actor(&attempt.process) {
        ActorClass::Runtime => match for_runtime(attempt, context) {
            Some(found) => Decision::Attributed(Box::new(found)),
            None => Decision::RuntimeUnattributed,
        },
        ActorClass::Tool => match for_tool(attempt) {
            Some(found) => Decision::Attributed(Box::new(found)),
            None => Decision::ToolUnattributed,
        },
        ActorClass::Other => Decision::NotApplicable,
    }
}

/// How plausible it is that a candidate's pull is the contact: lower is
/// more plausible.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Plausibility {
    /// The image appeared on the node after the contact began.
    Pulled,
    /// Present before and pulled anyway under `Always`; or nothing tells
    /// (no image listings, or the image never appeared: a failed pull).
    Possible,
    /// Present before, and the reference defaults to IfNotPresent: only an
    /// explicit `Always` in the spec makes the kubelet pull it.
    ExplicitAlwaysNeeded,
}

struct Candidate<'a> {
    /// The intents of one pod (by namespace/name), nearest first.
    intents: Vec<&'a PullIntent>,
    distance: Duration,
    via_mirror: bool,
    presence: Presence,
    plausibility: Plausibility,
    policy: Option<PolicyJoin>,
}

fn for_runtime(attempt: &Attempt, context: &Context) -> Option<OnBehalfOf> {
    let host = attempt.host.as_deref()?;
    let mut by_pod: BTreeMap<(String, String), Candidate> = BTreeMap::new();
    for intent in context.intents {
        let Some(distance) = within_window(intent, attempt.first_seen, attempt.last_seen) else {
            continue;
        };
        let Some(via_mirror) = registry_matches(&intent.image, host, attempt, context) else {
            continue;
        };
        let key = (intent.pod.namespace.clone(), intent.pod.name.clone());
        let candidate = by_pod.entry(key).or_insert_with(|| Candidate {
            intents: Vec::new(),
            distance,
            via_mirror,
            presence: Presence::Unknown,
            plausibility: Plausibility::Possible,
            policy: None,
        });
        candidate.distance = candidate.distance.min(distance);
        candidate.via_mirror &= via_mirror;
        candidate.intents.push(intent);
    }
    let mut candidates: Vec<Candidate> = by_pod
        .into_values()
        .filter_map(|mut candidate| {
            candidate.intents.sort_by_key(|i| {
                within_window(i, attempt.first_seen, attempt.last_seen).unwrap_or(Duration::MAX)
            });
            let image = candidate.intents[0].image.clone();
            candidate.presence = context.images.presence(&image, attempt.first_seen);
            candidate.policy = candidate
                .intents
                .iter()
                .find_map(|i| i.policy.clone())
                .or_else(|| infer_policy(&image));
            let written = candidate
                .policy
                .as_ref()
                .filter(|p| p.source == PolicySource::PodSpec);
            candidate.plausibility = match candidate.presence {
                Presence::AppearedAt(since)
                    if since <= attempt.last_seen + CONTAINER_CREATED_AFTER =>
                {
                    Plausibility::Pulled
                }
                Presence::PresentBefore => match written {
                    // The stored spec says the kubelet would not pull.
                    Some(policy) if policy.effective != "Always" => return None,
                    Some(_) => Plausibility::Possible,
                    None if candidate
                        .policy
                        .as_ref()
                        .is_some_and(|p| p.effective == "Always") =>
                    {
                        Plausibility::Possible
                    }
                    None => Plausibility::ExplicitAlwaysNeeded,
                },
                _ => Plausibility::Possible,
            };
            Some(candidate)
        })
        .collect();
    let best = candidates.iter().map(|c| c.plausibility).min()?;
    candidates.retain(|c| c.plausibility == best);
    candidates.sort_by(|a, b| {
        a.distance
            .cmp(&b.distance)
            .then(a.intents[0].at.cmp(&b.intents[0].at))
    });
    let count = candidates.len();
    let chosen = candidates.swap_remove(0);
    Some(describe_pod_pull(attempt, context, chosen, count, best))
}

fn describe_pod_pull(
    attempt: &Attempt,
    context: &Context,
    chosen: Candidate,
    count: usize,
    plausibility: Plausibility,
) -> OnBehalfOf {
    let nearest = chosen.intents[0];
    let mut evidence: Vec<Clue> = chosen
        .intents
        .iter()
        .map(|i| match i.signal {
            IntentSignal::CriContainerCreated => Clue::CriContainerCreated,
            IntentSignal::KubeletPulling => Clue::KubeletPulling,
        })
        .collect();
    match chosen.presence {
        Presence::AppearedAt(_) if plausibility == Plausibility::Pulled => {
            evidence.push(Clue::ImagePulled)
        }
        Presence::PresentBefore => evidence.push(Clue::ImagePresentBefore),
        _ => {}
    }
    if chosen.via_mirror {
        evidence.push(Clue::Mirror);
    }
    evidence.sort();
    evidence.dedup();
    let uid = chosen.intents.iter().find_map(|i| i.pod.uid.clone());
    let container = chosen.intents.iter().find_map(|i| i.container.clone());
    let mut policy = chosen.policy;
    if let Some(policy) = &mut policy
        && policy.owner.is_none()
        && let Some(pod) = context.pods.resolve(uid.as_deref(), None)
        && let Some((kind, name)) = pod_owner(&nearest.pod.name, &pod.labels)
    {
        policy.owner = Some(format!("{kind}/{name}"));
    }
    if let Some(policy) = &mut policy
        && policy.fix.is_none()
    {
        policy.fix = Some(fix_for(policy, chosen.presence));
    }
    let confidence = match (count, plausibility) {
        (1, Plausibility::ExplicitAlwaysNeeded) => Confidence::Medium,
        (1, _) => Confidence::High,
        (_, Plausibility::ExplicitAlwaysNeeded) => Confidence::Low,
        _ => Confidence::Medium,
    };
    let runtime = program_name(attempt.process.exe.as_deref(), &attempt.process.comm);
    let pod_name = format!("{}/{}", nearest.pod.namespace, nearest.pod.name);
    let container_text = container
        .as_deref()
        .map(|c| format!(" (container {c})"))
        .unwrap_or_default();
    let image = &nearest.image;
    let why = match (chosen.presence, plausibility, policy.as_ref()) {
        (_, Plausibility::Pulled, _) => {
            format!("{image} was not on the node before and was after: a first pull")
        }
        (_, Plausibility::ExplicitAlwaysNeeded, _) => format!(
            "{image} was already on the node and its reference defaults to IfNotPresent, so the spec must set imagePullPolicy: Always explicitly"
        ),
        (Presence::PresentBefore, _, Some(policy)) => format!(
            "{image} was already on the node; imagePullPolicy {} ({}) made the kubelet pull it again",
            policy.effective,
            why_text(policy.why)
        ),
        _ => format!("the pod needed {image} then"),
    };
    let others = if count > 1 {
        format!(
            " ({} pods equally likely; the nearest in time is named)",
            count
        )
    } else {
        String::new()
    };
    OnBehalfOf {
        kind: OnBehalfOfKind::Pod,
        pod: Some(OnBehalfOfPod {
            uid,
            namespace: Some(nearest.pod.namespace.clone()),
            name: Some(nearest.pod.name.clone()),
            container,
        }),
        unit: None,
        process: None,
        image: Some(image.clone()),
        evidence,
        ancestry: None,
        confidence,
        candidates: u32::try_from(count).unwrap_or(u32::MAX),
        policy,
        explanation: format!(
            "{runtime} contacted {} for pod {pod_name}{container_text}: {why}{others}.",
            attempt.host_or_range()
        ),
    }
}

/// How far the intent lies outside the attempt's time span (zero inside),
/// if within its signal's window.
fn within_window(intent: &PullIntent, first: SystemTime, last: SystemTime) -> Option<Duration> {
    let (before, after) = match intent.signal {
        IntentSignal::CriContainerCreated => (CONTAINER_CREATED_BEFORE, CONTAINER_CREATED_AFTER),
        IntentSignal::KubeletPulling => (KUBELET_PULLING_BEFORE, KUBELET_PULLING_AFTER),
    };
    if intent.at < first {
        let gap = first.duration_since(intent.at).unwrap_or_default();
        (gap <= before).then_some(gap)
    } else if intent.at > last {
        let gap = intent.at.duration_since(last).unwrap_or_default();
        (gap <= after).then_some(gap)
    } else {
        Some(Duration::ZERO)
    }
}

/// Hosts that serve one registry under other names: Docker Hub's API,
/// auth and CDN; Quay's CDN and blob bucket.
fn registry_family(registry: &str) -> &'static [&'static str] {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => &[
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "auth.docker.io",
            "production.cloudflare.docker.com",
        ],
        "quay.io" => &[
            "quay.io",
            "cdn.quay.io",
            "cdn01.quay.io",
            "cdn02.quay.io",
            "cdn03.quay.io",
            "quayio-production-s3.s3.amazonaws.com",
        ],
        _ => &[],
    }
}

/// Whether a contact with `host` serves a pull of `image`: Some(false)
/// when it is the image's registry (or one of its hosts, or the same
/// catalog entry), Some(true) when it is a registries.conf mirror of it.
fn registry_matches(image: &str, host: &str, attempt: &Attempt, context: &Context) -> Option<bool> {
    let reference = ImageReference::parse(image).ok()?.fully_qualified();
    let with_port = reference.registry.clone()?;
    let registry = with_port
        .rsplit_once(':')
        .map_or(with_port.as_str(), |(h, _)| h)
        .to_ascii_lowercase();
    if host == registry || registry_family(&registry).contains(&host) {
        return Some(false);
    }
    let same_entry = context.catalog.lookup(&registry).is_some_and(|entry| {
        !matches!(entry.pattern, Pattern::Network(_))
            && entry.pattern.to_string() == attempt.registry.pattern
    });
    if same_entry {
        return Some(false);
    }
    let conf = context.registries_conf?;
    let name = format!("{with_port}/{}", reference.path);
    let mirrored = conf.registries.iter().any(|entry| {
        prefix_matches(&entry.prefix, &name)
            && entry.mirrors.iter().any(|mirror| {
                registries_conf::registry_host(mirror).is_ok_and(|p| p.matches_host(host))
            })
    });
    mirrored.then_some(true)
}

/// registries.conf `prefix` semantics: a repository prefix ending at a
/// path boundary, or `*.domain` for any host below it.
fn prefix_matches(prefix: &str, name: &str) -> bool {
    if let Some(domain) = prefix.strip_prefix("*.") {
        let host = name.split('/').next().unwrap_or_default();
        return host.ends_with(&format!(".{domain}"));
    }
    name == prefix
        || name
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/') || rest.starts_with(':'))
}

/// The policy Kubernetes would default to for `image` with no
/// `imagePullPolicy` in the spec.
pub fn infer_policy(image: &str) -> Option<PolicyJoin> {
    let reference = ImageReference::parse(image).ok()?;
    let (effective, why) = match default_pull_policy(image) {
        PullPolicy::Always if reference.tag.is_none() && reference.digest.is_none() => {
            ("Always", PolicyWhy::NoTag)
        }
        PullPolicy::Always => ("Always", PolicyWhy::LatestTag),
        PullPolicy::IfNotPresent | PullPolicy::Never => {
            ("IfNotPresent", PolicyWhy::DefaultIfNotPresent)
        }
    };
    Some(PolicyJoin {
        effective: effective.to_string(),
        why,
        source: PolicySource::ImageReference,
        field: None,
        owner: None,
        fix: None,
    })
}

fn why_text(why: PolicyWhy) -> &'static str {
    match why {
        PolicyWhy::Explicit => "written in the spec",
        PolicyWhy::LatestTag => "defaulted from the :latest tag",
        PolicyWhy::NoTag => "defaulted: the image has no tag, which means :latest",
        PolicyWhy::DefaultIfNotPresent => "the default for a tag other than latest",
    }
}

fn fix_for(policy: &PolicyJoin, presence: Presence) -> String {
    let place = match &policy.owner {
        Some(owner) => format!("in {owner}'s pod template"),
        None => "in the pod's spec".to_string(),
    };
    match (policy.why, policy.effective.as_str(), presence) {
        (PolicyWhy::LatestTag | PolicyWhy::NoTag, _, _) => format!(
            "pin the image by digest (image@sha256:<digest>) and set imagePullPolicy: IfNotPresent {place}"
        ),
        (_, "Always", _) | (PolicyWhy::DefaultIfNotPresent, _, Presence::PresentBefore) => {
            format!("set imagePullPolicy: IfNotPresent {place}")
        }
        _ => format!(
            "make the image present on the node before it goes offline (pre-pull or mirror it), or pin it by digest {place}"
        ),
    }
}

/// Tools: the first ancestor that is neither a shell nor another tool.
/// Reaching a service manager or a container's init instead means the tool
/// was started directly by its unit or pod.
fn for_tool(attempt: &Attempt) -> Option<OnBehalfOf> {
    let process = &attempt.process;
    let mut chain = vec![display_name(process.exe.as_deref(), &process.comm)];
    for ancestor in &process.ancestors {
        let name = program_name(ancestor.exe.as_deref(), &ancestor.comm);
        chain.push(display_name(ancestor.exe.as_deref(), &ancestor.comm));
        let passes_on = PASS_THROUGH.contains(&name.as_str())
            || PASS_THROUGH.contains(&ancestor.comm.as_str())
            || TOOLS.contains(&name.as_str())
            || TOOLS.contains(&ancestor.comm.as_str());
        if passes_on {
            continue;
        }
        let tool = program_name(process.exe.as_deref(), &process.comm);
        let supervised = ancestor.pid == 1
            || SUPERVISORS.contains(&name.as_str())
            || name.starts_with("containerd-shim")
            || SUPERVISORS.contains(&ancestor.comm.as_str());
        let ancestry = chain.join(" <- ");
        let pod = attempt.pod.as_ref().map(|pod| OnBehalfOfPod {
            uid: Some(pod.uid.clone()),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            container: pod.container.clone(),
        });
        let pod_text = pod.as_ref().and_then(|p| {
            Some(format!(
                "pod {}/{}",
                p.namespace.as_deref()?,
                p.name.as_deref()?
            ))
        });
        let (kind, process, explanation) = if supervised {
            let (kind, owner) = match (&pod_text, &attempt.unit) {
                (Some(pod), _) => (OnBehalfOfKind::Pod, pod.clone()),
                (None, Some(unit)) => (OnBehalfOfKind::Unit, format!("unit {unit}")),
                // Started by a service manager we cannot name: the tool
                // acted for itself as far as anyone can tell.
                (None, None) => return None,
            };
            (
                kind,
                None,
                format!("{tool} was started directly by {owner} ({ancestry})."),
            )
        } else {
            let within = pod_text
                .clone()
                .or(attempt.unit.as_ref().map(|u| format!("unit {u}")))
                .map(|o| format!(" in {o}"))
                .unwrap_or_default();
            (
                OnBehalfOfKind::Process,
                Some(OnBehalfOfProcess {
                    pid: ancestor.pid,
                    comm: ancestor.comm.clone(),
                    exe: ancestor.exe.clone(),
                }),
                format!(
                    "{tool} was run by {} (pid {}){within}: {ancestry}.",
                    display_name(ancestor.exe.as_deref(), &ancestor.comm),
                    ancestor.pid
                ),
            )
        };
        return Some(OnBehalfOf {
            kind,
            pod,
            unit: attempt.unit.clone(),
            process,
            image: None,
            evidence: vec![Clue::Ancestry],
            ancestry: Some(ancestry),
            confidence: Confidence::High,
            candidates: 1,
            policy: None,
            explanation,
        });
    }
    None
}

impl Decision {
    /// Adds this decision to the report's `observer.on_behalf_of` counts.
    pub fn count_into(&self, stats: &mut OnBehalfOfStats) {
        match self {
            Decision::NotApplicable => {}
            Decision::RuntimeUnattributed => stats.unattributed += 1,
            Decision::ToolUnattributed => stats.tools_unattributed += 1,
            Decision::Attributed(found) => *stats.attributed.entry(found.kind).or_default() += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use observer_report::{
        fixtures::{at, attempt},
        process::Ancestor,
    };

    use super::*;
    use crate::{
        pipeline::classify::registries_conf::Registry,
        sources::{
            pods::{ImageEntry, Listing, PodEntry},
            pull_intent::IntentPod,
        },
    };

    /// containerd's contact with `host` from `first` to `last` (seconds).
    fn runtime_attempt(host: &str, first: u64, last: u64) -> Attempt {
        let mut attempt = attempt("boot", "containerd", host, first);
        attempt.first_seen = at(first);
        attempt.last_seen = at(last);
        attempt.process.comm = "containerd".into();
        attempt.process.exe = Some("/usr/bin/containerd".into());
        attempt.registry.pattern = Catalog::builtin()
            .lookup(host)
            .map_or(host.to_string(), |e| e.pattern.to_string());
        attempt
    }

    fn intent(pod: &str, image: &str, signal: IntentSignal, seconds: u64) -> PullIntent {
        PullIntent {
            pod: IntentPod {
                uid: Some(format!("uid-{pod}")),
                namespace: "shop".into(),
                name: pod.into(),
            },
            container: Some("app".into()),
            image: image.into(),
            at: at(seconds),
            signal,
            policy: None,
        }
    }

    fn created(pod: &str, image: &str, seconds: u64) -> PullIntent {
        intent(pod, image, IntentSignal::CriContainerCreated, seconds)
    }

    fn ledger(listings: &[(u64, &[&str])]) -> ImageLedger {
        let mut ledger = ImageLedger::default();
        for (seconds, tags) in listings {
            let images: Vec<ImageEntry> = tags
                .iter()
                .map(|tag| ImageEntry {
                    id: format!("id-{tag}"),
                    repo_tags: vec![tag.to_string()],
                    repo_digests: vec![],
                })
                .collect();
            ledger.apply(&images, at(*seconds));
        }
        ledger
    }

    struct World {
        intents: Vec<PullIntent>,
        images: ImageLedger,
        pods: PodDirectory,
        catalog: Catalog,
        conf: Option<RegistriesConf>,
    }

    impl World {
        fn new(intents: Vec<PullIntent>, images: ImageLedger) -> World {
            World {
                intents,
                images,
                pods: PodDirectory::default(),
                catalog: Catalog::builtin(),
                conf: None,
            }
        }

        fn decide(&self, attempt: &Attempt) -> Decision {
            decide(
                attempt,
                &Context {
                    intents: &self.intents,
                    images: &self.images,
                    pods: &self.pods,
                    catalog: &self.catalog,
                    registries_conf: self.conf.as_ref(),
                },
            )
        }

        fn found(&self, attempt: &Attempt) -> OnBehalfOf {
            match self.decide(attempt) {
                Decision::Attributed(found) => *found,
                other => panic!("not attributed: {other:?}"),
            }
        }
    }

    #[test]
    fn a_first_pull_names_the_pod_whose_image_appeared_not_the_one_already_present() {
        let world = World::new(
            vec![
                created("web-1", "quay.io/t/app:latest", 12),
                // Same registry, image present all along, created nearer.
                created("cache-1", "quay.io/t/sleeper:1", 10),
            ],
            ledger(&[
                (0, &["quay.io/t/sleeper:1"]),
                (12, &["quay.io/t/sleeper:1", "quay.io/t/app:latest"]),
            ]),
        );
        let found = world.found(&runtime_attempt("quay.io", 10, 11));
        let pod = found.pod.as_ref().unwrap();
        assert_eq!(
            (
                pod.namespace.as_deref(),
                pod.name.as_deref(),
                pod.uid.as_deref()
            ),
            (Some("shop"), Some("web-1"), Some("uid-web-1"))
        );
        assert_eq!(found.kind, OnBehalfOfKind::Pod);
        assert_eq!(found.confidence, Confidence::High);
        assert_eq!(found.candidates, 1);
        assert_eq!(
            found.evidence,
            [Clue::CriContainerCreated, Clue::ImagePulled]
        );
        let policy = found.policy.unwrap();
        assert_eq!(
            (policy.effective.as_str(), policy.why, policy.source),
            ("Always", PolicyWhy::LatestTag, PolicySource::ImageReference)
        );
        assert!(policy.fix.unwrap().contains("pin the image by digest"));
        assert!(
            found.explanation.starts_with("containerd contacted quay.io for pod shop/web-1 (container app): quay.io/t/app:latest was not on the node before"),
            "{}",
            found.explanation
        );
    }

    #[test]
    fn a_pull_of_a_present_image_is_a_re_check_under_always() {
        let world = World::new(
            vec![created("web-2", "quay.io/t/app:latest", 11)],
            ledger(&[
                (0, &["quay.io/t/app:latest"]),
                (12, &["quay.io/t/app:latest"]),
            ]),
        );
        let found = world.found(&runtime_attempt("quay.io", 10, 10));
        assert_eq!(
            found.evidence,
            [Clue::CriContainerCreated, Clue::ImagePresentBefore]
        );
        assert_eq!(found.confidence, Confidence::High);
        assert!(
            found.explanation.contains("was already on the node; imagePullPolicy Always (defaulted from the :latest tag) made the kubelet pull it again"),
            "{}",
            found.explanation
        );
        // A tag that defaults to IfNotPresent, yet pulled while present:
        // the spec must say Always.
        let world = World::new(
            vec![created("web-3", "quay.io/t/app:v1", 11)],
            ledger(&[(0, &["quay.io/t/app:v1"])]),
        );
        let found = world.found(&runtime_attempt("quay.io", 10, 10));
        assert_eq!(found.confidence, Confidence::Medium);
        let policy = found.policy.unwrap();
        assert_eq!(policy.why, PolicyWhy::DefaultIfNotPresent);
        assert_eq!(
            policy.fix.as_deref(),
            Some("set imagePullPolicy: IfNotPresent in the pod's spec")
        );
        assert!(
            found
                .explanation
                .contains("must set imagePullPolicy: Always explicitly")
        );
    }

    #[test]
    fn the_spec_policy_wins_and_rules_out_a_pod_that_would_not_pull() {
        let mut written = created("db-0", "quay.io/t/db:v2", 11);
        written.policy = Some(PolicyJoin {
            effective: "IfNotPresent".into(),
            why: PolicyWhy::Explicit,
            source: PolicySource::PodSpec,
            field: Some("spec.containers[0].imagePullPolicy".into()),
            owner: Some("StatefulSet/db".into()),
            fix: None,
        });
        let world = World::new(vec![written], ledger(&[(0, &["quay.io/t/db:v2"])]));
        assert_eq!(
            world.decide(&runtime_attempt("quay.io", 10, 10)),
            Decision::RuntimeUnattributed
        );
        // The kubelet's Pulling event with the spec's Always: joined as is.
        let mut pulling = intent("db-0", "quay.io/t/db:v2", IntentSignal::KubeletPulling, 9);
        pulling.policy = Some(PolicyJoin {
            effective: "Always".into(),
            why: PolicyWhy::Explicit,
            source: PolicySource::PodSpec,
            field: Some("spec.containers[0].imagePullPolicy".into()),
            owner: Some("StatefulSet/db".into()),
            fix: None,
        });
        let world = World::new(
            vec![pulling, created("db-0", "quay.io/t/db:v2", 11)],
            ledger(&[(0, &["quay.io/t/db:v2"])]),
        );
        let found = world.found(&runtime_attempt("quay.io", 10, 10));
        assert_eq!(
            found.evidence,
            [
                Clue::CriContainerCreated,
                Clue::KubeletPulling,
                Clue::ImagePresentBefore
            ]
        );
        assert_eq!(found.confidence, Confidence::High);
        let policy = found.policy.unwrap();
        assert_eq!(policy.source, PolicySource::PodSpec);
        assert_eq!(
            policy.fix.as_deref(),
            Some("set imagePullPolicy: IfNotPresent in StatefulSet/db's pod template")
        );
    }

    #[test]
    fn intents_count_only_inside_their_signal_s_window() {
        let contact = runtime_attempt("quay.io", 100, 110);
        let cases = [
            (created("p", "quay.io/a:1", 97), false), // 3 s before the first contact
            (created("p", "quay.io/a:1", 98), true),
            (created("p", "quay.io/a:1", 110 + 600), true),
            (created("p", "quay.io/a:1", 110 + 601), false),
            (
                intent("p", "quay.io/a:1", IntentSignal::KubeletPulling, 40),
                true,
            ),
            (
                intent("p", "quay.io/a:1", IntentSignal::KubeletPulling, 39),
                false,
            ),
            (
                intent("p", "quay.io/a:1", IntentSignal::KubeletPulling, 112),
                true,
            ),
            (
                intent("p", "quay.io/a:1", IntentSignal::KubeletPulling, 113),
                false,
            ),
        ];
        for (intent, inside) in cases {
            let world = World::new(vec![intent.clone()], ImageLedger::default());
            let decision = world.decide(&contact);
            assert_eq!(
                matches!(decision, Decision::Attributed(_)),
                inside,
                "{:?} at {:?}: {decision:?}",
                intent.signal,
                intent.at
            );
        }
    }

    #[test]
    fn several_equal_candidates_give_the_nearest_with_medium_confidence() {
        let world = World::new(
            vec![
                intent("a-1", "quay.io/x/a", IntentSignal::KubeletPulling, 5),
                intent("b-1", "quay.io/x/b", IntentSignal::KubeletPulling, 9),
                // Another registry: not a candidate.
                intent(
                    "c-1",
                    "ghcr.io/x/c:latest",
                    IntentSignal::KubeletPulling,
                    10,
                ),
            ],
            ImageLedger::default(),
        );
        let found = world.found(&runtime_attempt("quay.io", 10, 12));
        assert_eq!(found.pod.unwrap().name.as_deref(), Some("b-1"));
        assert_eq!(found.candidates, 2);
        assert_eq!(found.confidence, Confidence::Medium);
        assert_eq!(found.policy.unwrap().why, PolicyWhy::NoTag);
        assert!(found.explanation.contains("2 pods equally likely"));
    }

    #[test]
    fn docker_hub_hosts_and_registries_conf_mirrors_match_the_image() {
        let world = World::new(vec![created("web-1", "nginx", 11)], ImageLedger::default());
        for host in [
            "registry-1.docker.io",
            "auth.docker.io",
            "production.cloudflare.docker.com",
        ] {
            let found = world.found(&runtime_attempt(host, 10, 10));
            assert_eq!(found.image.as_deref(), Some("nginx"), "{host}");
            assert!(!found.evidence.contains(&Clue::Mirror));
        }
        assert_eq!(
            world.decide(&runtime_attempt("quay.io", 10, 10)),
            Decision::RuntimeUnattributed
        );
        // Quay's CDN serves quay.io's blobs.
        let world = World::new(
            vec![created("web-1", "quay.io/t/app:latest", 11)],
            ImageLedger::default(),
        );
        assert!(matches!(
            world.decide(&runtime_attempt("cdn01.quay.io", 10, 10)),
            Decision::Attributed(_)
        ));
        let mut world = World::new(
            vec![created(
                "web-1",
                "quay.io/openshift-release-dev/ocp:latest",
                11,
            )],
            ImageLedger::default(),
        );
        world.conf = Some(RegistriesConf {
            registries: vec![Registry {
                prefix: "quay.io/openshift-release-dev".into(),
                location: "quay.io/openshift-release-dev".into(),
                blocked: false,
                insecure: false,
                mirror_by_digest_only: false,
                mirrors: vec!["mirror.corp.example:5000/ocp".into()],
                file: PathBuf::from("/etc/containers/registries.conf"),
            }],
            ..RegistriesConf::default()
        });
        let found = world.found(&runtime_attempt("mirror.corp.example", 10, 10));
        assert!(found.evidence.contains(&Clue::Mirror), "{found:?}");
    }

    #[test]
    fn the_owner_from_pod_labels_names_the_template_to_change() {
        let mut world = World::new(
            vec![created("ovnkube-node-x7k2p", "quay.io/t/ovn:latest", 11)],
            ImageLedger::default(),
        );
        world.pods.apply(
            Listing {
                pods: vec![PodEntry {
                    sandbox_id: "sb".into(),
                    uid: "uid-ovnkube-node-x7k2p".into(),
                    namespace: "shop".into(),
                    name: "ovnkube-node-x7k2p".into(),
                    labels: [
                        ("controller-revision-hash", "6f9c8d7b5"),
                        ("pod-template-generation", "1"),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                }],
                ..Listing::default()
            },
            std::time::Instant::now(),
        );
        let policy = world
            .found(&runtime_attempt("quay.io", 10, 10))
            .policy
            .unwrap();
        assert_eq!(policy.owner.as_deref(), Some("DaemonSet/ovnkube-node"));
        assert!(
            policy
                .fix
                .unwrap()
                .ends_with("in DaemonSet/ovnkube-node's pod template")
        );
    }

    fn ancestor(pid: u32, comm: &str, exe: &str) -> Ancestor {
        Ancestor {
            pid,
            comm: comm.into(),
            exe: Some(exe.into()),
        }
    }

    #[test]
    fn a_tool_is_attributed_to_whoever_ran_it_past_shells() {
        let world = World::new(vec![], ImageLedger::default());
        let mut skopeo = attempt("upgrade", "machine-config-daemon", "quay.io", 1);
        skopeo.process.ancestors = vec![
            ancestor(30, "sh", "/usr/bin/bash"),
            ancestor(20, "machine-config-", "/usr/bin/machine-config-daemon"),
            ancestor(1, "systemd", "/usr/lib/systemd/systemd"),
        ];
        let found = world.found(&skopeo);
        assert_eq!(found.kind, OnBehalfOfKind::Process);
        let process = found.process.unwrap();
        assert_eq!(
            (process.pid, process.comm.as_str()),
            (20, "machine-config-")
        );
        assert_eq!(
            found.ancestry.as_deref(),
            Some("skopeo <- sh <- machine-config-daemon")
        );
        assert_eq!(found.evidence, [Clue::Ancestry]);
        assert_eq!(found.confidence, Confidence::High);
        assert_eq!(found.unit.as_deref(), Some("machine-config-daemon.service"));
        assert!(
            found
                .explanation
                .contains("in unit machine-config-daemon.service")
        );

        // Started by systemd itself: the unit is the caller.
        skopeo.process.ancestors = vec![ancestor(1, "systemd", "/usr/lib/systemd/systemd")];
        let found = world.found(&skopeo);
        assert_eq!(found.kind, OnBehalfOfKind::Unit);
        assert_eq!(found.process, None);
        assert_eq!(found.ancestry.as_deref(), Some("skopeo <- systemd"));
        skopeo.unit = None;
        assert_eq!(world.decide(&skopeo), Decision::ToolUnattributed);
        // No ancestors known (it exited before the agent read them).
        skopeo.process.ancestors.clear();
        assert_eq!(world.decide(&skopeo), Decision::ToolUnattributed);

        // Anything else acts for itself.
        let mut curl = attempt("boot", "curl", "quay.io", 1);
        curl.process.comm = "curl".into();
        curl.process.exe = Some("/usr/bin/curl".into());
        assert_eq!(world.decide(&curl), Decision::NotApplicable);
    }

    #[test]
    fn decisions_are_counted_by_kind_and_serialize_as_the_schema_says() {
        let world = World::new(
            vec![created("web-1", "quay.io/t/app:latest", 11)],
            ImageLedger::default(),
        );
        let mut stats = OnBehalfOfStats::default();
        let decision = world.decide(&runtime_attempt("quay.io", 10, 10));
        decision.count_into(&mut stats);
        world
            .decide(&runtime_attempt("ghcr.io", 10, 10))
            .count_into(&mut stats);
        Decision::NotApplicable.count_into(&mut stats);
        assert_eq!(stats.attributed, BTreeMap::from([(OnBehalfOfKind::Pod, 1)]));
        assert_eq!(stats.unattributed, 1);
        let Decision::Attributed(found) = decision else {
            unreachable!()
        };
        let json = serde_json::to_value(&*found).unwrap();
        assert_eq!(json["kind"], "pod");
        assert_eq!(
            json["evidence"],
            serde_json::json!(["cri_container_created"])
        );
        assert_eq!(json["confidence"], "high");
        assert_eq!(json["policy"]["source"], "image_reference");
        assert_eq!(json["policy"]["why"], "latest_tag");
        assert_eq!(json["process"], serde_json::Value::Null);
        let back: OnBehalfOf = serde_json::from_value(json).unwrap();
        assert_eq!(back, *found);
        let stats_json = serde_json::to_value(&stats).unwrap();
        assert_eq!(stats_json["attributed"]["pod"], 1);
    }
}
