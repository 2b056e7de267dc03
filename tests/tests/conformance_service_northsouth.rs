//! Kubernetes' Service e2e scenarios (`test/e2e/network/service.go`) whose
//! traffic is external: an external client on the LAN sends to node 1's
//! NodePort through the per-packet (tc) path, in the two-node topology of
//! `proxy_tests::northsouth` (the proxy runs on node 1, eBPF mode). Covered:
//! the fallback to terminating endpoints under `externalTrafficPolicy`
//! Cluster and Local, and ClientIP affinity through a NodePort keyed by the
//! external client's address (set, expired, switched in place).

#[expect(
    dead_code,
    reason = "this file uses part of the shared north-south world"
)]
mod northsouth_world;

use std::{
    collections::BTreeSet,
    io::ErrorKind,
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use proxy_tests::{
    Mode, Reply,
    manifest::{AddressType, Endpoint, EndpointSlice, Protocol, Service},
    tcp_request_timeout,
};

use northsouth_world::*;

const NODE_PORT: u16 = 30080;
const PODS: [Pod; 4] = [Pod(1, 1), Pod(1, 2), Pod(2, 1), Pod(2, 2)];

fn node_port(family: AddressType) -> SocketAddr {
    SocketAddr::new(node1_ip(family), NODE_PORT)
}

/// A dual-stack NodePort Service `web` (80/TCP → 8080, nodePort 30080).
fn web(etp: &str, affinity: Option<u32>) -> Service {
    let mut svc = Service::new(NAMESPACE, "web")
        .cluster_ip("10.96.0.70")
        .cluster_ip("fd00:96::70")
        .port("http", Protocol::Tcp, 80, TCP_TARGET)
        .service_type("NodePort")
        .node_port("http", NODE_PORT)
        .external_traffic_policy(etp);
    if let Some(t) = affinity {
        svc = svc.session_affinity(t);
    }
    svc
}

/// A pod's endpoint: ready, terminating (serving), or terminating and not serving.
#[derive(Clone, Copy, Debug)]
enum State {
    Ready,
    Terminating,
    TerminatingUnserving,
}

fn endpoint(pod: Pod, family: AddressType, state: State) -> Endpoint {
    let addr = pod.addr(family);
    let e = match state {
        State::Ready => Endpoint::ready(addr),
        State::Terminating => Endpoint::terminating(addr),
        State::TerminatingUnserving => Endpoint {
            serving: Some(false),
            ..Endpoint::terminating(addr)
        },
    };
    e.on_node(pod.node_name())
}

impl World {
    /// Writes `web`'s Service and its slices with these endpoints.
    fn write_web(&self, svc: &Service, endpoints: &[(Pod, State)]) {
        self.write("web-service.yaml", &svc.to_yaml());
        for family in FAMILIES {
            let mut s = EndpointSlice::new(NAMESPACE, &format!("web-{family}"), "web", family)
                .port("http", Protocol::Tcp, TCP_TARGET);
            for (pod, state) in endpoints {
                s = s.endpoint(endpoint(*pod, family, *state));
            }
            self.write(&format!("web-slice-{family}.yaml"), &s.to_yaml());
        }
    }

    /// `n` TCP requests from the client; `None` when one fails.
    fn try_replies(&self, to: SocketAddr, n: usize, timeout: Duration) -> Option<Vec<Reply>> {
        self.client(|| {
            (0..n)
                .map(|_| tcp_request_timeout(to, timeout).ok())
                .collect()
        })
    }

    /// `n` TCP requests from the client; panics on a failure.
    fn replies(&self, to: SocketAddr, n: usize) -> Vec<Reply> {
        self.try_replies(to, n, REQUEST)
            .unwrap_or_else(|| panic!("client → {to}: a TCP request failed"))
    }

    /// Waits until the client's requests to `to` are answered by exactly
    /// `expected`, then checks 30 more.
    fn expect_served(&mut self, to: SocketAddr, expected: &[String], what: &str) -> Vec<Reply> {
        let want: BTreeSet<String> = expected.iter().cloned().collect();
        self.wait_for(STARTUP, &format!("{what}: {to} served by {want:?}"), |w| {
            w.try_replies(to, 15, PROBE).is_some_and(|r| {
                r.iter().map(|r| r.backend.clone()).collect::<BTreeSet<_>>() == want
            })
        });
        let replies = self.replies(to, 30);
        let seen: BTreeSet<String> = replies.iter().map(|r| r.backend.clone()).collect();
        assert_eq!(
            seen, want,
            "{what}: {to}: expected exactly these backends to answer"
        );
        replies
    }

    /// Waits until the client's SYNs to `to` are dropped (a timeout, not a refusal).
    fn expect_dropped(&mut self, to: SocketAddr, what: &str) {
        self.wait_for(PROPAGATION, &format!("{what}: {to} dropped"), |w| {
            w.client(|| TcpStream::connect_timeout(&to, PROBE))
                .is_err_and(|e| e.kind() == ErrorKind::TimedOut)
        });
        let r = self.client(|| TcpStream::connect_timeout(&to, Duration::from_secs(1)));
        assert!(
            r.as_ref().is_err_and(|e| e.kind() == ErrorKind::TimedOut),
            "{what}: {to}: expected the SYN to be dropped (a timeout), saw {r:?}"
        );
    }

    fn distinct(&self, to: SocketAddr, n: usize) -> BTreeSet<String> {
        self.replies(to, n).into_iter().map(|r| r.backend).collect()
    }
}

/// Upstream: service.go: "should fallback to terminating endpoints when there are no ready endpoints with externallTrafficPolicy=Cluster"
#[test]
fn fallback_to_terminating_endpoints_with_etp_cluster() {
    let mut w = World::with_pods(Mode::Ebpf, &PODS);
    // Every endpoint terminates; one of them no longer serves.
    let eps = [
        (Pod(1, 1), State::Terminating),
        (Pod(2, 1), State::Terminating),
        (Pod(2, 2), State::TerminatingUnserving),
    ];
    w.write_web(&web("Cluster", None), &eps);
    w.start_proxy(&[]);
    for family in FAMILIES {
        let want = [Pod(1, 1).tcp_name(family), Pod(2, 1).tcp_name(family)];
        w.expect_served(node_port(family), &want, "all terminating, ETP=Cluster");
    }
    // A ready endpoint appears: new flows use only it.
    let eps = [
        (Pod(1, 1), State::Terminating),
        (Pod(2, 1), State::Terminating),
        (Pod(2, 2), State::Ready),
    ];
    w.write_web(&web("Cluster", None), &eps);
    for family in FAMILIES {
        w.expect_served(
            node_port(family),
            &[Pod(2, 2).tcp_name(family)],
            "one ready, ETP=Cluster",
        );
    }
}

/// Upstream: service.go: "should fallback to local terminating endpoints when there are no ready endpoints with externalTrafficPolicy=Local"
#[test]
fn fallback_to_local_terminating_endpoints_with_etp_local() {
    let mut w = World::with_pods(Mode::Ebpf, &PODS);
    // The local endpoint terminates (still serving); a ready one on node 2.
    let eps = [(Pod(1, 1), State::Terminating), (Pod(2, 1), State::Ready)];
    w.write_web(&web("Local", None), &eps);
    w.start_proxy(&[]);
    for family in FAMILIES {
        let replies = w.expect_served(
            node_port(family),
            &[Pod(1, 1).tcp_name(family)],
            "local terminating, ETP=Local",
        );
        assert_eq!(
            peers(&replies),
            vec![client_ip(family)],
            "ETP=Local must preserve the client's address"
        );
    }
    // It stops serving: nothing local is left, so external traffic is dropped.
    let eps = [
        (Pod(1, 1), State::TerminatingUnserving),
        (Pod(2, 1), State::Ready),
    ];
    w.write_web(&web("Local", None), &eps);
    for family in FAMILIES {
        w.expect_dropped(
            node_port(family),
            "local terminating and not serving, ETP=Local",
        );
    }
}

/// Upstream: service.go: "should have session affinity work for NodePort service [LinuxOnly] [Conformance]"
/// (the external client's variant: the tc path keys affinity by its address)
#[test]
fn session_affinity_work_for_node_port_from_an_external_client() {
    let mut w = World::with_pods(Mode::Ebpf, &PODS);
    let all = [
        (Pod(1, 1), State::Ready),
        (Pod(1, 2), State::Ready),
        (Pod(2, 1), State::Ready),
    ];
    w.write_web(&web("Cluster", Some(10800)), &all);
    w.start_proxy(&[]);
    for family in FAMILIES {
        let to = node_port(family);
        w.wait_for(STARTUP, &format!("{to} to be served"), |w| {
            w.try_replies(to, 1, PROBE).is_some()
        });
        let seen = w.distinct(to, 40);
        assert_eq!(
            seen.len(),
            1,
            "ClientIP affinity through {to}: expected one backend, saw {seen:?}"
        );
    }
}

/// Upstream: service.go: "should have session affinity timeout work for NodePort service [LinuxOnly]"
/// (the external client's variant)
#[test]
fn session_affinity_timeout_work_for_node_port_from_an_external_client() {
    let mut w = World::with_pods(Mode::Ebpf, &PODS);
    let all = [
        (Pod(1, 1), State::Ready),
        (Pod(1, 2), State::Ready),
        (Pod(2, 1), State::Ready),
    ];
    w.write_web(&web("Cluster", Some(1)), &all);
    w.start_proxy(&[]);
    let to = node_port(AddressType::IPv4);
    w.wait_for(STARTUP, &format!("{to} to be served"), |w| {
        w.try_replies(to, 1, PROBE).is_some()
    });
    let seen = w.distinct(to, 10);
    assert_eq!(
        seen.len(),
        1,
        "within the timeout: expected one backend, saw {seen:?}"
    );
    // Past the timeout, each flow is balanced afresh: twelve expired picks all
    // landing on one of three backends has odds of 3^-11.
    let mut picks = BTreeSet::new();
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(1300));
        picks.extend(w.distinct(to, 1));
        if picks.len() > 1 {
            return;
        }
    }
    panic!(
        "expected NodePort affinity to expire after 1 s without traffic, every pick went to {picks:?}"
    );
}

/// Upstream: service.go: "should be able to switch session affinity for NodePort service [LinuxOnly] [Conformance]"
/// (the external client's variant)
#[test]
fn switch_session_affinity_for_node_port_from_an_external_client() {
    let mut w = World::with_pods(Mode::Ebpf, &PODS);
    let all = [
        (Pod(1, 1), State::Ready),
        (Pod(1, 2), State::Ready),
        (Pod(2, 1), State::Ready),
    ];
    w.write_web(&web("Cluster", Some(10800)), &all);
    w.start_proxy(&[]);
    let to = node_port(AddressType::IPv4);
    w.wait_for(STARTUP, &format!("{to} to be served"), |w| {
        w.try_replies(to, 1, PROBE).is_some()
    });
    let seen = w.distinct(to, 30);
    assert_eq!(
        seen.len(),
        1,
        "ClientIP affinity: expected one backend, saw {seen:?}"
    );

    w.write_web(&web("Cluster", None), &all);
    w.wait_for(
        PROPAGATION,
        "the NodePort to spread again without affinity",
        |w| {
            w.try_replies(to, 15, PROBE)
                .is_some_and(|r| r.iter().map(|r| &r.backend).collect::<BTreeSet<_>>().len() > 1)
        },
    );
    let seen = w.distinct(to, 40);
    assert_eq!(
        seen.len(),
        3,
        "affinity None: expected all three backends, saw {seen:?}"
    );

    w.write_web(&web("Cluster", Some(10800)), &all);
    w.wait_for(PROPAGATION, "the NodePort to be sticky again", |w| {
        w.try_replies(to, 20, PROBE)
            .is_some_and(|r| r.iter().map(|r| &r.backend).collect::<BTreeSet<_>>().len() == 1)
    });
    let seen = w.distinct(to, 30);
    assert_eq!(
        seen.len(),
        1,
        "ClientIP affinity again: expected one backend, saw {seen:?}"
    );
}

/// `web` (ETP Cluster) with `publishNotReadyAddresses: publish`.
fn web_publishing(publish: bool) -> String {
    web("Cluster", None).to_yaml().replacen(
        "\nspec:\n",
        &format!("\nspec:\n  publishNotReadyAddresses: {publish}\n"),
        1,
    )
}

/// Upstream: service.go: "should be able to connect to terminating and unready endpoints if PublishNotReadyAddresses is true"
/// (the external client's variant: the NodePort through the tc path)
#[test]
fn connect_to_terminating_and_unready_endpoints_if_publish_not_ready_addresses_from_an_external_client()
 {
    let mut w = World::with_pods(Mode::Ebpf, &PODS);
    let only = [(Pod(2, 1), State::TerminatingUnserving)];
    w.write_web(&web("Cluster", None), &only);
    w.write("web-service.yaml", &web_publishing(true));
    w.start_proxy(&[]);
    for family in FAMILIES {
        w.expect_served(
            node_port(family),
            &[Pod(2, 1).tcp_name(family)],
            "publishNotReadyAddresses: true",
        );
    }
}

/// Upstream: service.go: "should not be able to connect to terminating and unready endpoints if PublishNotReadyAddresses is false"
/// (the external client's variant)
#[test]
fn no_connect_to_terminating_and_unready_endpoints_without_publish_not_ready_addresses_from_an_external_client()
 {
    let mut w = World::with_pods(Mode::Ebpf, &PODS);
    let only = [(Pod(2, 1), State::TerminatingUnserving)];
    w.write_web(&web("Cluster", None), &only);
    w.write("web-service.yaml", &web_publishing(false));
    w.start_proxy(&[]);
    // The control first: published, the endpoint is reached, so the
    // dataplane is up; then not published, no flow gets through.
    w.write("web-service.yaml", &web_publishing(true));
    for family in FAMILIES {
        w.expect_served(
            node_port(family),
            &[Pod(2, 1).tcp_name(family)],
            "publishNotReadyAddresses: true",
        );
    }
    w.write("web-service.yaml", &web_publishing(false));
    for family in FAMILIES {
        let to = node_port(family);
        w.wait_for(PROPAGATION, &format!("{to} no longer served"), |w| {
            w.client(|| (0..3).all(|_| tcp_request_timeout(to, PROBE).is_err()))
        });
        for i in 0..5 {
            let r = w.client(|| tcp_request_timeout(to, PROBE));
            assert!(
                r.is_err(),
                "publishNotReadyAddresses: false: request {i} to {to} was answered: {r:?}"
            );
        }
    }
}
