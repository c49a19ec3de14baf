//! A private network with a real resolver and a real TLS image registry.
//!
//! Layout (X = a /24 chosen per testbed inside 198.18.0.0/15):
//!
//! ```text
//!  host netns                               test netns <netns()>
//!  veth <host>  X.1  dnsmasq :53            veth <ns>  X.2, default via X.1
//!               X.1  docker-registry :443   lo         127.0.0.1, ::1
//!               X.3  (second address)       /etc/resolv.conf -> X.1
//! ```
//!
//! dnsmasq answers `quay.io` (and subdomains) and `registry.example.test`
//! with X.1 (the latter also with AAAA `::1`), `notaregistry.test` with X.3,
//! and NXDOMAIN for everything else, so a client in the netns can never reach
//! a real name. Record types a test name lacks (AAAA quay.io) get NODATA, as
//! from a real server; only subdomains' missing types get NXDOMAIN. Clients run with `ip netns exec`, which bind-mounts
//! `/etc/netns/<netns>/{resolv.conf,hosts}` over /etc.

use std::{
    fmt::Write as _,
    fs,
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail, ensure};

use crate::process::{die_with_parent, poll_until, run_checked, stop_child};

/// Executables a testbed runs; checked up front by [`Testbed::start`].
pub const TESTBED_TOOLS: &[&str] = &[
    "ip",
    "dnsmasq",
    "docker-registry",
    "skopeo",
    "umoci",
    "openssl",
    "getent",
    "busybox",
];

/// Held by each live testbed: tests in one binary run on parallel threads,
/// and two testbeds at once would double the daemons and confuse DNS logs.
static TESTBED_LOCK: Mutex<()> = Mutex::new(());
static TESTBED_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Prefix of every netns, temp dir and /etc/netns entry a testbed makes;
/// followed by `<pid>-<counter>` so leftovers of dead runs can be recognised.
const NAME_PREFIX: &str = "rotb-";

/// How long one setup command may take; all are normally well under a second.
const CMD_TIMEOUT: Duration = Duration::from_secs(30);

/// The repository and tag pushed at setup, as seen through the TLS registry.
const IMAGE_PATH: &str = "t/busybox:1";

/// Applets linked into the test image besides `busybox` itself.
const APPLETS: &[&str] = &[
    "sh", "true", "false", "echo", "cat", "ls", "sleep", "env", "wget", "nslookup",
];

/// A running private network, resolver and registry. Dropping it stops and
/// removes everything it made, also when a test panics.
pub struct Testbed {
    netns: String,
    veth_host: String,
    veth_ns: String,
    /// First three octets of the /24.
    net: [u8; 3],
    dir: tempfile::TempDir,
    netns_created: bool,
    veth_created: bool,
    etc_netns_created: bool,
    dnsmasq: Option<Daemon>,
    registry: Option<Daemon>,
    /// Last field: released only after everything above is cleaned up.
    _serial: MutexGuard<'static, ()>,
}

impl Testbed {
    /// Builds the whole testbed; waits for any other testbed of this process
    /// to be dropped first. On error everything made so far is removed.
    pub fn start() -> anyhow::Result<Testbed> {
        crate::require_root_and_tools(TESTBED_TOOLS);
        // A test that panicked while holding the lock poisons it; its Drop
        // still cleaned up, so the lock is safe to reuse.
        let serial = TESTBED_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        sweep_leftovers();

        let pid = std::process::id();
        let n = TESTBED_COUNTER.fetch_add(1, Ordering::SeqCst) + 1;
        let netns = format!("{NAME_PREFIX}{pid}-{n}");
        let (veth_host, veth_ns) = veth_names(pid, n);
        ensure!(
            veth_host.len() <= 15 && veth_ns.len() <= 15,
            "interface name {veth_host} is longer than 15 bytes"
        );
        let net = pick_subnet(pid, n)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{netns}-"))
            .tempdir()
            .context("cannot create the testbed's temp dir")?;

        let mut bed = Testbed {
            netns,
            veth_host,
            veth_ns,
            net,
            dir,
            netns_created: false,
            veth_created: false,
            etc_netns_created: false,
            dnsmasq: None,
            registry: None,
            _serial: serial,
        };
        // Any `?` below drops `bed`, whose Drop undoes what was done.
        bed.setup_network().context("network setup")?;
        bed.start_dnsmasq().context("dnsmasq")?;
        bed.make_tls().context("test CA and server certificate")?;
        bed.start_registry().context("docker-registry")?;
        bed.push_image()
            .context("building and pushing the test image")?;
        Ok(bed)
    }

    /// Name of the network namespace (for `ip netns exec`, `--network ns:/run/netns/<name>`).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Host-side address X.1: dnsmasq and the registry listen here; `quay.io`
    /// and `registry.example.test` resolve to it.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.ip(1)
    }

    /// Second host-side address X.3: what `notaregistry.test` resolves to.
    pub fn other_ip(&self) -> Ipv4Addr {
        self.ip(3)
    }

    /// The namespace's own address X.2 (source of its clients' traffic).
    pub fn ns_ip(&self) -> Ipv4Addr {
        self.ip(2)
    }

    /// Directory holding only the test CA as `ca.crt`: pass it as skopeo's
    /// `--cert-dir` / `--dest-cert-dir`.
    pub fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// Path of the test CA certificate (PEM).
    pub fn ca_cert(&self) -> PathBuf {
        self.cert_dir().join("ca.crt")
    }

    /// Everything dnsmasq has logged so far (queries with `log-queries=extra`).
    pub fn dns_log(&self) -> String {
        fs::read_to_string(self.dns_log_path()).unwrap_or_default()
    }

    /// Waits (bounded) until the DNS log contains `needle`; dnsmasq writes its
    /// log from its main loop, so a line can trail the answer slightly.
    /// Returns the log, or an error carrying it.
    pub fn wait_for_dns_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        if poll_until(timeout, || self.dns_log().contains(needle)) {
            Ok(self.dns_log())
        } else {
            bail!(
                "dnsmasq log has no {needle:?} after {timeout:?}:\n{}",
                self.dns_log()
            )
        }
    }

    /// The registry's log (access log included).
    pub fn registry_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `docker://quay.io/t/busybox:1`, served by the testbed's registry.
    pub fn image_ref(&self) -> String {
        format!("docker://quay.io/{IMAGE_PATH}")
    }

    /// The OCI layout the image was built in (`oci:<this>:busybox`).
    pub fn oci_layout(&self) -> PathBuf {
        self.dir.path().join("oci")
    }

    /// `ip netns exec <netns> <program>`: add arguments and run it. Every
    /// client that resolves names must be started this way.
    pub fn netns_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns]).arg(program);
        cmd
    }

    /// [`Testbed::netns_command`] whose process is also in `cgroup` from its
    /// first instruction (`ip` joins the cgroup, then enters the netns and
    /// execs `program`), for tests of attribution by cgroup.
    pub fn netns_command_in(
        &self,
        cgroup: &crate::TestCgroup,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> Command {
        let mut cmd = cgroup.command("ip");
        cmd.args(["netns", "exec", &self.netns]).arg(program);
        cmd
    }

    /// An HTTP proxy (Debian's tinyproxy) inside the namespace and in
    /// `cgroup`, listening on the namespace's address, allowing CONNECT to
    /// port 443 for clients of the namespace. It resolves names through the
    /// testbed's dnsmasq like every client here. Stopped by PID on drop.
    pub fn start_http_proxy(
        &self,
        cgroup: &crate::TestCgroup,
    ) -> anyhow::Result<(Daemon, SocketAddr)> {
        let addr = SocketAddr::new(self.ns_ip().into(), HTTP_PROXY_PORT);
        let config = self.temp_dir().join("tinyproxy.conf");
        fs::write(
            &config,
            format!(
                "Port {HTTP_PROXY_PORT}\nListen {}\nAllow {}/24\nConnectPort 443\n\
                 User nobody\nGroup nogroup\nMaxClients 16\n",
                self.ns_ip(),
                self.ns_ip()
            ),
        )?;
        let mut cmd = self.netns_command_in(cgroup, "tinyproxy");
        cmd.arg("-d").arg("-c").arg(&config);
        let mut daemon = Daemon::spawn("tinyproxy", cmd, &self.temp_dir().join("tinyproxy.log"))?;
        daemon.wait_listening(addr, Duration::from_secs(10))?;
        Ok((daemon, addr))
    }

    /// The testbed's scratch directory (removed on drop).
    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Host-side veth name.
    pub fn veth_host(&self) -> &str {
        &self.veth_host
    }

    /// PID of dnsmasq (for tests that check attribution or cleanup).
    pub fn dnsmasq_pid(&self) -> Option<u32> {
        self.dnsmasq.as_ref().map(|d| d.child.id())
    }

    /// PID of docker-registry.
    pub fn registry_pid(&self) -> Option<u32> {
        self.registry.as_ref().map(|d| d.child.id())
    }

    fn ip(&self, host: u8) -> Ipv4Addr {
        let [a, b, c] = self.net;
        Ipv4Addr::new(a, b, c, host)
    }

    fn dns_log_path(&self) -> PathBuf {
        self.dir.path().join("dnsmasq.log")
    }

    fn setup_network(&mut self) -> anyhow::Result<()> {
        let (ns, vh, vn) = (
            self.netns.clone(),
            self.veth_host.clone(),
            self.veth_ns.clone(),
        );
        let (h1, h3, n2) = (self.host_ip(), self.other_ip(), self.ns_ip());
        ip(&["netns", "add", &ns])?;
        self.netns_created = true;
        ip(&["link", "add", &vh, "type", "veth", "peer", "name", &vn])?;
        self.veth_created = true;
        ip(&["link", "set", &vn, "netns", &ns])?;
        ip(&["addr", "add", &format!("{h1}/24"), "dev", &vh])?;
        ip(&["addr", "add", &format!("{h3}/24"), "dev", &vh])?;
        ip(&["link", "set", &vh, "up"])?;
        ip(&["-n", &ns, "addr", "add", &format!("{n2}/24"), "dev", &vn])?;
        ip(&["-n", &ns, "link", "set", &vn, "up"])?;
        // lo up gives the namespace 127.0.0.1 and ::1.
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns, "route", "add", "default", "via", &h1.to_string()])?;

        let etc = Path::new("/etc/netns").join(&ns);
        fs::create_dir_all(&etc).with_context(|| format!("mkdir {}", etc.display()))?;
        self.etc_netns_created = true;
        fs::write(etc.join("resolv.conf"), format!("nameserver {h1}\n"))?;
        // Our own hosts file, so names in the host's /etc/hosts cannot
        // short-circuit the resolver inside the namespace.
        fs::write(
            etc.join("hosts"),
            "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
        )?;
        Ok(())
    }

    fn start_dnsmasq(&mut self) -> anyhow::Result<()> {
        let dir = self.dir.path();
        let (h1, h3) = (self.host_ip(), self.other_ip());
        let conf = dir.join("dnsmasq.conf");
        let mut text = String::new();
        for line in [
            "no-resolv".to_string(),
            "no-hosts".into(),
            // Not bind-interfaces: bind-dynamic also serves bridges made later.
            "bind-dynamic".into(),
            format!("listen-address={h1}"),
            "port=53".into(),
            "user=root".into(),
            "log-queries=extra".into(),
            format!("log-facility={}", self.dns_log_path().display()),
            // Our own pid file: the default one is shared by every dnsmasq.
            format!("pid-file={}", dir.join("dnsmasq.pid").display()),
            // host-record makes the exact names answer NODATA (not
            // NXDOMAIN) for record types they lack, e.g. AAAA quay.io;
            // with address= alone, `address=/#/` turns those into NXDOMAIN.
            format!("host-record=quay.io,{h1}"),
            format!("host-record=registry.example.test,{h1},::1"),
            format!("host-record=notaregistry.test,{h3}"),
            // address= also covers subdomains (A only: their AAAA is NXDOMAIN).
            format!("address=/quay.io/{h1}"),
            format!("address=/registry.example.test/{h1}"),
            "address=/registry.example.test/::1".into(),
            format!("address=/notaregistry.test/{h3}"),
            // NXDOMAIN for every other name: a disconnected network.
            "address=/#/".into(),
        ] {
            writeln!(text, "{line}").expect("writing to a String");
        }
        fs::write(&conf, text)?;
        let mut cmd = Command::new("dnsmasq");
        cmd.arg(format!("--conf-file={}", conf.display()))
            .arg("--keep-in-foreground");
        let daemon = Daemon::spawn("dnsmasq", cmd, &dir.join("dnsmasq.stderr"))?;
        self.dnsmasq = Some(daemon);
        let addr = SocketAddr::from((h1, 53));
        self.dnsmasq
            .as_mut()
            .expect("just set")
            .wait_listening(addr, Duration::from_secs(10))
    }

    fn make_tls(&self) -> anyhow::Result<()> {
        let tls = self.dir.path().join("tls");
        let certs = self.cert_dir();
        fs::create_dir_all(&tls)?;
        fs::create_dir_all(&certs)?;
        fs::write(
            tls.join("ca.cnf"),
            "[req]\nprompt = no\ndistinguished_name = dn\nx509_extensions = v3_ca\n\
             [dn]\nCN = registry-observer test CA\n\
             [v3_ca]\nbasicConstraints = critical,CA:TRUE\n\
             keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n",
        )?;
        fs::write(
            tls.join("server.cnf"),
            format!(
                "[req]\nprompt = no\ndistinguished_name = dn\n[dn]\nCN = quay.io\n\
                 [v3_server]\nbasicConstraints = critical,CA:FALSE\n\
                 keyUsage = critical,digitalSignature,keyEncipherment\n\
                 extendedKeyUsage = serverAuth\n\
                 subjectAltName = DNS:quay.io,DNS:*.quay.io,DNS:registry.example.test,IP:{}\n",
                self.host_ip()
            ),
        )?;
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        let mut ca = Command::new("openssl");
        ca.current_dir(&tls)
            .args(["req", "-x509", "-config", "ca.cnf", "-nodes", "-days", "2"])
            .args(ec)
            .args(["-keyout", "ca.key", "-out", "ca.crt"]);
        run_checked(&mut ca, CMD_TIMEOUT)?;
        let mut csr = Command::new("openssl");
        csr.current_dir(&tls)
            .args(["req", "-new", "-config", "server.cnf", "-nodes"])
            .args(ec)
            .args(["-keyout", "server.key", "-out", "server.csr"]);
        run_checked(&mut csr, CMD_TIMEOUT)?;
        let mut sign = Command::new("openssl");
        sign.current_dir(&tls).args([
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.cnf",
            "-extensions",
            "v3_server",
            "-out",
            "server.crt",
        ]);
        run_checked(&mut sign, CMD_TIMEOUT)?;
        // Only the CA goes in the cert dir: containers/image treats a `.key`
        // there as half of a client certificate and fails without its `.cert`.
        fs::copy(tls.join("ca.crt"), certs.join("ca.crt"))?;
        Ok(())
    }

    fn start_registry(&mut self) -> anyhow::Result<()> {
        let dir = self.dir.path();
        let tls = dir.join("tls");
        let storage = dir.join("registry-storage");
        fs::create_dir_all(&storage)?;
        let addr = SocketAddr::from((self.host_ip(), 443));
        let conf = dir.join("registry.yml");
        fs::write(
            &conf,
            format!(
                "version: 0.1\n\
                 log:\n  level: info\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
                 \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: {addr}\n  secret: observer-tests-not-secret\n\
                 \x20 tls:\n    certificate: {cert}\n    key: {key}\n",
                storage = storage.display(),
                cert = tls.join("server.crt").display(),
                key = tls.join("server.key").display(),
            ),
        )?;
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&conf);
        let daemon = Daemon::spawn("docker-registry", cmd, &dir.join("registry.log"))?;
        self.registry = Some(daemon);
        self.registry
            .as_mut()
            .expect("just set")
            .wait_listening(addr, Duration::from_secs(20))
    }

    /// Builds a one-layer image holding static busybox with umoci and pushes
    /// it from inside the netns to `<X.1>:443` by IP: no name is resolved,
    /// so the DNS log starts empty of harness traffic.
    fn push_image(&self) -> anyhow::Result<()> {
        let busybox = crate::find_executable("busybox").context("busybox not on PATH")?;
        ensure!(
            !has_elf_interpreter(&busybox)?,
            "{} is dynamically linked and cannot run in a bare image; install busybox-static \
             (`cargo xtask setup` does)",
            busybox.display()
        );
        let dir = self.dir.path();
        let layout = self.oci_layout();
        let image = format!("{}:busybox", layout.display());
        let bundle = dir.join("bundle");
        let umoci = |args: &[&str]| -> anyhow::Result<()> {
            run_checked(Command::new("umoci").args(args), CMD_TIMEOUT).map(drop)
        };
        umoci(&["init", "--layout", &layout.to_string_lossy()])?;
        umoci(&["new", "--image", &image])?;
        umoci(&["unpack", "--image", &image, &bundle.to_string_lossy()])?;
        let bin = bundle.join("rootfs/bin");
        fs::create_dir_all(&bin)?;
        fs::copy(&busybox, bin.join("busybox"))?;
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(applet))?;
        }
        umoci(&["repack", "--image", &image, &bundle.to_string_lossy()])?;
        umoci(&[
            "config",
            "--image",
            &image,
            "--config.cmd",
            "/bin/sh",
            "--config.env",
            "PATH=/bin",
        ])?;
        fs::remove_dir_all(&bundle)?;

        let mut push = self.netns_command("skopeo");
        push.args(["--insecure-policy", "copy", "--dest-cert-dir"])
            .arg(self.cert_dir())
            .arg(format!("oci:{image}"))
            .arg(format!("docker://{}:443/{IMAGE_PATH}", self.host_ip()));
        run_checked(&mut push, Duration::from_secs(60))?;
        Ok(())
    }
}

impl Drop for Testbed {
    /// Stops the daemons by PID, then removes the netns, veth, /etc/netns
    /// entry; the temp dir goes when `dir` drops. Never panics.
    fn drop(&mut self) {
        drop(self.registry.take());
        drop(self.dnsmasq.take());
        if self.netns_created {
            warn_on_error(ip(&["netns", "del", &self.netns]));
        }
        // Deleting the netns destroys the veth pair with it; delete the host
        // end explicitly only if it is still there (e.g. the move failed).
        if self.veth_created && Path::new("/sys/class/net").join(&self.veth_host).exists() {
            warn_on_error(ip(&["link", "del", &self.veth_host]));
        }
        if self.etc_netns_created {
            let etc = Path::new("/etc/netns").join(&self.netns);
            warn_on_error(fs::remove_dir_all(&etc).context(etc.display().to_string()));
        }
    }
}

fn warn_on_error<T, E: std::fmt::Display>(r: Result<T, E>) {
    if let Err(e) = r {
        eprintln!("observer-tests: testbed cleanup: {e:#}");
    }
}

/// `ip <args>`, checked and bounded.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    run_checked(Command::new("ip").args(args), CMD_TIMEOUT).map(drop)
}

/// Host and namespace veth names for testbed `n` of process `pid`
/// (`ro<pid>h<n>`, `ro<pid>n<n>`: at most 15 bytes for any pid up to 2^22
/// and n below 100000).
fn veth_names(pid: u32, n: u32) -> (String, String) {
    (format!("ro{pid}h{n}"), format!("ro{pid}n{n}"))
}

/// Picks the testbed's /24 in 198.18.0.0/15.
///
/// The start is derived from pid and counter, so concurrent processes and
/// leftovers of crashed runs usually differ; any /24 already present in the
/// host's addresses or routes is skipped. The first 16 /24s are never used:
/// hand-written recipes (198.18.0.0/24, pod range 198.18.2.0/24) live there.
fn pick_subnet(pid: u32, n: u32) -> anyhow::Result<[u8; 3]> {
    const FIRST: u32 = 16;
    const COUNT: u32 = 512 - FIRST;
    let in_use = format!(
        "{}\n{}",
        String::from_utf8_lossy(
            &run_checked(
                Command::new("ip").args(["-o", "-4", "addr", "show"]),
                CMD_TIMEOUT
            )?
            .stdout
        ),
        String::from_utf8_lossy(
            &run_checked(
                Command::new("ip").args(["-4", "route", "show", "table", "all"]),
                CMD_TIMEOUT
            )?
            .stdout
        ),
    );
    let start = (u64::from(pid).wrapping_mul(2_654_435_761) + u64::from(n) * 97) % u64::from(COUNT);
    for step in 0..COUNT {
        let index = FIRST + (u32::try_from(start).expect("below COUNT") + step) % COUNT;
        let net = [198, 18 + (index / 256) as u8, (index % 256) as u8];
        let prefix = format!("{}.{}.{}.", net[0], net[1], net[2]);
        let used = in_use
            .split(|c: char| c.is_whitespace() || c == '/')
            .any(|token| token.starts_with(&prefix));
        if !used {
            return Ok(net);
        }
    }
    bail!("every /24 of 198.18.0.0/15 is in use on this host")
}

/// Removes netns, /etc/netns entries and temp dirs left by testbeds of
/// processes that no longer exist (a harness killed before its Drop ran).
/// Their daemons died with them (PR_SET_PDEATHSIG), and deleting the netns
/// destroys the veth pair.
fn sweep_leftovers() {
    let owner_is_dead = |name: &str| -> Option<(u32, u32)> {
        let rest = name.strip_prefix(NAME_PREFIX)?;
        let mut parts = rest.splitn(3, '-');
        let pid: u32 = parts.next()?.parse().ok()?;
        let n: u32 = parts.next()?.parse().ok()?;
        let alive = pid == std::process::id() || {
            // SAFETY: signal 0 only checks for existence.
            let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
            r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
        };
        (!alive).then_some((pid, n))
    };
    let names = |dir: &Path| -> Vec<String> {
        fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    for name in names(Path::new("/run/netns")) {
        if let Some((pid, n)) = owner_is_dead(&name) {
            eprintln!("observer-tests: removing leftover netns {name}");
            warn_on_error(ip(&["netns", "del", &name]));
            let (vh, _) = veth_names(pid, n);
            if Path::new("/sys/class/net").join(&vh).exists() {
                warn_on_error(ip(&["link", "del", &vh]));
            }
        }
    }
    for name in names(Path::new("/etc/netns")) {
        if owner_is_dead(&name).is_some() {
            warn_on_error(fs::remove_dir_all(Path::new("/etc/netns").join(&name)));
        }
    }
    let tmp = std::env::temp_dir();
    for name in names(&tmp) {
        if owner_is_dead(&name).is_some() {
            warn_on_error(fs::remove_dir_all(tmp.join(&name)));
        }
    }
}

/// True if the ELF file at `path` names a program interpreter (is dynamically
/// linked). Reads the 64-bit little-endian program headers only.
fn has_elf_interpreter(path: &Path) -> anyhow::Result<bool> {
    let data = fs::read(path)?;
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        data.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let u64_at = |o: usize| {
        data.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    ensure!(
        data.starts_with(b"\x7fELF\x02\x01"),
        "{} is not a 64-bit little-endian ELF file",
        path.display()
    );
    let malformed = || anyhow::anyhow!("{} has malformed ELF headers", path.display());
    let phoff = usize::try_from(u64_at(0x20).ok_or_else(malformed)?)?;
    let phentsize = usize::from(u16_at(0x36).ok_or_else(malformed)?);
    let phnum = usize::from(u16_at(0x38).ok_or_else(malformed)?);
    const PT_INTERP: u32 = 3;
    for i in 0..phnum {
        if u32_at(phoff + i * phentsize).ok_or_else(malformed)? == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Port of the HTTP proxy [`Testbed::start_http_proxy`] runs.
const HTTP_PROXY_PORT: u16 = 8888;

/// A background server we spawned, stopped by PID on drop.
pub struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Spawns `cmd` with stdout and stderr appended to `log`; the daemon dies
    /// with this thread if the harness is killed.
    fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> anyhow::Result<Daemon> {
        let out = fs::OpenOptions::new().create(true).append(true).open(log)?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot spawn {name}"))?;
        Ok(Daemon {
            name,
            child,
            log: log.to_path_buf(),
        })
    }

    /// Polls TCP connect to `addr` (bounded) until it is accepted; fails at
    /// once if the daemon exits, with its log in the error.
    fn wait_listening(&mut self, addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
        let mut exited = None;
        let ready = poll_until(timeout, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                exited = Some(status);
                return true;
            }
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        if let Some(status) = exited {
            bail!(
                "{} exited ({status}) before listening on {addr}; its output:\n{log}",
                self.name
            );
        }
        ensure!(
            ready,
            "{} did not listen on {addr} within {timeout:?}; its output:\n{log}",
            self.name
        );
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = stop_child(&mut self.child, libc::SIGTERM, Duration::from_secs(5)) {
            eprintln!("observer-tests: stopping {}: {e:#}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_the_kernel_limit() {
        let (h, n) = veth_names(4_194_304, 99_999);
        assert!(h.len() <= 15 && n.len() <= 15, "{h} {n}");
        assert_ne!(h, n);
    }

    #[test]
    fn this_test_binary_is_not_dynamically_linked_check_works() {
        // The test binary itself is dynamically linked on glibc.
        let me = std::env::current_exe().unwrap();
        assert!(has_elf_interpreter(&me).unwrap());
    }
}
