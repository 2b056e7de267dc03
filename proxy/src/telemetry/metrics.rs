//! The metrics registry: kube-proxy's sync metrics under kube-proxy's names
//! (`pkg/proxy/metrics/metrics.go`: same types, buckets and help texts), and
//! ours under the `proxy_` prefix. Encoded in the Prometheus text format
//! (0.0.4), as kube-proxy serves it.
//!
//! Where ours differ from kube-proxy's:
//! - no `ip_family` label: one sync programs both families;
//! - `kubeproxy_network_programming_duration_seconds` starts when a source
//!   has put a change into the Index and bumped the sync loop's change
//!   counter, not at the EndpointSlice's `last-change-trigger-time` annotation
//!   (set by the endpoints controller when a pod changed). It measures this
//!   node's share of the latency only, one observation per sync that
//!   programmed changes (kube-proxy observes once per changed Service).
//!
//! Map entries, capacities and datapath counters are read at scrape time
//! through [`DataplaneUsage`] (the dataplane implements it), except the entries
//! of the service, backend and rev-NAT maps, which the eBPF datapath reports
//! from the writer's mirror as [`MirroredEntries`].

use std::{
    collections::BTreeMap,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{Histogram, exponential_buckets, linear_buckets},
    },
    registry::Registry,
};
use proxy_common::{Reason, names};

use super::{
    Mode, bind_failures::BindFailureCounters, gc::GcCounters, health::Probe,
    rejects::ConfigRejects, udp_flows::UdpFlowCounters,
};
use crate::model::{
    PendingChanges,
    desired::{NoLocalEndpoints, RefusalReason},
};

/// The LRU maps have no userspace mirror; counting their entries walks every
/// key, so a scrape does it at most this often.
pub const MAP_COUNT_INTERVAL: Duration = Duration::from_secs(30);

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Metric names, for tests and documentation. Counters are registered without
/// `_total`; the encoder appends it.
pub mod name {
    pub const SYNC_DURATION: &str = "kubeproxy_sync_proxy_rules_duration_seconds";
    pub const NETWORK_PROGRAMMING: &str = "kubeproxy_network_programming_duration_seconds";
    pub const LAST_SYNC: &str = "kubeproxy_sync_proxy_rules_last_timestamp_seconds";
    pub const LAST_QUEUED: &str = "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds";
    pub const SERVICE_CHANGES: &str = "kubeproxy_sync_proxy_rules_service_changes";
    pub const ENDPOINT_CHANGES: &str = "kubeproxy_sync_proxy_rules_endpoint_changes";
    pub const SERVICE_CHANGES_PENDING: &str = "kubeproxy_sync_proxy_rules_service_changes_pending";
    pub const ENDPOINT_CHANGES_PENDING: &str =
        "kubeproxy_sync_proxy_rules_endpoint_changes_pending";
    /// A gauge despite its name, as in kube-proxy.
    pub const NO_LOCAL_ENDPOINTS: &str = "kubeproxy_sync_proxy_rules_no_local_endpoints_total";
    pub const REFUSED_FRONTENDS: &str = "proxy_refused_external_frontends";
    pub const HEALTHZ: &str = "kubeproxy_proxy_healthz";
    pub const LIVEZ: &str = "kubeproxy_proxy_livez";
    pub const SYNC_FAILURES: &str = "proxy_sync_failures";
    pub const DRIFT_REPAIRS: &str = "proxy_drift_repairs";
    pub const CONFIG_REJECTS: &str = "proxy_config_rejects";
    pub const MODE: &str = "proxy_mode";
    pub const MAP_ENTRIES: &str = "proxy_map_entries";
    pub const MAP_CAPACITY: &str = "proxy_map_capacity";
    pub const MAP_FILL: &str = "proxy_map_fill_ratio";
    pub const DATAPATH_EVENTS: &str = "proxy_datapath_events";
    pub const USERSPACE_FRONTENDS: &str = "proxy_userspace_frontends";
    pub const OVER_CAPACITY: &str = "proxy_frontends_over_capacity";
    pub const OVER_CAPACITY_UNSERVED: &str = "proxy_frontends_over_capacity_unserved";
    pub const USERSPACE_CONNECTIONS: &str = "proxy_userspace_connections";
    pub const USERSPACE_BACKEND_FAILURES: &str = "proxy_userspace_backend_failures";
    pub const USERSPACE_UNSERVED: &str = "proxy_userspace_unserved_connections";
    pub const USERSPACE_SOURCE_RANGE_REFUSED: &str = "proxy_userspace_source_range_refused";
}

/// What the userspace proxies report: cheap handles (atomics) cloned into
/// every listener, bumped per connection or UDP session, never per packet.
#[derive(Clone, Debug, Default)]
pub struct UserspaceCounters {
    /// Accepted TCP connections.
    pub tcp_connections: Counter,
    /// UDP sessions opened (one per client address and frontend).
    pub udp_sessions: Counter,
    /// Attempts to reach a backend that failed (TCP connect refused or timed out).
    pub backend_failures: Counter,
    /// Accepted connections that no backend took (every try failed): reset.
    pub unserved: Counter,
    /// TCP connections reset and new UDP clients' datagrams dropped because
    /// the client is outside the frontend's `loadBalancerSourceRanges`.
    pub source_range_refused: Counter,
    /// Frontends the userspace path serves (listening, or refusing for want of endpoints).
    pub frontends_serving: Gauge,
    /// Frontends the userspace path should serve but cannot (the VIP could
    /// not be made local, or the listener could not bind).
    pub frontends_failed: Gauge,
    /// Frontends the eBPF maps could not hold (served from userspace when
    /// the userspace path works; see `frontends_failed`).
    pub over_capacity: Gauge,
    /// Of `over_capacity`, those not served at all: beyond
    /// `--userspace-max-frontends`, or all of them without a userspace path.
    pub over_capacity_unserved: Gauge,
}

pub use super::fill::MapCapacity;

/// Why the kernel's state could not be read at a scrape (logged, never
/// matched on: the scrape leaves the series out).
pub type UsageError = Box<dyn std::error::Error + Send + Sync>;

/// What the metrics read from the kernel at scrape time. The dataplane's
/// `UsageReader` is the real one; tests use a fake.
pub trait DataplaneUsage: std::fmt::Debug + Send + Sync + 'static {
    fn capacities(&self) -> Vec<MapCapacity>;
    fn datapath_events(&self) -> Result<Vec<(Reason, u64)>, UsageError>;
    /// Entries of the maps that have no userspace mirror (the LRU maps).
    fn lru_entries(&self) -> Vec<(&'static str, Result<u64, UsageError>)>;
}

/// Entries of one map pair, by address family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByFamily {
    pub v4: u64,
    pub v6: u64,
}

/// Entries of the maps the writer mirrors, as of the last sync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MirroredEntries {
    /// `SVC_V4`/`SVC_V6`: slot 0 and the slots of every frontend.
    pub services: ByFamily,
    /// `BACKEND_V4`/`BACKEND_V6`.
    pub backends: ByFamily,
    /// `REVNAT_V4`/`REVNAT_V6`.
    pub rev_nat: ByFamily,
    /// `SVC_NAMES`.
    pub svc_names: u64,
}

/// What a repair of drift put back (the `kind` label of
/// `proxy_drift_repairs_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriftKind {
    /// A map entry that was missing, changed, or not ours.
    MapEntry,
    /// A socket hook found detached, unpinned, or running another program.
    Link,
    /// Userspace path: a VIP route of ours that vanished, or a stray one
    /// carrying our routing protocol.
    Route,
}

impl DriftKind {
    pub const ALL: [DriftKind; 3] = [DriftKind::MapEntry, DriftKind::Link, DriftKind::Route];

    pub const fn as_str(self) -> &'static str {
        match self {
            DriftKind::MapEntry => "map_entry",
            DriftKind::Link => "link",
            DriftKind::Route => "route",
        }
    }
}

type Labels = [(&'static str, &'static str); 1];

/// Entry counts by map name.
type Counts = Vec<(&'static str, u64)>;

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sync_duration: Histogram,
    network_programming: Histogram,
    last_sync: Gauge<f64, AtomicU64>,
    last_queued: Gauge<f64, AtomicU64>,
    service_changes: Counter,
    endpoint_changes: Counter,
    /// The Index's cumulative counters at the last sync.
    seen_service_changes: AtomicU64,
    seen_endpoint_changes: AtomicU64,
    service_changes_pending: Gauge,
    endpoint_changes_pending: Gauge,
    no_local_endpoints: Family<Labels, Gauge>,
    refused_frontends: Family<Labels, Gauge>,
    healthz: Family<Labels, Counter>,
    livez: Family<Labels, Counter>,
    sync_failures: Counter,
    drift_repairs: Family<Labels, Counter>,
    modes: Family<Labels, Gauge>,
    userspace: UserspaceCounters,
    udp_flows: UdpFlowCounters,
    gc: GcCounters,
    bind_failures: BindFailureCounters,
    dataplane: std::sync::Arc<DataplaneCollector>,
}

impl Metrics {
    pub fn new(mode: Mode, rejects: &ConfigRejects) -> Self {
        let mut registry = Registry::default();

        let sync_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            name::SYNC_DURATION,
            "SyncProxyRules latency in seconds",
            sync_duration.clone(),
        );
        // kube-proxy's buckets: 0, 0.25 s, 0.5 s, 1..59 s, 60..115 s by 5, 2..5 min by 30 s.
        let network_programming = Histogram::new(
            std::iter::once(0.0)
                .chain(linear_buckets(0.25, 0.25, 2))
                .chain(linear_buckets(1.0, 1.0, 59))
                .chain(linear_buckets(60.0, 5.0, 12))
                .chain(linear_buckets(120.0, 30.0, 7)),
        );
        registry.register(
            name::NETWORK_PROGRAMMING,
            "In Cluster Network Programming Latency in seconds \
             (here: from a source's change to the end of the sync that programmed it)",
            network_programming.clone(),
        );
        let last_sync = Gauge::<f64, AtomicU64>::default();
        registry.register(
            name::LAST_SYNC,
            "The last time proxy rules were successfully synced",
            last_sync.clone(),
        );
        let last_queued = Gauge::<f64, AtomicU64>::default();
        registry.register(
            name::LAST_QUEUED,
            "The last time a sync of proxy rules was queued",
            last_queued.clone(),
        );
        let service_changes = Counter::default();
        registry.register(
            name::SERVICE_CHANGES,
            "Cumulative proxy rules Service changes",
            service_changes.clone(),
        );
        let endpoint_changes = Counter::default();
        registry.register(
            name::ENDPOINT_CHANGES,
            "Cumulative proxy rules Endpoint changes",
            endpoint_changes.clone(),
        );
        let service_changes_pending = Gauge::default();
        registry.register(
            name::SERVICE_CHANGES_PENDING,
            "Pending proxy rules Service changes",
            service_changes_pending.clone(),
        );
        let endpoint_changes_pending = Gauge::default();
        registry.register(
            name::ENDPOINT_CHANGES_PENDING,
            "Pending proxy rules Endpoint changes",
            endpoint_changes_pending.clone(),
        );
        let no_local_endpoints = Family::<Labels, Gauge>::default();
        registry.register(
            name::NO_LOCAL_ENDPOINTS,
            "Number of services with a Local traffic policy and no endpoints",
            no_local_endpoints.clone(),
        );
        // Both policies exist from the start, so a dashboard sees 0, not nothing.
        for policy in ["internal", "external"] {
            no_local_endpoints
                .get_or_create(&[("traffic_policy", policy)])
                .set(0);
        }
        let refused_frontends = Family::<Labels, Gauge>::default();
        registry.register(
            name::REFUSED_FRONTENDS,
            "Frontends (ExternalIPs, LoadBalancer IPs, NodePorts and, despite the \
             name, ClusterIPs) refused for safety (CVE-2020-8554), by reason",
            refused_frontends.clone(),
        );
        for reason in RefusalReason::ALL {
            refused_frontends
                .get_or_create(&[("reason", reason.label())])
                .set(0);
        }
        let healthz = Family::<Labels, Counter>::default();
        registry.register(
            name::HEALTHZ,
            "Cumulative proxy healthz HTTP status",
            healthz.clone(),
        );
        let livez = Family::<Labels, Counter>::default();
        registry.register(
            name::LIVEZ,
            "Cumulative proxy livez HTTP status",
            livez.clone(),
        );

        let sync_failures = Counter::default();
        registry.register(
            name::SYNC_FAILURES,
            "Syncs that left part of the change unwritten (a failed map write, or a \
             frontend that could not be placed); each is retried with backoff",
            sync_failures.clone(),
        );
        let drift_repairs = Family::<Labels, Counter>::default();
        registry.register(
            name::DRIFT_REPAIRS,
            "Drift the periodic reconcile found and repaired, by kind: map entries that \
             differed from what the proxy wrote (edited by hand, or a write whose outcome \
             was lost), and socket hooks found detached",
            drift_repairs.clone(),
        );
        // Every kind exists from the start, so a dashboard sees 0, not nothing.
        for kind in DriftKind::ALL {
            drift_repairs
                .get_or_create(&[("kind", kind.as_str())])
                .inc_by(0);
        }
        registry.register(
            name::CONFIG_REJECTS,
            "Objects, or parts of objects, that a source could not use, by source and reason",
            rejects.family(),
        );
        let modes = Family::<Labels, Gauge>::default();
        registry.register(
            name::MODE,
            "The dataplane mode in use: 1 for the current mode, 0 for the others",
            modes.clone(),
        );
        for m in Mode::ALL {
            modes
                .get_or_create(&[("mode", m.as_str())])
                .set(i64::from(m == mode));
        }
        let frontends = Family::<Labels, Gauge>::default();
        registry.register(
            name::USERSPACE_FRONTENDS,
            "Frontends of the userspace path by state: serving (listening, or \
             refusing for want of endpoints) or failed (VIP or listener not set up)",
            frontends.clone(),
        );
        let connections = Family::<Labels, Counter>::default();
        registry.register(
            name::USERSPACE_CONNECTIONS,
            "Connections the userspace path accepted (TCP) and UDP sessions it opened",
            connections.clone(),
        );
        // One statement each: a family's guard lives to the end of its statement,
        // and creating the next series needs the family's write lock.
        let tcp_connections = connections.get_or_create(&[("protocol", "tcp")]).clone();
        let udp_sessions = connections.get_or_create(&[("protocol", "udp")]).clone();
        let frontends_serving = frontends.get_or_create(&[("state", "serving")]).clone();
        let frontends_failed = frontends.get_or_create(&[("state", "failed")]).clone();
        let userspace = UserspaceCounters {
            tcp_connections,
            udp_sessions,
            backend_failures: Counter::default(),
            unserved: Counter::default(),
            source_range_refused: Counter::default(),
            frontends_serving,
            frontends_failed,
            over_capacity: Gauge::default(),
            over_capacity_unserved: Gauge::default(),
        };
        registry.register(
            name::OVER_CAPACITY,
            "Frontends the eBPF maps could not hold; the userspace path serves them \
             (a failure there shows in proxy_userspace_frontends{state=\"failed\"})",
            userspace.over_capacity.clone(),
        );
        registry.register(
            name::OVER_CAPACITY_UNSERVED,
            "Frontends the eBPF maps could not hold that are not served at all: beyond \
             --userspace-max-frontends, or every one when the userspace path is unavailable",
            userspace.over_capacity_unserved.clone(),
        );
        registry.register(
            name::USERSPACE_BACKEND_FAILURES,
            "Attempts of the userspace path to reach a backend that failed (the next \
             backend is tried, a bounded number of times)",
            userspace.backend_failures.clone(),
        );
        registry.register(
            name::USERSPACE_UNSERVED,
            "TCP connections the userspace path accepted but no backend took (reset)",
            userspace.unserved.clone(),
        );
        registry.register(
            name::USERSPACE_SOURCE_RANGE_REFUSED,
            "Clients of a LoadBalancer frontend outside its loadBalancerSourceRanges that the \
             userspace path turned away (TCP reset, UDP datagram dropped)",
            userspace.source_range_refused.clone(),
        );
        let udp_flows = UdpFlowCounters::register(&mut registry);
        let gc = GcCounters::register(&mut registry);
        let bind_failures = BindFailureCounters::register(&mut registry);
        let dataplane = std::sync::Arc::new(DataplaneCollector::default());
        registry.register_collector(Box::new(dataplane.clone()));

        Self {
            registry,
            sync_duration,
            network_programming,
            last_sync,
            last_queued,
            service_changes,
            endpoint_changes,
            seen_service_changes: AtomicU64::new(0),
            seen_endpoint_changes: AtomicU64::new(0),
            service_changes_pending,
            endpoint_changes_pending,
            no_local_endpoints,
            refused_frontends,
            healthz,
            livez,
            sync_failures,
            drift_repairs,
            modes,
            userspace,
            udp_flows,
            gc,
            bind_failures,
            dataplane,
        }
    }

    /// The mode in force: 1 for it, 0 for the others.
    pub(super) fn set_mode(&self, mode: Mode) {
        for m in Mode::ALL {
            self.modes
                .get_or_create(&[("mode", m.as_str())])
                .set(i64::from(m == mode));
        }
    }

    pub(super) fn userspace(&self) -> UserspaceCounters {
        self.userspace.clone()
    }

    /// The whole registry in the Prometheus text format. May walk the LRU
    /// maps (rate-limited): call it off the async workers.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Where scrapes read capacities, LRU entries and datapath counters. Set
    /// once, after the dataplane is loaded; later calls are ignored.
    pub fn set_dataplane_usage(&self, usage: Box<dyn DataplaneUsage>) {
        if self.dataplane.usage.set(usage).is_err() {
            tracing::debug!("dataplane usage reader already set; keeping the first");
        }
    }

    pub(super) fn update_queued(&self, at: SystemTime) {
        self.last_queued.set(unix_seconds(at));
    }

    pub(super) fn sync_done(
        &self,
        took: Duration,
        complete: bool,
        at: SystemTime,
        programming: Option<Duration>,
    ) {
        self.sync_duration.observe(took.as_secs_f64());
        if complete {
            self.last_sync.set(unix_seconds(at));
        } else {
            self.sync_failures.inc();
        }
        if let Some(latency) = programming {
            self.network_programming.observe(latency.as_secs_f64());
        }
    }

    /// The Index's cumulative change counters; the counters grow by the difference.
    pub(super) fn index_changes(&self, services: u64, endpoints: u64) {
        add_since(&self.service_changes, &self.seen_service_changes, services);
        add_since(
            &self.endpoint_changes,
            &self.seen_endpoint_changes,
            endpoints,
        );
    }

    /// Services with changes no sync has taken yet (set, as kube-proxy does,
    /// when a change arrives and when a sync takes them).
    pub(super) fn changes_pending(&self, pending: PendingChanges) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.service_changes_pending.set(gauge(pending.services));
        self.endpoint_changes_pending.set(gauge(pending.endpoints));
    }

    pub(super) fn no_local_endpoints(&self, n: NoLocalEndpoints) {
        for (policy, count) in [("internal", n.internal), ("external", n.external)] {
            self.no_local_endpoints
                .get_or_create(&[("traffic_policy", policy)])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    pub(super) fn refused_frontends(&self, counts: &BTreeMap<RefusalReason, usize>) {
        for reason in RefusalReason::ALL {
            let n = counts.get(&reason).copied().unwrap_or(0);
            self.refused_frontends
                .get_or_create(&[("reason", reason.label())])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    pub(super) fn udp_flows(&self) -> &UdpFlowCounters {
        &self.udp_flows
    }

    pub(super) fn gc(&self) -> &GcCounters {
        &self.gc
    }

    pub(super) fn bind_failures(&self) -> &BindFailureCounters {
        &self.bind_failures
    }

    pub(super) fn drift_repairs(&self, kind: DriftKind, n: usize) {
        self.drift_repairs
            .get_or_create(&[("kind", kind.as_str())])
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    pub(super) fn map_entries(&self, n: MirroredEntries) {
        let counts: Counts = vec![
            (names::SVC_V4, n.services.v4),
            (names::SVC_V6, n.services.v6),
            (names::BACKEND_V4, n.backends.v4),
            (names::BACKEND_V6, n.backends.v6),
            (names::REVNAT_V4, n.rev_nat.v4),
            (names::REVNAT_V6, n.rev_nat.v6),
            (names::SVC_NAMES, n.svc_names),
        ];
        if let Some(usage) = self.dataplane.usage.get() {
            let capacities = usage.capacities();
            for change in lock(&self.dataplane.fill).observe(&counts, &capacities) {
                if change.nearly_full {
                    tracing::warn!(
                        map = change.map,
                        entries = change.entries,
                        capacity = change.capacity,
                        "eBPF map {} is {:.0} % full: {} before it overflows; frontends that \
                         do not fit are served from userspace, slower",
                        change.map,
                        change.ratio() * 100.0,
                        super::fill::advice(change.map)
                    );
                } else {
                    tracing::info!(
                        map = change.map,
                        entries = change.entries,
                        capacity = change.capacity,
                        "eBPF map {} is no longer nearly full",
                        change.map
                    );
                }
            }
        }
        *lock(&self.dataplane.mirrored) = counts;
    }

    pub(super) fn probe_answered(&self, probe: Probe, code: u16) {
        let family = match probe {
            Probe::Healthz => &self.healthz,
            Probe::Livez => &self.livez,
        };
        let code = if code == 200 { "200" } else { "503" };
        family.get_or_create(&[("code", code)]).inc();
    }
}

fn add_since(counter: &Counter, seen: &AtomicU64, total: u64) {
    let before = seen.swap(total, Ordering::Relaxed);
    // A smaller total means the source's counter started over (a new Index).
    counter.inc_by(total.checked_sub(before).unwrap_or(total));
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Map entries, capacities and datapath counters, produced at scrape time.
#[derive(Debug, Default)]
struct DataplaneCollector {
    /// Entries of the mirrored maps, by map, as of the last sync.
    mirrored: Mutex<Counts>,
    usage: OnceLock<Box<dyn DataplaneUsage>>,
    /// The last count of the LRU maps and when it was taken.
    lru: Mutex<Option<(Instant, Counts)>>,
    /// Which mirrored maps are nearly full (the warning's state).
    fill: Mutex<super::fill::FillWatch>,
}

impl DataplaneCollector {
    /// LRU entry counts, walked at most once per [`MAP_COUNT_INTERVAL`].
    fn lru_entries(&self, usage: &dyn DataplaneUsage) -> Counts {
        let mut cached = lock(&self.lru);
        if let Some((at, counts)) = cached.as_ref()
            && at.elapsed() < MAP_COUNT_INTERVAL
        {
            return counts.clone();
        }
        let counts: Vec<_> = usage
            .lru_entries()
            .into_iter()
            .filter_map(|(map, n)| match n {
                Ok(n) => Some((map, n)),
                Err(error) => {
                    tracing::warn!(map, error = %error, "cannot count map entries");
                    None
                }
            })
            .collect();
        *cached = Some((Instant::now(), counts.clone()));
        counts
    }
}

impl Collector for DataplaneCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let usage = self.usage.get().map(|u| u.as_ref());

        let mut entries = lock(&self.mirrored).clone();
        if let Some(usage) = usage {
            entries.extend(self.lru_entries(usage));
        }
        entries.sort();
        let mut metric = encoder.encode_descriptor(
            name::MAP_ENTRIES,
            "Entries in each eBPF map (the LRU maps are counted at most every 30 s).",
            None,
            MetricType::Gauge,
        )?;
        for &(map, n) in &entries {
            ConstGauge::new(n).encode(metric.encode_family(&[("map", map)])?)?;
        }

        let Some(usage) = usage else { return Ok(()) };
        let mut metric = encoder.encode_descriptor(
            name::MAP_CAPACITY,
            "Capacity (max_entries) of each eBPF map.",
            None,
            MetricType::Gauge,
        )?;
        let capacities = usage.capacities();
        for c in &capacities {
            ConstGauge::new(u64::from(c.capacity))
                .encode(metric.encode_family(&[("map", c.map)])?)?;
        }
        let mut metric = encoder.encode_descriptor(
            name::MAP_FILL,
            "Entries over capacity of each eBPF map, 0 to 1; the proxy warns at 0.9.",
            None,
            MetricType::Gauge,
        )?;
        for (map, n) in &entries {
            if let Some(c) = capacities.iter().find(|c| c.map == *map) {
                ConstGauge::new(super::fill::ratio(*n, c.capacity))
                    .encode(metric.encode_family(&[("map", *map)])?)?;
            }
        }

        match usage.datapath_events() {
            Ok(events) => {
                let mut metric = encoder.encode_descriptor(
                    name::DATAPATH_EVENTS,
                    "Outcomes of the socket hooks by reason, from the kernel's per-CPU \
                     counters (they outlive daemon restarts).",
                    None,
                    MetricType::Counter,
                )?;
                for (reason, n) in events {
                    ConstCounter::new(n)
                        .encode(metric.encode_family(&[("reason", reason.name())])?)?;
                }
            }
            Err(error) => tracing::warn!(error = %error, "cannot read the datapath counters"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
