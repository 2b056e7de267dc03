//! `proxy inspect`: what the pinned maps and links hold, read-only, with or
//! without a running daemon (see [`crate::inspect`]). Tables for people,
//! `--output json` for scripts.
//!
//! `status` also lists the VIP routes carrying our routing protocol (read
//! only, through the userspace path's steering), to say which mode is in
//! force: pinned maps mean eBPF; no pinned maps but such routes mean
//! userspace (a userspace-mode daemon removes the pins when it starts).

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use clap::{Args, Subcommand};

use crate::{
    config,
    dataplane::loader::PinLayout,
    inspect::{
        Filter, InspectError, Output, Pins, ServiceSelector,
        render::{View, render},
        view::StatusView,
    },
    userspace::Steering,
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
    /// Per-packet flows of the tc path (CT_V4, CT_V6): each entry's tuple as
    /// the packet arrives and what it is rewritten to.
    Conntrack(FilterArgs),
    /// The tc path's Maglev tables (MAGLEV, MAGLEV_CFG): the table size and
    /// seed, and per external frontend each backend's share of its table.
    Maglev(FilterArgs),
    /// The datapath's counters, summed over CPUs, by reason.
    Stats,
    /// Mode (eBPF, or userspace when only VIP routes of ours are found), the
    /// programs and links attached, each map's fill level, and the VIP routes.
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
        let output = self.output;
        let text = match self.what {
            What::Status => show(&status(&self.pin_path)?, output)?,
            what => {
                let pins = Pins::open(PinLayout::new(&self.pin_path))?;
                match what {
                    What::Services(filter) => show(&pins.services(&filter.into())?, output)?,
                    What::Backends(filter) => show(&pins.backends(&filter.into())?, output)?,
                    What::Affinity(filter) => show(&pins.affinity(&filter.into())?, output)?,
                    What::Conntrack(filter) => show(&pins.conntrack(&filter.into())?, output)?,
                    What::Maglev(filter) => show(&pins.maglev(&filter.into())?, output)?,
                    What::Stats => show(&pins.stats()?, output)?,
                    What::Status => unreachable!("handled above"),
                }
            }
        };
        super::print(&text)
    }
}

fn show<V: View>(view: &V, output: Output) -> anyhow::Result<String> {
    Ok(render(view, output)?)
}

/// `inspect status`: the pins' status with our VIP routes, or, with no maps
/// pinned but such routes present, the userspace mode's.
fn status(pin_path: &Path) -> anyhow::Result<StatusView> {
    let routes = vip_routes();
    match Pins::open(PinLayout::new(pin_path)) {
        Ok(pins) => Ok(pins.status()?.with_vip_routes(routes)),
        Err(InspectError::NoPins { .. }) if routes.as_ref().is_some_and(|r| !r.is_empty()) => Ok(
            StatusView::userspace(pin_path.to_path_buf(), routes.unwrap_or_default()),
        ),
        Err(error) => Err(error.into()),
    }
}

/// The VIP routes carrying our routing protocol in this network namespace,
/// sorted; `None` when they cannot be listed.
fn vip_routes() -> Option<Vec<IpAddr>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .inspect_err(|error| tracing::debug!(error = %error, "cannot start a tokio runtime"))
        .ok()?;
    runtime
        .block_on(async {
            let steering = Steering::open(config::ROUTE_PROTOCOL).await?;
            steering.list().await
        })
        .inspect_err(|error| tracing::debug!(error = %error, "cannot list the VIP routes"))
        .ok()
        .map(|routes| routes.into_iter().collect())
}
