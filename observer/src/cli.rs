//! Command-line interface: parsing, help text and exit codes.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    UsageError,
    agent::{self, RunOptions},
    attribute::component_rules::ComponentRule,
    classify::Pattern,
    config::{self, Config},
};

/// Used when neither `--report` nor the config's `outputs.report` is given.
const DEFAULT_REPORT: &str = "registry-report.json";
/// Used when neither `--phase` nor the config's `phases.initial` is given.
const DEFAULT_PHASE: &str = "boot";

/// A macro, not a const, so `concat!` can put it after the run examples.
macro_rules! exit_codes {
    () => {
        "Exit codes:
  0    no violation (or violations seen without --fail-on-violation)
  1    --fail-on-violation was given and there was a violation: a registry
       contact in an enforced phase (default: boot, upgrade) that no allow
       entry covers
  2    usage error, or the observer could not start (privileges, kernel, cgroup2)
  N    with a COMMAND and no violation: the command's own exit code
       (127 not found, 126 not executable, 128+S killed by signal S)"
    };
}

#[derive(Parser, Debug)]
#[command(
    name = "registry-observer",
    version,
    about = "Shows which process tried to reach an image registry, when, and how we know",
    long_about = "Shows which process tried to reach an image registry, when, and how we know.\n\n\
        eBPF programs attached to the cgroup2 root see every DNS query and every connect() \
        on the machine (all network namespaces, containers included). Names and addresses \
        are matched against a catalog of registry hosts (quay.io, registry.redhat.io, \
        docker.io, gcr.io, ...); each attempt is attributed to its process, cgroup, systemd \
        unit or container, and written to a JSON report.",
    after_help = exit_codes!()
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Observe registry attempts, live, and write a report at the end.
    #[command(
        long_about = "Observe registry attempts and write a JSON report.\n\n\
            Without COMMAND, watches the whole machine until Ctrl-C (SIGINT), SIGTERM or \
            --duration, printing one line per attempt to stdout.\n\n\
            With `-- COMMAND ARGS...`, runs COMMAND in a fresh cgroup, observes only it and \
            its descendants, and exits when it exits; live lines then go to stderr so the \
            command's stdout stays its own.\n\n\
            The line `registry-observer: observing ...` is printed once every hook is \
            attached: scripts can wait for it. Needs root.",
        after_help = concat!(
            "Examples:\n",
            "  sudo registry-observer run\n",
            "  sudo registry-observer run --duration 10m --report /var/tmp/node.json\n",
            "  sudo registry-observer run --fail-on-violation -- ./upgrade.sh\n",
            "  sudo registry-observer run --registry '*.corp.example' -- make e2e\n",
            "  sudo registry-observer run --config /etc/registry-observer.yaml --phase upgrade\n",
            "  sudo registry-observer run --cri-socket /run/containerd/containerd.sock \\\n",
            "      --component-rule 'namespace=openshift-machine-config-operator:machine-config' \\\n",
            "      --component-rule 'unit=rpm-ostreed.service:machine-config'\n\n",
            "A config file (YAML or TOML) adds catalog entries, imports registries.conf\n",
            "(read by default from /etc/containers), and holds the policy: which phases\n",
            "are enforced and which contacts are allowed, with a reason and an expiry;\n",
            "and rules naming components (after any --component-rule):\n\n",
            "  policy:\n",
            "    enforce_phases: [boot, upgrade]\n",
            "    allow:\n",
            "      - component: rpm-ostreed\n",
            "        host: quay.io\n",
            "        reason: OS rebase during upgrade\n",
            "        expires: 2026-12-31\n",
            "  component_rules:\n",
            "    - match: {namespace: openshift-machine-config-operator}\n",
            "      component: machine-config\n\n",
            "SIGHUP reloads the config file (policy, catalog, component rules) and\n",
            "registries.conf; a bad file is reported\n",
            "and the previous configuration stays. See docs/CONFIG.md.\n\n",
            exit_codes!()
        )
    )]
    Run(RunArgs),
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

    /// Phase name recorded on every attempt (e.g. boot, upgrade)
    /// [default: the config's phases.initial, else boot].
    #[arg(long, value_name = "NAME")]
    pub phase: Option<String>,

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
    /// namespace, labels); repeat for several. Default: every one of
    /// /run/crio/crio.sock and /run/containerd/containerd.sock that exists.
    /// If none answers, pods are reported by uid only and the report's
    /// observer.cri says why.
    #[arg(long = "cri-socket", value_name = "PATH")]
    pub cri_sockets: Vec<PathBuf>,

    /// Name a component: `CONDITIONS:COMPONENT`, where CONDITIONS are
    /// comma-separated `namespace=NS`, `pod_name_prefix=P`, `unit=U`,
    /// `exe=E` (path, or file name) or `label.KEY=VALUE`, all of which must
    /// hold. Checked in order, first match wins, before the built-in naming
    /// (pod owner, unit, executable). Repeat for several.
    #[arg(long = "component-rule", value_name = "RULE", value_parser = parse_component_rule)]
    pub component_rules: Vec<ComponentRule>,

    /// The command to run and observe, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
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

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
    }
}

/// Command-line values win over the config file's, which win over the
/// defaults.
fn run_options(args: RunArgs, config: Config) -> RunOptions {
    RunOptions {
        report: args
            .report
            .or_else(|| config.outputs.report.clone())
            .unwrap_or_else(|| DEFAULT_REPORT.into()),
        registries: args.registries,
        duration: args.duration,
        fail_on_violation: args.fail_on_violation,
        phase: args
            .phase
            .or_else(|| config.phases.initial.clone())
            .unwrap_or_else(|| DEFAULT_PHASE.into()),
        resolve_interval: args.catalog_resolve_interval,
        cri_sockets: args.cri_sockets,
        component_rules: args.component_rules,
        command: args.command,
        config_path: args.config,
        config,
    }
}

fn run(args: RunArgs) -> ExitCode {
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
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

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
        let Command::Run(args) = cli.command;
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
        let Command::Run(args) = cli.command;
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
            let Command::Run(args) = cli.command;
            args
        };
        let config = config::parse(
            std::path::Path::new("c.yaml"),
            "phases: {initial: upgrade}\noutputs: {report: /var/tmp/r.json}\n",
        )
        .unwrap();
        let options = run_options(parse(&["registry-observer", "run"]), config.clone());
        assert_eq!(options.phase, "upgrade");
        assert_eq!(options.report, PathBuf::from("/var/tmp/r.json"));
        let options = run_options(
            parse(&[
                "registry-observer",
                "run",
                "--phase",
                "boot",
                "--report",
                "x.json",
            ]),
            config,
        );
        assert_eq!(options.phase, "boot");
        assert_eq!(options.report, PathBuf::from("x.json"));
        let options = run_options(parse(&["registry-observer", "run"]), Config::default());
        assert_eq!(options.phase, DEFAULT_PHASE);
        assert_eq!(options.report, PathBuf::from(DEFAULT_REPORT));
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
        let Command::Run(args) = zero.command;
        assert!(args.catalog_resolve_interval.is_zero());
    }
}
