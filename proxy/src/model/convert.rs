//! Conversion from `k8s-openapi` objects into the proxy's domain types.
//!
//! This module owns the rules for reading a Service, an EndpointSlice or a Node:
//! defaults (`namespace` → `default`, protocol → TCP, conditions, traffic
//! policies → Cluster, ClientIP affinity timeout → 10800 s), what is skipped on
//! purpose (ExternalName and headless Services, FQDN slices, slices without the
//! `kubernetes.io/service-name` label), what is dropped piecemeal with a warning
//! (an SCTP port, an endpoint whose address does not parse, an unknown enum value,
//! the endpoints past the API server's 1000 per slice), and what rejects the
//! whole object (no clusterIP, an invalid clusterIP, a Service port out of range,
//! an affinity timeout outside 1..=86400).
//!
//! Label selection (`service-proxy-name`, `headless`) is not decided here: the
//! two labels are carried in [`SelectionLabels`] and the Index applies the
//! proxy's choice (see [`super::selection`]).
//!
//! Pure: no I/O, no logging. Callers decide how to report what comes back.
//!
//! # Return shape
//!
//! [`service`] and [`endpoint_slice`] return `Result<Converted<T>, ConvertError>`:
//! - `Err(ConvertError)`: the object is invalid and must not be used;
//! - `Ok(Converted::Skipped(Skip))`: the object is not for this proxy. Not an
//!   error; [`Skip::is_warning`] says whether a person should hear about it;
//! - `Ok(Converted::Kept { object, warnings })`: use `object`; `warnings` lists the
//!   pieces of it that were dropped (a port, an endpoint).
//!
//! Every error, skip and warning names its object as `Service ns/name` or
//! `EndpointSlice ns/name` when displayed.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

use k8s_openapi::api::{core::v1 as core, discovery::v1 as discovery};

use super::names;
use super::types::{
    AddressType, Endpoint, EndpointPort, EndpointSlice, ExternalIpGuard, IpMode, LoadBalancerIp,
    NodeInfo, ObjectRef, Protocol, SelectionLabels, Service, ServicePort, ServiceType, SourceRange,
    TrafficPolicy,
};

/// The label that joins an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The Node label that names its zone, matched against endpoints' zone hints.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The API server's limit on endpoints in one EndpointSlice (`maxItems` in the
/// OpenAPI schema). Only a hand-written slice can exceed it; the rest is ignored
/// with [`ConvertWarning::TooManyEndpoints`], so every slice downstream has the
/// bound a cluster guarantees.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 1000;

/// `sessionAffinityConfig.clientIP.timeoutSeconds` when unset (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

/// The largest timeout the API server accepts (1 day); the smallest is 1.
pub const MAX_AFFINITY_TIMEOUT: u32 = 86_400;

/// Kinds of object this module converts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Service,
    EndpointSlice,
    Node,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Node => "Node",
        })
    }
}

/// A kind and a namespace/name: displays as `Service default/web`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TypedRef {
    pub kind: Kind,
    pub id: ObjectRef,
}

impl TypedRef {
    pub fn new(kind: Kind, id: ObjectRef) -> Self {
        Self { kind, id }
    }
}

impl fmt::Display for TypedRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.id)
    }
}

/// The result of a conversion that did not fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Converted<T> {
    /// Use `object`. `warnings` lists the parts of it that were dropped.
    Kept {
        object: T,
        warnings: Vec<ConvertWarning>,
    },
    /// Not for this proxy, on purpose. Not an error.
    Skipped(Skip),
}

impl<T> Converted<T> {
    /// The object, if it was kept.
    pub fn object(&self) -> Option<&T> {
        match self {
            Converted::Kept { object, .. } => Some(object),
            Converted::Skipped(_) => None,
        }
    }

    /// The object, if it was kept, dropping the warnings.
    pub fn into_object(self) -> Option<T> {
        match self {
            Converted::Kept { object, .. } => Some(object),
            Converted::Skipped(_) => None,
        }
    }
}

/// An object this proxy ignores on purpose.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{object}: skipped: {reason}")]
pub struct Skip {
    pub object: TypedRef,
    pub reason: SkipReason,
}

impl Skip {
    /// True when a person probably wrote something that does not do what they
    /// meant (a slice without its service-name label), false for objects that are
    /// fine but simply not proxied (ExternalName, headless, FQDN).
    pub fn is_warning(&self) -> bool {
        self.reason.is_warning()
    }
}

/// Why an object is skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// `spec.type: ExternalName`: DNS only, nothing to proxy.
    ExternalName,
    /// `clusterIP: None`.
    Headless,
    /// `addressType: FQDN`: kube-proxy ignores these.
    FqdnAddressType,
    /// No `kubernetes.io/service-name` label: kube-proxy ignores these.
    NoServiceNameLabel,
}

impl SkipReason {
    /// See [`Skip::is_warning`].
    pub fn is_warning(self) -> bool {
        matches!(self, SkipReason::NoServiceNameLabel)
    }

    /// The `reason` label of `proxy_config_rejects_total` (snake_case, a
    /// closed set: a new variant needs one). Skipped on purpose counts as
    /// `not_proxied`, only where a source chooses to report it.
    pub fn label(self) -> &'static str {
        match self {
            SkipReason::NoServiceNameLabel => "no_service_name_label",
            SkipReason::ExternalName | SkipReason::Headless | SkipReason::FqdnAddressType => {
                "not_proxied"
            }
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::ExternalName => f.write_str("ExternalName"),
            SkipReason::Headless => f.write_str("headless (clusterIP: None)"),
            SkipReason::FqdnAddressType => f.write_str("addressType FQDN"),
            SkipReason::NoServiceNameLabel => write!(f, "no {SERVICE_NAME_LABEL} label"),
        }
    }
}

/// The object is invalid as a whole and must not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("{kind} {namespace}/<unnamed>: has no metadata.name")]
    MissingName { kind: Kind, namespace: String },
    #[error("{object}: has no clusterIP")]
    NoClusterIp { object: TypedRef },
    #[error("{object}: invalid clusterIP {ip:?}")]
    InvalidClusterIp { object: TypedRef, ip: String },
    #[error("{object}: port {port} ({name:?}) is outside 1..=65535")]
    ServicePortOutOfRange {
        object: TypedRef,
        name: String,
        port: i32,
    },
    #[error("{object}: unknown addressType {address_type:?}")]
    UnknownAddressType {
        object: TypedRef,
        address_type: String,
    },
    #[error(
        "{object}: sessionAffinityConfig.clientIP.timeoutSeconds {timeout} is outside 1..={max}",
        max = MAX_AFFINITY_TIMEOUT
    )]
    AffinityTimeoutOutOfRange { object: TypedRef, timeout: i32 },
}

impl ConvertError {
    /// The `reason` label of `proxy_config_rejects_total` (snake_case, a
    /// closed set: a new variant needs one).
    pub fn label(&self) -> &'static str {
        match self {
            ConvertError::MissingName { .. } => "missing_name",
            ConvertError::NoClusterIp { .. } => "no_cluster_ip",
            ConvertError::InvalidClusterIp { .. } => "invalid_cluster_ip",
            ConvertError::ServicePortOutOfRange { .. } => "service_port_out_of_range",
            ConvertError::UnknownAddressType { .. } => "unknown_address_type",
            ConvertError::AffinityTimeoutOutOfRange { .. } => "affinity_timeout_out_of_range",
        }
    }
}

/// A piece of an object that was dropped; the rest of the object is used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConvertWarning {
    /// SCTP, or a protocol this proxy does not know.
    #[error("{object}: port {port} ({name:?}) skipped: unsupported protocol {protocol}")]
    UnsupportedProtocol {
        object: TypedRef,
        name: String,
        port: i32,
        protocol: String,
    },
    /// A Service port repeating an earlier port's number and protocol, or name.
    #[error("{object}: port {port} ({name:?}) skipped: duplicates an earlier port")]
    DuplicatePort {
        object: TypedRef,
        name: String,
        port: i32,
    },
    /// An EndpointSlice port with no `port` number.
    #[error("{object}: port {name:?} skipped: has no port number")]
    EndpointPortMissing { object: TypedRef, name: String },
    /// An EndpointSlice port outside 1..=65535.
    #[error("{object}: port {port} ({name:?}) skipped: outside 1..=65535")]
    EndpointPortOutOfRange {
        object: TypedRef,
        name: String,
        port: i32,
    },
    /// An endpoint with an empty `addresses`.
    #[error("{object}: endpoint {index} skipped: has no address")]
    EndpointNoAddress { object: TypedRef, index: usize },
    /// An endpoint whose first address is not an IP, or not of the slice's family.
    #[error("{object}: endpoint {address:?} skipped: {problem}")]
    EndpointBadAddress {
        object: TypedRef,
        address: String,
        problem: AddressProblem,
    },
    /// More endpoints than the API server allows in one slice.
    #[error(
        "{object}: has {count} endpoints, more than the {max} the API server allows: \
         the last {ignored} are ignored",
        ignored = .count - .max
    )]
    TooManyEndpoints {
        object: TypedRef,
        count: usize,
        max: usize,
    },
    /// An entry of `spec.externalIPs` that is not an IP address.
    #[error("{object}: externalIP {ip:?} skipped: not an IP address")]
    InvalidExternalIp { object: TypedRef, ip: String },
    /// A `status.loadBalancer.ingress[].ip` that is not an IP address.
    #[error("{object}: load balancer ingress IP {ip:?} skipped: not an IP address")]
    InvalidLoadBalancerIp { object: TypedRef, ip: String },
    /// An entry of `spec.loadBalancerSourceRanges` that is not a CIDR: the
    /// Service's LoadBalancer IPs are not served at all (fail closed, as
    /// kube-proxy does), its other frontends are.
    #[error(
        "{object}: loadBalancerSourceRanges entry {value:?} is not a CIDR: its LoadBalancer \
         IPs are not served (fail closed)"
    )]
    InvalidSourceRange { object: TypedRef, value: String },
    /// A field with a value this proxy does not know; the default is used.
    #[error("{object}: unknown {field} {value:?}, using {using}")]
    UnknownValue {
        object: TypedRef,
        field: &'static str,
        value: String,
        using: &'static str,
    },
}

impl ConvertWarning {
    /// The `reason` label of `proxy_config_rejects_total` (snake_case, a
    /// closed set: a new variant needs one).
    pub fn label(&self) -> &'static str {
        match self {
            ConvertWarning::UnsupportedProtocol { .. } => "unsupported_protocol",
            ConvertWarning::DuplicatePort { .. } => "duplicate_port",
            ConvertWarning::EndpointPortMissing { .. } => "endpoint_port_missing",
            ConvertWarning::EndpointPortOutOfRange { .. } => "endpoint_port_out_of_range",
            ConvertWarning::EndpointNoAddress { .. } => "endpoint_no_address",
            ConvertWarning::EndpointBadAddress { .. } => "endpoint_bad_address",
            ConvertWarning::TooManyEndpoints { .. } => "too_many_endpoints",
            ConvertWarning::InvalidExternalIp { .. } => "invalid_external_ip",
            // Counted as `other` since before labels lived here; a label of
            // its own would rename a published series.
            ConvertWarning::InvalidLoadBalancerIp { .. } => "other",
            ConvertWarning::InvalidSourceRange { .. } => "invalid_source_range",
            ConvertWarning::UnknownValue { .. } => "unknown_value",
        }
    }
}

/// Why an endpoint's address was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressProblem {
    NotAnIp,
    WrongFamily { address_type: AddressType },
}

impl fmt::Display for AddressProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressProblem::NotAnIp => f.write_str("not an IP address"),
            AddressProblem::WrongFamily { address_type } => {
                write!(f, "not an {address_type:?} address")
            }
        }
    }
}

/// Reads `metadata` into an [`ObjectRef`]: the name is required, the namespace
/// defaults to `default`.
fn object_ref(
    kind: Kind,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<TypedRef, ConvertError> {
    let namespace = match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => ns.to_owned(),
        _ => "default".to_owned(),
    };
    match meta.name.as_deref() {
        Some(name) if !name.is_empty() => Ok(TypedRef::new(kind, ObjectRef::new(namespace, name))),
        _ => Err(ConvertError::MissingName { kind, namespace }),
    }
}

/// `None` means TCP, as the API server defaults it. `Err` carries the protocol
/// that is not supported (SCTP or unknown).
fn protocol(p: Option<&str>) -> Result<Protocol, String> {
    match p {
        None | Some("TCP") => Ok(Protocol::Tcp),
        Some("UDP") => Ok(Protocol::Udp),
        Some(other) => Err(other.to_owned()),
    }
}

fn port_number(port: i32) -> Option<u16> {
    u16::try_from(port).ok().filter(|p| *p != 0)
}

/// Converts a Service. See the module docs for the return shape.
pub fn service(svc: &core::Service) -> Result<Converted<Service>, ConvertError> {
    let object = object_ref(Kind::Service, &svc.metadata)?;
    let Some(spec) = svc.spec.as_ref() else {
        return Err(ConvertError::NoClusterIp { object });
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok(Converted::Skipped(Skip {
            object,
            reason: SkipReason::ExternalName,
        }));
    }

    // `clusterIPs` is authoritative when set; its first entry equals `clusterIP`.
    let raw_ips: Vec<&str> = match spec.cluster_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        _ => spec
            .cluster_ip
            .as_deref()
            .into_iter()
            .filter(|ip| !ip.is_empty())
            .collect(),
    };
    if raw_ips.first() == Some(&"None") {
        return Ok(Converted::Skipped(Skip {
            object,
            reason: SkipReason::Headless,
        }));
    }
    if raw_ips.is_empty() {
        return Err(ConvertError::NoClusterIp { object });
    }
    let mut cluster_ips = Vec::with_capacity(raw_ips.len());
    for raw in raw_ips {
        let ip = raw
            .parse::<IpAddr>()
            .map_err(|_| ConvertError::InvalidClusterIp {
                object: object.clone(),
                ip: raw.to_owned(),
            })?;
        if !cluster_ips.contains(&ip) {
            cluster_ips.push(ip);
        }
    }

    let mut warnings = Vec::new();
    let service_type = match spec.type_.as_deref() {
        None | Some("ClusterIP") => ServiceType::ClusterIp,
        Some("NodePort") => ServiceType::NodePort,
        Some("LoadBalancer") => ServiceType::LoadBalancer,
        Some(other) => {
            warnings.push(unknown(&object, "type", other, "ClusterIP"));
            ServiceType::ClusterIp
        }
    };
    let session_affinity = session_affinity(&object, spec, &mut warnings)?;
    let internal_traffic_policy = traffic_policy(
        &object,
        "internalTrafficPolicy",
        spec.internal_traffic_policy.as_deref(),
        &mut warnings,
    );
    let external_traffic_policy = traffic_policy(
        &object,
        "externalTrafficPolicy",
        spec.external_traffic_policy.as_deref(),
        &mut warnings,
    );
    let mut external_ips = Vec::new();
    for raw in spec.external_ips.iter().flatten() {
        match raw.parse::<IpAddr>() {
            Ok(ip) if !external_ips.contains(&ip) => external_ips.push(ip),
            Ok(_) => {}
            Err(_) => warnings.push(ConvertWarning::InvalidExternalIp {
                object: object.clone(),
                ip: raw.clone(),
            }),
        }
    }

    // Exactly as many as listed: a pushed Vec keeps room for four, and the
    // Index holds one per Service.
    let mut ports = Vec::with_capacity(spec.ports.as_ref().map_or(0, Vec::len));
    let mut seen_ports = BTreeSet::new();
    let mut seen_names = BTreeSet::new();
    for p in spec.ports.iter().flatten() {
        let name = p.name.clone().unwrap_or_default();
        let Some(number) = port_number(p.port) else {
            return Err(ConvertError::ServicePortOutOfRange {
                object,
                name,
                port: p.port,
            });
        };
        let protocol = match protocol(p.protocol.as_deref()) {
            Ok(protocol) => protocol,
            Err(protocol) => {
                warnings.push(ConvertWarning::UnsupportedProtocol {
                    object: object.clone(),
                    name,
                    port: p.port,
                    protocol,
                });
                continue;
            }
        };
        // The API server rejects both; hand-written manifests may not be checked.
        if seen_ports.contains(&(number, protocol)) || seen_names.contains(&name) {
            warnings.push(ConvertWarning::DuplicatePort {
                object: object.clone(),
                name,
                port: p.port,
            });
            continue;
        }
        seen_ports.insert((number, protocol));
        seen_names.insert(name.clone());
        ports.push(ServicePort {
            name,
            port: number,
            protocol,
            node_port: p.node_port.and_then(port_number),
        });
    }
    let mut load_balancer_ips = Vec::new();
    let ingress = svc
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    for entry in ingress.into_iter().flatten() {
        let Some(raw) = entry.ip.as_ref() else {
            continue;
        };
        let mode = ip_mode(&object, entry.ip_mode.as_deref(), &mut warnings);
        match raw.parse::<IpAddr>() {
            Ok(addr) => {
                let ip = LoadBalancerIp { addr, mode };
                if !load_balancer_ips.contains(&ip) {
                    load_balancer_ips.push(ip);
                }
            }
            Err(_) => warnings.push(ConvertWarning::InvalidLoadBalancerIp {
                object: object.clone(),
                ip: raw.clone(),
            }),
        }
    }

    let load_balancer_source_ranges = source_ranges(
        &object,
        spec.load_balancer_source_ranges
            .as_deref()
            .unwrap_or_default(),
        &mut warnings,
    );
    // Fail closed: a list that cannot be read whole guards no LoadBalancer IP.
    let load_balancer_source_ranges = load_balancer_source_ranges.unwrap_or_else(|| {
        load_balancer_ips.clear();
        Vec::new()
    });

    Ok(Converted::Kept {
        object: Service {
            id: object.id,
            service_type,
            cluster_ips,
            external_ips,
            load_balancer_ips,
            load_balancer_source_ranges,
            health_check_node_port: spec.health_check_node_port.and_then(port_number),
            ports,
            publish_not_ready_addresses: spec.publish_not_ready_addresses.unwrap_or(false),
            internal_traffic_policy,
            external_traffic_policy,
            session_affinity,
            traffic_distribution: spec.traffic_distribution.clone(),
            labels: selection_labels(svc.metadata.labels.as_ref()),
        },
        warnings,
    })
}

/// `status.loadBalancer.ingress[].ipMode`: unset and `VIP` are
/// [`IpMode::Vip`]. Any other value is not VIP to kube-proxy
/// (`proxyutil.IsVIPMode`), so an unknown one is read as `Proxy`, with a
/// warning (the API server accepts only the two).
fn ip_mode(object: &TypedRef, raw: Option<&str>, warnings: &mut Vec<ConvertWarning>) -> IpMode {
    match raw {
        None | Some("VIP") => IpMode::Vip,
        Some("Proxy") => IpMode::Proxy,
        Some(other) => {
            warnings.push(unknown(object, "ipMode", other, "Proxy"));
            IpMode::Proxy
        }
    }
}

/// `spec.loadBalancerSourceRanges`, parsed and de-duplicated; `None` (and a
/// warning per bad entry) when any entry is not a CIDR: the caller then serves
/// no LoadBalancer IP of the Service, rather than one open to every source.
fn source_ranges(
    object: &TypedRef,
    raw: &[String],
    warnings: &mut Vec<ConvertWarning>,
) -> Option<Vec<SourceRange>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut valid = true;
    for value in raw {
        match SourceRange::parse(value) {
            Some(range) if !out.contains(&range) => out.push(range),
            Some(_) => {}
            None => {
                valid = false;
                warnings.push(ConvertWarning::InvalidSourceRange {
                    object: object.clone(),
                    value: value.clone(),
                });
            }
        }
    }
    valid.then_some(out)
}

fn unknown(
    object: &TypedRef,
    field: &'static str,
    value: &str,
    using: &'static str,
) -> ConvertWarning {
    ConvertWarning::UnknownValue {
        object: object.clone(),
        field,
        value: value.to_owned(),
        using,
    }
}

fn selection_labels(labels: Option<&BTreeMap<String, String>>) -> SelectionLabels {
    labels.map(SelectionLabels::from_labels).unwrap_or_default()
}

/// `None`: no affinity. With `ClientIP`, the timeout defaults to 10800 s and must
/// be within 1..=86400 (the API server's validation, which hand-written
/// manifests have not been through).
fn session_affinity(
    object: &TypedRef,
    spec: &core::ServiceSpec,
    warnings: &mut Vec<ConvertWarning>,
) -> Result<Option<u32>, ConvertError> {
    match spec.session_affinity.as_deref() {
        None | Some("None") => Ok(None),
        Some("ClientIP") => {
            let timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            match timeout {
                None => Ok(Some(DEFAULT_AFFINITY_TIMEOUT)),
                Some(t) => u32::try_from(t)
                    .ok()
                    .filter(|t| (1..=MAX_AFFINITY_TIMEOUT).contains(t))
                    .map(Some)
                    .ok_or_else(|| ConvertError::AffinityTimeoutOutOfRange {
                        object: object.clone(),
                        timeout: t,
                    }),
            }
        }
        Some(other) => {
            warnings.push(unknown(object, "sessionAffinity", other, "None"));
            Ok(None)
        }
    }
}

/// `Local` or `Cluster`; unset (and unknown, with a warning) is Cluster, as in
/// kube-proxy, which only ever tests for `Local`.
fn traffic_policy(
    object: &TypedRef,
    field: &'static str,
    value: Option<&str>,
    warnings: &mut Vec<ConvertWarning>,
) -> TrafficPolicy {
    match value {
        None | Some("Cluster") => TrafficPolicy::Cluster,
        Some("Local") => TrafficPolicy::Local,
        Some(other) => {
            warnings.push(unknown(object, field, other, "Cluster"));
            TrafficPolicy::Cluster
        }
    }
}

/// Converts this proxy's Node. Never fails: a Node without a name (which the API
/// server never serves) yields an unnamed [`NodeInfo`], for which no endpoint is
/// local. Addresses that are not of type InternalIP or ExternalIP, or do not
/// parse, are left out; InternalIPs come first (see [`NodeInfo::addresses`]).
pub fn node(node: &core::Node) -> NodeInfo {
    let zone = node
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(ZONE_LABEL))
        .filter(|zone| !zone.is_empty())
        .cloned();
    let mut addresses = Vec::new();
    let listed = node
        .status
        .as_ref()
        .and_then(|status| status.addresses.as_ref());
    for kind in ["InternalIP", "ExternalIP"] {
        for address in listed.into_iter().flatten() {
            if address.type_ != kind {
                continue;
            }
            if let Ok(ip) = address.address.parse::<IpAddr>()
                && !addresses.contains(&ip)
            {
                addresses.push(ip);
            }
        }
    }
    NodeInfo {
        name: node.metadata.name.clone().unwrap_or_default(),
        zone,
        addresses,
        // Not in the Node object: the daemon resolves them from interfaces.
        nodeport_addresses: Vec::new(),
        // Not in the Node object: the daemon's settings and interfaces.
        external_ip_guard: ExternalIpGuard::default(),
        interface_addresses: Vec::new(),
        api_server_addresses: Vec::new(),
        service_cidrs: Vec::new(),
    }
}

/// Converts an EndpointSlice. See the module docs for the return shape.
pub fn endpoint_slice(
    slice: &discovery::EndpointSlice,
) -> Result<Converted<EndpointSlice>, ConvertError> {
    let object = object_ref(Kind::EndpointSlice, &slice.metadata)?;
    let service_name = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
        .filter(|name| !name.is_empty());
    let Some(service_name) = service_name.cloned() else {
        return Ok(Converted::Skipped(Skip {
            object,
            reason: SkipReason::NoServiceNameLabel,
        }));
    };
    let address_type = match slice.address_type.as_str() {
        "IPv4" => AddressType::IPv4,
        "IPv6" => AddressType::IPv6,
        "FQDN" => {
            return Ok(Converted::Skipped(Skip {
                object,
                reason: SkipReason::FqdnAddressType,
            }));
        }
        other => {
            return Err(ConvertError::UnknownAddressType {
                object,
                address_type: other.to_owned(),
            });
        }
    };

    let mut warnings = Vec::new();
    // Exactly as many as listed (see the Service's ports).
    let mut ports = Vec::with_capacity(slice.ports.as_ref().map_or(0, Vec::len));
    for p in slice.ports.iter().flatten() {
        let name = p.name.clone().unwrap_or_default();
        let Some(raw) = p.port else {
            warnings.push(ConvertWarning::EndpointPortMissing {
                object: object.clone(),
                name,
            });
            continue;
        };
        let Some(port) = port_number(raw) else {
            warnings.push(ConvertWarning::EndpointPortOutOfRange {
                object: object.clone(),
                name,
                port: raw,
            });
            continue;
        };
        match protocol(p.protocol.as_deref()) {
            Ok(protocol) => ports.push(EndpointPort {
                name,
                port,
                protocol,
            }),
            Err(protocol) => warnings.push(ConvertWarning::UnsupportedProtocol {
                object: object.clone(),
                name,
                port: raw,
                protocol,
            }),
        }
    }

    let listed = slice.endpoints.as_deref().unwrap_or_default();
    if listed.len() > MAX_ENDPOINTS_PER_SLICE {
        warnings.push(ConvertWarning::TooManyEndpoints {
            object: object.clone(),
            count: listed.len(),
            max: MAX_ENDPOINTS_PER_SLICE,
        });
    }
    // Exactly as many as listed (a pushed Vec would keep up to twice that).
    let mut endpoints = Vec::with_capacity(listed.len().min(MAX_ENDPOINTS_PER_SLICE));
    for (index, ep) in listed.iter().take(MAX_ENDPOINTS_PER_SLICE).enumerate() {
        let Some(raw) = ep.addresses.first() else {
            warnings.push(ConvertWarning::EndpointNoAddress {
                object: object.clone(),
                index,
            });
            continue;
        };
        let address = match raw.parse::<IpAddr>() {
            Ok(ip) if AddressType::of(ip) == address_type => ip,
            parsed => {
                let problem = match parsed {
                    Ok(_) => AddressProblem::WrongFamily { address_type },
                    Err(_) => AddressProblem::NotAnIp,
                };
                warnings.push(ConvertWarning::EndpointBadAddress {
                    object: object.clone(),
                    address: raw.clone(),
                    problem,
                });
                continue;
            }
        };
        let conditions = ep.conditions.as_ref();
        let mut endpoint = Endpoint {
            address,
            ready: conditions.and_then(|c| c.ready).unwrap_or(true),
            serving: conditions.and_then(|c| c.serving).unwrap_or(true),
            terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
            node_name: ep.node_name.as_deref().map(names::intern),
            zone: ep.zone.as_deref().map(names::intern),
            hints: None,
        };
        endpoint.set_hints(
            hint_names(
                ep.hints
                    .as_ref()
                    .and_then(|h| h.for_zones.as_ref())
                    .into_iter()
                    .flatten()
                    .map(|z| &z.name),
            ),
            hint_names(
                ep.hints
                    .as_ref()
                    .and_then(|h| h.for_nodes.as_ref())
                    .into_iter()
                    .flatten()
                    .map(|n| &n.name),
            ),
        );
        endpoints.push(endpoint);
    }
    endpoints.shrink_to_fit();

    Ok(Converted::Kept {
        object: EndpointSlice {
            id: object.id,
            service_name,
            labels: selection_labels(slice.metadata.labels.as_ref()),
            address_type,
            ports,
            endpoints,
        },
        warnings,
    })
}

/// Hints as a sorted set: they are sets in the API, and a stable order keeps an
/// unchanged slice equal to its last version.
fn hint_names<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let set: BTreeSet<&String> = names.filter(|n| !n.is_empty()).collect();
    set.into_iter().cloned().collect()
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]
mod tests;
