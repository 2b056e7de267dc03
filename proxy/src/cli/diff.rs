//! `proxy diff`: the desired frontends against what the pinned maps hold
//! (see [`crate::inspect::diff`]). Read-only, like `inspect`. Exit code 0
//! when they agree, 1 when they differ, 2 on error.
//!
//! The desired state is the daemon's (over its query socket), or, with
//! `--manifests DIR`, computed from that directory for `--node`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::explain::{DesiredSource, ExplainOutput};
use crate::{
    config,
    dataplane::loader::PinLayout,
    inspect::{Filter, Pins, diff},
    query::{self, DesiredDump},
};

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The pin path the daemon uses.
    #[arg(long, default_value = config::DEFAULT_PIN_PATH, env = config::PIN_PATH_ENV)]
    pub pin_path: PathBuf,
    #[command(flatten)]
    pub source: DesiredSource,
    /// Text for people, or JSON for scripts.
    #[arg(long, short = 'o', value_enum, default_value_t = ExplainOutput::Text)]
    pub output: ExplainOutput,
}

impl DiffArgs {
    /// Prints the differences; returns whether the maps agree.
    pub fn execute(self) -> anyhow::Result<bool> {
        let desired = match &self.source.manifests {
            Some(dir) => DesiredDump::from_state(&self.source.offline_index(dir)?.desired()),
            None => {
                let body = query::client::request(&self.source.socket, "GET", "/desired", None)?;
                serde_json::from_str(&body).context("decoding the daemon's desired state")?
            }
        };
        let held = Pins::open(PinLayout::new(&self.pin_path))?.services(&Filter::default())?;
        let view = diff::diff(&desired, &held);
        let text = match self.output {
            ExplainOutput::Text => diff::text(&view),
            ExplainOutput::Json => serde_json::to_string_pretty(&view)? + "\n",
        };
        super::print(&text)?;
        Ok(view.agrees())
    }
}
