//! What the daemon knows about itself, for operators: the [`Telemetry`]
//! recorders (kube-proxy's sync metrics and ours, health, config rejects),
//! read by the HTTP servers (`admin`) and the health-check node ports
//! (`healthcheck`).
//!
//! [`Telemetry`] is the one handle everything shares: the sync loop reports
//! queued changes and finished syncs, sources report rejected configuration
//! through [`ConfigRejects`], the datapaths report drift and their counters.
//! It needs no server to work, so tests and alternative front ends can use it
//! alone.
//!
//! - `health`: the queued/updated/timeout state machine and its JSON (pure);
//! - `metrics`: the registry and the scrape-time dataplane collector (fed
//!   through the [`DataplaneUsage`] trait, which the dataplane implements);
//! - `rejects`: the reject counter sources feed, labelled by each problem
//!   type's own `label()`.
//!
//! A leaf, as kube-proxy's `pkg/proxy/metrics`: it imports nothing above
//! `model` (callers hand it plain numbers and the structs defined here), so
//! every layer can report to it without an import loop.
//!
//! Must not: import admin, source, config, plan, dataplane, datapath,
//! userspace, sync, inspect or cli; write to the dataplane; or block the sync
//! loop (every call the loop makes takes a short mutex or an atomic).

pub mod bind_failures;
pub mod fill;
pub mod gc;
pub mod health;
pub mod metrics;
pub mod rejects;
pub mod udp_flows;

use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::watch;

pub use health::{HealthState, Probe, Stamp};
pub use metrics::{
    ByFamily, DataplaneUsage, DriftKind, MapCapacity, Metrics, MirroredEntries, UsageError,
    UserspaceCounters,
};
pub use rejects::{ConfigRejects, ConfigSource};

use crate::model::{
    HealthCheck, PendingChanges,
    desired::{NoLocalEndpoints, RefusalReason},
};

/// How services are implemented on this node: the `mode` label of
/// `proxy_mode` and the health body, and the answer of `/proxyMode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// eBPF socket hooks (cgroup `connect`/`sendmsg`/`recvmsg`/`getpeername`).
    Ebpf,
    /// The userspace fallback: VIPs made local, tokio proxies listening on them.
    Userspace,
}

impl Mode {
    pub const ALL: [Mode; 2] = [Mode::Ebpf, Mode::Userspace];

    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Ebpf => "ebpf",
            Mode::Userspace => "userspace",
        }
    }

    const fn from_u8(n: u8) -> Self {
        match n {
            1 => Mode::Userspace,
            _ => Mode::Ebpf,
        }
    }

    const fn as_u8(self) -> u8 {
        match self {
            Mode::Ebpf => 0,
            Mode::Userspace => 1,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The shared handle; cheap to clone. See the module docs.
#[derive(Clone, Debug)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// A [`Mode`] as its `u8`: the mode is known only once the dataplane is
    /// loaded (or failed to load), after the servers started.
    mode: AtomicU8,
    health: Mutex<HealthState>,
    metrics: Metrics,
    rejects: ConfigRejects,
    /// The health-check node ports the last sync wants served (the
    /// `healthcheck` servers follow them).
    health_checks: watch::Sender<Arc<BTreeMap<u16, HealthCheck>>>,
}

/// A sync in progress, from [`Telemetry::sync_started`].
#[derive(Debug)]
#[must_use = "hand it back to Telemetry::sync_finished"]
pub struct SyncTimer {
    started: Instant,
}

impl Telemetry {
    /// `healthz_timeout`: how long a queued change may wait to be programmed
    /// before `/healthz` and `/livez` answer 503.
    pub fn new(mode: Mode, healthz_timeout: Duration) -> Self {
        let rejects = ConfigRejects::default();
        let metrics = Metrics::new(mode, &rejects);
        Self {
            inner: Arc::new(Inner {
                mode: AtomicU8::new(mode.as_u8()),
                health: Mutex::new(HealthState::new(healthz_timeout)),
                metrics,
                rejects,
                health_checks: watch::Sender::new(Arc::default()),
            }),
        }
    }

    pub fn mode(&self) -> Mode {
        Mode::from_u8(self.inner.mode.load(Ordering::Relaxed))
    }

    /// The mode in force changed (the eBPF dataplane could not be loaded and
    /// `auto` fell back to userspace): health, `/proxyMode` and the metric follow.
    pub fn set_mode(&self, mode: Mode) {
        self.inner.mode.store(mode.as_u8(), Ordering::Relaxed);
        self.inner.metrics.set_mode(mode);
    }

    /// The counters the userspace proxies bump (cheap to clone).
    pub fn userspace(&self) -> UserspaceCounters {
        self.inner.metrics.userspace()
    }

    /// One walk of the UDP-flow ender: sockets destroyed, namespaces it was
    /// denied entry to, namespaces where it failed.
    pub fn udp_flows_ended(&self, destroyed: usize, denied: usize, failed: usize) {
        self.inner
            .metrics
            .udp_flows()
            .record(destroyed, denied, failed);
    }

    /// One conntrack GC pass's deletions.
    pub fn conntrack_gc(&self, conntrack: u64, socket_rev_nat: u64) {
        self.inner.metrics.gc().record(conntrack, socket_rev_nat);
    }

    /// One failed attempt to listen for an admin server (`server` is one of
    /// [`bind_failures::SERVERS`]).
    pub fn admin_bind_failed(&self, server: &'static str) {
        self.inner.metrics.bind_failures().record(server);
    }

    /// Failed attempts to listen for `server` so far.
    pub fn admin_bind_failures(&self, server: &'static str) -> u64 {
        self.inner.metrics.bind_failures().get(server)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The hook sources call when they reject configuration.
    pub fn rejects(&self) -> ConfigRejects {
        self.inner.rejects.clone()
    }

    /// Where scrapes read the kernel's counters and map sizes (set once the
    /// dataplane is loaded).
    pub fn set_dataplane_usage(&self, usage: impl DataplaneUsage) {
        self.inner.metrics.set_dataplane_usage(Box::new(usage));
    }

    /// For a Node watch: `/healthz` fails while the node is being deleted or
    /// is tainted for deletion, as in kube-proxy.
    pub fn set_node_eligible(&self, eligible: bool) {
        self.health().set_node_eligible(eligible);
    }

    /// A source changed the Index and bumped the change counter to
    /// `version`; the change waits for a sync.
    pub fn update_queued(&self, version: u64) {
        let now = Stamp::now();
        self.health().queued(version, now);
        self.inner.metrics.update_queued(now.wall);
    }

    /// Reports [`Telemetry::update_queued`] on every bump of `changes` (the
    /// sync loop's change counter) until `shutdown` or the sources are gone,
    /// and the changes then `pending` (read from the Index). A task of its
    /// own, so a change is timed from when it arrives even while a sync is
    /// running.
    pub async fn watch_changes(
        self,
        mut changes: watch::Receiver<u64>,
        pending: impl Fn() -> PendingChanges + Send,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                r = changes.changed() => match r {
                    Ok(()) => {
                        let version = *changes.borrow_and_update();
                        self.update_queued(version);
                        self.changes_pending(pending());
                    }
                    Err(_) => return,
                },
                _ = shutdown.changed() => return,
            }
        }
    }

    /// A sync begins, having read the change counter's `version`: it programs
    /// every change up to that one.
    pub fn sync_started(&self, version: u64) -> SyncTimer {
        self.health().sync_started(version, Stamp::now());
        SyncTimer {
            started: Instant::now(),
        }
    }

    /// A sync ended. `complete`: everything planned was written. Only a
    /// complete sync counts as an update for health.
    pub fn sync_finished(&self, timer: SyncTimer, complete: bool) {
        let now = Stamp::now();
        let programming = self.health().sync_finished(now, complete);
        self.inner.metrics.sync_done(
            now.mono.saturating_duration_since(timer.started),
            complete,
            now.wall,
            programming,
        );
    }

    /// The Index's cumulative Service and EndpointSlice change counters.
    pub fn index_changes(&self, services: u64, endpoints: u64) {
        self.inner.metrics.index_changes(services, endpoints);
    }

    /// The Services with changes no sync has taken yet
    /// (`kubeproxy_sync_proxy_rules_{service,endpoint}_changes_pending`).
    pub fn changes_pending(&self, pending: PendingChanges) {
        self.inner.metrics.changes_pending(pending);
    }

    pub fn no_local_endpoints(&self, n: NoLocalEndpoints) {
        self.inner.metrics.no_local_endpoints(n);
    }

    /// External frontends refused for safety, by reason (a gauge).
    pub fn refused_frontends(&self, counts: &BTreeMap<RefusalReason, usize>) {
        self.inner.metrics.refused_frontends(counts);
    }

    /// Drift a reconcile found and repaired: map entries, or hooks.
    pub fn drift_repairs(&self, kind: DriftKind, n: usize) {
        self.inner.metrics.drift_repairs(kind, n);
    }

    /// Entry counts of the mirrored maps, after a sync.
    pub fn map_entries(&self, entries: MirroredEntries) {
        self.inner.metrics.map_entries(entries);
    }

    /// Publishes the health-check node ports of the desired state (for
    /// `healthcheck::run`); a no-op when they did not change.
    pub fn health_checks(&self, checks: &BTreeMap<u16, HealthCheck>) {
        self.inner.health_checks.send_if_modified(|current| {
            if **current == *checks {
                return false;
            }
            *current = Arc::new(checks.clone());
            true
        });
    }

    /// Follows [`Telemetry::health_checks`].
    pub fn watch_health_checks(&self) -> watch::Receiver<Arc<BTreeMap<u16, HealthCheck>>> {
        self.inner.health_checks.subscribe()
    }

    /// Whether the proxy itself is healthy (`/livez`'s answer, not counted):
    /// the `serviceProxyHealthy` of health-check node ports.
    pub fn is_healthy(&self) -> bool {
        self.health().status(Stamp::now()).healthy
    }

    /// The status code and body for a health probe (and counts it).
    pub fn probe(&self, probe: Probe) -> (u16, health::HealthBody) {
        let status = self.health().status(Stamp::now());
        let (code, body) = status.response(probe, self.mode());
        self.inner.metrics.probe_answered(probe, code);
        (code, body)
    }

    fn health(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.inner
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn queued_changes_are_reported_and_cleared_by_a_sync() {
        let t = Telemetry::new(Mode::Ebpf, Duration::ZERO);
        let (tx, rx) = watch::channel(0u64);
        let (_stop_tx, stop_rx) = watch::channel(false);
        let pending = || PendingChanges {
            services: 2,
            endpoints: 1,
        };
        let watcher = tokio::spawn(t.clone().watch_changes(rx, pending, stop_rx));
        tx.send_modify(|v| *v += 1);
        // With a zero timeout, a queued change is late at once.
        let late = tokio::time::timeout(Duration::from_secs(5), async {
            while t.probe(Probe::Livez).0 != 503 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(late.is_ok(), "the bump was never reported as queued");
        let metrics = t.metrics().encode().unwrap();
        for series in [
            "kubeproxy_sync_proxy_rules_service_changes_pending 2",
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending 1",
        ] {
            assert!(metrics.contains(series), "{series} in:\n{metrics}");
        }
        let timer = t.sync_started(*tx.borrow());
        t.sync_finished(timer, true);
        assert_eq!(t.probe(Probe::Livez).0, 200);
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .unwrap()
            .unwrap();
    }
}
