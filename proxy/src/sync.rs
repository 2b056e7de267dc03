//! The sync loop: one task that turns Index changes into map writes.
//!
//! Sources bump a `tokio::sync::watch` after changing the Index; `watch` keeps
//! only the latest value, so a burst of changes becomes one sync. Each sync
//! computes desired state (pure), plans against the writer's mirror (pure) and
//! writes only the difference. Failed steps are retried with exponential
//! backoff; a periodic reconcile re-reads the maps to repair drift.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::watch;

use crate::{
    config,
    dataplane::{DataplaneMaps, Writer, writer::ApplyReport},
    model::Index,
};

/// Settings of the loop.
#[derive(Clone, Debug)]
pub struct SyncSettings {
    pub min_interval: Duration,
    pub resync_interval: Duration,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            min_interval: config::DEFAULT_MIN_SYNC_INTERVAL,
            resync_interval: config::DEFAULT_RESYNC_INTERVAL,
        }
    }
}

/// Runs until `shutdown` flips to true. `changes` is bumped by sources after
/// they update the Index; nothing is programmed before its first bump, which
/// sources send once their initial list is complete.
pub async fn run<M: DataplaneMaps>(
    index: Arc<Mutex<Index>>,
    mut writer: Writer<M>,
    mut changes: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
    settings: SyncSettings,
) {
    // Wait for the first complete state before touching the maps: a restarted
    // daemon must not prune what it has not seen yet.
    tokio::select! {
        r = changes.changed() => if r.is_err() { return },
        _ = shutdown.changed() => return,
    }
    let mut backoff = config::RETRY_BACKOFF_START;
    let mut resync = tokio::time::interval(settings.resync_interval);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.reset();
    let mut reconcile = false;
    loop {
        let started = Instant::now();
        let report = tokio::task::block_in_place(|| sync_once(&index, &mut writer, reconcile));
        reconcile = false;
        let retry_at = if report.is_complete() {
            backoff = config::RETRY_BACKOFF_START;
            None
        } else {
            tracing::warn!(
                retry_in_ms = backoff.as_millis() as u64,
                "sync incomplete; will retry"
            );
            let at = tokio::time::Instant::now() + backoff;
            backoff = (backoff * 2).min(config::RETRY_BACKOFF_MAX);
            Some(at)
        };
        let elapsed = started.elapsed();
        if elapsed < settings.min_interval {
            tokio::time::sleep(settings.min_interval - elapsed).await;
        }
        let retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = resync.tick() => reconcile = true,
            _ = retry => {},
            _ = shutdown.changed() => return,
        }
    }
}

/// One pass: desired state from the Index, then plan and write.
fn sync_once<M: DataplaneMaps>(
    index: &Mutex<Index>,
    writer: &mut Writer<M>,
    reconcile: bool,
) -> ApplyReport {
    let started = Instant::now();
    let desired = match index.lock() {
        Ok(index) => index.desired(),
        Err(poisoned) => poisoned.into_inner().desired(),
    };
    let computed = started.elapsed();
    let report = if reconcile {
        match writer.reconcile(&desired) {
            Ok((drift, report)) => {
                if drift > 0 {
                    tracing::warn!(
                        drift,
                        "reconcile found map entries that differed from what we wrote; repaired"
                    );
                }
                report
            }
            Err(error) => {
                tracing::error!(error = %error, "reconcile could not read the maps");
                writer.sync(&desired)
            }
        }
    } else {
        writer.sync(&desired)
    };
    for failure in &report.failures {
        tracing::error!(subject = ?failure.subject, error = %failure.error, "map write failed; skipped this piece");
    }
    tracing::info!(
        frontends = desired.frontends.len(),
        ops = report.ops,
        failures = report.failures.len(),
        unplanned = report.unplanned,
        compute_us = computed.as_micros() as u64,
        total_us = started.elapsed().as_micros() as u64,
        "synced"
    );
    report
}
