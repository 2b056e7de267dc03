//! North-south traffic through the per-packet (tc) path, with real packets in
//! the two-node [`Topology`]: an external client on a LAN sends to node 1's
//! NodePorts, ExternalIPs and LoadBalancer IPs; the proxy runs on node 1 with
//! `--devices eth0`; backends live in pods on node 1 and node 2 and say which
//! source address they saw.
//!
//! Backends: every pod address (`10.244.N.1x`, `fd00:244:N::1x`, three per node)
//! runs a TCP backend on :8080 (answering every line of a connection) and a UDP
//! backend on :5353, each named `<addr>:<port>`.
//!
//! Covered: NodePort over TCP and UDP, IPv4 and IPv6 (TCP in both dataplane
//! modes); ExternalIP and LoadBalancer IP; `externalTrafficPolicy` Cluster
//! (SNAT to node 1 for a node-2 backend) vs Local (client IP preserved, only
//! local endpoints, dropped without one); a fast reject without endpoints; a
//! long-lived flow that stays on its backend while new flows follow the
//! endpoint set; bulk TCP (64 MiB each way on one connection, GSO packets
//! processed on several CPUs at once) without a reset or a mid-flow
//! conntrack miss; the health-check node port; refused ExternalIPs; an
//! ExternalIP on the node's own address, served by default and refused under
//! `--external-ip-guard=strict`; graceful termination (a long-lived stream
//! crosses its endpoint terminating, then deleted, with no reset; the entry
//! drains for `--backend-grace-period`); Maglev (`--lb-algorithm`): TCP
//! streams and UDP flows that lose node 1's conntrack mid-flow keep their
//! backend, and move under random selection.

#[expect(
    dead_code,
    reason = "this file uses part of the shared north-south world"
)]
mod northsouth_world;

use std::{
    collections::BTreeMap,
    io::{self, ErrorKind},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use proxy_tests::{
    Mode, Reply, TcpSession, both_modes, http_get,
    manifest::{AddressType, Endpoint, EndpointSlice, Protocol, Service},
    northsouth::{NODE1_V4, NODE1_V6, Place},
    proxy_bin, tcp_request_timeout, udp_ask, udp_connected_socket, udp_unconnected_request_timeout,
    wait_until,
};

use northsouth_world::*;

/// Far above a refusal's real cost, far below a hang. Below a SYN
/// retransmission too (1 s), which a refused TCP connect must not need: the
/// tc path answers TCP with a RST, which the client's kernel never drops,
/// where an ICMP error arriving while `connect()` holds the socket lock would
/// be (`TcpExtLockDroppedIcmps`).
const AT_ONCE: Duration = Duration::from_secs(1);
/// Requests per tally: enough to see each of three backends (P(miss) ≈ 3·(2/3)^40).
const TALLY: usize = 40;

fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} is not an IP: {e}"))
}

/// The cluster IPs of the `n`th test Service (`10.96.0.n`, `fd00:96::n`).
fn cluster_ips(n: u8) -> [String; 2] {
    [format!("10.96.0.{n}"), format!("fd00:96::{n:x}")]
}

/// A dual-stack Service with ports `http` (80/TCP → 8080) and `dns` (53/UDP →
/// 5353) and the given type; NodePorts `tcp_node_port`/`udp_node_port` when
/// not a ClusterIP.
fn base_service(name: &str, n: u8, service_type: &str, node_ports: Option<(u16, u16)>) -> Service {
    let [v4, v6] = cluster_ips(n);
    let mut svc = Service::new(NAMESPACE, name)
        .cluster_ip(v4)
        .cluster_ip(v6)
        .port("http", Protocol::Tcp, TCP_PORT, TCP_TARGET)
        .port("dns", Protocol::Udp, UDP_PORT, UDP_TARGET)
        .service_type(service_type);
    if let Some((tcp, udp)) = node_ports {
        svc = svc.node_port("http", tcp).node_port("dns", udp);
    }
    svc
}

/// `service`'s slice for `family` with ready endpoints `pods`.
fn slice(service: &str, family: AddressType, pods: &[Pod]) -> String {
    let name = match family {
        AddressType::IPv4 => format!("{service}-4xk2p"),
        AddressType::IPv6 => format!("{service}-6q8nd"),
    };
    let mut s = EndpointSlice::new(NAMESPACE, &name, service, family)
        .port("http", Protocol::Tcp, TCP_TARGET)
        .port("dns", Protocol::Udp, UDP_TARGET);
    for pod in pods {
        s = s.endpoint(Endpoint::ready(pod.addr(family)).on_node(pod.node_name()));
    }
    s.to_yaml()
}

impl World {
    /// Writes `service` and its two slices (endpoints `pods`).
    fn write_service(&self, svc: &Service, pods: &[Pod]) {
        self.write(&format!("{}-service.yaml", svc.name), &svc.to_yaml());
        self.write_slices(&svc.name, pods);
    }

    fn write_slices(&self, service: &str, pods: &[Pod]) {
        for family in FAMILIES {
            self.write(
                &format!("{service}-slice-{family}.yaml"),
                &slice(service, family, pods),
            );
        }
    }

    /// Waits until a TCP request from the client to `frontend` is answered.
    fn wait_served(&mut self, frontend: SocketAddr, timeout: Duration) {
        self.wait_for(
            timeout,
            &format!("the client's TCP requests to {frontend} to be served"),
            |w| w.client(|| tcp_request_timeout(frontend, PROBE)).is_ok(),
        );
    }

    /// `n` TCP requests from the client to `frontend`; panics on a failure.
    fn tcp_replies(&self, frontend: SocketAddr, n: usize) -> Vec<Reply> {
        self.client(|| {
            (0..n)
                .map(|i| {
                    tcp_request_timeout(frontend, REQUEST).unwrap_or_else(|e| {
                        panic!("client → {frontend}: TCP request {i} of {n} failed: {e}")
                    })
                })
                .collect()
        })
    }

    /// `n` UDP requests (fresh unconnected sockets) from the client; panics on
    /// a failure or when a reply does not come from `frontend`.
    fn udp_replies(&self, frontend: SocketAddr, n: usize) -> Vec<Reply> {
        self.client(|| {
            (0..n)
                .map(|i| {
                    let (reply, from) = udp_unconnected_request_timeout(frontend, REQUEST)
                        .unwrap_or_else(|e| {
                            panic!("client → {frontend}: UDP request {i} of {n} failed: {e}")
                        });
                    assert_eq!(
                        from, frontend,
                        "client → {frontend}: the reply ({reply}) must come from the \
                         frontend, not the backend"
                    );
                    reply
                })
                .collect()
        })
    }
}

/// How often each backend answered.
fn tally(replies: &[Reply]) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for r in replies {
        *seen.entry(r.backend.clone()).or_insert(0) += 1;
    }
    seen
}

fn assert_backends(what: &str, replies: &[Reply], expected: &[String]) {
    let seen = tally(replies);
    let mut want = expected.to_vec();
    want.sort();
    let got: Vec<String> = seen.keys().cloned().collect();
    assert_eq!(
        got, want,
        "{what}: expected exactly these backends to answer, saw {seen:?}"
    );
}

const WEB_PODS: [Pod; 3] = [Pod(1, 1), Pod(1, 2), Pod(2, 1)];

both_modes! {
    /// A NodePort over TCP, both families: the client's connections to node 1's
    /// LAN address spread over every endpoint, on both nodes.
    fn nodeport_tcp_reaches_every_endpoint(mode) {
        let mut w = World::new(mode);
        let svc = base_service("web", 10, "NodePort", Some((30080, 30053)));
        w.write_service(&svc, &WEB_PODS);
        w.start_proxy(&[]);
        for family in FAMILIES {
            let frontend = SocketAddr::new(node1_ip(family), 30080);
            w.wait_served(frontend, STARTUP);
            let replies = w.tcp_replies(frontend, TALLY);
            let expected: Vec<String> = WEB_PODS.iter().map(|p| p.tcp_name(family)).collect();
            assert_backends(&format!("{mode}: NodePort {frontend}"), &replies, &expected);
        }
    }
}

/// A NodePort over UDP, both families: every reply comes back from the
/// NodePort (reverse NAT), and every endpoint is used.
#[test]
fn nodeport_udp_reaches_every_endpoint_and_replies_come_from_the_frontend() {
    let mut w = World::new(Mode::Ebpf);
    let svc = base_service("web", 10, "NodePort", Some((30080, 30053)));
    w.write_service(&svc, &WEB_PODS);
    w.start_proxy(&[]);
    for family in FAMILIES {
        w.wait_served(SocketAddr::new(node1_ip(family), 30080), STARTUP);
        let frontend = SocketAddr::new(node1_ip(family), 30053);
        let replies = w.udp_replies(frontend, TALLY);
        let expected: Vec<String> = WEB_PODS.iter().map(|p| p.udp_name(family)).collect();
        assert_backends(&format!("UDP NodePort {frontend}"), &replies, &expected);
    }
}

/// `externalTrafficPolicy: Cluster` with only a node-2 endpoint: node 1
/// forwards to node 2 and SNATs to its own address, so the backend sees node 1,
/// and replies come back through it (TCP and UDP, both families). Node 1's
/// `eth0` is a veth whose peer is in the LAN's namespace, so both directions
/// leave with `bpf_redirect_peer` (`tc_fib_redirected_peer`), never through
/// `eth0`'s egress (`tc_fib_redirected`).
#[test]
fn etp_cluster_to_a_remote_endpoint_is_snated_to_the_node() {
    let mut w = World::new(Mode::Ebpf);
    let remote = [Pod(2, 2)];
    let svc = base_service("web", 10, "NodePort", Some((30080, 30053)))
        .external_traffic_policy("Cluster");
    w.write_service(&svc, &remote);
    w.start_proxy(&[]);
    w.wait_served(SocketAddr::new(node1_ip(FAMILIES[0]), 30080), STARTUP);
    let (peer, plain) = (
        stat(&w, "tc_fib_redirected_peer"),
        stat(&w, "tc_fib_redirected"),
    );
    for family in FAMILIES {
        let tcp = SocketAddr::new(node1_ip(family), 30080);
        w.wait_served(tcp, STARTUP);
        let replies = w.tcp_replies(tcp, 5);
        assert_backends(&format!("{tcp}"), &replies, &[remote[0].tcp_name(family)]);
        assert_eq!(
            peers(&replies),
            vec![node1_ip(family)],
            "{tcp}: ETP=Cluster to a node-2 backend: it must see node 1's address"
        );
        let udp = SocketAddr::new(node1_ip(family), 30053);
        let replies = w.udp_replies(udp, 5);
        assert_eq!(
            peers(&replies),
            vec![node1_ip(family)],
            "{udp}: {replies:?}"
        );
    }
    let stats = stats(&w);
    assert!(
        stat(&w, "tc_fib_redirected_peer") > peer,
        "no packet went out with bpf_redirect_peer:\n{stats}"
    );
    assert_eq!(
        stat(&w, "tc_fib_redirected"),
        plain,
        "packets to a veth with its peer in another namespace went through its egress:\n{stats}"
    );
}

/// `externalTrafficPolicy: Local`: only node 1's endpoints serve external
/// traffic, and they see the client's own address (TCP and UDP, both families).
#[test]
fn etp_local_preserves_the_client_ip_and_uses_only_local_endpoints() {
    let mut w = World::new(Mode::Ebpf);
    let svc =
        base_service("web", 10, "NodePort", Some((30080, 30053))).external_traffic_policy("Local");
    w.write_service(&svc, &WEB_PODS);
    w.start_proxy(&[]);
    let local = [Pod(1, 1), Pod(1, 2)];
    for family in FAMILIES {
        let tcp = SocketAddr::new(node1_ip(family), 30080);
        w.wait_served(tcp, STARTUP);
        let replies = w.tcp_replies(tcp, TALLY);
        let expected: Vec<String> = local.iter().map(|p| p.tcp_name(family)).collect();
        assert_backends(&format!("ETP=Local {tcp}"), &replies, &expected);
        assert_eq!(
            peers(&replies),
            vec![client_ip(family)],
            "{tcp}: ETP=Local must preserve the client's address"
        );
        let udp = SocketAddr::new(node1_ip(family), 30053);
        let replies = w.udp_replies(udp, TALLY);
        let expected: Vec<String> = local.iter().map(|p| p.udp_name(family)).collect();
        assert_backends(&format!("ETP=Local {udp}"), &replies, &expected);
        assert_eq!(peers(&replies), vec![client_ip(family)], "{udp}");
    }
}

/// `externalTrafficPolicy: Local` without a local endpoint drops external
/// traffic (semantics.md): the client's connect neither succeeds nor is
/// refused. A second Service proves the datapath is up meanwhile.
#[test]
fn etp_local_without_local_endpoints_drops_external_traffic() {
    let mut w = World::new(Mode::Ebpf);
    let up = base_service("up", 10, "NodePort", Some((30080, 30053)));
    w.write_service(&up, &WEB_PODS);
    let remote_only = base_service("remote", 11, "NodePort", Some((30081, 30054)))
        .external_traffic_policy("Local");
    w.write_service(&remote_only, &[Pod(2, 1), Pod(2, 2)]);
    w.start_proxy(&[]);
    for family in FAMILIES {
        w.wait_served(SocketAddr::new(node1_ip(family), 30080), STARTUP);
        let dropped = SocketAddr::new(node1_ip(family), 30081);
        let result = w.client(|| TcpStream::connect_timeout(&dropped, Duration::from_secs(1)));
        match result {
            Err(e) if e.kind() == ErrorKind::TimedOut => {}
            other => panic!(
                "{dropped}: ETP=Local with no local endpoint: expected the SYN to be dropped \
                 (a timeout), saw {other:?}"
            ),
        }
    }
}

/// ExternalIPs and LoadBalancer ingress IPs (routed by the client via node
/// 1) are served like the NodePort, over TCP and UDP, both families.
#[test]
fn external_ips_and_load_balancer_ips_are_served() {
    let mut w = World::new(Mode::Ebpf);
    let svc = base_service("web", 10, "LoadBalancer", Some((30080, 30053)))
        .external_ip("203.0.113.10")
        .external_ip("fd00:203::10")
        .load_balancer_ingress("203.0.113.20")
        .load_balancer_ingress("fd00:203::20");
    w.write_service(&svc, &WEB_PODS);
    w.start_proxy(&[]);
    for (family, addrs) in [
        (AddressType::IPv4, ["203.0.113.10", "203.0.113.20"]),
        (AddressType::IPv6, ["fd00:203::10", "fd00:203::20"]),
    ] {
        w.wait_served(SocketAddr::new(node1_ip(family), 30080), STARTUP);
        for addr in addrs {
            let tcp = SocketAddr::new(ip(addr), TCP_PORT);
            w.wait_served(tcp, PROPAGATION);
            let replies = w.tcp_replies(tcp, TALLY);
            let expected: Vec<String> = WEB_PODS.iter().map(|p| p.tcp_name(family)).collect();
            assert_backends(&format!("{tcp}"), &replies, &expected);
            let udp = SocketAddr::new(ip(addr), UDP_PORT);
            let replies = w.udp_replies(udp, TALLY);
            let expected: Vec<String> = WEB_PODS.iter().map(|p| p.udp_name(family)).collect();
            assert_backends(&format!("{udp}"), &replies, &expected);
        }
    }
}

/// A LoadBalancer IP with `externalTrafficPolicy: Local` keeps the client's
/// address too, and uses only the local endpoint.
#[test]
fn load_balancer_ip_with_etp_local_preserves_the_client_ip() {
    let mut w = World::new(Mode::Ebpf);
    let svc = base_service("web", 10, "LoadBalancer", Some((30080, 30053)))
        .external_traffic_policy("Local")
        .health_check_node_port(32100)
        .load_balancer_ingress("203.0.113.20");
    w.write_service(&svc, &[Pod(1, 3), Pod(2, 1)]);
    w.start_proxy(&[]);
    let lb = SocketAddr::new(ip("203.0.113.20"), TCP_PORT);
    w.wait_served(lb, STARTUP);
    let replies = w.tcp_replies(lb, 10);
    assert_backends(
        &format!("{lb}"),
        &replies,
        &[Pod(1, 3).tcp_name(AddressType::IPv4)],
    );
    assert_eq!(peers(&replies), vec![client_ip(AddressType::IPv4)]);
}

/// `Ok(how long it took)` when a TCP connect to `addr` is refused.
fn refused_tcp(addr: SocketAddr) -> Result<Duration, String> {
    let start = Instant::now();
    let result = TcpStream::connect_timeout(&addr, REQUEST);
    let elapsed = start.elapsed();
    match result {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(elapsed),
        Err(e) => Err(format!("{e} ({:?}) after {elapsed:?}", e.kind())),
        Ok(s) => Err(format!("a connection to {:?}", s.peer_addr())),
    }
}

/// `Ok(how long it took)` when a connected UDP socket learns (from an ICMP
/// port unreachable) that `addr` refuses.
fn refused_udp(addr: SocketAddr) -> Result<Duration, String> {
    let any: SocketAddr = match addr {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("an address"),
        SocketAddr::V6(_) => "[::]:0".parse().expect("an address"),
    };
    let start = Instant::now();
    let attempt = || -> io::Result<usize> {
        let socket = UdpSocket::bind(any)?;
        socket.set_read_timeout(Some(REQUEST))?;
        socket.connect(addr)?;
        socket.send(b"hello\n")?;
        let mut buf = [0u8; 256];
        socket.recv(&mut buf)
    };
    let result = attempt();
    let elapsed = start.elapsed();
    match result {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(elapsed),
        Err(e) => Err(format!("{e} ({:?}) after {elapsed:?}", e.kind())),
        Ok(n) => Err(format!("a {n}-byte answer")),
    }
}

/// No endpoints: TCP to the NodePort and the ExternalIP is refused at once
/// (ECONNREFUSED from the RST, without a SYN retransmission), and UDP gets an ICMP
/// port unreachable (ECONNREFUSED on a connected socket), both families.
#[test]
fn no_endpoints_are_rejected_at_once() {
    let mut w = World::new(Mode::Ebpf);
    let up = base_service("up", 10, "NodePort", Some((30080, 30053)));
    w.write_service(&up, &WEB_PODS);
    let empty = base_service("empty", 11, "LoadBalancer", Some((30081, 30054)))
        .external_ip("203.0.113.11")
        .external_ip("fd00:203::11");
    w.write_service(&empty, &[]);
    w.start_proxy(&[]);
    for (family, external) in [
        (AddressType::IPv4, "203.0.113.11"),
        (AddressType::IPv6, "fd00:203::11"),
    ] {
        w.wait_served(SocketAddr::new(node1_ip(family), 30080), STARTUP);
        for (tcp, udp) in [
            (
                SocketAddr::new(node1_ip(family), 30081),
                SocketAddr::new(node1_ip(family), 30054),
            ),
            (
                SocketAddr::new(ip(external), TCP_PORT),
                SocketAddr::new(ip(external), UDP_PORT),
            ),
        ] {
            match w.client(|| refused_tcp(tcp)) {
                Ok(elapsed) => assert!(elapsed < AT_ONCE, "{tcp}: refused after {elapsed:?}"),
                Err(seen) => panic!("{tcp}: expected ECONNREFUSED at once, saw {seen}"),
            }
            match w.client(|| refused_udp(udp)) {
                Ok(elapsed) => assert!(elapsed < AT_ONCE, "{udp}: refused after {elapsed:?}"),
                Err(seen) => panic!("{udp}: expected ECONNREFUSED (ICMP) at once, saw {seen}"),
            }
        }
    }
}

/// A long-lived TCP flow through the NodePort stays on its backend (conntrack)
/// while the endpoint set changes around it (grows, then loses another
/// endpoint), and new flows follow the endpoint set. Its own backend stays in
/// the set: a flow whose backend is removed is re-balanced (proxy-ebpf's
/// tc.rs), which for TCP means a reset.
#[test]
fn a_long_lived_flow_stays_on_its_backend_while_new_flows_follow_the_endpoints() {
    let mut w = World::new(Mode::Ebpf);
    let first = Pod(1, 1);
    let svc = base_service("web", 10, "NodePort", Some((30080, 30053)));
    w.write_service(&svc, &[first]);
    w.start_proxy(&[]);
    for family in FAMILIES {
        let frontend = SocketAddr::new(node1_ip(family), 30080);
        w.write_slices("web", &[first]);
        w.wait_for(STARTUP, "the first endpoint only", |w| {
            w.client(|| {
                (0..5).all(|_| {
                    tcp_request_timeout(frontend, PROBE)
                        .is_ok_and(|r| r.backend == first.tcp_name(family))
                })
            })
        });
        // The socket is made in the client's namespace and stays there; the
        // test thread can use it.
        let mut session = w
            .client(|| TcpSession::open(frontend, REQUEST))
            .unwrap_or_else(|e| panic!("{frontend}: opening the long-lived flow: {e}"));
        let mut ask = |what: &str| {
            for i in 0..5 {
                let reply = session.request().unwrap_or_else(|e| {
                    panic!("{frontend}: the long-lived flow failed ({what}, request {i}): {e}")
                });
                assert_eq!(
                    reply.backend,
                    first.tcp_name(family),
                    "{frontend}: request {i} on the long-lived flow moved ({what})"
                );
            }
        };
        ask("before any change");

        for (what, set) in [
            ("grown", vec![first, Pod(1, 2), Pod(2, 1)]),
            ("shrunk", vec![first, Pod(2, 1)]),
        ] {
            w.write_slices("web", &set);
            let expected: Vec<String> = set.iter().map(|p| p.tcp_name(family)).collect();
            w.wait_for(
                PROPAGATION,
                &format!("new flows to reach exactly the {what} set"),
                |w| {
                    let replies = w.client(|| {
                        (0..TALLY)
                            .map(|_| tcp_request_timeout(frontend, PROBE))
                            .collect::<io::Result<Vec<Reply>>>()
                    });
                    replies.is_ok_and(|r| {
                        let seen: Vec<String> = tally(&r).into_keys().collect();
                        let mut want = expected.clone();
                        want.sort();
                        seen == want
                    })
                },
            );
            ask(what);
        }
    }
}

/// The health-check node port of a LoadBalancer Service with
/// `externalTrafficPolicy: Local` answers kube-proxy's way: 200 with the local
/// endpoint count while there are local endpoints, 503 with 0 without.
#[test]
fn health_check_node_port_reports_local_endpoints() {
    let mut w = World::new(Mode::Ebpf);
    // One port, one family: kube-proxy counts local endpoint address:ports per
    // family, so here the count is the number of local pods, whatever the
    // reading of the multi-port, dual-stack case.
    let svc = Service::new(NAMESPACE, "web")
        .cluster_ip("10.96.0.10")
        .port("http", Protocol::Tcp, TCP_PORT, TCP_TARGET)
        .service_type("LoadBalancer")
        .node_port("http", 30080)
        .external_traffic_policy("Local")
        .health_check_node_port(32100)
        .load_balancer_ingress("203.0.113.20");
    w.write(&format!("{}-service.yaml", svc.name), &svc.to_yaml());
    let web_slice = |pods: &[Pod]| {
        let mut s = EndpointSlice::new(NAMESPACE, "web-4xk2p", "web", AddressType::IPv4).port(
            "http",
            Protocol::Tcp,
            TCP_TARGET,
        );
        for pod in pods {
            s = s.endpoint(Endpoint::ready(pod.addr(AddressType::IPv4)).on_node(pod.node_name()));
        }
        s.to_yaml()
    };
    w.write("web-slice-IPv4.yaml", &web_slice(&WEB_PODS));
    w.start_proxy(&[]);
    let hc = SocketAddr::new(node1_ip(AddressType::IPv4), 32100);
    let get = |w: &World| w.client(|| http_get(hc, "/healthz", PROBE));
    w.wait_for(STARTUP, &format!("{hc} to answer 200"), |w| {
        get(w).is_ok_and(|r| r.status == 200)
    });
    let check = |r: &proxy_tests::HttpResponse, status: u16, local: u64| {
        assert_eq!(r.status, status, "{hc}: {r:?}");
        assert_eq!(
            r.header("X-Load-Balancing-Endpoint-Weight"),
            Some(local.to_string().as_str()),
            "{hc}: the weight header is the local endpoint count: {r:?}"
        );
        let body: serde_json::Value = serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("{hc}: the body is not JSON ({e}): {:?}", r.body));
        assert_eq!(body["service"]["namespace"], NAMESPACE, "{body}");
        assert_eq!(body["service"]["name"], "web", "{body}");
        assert_eq!(body["localEndpoints"], local, "{body}");
        assert_eq!(body["serviceProxyHealthy"], true, "{body}");
    };
    let r = get(&w).expect("an answer");
    check(&r, 200, 2);

    w.write("web-slice-IPv4.yaml", &web_slice(&[Pod(2, 1)]));
    w.wait_for(PROPAGATION, &format!("{hc} to answer 503"), |w| {
        get(w).is_ok_and(|r| r.status == 503)
    });
    let r = get(&w).expect("an answer");
    check(&r, 503, 0);
}

/// ExternalIPs that are a loopback or link-local address, or on the
/// kubelet's port 10250, are refused (CVE-2020-8554) in the default
/// `--external-ip-guard` and the log says so; the rest of the same Services
/// are still served. (A node address is served by default: see
/// `external_ips_on_the_node_address_are_served_by_default`.)
#[test]
fn dangerous_external_ips_are_refused_and_logged() {
    let mut w = World::new(Mode::Ebpf);
    let svc = base_service("web", 10, "ClusterIP", None)
        .external_ip("203.0.113.30")
        .external_ip("169.254.169.254")
        .external_ip("127.0.0.1");
    w.write_service(&svc, &WEB_PODS);
    let kubelet = Service::new(NAMESPACE, "kubelet")
        .cluster_ip("10.96.0.11")
        .port("http", Protocol::Tcp, 10250, TCP_TARGET)
        .external_ip("203.0.113.31");
    w.write("kubelet-service.yaml", &kubelet.to_yaml());
    w.write_slices("kubelet", &WEB_PODS);
    w.start_proxy(&[]);
    let good = SocketAddr::new(ip("203.0.113.30"), TCP_PORT);
    w.wait_served(good, STARTUP);

    for refused in [
        SocketAddr::new(ip("169.254.169.254"), TCP_PORT),
        SocketAddr::new(ip("203.0.113.31"), 10250),
    ] {
        let result = w.client(|| tcp_request_timeout(refused, PROBE));
        assert!(
            result.is_err(),
            "{refused}: a refused ExternalIP must not be served, got {result:?}"
        );
    }
    let log = w.log();
    for needle in [
        format!("169.254.169.254:{TCP_PORT}"),
        format!("127.0.0.1:{TCP_PORT}"),
        "203.0.113.31:10250".to_owned(),
    ] {
        let said = log
            .lines()
            .any(|line| line.contains(&needle) && line.contains("refused"));
        assert!(
            said,
            "expected the log to say that ExternalIP frontend {needle} is refused; the log:\n{log}"
        );
    }
}

/// The port of `svclb`, the LoadBalancer Service on node addresses.
const SVCLB_PORT: u16 = 8443;

/// `web` as a NodePort Service whose ExternalIPs are node 1's own LAN
/// addresses (`externalIPs: [nodeIP]`, as bare-metal set-ups use), and
/// `svclb`, a LoadBalancer Service whose ingress IPs are node 1's addresses
/// (as k3s' ServiceLB writes them), TCP [`SVCLB_PORT`] → 8080; served by a
/// proxy with `--external-ip-guard guard`; waits until web's NodePort
/// answers the client in both families.
fn node_address_external_ips(mode: Mode, guard: &str) -> World {
    let mut w = World::new(mode);
    let svc = base_service("web", 10, "NodePort", Some((30080, 30053)))
        .external_ip(NODE1_V4)
        .external_ip(NODE1_V6);
    w.write_service(&svc, &WEB_PODS);
    let [v4, v6] = cluster_ips(12);
    let svclb = Service::new(NAMESPACE, "svclb")
        .cluster_ip(v4)
        .cluster_ip(v6)
        .port("http", Protocol::Tcp, SVCLB_PORT, TCP_TARGET)
        .service_type("LoadBalancer")
        .node_port("http", 30443)
        .load_balancer_ingress(NODE1_V4)
        .load_balancer_ingress(NODE1_V6);
    w.write_service(&svclb, &WEB_PODS);
    w.start_proxy(&["--external-ip-guard", guard]);
    for family in FAMILIES {
        w.wait_served(SocketAddr::new(node1_ip(family), 30080), STARTUP);
    }
    w
}

both_modes! {
    /// kube-proxy's behaviour, the default: an ExternalIP equal to node 1's
    /// own address is served to an external client like any other, over
    /// TCP and UDP in both families, by every endpoint on both nodes; so is
    /// a LoadBalancer IP equal to it.
    fn external_ips_on_the_node_address_are_served_by_default(mode) {
        let mut w = node_address_external_ips(mode, "default");
        for family in FAMILIES {
            let tcp = SocketAddr::new(node1_ip(family), TCP_PORT);
            w.wait_served(tcp, PROPAGATION);
            let replies = w.tcp_replies(tcp, TALLY);
            let expected: Vec<String> = WEB_PODS.iter().map(|p| p.tcp_name(family)).collect();
            assert_backends(&format!("{mode}: ExternalIP {tcp}"), &replies, &expected);
            let udp = SocketAddr::new(node1_ip(family), UDP_PORT);
            let replies = w.udp_replies(udp, TALLY);
            let expected: Vec<String> = WEB_PODS.iter().map(|p| p.udp_name(family)).collect();
            assert_backends(&format!("{mode}: ExternalIP {udp}"), &replies, &expected);
            let lb = SocketAddr::new(node1_ip(family), SVCLB_PORT);
            w.wait_served(lb, PROPAGATION);
            let replies = w.tcp_replies(lb, TALLY);
            let expected: Vec<String> = WEB_PODS.iter().map(|p| p.tcp_name(family)).collect();
            assert_backends(&format!("{mode}: LoadBalancer {lb}"), &replies, &expected);
        }
        let log = w.log();
        assert!(!log.contains("refused: the address is one of this node's"), "{log}");
    }
}

both_modes! {
    /// `--external-ip-guard=strict`: the same ExternalIPs and LoadBalancer
    /// IPs are refused (CVE-2020-8554) and the log names each; the
    /// Services' NodePorts are still served. Nothing else listens on those
    /// ports of node 1, so the client's connection is refused.
    fn external_ips_on_the_node_address_are_refused_when_strict(mode) {
        let w = node_address_external_ips(mode, "strict");
        for family in FAMILIES {
            let refused = SocketAddr::new(node1_ip(family), TCP_PORT);
            let result = w.client(|| tcp_request_timeout(refused, PROBE));
            assert!(
                result.is_err(),
                "{mode}: {refused}: an ExternalIP on the node's address must not be served \
                 under the strict guard, got {result:?}"
            );
            let needle = format!("ExternalIP frontend {refused}/TCP refused: the address is one of this node's");
            let log = w.log();
            assert!(log.contains(&needle), "expected {needle:?} in the log:\n{log}");

            let refused = SocketAddr::new(node1_ip(family), SVCLB_PORT);
            let result = w.client(|| tcp_request_timeout(refused, PROBE));
            assert!(result.is_err(), "{mode}: LoadBalancer {refused} served: {result:?}");
            let needle = format!("LoadBalancer frontend {refused}/TCP refused: the address is one of this node's");
            assert!(log.contains(&needle), "expected {needle:?} in the log:\n{log}");
        }
        let node_port = SocketAddr::new(node1_ip(AddressType::IPv4), 30443);
        let result = w.client(|| tcp_request_timeout(node_port, REQUEST));
        assert!(result.is_ok(), "{mode}: svclb's NodePort {node_port}: {result:?}");
    }
}

/// Bytes pushed each way by the bulk test (64 MiB: thousands of GSO/TSO
/// super-packets, long enough for a flow to go wrong mid-stream).
const BULK_BYTES: u64 = 64 << 20;
/// The bulk Service's port (and target port) and its NodePorts.
const BULK_PORT: u16 = 9000;
/// Per-read/write timeout on the bulk sockets.
const BULK_IO: Duration = Duration::from_secs(20);

/// The bulk stream's period (prime, so no segment size lines up with it).
const BULK_PERIOD: usize = 251;
/// Bytes per read/write call on the bulk sockets.
const BULK_CHUNK: usize = 256 * 1024;

/// The bulk stream from offset 0, long enough to slice any chunk out of it
/// at any phase: the byte at offset `i` is `i % 251`. Built once, so the
/// transfer runs at the path's speed, not the (debug-built) test's.
fn bulk_pattern() -> Vec<u8> {
    (0..BULK_CHUNK + BULK_PERIOD)
        .map(|i| (i % BULK_PERIOD) as u8)
        .collect()
}

/// Writes `n` bytes of the bulk stream.
fn bulk_write(s: &mut TcpStream, n: u64) -> io::Result<()> {
    use std::io::Write;
    let pattern = bulk_pattern();
    let mut sent = 0;
    while sent < n {
        let len = (n - sent).min(BULK_CHUNK as u64) as usize;
        let phase = (sent % BULK_PERIOD as u64) as usize;
        s.write_all(&pattern[phase..phase + len])?;
        sent += len as u64;
    }
    Ok(())
}

/// Reads until EOF, checking the bulk stream; the byte count.
fn bulk_read(s: &mut TcpStream) -> io::Result<u64> {
    use std::io::Read;
    let pattern = bulk_pattern();
    let mut buf = vec![0u8; BULK_CHUNK];
    let mut got = 0u64;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(got);
        }
        let phase = (got % BULK_PERIOD as u64) as usize;
        if buf[..n] != pattern[phase..phase + n] {
            let k = (0..n)
                .find(|&k| buf[k] != pattern[phase + k])
                .unwrap_or_default();
            return Err(io::Error::other(format!(
                "byte {} is {:#x}, expected {:#x}",
                got + k as u64,
                buf[k],
                pattern[phase + k]
            )));
        }
        got += n as u64;
    }
}

/// A one-connection bulk backend on `bind` inside `place`: accepts one
/// connection (within [`BULK_IO`]); `upload`: reads the stream to EOF and
/// answers its length (8 bytes, big-endian); else writes [`BULK_BYTES`] and
/// closes. Its thread's result says what the backend saw.
fn bulk_backend(
    w: &World,
    place: Place,
    bind: SocketAddr,
    upload: bool,
) -> std::thread::JoinHandle<Result<u64, String>> {
    let listener = w
        .topo
        .in_ns(place, || std::net::TcpListener::bind(bind))
        .unwrap_or_else(|e| panic!("entering {place:?} for the bulk backend: {e}"))
        .unwrap_or_else(|e| panic!("binding the bulk backend on {bind}: {e}"));
    listener
        .set_nonblocking(true)
        .expect("non-blocking bulk listener");
    std::thread::spawn(move || {
        let deadline = Instant::now() + BULK_IO;
        let mut s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        let io = |e: io::Error| format!("{e} (kind {:?})", e.kind());
        s.set_nonblocking(false).map_err(io)?;
        s.set_read_timeout(Some(BULK_IO)).map_err(io)?;
        s.set_write_timeout(Some(BULK_IO)).map_err(io)?;
        if upload {
            let got = bulk_read(&mut s).map_err(io)?;
            std::io::Write::write_all(&mut s, &got.to_be_bytes()).map_err(io)?;
            Ok(got)
        } else {
            bulk_write(&mut s, BULK_BYTES).map_err(io)?;
            s.shutdown(std::net::Shutdown::Write).map_err(io)?;
            Ok(BULK_BYTES)
        }
    })
}

/// One bulk transfer from the client through `frontend` to the backend
/// listening on `backend` in `place`; `upload`: client → backend.
fn bulk_transfer(w: &World, frontend: SocketAddr, place: Place, backend: SocketAddr, upload: bool) {
    let what = format!(
        "{frontend} → {backend}, {}",
        if upload {
            "client → backend"
        } else {
            "backend → client"
        }
    );
    let server = bulk_backend(w, place, backend, upload);
    let new_flows = stat(w, "tc_dnat");
    let mut s = w
        .client(|| TcpStream::connect_timeout(&frontend, REQUEST))
        .unwrap_or_else(|e| panic!("{what}: connect: {e}"));
    s.set_read_timeout(Some(BULK_IO)).expect("read timeout");
    s.set_write_timeout(Some(BULK_IO)).expect("write timeout");
    let client = if upload {
        bulk_write(&mut s, BULK_BYTES)
            .and_then(|()| s.shutdown(std::net::Shutdown::Write))
            .and_then(|()| {
                let mut len = [0u8; 8];
                std::io::Read::read_exact(&mut s, &mut len)?;
                Ok(u64::from_be_bytes(len))
            })
    } else {
        bulk_read(&mut s)
    };
    let server = server.join().expect("the bulk backend panicked");
    match (client, server) {
        (Ok(c), Ok(b)) => {
            assert_eq!(c, BULK_BYTES, "{what}: the client saw {c} bytes");
            assert_eq!(b, BULK_BYTES, "{what}: the backend saw {b} bytes");
            // One new flow (the SYN): a later packet balanced as a new flow
            // means its conntrack entry was missed mid-flow (re-SNATed to
            // another port, that is a reset).
            assert_eq!(
                stat(w, "tc_dnat") - new_flows,
                1,
                "{what}: packets of the flow were balanced anew; proxy stats:\n{}",
                stats(w)
            );
        }
        (c, b) => panic!(
            "{what}: the transfer failed: client {c:?}, backend {b:?}; proxy stats:\n{}",
            stats(w)
        ),
    }
}

/// `proxy inspect stats` of the world's pins (for failure messages).
fn stats(w: &World) -> String {
    inspect_stats(w, false)
}

/// `proxy inspect stats [--output json]` of the world's pins.
fn inspect_stats(w: &World, json: bool) -> String {
    let mut cmd = std::process::Command::new(proxy_bin());
    cmd.args(["inspect", "stats", "--pin-path"])
        .arg(w.sandbox.pin_path());
    if json {
        cmd.args(["--output", "json"]);
    }
    cmd.output()
        .map(|o| {
            let stderr = if json {
                Default::default()
            } else {
                String::from_utf8_lossy(&o.stderr)
            };
            format!("{}{stderr}", String::from_utf8_lossy(&o.stdout))
        })
        .unwrap_or_else(|e| format!("(proxy inspect stats: {e})"))
}

/// The count of one `STATS` reason (`proxy inspect stats --output json`).
fn stat(w: &World, reason: &str) -> u64 {
    let out = inspect_stats(w, true);
    let v: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("proxy inspect stats printed no JSON ({e}):\n{out}"));
    v["stats"]
        .as_array()
        .and_then(|list| list.iter().find(|e| e["reason"] == reason))
        .and_then(|e| e["count"].as_u64())
        .unwrap_or_else(|| panic!("no count for {reason:?} in {v:#}"))
}

/// Bulk TCP (64 MiB over one connection, each way, both families) through a
/// NodePort with a single endpoint: on node 2 (forwarded over the LAN, SNATed
/// to node 1) and on node 1. Large GSO/TSO packets cross the tc path here;
/// every byte must arrive, in order, without a reset.
#[test]
fn bulk_tcp_through_a_nodeport_arrives_whole_both_ways() {
    let mut w = World::new(Mode::Ebpf);
    let cases = [(Pod(2, 1), 30090_u16, 30080_u16), (Pod(1, 1), 30091, 30081)];
    for (i, (pod, bulk_np, http_np)) in cases.into_iter().enumerate() {
        let name = format!("bulk{i}");
        let [v4, v6] = cluster_ips(20 + i as u8);
        let svc = Service::new(NAMESPACE, &name)
            .cluster_ip(v4)
            .cluster_ip(v6)
            .port("http", Protocol::Tcp, TCP_PORT, TCP_TARGET)
            .port("bulk", Protocol::Tcp, BULK_PORT, BULK_PORT)
            .service_type("NodePort")
            .node_port("http", http_np)
            .node_port("bulk", bulk_np);
        w.write(&format!("{name}-service.yaml"), &svc.to_yaml());
        for family in FAMILIES {
            let suffix = match family {
                AddressType::IPv4 => "v4",
                AddressType::IPv6 => "v6",
            };
            let slice = EndpointSlice::new(NAMESPACE, &format!("{name}-{suffix}"), &name, family)
                .port("http", Protocol::Tcp, TCP_TARGET)
                .port("bulk", Protocol::Tcp, BULK_PORT)
                .endpoint(Endpoint::ready(pod.addr(family)).on_node(pod.node_name()));
            w.write(&format!("{name}-slice-{family}.yaml"), &slice.to_yaml());
        }
    }
    w.start_proxy(&[]);
    for (pod, bulk_np, http_np) in cases {
        let place = if pod.0 == 1 {
            Place::Pods1
        } else {
            Place::Pods2
        };
        for family in FAMILIES {
            w.wait_served(SocketAddr::new(node1_ip(family), http_np), STARTUP);
            let frontend = SocketAddr::new(node1_ip(family), bulk_np);
            let backend = SocketAddr::new(pod.addr(family), BULK_PORT);
            for upload in [true, false] {
                bulk_transfer(&w, frontend, place, backend, upload);
            }
        }
    }
}

/// The LoadBalancer IPs of the source-range tests.
const LB_V4: &str = "203.0.113.20";
const LB_V6: &str = "fd00:203::20";

fn lb_ip(family: AddressType) -> IpAddr {
    match family {
        AddressType::IPv4 => ip(LB_V4),
        AddressType::IPv6 => ip(LB_V6),
    }
}

/// A dual-stack LoadBalancer Service (`lbsr`, both LoadBalancer IPs) with
/// `loadBalancerSourceRanges` `ranges`.
fn ranged_service(ranges: &[&str]) -> Service {
    let mut svc = base_service("lbsr", 12, "LoadBalancer", Some((30082, 30055)))
        .load_balancer_ingress(LB_V4)
        .load_balancer_ingress(LB_V6);
    for r in ranges {
        svc = svc.load_balancer_source_range(r);
    }
    svc
}

/// Whether the client's TCP request to `frontend` is served now.
fn tcp_served(w: &World, frontend: SocketAddr) -> bool {
    w.client(|| tcp_request_timeout(frontend, PROBE)).is_ok()
}

/// Whether the client's UDP request to `frontend` is answered now.
fn udp_served(w: &World, frontend: SocketAddr) -> bool {
    w.client(|| udp_unconnected_request_timeout(frontend, PROBE))
        .is_ok()
}

/// The `source_ranges` of each TCP frontend on `vip`, as `proxy inspect
/// services --vip VIP --output json` shows them.
fn inspect_source_ranges(w: &World, vip: &str) -> Vec<Option<Vec<String>>> {
    let out = std::process::Command::new(proxy_bin())
        .args([
            "inspect",
            "services",
            "--vip",
            vip,
            "--output",
            "json",
            "--pin-path",
        ])
        .arg(w.sandbox.pin_path())
        .output()
        .unwrap_or_else(|e| panic!("proxy inspect services: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("proxy inspect services printed no JSON ({e}):\n{text}"));
    v["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["protocol"] == "TCP")
        .map(|s| {
            s["source_ranges"].as_array().map(|list| {
                list.iter()
                    .filter_map(|r| r.as_str().map(str::to_owned))
                    .collect()
            })
        })
        .collect()
}

/// Waits until the client's TCP and UDP requests to both LoadBalancer IPs
/// are served exactly for the families in `allowed`, then checks the denied
/// ones stay denied (a few fresh flows each) and the NodePort, which the
/// ranges do not guard, still serves every family.
fn expect_lb_sources(w: &mut World, what: &str, allowed: &[AddressType]) {
    for family in FAMILIES {
        let tcp = SocketAddr::new(lb_ip(family), TCP_PORT);
        let udp = SocketAddr::new(lb_ip(family), UDP_PORT);
        let want = allowed.contains(&family);
        w.wait_for(
            PROPAGATION,
            &format!("{what}: the client's requests to {tcp} and {udp} served: {want}"),
            |w| tcp_served(w, tcp) == want && udp_served(w, udp) == want,
        );
        for _ in 0..3 {
            assert_eq!(tcp_served(w, tcp), want, "{what}: TCP {tcp}");
            assert_eq!(udp_served(w, udp), want, "{what}: UDP {udp}");
        }
        if want {
            let replies = w.tcp_replies(tcp, 5);
            assert!(
                !replies.is_empty(),
                "{what}: {tcp} must answer from the Service's endpoints"
            );
        }
        let node_port = SocketAddr::new(node1_ip(family), 30082);
        assert!(
            tcp_served(w, node_port),
            "{what}: the NodePort {node_port} must serve every source"
        );
    }
}

both_modes! {
    /// `loadBalancerSourceRanges` on the LoadBalancer IPs, both families, TCP
    /// and UDP: a source inside the ranges is served, one outside is not
    /// (the tc path drops it; the userspace proxies reset the connection
    /// and drop the datagram); the list changed live flips which family
    /// gets in; an empty list serves every source; an entry that is not a
    /// CIDR stops the LoadBalancer IPs (fail closed), not the NodePort.
    fn load_balancer_source_ranges_guard_the_load_balancer_ips(mode) {
        let mut w = World::new(mode);
        // The client is 198.51.100.10 and fd00:50::10.
        let v4_only = ranged_service(&["198.51.100.10/32", "fd00:99::/64"]);
        w.write_service(&v4_only, &WEB_PODS);
        w.start_proxy(&[]);
        w.wait_served(SocketAddr::new(node1_ip(AddressType::IPv4), 30082), STARTUP);
        expect_lb_sources(&mut w, "v4 client allowed", &[AddressType::IPv4]);
        if mode == Mode::Ebpf {
            assert!(
                stat(&w, "tc_source_range_dropped") > 0,
                "the drops must be counted:\n{}",
                stats(&w)
            );
            assert_eq!(
                inspect_source_ranges(&w, LB_V4),
                vec![Some(vec!["198.51.100.10/32".to_owned()])],
                "proxy inspect services shows what {LB_V4} admits"
            );
            assert_eq!(inspect_source_ranges(&w, LB_V6), vec![Some(vec!["fd00:99::/64".to_owned()])]);
        }

        let v6_only = ranged_service(&["192.0.2.0/24", "fd00:50::/64"]);
        w.write_service(&v6_only, &WEB_PODS);
        expect_lb_sources(&mut w, "changed live to the v6 client", &[AddressType::IPv6]);

        w.write_service(&ranged_service(&[]), &WEB_PODS);
        expect_lb_sources(&mut w, "an empty list", &FAMILIES);

        let invalid = ranged_service(&["198.51.100.0/24", "fd00:50::10"]);
        w.write_service(&invalid, &WEB_PODS);
        expect_lb_sources(&mut w, "an invalid entry", &[]);
        let log = w.log();
        assert!(
            log.contains("loadBalancerSourceRanges entry \"fd00:50::10\" is not a CIDR"),
            "the bad entry must be reported, naming the Service and the value:\n{log}"
        );
    }
}

/// Pins of a version-2 daemon that predates `SRC_RANGE_V4`/`_V6`,
/// `LOCAL_V4`/`_V6`, `SOCK_SRC_CHECK`, `REJECT_BUDGET`, `FRAG_V4`/`_V6`, `CT_PENDING_V4`/`_V6` and
/// `MAGLEV`/`MAGLEV_CFG` and `SVC_FILTER` (simulated: the daemon stopped,
/// those pins removed)
/// are adopted: the maps are created anew and programmed before the programs
/// that read them take over, so a denied source stays denied and an allowed
/// one served.
#[test]
fn pins_without_the_newer_lpm_maps_are_adopted() {
    let mut w = World::new(Mode::Ebpf);
    w.write_service(
        &ranged_service(&["198.51.100.10/32", "fd00:99::/64"]),
        &WEB_PODS,
    );
    w.start_proxy(&[]);
    w.wait_served(SocketAddr::new(node1_ip(AddressType::IPv4), 30082), STARTUP);
    expect_lb_sources(&mut w, "first daemon", &[AddressType::IPv4]);
    if let Some(mut proxy) = w.proxy.take() {
        proxy.stop().expect("stopping the proxy");
    }
    let maps = w
        .sandbox
        .pin_path()
        .join(format!("v{}", proxy_common::LAYOUT_VERSION))
        .join("maps");
    const NEWER: [&str; 14] = [
        "SRC_RANGE_V4",
        "SRC_RANGE_V6",
        "LOCAL_V4",
        "LOCAL_V6",
        "SOCK_SRC_CHECK",
        "REJECT_BUDGET",
        "FRAG_V4",
        "FRAG_V6",
        "CT_PENDING_V4",
        "CT_PENDING_V6",
        "MAGLEV",
        "MAGLEV_CFG",
        "SVC_FILTER",
        "TC_TAIL",
    ];
    for map in NEWER {
        std::fs::remove_file(maps.join(map))
            .unwrap_or_else(|e| panic!("removing the pin of {map} in {}: {e}", maps.display()));
    }
    w.start_proxy(&[]);
    w.wait_served(SocketAddr::new(node1_ip(AddressType::IPv4), 30082), STARTUP);
    expect_lb_sources(&mut w, "the daemon that adopted them", &[AddressType::IPv4]);
    for map in NEWER {
        assert!(maps.join(map).exists(), "{map} is pinned again");
    }
}
/// Port of the echo backends of the graceful-termination test.
const ECHO_PORT: u16 = 9100;
/// Bytes per write (and read back) of the echoed stream.
const ECHO_CHUNK: usize = 16 * 1024;
/// The eBPF path's `--backend-grace-period` in that test: long enough for the
/// stream to cross the deletion, short enough to watch it end.
const GRACE: Duration = Duration::from_secs(6);

/// An echo server on `bind` inside `place`: every connection gets back what
/// it sends, until EOF. Counts the bytes it echoed; stops (and its threads
/// end) when dropped.
struct EchoBackend {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    echoed: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl EchoBackend {
    fn start(w: &World, place: Place, bind: SocketAddr) -> Self {
        use std::sync::{
            Arc,
            atomic::{AtomicBool, AtomicU64, Ordering},
        };
        let listener = w
            .topo
            .in_ns(place, || std::net::TcpListener::bind(bind))
            .unwrap_or_else(|e| panic!("entering {place:?} for the echo backend: {e}"))
            .unwrap_or_else(|e| panic!("binding the echo backend on {bind}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("non-blocking echo listener");
        let stop = Arc::new(AtomicBool::new(false));
        let echoed = Arc::new(AtomicU64::new(0));
        let (stop2, echoed2) = (stop.clone(), echoed.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let echoed = echoed2.clone();
                        std::thread::spawn(move || {
                            use std::io::{Read, Write};
                            let _ = s.set_nonblocking(false);
                            let _ = s.set_read_timeout(Some(BULK_IO));
                            let mut buf = vec![0u8; ECHO_CHUNK];
                            while let Ok(n) = s.read(&mut buf) {
                                if n == 0 || s.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                                echoed.fetch_add(n as u64, Ordering::Relaxed);
                            }
                        });
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => break,
                }
            }
        });
        EchoBackend { stop, echoed }
    }

    fn echoed(&self) -> u64 {
        self.echoed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A stream kept busy from a thread: writes [`ECHO_CHUNK`] bytes of the
/// bulk pattern, reads them back and checks every byte, again and again
/// until stopped. `progress` counts the bytes checked so far.
struct Pump {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    progress: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Why the stream broke, once it has.
    broke: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    thread: std::thread::JoinHandle<Result<(TcpStream, u64), String>>,
}

impl Pump {
    fn start(mut s: TcpStream) -> Self {
        use std::sync::{
            Arc,
            atomic::{AtomicBool, AtomicU64},
        };
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicU64::new(0));
        let broke = Arc::new(std::sync::Mutex::new(None));
        let (stop2, progress2, broke2) = (stop.clone(), progress.clone(), broke.clone());
        let thread = std::thread::spawn(move || {
            let result = Self::run(&mut s, &stop2, &progress2);
            if let Err(e) = &result {
                *broke2.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
            }
            result.map(|done| (s, done))
        });
        Pump {
            stop,
            progress,
            broke,
            thread,
        }
    }

    fn run(
        s: &mut TcpStream,
        stop: &std::sync::atomic::AtomicBool,
        progress: &std::sync::atomic::AtomicU64,
    ) -> Result<u64, String> {
        use std::{
            io::{Read, Write},
            sync::atomic::Ordering,
        };
        let pattern = bulk_pattern();
        let mut back = vec![0u8; ECHO_CHUNK];
        let mut done = 0u64;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let phase = (done % BULK_PERIOD as u64) as usize;
            let chunk = &pattern[phase..phase + ECHO_CHUNK];
            let io = |e: io::Error| format!("after {done} bytes: {e} (kind {:?})", e.kind());
            s.write_all(chunk).map_err(io)?;
            s.read_exact(&mut back).map_err(io)?;
            if back != chunk {
                let k = (0..ECHO_CHUNK).find(|&k| back[k] != chunk[k]).unwrap_or(0);
                return Err(format!("byte {} came back wrong", done + k as u64));
            }
            done += ECHO_CHUNK as u64;
            progress.store(done, Ordering::Relaxed);
            // A steady stream, not a flood: the test is about crossing
            // the changes, not throughput.
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(done)
    }

    fn progress(&self) -> u64 {
        self.progress.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until the stream has moved more bytes (it carries on now).
    fn assert_flowing(&self, what: &str) {
        let before = self.progress();
        let broke = || self.broke.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let moved = wait_until(REQUEST, || {
            broke().is_some() || self.progress() > before + ECHO_CHUNK as u64
        });
        if let Some(e) = broke() {
            panic!("{what}: the stream broke: {e}");
        }
        assert!(moved, "{what}: the stream stalled at {before} bytes");
    }

    fn finish(self) -> Result<(TcpStream, u64), String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the pump panicked")
    }
}

/// `proxy inspect backends --output json`: backend → how many frontends
/// point at it, for every entry of the backend maps.
fn backend_entries(w: &World) -> BTreeMap<String, u64> {
    let out = std::process::Command::new(proxy_bin())
        .args(["inspect", "backends", "--output", "json", "--pin-path"])
        .arg(w.sandbox.pin_path())
        .output()
        .expect("running proxy inspect backends");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "proxy inspect backends printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    v["backends"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|b| {
                    let addr = ip(b["addr"].as_str().unwrap_or_default());
                    let port = b["port"].as_u64().unwrap_or_default() as u16;
                    let n = b["frontends"].as_u64().unwrap_or_default();
                    (SocketAddr::new(addr, port).to_string(), n)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Graceful termination on the per-packet path, both families: a long-lived
/// NodePort TCP stream (to a node-2 endpoint, so forwarded and SNATed)
/// crosses its endpoint turning terminating, then being deleted, with every
/// byte echoed back and checked and no reset. New flows avoid the endpoint
/// from the first change; its backend entry stays while it is listed and for
/// `--backend-grace-period` after its deletion, then goes. (kube-proxy keeps
/// such flows through conntrack's DNAT.)
#[test]
fn a_long_lived_stream_survives_its_endpoint_terminating_then_deleted() {
    // externalTrafficPolicy: Cluster, the endpoint on the other node (SNATed).
    stream_survives_its_endpoint_terminating_then_deleted("Cluster", Pod(2, 1), Pod(1, 1));
}

/// The same with `externalTrafficPolicy: Local`: both endpoints on the node
/// the client reaches (upstream's rolling-update test runs both policies).
#[test]
fn a_long_lived_etp_local_stream_survives_its_endpoint_terminating_then_deleted() {
    stream_survives_its_endpoint_terminating_then_deleted("Local", Pod(1, 1), Pod(1, 2));
}

fn stream_survives_its_endpoint_terminating_then_deleted(etp: &str, leaving: Pod, staying: Pod) {
    let mut w = World::new(Mode::Ebpf);
    let [v4, v6] = cluster_ips(40);
    let svc = Service::new(NAMESPACE, "drain")
        .external_traffic_policy(etp)
        .cluster_ip(v4)
        .cluster_ip(v6)
        .port("http", Protocol::Tcp, TCP_PORT, TCP_TARGET)
        .port("echo", Protocol::Tcp, ECHO_PORT, ECHO_PORT)
        .service_type("NodePort")
        .node_port("http", 30086)
        .node_port("echo", 30096);
    let slices = |w: &World, endpoints: &[(Pod, bool)]| {
        for family in FAMILIES {
            let mut s = EndpointSlice::new(NAMESPACE, &format!("drain-{family}"), "drain", family)
                .port("http", Protocol::Tcp, TCP_TARGET)
                .port("echo", Protocol::Tcp, ECHO_PORT);
            for (pod, terminating) in endpoints {
                let ep = if *terminating {
                    Endpoint::terminating(pod.addr(family))
                } else {
                    Endpoint::ready(pod.addr(family))
                };
                s = s.endpoint(ep.on_node(pod.node_name()));
            }
            w.write(&format!("drain-slice-{family}.yaml"), &s.to_yaml());
        }
    };
    let mut echo = BTreeMap::new();
    for pod in [leaving, staying] {
        let place = if pod.0 == 1 {
            Place::Pods1
        } else {
            Place::Pods2
        };
        for family in FAMILIES {
            let bind = SocketAddr::new(pod.addr(family), ECHO_PORT);
            echo.insert(bind, EchoBackend::start(&w, place, bind));
        }
    }
    w.write("drain-service.yaml", &svc.to_yaml());
    slices(&w, &[(leaving, false)]);
    let grace = format!("{}s", GRACE.as_secs());
    w.start_proxy(&["--backend-grace-period", &grace]);
    for family in FAMILIES {
        let http = SocketAddr::new(node1_ip(family), 30086);
        let frontend = SocketAddr::new(node1_ip(family), 30096);
        let leaving_echo = SocketAddr::new(leaving.addr(family), ECHO_PORT);
        let staying_echo = SocketAddr::new(staying.addr(family), ECHO_PORT);
        slices(&w, &[(leaving, false)]);
        w.wait_for(STARTUP, "the leaving endpoint only", |w| {
            w.client(|| {
                (0..5).all(|_| {
                    tcp_request_timeout(http, PROBE)
                        .is_ok_and(|r| r.backend == leaving.tcp_name(family))
                })
            })
        });
        // The only endpoint: the stream lands on it.
        let s = w
            .client(|| TcpStream::connect_timeout(&frontend, REQUEST))
            .unwrap_or_else(|e| panic!("{frontend}: opening the stream: {e}"));
        s.set_read_timeout(Some(REQUEST)).expect("read timeout");
        s.set_write_timeout(Some(REQUEST)).expect("write timeout");
        let pump = Pump::start(s);
        pump.assert_flowing(&format!("{frontend}: before any change"));

        // First change: the endpoint terminates (still serving) and another
        // is ready. New flows go to the ready one only.
        slices(&w, &[(leaving, true), (staying, false)]);
        w.wait_for(
            PROPAGATION,
            "new flows to reach only the staying endpoint",
            |w| {
                let replies = w.client(|| {
                    (0..TALLY)
                        .map(|_| tcp_request_timeout(http, PROBE))
                        .collect::<io::Result<Vec<Reply>>>()
                });
                replies.is_ok_and(|r| {
                    tally(&r).into_keys().collect::<Vec<_>>() == [staying.tcp_name(family)]
                })
            },
        );
        pump.assert_flowing(&format!("{frontend}: endpoint terminating"));
        assert_eq!(
            backend_entries(&w).get(&leaving_echo.to_string()),
            Some(&0),
            "{frontend}: the terminating endpoint's backend entry stays, in no slot"
        );

        // Second change: the endpoint is deleted. Its entry drains.
        slices(&w, &[(staying, false)]);
        let drains = format!("backend={leaving_echo}");
        w.wait_for(PROPAGATION, "the deleted endpoint's entry to drain", |w| {
            w.log()
                .lines()
                .any(|l| l.contains("entry drains") && l.contains(&drains))
        });
        std::thread::sleep(Duration::from_secs(1));
        pump.assert_flowing(&format!("{frontend}: endpoint deleted"));
        assert_eq!(
            backend_entries(&w).get(&leaving_echo.to_string()),
            Some(&0),
            "{frontend}: the deleted endpoint's backend entry drains"
        );
        let (mut s, sent) = pump
            .finish()
            .unwrap_or_else(|e| panic!("{frontend}: the stream broke: {e}; stats:\n{}", stats(&w)));
        s.shutdown(std::net::Shutdown::Write).expect("half-close");
        let mut rest = Vec::new();
        let tail = std::io::Read::read_to_end(&mut s, &mut rest);
        assert!(
            tail.is_ok() && rest.is_empty(),
            "{frontend}: the stream must end cleanly: {tail:?}, {} stray bytes",
            rest.len()
        );
        assert!(sent > 0, "{frontend}: nothing was streamed");
        assert!(
            wait_until(REQUEST, || echo[&leaving_echo].echoed() == sent),
            "{frontend}: the leaving endpoint echoed {} of the {sent} bytes",
            echo[&leaving_echo].echoed()
        );
        assert_eq!(
            echo[&staying_echo].echoed(),
            0,
            "{frontend}: no byte of the stream went to the staying endpoint"
        );

        // The grace ends: the entry goes without any other change.
        w.wait_for(
            GRACE + PROPAGATION,
            "the drained backend entry to be deleted",
            |w| !backend_entries(w).contains_key(&leaving_echo.to_string()),
        );
    }
}

/// Port of the large-datagram echo backends ([`UdpEcho`]).
const BIG_TARGET: u16 = 5454;
/// The Service port of the fragmented-datagram test.
const BIG_PORT: u16 = 54;
/// Its NodePort.
const BIG_NODE_PORT: u16 = 30054;
/// Bytes per request: well above the links' 1,500-byte MTU, so each request
/// crosses the node as three fragments, and so does each reply.
const BIG_DATAGRAM: usize = 4000;
/// Requests per family: enough to see both backends (P(miss) ≈ 2·(1/2)^20).
const BIG_REQUESTS: usize = 20;

/// A UDP echo backend on `bind` inside a pod: each datagram gets back
/// `<name>\n` followed by the datagram, sent without DF, so the pod's kernel
/// fragments a reply larger than the MTU. Stops when dropped.
struct UdpEcho {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl UdpEcho {
    fn start(w: &World, place: Place, bind: SocketAddr, name: String) -> Self {
        use std::sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        };
        let socket = w
            .topo
            .in_ns(place, || UdpSocket::bind(bind))
            .unwrap_or_else(|e| panic!("entering {place:?} for the UDP echo backend: {e}"))
            .unwrap_or_else(|e| panic!("binding the UDP echo backend on {bind}: {e}"));
        no_pmtu_discovery(&socket, bind.is_ipv6())
            .unwrap_or_else(|e| panic!("{bind}: turning path MTU discovery off: {e}"));
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("the echo backend's read timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let mut reply = format!("{name}\n").into_bytes();
                    reply.extend_from_slice(&buf[..n]);
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        Self { stop }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `IP_PMTUDISC_DONT` / `IPV6_PMTUDISC_DONT`: no DF, so the kernel fragments
/// a datagram larger than the device's MTU instead of refusing it.
fn no_pmtu_discovery(socket: &UdpSocket, v6: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let (level, name, value) = if v6 {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DONT,
        )
    } else {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DONT,
        )
    };
    // SAFETY: `value` is a live c_int and its size is passed; the fd is the
    // socket's, open for the duration of the call.
    let ret = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One large request from a fresh socket in the client's namespace: the
/// reply's sender and the backend's name, once the echoed bytes were checked
/// to be the request's.
fn big_request(frontend: SocketAddr, request: &[u8]) -> Result<(SocketAddr, String), String> {
    let any: SocketAddr = if frontend.is_ipv6() {
        "[::]:0".parse().map_err(|e| format!("{e}"))?
    } else {
        "0.0.0.0:0".parse().map_err(|e| format!("{e}"))?
    };
    let socket = UdpSocket::bind(any).map_err(|e| format!("bind: {e}"))?;
    no_pmtu_discovery(&socket, frontend.is_ipv6()).map_err(|e| format!("pmtu: {e}"))?;
    socket
        .set_read_timeout(Some(REQUEST))
        .map_err(|e| format!("timeout: {e}"))?;
    socket
        .send_to(request, frontend)
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = vec![0u8; 65536];
    let (n, from) = socket
        .recv_from(&mut buf)
        .map_err(|e| format!("no reply ({e})"))?;
    let reply = &buf[..n];
    let split = reply
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(format!("a {n}-byte reply without a name"))?;
    let echoed = &reply[split + 1..];
    if echoed != request {
        return Err(format!(
            "the echo is {} bytes, not the {} sent, or differs",
            echoed.len(),
            request.len()
        ));
    }
    Ok((from, String::from_utf8_lossy(&reply[..split]).into_owned()))
}

/// UDP datagrams larger than the MTU, sent without DF so the client's kernel
/// fragments them, to a NodePort: each reaches its backend whole (on node 1,
/// and on node 2, SNATed), and the backend's reply, as large and fragmented
/// by the pod's kernel, comes back whole and from the NodePort. IPv4 and
/// IPv6. The later fragments are counted as `tc_fragment_forwarded`.
#[test]
fn fragmented_udp_datagrams_cross_a_node_port_whole() {
    let pods = [Pod(1, 1), Pod(2, 1)];
    let mut w = World::with_pods(Mode::Ebpf, &pods);
    let mut echoes = Vec::new();
    for pod in pods {
        for family in FAMILIES {
            let bind = SocketAddr::new(pod.addr(family), BIG_TARGET);
            echoes.push(UdpEcho::start(&w, pod.place(), bind, bind.to_string()));
        }
    }
    let [v4, v6] = cluster_ips(40);
    let svc = Service::new(NAMESPACE, "big")
        .cluster_ip(v4)
        .cluster_ip(v6)
        .port("http", Protocol::Tcp, TCP_PORT, TCP_TARGET)
        .port("big", Protocol::Udp, BIG_PORT, BIG_TARGET)
        .service_type("NodePort")
        .node_port("http", 30080)
        .node_port("big", BIG_NODE_PORT);
    w.write("big-service.yaml", &svc.to_yaml());
    for family in FAMILIES {
        let name = match family {
            AddressType::IPv4 => "big-v4",
            AddressType::IPv6 => "big-v6",
        };
        let mut s = EndpointSlice::new(NAMESPACE, name, "big", family)
            .port("http", Protocol::Tcp, TCP_TARGET)
            .port("big", Protocol::Udp, BIG_TARGET);
        for pod in pods {
            s = s.endpoint(Endpoint::ready(pod.addr(family)).on_node(pod.node_name()));
        }
        w.write(&format!("{name}-slice.yaml"), &s.to_yaml());
    }
    w.start_proxy(&[]);
    for family in FAMILIES {
        w.wait_served(SocketAddr::new(node1_ip(family), 30080), STARTUP);
        let frontend = SocketAddr::new(node1_ip(family), BIG_NODE_PORT);
        let mut seen = BTreeMap::new();
        for i in 0..BIG_REQUESTS {
            let request: Vec<u8> = (0..BIG_DATAGRAM).map(|j| (i * 31 + j * 7) as u8).collect();
            let (from, backend) =
                w.client(|| big_request(frontend, &request))
                    .unwrap_or_else(|e| {
                        panic!(
                            "client → {frontend}: {BIG_DATAGRAM}-byte request {i}: {e}\n{}",
                            stats(&w)
                        )
                    });
            assert_eq!(from, frontend, "the reply must come from the NodePort");
            *seen.entry(backend).or_insert(0) += 1;
        }
        let want: Vec<String> = pods
            .iter()
            .map(|p| SocketAddr::new(p.addr(family), BIG_TARGET).to_string())
            .collect();
        let got: Vec<String> = seen.keys().cloned().collect();
        assert_eq!(got, want, "{frontend}: both backends answer, saw {seen:?}");
    }
    assert!(
        stat(&w, "tc_fragment_forwarded") >= (2 * 2 * 2 * BIG_REQUESTS) as u64,
        "two later fragments per request and per reply, per family:\n{}",
        stats(&w)
    );
    drop(echoes);
}

// ---- Maglev: a flow that misses conntrack mid-stream ------------------------

/// Deletes node 1's forward conntrack entries of flows to `frontend` (the
/// client's direction; the replies' entries stay): what node 2 sees of a flow
/// moved to it, or what an evicted entry leaves.
fn forget_forward_entries(w: &World, frontend: SocketAddr) -> usize {
    use aya::maps::{HashMap as BpfHash, Map, MapData};
    use proxy_common::{Be16, CtKeyV4, CtKeyV6, CtValueV4, CtValueV6, names};
    let maps = w
        .sandbox
        .pin_path()
        .join(format!("v{}", proxy_common::LAYOUT_VERSION))
        .join("maps");
    let port = Be16::from_host(frontend.port());
    let mut removed = 0;
    match frontend.ip() {
        IpAddr::V4(a) => {
            let data = MapData::from_pin(maps.join(names::CT_V4)).expect("CT_V4 pin");
            let mut ct: BpfHash<MapData, CtKeyV4, CtValueV4> =
                BpfHash::try_from(Map::LruHashMap(data)).expect("CT_V4");
            let keys: Vec<CtKeyV4> = ct
                .keys()
                .filter_map(Result::ok)
                .filter(|k| k.daddr.octets() == a.octets() && k.dport == port)
                .collect();
            for k in keys {
                removed += usize::from(ct.remove(&k).is_ok());
            }
        }
        IpAddr::V6(a) => {
            let data = MapData::from_pin(maps.join(names::CT_V6)).expect("CT_V6 pin");
            let mut ct: BpfHash<MapData, CtKeyV6, CtValueV6> =
                BpfHash::try_from(Map::LruHashMap(data)).expect("CT_V6");
            let keys: Vec<CtKeyV6> = ct
                .keys()
                .filter_map(Result::ok)
                .filter(|k| k.daddr == a.octets() && k.dport == port)
                .collect();
            for k in keys {
                removed += usize::from(ct.remove(&k).is_ok());
            }
        }
    }
    removed
}

/// Long-lived TCP streams through a NodePort whose three backends are local
/// to node 1 (`externalTrafficPolicy: Cluster`, so not SNATed: the backend
/// sees the client's address) lose their conntrack entries on node 1
/// mid-stream, as a flow moved to another node does. Under Maglev every
/// stream's next packet (no SYN) is translated to the same backend again and
/// the streams go on with no reset (`tc_mid_flow_miss` counted); under
/// random selection some land on another backend, which answers with a RST
/// (the second test checks this one can fail). v4 and v6.
///
/// What this cannot show without direct server return: a move between two
/// nodes that each run the proxy (the kit runs one), for a backend that one
/// of them SNATs; see README, "Load-balancing algorithm".
#[test]
fn streams_that_lose_conntrack_keep_their_backend_under_maglev() {
    let broken = streams_losing_conntrack(&[]);
    assert_eq!(broken, 0, "{broken} streams broke under Maglev");
}

/// The same under `--lb-algorithm=random`: some streams break.
#[test]
fn streams_that_lose_conntrack_break_under_random_selection() {
    let broken = streams_losing_conntrack(&["--lb-algorithm=random"]);
    assert!(broken > 0, "no stream broke under random selection");
}

/// Runs [`streams_that_lose_conntrack_keep_their_backend_under_maglev`] with
/// `args`; returns how many streams broke.
fn streams_losing_conntrack(args: &[&str]) -> usize {
    const STREAMS: usize = 8;
    const PODS: [Pod; 3] = [Pod(1, 1), Pod(1, 2), Pod(1, 3)];
    let mut w = World::new(Mode::Ebpf);
    let [v4, v6] = cluster_ips(41);
    let svc = Service::new(NAMESPACE, "moved")
        .cluster_ip(v4)
        .cluster_ip(v6)
        .port("http", Protocol::Tcp, TCP_PORT, TCP_TARGET)
        .port("echo", Protocol::Tcp, ECHO_PORT, ECHO_PORT)
        .service_type("NodePort")
        .node_port("http", 30087)
        .node_port("echo", 30097);
    let mut echo = Vec::new();
    for pod in PODS {
        for family in FAMILIES {
            let bind = SocketAddr::new(pod.addr(family), ECHO_PORT);
            echo.push(EchoBackend::start(&w, Place::Pods1, bind));
        }
    }
    w.write("moved-service.yaml", &svc.to_yaml());
    for family in FAMILIES {
        let mut s = EndpointSlice::new(NAMESPACE, &format!("moved-{family}"), "moved", family)
            .port("http", Protocol::Tcp, TCP_TARGET)
            .port("echo", Protocol::Tcp, ECHO_PORT);
        for pod in PODS {
            s = s.endpoint(Endpoint::ready(pod.addr(family)).on_node(pod.node_name()));
        }
        w.write(&format!("moved-slice-{family}.yaml"), &s.to_yaml());
    }
    w.start_proxy(args);
    let mut broken = 0;
    for family in FAMILIES {
        w.wait_served(SocketAddr::new(node1_ip(family), 30087), STARTUP);
        let frontend = SocketAddr::new(node1_ip(family), 30097);
        let pumps: Vec<Pump> = (0..STREAMS)
            .map(|_| {
                let s = w
                    .client(|| TcpStream::connect_timeout(&frontend, REQUEST))
                    .unwrap_or_else(|e| panic!("{frontend}: opening a stream: {e}"));
                s.set_read_timeout(Some(REQUEST)).expect("read timeout");
                s.set_write_timeout(Some(REQUEST)).expect("write timeout");
                Pump::start(s)
            })
            .collect();
        for pump in &pumps {
            pump.assert_flowing(&format!("{frontend}: before conntrack is lost"));
        }
        let misses = stat(&w, "tc_mid_flow_miss");
        let removed = forget_forward_entries(&w, frontend);
        assert!(
            removed >= STREAMS,
            "{frontend}: only {removed} entries removed"
        );
        let before: Vec<u64> = pumps.iter().map(Pump::progress).collect();
        // Each stream moves more bytes, or breaks.
        std::thread::sleep(Duration::from_secs(2));
        for (pump, before) in pumps.into_iter().zip(before) {
            match pump.finish() {
                Ok((_, done)) if done > before + ECHO_CHUNK as u64 => {}
                Ok((_, done)) => {
                    eprintln!("{frontend}: a stream stalled at {done} bytes");
                    broken += 1;
                }
                Err(e) => {
                    eprintln!("{frontend}: a stream broke: {e}");
                    broken += 1;
                }
            }
        }
        assert!(
            stat(&w, "tc_mid_flow_miss") > misses,
            "{frontend}: no mid-flow miss was counted"
        );
    }
    drop(echo);
    broken
}

/// UDP flows (one client socket each, to a NodePort whose three backends are
/// local to node 1) lose node 1's conntrack entries between two datagrams:
/// under Maglev each flow's next datagram reaches the same backend; under
/// random selection some move (checked too, so the test can fail). v4, v6.
#[test]
fn udp_flows_that_lose_conntrack_keep_their_backend_under_maglev() {
    assert_eq!(
        udp_flows_losing_conntrack(&[]),
        0,
        "UDP flows moved under Maglev"
    );
    assert!(
        udp_flows_losing_conntrack(&["--lb-algorithm=random"]) > 0,
        "no UDP flow moved under random selection"
    );
}

/// Returns how many of the UDP flows changed backend.
fn udp_flows_losing_conntrack(args: &[&str]) -> usize {
    const FLOWS: usize = 12;
    const PODS: [Pod; 3] = [Pod(1, 1), Pod(1, 2), Pod(1, 3)];
    let mut w = World::new(Mode::Ebpf);
    w.write_service(
        &base_service("udpmoved", 42, "NodePort", Some((30088, 30098))),
        &PODS,
    );
    w.start_proxy(args);
    let mut moved = 0;
    for family in FAMILIES {
        w.wait_served(SocketAddr::new(node1_ip(family), 30088), STARTUP);
        let frontend = SocketAddr::new(node1_ip(family), 30098);
        let sockets: Vec<UdpSocket> = w.client(|| {
            (0..FLOWS)
                .map(|_| {
                    let s = UdpSocket::bind(SocketAddr::new(client_ip(family), 0))
                        .expect("binding a client socket");
                    s.set_read_timeout(Some(REQUEST)).expect("read timeout");
                    s
                })
                .collect()
        });
        let ask = |w: &World| -> Vec<String> {
            w.client(|| {
                sockets
                    .iter()
                    .map(|s| {
                        s.send_to(b"hello\n", frontend).expect("send");
                        let mut buf = [0u8; 512];
                        let (n, _) = s.recv_from(&mut buf).expect("a reply");
                        let text = String::from_utf8_lossy(&buf[..n]).to_string();
                        text.parse::<Reply>().map(|r| r.backend).unwrap_or(text)
                    })
                    .collect()
            })
        };
        let before = ask(&w);
        let removed = forget_forward_entries(&w, frontend);
        assert!(
            removed >= FLOWS,
            "{frontend}: only {removed} entries removed"
        );
        let after = ask(&w);
        moved += before.iter().zip(&after).filter(|(a, b)| a != b).count();
    }
    moved
}
/// Node 1's own ephemeral ports in this test: 100 ports inside the range
/// the tc programs used to SNAT to (32768-60999, Linux's default ephemeral
/// range), so that with that range node 1's own sockets share ports with
/// SNATed flows.
const NODE1_EPHEMERAL: &str = "40000 40099";

/// A NodePort flow SNATed to node 1 must never take a port node 1's own
/// connections use: node 1 itself sends to the backend while many SNATed
/// flows to that backend are live, and every one of its replies comes back
/// to it (none hijacked into a SNATed flow). The proxy reads node 1's
/// `ip_local_port_range` at start and SNATs outside it (`auto`).
#[test]
fn snated_flows_never_take_the_nodes_own_ports() {
    let mut w = World::new(Mode::Ebpf);
    // Node 1 is the sandbox's namespace (this thread's): its sysctl only.
    std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", NODE1_EPHEMERAL)
        .expect("setting node 1's ephemeral ports");
    let remote = Pod(2, 2);
    let svc = base_service("web", 10, "NodePort", Some((30080, 30053)))
        .external_traffic_policy("Cluster");
    w.write_service(&svc, &[remote]);
    w.start_proxy(&[]);
    let family = AddressType::IPv4;
    w.wait_served(SocketAddr::new(node1_ip(family), 30080), STARTUP);
    // Many SNATed UDP flows to the backend (each lives 60 s in conntrack).
    let frontend = SocketAddr::new(node1_ip(family), 30053);
    let replies = w.udp_replies(frontend, 2000);
    assert_eq!(peers(&replies), vec![node1_ip(family)], "SNATed to node 1");
    // Node 1's own requests to the same backend, from its ephemeral ports.
    let backend = SocketAddr::new(remote.addr(family), UDP_TARGET);
    let failed = lost_node_requests(backend, 200);
    assert!(
        failed.is_empty(),
        "node 1's own requests to {backend} lost their replies (hijacked into SNATed flows): \
         {failed:?}"
    );
    let log = w.log();
    assert!(
        log.contains("snat_port_range=1024-29999"),
        "the proxy must log the SNAT range it chose outside 40000-40099:\n{log}"
    );
}

/// Entries in the pinned `CT_V4` of the world's proxy.
fn ct_v4_entries(w: &World) -> usize {
    use aya::maps::{HashMap, Map, MapData};
    use proxy_common::{CtKeyV4, CtValueV4, LAYOUT_VERSION, names};
    let pin = w
        .sandbox
        .pin_path()
        .join(format!("v{LAYOUT_VERSION}"))
        .join("maps")
        .join(names::CT_V4);
    let data = MapData::from_pin(&pin)
        .unwrap_or_else(|e| panic!("opening the pinned map {}: {e}", pin.display()));
    let map: HashMap<MapData, CtKeyV4, CtValueV4> =
        HashMap::try_from(Map::LruHashMap(data)).expect("CT_V4 as a hash map");
    map.keys().filter_map(Result::ok).count()
}

/// The conntrack GC deletes the entries of finished flows: closed TCP
/// connections through a SNATed NodePort leave `CT_V4` within their closing
/// timeout (10 s) and one GC period (`--conntrack-gc-interval=2s`), where
/// without a GC they stayed until the LRU evicted them.
#[test]
fn finished_flows_leave_conntrack_within_a_gc_period() {
    let mut w = World::new(Mode::Ebpf);
    let svc = base_service("web", 10, "NodePort", Some((30080, 30053)))
        .external_traffic_policy("Cluster");
    w.write_service(&svc, &[Pod(2, 2)]);
    w.start_proxy(&["--conntrack-gc-interval=2s"]);
    let frontend = SocketAddr::new(node1_ip(AddressType::IPv4), 30080);
    w.wait_served(frontend, STARTUP);
    let _ = w.tcp_replies(frontend, 20);
    let after_traffic = ct_v4_entries(&w);
    assert!(
        after_traffic >= 40,
        "20 flows make 40 entries (both directions), saw {after_traffic}"
    );
    let mut left = after_traffic;
    let gone = wait_until(Duration::from_secs(20), || {
        left = ct_v4_entries(&w);
        left == 0
    });
    assert!(
        gone,
        "closed flows' entries must be deleted within 10 s (closing timeout) + 2 s (GC \
         period); {left} of {after_traffic} left after 20 s\n{}",
        w.log()
    );
}

/// A node's own connection must never take a NodePort as its local port:
/// the backend's replies to `node:nodePort` would look like a new flow to
/// that NodePort to the tc programs, be translated to its backend, and the
/// connection would time out (the soak's rare ClusterIP timeouts: node 1's
/// ephemeral range there overlaps the NodePorts). Node 1's ephemeral ports
/// here are 32766-32769, half of them in the NodePort range, and its UDP
/// NodePort is 32766: the proxy reserves the NodePort range out of the
/// ephemeral one (`ip_local_reserved_ports`), so every request of node 1's
/// own to the remote backend gets its reply.
#[test]
fn the_nodes_own_connections_never_take_a_node_port() {
    let mut w = World::new(Mode::Ebpf);
    // Node 1 is the sandbox's namespace (this thread's): its sysctl only.
    std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "32766 32769")
        .expect("setting node 1's ephemeral ports");
    // The sandbox reserves the NodePort range itself: undo that, so what is
    // tested is the daemon's reservation.
    std::fs::write("/proc/sys/net/ipv4/ip_local_reserved_ports", "10249,10256")
        .expect("clearing node 1's reserved ports");
    let remote = Pod(2, 2);
    let svc = base_service("web", 10, "NodePort", Some((32767, 32766)))
        .external_traffic_policy("Cluster");
    w.write_service(&svc, &[remote]);
    w.start_proxy(&[]);
    let family = AddressType::IPv4;
    w.wait_served(SocketAddr::new(node1_ip(family), 32767), STARTUP);
    let backend = SocketAddr::new(remote.addr(family), UDP_TARGET);
    let failed = lost_node_requests(backend, 100);
    assert!(
        failed.is_empty(),
        "node 1's own requests to {backend} lost their replies (translated as NodePort \
         flows): {failed:?}"
    );
    let reserved = proxy_tests::read_sysctl("net/ipv4/ip_local_reserved_ports")
        .expect("reading node 1's reserved ports");
    assert!(
        reserved.contains("30000-32767"),
        "the NodePort range is reserved: {reserved:?}"
    );
}

/// Sends `n` unconnected UDP requests from node 1 itself (its ephemeral
/// ports) to `backend`; the ones without a reply within 500 ms.
fn lost_node_requests(backend: SocketAddr, n: usize) -> Vec<String> {
    (0..n)
        .filter_map(|i| {
            udp_unconnected_request_timeout(backend, Duration::from_millis(500))
                .err()
                .map(|e| format!("request {i}: {e}"))
        })
        .collect()
}

/// `--xdp=auto` (generic mode on node 1's eth0, a veth): long-lived TCP and
/// connected UDP flows through a NodePort to a node-2 backend (SNATed, so its
/// replies come back in on eth0), both families. Past each flow's first
/// exchange (tc's conntrack), its packets both ways are translated and
/// forwarded by `xdp_ingress` (`xdp_ct_forward`, `xdp_ct_reply`), and every
/// reply still comes from the backend through the NodePort. `proxy inspect
/// status` shows the XDP link and its mode.
#[test]
fn xdp_forwards_established_nodeport_flows_both_ways() {
    let mut w = World::new(Mode::Ebpf);
    let remote = [Pod(2, 2)];
    let svc = base_service("web", 10, "NodePort", Some((30080, 30053)))
        .external_traffic_policy("Cluster");
    w.write_service(&svc, &remote);
    w.start_proxy(&["--xdp=auto"]);
    const ASKS: u64 = 10;
    for family in FAMILIES {
        let tcp = SocketAddr::new(node1_ip(family), 30080);
        w.wait_served(tcp, STARTUP);
        let (fwd, rep) = (stat(&w, "xdp_ct_forward"), stat(&w, "xdp_ct_reply"));
        let mut session = w
            .client(|| TcpSession::open(tcp, REQUEST))
            .unwrap_or_else(|e| panic!("{tcp}: opening the flow: {e}"));
        for i in 0..ASKS {
            let reply = session
                .request()
                .unwrap_or_else(|e| panic!("{tcp}: request {i}: {e}\n{}", stats(&w)));
            assert_eq!(reply.backend, remote[0].tcp_name(family), "{tcp}");
            assert_eq!(reply.peer.ip(), node1_ip(family), "{tcp}: SNATed to node 1");
        }
        // Each request after the handshake: one client segment and one reply
        // segment through XDP at least.
        let (fwd2, rep2) = (stat(&w, "xdp_ct_forward"), stat(&w, "xdp_ct_reply"));
        assert!(
            fwd2 - fwd >= ASKS && rep2 - rep >= ASKS,
            "{tcp}: XDP forwarded {} and replied {} of {ASKS} exchanges:\n{}",
            fwd2 - fwd,
            rep2 - rep,
            stats(&w)
        );
        let udp = SocketAddr::new(node1_ip(family), 30053);
        let socket = w
            .client(|| udp_connected_socket(udp, REQUEST))
            .unwrap_or_else(|e| panic!("{udp}: socket: {e}"));
        for i in 0..ASKS {
            let reply = udp_ask(&socket).unwrap_or_else(|e| panic!("{udp}: request {i}: {e}"));
            assert_eq!(reply.backend, remote[0].udp_name(family), "{udp}");
        }
        // The first exchange is tc's (new flow, then the reply promotes it).
        let (fwd3, rep3) = (stat(&w, "xdp_ct_forward"), stat(&w, "xdp_ct_reply"));
        assert!(
            fwd3 - fwd2 >= ASKS - 1 && rep3 - rep2 >= ASKS - 1,
            "{udp}: XDP forwarded {} and replied {} of {ASKS} datagrams:\n{}",
            fwd3 - fwd2,
            rep3 - rep2,
            stats(&w)
        );
    }
    let status = std::process::Command::new(proxy_bin())
        .args(["inspect", "status", "--pin-path"])
        .arg(w.sandbox.pin_path())
        .output()
        .expect("proxy inspect status");
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("xdp-generic"), "inspect status:\n{status}");
}
