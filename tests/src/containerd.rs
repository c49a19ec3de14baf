//! A private containerd (1.6, Debian's) driven through the real CRI v1 API,
//! the way the kubelet drives CRI-O or containerd on a node.
//!
//! Layout: containerd runs with its own root, state and socket under the
//! testbed's temp dir, in the testbed's network namespace (entered with
//! `nsenter --net`, not `ip netns exec`, which would remount /sys and hide
//! the cgroup2 tree from the runtime), with the testbed's resolv.conf bound
//! over /etc/resolv.conf in a private mount namespace. Pods use the node's
//! (here: the testbed's) network, so no CNI is involved and every packet
//! stays inside the testbed. Images are imported from an OCI archive: no
//! registry pull is needed to start a pod. A test can also pull, the way
//! the kubelet does ([`Containerd::pull_image`]): containerd resolves
//! `quay.io` through the testbed's dnsmasq and trusts the testbed's CA for
//! it (a `hosts.toml` under the config's `registry.config_path`).
//!
//! Pod cgroups are `/kubepods/besteffort/pod<uid>/<id>` (cgroupfs driver).

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerStatusRequest, CreateContainerRequest, DnsConfig,
    ImageSpec, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListContainersRequest,
    ListImagesRequest, NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
    PullImageRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest, image_service_client::ImageServiceClient,
    runtime_service_client::RuntimeServiceClient,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{
    Testbed,
    process::{die_with_parent, poll_until, run_checked, stop_child},
};

/// Executables this harness runs.
pub const CONTAINERD_TOOLS: &[&str] = &[
    "containerd",
    "containerd-shim-runc-v2",
    "runc",
    "ctr",
    "unshare",
    "nsenter",
    "umoci",
    "skopeo",
];

/// The image every pod runs (and the sandbox image): the testbed's busybox
/// image with `sleep` as its command, so a sandbox stays up.
pub const POD_IMAGE: &str = "quay.io/t/sleeper:1";

const CMD_TIMEOUT: Duration = Duration::from_secs(60);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A fresh pod uid (v4 shape) from our pid, `n` and the clock: unique per
/// run, so pods of earlier runs never match.
pub fn pod_uid(n: u32) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        std::process::id(),
        n & 0xffff,
        (nanos >> 48) & 0xfff,
        (nanos >> 36) & 0xfff,
        nanos & 0xffff_ffff_ffff
    )
}

/// What a test asks for.
#[derive(Clone, Debug)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub labels: HashMap<String, String>,
    pub container: String,
    /// argv of the container's process (run with the image's PATH).
    pub command: Vec<String>,
}

/// A started pod.
#[derive(Clone, Debug)]
pub struct RunningPod {
    pub sandbox_id: String,
    pub container_id: String,
    pub uid: String,
}

pub struct Containerd {
    dir: PathBuf,
    socket: PathBuf,
    child: Option<Child>,
    runtime: tokio::runtime::Runtime,
    client: Option<RuntimeServiceClient<Channel>>,
    images: Option<ImageServiceClient<Channel>>,
    dns_server: String,
    /// Sandboxes not yet removed, with their pod uid (for cgroup cleanup).
    pods: Vec<(String, String)>,
}

impl Containerd {
    /// Starts containerd in `testbed`'s namespace and imports [`POD_IMAGE`].
    pub fn start(testbed: &Testbed) -> anyhow::Result<Containerd> {
        crate::require_root_and_tools(CONTAINERD_TOOLS);
        let dir = testbed.temp_dir().join("containerd");
        fs::create_dir_all(dir.join("cni"))?;
        let archive = dir.join("sleeper.tar");
        make_pod_image(testbed, &archive)?;
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        fs::write(&config, config_toml(&dir, &socket))?;
        // containerd pulls from the testbed's TLS registry under its real
        // name; the registry's certificate is signed by the test CA.
        let quay = dir.join("certs.d").join("quay.io");
        fs::create_dir_all(&quay)?;
        fs::write(
            quay.join("hosts.toml"),
            format!(
                "server = \"https://quay.io\"\n[host.\"https://quay.io\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"{}\"\n",
                testbed.ca_cert().display()
            ),
        )?;

        let resolv = Path::new("/etc/netns")
            .join(testbed.netns())
            .join("resolv.conf");
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "slave", "sh", "-c"])
            .arg(format!(
                "mount --bind '{}' /etc/resolv.conf && exec nsenter --net=/run/netns/{} containerd --config '{}'",
                resolv.display(),
                testbed.netns(),
                config.display()
            ))
            .stdin(Stdio::null());
        let log = fs::File::create(dir.join("containerd.log"))?;
        command.stdout(log.try_clone()?).stderr(log);
        die_with_parent(&mut command);
        // unshare execs sh, which execs nsenter, which execs containerd: the
        // child's pid is containerd's.
        let child = command.spawn().context("spawning containerd")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut containerd = Containerd {
            dir: dir.clone(),
            socket: socket.clone(),
            child: Some(child),
            client: None,
            images: None,
            runtime,
            dns_server: testbed.host_ip().to_string(),
            pods: Vec::new(),
        };
        if !poll_until(Duration::from_secs(20), || socket.exists()) {
            bail!(
                "containerd did not create {} within 20 s; its log:\n{}",
                socket.display(),
                containerd.log()
            );
        }
        let channel = containerd
            .runtime
            .block_on(connect(&socket))
            .with_context(|| format!("connecting to {}", socket.display()))?;
        containerd.images = Some(ImageServiceClient::new(channel.clone()));
        containerd.client = Some(RuntimeServiceClient::new(channel));
        let mut import = Command::new("ctr");
        import
            .arg("--address")
            .arg(&socket)
            .args(["--namespace", "k8s.io", "images", "import"])
            .arg(&archive);
        run_checked(&mut import, CMD_TIMEOUT).context("importing the pod image")?;
        Ok(containerd)
    }

    /// The CRI socket, for `--cri-socket`.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// containerd's own log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// What a pod's container wrote to stdout/stderr (CRI log format).
    pub fn container_log(&self, uid: &str, container: &str) -> String {
        fs::read_to_string(
            self.dir
                .join("logs")
                .join(uid)
                .join(format!("{container}.log")),
        )
        .unwrap_or_default()
    }

    /// RunPodSandbox, CreateContainer, StartContainer: a pod with one
    /// container running [`POD_IMAGE`] (imported, never pulled), on the
    /// node's network, resolving through the testbed.
    pub fn run_pod(&mut self, spec: &PodSpec) -> anyhow::Result<RunningPod> {
        let sandbox_id = self.run_sandbox(spec)?;
        self.start_container(spec, &sandbox_id, POD_IMAGE)
    }

    /// RunPodSandbox alone: the pod exists, no container yet (the kubelet
    /// pulls the images between this and CreateContainer).
    pub fn run_sandbox(&mut self, spec: &PodSpec) -> anyhow::Result<String> {
        let logs = self.dir.join("logs").join(&spec.uid);
        fs::create_dir_all(&logs)?;
        let config = self.sandbox_config(spec);
        let mut client = self.client.clone().context("not connected")?;
        let sandbox_id = self.runtime.block_on(async move {
            let answer = bounded(client.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            }))
            .await
            .context("RunPodSandbox")?;
            anyhow::Ok(answer.pod_sandbox_id)
        })?;
        self.pods.push((sandbox_id.clone(), spec.uid.clone()));
        Ok(sandbox_id)
    }

    /// PullImage the way the kubelet asks for it: the image spec plus the
    /// pod's sandbox config. Returns the image reference containerd answers
    /// (its image id).
    pub fn pull_image(&mut self, spec: &PodSpec, image: &str) -> anyhow::Result<String> {
        let config = self.sandbox_config(spec);
        let mut images = self.images.clone().context("not connected")?;
        let image = image.to_string();
        self.runtime.block_on(async move {
            let answer = bounded(images.pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image,
                    ..ImageSpec::default()
                }),
                auth: None,
                sandbox_config: Some(config),
            }))
            .await
            .context("PullImage")?;
            anyhow::Ok(answer.image_ref)
        })
    }

    /// CreateContainer + StartContainer of `image` (already present: pulled
    /// or imported) in the sandbox `sandbox_id` of `spec`'s pod.
    pub fn start_container(
        &mut self,
        spec: &PodSpec,
        sandbox_id: &str,
        image: &str,
    ) -> anyhow::Result<RunningPod> {
        let sandbox_config = self.sandbox_config(spec);
        let container_config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: spec.container.clone(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: image.into(),
                ..ImageSpec::default()
            }),
            command: spec.command.clone(),
            log_path: format!("{}.log", spec.container),
            ..ContainerConfig::default()
        };
        let mut client = self.client.clone().context("not connected")?;
        let sandbox = sandbox_id.to_string();
        let container_id = self.runtime.block_on(async move {
            let container_id = bounded(client.create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox,
                config: Some(container_config),
                sandbox_config: Some(sandbox_config),
            }))
            .await
            .context("CreateContainer")?
            .container_id;
            bounded(client.start_container(StartContainerRequest {
                container_id: container_id.clone(),
            }))
            .await
            .context("StartContainer")?;
            anyhow::Ok(container_id)
        })?;
        Ok(RunningPod {
            sandbox_id: sandbox_id.to_string(),
            container_id,
            uid: spec.uid.clone(),
        })
    }

    /// What the CRI says of the runtime's images and containers, as debug
    /// text: ListImages, ListContainers and ContainerStatus of `container`.
    pub fn describe_images(&mut self, container: &str) -> anyhow::Result<String> {
        let mut client = self.client.clone().context("not connected")?;
        let mut images = self.images.clone().context("not connected")?;
        let container = container.to_string();
        self.runtime.block_on(async move {
            let listed = bounded(images.list_images(ListImagesRequest { filter: None })).await?;
            let containers =
                bounded(client.list_containers(ListContainersRequest { filter: None })).await?;
            let status = bounded(client.container_status(ContainerStatusRequest {
                container_id: container,
                verbose: false,
            }))
            .await?;
            anyhow::Ok(format!(
                "ListImages: {:#?}\nListContainers: {:#?}\nContainerStatus: {:#?}",
                listed.images, containers.containers, status.status
            ))
        })
    }

    fn sandbox_config(&self, spec: &PodSpec) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: spec.name.clone(),
                uid: spec.uid.clone(),
                namespace: spec.namespace.clone(),
                attempt: 0,
            }),
            // Node-network pods share the node's UTS namespace: no hostname of their own.
            hostname: String::new(),
            log_directory: self.dir.join("logs").join(&spec.uid).display().to_string(),
            dns_config: Some(DnsConfig {
                servers: vec![self.dns_server.clone()],
                searches: vec![],
                options: vec![],
            }),
            labels: spec.labels.clone(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/kubepods/besteffort/pod{}", spec.uid),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        ..NamespaceOption::default()
                    }),
                    ..LinuxSandboxSecurityContext::default()
                }),
                ..LinuxPodSandboxConfig::default()
            }),
            ..PodSandboxConfig::default()
        }
    }

    /// StopPodSandbox + RemovePodSandbox: the pod is gone from the CRI's
    /// listings, as after a short-lived pod finishes and is deleted.
    pub fn remove_pod(&mut self, sandbox_id: &str) -> anyhow::Result<()> {
        let mut client = self.client.clone().context("not connected")?;
        let id = sandbox_id.to_string();
        self.runtime.block_on(async move {
            // A container exiting at the moment it is stopped can make
            // containerd 1.6 fail the stop ("ttrpc: closed"); it succeeds
            // when asked again.
            let mut stopped = Err(anyhow::anyhow!("not tried"));
            for _ in 0..5 {
                stopped = bounded(client.stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                }))
                .await;
                if stopped.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            stopped.context("StopPodSandbox")?;
            bounded(client.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }))
                .await
                .context("RemovePodSandbox")?;
            anyhow::Ok(())
        })?;
        if let Some(index) = self.pods.iter().position(|(id, _)| id == sandbox_id) {
            let (_, uid) = self.pods.remove(index);
            remove_pod_cgroups(&uid);
        }
        Ok(())
    }
}

impl Drop for Containerd {
    /// Removes every pod (their shims exit with them), stops containerd by
    /// PID, and removes the pods' cgroup directories. Never panics.
    fn drop(&mut self) {
        let sandboxes: Vec<String> = self.pods.iter().map(|(id, _)| id.clone()).collect();
        for id in sandboxes {
            if let Err(e) = self.remove_pod(&id) {
                eprintln!("observer-tests: removing pod sandbox {id}: {e:#}");
            }
        }
        for (_, uid) in std::mem::take(&mut self.pods) {
            remove_pod_cgroups(&uid);
        }
        if let Some(mut child) = self.child.take()
            && let Err(e) = stop_child(&mut child, libc::SIGTERM, Duration::from_secs(10))
        {
            eprintln!("observer-tests: stopping containerd: {e:#}");
        }
        remove_empty_parents();
    }
}

async fn connect(socket: &Path) -> anyhow::Result<Channel> {
    let socket = socket.to_path_buf();
    let channel = Endpoint::from_static("http://cri.invalid")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await?;
    Ok(channel)
}

async fn bounded<T>(
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => bail!("{}: {}", status.code(), status.message()),
        Err(_) => bail!("no answer within {CALL_TIMEOUT:?}"),
    }
}

fn config_toml(dir: &Path, socket: &Path) -> String {
    let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
    format!(
        "version = 2\n\
         root = \"{root}\"\n\
         state = \"{state}\"\n\
         disabled_plugins = [\"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.zfs\", \
         \"io.containerd.snapshotter.v1.devmapper\", \"io.containerd.snapshotter.v1.aufs\"]\n\
         [grpc]\n  address = \"{socket}\"\n\
         [{cri}]\n\
         \x20 sandbox_image = \"{POD_IMAGE}\"\n\
         \x20 # Without it runc fails to create containers here (no CAP_SYS_RESOURCE).\n\
         \x20 restrict_oom_score_adj = true\n\
         [{cri}.containerd]\n  default_runtime_name = \"runc\"\n\
         [{cri}.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\
         [{cri}.containerd.runtimes.runc.options]\n  SystemdCgroup = false\n\
         [{cri}.cni]\n  bin_dir = \"/usr/lib/cni\"\n  conf_dir = \"{cni}\"\n\
         [{cri}.registry]\n  config_path = \"{certs}\"\n",
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        socket = socket.display(),
        cni = dir.join("cni").display(),
        certs = dir.join("certs.d").display(),
    )
}

/// Tags the testbed's busybox image as `sleeper` with `sleep 100000` as
/// its command and writes it as an OCI archive named [`POD_IMAGE`].
fn make_pod_image(testbed: &Testbed, archive: &Path) -> anyhow::Result<()> {
    let layout = testbed.oci_layout();
    let mut config = Command::new("umoci");
    config
        .args(["config", "--image"])
        .arg(format!("{}:busybox", layout.display()))
        .args([
            "--tag",
            "sleeper",
            "--config.cmd",
            "sleep",
            "--config.cmd",
            "100000",
        ]);
    run_checked(&mut config, CMD_TIMEOUT)?;
    let mut copy = Command::new("skopeo");
    copy.args(["--insecure-policy", "copy"])
        .arg(format!("oci:{}:sleeper", layout.display()))
        .arg(format!("oci-archive:{}:{POD_IMAGE}", archive.display()));
    run_checked(&mut copy, CMD_TIMEOUT)?;
    Ok(())
}

/// Pushes the pod image (busybox running `sleep`) to the testbed's
/// registry as `quay.io/<path_and_tag>`, for tests that pull it.
pub fn push_pod_image(testbed: &Testbed, path_and_tag: &str) -> anyhow::Result<()> {
    let mut push = testbed.netns_command("skopeo");
    push.args(["--insecure-policy", "copy", "--dest-cert-dir"])
        .arg(testbed.cert_dir())
        .arg(format!("oci:{}:sleeper", testbed.oci_layout().display()))
        .arg(format!("docker://{}:443/{path_and_tag}", testbed.host_ip()));
    run_checked(&mut push, CMD_TIMEOUT)?;
    Ok(())
}

/// Removes the pod's cgroup directories (children first) in the cgroup2
/// tree and every v1 hierarchy; containerd leaves the parents behind.
fn remove_pod_cgroups(uid: &str) {
    let relative = format!("kubepods/besteffort/pod{uid}");
    for root in cgroup_roots() {
        let pod = root.join(&relative);
        if pod.is_dir() {
            for dir in crate::cgroup::dirs_depth_first(&pod) {
                let _ = poll_until(Duration::from_secs(5), || {
                    fs::remove_dir(&dir).is_ok() || !dir.exists()
                });
            }
        }
    }
}

/// The cgroup roots: the cgroup2 mount and, on hybrid machines, every v1
/// hierarchy.
fn cgroup_roots() -> Vec<PathBuf> {
    let mut roots = vec![crate::cgroup2_root()];
    if let Ok(entries) = fs::read_dir("/sys/fs/cgroup") {
        roots.extend(entries.flatten().map(|e| e.path()));
    }
    roots
}

/// Removes the shared `kubepods/besteffort` parents once empty (runc
/// removes a pod's own cgroups asynchronously after its shim exits);
/// another test's live pod keeps them, which rmdir respects.
fn remove_empty_parents() {
    for root in cgroup_roots() {
        for parent in ["kubepods/besteffort", "kubepods"] {
            let dir = root.join(parent);
            let _ = poll_until(Duration::from_secs(2), || {
                !dir.exists() || fs::remove_dir(&dir).is_ok()
            });
        }
    }
}
