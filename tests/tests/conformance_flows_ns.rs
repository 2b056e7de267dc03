//! Kubernetes' Service e2e scenarios (`test/e2e/network/`: conntrack.go and
//! loadbalancer.go) whose traffic is external: an external client on the LAN
//! sends to node 1's NodePorts and LoadBalancer IPs (a static
//! `status.loadBalancer.ingress`, routed by the client via node 1, stands in
//! for the cloud load balancer) in the two-node topology of
//! `proxy_tests::northsouth`; the proxy runs on node 1 with `--devices eth0`.
//! eBPF mode takes the per-packet (tc) path; userspace mode listens on the
//! node's addresses and the LB IP.
//!
//! Covered: UDP flows from a fixed source port while the server pod cycles
//! (NodePort, LB IP on the same node and on another); a Service changed
//! ClusterIP → NodePort → LoadBalancer, its nodePort and port changed, scaled
//! to 0 and back, then back to ClusterIP (TCP and UDP); ClientIP affinity on
//! an LB IP with ETP Local and Cluster, set and switched in place; an LB
//! without NodePorts that gets one; `externalTrafficPolicy` switched
//! Local → Cluster → Local. Each test names the upstream test it mirrors.

#[expect(
    dead_code,
    reason = "this file uses part of the shared north-south world"
)]
mod northsouth_world;

use std::{
    collections::BTreeMap,
    io::{self, ErrorKind, Read, Write},
    net::{IpAddr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use etherparse::TcpHeader;

use proxy_tests::{
    Mode, Reply, both_modes, http_get,
    manifest::{AddressType, Endpoint, EndpointSlice, Protocol, Service},
    northsouth::{CLIENT_V4, NODE1_V4, Place, pod_v4},
    tcp_request_timeout, wait_until,
};

use northsouth_world::*;

const LB_IP: &str = "203.0.113.20";
/// The fixed source port of the conntrack scenarios' client (upstream's `nc -p`).
const SRC_PORT: u16 = 12345;

impl Pod {
    /// Its IPv4 backend's name for `proto` (these tests are IPv4 only).
    fn name(self, proto: Protocol) -> String {
        match proto {
            Protocol::Udp => self.udp_name(AddressType::IPv4),
            _ => self.tcp_name(AddressType::IPv4),
        }
    }
}

fn node1(port: u16) -> SocketAddr {
    SocketAddr::new(NODE1_V4.into(), port)
}

fn lb(port: u16) -> SocketAddr {
    SocketAddr::new(LB_IP.parse().expect("an IP"), port)
}

impl World {
    /// Writes `svc` (file `<name>-service.yaml`).
    fn write_service(&self, svc: &Service) {
        self.write(&format!("{}-service.yaml", svc.name), &svc.to_yaml());
    }

    /// Writes `service`'s IPv4 slice: port `name` (`proto`) and endpoints `pods`.
    fn write_slice(&self, service: &str, ports: &[(&str, Protocol)], pods: &[Pod]) {
        let mut s = EndpointSlice::new(
            NAMESPACE,
            &format!("{service}-4xk2p"),
            service,
            AddressType::IPv4,
        );
        for (name, proto) in ports {
            let target = match proto {
                Protocol::Udp => UDP_TARGET,
                _ => TCP_TARGET,
            };
            s = s.port(name, *proto, target);
        }
        for pod in pods {
            s = s.endpoint(Endpoint::ready(pod.addr(AddressType::IPv4)).on_node(pod.node_name()));
        }
        self.write(&format!("{service}-slice.yaml"), &s.to_yaml());
    }

    /// One request from the client to `frontend` over a fresh socket (UDP:
    /// unconnected, from an ephemeral port).
    fn request(
        &self,
        proto: Protocol,
        frontend: SocketAddr,
        timeout: Duration,
    ) -> io::Result<Reply> {
        self.client(|| match proto {
            Protocol::Udp => {
                proxy_tests::udp_unconnected_request_timeout(frontend, timeout).map(|(r, _)| r)
            }
            _ => tcp_request_timeout(frontend, timeout),
        })
    }

    /// One UDP datagram from the client's fixed port [`SRC_PORT`] (a fresh
    /// socket, the same 5-tuple every time) and the reply.
    fn udp_from_fixed_port(&self, frontend: SocketAddr, timeout: Duration) -> io::Result<Reply> {
        self.client(|| {
            let socket = UdpSocket::bind((CLIENT_V4, SRC_PORT))?;
            socket.set_read_timeout(Some(timeout))?;
            socket.send_to(b"hostname\n", frontend)?;
            let mut buf = [0u8; 1024];
            let (n, _) = socket.recv_from(&mut buf)?;
            std::str::from_utf8(&buf[..n])
                .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?
                .parse()
        })
    }

    /// `n` requests; how often each backend answered; panics on a failure.
    fn tally(&self, proto: Protocol, frontend: SocketAddr, n: usize) -> BTreeMap<String, usize> {
        let mut seen = BTreeMap::new();
        for i in 0..n {
            let r = self.request(proto, frontend, REQUEST).unwrap_or_else(|e| {
                panic!(
                    "{}: {proto} request {i} of {n} to {frontend}: {e}",
                    self.mode
                )
            });
            *seen.entry(r.backend).or_insert(0) += 1;
        }
        seen
    }

    /// Waits until `frontend` answers.
    fn wait_served(&mut self, proto: Protocol, frontend: SocketAddr, timeout: Duration) {
        self.wait_for(
            timeout,
            &format!("{proto} to {frontend} to be served"),
            |w| w.request(proto, frontend, PROBE).is_ok(),
        );
    }

    /// Waits until three requests in a row to `frontend` fail.
    fn wait_not_served(&mut self, proto: Protocol, frontend: SocketAddr) {
        self.wait_for(
            PROPAGATION,
            &format!("{proto} to {frontend} to stop being served"),
            |w| (0..3).all(|_| w.request(proto, frontend, PROBE).is_err()),
        );
    }
}

/// Waits until the fixed-port client reaches `pod` through `frontend`, then
/// checks that ten more tries reach it too.
fn wait_fixed_port_reaches(w: &mut World, frontend: SocketAddr, pod: Pod) {
    let want = pod.name(Protocol::Udp);
    w.wait_for(
        PROPAGATION,
        &format!("UDP from port {SRC_PORT} to {frontend} to reach {want}"),
        |w| {
            w.udp_from_fixed_port(frontend, PROBE)
                .is_ok_and(|r| r.backend == want)
        },
    );
    for i in 0..10 {
        let reply = w
            .udp_from_fixed_port(frontend, REQUEST)
            .unwrap_or_else(|e| panic!("UDP try {i} from port {SRC_PORT} to {frontend}: {e}"));
        assert_eq!(reply.backend, want, "{}: UDP try {i} to {frontend}", w.mode);
    }
}

/// The conntrack scenario: a UDP Service `udp` (`svc`), its server pod
/// `first` replaced by `second` (added, then `first` deleted) while the client
/// keeps sending from one source port to `frontend`.
fn udp_server_pod_cycles(mode: Mode, svc: Service, frontend: SocketAddr, first: Pod, second: Pod) {
    let mut w = World::new(mode);
    let ports = [("udp", Protocol::Udp)];
    w.write_service(&svc);
    w.write_slice("udp", &ports, &[first]);
    w.start_proxy(&[]);
    w.wait_for(STARTUP, &format!("UDP to {frontend} to be served"), |w| {
        w.udp_from_fixed_port(frontend, PROBE).is_ok()
    });
    wait_fixed_port_reaches(&mut w, frontend, first);
    w.write_slice("udp", &ports, &[first, second]);
    w.write_slice("udp", &ports, &[second]);
    wait_fixed_port_reaches(&mut w, frontend, second);
}

/// `udp`: UDP port 80 → 5353 (nodePort 30053), type `service_type`.
fn udp_service(service_type: &str) -> Service {
    let svc = Service::new(NAMESPACE, "udp")
        .cluster_ip("10.96.0.20")
        .port("udp", Protocol::Udp, 80, UDP_TARGET)
        .service_type(service_type)
        .node_port("udp", 30053);
    if service_type == "LoadBalancer" {
        svc.load_balancer_ingress(LB_IP)
    } else {
        svc
    }
}

both_modes! {
    /// Upstream: conntrack.go: "should be able to preserve UDP traffic when server pod cycles for a NodePort service"
    fn udp_nodeport_traffic_preserved_when_server_pod_cycles(mode) {
        udp_server_pod_cycles(mode, udp_service("NodePort"), node1(30053), Pod(1, 1), Pod(1, 2));
    }

    /// Upstream: loadbalancer.go: "should be able to preserve UDP traffic when server pod cycles for a LoadBalancer service on different nodes"
    fn udp_lb_traffic_preserved_when_server_pod_cycles_on_different_nodes(mode) {
        udp_server_pod_cycles(mode, udp_service("LoadBalancer"), lb(80), Pod(1, 1), Pod(2, 1));
    }

    /// Upstream: loadbalancer.go: "should be able to preserve UDP traffic when server pod cycles for a LoadBalancer service on the same nodes"
    fn udp_lb_traffic_preserved_when_server_pod_cycles_on_the_same_nodes(mode) {
        udp_server_pod_cycles(mode, udp_service("LoadBalancer"), lb(80), Pod(1, 1), Pod(1, 2));
    }
}

/// Asserts that a request to `frontend` with no endpoints is refused
/// (TCP: ECONNREFUSED; UDP: the ICMP port unreachable on a connected socket),
/// never answered. Tries a few times: a node kernel's ICMP errors (userspace
/// mode: nothing listens) are rate-limited per peer (`icmp_ratelimit`), and
/// the waits before this one may have used up the burst.
fn assert_rejected(w: &World, proto: Protocol, frontend: SocketAddr) {
    let attempt = || {
        w.client(|| match proto {
            Protocol::Udp => (|| {
                let socket = UdpSocket::bind("0.0.0.0:0")?;
                socket.set_read_timeout(Some(PROBE))?;
                socket.connect(frontend)?;
                socket.send(b"hello\n")?;
                socket.recv(&mut [0u8; 256]).map(|_| ())
            })(),
            _ => TcpStream::connect_timeout(&frontend, PROBE).map(|_| ()),
        })
    };
    let mut seen = Vec::new();
    for _ in 0..6 {
        match attempt() {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
            Ok(()) => panic!(
                "{}: {proto} to {frontend} without endpoints was answered",
                w.mode
            ),
            Err(e) => seen.push(e.kind()),
        }
        std::thread::sleep(PROBE);
    }
    panic!(
        "{}: {proto} to {frontend} without endpoints: expected ECONNREFUSED, saw {seen:?}",
        w.mode
    );
}

/// Upstream's "change the type and ports" lifecycle for a one-port Service
/// over `proto`: ClusterIP (no NodePort) → NodePort → LoadBalancer (the same
/// nodePort, an ingress IP) → another nodePort → another port → scaled to 0
/// (rejected) and back to 1 → ClusterIP again (NodePort and LB IP withdrawn).
fn change_type_and_ports(mode: Mode, proto: Protocol) {
    let mut w = World::new(mode);
    let pod = Pod(2, 1);
    let target = if proto == Protocol::Udp {
        UDP_TARGET
    } else {
        TCP_TARGET
    };
    let base = |port: u16| {
        Service::new(NAMESPACE, "mut")
            .cluster_ip("10.96.0.30")
            .port("p", proto, port, target)
    };
    let ports = [("p", proto)];
    // A second Service that is up all along, so "not served" is not "not started".
    let up = Service::new(NAMESPACE, "up")
        .cluster_ip("10.96.0.31")
        .port("p", Protocol::Tcp, 80, TCP_TARGET)
        .service_type("NodePort")
        .node_port("p", 30099);
    w.write_service(&up);
    w.write_slice("up", &[("p", Protocol::Tcp)], &[Pod(1, 1)]);
    w.write_service(&base(80));
    w.write_slice("mut", &ports, &[pod]);
    w.start_proxy(&[]);
    w.wait_served(Protocol::Tcp, node1(30099), STARTUP);
    let want = pod.name(proto);
    let check = |w: &World, frontend: SocketAddr| {
        let seen = w.tally(proto, frontend, 5);
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            [&want],
            "{mode}: {frontend}: {seen:?}"
        );
    };
    assert!(
        w.request(proto, node1(30080), PROBE).is_err(),
        "{mode}: a ClusterIP Service has no NodePort"
    );

    w.write_service(&base(80).service_type("NodePort").node_port("p", 30080));
    w.wait_served(proto, node1(30080), PROPAGATION);
    check(&w, node1(30080));

    let as_lb = |port: u16, node_port: u16| {
        base(port)
            .service_type("LoadBalancer")
            .node_port("p", node_port)
            .load_balancer_ingress(LB_IP)
    };
    w.write_service(&as_lb(80, 30080));
    w.wait_served(proto, lb(80), PROPAGATION);
    check(&w, lb(80));
    check(&w, node1(30080));

    w.write_service(&as_lb(80, 30081));
    w.wait_served(proto, node1(30081), PROPAGATION);
    w.wait_not_served(proto, node1(30080));
    check(&w, node1(30081));
    check(&w, lb(80));

    w.write_service(&as_lb(81, 30081));
    w.wait_served(proto, lb(81), PROPAGATION);
    w.wait_not_served(proto, lb(80));
    check(&w, lb(81));
    check(&w, node1(30081));

    w.write_slice("mut", &ports, &[]);
    w.wait_for(
        PROPAGATION,
        &format!("{proto} to {} to be rejected", lb(81)),
        |w| w.request(proto, lb(81), PROBE).is_err(),
    );
    assert_rejected(&w, proto, lb(81));
    assert_rejected(&w, proto, node1(30081));

    w.write_slice("mut", &ports, &[pod]);
    w.wait_served(proto, lb(81), PROPAGATION);
    check(&w, lb(81));
    check(&w, node1(30081));

    w.write_service(&base(81));
    w.wait_not_served(proto, lb(81));
    w.wait_not_served(proto, node1(30081));
    w.wait_served(Protocol::Tcp, node1(30099), PROBE);
}

both_modes! {
    /// Upstream: loadbalancer.go: "should be able to change the type and ports of a TCP service [Slow]"
    fn change_the_type_and_ports_of_a_tcp_service(mode) {
        change_type_and_ports(mode, Protocol::Tcp);
    }

    /// Upstream: loadbalancer.go: "should be able to change the type and ports of a UDP service [Slow]"
    fn change_the_type_and_ports_of_a_udp_service(mode) {
        change_type_and_ports(mode, Protocol::Udp);
    }
}

/// Whether `n` TCP requests to `frontend` all reach one backend.
fn sticky(w: &World, frontend: SocketAddr, n: usize) -> Option<String> {
    let seen = w.tally(Protocol::Tcp, frontend, n);
    (seen.len() == 1).then(|| seen.into_keys().next().unwrap_or_default())
}

/// ClientIP affinity on an LB IP (`etp`: ESIPP on = Local): the client sticks
/// to one backend; with `switch`, affinity is then turned off in place
/// (requests spread again) and on again (sticky again).
fn lb_affinity(mode: Mode, etp: &str, switch: bool) {
    let mut w = World::new(mode);
    let pods = [Pod(1, 1), Pod(1, 2), Pod(1, 3), Pod(2, 1)];
    let svc = |affinity: bool| {
        let s = Service::new(NAMESPACE, "web")
            .cluster_ip("10.96.0.10")
            .port("http", Protocol::Tcp, 80, TCP_TARGET)
            .service_type("LoadBalancer")
            .node_port("http", 30080)
            .external_traffic_policy(etp)
            .load_balancer_ingress(LB_IP);
        let s = if etp == "Local" {
            s.health_check_node_port(32100)
        } else {
            s
        };
        if affinity {
            s.session_affinity(10800)
        } else {
            s
        }
    };
    w.write_service(&svc(true));
    w.write_slice("web", &[("http", Protocol::Tcp)], &pods);
    w.start_proxy(&[]);
    let frontend = lb(80);
    w.wait_served(Protocol::Tcp, frontend, STARTUP);
    let first = sticky(&w, frontend, 30).unwrap_or_else(|| {
        panic!("{mode}: ClientIP affinity on {frontend} (ETP {etp}): the client moved")
    });
    if etp == "Local" {
        assert!(
            first.starts_with("10.244.1."),
            "{mode}: ETP=Local: {first} is not a local endpoint"
        );
    }
    if !switch {
        return;
    }
    w.write_service(&svc(false));
    // Three or four backends: 30 requests all on one by chance is (1/3)^29 at most.
    w.wait_for(
        PROPAGATION,
        &format!("{frontend} to spread without affinity"),
        |w| sticky(w, frontend, 30).is_none(),
    );
    w.write_service(&svc(true));
    w.wait_for(PROPAGATION, &format!("{frontend} to stick again"), |w| {
        sticky(w, frontend, 10).is_some()
    });
    if sticky(&w, frontend, 30).is_none() {
        panic!(
            "{mode}: ClientIP affinity switched back on at {frontend} (ETP {etp}): the client moved"
        );
    }
}

both_modes! {
    /// Upstream: loadbalancer.go: "should have session affinity work for LoadBalancer service with ESIPP on [Slow] [LinuxOnly]"
    fn session_affinity_on_an_lb_with_esipp_on(mode) {
        lb_affinity(mode, "Local", false);
    }

    /// Upstream: loadbalancer.go: "should be able to switch session affinity for LoadBalancer service with ESIPP on [Slow] [LinuxOnly]"
    fn switch_session_affinity_on_an_lb_with_esipp_on(mode) {
        lb_affinity(mode, "Local", true);
    }

    /// Upstream: loadbalancer.go: "should have session affinity work for LoadBalancer service with ESIPP off [Slow] [LinuxOnly]"
    fn session_affinity_on_an_lb_with_esipp_off(mode) {
        lb_affinity(mode, "Cluster", false);
    }

    /// Upstream: loadbalancer.go: "should be able to switch session affinity for LoadBalancer service with ESIPP off [Slow] [LinuxOnly]"
    fn switch_session_affinity_on_an_lb_with_esipp_off(mode) {
        lb_affinity(mode, "Cluster", true);
    }

    /// Upstream: loadbalancer.go: "should be able to create LoadBalancer Service without NodePort and change it [Slow]"
    ///
    /// `allocateLoadBalancerNodePorts: false` and no `nodePort`: the LB IP is
    /// served and no NodePort is; switched on with a `nodePort`, both are.
    fn lb_without_node_port_and_change_it(mode) {
        let mut w = World::new(mode);
        let svc = Service::new(NAMESPACE, "web")
            .cluster_ip("10.96.0.10")
            .port("http", Protocol::Tcp, 80, TCP_TARGET)
            .service_type("LoadBalancer")
            .load_balancer_ingress(LB_IP);
        let no_node_ports = svc
            .to_yaml()
            .replacen("\nspec:\n", "\nspec:\n  allocateLoadBalancerNodePorts: false\n", 1);
        w.write("web-service.yaml", &no_node_ports);
        w.write_slice("web", &[("http", Protocol::Tcp)], &[Pod(2, 1)]);
        w.start_proxy(&[]);
        w.wait_served(Protocol::Tcp, lb(80), STARTUP);
        let want = Pod(2, 1).name(Protocol::Tcp);
        let seen = w.tally(Protocol::Tcp, lb(80), 5);
        assert_eq!(seen.keys().collect::<Vec<_>>(), [&want], "{mode}: {seen:?}");
        assert!(
            w.request(Protocol::Tcp, node1(30080), PROBE).is_err(),
            "{mode}: no nodePort was allocated, so none may be served"
        );
        w.write_service(&svc.node_port("http", 30080));
        w.wait_served(Protocol::Tcp, node1(30080), PROPAGATION);
        let seen = w.tally(Protocol::Tcp, node1(30080), 5);
        assert_eq!(seen.keys().collect::<Vec<_>>(), [&want], "{mode}: {seen:?}");
        let seen = w.tally(Protocol::Tcp, lb(80), 5);
        assert_eq!(seen.keys().collect::<Vec<_>>(), [&want], "{mode}: {seen:?}");
    }
}

/// Upstream: loadbalancer.go: "LoadBalancers ESIPP [Slow] should handle updates to ExternalTrafficPolicy field"
///
/// Endpoints on node 1 and node 2. Local: only node 1's, the client's address
/// kept, the health-check node port 200. Cluster: both, node 2's sees node
/// 1's address (SNAT), the health-check port closed. Local again (the same
/// `healthCheckNodePort`): as at first. eBPF only: the userspace proxies keep
/// no client address.
#[test]
fn esipp_handles_updates_to_external_traffic_policy() {
    let mut w = World::new(Mode::Ebpf);
    let (local, remote) = (Pod(1, 1), Pod(2, 1));
    let svc = |etp: &str| {
        let s = Service::new(NAMESPACE, "web")
            .cluster_ip("10.96.0.10")
            .port("http", Protocol::Tcp, 80, TCP_TARGET)
            .service_type("LoadBalancer")
            .node_port("http", 30080)
            .external_traffic_policy(etp)
            .load_balancer_ingress(LB_IP);
        if etp == "Local" {
            s.health_check_node_port(32100)
        } else {
            s
        }
    };
    let hc = node1(32100);
    let health = |w: &World| {
        w.client(|| http_get(hc, "/healthz", PROBE))
            .map(|r| r.status)
    };
    let replies = |w: &World| -> Vec<Reply> {
        (0..30)
            .map(|i| {
                w.request(Protocol::Tcp, lb(80), REQUEST)
                    .unwrap_or_else(|e| panic!("request {i} to {}: {e}", lb(80)))
            })
            .collect()
    };
    let check_local = |w: &mut World, what: &str| {
        w.wait_for(PROPAGATION, &format!("{hc} to answer 200 ({what})"), |w| {
            health(w).is_ok_and(|s| s == 200)
        });
        w.wait_for(
            PROPAGATION,
            &format!("only the local endpoint ({what})"),
            |w| {
                (0..10).all(|_| {
                    w.request(Protocol::Tcp, lb(80), PROBE)
                        .is_ok_and(|r| r.backend == local.name(Protocol::Tcp))
                })
            },
        );
        for r in replies(w) {
            assert_eq!(
                r.backend,
                local.name(Protocol::Tcp),
                "ETP=Local ({what}): {r}"
            );
            assert_eq!(
                r.peer.ip(),
                IpAddr::from(CLIENT_V4),
                "ETP=Local keeps the client's address ({what}): {r}"
            );
        }
    };
    w.write_service(&svc("Local"));
    w.write_slice("web", &[("http", Protocol::Tcp)], &[local, remote]);
    w.start_proxy(&[]);
    w.wait_served(Protocol::Tcp, lb(80), STARTUP);
    check_local(&mut w, "at first");

    w.write_service(&svc("Cluster"));
    w.wait_for(PROPAGATION, &format!("{hc} to close"), |w| {
        health(w).is_err()
    });
    w.wait_for(PROPAGATION, "the remote endpoint to be used", |w| {
        (0..30).any(|_| {
            w.request(Protocol::Tcp, lb(80), PROBE)
                .is_ok_and(|r| r.backend == remote.name(Protocol::Tcp))
        })
    });
    for r in replies(&w) {
        if r.backend == remote.name(Protocol::Tcp) {
            assert_eq!(
                r.peer.ip(),
                IpAddr::from(NODE1_V4),
                "ETP=Cluster to node 2 is SNATed: {r}"
            );
        }
    }

    w.write_service(&svc("Local"));
    check_local(&mut w, "back to Local");
}

/// Sends one TCP segment (`flags`: ACK|PSH, the given sequence numbers and
/// payload, checksummed) from `src` to `dst` through a raw socket made in the
/// calling thread's network namespace.
fn send_raw_tcp(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> io::Result<()> {
    let mut tcp = TcpHeader::new(src.port(), dst.port(), seq, 64240);
    tcp.ack = true;
    tcp.psh = true;
    tcp.acknowledgment_number = ack;
    tcp.checksum = tcp
        .calc_checksum_ipv4_raw(src.ip().octets(), dst.ip().octets(), payload)
        .map_err(io::Error::other)?;
    let mut segment = Vec::new();
    tcp.write(&mut segment)?;
    segment.extend_from_slice(payload);
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let sockaddr = |a: &SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let (from, to) = (sockaddr(&src), sockaddr(&dst));
    // SAFETY: `from` is a valid sockaddr_in of `len` bytes (it sets the source
    // address of the IP header the kernel writes).
    if unsafe { libc::bind(fd.as_raw_fd(), (&raw const from).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `segment` and `to` are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            segment.as_ptr().cast(),
            segment.len(),
            0,
            (&raw const to).cast(),
            len,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `Tcp: InSegs` of the calling thread's network namespace.
fn tcp_in_segments() -> u64 {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("reading snmp");
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().expect("a header"), tcp.next().expect("values"));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "InSegs")
        .and_then(|(_, v)| v.parse().ok())
        .expect("Tcp InSegs")
}

/// Upstream: conntrack.go: "should drop INVALID conntrack entries [Privileged]"
///
/// The boom-server scenario on the tc path (a NodePort to a pod on node 2,
/// SNATed to node 1): in the middle of a connection the backend sends a
/// segment far outside the client's window. kube-proxy must not let such a
/// packet through untranslated, or the client (or node) answers with a RST
/// that kills the connection. Here the reverse translation is by the flow's
/// tuple, so the segment reaches the client translated (its `InSegs` grows),
/// the client's kernel discards it, and the connection goes on.
#[test]
fn invalid_out_of_window_packets_do_not_reset_the_connection() {
    let mut w = World::new(Mode::Ebpf);
    let pod = Pod(2, 1);
    let backend = SocketAddrV4::new(pod_v4(2, 1), 9000);
    let svc = Service::new(NAMESPACE, "boom")
        .cluster_ip("10.96.0.40")
        .port("http", Protocol::Tcp, 80, TCP_TARGET)
        .port("boom", Protocol::Tcp, 9000, 9000)
        .service_type("NodePort")
        .node_port("http", 30080)
        .node_port("boom", 30090);
    w.write_service(&svc);
    w.write_slice("boom", &[("http", Protocol::Tcp)], &[pod]);
    let slice = EndpointSlice::new(NAMESPACE, "boom-4xk2p", "boom", AddressType::IPv4)
        .port("http", Protocol::Tcp, TCP_TARGET)
        .port("boom", Protocol::Tcp, 9000)
        .endpoint(Endpoint::ready(pod.addr(AddressType::IPv4)).on_node(pod.node_name()));
    w.write("boom-slice.yaml", &slice.to_yaml());
    let listener = w
        .topo
        .in_ns(Place::Pods2, || TcpListener::bind(backend))
        .expect("entering pods2")
        .expect("binding the boom server");
    listener
        .set_nonblocking(true)
        .expect("a non-blocking listener");
    w.start_proxy(&[]);
    w.wait_served(Protocol::Tcp, node1(30080), STARTUP);

    let frontend = node1(30090);
    let mut client = w
        .client(|| TcpStream::connect_timeout(&frontend, REQUEST))
        .unwrap_or_else(|e| panic!("connecting to {frontend}: {e}"));
    client
        .set_read_timeout(Some(REQUEST))
        .expect("a read timeout");
    let (mut server, peer) = {
        let mut accepted = None;
        assert!(
            wait_until(REQUEST, || {
                accepted = listener.accept().ok();
                accepted.is_some()
            }),
            "the boom server saw no connection"
        );
        accepted.expect("accepted")
    };
    server.set_nonblocking(false).expect("blocking");
    server
        .set_read_timeout(Some(REQUEST))
        .expect("a read timeout");
    let SocketAddr::V4(peer) = peer else {
        panic!("an IPv4 peer: {peer}")
    };
    assert_eq!(
        *peer.ip(),
        NODE1_V4,
        "ETP=Cluster to node 2 is SNATed to node 1"
    );

    round_trip(&mut client, &mut server, "one\n");

    let before = w.client(tcp_in_segments);
    w.topo
        .in_ns(Place::Pods2, || {
            send_raw_tcp(backend, peer, 0x4000_0000, 1, b"boom")
        })
        .expect("entering pods2")
        .expect("sending the out-of-window segment");
    let arrived = wait_until(REQUEST, || w.client(tcp_in_segments) > before);
    assert!(
        arrived,
        "the out-of-window segment never reached the client (not reverse-translated)"
    );

    // The connection survives: neither side was reset.
    round_trip(&mut client, &mut server, "two\n");
}

/// `line` from the client to the server, echoed back; panics on a failure.
fn round_trip(client: &mut TcpStream, server: &mut TcpStream, line: &str) {
    let mut buf = [0u8; 64];
    let echoed = client
        .write_all(line.as_bytes())
        .and_then(|()| server.read(&mut buf))
        .and_then(|n| server.write_all(&buf[..n]))
        .and_then(|()| client.read(&mut buf));
    match echoed {
        Ok(n) => assert_eq!(&buf[..n], line.as_bytes(), "the echo of {line:?}"),
        Err(e) => panic!("the connection failed at {line:?}: {e} ({:?})", e.kind()),
    }
}
