//! [`DesiredCache`]: desired state kept up to date one Service at a time.
//!
//! Recomputing the whole desired state on every change costs time in
//! proportion to the cluster (tens of milliseconds at 10,000 Services). The
//! Index records which Services a change touched ([`Index::take_dirty`]); the
//! cache recomputes only those, re-resolves the frontends they claim, and
//! reports exactly which frontends may have changed, so the plan can look at
//! those alone. The result equals [`Index::desired_outcome`]'s (a test checks
//! this on random changes). Pure: no I/O.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use super::{
    Index,
    desired::{
        Conflict, NoLocalEndpoints, Refusal, RefusalReason, ServiceFrontends, service_frontends,
    },
    index::Dirty,
    small_set::SmallSet,
    types::{DesiredState, EndpointSlice, Frontend, FrontendSpec, HealthCheck, ObjectRef},
};

/// Which frontends an update may have changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Touched {
    /// Everything was recomputed (the first update, or the node changed).
    All,
    /// Only these.
    Some(BTreeSet<Frontend>),
}

/// The desired state, each Service's share of it, and who claims each frontend.
///
/// Each spec is stored once: the winner's in `state`, other claimants' (a
/// conflict, rare) in `shadowed`.
#[derive(Debug, Default)]
pub struct DesiredCache {
    state: DesiredState,
    per_service: HashMap<ObjectRef, Share>,
    /// Frontend → the Services whose ports name it (several: a conflict; the
    /// lowest id wins, as in [`super::desired::desired`]).
    claims: HashMap<Frontend, Claimants>,
    /// Specs of claimants that do not win their frontend, and specs just
    /// computed and not yet resolved.
    shadowed: HashMap<(Frontend, ObjectRef), FrontendSpec>,
    no_local: NoLocalEndpoints,
    no_local_ports: usize,
    /// Local endpoint address → how many Services list it.
    local_refs: HashMap<IpAddr, usize>,
    /// Health-check port → the Services asking for it and their checks (the
    /// lowest id wins, as in [`super::desired::desired`]).
    health_claims: BTreeMap<u16, BTreeMap<ObjectRef, HealthCheck>>,
    /// The Services the last update recomputed; `None`: all of them (a
    /// rebuild, not a list of 10,000 refs kept until the next sync).
    last_updated: Option<Vec<ObjectRef>>,
    /// Refusals in effect, by reason.
    refused: BTreeMap<RefusalReason, usize>,
    primed: bool,
}

/// The Services claiming one frontend (almost always just one).
type Claimants = SmallSet<ObjectRef>;

/// What one Service contributes: the frontends it claims, and the rest
/// (no-local counts, refusals, local endpoints, health-check port) boxed,
/// absent when it has none, as most Services do: a `Share` is four words,
/// not thirteen, in a map of every Service. Its listed endpoints are
/// `state.retained_by_service[id]` (not kept twice: 10,000 Services × 10
/// endpoints made ~3 MB of copies).
#[derive(Debug, Default)]
struct Share {
    frontends: Vec<Frontend>,
    rest: Option<Box<ShareRest>>,
}

/// The part of a [`Share`] few Services have.
#[derive(Debug, Default)]
struct ShareRest {
    no_local: NoLocalEndpoints,
    no_local_ports: usize,
    refusals: Vec<Refusal>,
    local_endpoints: BTreeSet<IpAddr>,
    health_port: Option<u16>,
}

/// What a [`Share`] without a [`ShareRest`] has.
static NO_REST: ShareRest = ShareRest {
    no_local: NoLocalEndpoints {
        internal: 0,
        external: 0,
    },
    no_local_ports: 0,
    refusals: Vec::new(),
    local_endpoints: BTreeSet::new(),
    health_port: None,
};

impl Share {
    fn rest(&self) -> &ShareRest {
        self.rest.as_deref().unwrap_or(&NO_REST)
    }
}

impl ShareRest {
    /// `None` when there is nothing to keep.
    fn boxed(self) -> Option<Box<Self>> {
        let empty = self.no_local_ports == 0
            && self.no_local.internal == 0
            && self.no_local.external == 0
            && self.refusals.is_empty()
            && self.local_endpoints.is_empty()
            && self.health_port.is_none();
        (!empty).then(|| Box::new(self))
    }
}

impl DesiredCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current desired state.
    pub fn state(&self) -> &DesiredState {
        &self.state
    }

    /// Service ports with a Local policy and no local endpoint (see
    /// [`super::desired::DesiredOutcome::no_local_endpoints`]).
    pub fn no_local_endpoints(&self) -> (usize, NoLocalEndpoints) {
        (self.no_local_ports, self.no_local)
    }

    /// External frontends refused for safety, sorted by Service then frontend.
    pub fn refusals(&self) -> Vec<Refusal> {
        let mut out: Vec<Refusal> = self
            .per_service
            .values()
            .flat_map(|share| share.rest().refusals.iter().cloned())
            .collect();
        out.sort();
        out
    }

    /// How many external frontends are refused, by reason (kept up to date,
    /// no scan).
    pub fn refusal_counts(&self) -> &BTreeMap<RefusalReason, usize> {
        &self.refused
    }

    /// The refusals of the Services the last [`DesiredCache::update`]
    /// recomputed (all of them after a rebuild): what to log once per change.
    pub fn refusals_updated(&self) -> Vec<Refusal> {
        let Some(updated) = &self.last_updated else {
            return self.refusals();
        };
        let mut out: Vec<Refusal> = updated
            .iter()
            .filter_map(|id| self.per_service.get(id))
            .flat_map(|share| share.rest().refusals.iter().cloned())
            .collect();
        out.sort();
        out
    }

    /// Frontends claimed by several Services, sorted by frontend.
    pub fn conflicts(&self) -> Vec<Conflict> {
        let mut out: Vec<Conflict> = self
            .claims
            .iter()
            .filter(|(_, ids)| ids.len() > 1)
            .filter_map(|(frontend, ids)| self.conflict(*frontend, ids))
            .collect();
        out.sort_by_key(|c| c.frontend);
        out
    }

    /// The conflicts among `frontends` (those an update touched, say).
    pub fn conflicts_in<'a>(
        &self,
        frontends: impl IntoIterator<Item = &'a Frontend>,
    ) -> Vec<Conflict> {
        frontends
            .into_iter()
            .filter_map(|f| {
                self.claims
                    .get(f)
                    .filter(|ids| ids.len() > 1)
                    .map(|ids| (f, ids))
            })
            .filter_map(|(f, ids)| self.conflict(*f, ids))
            .collect()
    }

    fn conflict(&self, frontend: Frontend, ids: &Claimants) -> Option<Conflict> {
        let winner = self.state.frontends.get(&frontend)?.service.clone();
        let losers = ids.iter().filter(|id| **id != winner).cloned().collect();
        Some(Conflict {
            frontend,
            winner,
            losers,
        })
    }

    /// Brings the cache up to date with `index`, taking its dirty set.
    pub fn update(&mut self, index: &mut Index) -> Touched {
        let dirty = index.take_dirty();
        self.last_updated = Some(Vec::new());
        if !self.primed || dirty.all {
            self.rebuild(index);
            return Touched::All;
        }
        let Dirty { services, .. } = dirty;
        let mut touched = BTreeSet::new();
        for id in services {
            self.recompute(index, id, &mut touched);
        }
        for frontend in &touched {
            self.resolve(*frontend);
        }
        Touched::Some(touched)
    }

    fn rebuild(&mut self, index: &Index) {
        *self = Self {
            primed: true,
            ..Self::default()
        };
        let ids: Vec<ObjectRef> = index.services().map(|s| s.id.clone()).collect();
        let mut touched = BTreeSet::new();
        for id in ids {
            self.recompute(index, id, &mut touched);
        }
        for frontend in &touched {
            self.resolve(*frontend);
        }
        self.compact();
    }

    /// Rebuilds the state's large maps with full nodes (a `BTreeMap` built
    /// from sorted entries packs them; one filled entry by entry, as a
    /// rebuild does, is left a third to half empty). Contents are unchanged.
    fn compact(&mut self) {
        let state = &mut self.state;
        state.frontends = std::mem::take(&mut state.frontends).into_iter().collect();
        state.retained_backends = std::mem::take(&mut state.retained_backends)
            .into_iter()
            .collect();
        state.retained_by_service = std::mem::take(&mut state.retained_by_service)
            .into_iter()
            .collect();
    }

    /// Replaces one Service's share; adds the frontends it had or has to `touched`.
    fn recompute(&mut self, index: &Index, id: ObjectRef, touched: &mut BTreeSet<Frontend>) {
        let old_retained = self.state.retained_by_service.remove(&id);
        for backend in old_retained.iter().flatten() {
            if let Some(n) = self.state.retained_backends.get_mut(backend) {
                *n -= 1;
                if *n == 0 {
                    self.state.retained_backends.remove(backend);
                }
            }
        }
        if let Some(old_share) = self.per_service.remove(&id) {
            let old = old_share.rest();
            for addr in &old.local_endpoints {
                if let Some(n) = self.local_refs.get_mut(addr) {
                    *n -= 1;
                    if *n == 0 {
                        self.local_refs.remove(addr);
                        self.state.local_endpoints.remove(addr);
                    }
                }
            }
            for refusal in &old.refusals {
                if let Some(n) = self.refused.get_mut(&refusal.reason) {
                    *n -= 1;
                    if *n == 0 {
                        self.refused.remove(&refusal.reason);
                    }
                }
            }
            if let Some(port) = old.health_port {
                self.unclaim_health(port, &id);
            }
            self.no_local.internal -= old.no_local.internal;
            self.no_local.external -= old.no_local.external;
            self.no_local_ports -= old.no_local_ports;
            for frontend in old_share.frontends {
                if let Some(ids) = self.claims.get_mut(&frontend) {
                    ids.remove(&id);
                }
                if self
                    .state
                    .frontends
                    .get(&frontend)
                    .is_some_and(|spec| spec.service == id)
                {
                    self.state.frontends.remove(&frontend);
                }
                self.shadowed.remove(&(frontend, id.clone()));
                touched.insert(frontend);
            }
        }
        if let Some(updated) = &mut self.last_updated {
            updated.push(id.clone());
        }
        let Some(service) = index.service(&id) else {
            return;
        };
        let slices: Vec<&EndpointSlice> = index.slices_for(&id).collect();
        let computed: ServiceFrontends = service_frontends(index.node(), service, &slices);
        let mut share = Share {
            frontends: Vec::with_capacity(computed.frontends.len()),
            rest: ShareRest {
                no_local: computed.no_local,
                no_local_ports: computed.no_local_ports,
                refusals: computed.refusals,
                local_endpoints: computed.local_endpoints,
                health_port: computed.health_check.as_ref().map(|(port, _)| *port),
            }
            .boxed(),
        };
        let rest = share.rest();
        for refusal in &rest.refusals {
            *self.refused.entry(refusal.reason).or_insert(0) += 1;
        }
        for addr in &rest.local_endpoints {
            *self.local_refs.entry(*addr).or_insert(0) += 1;
            self.state.local_endpoints.insert(*addr);
        }
        for backend in &computed.retained_backends {
            *self.state.retained_backends.entry(*backend).or_insert(0) += 1;
        }
        if !computed.retained_backends.is_empty() {
            self.state
                .retained_by_service
                .insert(id.clone(), computed.retained_backends);
        }
        if let Some((port, check)) = computed.health_check {
            self.health_claims
                .entry(port)
                .or_default()
                .insert(id.clone(), check);
            self.publish_health(port);
        }
        self.no_local.internal += rest.no_local.internal;
        self.no_local.external += rest.no_local.external;
        self.no_local_ports += rest.no_local_ports;
        for (frontend, spec) in computed.frontends {
            // A Service naming one frontend twice: its first port wins.
            if share.frontends.contains(&frontend) {
                continue;
            }
            self.claims.entry(frontend).or_default().insert(id.clone());
            self.place(frontend, spec);
            share.frontends.push(frontend);
            touched.insert(frontend);
        }
        self.per_service.insert(id, share);
    }

    fn unclaim_health(&mut self, port: u16, id: &ObjectRef) {
        if let Some(claims) = self.health_claims.get_mut(&port) {
            claims.remove(id);
            if claims.is_empty() {
                self.health_claims.remove(&port);
            }
        }
        self.publish_health(port);
    }

    /// Makes `state.health_checks[port]` the lowest claimant's check.
    fn publish_health(&mut self, port: u16) {
        match self
            .health_claims
            .get(&port)
            .and_then(|claims| claims.values().next())
        {
            Some(check) => {
                self.state.health_checks.insert(port, check.clone());
            }
            None => {
                self.state.health_checks.remove(&port);
            }
        }
    }

    /// Puts a freshly computed spec where it belongs: in `state` when its
    /// Service is (or beats) the frontend's current winner, else in `shadowed`.
    fn place(&mut self, frontend: Frontend, spec: FrontendSpec) {
        match self.state.frontends.get(&frontend) {
            Some(current) if current.service != spec.service && current.service < spec.service => {
                self.shadowed.insert((frontend, spec.service.clone()), spec);
            }
            _ => {
                let id = spec.service.clone();
                if let Some(previous) = self.state.frontends.insert(frontend, spec)
                    && previous.service != id
                {
                    self.shadowed
                        .insert((frontend, previous.service.clone()), previous);
                }
            }
        }
    }

    /// Fills a frontend whose winner went away: the lowest remaining
    /// claimant's spec moves from `shadowed` to `state`.
    fn resolve(&mut self, frontend: Frontend) {
        if self.state.frontends.contains_key(&frontend) {
            return;
        }
        let Some(winner) = self
            .claims
            .get(&frontend)
            .and_then(|ids| ids.first())
            .cloned()
        else {
            self.claims.remove(&frontend);
            return;
        };
        if let Some(spec) = self.shadowed.remove(&(frontend, winner)) {
            self.state.frontends.insert(frontend, spec);
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::model::{
        NodeInfo, ServiceType, SourceId, TrafficPolicy,
        testkit::{ip, slice, svc},
        types::{
            Backend,
            Protocol::{Tcp, Udp},
        },
    };

    /// A small deterministic pseudo-random sequence (no dependency needed).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    #[test]
    fn incremental_updates_equal_a_full_recompute() {
        let mut index = Index::new(NodeInfo::named("n1"));
        let mut cache = DesiredCache::new();
        let mut rng = Lcg(7);
        assert_eq!(cache.update(&mut index), Touched::All);
        for step in 0..2_000 {
            let s = rng.next(12);
            let name = format!("s{s}");
            match rng.next(6) {
                0 => {
                    // Services share VIPs on purpose, to exercise conflicts.
                    let ip = format!("10.96.0.{}", rng.next(8) + 1);
                    let proto = if rng.next(2) == 0 { Tcp } else { Udp };
                    let mut service = svc("default", &name)
                        .cluster_ip(&ip)
                        .port("p", 80, proto)
                        .node_port(30_000 + rng.next(3) as u16)
                        .health_check_node_port(32_000 + rng.next(3) as u16)
                        .service_type(match rng.next(3) {
                            0 => ServiceType::ClusterIp,
                            1 => ServiceType::NodePort,
                            _ => ServiceType::LoadBalancer,
                        })
                        .external_policy(if rng.next(2) == 0 {
                            TrafficPolicy::Local
                        } else {
                            TrafficPolicy::Cluster
                        });
                    // External and LB IPs sometimes clash with each other,
                    // a ClusterIP or a node address (refused).
                    if rng.next(2) == 0 {
                        service = service.external_ip(&format!("192.0.2.{}", rng.next(4) + 1));
                    }
                    if rng.next(2) == 0 {
                        service = service.lb_ip(&format!("10.96.0.{}", rng.next(8) + 1));
                    }
                    // Source ranges, sometimes holding a node address
                    // (`allowFromNode` follows the node).
                    if rng.next(2) == 0 {
                        service = service.source_range(&format!("192.0.2.{}/32", rng.next(4) + 1));
                    }
                    index.apply_service(SourceId::Manifests, service);
                }
                1 => {
                    index.delete_service(
                        SourceId::Manifests,
                        &ObjectRef::new("default", name.as_str()),
                    );
                }
                2 | 3 => {
                    let mut sl = slice("default", &format!("{name}-{}", rng.next(2)))
                        .for_service(&name)
                        .port("p", 8080, Tcp)
                        .port("p", 8080, Udp);
                    for _ in 0..rng.next(4) {
                        sl = sl
                            .endpoint(&format!("10.1.{}.{}", rng.next(3), rng.next(5) + 1))
                            .ready()
                            .on_node(&format!("n{}", rng.next(2)));
                    }
                    index.apply_slice(SourceId::Manifests, sl);
                }
                4 => {
                    index.delete_slice(
                        SourceId::Manifests,
                        &ObjectRef::new("default", format!("{name}-{}", rng.next(2))),
                    );
                }
                _ => match rng.next(20) {
                    0 | 1 => {
                        let mut node = NodeInfo::named(format!("n{}", rng.next(2)));
                        node.addresses = vec![ip(&format!("192.0.2.{}", rng.next(4) + 1))];
                        index.set_node(node);
                    }
                    2 => {
                        let addrs = (0..rng.next(3))
                            .map(|_| ip(&format!("192.0.2.{}", rng.next(4) + 1)))
                            .collect::<Vec<_>>();
                        index.set_nodeport_addresses(addrs);
                    }
                    _ => {}
                },
            }
            let before = cache.state().clone();
            let touched = cache.update(&mut index);
            let full = index.desired_outcome();
            assert_eq!(
                cache.state(),
                &full.state,
                "step {step}: incremental state differs from a full recompute"
            );
            // The stored union is an index of the per-Service sets, never
            // more or less, each backend counted once per Service listing it
            // (see `DesiredState::retained_backends`).
            let mut union: BTreeMap<Backend, u32> = BTreeMap::new();
            for backend in full.state.retained_by_service.values().flatten() {
                *union.entry(*backend).or_insert(0) += 1;
            }
            assert_eq!(full.state.retained_backends, union, "step {step}");
            assert_eq!(
                cache.conflicts(),
                full.conflicts,
                "step {step}: conflicts differ"
            );
            assert_eq!(
                cache.no_local_endpoints().0,
                full.no_local_endpoints,
                "step {step}"
            );
            assert_eq!(
                cache.refusals(),
                full.refusals,
                "step {step}: refusals differ"
            );
            let mut counts = BTreeMap::new();
            for r in &full.refusals {
                *counts.entry(r.reason).or_insert(0) += 1;
            }
            assert_eq!(cache.refusal_counts(), &counts, "step {step}");
            if let Touched::Some(touched) = touched {
                // Every frontend that changed is reported as touched.
                for f in before.frontends.keys().chain(full.state.frontends.keys()) {
                    if before.frontends.get(f) != full.state.frontends.get(f) {
                        assert!(
                            touched.contains(f),
                            "step {step}: {f} changed but was not reported"
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod footprint {
    //! Not a test that can fail: prints the memory each stage adds at 10,000
    //! Services × 10 endpoints. `cargo test --release -p proxy --lib
    //! footprint -- --ignored --nocapture`.
    use super::*;
    use crate::{
        dataplane::{Writer, fake::FakeMaps},
        model::{
            NodeInfo, SourceId,
            testkit::{slice, svc},
            types::Protocol::Tcp,
        },
    };

    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    #[test]
    #[ignore = "a measurement, run by hand"]
    fn footprint_10k_services() {
        let start = rss_kib();
        let mut index = Index::new(NodeInfo::named("n1"));
        for i in 0..10_000u32 {
            let name = format!("svc-{i}");
            let vip = std::net::Ipv4Addr::from(0x0a60_0000 + i).to_string();
            index.apply_service(
                SourceId::Kubernetes,
                svc("bench", &name).cluster_ip(&vip).port("http", 80, Tcp),
            );
            let mut sl = slice("bench", &format!("{name}-x"))
                .for_service(&name)
                .port("http", 8080, Tcp);
            for j in 0..10 {
                let ep = std::net::Ipv4Addr::from(0x0a80_0000 + i * 10 + j).to_string();
                sl = sl.endpoint(&ep).ready().on_node("node-2");
            }
            index.apply_slice(SourceId::Kubernetes, sl);
        }
        let after_index = rss_kib();
        let t = std::time::Instant::now();
        let full = index.desired();
        println!(
            "full desired() {:?} ({} frontends)",
            t.elapsed(),
            full.frontends.len()
        );
        drop(full);
        let mut cache = DesiredCache::new();
        let t = std::time::Instant::now();
        cache.update(&mut index);
        println!("cache rebuild {:?}", t.elapsed());
        let after_cache = rss_kib();
        let mut fake = FakeMaps::default();
        fake.check_invariants = false;
        let mut writer = Writer::new(fake).unwrap_or_else(|e| panic!("{e}"));
        writer.sync(cache.state());
        let after_sync = rss_kib();
        println!(
            "index {} MiB, desired cache {} MiB, writer mirror + fake maps + plan {} MiB",
            (after_index - start) / 1024,
            (after_cache - after_index) / 1024,
            (after_sync - after_cache) / 1024
        );
    }
}
#[cfg(test)]
#[test]
#[ignore = "prints sizes"]
fn sizes() {
    use crate::model::types::*;
    println!(
        "Endpoint {} EndpointSlice {} Service {} FrontendSpec {} SelectionLabels {}",
        std::mem::size_of::<Endpoint>(),
        std::mem::size_of::<EndpointSlice>(),
        std::mem::size_of::<Service>(),
        std::mem::size_of::<FrontendSpec>(),
        std::mem::size_of::<SelectionLabels>()
    );
}
