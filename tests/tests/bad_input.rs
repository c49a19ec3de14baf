//! Bad input and unfit machines: the real binary must exit 2 with one clear
//! sentence saying what is wrong and how to fix it, before attaching
//! anything. Missing privileges and a missing cgroup2 mount are produced for
//! real (a process without capabilities; a private mount namespace with the
//! cgroup2 mount removed), not simulated.

use std::{process::Command, time::Duration};

use observer_tests::{agent_binary, output_within, require_root_and_tools};

const TIMEOUT: Duration = Duration::from_secs(60);

struct Outcome {
    code: Option<i32>,
    stderr: String,
}

fn run(command: &mut Command) -> Outcome {
    let output = output_within(command, TIMEOUT).expect("running registry-observer");
    Outcome {
        code: output.status.code(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn observer(args: &[&str]) -> Command {
    let mut command = Command::new(agent_binary());
    command.args(args);
    command
}

/// One sentence (one line), naming the problem.
fn assert_one_clear_line(outcome: &Outcome, needle: &str) {
    assert_eq!(outcome.code, Some(2), "stderr: {}", outcome.stderr);
    let lines: Vec<&str> = outcome.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {}", outcome.stderr);
    assert!(lines[0].contains(needle), "{:?} lacks {needle:?}", lines[0]);
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let outcome = run(&mut observer(&["run", "--no-such-flag"]));
    assert_eq!(outcome.code, Some(2));
    assert!(
        outcome.stderr.contains("--no-such-flag"),
        "{}",
        outcome.stderr
    );
    assert!(outcome.stderr.contains("Usage"), "{}", outcome.stderr);
}

#[test]
fn bad_registry_pattern_says_what_to_write() {
    let outcome = run(&mut observer(&["run", "--registry", "https://quay.io/x"]));
    assert_eq!(outcome.code, Some(2));
    assert!(
        outcome.stderr.contains("without scheme, port or path"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn unwritable_report_path_fails_before_attaching() {
    require_root_and_tools(&[]);
    let outcome = run(&mut observer(&[
        "run",
        "--catalog-resolve-interval",
        "0",
        "--report",
        "/proc/registry-observer/report.json",
    ]));
    assert_one_clear_line(
        &outcome,
        "cannot write the report to /proc/registry-observer/report.json",
    );
    assert!(
        outcome.stderr.contains("--report PATH"),
        "{}",
        outcome.stderr
    );
    let dir = std::env::temp_dir();
    let outcome = run(&mut observer(&["run", "--report", dir.to_str().unwrap()]));
    assert_one_clear_line(&outcome, "is a directory");
}

#[test]
fn missing_privileges_are_named() {
    require_root_and_tools(&["setpriv"]);
    let outcome = run(Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(agent_binary())
        .args(["run", "--report", "/dev/null"]));
    assert_one_clear_line(&outcome, "missing privileges");
    assert!(outcome.stderr.contains("CAP_BPF"), "{}", outcome.stderr);
}

#[test]
fn missing_cgroup2_mount_is_named() {
    require_root_and_tools(&["unshare", "umount", "sh"]);
    let root = observer_tests::cgroup2_root();
    let script = format!(
        "umount -l '{}' && exec '{}' run --report /dev/null --catalog-resolve-interval 0",
        root.display(),
        agent_binary().display()
    );
    let outcome = run(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(&script));
    assert_one_clear_line(&outcome, "no cgroup2 filesystem is mounted");
    assert!(
        outcome.stderr.contains("mount -t cgroup2"),
        "{}",
        outcome.stderr
    );
}
