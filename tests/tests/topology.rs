//! The north-south topology itself (no proxy): the routes the tests rely on
//! work, addresses are not translated anywhere, and the namespaces go away.
//! If one of these fails, a failure in `northsouth.rs` says nothing about the
//! proxy.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use proxy_tests::{
    Sandbox,
    northsouth::{CLIENT_V4, CLIENT_V6, NODE1_V4, NODE1_V6, Place, Topology, pod_v4, pod_v6},
    tcp_request_timeout, udp_unconnected_request_timeout, wait_until,
};

const PORT: u16 = 9000;
const TIMEOUT: Duration = Duration::from_secs(2);

fn new_world() -> (Topology, Sandbox) {
    let sandbox = Sandbox::new().expect("creating the sandbox (the tests need root)");
    let topo = Topology::build(&sandbox).expect("building the topology");
    (topo, sandbox)
}

#[test]
fn node1_reaches_the_pods_of_both_nodes_untranslated() {
    let (topo, _sandbox) = new_world();
    for (place, node) in [(Place::Pods1, 1), (Place::Pods2, 2)] {
        let addrs: [IpAddr; 2] = [pod_v4(node, 1).into(), pod_v6(node, 1).into()];
        for addr in addrs {
            let bind = SocketAddr::new(addr, PORT);
            let _tcp = topo
                .tcp_backend(place, bind, "pod")
                .unwrap_or_else(|e| panic!("starting a backend on {bind}: {e}"));
            let _udp = topo
                .udp_backend(place, bind, "pod")
                .unwrap_or_else(|e| panic!("starting a backend on {bind}: {e}"));
            let reply = topo
                .in_ns(Place::Node1, || tcp_request_timeout(bind, TIMEOUT))
                .expect("entering node 1")
                .unwrap_or_else(|e| panic!("node 1 → {bind} over TCP: {e}"));
            // Node 1 reaches its own pods from its pod-side gateway, node 2's
            // pods from its LAN address (routed via node 2).
            let expected: IpAddr = match (node, addr) {
                (1, IpAddr::V4(_)) => "10.244.1.1".parse().expect("an IP"),
                (1, IpAddr::V6(_)) => "fd00:244:1::1".parse().expect("an IP"),
                (_, IpAddr::V4(_)) => NODE1_V4.into(),
                (_, IpAddr::V6(_)) => NODE1_V6.into(),
            };
            assert_eq!(
                reply.peer.ip(),
                expected,
                "node 1 → {bind}: the pod saw {reply}"
            );
            let (reply, from) = topo
                .in_ns(Place::Node1, || {
                    udp_unconnected_request_timeout(bind, TIMEOUT)
                })
                .expect("entering node 1")
                .unwrap_or_else(|e| panic!("node 1 → {bind} over UDP: {e}"));
            assert_eq!((reply.peer.ip(), from), (expected, bind));
        }
    }
}

#[test]
fn the_client_reaches_node1_and_pods_reach_the_client() {
    let (topo, _sandbox) = new_world();
    for (node_ip, client_ip) in [
        (IpAddr::from(NODE1_V4), IpAddr::from(CLIENT_V4)),
        (NODE1_V6.into(), CLIENT_V6.into()),
    ] {
        let on_node = SocketAddr::new(node_ip, PORT);
        let _node = topo
            .tcp_backend(Place::Node1, on_node, "node1")
            .expect("a backend on node 1");
        let reply = topo
            .in_ns(Place::Client, || tcp_request_timeout(on_node, TIMEOUT))
            .expect("entering the client")
            .unwrap_or_else(|e| panic!("client → {on_node}: {e}"));
        assert_eq!(reply.peer.ip(), client_ip, "client → node 1: {reply}");

        // Pods on both nodes reach the client through their node (the client
        // has no route back to pod ranges, as an outside client would not: a
        // reply only reaches a pod after the proxy's translation). A datagram
        // that arrives is counted by the client's backend.
        let on_client = SocketAddr::new(client_ip, PORT);
        let client = topo
            .udp_backend(Place::Client, on_client, "client")
            .expect("a backend on the client");
        for (n, place) in [(1, Place::Pods1), (2, Place::Pods2)] {
            let answered = topo
                .in_ns(place, || {
                    udp_unconnected_request_timeout(on_client, Duration::from_millis(300))
                })
                .expect("entering a pods namespace");
            assert!(
                answered.is_err(),
                "{place:?} → {on_client}: the answer cannot come back, got {answered:?}"
            );
            assert!(
                wait_until(TIMEOUT, || client.served() >= n),
                "{place:?} → {on_client}: the datagram never reached the client"
            );
        }
    }
}

#[test]
fn dropping_the_topology_removes_its_namespaces() {
    let (topo, sandbox) = new_world();
    let places = [
        Place::Client,
        Place::Lan,
        Place::Node2,
        Place::Pods1,
        Place::Pods2,
    ];
    let paths: Vec<PathBuf> = places.iter().map(|&p| topo.netns_path(p)).collect();
    for (place, path) in places.iter().zip(&paths) {
        assert!(path.exists(), "{place:?}'s namespace {}", path.display());
        assert!(
            topo.name(*place).starts_with(sandbox.netns_name()),
            "{place:?}: named after the sandbox so the sweep finds leftovers"
        );
    }
    assert_eq!(topo.netns_path(Place::Node1), sandbox.netns_path());
    drop(topo);
    for path in &paths {
        assert!(!path.exists(), "{} is still there", path.display());
    }
    assert!(sandbox.netns_path().exists(), "node 1 is the sandbox's");
}
