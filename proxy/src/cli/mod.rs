//! Command-line interface: one file per subcommand, each with an `execute()`.
//! `run`'s settings are also its configuration file (see [`run::RunArgs`]).

pub mod cleanup;
pub mod config;
pub mod diff;
pub mod explain;
pub mod inspect;
pub mod run;
pub mod run_args;

use clap::{Parser, Subcommand, ValueEnum};

/// eBPF-accelerated Kubernetes service proxy.
#[derive(Debug, Parser)]
#[command(name = "proxy", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PROXY_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per process; `run`'s settings are not worth a box"
)]
pub enum Command {
    /// Run the proxy daemon.
    Run(run::RunArgs),
    /// Detach the hooks and remove the pinned maps (what `run` leaves behind on purpose).
    Cleanup(cleanup::CleanupArgs),
    /// Show what the pinned maps and links hold (read-only; works with or without the daemon).
    Inspect(inspect::InspectArgs),
    /// Why each endpoint of a Service is used or not, per frontend (asks the
    /// daemon, or computes offline with --manifests).
    Explain(explain::ExplainArgs),
    /// The desired frontends against the pinned maps, frontend by frontend
    /// (read-only; exit 0: they agree, 1: they differ, 2: error).
    Diff(diff::DiffArgs),
    /// The configuration file of `proxy run --config`: print the defaults, or check a file.
    Config(config::ConfigArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Sets up `tracing`: `RUST_LOG` filters (default `info`), text or JSON lines on stderr.
/// Writes a command's output to stdout. A closed pipe (`proxy inspect
/// services | head`) is not an error.
pub fn print(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => anyhow::Context::context(result, "writing to stdout"),
    }
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for people at a terminal, not in log files or collectors.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
