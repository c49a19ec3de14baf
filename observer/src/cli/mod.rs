//! Command-line interface: parsing, help text and exit codes.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Parser, Subcommand};
use observer_report::{self as report, diff, merge, text};

#[cfg(feature = "agent")]
mod agent;
#[cfg(feature = "agent")]
pub use agent::{DetachArgs, MarkArgs, RunArgs};

/// A macro, not a const, so `concat!` can put it after the run examples.
macro_rules! exit_codes {
    () => {
        "Exit codes of `run` (the first that applies):
  2    usage error, or the observer could not start (privileges, kernel, cgroup2)
  3    incomplete: events were lost, --events lines dropped or a hook could
       not be attached, so absence of attempts proves nothing
       (--allow-incomplete turns this off)
  1    --fail-on-violation was given and there was a violation: a registry
       contact in an enforced phase (default: boot, upgrade) that no allow
       entry covers
  N    with a COMMAND: the command's own exit code
       (127 not found, 126 not executable, 128+S killed by signal S)
  0    otherwise: no violation (allowed or not-enforced contacts only), or
       violations without --fail-on-violation
`report diff` exits 1 when NEW has violations BASE did not; every command
exits 2 on bad input (a malformed report names FILE:LINE:COLUMN)."
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
    after_help = concat!(
        exit_codes!(),
        "\n\n`lint` and `webhook` have their own exit codes: registry-observer lint --help, \
         registry-observer webhook --help"
    )
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
            "  sudo registry-observer run --junit junit.xml --events /var/tmp/attempts.jsonl\n",
            "  # phases: the agent starts in `boot`; mark the upgrade when it begins\n",
            "  sudo registry-observer mark upgrade\n",
            "  curl -d upgrade http://127.0.0.1:9669/phase\n",
            "  curl http://127.0.0.1:9669/metrics\n",
            "  sudo registry-observer run --config /etc/registry-observer.yaml --phase upgrade\n",
            "  sudo registry-observer run --cri-socket /run/containerd/containerd.sock \\\n",
            "      --component-rule 'namespace=openshift-machine-config-operator:machine-config' \\\n",
            "      --component-rule 'unit=rpm-ostreed.service:machine-config'\n",
            "  # name the pod behind each runtime pull, from the kubelet's Pulling events\n",
            "  sudo registry-observer run --kubeconfig /var/lib/kubelet/kubeconfig --node-name worker-0\n\n",
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
            "      component: machine-config\n",
            "  phases: {initial: boot}\n",
            "  outputs: {report: /var/tmp/node.json, junit: junit.xml}\n\n",
            "SIGHUP reloads the config file (policy, catalog, component rules) and\n",
            "registries.conf; a bad file is reported\n",
            "and the previous configuration stays. See docs/CONFIG.md.\n\n",
            exit_codes!()
        )
    )]
    #[cfg(feature = "agent")]
    Run(Box<RunArgs>),

    /// Find workloads in Kubernetes manifests that make a node contact a registry.
    #[command(
        long_about = "Find workloads in Kubernetes manifests that make a node contact a registry.\n\n\
            Checks every container, init container and ephemeral container of Pods, \
            Deployments, DaemonSets, StatefulSets, ReplicaSets, Jobs, CronJobs, \
            ReplicationControllers, DeploymentConfigs and PodTemplates, also inside Lists \
            and OpenShift Templates, applying Kubernetes' own defaulting: no imagePullPolicy \
            with a latest or missing tag means Always.\n\n\
            Rules (docs/LINT.md): error explicit-always, implicit-always, invalid-image, \
            invalid-pull-policy; warning tag-not-digest, short-name. Each finding names the \
            file, document, line, object, container and the fix. A document that does not \
            parse is reported with its line and the rest is still checked.",
        after_help = concat!(
            "Examples:\n",
            "  registry-observer lint deploy/\n",
            "  oc adm release extract --to=manifests quay.io/openshift-release-dev/ocp-release:4.19.0-x86_64\n",
            "  registry-observer lint manifests/ --format sarif > lint.sarif\n",
            "  helm template ./chart | registry-observer lint - --fail-level warning\n",
            "  kubectl get pods -A -o json | registry-observer lint --cluster\n",
            "  registry-observer lint --format junit k8s/*.yaml > junit-lint.xml\n\n",
            observer_lint::lint_exit_codes!()
        )
    )]
    Lint(observer_lint::LintArgs),

    /// Admission webhook: warn about or deny workloads that would contact a registry.
    #[command(
        long_about = "A Kubernetes validating admission webhook (AdmissionReview v1 over HTTPS) \
            that applies lint's checks to every Pod, Deployment, DaemonSet, StatefulSet, \
            ReplicaSet, Job and CronJob created or updated: in warn mode it admits them and \
            returns each finding as an admission warning (kubectl prints them); in deny mode \
            it rejects those with findings at or above --fail-level, naming each container, \
            field and fix. An UPDATE is denied only for findings it introduces. Manifests: \
            deploy/webhook/.",
        after_help = observer_webhook::webhook_help!()
    )]
    Webhook(observer_webhook::WebhookArgs),

    /// Tell a running agent that a new phase begins (e.g. upgrade).
    #[command(
        long_about = "Tell a running agent that a new phase begins: later attempts carry this \
            phase, and the report records a marker with the time. Talks to the agent's \
            control socket (root only). `POST /phase` on the agent's HTTP endpoint does \
            the same.",
        after_help = "Examples:\n  sudo registry-observer mark upgrade\n  \
            sudo registry-observer mark post-upgrade --socket /tmp/ro.sock\n\n\
            Exit codes: 0 the agent switched phase; 2 invalid name or no agent listening."
    )]
    #[cfg(feature = "agent")]
    Mark(MarkArgs),

    /// Remove the programs a service-mode agent left attached (uninstall).
    #[command(
        long_about = "Remove what `run --state-dir` leaves pinned in bpffs so its programs \
            observe while no agent runs: unpins every link (the kernel detaches the \
            programs once nothing holds them) and every map, then removes the pin dir. \
            Refused while an agent runs on the pin dir. The state dir and its record are \
            kept.",
        after_help = "Examples:\n  sudo registry-observer detach\n  \
            sudo registry-observer detach --pin-dir /sys/fs/bpf/ro-test\n\n\
            Exit codes: 0 detached (or nothing was pinned); 2 an agent holds the pin dir, \
            or a pin could not be removed."
    )]
    #[cfg(feature = "agent")]
    Detach(DetachArgs),

    /// Read reports: summarize, merge nodes into a cluster, diff releases.
    #[command(subcommand)]
    Report(ReportCommand),
}

#[derive(Subcommand, Debug)]
pub enum ReportCommand {
    /// Print a report's summary: one row per phase and component.
    #[command(
        after_help = "Examples:\n  registry-observer report summarize node.json\n  \
        registry-observer report summarize --format markdown cluster.json >> comment.md"
    )]
    Summarize {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// `table` for a terminal, `markdown` for a pull-request comment.
        #[arg(long, value_enum, default_value = "table")]
        format: text::Format,
    },
    /// Merge nodes' reports into one cluster report (per-node counts,
    /// first/last seen across nodes).
    #[command(
        after_help = "Examples:\n  registry-observer report merge -o cluster.json node-*.json"
    )]
    Merge {
        #[arg(value_name = "FILE", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Where to write the cluster report (atomically); stdout if not given.
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
    },
    /// Build the report a state dir holds (`run --state-dir DIR`), whether
    /// or not an agent runs on it: the agent's latest report with every
    /// attempt, phase and run of its durable record, and the gaps (a run
    /// that crashed and nobody observing since). After a clean stop it is
    /// the agent's own final report.
    #[command(
        after_help = "Examples:\n  registry-observer report build /var/lib/registry-observer -o node.json\n  \
        registry-observer report build /var/lib/registry-observer --junit node.xml\n\n\
        Exit codes: 0 built; 2 not a state dir, or unreadable."
    )]
    Build {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Where to write the report (atomically); stdout if not given.
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// Also write JUnit XML there.
        #[arg(long, value_name = "PATH")]
        junit: Option<PathBuf>,
    },
    /// Compare NEW with a BASE report: new components, hosts and
    /// violations. Exits 1 when NEW has violations BASE did not.
    #[command(
        after_help = "Examples:\n  registry-observer report diff 4.18.json 4.19.json\n\n\
        Exit codes: 0 no new violation; 1 new violations (a regression); 2 bad input."
    )]
    Diff {
        #[arg(value_name = "BASE")]
        base: PathBuf,
        #[arg(value_name = "NEW")]
        new: PathBuf,
        /// Print the differences as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Lint(args) => observer_lint::run(args),
        Command::Webhook(args) => observer_webhook::run(args),
        #[cfg(feature = "agent")]
        Command::Run(args) => agent::run(*args),
        #[cfg(feature = "agent")]
        Command::Mark(args) => agent::mark(&args),
        #[cfg(feature = "agent")]
        Command::Detach(args) => agent::detach(&args),
        Command::Report(command) => match report_command(command) {
            Ok(code) => code,
            Err(message) => {
                eprintln!("registry-observer: {message}");
                ExitCode::from(2)
            }
        },
    }
}

fn report_command(command: ReportCommand) -> Result<ExitCode, String> {
    let load = |path: &Path| report::load(path).map_err(|e| e.to_string());
    match command {
        ReportCommand::Summarize { file, format } => {
            print!("{}", text::summarize(&load(&file)?, format));
            Ok(ExitCode::SUCCESS)
        }
        ReportCommand::Merge { files, output } => {
            let mut inputs = Vec::new();
            for file in &files {
                inputs.push((file.display().to_string(), load(file)?));
            }
            let merged = merge::merge(inputs);
            match output {
                Some(path) => report::write(&path, &merged).map_err(|e| format!("{e:#}"))?,
                None => println!(
                    "{}",
                    serde_json::to_string_pretty(&merged).map_err(|e| e.to_string())?
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        ReportCommand::Build { dir, output, junit } => {
            let built = observer_state::build::build(&dir, std::time::SystemTime::now())
                .map_err(|e| e.to_string())?;
            for damage in &built.damage {
                eprintln!(
                    "registry-observer: warning: a {} record at {} byte {} was skipped",
                    damage.kind,
                    damage.file.display(),
                    damage.offset
                );
            }
            if built.unreadable > 0 {
                eprintln!(
                    "registry-observer: warning: {} record(s) this build cannot read were skipped",
                    built.unreadable
                );
            }
            if built.agent_running {
                eprintln!(
                    "registry-observer: note: an agent runs on {}: this report is as of now (observer.snapshot)",
                    dir.display()
                );
            }
            if let Some(path) = &junit {
                let xml =
                    observer_report::junit::to_junit(&built.report).map_err(|e| e.to_string())?;
                report::write_atomically(path, xml.as_bytes())
                    .map_err(|e| format!("writing the JUnit file {}: {e}", path.display()))?;
            }
            match output {
                Some(path) => report::write(&path, &built.report).map_err(|e| format!("{e:#}"))?,
                None => println!(
                    "{}",
                    serde_json::to_string_pretty(&built.report).map_err(|e| e.to_string())?
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        ReportCommand::Diff { base, new, json } => {
            let differences = diff::diff(&load(&base)?, &load(&new)?);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&differences).map_err(|e| e.to_string())?
                );
            } else {
                print!(
                    "{}",
                    diff::render(
                        &differences,
                        &base.display().to_string(),
                        &new.display().to_string()
                    )
                );
            }
            Ok(if differences.regressed() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
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
    fn report_subcommands_parse() {
        let cli = Cli::try_parse_from([
            "registry-observer",
            "report",
            "summarize",
            "--format",
            "markdown",
            "r.json",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Report(ReportCommand::Summarize {
                format: text::Format::Markdown,
                ..
            })
        ));
        assert!(Cli::try_parse_from(["registry-observer", "report", "merge"]).is_err());
        assert!(Cli::try_parse_from(["registry-observer", "report", "diff", "a.json"]).is_err());
    }
}
