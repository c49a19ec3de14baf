//! Compiles the kernel programs (observer-ebpf) with the nightly toolchain and
//! bpf-linker, so the agent can embed the object with `include_bytes_aligned!`.

fn main() -> anyhow::Result<()> {
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
