//! Thin wrappers around cargo: the builds and the test sequence.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root);
    cmd
}

fn run(mut cmd: Command) -> anyhow::Result<()> {
    eprintln!("xtask: {cmd:?}");
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Builds `proxy` (which builds and embeds the eBPF object) and returns the binary.
pub fn build_proxy(root: &Path, release: bool) -> anyhow::Result<PathBuf> {
    build_bin(root, "proxy", release)
}

/// Builds the binary named like its package and returns its path.
pub fn build_bin(root: &Path, package: &str, release: bool) -> anyhow::Result<PathBuf> {
    let mut cmd = cargo(root);
    cmd.args(["build", "--package", package, "--bin", package]);
    if release {
        cmd.arg("--release");
    }
    run(cmd)?;
    let bin = root
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join(package);
    if !bin.exists() {
        bail!("the build succeeded but {} is missing", bin.display());
    }
    Ok(bin)
}

/// Runs `proxy`'s build script through `cargo check` (no userspace codegen) and
/// copies the eBPF object it produced to `target/bpf/proxy-ebpf.o`.
pub fn build_ebpf(root: &Path, release: bool) -> anyhow::Result<PathBuf> {
    let mut cmd = cargo(root);
    cmd.args([
        "check",
        "--package",
        "proxy",
        "--message-format=json-render-diagnostics",
    ]);
    if release {
        cmd.arg("--release");
    }
    eprintln!("xtask: {cmd:?}");
    let output = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("spawning cargo check")?;
    if !output.status.success() {
        bail!("building the eBPF object failed (see the messages above)");
    }
    let out_dir = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "build-script-executed")
        .filter(|msg| {
            msg["package_id"]
                .as_str()
                .is_some_and(|id| id.contains("/proxy#") || id.contains("proxy@"))
        })
        .filter_map(|msg| msg["out_dir"].as_str().map(PathBuf::from))
        .find(|dir| dir.join("proxy-ebpf").exists())
        .context("cargo did not report the build script's OUT_DIR with a proxy-ebpf object")?;
    let dest_dir = root.join("target/bpf");
    std::fs::create_dir_all(&dest_dir)?;
    let dest = dest_dir.join("proxy-ebpf.o");
    std::fs::copy(out_dir.join("proxy-ebpf"), &dest)
        .with_context(|| format!("copying the object to {}", dest.display()))?;
    Ok(dest)
}

/// Formatting, lints, then every unit and integration test under nextest.
pub fn test(root: &Path, nextest_args: &[String]) -> anyhow::Result<()> {
    let mut fmt = cargo(root);
    fmt.args(["fmt", "--all", "--", "--check"]);
    run(fmt)?;
    let mut clippy = cargo(root);
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy)?;
    let bin = build_proxy(root, false)?;
    let mut nextest = cargo(root);
    nextest
        .args(["nextest", "run", "--workspace", "--no-fail-fast"])
        .args(nextest_args)
        .env("PROXY_BIN", &bin);
    run(nextest)
}
