//! The desired-state function: from Services and their EndpointSlices to the
//! frontends the dataplane should serve and the backends behind each.
//!
//! Pure and synchronous: no I/O, no logging, no clock. [`crate::model::Index`]
//! calls it; tests can call it directly.
//!
//! Rules (ClusterIP frontends; see `docs/semantics.md`):
//! - one frontend per cluster IP × TCP/UDP Service port;
//! - endpoints come from the Service's slices whose address type matches the
//!   frontend IP's family, and whose port has the Service port's name and protocol;
//! - an endpoint seen in several slices counts once per (address, target port):
//!   the first slice in name order wins, except that a later copy on this node
//!   replaces it (kube-proxy's `EndpointSliceCache.addEndpoints` favours local);
//! - `publishNotReadyAddresses` makes every endpoint Ready and Serving;
//! - endpoints are sorted into cluster and local categories by [`categorize`], a
//!   port of kube-proxy's `CategorizeEndpoints` (`pkg/proxy/topology.go`);
//! - the frontend serves traffic that starts on this node (the socket hooks see
//!   only that), i.e. kube-proxy's "internal" traffic: it uses the local
//!   endpoints under `internalTrafficPolicy: Local`, else the cluster endpoints;
//! - session affinity: [`FrontendSpec::affinity_timeout`] is the Service's;
//! - a frontend with no usable endpoint is still emitted, with empty backends;
//! - two Services claiming one frontend: the lowest [`ObjectRef`] wins and the
//!   clash is reported as a [`Conflict`] in [`DesiredOutcome::conflicts`]
//!   ([`DesiredState`] itself carries no problems).
//!
//! External frontends (issue 4), in the family of each cluster IP:
//! - NodePort (type NodePort or LoadBalancer, a port with `nodePort`): one per
//!   nodeport address ([`NodeInfo::nodeport_addresses`]) × `nodePort`;
//!   each ExternalIP × port (any type, as kube-proxy); each LoadBalancer
//!   ingress IP × port (type LoadBalancer);
//! - their `backends` (the internal scope: the node and its pods) are the
//!   cluster category; under `externalTrafficPolicy: Local`,
//!   `external_backends` (the external scope) holds the local category;
//! - refused, and reported as a [`Refusal`] (CVE-2020-8554): any external
//!   frontend on the kubelet's port 10250, and ExternalIPs or LoadBalancer IPs
//!   that are loopback, unspecified, or one of this node's addresses;
//! - [`DesiredState::local_endpoints`]: every endpoint address on this node;
//!   [`DesiredState::health_checks`]: `healthCheckNodePort` of LoadBalancer
//!   Services with `externalTrafficPolicy: Local`, with the count of local
//!   Ready endpoints summed over the Service's ports, in its primary family
//!   only (kube-proxy's `LocalReadyEndpoints`, which each family's proxier
//!   computes on its own); two Services on one port: the lowest
//!   [`ObjectRef`] wins.
//!
//! # Local policy with no local endpoint: refuse, not drop
//!
//! kube-proxy *drops* ClusterIP traffic of an `internalTrafficPolicy: Local`
//! Service that has endpoints elsewhere but none here, and *rejects* only when
//! the Service has no endpoint anywhere. Here both give empty backends, which the
//! dataplane answers with `ECONNREFUSED` at `connect()`/`sendmsg()`. A
//! socket-level proxy cannot drop silently: leaving the socket untranslated would
//! send packets to a VIP that nothing routes, and the client would wait for a
//! timeout to learn what is already known now. Failing fast is what kube-proxy's
//! REJECT is for, and the cause is counted
//! ([`DesiredOutcome::no_local_endpoints`], kube-proxy's
//! `sync_proxy_rules_no_local_endpoints_total`).
//!
//! # Topology
//!
//! As in kube-proxy today, topology comes only from the hints the EndpointSlice
//! controller writes: `spec.trafficDistribution` (`PreferClose`,
//! `PreferSameZone`, `PreferSameNode`) is not read here, because the controller
//! turns it into zone or node hints. Node hints come first (kube-proxy's
//! `PreferSameTrafficDistribution` gate, on by default), then zone hints.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, btree_map::Entry, hash_map},
    fmt,
    net::IpAddr,
};

use super::types::{
    AddressType, Backend, DesiredState, EndpointSlice, Frontend, FrontendKind, FrontendSpec,
    HealthCheck, NodeInfo, ObjectRef, Service, ServicePort, ServiceType, TrafficPolicy,
};

/// The kubelet's port: no external frontend may take it (CVE-2020-8554).
pub const KUBELET_PORT: u16 = 10250;

/// Desired state plus what went wrong, or is worth counting, while computing it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredOutcome {
    pub state: DesiredState,
    /// Frontends claimed by more than one Service, sorted by frontend.
    pub conflicts: Vec<Conflict>,
    /// External frontends refused for safety, sorted by Service, then
    /// frontend, then kind.
    pub refusals: Vec<Refusal>,
    /// Service ports with a Local traffic policy (internal, or external on an
    /// externally reachable Service) that have usable endpoints, but none on
    /// this node; each port counts once. kube-proxy's
    /// `sync_proxy_rules_no_local_endpoints_total`, whose two series are in
    /// [`DesiredOutcome::no_local_endpoints_by_policy`].
    pub no_local_endpoints: usize,
    pub no_local_endpoints_by_policy: NoLocalEndpoints,
}

/// Service ports with no local endpoint, by the policy that wanted one (the
/// `traffic_policy` label of kube-proxy's metric). kube-proxy counts per Service
/// port; a port of a dual-stack Service counts once, when any of its families
/// lacks a local endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoLocalEndpoints {
    /// `internalTrafficPolicy: Local`.
    pub internal: usize,
    /// `externalTrafficPolicy: Local` on a NodePort or LoadBalancer Service, or
    /// one with external IPs.
    pub external: usize,
}

/// A frontend claimed by more than one Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub frontend: Frontend,
    /// The Service that got the frontend: the lowest [`ObjectRef`].
    pub winner: ObjectRef,
    /// The others, sorted.
    pub losers: Vec<ObjectRef>,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frontend {} is claimed by several Services: using Service {}, ignoring",
            self.frontend, self.winner
        )?;
        for (i, loser) in self.losers.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}Service {loser}")?;
        }
        Ok(())
    }
}

/// An external frontend that is not programmed because it would hijack
/// traffic that is not the Service's (CVE-2020-8554). Refused unconditionally,
/// as kube-proxy's admission guidance and issue 4 ask; reported like a
/// [`Conflict`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Refusal {
    pub service: ObjectRef,
    pub frontend: Frontend,
    pub kind: FrontendKind,
    pub reason: RefusalReason,
}

/// Why an external frontend is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefusalReason {
    /// The address is one of this node's (an ExternalIP or LoadBalancer IP).
    NodeAddress,
    /// A loopback or unspecified address.
    Loopback,
    /// The kubelet's port, [`KUBELET_PORT`].
    KubeletPort,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 3] = [
        RefusalReason::NodeAddress,
        RefusalReason::Loopback,
        RefusalReason::KubeletPort,
    ];

    /// Short label, for metrics.
    pub fn label(self) -> &'static str {
        match self {
            RefusalReason::NodeAddress => "node_address",
            RefusalReason::Loopback => "loopback",
            RefusalReason::KubeletPort => "kubelet_port",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.reason {
            RefusalReason::NodeAddress => "the address is one of this node's",
            RefusalReason::Loopback => "the address is a loopback or unspecified address",
            RefusalReason::KubeletPort => "the port is the kubelet's (10250)",
        };
        write!(
            f,
            "Service {}: {} frontend {} refused: {why} (CVE-2020-8554)",
            self.service, self.kind, self.frontend
        )
    }
}

/// Computes the whole desired state for `node`. Each item is a Service with the
/// slices that name it (same namespace, `service_name` equal to its name), in
/// slice-name order. The order of Services does not matter.
pub fn desired<'a, S>(
    node: &NodeInfo,
    services: impl IntoIterator<Item = (&'a Service, S)>,
) -> DesiredOutcome
where
    S: AsRef<[&'a EndpointSlice]>,
{
    let mut frontends: BTreeMap<Frontend, FrontendSpec> = BTreeMap::new();
    let mut losers: BTreeMap<Frontend, BTreeSet<ObjectRef>> = BTreeMap::new();
    let mut no_local = NoLocalEndpoints::default();
    let mut no_local_ports = 0;
    let mut refusals = Vec::new();
    let mut local_endpoints = BTreeSet::new();
    let mut health_checks: BTreeMap<u16, HealthCheck> = BTreeMap::new();
    for (service, slices) in services {
        let computed = service_frontends(node, service, slices.as_ref());
        refusals.extend(computed.refusals);
        local_endpoints.extend(computed.local_endpoints);
        if let Some((port, check)) = computed.health_check {
            // Two Services on one port (the API server prevents it): the lowest wins.
            match health_checks.entry(port) {
                Entry::Vacant(v) => {
                    v.insert(check);
                }
                Entry::Occupied(mut o) => {
                    if check.service < o.get().service {
                        o.insert(check);
                    }
                }
            }
        }
        no_local.internal += computed.no_local.internal;
        no_local.external += computed.no_local.external;
        no_local_ports += computed.no_local_ports;
        for (frontend, spec) in computed.frontends {
            match frontends.entry(frontend) {
                Entry::Vacant(v) => {
                    v.insert(spec);
                }
                Entry::Occupied(mut o) => {
                    if o.get().service == spec.service {
                        continue;
                    }
                    let loser = if spec.service < o.get().service {
                        std::mem::replace(o.get_mut(), spec).service
                    } else {
                        spec.service
                    };
                    losers.entry(frontend).or_default().insert(loser);
                }
            }
        }
    }
    let conflicts = losers
        .into_iter()
        .filter_map(|(frontend, losers)| {
            let winner = frontends.get(&frontend)?.service.clone();
            Some(Conflict {
                frontend,
                winner,
                losers: losers.into_iter().collect(),
            })
        })
        .collect();
    refusals.sort();
    DesiredOutcome {
        state: DesiredState {
            frontends,
            local_endpoints,
            health_checks,
        },
        conflicts,
        refusals,
        no_local_endpoints: no_local_ports,
        no_local_endpoints_by_policy: no_local,
    }
}

/// What one Service contributes to the desired state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceFrontends {
    pub frontends: Vec<(Frontend, FrontendSpec)>,
    /// Its ports without a local endpoint, by policy (see [`NoLocalEndpoints`]).
    pub no_local: NoLocalEndpoints,
    /// Its ports counted in `no_local` under either policy, each once.
    pub no_local_ports: usize,
    /// Its external frontends refused for safety, in port order.
    pub refusals: Vec<Refusal>,
    /// Addresses of its endpoints on this node.
    pub local_endpoints: BTreeSet<IpAddr>,
    /// Its health-check node port, when it has one.
    pub health_check: Option<(u16, HealthCheck)>,
}

/// The frontends of one Service, given its slices in slice-name order.
pub fn service_frontends(
    node: &NodeInfo,
    service: &Service,
    slices: &[&EndpointSlice],
) -> ServiceFrontends {
    let mut out = ServiceFrontends {
        frontends: Vec::with_capacity(service.cluster_ips.len() * service.ports.len()),
        ..ServiceFrontends::default()
    };
    let internal_local = service.internal_traffic_policy == TrafficPolicy::Local;
    let external_local =
        service.external_traffic_policy == TrafficPolicy::Local && service.externally_accessible();
    // kube-proxy's `LocalReadyEndpoints`: local Ready endpoints summed over
    // the Service's ports, within one family (each family's proxier has its
    // own endpoints map, and the shared health server gets one family's
    // count): the primary family's, that of the first cluster IP.
    let mut health_endpoints = 0usize;
    for port in &service.ports {
        let (mut lacks_internal, mut lacks_external) = (false, false);
        for (family_index, &addr) in service.cluster_ips.iter().enumerate() {
            let endpoints = candidates(service, port, AddressType::of(addr), slices, node);
            for ep in endpoints.iter().filter(|ep| ep.local) {
                out.local_endpoints.insert(ep.backend.addr);
                if ep.ready && family_index == 0 {
                    health_endpoints += 1;
                }
            }
            let categories = categorize(&endpoints, node);
            if categories.has_any && categories.local.is_empty() {
                lacks_internal |= internal_local;
                lacks_external |= external_local;
            }
            let spec = |kind, backends| FrontendSpec {
                service: service.id.clone(),
                port_name: port.name.clone(),
                kind,
                backends,
                external_backends: None,
                affinity_timeout: service.session_affinity,
                traffic_policy: service.internal_traffic_policy,
            };
            let backends = if internal_local {
                categories.local.clone()
            } else {
                categories.cluster.clone()
            };
            let frontend = Frontend {
                addr,
                port: port.port,
                protocol: port.protocol,
            };
            out.frontends
                .push((frontend, spec(FrontendKind::ClusterIp, backends)));
            for (kind, frontend) in external_frontends(node, service, port, addr) {
                if let Some(reason) = refusal(node, kind, frontend) {
                    out.refusals.push(Refusal {
                        service: service.id.clone(),
                        frontend,
                        kind,
                        reason,
                    });
                    continue;
                }
                let mut external = spec(kind, categories.cluster.clone());
                if external_local {
                    external.external_backends = Some(categories.local.clone());
                }
                out.frontends.push((frontend, external));
            }
        }
        out.no_local.internal += usize::from(lacks_internal);
        out.no_local.external += usize::from(lacks_external);
        out.no_local_ports += usize::from(lacks_internal || lacks_external);
    }
    if service.service_type == ServiceType::LoadBalancer
        && service.external_traffic_policy == TrafficPolicy::Local
        && let Some(port) = service.health_check_node_port
    {
        out.health_check = Some((
            port,
            HealthCheck {
                service: service.id.clone(),
                local_endpoints: health_endpoints,
            },
        ));
    }
    out
}

/// The external frontends of one Service port in the family of `cluster_ip`:
/// NodePorts on each nodeport address, then ExternalIPs, then LoadBalancer
/// ingress IPs.
fn external_frontends(
    node: &NodeInfo,
    service: &Service,
    port: &ServicePort,
    cluster_ip: IpAddr,
) -> Vec<(FrontendKind, Frontend)> {
    let family = AddressType::of(cluster_ip);
    let same_family = |ip: &&IpAddr| AddressType::of(**ip) == family;
    let at = |addr: IpAddr, port_number: u16| Frontend {
        addr,
        port: port_number,
        protocol: port.protocol,
    };
    let mut out = Vec::new();
    if matches!(
        service.service_type,
        ServiceType::NodePort | ServiceType::LoadBalancer
    ) && let Some(node_port) = port.node_port
    {
        for addr in node.nodeport_addresses.iter().filter(same_family) {
            out.push((FrontendKind::NodePort, at(*addr, node_port)));
        }
    }
    for addr in service.external_ips.iter().filter(same_family) {
        out.push((FrontendKind::ExternalIp, at(*addr, port.port)));
    }
    if service.service_type == ServiceType::LoadBalancer {
        for addr in service.load_balancer_ips.iter().filter(same_family) {
            out.push((FrontendKind::LoadBalancer, at(*addr, port.port)));
        }
    }
    out
}

/// Why an external frontend must not be programmed, if it must not.
fn refusal(node: &NodeInfo, kind: FrontendKind, frontend: Frontend) -> Option<RefusalReason> {
    if frontend.port == KUBELET_PORT {
        return Some(RefusalReason::KubeletPort);
    }
    if kind == FrontendKind::NodePort {
        // Node addresses by definition; the daemon never lists loopback ones.
        return None;
    }
    if frontend.addr.is_loopback() || frontend.addr.is_unspecified() {
        Some(RefusalReason::Loopback)
    } else if node.owns(frontend.addr) {
        Some(RefusalReason::NodeAddress)
    } else {
        None
    }
}

/// One endpoint of one Service port in one IP family, de-duplicated, with the
/// facts [`categorize`] needs (kube-proxy's `Endpoint` interface).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub backend: Backend,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// On this node.
    pub local: bool,
    pub zone_hints: &'a [String],
    pub node_hints: &'a [String],
}

/// The endpoints of one Service port in one family, in slice-name order, each
/// (address, target port) once. See the module docs for which copy wins.
fn candidates<'a>(
    service: &Service,
    port: &ServicePort,
    family: AddressType,
    slices: &[&'a EndpointSlice],
    node: &NodeInfo,
) -> Vec<Candidate<'a>> {
    let everything_ready = service.publish_not_ready_addresses;
    let mut position: HashMap<(IpAddr, u16), usize> = HashMap::new();
    let mut out = Vec::new();
    for slice in slices.iter().filter(|s| s.address_type == family) {
        let Some(target) = slice
            .ports
            .iter()
            .find(|p| p.name == port.name && p.protocol == port.protocol)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let candidate = Candidate {
                backend: Backend {
                    addr: ep.address,
                    port: target.port,
                    protocol: port.protocol,
                },
                ready: ep.ready || everything_ready,
                serving: ep.serving || everything_ready,
                terminating: ep.terminating,
                local: node.is_local(ep.node_name.as_deref()),
                zone_hints: &ep.zone_hints,
                node_hints: &ep.node_hints,
            };
            match position.entry((ep.address, target.port)) {
                hash_map::Entry::Vacant(v) => {
                    v.insert(out.len());
                    out.push(candidate);
                }
                hash_map::Entry::Occupied(o) => {
                    if candidate.local
                        && let Some(kept) = out.get_mut(*o.get())
                    {
                        *kept = candidate;
                    }
                }
            }
        }
    }
    out
}

/// Which hints restrict cluster endpoints (kube-proxy's `topologyMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopologyMode {
    /// No restriction: every Ready endpoint.
    None,
    /// Ready endpoints hinted for this node's zone.
    PreferSameZone,
    /// Ready endpoints hinted for this node.
    PreferSameNode,
}

/// kube-proxy's `topologyModeFromHints`: node hints apply when every Ready
/// endpoint has one and at least one names this node; otherwise zone hints,
/// under the same two conditions for this node's zone; otherwise none. Only
/// Ready endpoints are looked at, and without any there is no topology.
pub fn topology_mode(endpoints: &[Candidate<'_>], node: &NodeInfo) -> TopologyMode {
    let mut any_ready = false;
    let (mut all_node_hints, mut hint_for_node) = (true, false);
    let (mut all_zone_hints, mut hint_for_zone) = (true, false);
    for ep in endpoints.iter().filter(|ep| ep.ready) {
        any_ready = true;
        if ep.node_hints.is_empty() {
            all_node_hints = false;
        } else if !node.name.is_empty() && ep.node_hints.contains(&node.name) {
            hint_for_node = true;
        }
        if ep.zone_hints.is_empty() {
            all_zone_hints = false;
        } else if let Some(zone) = &node.zone
            && ep.zone_hints.contains(zone)
        {
            hint_for_zone = true;
        }
    }
    if !any_ready {
        TopologyMode::None
    } else if all_node_hints && hint_for_node {
        TopologyMode::PreferSameNode
    } else if all_zone_hints && hint_for_zone {
        TopologyMode::PreferSameZone
    } else {
        TopologyMode::None
    }
}

fn available_for_topology(ep: &Candidate<'_>, mode: TopologyMode, node: &NodeInfo) -> bool {
    match mode {
        TopologyMode::None => true,
        TopologyMode::PreferSameNode => ep.node_hints.contains(&node.name),
        TopologyMode::PreferSameZone => node
            .zone
            .as_ref()
            .is_some_and(|zone| ep.zone_hints.contains(zone)),
    }
}

/// The endpoints of one Service port, sorted into kube-proxy's categories.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Categories {
    /// For Cluster traffic policy: Ready endpoints passing the topology filter,
    /// else every Serving and Terminating endpoint. Sorted.
    pub cluster: Vec<Backend>,
    /// For Local traffic policy: local Ready endpoints, else local Serving and
    /// Terminating ones; topology does not apply. Sorted.
    pub local: Vec<Backend>,
    /// Some endpoint anywhere is usable (Ready, or Serving and Terminating).
    pub has_any: bool,
}

/// kube-proxy's `CategorizeEndpoints`, computing both categories whatever the
/// Service's policies (which of them a frontend uses is the caller's choice).
/// The cluster and local categories fall back to terminating endpoints
/// independently.
pub fn categorize(endpoints: &[Candidate<'_>], node: &NodeInfo) -> Categories {
    let serving_terminating = |ep: &Candidate<'_>| ep.serving && ep.terminating;
    let select = |keep: &dyn Fn(&Candidate<'_>) -> bool| {
        let mut chosen: Vec<Backend> = endpoints
            .iter()
            .filter(|ep| keep(ep))
            .map(|ep| ep.backend)
            .collect();
        chosen.sort_unstable();
        chosen
    };

    let mode = topology_mode(endpoints, node);
    let mut cluster = select(&|ep| ep.ready && available_for_topology(ep, mode, node));
    // Topology was already ignored if no Ready endpoint matched it, so an empty
    // list here means no Ready endpoint anywhere.
    if cluster.is_empty() {
        cluster = select(&serving_terminating);
    }

    let local = if endpoints.iter().any(|ep| ep.local && ep.ready) {
        select(&|ep| ep.local && ep.ready)
    } else {
        select(&|ep| ep.local && serving_terminating(ep))
    };

    let has_any = endpoints
        .iter()
        .any(|ep| ep.ready || serving_terminating(ep));
    Categories {
        cluster,
        local,
        has_any,
    }
}

/// Builders for model tests, shared by `desired` and `index` tests:
/// `svc("default", "web").cluster_ip("10.96.0.10").port("http", 80, Tcp)`,
/// `slice("default", "web-1").for_service("web").port("http", 8080, Tcp)
///     .endpoint("10.1.0.5").ready().on_node("n1").zone_hints(&["a"])`,
/// `node("n1").zone("a")`.
#[cfg(test)]
pub(crate) mod builders {
    use std::net::IpAddr;

    use crate::model::types::{
        AddressType, DesiredState, Endpoint, EndpointPort, EndpointSlice, NodeInfo, ObjectRef,
        Protocol, SelectionLabels, Service, ServicePort, ServiceType, TrafficPolicy,
    };

    pub(crate) fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("test IP {s:?}: {e}"))
    }

    pub(crate) fn node(name: &str) -> NodeBuilder {
        NodeBuilder(NodeInfo::named(name))
    }

    pub(crate) struct NodeBuilder(NodeInfo);

    impl NodeBuilder {
        pub(crate) fn zone(mut self, zone: &str) -> Self {
            self.0.zone = Some(zone.to_owned());
            self
        }
        /// An address from the Node object (`status.addresses`).
        pub(crate) fn address(mut self, addr: &str) -> Self {
            self.0.addresses.push(ip(addr));
            self
        }
        /// An address NodePorts are served on.
        pub(crate) fn nodeport_address(mut self, addr: &str) -> Self {
            self.0.nodeport_addresses.push(ip(addr));
            self
        }
    }

    impl From<NodeBuilder> for NodeInfo {
        fn from(b: NodeBuilder) -> Self {
            b.0
        }
    }

    pub(crate) fn svc(namespace: &str, name: &str) -> SvcBuilder {
        SvcBuilder(Service {
            id: ObjectRef::new(namespace, name),
            service_type: ServiceType::ClusterIp,
            cluster_ips: Vec::new(),
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            health_check_node_port: None,
            ports: Vec::new(),
            publish_not_ready_addresses: false,
            internal_traffic_policy: TrafficPolicy::Cluster,
            external_traffic_policy: TrafficPolicy::Cluster,
            session_affinity: None,
            traffic_distribution: None,
            labels: SelectionLabels::default(),
        })
    }

    pub(crate) struct SvcBuilder(Service);

    impl SvcBuilder {
        pub(crate) fn cluster_ip(mut self, addr: &str) -> Self {
            self.0.cluster_ips.push(ip(addr));
            self
        }
        pub(crate) fn port(mut self, name: &str, port: u16, protocol: Protocol) -> Self {
            self.0.ports.push(ServicePort {
                name: name.to_owned(),
                port,
                protocol,
                node_port: None,
            });
            self
        }
        /// Gives the last port added a `nodePort`.
        pub(crate) fn node_port(mut self, node_port: u16) -> Self {
            if let Some(last) = self.0.ports.last_mut() {
                last.node_port = Some(node_port);
            }
            self
        }
        pub(crate) fn external_ip(mut self, addr: &str) -> Self {
            self.0.external_ips.push(ip(addr));
            self
        }
        pub(crate) fn lb_ip(mut self, addr: &str) -> Self {
            self.0.load_balancer_ips.push(ip(addr));
            self
        }
        pub(crate) fn health_check_node_port(mut self, port: u16) -> Self {
            self.0.health_check_node_port = Some(port);
            self
        }
        pub(crate) fn publish_not_ready(mut self) -> Self {
            self.0.publish_not_ready_addresses = true;
            self
        }
        pub(crate) fn internal_policy(mut self, policy: TrafficPolicy) -> Self {
            self.0.internal_traffic_policy = policy;
            self
        }
        pub(crate) fn external_policy(mut self, policy: TrafficPolicy) -> Self {
            self.0.external_traffic_policy = policy;
            self
        }
        pub(crate) fn service_type(mut self, service_type: ServiceType) -> Self {
            self.0.service_type = service_type;
            self
        }
        pub(crate) fn affinity(mut self, timeout: u32) -> Self {
            self.0.session_affinity = Some(timeout);
            self
        }
        pub(crate) fn proxy_name_label(mut self, name: &str) -> Self {
            self.0.labels.service_proxy_name = Some(name.to_owned());
            self
        }
    }

    impl From<SvcBuilder> for Service {
        fn from(b: SvcBuilder) -> Self {
            b.0
        }
    }

    pub(crate) fn slice(namespace: &str, name: &str) -> SliceBuilder {
        SliceBuilder {
            slice: EndpointSlice {
                id: ObjectRef::new(namespace, name),
                service_name: String::new(),
                labels: SelectionLabels::default(),
                address_type: AddressType::IPv4,
                ports: Vec::new(),
                endpoints: Vec::new(),
            },
            address_type_set: false,
        }
    }

    pub(crate) struct SliceBuilder {
        slice: EndpointSlice,
        address_type_set: bool,
    }

    impl SliceBuilder {
        pub(crate) fn for_service(mut self, name: &str) -> Self {
            self.slice.service_name = name.to_owned();
            self
        }
        pub(crate) fn port(mut self, name: &str, port: u16, protocol: Protocol) -> Self {
            self.slice.ports.push(EndpointPort {
                name: name.to_owned(),
                port,
                protocol,
            });
            self
        }
        pub(crate) fn proxy_name_label(mut self, name: &str) -> Self {
            self.slice.labels.service_proxy_name = Some(name.to_owned());
            self
        }
        pub(crate) fn headless_label(mut self) -> Self {
            self.slice.labels.headless = true;
            self
        }
        /// Adds an endpoint with the API's defaults (Ready, Serving, not
        /// Terminating). The slice's address type follows its first endpoint.
        pub(crate) fn endpoint(mut self, addr: &str) -> Self {
            let address = ip(addr);
            if !self.address_type_set {
                self.slice.address_type = AddressType::of(address);
                self.address_type_set = true;
            }
            self.slice.endpoints.push(Endpoint {
                address,
                ready: true,
                serving: true,
                terminating: false,
                node_name: None,
                zone: None,
                zone_hints: Vec::new(),
                node_hints: Vec::new(),
            });
            self
        }
        fn last(&mut self) -> Option<&mut Endpoint> {
            self.slice.endpoints.last_mut()
        }
        fn conditions(&mut self, ready: bool, serving: bool, terminating: bool) {
            if let Some(ep) = self.last() {
                ep.ready = ready;
                ep.serving = serving;
                ep.terminating = terminating;
            }
        }
        /// The last endpoint is Ready.
        pub(crate) fn ready(mut self) -> Self {
            self.conditions(true, true, false);
            self
        }
        /// The last endpoint is neither Ready nor Serving (starting up).
        pub(crate) fn not_ready(mut self) -> Self {
            self.conditions(false, false, false);
            self
        }
        /// The last endpoint is Terminating but still Serving.
        pub(crate) fn serving_terminating(mut self) -> Self {
            self.conditions(false, true, true);
            self
        }
        /// The last endpoint is Terminating and no longer Serving.
        pub(crate) fn terminating_not_serving(mut self) -> Self {
            self.conditions(false, false, true);
            self
        }
        /// The last endpoint runs on `node`.
        pub(crate) fn on_node(mut self, node: &str) -> Self {
            if let Some(ep) = self.last() {
                ep.node_name = Some(node.to_owned());
            }
            self
        }
        /// The last endpoint's zone hints.
        pub(crate) fn zone_hints(mut self, zones: &[&str]) -> Self {
            if let Some(ep) = self.last() {
                ep.zone_hints = zones.iter().map(|z| (*z).to_owned()).collect();
            }
            self
        }
        /// The last endpoint's node hints.
        pub(crate) fn node_hints(mut self, nodes: &[&str]) -> Self {
            if let Some(ep) = self.last() {
                ep.node_hints = nodes.iter().map(|n| (*n).to_owned()).collect();
            }
            self
        }
    }

    impl From<SliceBuilder> for EndpointSlice {
        fn from(b: SliceBuilder) -> Self {
            b.slice
        }
    }

    /// The backends of the frontend written as `10.96.0.10:80/TCP`, as strings;
    /// `None` when the frontend does not exist.
    pub(crate) fn backends_of(state: &DesiredState, frontend: &str) -> Option<Vec<String>> {
        state
            .frontends
            .iter()
            .find(|(f, _)| f.to_string() == frontend)
            .map(|(_, spec)| spec.backends.iter().map(ToString::to_string).collect())
    }

    /// Every frontend, as strings, sorted.
    pub(crate) fn frontends_of(state: &DesiredState) -> Vec<String> {
        state.frontends.keys().map(ToString::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::{builders::*, *};
    use crate::model::types::{
        Protocol,
        Protocol::{Tcp, Udp},
        ServiceType,
        TrafficPolicy::{Cluster, Local},
    };

    /// Runs [`desired`] over services and slices joined the way the Index joins
    /// them, on node `host` with no zone.
    fn compute(services: Vec<SvcBuilder>, slices: Vec<SliceBuilder>) -> DesiredOutcome {
        compute_on(node(HOST).into(), services, slices)
    }

    const HOST: &str = "host";

    fn compute_on(
        node: NodeInfo,
        services: Vec<SvcBuilder>,
        slices: Vec<SliceBuilder>,
    ) -> DesiredOutcome {
        let services: Vec<Service> = services.into_iter().map(Into::into).collect();
        let mut slices: Vec<EndpointSlice> = slices.into_iter().map(Into::into).collect();
        slices.sort_by(|a, b| a.id.cmp(&b.id));
        desired(
            &node,
            services.iter().map(|s| {
                let mine: Vec<&EndpointSlice> = slices
                    .iter()
                    .filter(|sl| sl.id.namespace == s.id.namespace && sl.service_name == s.id.name)
                    .collect();
                (s, mine)
            }),
        )
    }

    fn backends(outcome: &DesiredOutcome, frontend: &str) -> Vec<String> {
        backends_of(&outcome.state, frontend).unwrap_or_else(|| {
            panic!(
                "no frontend {frontend} in {:?}",
                frontends_of(&outcome.state)
            )
        })
    }

    #[test]
    fn one_port_one_endpoint() {
        let out = compute(
            vec![
                svc("default", "web")
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp),
            ],
            vec![
                slice("default", "web-1")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("10.1.0.5")
                    .ready(),
            ],
        );
        assert_eq!(backends(&out, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
        let spec = out.state.frontends.values().next().expect("one frontend");
        assert_eq!(spec.service, ObjectRef::new("default", "web"));
        assert_eq!(spec.port_name, "http");
        assert!(out.conflicts.is_empty());
    }

    /// Each Service port takes the slice port with the same name and protocol.
    #[rstest]
    #[case::same_name_and_protocol("http", Tcp, "http", Tcp, &["10.1.0.5:8080"])]
    #[case::unnamed_single_port("", Tcp, "", Tcp, &["10.1.0.5:8080"])]
    #[case::other_name("http", Tcp, "metrics", Tcp, &[])]
    #[case::other_protocol("dns", Udp, "dns", Tcp, &[])]
    #[case::named_vs_unnamed("", Tcp, "http", Tcp, &[])]
    fn port_matching_by_name_and_protocol(
        #[case] svc_port: &str,
        #[case] svc_proto: Protocol,
        #[case] slice_port: &str,
        #[case] slice_proto: Protocol,
        #[case] want: &[&str],
    ) {
        let out = compute(
            vec![
                svc("default", "web")
                    .cluster_ip("10.96.0.10")
                    .port(svc_port, 80, svc_proto),
            ],
            vec![
                slice("default", "web-1")
                    .for_service("web")
                    .port(slice_port, 8080, slice_proto)
                    .endpoint("10.1.0.5"),
            ],
        );
        assert_eq!(backends(&out, &format!("10.96.0.10:80/{svc_proto}")), want);
    }

    #[test]
    fn same_port_number_with_tcp_and_udp() {
        let out = compute(
            vec![
                svc("kube-system", "dns")
                    .cluster_ip("10.96.0.53")
                    .port("dns", 53, Udp)
                    .port("dns-tcp", 53, Tcp),
            ],
            vec![
                slice("kube-system", "dns-1")
                    .for_service("dns")
                    .port("dns", 5353, Udp)
                    .port("dns-tcp", 5354, Tcp)
                    .endpoint("10.1.0.7"),
            ],
        );
        assert_eq!(backends(&out, "10.96.0.53:53/UDP"), ["10.1.0.7:5353"]);
        assert_eq!(backends(&out, "10.96.0.53:53/TCP"), ["10.1.0.7:5354"]);
    }

    #[test]
    fn multiport_across_slices() {
        let out = compute(
            vec![
                svc("default", "web")
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp)
                    .port("https", 443, Tcp),
            ],
            vec![
                slice("default", "web-a")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("10.1.0.5"),
                slice("default", "web-b")
                    .for_service("web")
                    .port("https", 8443, Tcp)
                    .endpoint("10.1.0.6"),
            ],
        );
        assert_eq!(backends(&out, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
        assert_eq!(backends(&out, "10.96.0.10:443/TCP"), ["10.1.0.6:8443"]);
    }

    #[test]
    fn slices_merged_and_deduplicated() {
        let out = compute(
            vec![
                svc("default", "web")
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp),
            ],
            vec![
                slice("default", "web-b")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("10.1.0.7")
                    .endpoint("10.1.0.5"),
                slice("default", "web-a")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("10.1.0.5")
                    .endpoint("10.1.0.6"),
            ],
        );
        assert_eq!(
            backends(&out, "10.96.0.10:80/TCP"),
            ["10.1.0.5:8080", "10.1.0.6:8080", "10.1.0.7:8080"]
        );
    }

    /// An endpoint listed twice counts once, with the conditions of the first
    /// slice by name (kube-proxy's rule), here not ready.
    #[test]
    fn duplicate_endpoint_first_slice_wins() {
        let out = compute(
            vec![
                svc("default", "web")
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp),
            ],
            vec![
                slice("default", "web-a")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("10.1.0.5")
                    .not_ready()
                    .endpoint("10.1.0.6"),
                slice("default", "web-b")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("10.1.0.5")
                    .ready(),
            ],
        );
        assert_eq!(backends(&out, "10.96.0.10:80/TCP"), ["10.1.0.6:8080"]);
    }

    #[test]
    fn slices_of_other_services_and_namespaces_ignored() {
        let out = compute(
            vec![
                svc("default", "web")
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp),
            ],
            vec![
                slice("default", "api-1")
                    .for_service("api")
                    .port("http", 8080, Tcp)
                    .endpoint("10.1.0.8"),
                slice("other", "web-1")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("10.1.0.9"),
            ],
        );
        assert_eq!(backends(&out, "10.96.0.10:80/TCP"), Vec::<String>::new());
    }

    #[test]
    fn ip_families_kept_apart() {
        let out = compute(
            vec![
                svc("default", "web")
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp),
            ],
            vec![
                slice("default", "web-v4")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("10.1.0.5"),
                slice("default", "web-v6")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("fd00::5"),
            ],
        );
        assert_eq!(frontends_of(&out.state), ["10.96.0.10:80/TCP"]);
        assert_eq!(backends(&out, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
    }

    #[test]
    fn dual_stack_service() {
        let out = compute(
            vec![
                svc("default", "web")
                    .cluster_ip("10.96.0.10")
                    .cluster_ip("fd00:96::10")
                    .port("http", 80, Tcp),
            ],
            vec![
                slice("default", "web-v4")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("10.1.0.5"),
                slice("default", "web-v6")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("fd00::5"),
            ],
        );
        assert_eq!(
            frontends_of(&out.state),
            ["10.96.0.10:80/TCP", "[fd00:96::10]:80/TCP"]
        );
        assert_eq!(backends(&out, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
        assert_eq!(backends(&out, "[fd00:96::10]:80/TCP"), ["[fd00::5]:8080"]);
    }

    /// Endpoint choice for cluster traffic. Each case lists the endpoints'
    /// states (a = 10.1.0.1, b = 10.1.0.2, ...) and the backends expected.
    #[rstest]
    #[case::ready_only_used(&["ready", "not_ready"], false, &["10.1.0.1:8080"])]
    #[case::none_ready_means_none(&["not_ready"], false, &[])]
    #[case::terminating_ignored_while_any_ready(
        &["ready", "serving_terminating"],
        false,
        &["10.1.0.1:8080"]
    )]
    #[case::fallback_to_serving_terminating(
        &["not_ready", "serving_terminating", "serving_terminating"],
        false,
        &["10.1.0.2:8080", "10.1.0.3:8080"]
    )]
    #[case::terminating_not_serving_never(&["terminating_not_serving"], false, &[])]
    #[case::publish_not_ready_uses_all(
        &["not_ready", "terminating_not_serving"],
        true,
        &["10.1.0.1:8080", "10.1.0.2:8080"]
    )]
    fn endpoint_choice(
        #[case] states: &[&str],
        #[case] publish_not_ready: bool,
        #[case] want: &[&str],
    ) {
        let mut service = svc("default", "web")
            .cluster_ip("10.96.0.10")
            .port("http", 80, Tcp);
        if publish_not_ready {
            service = service.publish_not_ready();
        }
        let mut sl = slice("default", "web-1")
            .for_service("web")
            .port("http", 8080, Tcp);
        for (i, state) in states.iter().enumerate() {
            sl = sl.endpoint(&format!("10.1.0.{}", i + 1));
            sl = match *state {
                "ready" => sl.ready(),
                "not_ready" => sl.not_ready(),
                "serving_terminating" => sl.serving_terminating(),
                "terminating_not_serving" => sl.terminating_not_serving(),
                other => panic!("unknown endpoint state {other}"),
            };
        }
        let out = compute(vec![service], vec![sl]);
        assert_eq!(backends(&out, "10.96.0.10:80/TCP"), want);
    }

    #[test]
    fn no_endpoints_still_yields_frontends() {
        let out = compute(
            vec![
                svc("default", "web")
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp)
                    .port("dns", 53, Udp),
            ],
            vec![],
        );
        assert_eq!(
            frontends_of(&out.state),
            ["10.96.0.10:53/UDP", "10.96.0.10:80/TCP"]
        );
        assert!(out.state.frontends.values().all(|s| s.backends.is_empty()));
    }

    #[test]
    fn conflict_lowest_object_ref_wins_in_any_order() {
        let services = || {
            vec![
                svc("team-b", "web")
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp),
                svc("team-a", "web")
                    .cluster_ip("10.96.0.10")
                    .port("web", 80, Tcp)
                    .port("other", 81, Tcp),
                svc("team-a", "zzz")
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp),
            ]
        };
        let forward = compute(services(), vec![]);
        let mut reversed_input = services();
        reversed_input.reverse();
        let backward = compute(reversed_input, vec![]);
        assert_eq!(forward, backward);

        let spec = forward
            .state
            .frontends
            .values()
            .next()
            .expect("frontend 80");
        assert_eq!(spec.service, ObjectRef::new("team-a", "web"));
        assert_eq!(spec.port_name, "web");
        assert_eq!(forward.conflicts.len(), 1);
        let conflict = &forward.conflicts[0];
        assert_eq!(conflict.winner, ObjectRef::new("team-a", "web"));
        assert_eq!(
            conflict.losers,
            [
                ObjectRef::new("team-a", "zzz"),
                ObjectRef::new("team-b", "web")
            ]
        );
        assert_eq!(
            conflict.to_string(),
            "frontend 10.96.0.10:80/TCP is claimed by several Services: using Service team-a/web, \
             ignoring Service team-a/zzz, Service team-b/web"
        );
        // The unshared port of the winner is unaffected.
        assert_eq!(
            frontends_of(&forward.state),
            ["10.96.0.10:80/TCP", "10.96.0.10:81/TCP"]
        );
    }

    #[test]
    fn same_port_different_protocols_is_no_conflict() {
        let out = compute(
            vec![
                svc("default", "a")
                    .cluster_ip("10.96.0.10")
                    .port("", 53, Udp),
                svc("default", "b")
                    .cluster_ip("10.96.0.10")
                    .port("", 53, Tcp),
            ],
            vec![],
        );
        assert!(out.conflicts.is_empty());
        assert_eq!(out.state.frontends.len(), 2);
    }

    // ---- CategorizeEndpoints, ported from kube-proxy's topology_test.go ----

    /// An endpoint written as `"10.1.2.3:80 ready zones=zone-a"`; flags:
    /// `ready`, `serving`, `terminating`, `local`, `zones=a,b`, `nodes=n1,n2`.
    /// As in kube-proxy's `BaseEndpointInfo`, an absent flag is false.
    struct Ep {
        backend: Backend,
        ready: bool,
        serving: bool,
        terminating: bool,
        local: bool,
        zone_hints: Vec<String>,
        node_hints: Vec<String>,
    }

    fn ep(spec: &str) -> Ep {
        let mut words = spec.split_whitespace();
        let addr = words.next().unwrap_or_default();
        let sock: std::net::SocketAddr = addr
            .parse()
            .unwrap_or_else(|e| panic!("endpoint {addr:?}: {e}"));
        let mut ep = Ep {
            backend: Backend {
                addr: sock.ip(),
                port: sock.port(),
                protocol: Tcp,
            },
            ready: false,
            serving: false,
            terminating: false,
            local: false,
            zone_hints: Vec::new(),
            node_hints: Vec::new(),
        };
        let list = |v: &str| v.split(',').map(str::to_owned).collect::<Vec<_>>();
        for word in words {
            match word.split_once('=') {
                None if word == "ready" => ep.ready = true,
                None if word == "serving" => ep.serving = true,
                None if word == "terminating" => ep.terminating = true,
                None if word == "local" => ep.local = true,
                Some(("zones", v)) => ep.zone_hints = list(v),
                Some(("nodes", v)) => ep.node_hints = list(v),
                _ => panic!("unknown endpoint flag {word:?} in {spec:?}"),
            }
        }
        ep
    }

    fn categorize_specs(specs: &[&str], node: &NodeInfo) -> Categories {
        let eps: Vec<Ep> = specs.iter().map(|s| ep(s)).collect();
        let candidates: Vec<Candidate<'_>> = eps
            .iter()
            .map(|e| Candidate {
                backend: e.backend,
                ready: e.ready,
                serving: e.serving,
                terminating: e.terminating,
                local: e.local,
                zone_hints: &e.zone_hints,
                node_hints: &e.node_hints,
            })
            .collect();
        categorize(&candidates, node)
    }

    fn strings(backends: &[Backend]) -> Vec<String> {
        backends
            .iter()
            .map(|b| format!("{}:{}", b.addr, b.port))
            .collect()
    }

    fn sorted(want: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
        v.sort();
        v
    }

    /// kube-proxy's TestCategorizeEndpoints, case for case (names kept). Its
    /// `nil` expectations, for a category the Service never uses, are `None`
    /// here and not checked: this port computes both categories always. `has_any`
    /// is its `len(allEndpoints) > 0 || onlyRemoteEndpoints`.
    #[rstest]
    #[case::should_use_topology_since_all_endpoints_have_hints_node_has_a_zone_label_and_there_are_endpoints_for_the_nodes_zone(
        Some("zone-a"),
        &["10.1.2.3:80 ready zones=zone-a", "10.1.2.4:80 ready zones=zone-b",
          "10.1.2.5:80 ready zones=zone-c", "10.1.2.6:80 ready zones=zone-a"],
        Some(&["10.1.2.3:80", "10.1.2.6:80"][..]), None, true
    )]
    #[case::external_traffic_policy_local_topology_ignored_for_local_endpoints(
        Some("zone-a"),
        &["10.1.2.3:80 ready local zones=zone-a", "10.1.2.4:80 ready local zones=zone-b",
          "10.1.2.5:80 ready zones=zone-c", "10.1.2.6:80 ready zones=zone-a"],
        Some(&["10.1.2.3:80", "10.1.2.6:80"][..]), Some(&["10.1.2.3:80", "10.1.2.4:80"][..]), true
    )]
    #[case::internal_traffic_policy_local_topology_ignored_for_local_endpoints(
        Some("zone-a"),
        &["10.1.2.3:80 ready local zones=zone-a", "10.1.2.4:80 ready local zones=zone-b",
          "10.1.2.5:80 ready zones=zone-c", "10.1.2.6:80 ready zones=zone-a"],
        Some(&["10.1.2.3:80", "10.1.2.6:80"][..]), Some(&["10.1.2.3:80", "10.1.2.4:80"][..]), true
    )]
    #[case::empty_node_labels(
        None,
        &["10.1.2.3:80 ready zones=zone-a"],
        Some(&["10.1.2.3:80"][..]), None, true
    )]
    #[case::empty_zone_label(
        Some(""),
        &["10.1.2.3:80 ready zones=zone-a"],
        Some(&["10.1.2.3:80"][..]), None, true
    )]
    #[case::node_in_different_zone_no_endpoint_filtering(
        Some("zone-b"),
        &["10.1.2.3:80 ready zones=zone-a"],
        Some(&["10.1.2.3:80"][..]), None, true
    )]
    #[case::unready_endpoint(
        Some("zone-a"),
        &["10.1.2.3:80 ready zones=zone-a", "10.1.2.4:80 ready zones=zone-b",
          "10.1.2.5:80 ready zones=zone-c", "10.1.2.6:80 zones=zone-a"],
        Some(&["10.1.2.3:80"][..]), None, true
    )]
    #[case::only_unready_endpoints_in_same_zone_should_not_filter(
        Some("zone-a"),
        &["10.1.2.3:80 zones=zone-a", "10.1.2.4:80 ready zones=zone-b",
          "10.1.2.5:80 ready zones=zone-c", "10.1.2.6:80 zones=zone-a"],
        Some(&["10.1.2.4:80", "10.1.2.5:80"][..]), None, true
    )]
    #[case::missing_hints_no_filtering_applied(
        Some("zone-a"),
        &["10.1.2.3:80 ready zones=zone-a", "10.1.2.4:80 ready zones=zone-b",
          "10.1.2.5:80 ready", "10.1.2.6:80 ready zones=zone-a"],
        Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.5:80", "10.1.2.6:80"][..]), None, true
    )]
    #[case::multiple_hints_per_endpoint_filtering_includes_any_endpoint_with_zone_included(
        Some("zone-c"),
        &["10.1.2.3:80 ready zones=zone-a,zone-b,zone-c", "10.1.2.4:80 ready zones=zone-b,zone-c",
          "10.1.2.5:80 ready zones=zone-b,zone-d", "10.1.2.6:80 ready zones=zone-c"],
        Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"][..]), None, true
    )]
    #[case::conflicting_topology_and_localness_require_merging_all_endpoints(
        Some("zone-a"),
        &["10.0.0.0:80 ready local zones=zone-a", "10.0.0.1:80 ready local zones=zone-b",
          "10.0.0.2:80 ready zones=zone-a", "10.0.0.3:80 ready zones=zone-b"],
        Some(&["10.0.0.0:80", "10.0.0.2:80"][..]), Some(&["10.0.0.0:80", "10.0.0.1:80"][..]), true
    )]
    #[case::internal_traffic_policy_local_with_empty_endpoints(
        None, &[], None, Some(&[][..]), false
    )]
    #[case::internal_traffic_policy_local_but_all_endpoints_are_remote(
        None,
        &["10.0.0.0:80 ready", "10.0.0.1:80 ready"],
        None, Some(&[][..]), true
    )]
    #[case::internal_traffic_policy_local_all_endpoints_are_local(
        None,
        &["10.0.0.0:80 ready local", "10.0.0.1:80 ready local"],
        None, Some(&["10.0.0.0:80", "10.0.0.1:80"][..]), true
    )]
    #[case::internal_traffic_policy_local_some_endpoints_are_local(
        None,
        &["10.0.0.0:80 ready local", "10.0.0.1:80 ready"],
        None, Some(&["10.0.0.0:80"][..]), true
    )]
    #[case::cluster_traffic_policy_endpoints_not_ready(
        None,
        &["10.0.0.0:80", "10.0.0.1:80"],
        Some(&[][..]), None, false
    )]
    #[case::cluster_traffic_policy_some_endpoints_are_ready(
        None,
        &["10.0.0.0:80", "10.0.0.1:80 ready"],
        Some(&["10.0.0.1:80"][..]), None, true
    )]
    #[case::cluster_traffic_policy_all_endpoints_are_terminating(
        None,
        &["10.0.0.0:80 serving terminating local", "10.0.0.1:80 serving terminating"],
        Some(&["10.0.0.0:80", "10.0.0.1:80"][..]), None, true
    )]
    #[case::itp_local_etp_cluster_some_endpoints_local(
        None,
        &["10.0.0.0:80 ready local", "10.0.0.1:80 ready"],
        Some(&["10.0.0.0:80", "10.0.0.1:80"][..]), Some(&["10.0.0.0:80"][..]), true
    )]
    #[case::itp_cluster_etp_local_some_endpoints_local(
        None,
        &["10.0.0.0:80 ready local", "10.0.0.1:80 ready"],
        Some(&["10.0.0.0:80", "10.0.0.1:80"][..]), Some(&["10.0.0.0:80"][..]), true
    )]
    #[case::itp_local_etp_local_some_endpoints_local(
        None,
        &["10.0.0.0:80 ready local", "10.0.0.1:80 ready"],
        Some(&["10.0.0.0:80", "10.0.0.1:80"][..]), Some(&["10.0.0.0:80"][..]), true
    )]
    #[case::itp_local_etp_local_all_endpoints_remote(
        None,
        &["10.0.0.0:80 ready", "10.0.0.1:80 ready"],
        Some(&["10.0.0.0:80", "10.0.0.1:80"][..]), Some(&[][..]), true
    )]
    #[case::itp_local_etp_local_all_endpoints_remote_and_terminating(
        None,
        &["10.0.0.0:80 serving terminating", "10.0.0.1:80 serving terminating"],
        Some(&["10.0.0.0:80", "10.0.0.1:80"][..]), Some(&[][..]), true
    )]
    #[case::itp_cluster_etp_local_with_terminating_endpoints(
        None,
        &["10.0.0.0:80 ready", "10.0.0.1:80 local",
          "10.0.0.2:80 serving terminating local", "10.0.0.3:80 serving terminating"],
        Some(&["10.0.0.0:80"][..]), Some(&["10.0.0.2:80"][..]), true
    )]
    #[case::external_traffic_policy_ignored_if_not_externally_accessible(
        None,
        &["10.0.0.0:80 ready", "10.0.0.1:80 ready local"],
        Some(&["10.0.0.0:80", "10.0.0.1:80"][..]), None, true
    )]
    #[case::no_cluster_endpoints_for_itp_local_internal_only_service(
        None,
        &["10.0.0.0:80 ready", "10.0.0.1:80 ready local"],
        None, Some(&["10.0.0.1:80"][..]), true
    )]
    // Node hints (PreferSameNode), from topologyModeFromHints: not in the
    // ported table, which predates them.
    #[case::prefer_same_node_all_ready_have_node_hints_one_for_this_node(
        Some("zone-a"),
        &["10.1.2.3:80 ready nodes=host zones=zone-a", "10.1.2.4:80 ready nodes=host-2 zones=zone-a",
          "10.1.2.5:80 ready nodes=host-3 zones=zone-b"],
        Some(&["10.1.2.3:80"][..]), None, true
    )]
    #[case::node_hints_not_for_this_node_fall_back_to_zone_hints(
        Some("zone-b"),
        &["10.1.2.3:80 ready nodes=host-1 zones=zone-a", "10.1.2.4:80 ready nodes=host-2 zones=zone-b",
          "10.1.2.5:80 ready nodes=host-3 zones=zone-b"],
        Some(&["10.1.2.4:80", "10.1.2.5:80"][..]), None, true
    )]
    #[case::a_ready_endpoint_without_node_hint_falls_back_to_zone_hints(
        Some("zone-a"),
        &["10.1.2.3:80 ready nodes=host zones=zone-a", "10.1.2.4:80 ready zones=zone-a",
          "10.1.2.5:80 ready nodes=host-3 zones=zone-b"],
        Some(&["10.1.2.3:80", "10.1.2.4:80"][..]), None, true
    )]
    #[case::unready_endpoints_need_no_node_hint(
        None,
        &["10.1.2.3:80 ready nodes=host", "10.1.2.4:80 ready nodes=host-2", "10.1.2.5:80"],
        Some(&["10.1.2.3:80"][..]), None, true
    )]
    #[case::only_an_unready_endpoint_hinted_for_this_node(
        None,
        &["10.1.2.3:80 nodes=host", "10.1.2.4:80 ready nodes=host-2"],
        Some(&["10.1.2.4:80"][..]), None, true
    )]
    #[case::node_hints_and_terminating_fallback_ignores_topology(
        None,
        &["10.1.2.3:80 serving terminating nodes=host-2", "10.1.2.4:80 serving terminating nodes=host-3"],
        Some(&["10.1.2.3:80", "10.1.2.4:80"][..]), None, true
    )]
    fn categorize_endpoints(
        #[case] zone: Option<&str>,
        #[case] endpoints: &[&str],
        #[case] cluster: Option<&[&str]>,
        #[case] local: Option<&[&str]>,
        #[case] has_any: bool,
    ) {
        let mut node: NodeInfo = node(HOST).into();
        node.zone = zone.map(str::to_owned);
        let got = categorize_specs(endpoints, &node);
        if let Some(cluster) = cluster {
            assert_eq!(strings(&got.cluster), sorted(cluster), "cluster endpoints");
        }
        if let Some(local) = local {
            assert_eq!(strings(&got.local), sorted(local), "local endpoints");
        }
        assert_eq!(got.has_any, has_any, "has any endpoints");
    }

    #[rstest]
    #[case::no_ready_endpoints(None, &["10.0.0.1:80 zones=zone-a"], TopologyMode::None)]
    #[case::zone(Some("zone-a"), &["10.0.0.1:80 ready zones=zone-a"], TopologyMode::PreferSameZone)]
    #[case::node(None, &["10.0.0.1:80 ready nodes=host"], TopologyMode::PreferSameNode)]
    #[case::node_before_zone(
        Some("zone-a"),
        &["10.0.0.1:80 ready nodes=host zones=zone-a"],
        TopologyMode::PreferSameNode
    )]
    #[case::no_zone_label(None, &["10.0.0.1:80 ready zones=zone-a"], TopologyMode::None)]
    fn topology_modes(
        #[case] zone: Option<&str>,
        #[case] endpoints: &[&str],
        #[case] want: TopologyMode,
    ) {
        let mut node: NodeInfo = node(HOST).into();
        node.zone = zone.map(str::to_owned);
        let eps: Vec<Ep> = endpoints.iter().map(|s| ep(s)).collect();
        let candidates: Vec<Candidate<'_>> = eps
            .iter()
            .map(|e| Candidate {
                backend: e.backend,
                ready: e.ready,
                serving: e.serving,
                terminating: e.terminating,
                local: e.local,
                zone_hints: &e.zone_hints,
                node_hints: &e.node_hints,
            })
            .collect();
        assert_eq!(topology_mode(&candidates, &node), want);
    }

    /// A node with no name: nothing is local, and node hints naming "" (which
    /// the API forbids) never match.
    #[test]
    fn unnamed_node_has_no_local_endpoints() {
        let node = NodeInfo::default();
        assert!(!node.is_local(Some("")));
        assert!(!node.is_local(None));
        let got = categorize_specs(&["10.0.0.1:80 ready nodes="], &node);
        assert_eq!(strings(&got.cluster), ["10.0.0.1:80"]);
    }

    // ---- Traffic policies through the whole desired state ----

    /// Endpoints as `"10.0.1.1 <state> <node>"`, state one of `ready`,
    /// `not_ready`, `serving_terminating`, `terminating_not_serving`, on the
    /// Service `web` (172.30.1.1:80 → 80).
    fn policy_case(
        itp: TrafficPolicy,
        endpoints: &[&str],
        tweak: impl FnOnce(SvcBuilder) -> SvcBuilder,
    ) -> DesiredOutcome {
        let service = tweak(
            svc("ns1", "svc1")
                .cluster_ip("172.30.1.1")
                .port("p80", 80, Tcp)
                .internal_policy(itp),
        );
        let mut sl = slice("ns1", "svc1-abc")
            .for_service("svc1")
            .port("p80", 80, Tcp);
        for spec in endpoints {
            let words: Vec<&str> = spec.split_whitespace().collect();
            let [addr, state, on] = words[..] else {
                panic!("endpoint spec {spec:?}")
            };
            sl = sl.endpoint(addr).on_node(on);
            sl = match state {
                "ready" => sl.ready(),
                "not_ready" => sl.not_ready(),
                "serving_terminating" => sl.serving_terminating(),
                "terminating_not_serving" => sl.terminating_not_serving(),
                other => panic!("unknown endpoint state {other}"),
            };
        }
        compute(vec![service], vec![sl])
    }

    /// The iptables proxier's TestInternalTrafficPolicy: traffic to the
    /// ClusterIP. Its "no local endpoints" case expects DROP; here the frontend
    /// has no backends (refused, see the module docs) and is counted.
    #[rstest]
    #[case::internal_traffic_policy_is_cluster(
        Cluster,
        &["10.0.1.1 ready host", "10.0.1.2 ready host1", "10.0.1.3 ready host2"],
        &["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"],
        0
    )]
    #[case::internal_traffic_policy_is_local_and_there_is_one_local_endpoint(
        Local,
        &["10.0.1.1 ready host", "10.0.1.2 ready host1", "10.0.1.3 ready host2"],
        &["10.0.1.1:80"],
        0
    )]
    #[case::internal_traffic_policy_is_local_and_there_are_multiple_local_endpoints(
        Local,
        &["10.0.1.1 ready host", "10.0.1.2 ready host", "10.0.1.3 ready host2"],
        &["10.0.1.1:80", "10.0.1.2:80"],
        0
    )]
    #[case::internal_traffic_policy_is_local_and_there_are_no_local_endpoints(
        Local,
        &["10.0.1.1 ready host0", "10.0.1.2 ready host1", "10.0.1.3 ready host2"],
        &[],
        1
    )]
    fn internal_traffic_policy(
        #[case] itp: TrafficPolicy,
        #[case] endpoints: &[&str],
        #[case] want: &[&str],
        #[case] no_local: usize,
    ) {
        let out = policy_case(itp, endpoints, |s| s);
        assert_eq!(backends(&out, "172.30.1.1:80/TCP"), want);
        assert_eq!(out.no_local_endpoints, no_local);
        assert_eq!(out.no_local_endpoints_by_policy.internal, no_local);
        assert_eq!(out.no_local_endpoints_by_policy.external, 0);
    }

    /// The iptables proxier's terminating-endpoint tests
    /// (TestEndpointSliceWithTerminatingEndpointsTrafficPolicyLocal and
    /// ...Cluster), seen from a frontend with each internal policy: what a
    /// Cluster frontend and a Local frontend get.
    #[rstest]
    #[case::ready_endpoints_exist(
        &["10.0.1.1 ready host", "10.0.1.2 ready host", "10.0.1.3 serving_terminating host",
          "10.0.1.4 terminating_not_serving host", "10.0.1.5 ready host-1"],
        &["10.0.1.1:80", "10.0.1.2:80", "10.0.1.5:80"],
        &["10.0.1.1:80", "10.0.1.2:80"]
    )]
    #[case::only_terminating_endpoints_exist_locally(
        &["10.0.1.1 serving_terminating host", "10.0.1.2 serving_terminating host",
          "10.0.1.3 terminating_not_serving host", "10.0.1.4 ready host-1"],
        &["10.0.1.4:80"],
        &["10.0.1.1:80", "10.0.1.2:80"]
    )]
    #[case::only_terminating_endpoints_exist_anywhere(
        &["10.0.1.1 serving_terminating host", "10.0.1.2 serving_terminating host",
          "10.0.1.3 terminating_not_serving host", "10.0.1.4 serving_terminating host-1"],
        &["10.0.1.1:80", "10.0.1.2:80", "10.0.1.4:80"],
        &["10.0.1.1:80", "10.0.1.2:80"]
    )]
    #[case::terminating_endpoints_on_remote_node(
        &["10.0.1.5 serving_terminating host-1"],
        &["10.0.1.5:80"],
        &[]
    )]
    #[case::no_usable_endpoints_on_any_node(
        &["10.0.1.1 terminating_not_serving host", "10.0.1.5 terminating_not_serving host-1"],
        &[],
        &[]
    )]
    #[case::not_ready_endpoints_are_never_used(
        &["10.0.1.1 not_ready host", "10.0.1.2 not_ready host-1"],
        &[],
        &[]
    )]
    #[case::local_ready_beats_local_terminating_while_cluster_uses_all_ready(
        &["10.0.1.1 serving_terminating host", "10.0.1.2 ready host", "10.0.1.3 ready host-1"],
        &["10.0.1.2:80", "10.0.1.3:80"],
        &["10.0.1.2:80"]
    )]
    fn terminating_endpoints(
        #[case] endpoints: &[&str],
        #[case] cluster: &[&str],
        #[case] local: &[&str],
    ) {
        let out = policy_case(Cluster, endpoints, |s| s);
        assert_eq!(backends(&out, "172.30.1.1:80/TCP"), cluster, "ITP Cluster");
        let out = policy_case(Local, endpoints, |s| s);
        assert_eq!(backends(&out, "172.30.1.1:80/TCP"), local, "ITP Local");
    }

    /// publishNotReadyAddresses: every endpoint is Ready (and Serving), local
    /// or not, terminating or not.
    #[test]
    fn publish_not_ready_with_local_policy() {
        let endpoints = [
            "10.0.1.1 not_ready host",
            "10.0.1.2 terminating_not_serving host",
            "10.0.1.3 not_ready host-1",
        ];
        let out = policy_case(Local, &endpoints, SvcBuilder::publish_not_ready);
        assert_eq!(
            backends(&out, "172.30.1.1:80/TCP"),
            ["10.0.1.1:80", "10.0.1.2:80"]
        );
        let out = policy_case(Cluster, &endpoints, SvcBuilder::publish_not_ready);
        assert_eq!(
            backends(&out, "172.30.1.1:80/TCP"),
            ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"]
        );
    }

    /// kube-proxy counts a Service port with a Local policy and no local
    /// endpoint only when it has endpoints somewhere (otherwise it rejects, and
    /// does not count); external only when the Service is reachable externally.
    #[rstest]
    #[case::itp_local_remote_only(Local, Cluster, None, &["10.0.1.2 ready host-1"], (1, 0), 1)]
    #[case::itp_local_nothing_anywhere(Local, Cluster, None, &[], (0, 0), 0)]
    #[case::itp_local_only_unusable(
        Local, Cluster, None, &["10.0.1.2 not_ready host-1"], (0, 0), 0
    )]
    #[case::itp_local_terminating_remote(
        Local, Cluster, None, &["10.0.1.2 serving_terminating host-1"], (1, 0), 1
    )]
    #[case::itp_local_with_local(
        Local, Cluster, None, &["10.0.1.1 ready host", "10.0.1.2 ready host-1"], (0, 0), 0
    )]
    #[case::etp_local_on_cluster_ip_is_not_external(
        Cluster, Local, None, &["10.0.1.2 ready host-1"], (0, 0), 0
    )]
    #[case::etp_local_node_port(
        Cluster, Local, Some(ServiceType::NodePort), &["10.0.1.2 ready host-1"], (0, 1), 1
    )]
    #[case::etp_local_load_balancer(
        Cluster, Local, Some(ServiceType::LoadBalancer), &["10.0.1.2 ready host-1"], (0, 1), 1
    )]
    #[case::both_local_counts_once_per_port_in_total(
        Local, Local, Some(ServiceType::NodePort), &["10.0.1.2 ready host-1"], (1, 1), 1
    )]
    fn no_local_endpoints_count(
        #[case] itp: TrafficPolicy,
        #[case] etp: TrafficPolicy,
        #[case] service_type: Option<ServiceType>,
        #[case] endpoints: &[&str],
        #[case] by_policy: (usize, usize),
        #[case] total: usize,
    ) {
        let out = policy_case(itp, endpoints, |s| {
            let s = s.external_policy(etp);
            match service_type {
                Some(t) => s.service_type(t),
                None => s,
            }
        });
        let got = out.no_local_endpoints_by_policy;
        assert_eq!((got.internal, got.external), by_policy);
        assert_eq!(out.no_local_endpoints, total);
    }

    /// Counted per Service port (as kube-proxy does), and a dual-stack port once.
    #[test]
    fn no_local_endpoints_counted_per_port() {
        let out = compute(
            vec![
                svc("default", "web")
                    .cluster_ip("10.96.0.10")
                    .cluster_ip("fd00:96::10")
                    .port("http", 80, Tcp)
                    .port("https", 443, Tcp)
                    .internal_policy(Local),
            ],
            vec![
                slice("default", "web-v4")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .port("https", 8443, Tcp)
                    .endpoint("10.1.0.5")
                    .on_node("other"),
                slice("default", "web-v6")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("fd00::5")
                    .on_node("other"),
            ],
        );
        assert_eq!(out.state.frontends.len(), 4);
        assert!(out.state.frontends.values().all(|s| s.backends.is_empty()));
        assert_eq!(out.no_local_endpoints, 2);
    }

    /// kube-proxy's slice cache keeps the first copy of an endpoint, but a later
    /// copy on this node replaces it.
    #[test]
    fn duplicate_endpoint_local_copy_wins() {
        let out = compute(
            vec![
                svc("default", "web")
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp)
                    .internal_policy(Local),
            ],
            vec![
                slice("default", "web-a")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("10.1.0.5")
                    .on_node("elsewhere"),
                slice("default", "web-b")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("10.1.0.5")
                    .on_node(HOST),
            ],
        );
        assert_eq!(backends(&out, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
    }

    /// Zone hints through the whole pipeline, and `trafficDistribution` itself
    /// ignored (the hints carry it).
    #[test]
    fn zone_hints_restrict_cluster_backends() {
        let service = || {
            svc("default", "web")
                .cluster_ip("10.96.0.10")
                .port("http", 80, Tcp)
        };
        let slices = || {
            vec![
                slice("default", "web-1")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("10.1.0.1")
                    .zone_hints(&["a"])
                    .endpoint("10.1.0.2")
                    .zone_hints(&["b"])
                    .endpoint("10.1.0.3")
                    .zone_hints(&["a"]),
            ]
        };
        let out = compute_on(node(HOST).zone("a").into(), vec![service()], slices());
        assert_eq!(
            backends(&out, "10.96.0.10:80/TCP"),
            ["10.1.0.1:8080", "10.1.0.3:8080"]
        );
        let out = compute_on(node(HOST).zone("c").into(), vec![service()], slices());
        assert_eq!(backends(&out, "10.96.0.10:80/TCP").len(), 3);
    }

    /// `trafficDistribution: PreferSameNode` arrives as node hints.
    #[test]
    fn node_hints_prefer_this_node() {
        let out = compute(
            vec![
                svc("default", "web")
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp),
            ],
            vec![
                slice("default", "web-1")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("10.1.0.1")
                    .on_node(HOST)
                    .node_hints(&[HOST])
                    .endpoint("10.1.0.2")
                    .on_node("other")
                    .node_hints(&["other"]),
            ],
        );
        assert_eq!(backends(&out, "10.96.0.10:80/TCP"), ["10.1.0.1:8080"]);
    }

    #[test]
    fn affinity_timeout_reaches_every_frontend_of_the_service() {
        let out = compute(
            vec![
                svc("default", "web")
                    .cluster_ip("10.96.0.10")
                    .cluster_ip("fd00:96::10")
                    .port("http", 80, Tcp)
                    .port("dns", 53, Udp)
                    .affinity(10_800),
                svc("default", "plain")
                    .cluster_ip("10.96.0.11")
                    .port("http", 80, Tcp),
            ],
            vec![],
        );
        let timeouts: Vec<(String, Option<u32>)> = out
            .state
            .frontends
            .iter()
            .map(|(f, s)| (f.to_string(), s.affinity_timeout))
            .collect();
        assert_eq!(
            timeouts,
            [
                ("10.96.0.10:53/UDP".to_owned(), Some(10_800)),
                ("10.96.0.10:80/TCP".to_owned(), Some(10_800)),
                ("10.96.0.11:80/TCP".to_owned(), None),
                ("[fd00:96::10]:53/UDP".to_owned(), Some(10_800)),
                ("[fd00:96::10]:80/TCP".to_owned(), Some(10_800)),
            ]
        );
    }

    /// A Service with 100 ports (more than anyone writes by hand), each with its
    /// own target port, in one slice.
    #[test]
    fn hundred_ports() {
        let mut service = svc("default", "many").cluster_ip("10.96.0.10");
        let mut sl = slice("default", "many-1").for_service("many");
        for i in 0..100u16 {
            service = service.port(&format!("p{i}"), 1000 + i, Tcp);
            sl = sl.port(&format!("p{i}"), 2000 + i, Tcp);
        }
        let out = compute(vec![service], vec![sl.endpoint("10.1.0.5")]);
        assert_eq!(out.state.frontends.len(), 100);
        for i in 0..100u16 {
            assert_eq!(
                backends(&out, &format!("10.96.0.10:{}/TCP", 1000 + i)),
                [format!("10.1.0.5:{}", 2000 + i)]
            );
        }
    }

    fn be(s: &str) -> Backend {
        let a: std::net::SocketAddr = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
        Backend {
            addr: a.ip(),
            port: a.port(),
            protocol: Tcp,
        }
    }

    fn fe(s: &str, protocol: Protocol) -> Frontend {
        let a: std::net::SocketAddr = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
        Frontend {
            addr: a.ip(),
            port: a.port(),
            protocol,
        }
    }

    /// A LoadBalancer Service with `externalTrafficPolicy: Local`, a NodePort,
    /// an ExternalIP and an ingress IP, one endpoint here and one elsewhere:
    /// every frontend kind, both scopes, the local set and the health check,
    /// compared whole.
    #[test]
    fn load_balancer_with_local_external_policy_whole_state() {
        let host = node(HOST)
            .address("192.168.1.10")
            .nodeport_address("192.168.1.10")
            .nodeport_address("fd00::10");
        let out = compute_on(
            host.into(),
            vec![
                svc("shop", "web")
                    .service_type(ServiceType::LoadBalancer)
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp)
                    .node_port(30080)
                    .external_ip("192.0.2.7")
                    .lb_ip("203.0.113.9")
                    .lb_ip("2001:db8::9")
                    .external_policy(Local)
                    .health_check_node_port(32000),
            ],
            vec![
                slice("shop", "web-1")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("10.1.0.5")
                    .ready()
                    .on_node(HOST)
                    .endpoint("10.2.0.6")
                    .ready()
                    .on_node("other"),
            ],
        );
        let both = vec![be("10.1.0.5:8080"), be("10.2.0.6:8080")];
        let spec = |kind, external: Option<Vec<Backend>>| FrontendSpec {
            service: ObjectRef::new("shop", "web"),
            port_name: "http".into(),
            kind,
            backends: both.clone(),
            external_backends: external,
            affinity_timeout: None,
            traffic_policy: Cluster,
        };
        let local = Some(vec![be("10.1.0.5:8080")]);
        let want = DesiredState {
            frontends: BTreeMap::from([
                (
                    fe("10.96.0.10:80", Tcp),
                    spec(FrontendKind::ClusterIp, None),
                ),
                (
                    fe("192.168.1.10:30080", Tcp),
                    spec(FrontendKind::NodePort, local.clone()),
                ),
                (
                    fe("192.0.2.7:80", Tcp),
                    spec(FrontendKind::ExternalIp, local.clone()),
                ),
                (
                    fe("203.0.113.9:80", Tcp),
                    spec(FrontendKind::LoadBalancer, local.clone()),
                ),
            ]),
            local_endpoints: BTreeSet::from([ip("10.1.0.5")]),
            health_checks: BTreeMap::from([(
                32000,
                HealthCheck {
                    service: ObjectRef::new("shop", "web"),
                    local_endpoints: 1,
                },
            )]),
        };
        assert_eq!(out.state, want);
        assert!(out.refusals.is_empty() && out.conflicts.is_empty());
    }

    /// `externalTrafficPolicy: Cluster` (the default): external frontends use
    /// the cluster endpoints and have no external scope; a NodePort Service
    /// has no ingress IPs and no health check; the v6 nodeport address serves
    /// only the v6 cluster IP's family.
    #[test]
    fn node_port_cluster_policy_dual_stack() {
        let host = node(HOST)
            .nodeport_address("192.168.1.10")
            .nodeport_address("fd00::10");
        let out = compute_on(
            host.into(),
            vec![
                svc("shop", "dns")
                    .service_type(ServiceType::NodePort)
                    .cluster_ip("10.96.0.53")
                    .cluster_ip("fd00:96::53")
                    .port("dns", 53, Udp)
                    .node_port(30053)
                    .lb_ip("203.0.113.9")
                    .health_check_node_port(32000),
            ],
            vec![
                slice("shop", "dns-4")
                    .for_service("dns")
                    .port("dns", 5353, Udp)
                    .endpoint("10.2.0.6")
                    .ready()
                    .on_node("other"),
            ],
        );
        let kinds: Vec<(String, FrontendKind, Option<Vec<Backend>>)> = out
            .state
            .frontends
            .iter()
            .map(|(f, s)| (f.to_string(), s.kind, s.external_backends.clone()))
            .collect();
        assert_eq!(
            kinds,
            [
                (
                    "10.96.0.53:53/UDP".to_owned(),
                    FrontendKind::ClusterIp,
                    None
                ),
                (
                    "192.168.1.10:30053/UDP".to_owned(),
                    FrontendKind::NodePort,
                    None
                ),
                (
                    "[fd00::10]:30053/UDP".to_owned(),
                    FrontendKind::NodePort,
                    None
                ),
                (
                    "[fd00:96::53]:53/UDP".to_owned(),
                    FrontendKind::ClusterIp,
                    None
                ),
            ]
        );
        assert_eq!(backends(&out, "192.168.1.10:30053/UDP"), ["10.2.0.6:5353"]);
        assert_eq!(backends(&out, "[fd00::10]:30053/UDP"), Vec::<String>::new());
        assert!(out.state.local_endpoints.is_empty());
        assert!(out.state.health_checks.is_empty());
    }

    /// A ClusterIP Service with a nodePort (left over from a type change) gets
    /// no NodePort frontend; its ExternalIPs are still served (kube-proxy
    /// serves externalIPs on any type).
    #[test]
    fn cluster_ip_service_ignores_node_ports_but_serves_external_ips() {
        let out = compute_on(
            node(HOST).nodeport_address("192.168.1.10").into(),
            vec![
                svc("shop", "web")
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp)
                    .node_port(30080)
                    .external_ip("192.0.2.7")
                    .lb_ip("203.0.113.9"),
            ],
            vec![],
        );
        assert_eq!(
            frontends_of(&out.state),
            ["10.96.0.10:80/TCP", "192.0.2.7:80/TCP"]
        );
    }

    /// CVE-2020-8554: ExternalIPs and LB IPs on a node address or loopback,
    /// and any external frontend on the kubelet's port, are refused and
    /// reported; everything else of the Service is programmed.
    #[test]
    fn dangerous_external_frontends_are_refused() {
        let host = node(HOST)
            .address("192.168.1.10")
            .nodeport_address("192.168.1.11");
        let out = compute_on(
            host.into(),
            vec![
                svc("shop", "web")
                    .service_type(ServiceType::LoadBalancer)
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp)
                    .node_port(30080)
                    .port("kubelet", 10250, Tcp)
                    .node_port(10250)
                    .external_ip("192.168.1.10")
                    .external_ip("127.0.0.1")
                    .external_ip("192.0.2.7")
                    .lb_ip("192.168.1.11"),
            ],
            vec![],
        );
        assert_eq!(
            frontends_of(&out.state),
            [
                "10.96.0.10:80/TCP",
                "10.96.0.10:10250/TCP",
                "192.0.2.7:80/TCP",
                "192.168.1.11:30080/TCP"
            ]
        );
        let refused: Vec<String> = out.refusals.iter().map(ToString::to_string).collect();
        assert_eq!(
            refused,
            [
                "Service shop/web: ExternalIP frontend 127.0.0.1:80/TCP refused: the address is a loopback or unspecified address (CVE-2020-8554)",
                "Service shop/web: ExternalIP frontend 127.0.0.1:10250/TCP refused: the port is the kubelet's (10250) (CVE-2020-8554)",
                "Service shop/web: ExternalIP frontend 192.0.2.7:10250/TCP refused: the port is the kubelet's (10250) (CVE-2020-8554)",
                "Service shop/web: ExternalIP frontend 192.168.1.10:80/TCP refused: the address is one of this node's (CVE-2020-8554)",
                "Service shop/web: ExternalIP frontend 192.168.1.10:10250/TCP refused: the port is the kubelet's (10250) (CVE-2020-8554)",
                "Service shop/web: LoadBalancer frontend 192.168.1.11:80/TCP refused: the address is one of this node's (CVE-2020-8554)",
                "Service shop/web: NodePort frontend 192.168.1.11:10250/TCP refused: the port is the kubelet's (10250) (CVE-2020-8554)",
                "Service shop/web: LoadBalancer frontend 192.168.1.11:10250/TCP refused: the port is the kubelet's (10250) (CVE-2020-8554)",
            ]
        );
    }

    /// The health check counts local Ready endpoints, summed over the
    /// Service's ports; terminating ones do not count, and none gives 0.
    #[rstest]
    #[case::two_ports_one_pod(true, 2)]
    #[case::terminating_only(false, 0)]
    fn health_check_counts_local_ready_endpoints(#[case] ready: bool, #[case] want: usize) {
        let mut sl = slice("shop", "web-1")
            .for_service("web")
            .port("http", 8080, Tcp)
            .port("https", 8443, Tcp)
            .endpoint("10.1.0.5")
            .on_node(HOST);
        sl = if ready {
            sl.ready()
        } else {
            sl.serving_terminating()
        };
        let sl = sl.endpoint("10.2.0.6").ready().on_node("other");
        let out = compute(
            vec![
                svc("shop", "web")
                    .service_type(ServiceType::LoadBalancer)
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp)
                    .port("https", 443, Tcp)
                    .external_policy(Local)
                    .health_check_node_port(32000),
            ],
            vec![sl],
        );
        assert_eq!(
            out.state
                .health_checks
                .get(&32000)
                .map(|h| h.local_endpoints),
            Some(want)
        );
        assert_eq!(
            out.state.local_endpoints,
            BTreeSet::from([ip("10.1.0.5")]),
            "terminating or not, the endpoint runs here"
        );
    }

    /// Dual-stack: kube-proxy's count comes from one family's proxier (the
    /// health server is shared), so 2 local pods × 2 ports count 4, not 8.
    #[test]
    fn health_check_counts_one_family_of_a_dual_stack_service() {
        let local_slice = |name: &str, a: &str, b: &str| {
            slice("shop", name)
                .for_service("web")
                .port("http", 8080, Tcp)
                .port("https", 8443, Tcp)
                .endpoint(a)
                .ready()
                .on_node(HOST)
                .endpoint(b)
                .ready()
                .on_node(HOST)
        };
        let out = compute(
            vec![
                svc("shop", "web")
                    .service_type(ServiceType::LoadBalancer)
                    .cluster_ip("fd00:96::10")
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp)
                    .port("https", 443, Tcp)
                    .external_policy(Local)
                    .health_check_node_port(32000),
            ],
            vec![
                local_slice("web-v4", "10.1.0.5", "10.1.0.6"),
                local_slice("web-v6", "fd00::5", "fd00::6"),
            ],
        );
        assert_eq!(
            out.state
                .health_checks
                .get(&32000)
                .map(|h| h.local_endpoints),
            Some(4)
        );
        assert_eq!(out.state.local_endpoints.len(), 4, "both families run here");
    }
}
