//! Kubernetes' Service e2e scenarios (`test/e2e/network/`: conntrack.go,
//! loadbalancer.go, dual_stack.go, traffic_distribution.go, topology_hints.go,
//! endpointslice.go) replayed against the proxy with a client on the node:
//! the shared [`Fixture`] (backends on the sandbox's `lo`), real TCP and UDP
//! through the VIPs, and for the topology scenarios the fake API server (the
//! node's zone comes from its Node object). Each test names the upstream test
//! it mirrors; docs/conformance.md maps the rows.
//!
//! The north-south ones (an external client, NodePorts and LoadBalancer IPs on
//! the tc path) are in `conformance_flows_ns.rs`.

mod common;

use std::{
    io,
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use common::{
    kube::{self, NODE},
    *,
};
use proxy_tests::{
    FakeApiServer, Reply, TcpBackend,
    fake_apiserver::json_from_yaml,
    manifest::{AddressType, Endpoint, EndpointSlice, Protocol, Service},
    tcp_request_timeout,
};
use serde_json::json;

const OTHER_NODE: &str = "node-2";
/// The fixed source port of the conntrack scenarios' client (upstream's
/// `nc -u -p 12345`).
const SRC_PORT: u16 = 12345;

/// A single-stack IPv4 Service `name` on `vip` with one UDP port `udp`
/// (80 → 5353, the fixture's UDP backends), as upstream's `CreateUDPService`.
fn udp_service(name: &str, vip: &str, itp: &str) -> String {
    Service::new(NAMESPACE, name)
        .cluster_ip(vip)
        .port("udp", Protocol::Udp, 80, UDP_TARGET)
        .internal_traffic_policy(itp)
        .to_yaml()
}

/// `name`'s IPv4 slice for [`udp_service`] with these endpoints.
fn udp_slice(name: &str, endpoints: &[Endpoint]) -> String {
    let mut s = EndpointSlice::new(
        NAMESPACE,
        &slice_name(name, AddressType::IPv4),
        name,
        AddressType::IPv4,
    )
    .port("udp", Protocol::Udp, UDP_TARGET);
    for e in endpoints {
        s = s.endpoint(e.clone());
    }
    s.to_yaml()
}

/// One datagram from a fresh socket bound to `0.0.0.0:SRC_PORT` (so every
/// try is the same 5-tuple), and the reply.
fn udp_from_fixed_port(vip: SocketAddr, timeout: Duration) -> io::Result<Reply> {
    let socket = UdpSocket::bind(("0.0.0.0", SRC_PORT))?;
    socket.set_read_timeout(Some(timeout))?;
    socket.send_to(b"hostname\n", vip)?;
    let mut buf = [0u8; 1024];
    let (n, _) = socket.recv_from(&mut buf)?;
    std::str::from_utf8(&buf[..n])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        .parse()
}

/// Waits until the fixed-port client reaches `backend` through `vip`, then
/// checks that ten more tries all reach it.
fn wait_fixed_port_reaches(f: &mut Fixture, vip: SocketAddr, backend: &str) {
    f.wait_for(
        PROPAGATION,
        &format!("UDP from port {SRC_PORT} to {vip} to reach {backend}"),
        || udp_from_fixed_port(vip, PROBE).is_ok_and(|r| r.backend == backend),
    );
    for i in 0..10 {
        let reply = udp_from_fixed_port(vip, REQUEST)
            .unwrap_or_else(|e| panic!("UDP try {i} from port {SRC_PORT} to {vip}: {e}"));
        assert_eq!(reply.backend, backend, "UDP try {i} to {vip}: {reply}");
    }
}

both_modes! {
    /// Upstream: conntrack.go: "should be able to preserve UDP traffic when initial unready endpoints get ready"
    fn udp_traffic_preserved_when_initial_unready_endpoints_get_ready(mode) {
        let mut f = Fixture::new(mode);
        f.write_web(&BACKENDS_V4, &BACKENDS_V6);
        f.write("udp-service.yaml", &udp_service("udp", "10.96.0.20", "Cluster"));
        let backend = BACKENDS_V4[0];
        f.write("udp-slice.yaml", &udp_slice("udp", &[Endpoint::not_ready(backend)]));
        f.start_proxy();
        f.wait_ready();
        let vip = sock("10.96.0.20", 80);
        // The client keeps trying from one source port while the only endpoint
        // is not ready: nothing may answer, and nothing may be left behind.
        for i in 0..5 {
            let result = udp_from_fixed_port(vip, PROBE);
            assert!(
                result.is_err(),
                "{mode}: try {i} to {vip} with only an unready endpoint was answered: {result:?}"
            );
        }
        f.write("udp-slice.yaml", &udp_slice("udp", &[Endpoint::ready(backend)]));
        wait_fixed_port_reaches(&mut f, vip, &backend_name(backend, UDP_TARGET));
        f.assert_proxy_running();
    }

    /// Upstream: conntrack.go: "should be able to preserve UDP traffic when server pod cycles for a ClusterIP service with InternalTrafficPolicy set to Local"
    fn udp_traffic_preserved_when_server_pod_cycles_with_itp_local(mode) {
        let mut f = Fixture::new(mode);
        f.write_web(&BACKENDS_V4, &BACKENDS_V6);
        f.write("udp-service.yaml", &udp_service("udp", "10.96.0.21", "Local"));
        let [first, remote, second] = BACKENDS_V4;
        let remote_ep = Endpoint::ready(remote).on_node(OTHER_NODE);
        f.write(
            "udp-slice.yaml",
            &udp_slice("udp", &[Endpoint::ready(first).on_node(NODE), remote_ep.clone()]),
        );
        f.start_proxy_with(&["--node-name", NODE]);
        f.wait_ready();
        let vip = sock("10.96.0.21", 80);
        wait_fixed_port_reaches(&mut f, vip, &backend_name(first, UDP_TARGET));

        // The local server pod is replaced (a new pod, a new address); the
        // remote endpoint stays and must never be used.
        f.write(
            "udp-slice.yaml",
            &udp_slice("udp", &[Endpoint::ready(second).on_node(NODE), remote_ep]),
        );
        wait_fixed_port_reaches(&mut f, vip, &backend_name(second, UDP_TARGET));
        f.assert_proxy_running();
    }
}

/// A UDP server that echoes every datagram whole, until dropped.
struct UdpEcho {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    fn start(bind: SocketAddr) -> Self {
        let socket = UdpSocket::bind(bind).unwrap_or_else(|e| panic!("binding {bind}: {e}"));
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("a read timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], peer);
                }
            }
        });
        UdpEcho {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `payload` to `vip` from a fresh socket (connected or not) and
/// returns what came back.
fn udp_echo(vip: SocketAddr, payload: &[u8], connected: bool) -> io::Result<Vec<u8>> {
    let socket = UdpSocket::bind(if vip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
    socket.set_read_timeout(Some(REQUEST))?;
    if connected {
        socket.connect(vip)?;
        socket.send(payload)?;
    } else {
        socket.send_to(payload, vip)?;
    }
    let mut buf = vec![0u8; 65536];
    let n = socket.recv(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

const ECHO_TARGET: u16 = 7777;
const ECHO_VIPS: [&str; 2] = ["10.96.0.30", "fd00:96::30"];

both_modes! {
    /// Upstream: dual_stack.go: "Granular Checks: Services Secondary IP Family [LinuxOnly] should be able to handle large requests: udp"
    fn udp_large_requests_are_echoed_whole(mode) {
        let mut f = Fixture::new(mode);
        f.write_web(&BACKENDS_V4, &BACKENDS_V6);
        let _echo: Vec<UdpEcho> = [BACKENDS_V4[0], BACKENDS_V6[0]]
            .iter()
            .map(|a| UdpEcho::start(sock(a, ECHO_TARGET)))
            .collect();
        let svc = Service::new(NAMESPACE, "echo")
            .cluster_ip(ECHO_VIPS[0])
            .cluster_ip(ECHO_VIPS[1])
            .port("udp", Protocol::Udp, 7, ECHO_TARGET);
        f.write("echo-service.yaml", &svc.to_yaml());
        for (family, addr) in [
            (AddressType::IPv4, BACKENDS_V4[0]),
            (AddressType::IPv6, BACKENDS_V6[0]),
        ] {
            let slice = EndpointSlice::new(NAMESPACE, &slice_name("echo", family), "echo", family)
                .port("udp", Protocol::Udp, ECHO_TARGET)
                .endpoint(Endpoint::ready(addr));
            f.write(&format!("echo-slice-{family}.yaml"), &slice.to_yaml());
        }
        f.start_proxy();
        f.wait_ready();
        // Upstream's message: "n" and 1999 "o"s, over a 1500-byte MTU.
        let mut large = b"n".to_vec();
        large.extend(std::iter::repeat_n(b'o', 1999));
        for vip in ECHO_VIPS {
            let vip = sock(vip, 7);
            f.wait_for(PROPAGATION, &format!("{vip} to echo a small datagram"), || {
                udp_echo(vip, b"ping", false).is_ok_and(|b| b == b"ping")
            });
            for connected in [false, true] {
                let got = udp_echo(vip, &large, connected).unwrap_or_else(|e| {
                    panic!("{mode}: a {}-byte datagram to {vip} (connected: {connected}): {e}", large.len())
                });
                assert!(
                    got == large,
                    "{mode}: {vip} (connected: {connected}) echoed {} bytes, not the {} sent",
                    got.len(),
                    large.len()
                );
            }
        }
        f.assert_proxy_running();
    }
}

/// A selectorless Service `multi` on 10.96.0.40 with TCP ports `port80` (80)
/// and `port81` (81), and two hand-written slices, one per port: `port80` →
/// `ip80:8090`, `port81` → `ip81:9090`. Both ports must reach the right pod and
/// port, and only it.
fn multiport_in_multiple_slices(mode: Mode, ip80: &str, ip81: &str) {
    let mut f = Fixture::new(mode);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    let _backends: Vec<TcpBackend> = [(ip80, 8090), (ip81, 9090)]
        .iter()
        .map(|&(a, port)| {
            TcpBackend::start(sock(a, port), &backend_name(a, port))
                .unwrap_or_else(|e| panic!("starting a TCP backend on {a}:{port}: {e}"))
        })
        .collect();
    let svc = Service::new(NAMESPACE, "multi")
        .cluster_ip("10.96.0.40")
        .port("port80", Protocol::Tcp, 80, 8090)
        .port("port81", Protocol::Tcp, 81, 9090);
    f.write("multi-service.yaml", &svc.to_yaml());
    for (slice, port, target, addr) in [
        ("multi-port80", "port80", 8090, ip80),
        ("multi-port81", "port81", 9090, ip81),
    ] {
        let s = EndpointSlice::new(NAMESPACE, slice, "multi", AddressType::IPv4)
            .port(port, Protocol::Tcp, target)
            .endpoint(Endpoint::ready(addr));
        f.write(&format!("{slice}.yaml"), &s.to_yaml());
    }
    f.start_proxy();
    f.wait_ready();
    for (port, addr, target) in [(80, ip80, 8090), (81, ip81, 9090)] {
        let vip = sock("10.96.0.40", port);
        f.wait_for(PROPAGATION, &format!("{vip} to be served"), || {
            tcp_request_timeout(vip, PROBE).is_ok()
        });
        assert_backends(
            &format!("{mode}: {vip}"),
            &tally(Kind::Tcp, vip, 20),
            &[backend_name(addr, target)],
        );
    }
    f.assert_proxy_running();
}

both_modes! {
    /// Upstream: endpointslice.go: "should support a Service with multiple ports specified in multiple EndpointSlices"
    fn multiple_ports_in_multiple_endpoint_slices(mode) {
        multiport_in_multiple_slices(mode, BACKENDS_V4[0], BACKENDS_V4[0]);
    }

    /// Upstream: endpointslice.go: "should support a Service with multiple endpoint IPs specified in multiple EndpointSlices"
    fn multiple_endpoint_ips_in_multiple_endpoint_slices(mode) {
        multiport_in_multiple_slices(mode, BACKENDS_V4[0], BACKENDS_V4[1]);
    }
}

const LB_IP: &str = "203.0.113.20";

both_modes! {
    /// Upstream: loadbalancer.go: "LoadBalancers ESIPP [Slow] should work from pods"
    ///
    /// A client on the node reaches a LoadBalancer IP with
    /// `externalTrafficPolicy: Local`, over TCP and UDP. Its endpoints: one on
    /// this node, one on another. Under socket LB node-local traffic uses the
    /// cluster-wide endpoints (kube-proxy's short-circuit of in-cluster LB
    /// traffic) and the backend sees the client's own source address. The
    /// userspace proxies cannot tell a node-local client from an external one,
    /// so they use only the local endpoint, and backends see the proxy's
    /// address (README, "The userspace path serves NodePorts …" and "What the
    /// userspace path does not do"): there only reachability is checked.
    fn esipp_load_balancer_ip_works_from_pods(mode) {
        let mut f = Fixture::new(mode);
        f.write_web(&BACKENDS_V4, &BACKENDS_V6);
        let svc = Service::new(NAMESPACE, "lb")
            .cluster_ip("10.96.0.50")
            .port("http", Protocol::Tcp, TCP_PORT, TCP_TARGET)
            .port("dns", Protocol::Udp, UDP_PORT, UDP_TARGET)
            .service_type("LoadBalancer")
            .node_port("http", 30080)
            .node_port("dns", 30053)
            .external_traffic_policy("Local")
            .health_check_node_port(32100)
            .load_balancer_ingress(LB_IP);
        f.write("lb-service.yaml", &svc.to_yaml());
        let [local, remote, client] = BACKENDS_V4;
        let slice = EndpointSlice::new(NAMESPACE, "lb-4xk2p", "lb", AddressType::IPv4)
            .port("http", Protocol::Tcp, TCP_TARGET)
            .port("dns", Protocol::Udp, UDP_TARGET)
            .endpoint(Endpoint::ready(local).on_node(NODE))
            .endpoint(Endpoint::ready(remote).on_node(OTHER_NODE));
        f.write("lb-slice.yaml", &slice.to_yaml());
        f.start_proxy_with(&["--node-name", NODE, "--healthz-bind-address", ""]);
        f.wait_ready();
        let expected: &[&str] = match mode {
            Mode::Ebpf => &[local, remote],
            Mode::Userspace => &[local],
        };
        let tcp = sock(LB_IP, TCP_PORT);
        f.wait_for(PROPAGATION, &format!("{tcp} to be served"), || {
            tcp_request_timeout(tcp, PROBE).is_ok()
        });
        assert_backends(
            &format!("{mode}: {tcp}"),
            &tally(Kind::Tcp, tcp, 30),
            &names(expected, TCP_TARGET),
        );
        // The "pod": UDP sockets bound to an address of the node that is no
        // endpoint's.
        let udp = sock(LB_IP, UDP_PORT);
        let mut seen = std::collections::BTreeMap::new();
        for i in 0..30 {
            let socket = UdpSocket::bind(sock(client, 0)).expect("binding the client");
            socket.set_read_timeout(Some(REQUEST)).expect("a read timeout");
            socket.send_to(b"clientip\n", udp).expect("sending");
            let mut buf = [0u8; 512];
            let (n, _) = socket
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("{mode}: UDP try {i} from {client} to {udp}: {e}"));
            let reply: Reply = std::str::from_utf8(&buf[..n])
                .expect("UTF-8")
                .parse()
                .expect("a backend reply");
            if mode == Mode::Ebpf {
                assert_eq!(
                    reply.peer.ip(),
                    ip(client),
                    "{mode}: the backend must see the client's own address: {reply}"
                );
            }
            *seen.entry(reply.backend).or_insert(0) += 1;
        }
        assert_backends(&format!("{mode}: {udp}"), &seen, &names(expected, UDP_TARGET));
        f.assert_proxy_running();
    }
}

/// `web` (with `spec.trafficDistribution: PreferClose`) through the API, its
/// IPv4 endpoints in the given zones with zone hints as the EndpointSlice
/// controller writes them for PreferClose; IPv6 without hints.
fn apply_zoned_web(api: &FakeApiServer, zones: &[&str; 3]) {
    let mut svc = json_from_yaml(&service(WEB, &[WEB_VIP4, WEB_VIP6], TCP_PORT, UDP_PORT));
    svc["spec"]["trafficDistribution"] = json!("PreferClose");
    api.apply(svc);
    let mut v4 = EndpointSlice::new(
        NAMESPACE,
        &slice_name(WEB, AddressType::IPv4),
        WEB,
        AddressType::IPv4,
    )
    .port("http", Protocol::Tcp, TCP_TARGET)
    .port("dns", Protocol::Udp, UDP_TARGET);
    for (a, zone) in BACKENDS_V4.iter().zip(zones) {
        v4 = v4.endpoint(Endpoint {
            zone: Some((*zone).to_owned()),
            ..Endpoint::ready(a).on_node(OTHER_NODE)
        });
    }
    let mut v4 = json_from_yaml(&v4.to_yaml());
    let endpoints = v4["endpoints"]
        .as_array_mut()
        .expect("the slice has endpoints");
    for (e, zone) in endpoints.iter_mut().zip(zones) {
        e["hints"] = json!({ "forZones": [{ "name": zone }] });
    }
    api.apply(v4);
    api.apply_yaml(&slice(
        WEB,
        &slice_name(WEB, AddressType::IPv6),
        AddressType::IPv6,
        &BACKENDS_V6,
    ));
}

/// Waits until TCP and UDP to `web`'s IPv4 VIP reach exactly `expected`
/// (backend addresses), then checks it over 60 more requests each.
fn wait_zone_backends(f: &mut Fixture, what: &str, expected: &[&str]) {
    for (kind, port, target) in [
        (Kind::Tcp, TCP_PORT, TCP_TARGET),
        (Kind::UdpUnconnected, UDP_PORT, UDP_TARGET),
    ] {
        let vip = sock(WEB_VIP4, port);
        let want = names(expected, target);
        f.wait_for(
            PROPAGATION,
            &format!("{kind:?} to {vip} to reach exactly {want:?} ({what})"),
            || {
                try_backends(kind, vip, 30).is_ok_and(|seen| {
                    let mut seen = seen;
                    seen.sort();
                    seen.dedup();
                    seen == want
                })
            },
        );
        if kind == Kind::UdpUnconnected && f.mode == Mode::Userspace {
            // The userspace proxy keeps a UDP session (per client address and
            // port) to a backend its Service still lists until it idles out,
            // as kube-proxy's conntrack keeps the flow: a new client socket
            // that happens to reuse an earlier one's source port is that
            // session, still on the other zone's backend. The wait above
            // saw 30 fresh requests reach exactly `want`.
            continue;
        }
        assert_backends(
            &format!("{} {kind:?} to {vip} ({what})", f.mode),
            // Three backends: all of them answer 60 requests but for 3·(2/3)^60.
            &tally(kind, vip, 60),
            &want,
        );
    }
}

both_modes! {
    /// Upstream: traffic_distribution.go: "Service has trafficDistribution=PreferClose should route traffic to an endpoint that is close to the client"
    ///
    /// One endpoint per zone, hinted for its zone: a node in zone-a uses only
    /// zone-a's; moved to a zone without endpoints, it uses all of them.
    fn prefer_close_routes_to_an_endpoint_close_to_the_client(mode) {
        let mut f = Fixture::new(mode);
        let (api, kubeconfig) = kube::start_api(&f, &kube::this_node("zone-a"));
        apply_zoned_web(&api, &["zone-a", "zone-b", "zone-c"]);
        kube::start_kube_proxy(&mut f, &kubeconfig, &[]);
        f.wait_ready();
        wait_zone_backends(&mut f, "the node in zone-a", &[BACKENDS_V4[0]]);
        api.apply_node(&kube::this_node("zone-d"));
        wait_zone_backends(&mut f, "the node in zone-d, without endpoints", &BACKENDS_V4);
        f.assert_proxy_running();
    }

    /// Upstream: topology_hints.go: "should distribute endpoints evenly"
    ///
    /// The hint allocation is the controller's; the proxy's share is keeping
    /// requests in the client's zone: two endpoints hinted for zone-a, one for
    /// zone-b; a node in zone-a uses both of zone-a's and never zone-b's, and
    /// the other way round once the node is in zone-b.
    fn topology_hints_keep_requests_in_the_clients_zone(mode) {
        let mut f = Fixture::new(mode);
        let (api, kubeconfig) = kube::start_api(&f, &kube::this_node("zone-a"));
        apply_zoned_web(&api, &["zone-a", "zone-a", "zone-b"]);
        kube::start_kube_proxy(&mut f, &kubeconfig, &[]);
        f.wait_ready();
        wait_zone_backends(&mut f, "the node in zone-a", &BACKENDS_V4[..2]);
        api.apply_node(&kube::this_node("zone-b"));
        wait_zone_backends(&mut f, "the node in zone-b", &BACKENDS_V4[2..]);
        f.assert_proxy_running();
    }
}
