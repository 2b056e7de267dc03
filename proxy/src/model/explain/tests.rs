//! Golden tests for `proxy explain`: one scenario per rule of kube-proxy's
//! `CategorizeEndpoints`, per traffic policy, and for affinity, source ranges
//! and refusals. The goldens live in `testdata/`; after an intended change,
//! rewrite them with `UPDATE_GOLDEN=1 cargo test -p proxy --lib explain::` and
//! review the diff.

use std::path::{Path, PathBuf};

use super::{Client, Target, Verdict, explain, render};
use crate::model::{
    desired::{Category, Rule, Scope},
    testkit::{SliceBuilder, SvcBuilder, ip, node, slice, svc},
    types::{EndpointSlice, NodeInfo, Protocol::Tcp, Service, ServiceType, TrafficPolicy},
};

struct Case {
    node: NodeInfo,
    service: Service,
    slices: Vec<EndpointSlice>,
}

fn case(node: impl Into<NodeInfo>, service: SvcBuilder, slices: Vec<SliceBuilder>) -> Case {
    Case {
        node: node.into(),
        service: service.into(),
        slices: slices.into_iter().map(Into::into).collect(),
    }
}

impl Case {
    fn run(&self, target: &Target, client: Option<Client>) -> Vec<super::ServiceExplanation> {
        let slices: Vec<&EndpointSlice> = self.slices.iter().collect();
        explain(&self.node, [(&self.service, slices)], target, client)
    }

    fn all(&self, client: Option<Client>) -> Vec<super::ServiceExplanation> {
        self.run(&Target::Service(self.service.id.clone()), client)
    }

    /// Renders the whole Service and checks it against `testdata/NAME.txt`,
    /// and that every scope's backends are exactly the endpoints whose rule
    /// says "used" for the scope's category.
    fn golden(&self, name: &str, client: Option<Client>) -> Vec<super::ServiceExplanation> {
        let explained = self.all(client);
        for svc in &explained {
            for f in &svc.frontends {
                for s in &f.scopes {
                    let mut used: Vec<String> = f
                        .endpoints
                        .iter()
                        .filter(|ep| match s.category {
                            Category::Cluster => ep.cluster.used,
                            Category::Local => ep.local_category.used,
                        })
                        .map(|ep| ep.endpoint.clone())
                        .collect();
                    used.sort();
                    let mut backends = s.backends.clone();
                    backends.sort();
                    assert_eq!(backends, used, "{name}: {} {:?}", f.frontend, s.scope);
                }
            }
        }
        check_golden(&format!("{name}.txt"), &render::text(&explained));
        explained
    }
}

fn web() -> SvcBuilder {
    svc("default", "web")
        .cluster_ip("10.96.0.10")
        .port("http", 80, Tcp)
}

fn web_slice() -> SliceBuilder {
    slice("default", "web-1")
        .for_service("web")
        .port("http", 8080, Tcp)
}

fn outside(addr: &str) -> Option<Client> {
    Some(Client {
        addr: ip(addr),
        on_node: false,
    })
}

fn on_node(addr: &str) -> Option<Client> {
    Some(Client {
        addr: ip(addr),
        on_node: true,
    })
}

fn rules(explained: &[super::ServiceExplanation]) -> Vec<(String, Rule, Rule)> {
    explained[0].frontends[0]
        .endpoints
        .iter()
        .map(|ep| (ep.endpoint.clone(), ep.cluster.rule, ep.local_category.rule))
        .collect()
}

#[test]
fn ready_not_ready_and_terminating_without_fallback() {
    let c = case(
        node("n1"),
        web(),
        vec![
            web_slice()
                .endpoint("10.1.0.1")
                .ready()
                .on_node("n1")
                .endpoint("10.1.0.2")
                .not_ready()
                .endpoint("10.1.0.3")
                .serving_terminating()
                .endpoint("10.1.0.4")
                .terminating_not_serving(),
        ],
    );
    let out = c.golden("conditions", on_node("10.1.0.9"));
    assert_eq!(
        rules(&out),
        [
            ("10.1.0.1:8080".to_owned(), Rule::Ready, Rule::Ready),
            ("10.1.0.2:8080".to_owned(), Rule::NotReady, Rule::NotLocal),
            (
                "10.1.0.3:8080".to_owned(),
                Rule::ReadyEndpointsPreferred,
                Rule::NotLocal
            ),
            (
                "10.1.0.4:8080".to_owned(),
                Rule::TerminatingNotServing,
                Rule::NotLocal
            ),
        ]
    );
}

#[test]
fn terminating_fallback_when_nothing_is_ready() {
    let c = case(
        node("n1"),
        web(),
        vec![
            web_slice()
                .endpoint("10.1.0.3")
                .serving_terminating()
                .on_node("n1")
                .endpoint("10.1.0.4")
                .terminating_not_serving(),
        ],
    );
    let out = c.golden("terminating-fallback", None);
    assert_eq!(
        out[0].frontends[0].endpoints[0].cluster.rule,
        Rule::TerminatingFallback
    );
    assert_eq!(
        out[0].frontends[0].endpoints[0].local_category.rule,
        Rule::TerminatingFallback
    );
}

#[test]
fn publish_not_ready_addresses_makes_everything_ready() {
    let c = case(
        node("n1"),
        web().publish_not_ready(),
        vec![web_slice().endpoint("10.1.0.2").not_ready()],
    );
    let out = c.golden("publish-not-ready", None);
    assert_eq!(out[0].frontends[0].endpoints[0].cluster.rule, Rule::Ready);
}

#[test]
fn zone_hints_apply() {
    let c = case(
        node("n1").zone("a"),
        web(),
        vec![
            web_slice()
                .endpoint("10.1.0.1")
                .ready()
                .zone_hints(&["a"])
                .endpoint("10.1.0.2")
                .ready()
                .zone_hints(&["b"]),
        ],
    );
    let out = c.golden("zone-hints", None);
    let r = rules(&out);
    assert_eq!(
        (r[0].1, r[1].1),
        (Rule::HintedForThisZone, Rule::NotHintedForThisZone)
    );
}

#[test]
fn one_endpoint_without_hint_ignores_hints() {
    let c = case(
        node("n1").zone("a"),
        web().traffic_distribution("PreferClose"),
        vec![
            web_slice()
                .endpoint("10.1.0.1")
                .ready()
                .zone_hints(&["a"])
                .endpoint("10.1.0.2")
                .ready(),
        ],
    );
    let out = c.golden("hints-ignored-missing", None);
    assert_eq!(
        out[0].frontends[0].topology_why,
        crate::model::desired::TopologyWhy::SomeEndpointWithoutHint
    );
    assert_eq!(
        (rules(&out)[0].1, rules(&out)[1].1),
        (Rule::Ready, Rule::Ready)
    );
}

#[test]
fn hints_for_other_zones_are_ignored() {
    let c = case(
        node("n1").zone("c"),
        web(),
        vec![
            web_slice()
                .endpoint("10.1.0.1")
                .ready()
                .zone_hints(&["a"])
                .endpoint("10.1.0.2")
                .ready()
                .zone_hints(&["b"]),
        ],
    );
    let out = c.golden("hints-ignored-other-zone", None);
    assert_eq!(
        out[0].frontends[0].topology_why,
        crate::model::desired::TopologyWhy::NoHintForThisZone
    );
}

#[test]
fn node_hints_come_first() {
    let c = case(
        node("n1").zone("a"),
        web().traffic_distribution("PreferSameNode"),
        vec![
            web_slice()
                .endpoint("10.1.0.1")
                .ready()
                .on_node("n1")
                .node_hints(&["n1"])
                .zone_hints(&["a"])
                .endpoint("10.1.0.2")
                .ready()
                .node_hints(&["n2"])
                .zone_hints(&["a"]),
        ],
    );
    let out = c.golden("node-hints", None);
    let r = rules(&out);
    assert_eq!(
        (r[0].1, r[1].1),
        (Rule::HintedForThisNode, Rule::NotHintedForThisNode)
    );
}

#[test]
fn internal_traffic_policy_local() {
    let with_local = case(
        node("n1"),
        web().internal_policy(TrafficPolicy::Local),
        vec![
            web_slice()
                .endpoint("10.1.0.1")
                .ready()
                .on_node("n1")
                .endpoint("10.1.0.2")
                .ready()
                .on_node("n2"),
        ],
    );
    let out = with_local.golden("internal-local", on_node("10.1.0.7"));
    let client = out[0].frontends[0]
        .client
        .as_ref()
        .expect("the scenario has it");
    assert_eq!(
        (client.verdict, client.backends.as_slice()),
        (Verdict::Balanced, ["10.1.0.1:8080".to_owned()].as_slice())
    );

    let none_local = case(
        node("n1"),
        web().internal_policy(TrafficPolicy::Local),
        vec![web_slice().endpoint("10.1.0.2").ready().on_node("n2")],
    );
    let out = none_local.golden("internal-local-none-here", on_node("10.1.0.7"));
    assert_eq!(
        out[0].frontends[0]
            .client
            .as_ref()
            .expect("the scenario has it")
            .verdict,
        Verdict::Refused
    );
}

fn nodeport() -> SvcBuilder {
    web().service_type(ServiceType::NodePort).node_port(30080)
}

#[test]
fn external_traffic_policy_cluster_and_local() {
    let slices = || vec![web_slice().endpoint("10.1.0.1").ready().on_node("n2")];
    let cluster = case(
        node("n1").nodeport_address("192.0.2.1"),
        nodeport(),
        slices(),
    );
    let out = cluster.golden("external-cluster", outside("198.51.100.7"));
    let np = out[0]
        .frontends
        .iter()
        .find(|f| f.kind == "NodePort")
        .expect("the scenario has it");
    assert_eq!(
        np.client.as_ref().expect("the scenario has it").verdict,
        Verdict::Balanced
    );

    let local = case(
        node("n1").nodeport_address("192.0.2.1"),
        nodeport().external_policy(TrafficPolicy::Local),
        slices(),
    );
    let out = local.golden("external-local", outside("198.51.100.7"));
    let np = out[0]
        .frontends
        .iter()
        .find(|f| f.kind == "NodePort")
        .expect("the scenario has it");
    assert_eq!(np.scopes[1].scope, Some(Scope::External));
    assert_eq!(np.scopes[1].category, Category::Local);
    assert_eq!(
        np.client.as_ref().expect("the scenario has it").verdict,
        Verdict::Dropped
    );
    // The node's own traffic still gets the cluster endpoints.
    let from_node = local.all(on_node("192.0.2.1"));
    let np = from_node[0]
        .frontends
        .iter()
        .find(|f| f.kind == "NodePort")
        .expect("the scenario has it");
    assert_eq!(
        np.client.as_ref().expect("the scenario has it").verdict,
        Verdict::Balanced
    );
}

#[test]
fn no_endpoint_is_refused() {
    let c = case(node("n1"), web(), vec![]);
    let out = c.golden("no-endpoints", outside("198.51.100.7"));
    assert_eq!(
        out[0].frontends[0]
            .client
            .as_ref()
            .expect("the scenario has it")
            .verdict,
        Verdict::Refused
    );
}

#[test]
fn session_affinity() {
    let c = case(
        node("n1"),
        web().affinity(600),
        vec![web_slice().endpoint("10.1.0.1").ready()],
    );
    let out = c.golden("affinity", on_node("10.1.0.7"));
    assert_eq!(
        out[0]
            .session_affinity
            .as_ref()
            .expect("the scenario has it")
            .timeout_seconds,
        600
    );
    assert!(
        out[0].frontends[0]
            .client
            .as_ref()
            .expect("the scenario has it")
            .why
            .contains("600s")
    );
}

#[test]
fn load_balancer_source_ranges_and_refusals() {
    let c = case(
        node("n1"),
        web()
            .service_type(ServiceType::LoadBalancer)
            .lb_ip("203.0.113.10")
            .source_range("198.51.100.0/24")
            .external_ip("127.0.0.1"),
        vec![web_slice().endpoint("10.1.0.1").ready()],
    );
    let out = c.golden("load-balancer", outside("192.0.2.99"));
    let lb = out[0]
        .frontends
        .iter()
        .find(|f| f.kind == "LoadBalancer")
        .expect("the scenario has it");
    assert_eq!(
        lb.client.as_ref().expect("the scenario has it").verdict,
        Verdict::Dropped
    );
    assert_eq!(out[0].refused.len(), 1);
    assert_eq!(out[0].refused[0].reason, "loopback");
    // The socket hooks serve this node's clients whatever their source.
    let on = c.all(on_node("192.0.2.99"));
    let lb = on[0]
        .frontends
        .iter()
        .find(|f| f.kind == "LoadBalancer")
        .expect("the scenario has it");
    assert_eq!(
        lb.client.as_ref().expect("the scenario has it").verdict,
        Verdict::Balanced
    );
    let allowed = c.all(outside("198.51.100.7"));
    let lb = allowed[0]
        .frontends
        .iter()
        .find(|f| f.kind == "LoadBalancer")
        .expect("the scenario has it");
    assert_eq!(
        lb.client.as_ref().expect("the scenario has it").verdict,
        Verdict::Balanced
    );
}

#[test]
fn a_frontend_target_picks_one_frontend_and_json_is_stable() {
    let c = case(
        node("n1").nodeport_address("192.0.2.1"),
        nodeport(),
        vec![web_slice().endpoint("10.1.0.1").ready()],
    );
    let out = c.run(
        &"192.0.2.1:30080/tcp".parse().expect("the scenario has it"),
        None,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].frontends.len(), 1);
    assert_eq!(out[0].frontends[0].kind, "NodePort");
    let json = serde_json::to_string_pretty(&out).expect("the scenario has it") + "\n";
    check_golden("frontend-target.json.txt", &json);
    assert!(
        c.run(
            &"192.0.2.1:30081".parse().expect("the scenario has it"),
            None
        )
        .is_empty()
    );
    assert!(
        c.run(
            &"192.0.2.1:30080/udp".parse().expect("the scenario has it"),
            None
        )
        .is_empty()
    );
}

#[test]
fn targets_parse() {
    assert_eq!(
        "default/web"
            .parse::<Target>()
            .expect("the scenario has it"),
        Target::Service(crate::model::types::ObjectRef::new("default", "web"))
    );
    assert_eq!(
        "[fd00::1]:53/udp"
            .parse::<Target>()
            .expect("the scenario has it"),
        Target::Frontend {
            addr: ip("fd00::1"),
            port: 53,
            protocol: Some(crate::model::types::Protocol::Udp)
        }
    );
    for bad in ["web", "a/b/c", "10.0.0.1", "10.0.0.1:80/sctp", ""] {
        assert!(bad.parse::<Target>().is_err(), "{bad:?} parsed");
    }
}

fn golden_path(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/model/explain/testdata")
        .join(file)
}

/// Compares `actual` with the golden file, or rewrites it under `UPDATE_GOLDEN=1`.
fn check_golden(file: &str, actual: &str) {
    let path = golden_path(file);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("the scenario has it");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read golden {}: {e}\nCreate it with UPDATE_GOLDEN=1 cargo test -p proxy --lib explain::",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "output differs from golden {}:\n--- expected\n{expected}\n--- printed\n{actual}",
        path.display()
    );
}
