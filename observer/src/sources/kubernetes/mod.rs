//! The Kubernetes API as a source of pull intents: the kubelet's `Pulling`
//! events for this node, each joined to its pod's stored spec (effective
//! pull policy, why, the field to change, the owning controller).
//!
//! Stages, data flowing one way:
//! watch (this module: kube-rs `watcher` on core/v1 Events with a field
//! selector, backoff) -> `events` (pure: event -> pod, container, image,
//! time) -> GET the pod (this module, cached by `cache`) -> `policy` (pure:
//! pod + container -> `PolicyJoin`) -> `IntentSink`.
//!
//! The API is optional and never contacted by surprise: only with
//! `--kubeconfig` (or the config's `kubernetes.kubeconfig`) or when running
//! in a pod (`KUBERNETES_SERVICE_HOST` set: in-cluster config). `KUBECONFIG`
//! and `~/.kube/config` are deliberately not read, so running the agent on a
//! laptop does not talk to whatever cluster is current. A source that cannot
//! reach the API reports why and changes no exit code. The task runs on its
//! own; it only ever sends into a bounded, non-blocking sink, so the event
//! pipeline never waits for it.

pub mod cache;
pub mod events;
pub mod pull_policy;

use std::{
    error::Error as StdError,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use futures_util::StreamExt;
use k8s_openapi::api::{
    apps::v1::ReplicaSet,
    core::v1::{Event, Pod},
};
use kube::{
    Api, Client,
    config::{KubeConfigOptions, Kubeconfig, KubeconfigError},
    runtime::{WatchStreamExt, watcher},
};
use observer_report::{
    observer::{KubernetesState, KubernetesStatus},
    on_behalf_of::IntentSignal,
};
use serde_json::Value;
use tokio::{sync::watch, task::JoinHandle};

use self::{cache::TtlCache, events::Ignored};
use crate::sources::pull_intent::{IntentPod, IntentSink, PullIntent};

/// A burst of events for one pod costs one GET; a recreated pod of the same
/// name is noticed by its uid.
const POD_CACHE_ENTRIES: usize = 512;
const POD_CACHE_TTL: Duration = Duration::from_secs(5);
/// Bounds each GET (the watch itself is a long poll, bounded by kube-rs).
const GET_TIMEOUT: Duration = Duration::from_secs(3);
/// Occurrences already turned into intents, so a relist does not repeat
/// them. The API server keeps events for an hour by default.
const SEEN_OCCURRENCES: usize = 8192;
const SEEN_TTL: Duration = Duration::from_secs(3600);
/// Pulls that started this long before the run are still worth an intent:
/// a pull the kubelet started just before the agent attached can still be
/// contacting the registry. Older ones are counted as `stale`.
pub const LOOKBACK: Duration = Duration::from_secs(300);
/// How long the end of the run waits for a GET in flight.
const FINISH_TIMEOUT: Duration = Duration::from_secs(3);

/// The environment variable the kubelet sets in every pod.
pub const IN_CLUSTER_ENV: &str = "KUBERNETES_SERVICE_HOST";

/// How the API is reached, decided once at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    Kubeconfig(PathBuf),
    InCluster,
    /// Not used, and why.
    Off(String),
}

/// `--kubeconfig` (or the config's) wins; else in-cluster when running in a
/// pod, unless the config turned it off; else off.
pub fn choose_access(
    kubeconfig: Option<&Path>,
    enabled: bool,
    service_host: Option<&str>,
) -> Access {
    match (kubeconfig, service_host.filter(|h| !h.is_empty())) {
        (Some(path), _) => Access::Kubeconfig(path.to_path_buf()),
        _ if !enabled => Access::Off(
            "turned off in the config (kubernetes.enabled: false); kubelet Pulling events are \
             not read"
                .into(),
        ),
        (None, Some(_)) => Access::InCluster,
        (None, None) => Access::Off(format!(
            "no --kubeconfig given and not running in a pod ({IN_CLUSTER_ENV} is unset); \
             kubelet Pulling events are not read"
        )),
    }
}

/// What [`KubernetesSource::spawn`] starts from.
pub enum Prepared {
    Ready(Box<kube::Config>),
    Unavailable {
        api_server: Option<String>,
        reason: String,
    },
    Off(String),
}

/// A kubeconfig the user named that cannot be read or used (exit 2).
#[derive(Debug, thiserror::Error)]
#[error(
    "kubeconfig {}: {}; give a readable kubeconfig with a current context \
     (`kubectl config view --minify --raw > node.kubeconfig`)",
    path.display(),
    chain(error)
)]
pub struct KubeconfigUnusable {
    pub path: PathBuf,
    /// Its causes are part of the message.
    pub error: KubeconfigError,
}

/// Loads the client configuration. A kubeconfig the user named that cannot
/// be read or used is the user's to fix (`Err`: exit 2); in-cluster
/// configuration that fails makes the source unavailable, with the reason.
pub async fn prepare(access: &Access) -> Result<Prepared, KubeconfigUnusable> {
    match access {
        Access::Off(reason) => Ok(Prepared::Off(reason.clone())),
        Access::InCluster => Ok(match kube::Config::incluster() {
            Ok(config) => Prepared::Ready(Box::new(config)),
            Err(e) => Prepared::Unavailable {
                api_server: None,
                reason: format!(
                    "running in a pod, but its in-cluster configuration is unusable: {}",
                    chain(&e)
                ),
            },
        }),
        Access::Kubeconfig(path) => {
            let unusable = |error| KubeconfigUnusable {
                path: path.clone(),
                error,
            };
            let kubeconfig = Kubeconfig::read_from(path).map_err(unusable)?;
            let config =
                kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await
                    .map_err(unusable)?;
            Ok(Prepared::Ready(Box::new(config)))
        }
    }
}

/// The running source.
pub struct KubernetesSource {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    status: Arc<Mutex<KubernetesStatus>>,
}

impl KubernetesSource {
    /// Starts watching (when `prepared` is ready). Intents for `node`'s
    /// kubelet pulls at or after `not_before` go to `sink`.
    pub fn spawn(
        prepared: Prepared,
        node: String,
        sink: IntentSink,
        not_before: Option<SystemTime>,
    ) -> KubernetesSource {
        let (stop, stop_rx) = watch::channel(false);
        let mut status = KubernetesStatus {
            node_name: Some(node.clone()),
            ..KubernetesStatus::default()
        };
        match prepared {
            Prepared::Off(reason) => status.reason = Some(reason),
            Prepared::Unavailable { api_server, reason } => {
                status.state = KubernetesState::Unavailable;
                status.api_server = api_server;
                status.reason = Some(reason);
            }
            Prepared::Ready(config) => {
                status.state = KubernetesState::Unavailable;
                status.api_server = Some(config.cluster_url.to_string());
                status.field_selector = Some(events::FIELD_SELECTOR.to_owned());
                match Client::try_from(*config) {
                    Ok(client) => {
                        let status = Arc::new(Mutex::new(status));
                        let worker = Worker {
                            client,
                            node,
                            sink,
                            not_before,
                            status: Arc::clone(&status),
                            pods: TtlCache::new(POD_CACHE_ENTRIES, POD_CACHE_TTL),
                            owners: TtlCache::new(POD_CACHE_ENTRIES, POD_CACHE_TTL),
                            seen: TtlCache::new(SEEN_OCCURRENCES, SEEN_TTL),
                        };
                        return KubernetesSource {
                            stop,
                            task: Some(tokio::spawn(worker.run(stop_rx))),
                            status,
                        };
                    }
                    Err(e) => status.reason = Some(format!("cannot build a client: {}", chain(&e))),
                }
            }
        }
        KubernetesSource {
            stop,
            task: None,
            status: Arc::new(Mutex::new(status)),
        }
    }

    /// Stops the watch (waiting briefly for a GET in flight) and returns
    /// the run's status.
    pub async fn finish(mut self) -> KubernetesStatus {
        let _ = self.stop.send(true);
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(FINISH_TIMEOUT, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
        let mut status = lock(&self.status).clone();
        if status.state == KubernetesState::Unavailable && status.reason.is_none() {
            status.reason = Some(match &status.last_error {
                Some(error) => format!("no call to the API server succeeded: {error}"),
                None => "the run ended before the API server answered".to_owned(),
            });
        }
        status
    }

    /// Reads the status as it is now, while the source runs (a report
    /// taken from the running agent).
    pub fn status_reader(&self) -> impl Fn() -> KubernetesStatus + Send + Sync + 'static {
        let status = Arc::clone(&self.status);
        move || {
            let mut now = lock(&status).clone();
            if now.state == KubernetesState::Unavailable && now.reason.is_none() {
                now.reason = Some(match &now.last_error {
                    Some(error) => format!("no call to the API server has succeeded yet: {error}"),
                    None => "the API server has not answered yet".to_owned(),
                });
            }
            now
        }
    }
}

fn lock(status: &Mutex<KubernetesStatus>) -> std::sync::MutexGuard<'_, KubernetesStatus> {
    status.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A pod as last read: present, or gone (404).
#[derive(Clone)]
enum Fetched {
    Found(Arc<Value>),
    Gone,
}

struct Worker {
    client: Client,
    node: String,
    sink: IntentSink,
    not_before: Option<SystemTime>,
    status: Arc<Mutex<KubernetesStatus>>,
    pods: TtlCache<(String, String), Fetched>,
    /// ReplicaSet -> the owner to name (its Deployment, or itself).
    owners: TtlCache<(String, String), String>,
    seen: TtlCache<events::Occurrence, ()>,
}

impl Worker {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let api: Api<Event> = Api::all(self.client.clone());
        let config = watcher::Config::default().fields(events::FIELD_SELECTOR);
        let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
        loop {
            let item = tokio::select! {
                _ = stop.changed() => return,
                item = stream.next() => item,
            };
            match item {
                None => return,
                Some(Ok(watcher::Event::Apply(event) | watcher::Event::InitApply(event))) => {
                    self.connected();
                    self.handle(&event).await;
                }
                Some(Ok(watcher::Event::InitDone)) => self.connected(),
                Some(Ok(watcher::Event::Init | watcher::Event::Delete(_))) => {}
                Some(Err(error)) => {
                    self.failed(watch_failure_kind(&error), describe_watch_error(&error))
                }
            }
        }
    }

    fn connected(&self) {
        let mut status = lock(&self.status);
        status.state = KubernetesState::Connected;
        status.reason = None;
    }

    fn failed(&self, kind: &str, error: String) {
        let mut status = lock(&self.status);
        *status.failures.entry(kind.to_owned()).or_default() += 1;
        status.last_error = Some(error);
    }

    fn ignored(&self, reason: Ignored) {
        *lock(&self.status)
            .events_ignored
            .entry(reason.name().to_owned())
            .or_default() += 1;
    }

    async fn handle(&mut self, event: &Event) {
        lock(&self.status).events_seen += 1;
        let pulling = match events::read_pulling(event, &self.node, self.not_before) {
            Ok(pulling) => pulling,
            Err(reason) => return self.ignored(reason),
        };
        let now = Instant::now();
        if self.seen.get(&pulling.occurrence, now).is_some() {
            return self.ignored(Ignored::AlreadySeen);
        }
        self.seen.insert(pulling.occurrence.clone(), (), now);
        let policy = match self.pod(&pulling.pod).await {
            Some(pod) => {
                let owner = self.owner_of(&pulling.pod.namespace, &pod).await;
                let container = pulling
                    .container
                    .as_ref()
                    .map(|(list, name)| (*list, name.as_str()));
                let join = pull_policy::join(&pod, container, &pulling.image, owner);
                if join.is_none() {
                    *lock(&self.status)
                        .failures
                        .entry("container_not_in_pod".into())
                        .or_default() += 1;
                }
                join
            }
            None => None,
        };
        self.sink.send(PullIntent {
            pod: pulling.pod,
            container: pulling.container.map(|(_, name)| name),
            image: pulling.image,
            at: pulling.at,
            signal: IntentSignal::KubeletPulling,
            policy,
        });
        lock(&self.status).events_used += 1;
    }

    /// The pod the event is about, from the cache or one GET; None when it
    /// is gone or could not be read (counted either way).
    async fn pod(&mut self, pod: &IntentPod) -> Option<Arc<Value>> {
        let key = (pod.namespace.clone(), pod.name.clone());
        let same_pod = |found: &Value| match (&pod.uid, pull_policy::uid_of(found)) {
            (Some(wanted), Some(uid)) => wanted == uid,
            _ => true,
        };
        match self.pods.get(&key, Instant::now()) {
            Some(Fetched::Found(found)) if same_pod(&found) => return Some(found),
            Some(Fetched::Gone) => return None,
            _ => {}
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let fetched = match tokio::time::timeout(GET_TIMEOUT, api.get(&pod.name)).await {
            Err(elapsed) => {
                self.failed(
                    "timeout",
                    format!("no answer within {GET_TIMEOUT:?}: {elapsed}"),
                );
                return None;
            }
            Ok(Err(kube::Error::Api(status))) if status.code == 404 => Fetched::Gone,
            Ok(Err(error)) => {
                self.failed(failure_kind(&error), describe(&error));
                return None;
            }
            Ok(Ok(found)) => match serde_json::to_value(&found) {
                Ok(value) => {
                    lock(&self.status).pods_fetched += 1;
                    if same_pod(&value) {
                        Fetched::Found(Arc::new(value))
                    } else {
                        // Recreated under the same name: the event's pod is gone.
                        Fetched::Gone
                    }
                }
                Err(error) => {
                    self.failed("decode", chain(&error));
                    return None;
                }
            },
        };
        self.pods.insert(key, fetched.clone(), Instant::now());
        match fetched {
            Fetched::Found(value) => Some(value),
            Fetched::Gone => {
                lock(&self.status).pods_gone += 1;
                None
            }
        }
    }

    /// The pod's controller as the report names it: a ReplicaSet's own
    /// controller (its Deployment) when one GET finds it, since the
    /// Deployment's template is the line to change.
    async fn owner_of(&mut self, namespace: &str, pod: &Value) -> Option<String> {
        let owner = pull_policy::controller_of(pod)?;
        if owner.kind != "ReplicaSet" {
            return Some(owner.display());
        }
        let key = (namespace.to_owned(), owner.name.clone());
        if let Some(named) = self.owners.get(&key, Instant::now()) {
            return Some(named);
        }
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), namespace);
        let named = match tokio::time::timeout(GET_TIMEOUT, api.get(&owner.name)).await {
            Err(elapsed) => {
                self.failed(
                    "timeout",
                    format!("no answer within {GET_TIMEOUT:?}: {elapsed}"),
                );
                return Some(owner.display());
            }
            Ok(Err(kube::Error::Api(status))) if status.code == 404 => owner.display(),
            Ok(Err(error)) => {
                self.failed(failure_kind(&error), describe(&error));
                return Some(owner.display());
            }
            Ok(Ok(replica_set)) => serde_json::to_value(&replica_set)
                .ok()
                .and_then(|value| pull_policy::controller_of(&value))
                .filter(|controller| controller.kind == "Deployment")
                .map_or_else(|| owner.display(), |deployment| deployment.display()),
        };
        self.owners.insert(key, named.clone(), Instant::now());
        Some(named)
    }
}

/// The kind a failed call is counted under.
pub fn failure_kind(error: &kube::Error) -> &'static str {
    match error {
        kube::Error::Api(status) => status_kind(status.code),
        kube::Error::HyperError(_) | kube::Error::Service(_) => "connect",
        kube::Error::SerdeError(_) | kube::Error::FromUtf8(_) => "decode",
        kube::Error::Auth(_) => "auth",
        _ => "other",
    }
}

fn watch_failure_kind(error: &watcher::Error) -> &'static str {
    match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => failure_kind(e),
        watcher::Error::WatchError(status) => status_kind(status.code),
        watcher::Error::NoResourceVersion => "decode",
    }
}

/// By HTTP status, as the API server answers with a `Status` object.
pub fn status_kind(code: u16) -> &'static str {
    match code {
        401 => "unauthorized",
        403 => "forbidden",
        410 => "expired",
        429 => "throttled",
        500..=599 => "server_error",
        _ => "api_error",
    }
}

/// One line for a failed call: an API `Status` as the server worded it
/// (kube-rs' own rendering adds the whole struct), anything else with its
/// causes.
pub fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!(
            "{} {}: {}",
            status.code,
            if status.reason.is_empty() {
                "Failure"
            } else {
                &status.reason
            },
            status.message
        ),
        other => chain(other),
    }
}

fn describe_watch_error(error: &watcher::Error) -> String {
    match error {
        watcher::Error::InitialListFailed(e) => format!("listing events: {}", describe(e)),
        watcher::Error::WatchStartFailed(e) => format!("starting the watch: {}", describe(e)),
        watcher::Error::WatchFailed(e) => format!("watching events: {}", describe(e)),
        watcher::Error::WatchError(status) => format!(
            "watching events: {} {}: {}",
            status.code, status.reason, status.message
        ),
        watcher::Error::NoResourceVersion => chain(error),
    }
}

/// An error and its causes in one line: kube-rs wraps the socket error
/// that says what actually went wrong several levels down.
fn chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A named kubeconfig that cannot be read is an error naming it.
    #[tokio::test]
    async fn an_unreadable_kubeconfig_is_the_users_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.kubeconfig");
        let Err(error) = prepare(&Access::Kubeconfig(missing.clone())).await else {
            panic!("a missing kubeconfig must not prepare")
        };
        assert_eq!(error.path, missing);
        let text = error.to_string();
        assert!(
            text.starts_with(&format!("kubeconfig {}: ", missing.display())),
            "{text}"
        );
        assert!(
            text.ends_with(
                "; give a readable kubeconfig with a current context (`kubectl config view --minify --raw > node.kubeconfig`)"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_api_is_used_only_when_asked_or_in_a_pod() {
        let path = Path::new("/etc/kubernetes/kubelet.conf");
        assert_eq!(
            choose_access(Some(path), true, None),
            Access::Kubeconfig(path.into())
        );
        // An explicit kubeconfig wins over the pod's own config, and over
        // the config file's `enabled: false` (a flag is the latest word).
        assert_eq!(
            choose_access(Some(path), false, Some("10.0.0.1")),
            Access::Kubeconfig(path.into())
        );
        assert_eq!(
            choose_access(None, true, Some("10.0.0.1")),
            Access::InCluster
        );
        let Access::Off(reason) = choose_access(None, true, None) else {
            panic!("a laptop's current cluster must not be contacted")
        };
        assert!(reason.contains("--kubeconfig"), "{reason}");
        assert!(matches!(
            choose_access(None, true, Some("")),
            Access::Off(_)
        ));
        let Access::Off(reason) = choose_access(None, false, Some("10.0.0.1")) else {
            panic!("turned off")
        };
        assert!(reason.contains("kubernetes.enabled"), "{reason}");
    }

    #[test]
    fn failures_are_counted_by_what_went_wrong() {
        let api = |code: u16| {
            kube::Error::Api(
                kube::core::Status::failure("x", "Forbidden")
                    .with_code(code)
                    .boxed(),
            )
        };
        assert_eq!(failure_kind(&api(403)), "forbidden");
        assert_eq!(failure_kind(&api(401)), "unauthorized");
        assert_eq!(failure_kind(&api(503)), "server_error");
        assert_eq!(failure_kind(&api(422)), "api_error");
        let bad_json = serde_json::from_str::<Value>("{").unwrap_err();
        assert_eq!(failure_kind(&kube::Error::SerdeError(bad_json)), "decode");
        assert_eq!(
            watch_failure_kind(&watcher::Error::WatchError(
                kube::core::Status::failure("too old", "Expired")
                    .with_code(410)
                    .boxed()
            )),
            "expired"
        );
    }

    #[test]
    fn api_errors_read_as_the_server_worded_them() {
        let status =
            kube::core::Status::failure("pods \"p\" is forbidden", "Forbidden").with_code(403);
        let error = kube::Error::Api(status.boxed());
        assert_eq!(describe(&error), "403 Forbidden: pods \"p\" is forbidden");
        assert_eq!(
            describe_watch_error(&watcher::Error::InitialListFailed(error)),
            "listing events: 403 Forbidden: pods \"p\" is forbidden"
        );
    }

    #[test]
    fn error_chains_read_as_one_line() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = kube::Error::ReadEvents(io);
        assert_eq!(chain(&outer), "Error reading events stream: refused");
    }
}
