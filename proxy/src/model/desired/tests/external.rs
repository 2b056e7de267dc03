//! External frontends: NodePort, ExternalIP and LoadBalancer, both scopes,
//! and the refusals of CVE-2020-8554.

use super::*;
use crate::model::types::{ExternalIpGuard, IpMode};

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
        source_ranges: None,
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
        retained_backends: both.iter().map(|b| (*b, 1)).collect(),
        retained_by_service: BTreeMap::from([(
            ObjectRef::new("shop", "web"),
            both.iter().copied().collect(),
        )]),
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

/// The Service of the refusal tests: a LoadBalancer with ExternalIPs and
/// ingress IPs on a node address, loopback, link-local and elsewhere, and
/// a port on the kubelet's 10250; computed on a node with address
/// `192.168.1.10` (from the Node) and nodeport address `192.168.1.11`.
fn dangerous(guard: ExternalIpGuard) -> DesiredOutcome {
    let host = node(HOST)
        .address("192.168.1.10")
        .nodeport_address("192.168.1.11")
        .external_ip_guard(guard);
    compute_on(
        host.into(),
        vec![
            svc("shop", "web")
                .service_type(ServiceType::LoadBalancer)
                .cluster_ip("10.96.0.10")
                .cluster_ip("fd00:96::10")
                .port("http", 80, Tcp)
                .node_port(30080)
                .port("kubelet", 10250, Tcp)
                .node_port(10250)
                .external_ip("192.168.1.10")
                .external_ip("127.0.0.1")
                .external_ip("169.254.169.254")
                .external_ip("fe80::1")
                .external_ip("192.0.2.7")
                .lb_ip("192.168.1.11")
                .lb_ip("::"),
        ],
        vec![],
    )
}

/// What is refused in both modes: loopback, unspecified, link-local, and
/// the kubelet's port (on ClusterIPs too).
const ALWAYS_REFUSED: [&str; 14] = [
    "Service shop/web: ClusterIP frontend 10.96.0.10:10250/TCP refused: the port is the kubelet's (10250) (CVE-2020-8554)",
    "Service shop/web: ClusterIP frontend [fd00:96::10]:10250/TCP refused: the port is the kubelet's (10250) (CVE-2020-8554)",
    "Service shop/web: ExternalIP frontend 127.0.0.1:80/TCP refused: the address is a loopback or unspecified address (CVE-2020-8554)",
    "Service shop/web: ExternalIP frontend 127.0.0.1:10250/TCP refused: the port is the kubelet's (10250) (CVE-2020-8554)",
    "Service shop/web: ExternalIP frontend 169.254.169.254:80/TCP refused: the address is link-local (CVE-2020-8554)",
    "Service shop/web: ExternalIP frontend 169.254.169.254:10250/TCP refused: the port is the kubelet's (10250) (CVE-2020-8554)",
    "Service shop/web: ExternalIP frontend 192.0.2.7:10250/TCP refused: the port is the kubelet's (10250) (CVE-2020-8554)",
    "Service shop/web: ExternalIP frontend 192.168.1.10:10250/TCP refused: the port is the kubelet's (10250) (CVE-2020-8554)",
    "Service shop/web: NodePort frontend 192.168.1.11:10250/TCP refused: the port is the kubelet's (10250) (CVE-2020-8554)",
    "Service shop/web: LoadBalancer frontend 192.168.1.11:10250/TCP refused: the port is the kubelet's (10250) (CVE-2020-8554)",
    "Service shop/web: ExternalIP frontend [fe80::1]:80/TCP refused: the address is link-local (CVE-2020-8554)",
    "Service shop/web: ExternalIP frontend [fe80::1]:10250/TCP refused: the port is the kubelet's (10250) (CVE-2020-8554)",
    "Service shop/web: LoadBalancer frontend [::]:80/TCP refused: the address is a loopback or unspecified address (CVE-2020-8554)",
    "Service shop/web: LoadBalancer frontend [::]:10250/TCP refused: the port is the kubelet's (10250) (CVE-2020-8554)",
];

fn refusals_of(out: &DesiredOutcome) -> Vec<String> {
    let mut refused: Vec<String> = out.refusals.iter().map(ToString::to_string).collect();
    refused.sort();
    refused
}

fn sorted(lines: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = lines.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

/// By default (kube-proxy's behaviour), an ExternalIP or LoadBalancer IP
/// equal to a node address is served; loopback, unspecified, link-local
/// and the kubelet's port are refused and reported (CVE-2020-8554);
/// everything else of the Service is programmed.
#[test]
fn node_addresses_are_served_by_default_and_the_rest_refused() {
    let out = dangerous(ExternalIpGuard::Default);
    assert_eq!(
        frontends_of(&out.state),
        [
            "10.96.0.10:80/TCP",
            "192.0.2.7:80/TCP",
            "192.168.1.10:80/TCP",
            "192.168.1.11:80/TCP",
            "192.168.1.11:30080/TCP",
            "[fd00:96::10]:80/TCP",
        ]
    );
    assert_eq!(
        out.state.frontends[&fe("192.168.1.10:80", Tcp)].kind,
        FrontendKind::ExternalIp
    );
    assert_eq!(
        out.state.frontends[&fe("192.168.1.11:80", Tcp)].kind,
        FrontendKind::LoadBalancer
    );
    assert_eq!(refusals_of(&out), sorted(&ALWAYS_REFUSED));
}

/// `--external-ip-guard=strict`: a node address (from the Node object or a
/// nodeport address) is refused too, as ExternalIP and as LoadBalancer IP.
#[test]
fn strict_guard_refuses_node_addresses_too() {
    let out = dangerous(ExternalIpGuard::Strict);
    assert_eq!(
        frontends_of(&out.state),
        [
            "10.96.0.10:80/TCP",
            "192.0.2.7:80/TCP",
            "192.168.1.11:30080/TCP",
            "[fd00:96::10]:80/TCP",
        ]
    );
    let mut want = ALWAYS_REFUSED.to_vec();
    want.extend([
        "Service shop/web: ExternalIP frontend 192.168.1.10:80/TCP refused: the address is one of this node's (--external-ip-guard=strict) (CVE-2020-8554)",
        "Service shop/web: LoadBalancer frontend 192.168.1.11:80/TCP refused: the address is one of this node's (--external-ip-guard=strict) (CVE-2020-8554)",
    ]);
    assert_eq!(refusals_of(&out), sorted(&want));
    let reasons: BTreeSet<RefusalReason> = out.refusals.iter().map(|r| r.reason).collect();
    let external: BTreeSet<RefusalReason> = RefusalReason::ALL[..4].iter().copied().collect();
    assert_eq!(reasons, external);
}

/// Every kind of frontend, ClusterIPs included, is refused on a loopback,
/// link-local (the cloud metadata address), multicast or broadcast address
/// and on the API server's; a ClusterIP also on any address of the node
/// (its interfaces' included, whatever `--nodeport-addresses` says) and,
/// with `--service-cluster-ip-range`, outside it. One Service per address,
/// so each is seen on its own; the good ClusterIP is served.
#[test]
fn cluster_ips_and_every_frontend_are_guarded() {
    let host = node(HOST)
        .address("192.168.1.10")
        .interface_address("10.0.0.5")
        .api_server("192.168.1.100")
        .service_cidr("10.96.0.0", 12)
        .service_cidr("fd00:96::", 108);
    let cluster_ips = [
        "10.96.0.10",
        "127.0.0.1",
        "169.254.169.254",
        "224.0.0.251",
        "255.255.255.255",
        "192.168.1.100",
        "192.168.1.10",
        "10.0.0.5",
        "10.200.0.1",
        "fd00:96::10",
        "fe80::1",
        "ff02::fb",
        "fd00:1::1",
    ];
    let services = cluster_ips
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            svc("shop", &format!("s{i}"))
                .cluster_ip(ip)
                .port("http", 80, Tcp)
        })
        .chain([svc("shop", "ext")
            .cluster_ip("10.96.0.20")
            .port("http", 80, Tcp)
            .external_ip("192.168.1.100")
            .external_ip("224.0.0.1")])
        .collect();
    let out = compute_on(host.into(), services, vec![]);
    assert_eq!(
        frontends_of(&out.state),
        [
            "10.96.0.10:80/TCP",
            "10.96.0.20:80/TCP",
            "[fd00:96::10]:80/TCP"
        ]
    );
    let why: Vec<(String, &str)> = out
        .refusals
        .iter()
        .map(|r| (r.frontend.to_string(), r.reason.label()))
        .collect();
    let mut why = why;
    why.sort();
    let mut want: Vec<(String, &str)> = [
        ("10.0.0.5:80/TCP", "node_address"),
        ("10.200.0.1:80/TCP", "outside_service_cidr"),
        ("127.0.0.1:80/TCP", "loopback"),
        ("169.254.169.254:80/TCP", "link_local"),
        ("192.168.1.10:80/TCP", "node_address"),
        ("192.168.1.100:80/TCP", "api_server"),
        ("192.168.1.100:80/TCP", "api_server"),
        ("224.0.0.1:80/TCP", "multicast"),
        ("224.0.0.251:80/TCP", "multicast"),
        ("255.255.255.255:80/TCP", "multicast"),
        ("[fd00:1::1]:80/TCP", "outside_service_cidr"),
        ("[fe80::1]:80/TCP", "link_local"),
        ("[ff02::fb]:80/TCP", "multicast"),
    ]
    .iter()
    .map(|(f, r)| ((*f).to_owned(), *r))
    .collect();
    want.sort();
    assert_eq!(why, want);
    let shown: Vec<String> = out.refusals.iter().map(ToString::to_string).collect();
    assert!(
        shown.contains(&"Service shop/s6: ClusterIP frontend 192.168.1.10:80/TCP refused: the address is one of this node's (CVE-2020-8554)".to_owned()),
        "{shown:#?}"
    );
}

/// `ipMode: Proxy`: the ingress IP gets no frontend at all (kube-proxy
/// leaves it out of `LoadBalancerVIPs`), in either family; `VIP` and unset
/// are served as before, and the NodePort that a Proxy-mode load balancer
/// sends to is unaffected. Nothing is refused: it is not a frontend.
#[test]
fn proxy_mode_load_balancer_ips_get_no_frontend() {
    let host = node(HOST).nodeport_address("192.168.1.10");
    let out = compute_on(
        host.into(),
        vec![
            svc("shop", "web")
                .service_type(ServiceType::LoadBalancer)
                .cluster_ip("10.96.0.10")
                .cluster_ip("fd00:96::10")
                .port("http", 80, Tcp)
                .node_port(30080)
                .lb_ip("203.0.113.9")
                .lb_ip_mode("203.0.113.10", IpMode::Vip)
                .lb_ip_mode("203.0.113.11", IpMode::Proxy)
                .lb_ip_mode("2001:db8::11", IpMode::Proxy)
                // Proxy mode wins over the refusal: not a frontend at all.
                .lb_ip_mode("127.0.0.1", IpMode::Proxy),
        ],
        vec![
            slice("shop", "web-1")
                .for_service("web")
                .port("http", 8080, Tcp)
                .endpoint("10.1.0.5")
                .ready(),
        ],
    );
    assert_eq!(
        frontends_of(&out.state),
        [
            "10.96.0.10:80/TCP",
            "192.168.1.10:30080/TCP",
            "203.0.113.9:80/TCP",
            "203.0.113.10:80/TCP",
            "[fd00:96::10]:80/TCP",
        ]
    );
    assert_eq!(backends(&out, "203.0.113.10:80/TCP"), ["10.1.0.5:8080"]);
    assert!(out.refusals.is_empty(), "{:?}", out.refusals);
}

/// Only Proxy-mode ingress IPs: the Service keeps its ClusterIP and
/// NodePort, and has no LoadBalancer frontend.
#[test]
fn a_service_with_only_proxy_mode_ips_has_no_load_balancer_frontend() {
    let out = compute_on(
        node(HOST).nodeport_address("192.168.1.10").into(),
        vec![
            svc("shop", "web")
                .service_type(ServiceType::LoadBalancer)
                .cluster_ip("10.96.0.10")
                .port("http", 80, Tcp)
                .node_port(30080)
                .lb_ip_mode("203.0.113.11", IpMode::Proxy),
        ],
        vec![],
    );
    let kinds: Vec<FrontendKind> = out.state.frontends.values().map(|s| s.kind).collect();
    assert_eq!(kinds, [FrontendKind::ClusterIp, FrontendKind::NodePort]);
}
