//! Local-traffic detection and masquerade (`--cluster-cidr`,
//! `--detect-local-mode`, `--masquerade-all`) with real packets in the
//! two-node [`Topology`]: the proxy runs on node 1 with `--devices eth0`; the
//! external client on the LAN routes the Service CIDR (`10.96.0.0/16`,
//! `fd00:96::/64`) to node 1, as a router does when the Service CIDR is
//! advertised over BGP; pods live on node 1 and node 2 (`10.244.N.1x`,
//! `fd00:244:N::1x`), and each backend says which source address it saw.
//!
//! Covered (kube-proxy's nftables rules are the reference), `ClusterCIDR`,
//! `NodeCIDR` (the Node from a fake API server), `BridgeInterface` and
//! `InterfaceNamePrefix`:
//! - with a detector, ClusterIP traffic from off-cluster is translated on the
//!   external device and masqueraded to node 1 (TCP and UDP, both families);
//! - with `--socket-lb=false`, an in-cluster client (a pod, through the pod
//!   device) keeps its address at the backend while an off-cluster one is
//!   masqueraded; `--masquerade-all` masquerades the pod too;
//! - without a detector (the default: no `--cluster-cidr`), with socket LB on,
//!   ClusterIP traffic arriving on the external device is not translated; with
//!   `--socket-lb=false` it is translated and not masqueraded (kube-proxy's
//!   behaviour without a detector).

#[expect(
    dead_code,
    reason = "this file uses part of the shared north-south world"
)]
mod northsouth_world;

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use proxy_tests::{
    FakeApiServer, Mode, ProxyProcess, Reply,
    manifest::{AddressType, Endpoint, EndpointSlice, Protocol, Service},
    northsouth::{LAN_DEVICE, NODE1_V4, NODE1_V6, POD_DEVICE, Place},
    proxy_bin, tcp_request_timeout, udp_unconnected_request_timeout, wait_until,
};

use northsouth_world::*;

const CLUSTER_CIDR: &str = "10.244.0.0/16,fd00:244::/32";
const VIP4: &str = "10.96.0.10";
const VIP6: &str = "fd00:96::10";

/// Requests per check.
const N: usize = 6;

fn vip(family: AddressType, port: u16) -> SocketAddr {
    let addr = match family {
        AddressType::IPv4 => VIP4,
        AddressType::IPv6 => VIP6,
    };
    SocketAddr::new(addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}")), port)
}

impl World {
    /// The topology, backends on `pods`, `web` (ClusterIP) on them, and a
    /// client route for the Service CIDR via node 1.
    fn web(pods: &[Pod]) -> Self {
        Self::with_service(pods, |svc| svc)
    }

    /// As [`World::web`], with `web` changed by `edit`.
    fn with_service(pods: &[Pod], edit: impl FnOnce(Service) -> Service) -> Self {
        let w = World::with_pods(Mode::Ebpf, pods);
        // The Service CIDR advertised to the LAN's router: via node 1. It
        // stays inside the test's namespaces.
        w.topo
            .ip(
                Place::Client,
                &format!("route add 10.96.0.0/16 via {NODE1_V4} dev {LAN_DEVICE}"),
            )
            .expect("client route to the Service CIDR");
        w.topo
            .ip(
                Place::Client,
                &format!("-6 route add fd00:96::/64 via {NODE1_V6} dev {LAN_DEVICE}"),
            )
            .expect("client route to the IPv6 Service CIDR");
        let svc = Service::new(NAMESPACE, "web")
            .cluster_ip(VIP4)
            .cluster_ip(VIP6)
            .port("http", Protocol::Tcp, TCP_PORT, TCP_TARGET)
            .port("dns", Protocol::Udp, UDP_PORT, UDP_TARGET);
        w.write("web-service.yaml", &edit(svc).to_yaml());
        for (family, name) in [
            (AddressType::IPv4, "web-4xk2p"),
            (AddressType::IPv6, "web-6q8nd"),
        ] {
            let mut s = EndpointSlice::new(NAMESPACE, name, "web", family)
                .port("http", Protocol::Tcp, TCP_TARGET)
                .port("dns", Protocol::Udp, UDP_TARGET);
            for pod in pods {
                s = s.endpoint(Endpoint::ready(pod.addr(family)).on_node(pod.node_name()));
            }
            w.write(&format!("{name}.yaml"), &s.to_yaml());
        }
        w
    }

    /// Waits until a TCP request from `place` to `frontend` is answered.
    fn wait_served(&mut self, place: Place, frontend: SocketAddr) {
        let mut exited = None;
        let ok = wait_until(STARTUP, || {
            if let Some(status) = self.proxy.as_mut().and_then(ProxyProcess::exited) {
                exited = Some(status);
                return true;
            }
            self.topo
                .in_ns(place, || tcp_request_timeout(frontend, PROBE))
                .is_ok_and(|r| r.is_ok())
        });
        assert!(
            exited.is_none(),
            "the proxy exited with {exited:?}:\n{}",
            self.log()
        );
        assert!(
            ok,
            "{place:?} → {frontend}: not served within {STARTUP:?}\n{}",
            self.log()
        );
    }

    /// `N` TCP requests from `place` to `frontend`; panics on a failure.
    fn tcp(&self, place: Place, frontend: SocketAddr) -> Vec<Reply> {
        self.topo
            .in_ns(place, || {
                (0..N)
                    .map(|i| {
                        tcp_request_timeout(frontend, REQUEST).unwrap_or_else(|e| {
                            panic!("{place:?} → {frontend}: TCP request {i} failed: {e}")
                        })
                    })
                    .collect()
            })
            .unwrap_or_else(|e| panic!("running in {place:?}: {e}"))
    }

    /// `N` UDP requests from `place` to `frontend`, each reply checked to
    /// come from the frontend.
    fn udp(&self, place: Place, frontend: SocketAddr) -> Vec<Reply> {
        self.topo
            .in_ns(place, || {
                (0..N)
                    .map(|i| {
                        let (reply, from) = udp_unconnected_request_timeout(frontend, REQUEST)
                            .unwrap_or_else(|e| {
                                panic!("{place:?} → {frontend}: UDP request {i} failed: {e}")
                            });
                        assert_eq!(from, frontend, "the reply must come from the ClusterIP");
                        reply
                    })
                    .collect()
            })
            .unwrap_or_else(|e| panic!("running in {place:?}: {e}"))
    }

    /// TCP and UDP from `place` to the ClusterIP of `family`: the backends
    /// saw only sources among `expected`.
    fn check_source(&mut self, place: Place, family: AddressType, expected: &[IpAddr], why: &str) {
        let addr = vip(family, 0).ip();
        self.check_source_at(place, addr, expected, why);
    }

    /// As [`World::check_source`], to `addr` (the ports are `web`'s).
    fn check_source_at(&mut self, place: Place, addr: IpAddr, expected: &[IpAddr], why: &str) {
        let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
        self.wait_served(place, SocketAddr::new(addr, TCP_PORT));
        for (proto, replies) in [
            ("TCP", self.tcp(place, SocketAddr::new(addr, TCP_PORT))),
            ("UDP", self.udp(place, SocketAddr::new(addr, UDP_PORT))),
        ] {
            let seen = peers(&replies);
            assert!(
                seen.iter().all(|p| expected.contains(p)),
                "{place:?} → {proto} {family}: {why}: expected sources among {expected:?}, the \
                 backends saw {seen:?}"
            );
        }
    }
}

/// Node 1's pods' addresses of `family` (the source a pod client uses).
fn pods1(family: AddressType) -> Vec<IpAddr> {
    (1..=3).map(|i| Pod(1, i).addr(family)).collect()
}

/// With `--cluster-cidr`, an external client whose router sends the Service
/// CIDR to node 1 reaches the ClusterIP (socket LB on: the external device is
/// not a ClusterIP device), over TCP and UDP, both families, and the node-2
/// backends see node 1's address: masqueraded, so replies come back through
/// node 1.
#[test]
fn off_cluster_traffic_to_a_cluster_ip_is_translated_and_masqueraded() {
    let mut w = World::web(&[Pod(2, 1), Pod(2, 2)]);
    w.start_proxy(&["--cluster-cidr", CLUSTER_CIDR]);
    for family in FAMILIES {
        w.check_source(
            Place::Client,
            family,
            &[node1_ip(family)],
            "an off-cluster source must be masqueraded to node 1",
        );
    }
    // What an operator sees: the tries hold one prefix each, and the new
    // flows were counted.
    let inspect = |what: &str| {
        let out = std::process::Command::new(proxy_bin())
            .args(["inspect", what, "--pin-path"])
            .arg(w.sandbox.pin_path())
            .output()
            .unwrap_or_else(|e| panic!("running proxy inspect {what}: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let status = inspect("status");
    for map in ["LOCAL_V4", "LOCAL_V6"] {
        let line = status.lines().find(|l| l.starts_with(map));
        let entries = line.and_then(|l| l.split_whitespace().nth(2));
        assert_eq!(entries, Some("1"), "{map} must hold one prefix:\n{status}");
    }
    let stats = inspect("stats");
    let masqueraded = stats
        .lines()
        .find_map(|l| l.strip_prefix("tc_cluster_ip_masqueraded"))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(
        masqueraded.is_some_and(|n| n >= 4),
        "each new flow is counted under tc_cluster_ip_masqueraded:\n{stats}"
    );
}

/// The same with a backend on node 1: its replies come back through node 1
/// whatever their destination, so the flow is not SNATed (as external
/// `externalTrafficPolicy: Cluster` flows to local backends are not): the
/// backend sees the client, and the client's replies come from the ClusterIP.
#[test]
fn off_cluster_traffic_to_a_local_backend_is_translated_without_snat() {
    let mut w = World::web(&[Pod(1, 1)]);
    w.start_proxy(&["--cluster-cidr", CLUSTER_CIDR]);
    for family in FAMILIES {
        w.check_source(
            Place::Client,
            family,
            &[client_ip(family)],
            "a node-1 backend is reached without SNAT",
        );
    }
}

/// `--socket-lb=false` with `--cluster-cidr`: a pod on node 1 (source inside
/// the cluster CIDR, arriving on the pod device) keeps its address at a
/// node-2 backend, while the external client is masqueraded, as kube-proxy's
/// "masquerade off-cluster traffic to a service VIP" rule does.
#[test]
fn without_socket_lb_in_cluster_sources_keep_their_address_and_others_are_masqueraded() {
    let mut w = World::web(&[Pod(2, 1), Pod(2, 2)]);
    w.start_proxy(&[
        "--socket-lb=false",
        "--pod-devices",
        POD_DEVICE,
        "--cluster-cidr",
        CLUSTER_CIDR,
    ]);
    for family in FAMILIES {
        w.check_source(
            Place::Pods1,
            family,
            &pods1(family),
            "an in-cluster source keeps its address",
        );
        w.check_source(
            Place::Client,
            family,
            &[node1_ip(family)],
            "an off-cluster source must be masqueraded to node 1",
        );
    }
}

/// The interface modes: traffic arriving on the pods' device (named by
/// `--pod-bridge-interface`, or matching `--pod-interface-name-prefix`) is
/// in-cluster and keeps its address, while the external client (arriving on
/// `eth0`) is masqueraded. The sources themselves do not matter here: no
/// `--cluster-cidr` is given.
#[test]
fn interface_modes_tell_pods_from_the_rest_by_device() {
    let mut w = World::web(&[Pod(2, 1)]);
    for detector in [
        [
            "--detect-local-mode=BridgeInterface",
            "--pod-bridge-interface",
            POD_DEVICE,
        ],
        [
            "--detect-local-mode=InterfaceNamePrefix",
            "--pod-interface-name-prefix",
            "po",
        ],
    ] {
        drop(w.proxy.take());
        let mut args = vec!["--socket-lb=false", "--pod-devices", POD_DEVICE];
        args.extend(detector);
        w.start_proxy(&args);
        for family in FAMILIES {
            w.check_source(
                Place::Pods1,
                family,
                &pods1(family),
                &format!("{detector:?}: traffic from the pods' device keeps its address"),
            );
            w.check_source(
                Place::Client,
                family,
                &[node1_ip(family)],
                &format!("{detector:?}: traffic from eth0 must be masqueraded"),
            );
        }
    }
}

/// kube-proxy's short-circuit: with a detector, a pod's traffic to an
/// `externalTrafficPolicy: Local` ExternalIP goes to the cluster-wide
/// endpoints (here only node 2 has one, so the external scope has none and
/// would drop it), unmasqueraded, as if it had gone out to a load balancer and
/// come back.
#[test]
fn pods_reach_etp_local_external_ips_through_every_endpoint() {
    let mut w = World::with_service(&[Pod(2, 1)], |svc| {
        svc.service_type("NodePort")
            .node_port("http", 30080)
            .node_port("dns", 30053)
            .external_ip("203.0.113.10")
            .external_ip("fd00:203::10")
            .external_traffic_policy("Local")
    });
    w.start_proxy(&[
        "--socket-lb=false",
        "--pod-devices",
        POD_DEVICE,
        "--cluster-cidr",
        CLUSTER_CIDR,
    ]);
    for (family, external_ip) in [
        (AddressType::IPv4, "203.0.113.10"),
        (AddressType::IPv6, "fd00:203::10"),
    ] {
        // The ClusterIP first: the dataplane is up.
        w.check_source(Place::Pods1, family, &pods1(family), "ClusterIP");
        let addr: IpAddr = external_ip.parse().unwrap_or_else(|e| panic!("{e}"));
        w.check_source_at(
            Place::Pods1,
            addr,
            &pods1(family),
            "a pod's flow to an ETP=Local ExternalIP uses every endpoint, unmasqueraded",
        );
    }
}

/// `--detect-local-mode=NodeCIDR`: the in-cluster prefixes are this Node's
/// `spec.podCIDRs`, read from the API server (the fake one, inside node 1's
/// namespace; the Service still comes from the manifests): node 1's pod keeps
/// its address, the external client is masqueraded.
#[test]
fn node_cidr_mode_takes_the_nodes_pod_cidrs() {
    let mut w = World::web(&[Pod(2, 1)]);
    let api = FakeApiServer::start().expect("starting the fake API server in node 1");
    api.apply(serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE1},
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:244:1::/64"]},
    }));
    let kubeconfig = api
        .write_kubeconfig(w.sandbox.dir())
        .expect("writing the kubeconfig");
    let kubeconfig = kubeconfig.display().to_string();
    w.start_proxy(&[
        "--kubeconfig",
        &kubeconfig,
        "--detect-local-mode=NodeCIDR",
        "--socket-lb=false",
        "--pod-devices",
        POD_DEVICE,
    ]);
    for family in FAMILIES {
        w.check_source(
            Place::Pods1,
            family,
            &pods1(family),
            "a source in the Node's pod CIDR keeps its address",
        );
        w.check_source(
            Place::Client,
            family,
            &[node1_ip(family)],
            "a source outside the Node's pod CIDR is masqueraded",
        );
    }
    assert!(
        w.log().contains("fd00:244:1::/64"),
        "the detector's CIDRs are logged:\n{}",
        w.log()
    );
}

/// `--masquerade-all` masquerades ClusterIP traffic from in-cluster sources
/// too (here a pod, with `--socket-lb=false`, and no detector at all).
#[test]
fn masquerade_all_masquerades_in_cluster_sources_too() {
    let mut w = World::web(&[Pod(2, 1)]);
    w.start_proxy(&[
        "--socket-lb=false",
        "--pod-devices",
        POD_DEVICE,
        "--masquerade-all",
    ]);
    for family in FAMILIES {
        w.check_source(
            Place::Pods1,
            family,
            &[node1_ip(family)],
            "--masquerade-all must masquerade a pod's ClusterIP traffic",
        );
    }
}

/// No detector (no `--cluster-cidr`, kube-proxy's default), socket LB on:
/// ClusterIP traffic arriving on the external device is not translated (the
/// tc programs count it as `tc_cluster_ip_skipped`), so the external client
/// is not served. With `--socket-lb=false` every device translates
/// ClusterIPs and, as kube-proxy does without a detector, does not
/// masquerade: a local backend sees the client's own address.
#[test]
fn without_a_detector_off_cluster_traffic_is_not_masqueraded() {
    let mut w = World::web(&[Pod(1, 1)]);
    w.start_proxy(&[]);
    // The tc programs go on once the first sync is done (logged just before).
    let mut exited = None;
    let up = wait_until(STARTUP, || {
        if let Some(status) = w.proxy.as_mut().and_then(ProxyProcess::exited) {
            exited = Some(status);
            return true;
        }
        w.log().contains("tc devices and node addresses")
    });
    assert!(
        up && exited.is_none(),
        "proxy not up: {exited:?}\n{}",
        w.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    for family in FAMILIES {
        for _ in 0..3 {
            let result = w
                .topo
                .in_ns(Place::Client, || {
                    tcp_request_timeout(vip(family, TCP_PORT), PROBE)
                })
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                result.is_err(),
                "{family}: without a detector and with socket LB, the external device must not \
                 translate ClusterIPs; got {result:?}"
            );
        }
    }
    drop(w.proxy.take());
    w.start_proxy(&["--socket-lb=false"]);
    for family in FAMILIES {
        w.check_source(
            Place::Client,
            family,
            &[client_ip(family)],
            "no detector: translated, not masqueraded (kube-proxy's behaviour)",
        );
    }
}

/// A detector the flags cannot make is an error at start that names the flag,
/// before anything is bound or loaded: `BridgeInterface` without
/// `--pod-bridge-interface`, `InterfaceNamePrefix` without its prefix, two
/// CIDRs of a family, and `NodeCIDR` without the Kubernetes source.
#[test]
fn impossible_detectors_are_refused_at_start_naming_the_flag() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let manifests = dir.path().display().to_string();
    let missing_cgroup = dir.path().join("no-such-cgroup").display().to_string();
    let pins = dir.path().join("pins").display().to_string();
    for (args, flag) in [
        (
            vec!["--detect-local-mode=BridgeInterface"],
            "--pod-bridge-interface",
        ),
        (
            vec!["--detect-local-mode=InterfaceNamePrefix"],
            "--pod-interface-name-prefix",
        ),
        (
            vec!["--cluster-cidr", "10.0.0.0/16,10.1.0.0/16"],
            "--cluster-cidr",
        ),
        (vec!["--detect-local-mode=NodeCIDR"], "--kubeconfig"),
    ] {
        let out = std::process::Command::new(proxy_bin())
            // Should the check ever move after the load, these keep the
            // proxy off the machine: a cgroup that does not exist, a pin
            // path of our own, no device, no listener.
            .args(["run", "--manifests", &manifests, "--node-name", NODE1])
            .args([
                "--mode",
                "ebpf",
                "--cgroup",
                &missing_cgroup,
                "--pin-path",
                &pins,
            ])
            .args(["--devices", "pxt-none0", "--metrics-bind-address", ""])
            .args(["--healthz-bind-address", ""])
            .args(&args)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .output()
            .expect("running the proxy");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted:\n{stderr}");
        assert!(
            stderr.contains(flag),
            "{args:?}: the error must name {flag}:\n{stderr}"
        );
    }
}
