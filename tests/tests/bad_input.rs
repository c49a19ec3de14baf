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

/// A config file with mistakes: exit 2 before anything is attached, one line
/// naming the file, line and field, and what to write instead.
#[test]
fn bad_config_names_file_line_and_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    // `text: None` leaves the file missing.
    let check = |name: &str, text: Option<&str>, needles: &[&str]| {
        let path = dir.path().join(name);
        if let Some(text) = text {
            std::fs::write(&path, text).unwrap();
        }
        let outcome = run(&mut observer(&[
            "run",
            "--catalog-resolve-interval",
            "0",
            "--report",
            "/dev/null",
            "--config",
            path.to_str().unwrap(),
        ]));
        assert_one_clear_line(&outcome, &format!("{}:", path.display()));
        for needle in needles {
            assert!(
                outcome.stderr.contains(needle),
                "{needle:?} not in {}",
                outcome.stderr
            );
        }
    };
    check(
        "expiry.yaml",
        Some(
            "policy:\n  allow:\n    - component: skopeo\n      reason: mcd\n      expires: 31.12.2026\n",
        ),
        &[
            "config error: ",
            "expiry.yaml:5:",
            "field `policy.allow[0].expires`",
            "write YYYY-MM-DD",
        ],
    );
    check(
        "typo.toml",
        Some(
            "[policy]\nenforce_phases = [\"boot\"]\n\n[[policy.allow]]\ncomponent = \"skopeo\"\nreson = \"mcd\"\n",
        ),
        &["typo.toml:6:", "unknown field `reson`", "policy.allow[0]"],
    );
    check(
        "reason.yaml",
        Some("policy:\n  allow:\n    - host: quay.io\n"),
        &["reason.yaml:3:", "needs a `reason`"],
    );
    check(
        "config.json",
        Some("{}"),
        &[
            "config.json: unknown config format",
            "*.yaml, *.yml or *.toml",
        ],
    );
    check(
        "none.yaml",
        None,
        &["none.yaml: cannot read it", "check the --config path"],
    );
}

/// A malformed registries.conf (named by the config file) stops the agent the
/// same way: the registries.conf file, its line, and the problem.
#[test]
fn malformed_registries_conf_names_file_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("registries.conf");
    std::fs::write(
        &conf,
        "unqualified-search-registries = [\"registry.access.redhat.com\"]\n\n[[registry]]\nlocation = \"quay.io\"\nblocked = \"yes\"\n",
    )
    .unwrap();
    let drop_ins = dir.path().join("registries.conf.d");
    std::fs::create_dir(&drop_ins).unwrap();
    let config = dir.path().join("observer.yaml");
    std::fs::write(
        &config,
        format!(
            "registries_conf:\n  file: {}\n  dir: {}\n",
            conf.display(),
            drop_ins.display()
        ),
    )
    .unwrap();
    let outcome = run(&mut observer(&[
        "run",
        "--report",
        "/dev/null",
        "--config",
        config.to_str().unwrap(),
    ]));
    assert_one_clear_line(
        &outcome,
        &format!("registries.conf error: {}:5:", conf.display()),
    );
    assert!(
        outcome.stderr.contains("field `registry[0].blocked`"),
        "{}",
        outcome.stderr
    );

    // A v1 table in a drop-in is refused, naming the drop-in.
    std::fs::write(&conf, "").unwrap();
    let drop_in = drop_ins.join("50-old.conf");
    std::fs::write(
        &drop_in,
        "[registries.block]\nregistries = [\"docker.io\"]\n",
    )
    .unwrap();
    let outcome = run(&mut observer(&[
        "run",
        "--report",
        "/dev/null",
        "--config",
        config.to_str().unwrap(),
    ]));
    assert_one_clear_line(&outcome, &format!("{}:1:", drop_in.display()));
    assert!(
        outcome.stderr.contains("not allowed in a drop-in"),
        "{}",
        outcome.stderr
    );
}
