//! kube-proxy's `CategorizeEndpoints` and `topologyModeFromHints`, and hints
//! through the whole desired state.

use super::*;

// ---- CategorizeEndpoints, ported from kube-proxy's topology_test.go ----

/// An endpoint written as `"10.1.2.3:80 ready zones=zone-a"`; flags:
/// `ready`, `serving`, `terminating`, `local`, `zones=a,b`, `nodes=n1,n2`.
/// As in kube-proxy's `BaseEndpointInfo`, an absent flag is false.
struct Ep {
    backend: Backend,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
    zone_hints: Vec<String>,
    node_hints: Vec<String>,
}

fn ep(spec: &str) -> Ep {
    let mut words = spec.split_whitespace();
    let addr = words.next().unwrap_or_default();
    let sock: std::net::SocketAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("endpoint {addr:?}: {e}"));
    let mut ep = Ep {
        backend: Backend {
            addr: sock.ip(),
            port: sock.port(),
            protocol: Tcp,
        },
        ready: false,
        serving: false,
        terminating: false,
        local: false,
        zone_hints: Vec::new(),
        node_hints: Vec::new(),
    };
    let list = |v: &str| v.split(',').map(str::to_owned).collect::<Vec<_>>();
    for word in words {
        match word.split_once('=') {
            None if word == "ready" => ep.ready = true,
            None if word == "serving" => ep.serving = true,
            None if word == "terminating" => ep.terminating = true,
            None if word == "local" => ep.local = true,
            Some(("zones", v)) => ep.zone_hints = list(v),
            Some(("nodes", v)) => ep.node_hints = list(v),
            _ => panic!("unknown endpoint flag {word:?} in {spec:?}"),
        }
    }
    ep
}

fn categorize_specs(specs: &[&str], node: &NodeInfo) -> Categories {
    let eps: Vec<Ep> = specs.iter().map(|s| ep(s)).collect();
    let candidates: Vec<Candidate<'_>> = eps
        .iter()
        .map(|e| Candidate {
            backend: e.backend,
            ready: e.ready,
            serving: e.serving,
            terminating: e.terminating,
            local: e.local,
            zone_hints: &e.zone_hints,
            node_hints: &e.node_hints,
        })
        .collect();
    categorize(&candidates, node)
}

fn strings(backends: &[Backend]) -> Vec<String> {
    backends
        .iter()
        .map(|b| format!("{}:{}", b.addr, b.port))
        .collect()
}

fn sorted(want: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

/// kube-proxy's TestCategorizeEndpoints, case for case (names kept). Its
/// `nil` expectations, for a category the Service never uses, are `None`
/// here and not checked: this port computes both categories always. `has_any`
/// is its `len(allEndpoints) > 0 || onlyRemoteEndpoints`.
#[rstest]
#[case::should_use_topology_since_all_endpoints_have_hints_node_has_a_zone_label_and_there_are_endpoints_for_the_nodes_zone(
    Some("zone-a"),
    &["10.1.2.3:80 ready zones=zone-a", "10.1.2.4:80 ready zones=zone-b",
      "10.1.2.5:80 ready zones=zone-c", "10.1.2.6:80 ready zones=zone-a"],
    Some(&["10.1.2.3:80", "10.1.2.6:80"][..]), None, true
)]
#[case::external_traffic_policy_local_topology_ignored_for_local_endpoints(
    Some("zone-a"),
    &["10.1.2.3:80 ready local zones=zone-a", "10.1.2.4:80 ready local zones=zone-b",
      "10.1.2.5:80 ready zones=zone-c", "10.1.2.6:80 ready zones=zone-a"],
    Some(&["10.1.2.3:80", "10.1.2.6:80"][..]), Some(&["10.1.2.3:80", "10.1.2.4:80"][..]), true
)]
#[case::internal_traffic_policy_local_topology_ignored_for_local_endpoints(
    Some("zone-a"),
    &["10.1.2.3:80 ready local zones=zone-a", "10.1.2.4:80 ready local zones=zone-b",
      "10.1.2.5:80 ready zones=zone-c", "10.1.2.6:80 ready zones=zone-a"],
    Some(&["10.1.2.3:80", "10.1.2.6:80"][..]), Some(&["10.1.2.3:80", "10.1.2.4:80"][..]), true
)]
#[case::empty_node_labels(
    None,
    &["10.1.2.3:80 ready zones=zone-a"],
    Some(&["10.1.2.3:80"][..]), None, true
)]
#[case::empty_zone_label(
    Some(""),
    &["10.1.2.3:80 ready zones=zone-a"],
    Some(&["10.1.2.3:80"][..]), None, true
)]
#[case::node_in_different_zone_no_endpoint_filtering(
    Some("zone-b"),
    &["10.1.2.3:80 ready zones=zone-a"],
    Some(&["10.1.2.3:80"][..]), None, true
)]
#[case::unready_endpoint(
    Some("zone-a"),
    &["10.1.2.3:80 ready zones=zone-a", "10.1.2.4:80 ready zones=zone-b",
      "10.1.2.5:80 ready zones=zone-c", "10.1.2.6:80 zones=zone-a"],
    Some(&["10.1.2.3:80"][..]), None, true
)]
#[case::only_unready_endpoints_in_same_zone_should_not_filter(
    Some("zone-a"),
    &["10.1.2.3:80 zones=zone-a", "10.1.2.4:80 ready zones=zone-b",
      "10.1.2.5:80 ready zones=zone-c", "10.1.2.6:80 zones=zone-a"],
    Some(&["10.1.2.4:80", "10.1.2.5:80"][..]), None, true
)]
#[case::missing_hints_no_filtering_applied(
    Some("zone-a"),
    &["10.1.2.3:80 ready zones=zone-a", "10.1.2.4:80 ready zones=zone-b",
      "10.1.2.5:80 ready", "10.1.2.6:80 ready zones=zone-a"],
    Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.5:80", "10.1.2.6:80"][..]), None, true
)]
#[case::multiple_hints_per_endpoint_filtering_includes_any_endpoint_with_zone_included(
    Some("zone-c"),
    &["10.1.2.3:80 ready zones=zone-a,zone-b,zone-c", "10.1.2.4:80 ready zones=zone-b,zone-c",
      "10.1.2.5:80 ready zones=zone-b,zone-d", "10.1.2.6:80 ready zones=zone-c"],
    Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"][..]), None, true
)]
#[case::conflicting_topology_and_localness_require_merging_all_endpoints(
    Some("zone-a"),
    &["10.0.0.0:80 ready local zones=zone-a", "10.0.0.1:80 ready local zones=zone-b",
      "10.0.0.2:80 ready zones=zone-a", "10.0.0.3:80 ready zones=zone-b"],
    Some(&["10.0.0.0:80", "10.0.0.2:80"][..]), Some(&["10.0.0.0:80", "10.0.0.1:80"][..]), true
)]
#[case::internal_traffic_policy_local_with_empty_endpoints(
    None, &[], None, Some(&[][..]), false
)]
#[case::internal_traffic_policy_local_but_all_endpoints_are_remote(
    None,
    &["10.0.0.0:80 ready", "10.0.0.1:80 ready"],
    None, Some(&[][..]), true
)]
#[case::internal_traffic_policy_local_all_endpoints_are_local(
    None,
    &["10.0.0.0:80 ready local", "10.0.0.1:80 ready local"],
    None, Some(&["10.0.0.0:80", "10.0.0.1:80"][..]), true
)]
#[case::internal_traffic_policy_local_some_endpoints_are_local(
    None,
    &["10.0.0.0:80 ready local", "10.0.0.1:80 ready"],
    None, Some(&["10.0.0.0:80"][..]), true
)]
#[case::cluster_traffic_policy_endpoints_not_ready(
    None,
    &["10.0.0.0:80", "10.0.0.1:80"],
    Some(&[][..]), None, false
)]
#[case::cluster_traffic_policy_some_endpoints_are_ready(
    None,
    &["10.0.0.0:80", "10.0.0.1:80 ready"],
    Some(&["10.0.0.1:80"][..]), None, true
)]
#[case::cluster_traffic_policy_all_endpoints_are_terminating(
    None,
    &["10.0.0.0:80 serving terminating local", "10.0.0.1:80 serving terminating"],
    Some(&["10.0.0.0:80", "10.0.0.1:80"][..]), None, true
)]
#[case::itp_local_etp_cluster_some_endpoints_local(
    None,
    &["10.0.0.0:80 ready local", "10.0.0.1:80 ready"],
    Some(&["10.0.0.0:80", "10.0.0.1:80"][..]), Some(&["10.0.0.0:80"][..]), true
)]
#[case::itp_cluster_etp_local_some_endpoints_local(
    None,
    &["10.0.0.0:80 ready local", "10.0.0.1:80 ready"],
    Some(&["10.0.0.0:80", "10.0.0.1:80"][..]), Some(&["10.0.0.0:80"][..]), true
)]
#[case::itp_local_etp_local_some_endpoints_local(
    None,
    &["10.0.0.0:80 ready local", "10.0.0.1:80 ready"],
    Some(&["10.0.0.0:80", "10.0.0.1:80"][..]), Some(&["10.0.0.0:80"][..]), true
)]
#[case::itp_local_etp_local_all_endpoints_remote(
    None,
    &["10.0.0.0:80 ready", "10.0.0.1:80 ready"],
    Some(&["10.0.0.0:80", "10.0.0.1:80"][..]), Some(&[][..]), true
)]
#[case::itp_local_etp_local_all_endpoints_remote_and_terminating(
    None,
    &["10.0.0.0:80 serving terminating", "10.0.0.1:80 serving terminating"],
    Some(&["10.0.0.0:80", "10.0.0.1:80"][..]), Some(&[][..]), true
)]
#[case::itp_cluster_etp_local_with_terminating_endpoints(
    None,
    &["10.0.0.0:80 ready", "10.0.0.1:80 local",
      "10.0.0.2:80 serving terminating local", "10.0.0.3:80 serving terminating"],
    Some(&["10.0.0.0:80"][..]), Some(&["10.0.0.2:80"][..]), true
)]
#[case::external_traffic_policy_ignored_if_not_externally_accessible(
    None,
    &["10.0.0.0:80 ready", "10.0.0.1:80 ready local"],
    Some(&["10.0.0.0:80", "10.0.0.1:80"][..]), None, true
)]
#[case::no_cluster_endpoints_for_itp_local_internal_only_service(
    None,
    &["10.0.0.0:80 ready", "10.0.0.1:80 ready local"],
    None, Some(&["10.0.0.1:80"][..]), true
)]
// Node hints (PreferSameNode), from topologyModeFromHints: not in the
// ported table, which predates them.
#[case::prefer_same_node_all_ready_have_node_hints_one_for_this_node(
    Some("zone-a"),
    &["10.1.2.3:80 ready nodes=host zones=zone-a", "10.1.2.4:80 ready nodes=host-2 zones=zone-a",
      "10.1.2.5:80 ready nodes=host-3 zones=zone-b"],
    Some(&["10.1.2.3:80"][..]), None, true
)]
#[case::node_hints_not_for_this_node_fall_back_to_zone_hints(
    Some("zone-b"),
    &["10.1.2.3:80 ready nodes=host-1 zones=zone-a", "10.1.2.4:80 ready nodes=host-2 zones=zone-b",
      "10.1.2.5:80 ready nodes=host-3 zones=zone-b"],
    Some(&["10.1.2.4:80", "10.1.2.5:80"][..]), None, true
)]
#[case::a_ready_endpoint_without_node_hint_falls_back_to_zone_hints(
    Some("zone-a"),
    &["10.1.2.3:80 ready nodes=host zones=zone-a", "10.1.2.4:80 ready zones=zone-a",
      "10.1.2.5:80 ready nodes=host-3 zones=zone-b"],
    Some(&["10.1.2.3:80", "10.1.2.4:80"][..]), None, true
)]
#[case::unready_endpoints_need_no_node_hint(
    None,
    &["10.1.2.3:80 ready nodes=host", "10.1.2.4:80 ready nodes=host-2", "10.1.2.5:80"],
    Some(&["10.1.2.3:80"][..]), None, true
)]
#[case::only_an_unready_endpoint_hinted_for_this_node(
    None,
    &["10.1.2.3:80 nodes=host", "10.1.2.4:80 ready nodes=host-2"],
    Some(&["10.1.2.4:80"][..]), None, true
)]
#[case::node_hints_and_terminating_fallback_ignores_topology(
    None,
    &["10.1.2.3:80 serving terminating nodes=host-2", "10.1.2.4:80 serving terminating nodes=host-3"],
    Some(&["10.1.2.3:80", "10.1.2.4:80"][..]), None, true
)]
fn categorize_endpoints(
    #[case] zone: Option<&str>,
    #[case] endpoints: &[&str],
    #[case] cluster: Option<&[&str]>,
    #[case] local: Option<&[&str]>,
    #[case] has_any: bool,
) {
    let mut node: NodeInfo = node(HOST).into();
    node.zone = zone.map(str::to_owned);
    let got = categorize_specs(endpoints, &node);
    if let Some(cluster) = cluster {
        assert_eq!(strings(&got.cluster), sorted(cluster), "cluster endpoints");
    }
    if let Some(local) = local {
        assert_eq!(strings(&got.local), sorted(local), "local endpoints");
    }
    assert_eq!(got.has_any, has_any, "has any endpoints");
}

#[rstest]
#[case::no_ready_endpoints(None, &["10.0.0.1:80 zones=zone-a"], TopologyMode::None)]
#[case::zone(Some("zone-a"), &["10.0.0.1:80 ready zones=zone-a"], TopologyMode::PreferSameZone)]
#[case::node(None, &["10.0.0.1:80 ready nodes=host"], TopologyMode::PreferSameNode)]
#[case::node_before_zone(
    Some("zone-a"),
    &["10.0.0.1:80 ready nodes=host zones=zone-a"],
    TopologyMode::PreferSameNode
)]
#[case::no_zone_label(None, &["10.0.0.1:80 ready zones=zone-a"], TopologyMode::None)]
fn topology_modes(
    #[case] zone: Option<&str>,
    #[case] endpoints: &[&str],
    #[case] want: TopologyMode,
) {
    let mut node: NodeInfo = node(HOST).into();
    node.zone = zone.map(str::to_owned);
    let eps: Vec<Ep> = endpoints.iter().map(|s| ep(s)).collect();
    let candidates: Vec<Candidate<'_>> = eps
        .iter()
        .map(|e| Candidate {
            backend: e.backend,
            ready: e.ready,
            serving: e.serving,
            terminating: e.terminating,
            local: e.local,
            zone_hints: &e.zone_hints,
            node_hints: &e.node_hints,
        })
        .collect();
    assert_eq!(topology_mode(&candidates, &node), want);
}

/// A node with no name: nothing is local, and node hints naming "" (which
/// the API forbids) never match.
#[test]
fn unnamed_node_has_no_local_endpoints() {
    let node = NodeInfo::default();
    assert!(!node.is_local(Some("")));
    assert!(!node.is_local(None));
    let got = categorize_specs(&["10.0.0.1:80 ready nodes="], &node);
    assert_eq!(strings(&got.cluster), ["10.0.0.1:80"]);
}

/// Zone hints through the whole pipeline, and `trafficDistribution` itself
/// ignored (the hints carry it).
#[test]
fn zone_hints_restrict_cluster_backends() {
    let service = || {
        svc("default", "web")
            .cluster_ip("10.96.0.10")
            .port("http", 80, Tcp)
    };
    let slices = || {
        vec![
            slice("default", "web-1")
                .for_service("web")
                .port("http", 8080, Tcp)
                .endpoint("10.1.0.1")
                .zone_hints(&["a"])
                .endpoint("10.1.0.2")
                .zone_hints(&["b"])
                .endpoint("10.1.0.3")
                .zone_hints(&["a"]),
        ]
    };
    let out = compute_on(node(HOST).zone("a").into(), vec![service()], slices());
    assert_eq!(
        backends(&out, "10.96.0.10:80/TCP"),
        ["10.1.0.1:8080", "10.1.0.3:8080"]
    );
    let out = compute_on(node(HOST).zone("c").into(), vec![service()], slices());
    assert_eq!(backends(&out, "10.96.0.10:80/TCP").len(), 3);
}

/// `trafficDistribution: PreferSameNode` arrives as node hints.
#[test]
fn node_hints_prefer_this_node() {
    let out = compute(
        vec![
            svc("default", "web")
                .cluster_ip("10.96.0.10")
                .port("http", 80, Tcp),
        ],
        vec![
            slice("default", "web-1")
                .for_service("web")
                .port("http", 8080, Tcp)
                .endpoint("10.1.0.1")
                .on_node(HOST)
                .node_hints(&[HOST])
                .endpoint("10.1.0.2")
                .on_node("other")
                .node_hints(&["other"]),
        ],
    );
    assert_eq!(backends(&out, "10.96.0.10:80/TCP"), ["10.1.0.1:8080"]);
}
