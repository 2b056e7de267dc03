//! Internal and external traffic policies, terminating endpoints, and the
//! count of ports with no local endpoint.

use super::*;

// ---- Traffic policies through the whole desired state ----

/// Endpoints as `"10.0.1.1 <state> <node>"`, state one of `ready`,
/// `not_ready`, `serving_terminating`, `terminating_not_serving`, on the
/// Service `web` (172.30.1.1:80 → 80).
fn policy_case(
    itp: TrafficPolicy,
    endpoints: &[&str],
    tweak: impl FnOnce(SvcBuilder) -> SvcBuilder,
) -> DesiredOutcome {
    let service = tweak(
        svc("ns1", "svc1")
            .cluster_ip("172.30.1.1")
            .port("p80", 80, Tcp)
            .internal_policy(itp),
    );
    let mut sl = slice("ns1", "svc1-abc")
        .for_service("svc1")
        .port("p80", 80, Tcp);
    for spec in endpoints {
        let words: Vec<&str> = spec.split_whitespace().collect();
        let [addr, state, on] = words[..] else {
            panic!("endpoint spec {spec:?}")
        };
        sl = sl.endpoint(addr).on_node(on);
        sl = match state {
            "ready" => sl.ready(),
            "not_ready" => sl.not_ready(),
            "serving_terminating" => sl.serving_terminating(),
            "terminating_not_serving" => sl.terminating_not_serving(),
            other => panic!("unknown endpoint state {other}"),
        };
    }
    compute(vec![service], vec![sl])
}

/// The iptables proxier's TestInternalTrafficPolicy: traffic to the
/// ClusterIP. Its "no local endpoints" case expects DROP; here the frontend
/// has no backends (refused, see the module docs) and is counted.
#[rstest]
#[case::internal_traffic_policy_is_cluster(
    Cluster,
    &["10.0.1.1 ready host", "10.0.1.2 ready host1", "10.0.1.3 ready host2"],
    &["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"],
    0
)]
#[case::internal_traffic_policy_is_local_and_there_is_one_local_endpoint(
    Local,
    &["10.0.1.1 ready host", "10.0.1.2 ready host1", "10.0.1.3 ready host2"],
    &["10.0.1.1:80"],
    0
)]
#[case::internal_traffic_policy_is_local_and_there_are_multiple_local_endpoints(
    Local,
    &["10.0.1.1 ready host", "10.0.1.2 ready host", "10.0.1.3 ready host2"],
    &["10.0.1.1:80", "10.0.1.2:80"],
    0
)]
#[case::internal_traffic_policy_is_local_and_there_are_no_local_endpoints(
    Local,
    &["10.0.1.1 ready host0", "10.0.1.2 ready host1", "10.0.1.3 ready host2"],
    &[],
    1
)]
fn internal_traffic_policy(
    #[case] itp: TrafficPolicy,
    #[case] endpoints: &[&str],
    #[case] want: &[&str],
    #[case] no_local: usize,
) {
    let out = policy_case(itp, endpoints, |s| s);
    assert_eq!(backends(&out, "172.30.1.1:80/TCP"), want);
    assert_eq!(out.no_local_endpoints, no_local);
    assert_eq!(out.no_local_endpoints_by_policy.internal, no_local);
    assert_eq!(out.no_local_endpoints_by_policy.external, 0);
}

/// The iptables proxier's terminating-endpoint tests
/// (TestEndpointSliceWithTerminatingEndpointsTrafficPolicyLocal and
/// ...Cluster), seen from a frontend with each internal policy: what a
/// Cluster frontend and a Local frontend get.
#[rstest]
#[case::ready_endpoints_exist(
    &["10.0.1.1 ready host", "10.0.1.2 ready host", "10.0.1.3 serving_terminating host",
      "10.0.1.4 terminating_not_serving host", "10.0.1.5 ready host-1"],
    &["10.0.1.1:80", "10.0.1.2:80", "10.0.1.5:80"],
    &["10.0.1.1:80", "10.0.1.2:80"]
)]
#[case::only_terminating_endpoints_exist_locally(
    &["10.0.1.1 serving_terminating host", "10.0.1.2 serving_terminating host",
      "10.0.1.3 terminating_not_serving host", "10.0.1.4 ready host-1"],
    &["10.0.1.4:80"],
    &["10.0.1.1:80", "10.0.1.2:80"]
)]
#[case::only_terminating_endpoints_exist_anywhere(
    &["10.0.1.1 serving_terminating host", "10.0.1.2 serving_terminating host",
      "10.0.1.3 terminating_not_serving host", "10.0.1.4 serving_terminating host-1"],
    &["10.0.1.1:80", "10.0.1.2:80", "10.0.1.4:80"],
    &["10.0.1.1:80", "10.0.1.2:80"]
)]
#[case::terminating_endpoints_on_remote_node(
    &["10.0.1.5 serving_terminating host-1"],
    &["10.0.1.5:80"],
    &[]
)]
#[case::no_usable_endpoints_on_any_node(
    &["10.0.1.1 terminating_not_serving host", "10.0.1.5 terminating_not_serving host-1"],
    &[],
    &[]
)]
#[case::not_ready_endpoints_are_never_used(
    &["10.0.1.1 not_ready host", "10.0.1.2 not_ready host-1"],
    &[],
    &[]
)]
#[case::local_ready_beats_local_terminating_while_cluster_uses_all_ready(
    &["10.0.1.1 serving_terminating host", "10.0.1.2 ready host", "10.0.1.3 ready host-1"],
    &["10.0.1.2:80", "10.0.1.3:80"],
    &["10.0.1.2:80"]
)]
fn terminating_endpoints(
    #[case] endpoints: &[&str],
    #[case] cluster: &[&str],
    #[case] local: &[&str],
) {
    let out = policy_case(Cluster, endpoints, |s| s);
    assert_eq!(backends(&out, "172.30.1.1:80/TCP"), cluster, "ITP Cluster");
    let out = policy_case(Local, endpoints, |s| s);
    assert_eq!(backends(&out, "172.30.1.1:80/TCP"), local, "ITP Local");
}

/// publishNotReadyAddresses: every endpoint is Ready (and Serving), local
/// or not, terminating or not.
#[test]
fn publish_not_ready_with_local_policy() {
    let endpoints = [
        "10.0.1.1 not_ready host",
        "10.0.1.2 terminating_not_serving host",
        "10.0.1.3 not_ready host-1",
    ];
    let out = policy_case(Local, &endpoints, SvcBuilder::publish_not_ready);
    assert_eq!(
        backends(&out, "172.30.1.1:80/TCP"),
        ["10.0.1.1:80", "10.0.1.2:80"]
    );
    let out = policy_case(Cluster, &endpoints, SvcBuilder::publish_not_ready);
    assert_eq!(
        backends(&out, "172.30.1.1:80/TCP"),
        ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"]
    );
}

/// kube-proxy counts a Service port with a Local policy and no local
/// endpoint only when it has endpoints somewhere (otherwise it rejects, and
/// does not count); external only when the Service is reachable externally.
#[rstest]
#[case::itp_local_remote_only(Local, Cluster, None, &["10.0.1.2 ready host-1"], (1, 0), 1)]
#[case::itp_local_nothing_anywhere(Local, Cluster, None, &[], (0, 0), 0)]
#[case::itp_local_only_unusable(
    Local, Cluster, None, &["10.0.1.2 not_ready host-1"], (0, 0), 0
)]
#[case::itp_local_terminating_remote(
    Local, Cluster, None, &["10.0.1.2 serving_terminating host-1"], (1, 0), 1
)]
#[case::itp_local_with_local(
    Local, Cluster, None, &["10.0.1.1 ready host", "10.0.1.2 ready host-1"], (0, 0), 0
)]
#[case::etp_local_on_cluster_ip_is_not_external(
    Cluster, Local, None, &["10.0.1.2 ready host-1"], (0, 0), 0
)]
#[case::etp_local_node_port(
    Cluster, Local, Some(ServiceType::NodePort), &["10.0.1.2 ready host-1"], (0, 1), 1
)]
#[case::etp_local_load_balancer(
    Cluster, Local, Some(ServiceType::LoadBalancer), &["10.0.1.2 ready host-1"], (0, 1), 1
)]
#[case::both_local_counts_once_per_port_in_total(
    Local, Local, Some(ServiceType::NodePort), &["10.0.1.2 ready host-1"], (1, 1), 1
)]
fn no_local_endpoints_count(
    #[case] itp: TrafficPolicy,
    #[case] etp: TrafficPolicy,
    #[case] service_type: Option<ServiceType>,
    #[case] endpoints: &[&str],
    #[case] by_policy: (usize, usize),
    #[case] total: usize,
) {
    let out = policy_case(itp, endpoints, |s| {
        let s = s.external_policy(etp);
        match service_type {
            Some(t) => s.service_type(t),
            None => s,
        }
    });
    let got = out.no_local_endpoints_by_policy;
    assert_eq!((got.internal, got.external), by_policy);
    assert_eq!(out.no_local_endpoints, total);
}

/// Counted per Service port (as kube-proxy does), and a dual-stack port once.
#[test]
fn no_local_endpoints_counted_per_port() {
    let out = compute(
        vec![
            svc("default", "web")
                .cluster_ip("10.96.0.10")
                .cluster_ip("fd00:96::10")
                .port("http", 80, Tcp)
                .port("https", 443, Tcp)
                .internal_policy(Local),
        ],
        vec![
            slice("default", "web-v4")
                .for_service("web")
                .port("http", 8080, Tcp)
                .port("https", 8443, Tcp)
                .endpoint("10.1.0.5")
                .on_node("other"),
            slice("default", "web-v6")
                .for_service("web")
                .port("http", 8080, Tcp)
                .endpoint("fd00::5")
                .on_node("other"),
        ],
    );
    assert_eq!(out.state.frontends.len(), 4);
    assert!(out.state.frontends.values().all(|s| s.backends.is_empty()));
    assert_eq!(out.no_local_endpoints, 2);
}
