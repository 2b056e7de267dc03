//! Conversion from `k8s-openapi` objects into the proxy's domain types.
//!
//! This module owns the rules for reading a Service or an EndpointSlice: defaults
//! (`namespace` → `default`, protocol → TCP, conditions), what is skipped on
//! purpose (ExternalName and headless Services, FQDN slices, slices without the
//! `kubernetes.io/service-name` label), what is dropped piecemeal with a warning
//! (an SCTP port, an endpoint whose address does not parse), and what rejects the
//! whole object (no clusterIP, an invalid clusterIP, a Service port out of range).
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

use std::{collections::BTreeSet, fmt, net::IpAddr};

use k8s_openapi::api::{core::v1 as core, discovery::v1 as discovery};

use super::types::{
    AddressType, Endpoint, EndpointPort, EndpointSlice, ObjectRef, Protocol, Service, ServicePort,
};

/// The label that joins an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Kinds of object this module converts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Service,
    EndpointSlice,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
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
        });
    }

    Ok(Converted::Kept {
        object: Service {
            id: object.id,
            cluster_ips,
            ports,
            publish_not_ready_addresses: spec.publish_not_ready_addresses.unwrap_or(false),
        },
        warnings,
    })
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

    let mut endpoints = Vec::new();
    for (index, ep) in slice.endpoints.iter().flatten().enumerate() {
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
        });
    }

    Ok(Converted::Kept {
        object: EndpointSlice {
            id: object.id,
            service_name,
            address_type,
            ports,
            endpoints,
        },
        warnings,
    })
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
                cluster_ips: vec!["10.96.0.3".parse().unwrap()],
                ports: vec![ServicePort {
                    name: String::new(),
                    port: 80,
                    protocol: Protocol::Tcp
                }],
                publish_not_ready_addresses: false,
            }
        );
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
