//! NodePort, ExternalIP and LoadBalancer frontends through the real proxy,
//! in both modes, from a client on the node (inside the sandbox): a NodePort
//! on the node's address and ExternalIPs are served by the Service's
//! endpoints; an ExternalIP equal to the node's address too, as kube-proxy
//! serves it, unless `--external-ip-guard=strict` refuses it (CVE-2020-8554)
//! with a log line naming it. A LoadBalancer IP with `ipMode: Proxy` is not
//! translated at all: the client reaches the load balancer. eBPF mode serves
//! them through the socket hooks (the internal scope); userspace mode listens
//! on them (a route for the ExternalIP, none for the node's own address).

mod common;

use common::*;
use proxy_tests::manifest::{self, AddressType};

/// The node's address (on `lo` in the sandbox) and the only nodeport address.
const NODE_IP: &str = "192.168.77.1";
const NODE_PORT: u16 = 30080;
const EXTERNAL_IP: &str = "192.0.2.77";

/// `ext`: type NodePort, cluster IP 10.96.0.50, TCP port 80 → 8080 with
/// nodePort 30080, ExternalIPs `192.0.2.77` and the node's address; its
/// slice has web's IPv4 endpoints.
fn ext() -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: ext\n  namespace: pxt\nspec:\n  \
         type: NodePort\n  clusterIP: 10.96.0.50\n  externalIPs: [\"{EXTERNAL_IP}\", \"{NODE_IP}\"]\n  \
         ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n    nodePort: {NODE_PORT}\n    \
         protocol: TCP\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: ext-abcde\n  \
         namespace: pxt\n  labels:\n    kubernetes.io/service-name: ext\naddressType: IPv4\n\
         ports:\n- name: http\n  port: 8080\n  protocol: TCP\nendpoints:\n"
    );
    for a in &BACKENDS_V4 {
        y.push_str(&format!(
            "- addresses: [\"{a}\"]\n  conditions: {{ready: true}}\n  nodeName: node-1\n"
        ));
    }
    y
}

/// A proxy in `mode` serving `ext` and web, with the node's address on `lo`
/// and NodePorts on 192.168.77.0/24.
fn serving_ext(mode: Mode) -> Fixture {
    serving_ext_with(mode, &[])
}

/// [`serving_ext`] with `extra` arguments.
fn serving_ext_with(mode: Mode, extra: &[&str]) -> Fixture {
    let mut f = Fixture::new(mode);
    f.sandbox
        .add_local_addr(ip(NODE_IP))
        .unwrap_or_else(|e| panic!("adding {NODE_IP} to lo: {e}"));
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    f.write("ext.yaml", &ext());
    let mut args = vec![
        "--node-name",
        "node-1",
        "--nodeport-addresses",
        "192.168.77.0/24",
    ];
    args.extend_from_slice(extra);
    f.start_proxy_with(&args);
    f.wait_ready();
    f
}

both_modes! {
    /// The default `--external-ip-guard`: an ExternalIP on the node's own
    /// address is served like any other (kube-proxy's behaviour).
    fn node_port_and_external_ips_are_served_even_on_the_node_ip(mode) {
        let mut f = serving_ext(mode);

        let want = names(&BACKENDS_V4, TCP_TARGET);
        for vip in [sock(NODE_IP, NODE_PORT), sock(EXTERNAL_IP, 80), sock(NODE_IP, 80)] {
            let mut seen = None;
            f.wait_for(PROPAGATION, &format!("{vip} to be served"), || {
                seen = try_backends(Kind::Tcp, vip, 12).ok();
                seen.is_some()
            });
            for backend in seen.unwrap_or_default() {
                assert!(want.contains(&backend), "{vip} answered from {backend}, not one of {want:?}");
            }
        }

        let log = f.log();
        assert!(!log.contains("refused: the address is one of this node's"), "{log}");
    }
}

both_modes! {
    /// `--external-ip-guard=strict`: the node's own address as an
    /// ExternalIP is refused, so port 80 there is nobody's (a plain local
    /// address with nothing listening), and the log says why; the other
    /// ExternalIP is still served.
    fn a_node_ip_external_ip_is_refused_under_the_strict_guard(mode) {
        let mut f = serving_ext_with(mode, &["--external-ip-guard", "strict"]);
        let served = sock(EXTERNAL_IP, 80);
        f.wait_for(PROPAGATION, &format!("{served} to be served"), || {
            try_backends(Kind::Tcp, served, 3).is_ok()
        });
        let refused = sock(NODE_IP, 80);
        assert!(
            proxy_tests::tcp_request_timeout(refused, REQUEST).is_err(),
            "expected {refused} not to be served"
        );
        let log = f.log();
        assert!(
            log.contains(
                "ExternalIP frontend 192.168.77.1:80/TCP refused: the address is one of this \
                 node's (--external-ip-guard=strict)"
            ),
            "expected the refusal in the log:\n{log}"
        );
    }
}

/// The load balancer's IPs: `ipMode: VIP` and `ipMode: Proxy`.
const LB_VIP: &str = "192.0.2.80";
const LB_PROXY: &str = "192.0.2.81";

/// `lb`: type LoadBalancer, cluster IP 10.96.0.52, TCP port 80 → 8080 with
/// nodePort 30082, ingress IPs [`LB_VIP`] (`ipMode: VIP`) and [`LB_PROXY`]
/// (`ipMode: Proxy`); its slice has web's IPv4 endpoints.
fn lb() -> String {
    let svc = manifest::Service::new(NAMESPACE, "lb")
        .cluster_ip("10.96.0.52")
        .port("http", manifest::Protocol::Tcp, TCP_PORT, TCP_TARGET)
        .service_type("LoadBalancer")
        .node_port("http", 30082)
        .load_balancer_ingress(LB_VIP)
        .load_balancer_ingress_mode(LB_PROXY, "Proxy");
    let family = AddressType::IPv4;
    manifest::documents(&[
        svc.to_yaml(),
        slice("lb", &slice_name("lb", family), family, &BACKENDS_V4),
    ])
}

both_modes! {
    /// `ipMode: Proxy` (KEP-1860): a client on the node connecting to that
    /// LoadBalancer IP is not translated (no socket-hook entry in eBPF mode,
    /// no listener in userspace mode), so it reaches the load balancer
    /// itself, here a server on that address; the VIP-mode IP of the same
    /// Service is served by its endpoints.
    fn a_proxy_mode_load_balancer_ip_is_left_to_the_load_balancer(mode) {
        let mut f = Fixture::new(mode);
        f.write_web(&BACKENDS_V4, &BACKENDS_V6);
        f.write("lb.yaml", &lb());
        f.start_proxy_with(&["--node-name", "node-1", "--nodeport-addresses", "192.168.77.0/24"]);
        f.wait_ready();

        let vip = sock(LB_VIP, TCP_PORT);
        let mut seen = None;
        f.wait_for(PROPAGATION, &format!("{vip} to be served"), || {
            seen = try_backends(Kind::Tcp, vip, 12).ok();
            seen.is_some()
        });
        let want = names(&BACKENDS_V4, TCP_TARGET);
        for backend in seen.unwrap_or_default() {
            assert!(want.contains(&backend), "{vip} answered from {backend}, not one of {want:?}");
        }

        // The load balancer, after the proxy's first syncs: a proxy that
        // served the address would have it already (a translated connect,
        // or a listener that this bind would collide with).
        f.sandbox
            .add_local_addr(ip(LB_PROXY))
            .unwrap_or_else(|e| panic!("adding {LB_PROXY} to lo: {e}"));
        let proxied = sock(LB_PROXY, TCP_PORT);
        let _balancer = proxy_tests::TcpBackend::start(proxied, "load-balancer")
            .unwrap_or_else(|e| panic!("starting the load balancer on {proxied}: {e}"));
        let answered = try_backends(Kind::Tcp, proxied, 12)
            .unwrap_or_else(|e| panic!("{proxied}: the load balancer did not answer: {e}"));
        assert!(
            answered.iter().all(|name| name == "load-balancer"),
            "{proxied} (ipMode: Proxy) must reach the load balancer, not the Service's \
             endpoints; answered by {answered:?}"
        );
        f.assert_proxy_running();
    }
}

both_modes! {
    /// The NodePort addresses follow the node's: an address added while the
    /// daemon runs is served within moments (link notifications, not the
    /// reconcile, which is a minute away), and one removed is withdrawn.
    fn node_ports_follow_the_nodes_addresses(mode) {
        const ADDED: &str = "192.168.77.2";
        let mut f = serving_ext(mode);
        let (old, new) = (sock(NODE_IP, NODE_PORT), sock(ADDED, NODE_PORT));
        f.wait_for(PROPAGATION, &format!("{old} to be served"), || {
            try_backends(Kind::Tcp, old, 3).is_ok()
        });

        f.sandbox
            .add_local_addr(ip(ADDED))
            .unwrap_or_else(|e| panic!("adding {ADDED} to lo: {e}"));
        f.wait_for(PROPAGATION, &format!("{new} to be served"), || {
            try_backends(Kind::Tcp, new, 3).is_ok()
        });

        f.sandbox
            .ip(&format!("addr del {NODE_IP}/32 dev lo"))
            .unwrap_or_else(|e| panic!("removing {NODE_IP}: {e}"));
        // Gone from the socket hooks' maps (they would still translate a
        // connect to it: no route is needed for that), or no listener.
        let sandbox = &f.sandbox;
        let withdrawn = proxy_tests::wait_until(PROPAGATION, || {
            let listening = sandbox.listening().unwrap_or_default();
            proxy_tests::tcp_request_timeout(old, PROBE).is_err() && !listening.contains(&old)
        });
        assert!(withdrawn, "{old} still served after its address went:\n{}", f.log());
        assert!(try_backends(Kind::Tcp, new, 3).is_ok(), "{new} stopped being served");
        let log = f.log();
        assert!(
            log.contains("NodePort addresses changed"),
            "expected the change in the log:\n{log}"
        );
    }
}

/// `local`: type NodePort with `externalTrafficPolicy: Local`, nodePort
/// 30081, one endpoint on this node (`node-1`) and one elsewhere.
fn etp_local() -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: local\n  namespace: pxt\nspec:\n  \
         type: NodePort\n  clusterIP: 10.96.0.51\n  externalTrafficPolicy: Local\n  \
         ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n    nodePort: 30081\n    \
         protocol: TCP\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: local-abcde\n  \
         namespace: pxt\n  labels:\n    kubernetes.io/service-name: local\naddressType: IPv4\n\
         ports:\n- name: http\n  port: 8080\n  protocol: TCP\nendpoints:\n\
         - addresses: [\"{}\"]\n  conditions: {{ready: true}}\n  nodeName: node-1\n\
         - addresses: [\"{}\"]\n  conditions: {{ready: true}}\n  nodeName: node-2\n",
        BACKENDS_V4[0], BACKENDS_V4[1]
    )
}

/// The NodePort's entries as `proxy inspect services --output json` shows
/// them: (scope, kind, external policy, slot count, flags, backends).
fn node_port_rows(pin: &std::path::Path) -> Vec<(String, String, String, u64, u64, Vec<String>)> {
    let out = std::process::Command::new(proxy_tests::proxy_bin())
        .args([
            "inspect",
            "services",
            "--vip",
            NODE_IP,
            "--output",
            "json",
            "--pin-path",
        ])
        .arg(pin)
        .output()
        .unwrap_or_else(|e| panic!("running proxy inspect: {e}"));
    assert!(out.status.success(), "proxy inspect failed: {out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("proxy inspect printed no JSON ({e}): {out:?}"));
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("null").to_owned();
    json["services"]
        .as_array()
        .unwrap_or_else(|| panic!("no services in {json}"))
        .iter()
        .map(|e| {
            let backends = e["slots"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|slot| s(&slot["addr"]))
                .collect();
            (
                s(&e["scope"]),
                s(&e["kind"]),
                s(&e["external_traffic_policy"]),
                e["slot_count"].as_u64().unwrap_or(u64::MAX),
                e["flags"].as_u64().unwrap_or(u64::MAX),
                backends,
            )
        })
        .collect()
}

/// An `externalTrafficPolicy: Local` NodePort reaches the kernel maps with
/// both scopes (cluster-wide endpoints internal, the local one external) and
/// its flags, and a restarted daemon reads them back as they are: its first
/// sync writes nothing.
#[test]
fn etp_local_node_port_scopes_reach_the_maps_and_survive_a_restart() {
    let mut f = Fixture::new(Mode::Ebpf);
    f.sandbox
        .add_local_addr(ip(NODE_IP))
        .unwrap_or_else(|e| panic!("adding {NODE_IP} to lo: {e}"));
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    f.write("local.yaml", &etp_local());
    let args = [
        "--node-name",
        "node-1",
        "--nodeport-addresses",
        "192.168.77.0/24",
    ];
    f.start_proxy_with(&args);
    f.wait_ready();

    let pin = f.sandbox.pin_path();
    let (a, b) = (BACKENDS_V4[0].to_owned(), BACKENDS_V4[1].to_owned());
    let want = vec![
        (
            "internal".to_owned(),
            "NodePort".to_owned(),
            "Local".to_owned(),
            2,
            6,
            vec![a.clone(), b],
        ),
        (
            "external".to_owned(),
            "NodePort".to_owned(),
            "Local".to_owned(),
            1,
            14,
            vec![a],
        ),
    ];
    let mut seen = Vec::new();
    f.wait_for(PROPAGATION, "the NodePort's two scopes in the maps", || {
        seen = node_port_rows(&pin);
        for row in &mut seen {
            row.5.sort();
        }
        seen == want
    });

    f.proxy()
        .stop()
        .unwrap_or_else(|e| panic!("stopping the proxy: {e}"));
    f.proxy = None;
    f.start_proxy_with(&args);
    f.wait_ready();
    // The old daemon's pinned hooks and maps answer `wait_ready` at once; the
    // new one syncs only after loading its programs, which takes seconds on
    // a loaded machine: give it the start-up bound.
    let deadline = std::time::Instant::now() + STARTUP;
    let mut log = f.log();
    while !log.contains(" synced") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        log = f.log();
    }
    let first = log
        .lines()
        .find(|l| l.contains(" synced"))
        .unwrap_or_default();
    assert!(
        first.contains(" ops=0"),
        "expected the restarted daemon's first sync to write nothing, got: {first}\n{log}"
    );
}

both_modes! {
    /// CVE-2020-8554 for ClusterIPs: a manifest's ClusterIP on the cloud
    /// metadata address, on the node's own address, or outside
    /// `--service-cluster-ip-range` is refused (logged, named), gets no
    /// translation and, in userspace mode, no local route; web, inside the
    /// range, is served as before. `route_localnet` is never turned on.
    fn hijacking_cluster_ips_are_refused_and_get_no_route(mode) {
        let mut f = Fixture::new(mode);
        f.sandbox
            .add_local_addr(ip(NODE_IP))
            .unwrap_or_else(|e| panic!("adding {NODE_IP} to lo: {e}"));
        f.write_web(&BACKENDS_V4, &BACKENDS_V6);
        let hijackers = [("metadata", "169.254.169.254"), ("node", NODE_IP), ("outside", "10.200.0.1")];
        for (name, vip) in hijackers {
            f.write(&format!("{name}.yaml"), &service(name, &[vip], TCP_PORT, UDP_PORT));
            f.write(
                &format!("{name}-slice.yaml"),
                &slice(name, &slice_name(name, AddressType::IPv4), AddressType::IPv4, &BACKENDS_V4),
            );
        }
        f.start_proxy_with(&[
            "--node-name",
            "node-1",
            "--service-cluster-ip-range",
            "10.96.0.0/12,fd00:96::/108",
        ]);
        f.wait_ready();
        let web = sock(WEB_VIP4, TCP_PORT);
        f.wait_for(PROPAGATION, &format!("{web} to be served"), || {
            try_backends(Kind::Tcp, web, 3).is_ok()
        });
        let log = f.log();
        for (line, (name, vip)) in [
            "the address is link-local",
            "the address is one of this node's (CVE-2020-8554)",
            "the address is outside --service-cluster-ip-range",
        ]
        .into_iter()
        .zip(hijackers)
        {
            let want = format!("Service pxt/{name}: ClusterIP frontend {vip}:80/TCP refused: {line}");
            assert!(log.contains(&want), "expected {want:?} in the log:\n{log}");
            let refused = sock(vip, TCP_PORT);
            if let Ok(reply) = Kind::Tcp.request(refused, PROBE) {
                panic!("{refused} was served by {}", reply.backend);
            }
        }
        let routes = f.sandbox.local_routes(proxy::config::ROUTE_PROTOCOL).unwrap_or_else(|e| panic!("{e}"));
        for (_, vip) in hijackers {
            assert!(!routes.contains(&ip(vip)), "a local route for {vip}: {routes:?}");
        }
        if mode == Mode::Userspace {
            assert!(routes.contains(&ip(WEB_VIP4)), "web's route: {routes:?}");
        }
        // CVE-2020-8558: `route_localnet` stays off on every interface of the
        // namespace, in both modes (the userspace mode's local routes never
        // need it). This thread is in the sandbox's namespace, so /proc/sys/net
        // is the sandbox's.
        for conf in std::fs::read_dir("/proc/sys/net/ipv4/conf").expect("/proc/sys/net/ipv4/conf") {
            let path = conf.expect("a conf entry").path().join("route_localnet");
            let value = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(value.trim(), "0", "{} was turned on", path.display());
        }
    }
}
