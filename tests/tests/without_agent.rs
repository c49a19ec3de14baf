//! The binary built without the agent (`cargo build --no-default-features`,
//! on stable with no bpf-linker on PATH, as `cargo xtask test` builds it):
//! it has `lint`, `webhook` and `report`, no `run` or `mark`, and each
//! command it has behaves exactly as the full binary's. (The webhook's
//! reviews are compared in tests/tests/webhook.rs.) No privilege needed.

use std::{path::Path, process::Command, time::Duration};

use observer_report::fixtures::{allowed, attempt, node_report};
use observer_tests::{agent_binary, no_agent_binary, output_within, workspace_root};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Exit code, stdout and stderr of `binary args...`, run from the
/// workspace root.
fn run(binary: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let output = output_within(
        Command::new(binary)
            .args(args)
            .current_dir(workspace_root()),
        TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("running {} {args:?}: {e}", binary.display()));
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Both binaries give the same exit code and output; returns them.
fn same_as_full(args: &[&str]) -> (Option<i32>, String, String) {
    let without_agent = run(&no_agent_binary(), args);
    assert_eq!(without_agent, run(&agent_binary(), args), "{args:?}");
    without_agent
}

#[test]
fn it_has_lint_webhook_and_report_but_no_agent_commands() {
    let (code, help, _) = run(&no_agent_binary(), &["--help"]);
    assert_eq!(code, Some(0));
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(commands, ["lint", "webhook", "report", "help"], "{help}");
    for agent_command in ["run", "mark"] {
        let (code, _, stderr) = run(&no_agent_binary(), &[agent_command]);
        assert_eq!(code, Some(2), "{agent_command}: {stderr}");
        assert!(
            stderr.contains(&format!("unrecognized subcommand '{agent_command}'")),
            "{stderr}"
        );
    }
    // The full binary has them: the comparison above is not vacuous.
    let (_, full_help, _) = run(&agent_binary(), &["--help"]);
    assert!(full_help.contains("\n  run "), "{full_help}");
}

#[test]
fn lint_finds_the_same_as_the_full_binary() {
    let (code, stdout, _) = same_as_full(&["lint", "tests/fixtures/lint/cronjob.yaml"]);
    assert_eq!(code, Some(1), "cronjob.yaml has an Always: {stdout}");
    assert!(stdout.contains("imagePullPolicy"), "{stdout}");
    let (code, _, _) = same_as_full(&["lint", "tests/fixtures/lint/clean.yaml"]);
    assert_eq!(code, Some(0));
}

#[test]
fn report_summarize_merge_and_diff_match_the_full_binary() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, report: &observer_report::Report| {
        let path = dir.path().join(name);
        observer_report::write(&path, report).unwrap();
        path.display().to_string()
    };
    let base = write(
        "base.json",
        &node_report(
            "node-a",
            &["boot"],
            vec![allowed(attempt("boot", "crio", "quay.io", 5), "pulls")],
        ),
    );
    let new = write(
        "new.json",
        &node_report(
            "node-b",
            &["boot", "upgrade"],
            vec![
                attempt("boot", "crio", "quay.io", 5),
                attempt("upgrade", "machine-config-daemon", "registry.redhat.io", 60),
            ],
        ),
    );

    let (code, table, _) = same_as_full(&["report", "summarize", &new]);
    assert_eq!(code, Some(0));
    assert!(table.contains("machine-config-daemon"), "{table}");

    let (code, merged, _) = same_as_full(&["report", "merge", &base, &new]);
    assert_eq!(code, Some(0));
    let merged: serde_json::Value = serde_json::from_str(&merged).unwrap();
    assert_eq!(
        merged["nodes"].as_array().map(Vec::len),
        Some(2),
        "{merged}"
    );

    // New violations in `new`: diff exits 1, from either binary.
    let (code, text, _) = same_as_full(&["report", "diff", &base, &new]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("registry.redhat.io"), "{text}");

    let (code, _, stderr) = same_as_full(&["report", "summarize", "Cargo.toml"]);
    assert_eq!(code, Some(2), "a non-report is bad input: {stderr}");
}
