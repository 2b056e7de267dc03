//! `proxy inspect`: what the pinned maps and links hold, read-only, with or
//! without a running daemon (see [`crate::inspect`]). Tables for people,
//! `--output json` for scripts.

use std::{io::Write as _, net::IpAddr, path::PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::{
    config,
    dataplane::loader::PinLayout,
    inspect::{
        Filter, Output, Pins, ServiceSelector,
        render::{View, render},
    },
};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The pin path the daemon uses.
    #[arg(long, global = true, default_value = config::DEFAULT_PIN_PATH, env = config::PIN_PATH_ENV)]
    pub pin_path: PathBuf,
    /// An aligned table for people, or JSON for scripts (shape in the README).
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, Subcommand)]
pub enum What {
    /// Each frontend (VIP:port/protocol), the Service that owns it, and its slots → backends.
    Services(FilterArgs),
    /// Each backend id → address, and how many frontends reach it.
    Backends(FilterArgs),
    /// Live ClientIP session-affinity entries and their age.
    Affinity(FilterArgs),
    /// Per-packet flows: none, the per-packet datapath does not exist yet.
    Conntrack,
    /// The datapath's counters, summed over CPUs, by reason.
    Stats,
    /// Mode, the programs and links attached, and each map's fill level.
    Status,
}

/// Which frontends to show (all by default).
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Only this Service's frontends.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub service: Option<ServiceSelector>,
    /// Only the frontends on this VIP.
    #[arg(long, value_name = "IP")]
    pub vip: Option<IpAddr>,
}

impl From<FilterArgs> for Filter {
    fn from(args: FilterArgs) -> Self {
        Filter {
            service: args.service,
            vip: args.vip,
        }
    }
}

impl InspectArgs {
    pub fn execute(self) -> anyhow::Result<()> {
        let pins = Pins::open(PinLayout::new(&self.pin_path))?;
        let output = self.output;
        let text = match self.what {
            What::Services(filter) => show(&pins.services(&filter.into())?, output)?,
            What::Backends(filter) => show(&pins.backends(&filter.into())?, output)?,
            What::Affinity(filter) => show(&pins.affinity(&filter.into())?, output)?,
            What::Conntrack => show(&pins.conntrack(), output)?,
            What::Stats => show(&pins.stats()?, output)?,
            What::Status => show(&pins.status()?, output)?,
        };
        let mut stdout = std::io::stdout().lock();
        match stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
        {
            // `proxy inspect services | head` is not an error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            result => result.context("writing to stdout"),
        }
    }
}

fn show<V: View>(view: &V, output: Output) -> anyhow::Result<String> {
    Ok(render(view, output)?)
}
