//! The proxy's own domain types: what the Index stores and what desired state is
//! made of. Sources convert Kubernetes objects into these (see `convert`); nothing
//! downstream sees a `k8s-openapi` type.

use std::{fmt, net::IpAddr};

/// Defined with the rules that read it; re-exported here, with the types that
/// carry it.
pub use super::names::Name;
pub use super::selection::SelectionLabels;

/// Transport protocols the proxy balances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The `IPPROTO_*` number used in map keys.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => proxy_common::proto::TCP,
            Protocol::Udp => proxy_common::proto::UDP,
        }
    }

    /// The inverse of [`Protocol::number`].
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            proxy_common::proto::TCP => Some(Protocol::Tcp),
            proxy_common::proto::UDP => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// Namespace and name of a Kubernetes object. Shared strings: the Index, the
/// desired-state cache and events all hold the same refs, and a clone is a
/// reference count, not two allocations (10,000 Services × their slices
/// made ~13 MB of copies).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub namespace: std::sync::Arc<str>,
    pub name: std::sync::Arc<str>,
}

impl ObjectRef {
    pub fn new(
        namespace: impl Into<std::sync::Arc<str>>,
        name: impl Into<std::sync::Arc<str>>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where the Index got an object from. Both sources feed one Index; each
/// replaces only its own objects.
///
/// When both hold an object with the same [`ObjectRef`], **Kubernetes wins**:
/// the API server is the cluster's truth, and a manifest left behind on a node
/// must not override it. The manifest copy comes back into effect if the
/// Kubernetes one is deleted. The order of the variants is that precedence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceId {
    Kubernetes,
    Manifests,
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceId::Kubernetes => "kubernetes",
            SourceId::Manifests => "manifests",
        })
    }
}

/// The node this proxy runs on: what makes an endpoint "local" and which zone
/// topology hints are matched against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// `metadata.name`; compared with each endpoint's `nodeName`. Empty means
    /// unknown: then no endpoint is local.
    pub name: String,
    /// The `topology.kubernetes.io/zone` label.
    pub zone: Option<String>,
    /// `status.addresses` of type InternalIP, then those of type ExternalIP,
    /// each in API order (kube's `GetNodeHostIPs` order).
    pub addresses: Vec<IpAddr>,
    /// The addresses NodePorts are served on (kube-proxy's
    /// `--nodeport-addresses`), resolved by the daemon from this node's
    /// interfaces; one NodePort frontend per address of the Service's family.
    pub nodeport_addresses: Vec<IpAddr>,
    /// Whether ExternalIPs and LoadBalancer IPs equal to one of this node's
    /// addresses are served (`--external-ip-guard`; set by the daemon, kept
    /// across Node updates).
    pub external_ip_guard: ExternalIpGuard,
    /// Every address of this node's network namespace's interfaces (the
    /// daemon reads them; kept across Node updates): a node address whatever
    /// the Node object or `--nodeport-addresses` say.
    pub interface_addresses: Vec<IpAddr>,
    /// The API server's addresses (from the daemon's kubeconfig; kept across
    /// Node updates): no frontend may take one.
    pub api_server_addresses: Vec<IpAddr>,
    /// `--service-cluster-ip-range`: when not empty, ClusterIPs outside it are
    /// refused (kept across Node updates).
    pub service_cidrs: Vec<SourceRange>,
}

/// `--external-ip-guard`: what is refused among ExternalIPs and
/// LoadBalancer IPs (CVE-2020-8554). Loopback, unspecified and link-local
/// addresses, and the kubelet's port, are refused in both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ExternalIpGuard {
    /// As kube-proxy: an address of this node is served (bare-metal set-ups
    /// such as `externalIPs: [nodeIP]` or k3s' ServiceLB depend on it).
    #[default]
    Default,
    /// An address of this node is refused too.
    Strict,
}

impl NodeInfo {
    /// A node known only by name.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Whether `ip` is one of this node's own addresses (Node object,
    /// nodeport or interface):
    /// such an address may not be claimed as an ExternalIP or LoadBalancer IP.
    pub fn owns(&self, ip: IpAddr) -> bool {
        self.addresses.contains(&ip)
            || self.nodeport_addresses.contains(&ip)
            || self.interface_addresses.contains(&ip)
    }

    /// The node's primary addresses, as kube's `GetNodeHostIPs` picks them:
    /// the first of [`NodeInfo::addresses`], then the first of the other
    /// family (InternalIPs come first). Empty while none is known.
    pub fn primary_addresses(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = Vec::with_capacity(2);
        for ip in &self.addresses {
            if out.iter().all(|p| p.is_ipv4() != ip.is_ipv4()) {
                out.push(*ip);
            }
        }
        out
    }

    /// Whether an endpoint on `node_name` runs here (kube-proxy's `isLocal`:
    /// never true while this node's name is unknown).
    pub fn is_local(&self, node_name: Option<&str>) -> bool {
        !self.name.is_empty() && node_name == Some(self.name.as_str())
    }
}

/// `spec.type`, for the types that are proxied (ExternalName is skipped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ServiceType {
    #[default]
    ClusterIp,
    NodePort,
    LoadBalancer,
}

/// `spec.internalTrafficPolicy` / `spec.externalTrafficPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TrafficPolicy {
    /// Any ready endpoint in the cluster (the API default).
    #[default]
    Cluster,
    /// Only endpoints on this node.
    Local,
}

/// A Service, reduced to what the proxy needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub id: ObjectRef,
    pub service_type: ServiceType,
    /// `spec.clusterIPs` (or `spec.clusterIP`), parsed; one per IP family.
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.externalIPs` that parse.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[]` entries whose `ip` parses, with their
    /// `ipMode` (used for type LoadBalancer; only [`IpMode::Vip`] ones get a
    /// frontend).
    pub load_balancer_ips: Vec<LoadBalancerIp>,
    /// `spec.loadBalancerSourceRanges`, parsed, in order, each once (empty:
    /// every source). A list with an entry that does not parse never gets
    /// here: `convert` then drops the LoadBalancer IPs (fail closed).
    pub load_balancer_source_ranges: Vec<SourceRange>,
    /// `spec.healthCheckNodePort` (type LoadBalancer with
    /// `externalTrafficPolicy: Local`).
    pub health_check_node_port: Option<u16>,
    pub ports: Vec<ServicePort>,
    /// `spec.publishNotReadyAddresses`: every endpoint counts as ready.
    pub publish_not_ready_addresses: bool,
    pub internal_traffic_policy: TrafficPolicy,
    /// Applies to the NodePort, ExternalIP and LoadBalancer frontends.
    pub external_traffic_policy: TrafficPolicy,
    /// ClientIP session affinity timeout in seconds (`None`: affinity off).
    pub session_affinity: Option<u32>,
    /// `spec.trafficDistribution`, as written. Informational: kube-proxy acts on
    /// the hints the EndpointSlice controller derives from it, not on the field.
    pub traffic_distribution: Option<String>,
    pub labels: SelectionLabels,
}

impl Service {
    /// kube-proxy's `ExternallyAccessible` at Service level: reachable other than
    /// through its ClusterIP (NodePort, LoadBalancer, or an external IP).
    pub fn externally_accessible(&self) -> bool {
        matches!(
            self.service_type,
            ServiceType::NodePort | ServiceType::LoadBalancer
        ) || !self.external_ips.is_empty()
    }
}

/// A `status.loadBalancer.ingress[]` entry with an IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LoadBalancerIp {
    pub addr: IpAddr,
    pub mode: IpMode,
}

/// `status.loadBalancer.ingress[].ipMode`: how the load balancer delivers
/// traffic to the node (KEP-1860).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpMode {
    /// `VIP`, and unset: packets arrive addressed to the load balancer's IP,
    /// which the proxy serves like an ExternalIP.
    #[default]
    Vip,
    /// `Proxy`: the load balancer connects to a node's NodePort or a pod
    /// itself (it may add PROXY protocol or end TLS), so its IP is not the
    /// proxy's to serve; clients in the cluster must reach the load balancer.
    Proxy,
}

/// One entry of `spec.ports`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Empty for a Service with a single unnamed port.
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
    /// `nodePort`, when allocated (type NodePort or LoadBalancer).
    pub node_port: Option<u16>,
}

/// `addressType` of an EndpointSlice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddressType {
    IPv4,
    IPv6,
}

impl AddressType {
    /// The address type of slices that carry addresses of `ip`'s family.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => AddressType::IPv4,
            IpAddr::V6(_) => AddressType::IPv6,
        }
    }
}

/// An EndpointSlice, reduced to what the proxy needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSlice {
    pub id: ObjectRef,
    /// The `kubernetes.io/service-name` label: the Service in the same namespace.
    pub service_name: String,
    /// The slice's own labels (not its Service's) decide whether it is used.
    pub labels: SelectionLabels,
    pub address_type: AddressType,
    pub ports: Vec<EndpointPort>,
    pub endpoints: Vec<Endpoint>,
}

/// One entry of an EndpointSlice's `ports`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointPort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// One endpoint, with its conditions already defaulted (ready and serving: nil
/// means true; terminating: nil means false).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The first address only, as kube-proxy does.
    pub address: IpAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// Interned ([`super::names`]): the endpoints of a node share it.
    pub node_name: Option<Name>,
    /// Interned, as `node_name`.
    pub zone: Option<Name>,
    /// Topology hints, rare: boxed, `None` when there are none.
    pub hints: Option<Box<EndpointHints>>,
}

/// An endpoint's topology hints (at least one of them non-empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointHints {
    /// `hints.forZones[].name`: the zones whose nodes should use this endpoint.
    pub zones: Vec<String>,
    /// `hints.forNodes[].name`: the nodes that should use this endpoint
    /// (`trafficDistribution: PreferSameNode`).
    pub nodes: Vec<String>,
}

impl Endpoint {
    /// `hints.forZones[].name`, sorted.
    pub fn zone_hints(&self) -> &[String] {
        self.hints.as_deref().map_or(&[], |h| &h.zones)
    }

    /// `hints.forNodes[].name`, sorted.
    pub fn node_hints(&self) -> &[String] {
        self.hints.as_deref().map_or(&[], |h| &h.nodes)
    }

    /// Sets the hints (none when both lists are empty).
    pub fn set_hints(&mut self, zones: Vec<String>, nodes: Vec<String>) {
        self.hints = (!zones.is_empty() || !nodes.is_empty())
            .then(|| Box::new(EndpointHints { zones, nodes }));
    }
}

/// Where clients send traffic: a service IP, port and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frontend {
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}/{}", self.port, self.protocol),
            IpAddr::V6(a) => write!(f, "[{a}]:{}/{}", self.port, self.protocol),
        }
    }
}

/// Where traffic goes: an endpoint address, target port and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

/// How clients reach a frontend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FrontendKind {
    /// A cluster IP: only clients on the node and its pods (and pod-facing
    /// devices on the tc path).
    #[default]
    ClusterIp,
    /// A node address and a `nodePort`.
    NodePort,
    /// One of `spec.externalIPs`.
    ExternalIp,
    /// A `status.loadBalancer.ingress[].ip` of a type LoadBalancer Service.
    LoadBalancer,
}

impl FrontendKind {
    /// Reachable from outside the node (NodePort, ExternalIP, LoadBalancer).
    pub fn is_external(self) -> bool {
        self != FrontendKind::ClusterIp
    }
}

impl fmt::Display for FrontendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrontendKind::ClusterIp => "ClusterIP",
            FrontendKind::NodePort => "NodePort",
            FrontendKind::ExternalIp => "ExternalIP",
            FrontendKind::LoadBalancer => "LoadBalancer",
        })
    }
}

/// What one frontend should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontendSpec {
    /// The Service that owns the frontend.
    pub service: ObjectRef,
    /// The Service port's name (empty when unnamed).
    pub port_name: String,
    pub kind: FrontendKind,
    /// The internal scope: clients on the node and its pods. Sorted and
    /// de-duplicated. Empty means "no usable endpoint": reject.
    pub backends: Vec<Backend>,
    /// The external scope, only for an external frontend of a Service with
    /// `externalTrafficPolicy: Local`: its local endpoints, sorted (empty:
    /// drop external traffic). `None`: external clients use `backends`.
    pub external_backends: Option<Vec<Backend>>,
    /// ClientIP session affinity: seconds a client keeps its backend after its
    /// last connection. `None`: affinity off.
    pub affinity_timeout: Option<u32>,
    /// The Service's `internalTrafficPolicy` (already applied to `backends`;
    /// kept so `proxy inspect` can show it).
    pub traffic_policy: TrafficPolicy,
    /// The sources a LoadBalancer frontend accepts (`loadBalancerSourceRanges`
    /// of its family, plus its Service's LoadBalancer IPs when a range holds
    /// a node address), sorted. `None`: every source (no ranges, or not a
    /// LoadBalancer frontend); `Some` and empty: none.
    pub source_ranges: Option<Vec<SourceRange>>,
}

/// An IP prefix of `spec.loadBalancerSourceRanges`: an address with its host
/// bits cleared and a prefix length within its family's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceRange {
    addr: IpAddr,
    prefix: u8,
}

impl SourceRange {
    /// The least range in the type's order (`0.0.0.0/0`).
    pub const MIN: Self = Self {
        addr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        prefix: 0,
    };
    /// The greatest range in the type's order.
    pub const MAX: Self = Self {
        addr: IpAddr::V6(std::net::Ipv6Addr::from_bits(u128::MAX)),
        prefix: 128,
    };

    /// The prefix of `addr`/`prefix`, host bits cleared; `None` when
    /// `prefix` exceeds the family's length.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let addr = match addr {
            IpAddr::V4(a) if prefix <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) if prefix <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
            _ => return None,
        };
        Some(Self { addr, prefix })
    }

    /// A single address (`/32`, `/128`).
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            prefix: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    /// Parses `a.b.c.d/n` or `x::/n` (surrounding spaces ignored, host bits
    /// allowed and cleared, as kube-proxy's sloppy parser does); `None` when
    /// it is not a CIDR.
    pub fn parse(s: &str) -> Option<Self> {
        let (addr, prefix) = s.trim().split_once('/')?;
        let addr: IpAddr = addr.parse().ok()?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Self::new(addr, prefix.parse().ok()?)
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside the prefix (never across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        Self::new(ip, self.prefix).is_some_and(|net| net.addr == self.addr)
    }
}

impl fmt::Display for SourceRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The whole desired dataplane, as a pure function of the Index computes it.
/// Sorted maps, so tests can compare whole states.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredState {
    pub frontends: std::collections::BTreeMap<Frontend, FrontendSpec>,
    /// Addresses of endpoints on this node (of every Service, used or not):
    /// external traffic to them is not source-NATed.
    pub local_endpoints: std::collections::BTreeSet<IpAddr>,
    /// The endpoints listed for a Service port, used or not (TCP: all of
    /// them; UDP: those serving): the plan never deletes the backend entry of
    /// one, so established per-packet (tc) flows to a terminating endpoint
    /// keep their backend, as kube-proxy's conntrack keeps their DNAT. It
    /// never writes one for them either: only slots create backend entries.
    ///
    /// Always the union of [`DesiredState::retained_by_service`]'s sets
    /// (tested), each backend with how many Services list it: kept as well
    /// as an index, a scoped plan asks it about a few backends in `O(log n)`
    /// each, and `model::incremental` keeps it up to date per changed Service
    /// by that count (no second reference-count map); deriving it would cost
    /// a walk of every Service's endpoints at every sync.
    pub retained_backends: std::collections::BTreeMap<Backend, u32>,
    /// [`DesiredState::retained_backends`] by the Service that lists them
    /// (Services listing none are absent). The userspace path keeps an open
    /// connection or UDP session to a backend that left a frontend's pool only
    /// while the frontend's own Service still lists it: kube-proxy clears a
    /// removed UDP endpoint's flows per Service port, whatever other Services
    /// list the same address.
    pub retained_by_service:
        std::collections::BTreeMap<ObjectRef, std::collections::BTreeSet<Backend>>,
    /// Health-check node port → what it reports.
    pub health_checks: std::collections::BTreeMap<u16, HealthCheck>,
}

/// One `healthCheckNodePort` (type LoadBalancer, `externalTrafficPolicy:
/// Local`): load balancers send traffic to this node only while it has a
/// local endpoint (kube-proxy's `pkg/proxy/healthcheck`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub service: ObjectRef,
    /// Local Ready endpoints of the Service, summed over its ports, in its
    /// primary family (kube-proxy's `LocalReadyEndpoints`).
    pub local_endpoints: usize,
}

#[cfg(test)]
mod tests {
    use super::ObjectRef;

    /// The Index, the desired-state cache and events each keep a copy of a
    /// Service's ref: a copy must share the strings, not allocate them again.
    #[test]
    fn object_ref_clones_share_their_strings() {
        let original = ObjectRef::new("default", "web");
        let copy = original.clone();
        assert!(std::sync::Arc::ptr_eq(&original.namespace, &copy.namespace));
        assert!(std::sync::Arc::ptr_eq(&original.name, &copy.name));
        assert_eq!(&*copy.name, "web");
    }
}
