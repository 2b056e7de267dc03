//! `proxy run`: the daemon. Loads the dataplane, starts the sources and the
//! sync loop, and stops cleanly on SIGTERM or SIGINT.
//!
//! On exit the hooks stay attached and the maps stay pinned, on purpose: the
//! node's services keep working while the daemon restarts or is upgraded, and
//! the next daemon takes over the links and the maps' contents. `proxy
//! cleanup` removes them.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use clap::Args;
use tokio::sync::watch;

use crate::{
    config,
    dataplane::{Writer, cgroup, loader},
    model::Index,
    source::manifests::{self, ManifestDir},
    sync::{self, SyncSettings},
};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A directory of Kubernetes YAML (Services, EndpointSlices), watched for changes.
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// The cgroup v2 directory the socket hooks attach to [default: the cgroup2 root].
    #[arg(long, value_name = "DIR")]
    pub cgroup: Option<PathBuf>,
    /// Where maps and links are pinned (a bpffs is mounted there if missing).
    #[arg(long, default_value = config::DEFAULT_PIN_PATH)]
    pub pin_path: PathBuf,
    /// Minimum time between syncs; changes within it are coalesced.
    #[arg(long, value_parser = humantime_ms, default_value = "20")]
    pub min_sync_interval_ms: Duration,
    /// Period of the full reconcile that repairs drift in the maps.
    #[arg(long, value_parser = humantime_ms, default_value = "60000")]
    pub resync_interval_ms: Duration,
}

fn humantime_ms(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|e| format!("{s:?} is not a number of milliseconds: {e}"))
}

impl RunArgs {
    pub fn execute(self) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the tokio runtime")?;
        runtime.block_on(self.run())
    }

    async fn run(self) -> anyhow::Result<()> {
        let Some(manifest_dir) = self.manifests.clone() else {
            anyhow::bail!(
                "no source given: pass --manifests DIR (the Kubernetes API source is not built yet)"
            );
        };
        let cgroup = match self.cgroup.clone() {
            Some(path) => path,
            None => cgroup::cgroup2_root()?,
        };
        let pins = loader::PinLayout::new(&self.pin_path);
        let dataplane = loader::load(&pins, &cgroup).with_context(|| {
            format!(
                "loading the dataplane (cgroup {}, pins {})",
                cgroup.display(),
                pins.root.display()
            )
        })?;
        for hook in &dataplane.attached {
            tracing::info!(program = hook.program, took_over = hook.took_over, cgroup = %cgroup.display(), "hook attached");
        }
        if let Some(logger) = dataplane.logger {
            forward_kernel_logs(logger);
        }
        let writer = Writer::new(dataplane.maps).context("reading the pinned maps")?;
        tracing::info!(
            frontends = writer
                .applied()
                .services
                .keys()
                .filter(|(_, slot)| *slot == 0)
                .count(),
            backends = writer.applied().backends.len(),
            "existing map contents adopted"
        );

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (changes_tx, changes_rx) = watch::channel(0u64);
        let index = Arc::new(Mutex::new(Index::default()));

        let source = manifests::watch::start(
            ManifestDir::new(&manifest_dir),
            index.clone(),
            changes_tx,
            shutdown_rx.clone(),
        )
        .await
        .with_context(|| format!("starting the manifest source on {}", manifest_dir.display()))?;
        tracing::info!(dir = %manifest_dir.display(), "watching manifests");

        let settings = SyncSettings {
            min_interval: self.min_sync_interval_ms,
            resync_interval: self.resync_interval_ms,
        };
        let syncer = tokio::spawn(sync::run(index, writer, changes_rx, shutdown_rx, settings));

        wait_for_signal().await?;
        tracing::info!(
            "shutting down; hooks stay attached and maps stay pinned (run `proxy cleanup` to remove them)"
        );
        let _ = shutdown_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = syncer.await;
            let _ = source.await;
        })
        .await;
        Ok(())
    }
}

/// Forwards the programs' aya-log records (rare paths only) to our logs.
fn forward_kernel_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its ring-buffer fd, and flushing neither closes
    // nor replaces it, so the registered fd stays valid while registered.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    };
    let mut logger = match registered {
        Ok(logger) => logger,
        Err(error) => {
            tracing::warn!(error = %error.into_parts().1, "cannot watch the kernel log buffer");
            return;
        }
    };
    tokio::spawn(async move {
        while let Ok(mut guard) = logger.readable_mut().await {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}
