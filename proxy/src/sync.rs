//! The sync loop: one task that turns Index changes into datapath changes.
//!
//! Sources bump a `tokio::sync::watch` after changing the Index; `watch` keeps
//! only the latest value, so a burst of changes becomes one sync. Each sync
//! brings the desired state up to date (pure) and hands it to the
//! [`Datapath`] (the eBPF maps, or the userspace proxies) with the frontends
//! that may have changed. Failed steps are retried with exponential backoff; a
//! periodic reconcile re-reads the kernel's state (the maps and the socket
//! hooks, or the VIP routes and listeners) to repair drift.
//!
//! In eBPF mode the hooks are attached (or taken over from the previous
//! daemon) only once the maps hold the first complete state, so new programs
//! never run against maps that are still being filled: on an upgrade that
//! changed the layout, the maps are new and start empty (see
//! `dataplane::loader`). The eBPF datapath does that
//! (`ebpf_datapath::HookKeeper`); the loop only sees that a sync is not
//! complete until the hooks are attached.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::watch;

use crate::{
    config,
    datapath::{Datapath, DatapathReport, Scope},
    events::{EventSink, ServiceProblem},
    model::{
        Index,
        incremental::{DesiredCache, Touched},
    },
    telemetry::Telemetry,
};

/// Settings of the loop.
#[derive(Clone, Debug)]
pub struct SyncSettings {
    pub min_interval: Duration,
    pub resync_interval: Duration,
    /// Where refused frontends are reported as Service Events (off without
    /// the Kubernetes source).
    pub events: EventSink,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            min_interval: config::DEFAULT_MIN_SYNC_INTERVAL,
            resync_interval: config::DEFAULT_RESYNC_INTERVAL,
            events: EventSink::default(),
        }
    }
}

/// Runs until `shutdown` flips to true. `changes` is bumped by sources after
/// they update the Index; nothing is programmed before its first bump, which
/// sources send once their initial list is complete. `telemetry` hears of
/// every bump (queued) and every sync (updated, when complete): health and metrics.
pub async fn run<D: Datapath>(
    index: Arc<Mutex<Index>>,
    mut datapath: D,
    mut changes: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
    settings: SyncSettings,
    telemetry: Telemetry,
) {
    let pending = {
        let index = index.clone();
        move || {
            index
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pending_changes()
        }
    };
    tokio::spawn(
        telemetry
            .clone()
            .watch_changes(changes.clone(), pending, shutdown.clone()),
    );
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
        let report = sync_once(
            &index,
            &mut cache,
            &mut datapath,
            mode,
            &telemetry,
            &settings.events,
        )
        .await;
        telemetry.sync_finished(timer, report.is_complete());
        reconcile = false;
        // Hooks still to attach do not need the writes planned again.
        plan_everything = !report.writes_complete();
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
            () = datapath.wake() => {},
            _ = shutdown.changed() => return,
        }
    }
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
/// Services that changed), then hand it to the datapath.
async fn sync_once<D: Datapath>(
    index: &Mutex<Index>,
    cache: &mut DesiredCache,
    datapath: &mut D,
    mode: SyncMode,
    telemetry: &Telemetry,
    events: &EventSink,
) -> DatapathReport {
    let started = Instant::now();
    let cpu_started = thread_cpu_time();
    let touched = tokio::task::block_in_place(|| {
        let mut index = index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        telemetry.index_changes(index.service_changes(), index.endpoint_changes());
        let touched = cache.update(&mut index);
        // Taken by this sync: none pending now (as kube-proxy resets them).
        telemetry.changes_pending(index.pending_changes());
        touched
    });
    let (_, no_local) = cache.no_local_endpoints();
    telemetry.no_local_endpoints(no_local);
    // Logged when the Service is recomputed (once per change), like conflicts.
    for refusal in cache.refusals_updated() {
        tracing::warn!(
            service = %refusal.service,
            frontend = %refusal.frontend,
            reason = refusal.reason.label(),
            "{refusal}"
        );
        events.problem(ServiceProblem::from_refusal(&refusal));
    }
    telemetry.refused_frontends(cache.refusal_counts());
    telemetry.health_checks(&cache.state().health_checks);
    let conflicts = match &touched {
        Touched::All => cache.conflicts(),
        Touched::Some(touched) => cache.conflicts_in(touched),
    };
    for conflict in conflicts {
        tracing::warn!(frontend = %conflict.frontend, "{conflict}");
    }
    let computed = started.elapsed();
    let compute_cpu = thread_cpu_time().saturating_sub(cpu_started);
    let scope = match (mode, &touched) {
        (SyncMode::Reconcile, _) => Scope::Reconcile,
        (SyncMode::Incremental, Touched::Some(touched)) => Scope::Touched(touched),
        _ => Scope::All,
    };
    let desired = cache.state();
    let report = datapath.apply(desired, scope).await;
    if matches!(touched, Touched::All) || report.ops > TRIM_AFTER_OPS {
        release_freed_memory();
    }
    tracing::info!(
        mode = scope.name(),
        frontends = desired.frontends.len(),
        ops = report.ops,
        failures = report.failures,
        unplanned = report.unplanned,
        compute_us = computed.as_micros() as u64,
        plan_us = report.plan_time.as_micros() as u64,
        write_us = report.write_time.as_micros() as u64,
        total_us = started.elapsed().as_micros() as u64,
        compute_cpu_us = compute_cpu.as_micros() as u64,
        cpu_us = thread_cpu_time().saturating_sub(cpu_started).as_micros() as u64,
        "synced"
    );
    report
}

/// CPU time the calling thread has used. The sync's work runs on one thread
/// (`block_in_place`, no await between its steps), so the difference of two
/// readings is what a sync cost, whatever else the machine runs: wall times
/// on a loaded node measure the load. Zero if the clock cannot be read.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the
    // call; CLOCK_THREAD_CPUTIME_ID needs nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
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

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use super::*;
    use crate::{
        dataplane::{
            Writer,
            fake::FakeMaps,
            hooks::{AttachedHook, Drift, HookAction, HookReport, LoadError},
        },
        ebpf_datapath::{EbpfDatapath, HookKeeper},
        model::NodeInfo,
        telemetry::Mode,
    };

    #[test]
    fn thread_cpu_time_counts_this_threads_work() {
        let before = thread_cpu_time();
        let wall = Instant::now();
        let mut x = 0u64;
        while wall.elapsed() < Duration::from_millis(20) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(
            thread_cpu_time() > before,
            "the thread's CPU clock did not move"
        );
    }

    /// Answers each `ensure` with the next scripted result (then `Kept`), and
    /// counts the calls.
    struct FakeHooks {
        calls: Arc<Mutex<usize>>,
        script: Vec<Result<HookAction, ()>>,
    }

    impl HookKeeper for FakeHooks {
        fn ensure(&mut self, _applied: &crate::plan::Applied) -> Result<HookReport, LoadError> {
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
                        device: None,
                        action,
                    }],
                    migrated_from: Vec::new(),
                    migration: Vec::new(),
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
            events: EventSink::default(),
        };
        let datapath = EbpfDatapath::new(writer, telemetry.clone(), None).with_hooks(hooks);
        let task = tokio::spawn(run(
            index,
            datapath,
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
