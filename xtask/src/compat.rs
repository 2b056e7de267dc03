//! Reference binaries of older layouts, for the migration tests
//! (`tests/tests/migration.rs`): each is built from git at a fixed commit
//! into `$XDG_CACHE_HOME/ebpf-proxy/compat/v<N>-<commit>/` (`~/.cache` when
//! unset), outside the checkout, so a fresh clone on the same machine (CI)
//! reuses it; built once, as its own `cargo xtask build` does
//! (`cargo build -p proxy --bin proxy`, whose build script builds the eBPF
//! object), in the dev profile and its own target directory so later builds
//! are incremental. (Its xtask is not run: it looks for the binary under its
//! source tree's `target/`, not `CARGO_TARGET_DIR`.)

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// The layout-2 reference: the last commit before layout 3.
pub const V2_COMMIT: &str = "9ef296e";
/// The environment variable the tests read the layout-2 binary's path from.
pub const V2_ENV: &str = "PROXY_V2_BIN";

/// Builds the layout-2 proxy when it is missing; returns its path.
pub fn v2_binary(root: &Path) -> anyhow::Result<PathBuf> {
    let dir = cache_dir()?.join(format!("v2-{V2_COMMIT}"));
    let bin = dir.join("target/debug/proxy");
    if bin.exists() {
        return Ok(bin);
    }
    let src = dir.join("src");
    if !src.join("Cargo.toml").exists() {
        std::fs::create_dir_all(&src).with_context(|| format!("creating {}", src.display()))?;
        let archive = Command::new("git")
            .arg("-C")
            .arg(root)
            .args(["archive", V2_COMMIT])
            .stdout(Stdio::piped())
            .spawn()
            .context("spawning git archive")?;
        let stdout = archive.stdout.context("git archive's output")?;
        let status = Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(&src)
            .stdin(stdout)
            .status()
            .context("spawning tar")?;
        if !status.success() {
            bail!(
                "git archive {V2_COMMIT} | tar -x -C {} failed ({status}); the layout-2 \
                 reference needs a clone with that commit",
                src.display()
            );
        }
    }
    eprintln!(
        "xtask: building the layout-2 reference ({V2_COMMIT}) into {}",
        dir.display()
    );
    let started = std::time::Instant::now();
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(&src)
        .args(["build", "--package", "proxy", "--bin", "proxy"])
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .status()
        .context("spawning the layout-2 build")?;
    if !status.success() || !bin.exists() {
        bail!(
            "building the layout-2 reference in {} failed ({status}), or left no {}",
            src.display(),
            bin.display()
        );
    }
    eprintln!("xtask: layout-2 reference built in {:?}", started.elapsed());
    Ok(bin)
}

/// Where reference builds are kept: `$XDG_CACHE_HOME/ebpf-proxy/compat`, or
/// `$HOME/.cache/ebpf-proxy/compat`.
fn cache_dir() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cache"),
    };
    Ok(base.join("ebpf-proxy/compat"))
}
