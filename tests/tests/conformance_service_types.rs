//! Kubernetes' Service e2e scenarios (`test/e2e/network/service.go`) that
//! change a Service's type or use its NodePort, from a client on the node (the
//! socket hooks in eBPF mode, the userspace listeners otherwise; NodePorts on
//! the node's address [`NODE_IP`]): ClusterIP → NodePort with TCP and UDP on
//! one port number, ExternalName to and from ClusterIP and NodePort, NodePorts
//! released on delete, terminating unready endpoints with and without
//! `publishNotReadyAddresses`, ClientIP affinity through a NodePort (set,
//! expired, switched), and the health-check node port with only terminating
//! endpoints. Each test names its upstream title.

mod common;
mod service_kit;

use common::*;
use service_kit::*;

both_modes! {
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

}

/// A NodePort Service `aff` on port 80 (NodePort 30080) with ClientIP
/// affinity of `timeout` seconds (`None`: no affinity) and web's IPv4 endpoints.
fn affinity_node_port(timeout: Option<u32>) -> String {
    affinity_service(&node_port(VIP), Some(30080), timeout)
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
