//! Debian VMs under qemu for the kernel matrix: images built with
//! tests/vm/build-image.sh (mmdebstrap, cached between runs), booted with
//! tests/vm/run.sh, a script run inside as root once systemd has booted.
//! The guest has no network device: its test traffic stays on a veth pair
//! and a netns it creates, 198.18.0.0/15.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, bail};

use crate::{output_within, run_checked, workspace_root};

/// Executables the VM scripts need on the host (`cargo xtask setup`
/// installs them).
pub const VM_TOOLS: &[&str] = &["qemu-system-x86_64", "qemu-img", "mmdebstrap", "mke2fs"];

/// Packages baked into every image beyond build-image.sh's base: what the
/// in-guest capture test drives (a DNS server, a registry, a real client,
/// curl for the agent's readiness endpoint).
const GUEST_PACKAGES: &str = "dnsmasq-base docker-registry skopeo curl";

/// A kernel of the matrix: its label and the Debian package that brings it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel {
    pub label: &'static str,
    /// apt spec of the kernel package.
    pub package: &'static str,
    /// More suites of the same mirror the image needs (Debian 11's kernel).
    pub extra_suites: &'static str,
}

/// Every kernel the project is tested on in VMs. The host's own kernel
/// (6.18 on these machines) is covered by the other privileged tests.
pub const KERNELS: [Kernel; 3] = [
    Kernel {
        label: "5.10",
        package: "linux-image-amd64/bullseye",
        extra_suites: "bullseye",
    },
    Kernel {
        label: "6.1",
        package: "linux-image-amd64",
        extra_suites: "",
    },
    Kernel {
        label: "6.12",
        package: "linux-image-amd64/bookworm-backports",
        extra_suites: "",
    },
];

/// The kernel `cargo xtask test` boots when not asked for more: the oldest,
/// which differs most from the host's.
pub const CI_KERNEL: &str = "5.10";

/// The kernels to test: `REGISTRY_OBSERVER_VM_KERNELS` (labels separated
/// by commas, or `all`), else [`CI_KERNEL`].
pub fn kernels_to_test() -> anyhow::Result<Vec<Kernel>> {
    let wanted = std::env::var("REGISTRY_OBSERVER_VM_KERNELS").unwrap_or_default();
    parse_kernels(&wanted)
}

fn parse_kernels(wanted: &str) -> anyhow::Result<Vec<Kernel>> {
    let wanted = wanted.trim();
    if wanted == "all" {
        return Ok(KERNELS.to_vec());
    }
    let labels: Vec<&str> = if wanted.is_empty() {
        vec![CI_KERNEL]
    } else {
        wanted.split(',').map(str::trim).collect()
    };
    labels
        .into_iter()
        .map(|label| {
            KERNELS
                .iter()
                .find(|k| k.label == label)
                .copied()
                .with_context(|| {
                    let known: Vec<&str> = KERNELS.iter().map(|k| k.label).collect();
                    format!(
                        "unknown VM kernel {label:?} (known: {}, or all)",
                        known.join(", ")
                    )
                })
        })
        .collect()
}

/// Where images and downloaded .debs are kept between runs: they take
/// minutes to build and change only with the scripts or the archive.
fn cache_dir() -> PathBuf {
    std::env::var_os("REGISTRY_OBSERVER_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/registry-observer/vm")
        })
}

fn scripts() -> PathBuf {
    workspace_root().join("tests/vm")
}

/// A built image: rootfs, kernel, initrd.
pub struct Image {
    pub dir: PathBuf,
    /// `uname -r` of its kernel.
    pub kernel_release: String,
}

/// Builds the image for `kernel`, or finds it up to date (build-image.sh
/// compares its inputs). A first build downloads ~200 MB of packages.
pub fn image(kernel: Kernel) -> anyhow::Result<Image> {
    let dir = cache_dir().join("images").join(kernel.label);
    let mut build = Command::new(scripts().join("build-image.sh"));
    build
        .arg(kernel.package)
        .arg(&dir)
        .env("EXTRA_PACKAGES", GUEST_PACKAGES)
        .env("EXTRA_SUITES", kernel.extra_suites)
        .env("VM_CACHE", cache_dir().join("debs"));
    run_checked(&mut build, Duration::from_secs(900))
        .with_context(|| format!("building the {} VM image", kernel.label))?;
    let kernel_release = std::fs::read_to_string(dir.join("kernel-release"))
        .with_context(|| format!("{}/kernel-release", dir.display()))?
        .trim()
        .to_string();
    Ok(Image {
        dir,
        kernel_release,
    })
}

/// What a VM run left: run.sh's output and exit status, and the share dir
/// the guest wrote to.
pub struct VmRun {
    pub status: std::process::ExitStatus,
    pub output: String,
}

/// Boots `image` and runs `guest_script` inside with `share` mounted at
/// /mnt/host, within `timeout` (all boots).
pub fn run(
    image: &Image,
    guest_script: &Path,
    share: &Path,
    timeout: Duration,
) -> anyhow::Result<VmRun> {
    let mut command = Command::new(scripts().join("run.sh"));
    command
        .arg("--share")
        .arg(share)
        .arg("--cmd")
        .arg(guest_script)
        .arg("--timeout")
        .arg(timeout.as_secs().to_string())
        .arg(&image.dir);
    // run.sh enforces its own limit; this one only guards against run.sh
    // itself hanging.
    let output = output_within(&mut command, timeout + Duration::from_secs(60))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.code() == Some(124) || output.status.code() == Some(125) {
        bail!(
            "the {} VM did not finish its script (exit {:?}):\n{text}",
            image.kernel_release,
            output.status.code()
        );
    }
    Ok(VmRun {
        status: output.status,
        output: text,
    })
}

/// The in-guest capture test's script.
pub fn capture_script() -> PathBuf {
    scripts().join("capture-guest.sh")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_lists() {
        assert_eq!(parse_kernels("").unwrap()[0].label, CI_KERNEL);
        assert_eq!(parse_kernels("all").unwrap().len(), KERNELS.len());
        let two = parse_kernels("6.1, 6.12").unwrap();
        assert_eq!(
            two.iter().map(|k| k.label).collect::<Vec<_>>(),
            ["6.1", "6.12"]
        );
        let error = parse_kernels("4.19").unwrap_err().to_string();
        assert!(
            error.contains("\"4.19\"") && error.contains("5.10, 6.1, 6.12"),
            "{error}"
        );
    }
}
