//! The userspace fallback: Services served by tokio proxies when eBPF cannot
//! be used (`--mode userspace`, or `auto` after a load or attach failure), and
//! for frontends that do not fit the eBPF maps.
//!
//! It consumes the same desired state as the eBPF writer, through the same
//! [`Datapath`] seam, so every Kubernetes rule (which endpoints, the
//! terminating fallback, topology, traffic policy, affinity timeout) comes from
//! the pure core. Per frontend:
//!
//! - the VIP is made local with a `local` route ([`steering`]), tracked by our
//!   routing protocol number so a restart removes exactly what we added;
//! - while the frontend has backends, a listener on `VIP:port` serves it
//!   ([`listeners`], [`tcp`], [`udp`]); with none, nothing listens, so a TCP
//!   connect is refused at once (RST) and a UDP datagram gets an ICMP port
//!   unreachable (`ECONNREFUSED` on a connected socket);
//! - backend choice ([`select`]): random, ClientIP affinity with its timeout,
//!   the next backend when one does not answer (a bounded number of tries);
//! - endpoint changes are published to the listener and to every open
//!   connection at once: new connections use the new set, and a connection to
//!   a backend that left is closed after the grace period (UDP sessions end at
//!   once; the client's next datagram goes to a live backend).
//!
//! External frontends are served the same way: ExternalIPs and LoadBalancer
//! IPs get a `local` route like ClusterIPs; NodePorts listen on
//! `nodeIP:nodePort`, whose address is already the node's, so no route is
//! added for them. An external frontend with `externalTrafficPolicy: Local`
//! uses its local endpoints (`external_backends`): a listener cannot tell
//! external clients from the node's own, so the external rule wins.
//!
//! What it does not do: preserve the client's source address (backends see
//! the proxy's).
//!
//! Must not: touch routes other than its own, or block a worker.

pub mod congestion;
pub mod listeners;
pub mod select;
pub mod splice;
pub mod steering;
pub mod tcp;
pub mod udp;
mod workers;

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::watch;

pub use self::steering::{Steering, SteeringError};
use self::{
    listeners::Listener,
    select::{Affinity, Pool},
    steering::Added,
};
use crate::{
    config,
    datapath::{Datapath, DatapathReport, Scope},
    dataplane::udp_flows::UdpFlowEnder,
    error_chain::error_chain,
    log_budget::{self, LogBudget},
    model::{DesiredState, Frontend, FrontendKind, FrontendSpec, Protocol},
    telemetry::{DriftKind, Telemetry, UserspaceCounters},
};

/// How the userspace proxies behave.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long a connection to a backend that left may go on.
    pub backend_grace: Duration,
    /// A UDP session with no datagram either way for this long ends.
    pub udp_idle_timeout: Duration,
    /// One connect timeout per try, in order: how many backends a new
    /// connection tries, and how long it waits for each.
    pub connect_timeouts: Vec<Duration>,
    /// The routing protocol number that marks our VIP routes.
    pub route_protocol: u8,
    /// The TCP congestion control of connections to backends and of
    /// ClusterIP listeners ([`congestion`]); `None`: the node's default.
    pub congestion_control: Option<String>,
    /// Connected UDP sockets aimed at a closed frontend are ended in the
    /// network namespaces of the processes under this cgroup (pods'
    /// included); `None`: in the daemon's own only.
    pub udp_flow_cgroup: Option<std::path::PathBuf>,
    /// Directories of pinned network namespaces also visited (`--netns-dir`).
    pub netns_dirs: Vec<std::path::PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            backend_grace: config::DEFAULT_BACKEND_GRACE,
            udp_idle_timeout: config::DEFAULT_UDP_IDLE_TIMEOUT,
            connect_timeouts: config::CONNECT_TIMEOUTS.to_vec(),
            route_protocol: config::ROUTE_PROTOCOL,
            congestion_control: None,
            udp_flow_cgroup: None,
            netns_dirs: Vec::new(),
        }
    }
}

/// Errors starting the userspace path.
#[derive(Debug, thiserror::Error)]
pub enum UserspaceError {
    #[error("cannot manage VIP routes")]
    Steering(#[from] SteeringError),
}

/// One frontend the userspace path serves.
struct Served {
    protocol: Protocol,
    pool: watch::Sender<Arc<Pool>>,
    affinity: Arc<Mutex<Affinity>>,
    /// Present while the pool has backends.
    listener: Option<Listener>,
    /// Why it is not fully set up (retried on every sync).
    error: Option<String>,
    /// Its address needs our `local` route (all but NodePorts).
    routed: bool,
}

/// Whether a frontend's address must be made local by us: a NodePort's is
/// already one of the node's.
fn needs_route(spec: &FrontendSpec) -> bool {
    spec.kind != FrontendKind::NodePort
}

/// The userspace datapath. See the module docs.
pub struct UserspaceDatapath {
    steering: Steering,
    settings: Arc<Settings>,
    counters: UserspaceCounters,
    telemetry: Telemetry,
    served: HashMap<Frontend, Served>,
    /// Served frontends per VIP: a route lives while this is above zero.
    vip_users: HashMap<IpAddr, usize>,
    /// VIPs that were local already through a route that is not ours.
    foreign: HashSet<IpAddr>,
    /// Route failures by VIP, until a later sync succeeds.
    route_errors: HashMap<IpAddr, String>,
    /// Ends connected UDP sockets aimed at a frontend that closed.
    udp_flows: Arc<UdpFlowEnder>,
}

impl UserspaceDatapath {
    /// Opens the route handle and adopts the VIP routes an earlier run left
    /// (they are removed at the first full sync if no longer wanted). Also
    /// raises the open-files limit: every listener and connection is a descriptor.
    pub async fn start(settings: Settings, telemetry: Telemetry) -> Result<Self, UserspaceError> {
        raise_nofile_limit();
        let mut steering = Steering::open(settings.route_protocol).await?;
        let adopted = steering.adopt().await?.len();
        if adopted > 0 {
            tracing::info!(
                routes = adopted,
                "adopted VIP routes left by an earlier run"
            );
        }
        let udp_flows = Arc::new(match &settings.udp_flow_cgroup {
            Some(cgroup) => UdpFlowEnder::served_by(cgroup.clone(), settings.netns_dirs.clone()),
            None => UdpFlowEnder::own_namespace(),
        });
        Ok(Self {
            steering,
            udp_flows,
            counters: telemetry.userspace(),
            telemetry,
            settings: Arc::new(settings),
            served: HashMap::new(),
            vip_users: HashMap::new(),
            foreign: HashSet::new(),
            route_errors: HashMap::new(),
        })
    }

    /// The VIP routes we own.
    pub fn routes(&self) -> &BTreeSet<IpAddr> {
        self.steering.installed()
    }

    /// Like [`Datapath::apply`], serving only the frontends `wanted` accepts
    /// (the eBPF datapath hands over those beyond its maps' capacity); the
    /// others are stopped if they were served.
    pub async fn apply_filtered(
        &mut self,
        desired: &DesiredState,
        scope: Scope<'_>,
        wanted: &(dyn Fn(&Frontend) -> bool + Sync),
    ) -> DatapathReport {
        let started = Instant::now();
        let mut ops = 0;
        let mut listen_failures = LogBudget::default();
        let everything = !matches!(scope, Scope::Touched(_));
        if matches!(scope, Scope::Reconcile) {
            ops += self.repair_routes().await;
        }

        // What to look at: the scope, plus whatever failed before.
        let mut candidates: BTreeSet<Frontend> = self
            .served
            .iter()
            .filter(|(_, s)| s.error.is_some())
            .map(|(f, _)| *f)
            .collect();
        match scope {
            Scope::Touched(touched) => candidates.extend(touched.iter().copied()),
            Scope::All | Scope::Reconcile => {
                candidates.extend(desired.frontends.keys().filter(|f| wanted(f)).copied());
                candidates.extend(self.served.keys().copied());
            }
        }

        // Removed frontends first: their listeners close, their VIPs may go.
        let mut closed_udp = Vec::new();
        let mut touched_vips: BTreeSet<IpAddr> = BTreeSet::new();
        for frontend in &candidates {
            // A frontend whose need for a route changed is served anew.
            let keep = desired.frontends.get(frontend).is_some_and(|spec| {
                wanted(frontend)
                    && self
                        .served
                        .get(frontend)
                        .is_none_or(|s| s.routed == needs_route(spec))
            });
            if !keep && let Some(served) = self.served.remove(frontend) {
                ops += 1;
                if served.protocol == Protocol::Udp && served.listener.is_some() {
                    closed_udp.push(SocketAddr::new(frontend.addr, frontend.port));
                }
                let routed = served.routed;
                drop(served);
                if routed && let Some(n) = self.vip_users.get_mut(&frontend.addr) {
                    *n -= 1;
                    if *n == 0 {
                        self.vip_users.remove(&frontend.addr);
                    }
                }
                touched_vips.insert(frontend.addr);
                tracing::debug!(%frontend, "userspace frontend removed");
            }
        }

        // New frontends: count their VIPs, so routes are added before listening.
        let new: Vec<Frontend> = candidates
            .iter()
            .filter(|f| !self.served.contains_key(f) && wanted(f))
            .filter(|f| desired.frontends.get(f).is_some_and(needs_route))
            .copied()
            .collect();
        for frontend in &new {
            *self.vip_users.entry(frontend.addr).or_default() += 1;
            touched_vips.insert(frontend.addr);
        }
        // Retry the VIPs whose route failed.
        touched_vips.extend(self.route_errors.keys().copied());
        let to_add: Vec<IpAddr> = touched_vips
            .iter()
            .filter(|ip| self.vip_users.contains_key(ip))
            .filter(|ip| !self.steering.installed().contains(ip) && !self.foreign.contains(ip))
            .copied()
            .collect();
        for (ip, result) in self.steering.add(&to_add).await {
            match result {
                Ok(added) => {
                    ops += 1;
                    self.route_errors.remove(&ip);
                    if added == Added::AlreadyLocal {
                        tracing::info!(vip = %ip, "VIP is already local (not through our route); using it as is");
                        self.foreign.insert(ip);
                    }
                }
                Err(error) => {
                    tracing::warn!(vip = %ip, error = %error_chain(&error), "cannot make the VIP local");
                    self.route_errors
                        .insert(ip, format!("{error}: {}", source_text(&error)));
                }
            }
        }

        // Listeners: new frontends, changed pools, earlier failures.
        for frontend in candidates {
            let Some(spec) = desired
                .frontends
                .get(&frontend)
                .filter(|_| wanted(&frontend))
            else {
                continue;
            };
            let previous = self.served.get(&frontend).map(|s| s.pool.borrow().clone());
            let listed = desired.retained_by_service.get(&spec.service);
            let pool = Arc::new(Pool::from_spec(spec).keeping(
                previous.as_deref(),
                listed.unwrap_or(&BTreeSet::new()),
                frontend.protocol,
            ));
            let served = self.served.entry(frontend).or_insert_with(|| {
                ops += 1;
                tracing::debug!(%frontend, service = %spec.service, "userspace frontend added");
                Served {
                    protocol: frontend.protocol,
                    pool: watch::Sender::new(pool.clone()),
                    affinity: Arc::default(),
                    listener: None,
                    error: None,
                    routed: needs_route(spec),
                }
            });
            let changed = served.pool.send_if_modified(|current| {
                if **current == *pool {
                    false
                } else {
                    *current = pool.clone();
                    true
                }
            });
            ops += usize::from(changed);
            served.error = self
                .route_errors
                .get(&frontend.addr)
                .filter(|_| served.routed)
                .cloned();
            if pool.is_empty() || served.error.is_some() {
                // No endpoint: stop listening, so connects are refused at once.
                if served.listener.take().is_some() {
                    ops += 1;
                }
                continue;
            }
            if served.listener.is_none() {
                let shared = listeners::Shared {
                    pool: served.pool.subscribe(),
                    affinity: served.affinity.clone(),
                    settings: self.settings.clone(),
                    counters: self.counters.clone(),
                    local_clients: spec.kind == FrontendKind::ClusterIp,
                };
                match listeners::open(frontend, shared).await {
                    Ok(listener) => {
                        ops += 1;
                        served.listener = Some(listener);
                    }
                    Err(error) => {
                        if listen_failures.admit() {
                            tracing::warn!(%frontend, error = %error_chain(&error), "cannot listen on the frontend");
                        }
                        served.error = Some(format!("listening: {error}"));
                    }
                }
            }
        }

        if listen_failures.hidden() > 0 {
            tracing::warn!(
                more = listen_failures.hidden(),
                "cannot listen on {} more frontends (the first {} are logged above)",
                listen_failures.hidden(),
                log_budget::PER_PASS
            );
        }

        // Routes no longer used; in a full sync, also any leftover of ours.
        let mut to_remove: Vec<IpAddr> = touched_vips
            .iter()
            .filter(|ip| !self.vip_users.contains_key(ip))
            .copied()
            .collect();
        if everything {
            to_remove.extend(
                self.steering
                    .installed()
                    .iter()
                    .filter(|ip| !self.vip_users.contains_key(ip)),
            );
            self.foreign.retain(|ip| self.vip_users.contains_key(ip));
        }
        to_remove.sort_unstable();
        to_remove.dedup();
        to_remove.retain(|ip| self.steering.installed().contains(ip));
        for ip in &to_remove {
            self.foreign.remove(ip);
            self.route_errors.remove(ip);
        }
        for (ip, result) in self.steering.remove(&to_remove).await {
            match result {
                Ok(()) => ops += 1,
                Err(error) => {
                    tracing::warn!(vip = %ip, error = %error_chain(&error), "cannot remove the VIP route");
                }
            }
        }

        if !closed_udp.is_empty() {
            end_udp_sockets_aimed_at(self.udp_flows.clone(), &self.telemetry, closed_udp).await;
        }

        let failures = self.served.values().filter(|s| s.error.is_some()).count();
        self.counters
            .frontends_serving
            .set(gauge(self.served.len() - failures));
        self.counters.frontends_failed.set(gauge(failures));
        DatapathReport {
            ops,
            failures,
            unplanned: 0,
            plan_time: Duration::ZERO,
            write_time: started.elapsed(),
            hooks_pending: false,
        }
    }

    /// Drift repair: routes of ours that vanished are added again, routes with
    /// our protocol that we do not own are removed. Returns the changes.
    async fn repair_routes(&mut self) -> usize {
        let actual = match self.steering.list().await {
            Ok(actual) => actual,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "cannot list the VIP routes");
                return 0;
            }
        };
        let owned = self.steering.installed().clone();
        let missing: Vec<IpAddr> = owned.difference(&actual).copied().collect();
        let stray: Vec<IpAddr> = actual
            .difference(&owned)
            .filter(|ip| !self.vip_users.contains_key(ip))
            .copied()
            .collect();
        let drift = missing.len() + stray.len();
        if drift == 0 {
            return 0;
        }
        tracing::warn!(
            missing = missing.len(),
            stray = stray.len(),
            "VIP routes differ from what we set; repairing"
        );
        self.telemetry.drift_repairs(DriftKind::Route, drift);
        // Re-adding goes through `add`, which records them again.
        let _ = self.steering.remove(&missing).await;
        let _ = self.steering.add(&missing).await;
        for (ip, result) in self.steering.remove(&stray).await {
            if let Err(error) = result {
                tracing::warn!(vip = %ip, error = %error_chain(&error), "cannot remove a stray VIP route");
            }
        }
        drift
    }
}

impl Datapath for UserspaceDatapath {
    fn apply<'a>(
        &'a mut self,
        desired: &'a DesiredState,
        scope: Scope<'a>,
    ) -> impl std::future::Future<Output = DatapathReport> + Send + 'a {
        self.apply_filtered(desired, scope, &every_frontend)
    }
}

fn every_frontend(_: &Frontend) -> bool {
    true
}

/// Connected UDP sockets of local clients aimed at a frontend that closed:
/// with the VIP gone their datagrams would vanish, so end them, as the eBPF
/// path does for a removed backend (`SOCK_DESTROY`).
async fn end_udp_sockets_aimed_at(
    ender: Arc<UdpFlowEnder>,
    telemetry: &Telemetry,
    frontends: Vec<SocketAddr>,
) {
    match tokio::task::spawn_blocking(move || ender.end(&frontends)).await {
        Ok(report) => {
            telemetry.udp_flows_ended(report.destroyed, report.denied, report.failed);
            if report.destroyed > 0 {
                tracing::info!(
                    destroyed = report.destroyed,
                    namespaces = report.namespaces,
                    took_us = report.took.as_micros() as u64,
                    "ended UDP sockets aimed at removed frontends"
                );
            }
        }
        Err(error) => tracing::warn!(error = %error, "ending UDP sockets: task failed"),
    }
}

fn source_text(error: &dyn std::error::Error) -> String {
    error.source().map(ToString::to_string).unwrap_or_default()
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The soft and hard limits on open files, if they can be read.
pub(super) fn nofile_limits() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass, nothing else.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit)
}

/// Raises the soft limit on open files to the hard limit (as Go programs
/// such as kube-proxy do at start): every listener and connection is a
/// descriptor.
pub fn raise_nofile_limit() {
    let Some(limit) = nofile_limits() else {
        return;
    };
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass, nothing else.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::debug!(
                from = limit.rlim_cur,
                to = limit.rlim_max,
                "raised the open-files limit"
            );
        }
    }
}
