//! `registry-observer lint`: finds Kubernetes workloads whose image pull
//! policy makes a node contact a registry.
//!
//! Stages, data flowing one way:
//! input (read files, directories, stdin) -> yaml (documents, source lines)
//! -> walk + policy (containers, Kubernetes defaulting, findings; pure, on
//! `serde_json::Value`) -> outcome (lines, totals, exit code) -> render.
//!
//! [`check_object`] and [`check_pod_spec`] are the reusable entry points for
//! callers that already hold an object (an AdmissionReview's pod, for one).

pub mod finding;
pub mod input;
pub mod outcome;
pub mod pull_policy;
pub mod reference;
pub mod render;
pub mod walk;
pub mod yaml;

use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
};

use clap::Args;

pub use finding::{Finding, Rule, Severity};
pub use outcome::FailLevel;
pub use pull_policy::{PullPolicy, default_pull_policy};
pub use reference::ImageReference;
pub use render::Format;
pub use walk::{CheckedContainer, check_object, check_pod_spec};

/// Exit codes, shared by `--help` and the docs.
#[macro_export]
#[doc(hidden)]
macro_rules! lint_exit_codes {
    () => {
        "Exit codes:
  0    no finding at or above --fail-level
  1    a finding at or above --fail-level
  2    an input (a file, or a document in it) could not be read or parsed;
       everything readable is still checked and reported; or a usage error"
    };
}

#[derive(Args, Debug)]
pub struct LintArgs {
    /// Manifests to check: YAML (multi-document) or JSON files, directories
    /// (searched recursively for *.yaml, *.yml, *.json; hidden entries
    /// skipped), or - for stdin.
    #[arg(value_name = "PATH", required_unless_present = "cluster")]
    pub paths: Vec<PathBuf>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Lowest severity that makes the exit code 1. Errors are policies that
    /// contact a registry on every start (explicit or defaulted Always) and
    /// images the kubelet rejects; warnings are images that work offline
    /// only while present on the node (tags instead of digests, short
    /// names). The default gates on what breaks a disconnected node for sure.
    #[arg(long, value_enum, default_value_t = FailLevel::Error)]
    pub fail_level: FailLevel,

    /// Input is live cluster state, as printed by `kubectl get pods -A -o
    /// json`: read stdin when no PATH is given, and report the pods of one
    /// controller (DaemonSet, ReplicaSet, Job, ...) once, with their count.
    #[arg(long)]
    pub cluster: bool,
}

/// Runs `lint` and returns its exit code; output goes to stdout, one line
/// per unreadable input to stderr.
pub fn run(args: LintArgs) -> ExitCode {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        args.paths
    };
    let reads_stdin = paths.iter().any(|p| p.as_os_str() == "-");
    if reads_stdin && std::io::stdin().is_terminal() {
        // Waiting on a terminal for JSON nobody is typing looks like a hang.
        eprintln!(
            "registry-observer: lint reads stdin here, which is a terminal; pipe the input in, \
             e.g. `kubectl get pods -A -o json | registry-observer lint --cluster`, or name files"
        );
        return ExitCode::from(2);
    }
    let (sources, problems) = input::read_inputs(&paths, &mut std::io::stdin().lock());
    let mut outcome = outcome::Outcome::check(&sources, problems);
    if args.cluster {
        outcome.fold_owned_pods();
    }
    let text = render::render(&outcome, args.format, args.fail_level);
    // Structured formats carry the problems too; stderr says it to the
    // person watching the CI log. Text already lists them.
    if args.format != Format::Text {
        for problem in &outcome.problems {
            eprintln!("registry-observer: {problem}");
        }
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // A closed pipe (`| head`) is the reader's choice, not a failure.
        if error.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("registry-observer: cannot write the output: {error}");
            return ExitCode::from(2);
        }
    }
    ExitCode::from(outcome.exit_code(args.fail_level))
}
