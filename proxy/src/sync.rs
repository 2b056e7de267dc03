//! The sync loop: one task that turns Index changes into map writes, and
//! keeps the socket hooks attached.
//!
//! Sources bump a `tokio::sync::watch` after changing the Index; `watch` keeps
//! only the latest value, so a burst of changes becomes one sync. Each sync
//! computes desired state (pure), plans against the writer's mirror (pure) and
//! writes only the difference. Failed steps are retried with exponential
//! backoff; a periodic reconcile re-reads the maps and checks the hooks, to
//! repair drift.
//!
//! The hooks are attached (or taken over from the previous daemon) only once
//! the maps hold the first complete state, so new programs never run against
//! maps that are still being filled: on an upgrade that changed the layout,
//! the maps are new and start empty (see `dataplane::loader`).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::watch;

use crate::{
    admin::{DriftKind, NoLocalEndpoints, Telemetry},
    config,
    dataplane::{
        DataplaneMaps, Writer,
        loader::{HookAction, HookReport, LoadError, SocketHooks},
        writer::ApplyReport,
    },
    model::{
        Index,
        incremental::{DesiredCache, Touched},
    },
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

/// The socket hooks as the sync loop sees them: [`SocketHooks`] in the
/// daemon, a fake in tests.
pub trait HookKeeper: Send {
    /// Attaches every hook that is not attached as it should be (see
    /// [`SocketHooks::ensure`]).
    fn ensure(&mut self) -> Result<HookReport, LoadError>;
}

impl HookKeeper for SocketHooks {
    fn ensure(&mut self) -> Result<HookReport, LoadError> {
        SocketHooks::ensure(self)
    }
}

/// Runs until `shutdown` flips to true. `changes` is bumped by sources after
/// they update the Index; nothing is programmed before its first bump, which
/// sources send once their initial list is complete. `telemetry` hears of
/// every bump (queued) and every sync (updated, when complete): health and metrics.
pub async fn run<M: DataplaneMaps, H: HookKeeper>(
    index: Arc<Mutex<Index>>,
    mut writer: Writer<M>,
    mut hooks: H,
    mut changes: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
    settings: SyncSettings,
    telemetry: Telemetry,
) {
    tokio::spawn(
        telemetry
            .clone()
            .watch_changes(changes.clone(), shutdown.clone()),
    );
    // Wait for the first complete state before touching the maps: a restarted
    // daemon must not prune what it has not seen yet.
    tokio::select! {
        r = changes.changed() => if r.is_err() { return },
        _ = shutdown.changed() => return,
    }
    let first_sync = Instant::now();
    let mut backoff = config::RETRY_BACKOFF_START;
    let mut resync = tokio::time::interval(settings.resync_interval);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.reset();
    let mut reconcile = false;
    let mut hooks_attached = false;
    let mut cache = DesiredCache::new();
    // After an incomplete sync, the next one plans everything again: the
    // frontends that failed are no longer in any dirty set.
    let mut plan_everything = true;
    loop {
        let started = Instant::now();
        // The Index is read after this: the sync programs this change and all before.
        let timer = telemetry.sync_started(*changes.borrow_and_update());
        let mode = if reconcile {
            SyncMode::Reconcile
        } else if plan_everything {
            SyncMode::Full
        } else {
            SyncMode::Incremental
        };
        let report = tokio::task::block_in_place(|| {
            sync_once(&index, &mut cache, &mut writer, mode, &telemetry)
        });
        // Hooks: attached once the maps hold a complete state (or, should
        // syncs keep failing, after a grace period), then checked at every
        // reconcile.
        let hooks_due = if hooks_attached {
            mode == SyncMode::Reconcile
        } else {
            report.is_complete() || first_sync.elapsed() >= config::ATTACH_GRACE
        };
        let hooks_ok = if hooks_due {
            let ensured = tokio::task::block_in_place(|| hooks.ensure());
            let ok = note_hooks(ensured, !hooks_attached, &telemetry);
            hooks_attached |= ok;
            ok
        } else {
            if !hooks_attached {
                tracing::warn!(
                    "the first sync is incomplete; the hooks are attached once the maps hold \
                     everything (the previous daemon's hooks, if any, keep serving meanwhile)"
                );
            }
            hooks_attached
        };
        let complete = report.is_complete() && hooks_ok;
        telemetry.sync_finished(timer, complete);
        reconcile = false;
        plan_everything = !report.is_complete();
        let retry_at = if complete {
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

/// Logs and counts what [`HookKeeper::ensure`] did; true when every hook is
/// attached. `first`: the call that attaches or takes over after a start.
fn note_hooks(ensured: Result<HookReport, LoadError>, first: bool, telemetry: &Telemetry) -> bool {
    let report = match ensured {
        Ok(report) => report,
        Err(error) => {
            tracing::error!(error = %error, "cannot attach the socket hooks; will retry");
            return false;
        }
    };
    let (mut took_over, mut attached) = (0, 0);
    for hook in &report.hooks {
        match hook.action {
            HookAction::Kept => {}
            HookAction::TookOver { from_version } => {
                took_over += 1;
                tracing::debug!(program = hook.program, from_version, "hook taken over");
            }
            HookAction::Attached => {
                attached += 1;
                tracing::debug!(program = hook.program, "hook attached");
            }
            HookAction::Repaired(drift) => tracing::warn!(
                program = hook.program,
                found = drift.as_str(),
                "socket hook was not attached as it should be; re-attached (drift repaired)"
            ),
        }
    }
    let repaired = report.repaired().count();
    if repaired > 0 {
        telemetry.drift_repairs(DriftKind::Link, repaired);
    }
    if first {
        tracing::info!(
            hooks = report.hooks.len(),
            took_over,
            attached,
            repaired,
            migrated_from = ?report.migrated_from,
            "hooks attached: the dataplane runs this daemon's programs"
        );
    }
    true
}

/// How much a sync plans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SyncMode {
    /// Only the frontends the changes touched.
    Incremental,
    /// Every frontend, against the writer's mirror.
    Full,
    /// Every frontend, against the maps re-read from the kernel (drift repair).
    Reconcile,
}

/// One pass: bring the desired state up to date from the Index (only the
/// Services that changed), then plan and write.
fn sync_once<M: DataplaneMaps>(
    index: &Mutex<Index>,
    cache: &mut DesiredCache,
    writer: &mut Writer<M>,
    mode: SyncMode,
    telemetry: &Telemetry,
) -> ApplyReport {
    let started = Instant::now();
    let touched = {
        let mut index = index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        telemetry.index_changes(index.service_changes(), index.endpoint_changes());
        cache.update(&mut index)
    };
    let (_, no_local) = cache.no_local_endpoints();
    // Only ClusterIPs are programmed so far: internal traffic policy only.
    telemetry.no_local_endpoints(NoLocalEndpoints {
        internal: no_local.internal,
        external: 0,
    });
    let desired = cache.state();
    let conflicts = match &touched {
        Touched::All => cache.conflicts(),
        Touched::Some(touched) => cache.conflicts_in(touched),
    };
    for conflict in conflicts {
        tracing::warn!(frontend = %conflict.frontend, "{conflict}");
    }
    let computed = started.elapsed();
    let report = match (mode, &touched) {
        (SyncMode::Reconcile, _) => match writer.reconcile(desired) {
            Ok((drift, report)) => {
                telemetry.drift_repairs(DriftKind::MapEntry, drift);
                if drift > 0 {
                    tracing::warn!(
                        entries = drift,
                        "reconcile found map entries that differed from what we wrote; repaired"
                    );
                }
                report
            }
            Err(error) => {
                tracing::error!(error = %error, "reconcile could not read the maps");
                writer.sync(desired)
            }
        },
        (SyncMode::Incremental, Touched::Some(touched)) => writer.sync_frontends(desired, touched),
        _ => writer.sync(desired),
    };
    telemetry.map_entries(writer.applied());
    for failure in &report.failures {
        tracing::error!(subject = ?failure.subject, error = %failure.error, "map write failed; skipped this piece");
    }
    end_udp_flows_to(&report.udp_backends_gone);
    if matches!(touched, Touched::All) || report.ops > TRIM_AFTER_OPS {
        release_freed_memory();
    }
    tracing::info!(
        mode = ?mode,
        frontends = desired.frontends.len(),
        ops = report.ops,
        failures = report.failures.len(),
        unplanned = report.unplanned,
        compute_us = computed.as_micros() as u64,
        plan_us = report.plan_time.as_micros() as u64,
        write_us = report.write_time.as_micros() as u64,
        total_us = started.elapsed().as_micros() as u64,
        "synced"
    );
    report
}

/// A sync this large (a cold start, a relist) frees a lot of short-lived
/// memory: the parse of the initial lists, the plan of every entry.
const TRIM_AFTER_OPS: usize = 10_000;

/// Gives memory that large syncs freed back to the kernel. glibc keeps freed
/// heap pages otherwise, and the daemon's RSS would stay at its peak.
fn release_freed_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes
    // no pointers from us and is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Connected UDP sockets keep the backend they were given at `connect()`; when
/// that backend leaves, end them so the application reconnects (and is
/// balanced, or refused, afresh).
fn end_udp_flows_to(gone: &[crate::model::Backend]) {
    if gone.is_empty() {
        return;
    }
    let peers: Vec<std::net::SocketAddr> = gone
        .iter()
        .map(|b| std::net::SocketAddr::new(b.addr, b.port))
        .collect();
    match crate::dataplane::sockets::destroy_udp_sockets_to(&peers) {
        Ok(destroyed) => tracing::info!(
            backends = peers.len(),
            destroyed,
            "ended UDP sockets aimed at removed backends"
        ),
        Err(error) => {
            tracing::warn!(error = %error, "could not end UDP sockets aimed at removed backends")
        }
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use super::*;
    use crate::{
        admin::Mode,
        dataplane::{
            fake::FakeMaps,
            loader::{AttachedHook, Drift},
        },
        model::NodeInfo,
    };

    /// Answers each `ensure` with the next scripted result (then `Kept`), and
    /// counts the calls.
    struct FakeHooks {
        calls: Arc<Mutex<usize>>,
        script: Vec<Result<HookAction, ()>>,
    }

    impl HookKeeper for FakeHooks {
        fn ensure(&mut self) -> Result<HookReport, LoadError> {
            let n = {
                let mut calls = self.calls.lock().unwrap();
                *calls += 1;
                *calls
            };
            match self
                .script
                .get(n - 1)
                .copied()
                .unwrap_or(Ok(HookAction::Kept))
            {
                Ok(action) => Ok(HookReport {
                    hooks: vec![AttachedHook {
                        program: "sock_connect4",
                        action,
                    }],
                    migrated_from: Vec::new(),
                }),
                Err(()) => Err(LoadError::MissingProgram("sock_connect4")),
            }
        }
    }

    fn count(c: &Arc<Mutex<usize>>) -> usize {
        *c.lock().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hooks_attach_after_the_first_sync_are_retried_and_checked_at_each_reconcile() {
        let index = Arc::new(Mutex::new(Index::new(NodeInfo::named("n1"))));
        let writer = Writer::new(FakeMaps::default()).unwrap();
        let calls = Arc::new(Mutex::new(0));
        let hooks = FakeHooks {
            calls: calls.clone(),
            // The first attach fails (retried with backoff), the second
            // attaches, a reconcile finds a hook detached.
            script: vec![
                Err(()),
                Ok(HookAction::Attached),
                Ok(HookAction::Repaired(Drift::LinkDetached)),
            ],
        };
        let (changes_tx, changes_rx) = watch::channel(0u64);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let telemetry = Telemetry::new(Mode::Ebpf, Duration::from_secs(60));
        let settings = SyncSettings {
            min_interval: Duration::from_millis(1),
            resync_interval: Duration::from_millis(300),
        };
        let task = tokio::spawn(run(
            index,
            writer,
            hooks,
            changes_rx,
            shutdown_rx,
            settings,
            telemetry.clone(),
        ));

        // Nothing before the first complete state.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(count(&calls), 0, "hooks touched before the first sync");

        changes_tx.send(1).unwrap();
        // The failed attach is retried after the first backoff (100 ms).
        let deadline = Instant::now() + Duration::from_secs(2);
        while count(&calls) < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(count(&calls), 2, "expected the failed attach to be retried");

        // The reconcile checks them again and counts the repair.
        let deadline = Instant::now() + Duration::from_secs(3);
        while count(&calls) < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            count(&calls) >= 3,
            "expected a reconcile to check the hooks"
        );
        let metrics = telemetry.metrics().encode().unwrap();
        assert!(
            metrics.contains("proxy_drift_repairs_total{kind=\"link\"} 1"),
            "{metrics}"
        );

        shutdown_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .unwrap()
            .unwrap();
    }
}
