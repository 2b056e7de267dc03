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

use super::types::{
    AddressType, Endpoint, EndpointPort, EndpointSlice, NodeInfo, ObjectRef, Protocol,
    SelectionLabels, Service, ServicePort, ServiceType, TrafficPolicy,
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

    let mut ports = Vec::new();
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
    for raw in ingress.into_iter().flatten().filter_map(|i| i.ip.as_ref()) {
        match raw.parse::<IpAddr>() {
            Ok(ip) if !load_balancer_ips.contains(&ip) => load_balancer_ips.push(ip),
            Ok(_) => {}
            Err(_) => warnings.push(ConvertWarning::InvalidLoadBalancerIp {
                object: object.clone(),
                ip: raw.clone(),
            }),
        }
    }

    Ok(Converted::Kept {
        object: Service {
            id: object.id,
            service_type,
            cluster_ips,
            external_ips,
            load_balancer_ips,
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
/// parse, are left out.
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
    for address in listed.into_iter().flatten() {
        if !matches!(address.type_.as_str(), "InternalIP" | "ExternalIP") {
            continue;
        }
        if let Ok(ip) = address.address.parse::<IpAddr>()
            && !addresses.contains(&ip)
        {
            addresses.push(ip);
        }
    }
    NodeInfo {
        name: node.metadata.name.clone().unwrap_or_default(),
        zone,
        addresses,
        // Not in the Node object: the daemon resolves them from interfaces.
        nodeport_addresses: Vec::new(),
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
    let mut ports = Vec::new();
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
    let mut endpoints = Vec::new();
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
        endpoints.push(Endpoint {
            address,
            ready: conditions.and_then(|c| c.ready).unwrap_or(true),
            serving: conditions.and_then(|c| c.serving).unwrap_or(true),
            terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
            node_name: ep.node_name.clone(),
            zone: ep.zone.clone(),
            zone_hints: hint_names(
                ep.hints
                    .as_ref()
                    .and_then(|h| h.for_zones.as_ref())
                    .into_iter()
                    .flatten()
                    .map(|z| &z.name),
            ),
            node_hints: hint_names(
                ep.hints
                    .as_ref()
                    .and_then(|h| h.for_nodes.as_ref())
                    .into_iter()
                    .flatten()
                    .map(|n| &n.name),
            ),
        });
    }

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
mod tests {
    use rstest::rstest;
    use serde_json::json;

    use super::*;

    fn k8s_service(spec: serde_json::Value) -> core::Service {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn k8s_slice(
        address_type: &str,
        ports: serde_json::Value,
        endpoints: serde_json::Value,
    ) -> discovery::EndpointSlice {
        serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-1", "namespace": "shop", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": address_type, "ports": ports, "endpoints": endpoints,
        }))
        .unwrap()
    }

    fn kept<T: fmt::Debug>(c: Result<Converted<T>, ConvertError>) -> (T, Vec<String>) {
        match c {
            Ok(Converted::Kept { object, warnings }) => {
                (object, warnings.iter().map(ToString::to_string).collect())
            }
            other => panic!("expected a kept object, got {other:?}"),
        }
    }

    fn web() -> TypedRef {
        TypedRef::new(Kind::Service, ObjectRef::new("shop", "web"))
    }

    #[test]
    fn service_defaults() {
        let svc: core::Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"clusterIP": "10.96.0.3", "ports": [{"port": 80}]},
        }))
        .unwrap();
        let (svc, warnings) = kept(service(&svc));
        assert!(warnings.is_empty());
        assert_eq!(
            svc,
            Service {
                id: ObjectRef::new("default", "web"),
                service_type: ServiceType::ClusterIp,
                cluster_ips: vec!["10.96.0.3".parse().unwrap()],
                external_ips: vec![],
                load_balancer_ips: vec![],
                health_check_node_port: None,
                ports: vec![ServicePort {
                    name: String::new(),
                    port: 80,
                    protocol: Protocol::Tcp,
                    node_port: None,
                }],
                publish_not_ready_addresses: false,
                internal_traffic_policy: TrafficPolicy::Cluster,
                external_traffic_policy: TrafficPolicy::Cluster,
                session_affinity: None,
                traffic_distribution: None,
                labels: SelectionLabels::default(),
            }
        );
    }

    #[test]
    fn service_policies_type_labels_and_external_ips() {
        let svc: core::Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "labels": {
                "app": "web",
                "service.kubernetes.io/service-proxy-name": "ebpf",
            }},
            "spec": {
                "type": "NodePort",
                "clusterIP": "10.96.0.3",
                "externalIPs": ["192.0.2.7", "not-an-ip", "192.0.2.7"],
                "internalTrafficPolicy": "Local",
                "externalTrafficPolicy": "Local",
                "trafficDistribution": "PreferClose",
                "ports": [{"port": 80}],
            },
        }))
        .unwrap();
        let (svc, warnings) = kept(service(&svc));
        assert_eq!(
            warnings,
            ["Service shop/web: externalIP \"not-an-ip\" skipped: not an IP address"]
        );
        assert_eq!(svc.service_type, ServiceType::NodePort);
        assert_eq!(svc.external_ips, ["192.0.2.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(svc.internal_traffic_policy, TrafficPolicy::Local);
        assert_eq!(svc.external_traffic_policy, TrafficPolicy::Local);
        assert_eq!(svc.traffic_distribution.as_deref(), Some("PreferClose"));
        assert_eq!(
            svc.labels,
            SelectionLabels {
                service_proxy_name: Some("ebpf".into()),
                headless: false
            }
        );
        assert!(svc.externally_accessible());
    }

    #[test]
    fn load_balancer_node_ports_ingress_and_health_check() {
        let svc: core::Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "type": "LoadBalancer",
                "clusterIP": "10.96.0.3",
                "externalTrafficPolicy": "Local",
                "healthCheckNodePort": 32000,
                "ports": [
                    {"name": "http", "port": 80, "nodePort": 30080},
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                ],
            },
            "status": {"loadBalancer": {"ingress": [
                {"ip": "203.0.113.9"}, {"hostname": "lb.example"}, {"ip": "bad"},
                {"ip": "203.0.113.9"},
            ]}},
        }))
        .unwrap();
        let (svc, warnings) = kept(service(&svc));
        assert_eq!(
            warnings,
            ["Service shop/web: load balancer ingress IP \"bad\" skipped: not an IP address"]
        );
        assert_eq!(svc.service_type, ServiceType::LoadBalancer);
        assert_eq!(
            svc.load_balancer_ips,
            ["203.0.113.9".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(svc.health_check_node_port, Some(32000));
        let node_ports: Vec<Option<u16>> = svc.ports.iter().map(|p| p.node_port).collect();
        assert_eq!(node_ports, [Some(30080), None]);
    }

    /// `sessionAffinity: ClientIP` and its timeout: default 10800 s, valid
    /// 1..=86400; out of range rejects the Service (the API server would).
    #[rstest]
    #[case::unset(json!({}), Ok(None))]
    #[case::none(json!({"sessionAffinity": "None"}), Ok(None))]
    #[case::client_ip_default(json!({"sessionAffinity": "ClientIP"}), Ok(Some(10_800)))]
    #[case::client_ip_empty_config(
        json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {}}}),
        Ok(Some(10_800))
    )]
    #[case::lowest(
        json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 1}}}),
        Ok(Some(1))
    )]
    #[case::highest(
        json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 86400}}}),
        Ok(Some(86_400))
    )]
    #[case::zero(
        json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}}),
        Err(0)
    )]
    #[case::over_a_day(
        json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 86401}}}),
        Err(86_401)
    )]
    #[case::negative(
        json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": -5}}}),
        Err(-5)
    )]
    #[case::config_without_client_ip_affinity_is_ignored(
        json!({"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}}),
        Ok(None)
    )]
    fn session_affinity_timeout(
        #[case] affinity: serde_json::Value,
        #[case] want: Result<Option<u32>, i32>,
    ) {
        let mut spec = json!({"clusterIP": "10.96.0.3", "ports": [{"port": 80}]});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), affinity.as_object()) {
            spec.extend(extra.clone());
        }
        let got = service(&k8s_service(spec)).map(|c| c.into_object().unwrap().session_affinity);
        let want = want.map_err(|timeout| ConvertError::AffinityTimeoutOutOfRange {
            object: web(),
            timeout,
        });
        assert_eq!(got, want);
    }

    #[test]
    fn affinity_error_message() {
        let err = service(&k8s_service(json!({
            "clusterIP": "10.96.0.3",
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 90000}},
        })))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Service shop/web: sessionAffinityConfig.clientIP.timeoutSeconds 90000 is outside 1..=86400"
        );
    }

    #[rstest]
    #[case::type_(json!({"type": "Balanced"}), "unknown type \"Balanced\", using ClusterIP")]
    #[case::itp(
        json!({"internalTrafficPolicy": "Nearby"}),
        "unknown internalTrafficPolicy \"Nearby\", using Cluster"
    )]
    #[case::etp(
        json!({"externalTrafficPolicy": "local"}),
        "unknown externalTrafficPolicy \"local\", using Cluster"
    )]
    #[case::affinity(
        json!({"sessionAffinity": "Cookie"}),
        "unknown sessionAffinity \"Cookie\", using None"
    )]
    fn unknown_values_warn_and_default(#[case] extra: serde_json::Value, #[case] want: &str) {
        let mut spec = json!({"clusterIP": "10.96.0.3", "ports": [{"port": 80}]});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        let (svc, warnings) = kept(service(&k8s_service(spec)));
        assert_eq!(warnings, [format!("Service shop/web: {want}")]);
        assert_eq!(svc.service_type, ServiceType::ClusterIp);
        assert_eq!(svc.internal_traffic_policy, TrafficPolicy::Cluster);
        assert_eq!(svc.external_traffic_policy, TrafficPolicy::Cluster);
        assert_eq!(svc.session_affinity, None);
    }

    #[test]
    fn hundred_service_ports() {
        let ports: Vec<serde_json::Value> = (0..100)
            .map(|i| json!({"name": format!("p{i}"), "port": 1000 + i}))
            .collect();
        let (svc, warnings) = kept(service(&k8s_service(
            json!({"clusterIP": "10.96.0.3", "ports": ports}),
        )));
        assert!(warnings.is_empty());
        assert_eq!(svc.ports.len(), 100);
    }

    #[test]
    fn slice_hints_and_labels() {
        let mut raw = k8s_slice(
            "IPv4",
            json!([{"port": 8080}]),
            json!([
                {"addresses": ["10.1.0.5"], "hints": {
                    "forZones": [{"name": "b"}, {"name": "a"}, {"name": "a"}],
                    "forNodes": [{"name": "n1"}],
                }},
                {"addresses": ["10.1.0.6"], "hints": {}},
                {"addresses": ["10.1.0.7"]},
            ]),
        );
        if let Some(labels) = raw.metadata.labels.as_mut() {
            labels.insert("service.kubernetes.io/headless".into(), String::new());
        }
        let (slice, warnings) = kept(endpoint_slice(&raw));
        assert!(warnings.is_empty());
        assert_eq!(slice.endpoints[0].zone_hints, ["a", "b"]);
        assert_eq!(slice.endpoints[0].node_hints, ["n1"]);
        assert!(slice.endpoints[1].zone_hints.is_empty());
        assert!(slice.endpoints[2].node_hints.is_empty());
        assert!(slice.labels.headless);
        assert_eq!(slice.labels.service_proxy_name, None);
    }

    /// The API server allows 1000 endpoints per slice; a hand-written slice with
    /// more keeps the first 1000 and says so.
    #[rstest]
    #[case::at_the_limit(1000, 1000, None)]
    #[case::over(
        1003,
        1000,
        Some(
            "EndpointSlice shop/web-1: has 1003 endpoints, more than the 1000 the API server allows: \
         the last 3 are ignored"
        )
    )]
    fn oversized_slice_is_truncated(
        #[case] count: u32,
        #[case] kept_count: usize,
        #[case] warning: Option<&str>,
    ) {
        let endpoints: Vec<serde_json::Value> = (0..count)
            .map(|i| {
                let [_, _, hi, lo] = i.to_be_bytes();
                json!({"addresses": [format!("10.1.{hi}.{lo}")]})
            })
            .collect();
        let (slice, warnings) = kept(endpoint_slice(&k8s_slice(
            "IPv4",
            json!([{"port": 8080}]),
            serde_json::Value::Array(endpoints),
        )));
        assert_eq!(slice.endpoints.len(), kept_count);
        assert_eq!(
            slice.endpoints.last().map(|e| e.address),
            Some("10.1.3.231".parse().unwrap())
        );
        assert_eq!(warnings, warning.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn node_name_zone_and_addresses() {
        let raw: core::Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "worker-1", "labels": {
                "topology.kubernetes.io/zone": "eu-west-1a",
                "kubernetes.io/hostname": "worker-1",
            }},
            "status": {"addresses": [
                {"type": "Hostname", "address": "worker-1"},
                {"type": "InternalIP", "address": "172.18.0.2"},
                {"type": "InternalIP", "address": "fc00:f853::2"},
                {"type": "ExternalIP", "address": "not-an-ip"},
                {"type": "ExternalIP", "address": "203.0.113.9"},
                {"type": "InternalDNS", "address": "10.0.0.1"},
                {"type": "ExternalIP", "address": "172.18.0.2"},
            ]},
        }))
        .unwrap();
        assert_eq!(
            node(&raw),
            NodeInfo {
                name: "worker-1".into(),
                zone: Some("eu-west-1a".into()),
                addresses: vec![
                    "172.18.0.2".parse().unwrap(),
                    "fc00:f853::2".parse().unwrap(),
                    "203.0.113.9".parse().unwrap(),
                ],
                nodeport_addresses: vec![],
            }
        );
    }

    #[rstest]
    #[case::no_labels_no_status(json!({"name": "n1"}), None)]
    #[case::empty_zone(
        json!({"name": "n1", "labels": {"topology.kubernetes.io/zone": ""}}),
        None
    )]
    #[case::zone(
        json!({"name": "n1", "labels": {"topology.kubernetes.io/zone": "a"}}),
        Some("a")
    )]
    fn node_zone(#[case] metadata: serde_json::Value, #[case] zone: Option<&str>) {
        let raw: core::Node = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Node", "metadata": metadata}),
        )
        .unwrap();
        let info = node(&raw);
        assert_eq!(info.name, "n1");
        assert_eq!(info.zone.as_deref(), zone);
        assert!(info.addresses.is_empty());
    }

    #[test]
    fn service_publish_not_ready_and_cluster_ips_preferred() {
        let (svc, _) = kept(service(&k8s_service(json!({
            "clusterIP": "10.96.0.3",
            "clusterIPs": ["fd00::3", "10.96.0.3"],
            "publishNotReadyAddresses": true,
        }))));
        assert!(svc.publish_not_ready_addresses);
        assert_eq!(
            svc.cluster_ips,
            [
                "fd00::3".parse::<IpAddr>().unwrap(),
                "10.96.0.3".parse().unwrap()
            ]
        );
    }

    #[rstest]
    #[case::headless(json!({"clusterIP": "None"}), SkipReason::Headless)]
    #[case::headless_cluster_ips(json!({"clusterIPs": ["None"]}), SkipReason::Headless)]
    #[case::external_name(
        json!({"type": "ExternalName", "externalName": "db.example.com"}),
        SkipReason::ExternalName
    )]
    fn service_skips(#[case] spec: serde_json::Value, #[case] reason: SkipReason) {
        let got = service(&k8s_service(spec)).unwrap();
        assert_eq!(
            got,
            Converted::Skipped(Skip {
                object: web(),
                reason
            })
        );
        assert!(!reason.is_warning());
    }

    #[rstest]
    #[case::no_cluster_ip(json!({}), ConvertError::NoClusterIp { object: web() })]
    #[case::empty_cluster_ips(
        json!({"clusterIPs": [], "clusterIP": ""}),
        ConvertError::NoClusterIp { object: web() }
    )]
    #[case::invalid(
        json!({"clusterIP": "10.96.0"}),
        ConvertError::InvalidClusterIp { object: web(), ip: "10.96.0".into() }
    )]
    #[case::negative_port(
        json!({"clusterIP": "10.96.0.3", "ports": [{"name": "x", "port": -1}]}),
        ConvertError::ServicePortOutOfRange { object: web(), name: "x".into(), port: -1 }
    )]
    fn service_errors(#[case] spec: serde_json::Value, #[case] want: ConvertError) {
        assert_eq!(service(&k8s_service(spec)), Err(want));
    }

    #[test]
    fn service_error_message_names_the_object() {
        let err = service(&k8s_service(json!({}))).unwrap_err();
        assert_eq!(err.to_string(), "Service shop/web: has no clusterIP");
    }

    #[test]
    fn service_drops_unsupported_and_duplicate_ports() {
        let (svc, warnings) = kept(service(&k8s_service(json!({
            "clusterIP": "10.96.0.3",
            "ports": [
                {"name": "a", "port": 80},
                {"name": "b", "port": 80, "protocol": "SCTP"},
                {"name": "c", "port": 80, "protocol": "TCP"},
                {"name": "a", "port": 81, "protocol": "UDP"},
                {"name": "d", "port": 80, "protocol": "UDP"},
            ],
        }))));
        assert_eq!(
            warnings,
            [
                "Service shop/web: port 80 (\"b\") skipped: unsupported protocol SCTP",
                "Service shop/web: port 80 (\"c\") skipped: duplicates an earlier port",
                "Service shop/web: port 81 (\"a\") skipped: duplicates an earlier port",
            ]
        );
        let names: Vec<&str> = svc.ports.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "d"]);
    }

    #[test]
    fn missing_name_is_an_error() {
        let svc: core::Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "shop"},
            "spec": {"clusterIP": "10.96.0.3"},
        }))
        .unwrap();
        assert_eq!(
            service(&svc),
            Err(ConvertError::MissingName {
                kind: Kind::Service,
                namespace: "shop".into()
            })
        );
    }

    #[test]
    fn slice_conditions_default_from_nil() {
        let (slice, warnings) = kept(endpoint_slice(&k8s_slice(
            "IPv4",
            json!([{"port": 8080}]),
            json!([
                {"addresses": ["10.1.0.5"], "nodeName": "n1", "zone": "a"},
                {"addresses": ["10.1.0.6"], "conditions": {"ready": false}},
                {"addresses": ["10.1.0.7"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            ]),
        )));
        assert!(warnings.is_empty());
        assert_eq!(slice.id, ObjectRef::new("shop", "web-1"));
        assert_eq!(slice.service_name, "web");
        assert_eq!(slice.address_type, AddressType::IPv4);
        assert_eq!(
            slice.ports,
            [EndpointPort {
                name: String::new(),
                port: 8080,
                protocol: Protocol::Tcp
            }]
        );
        let conditions: Vec<(bool, bool, bool)> = slice
            .endpoints
            .iter()
            .map(|e| (e.ready, e.serving, e.terminating))
            .collect();
        assert_eq!(
            conditions,
            [
                (true, true, false),
                (false, true, false),
                (false, true, true)
            ]
        );
        assert_eq!(slice.endpoints[0].node_name.as_deref(), Some("n1"));
        assert_eq!(slice.endpoints[0].zone.as_deref(), Some("a"));
    }

    #[test]
    fn slice_ipv6() {
        let (slice, warnings) = kept(endpoint_slice(&k8s_slice(
            "IPv6",
            json!([{"name": "http", "port": 8080}]),
            json!([{"addresses": ["fd00::5"]}, {"addresses": ["10.1.0.5"]}]),
        )));
        assert_eq!(
            warnings,
            ["EndpointSlice shop/web-1: endpoint \"10.1.0.5\" skipped: not an IPv6 address"]
        );
        assert_eq!(slice.endpoints.len(), 1);
        assert_eq!(slice.address_type, AddressType::IPv6);
    }

    #[test]
    fn slice_drops_bad_ports_and_endpoints() {
        let (slice, warnings) = kept(endpoint_slice(&k8s_slice(
            "IPv4",
            json!([
                {"name": "http", "port": 8080, "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "big", "port": 70000},
                {"name": "none"},
                {"name": "sig", "port": 3868, "protocol": "SCTP"},
            ]),
            json!([{"addresses": []}, {"addresses": ["10.1.0.5"]}]),
        )));
        assert_eq!(
            warnings,
            [
                "EndpointSlice shop/web-1: port 70000 (\"big\") skipped: outside 1..=65535",
                "EndpointSlice shop/web-1: port \"none\" skipped: has no port number",
                "EndpointSlice shop/web-1: port 3868 (\"sig\") skipped: unsupported protocol SCTP",
                "EndpointSlice shop/web-1: endpoint 0 skipped: has no address",
            ]
        );
        let ports: Vec<(&str, Protocol)> = slice
            .ports
            .iter()
            .map(|p| (p.name.as_str(), p.protocol))
            .collect();
        assert_eq!(ports, [("http", Protocol::Tcp), ("dns", Protocol::Udp)]);
        assert_eq!(slice.endpoints.len(), 1);
    }

    #[test]
    fn slice_skips_and_errors() {
        let object = TypedRef::new(Kind::EndpointSlice, ObjectRef::new("shop", "web-1"));
        let fqdn = k8s_slice("FQDN", json!([]), json!([]));
        assert_eq!(
            endpoint_slice(&fqdn),
            Ok(Converted::Skipped(Skip {
                object: object.clone(),
                reason: SkipReason::FqdnAddressType
            }))
        );

        let mut unlabelled = k8s_slice("IPv4", json!([]), json!([]));
        unlabelled.metadata.labels = None;
        let skip = Skip {
            object: object.clone(),
            reason: SkipReason::NoServiceNameLabel,
        };
        assert!(skip.is_warning());
        assert_eq!(endpoint_slice(&unlabelled), Ok(Converted::Skipped(skip)));

        let weird = k8s_slice("IPv5", json!([]), json!([]));
        assert_eq!(
            endpoint_slice(&weird).unwrap_err().to_string(),
            "EndpointSlice shop/web-1: unknown addressType \"IPv5\""
        );
    }
}
