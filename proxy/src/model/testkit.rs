//! Builders for model tests, shared by the `desired`, `index` and `incremental`
//! tests:
//! `svc("default", "web").cluster_ip("10.96.0.10").port("http", 80, Tcp)`,
//! `slice("default", "web-1").for_service("web").port("http", 8080, Tcp)
//!     .endpoint("10.1.0.5").ready().on_node("n1").zone_hints(&["a"])`,
//! `node("n1").zone("a")`.
//!
//! Test-only (declared under `#[cfg(test)]`).

use std::net::IpAddr;

use crate::model::types::{
    AddressType, DesiredState, Endpoint, EndpointPort, EndpointSlice, ExternalIpGuard, IpMode,
    LoadBalancerIp, NodeInfo, ObjectRef, Protocol, SelectionLabels, Service, ServicePort,
    ServiceType, SourceRange, TrafficPolicy,
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
    /// `--external-ip-guard`.
    pub(crate) fn external_ip_guard(mut self, guard: ExternalIpGuard) -> Self {
        self.0.external_ip_guard = guard;
        self
    }
    /// An address NodePorts are served on.
    pub(crate) fn nodeport_address(mut self, addr: &str) -> Self {
        self.0.nodeport_addresses.push(ip(addr));
        self
    }
    /// An address of one of the node's interfaces.
    pub(crate) fn interface_address(mut self, addr: &str) -> Self {
        self.0.interface_addresses.push(ip(addr));
        self
    }
    /// An address of the API server.
    pub(crate) fn api_server(mut self, addr: &str) -> Self {
        self.0.api_server_addresses.push(ip(addr));
        self
    }
    /// A `--service-cluster-ip-range` prefix.
    pub(crate) fn service_cidr(mut self, addr: &str, prefix: u8) -> Self {
        self.0
            .service_cidrs
            .extend(crate::model::SourceRange::new(ip(addr), prefix));
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
        load_balancer_source_ranges: Vec::new(),
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
    /// A LoadBalancer ingress IP with `ipMode` unset (VIP).
    pub(crate) fn lb_ip(self, addr: &str) -> Self {
        self.lb_ip_mode(addr, IpMode::Vip)
    }
    pub(crate) fn lb_ip_mode(mut self, addr: &str, mode: IpMode) -> Self {
        self.0.load_balancer_ips.push(LoadBalancerIp {
            addr: ip(addr),
            mode,
        });
        self
    }
    /// Adds a `loadBalancerSourceRanges` entry (a valid CIDR).
    pub(crate) fn source_range(mut self, cidr: &str) -> Self {
        let range = SourceRange::parse(cidr).unwrap_or_else(|| panic!("bad CIDR {cidr}"));
        self.0.load_balancer_source_ranges.push(range);
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
    /// `spec.trafficDistribution` (informational: the hints carry it).
    pub(crate) fn traffic_distribution(mut self, value: &str) -> Self {
        self.0.traffic_distribution = Some(value.to_owned());
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
            hints: None,
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
            ep.node_name = Some(node.into());
        }
        self
    }
    /// The last endpoint's zone hints.
    pub(crate) fn zone_hints(mut self, zones: &[&str]) -> Self {
        if let Some(ep) = self.last() {
            let nodes = ep.node_hints().to_vec();
            ep.set_hints(zones.iter().map(|z| (*z).to_owned()).collect(), nodes);
        }
        self
    }
    /// The last endpoint's node hints.
    pub(crate) fn node_hints(mut self, nodes: &[&str]) -> Self {
        if let Some(ep) = self.last() {
            let zones = ep.zone_hints().to_vec();
            ep.set_hints(zones, nodes.iter().map(|n| (*n).to_owned()).collect());
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
