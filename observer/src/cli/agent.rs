//! `run` and `mark`: the agent's flags, how they combine with the config
//! file, and starting the agent. Built with the `agent` feature only.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::Args;

use crate::{
    UsageError,
    bpf::{load, load::pins},
    control::{http, socket},
    pipeline::{
        attribute::component_rules::ComponentRule, classify::Pattern, phase::PhaseName,
        record::DEFAULT_MAX_ATTEMPTS,
    },
    run as agent,
    run::{KubernetesOptions, MetricsAddr, RunOptions},
    setup::{config, config::Config, preflight},
};

/// Used when neither `--report` nor the config's `outputs.report` is given.
const DEFAULT_REPORT: &str = "registry-report.json";
/// Used when neither `--phase` nor the config's `phases.initial` is given.
const DEFAULT_PHASE: &str = "boot";

#[derive(Args, Debug)]
pub struct MarkArgs {
    /// Phase name: 1-63 characters a-z, 0-9, '_' or '-'.
    #[arg(value_name = "NAME", value_parser = parse_phase)]
    pub name: PhaseName,

    /// The agent's control socket (its --control-socket).
    #[arg(long, value_name = "PATH", default_value = socket::DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Args, Debug)]
pub struct DetachArgs {
    /// The pin dir of the agent (its --pin-dir).
    #[arg(long, value_name = "DIR", default_value = pins::DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
}

/// `registry-observer detach`: unpins the links (the programs detach) and
/// the maps, then removes the pin dir. Refused while an agent holds it.
pub fn detach(args: &DetachArgs) -> ExitCode {
    if !args.pin_dir.exists() {
        println!(
            "registry-observer: nothing to detach: {} does not exist",
            args.pin_dir.display()
        );
        return ExitCode::SUCCESS;
    }
    let result = pins::PinDir::open(&args.pin_dir).and_then(|dir| {
        let removed = dir.remove_all()?;
        dir.remove_dir()?;
        Ok(removed)
    });
    match result {
        Ok(removed) => {
            for path in &removed {
                println!("registry-observer: unpinned {}", path.display());
            }
            println!(
                "registry-observer: detached: {} pin(s) removed, {} is gone",
                removed.len(),
                args.pin_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("registry-observer: {e}");
            ExitCode::from(2)
        }
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Where to write the JSON report (written atomically at exit)
    /// [default: the config's outputs.report, else registry-report.json].
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,

    /// Configuration file, YAML (.yaml, .yml) or TOML (.toml): catalog
    /// additions, registries.conf import, policy (enforced phases,
    /// allowlist), initial phase, outputs. Command-line flags override the
    /// file. See docs/CONFIG.md.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Also treat this host as a registry: an exact name (registry.example.com)
    /// or every name below a suffix (*.example.com). Adds to the built-in
    /// catalog; repeat for several.
    #[arg(long = "registry", value_name = "PATTERN", value_parser = parse_pattern)]
    pub registries: Vec<Pattern>,

    /// Stop after this long (e.g. 90s, 10m, 1h) when watching the machine.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "command")]
    pub duration: Option<Duration>,

    /// Exit 1 when there was a violation (a registry contact in an enforced
    /// phase that no allow entry covers): for CI jobs.
    #[arg(long)]
    pub fail_on_violation: bool,

    /// Do not exit 3 when events were lost or a hook was missing: accept
    /// an incomplete observation (the report still says `complete: false`).
    #[arg(long)]
    pub allow_incomplete: bool,

    /// The phase the run starts in; `registry-observer mark NAME` or
    /// `POST /phase` switch to the next one
    /// [default: the config's phases.initial, else boot].
    #[arg(long, value_name = "NAME", value_parser = parse_phase)]
    pub phase: Option<PhaseName>,

    /// JUnit XML at exit: one testsuite per phase, one testcase per
    /// component (failing when it contacted a registry)
    /// [default: the config's outputs.junit, else none].
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,

    /// Append every recorded event to this JSON-lines file as it happens
    /// (the forensic trail); rotated by size to PATH.1 .. PATH.5
    /// [default: the config's outputs.events, else none].
    #[arg(long, value_name = "PATH")]
    pub events: Option<PathBuf>,

    /// Rotate the --events file when it would grow beyond this.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub events_max_size: u64,

    /// HTTP endpoint for /metrics (Prometheus), /healthz, /readyz and
    /// POST /phase; `off` disables it. Default: the config's
    /// outputs.metrics_addr, else 127.0.0.1:9669, loopback only; give
    /// 0.0.0.0:9669 explicitly to expose it. If the default port is taken
    /// the run continues without the endpoint (with a warning).
    #[arg(long, value_name = "ADDR|off", value_parser = parse_metrics_addr)]
    pub metrics_addr: Option<MetricsAddr>,

    /// Control socket for `registry-observer mark` (root only). If another
    /// agent holds the default one, this run goes on without a socket (with
    /// a warning); a path given here must be free.
    #[arg(long, value_name = "PATH", default_value_t = socket::DEFAULT_SOCKET.to_string())]
    pub control_socket: String,

    /// Keep the record in DIR (service mode; the unit uses
    /// /var/lib/registry-observer): every attempt and phase is appended to
    /// a checksummed spool there as it happens and made durable each
    /// second, and a later run on the same DIR continues the record: its
    /// report holds every run (observer.runs), a run that was killed shows
    /// as crashed, and the time nobody observed as a gap (observer.gaps).
    /// One agent per DIR; a DIR from another node is refused.
    /// The kernel programs stay attached when the agent exits (pinned in
    /// bpffs at --pin-dir), so they observe while no agent runs; the next
    /// run on DIR drains what they captured, with no gap.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// With --state-dir: the bpffs directory where the maps and links are
    /// pinned, and adopted by the next run (one agent per pin dir).
    /// `registry-observer detach` removes them.
    #[arg(
        long,
        value_name = "DIR",
        default_value = pins::DEFAULT_PIN_DIR,
        requires = "state_dir"
    )]
    pub pin_dir: PathBuf,

    /// With --state-dir: how often DIR/report.json (and DIR/junit.xml with
    /// --junit) is rewritten as of now, besides at each phase marker and at
    /// exit, so a crash leaves a report at most this old.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10s",
        value_parser = parse_duration,
        requires = "state_dir"
    )]
    pub snapshot_interval: Duration,

    /// Distinct attempts kept in memory (and in the report) at most. A
    /// registry event that would start one more is counted in
    /// observer.losses.attempts_table and on /metrics, and the run is
    /// incomplete (exit 3): raise it rather than lose sight of a contact.
    /// Repeats of kept attempts always merge into them.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_ATTEMPTS, value_parser = clap::value_parser!(usize))]
    pub max_attempts: usize,

    /// Ring buffer size in bytes (power of two, whole pages). For tests
    /// that must force losses.
    #[arg(long, hide = true, default_value_t = load::RING_BUFFER_BYTES, value_parser = parse_ring_size)]
    pub ring_buffer_bytes: u32,

    /// Test-only: make the kernel refuse this program (the program takes a
    /// path the verifier rejects), to exercise running on without it.
    /// Repeatable.
    #[arg(long = "test-refuse-program", hide = true, value_name = "PROGRAM")]
    pub refuse_programs: Vec<String>,

    /// Print the kernel verifier's whole log for every program this kernel
    /// refused (the warning and the report give its key line only).
    #[arg(short, long)]
    pub verbose: bool,

    /// How often the agent resolves the catalog's host names itself, so that
    /// connections to registry addresses looked up before it started are
    /// recognized. 0 turns this off (the agent then sends no DNS queries).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "5m",
        value_parser = parse_duration
    )]
    pub catalog_resolve_interval: Duration,

    /// The CRI socket to ask which pod a container belongs to (name,
    /// namespace, labels), and which pod a runtime's pull was for (new
    /// containers and their images: the report's on_behalf_of); repeat for
    /// several. Default: every one of /run/crio/crio.sock and
    /// /run/containerd/containerd.sock that exists. If none answers, pods
    /// are reported by uid only and the report's observer.cri says why.
    #[arg(long = "cri-socket", value_name = "PATH")]
    pub cri_sockets: Vec<PathBuf>,

    /// Where the host's root filesystem is, for an agent in a container that
    /// mounts it (e.g. a hostPath volume of / at /host): the host's /proc,
    /// cgroup2 mount, default CRI sockets and registries.conf are looked up
    /// under it. The agent still needs the host's PID and cgroup namespaces
    /// (hostPID: true). --cri-socket and the config's paths are taken as
    /// given.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub host_root: PathBuf,

    /// Name a component: `CONDITIONS:COMPONENT`, where CONDITIONS are
    /// comma-separated `namespace=NS`, `pod_name_prefix=P`, `unit=U`,
    /// `exe=E` (path, or file name) or `label.KEY=VALUE`, all of which must
    /// hold. Checked in order, first match wins, before the built-in naming
    /// (pod owner, unit, executable). Repeat for several.
    #[arg(long = "component-rule", value_name = "RULE", value_parser = parse_component_rule)]
    pub component_rules: Vec<ComponentRule>,

    /// Read the kubelet's `Pulling` events for this node from the
    /// Kubernetes API with this kubeconfig, and join each to its pod's spec
    /// (effective pull policy, why, the field to change, the owner). Without
    /// it the API is used only when running in a pod (in-cluster config);
    /// $KUBECONFIG and ~/.kube/config are never read. An unreachable API is
    /// reported in observer.kubernetes and changes no exit code
    /// [default: the config's kubernetes.kubeconfig].
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// This node's name as its kubelet reports it (the events'
    /// source.host) [default: the config's kubernetes.node_name, else
    /// $NODE_NAME (set it from spec.nodeName in a DaemonSet), else the
    /// hostname].
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,

    /// The command to run and observe, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

fn parse_phase(text: &str) -> Result<PhaseName, String> {
    PhaseName::parse(text).map_err(|e| e.to_string())
}

fn parse_size(text: &str) -> Result<u64, String> {
    let size: bytesize::ByteSize = text
        .parse()
        .map_err(|e| format!("{e}; write a size such as 64MiB or 500kB"))?;
    if size.as_u64() == 0 {
        return Err("the size must be above 0, e.g. 64MiB".into());
    }
    Ok(size.as_u64())
}

fn parse_metrics_addr(text: &str) -> Result<MetricsAddr, String> {
    if text == "off" {
        return Ok(MetricsAddr::Off);
    }
    text.parse::<SocketAddr>()
        .map(MetricsAddr::Explicit)
        .map_err(|e| format!("{e}; write IP:PORT (127.0.0.1:9669, [::1]:9669) or `off`"))
}

fn parse_ring_size(text: &str) -> Result<u32, String> {
    let bytes: u32 = text.parse().map_err(|e| format!("{e}"))?;
    if load::valid_ring_buffer_bytes(bytes) {
        Ok(bytes)
    } else {
        Err("must be a power of two of at least one page (4096)".into())
    }
}

fn parse_pattern(text: &str) -> Result<Pattern, String> {
    Pattern::parse(text).map_err(|e| e.to_string())
}

fn parse_component_rule(text: &str) -> Result<ComponentRule, String> {
    ComponentRule::parse(text).map_err(|e| e.to_string())
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{e}; write a duration such as 30s, 10m or 1h"))
}

pub(super) fn mark(args: &MarkArgs) -> ExitCode {
    match socket::mark(&args.socket, &args.name) {
        Ok(reply) => {
            println!("{reply}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("registry-observer: {message}");
            ExitCode::from(2)
        }
    }
}

/// Command-line values win over the config file's, which win over the
/// defaults.
fn run_options(args: RunArgs, config: Config) -> RunOptions {
    let default_metrics_addr = MetricsAddr::Default(
        http::DEFAULT_ADDR
            .parse()
            .expect("the default address parses"),
    );
    let control_socket = (args.control_socket != socket::DEFAULT_SOCKET)
        .then(|| PathBuf::from(&args.control_socket));
    RunOptions {
        report: args
            .report
            .or_else(|| config.outputs.report.clone())
            .unwrap_or_else(|| DEFAULT_REPORT.into()),
        registries: args.registries,
        duration: args.duration,
        fail_on_violation: args.fail_on_violation,
        allow_incomplete: args.allow_incomplete,
        phase: args
            .phase
            .or_else(|| config.phases.initial.clone())
            .unwrap_or_else(|| {
                PhaseName::parse(DEFAULT_PHASE).expect("the default phase is valid")
            }),
        resolve_interval: args.catalog_resolve_interval,
        cri_sockets: args.cri_sockets,
        host_root: args.host_root,
        component_rules: args.component_rules,
        kubernetes: KubernetesOptions {
            kubeconfig: args
                .kubeconfig
                .or_else(|| config.kubernetes.kubeconfig.clone()),
            enabled: config.kubernetes.enabled,
            node_name: node_name(
                args.node_name,
                config.kubernetes.node_name.clone(),
                std::env::var("NODE_NAME").ok(),
                preflight::hostname,
            ),
        },
        metrics_addr: args
            .metrics_addr
            .or(config.outputs.metrics_addr.map(MetricsAddr::Explicit))
            .unwrap_or(default_metrics_addr),
        control_socket,
        events: args.events.or_else(|| config.outputs.events.clone()),
        events_max_bytes: args.events_max_size,
        junit: args.junit.or_else(|| config.outputs.junit.clone()),
        ring_buffer_bytes: args.ring_buffer_bytes,
        max_attempts: args.max_attempts,
        pin_dir: args.state_dir.as_ref().map(|_| args.pin_dir),
        state_dir: args.state_dir,
        snapshot_interval: args.snapshot_interval,
        refuse_programs: args.refuse_programs,
        verbose: args.verbose,
        command: args.command,
        config_path: args.config,
        config,
    }
}

/// The flag, the config's, `$NODE_NAME` (the Downward API's usual name),
/// else the hostname; empty values do not count.
fn node_name(
    flag: Option<String>,
    config: Option<String>,
    env: Option<String>,
    hostname: impl FnOnce() -> Option<String>,
) -> String {
    [flag, config, env]
        .into_iter()
        .flatten()
        .find(|name| !name.is_empty())
        .or_else(hostname)
        .unwrap_or_default()
}

pub(super) fn run(args: RunArgs) -> ExitCode {
    let config = match &args.config {
        Some(path) => match config::load(path) {
            Ok(config) => config,
            Err(error) => {
                eprintln!("registry-observer: {error}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    let options = run_options(args, config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("registry-observer: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(agent::run(options)) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => {
            match error.downcast_ref::<UsageError>() {
                Some(usage) => eprintln!("registry-observer: {usage}"),
                None => eprintln!("registry-observer: {error:#}"),
            }
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn parses_a_wrapped_command_and_patterns() {
        let cli = Cli::try_parse_from([
            "registry-observer",
            "run",
            "--registry",
            "*.example.test",
            "--fail-on-violation",
            "--",
            "sh",
            "-c",
            "skopeo inspect x",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("parsed as another command")
        };
        assert_eq!(args.command, vec!["sh", "-c", "skopeo inspect x"]);
        assert_eq!(args.registries[0].to_string(), "*.example.test");
        assert!(args.fail_on_violation);
        assert_eq!(args.catalog_resolve_interval, Duration::from_secs(300));
        assert!(args.cri_sockets.is_empty());
        let cli = Cli::try_parse_from([
            "registry-observer",
            "run",
            "--cri-socket",
            "/run/k3s/containerd/containerd.sock",
            "--component-rule",
            "namespace=openshift-machine-config-operator:machine-config",
            "--component-rule",
            "unit=rpm-ostreed.service:machine-config",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("parsed as another command")
        };
        assert_eq!(
            args.cri_sockets,
            vec![PathBuf::from("/run/k3s/containerd/containerd.sock")]
        );
        assert_eq!(args.component_rules.len(), 2);
        assert_eq!(args.component_rules[1].component, "machine-config");
    }

    #[test]
    fn flags_override_the_config_file_which_overrides_defaults() {
        let parse = |argv: &[&str]| {
            let cli = Cli::try_parse_from(argv).unwrap();
            let Command::Run(args) = cli.command else {
                panic!("parsed as another command")
            };
            *args
        };
        let config = config::parse(
            std::path::Path::new("c.yaml"),
            "phases: {initial: upgrade}\n\
             outputs: {report: /var/tmp/r.json, junit: /var/tmp/j.xml, \
             events: /var/tmp/e.jsonl, metrics_addr: '127.0.0.1:9700'}\n",
        )
        .unwrap();
        let options = run_options(parse(&["registry-observer", "run"]), config.clone());
        assert_eq!(options.phase.as_str(), "upgrade");
        assert_eq!(options.report, PathBuf::from("/var/tmp/r.json"));
        assert_eq!(options.junit, Some(PathBuf::from("/var/tmp/j.xml")));
        assert_eq!(options.events, Some(PathBuf::from("/var/tmp/e.jsonl")));
        assert_eq!(
            options.metrics_addr,
            MetricsAddr::Explicit("127.0.0.1:9700".parse().unwrap())
        );
        let options = run_options(
            parse(&[
                "registry-observer",
                "run",
                "--phase",
                "boot",
                "--report",
                "x.json",
                "--junit",
                "k.xml",
                "--events",
                "f.jsonl",
                "--metrics-addr",
                "off",
            ]),
            config,
        );
        assert_eq!(options.phase.as_str(), "boot");
        assert_eq!(options.report, PathBuf::from("x.json"));
        assert_eq!(options.junit, Some(PathBuf::from("k.xml")));
        assert_eq!(options.events, Some(PathBuf::from("f.jsonl")));
        assert_eq!(options.metrics_addr, MetricsAddr::Off);
        let options = run_options(parse(&["registry-observer", "run"]), Config::default());
        assert_eq!(options.phase.as_str(), DEFAULT_PHASE);
        assert_eq!(options.report, PathBuf::from(DEFAULT_REPORT));
        assert_eq!(options.junit, None);
        assert_eq!(options.events, None);
        assert!(matches!(options.metrics_addr, MetricsAddr::Default(_)));
    }

    #[test]
    fn kubernetes_flags_override_the_config_and_the_environment() {
        let cli = Cli::try_parse_from([
            "registry-observer",
            "run",
            "--kubeconfig",
            "/k/flag",
            "--node-name",
            "worker-7",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("parsed as another command")
        };
        let config = config::parse(
            Path::new("c.yaml"),
            "kubernetes: {enabled: false, kubeconfig: /k/config, node_name: from-config}\n",
        )
        .unwrap();
        let options = run_options(*args, config.clone());
        assert_eq!(
            options.kubernetes.kubeconfig,
            Some(PathBuf::from("/k/flag"))
        );
        assert_eq!(options.kubernetes.node_name, "worker-7");
        assert!(!options.kubernetes.enabled);
        let cli = Cli::try_parse_from(["registry-observer", "run"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("parsed as another command")
        };
        let options = run_options(*args, config);
        assert_eq!(
            options.kubernetes.kubeconfig,
            Some(PathBuf::from("/k/config"))
        );
        assert_eq!(options.kubernetes.node_name, "from-config");
        let host = || Some("host-1".to_string());
        assert_eq!(node_name(None, None, Some("env-1".into()), host), "env-1");
        assert_eq!(node_name(None, None, Some(String::new()), host), "host-1");
        assert_eq!(node_name(None, None, None, || None), "");
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        let err = Cli::try_parse_from(["registry-observer", "run", "--registry", "quay.io:443"])
            .unwrap_err();
        assert!(
            err.to_string().contains("without scheme, port or path"),
            "{err}"
        );
        let err =
            Cli::try_parse_from(["registry-observer", "run", "--duration", "soon"]).unwrap_err();
        assert!(err.to_string().contains("30s"), "{err}");
        assert!(Cli::try_parse_from(["registry-observer", "run", "--bogus"]).is_err());
        let err = Cli::try_parse_from(["registry-observer", "run", "--component-rule", "ns=x:y"])
            .unwrap_err();
        assert!(err.to_string().contains("unknown condition"), "{err}");
        let zero = Cli::try_parse_from([
            "registry-observer",
            "run",
            "--catalog-resolve-interval",
            "0",
        ])
        .unwrap();
        let Command::Run(args) = zero.command else {
            panic!("parsed as another command")
        };
        assert!(args.catalog_resolve_interval.is_zero());
    }

    #[test]
    fn output_flags_parse_with_reasons() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["registry-observer", "run"];
            argv.extend(extra);
            Cli::try_parse_from(argv).map(|cli| match cli.command {
                Command::Run(args) => args,
                _ => panic!("not run"),
            })
        };
        let defaults = parse(&[]).unwrap();
        assert_eq!(defaults.metrics_addr, None);
        assert_eq!(defaults.events_max_size, 64 << 20);
        assert_eq!(defaults.phase, None);
        assert_eq!(defaults.ring_buffer_bytes, load::RING_BUFFER_BYTES);
        let args = parse(&[
            "--metrics-addr",
            "off",
            "--events-max-size",
            "500kB",
            "--phase",
            "upgrade",
        ])
        .unwrap();
        assert_eq!(args.metrics_addr, Some(MetricsAddr::Off));
        assert_eq!(args.events_max_size, 500_000);
        let args = parse(&["--metrics-addr", "0.0.0.0:9000"]).unwrap();
        assert_eq!(
            args.metrics_addr,
            Some(MetricsAddr::Explicit("0.0.0.0:9000".parse().unwrap()))
        );
        for (flag, value, reason) in [
            ("--metrics-addr", "localhost", "IP:PORT"),
            ("--phase", "Upgrade", "a-z, 0-9"),
            ("--events-max-size", "lots", "64MiB"),
            ("--events-max-size", "0", "above 0"),
            ("--ring-buffer-bytes", "5000", "power of two"),
        ] {
            let error = parse(&[flag, value]).unwrap_err().to_string();
            assert!(error.contains(reason), "{flag} {value}: {error}");
        }
    }

    #[test]
    fn mark_subcommand_parses() {
        let cli = Cli::try_parse_from(["registry-observer", "mark", "upgrade"]).unwrap();
        let Command::Mark(args) = cli.command else {
            panic!("not mark")
        };
        assert_eq!(args.name.as_str(), "upgrade");
        assert_eq!(args.socket, PathBuf::from(socket::DEFAULT_SOCKET));
        assert!(Cli::try_parse_from(["registry-observer", "mark", "Bad Name"]).is_err());
    }
}
