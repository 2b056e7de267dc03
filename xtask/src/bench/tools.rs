//! The Debian tools the bench drives: installed when missing, and their
//! versions recorded for the report.

use std::{process::Command, time::Duration};

use anyhow::{Context as _, bail};

use crate::baseline;

/// Debian package → a program it provides.
const PACKAGES: [(&str, &str); 5] = [
    ("iperf3", "iperf3"),
    ("wrk", "wrk"),
    ("haproxy", "haproxy"),
    ("iptables", "iptables-restore"),
    ("nftables", "nft"),
];
const APT_LIMIT: Duration = Duration::from_secs(600);

/// Installs what is missing, then returns `(tool, version)` for the report.
pub fn ensure() -> anyhow::Result<Vec<(String, String)>> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, program)| !on_path(program))
        .map(|(package, _)| *package)
        .collect();
    if !missing.is_empty() {
        eprintln!("bench: installing {}", missing.join(" "));
        let mut update = Command::new("apt-get");
        update.args(["update", "-qq"]);
        baseline::run_checked(update, APT_LIMIT).context("apt-get update")?;
        let mut install = Command::new("apt-get");
        install
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive");
        baseline::run_checked(install, APT_LIMIT).context("apt-get install")?;
        if let Some((_, program)) = PACKAGES.iter().find(|(_, p)| !on_path(p)) {
            bail!("{program} is still missing after apt-get install");
        }
    }
    let mut versions = Vec::new();
    for (name, program, args) in [
        ("iperf3", "iperf3", &["--version"][..]),
        ("wrk", "wrk", &["--version"][..]),
        ("haproxy", "haproxy", &["-v"][..]),
        ("iptables", "iptables-restore", &["--version"][..]),
        ("nftables", "nft", &["--version"][..]),
    ] {
        versions.push((name.to_owned(), version(program, args)));
    }
    Ok(versions)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// The first line that names a version (wrk prints its version and exits 1).
fn version(program: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let Ok(done) = baseline::run_bounded(cmd, Duration::from_secs(10)) else {
        return "unknown".to_owned();
    };
    format!("{}\n{}", done.stdout, done.stderr)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map_or_else(|| "unknown".to_owned(), |l| l.chars().take(80).collect())
}
