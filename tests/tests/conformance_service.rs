//! Kubernetes' Service e2e scenarios (`test/e2e/network/service.go`) that
//! change ClusterIP Services, replayed against the real proxy with real
//! traffic from a client on the node (the socket hooks in eBPF mode, the
//! userspace proxies otherwise): multi-port Services told apart by port name,
//! ports added and removed, a Service recreated, type changes to and from
//! ExternalName, `publishNotReadyAddresses`, the headless label, session
//! affinity switched in place, `internalTrafficPolicy: Local` (with its
//! terminating fallback), one port number with TCP and UDP, and the client's
//! own address seen by the backend. Each test names its upstream title.

mod common;
mod service_kit;

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
};

use common::*;
use proxy_tests::{Reply, TcpBackend};
use service_kit::*;

const VIP: &str = "10.96.0.60";
/// A second TCP target port, served by extra backends on the first two addresses.
const TCP_TARGET2: u16 = 8081;

fn vip(port: u16) -> SocketAddr {
    sock(VIP, port)
}

/// TCP backends on `port` for the first two IPv4 addresses (held for their Drop).
fn extra_tcp(port: u16) -> Vec<TcpBackend> {
    BACKENDS_V4[..2]
        .iter()
        .map(|a| {
            TcpBackend::start(sock(a, port), &backend_name(a, port))
                .unwrap_or_else(|e| panic!("starting a TCP backend on {a}:{port}: {e}"))
        })
        .collect()
}

fn all_v4(port: u16) -> Vec<String> {
    names(&BACKENDS_V4, port)
}

both_modes! {
    /// Upstream: service.go: "should serve multiport endpoints from pods [Conformance]"
    fn serve_multiport_endpoints_from_pods(mode) {
        // Two TCP ports, named target ports: only the port names tell the
        // slice's ports apart.
        let svc = svc_yaml(
            "multi",
            &[],
            &cluster_ip(VIP),
            &[
                Port::tcp("portname1", 80, "svc1"),
                Port::tcp("portname2", 81, "svc2"),
            ],
        );
        let eps = eps_yaml(
            "multi",
            "multi-abcde",
            &[
                ("portname1", "TCP", TCP_TARGET),
                ("portname2", "TCP", TCP_TARGET2),
            ],
            &[Ep::ready(BACKENDS_V4[0]), Ep::ready(BACKENDS_V4[1])],
        );
        let mut f = start(mode, &[("multi.yaml", &format!("{svc}---\n{eps}"))]);
        let _b = extra_tcp(TCP_TARGET2);
        let two = &BACKENDS_V4[..2];
        expect_served(
            &mut f,
            Kind::Tcp,
            vip(80),
            &names(two, TCP_TARGET),
            "port 80",
        );
        expect_served(
            &mut f,
            Kind::Tcp,
            vip(81),
            &names(two, TCP_TARGET2),
            "port 81",
        );

        // Endpoints come and go per port: only the first address left.
        let eps = eps_yaml(
            "multi",
            "multi-abcde",
            &[
                ("portname1", "TCP", TCP_TARGET),
                ("portname2", "TCP", TCP_TARGET2),
            ],
            &[Ep::ready(BACKENDS_V4[0])],
        );
        f.write("multi.yaml", &format!("{svc}---\n{eps}"));
        expect_served(
            &mut f,
            Kind::Tcp,
            vip(80),
            &names(&two[..1], TCP_TARGET),
            "one endpoint, port 80",
        );
        expect_served(
            &mut f,
            Kind::Tcp,
            vip(81),
            &names(&two[..1], TCP_TARGET2),
            "one endpoint, port 81",
        );
        f.assert_proxy_running();
    }

    /// Upstream: service.go: "should be updated after adding or deleting ports"
    fn updated_after_adding_or_deleting_ports(mode) {
        let one = |ports: &[Port], slice_ports: &[(&str, &str, u16)]| {
            let eps: Vec<Ep> = BACKENDS_V4[..2].iter().map(|&a| Ep::ready(a)).collect();
            format!(
                "{}---\n{}",
                svc_yaml("ports", &[], &cluster_ip(VIP), ports),
                eps_yaml("ports", "ports-abcde", slice_ports, &eps)
            )
        };
        let first = one(
            &[Port::tcp("tcp-port", 80, "8080")],
            &[("tcp-port", "TCP", TCP_TARGET)],
        );
        let mut f = start(mode, &[("ports.yaml", &first)]);
        let _b = extra_tcp(TCP_TARGET2);
        let two = &BACKENDS_V4[..2];
        expect_served(
            &mut f,
            Kind::Tcp,
            vip(80),
            &names(two, TCP_TARGET),
            "one port",
        );
        assert!(
            not_served(Kind::Tcp, vip(81)),
            "port 81 is served before it is added"
        );

        // Add a second port.
        f.write(
            "ports.yaml",
            &one(
                &[
                    Port::tcp("tcp-port", 80, "8080"),
                    Port::tcp("tcp-port2", 81, "8081"),
                ],
                &[
                    ("tcp-port", "TCP", TCP_TARGET),
                    ("tcp-port2", "TCP", TCP_TARGET2),
                ],
            ),
        );
        expect_served(
            &mut f,
            Kind::Tcp,
            vip(81),
            &names(two, TCP_TARGET2),
            "port 81 added",
        );
        expect_served(
            &mut f,
            Kind::Tcp,
            vip(80),
            &names(two, TCP_TARGET),
            "port 81 added",
        );

        // Delete the first port: 80 stops, 81 keeps working.
        f.write(
            "ports.yaml",
            &one(
                &[Port::tcp("tcp-port2", 81, "8081")],
                &[("tcp-port2", "TCP", TCP_TARGET2)],
            ),
        );
        expect_not_served(&mut f, Kind::Tcp, vip(80), "port 80 deleted");
        expect_served(
            &mut f,
            Kind::Tcp,
            vip(81),
            &names(two, TCP_TARGET2),
            "port 80 deleted",
        );
        f.assert_proxy_running();
    }

    /// Upstream: service.go: "should work after the service has been recreated"
    fn work_after_the_service_has_been_recreated(mode) {
        let yaml = format!(
            "{}---\n{}",
            svc_yaml(
                "again",
                &[],
                &cluster_ip(VIP),
                &[Port::tcp("http", 80, "8080")]
            ),
            eps_yaml(
                "again",
                "again-abcde",
                &[("http", "TCP", TCP_TARGET)],
                &[Ep::ready(BACKENDS_V4[0])]
            )
        );
        let mut f = start(mode, &[("again.yaml", &yaml)]);
        let a = names(&BACKENDS_V4[..1], TCP_TARGET);
        expect_served(&mut f, Kind::Tcp, vip(80), &a, "created");
        f.remove("again.yaml");
        expect_not_served(&mut f, Kind::Tcp, vip(80), "deleted");
        f.write("again.yaml", &yaml);
        expect_served(&mut f, Kind::Tcp, vip(80), &a, "recreated");
        f.assert_proxy_running();
    }

    /// Upstream: service.go: "should be able to update service type to NodePort listening on same port number but different protocols"
    fn update_type_to_node_port_same_port_number_different_protocols(mode) {
        let eps = eps_yaml(
            "np",
            "np-abcde",
            &[
                ("tcp-port", "TCP", TCP_TARGET),
                ("udp-port", "UDP", UDP_TARGET),
            ],
            &BACKENDS_V4.map(Ep::ready),
        );
        let tcp = Port::tcp("tcp-port", 80, "8080");
        let udp = Port::udp("udp-port", 80, "5353");
        let svc =
            |spec: &str, ports: &[Port]| format!("{}---\n{eps}", svc_yaml("np", &[], spec, ports));
        let mut f = start(mode, &[("np.yaml", &svc(&cluster_ip(VIP), &[tcp]))]);
        let node = sock(NODE_IP, 30080);
        expect_served(&mut f, Kind::Tcp, vip(80), &all_v4(TCP_TARGET), "ClusterIP");
        assert!(
            not_served(Kind::Tcp, node),
            "{node} is served before the type change"
        );

        // ClusterIP → NodePort.
        f.write("np.yaml", &svc(&node_port(VIP), &[tcp.node_port(30080)]));
        expect_served(&mut f, Kind::Tcp, node, &all_v4(TCP_TARGET), "NodePort");
        expect_served(&mut f, Kind::Tcp, vip(80), &all_v4(TCP_TARGET), "NodePort");

        // A UDP port with the same port and nodePort numbers.
        f.write(
            "np.yaml",
            &svc(
                &node_port(VIP),
                &[tcp.node_port(30080), udp.node_port(30080)],
            ),
        );
        for to in [vip(80), node] {
            expect_served(
                &mut f,
                Kind::UdpUnconnected,
                to,
                &all_v4(UDP_TARGET),
                "TCP and UDP on 80",
            );
            expect_served(
                &mut f,
                Kind::Tcp,
                to,
                &all_v4(TCP_TARGET),
                "TCP and UDP on 80",
            );
        }
        f.assert_proxy_running();
    }

    /// Upstream: service.go: "should be able to change the type from ExternalName to ClusterIP [Conformance]"
    fn change_type_from_external_name_to_cluster_ip(mode) {
        let eps = eps_yaml(
            "ext",
            "ext-abcde",
            &[("http", "TCP", TCP_TARGET)],
            &BACKENDS_V4.map(Ep::ready),
        );
        let http = [Port::tcp("http", 80, "8080")];
        let mut f = start(
            mode,
            &[
                ("ext.yaml", &svc_yaml("ext", &[], EXTERNAL_NAME, &[])),
                ("ext-slice.yaml", &eps),
            ],
        );
        assert!(
            not_served(Kind::Tcp, vip(80)),
            "{VIP} served before the Service has it"
        );
        f.write("ext.yaml", &svc_yaml("ext", &[], &cluster_ip(VIP), &http));
        expect_served(
            &mut f,
            Kind::Tcp,
            vip(80),
            &all_v4(TCP_TARGET),
            "ExternalName → ClusterIP",
        );
        f.assert_proxy_running();
    }

    /// Upstream: service.go: "should be able to change the type from ExternalName to NodePort [Conformance]"
    fn change_type_from_external_name_to_node_port(mode) {
        let eps = eps_yaml(
            "ext",
            "ext-abcde",
            &[("http", "TCP", TCP_TARGET)],
            &BACKENDS_V4.map(Ep::ready),
        );
        let mut f = start(
            mode,
            &[
                ("ext.yaml", &svc_yaml("ext", &[], EXTERNAL_NAME, &[])),
                ("ext-slice.yaml", &eps),
            ],
        );
        let node = sock(NODE_IP, 30080);
        assert!(
            not_served(Kind::Tcp, node),
            "{node} served before the Service has it"
        );
        f.write(
            "ext.yaml",
            &svc_yaml(
                "ext",
                &[],
                &node_port(VIP),
                &[Port::tcp("http", 80, "8080").node_port(30080)],
            ),
        );
        expect_served(
            &mut f,
            Kind::Tcp,
            node,
            &all_v4(TCP_TARGET),
            "ExternalName → NodePort",
        );
        expect_served(
            &mut f,
            Kind::Tcp,
            vip(80),
            &all_v4(TCP_TARGET),
            "ExternalName → NodePort",
        );
        f.assert_proxy_running();
    }

    /// Upstream: service.go: "should be able to change the type from ClusterIP to ExternalName [Conformance]"
    fn change_type_from_cluster_ip_to_external_name(mode) {
        let eps = eps_yaml(
            "ext",
            "ext-abcde",
            &[("http", "TCP", TCP_TARGET)],
            &BACKENDS_V4.map(Ep::ready),
        );
        let mut f = start(
            mode,
            &[
                (
                    "ext.yaml",
                    &svc_yaml(
                        "ext",
                        &[],
                        &cluster_ip(VIP),
                        &[Port::tcp("http", 80, "8080")],
                    ),
                ),
                ("ext-slice.yaml", &eps),
            ],
        );
        expect_served(&mut f, Kind::Tcp, vip(80), &all_v4(TCP_TARGET), "ClusterIP");
        f.write("ext.yaml", &svc_yaml("ext", &[], EXTERNAL_NAME, &[]));
        expect_not_served(&mut f, Kind::Tcp, vip(80), "ClusterIP → ExternalName");
        let listening = f.sandbox.listening().unwrap_or_default();
        assert!(
            !listening.contains(&vip(80)),
            "expected nothing to listen on {} once the Service is ExternalName, saw {listening:?}",
            vip(80)
        );
        f.assert_proxy_running();
    }

    /// Upstream: service.go: "should be able to change the type from NodePort to ExternalName [Conformance]"
    fn change_type_from_node_port_to_external_name(mode) {
        let eps = eps_yaml(
            "ext",
            "ext-abcde",
            &[("http", "TCP", TCP_TARGET)],
            &BACKENDS_V4.map(Ep::ready),
        );
        let np = svc_yaml(
            "ext",
            &[],
            &node_port(VIP),
            &[Port::tcp("http", 80, "8080").node_port(30080)],
        );
        let mut f = start(mode, &[("ext.yaml", &np), ("ext-slice.yaml", &eps)]);
        let node = sock(NODE_IP, 30080);
        expect_served(&mut f, Kind::Tcp, node, &all_v4(TCP_TARGET), "NodePort");
        expect_served(&mut f, Kind::Tcp, vip(80), &all_v4(TCP_TARGET), "NodePort");
        f.write("ext.yaml", &svc_yaml("ext", &[], EXTERNAL_NAME, &[]));
        expect_not_served(&mut f, Kind::Tcp, node, "NodePort → ExternalName");
        expect_not_served(&mut f, Kind::Tcp, vip(80), "NodePort → ExternalName");
        let listening = f.sandbox.listening().unwrap_or_default();
        assert!(
            !listening.iter().any(|a| a.port() == 30080),
            "expected nothing to listen on the old NodePort 30080, saw {listening:?}"
        );
        f.assert_proxy_running();
    }

    /// Upstream: service.go: "should release NodePorts on delete"
    fn release_node_ports_on_delete(mode) {
        let eps = eps_yaml(
            "np",
            "np-abcde",
            &[
                ("tcp-port", "TCP", TCP_TARGET),
                ("udp-port", "UDP", UDP_TARGET),
            ],
            &BACKENDS_V4.map(Ep::ready),
        );
        let np = svc_yaml(
            "np",
            &[],
            &node_port(VIP),
            &[
                Port::tcp("tcp-port", 80, "8080").node_port(30080),
                Port::udp("udp-port", 53, "5353").node_port(30053),
            ],
        );
        let mut f = start(mode, &[("np.yaml", &format!("{np}---\n{eps}"))]);
        let (tcp, udp) = (sock(NODE_IP, 30080), sock(NODE_IP, 30053));
        expect_served(&mut f, Kind::Tcp, tcp, &all_v4(TCP_TARGET), "NodePort");
        expect_served(
            &mut f,
            Kind::UdpUnconnected,
            udp,
            &all_v4(UDP_TARGET),
            "NodePort",
        );
        let listening = f.sandbox.listening().unwrap_or_default();
        if mode == Mode::Userspace {
            assert!(
                listening.contains(&tcp) && listening.contains(&udp),
                "the userspace proxies should listen on {tcp} and {udp}, saw {listening:?}"
            );
        }
        f.remove("np.yaml");
        expect_not_served(&mut f, Kind::Tcp, tcp, "deleted");
        expect_not_served(&mut f, Kind::UdpUnconnected, udp, "deleted");
        let listening = f.sandbox.listening().unwrap_or_default();
        assert!(
            !listening
                .iter()
                .any(|a| a.port() == 30080 || a.port() == 30053),
            "expected nothing to listen on the released NodePorts, saw {listening:?}"
        );
        // The released port can be bound by anyone again.
        drop(
            std::net::TcpListener::bind(tcp)
                .unwrap_or_else(|e| panic!("binding the released NodePort {tcp}: {e}")),
        );
        f.assert_proxy_running();
    }

    /// Upstream: service.go: "should create endpoints for unready pods"
    fn create_endpoints_for_unready_pods(mode) {
        let eps = eps_yaml(
            "unready",
            "unready-abcde",
            &[("http", "TCP", TCP_TARGET)],
            &[Ep::unready(BACKENDS_V4[0])],
        );
        let svc = |publish: bool| {
            let spec = format!("{}  publishNotReadyAddresses: {publish}\n", cluster_ip(VIP));
            svc_yaml("unready", &[], &spec, &[Port::tcp("http", 80, "8080")])
        };
        let mut f = start(
            mode,
            &[("unready.yaml", &svc(true)), ("unready-slice.yaml", &eps)],
        );
        let a = names(&BACKENDS_V4[..1], TCP_TARGET);
        expect_served(
            &mut f,
            Kind::Tcp,
            vip(80),
            &a,
            "publishNotReadyAddresses: true",
        );
        f.write("unready.yaml", &svc(false));
        expect_not_served(
            &mut f,
            Kind::Tcp,
            vip(80),
            "publishNotReadyAddresses: false",
        );
        f.write("unready.yaml", &svc(true));
        expect_served(
            &mut f,
            Kind::Tcp,
            vip(80),
            &a,
            "publishNotReadyAddresses: true again",
        );
        f.assert_proxy_running();
    }

    /// Upstream: service.go: "should be able to connect to terminating and unready endpoints if PublishNotReadyAddresses is true"
    fn connect_to_terminating_and_unready_endpoints_if_publish_not_ready_addresses(mode) {
        let mut f = terminating_unready(mode, true);
        let a = names(&BACKENDS_V4[..1], TCP_TARGET);
        expect_served(&mut f, Kind::Tcp, vip(80), &a, "ClusterIP");
        expect_served(&mut f, Kind::Tcp, sock(NODE_IP, 30080), &a, "NodePort");
        f.assert_proxy_running();
    }

    /// Upstream: service.go: "should not be able to connect to terminating and unready endpoints if PublishNotReadyAddresses is false"
    fn no_connect_to_terminating_and_unready_endpoints_without_publish_not_ready_addresses(mode) {
        let mut f = terminating_unready(mode, false);
        // `web` has been served, so the proxy has read both files by now.
        expect_not_served(&mut f, Kind::Tcp, vip(80), "ClusterIP");
        expect_not_served(&mut f, Kind::Tcp, sock(NODE_IP, 30080), "NodePort");

        // The control: the same endpoint turned serving again is reached both ways.
        let eps = eps_yaml(
            "tu",
            "tu-abcde",
            &[("http", "TCP", TCP_TARGET)],
            &[Ep::terminating(BACKENDS_V4[0])],
        );
        f.write("tu-slice.yaml", &eps);
        let a = names(&BACKENDS_V4[..1], TCP_TARGET);
        expect_served(&mut f, Kind::Tcp, vip(80), &a, "terminating, serving again");
        expect_served(
            &mut f,
            Kind::Tcp,
            sock(NODE_IP, 30080),
            &a,
            "terminating, serving again",
        );
        f.assert_proxy_running();
    }

    /// Upstream: service.go: "should implement service.kubernetes.io/headless"
    fn implement_service_kubernetes_io_headless(mode) {
        label_toggles(mode, "service.kubernetes.io/headless", "");
    }

    /// Upstream: service.go: "should implement service.kubernetes.io/service-proxy-name"
    fn implement_service_kubernetes_io_service_proxy_name(mode) {
        label_toggles(mode, "service.kubernetes.io/service-proxy-name", "foo-bar");
    }

    /// Upstream: service.go: "should be able to switch session affinity for service with type clusterIP [LinuxOnly] [Conformance]"
    fn switch_session_affinity_for_cluster_ip(mode) {
        switch_affinity(mode, vip(80), &cluster_ip(VIP), None);
    }

    /// Upstream: service.go: "should have session affinity work for NodePort service [LinuxOnly] [Conformance]"
    fn session_affinity_work_for_node_port(mode) {
        let svc = affinity_node_port(Some(10800));
        let mut f = start(mode, &[("aff.yaml", &svc)]);
        let node = sock(NODE_IP, 30080);
        f.wait_for(PROPAGATION, "the NodePort to be served", || {
            answered(Kind::Tcp, node, 1).is_some()
        });
        let seen = tally(Kind::Tcp, node, 40);
        assert_eq!(
            seen.len(),
            1,
            "ClientIP affinity through {node}: expected one backend, saw {seen:?}"
        );
        f.assert_proxy_running();
    }

    /// Upstream: service.go: "should have session affinity timeout work for NodePort service [LinuxOnly]"
    fn session_affinity_timeout_work_for_node_port(mode) {
        let svc = affinity_node_port(Some(1));
        let mut f = start(mode, &[("aff.yaml", &svc)]);
        let node = sock(NODE_IP, 30080);
        f.wait_for(PROPAGATION, "the NodePort to be served", || {
            answered(Kind::Tcp, node, 1).is_some()
        });
        let seen = tally(Kind::Tcp, node, 10);
        assert_eq!(
            seen.len(),
            1,
            "within the timeout: expected one backend, saw {seen:?}"
        );
        // Past the timeout each connection is balanced afresh: twelve expired
        // picks all landing on one of three backends has odds of 3^-11.
        let mut picks = std::collections::BTreeSet::new();
        for _ in 0..12 {
            std::thread::sleep(std::time::Duration::from_millis(1300));
            let reply = Kind::Tcp
                .request(node, REQUEST)
                .unwrap_or_else(|e| panic!("request to {node}: {e}"));
            picks.insert(reply.backend);
            if picks.len() > 1 {
                f.assert_proxy_running();
                return;
            }
        }
        panic!(
            "expected NodePort affinity to expire after 1 s without connections, every pick went to {picks:?}"
        );
    }

    /// Upstream: service.go: "should be able to switch session affinity for NodePort service [LinuxOnly] [Conformance]"
    fn switch_session_affinity_for_node_port(mode) {
        switch_affinity(mode, sock(NODE_IP, 30080), &node_port(VIP), Some(30080));
    }

    /// Upstream: service.go: "should respect internalTrafficPolicy=Local Pod to Pod"
    fn respect_internal_traffic_policy_local(mode) {
        let [a, b, _] = BACKENDS_V4;
        let ports = [("tcp", "TCP", TCP_TARGET), ("udp", "UDP", UDP_TARGET)];
        let svc = format!("{}  internalTrafficPolicy: Local\n", cluster_ip(VIP));
        let svc = svc_yaml(
            "itp",
            &[],
            &svc,
            &[Port::tcp("tcp", 80, "8080"), Port::udp("udp", 80, "5353")],
        );
        let remote_only = eps_yaml("itp", "itp-abcde", &ports, &[Ep::ready(a).on(OTHER_NODE)]);
        let mut f = start(
            mode,
            &[("itp.yaml", &svc), ("itp-slice.yaml", &remote_only)],
        );
        // Only an endpoint on another node: this node's clients fail.
        expect_not_served(&mut f, Kind::Tcp, vip(80), "only a remote endpoint");
        expect_not_served(
            &mut f,
            Kind::UdpUnconnected,
            vip(80),
            "only a remote endpoint",
        );

        // A local endpoint too: only it is used.
        f.write(
            "itp-slice.yaml",
            &eps_yaml(
                "itp",
                "itp-abcde",
                &ports,
                &[Ep::ready(a).on(OTHER_NODE), Ep::ready(b)],
            ),
        );
        expect_served(
            &mut f,
            Kind::Tcp,
            vip(80),
            &names(&[b], TCP_TARGET),
            "a local endpoint",
        );
        expect_served(
            &mut f,
            Kind::UdpUnconnected,
            vip(80),
            &names(&[b], UDP_TARGET),
            "a local endpoint",
        );
        f.assert_proxy_running();
    }

    /// Upstream: service.go: "should fallback to local terminating endpoints when there are no ready endpoints with internalTrafficPolicy=Local"
    fn fallback_to_local_terminating_endpoints_with_itp_local(mode) {
        let [a, b, _] = BACKENDS_V4;
        let ports = [("http", "TCP", TCP_TARGET)];
        let spec = format!("{}  internalTrafficPolicy: Local\n", cluster_ip(VIP));
        let svc = svc_yaml("itp", &[], &spec, &[Port::tcp("http", 80, "8080")]);
        // The local endpoint terminates (still serving); a ready one elsewhere.
        let eps = eps_yaml(
            "itp",
            "itp-abcde",
            &ports,
            &[Ep::terminating(a), Ep::ready(b).on(OTHER_NODE)],
        );
        let mut f = start(mode, &[("itp.yaml", &svc), ("itp-slice.yaml", &eps)]);
        expect_served(
            &mut f,
            Kind::Tcp,
            vip(80),
            &names(&[a], TCP_TARGET),
            "local terminating, remote ready",
        );

        // It stops serving: nothing local is left, and remote ones never count.
        let eps = eps_yaml(
            "itp",
            "itp-abcde",
            &ports,
            &[Ep::terminating_unserving(a), Ep::ready(b).on(OTHER_NODE)],
        );
        f.write("itp-slice.yaml", &eps);
        expect_not_served(
            &mut f,
            Kind::Tcp,
            vip(80),
            "local terminating and not serving",
        );

        // Only that endpoint, serving again: used, remote or not.
        f.write(
            "itp-slice.yaml",
            &eps_yaml("itp", "itp-abcde", &ports, &[Ep::terminating(a)]),
        );
        expect_served(
            &mut f,
            Kind::Tcp,
            vip(80),
            &names(&[a], TCP_TARGET),
            "only a local terminating endpoint",
        );
        // Upstream's second client, on a node without the endpoint: the only
        // (terminating, serving) endpoint is on another node, so it fails.
        f.write(
            "itp-slice.yaml",
            &eps_yaml(
                "itp",
                "itp-abcde",
                &ports,
                &[Ep::terminating(a).on(OTHER_NODE)],
            ),
        );
        expect_not_served(
            &mut f,
            Kind::Tcp,
            vip(80),
            "only a remote terminating endpoint",
        );
        f.assert_proxy_running();
    }

    /// Upstream: service.go: "should fail health check node port if there are only terminating endpoints"
    fn fail_health_check_node_port_with_only_terminating_endpoints(mode) {
        let [a, _, _] = BACKENDS_V4;
        let spec = format!(
            "  type: LoadBalancer\n  clusterIP: {VIP}\n  clusterIPs: [\"{VIP}\"]\n  \
             externalTrafficPolicy: Local\n  healthCheckNodePort: 31999\n"
        );
        let svc = svc_yaml(
            "hc",
            &[],
            &spec,
            &[Port::tcp("http", 80, "8080").node_port(30080)],
        );
        let ports = [("http", "TCP", TCP_TARGET)];
        let mut f = start(
            mode,
            &[
                ("hc.yaml", &svc),
                (
                    "hc-slice.yaml",
                    &eps_yaml("hc", "hc-abcde", &ports, &[Ep::ready(a)]),
                ),
            ],
        );
        let hc = format!("{NODE_IP}:31999");
        let mut last = None;
        f.wait_for(
            PROPAGATION,
            "the health-check node port to answer 200",
            || {
                last = Some(http_get(&hc, "/healthz"));
                matches!(&last, Some(Ok((200, _))))
            },
        );
        let node = sock(NODE_IP, 30080);
        let only_a = names(&[a], TCP_TARGET);
        expect_served(&mut f, Kind::Tcp, node, &only_a, "ready");

        // The only endpoint terminates, still serving: 503, yet still reachable.
        f.write(
            "hc-slice.yaml",
            &eps_yaml("hc", "hc-abcde", &ports, &[Ep::terminating(a)]),
        );
        let mut last = None;
        f.wait_for(
            PROPAGATION,
            "the health-check node port to answer 503",
            || {
                last = Some(http_get(&hc, "/healthz"));
                matches!(&last, Some(Ok((503, _))))
            },
        );
        let Some(Ok((_, body))) = last else {
            unreachable!()
        };
        assert!(body.contains(r#""localEndpoints":0"#), "{body}");
        expect_served(&mut f, Kind::Tcp, node, &only_a, "terminating");
        f.assert_proxy_running();
    }

    /// Upstream: service.go: "should serve endpoints on same port and different protocols [Conformance]"
    fn serve_endpoints_on_same_port_and_different_protocols(mode) {
        same_port_different_protocols(mode, &cluster_ip(VIP), false);
    }

    /// Upstream: service.go: "should serve endpoints on same port and different protocol for internal traffic on Type LoadBalancer"
    fn serve_same_port_different_protocols_internal_traffic_on_load_balancer(mode) {
        let spec = format!(
            "  type: LoadBalancer\n  clusterIP: {VIP}\n  clusterIPs: [\"{VIP}\"]\n  \
             externalTrafficPolicy: Cluster\n"
        );
        same_port_different_protocols(mode, &spec, true);
    }
}

/// Upstream: service.go: "should preserve source pod IP for traffic thru service cluster IP [LinuxOnly]"
///
/// eBPF mode only: the socket hooks rewrite no packet, so the backend sees the
/// client's own socket address. The userspace proxies relay, so there the
/// backend sees the proxy's connection (README: "What the userspace path does
/// not do").
#[test]
fn preserve_source_pod_ip_for_traffic_thru_cluster_ip() {
    let f = Fixture::with_web(Mode::Ebpf);
    for vip in [WEB_VIP4, WEB_VIP6] {
        for _ in 0..10 {
            let to = sock(vip, TCP_PORT);
            let mut s = TcpStream::connect_timeout(&to, REQUEST)
                .unwrap_or_else(|e| panic!("connecting to {to}: {e}"));
            s.set_read_timeout(Some(REQUEST)).expect("read timeout");
            let local = s.local_addr().expect("local address");
            s.write_all(b"hello\n").expect("sending");
            let mut line = String::new();
            let _ = s.read_to_string(&mut line);
            let reply: Reply = line
                .parse()
                .unwrap_or_else(|e| panic!("reply {line:?}: {e}"));
            assert_eq!(
                reply.peer, local,
                "TCP to {to}: the backend ({}) saw another source",
                reply.backend
            );

            let to = sock(vip, UDP_PORT);
            let any = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let u = UdpSocket::bind(any).expect("binding a UDP client");
            u.set_read_timeout(Some(REQUEST)).expect("read timeout");
            u.connect(to)
                .unwrap_or_else(|e| panic!("connecting to {to}: {e}"));
            let local = u.local_addr().expect("local address");
            u.send(b"hello\n").expect("sending");
            let mut buf = [0u8; 512];
            let n = u
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("UDP to {to}: {e}"));
            let reply: Reply = String::from_utf8_lossy(&buf[..n])
                .parse()
                .unwrap_or_else(|e| panic!("UDP reply: {e}"));
            assert_eq!(
                reply.peer, local,
                "UDP to {to}: the backend ({}) saw another source",
                reply.backend
            );
        }
    }
    drop(f);
}

/// A NodePort Service `aff` on port 80 (NodePort 30080) with ClientIP
/// affinity of `timeout` seconds (`None`: no affinity) and web's IPv4 endpoints.
fn affinity_node_port(timeout: Option<u32>) -> String {
    affinity_service(&node_port(VIP), Some(30080), timeout)
}

fn affinity_service(spec: &str, node: Option<u16>, timeout: Option<u32>) -> String {
    let mut port = Port::tcp("http", 80, "8080");
    if let Some(n) = node {
        port = port.node_port(n);
    }
    let spec = match timeout {
        Some(t) => format!(
            "{spec}  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n      \
             timeoutSeconds: {t}\n"
        ),
        None => format!("{spec}  sessionAffinity: None\n"),
    };
    format!(
        "{}---\n{}",
        svc_yaml("aff", &[], &spec, &[port]),
        eps_yaml(
            "aff",
            "aff-abcde",
            &[("http", "TCP", TCP_TARGET)],
            &BACKENDS_V4.map(Ep::ready)
        )
    )
}

/// Upstream's switch: ClientIP affinity (one backend), switched to None (the
/// backends spread), and back to ClientIP (one backend again), all in place.
fn switch_affinity(mode: Mode, to: SocketAddr, spec: &str, node: Option<u16>) {
    let mut f = start(
        mode,
        &[("aff.yaml", &affinity_service(spec, node, Some(10800)))],
    );
    f.wait_for(PROPAGATION, "the Service to be served", || {
        answered(Kind::Tcp, to, 1).is_some()
    });
    let seen = tally(Kind::Tcp, to, 30);
    assert_eq!(
        seen.len(),
        1,
        "ClientIP affinity on {to}: expected one backend, saw {seen:?}"
    );

    f.write("aff.yaml", &affinity_service(spec, node, None));
    f.wait_for(
        PROPAGATION,
        &format!("{to} to spread again without affinity"),
        || answered(Kind::Tcp, to, 15).is_some_and(|s| s.len() > 1),
    );
    expect_served(&mut f, Kind::Tcp, to, &all_v4(TCP_TARGET), "affinity None");

    f.write("aff.yaml", &affinity_service(spec, node, Some(10800)));
    f.wait_for(PROPAGATION, &format!("{to} to be sticky again"), || {
        answered(Kind::Tcp, to, 20).is_some_and(|s| s.len() == 1)
    });
    let seen = tally(Kind::Tcp, to, 30);
    assert_eq!(
        seen.len(),
        1,
        "ClientIP affinity again on {to}: expected one backend, saw {seen:?}"
    );
    f.assert_proxy_running();
}

/// A NodePort Service `tu` (30080) whose only endpoint is terminating, not
/// ready and not serving, with `publishNotReadyAddresses: publish`.
fn terminating_unready(mode: Mode, publish: bool) -> Fixture {
    let spec = format!("{}  publishNotReadyAddresses: {publish}\n", node_port(VIP));
    let svc = svc_yaml(
        "tu",
        &[],
        &spec,
        &[Port::tcp("http", 80, "8080").node_port(30080)],
    );
    let eps = eps_yaml(
        "tu",
        "tu-abcde",
        &[("http", "TCP", TCP_TARGET)],
        &[Ep::terminating_unserving(BACKENDS_V4[0])],
    );
    start(mode, &[("tu.yaml", &svc), ("tu-slice.yaml", &eps)])
}

/// TCP 80 and UDP 80 on one Service (`spec`, with NodePorts when `node_ports`):
/// both served on the cluster IP; the UDP port removed (UDP stops, TCP goes
/// on); then UDP back and TCP removed (the reverse).
fn same_port_different_protocols(mode: Mode, spec: &str, node_ports: bool) {
    let (mut tcp, mut udp) = (
        Port::tcp("tcp-port", 80, "8080"),
        Port::udp("udp-port", 80, "5353"),
    );
    if node_ports {
        tcp = tcp.node_port(30080);
        udp = udp.node_port(30080);
    }
    let write = |f: &Fixture, ports: &[Port]| {
        let slice_ports: Vec<(&str, &str, u16)> = ports
            .iter()
            .map(|p| {
                (
                    p.name,
                    p.protocol,
                    if p.protocol == "TCP" {
                        TCP_TARGET
                    } else {
                        UDP_TARGET
                    },
                )
            })
            .collect();
        f.write(
            "dual.yaml",
            &format!(
                "{}---\n{}",
                svc_yaml("dual", &[], spec, ports),
                eps_yaml(
                    "dual",
                    "dual-abcde",
                    &slice_ports,
                    &BACKENDS_V4.map(Ep::ready)
                )
            ),
        );
    };
    let mut f = start(mode, &[]);
    write(&f, &[tcp, udp]);
    expect_served(
        &mut f,
        Kind::Tcp,
        vip(80),
        &all_v4(TCP_TARGET),
        "TCP and UDP",
    );
    expect_served(
        &mut f,
        Kind::UdpUnconnected,
        vip(80),
        &all_v4(UDP_TARGET),
        "TCP and UDP",
    );
    expect_served(
        &mut f,
        Kind::UdpConnected,
        vip(80),
        &all_v4(UDP_TARGET),
        "TCP and UDP",
    );
    if node_ports {
        // Upstream's reachability check covers the NodePorts too.
        let node = sock(NODE_IP, 30080);
        expect_served(
            &mut f,
            Kind::Tcp,
            node,
            &all_v4(TCP_TARGET),
            "TCP and UDP NodePorts",
        );
        expect_served(
            &mut f,
            Kind::UdpUnconnected,
            node,
            &all_v4(UDP_TARGET),
            "TCP and UDP NodePorts",
        );
    }

    write(&f, &[tcp]);
    expect_not_served(&mut f, Kind::UdpUnconnected, vip(80), "UDP removed");
    expect_served(
        &mut f,
        Kind::Tcp,
        vip(80),
        &all_v4(TCP_TARGET),
        "UDP removed",
    );

    write(&f, &[udp]);
    expect_not_served(&mut f, Kind::Tcp, vip(80), "TCP removed");
    expect_served(
        &mut f,
        Kind::UdpUnconnected,
        vip(80),
        &all_v4(UDP_TARGET),
        "TCP removed",
    );
    f.assert_proxy_running();
}

/// Upstream's label tests: a Service labelled `key: value` is not served
/// while `web`, written with it, is; once the label is removed it is served;
/// labelled again, it is withdrawn.
fn label_toggles(mode: Mode, key: &str, value: &str) {
    let eps = eps_yaml(
        "hl",
        "hl-abcde",
        &[("http", "TCP", TCP_TARGET)],
        &BACKENDS_V4.map(Ep::ready),
    );
    let svc = |labels: &[(&str, &str)]| {
        svc_yaml(
            "hl",
            labels,
            &cluster_ip(VIP),
            &[Port::tcp("http", 80, "8080")],
        )
    };
    let labelled = [(key, value)];
    let mut f = start(
        mode,
        &[("hl.yaml", &svc(&labelled)), ("hl-slice.yaml", &eps)],
    );
    expect_not_served(&mut f, Kind::Tcp, vip(80), &format!("labelled {key}"));
    f.write("hl.yaml", &svc(&[]));
    expect_served(
        &mut f,
        Kind::Tcp,
        vip(80),
        &all_v4(TCP_TARGET),
        "label removed",
    );
    f.write("hl.yaml", &svc(&labelled));
    expect_not_served(&mut f, Kind::Tcp, vip(80), "label added back");
    f.assert_proxy_running();
}
