//! `cargo xtask fuzz`: builds the fuzz targets of `fuzz/` (cargo-fuzz, the
//! pinned nightly, libFuzzer) and runs each for a while, then writes
//! `target/fuzz/report.md`: executions, crashes and corpus size per target.
//!
//! The seeds in `fuzz/corpus/<target>/` are read, never written: what a
//! run finds goes to `target/fuzz/corpus/<target>/` (kept between runs), a
//! crashing input to `target/fuzz/artifacts/<target>/`. Fails when any
//! target crashed (a panic, a broken invariant, a timeout or running out of
//! memory).

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

/// Every target, in the order they run.
pub const TARGETS: [&str; 3] = ["manifest_parse", "api_convert", "tc_packet"];

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds each target runs.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Only this target (repeatable; default: all of them).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    target: Vec<String>,
}

/// What one target's run did.
struct Outcome {
    target: String,
    executions: u64,
    execs_per_sec: u64,
    /// Inputs in the run's corpus afterwards (seeds not counted).
    corpus: usize,
    seeds: usize,
    /// Crashing inputs written.
    crashes: Vec<PathBuf>,
    seconds: f64,
}

pub fn run(root: &Path, args: &FuzzArgs) -> anyhow::Result<()> {
    let targets: Vec<&str> = if args.target.is_empty() {
        TARGETS.to_vec()
    } else {
        TARGETS
            .into_iter()
            .filter(|t| args.target.iter().any(|a| a == t))
            .collect()
    };
    if targets.contains(&"tc_packet") && !nix::unistd::geteuid().is_root() {
        bail!(
            "tc_packet loads eBPF programs and mounts a bpffs: run as root, or pick \
             other targets with --target"
        );
    }
    let out = root.join("target/fuzz");
    let started = Instant::now();
    build(root, &targets)?;
    let build_seconds = started.elapsed().as_secs_f64();
    let mut outcomes = Vec::new();
    for target in &targets {
        outcomes.push(run_target(root, &out, target, args.seconds)?);
    }
    let report = report(&outcomes, build_seconds, args.seconds);
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join("report.md");
    fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    print!("{report}");
    eprintln!("xtask: fuzz report in {}", path.display());
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.crashes.is_empty())
        .map(|o| o.target.as_str())
        .collect();
    if !crashed.is_empty() {
        bail!(
            "fuzzing found crashes in {} (inputs under target/fuzz/artifacts/; reproduce with \
             `cargo +<nightly> fuzz run <target> <input>`)",
            crashed.join(", ")
        );
    }
    Ok(())
}

/// `rustup run <nightly> cargo fuzz …`, with cargo's own variables of this
/// (stable) process removed.
fn cargo_fuzz(root: &Path) -> anyhow::Result<Command> {
    let toolchain = crate::cargo::nightly_channel(&root.join("proxy-ebpf/rust-toolchain.toml"))?;
    let mut cmd = Command::new("rustup");
    cmd.current_dir(root)
        .args(["run", &toolchain, "cargo", "fuzz"])
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO");
    Ok(cmd)
}

/// The flags of every build and run: no sanitizer (safe Rust; ASan would
/// double the build), debug assertions on (overflow checks are panics).
const BUILD_FLAGS: [&str; 3] = ["--sanitizer", "none", "--debug-assertions"];

fn build(root: &Path, targets: &[&str]) -> anyhow::Result<()> {
    // One build of them all links each once.
    let every = [""];
    let builds = if targets.len() == TARGETS.len() {
        &every[..]
    } else {
        targets
    };
    for target in builds {
        let mut cmd = cargo_fuzz(root)?;
        cmd.arg("build").args(BUILD_FLAGS);
        if !target.is_empty() {
            cmd.arg(target);
        }
        eprintln!("xtask: {cmd:?}");
        let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
        if !status.success() {
            bail!(
                "building fuzz target {target} failed ({status}); is cargo-fuzz installed (./x setup)?"
            );
        }
    }
    Ok(())
}

fn run_target(root: &Path, out: &Path, target: &str, seconds: u64) -> anyhow::Result<Outcome> {
    let corpus = out.join("corpus").join(target);
    let artifacts = out.join("artifacts").join(target);
    let seeds = root.join("fuzz/corpus").join(target);
    for dir in [&corpus, &artifacts] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let before = files(&artifacts)?;
    let max_len = if target == "tc_packet" { 1501 } else { 16384 };
    let mut cmd = cargo_fuzz(root)?;
    cmd.arg("run")
        .args(BUILD_FLAGS)
        .arg(target)
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-max_len={max_len}"))
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()));
    eprintln!("xtask: {cmd:?}");
    let started = Instant::now();
    let output = cmd
        .stderr(std::process::Stdio::piped())
        .output()
        .with_context(|| format!("spawning {cmd:?}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&output.stderr);
    // libFuzzer's log is long: keep it in a file and show its end.
    let log_path = out.join(format!("{target}.log"));
    fs::write(&log_path, log.as_bytes())
        .with_context(|| format!("writing {}", log_path.display()))?;
    let tail: Vec<&str> = log.lines().rev().take(15).collect();
    for line in tail.into_iter().rev() {
        eprintln!("{target}: {line}");
    }
    let crashes: Vec<PathBuf> = files(&artifacts)?
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    if !output.status.success() && crashes.is_empty() {
        bail!(
            "fuzz target {target} failed ({}) without leaving an input: see {}",
            output.status,
            log_path.display()
        );
    }
    Ok(Outcome {
        target: target.to_owned(),
        executions: stat(&log, "stat::number_of_executed_units:"),
        execs_per_sec: stat(&log, "stat::average_exec_per_sec:"),
        corpus: files(&corpus)?.len(),
        seeds: files(&seeds)?.len(),
        crashes,
        seconds,
    })
}

/// A `-print_final_stats` value (0 when missing: a crash ends the run
/// before they are printed).
fn stat(log: &str, key: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.strip_prefix(key))
        .filter_map(|v| v.trim().parse().ok())
        .next_back()
        .unwrap_or(0)
}

fn files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_file() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn report(outcomes: &[Outcome], build_seconds: f64, seconds: u64) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Fuzzing report\n");
    let _ = writeln!(
        s,
        "{seconds} s per target; build (cargo-fuzz, nightly, no sanitizer, debug assertions) \
         {build_seconds:.0} s.\n"
    );
    let _ = writeln!(
        s,
        "| target | executions | exec/s | crashes | corpus | seeds | wall s |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    let footnote = "\ncorpus: inputs in target/fuzz/corpus/<target>/, kept between runs \
                    (seeds, in fuzz/corpus/, not counted).\n";
    for o in outcomes {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {:.0} |",
            o.target,
            o.executions,
            o.execs_per_sec,
            o.crashes.len(),
            o.corpus,
            o.seeds,
            o.seconds
        );
    }
    s.push_str(footnote);
    for o in outcomes {
        for crash in &o.crashes {
            let _ = writeln!(s, "\n{}: crash input {}", o.target, crash.display());
        }
    }
    s
}
