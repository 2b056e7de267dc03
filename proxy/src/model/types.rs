//! The proxy's own domain types: what the Index stores and what desired state is
//! made of. Sources convert Kubernetes objects into these (see `convert`); nothing
//! downstream sees a `k8s-openapi` type.

use std::{fmt, net::IpAddr};

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

/// Namespace and name of a Kubernetes object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
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

/// A Service, reduced to what the proxy needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub id: ObjectRef,
    /// `spec.clusterIPs` (or `spec.clusterIP`), parsed; one per IP family.
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// `spec.publishNotReadyAddresses`: every endpoint counts as ready.
    pub publish_not_ready_addresses: bool,
}

/// One entry of `spec.ports`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Empty for a Service with a single unnamed port.
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
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
    pub node_name: Option<String>,
    pub zone: Option<String>,
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

/// What one frontend should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontendSpec {
    /// The Service that owns the frontend.
    pub service: ObjectRef,
    /// The Service port's name (empty when unnamed).
    pub port_name: String,
    /// Sorted and de-duplicated. Empty means "no usable endpoint": reject.
    pub backends: Vec<Backend>,
    /// ClientIP session affinity: seconds a client keeps its backend after its
    /// last connection. `None`: affinity off.
    pub affinity_timeout: Option<u32>,
}

/// The whole desired dataplane, as a pure function of the Index computes it.
/// Sorted maps, so tests can compare whole states.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredState {
    pub frontends: std::collections::BTreeMap<Frontend, FrontendSpec>,
}
