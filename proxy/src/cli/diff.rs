//! `proxy diff`: the desired frontends against what the pinned maps hold
//! (see [`crate::inspect::diff`]). Read-only, like `inspect`. Exit code 0
//! when they agree, 1 when they differ, 2 on error.
//!
//! The desired state is the daemon's (over its query socket), or, with
//! `--manifests DIR`, computed from that directory for `--node`.

use std::{io::Write as _, net::IpAddr, path::PathBuf};

use anyhow::Context as _;
use clap::Args;

use super::explain::{ExplainOutput, index_from_manifests};
use crate::{
    config,
    dataplane::loader::PinLayout,
    inspect::{Filter, Pins, diff},
    model::NodeInfo,
    query::{self, DesiredDump},
};

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The pin path the daemon uses.
    #[arg(long, default_value = config::DEFAULT_PIN_PATH, env = config::PIN_PATH_ENV)]
    pub pin_path: PathBuf,
    /// Compute the desired state from this directory of manifests instead of
    /// asking the daemon.
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// With `--manifests`: the node to compute for.
    #[arg(long, value_name = "NAME", requires = "manifests")]
    pub node: Option<String>,
    /// With `--manifests`: the node's zone.
    #[arg(long, value_name = "ZONE", requires = "manifests")]
    pub zone: Option<String>,
    /// With `--manifests`: an address NodePorts are served on (repeat for several).
    #[arg(long = "nodeport-address", value_name = "IP", requires = "manifests")]
    pub nodeport_addresses: Vec<IpAddr>,
    /// The daemon's query socket (`proxy run --query-socket`).
    #[arg(long, value_name = "PATH", default_value = query::DEFAULT_SOCKET, env = query::SOCKET_ENV)]
    pub socket: PathBuf,
    /// Text for people, or JSON for scripts.
    #[arg(long, short = 'o', value_enum, default_value_t = ExplainOutput::Text)]
    pub output: ExplainOutput,
}

impl DiffArgs {
    /// Prints the differences; returns whether the maps agree.
    pub fn execute(self) -> anyhow::Result<bool> {
        let desired = match &self.manifests {
            Some(dir) => {
                let index = index_from_manifests(
                    dir,
                    NodeInfo {
                        name: self.node.clone().unwrap_or_default(),
                        zone: self.zone.clone(),
                        nodeport_addresses: self.nodeport_addresses.clone(),
                        ..NodeInfo::default()
                    },
                )?;
                DesiredDump::from_state(&index.desired())
            }
            None => {
                let body = query::client::request(&self.socket, "GET", "/desired", None)?;
                serde_json::from_str(&body).context("decoding the daemon's desired state")?
            }
        };
        let held = Pins::open(PinLayout::new(&self.pin_path))?.services(&Filter::default())?;
        let view = diff::diff(&desired, &held);
        let text = match self.output {
            ExplainOutput::Text => diff::text(&view),
            ExplainOutput::Json => serde_json::to_string_pretty(&view)? + "\n",
        };
        let mut stdout = std::io::stdout().lock();
        match stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
        {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            result => result.context("writing to stdout")?,
        }
        Ok(view.agrees())
    }
}
