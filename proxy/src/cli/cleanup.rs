//! `proxy cleanup`: removes what `proxy run` deliberately leaves in the kernel.

use std::path::PathBuf;

use clap::Args;

use crate::{config, dataplane::loader};

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// The pin path the daemon used.
    #[arg(long, default_value = config::DEFAULT_PIN_PATH, env = config::PIN_PATH_ENV)]
    pub pin_path: PathBuf,
}

impl CleanupArgs {
    pub fn execute(self) -> anyhow::Result<()> {
        let removed = loader::cleanup(&loader::PinLayout::new(&self.pin_path))?;
        for path in &removed {
            tracing::info!(pin = %path.display(), "removed");
        }
        tracing::info!(count = removed.len(), pin_path = %self.pin_path.display(), "cleanup done: hooks detached, maps released");
        Ok(())
    }
}
