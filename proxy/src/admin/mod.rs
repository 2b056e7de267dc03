//! What the daemon tells operators about itself: Prometheus metrics on
//! `--metrics-bind-address` (`/metrics`, `/proxyMode`) and health on
//! `--healthz-bind-address` (`/healthz`, `/livez`), with kube-proxy's names
//! and meanings where they exist.
//!
//! [`Telemetry`] is the one handle everything shares: the sync loop reports
//! queued changes and finished syncs, sources report rejected configuration
//! through [`ConfigRejects`], and the HTTP servers read from it. It needs no
//! server to work, so tests and alternative front ends can use it alone.
//!
//! - `health`: the queued/updated/timeout state machine and its JSON (pure);
//! - `metrics`: the registry and the scrape-time dataplane collector;
//! - `rejects`: the typed reject hook for sources;
//! - `http`: the two hyper servers;
//! - `service_health`: the health-check node ports of LoadBalancer Services
//!   with `externalTrafficPolicy: Local`, opened and closed as they come and go.
//!
//! Must not: write to the dataplane, or block the sync loop (every call the
//! loop makes takes a short mutex or an atomic).

pub mod health;
pub mod http;
pub mod metrics;
pub mod rejects;
pub mod service_health;

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

pub use health::{HealthState, Probe, Stamp};
pub use metrics::{DataplaneUsage, DriftKind, Metrics, NoLocalEndpoints, UserspaceCounters};
pub use rejects::{ConfigRejects, ConfigSource, RejectReason};

use crate::{model::HealthCheck, plan::Applied};

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
    /// The health-check node ports the last sync wants served
    /// ([`service_health`]).
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
    /// sync loop's change counter) until `shutdown` or the sources are gone.
    /// A task of its own, so a change is timed from when it arrives even while
    /// a sync is running.
    pub async fn watch_changes(
        self,
        mut changes: watch::Receiver<u64>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                r = changes.changed() => match r {
                    Ok(()) => {
                        let version = *changes.borrow_and_update();
                        self.update_queued(version);
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

    pub fn no_local_endpoints(&self, n: NoLocalEndpoints) {
        self.inner.metrics.no_local_endpoints(n);
    }

    /// External frontends refused for safety, by reason (a gauge).
    pub fn refused_frontends(
        &self,
        counts: &std::collections::BTreeMap<crate::model::desired::RefusalReason, usize>,
    ) {
        self.inner.metrics.refused_frontends(counts);
    }

    /// Drift a reconcile found and repaired: map entries, or hooks.
    pub fn drift_repairs(&self, kind: DriftKind, n: usize) {
        self.inner.metrics.drift_repairs(kind, n);
    }

    /// Entry counts of the mirrored maps, after a sync.
    pub fn map_entries(&self, applied: &Applied) {
        self.inner.metrics.map_entries(applied);
    }

    /// Publishes the health-check node ports of the desired state (for
    /// [`service_health::run`]); a no-op when they did not change.
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

/// A listen address flag: `IP:port`, `[IPv6]:port`, a bare IP (the default
/// port), or empty to turn the server off (as kube-proxy's flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindAddress(Option<SocketAddr>);

impl BindAddress {
    pub fn parse(s: &str, default_port: u16) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Self(None));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Self(Some(addr)));
        }
        match s.parse::<IpAddr>() {
            Ok(ip) => Ok(Self(Some(SocketAddr::new(ip, default_port)))),
            Err(_) => Err(format!(
                "{s:?} is not IP:port, [IPv6]:port, an IP, or empty (off)"
            )),
        }
    }

    pub fn addr(self) -> Option<SocketAddr> {
        self.0
    }
}

impl fmt::Display for BindAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("off"),
        }
    }
}

/// Parses a duration such as `60s`, `1m`, `500ms` or `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 60s, 1m or 500ms"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Ok(d)
}

/// Errors starting the servers.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot listen for {what} on {addr}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The running servers; [`AdminServers::stop`] ends them.
#[derive(Debug)]
pub struct AdminServers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    addrs: Vec<(http::Site, SocketAddr)>,
}

impl AdminServers {
    /// Binds both addresses (either may be off), then serves them. Fails,
    /// naming the address, when one cannot be bound; nothing is left running.
    pub async fn start(
        metrics: BindAddress,
        healthz: BindAddress,
        telemetry: Telemetry,
    ) -> Result<Self, AdminError> {
        let mut bound = Vec::new();
        for (site, bind) in [
            (http::Site::Metrics, metrics),
            (http::Site::Health, healthz),
        ] {
            let Some(addr) = bind.addr() else { continue };
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| AdminError::Bind {
                    what: site.describe(),
                    addr,
                    source,
                })?;
            // Port 0 picks a free port: report the real one.
            let addr = listener.local_addr().unwrap_or(addr);
            bound.push((site, addr, listener));
        }
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut addrs = Vec::new();
        for (site, addr, listener) in bound {
            tracing::info!(%addr, serving = site.describe(), "admin server listening");
            tasks.push(tokio::spawn(http::serve(
                listener,
                addr,
                site,
                telemetry.clone(),
                stop_rx.clone(),
            )));
            addrs.push((site, addr));
        }
        Ok(Self { stop, tasks, addrs })
    }

    /// Where each server listens.
    pub fn addrs(&self) -> &[(http::Site, SocketAddr)] {
        &self.addrs
    }

    /// Stops accepting, drops open connections, and waits (bounded) for the tasks.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            for task in self.tasks {
                let _ = task.await;
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use super::*;

    #[test]
    fn bind_addresses_parse_like_kube_proxys_flags() {
        let p = |s| BindAddress::parse(s, 10249).map(BindAddress::addr);
        assert_eq!(
            p("127.0.0.1:9000"),
            Ok(Some("127.0.0.1:9000".parse().unwrap()))
        );
        assert_eq!(p("[::1]:9000"), Ok(Some("[::1]:9000".parse().unwrap())));
        assert_eq!(p("0.0.0.0"), Ok(Some("0.0.0.0:10249".parse().unwrap())));
        assert_eq!(p(""), Ok(None));
        assert!(p("localhost:80").is_err());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_taken_address_is_an_error_that_names_it() {
        let t = Telemetry::new(Mode::Ebpf, Duration::from_secs(60));
        let first = AdminServers::start(
            BindAddress::parse("127.0.0.1:0", 0).unwrap(),
            BindAddress::parse("", 0).unwrap(),
            t.clone(),
        )
        .await
        .unwrap();
        let (_, taken) = first.addrs()[0];
        let err = AdminServers::start(BindAddress(Some(taken)), BindAddress(None), t.clone())
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&taken.to_string()), "{err}");
        assert!(err.to_string().contains("metrics"), "{err}");
        first.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn queued_changes_are_reported_and_cleared_by_a_sync() {
        let t = Telemetry::new(Mode::Ebpf, Duration::ZERO);
        let (tx, rx) = watch::channel(0u64);
        let (_stop_tx, stop_rx) = watch::channel(false);
        let watcher = tokio::spawn(t.clone().watch_changes(rx, stop_rx));
        tx.send_modify(|v| *v += 1);
        // With a zero timeout, a queued change is late at once.
        let late = tokio::time::timeout(Duration::from_secs(5), async {
            while t.probe(Probe::Livez).0 != 503 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(late.is_ok(), "the bump was never reported as queued");
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
