//! Rebuild the kernel object when the bpf-linker binary changes: cargo cannot
//! see that dependency on its own (same approach as aya-template).

fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
