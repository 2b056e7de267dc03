//! Rebuild the eBPF object when the `bpf-linker` binary changes, since cargo cannot
//! see that dependency on its own.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo::rerun-if-changed={}", linker.display());
    }
}
