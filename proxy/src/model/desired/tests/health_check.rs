//! Health-check node ports and their count of local Ready endpoints.

use super::*;

/// The health check counts local Ready endpoints, summed over the
/// Service's ports; terminating ones do not count, and none gives 0.
#[rstest]
#[case::two_ports_one_pod(true, 2)]
#[case::terminating_only(false, 0)]
fn health_check_counts_local_ready_endpoints(#[case] ready: bool, #[case] want: usize) {
    let mut sl = slice("shop", "web-1")
        .for_service("web")
        .port("http", 8080, Tcp)
        .port("https", 8443, Tcp)
        .endpoint("10.1.0.5")
        .on_node(HOST);
    sl = if ready {
        sl.ready()
    } else {
        sl.serving_terminating()
    };
    let sl = sl.endpoint("10.2.0.6").ready().on_node("other");
    let out = compute(
        vec![
            svc("shop", "web")
                .service_type(ServiceType::LoadBalancer)
                .cluster_ip("10.96.0.10")
                .port("http", 80, Tcp)
                .port("https", 443, Tcp)
                .external_policy(Local)
                .health_check_node_port(32000),
        ],
        vec![sl],
    );
    assert_eq!(
        out.state
            .health_checks
            .get(&32000)
            .map(|h| h.local_endpoints),
        Some(want)
    );
    assert_eq!(
        out.state.local_endpoints,
        BTreeSet::from([ip("10.1.0.5")]),
        "terminating or not, the endpoint runs here"
    );
}

/// Dual-stack: kube-proxy's count comes from one family's proxier (the
/// health server is shared), so 2 local pods × 2 ports count 4, not 8.
#[test]
fn health_check_counts_one_family_of_a_dual_stack_service() {
    let local_slice = |name: &str, a: &str, b: &str| {
        slice("shop", name)
            .for_service("web")
            .port("http", 8080, Tcp)
            .port("https", 8443, Tcp)
            .endpoint(a)
            .ready()
            .on_node(HOST)
            .endpoint(b)
            .ready()
            .on_node(HOST)
    };
    let out = compute(
        vec![
            svc("shop", "web")
                .service_type(ServiceType::LoadBalancer)
                .cluster_ip("fd00:96::10")
                .cluster_ip("10.96.0.10")
                .port("http", 80, Tcp)
                .port("https", 443, Tcp)
                .external_policy(Local)
                .health_check_node_port(32000),
        ],
        vec![
            local_slice("web-v4", "10.1.0.5", "10.1.0.6"),
            local_slice("web-v6", "fd00::5", "fd00::6"),
        ],
    );
    assert_eq!(
        out.state
            .health_checks
            .get(&32000)
            .map(|h| h.local_endpoints),
        Some(4)
    );
    assert_eq!(out.state.local_endpoints.len(), 4, "both families run here");
}
