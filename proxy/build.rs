//! Builds the kernel programs (`proxy-ebpf`) for the bpf target with aya-build and
//! leaves the object in `OUT_DIR/proxy-ebpf`, where `src/dataplane/loader.rs`
//! embeds it. This is the only build path for the eBPF object; `cargo xtask
//! build-ebpf` is a thin wrapper around it.
//!
//! The nightly toolchain is read from `proxy-ebpf/rust-toolchain.toml`, the one
//! place it is pinned. Missing prerequisites fail with a message that says how to
//! install them.

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, bail};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR unset")?;
    let ebpf_dir = Path::new(&manifest_dir).join("../proxy-ebpf");
    let toolchain_file = ebpf_dir.join("rust-toolchain.toml");
    println!("cargo::rerun-if-changed={}", toolchain_file.display());
    let toolchain = nightly_channel(&toolchain_file)?;
    check_prerequisites(&toolchain)?;

    let root_dir = ebpf_dir.to_str().context("proxy-ebpf path is not UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "proxy-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}

/// Reads `channel = "…"` from the eBPF crate's rust-toolchain.toml.
fn nightly_channel(path: &Path) -> anyhow::Result<String> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .next()
        .with_context(|| format!("no `channel = \"…\"` line in {}", path.display()))
}

fn check_prerequisites(toolchain: &str) -> anyhow::Result<()> {
    const FIX: &str = "run `./x setup` (or `scripts/setup.sh`) to install the eBPF toolchain";
    let rustc = Command::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .output();
    let sysroot = match rustc {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => bail!("the eBPF toolchain {toolchain} is not installed: {FIX}"),
    };
    let core_src = Path::new(&sysroot).join("lib/rustlib/src/rust/library/core");
    if !core_src.exists() {
        bail!("{toolchain} lacks the rust-src component (needed for -Z build-std=core): {FIX}");
    }
    match Command::new("bpf-linker").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => bail!(
            "bpf-linker is installed but does not run ({}): {FIX}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(_) => bail!("bpf-linker is not on PATH: {FIX}"),
    }
}
