//! Small YAML writers and probes shared by the `conformance_service*` tests,
//! which replay Kubernetes' `test/e2e/network/service.go` scenarios: a Service
//! and its slice written as plain YAML (any type, named target ports,
//! `publishNotReadyAddresses`, labels), a node address for NodePorts, and
//! "served by" / "refused" probes over TCP and UDP.
//!
//! Addresses (inside the test's namespace only): the node's address
//! [`NODE_IP`] on `lo`, NodePorts on 192.168.77.0/24; the Services under test
//! use cluster IPs 10.96.0.6x. The backends are the fixture's.

#![allow(
    dead_code,
    reason = "each test binary compiles this module and uses only part of it"
)]

use std::{collections::BTreeSet, fmt::Write as _, net::SocketAddr};

use crate::common::*;

/// The node's address (on `lo` in the sandbox) and the only NodePort address.
pub const NODE_IP: &str = "192.168.77.1";
/// `--nodeport-addresses` of every proxy these tests start.
pub const NODE_CIDR: &str = "192.168.77.0/24";
/// The node the proxy runs as, and another one.
pub const THIS_NODE: &str = "node-1";
pub const OTHER_NODE: &str = "node-2";

/// One `spec.ports` entry. `target` is written as is: a number or a port name.
#[derive(Clone, Copy, Debug)]
pub struct Port {
    pub name: &'static str,
    pub protocol: &'static str,
    pub port: u16,
    pub target: &'static str,
    pub node_port: Option<u16>,
}

impl Port {
    pub const fn tcp(name: &'static str, port: u16, target: &'static str) -> Self {
        Port {
            name,
            protocol: "TCP",
            port,
            target,
            node_port: None,
        }
    }

    pub const fn udp(name: &'static str, port: u16, target: &'static str) -> Self {
        Port {
            name,
            protocol: "UDP",
            port,
            target,
            node_port: None,
        }
    }

    pub const fn node_port(mut self, node_port: u16) -> Self {
        self.node_port = Some(node_port);
        self
    }
}

/// A Service `pxt/<name>`: `labels` in metadata, `spec` lines (two-space
/// indented, each ending in a newline: type, clusterIP, policies, …) and `ports`.
pub fn svc_yaml(name: &str, labels: &[(&str, &str)], spec: &str, ports: &[Port]) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\n"
    );
    if !labels.is_empty() {
        y.push_str("  labels:\n");
        for (k, v) in labels {
            let _ = writeln!(y, "    {k}: \"{v}\"");
        }
    }
    y.push_str("spec:\n");
    y.push_str(spec);
    if !ports.is_empty() {
        y.push_str("  ports:\n");
    }
    for p in ports {
        let _ = write!(
            y,
            "  - {{name: {}, protocol: {}, port: {}, targetPort: {}",
            p.name, p.protocol, p.port, p.target
        );
        if let Some(n) = p.node_port {
            let _ = write!(y, ", nodePort: {n}");
        }
        y.push_str("}\n");
    }
    y
}

/// A ClusterIP Service's spec lines.
pub fn cluster_ip(vip: &str) -> String {
    format!("  type: ClusterIP\n  clusterIP: {vip}\n  clusterIPs: [\"{vip}\"]\n")
}

/// A NodePort Service's spec lines.
pub fn node_port(vip: &str) -> String {
    format!("  type: NodePort\n  clusterIP: {vip}\n  clusterIPs: [\"{vip}\"]\n")
}

/// An ExternalName Service's spec lines (no cluster IP, as the API server
/// requires).
pub const EXTERNAL_NAME: &str = "  type: ExternalName\n  externalName: web.example.com\n";

/// One endpoint of a slice, with explicit conditions.
#[derive(Clone, Copy, Debug)]
pub struct Ep {
    pub addr: &'static str,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node: &'static str,
}

impl Ep {
    /// Ready, serving, not terminating, on this node.
    pub const fn ready(addr: &'static str) -> Self {
        Ep {
            addr,
            ready: true,
            serving: true,
            terminating: false,
            node: THIS_NODE,
        }
    }

    /// Running but not ready (not serving, not terminating).
    pub const fn unready(addr: &'static str) -> Self {
        Ep {
            ready: false,
            serving: false,
            ..Ep::ready(addr)
        }
    }

    /// Terminating and still serving.
    pub const fn terminating(addr: &'static str) -> Self {
        Ep {
            ready: false,
            serving: true,
            terminating: true,
            ..Ep::ready(addr)
        }
    }

    /// Terminating and no longer serving (the pod failed its readiness probe).
    pub const fn terminating_unserving(addr: &'static str) -> Self {
        Ep {
            ready: false,
            serving: false,
            terminating: true,
            ..Ep::ready(addr)
        }
    }

    pub const fn on(mut self, node: &'static str) -> Self {
        self.node = node;
        self
    }
}

/// An IPv4 EndpointSlice `slice` of `service` with `ports` (name, protocol,
/// port) and `endpoints`.
pub fn eps_yaml(
    service: &str,
    slice: &str,
    ports: &[(&str, &str, u16)],
    endpoints: &[Ep],
) -> String {
    let mut y = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {slice}\n  \
         namespace: {NAMESPACE}\n  labels:\n    kubernetes.io/service-name: {service}\n\
         addressType: IPv4\nports:\n"
    );
    for (name, protocol, port) in ports {
        let _ = writeln!(y, "- {{name: {name}, protocol: {protocol}, port: {port}}}");
    }
    if endpoints.is_empty() {
        y.push_str("endpoints: []\n");
    } else {
        y.push_str("endpoints:\n");
    }
    for e in endpoints {
        let _ = writeln!(
            y,
            "- addresses: [\"{}\"]\n  conditions: {{ready: {}, serving: {}, terminating: {}}}\n  \
             nodeName: {}",
            e.addr, e.ready, e.serving, e.terminating, e.node
        );
    }
    y
}

/// A fixture in `mode` with `web` served, [`NODE_IP`] on `lo`, `files`
/// written before the start, and the proxy running as [`THIS_NODE`] with
/// NodePorts on [`NODE_CIDR`].
pub fn start(mode: Mode, files: &[(&str, &str)]) -> Fixture {
    start_with(mode, files, &[])
}

/// [`start`] with `extra` proxy arguments.
pub fn start_with(mode: Mode, files: &[(&str, &str)], extra: &[&str]) -> Fixture {
    let mut f = Fixture::new(mode);
    f.sandbox
        .add_local_addr(ip(NODE_IP))
        .unwrap_or_else(|e| panic!("adding {NODE_IP} to lo: {e}"));
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    for (file, yaml) in files {
        f.write(file, yaml);
    }
    let mut args = vec!["--node-name", THIS_NODE, "--nodeport-addresses", NODE_CIDR];
    args.extend_from_slice(extra);
    f.start_proxy_with(&args);
    f.wait_ready();
    f
}

/// The backends that answered `n` requests, or `None` when one failed.
pub fn answered(kind: Kind, to: SocketAddr, n: usize) -> Option<BTreeSet<String>> {
    try_backends(kind, to, n)
        .ok()
        .map(|v| v.into_iter().collect())
}

/// Whether `n` requests all succeeded and were answered only by `expected`
/// (each of which answered at least once when `all` is set).
pub fn served_by(kind: Kind, to: SocketAddr, n: usize, expected: &[String], all: bool) -> bool {
    answered(kind, to, n).is_some_and(|seen| {
        seen.iter().all(|b| expected.contains(b)) && (!all || seen.len() == expected.len())
    })
}

/// Whether three requests in a row fail (refused, unreachable or unanswered).
pub fn not_served(kind: Kind, to: SocketAddr) -> bool {
    (0..3).all(|_| kind.request(to, PROBE).is_err())
}

/// Waits until `to` is served by exactly `expected` (all of them), then
/// asserts it over 30 more requests.
pub fn expect_served(f: &mut Fixture, kind: Kind, to: SocketAddr, expected: &[String], what: &str) {
    f.wait_for(
        PROPAGATION,
        &format!("{what}: {kind:?} to {to} served by {expected:?}"),
        || served_by(kind, to, 15, expected, true),
    );
    let seen = tally(kind, to, 30);
    assert_backends(&format!("{what}: {kind:?} to {to}"), &seen, expected);
}

/// Waits until `to` is no longer served, then asserts it stays so.
pub fn expect_not_served(f: &mut Fixture, kind: Kind, to: SocketAddr, what: &str) {
    f.wait_for(
        PROPAGATION,
        &format!("{what}: {kind:?} to {to} no longer served"),
        || not_served(kind, to),
    );
    for i in 0..5 {
        let r = kind.request(to, PROBE);
        assert!(
            r.is_err(),
            "{what}: expected {kind:?} request {i} to {to} to fail, it was answered: {r:?}"
        );
    }
}

/// The cluster IP of the Service under test.
pub const VIP: &str = "10.96.0.60";

/// [`VIP`] on `port`.
pub fn vip(port: u16) -> SocketAddr {
    sock(VIP, port)
}

/// Every IPv4 backend's name on `port`.
pub fn all_v4(port: u16) -> Vec<String> {
    names(&BACKENDS_V4, port)
}

/// A Service `aff` (spec lines `spec`) on port 80 (NodePort `node` when
/// given) with ClientIP affinity of `timeout` seconds (`None`: no
/// affinity), and its slice with web's IPv4 endpoints.
pub fn affinity_service(spec: &str, node: Option<u16>, timeout: Option<u32>) -> String {
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
pub fn switch_affinity(mode: Mode, to: SocketAddr, spec: &str, node: Option<u16>) {
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
