//! `registry-observer lint`: the real binary over the manifests in
//! tests/fixtures/lint/, run from the workspace root as a user would run it
//! in a repository. Outputs are read back by independent consumers: Python's
//! junitparser for JUnit and Python's jsonschema for JSON and SARIF. No
//! privilege is needed; nothing is mocked.

use std::{process::Command, time::Duration};

use observer_tests::{agent_binary, output_within, workspace_root};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(60);
/// Debian's interpreter, with python3-jsonschema and python3-junitparser
/// (installed by `cargo xtask setup`).
const PYTHON: &str = "/usr/bin/python3";
const FIXTURES: &str = "tests/fixtures/lint";

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn finish(command: &mut Command) -> Run {
    let output = output_within(command.current_dir(workspace_root()), TIMEOUT)
        .expect("running registry-observer lint");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 output"),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn lint(args: &[&str]) -> Run {
    finish(Command::new(agent_binary()).arg("lint").args(args))
}

/// Runs lint with `stdin_file` on its standard input (through the shell, as
/// `registry-observer lint ... < FILE`).
fn lint_with_stdin(stdin_file: &str, args: &[&str]) -> Run {
    finish(
        Command::new("sh")
            .args(["-c", "f=$1; shift; exec \"$@\" < \"$f\"", "sh", stdin_file])
            .arg(agent_binary())
            .arg("lint")
            .args(args),
    )
}

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", run.stdout, run.stderr))
}

/// Runs a Python script with Debian's interpreter, `input` on its standard
/// input and `args` as sys.argv[1:].
fn python(script: &str, args: &[&str], input: &str) -> String {
    assert!(
        observer_tests::find_executable(PYTHON).is_some(),
        "{PYTHON} is missing; `cargo xtask setup` installs it"
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    let input_path = dir.path().join("input");
    std::fs::write(&input_path, input).expect("writing python's input");
    let output = output_within(
        Command::new("sh")
            .args(["-c", "f=$1; shift; exec \"$@\" < \"$f\"", "sh"])
            .arg(&input_path)
            .args([PYTHON, "-c", script])
            .args(args)
            .current_dir(workspace_root()),
        TIMEOUT,
    )
    .expect("running python");
    assert!(
        output.status.success(),
        "python failed ({}); `cargo xtask setup` installs python3-jsonschema and python3-junitparser:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// Validates `document` against the JSON Schema at `schema` (a path from
/// the workspace root) with Python's jsonschema, using the validator the
/// schema's `$schema` names.
fn assert_valid(document: &str, schema: &str) {
    let script = "import json,sys,jsonschema\n\
        schema=json.load(open(sys.argv[1]))\n\
        cls=jsonschema.validators.validator_for(schema)\n\
        cls.check_schema(schema)\n\
        cls(schema).validate(json.load(sys.stdin))\n\
        print('valid')";
    assert_eq!(python(script, &[schema], document).trim(), "valid");
}

#[test]
fn multi_document_yaml_reports_the_broken_document_and_checks_the_rest() {
    let run = lint(&[&fixture("multi.yaml")]);
    assert_eq!(
        run.code,
        Some(2),
        "unreadable document => 2\n{}",
        run.stdout
    );
    let file = fixture("multi.yaml");
    // Document 1: short name, no tag => defaulted Always, on the line of `image:`.
    assert!(
        run.stdout.contains(&format!(
            "{file}:14: error[implicit-always] Deployment shop/web, container \"nginx\" (document 1)"
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("{file}:14: warning[short-name]"))
    );
    assert!(
        run.stdout
            .contains("fix: write the fully qualified name: docker.io/library/nginx")
    );
    // Document 2 does not parse: file, line, column and index.
    assert!(
        run.stdout
            .contains(&format!("{file}:19:5: document 2: cannot parse:")),
        "{}",
        run.stdout
    );
    // Document 3 is still checked: explicit Always on the line of the policy.
    assert!(
        run.stdout.contains(&format!(
            "{file}:33: error[explicit-always] DaemonSet openshift-ovn-kubernetes/ovnkube-upgrades-prepuller, container \"prepull\" (document 3)"
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("fix: set imagePullPolicy: IfNotPresent (the digest already pins the image)")
    );
    assert!(
        run.stdout.trim_end().ends_with(
            "2 error(s), 2 warning(s) in 2 container(s) of 3 document(s) in 1 input(s); 1 input(s) or document(s) could not be read: fail (unreadable input)"
        ),
        "{}",
        run.stdout
    );
}

#[test]
fn clean_manifests_exit_zero() {
    let run = lint(&[&fixture("clean.yaml")]);
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert_eq!(
        run.stdout,
        "0 error(s), 0 warning(s) in 3 container(s) of 1 document(s) in 1 input(s): pass\n"
    );
}

#[test]
fn fail_level_decides_what_fails() {
    let warnings = fixture("warnings-only.yaml");
    let run = lint(&[&warnings]);
    assert_eq!(
        run.code,
        Some(0),
        "warnings do not fail by default\n{}",
        run.stdout
    );
    assert!(run.stdout.contains(&format!(
        "{warnings}:12: warning[tag-not-digest] Deployment apps/tagged"
    )));
    assert_eq!(lint(&["--fail-level", "warning", &warnings]).code, Some(1));
    let errors = fixture("cronjob.yaml");
    assert_eq!(lint(&[&errors]).code, Some(1));
    assert_eq!(lint(&["--fail-level", "none", &errors]).code, Some(0));
    // Unreadable input is never waved through.
    assert_eq!(
        lint(&["--fail-level", "none", &fixture("multi.yaml")]).code,
        Some(2)
    );
}

#[test]
fn cronjob_templates_are_walked_to_their_init_containers() {
    let run = lint(&["--format", "json", &fixture("cronjob.yaml")]);
    assert_eq!(run.code, Some(1));
    let output = json(&run);
    let findings = output["findings"].as_array().unwrap();
    let wait = findings
        .iter()
        .find(|f| f["container"] == "wait")
        .expect("the init container of the CronJob's job template");
    assert_eq!(
        wait["rule"], "implicit-always",
        "latest@digest is still latest"
    );
    assert_eq!(wait["container_list"], "initContainers");
    assert_eq!(wait["line"], 15);
    assert_eq!(
        wait["path"],
        "/spec/jobTemplate/spec/template/spec/initContainers/0/image"
    );
    assert_eq!(wait["kind"], "CronJob");
    assert_eq!(wait["namespace"], "openshift-image-registry");
    let prune = findings.iter().find(|f| f["container"] == "prune").unwrap();
    assert_eq!(prune["rule"], "tag-not-digest");
    assert_eq!(prune["severity"], "warning");
}

#[test]
fn json_list_and_json_output_follow_the_schema() {
    let run = lint(&["--format", "json", &fixture("list.json")]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let output = json(&run);
    assert_eq!(output["summary"]["exit_code"], 1);
    assert_eq!(output["summary"]["containers"], 2);
    assert_eq!(output["summary"]["errors"], 1);
    let first = &output["findings"][0];
    assert_eq!(first["file"], fixture("list.json"));
    assert_eq!(first["document"], 1);
    assert_eq!(first["line"], 10);
    assert_eq!(first["kind"], "StatefulSet");
    assert_eq!(first["namespace"], "data");
    assert_eq!(first["name"], "db");
    assert_eq!(first["container"], "postgres");
    assert_eq!(first["rule"], "implicit-always");
    assert_eq!(
        first["path"],
        "/items/0/spec/template/spec/containers/0/image"
    );
    // The ReplicaSet's container is pinned and IfNotPresent: not reported.
    assert!(
        output["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["name"] != "cache")
    );
    assert_valid(&run.stdout, "docs/lint.schema.json");

    // Problems are part of the JSON too, and said once on stderr.
    let broken = lint(&["--format", "json", &fixture("multi.yaml")]);
    assert_eq!(broken.code, Some(2));
    let output = json(&broken);
    assert_eq!(output["problems"][0]["document"], 2);
    assert_eq!(output["problems"][0]["line"], 19);
    assert_eq!(broken.stderr.lines().count(), 1, "{}", broken.stderr);
    assert!(
        broken
            .stderr
            .contains("multi.yaml:19:5: document 2: cannot parse")
    );
    assert_valid(&broken.stdout, "docs/lint.schema.json");
}

#[test]
fn directories_are_walked_recursively() {
    let run = lint(&["--format", "json", &fixture("payload")]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let output = json(&run);
    // 0000_10_operator.yaml (two documents) and sub/0000_50_catalog.yml; not
    // README.md, not .hidden/.
    assert_eq!(output["summary"]["inputs"], 2);
    assert_eq!(output["summary"]["documents"], 3);
    assert_eq!(output["summary"]["containers"], 2);
    let files: Vec<&str> = output["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            fixture("payload/sub/0000_50_catalog.yml"),
            fixture("payload/sub/0000_50_catalog.yml")
        ]
    );
    assert_eq!(output["findings"][0]["rule"], "explicit-always");
    assert_eq!(output["findings"][0]["line"], 12);
    assert!(!run.stdout.contains("hidden-files-are-skipped"));
}

#[test]
fn stdin_is_read_with_a_dash() {
    let run = lint_with_stdin(&fixture("cronjob.yaml"), &["-"]);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("<stdin>:15: error[implicit-always] CronJob openshift-image-registry/pruner, init container \"wait\""),
        "{}",
        run.stdout
    );
}

#[test]
fn cluster_mode_reads_kubectl_pods_from_stdin_and_folds_controllers() {
    let run = lint_with_stdin(&fixture("pods.json"), &["--cluster", "--format", "json"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let output = json(&run);
    let findings = output["findings"].as_array().unwrap();
    assert_eq!(
        findings.len(),
        1,
        "three pods of one DaemonSet, reported once: {findings:?}"
    );
    assert_eq!(findings[0]["owner"], "DaemonSet/ovnkube-node");
    assert_eq!(findings[0]["pods"], 3);
    assert_eq!(findings[0]["rule"], "explicit-always");
    assert_eq!(findings[0]["file"], "<stdin>");
    assert_eq!(findings[0]["line"], 28);
    assert_eq!(output["summary"]["containers"], 4);
    assert_valid(&run.stdout, "docs/lint.schema.json");

    // Without --cluster each pod is its own finding.
    let unfolded = lint(&["--format", "json", &fixture("pods.json")]);
    assert_eq!(json(&unfolded)["findings"].as_array().unwrap().len(), 3);
}

#[test]
fn junit_is_read_by_an_independent_consumer() {
    let run = lint(&[
        "--format",
        "junit",
        &fixture("multi.yaml"),
        &fixture("list.json"),
    ]);
    assert_eq!(run.code, Some(2));
    let script = "import sys,json\n\
        from junitparser import JUnitXml, Failure, Error\n\
        xml=JUnitXml.fromstring(sys.stdin.read().encode())\n\
        out=[]\n\
        for suite in xml:\n\
        \x20   for case in suite:\n\
        \x20       kinds=[type(r).__name__ for r in case.result]\n\
        \x20       out.append([suite.name, case.name, case.classname, kinds])\n\
        print(json.dumps(out))";
    let cases: Value = serde_json::from_str(&python(script, &[], &run.stdout)).unwrap();
    let multi = fixture("multi.yaml");
    let list = fixture("list.json");
    let expected = serde_json::json!([
        [
            multi,
            "Deployment shop/web containers nginx",
            format!("{multi}:13 (document 1)"),
            ["Failure"]
        ],
        [
            multi,
            "DaemonSet openshift-ovn-kubernetes/ovnkube-upgrades-prepuller containers prepull",
            format!("{multi}:31 (document 3)"),
            ["Failure"]
        ],
        [multi, "document 2", multi, ["Error"]],
        [
            list,
            "StatefulSet data/db containers postgres",
            format!("{list}:10 (document 1)"),
            ["Failure"]
        ],
        [
            list,
            "ReplicaSet data/cache containers redis",
            format!("{list}:18 (document 1)"),
            []
        ],
    ]);
    assert_eq!(cases, expected, "{}", run.stdout);
}

#[test]
fn sarif_follows_the_sarif_2_1_0_structure() {
    let run = lint(&[
        "--format",
        "sarif",
        &fixture("multi.yaml"),
        &fixture("cronjob.yaml"),
    ]);
    assert_eq!(run.code, Some(2));
    assert_valid(&run.stdout, &fixture("sarif-2.1.0-subset.schema.json"));
    let sarif = json(&run);
    assert_eq!(sarif["version"], "2.1.0");
    let run0 = &sarif["runs"][0];
    let rules: Vec<&str> = run0["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let results = run0["results"].as_array().unwrap();
    assert_eq!(results.len(), 6, "4 in multi.yaml, 2 in cronjob.yaml");
    for result in results {
        let index = result["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(
            rules[index], result["ruleId"],
            "ruleIndex points at the rule"
        );
    }
    let explicit = results
        .iter()
        .find(|r| r["ruleId"] == "explicit-always")
        .unwrap();
    assert_eq!(explicit["level"], "error");
    let physical = &explicit["locations"][0]["physicalLocation"];
    assert_eq!(physical["artifactLocation"]["uri"], fixture("multi.yaml"));
    assert_eq!(physical["region"]["startLine"], 33);
    let invocation = &run0["invocations"][0];
    assert_eq!(invocation["executionSuccessful"], false);
    assert_eq!(
        invocation["toolExecutionNotifications"][0]["locations"][0]["physicalLocation"]["region"]["startLine"],
        19
    );

    let clean = lint(&["--format", "sarif", &fixture("clean.yaml")]);
    assert_eq!(clean.code, Some(0));
    assert_valid(&clean.stdout, &fixture("sarif-2.1.0-subset.schema.json"));
    assert_eq!(
        json(&clean)["runs"][0]["results"].as_array().unwrap().len(),
        0
    );
    assert_eq!(
        json(&clean)["runs"][0]["invocations"][0]["executionSuccessful"],
        true
    );
}

#[test]
fn unreadable_paths_exit_2_and_the_rest_is_still_checked() {
    let run = lint(&[&fixture("no-such-file.yaml"), &fixture("cronjob.yaml")]);
    assert_eq!(run.code, Some(2));
    assert!(run.stdout.contains(&format!(
        "{}: cannot read: No such file or directory",
        fixture("no-such-file.yaml")
    )));
    assert!(
        run.stdout.contains("error[implicit-always] CronJob"),
        "{}",
        run.stdout
    );
}

#[test]
fn usage_errors_and_help() {
    let run = lint(&[]);
    assert_eq!(run.code, Some(2), "PATH is required without --cluster");
    assert!(run.stderr.contains("<PATH>"), "{}", run.stderr);
    let bad = lint(&["--format", "xml", "x.yaml"]);
    assert_eq!(bad.code, Some(2));
    assert!(
        bad.stderr
            .contains("possible values: text, json, junit, sarif"),
        "{}",
        bad.stderr
    );
    let help = lint(&["--help"]);
    assert_eq!(help.code, Some(0));
    for needle in [
        "Examples:",
        "kubectl get pods -A -o json | registry-observer lint --cluster",
        "Exit codes:",
        "--fail-level",
        "implicit-always",
    ] {
        assert!(
            help.stdout.contains(needle),
            "--help lacks {needle:?}:\n{}",
            help.stdout
        );
    }
}
