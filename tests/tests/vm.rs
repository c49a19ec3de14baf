//! The kernel matrix: the real agent on Debian's kernels, booted under qemu
//! with systemd as PID 1 (tests/vm/). In each guest a DNS server
//! (dnsmasq) and a TLS registry (docker-registry) answer as quay.io on a
//! veth into a netns, and skopeo in the netns inspects an image: the
//! agent, watching the whole guest, must attach every program, capture the
//! query and the connect with the process that made them, write a complete
//! report, and leave nothing attached when it exits.
//!
//! Which kernels: `REGISTRY_OBSERVER_VM_KERNELS` (comma-separated labels or
//! `all`; `cargo xtask test --kernels all`), else the one CI boots. The
//! host's own kernel is what every other privileged test runs on.
//!
//! Needs root, qemu, mmdebstrap (installed by `cargo xtask setup`) and the
//! package mirror for a first image build; fails, never skips, without them.

use std::{fs, path::Path, time::Duration};

use observer_tests::{
    agent_binary,
    observe::assert_valid_report,
    require_root_and_tools,
    vm::{self, VM_TOOLS},
};
use serde_json::Value;

/// One boot under TCG (~25 s), the agent's start in a debug build (~30 s),
/// the test itself (~10 s), with room for a loaded machine.
const VM_TIMEOUT: Duration = Duration::from_secs(420);

/// Every program the agent loads.
const PROGRAMS: [&str; 10] = observer_common::PROGRAMS;

#[test]
fn the_agent_captures_a_registry_attempt_on_each_kernel() {
    require_root_and_tools(VM_TOOLS);
    let kernels = vm::kernels_to_test().expect("REGISTRY_OBSERVER_VM_KERNELS");
    let mut failures = Vec::new();
    for kernel in kernels {
        let started = std::time::Instant::now();
        match capture_on(kernel) {
            Ok(summary) => eprintln!(
                "vm test [{}]: ok in {:.0?}: {summary}",
                kernel.label,
                started.elapsed()
            ),
            Err(failure) => failures.push(format!("[{}] {failure}", kernel.label)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Boots `kernel`'s image, runs the capture script, judges what it left.
/// Returns a one-line summary, or everything needed to see what went wrong.
fn capture_on(kernel: vm::Kernel) -> Result<String, String> {
    let image = vm::image(kernel).map_err(|e| format!("{e:#}"))?;
    let share = tempfile::tempdir().map_err(|e| e.to_string())?;
    fs::copy(agent_binary(), share.path().join("registry-observer"))
        .map_err(|e| format!("copying the agent into the share: {e}"))?;
    let run = vm::run(&image, &vm::capture_script(), share.path(), VM_TIMEOUT)
        .map_err(|e| format!("{e:#}"))?;
    let out = share.path().join("out");
    let read = |name: &str| fs::read_to_string(out.join(name)).unwrap_or_default();
    let context = || {
        format!(
            "\n--- run.sh ---\n{}\n--- agent stderr ---\n{}\n--- agent stdout ---\n{}",
            run.output,
            read("agent.stderr"),
            read("agent.stdout")
        )
    };
    if !run.status.success() {
        return Err(format!(
            "the guest script failed ({}){}",
            run.status,
            context()
        ));
    }
    judge(&image, &out, &read).map_err(|failure| format!("{failure}{}", context()))
}

fn judge(image: &vm::Image, out: &Path, read: &dyn Fn(&str) -> String) -> Result<String, String> {
    let release = read("kernel-release");
    check(
        release.trim() == image.kernel_release,
        format!(
            "the guest ran {release:?}, the image has {:?}",
            image.kernel_release
        ),
    )?;
    check(
        read("agent.rc").trim() == "0",
        format!("the agent exited {:?}, not 0", read("agent.rc").trim()),
    )?;
    check(
        read("readyz.txt") == "ready: every hook is attached\n",
        format!("/readyz said {:?}", read("readyz.txt")),
    )?;
    // Loaded while it ran (attached: /readyz above), and gone with it: a
    // program no link or fd holds any more is freed by the kernel.
    let during = read("progs-during.txt");
    let loaded = program_names(&during);
    for program in PROGRAMS {
        check(
            loaded.contains(&program.to_string()),
            format!("{program} not loaded while the agent ran:\n{during}"),
        )?;
    }
    let after = read("progs-after.txt");
    let left: Vec<String> = program_names(&after)
        .into_iter()
        .filter(|name| PROGRAMS.contains(&name.as_str()))
        .collect();
    check(
        left.is_empty(),
        format!("programs left in the kernel after exit: {left:?}\n{after}"),
    )?;

    let report_path = out.join("report.json");
    assert_valid_report(&report_path);
    let report: Value =
        serde_json::from_str(&read("report.json")).map_err(|e| format!("report.json: {e}"))?;
    let observer = &report["observer"];
    check(
        observer["kernel"] == image.kernel_release.as_str(),
        format!("observer.kernel is {}", observer["kernel"]),
    )?;
    check(
        observer["complete"] == true && observer["hooks_missing"] == serde_json::json!([]),
        format!("incomplete observation: {observer:#}"),
    )?;
    check(
        observer["events_lost"] == 0,
        format!("events lost: {observer:#}"),
    )?;
    let attempts = report["attempts"].as_array().cloned().unwrap_or_default();
    let skopeo = attempts
        .iter()
        .find(|a| a["host"] == "quay.io" && a["process"]["exe"] == "/usr/bin/skopeo")
        .ok_or_else(|| format!("no quay.io attempt by /usr/bin/skopeo: {attempts:#?}"))?;
    let evidence: Vec<&str> = skopeo["evidence"]
        .as_array()
        .map(|e| e.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for wanted in ["dns_query", "dns_answer", "connect", "tls_sni"] {
        check(
            evidence.contains(&wanted),
            format!("evidence {evidence:?} lacks {wanted}: {skopeo:#}"),
        )?;
    }
    // The query itself names skopeo: the packet program learnt its sender
    // (from the current task, or the socket's owner on older kernels).
    check(
        observer["truncated"]["dns_sender_unknown"] == 0,
        format!("DNS queries without a sender: {observer:#}"),
    )?;
    check(
        skopeo["process"]["comm"] == "skopeo",
        format!("the attempt's process: {:#}", skopeo["process"]),
    )?;
    Ok(format!(
        "kernel {}, dns_sender {}, hooks {}, evidence {evidence:?}",
        image.kernel_release, observer["dns_sender"], observer["hooks"]
    ))
}

fn check(ok: bool, failure: String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(failure) }
}

/// Program names in `bpftool prog list` output
/// (`12: cgroup_sock_addr  name connect4  tag ...`).
fn program_names(list: &str) -> Vec<String> {
    list.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "name")?;
            words.next().map(str::to_string)
        })
        .collect()
}

#[test]
fn program_names_reads_bpftool_prog_list() {
    let list = "3: cgroup_device  tag 03b4eaae2f14641a  gpl\n\tloaded_at 2026-12-07T16:39:01+0000  uid 0\n\
                12: cgroup_sock_addr  name connect4  tag 4f6b2d1ac2f3e8a1  gpl\n\
                20: tracing  name process_exec  tag 9a  gpl\n";
    assert_eq!(program_names(list), ["connect4", "process_exec"]);
    assert!(program_names("").is_empty());
}
