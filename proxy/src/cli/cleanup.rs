//! `proxy cleanup`: removes what `proxy run` deliberately leaves in the kernel:
//! the pinned hooks and maps (eBPF mode) and the VIP routes (userspace mode,
//! those carrying our routing protocol number, in this network namespace).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::{config, dataplane::loader, userspace::Steering};

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
        tracing::info!(count = removed.len(), pin_path = %self.pin_path.display(), "hooks detached, maps released");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the tokio runtime")?;
        let routes = runtime.block_on(async {
            let mut steering = Steering::open(config::ROUTE_PROTOCOL).await?;
            steering.flush().await
        })?;
        for vip in &routes {
            tracing::info!(%vip, "VIP route removed");
        }
        tracing::info!(count = routes.len(), "cleanup done: VIP routes removed");
        Ok(())
    }
}
