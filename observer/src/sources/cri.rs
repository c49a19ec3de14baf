//! Asks the container runtime, over its CRI socket, which pods and
//! containers exist (ListPodSandbox, ListContainers), every
//! [`REFRESH_INTERVAL`] and soon after attribution misses a pod. Runs on its
//! own tokio task; attribution only reads the last published
//! [`PodDirectory`], so a slow or dead runtime can never stall the pipeline.
//! Every connect and call is bounded by [`CALL_TIMEOUT`].
//!
//! For on-behalf-of attribution it also lists images (ListImages) into an
//! [`ImageLedger`] and reports each container the first time it appears as
//! a pull intent (`images::container_intents`).

use std::{
    io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    ListContainersRequest, ListImagesRequest, ListPodSandboxRequest, VersionRequest,
    image_service_client::ImageServiceClient, runtime_service_client::RuntimeServiceClient,
};
use observer_report::observer::{CriState, CriStatus, SocketStatus};
use tokio::{
    net::UnixStream,
    sync::{Notify, watch},
    task::JoinHandle,
};
use tonic::transport::{Channel, Endpoint, Uri};

use super::{
    images::{self, ImageLedger},
    pods::{ContainerEntry, ImageEntry, Listing, PodDirectory, PodEntry},
    pull_intent::{CONTAINER_CREATED_BEFORE, IntentSink},
};

/// Where CRI-O and containerd listen by default (`/var/run` is a symlink to
/// `/run` on current distributions, but not on every older one).
pub const DEFAULT_SOCKETS: &[&str] = &[
    "/run/crio/crio.sock",
    "/var/run/crio/crio.sock",
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
];

pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);
/// Refreshes asked for by attribution misses are at most this frequent: a
/// pod the runtime does not know would otherwise trigger one per event.
pub const MIN_REFRESH_GAP: Duration = Duration::from_millis(200);
/// Bounds each connect and each call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// A node with hundreds of pods answers ListContainers with a few MiB.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// The sockets to ask: the ones given (`--cri-socket`), else every default
/// socket that exists, with `/var/run/...` duplicates of `/run/...` dropped.
pub fn choose_sockets(
    given: &[PathBuf],
    host_root: &Path,
    exists: impl Fn(&Path) -> bool,
) -> Vec<PathBuf> {
    if !given.is_empty() {
        return given.to_vec();
    }
    let mut chosen: Vec<PathBuf> = Vec::new();
    for default in DEFAULT_SOCKETS.iter().map(Path::new) {
        let same_as_chosen = default
            .strip_prefix("/var")
            .is_ok_and(|under_run| chosen.iter().any(|c| *c == host_root.join(under_run)));
        let candidate = under(host_root, default);
        if exists(&candidate) && !same_as_chosen {
            chosen.push(candidate);
        }
    }
    chosen
}

/// `path` (absolute) inside the host root.
fn under(host_root: &Path, path: &Path) -> PathBuf {
    host_root.join(path.strip_prefix("/").unwrap_or(path))
}

/// What attribution holds: the last published directory, and a way to ask
/// for an early refresh. Never blocks.
#[derive(Clone)]
pub struct PodSource {
    directory: watch::Receiver<Arc<PodDirectory>>,
    wake: Arc<Notify>,
}

impl PodSource {
    /// A source that never changes (tests, or no CRI at all).
    pub fn fixed(directory: PodDirectory) -> PodSource {
        let (_, receiver) = watch::channel(Arc::new(directory));
        PodSource {
            directory: receiver,
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn current(&self) -> Arc<PodDirectory> {
        Arc::clone(&self.directory.borrow())
    }

    /// Asks the watcher to list again soon (rate-limited on its side).
    pub fn request_refresh(&self) {
        self.wake.notify_one();
    }
}

/// Told the uid of a pod that is gone.
pub type PodRemoved = Box<dyn Fn(&str) + Send + Sync>;

/// The running watcher task.
pub struct CriWatcher {
    stop: watch::Sender<bool>,
    task: JoinHandle<(Arc<PodDirectory>, ImageLedger)>,
    status: Arc<Mutex<CriStatus>>,
}

/// What the watcher knew when it stopped.
pub struct CriFinal {
    /// The final listing, tombstones included.
    pub directory: Arc<PodDirectory>,
    /// Image names present on the node since when.
    pub images: ImageLedger,
    pub status: CriStatus,
}

impl CriWatcher {
    /// Starts watching `sockets` (none: the source stays empty and the
    /// status says why, with `no_socket_reason`). `on_pod_removed` gets the
    /// uid of each pod a listing no longer holds (metrics drop its series);
    /// `intents` gets each container the first time it is listed.
    pub fn spawn(
        sockets: Vec<PathBuf>,
        no_socket_reason: String,
        on_pod_removed: PodRemoved,
        intents: IntentSink,
    ) -> (CriWatcher, PodSource) {
        let (publish, directory) = watch::channel(Arc::new(PodDirectory::default()));
        let wake = Arc::new(Notify::new());
        let (stop, stop_rx) = watch::channel(false);
        let status = Arc::new(Mutex::new(CriStatus {
            state: CriState::Unavailable,
            reason: sockets.is_empty().then_some(no_socket_reason),
            sockets: sockets
                .iter()
                .map(|path| SocketStatus {
                    path: path.display().to_string(),
                    ..SocketStatus::default()
                })
                .collect(),
            ..CriStatus::default()
        }));
        let task = tokio::spawn(watch_runtimes(
            sockets,
            publish,
            Arc::clone(&wake),
            stop_rx,
            Arc::clone(&status),
            on_pod_removed,
            intents,
        ));
        (
            CriWatcher { stop, task, status },
            PodSource { directory, wake },
        )
    }

    /// Lists once more (bounded by the call timeouts), stops, and returns
    /// the final directory, tombstones included, the image ledger and the
    /// run's status.
    pub async fn finish(self) -> CriFinal {
        let _ = self.stop.send(true);
        let (directory, images) = self.task.await.unwrap_or_default();
        let status = self
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        CriFinal {
            directory,
            images,
            status,
        }
    }

    /// Reads the status as it is now, while the watcher runs (a report
    /// taken from the running agent).
    pub fn status_reader(&self) -> impl Fn() -> CriStatus + Send + Sync + 'static {
        let status = Arc::clone(&self.status);
        move || {
            status
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        }
    }
}

struct Runtime {
    path: PathBuf,
    client: Option<RuntimeServiceClient<Channel>>,
    images: Option<ImageServiceClient<Channel>>,
    /// The last good listing: a socket that fails one refresh must not make
    /// its pods look removed.
    last: Listing,
    warned: bool,
}

async fn watch_runtimes(
    sockets: Vec<PathBuf>,
    publish: watch::Sender<Arc<PodDirectory>>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    status: Arc<Mutex<CriStatus>>,
    on_pod_removed: PodRemoved,
    intents: IntentSink,
) -> (Arc<PodDirectory>, ImageLedger) {
    let mut runtimes: Vec<Runtime> = sockets
        .into_iter()
        .map(|path| Runtime {
            path,
            client: None,
            images: None,
            last: Listing::default(),
            warned: false,
        })
        .collect();
    let mut watched = Watched {
        directory: PodDirectory::default(),
        images: ImageLedger::default(),
        // A container created before this could only match a contact the
        // agent cannot have seen.
        intents_since: SystemTime::now() - CONTAINER_CREATED_BEFORE,
        intents,
    };
    if runtimes.is_empty() {
        return (Arc::new(watched.directory), watched.images);
    }
    loop {
        let started = Instant::now();
        for uid in refresh(&mut runtimes, &mut watched, &status).await {
            on_pod_removed(&uid);
        }
        let _ = publish.send(Arc::new(watched.directory.clone()));
        if *stop.borrow() {
            return (Arc::new(watched.directory), watched.images);
        }
        tokio::select! {
            _ = tokio::time::sleep(REFRESH_INTERVAL) => {}
            _ = wake.notified() => {
                tokio::time::sleep(MIN_REFRESH_GAP.saturating_sub(started.elapsed())).await;
            }
            // Stopping: one last listing (the loop's next turn), then return.
            _ = stop.changed() => {}
        }
    }
}

/// What the watcher keeps between listings.
struct Watched {
    directory: PodDirectory,
    images: ImageLedger,
    intents_since: SystemTime,
    intents: IntentSink,
}

async fn refresh(
    runtimes: &mut [Runtime],
    watched: &mut Watched,
    status: &Mutex<CriStatus>,
) -> Vec<String> {
    let mut merged = Listing::default();
    let mut images_listed = false;
    for (index, runtime) in runtimes.iter_mut().enumerate() {
        let outcome = list_one(runtime).await;
        let mut status = status.lock().unwrap_or_else(PoisonError::into_inner);
        let socket = &mut status.sockets[index];
        match outcome {
            Ok((listing, version, images_failure)) => {
                socket.listings += 1;
                socket.last_error = None;
                if version.is_some() {
                    socket.runtime = version;
                }
                let images = match images_failure {
                    None => {
                        images_listed = true;
                        listing.images
                    }
                    Some((reason, error)) => {
                        *socket.failures.entry(reason.to_string()).or_default() += 1;
                        socket.last_error = Some(error);
                        std::mem::take(&mut runtime.last.images)
                    }
                };
                runtime.last = Listing { images, ..listing };
                status.state = CriState::Connected;
                status.reason = None;
            }
            Err((reason, error)) => {
                runtime.client = None;
                *socket.failures.entry(reason.to_string()).or_default() += 1;
                socket.last_error = Some(error.clone());
                if status.state != CriState::Connected {
                    status.reason = Some(format!(
                        "no CRI socket answered (last: {}: {error}); pods are named by uid only",
                        runtime.path.display()
                    ));
                }
                if !runtime.warned {
                    runtime.warned = true;
                    eprintln!(
                        "registry-observer: warning: CRI socket {}: {error}; pods there are attributed by cgroup only (uid, container id) until it answers",
                        runtime.path.display()
                    );
                }
            }
        }
        merged.pods.extend(runtime.last.pods.iter().cloned());
        merged
            .containers
            .extend(runtime.last.containers.iter().cloned());
        merged.images.extend(runtime.last.images.iter().cloned());
    }
    for intent in images::container_intents(&watched.directory, &merged, watched.intents_since) {
        watched.intents.send(intent);
    }
    // Only a listing that answered says what is present; before the first
    // one, presence stays unknown.
    if images_listed {
        watched.images.apply(&merged.images, SystemTime::now());
    }
    let departed = watched.directory.apply(merged, Instant::now());
    let mut status = status.lock().unwrap_or_else(PoisonError::into_inner);
    status.refreshes += 1;
    status.pods_live = watched.directory.live_pods();
    status.tombstones = watched.directory.tombstones();
    departed
}

type Failure = (&'static str, String);

/// One socket's pods, containers and images; the runtime's version on
/// (re)connect; and why images could not be listed, if they could not
/// (pods are still named then).
async fn list_one(
    runtime: &mut Runtime,
) -> Result<(Listing, Option<String>, Option<Failure>), Failure> {
    let mut version = None;
    if runtime.client.is_none() {
        let channel = connect(&runtime.path).await?;
        runtime.images =
            Some(ImageServiceClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE));
        let mut client = RuntimeServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
        let answer = bounded(client.version(VersionRequest {
            version: "v1".into(),
        }))
        .await?;
        version = Some(format!(
            "{} {}",
            answer.runtime_name, answer.runtime_version
        ));
        runtime.client = Some(client);
    }
    let client = runtime.client.as_mut().expect("connected above");
    let sandboxes =
        bounded(client.list_pod_sandbox(ListPodSandboxRequest { filter: None })).await?;
    let containers =
        bounded(client.list_containers(ListContainersRequest { filter: None })).await?;
    let image_client = runtime.images.as_mut().expect("connected above");
    let (images, images_failure) =
        match bounded(image_client.list_images(ListImagesRequest { filter: None })).await {
            Ok(answer) => (answer.images, None),
            Err((_, error)) => (Vec::new(), Some(("list_images", error))),
        };
    let listing = Listing {
        pods: sandboxes
            .items
            .into_iter()
            .filter_map(|sandbox| {
                let metadata = sandbox.metadata?;
                Some(PodEntry {
                    sandbox_id: sandbox.id,
                    uid: metadata.uid,
                    namespace: metadata.namespace,
                    name: metadata.name,
                    labels: sandbox.labels.into_iter().collect(),
                })
            })
            .collect(),
        containers: containers
            .containers
            .into_iter()
            .map(|container| {
                let image = container.image.unwrap_or_default();
                ContainerEntry {
                    name: container.metadata.map(|m| m.name).unwrap_or_default(),
                    id: container.id,
                    sandbox_id: container.pod_sandbox_id,
                    // Newer runtimes keep the name the kubelet asked for
                    // here when `image` holds an id.
                    image: if image.user_specified_image.is_empty() {
                        image.image
                    } else {
                        image.user_specified_image
                    },
                    image_id: container.image_ref,
                    created_at: u64::try_from(container.created_at)
                        .ok()
                        .filter(|ns| *ns > 0)
                        .map(|ns| SystemTime::UNIX_EPOCH + Duration::from_nanos(ns)),
                }
            })
            .collect(),
        images: images
            .into_iter()
            .map(|image| ImageEntry {
                id: image.id,
                repo_tags: image.repo_tags,
                repo_digests: image.repo_digests,
            })
            .collect(),
    };
    Ok((listing, version, images_failure))
}

async fn connect(path: &Path) -> Result<Channel, Failure> {
    let socket = path.to_path_buf();
    // The URI is required by tonic but unused: the connector dials the socket.
    let endpoint = Endpoint::from_static("http://cri.invalid")
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    let connecting = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
        let socket = socket.clone();
        async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
    }));
    match tokio::time::timeout(CALL_TIMEOUT, connecting).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(error)) => Err(("connect", describe(&error))),
        Err(_) => Err((
            "timeout",
            format!("no answer within {CALL_TIMEOUT:?} when connecting"),
        )),
    }
}

async fn bounded<T>(
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => {
            Err(("timeout", format!("no answer within {CALL_TIMEOUT:?}")))
        }
        Ok(Err(status)) => Err(("call", format!("CRI call failed: {}", status.message()))),
        Err(_) => Err(("timeout", format!("no answer within {CALL_TIMEOUT:?}"))),
    }
}

/// The innermost cause: tonic's own message is just "transport error".
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    innermost.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::pull_intent::intent_channel;

    fn no_intents() -> IntentSink {
        intent_channel(1).0
    }

    #[test]
    fn given_sockets_win_else_existing_defaults_without_duplicates() {
        let given = vec![PathBuf::from("/tmp/x.sock")];
        let root = Path::new("/");
        assert_eq!(choose_sockets(&given, root, |_| true), given);
        assert_eq!(
            choose_sockets(&[], root, |_| true),
            vec![
                PathBuf::from("/run/crio/crio.sock"),
                PathBuf::from("/run/containerd/containerd.sock")
            ]
        );
        assert_eq!(
            choose_sockets(&[], root, |p| p.starts_with("/var/run/containerd")),
            vec![PathBuf::from("/var/run/containerd/containerd.sock")]
        );
        assert!(choose_sockets(&[], root, |_| false).is_empty());
    }

    #[test]
    fn default_sockets_are_looked_up_under_the_host_root_and_given_ones_are_not() {
        let host = Path::new("/host");
        assert_eq!(
            choose_sockets(&[], host, |p| p.starts_with("/host")),
            vec![
                PathBuf::from("/host/run/crio/crio.sock"),
                PathBuf::from("/host/run/containerd/containerd.sock")
            ]
        );
        // The agent's own /run is not the host's.
        assert!(choose_sockets(&[], host, |p| !p.starts_with("/host")).is_empty());
        assert_eq!(
            choose_sockets(&[], host, |p| p.starts_with("/host/var/run/crio")),
            vec![PathBuf::from("/host/var/run/crio/crio.sock")]
        );
        let given = vec![PathBuf::from("/run/x.sock")];
        assert_eq!(choose_sockets(&given, host, |_| true), given);
    }

    /// A socket path with nothing behind it fails fast, is counted, and
    /// leaves an empty directory; finishing is bounded.
    #[tokio::test]
    async fn a_missing_socket_is_counted_never_waited_for() {
        let missing = std::env::temp_dir().join(format!("ro-no-cri-{}.sock", std::process::id()));
        let started = Instant::now();
        let (watcher, source) = CriWatcher::spawn(
            vec![missing.clone()],
            String::new(),
            Box::new(|_| {}),
            no_intents(),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(source.current().live_pods(), 0);
        let CriFinal {
            directory,
            images,
            status,
        } = watcher.finish().await;
        // Nothing answered: image presence stays unknown.
        assert_eq!(images.listings(), 0);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(directory.live_pods(), 0);
        assert_eq!(status.state, CriState::Unavailable);
        let socket = &status.sockets[0];
        assert_eq!(socket.path, missing.display().to_string());
        assert!(socket.failures["connect"] >= 1, "{status:?}");
        assert!(
            status.reason.as_deref().unwrap().contains("No such file"),
            "{status:?}"
        );
    }

    /// A socket that accepts connections but never speaks (a hung runtime)
    /// costs at most the timeouts.
    #[tokio::test]
    async fn a_silent_socket_times_out() {
        let path = std::env::temp_dir().join(format!("ro-silent-cri-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        // Bound but never accepted: connects queue in the backlog, unanswered.
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let started = Instant::now();
        let (watcher, _source) = CriWatcher::spawn(
            vec![path.clone()],
            String::new(),
            Box::new(|_| {}),
            no_intents(),
        );
        let CriFinal { status, .. } = watcher.finish().await;
        let elapsed = started.elapsed();
        std::fs::remove_file(&path).unwrap();
        assert!(elapsed < CALL_TIMEOUT * 4, "{elapsed:?}");
        assert_eq!(status.state, CriState::Unavailable);
        let failures: u64 = status.sockets[0].failures.values().sum();
        assert!(failures >= 1, "{status:?}");
    }

    #[tokio::test]
    async fn no_socket_says_why() {
        let (watcher, _) = CriWatcher::spawn(
            vec![],
            "no CRI socket found".into(),
            Box::new(|_| {}),
            no_intents(),
        );
        let CriFinal { status, images, .. } = watcher.finish().await;
        assert_eq!(images.listings(), 0);
        assert_eq!(status.state, CriState::Unavailable);
        assert_eq!(status.reason.as_deref(), Some("no CRI socket found"));
        assert_eq!(status.refreshes, 0);
    }
}
