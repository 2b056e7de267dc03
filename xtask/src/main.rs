//! Project tasks: `cargo xtask <task>`. `./x` runs `scripts/setup.sh` first, so
//! the toolchains and tools these tasks call are there.

mod baseline;
mod bench;
mod bench_control;
mod cargo;
mod compat;
mod demo;
mod dockerfile;
mod fuzz;
mod image;
mod layout;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Build, test, demo and benchmark tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the eBPF object (through proxy/build.rs, the one build path) and copy
    /// it to target/bpf/proxy-ebpf.o.
    BuildEbpf {
        #[arg(long)]
        release: bool,
    },
    /// Build everything into target/{debug,release}/proxy, eBPF object embedded.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Formatting, the layout check, lints (host, and the kernel code for its
    /// bpf target), unit tests and integration tests (what CI runs).
    Test {
        /// Extra arguments for `cargo nextest run` (a filter, for example).
        #[arg(trailing_var_arg = true)]
        nextest_args: Vec<String>,
    },
    /// The soak: the daemon in kube mode against the fake API server, under
    /// endpoint churn (100/s), Service churn, ClusterIP and NodePort traffic
    /// (TCP and UDP, new and long-lived), a `kill -9` every 30 s and every
    /// watch cut every 45 s; fails on any failed request or on RSS, open
    /// descriptors or map entries growing. Report in target/soak/.
    Soak {
        /// How long the load runs (at least 2: the warm-up and two windows).
        #[arg(long, default_value_t = 2.0)]
        minutes: f64,
    },
    /// Fail on an import loop among the modules of proxy, proxy-common or
    /// proxy-ebpf, or a production file over 900 lines (non-test code only).
    CheckLayout,
    /// Clippy on the kernel code for its real target (bpfel-unknown-none,
    /// -Z build-std=core), with the pinned nightly, as aya's clippy.sh does.
    ClippyEbpf,
    /// Build the fuzz targets (fuzz/, cargo-fuzz with the pinned nightly) and
    /// run each for --seconds; report in target/fuzz/report.md, non-zero exit
    /// on any crash. tc_packet needs root.
    Fuzz(fuzz::FuzzArgs),
    /// Run the demo: a ClusterIP balanced across three backends in a throwaway namespace.
    Demo,
    /// Run the Dockerfile's build stage without a container engine: its COPYs
    /// from the build context (less .dockerignore), its RUNs, then check the
    /// binary the runtime stage takes (what CI does for the image).
    Dockerfile,
    /// Build the container image with buildah from the Dockerfile's runtime
    /// stage (FROM scratch), with the release binary; tag it
    /// localhost/ebpf-proxy:<commit>.
    Image {
        /// Use this binary instead of building target/release/proxy.
        #[arg(long)]
        binary: Option<PathBuf>,
        /// More tags (repeatable).
        #[arg(long)]
        tag: Vec<String>,
        /// Then run the tests that run the image under podman
        /// (tests/tests/runtime_pod.rs) on it: what CI does.
        #[arg(long)]
        test: bool,
    },
    /// The benchmark suite: this proxy against direct-to-backend, kube-proxy's
    /// iptables and nftables rules and HAProxy, at 1, 1,000 and 10,000 Services;
    /// report and plots under target/bench/.
    Bench(bench::BenchArgs),
    /// Internal: the bench's backends and load generators (run inside its namespaces).
    #[command(hide = true)]
    BenchAgent {
        #[command(subcommand)]
        agent: bench::agent::Agent,
    },
    /// Control-plane benchmark: cold sync, one change and RSS at N Services × M
    /// endpoints, next to iptables-restore and nft -f at the same size.
    BenchControlPlane(bench_control::ControlArgs),
    /// Time kube-proxy's rule loading (iptables-restore, nft -f) for N Services × 10
    /// endpoints, each load in a fresh network namespace: the control-plane baseline.
    BenchBaseline {
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Service counts to measure.
        #[arg(long, value_delimiter = ',', default_values_t = [1, 1000, 10000])]
        scales: Vec<usize>,
        /// Kill a load after this many seconds and report it as "> limit".
        #[arg(long, default_value_t = 300)]
        limit_secs: u64,
        /// Only write the generated rulesets to this directory, load nothing.
        #[arg(long)]
        write_rules: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let root = workspace_root()?;
    match Cli::parse().task {
        Task::BuildEbpf { release } => {
            let object = cargo::build_ebpf(&root, release)?;
            println!("{}", object.display());
        }
        Task::Build { release } => {
            let bin = cargo::build_proxy(&root, release)?;
            println!("{}", bin.display());
        }
        Task::Test { nextest_args } => cargo::test(&root, &nextest_args)?,
        Task::Soak { minutes } => cargo::soak(&root, minutes)?,
        Task::CheckLayout => layout::run(&root)?,
        Task::ClippyEbpf => cargo::clippy_ebpf(&root)?,
        Task::Dockerfile => dockerfile::run(&root)?,
        Task::Fuzz(args) => fuzz::run(&root, &args)?,
        Task::Image { binary, tag, test } => {
            let bin = match binary {
                Some(bin) => bin,
                None => cargo::build_proxy(&root, true)?,
            };
            let tags = image::build(&root, &bin, &tag)?;
            for tag in &tags {
                println!("{tag}");
            }
            if test {
                cargo::test_image(&root, &tags[0], &bin)?;
            }
        }
        Task::Demo => {
            let bin = cargo::build_proxy(&root, false)?;
            demo::run(&bin)?;
        }
        Task::Bench(args) => {
            let bin = match &args.proxy_bin {
                Some(bin) => bin.clone(),
                None => cargo::build_proxy(&root, true)?,
            };
            // The load generators and backends, optimised like the proxy.
            let agent = cargo::build_bin(&root, "xtask", true)?;
            bench::run(&root, &bin, &agent, &args)?;
        }
        Task::BenchAgent { agent } => bench::agent::run(agent)?,
        Task::BenchControlPlane(args) => {
            let bin = match &args.proxy_bin {
                Some(bin) => bin.clone(),
                None => cargo::build_proxy(&root, true)?,
            };
            bench_control::run(&root, &bin, &args)?;
        }
        Task::BenchBaseline {
            scales,
            write_rules: Some(dir),
            ..
        } => {
            for path in baseline::write_rulesets(&dir, &scales)? {
                println!("{}", path.display());
            }
        }
        Task::BenchBaseline {
            rounds,
            scales,
            limit_secs,
            write_rules: None,
        } => {
            let limit = std::time::Duration::from_secs(limit_secs);
            let rows = baseline::run_with_limit(rounds, &scales, limit)?;
            print!("{}", baseline::to_markdown(&rows));
        }
    }
    Ok(())
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(PathBuf::from)
        .context("xtask has no parent directory")
}
