//! What one Service contributes to the desired state: its frontends, the
//! backends behind each, and what is refused or counted on the way.
//!
//! Pure: no I/O, no logging, no clock.
//!
//! Rules (ClusterIP frontends; see `docs/semantics.md`):
//! - one frontend per cluster IP × TCP/UDP Service port;
//! - its endpoints are the port's [`Candidate`](super::Candidate)s, sorted into cluster and local
//!   categories by [`categorize`] (see [`super::topology`]);
//! - the frontend serves traffic that starts on this node (the socket hooks see
//!   only that), i.e. kube-proxy's "internal" traffic: it uses the local
//!   endpoints under `internalTrafficPolicy: Local`, else the cluster endpoints;
//! - session affinity: [`FrontendSpec::affinity_timeout`] is the Service's;
//! - a frontend with no usable endpoint is still emitted, with empty backends.
//!
//! External frontends (issue 4), in the family of each cluster IP:
//! - NodePort (type NodePort or LoadBalancer, a port with `nodePort`): one per
//!   nodeport address ([`NodeInfo::nodeport_addresses`]) × `nodePort`;
//!   each ExternalIP × port (any type, as kube-proxy); each LoadBalancer
//!   ingress IP × port (type LoadBalancer) whose `ipMode` is `VIP` or unset:
//!   one with `ipMode: Proxy` gets no frontend at all, neither for clients
//!   outside the node nor inside, as kube-proxy leaves it out of the
//!   Service's `LoadBalancerVIPs` (traffic to it goes to the load balancer,
//!   which comes back through a NodePort or to a pod);
//! - their `backends` (the internal scope: the node and its pods) are the
//!   cluster category; under `externalTrafficPolicy: Local`,
//!   `external_backends` (the external scope) holds the local category;
//! - refused, and reported as a [`Refusal`] (CVE-2020-8554): any external
//!   frontend on the kubelet's port 10250, and ExternalIPs or LoadBalancer IPs
//!   that are loopback, unspecified or link-local; one of this node's
//!   addresses only under [`ExternalIpGuard::Strict`] (by default it is
//!   served, as kube-proxy serves it);
//! - a LoadBalancer frontend carries the sources it accepts
//!   ([`FrontendSpec::source_ranges`], `loadBalancerSourceRanges`);
//! - [`ServiceFrontends::local_endpoints`]: every endpoint address on this node;
//!   [`ServiceFrontends::health_check`]: `healthCheckNodePort` of LoadBalancer
//!   Services with `externalTrafficPolicy: Local`, with the count of local
//!   Ready endpoints summed over the Service's ports, in its primary family
//!   only (kube-proxy's `LocalReadyEndpoints`, which each family's proxier
//!   computes on its own).
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
//! ([`super::DesiredOutcome::no_local_endpoints`], kube-proxy's
//! `sync_proxy_rules_no_local_endpoints_total`).

use std::{collections::BTreeSet, fmt, net::IpAddr};

use super::{
    NoLocalEndpoints,
    topology::{candidates, categorize},
};
use crate::model::types::{
    AddressType, Backend, EndpointSlice, ExternalIpGuard, Frontend, FrontendKind, FrontendSpec,
    HealthCheck, IpMode, NodeInfo, ObjectRef, Protocol, Service, ServicePort, ServiceType,
    SourceRange, TrafficPolicy,
};

/// The kubelet's port: no frontend may take it (CVE-2020-8554).
pub const KUBELET_PORT: u16 = 10250;

/// A frontend that is not programmed because it would hijack traffic that is
/// not the Service's (CVE-2020-8554): see [`RefusalReason`] for when; reported
/// like a [`Conflict`](super::Conflict).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Refusal {
    pub service: ObjectRef,
    pub frontend: Frontend,
    pub kind: FrontendKind,
    pub reason: RefusalReason,
}

/// Why a frontend is refused. Every kind of frontend is checked for the
/// kubelet's port; every kind but NodePorts (node addresses by definition)
/// for loopback, unspecified, link-local and multicast addresses and the API
/// server's; ClusterIPs also for a node address and, with
/// `--service-cluster-ip-range`, an address outside it; ExternalIPs and
/// LoadBalancer IPs for a node address under `--external-ip-guard=strict`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefusalReason {
    /// The address is one of this node's (an ExternalIP or LoadBalancer IP),
    /// under [`ExternalIpGuard::Strict`].
    NodeAddress,
    /// A loopback or unspecified address.
    Loopback,
    /// A link-local address (`169.254.0.0/16`, `fe80::/10`): a metadata
    /// service, or a neighbour only this link reaches.
    LinkLocal,
    /// The kubelet's port, [`KUBELET_PORT`].
    KubeletPort,
    /// A multicast (or the IPv4 broadcast) address.
    Multicast,
    /// One of the API server's addresses.
    ApiServer,
    /// A ClusterIP outside `--service-cluster-ip-range`.
    OutsideServiceCidr,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 7] = [
        RefusalReason::NodeAddress,
        RefusalReason::Loopback,
        RefusalReason::LinkLocal,
        RefusalReason::KubeletPort,
        RefusalReason::Multicast,
        RefusalReason::ApiServer,
        RefusalReason::OutsideServiceCidr,
    ];

    /// Short label, for metrics.
    pub fn label(self) -> &'static str {
        match self {
            RefusalReason::NodeAddress => "node_address",
            RefusalReason::Loopback => "loopback",
            RefusalReason::LinkLocal => "link_local",
            RefusalReason::KubeletPort => "kubelet_port",
            RefusalReason::Multicast => "multicast",
            RefusalReason::ApiServer => "api_server",
            RefusalReason::OutsideServiceCidr => "outside_service_cidr",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.reason {
            RefusalReason::NodeAddress if self.kind == FrontendKind::ClusterIp => {
                "the address is one of this node's"
            }
            RefusalReason::NodeAddress => {
                "the address is one of this node's (--external-ip-guard=strict)"
            }
            RefusalReason::Multicast => "the address is a multicast or broadcast address",
            RefusalReason::ApiServer => "the address is the API server's",
            RefusalReason::OutsideServiceCidr => {
                "the address is outside --service-cluster-ip-range"
            }
            RefusalReason::Loopback => "the address is a loopback or unspecified address",
            RefusalReason::LinkLocal => "the address is link-local",
            RefusalReason::KubeletPort => "the port is the kubelet's (10250)",
        };
        write!(
            f,
            "Service {}: {} frontend {} refused: {why} (CVE-2020-8554)",
            self.service, self.kind, self.frontend
        )
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
    /// Every endpoint its ports list, whatever their conditions (see
    /// [`crate::model::DesiredState::retained_backends`]).
    pub retained_backends: BTreeSet<Backend>,
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
            out.retained_backends.extend(
                endpoints
                    .iter()
                    .filter(|ep| retained(ep))
                    .map(|ep| ep.backend),
            );
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
                source_ranges: None,
            };
            let backends = match scope_category(service, FrontendKind::ClusterIp, Scope::Internal) {
                Category::Local => categories.local.clone(),
                Category::Cluster => categories.cluster.clone(),
            };
            let frontend = Frontend {
                addr,
                port: port.port,
                protocol: port.protocol,
            };
            if let Some(reason) = refusal(node, FrontendKind::ClusterIp, frontend) {
                out.refusals.push(Refusal {
                    service: service.id.clone(),
                    frontend,
                    kind: FrontendKind::ClusterIp,
                    reason,
                });
            } else {
                out.frontends
                    .push((frontend, spec(FrontendKind::ClusterIp, backends)));
            }
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
                debug_assert_eq!(
                    scope_category(service, kind, Scope::Internal),
                    Category::Cluster
                );
                if scope_category(service, kind, Scope::External) == Category::Local {
                    external.external_backends = Some(categories.local.clone());
                }
                if kind == FrontendKind::LoadBalancer {
                    external.source_ranges = source_ranges(node, service, addr);
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

/// Where traffic to a frontend comes from: this node (its host and pods,
/// kube-proxy's "internal" traffic) or elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Internal,
    External,
}

/// Which of [`categorize`]'s categories a scope of a frontend uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Cluster,
    Local,
}

/// The traffic policies, in one place: which category traffic of `scope` to
/// a frontend of `kind` uses. ClusterIP frontends follow
/// `internalTrafficPolicy` whatever the scope; external frontends use the
/// cluster category for this node's own traffic (kube-proxy short-circuits
/// it) and follow `externalTrafficPolicy` for traffic from elsewhere.
pub fn scope_category(service: &Service, kind: FrontendKind, scope: Scope) -> Category {
    let local = match (kind, scope) {
        (FrontendKind::ClusterIp, _) => service.internal_traffic_policy == TrafficPolicy::Local,
        (_, Scope::Internal) => false,
        (_, Scope::External) => {
            service.external_traffic_policy == TrafficPolicy::Local
                && service.externally_accessible()
        }
    };
    if local {
        Category::Local
    } else {
        Category::Cluster
    }
}

/// Whether an endpoint's backend entry outlives its slots (see
/// [`crate::model::DesiredState::retained_backends`]): a TCP endpoint whatever
/// its conditions (kube-proxy leaves TCP conntrack entries alone), a UDP one
/// while it serves (kube-proxy clears the UDP flows of an endpoint that stops
/// serving, so they move to a live one).
fn retained(ep: &super::Candidate<'_>) -> bool {
    ep.backend.protocol != Protocol::Udp || ep.ready || ep.serving
}

/// The external frontends of one Service port in the family of `cluster_ip`:
/// NodePorts on each nodeport address, then ExternalIPs, then LoadBalancer
/// ingress IPs in VIP mode (kube-proxy's `LoadBalancerVIPs`).
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
        let vips = service
            .load_balancer_ips
            .iter()
            .filter(|lb| lb.mode == IpMode::Vip)
            .map(|lb| lb.addr);
        for addr in vips.filter(|addr| AddressType::of(*addr) == family) {
            out.push((FrontendKind::LoadBalancer, at(addr, port.port)));
        }
    }
    out
}

/// The sources the LoadBalancer frontends of `service` in the family of
/// `addr` accept (kube-proxy's `firewall-ips` and `allowFromNode`): `None`
/// without `loadBalancerSourceRanges`; else the ranges of that family (none:
/// no source), plus the Service's LoadBalancer IPs of that family when a
/// range holds one of this node's addresses, so traffic the node sends
/// through its own load balancer, coming back with a LoadBalancer IP as its
/// source, still gets in.
fn source_ranges(node: &NodeInfo, service: &Service, addr: IpAddr) -> Option<Vec<SourceRange>> {
    if service.load_balancer_source_ranges.is_empty() {
        return None;
    }
    let family = AddressType::of(addr);
    let same_family = |ip: &&IpAddr| AddressType::of(**ip) == family;
    let mut out: Vec<SourceRange> = service
        .load_balancer_source_ranges
        .iter()
        .filter(|r| AddressType::of(r.addr()) == family)
        .copied()
        .collect();
    let mut node_ips = node
        .addresses
        .iter()
        .chain(&node.nodeport_addresses)
        .filter(same_family);
    if node_ips.any(|ip| out.iter().any(|r| r.contains(*ip))) {
        out.extend(
            service
                .load_balancer_ips
                .iter()
                // kube-proxy's `LoadBalancerVIPs`: `ipMode: Proxy` IPs are not among them.
                .filter(|lb| lb.mode == IpMode::Vip)
                .map(|lb| lb.addr)
                .filter(|ip| AddressType::of(*ip) == family)
                .map(SourceRange::host),
        );
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// Why a frontend must not be programmed, if it must not (see
/// [`RefusalReason`]).
fn refusal(node: &NodeInfo, kind: FrontendKind, frontend: Frontend) -> Option<RefusalReason> {
    let addr = frontend.addr;
    if frontend.port == KUBELET_PORT {
        return Some(RefusalReason::KubeletPort);
    }
    if kind == FrontendKind::NodePort {
        // Node addresses by definition; the daemon never lists loopback ones.
        return None;
    }
    if addr.is_loopback() || addr.is_unspecified() {
        Some(RefusalReason::Loopback)
    } else if is_link_local(addr) {
        Some(RefusalReason::LinkLocal)
    } else if addr.is_multicast() || addr == IpAddr::from([255, 255, 255, 255]) {
        Some(RefusalReason::Multicast)
    } else if node.api_server_addresses.contains(&addr) {
        Some(RefusalReason::ApiServer)
    } else if kind == FrontendKind::ClusterIp {
        if node.owns(addr) {
            Some(RefusalReason::NodeAddress)
        } else if !node.service_cidrs.is_empty()
            && !node.service_cidrs.iter().any(|cidr| cidr.contains(addr))
        {
            Some(RefusalReason::OutsideServiceCidr)
        } else {
            None
        }
    } else if node.external_ip_guard == ExternalIpGuard::Strict && node.owns(addr) {
        Some(RefusalReason::NodeAddress)
    } else {
        None
    }
}

/// `169.254.0.0/16` or `fe80::/10`.
fn is_link_local(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}
