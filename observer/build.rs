//! Compiles the kernel programs (observer-ebpf) with the nightly toolchain and
//! bpf-linker, so the agent can embed the object with `include_bytes_aligned!`.
//! Only with the `agent` feature: without it nothing is embedded, and the
//! binary (lint, webhook, report) builds on stable without bpf-linker.

#[cfg(feature = "agent")]
fn main() -> anyhow::Result<()> {
    // aya-build relays every stderr line of its inner `cargo build` as a
    // `cargo:warning`, so a clean build showed ~40 "Compiling ..." warnings.
    // A quiet inner cargo prints no status lines; its compiler errors and
    // warnings still arrive (as JSON messages, which aya-build relays).
    // SAFETY: the build script is single-threaded until build_ebpf spawns
    // the inner cargo, which inherits the variable.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../observer-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "observer-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}

#[cfg(not(feature = "agent"))]
fn main() {}
