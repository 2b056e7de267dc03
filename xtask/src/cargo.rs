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

/// Clippy on `proxy-ebpf` for the bpf target, the way `proxy/build.rs` (through
/// aya-build) compiles it: the nightly pinned in `proxy-ebpf/rust-toolchain.toml`,
/// `--release --target bpfel-unknown-none -Z build-std=core`, the same
/// `bpf_target_arch` cfg and flags, `RUSTC`/`RUSTC_WORKSPACE_WRAPPER` unset. Its
/// own target dir, so the host builds are not invalidated.
pub fn clippy_ebpf(root: &Path) -> anyhow::Result<()> {
    let toolchain = nightly_channel(&root.join("proxy-ebpf/rust-toolchain.toml"))?;
    // aya-build's flags, joined with cargo's 0x1f separator.
    let arch = std::env::consts::ARCH;
    let rustflags =
        format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf");
    let mut cmd = Command::new("rustup");
    cmd.current_dir(root)
        .args([
            "run",
            &toolchain,
            "cargo",
            "clippy",
            "--package",
            "proxy-ebpf",
        ])
        .args([
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .arg("--target-dir")
        .arg(root.join("target/bpf-clippy"))
        .args(["--", "-D", "warnings"])
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO");
    run(cmd)
}

/// Reads `channel = "…"` from a rust-toolchain.toml (as `proxy/build.rs` does).
pub fn nightly_channel(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .next()
        .with_context(|| format!("no `channel = \"…\"` line in {}", path.display()))
}

/// Formatting, the layout check, lints (host, then the kernel code for its bpf
/// target), then every unit and integration test under nextest.
pub fn test(root: &Path, nextest_args: &[String]) -> anyhow::Result<()> {
    let mut fmt = cargo(root);
    fmt.args(["fmt", "--all", "--", "--check"]);
    run(fmt)?;
    crate::layout::run(root)?;
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
    clippy_ebpf(root)?;
    let bin = build_proxy(root, false)?;
    let v2 = crate::compat::v2_binary(root)?;
    let mut nextest = cargo(root);
    nextest
        .args(["nextest", "run", "--workspace", "--no-fail-fast"])
        .args(nextest_args)
        .env("PROXY_BIN", &bin)
        .env(crate::compat::V2_ENV, &v2);
    run(nextest)
}

/// The soak (`tests/tests/soak.rs`, an ignored test) for `minutes`, under
/// nextest's `soak` profile (never killed for being slow), with the debug
/// proxy; the report goes to `target/soak/`. Fails when the soak does.
pub fn soak(root: &Path, minutes: f64) -> anyhow::Result<()> {
    if !(minutes.is_finite() && minutes >= 2.0) {
        bail!(
            "--minutes {minutes}: the soak needs at least 2 (a 30 s warm-up, then two 30 s \
             windows to compare, and three daemons that each lived 30 s)"
        );
    }
    let bin = build_proxy(root, false)?;
    let report = root.join("target/soak");
    // A fresh report: no log or sample of an earlier run mixes in.
    if report.exists() {
        std::fs::remove_dir_all(&report)
            .with_context(|| format!("removing the old report in {}", report.display()))?;
    }
    let mut nextest = cargo(root);
    nextest
        .args([
            "nextest",
            "run",
            "--package",
            "proxy-tests",
            "--test",
            "soak",
        ])
        .args(["--run-ignored", "only", "--profile", "soak", "--no-capture"])
        .env("PROXY_BIN", &bin)
        .env("SOAK_MINUTES", minutes.to_string())
        .env("SOAK_REPORT_DIR", &report);
    let result = run(nextest);
    eprintln!(
        "xtask: soak report in {}",
        report.join("report.md").display()
    );
    result
}

/// The tests that run the image under podman (tests/tests/runtime_pod.rs),
/// on `image` and its `bin`.
pub fn test_image(root: &Path, image: &str, bin: &Path) -> anyhow::Result<()> {
    let mut nextest = cargo(root);
    nextest
        .args([
            "nextest",
            "run",
            "--package",
            "proxy-tests",
            "--test",
            "runtime_pod",
        ])
        .env("PROXY_BIN", bin)
        .env("PROXY_IMAGE", image);
    run(nextest)
}
