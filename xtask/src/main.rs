//! Developer tasks: `cargo xtask setup | run | test | bench`.
//!
//! Every task starts with `setup`, which installs what a fresh machine lacks
//! and says what it did, so a new clone needs nothing done by hand.

use std::{
    env,
    ffi::OsString,
    fs,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

/// bpf-linker's LLVM must be at least the nightly rustc's LLVM
/// (shared/BUILDING.md): both are pinned here.
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const LLVM_FEATURE: &str = "llvm-22";

/// Build dependencies of the kernel programs (bpf-linker links against LLVM).
const BUILD_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    // k8s-cri generates its CRI bindings from .proto files at build time.
    "protobuf-compiler",
];

/// Real components the privileged tests drive (shared/TESTBED.md).
const TEST_PACKAGES: &[&str] = &[
    "dnsmasq-base",
    "docker-registry",
    "skopeo",
    "umoci",
    "busybox-static",
    "podman",
    "runc",
    "conmon",
    "containerd",
    "containernetworking-plugins",
    "bind9-dnsutils",
    // systemd-nspawn: a real systemd (PID 1 here is not) for unit attribution.
    "systemd-container",
    // A real HTTP proxy for the CONNECT-attribution test.
    "tinyproxy",
    "curl",
    "iproute2",
    "openssl",
    "python3",
    // An independent validator for the report against docs/report.schema.json.
    "python3-jsonschema",
    // A virtual environment for the PyPI test tools (setup_python_tools).
    "python3-venv",
    // Independent consumers of the outputs: `promtool check metrics` for
    // /metrics, an OpenMetrics parser, a JUnit parser; curl scrapes and
    // POSTs. Debian's packages for /usr/bin/python3, like jsonschema (pip
    // into Debian's python is refused, PEP 668).
    "prometheus",
    "python3-prometheus-client",
    "python3-junitparser",
    "curl",
    // Shows which programs are attached to the cgroup2 root (detach checks).
    "bpftool",
];

/// What the VM tests (tests/vm/, the kernel matrix) need: Debian images
/// made with mmdebstrap and mke2fs, booted under qemu.
const VM_PACKAGES: &[&str] = &["mmdebstrap", "qemu-system-x86", "qemu-utils", "e2fsprogs"];

#[derive(Parser)]
#[command(name = "xtask", about = "registry-observer developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what this machine lacks (idempotent): nightly rust-src,
    /// LLVM 22, bpf-linker, bpffs; with --test also the test packages,
    /// qemu and mmdebstrap for the VM tests, and the Python test tools.
    Setup {
        /// Also what the tests and benchmarks need (`test` and `bench` do
        /// this themselves).
        #[arg(long)]
        test: bool,
    },
    /// Setup, build (release) and run the agent as root:
    /// `cargo xtask run -- [registry-observer run OPTIONS]`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Setup, then formatting, clippy, unit tests and the privileged
    /// integration tests, including the VM test on one kernel (5.10).
    Test {
        /// VM kernels to boot: labels separated by commas (5.10, 6.1,
        /// 6.12) or `all` for the whole matrix. Images are built once and
        /// cached in ~/.cache/registry-observer/vm.
        #[arg(long, value_name = "LIST|all")]
        kernels: Option<String>,
    },
    /// Build (release) and measure: the overhead workloads (arguments go to
    /// tests/src/bin/overhead.rs), then the pipeline benchmark (criterion).
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().task) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> anyhow::Result<ExitCode> {
    let root = workspace_root();
    env::set_current_dir(&root)?;
    // `run` needs only what building and running need; a newcomer should
    // not wait for container runtimes and qemu to watch their machine.
    let needs = match &task {
        Task::Setup { test: false } | Task::Run { .. } => Needs::Run,
        Task::Setup { test: true } | Task::Test { .. } | Task::Bench { .. } => Needs::Test,
    };
    setup(needs)?;
    match task {
        Task::Setup { .. } => Ok(ExitCode::SUCCESS),
        Task::Run { args } => {
            cargo(&["build", "--release", "-p", "registry-observer"])?;
            let binary = root.join("target/release/registry-observer");
            // Become the agent (as cargo run became us): Ctrl-C then reaches
            // the agent alone, which writes its report before the shell
            // prompt returns, and its exit code is ours.
            let error = as_root(&binary).arg("run").args(args).exec();
            Err(error).context("starting registry-observer")
        }
        Task::Test { kernels } => {
            cargo(&["fmt", "--all", "--", "--check"])?;
            cargo(&["clippy", "--all-targets", "--", "-D", "warnings"])?;
            // The privileged tests run the real binary.
            cargo(&["build", "-p", "registry-observer"])?;
            let binary = root.join("target/debug/registry-observer");
            let without_agent = build_without_agent(&root)?;
            let mut test = Command::new("cargo");
            test.args(["test", "--no-fail-fast"])
                .env("REGISTRY_OBSERVER_BIN", &binary)
                .env("REGISTRY_OBSERVER_NO_AGENT_BIN", &without_agent);
            if let Some(kernels) = kernels {
                test.env("REGISTRY_OBSERVER_VM_KERNELS", kernels);
            }
            let (status, totals) = run_tests(&mut test)?;
            // The last runner lines cargo prints are doc-test runs with no
            // tests; this line says what ran in all.
            println!("tests: {} passed, {} failed", totals.passed, totals.failed);
            if !status.success() || totals.failed > 0 {
                bail!("tests failed");
            }
            if totals.passed == 0 {
                bail!("no test ran");
            }
            Ok(ExitCode::SUCCESS)
        }
        Task::Bench { args } => {
            cargo(&["build", "--release", "-p", "registry-observer"])?;
            let status = Command::new("cargo")
                .args([
                    "run",
                    "--release",
                    "-p",
                    "observer-tests",
                    "--bin",
                    "overhead",
                    "--",
                ])
                .args(args)
                .env(
                    "REGISTRY_OBSERVER_BIN",
                    root.join("target/release/registry-observer"),
                )
                .status()
                .context("running the overhead benchmark")?;
            if !status.success() {
                return Ok(exit_code(status.code()));
            }
            // The user-space pipeline on recorded events (criterion).
            let status = Command::new("cargo")
                .args(["bench", "-p", "registry-observer", "--bench", "pipeline"])
                .status()
                .context("running the pipeline benchmark")?;
            if !status.success() {
                return Ok(exit_code(status.code()));
            }
            // The durable record's cost per registry event (criterion).
            let status = Command::new("cargo")
                .args(["bench", "-p", "observer-state", "--bench", "spool"])
                .status()
                .context("running the spool benchmark")?;
            Ok(exit_code(status.code()))
        }
    }
}

#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
}

/// Runs a test command, passing its output through, and sums the
/// `test result: ... N passed; M failed` lines of every test binary.
fn run_tests(command: &mut Command) -> anyhow::Result<(std::process::ExitStatus, Totals)> {
    use std::io::{BufRead, BufReader};

    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let mut totals = Totals::default();
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(result) = line.strip_prefix("test result: ") {
            totals.passed += count_before(result, "passed");
            totals.failed += count_before(result, "failed");
        }
    }
    Ok((child.wait()?, totals))
}

/// The number just before `label` in "ok. 42 passed; 0 failed; ...".
fn count_before(text: &str, label: &str) -> u64 {
    text.split(';')
        .find_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .strip_suffix(label)
                .map(str::trim)
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn exit_code(code: Option<i32>) -> ExitCode {
    ExitCode::from(code.and_then(|c| u8::try_from(c).ok()).unwrap_or(1))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("cargo")
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed", args.join(" "));
    }
    Ok(())
}

/// Where the binary without the agent is built: its own target directory,
/// so it never replaces the agent binary the other tests run.
const NO_AGENT_TARGET: &str = "target/no-agent";

/// Builds `registry-observer` as `--no-default-features` promises it: on
/// the stable toolchain, with no bpf-linker on PATH, so a dependency on
/// either would fail here. Returns the binary (tests/tests/without_agent.rs
/// and the webhook tests drive it).
fn build_without_agent(root: &Path) -> anyhow::Result<PathBuf> {
    let bpf_linker = which("bpf-linker");
    let path = env::var_os("PATH").unwrap_or_default();
    let mut kept: Vec<PathBuf> = env::split_paths(&path)
        .filter(|dir| {
            bpf_linker
                .as_ref()
                .is_none_or(|linker| !linker.starts_with(dir))
        })
        .collect();
    // bpf-linker sits beside cargo in ~/.cargo/bin; a directory with only
    // the toolchain's own proxies stands in for it.
    let tools = root.join(NO_AGENT_TARGET).join("bin");
    fs::create_dir_all(&tools)?;
    for tool in ["cargo", "rustc", "rustup"] {
        let link = tools.join(tool);
        if let Some(found) = which(tool)
            && !link.exists()
        {
            std::os::unix::fs::symlink(found, &link)
                .with_context(|| format!("linking {tool} into {}", tools.display()))?;
        }
    }
    kept.insert(0, tools);
    let status = Command::new("cargo")
        .args(["build", "-p", "registry-observer", "--no-default-features"])
        .args(["--target-dir", NO_AGENT_TARGET])
        .env("PATH", env::join_paths(kept)?)
        .env("RUSTUP_TOOLCHAIN", "stable")
        .status()
        .context("building registry-observer --no-default-features")?;
    if !status.success() {
        bail!(
            "`cargo build -p registry-observer --no-default-features` (stable, no bpf-linker on PATH) failed"
        );
    }
    Ok(root.join(NO_AGENT_TARGET).join("debug/registry-observer"))
}

/// The first `name` on PATH.
fn which(name: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Runs `program` as root: directly when we are root, else through sudo.
fn as_root(program: &Path) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut command = Command::new("sudo");
        command.arg("-E").arg(program);
        command
    }
}

fn say(what: &str) {
    eprintln!("setup: {what}");
}

/// What a task needs installed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// Build and run the agent.
    Run,
    /// Also run the tests and benchmarks.
    Test,
}

/// One thing `setup` installs or checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    RustSrc,
    AptPackages,
    BpfLinker,
    Bpffs,
    PythonTools,
}

/// What `needs` installs, in order: running the agent needs no test tool.
fn steps(needs: Needs) -> Vec<Step> {
    let mut steps = vec![
        Step::RustSrc,
        Step::AptPackages,
        Step::BpfLinker,
        Step::Bpffs,
    ];
    if needs == Needs::Test {
        steps.push(Step::PythonTools);
    }
    steps
}

fn setup(needs: Needs) -> anyhow::Result<()> {
    for step in steps(needs) {
        match step {
            Step::RustSrc => setup_rust_src()?,
            Step::AptPackages => setup_apt_packages(needs)?,
            Step::BpfLinker => setup_bpf_linker()?,
            Step::Bpffs => setup_bpffs()?,
            Step::PythonTools => setup_python_tools()?,
        }
    }
    Ok(())
}

/// PyPI tools the tests run that Debian does not package, in a virtual
/// environment under target/ (Debian's python refuses pip, PEP 668).
const PYTHON_TOOLS: &[(&str, &str)] = &[
    // Validates deploy/ manifests offline against the Kubernetes schemas
    // it bundles (tests/tests/webhook.rs).
    ("kubernetes-validate", "1.37.0"),
];

/// Where [`PYTHON_TOOLS`] are installed; the tests look there too.
fn test_venv() -> PathBuf {
    workspace_root().join("target/test-venv")
}

fn setup_python_tools() -> anyhow::Result<()> {
    let venv = test_venv();
    let pip = venv.join("bin/pip");
    let missing: Vec<String> = PYTHON_TOOLS
        .iter()
        .filter(|(tool, version)| {
            !Command::new(venv.join("bin").join(tool))
                .arg("--version")
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(version))
        })
        .map(|(tool, version)| format!("{tool}=={version}"))
        .collect();
    if missing.is_empty() {
        say("python test tools: already installed");
        return Ok(());
    }
    if !pip.exists() {
        run_checked(
            Command::new("/usr/bin/python3")
                .arg("-m")
                .arg("venv")
                .arg(&venv),
        )?;
    }
    run_checked(Command::new(&pip).args(["install", "-q"]).args(&missing))?;
    say(&format!(
        "python test tools: installed {} in {}",
        missing.join(" "),
        venv.display()
    ));
    Ok(())
}

fn setup_rust_src() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .context("running rustup (is rustup installed?)")?;
    if !installed.status.success() {
        bail!(
            "the nightly toolchain is missing; the eBPF programs need it (`rustup toolchain install nightly --component rust-src`)"
        );
    }
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        say("rust-src (nightly): already installed");
        return Ok(());
    }
    run_checked(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))?;
    say("rust-src (nightly): installed");
    Ok(())
}

fn package_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", name])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// The Debian packages `needs` wants: building (and so running) needs only
/// the toolchain's; the tests add the real components they drive.
fn apt_packages(needs: Needs) -> Vec<&'static str> {
    let mut packages = BUILD_PACKAGES.to_vec();
    if needs == Needs::Test {
        packages.extend(TEST_PACKAGES);
        packages.extend(VM_PACKAGES);
    }
    packages
}

fn setup_apt_packages(needs: Needs) -> anyhow::Result<()> {
    let missing: Vec<&str> = apt_packages(needs)
        .into_iter()
        .filter(|p| !package_installed(p))
        .collect();
    if missing.is_empty() {
        say("apt packages: all present");
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing packages {}; install them as root: apt-get install -y --no-install-recommends {}",
            missing.join(" "),
            missing.join(" ")
        );
    }
    run_checked(Command::new("apt-get").args(["update", "-qq"]))?;
    let specs = qemu_pinned(&missing)?;
    run_checked(
        Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "--allow-downgrades",
            ])
            .args(&specs)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    say(&format!("apt packages: installed {}", missing.join(" ")));
    Ok(())
}

/// The apt specs for `missing`, with qemu-system-x86 and qemu-utils pinned
/// to one version: they come from one source package and refuse to mix
/// (qemu-utils Breaks older qemu-system-common), and these machines may
/// ship a backports qemu-utils whose qemu-system-x86 the configured
/// archives do not have. Pinning both to qemu-system-x86's candidate
/// (downgrading qemu-utils if need be) always resolves.
fn qemu_pinned(missing: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut specs: Vec<String> = missing
        .iter()
        .filter(|p| !p.starts_with("qemu-"))
        .map(|p| p.to_string())
        .collect();
    if missing.iter().any(|p| p.starts_with("qemu-")) {
        let version = candidate_version("qemu-system-x86")?;
        specs.push(format!("qemu-system-x86={version}"));
        specs.push(format!("qemu-utils={version}"));
    }
    Ok(specs)
}

/// The version `apt-get install NAME` would install.
fn candidate_version(name: &str) -> anyhow::Result<String> {
    let output = Command::new("apt-cache")
        .args(["policy", name])
        .output()
        .context("running apt-cache policy")?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.trim().strip_prefix("Candidate: "))
        .filter(|version| *version != "(none)")
        .map(str::to_string)
        .with_context(|| {
            format!("apt has no candidate version of {name} (is apt-get update done?)")
        })
}

fn setup_bpf_linker() -> anyhow::Result<()> {
    let current = Command::new("bpf-linker").arg("--version").output();
    if let Ok(output) = &current
        && String::from_utf8_lossy(&output.stdout).contains(BPF_LINKER_VERSION)
    {
        say(&format!(
            "bpf-linker {BPF_LINKER_VERSION}: already installed"
        ));
        return Ok(());
    }
    run_checked(
        Command::new("cargo")
            .args([
                "install",
                "--locked",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--no-default-features",
                "--features",
                LLVM_FEATURE,
            ])
            // Without it the build looks for libLLVM under /usr and fails.
            .env("LLVM_PREFIX", LLVM_PREFIX),
    )?;
    say(&format!(
        "bpf-linker {BPF_LINKER_VERSION}: installed against {LLVM_PREFIX}"
    ));
    Ok(())
}

/// bpffs is not mounted at boot on these machines; pinning (a later stage
/// of the project) needs it.
fn setup_bpffs() -> anyhow::Result<()> {
    let mounted = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            l.split_once(" - ").is_some_and(|(left, right)| {
                right.starts_with("bpf ") && left.contains(" /sys/fs/bpf ")
            })
        });
    if mounted {
        say("bpffs: mounted at /sys/fs/bpf");
        return Ok(());
    }
    if !is_root() {
        say("bpffs: not mounted (needs root: mount -t bpf bpf /sys/fs/bpf)");
        return Ok(());
    }
    run_checked(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    say("bpffs: mounted at /sys/fs/bpf");
    Ok(())
}

fn run_checked(command: &mut Command) -> anyhow::Result<()> {
    let description = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("starting {description}"))?;
    if !status.success() {
        bail!("{description} failed with {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{BUILD_PACKAGES, Needs, Step, apt_packages, count_before, steps};

    #[test]
    fn sums_cargo_test_result_lines() {
        let ok =
            "ok. 42 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.03s";
        assert_eq!(count_before(ok, "passed"), 42);
        assert_eq!(count_before(ok, "failed"), 0);
        let failed = "FAILED. 5 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out";
        assert_eq!(count_before(failed, "passed"), 5);
        assert_eq!(count_before(failed, "failed"), 2);
        assert_eq!(count_before("garbage", "passed"), 0);
    }

    /// `cargo xtask run` (and `setup` without --test) installs no container
    /// runtime, registry, Prometheus, VM tool or Python venv.
    #[test]
    fn running_installs_only_what_building_needs() {
        let for_run = apt_packages(Needs::Run);
        assert_eq!(for_run, BUILD_PACKAGES);
        for test_only in [
            "containerd",
            "podman",
            "runc",
            "docker-registry",
            "prometheus",
            "skopeo",
            "dnsmasq-base",
            "qemu-system-x86",
        ] {
            assert!(
                !for_run.iter().any(|p| p.starts_with(test_only)),
                "{test_only}"
            );
            assert!(
                apt_packages(Needs::Test)
                    .iter()
                    .any(|p| p.starts_with(test_only)),
                "{test_only} is a test package"
            );
        }
        assert!(!for_run.iter().any(|p| p.starts_with("python3")));
        assert!(!steps(Needs::Run).contains(&Step::PythonTools));
        assert!(steps(Needs::Test).contains(&Step::PythonTools));
    }
}
