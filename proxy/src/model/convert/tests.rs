//! Tests of the conversion from Kubernetes objects to model types.

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
            load_balancer_source_ranges: Vec::new(),
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
            {"ip": "203.0.113.10", "ipMode": "VIP"},
            {"ip": "203.0.113.11", "ipMode": "Proxy"},
            {"ip": "203.0.113.12", "ipMode": "Tunnel"},
        ]}},
    }))
    .unwrap();
    let (svc, warnings) = kept(service(&svc));
    assert_eq!(
        warnings,
        [
            "Service shop/web: load balancer ingress IP \"bad\" skipped: not an IP address",
            "Service shop/web: unknown ipMode \"Tunnel\", using Proxy",
        ]
    );
    assert_eq!(svc.service_type, ServiceType::LoadBalancer);
    let lb = |addr: &str, mode| LoadBalancerIp {
        addr: addr.parse().unwrap(),
        mode,
    };
    assert_eq!(
        svc.load_balancer_ips,
        [
            lb("203.0.113.9", IpMode::Vip),
            lb("203.0.113.10", IpMode::Vip),
            lb("203.0.113.11", IpMode::Proxy),
            lb("203.0.113.12", IpMode::Proxy),
        ]
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
fn endpoints_are_compact() {
    let raw = k8s_slice(
        "IPv4",
        json!([{"port": 8080}]),
        json!([
            {"addresses": ["10.1.0.5"], "nodeName": "node-7", "zone": "z1"},
            {"addresses": ["10.1.0.6"], "nodeName": "node-7", "zone": "z1", "hints": {}},
            {"addresses": ["10.1.0.7"], "nodeName": "node-8",
             "hints": {"forZones": [{"name": "z1"}]}},
        ]),
    );
    let (slice, _) = kept(endpoint_slice(&raw));
    let [a, b, c] = &slice.endpoints[..] else {
        panic!("three endpoints: {:?}", slice.endpoints);
    };
    // One allocation per node and zone name, shared by their endpoints.
    assert!(crate::model::Name::ptr_eq(
        a.node_name.as_ref().unwrap(),
        b.node_name.as_ref().unwrap()
    ));
    assert!(crate::model::Name::ptr_eq(
        a.zone.as_ref().unwrap(),
        b.zone.as_ref().unwrap()
    ));
    assert_eq!(c.node_name.as_deref(), Some("node-8"));
    // No hints, no allocation (empty hints included).
    assert!(a.hints.is_none() && b.hints.is_none());
    assert_eq!(c.zone_hints(), ["z1"]);
    // No spare capacity.
    assert_eq!(slice.endpoints.capacity(), 3);
    // An address, conditions, two shared names, one pointer.
    assert!(std::mem::size_of::<Endpoint>() <= 64);
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
    assert_eq!(slice.endpoints[0].zone_hints(), ["a", "b"]);
    assert_eq!(slice.endpoints[0].node_hints(), ["n1"]);
    assert!(slice.endpoints[1].zone_hints().is_empty());
    assert!(slice.endpoints[2].node_hints().is_empty());
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
            {"type": "ExternalIP", "address": "203.0.113.9"},
            {"type": "InternalIP", "address": "172.18.0.2"},
            {"type": "InternalIP", "address": "fc00:f853::2"},
            {"type": "ExternalIP", "address": "not-an-ip"},
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
            // InternalIPs first, as kube's GetNodeHostIPs orders them.
            addresses: vec![
                "172.18.0.2".parse().unwrap(),
                "fc00:f853::2".parse().unwrap(),
                "203.0.113.9".parse().unwrap(),
            ],
            nodeport_addresses: vec![],
            external_ip_guard: ExternalIpGuard::Default,
            interface_addresses: vec![],
            api_server_addresses: vec![],
            service_cidrs: vec![],
        }
    );
    assert_eq!(
        node(&raw).primary_addresses(),
        [
            "172.18.0.2".parse::<std::net::IpAddr>().unwrap(),
            "fc00:f853::2".parse().unwrap()
        ]
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
    let raw: core::Node =
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node", "metadata": metadata}))
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

fn lb_with_ranges(ranges: serde_json::Value) -> core::Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "type": "LoadBalancer",
            "clusterIP": "10.96.0.3",
            "externalIPs": ["192.0.2.7"],
            "loadBalancerSourceRanges": ranges,
            "ports": [{"name": "http", "port": 80, "nodePort": 30080}],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}},
    }))
    .unwrap()
}

/// `loadBalancerSourceRanges` are read whole: trimmed, host bits cleared,
/// each once, in order.
#[test]
fn load_balancer_source_ranges_parsed() {
    let (svc, warnings) = kept(service(&lb_with_ranges(json!([
        " 198.51.100.0/24",
        "2001:db8::1/32",
        "198.51.100.9/24",
    ]))));
    assert!(warnings.is_empty(), "{warnings:?}");
    let shown: Vec<String> = svc
        .load_balancer_source_ranges
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(shown, ["198.51.100.0/24", "2001:db8::/32"]);
    let lb_ips: Vec<IpAddr> = svc.load_balancer_ips.iter().map(|lb| lb.addr).collect();
    assert_eq!(lb_ips, ["203.0.113.9".parse::<IpAddr>().unwrap()]);
}

/// One entry that is not a CIDR fails the list closed: the LoadBalancer IPs
/// are not served (the warning says so, naming the Service and the value),
/// the ExternalIP and the NodePort still are.
#[test]
fn an_invalid_source_range_fails_closed() {
    let (svc, warnings) = kept(service(&lb_with_ranges(json!([
        "198.51.100.0/24",
        "10.0.0.1",
    ]))));
    assert_eq!(
        warnings,
        [
            "Service shop/web: loadBalancerSourceRanges entry \"10.0.0.1\" is not a CIDR: its \
             LoadBalancer IPs are not served (fail closed)"
        ]
    );
    assert!(svc.load_balancer_ips.is_empty());
    assert_eq!(svc.external_ips, ["192.0.2.7".parse::<IpAddr>().unwrap()]);
    assert_eq!(svc.ports[0].node_port, Some(30080));
}

#[test]
fn an_invalid_source_range_is_counted_under_its_own_label() {
    let svc = lb_with_ranges(json!(["bad"]));
    let Ok(Converted::Kept { warnings, .. }) = service(&svc) else {
        panic!("the Service is kept");
    };
    let labels: Vec<&str> = warnings.iter().map(ConvertWarning::label).collect();
    assert_eq!(labels, ["invalid_source_range"]);
}
