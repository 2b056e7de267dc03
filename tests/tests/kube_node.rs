//! The real `proxy run --kubeconfig …` and this node's Node object in the fake
//! API server: `/healthz` drains a node that is being deleted (kube-proxy's
//! `nodeEligible`) while `/livez` stays up; the start-up Event lands on the
//! Node.
//!
//! The fake API server and the proxy's admin servers listen on loopback inside
//! the sandbox's network namespace only.

mod common;

use std::path::PathBuf;

use common::*;
use proxy_tests::{
    FakeApiServer, ProxyProcess,
    fake_apiserver::{Resource, json_from_yaml},
    manifest::{AddressType, Node},
    proxy_bin,
};
use serde_json::{Value, json};

const NODE: &str = "node-1";
const HEALTHZ_ADDR: &str = "127.0.0.1:19356";

/// The fake API server (inside the entered sandbox) with `web` and this
/// node's Node, and its kubeconfig.
fn start_api(f: &Fixture) -> (FakeApiServer, PathBuf) {
    let api = FakeApiServer::start().expect("starting the fake API server in the sandbox");
    api.apply(node(json!({})));
    api.apply_yaml(&service(WEB, &[WEB_VIP4, WEB_VIP6], TCP_PORT, UDP_PORT));
    for (family, addrs) in [
        (AddressType::IPv4, &BACKENDS_V4),
        (AddressType::IPv6, &BACKENDS_V6),
    ] {
        api.apply_yaml(&slice(WEB, &slice_name(WEB, family), family, addrs));
    }
    let kubeconfig = api
        .write_kubeconfig(f.sandbox.dir())
        .expect("writing the kubeconfig");
    (api, kubeconfig)
}

/// This node's Node, with `spec` and `metadata` fields merged in from `extra`.
fn node(extra: Value) -> Value {
    let mut node = json_from_yaml(&Node::new(NODE).internal_ip("192.168.96.1").to_yaml());
    if let Some(spec) = extra.get("spec") {
        node["spec"] = spec.clone();
    }
    if let Some(fields) = extra.get("metadata").and_then(Value::as_object) {
        for (k, v) in fields {
            node["metadata"][k] = v.clone();
        }
    }
    node
}

fn start_proxy(f: &mut Fixture, kubeconfig: &std::path::Path) {
    let source = [std::ffi::OsStr::new("--kubeconfig"), kubeconfig.as_os_str()];
    let mut extra = vec!["--node-name", NODE, "--healthz-bind-address", HEALTHZ_ADDR];
    extra.extend_from_slice(&f.mode.args());
    f.proxy = Some(
        ProxyProcess::start_with_source(&proxy_bin(), &f.sandbox, &source, &extra)
            .unwrap_or_else(|e| panic!("starting the proxy: {e}")),
    );
}

fn probe(path: &str) -> (u16, String) {
    http_get(HEALTHZ_ADDR, path)
        .unwrap_or_else(|e| panic!("GET http://{HEALTHZ_ADDR}{path} failed: {e}"))
}

/// Waits until `/healthz` answers `code` and says `nodeEligible: eligible`;
/// `/livez` must answer 200 all along.
fn wait_healthz(f: &mut Fixture, code: u16, eligible: bool) {
    let field = format!(r#""nodeEligible":{eligible}"#);
    let mut last = (0, String::new());
    f.wait_for(
        PROPAGATION,
        &format!("/healthz to answer {code} with {field}"),
        || {
            last = probe("/healthz");
            last.0 == code && last.1.contains(&field)
        },
    );
    let (livez, body) = probe("/livez");
    assert_eq!(livez, 200, "/livez follows the proxy only: {body}");
    assert!(
        !body.contains("nodeEligible"),
        "nodeEligible is in /healthz's body only: {body}"
    );
    assert!(
        last.1.contains(r#""healthy":true"#),
        "the proxy itself stays healthy: {}",
        last.1
    );
}

both_modes! {
    /// The Cluster Autoscaler's taint, then a deletion in progress, turn
    /// `/healthz` to 503 with `nodeEligible: false`; `/livez` stays 200.
    fn healthz_drains_a_node_being_deleted(mode) {
        let mut f = Fixture::new(mode);
        let (api, kubeconfig) = start_api(&f);
        start_proxy(&mut f, &kubeconfig);
        f.wait_ready();
        wait_healthz(&mut f, 200, true);

        let taint = json!({ "spec": { "taints": [{
            "key": "ToBeDeletedByClusterAutoscaler",
            "value": "1700000000",
            "effect": "NoSchedule",
        }] } });
        api.apply(node(taint));
        wait_healthz(&mut f, 503, false);

        // Another taint does not count.
        let other = json!({ "spec": { "taints": [{
            "key": "node.kubernetes.io/unschedulable",
            "effect": "NoSchedule",
        }] } });
        api.apply(node(other));
        wait_healthz(&mut f, 200, true);

        let deleting = json!({ "metadata": {
            "deletionTimestamp": "2026-01-01T00:00:00Z",
            "finalizers": ["example.com/hold"],
        } });
        api.apply(node(deleting));
        wait_healthz(&mut f, 503, false);
        // Still serving: only load balancers are told to drain.
        f.wait_ready();

        // Gone for good: the deletion event's object (with its
        // deletionTimestamp) keeps the node ineligible.
        api.delete(Resource::Nodes, "", NODE);
        std::thread::sleep(std::time::Duration::from_millis(500));
        wait_healthz(&mut f, 503, false);
    }
}

/// kube-proxy's start-up Event ("birth cry"): `events.k8s.io/v1`, reason
/// `Starting`, action `StartKubeProxy`, regarding this node's Node.
#[test]
fn a_starting_event_is_sent_on_this_nodes_node() {
    let mut f = Fixture::new(Mode::Userspace);
    let (api, kubeconfig) = start_api(&f);
    start_proxy(&mut f, &kubeconfig);
    f.wait_for(STARTUP, "the start-up Event", || !api.events().is_empty());
    let events = api.events();
    assert_eq!(events.len(), 1, "one Event: {events:#?}");
    let event = &events[0];
    for (field, want) in [
        ("/apiVersion", "events.k8s.io/v1"),
        ("/kind", "Event"),
        ("/metadata/namespace", "default"),
        ("/type", "Normal"),
        ("/reason", "Starting"),
        ("/action", "StartKubeProxy"),
        ("/regarding/kind", "Node"),
        ("/regarding/name", NODE),
        ("/reportingController", "ebpf-proxy"),
        ("/reportingInstance", "ebpf-proxy-node-1"),
    ] {
        assert_eq!(
            event.pointer(field).and_then(Value::as_str),
            Some(want),
            "{field} of {event:#}"
        );
    }
    let name = event["metadata"]["name"].as_str().unwrap_or_default();
    assert!(
        name.starts_with(&format!("{NODE}.")),
        "named after the Node: {name}"
    );
    assert!(
        event["eventTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "an eventTime: {event:#}"
    );
    let posts: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1, "{posts:#?}");
    assert_eq!(
        posts[0].path,
        "/apis/events.k8s.io/v1/namespaces/default/events"
    );
}

/// `--nodeport-addresses primary`: NodePorts only on the Node object's
/// primary address (its InternalIP), not on the node's other addresses, and
/// following it when the Node changes.
fn nodeport_primary(mode: Mode) {
    const PRIMARY: &str = "192.168.78.1";
    const OTHER: &str = "192.168.78.2";
    const NODE_PORT: u16 = 30090;
    let mut f = Fixture::new(mode);
    for a in [PRIMARY, OTHER] {
        f.sandbox
            .add_local_addr(ip(a))
            .unwrap_or_else(|e| panic!("adding {a} to lo: {e}"));
    }
    let (api, kubeconfig) = start_api(&f);
    api.apply(json_from_yaml(
        &Node::new(NODE).internal_ip(PRIMARY).to_yaml(),
    ));
    api.apply_yaml(&format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: np\n  namespace: {NAMESPACE}\nspec:\n  \
         type: NodePort\n  clusterIP: 10.96.0.60\n  ports:\n  - name: http\n    port: 80\n    \
         targetPort: {TCP_TARGET}\n    nodePort: {NODE_PORT}\n    protocol: TCP\n"
    ));
    api.apply_yaml(&slice("np", "np-abcde", AddressType::IPv4, &BACKENDS_V4));
    let source = [std::ffi::OsStr::new("--kubeconfig"), kubeconfig.as_os_str()];
    let mut extra = vec!["--node-name", NODE, "--nodeport-addresses", "primary"];
    extra.extend_from_slice(&f.mode.args());
    f.proxy = Some(
        ProxyProcess::start_with_source(&proxy_bin(), &f.sandbox, &source, &extra)
            .unwrap_or_else(|e| panic!("starting the proxy: {e}")),
    );
    f.wait_ready();

    let (primary, other) = (sock(PRIMARY, NODE_PORT), sock(OTHER, NODE_PORT));
    f.wait_for(PROPAGATION, &format!("{primary} to be served"), || {
        try_backends(Kind::Tcp, primary, 3).is_ok()
    });
    assert!(
        proxy_tests::tcp_request_timeout(other, PROBE).is_err(),
        "{other} is not the primary address, but its NodePort is served"
    );

    // The Node's primary address changes: the NodePort moves with it.
    api.apply(json_from_yaml(
        &Node::new(NODE).internal_ip(OTHER).to_yaml(),
    ));
    f.wait_for(PROPAGATION, &format!("{other} to be served"), || {
        try_backends(Kind::Tcp, other, 3).is_ok()
    });
    f.wait_for(PROPAGATION, &format!("{primary} to be withdrawn"), || {
        proxy_tests::tcp_request_timeout(primary, PROBE).is_err()
    });
}

both_modes! {
    fn nodeport_addresses_primary_serves_the_nodes_primary_address(mode) {
        nodeport_primary(mode);
    }
}
