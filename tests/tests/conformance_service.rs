//! Kubernetes' Service e2e scenarios (`test/e2e/network/service.go`) on
//! ClusterIPs, replayed against the real proxy with real traffic from a client
//! on the node (the socket hooks in eBPF mode, the userspace proxies
//! otherwise): multi-port Services told apart by port name, ports added and
//! removed, a Service recreated, `publishNotReadyAddresses` for unready pods,
//! the headless and service-proxy-name labels, session affinity switched in
//! place, `internalTrafficPolicy: Local` (with its terminating fallback), one
//! port number with TCP and UDP, and the client's own address seen by the
//! backend. Type changes and NodePorts are in `conformance_service_types.rs`,
//! external clients in `conformance_service_northsouth.rs`. Each test names
//! its upstream title.

mod common;
mod service_kit;

use std::{
    io::{Read as _, Write as _},
    net::{TcpStream, UdpSocket},
};

use common::*;
use proxy_tests::{Reply, TcpBackend};
use service_kit::*;

/// A second TCP target port, served by extra backends on the first two addresses.
const TCP_TARGET2: u16 = 8081;

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
