//! Endpoints from slices: merged, de-duplicated, kept to their family, and
//! which conditions make them usable.

use super::*;

#[test]
fn slices_merged_and_deduplicated() {
    let out = compute(
        vec![
            svc("default", "web")
                .cluster_ip("10.96.0.10")
                .port("http", 80, Tcp),
        ],
        vec![
            slice("default", "web-b")
                .for_service("web")
                .port("http", 8080, Tcp)
                .endpoint("10.1.0.7")
                .endpoint("10.1.0.5"),
            slice("default", "web-a")
                .for_service("web")
                .port("http", 8080, Tcp)
                .endpoint("10.1.0.5")
                .endpoint("10.1.0.6"),
        ],
    );
    assert_eq!(
        backends(&out, "10.96.0.10:80/TCP"),
        ["10.1.0.5:8080", "10.1.0.6:8080", "10.1.0.7:8080"]
    );
}

/// An endpoint listed twice counts once, with the conditions of the first
/// slice by name (kube-proxy's rule), here not ready.
#[test]
fn duplicate_endpoint_first_slice_wins() {
    let out = compute(
        vec![
            svc("default", "web")
                .cluster_ip("10.96.0.10")
                .port("http", 80, Tcp),
        ],
        vec![
            slice("default", "web-a")
                .for_service("web")
                .port("http", 8080, Tcp)
                .endpoint("10.1.0.5")
                .not_ready()
                .endpoint("10.1.0.6"),
            slice("default", "web-b")
                .for_service("web")
                .port("http", 8080, Tcp)
                .endpoint("10.1.0.5")
                .ready(),
        ],
    );
    assert_eq!(backends(&out, "10.96.0.10:80/TCP"), ["10.1.0.6:8080"]);
}

#[test]
fn slices_of_other_services_and_namespaces_ignored() {
    let out = compute(
        vec![
            svc("default", "web")
                .cluster_ip("10.96.0.10")
                .port("http", 80, Tcp),
        ],
        vec![
            slice("default", "api-1")
                .for_service("api")
                .port("http", 8080, Tcp)
                .endpoint("10.1.0.8"),
            slice("other", "web-1")
                .for_service("web")
                .port("http", 8080, Tcp)
                .endpoint("10.1.0.9"),
        ],
    );
    assert_eq!(backends(&out, "10.96.0.10:80/TCP"), Vec::<String>::new());
}

#[test]
fn ip_families_kept_apart() {
    let out = compute(
        vec![
            svc("default", "web")
                .cluster_ip("10.96.0.10")
                .port("http", 80, Tcp),
        ],
        vec![
            slice("default", "web-v4")
                .for_service("web")
                .port("http", 8080, Tcp)
                .endpoint("10.1.0.5"),
            slice("default", "web-v6")
                .for_service("web")
                .port("http", 8080, Tcp)
                .endpoint("fd00::5"),
        ],
    );
    assert_eq!(frontends_of(&out.state), ["10.96.0.10:80/TCP"]);
    assert_eq!(backends(&out, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
}

#[test]
fn dual_stack_service() {
    let out = compute(
        vec![
            svc("default", "web")
                .cluster_ip("10.96.0.10")
                .cluster_ip("fd00:96::10")
                .port("http", 80, Tcp),
        ],
        vec![
            slice("default", "web-v4")
                .for_service("web")
                .port("http", 8080, Tcp)
                .endpoint("10.1.0.5"),
            slice("default", "web-v6")
                .for_service("web")
                .port("http", 8080, Tcp)
                .endpoint("fd00::5"),
        ],
    );
    assert_eq!(
        frontends_of(&out.state),
        ["10.96.0.10:80/TCP", "[fd00:96::10]:80/TCP"]
    );
    assert_eq!(backends(&out, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
    assert_eq!(backends(&out, "[fd00:96::10]:80/TCP"), ["[fd00::5]:8080"]);
}

/// Endpoint choice for cluster traffic. Each case lists the endpoints'
/// states (a = 10.1.0.1, b = 10.1.0.2, ...) and the backends expected.
#[rstest]
#[case::ready_only_used(&["ready", "not_ready"], false, &["10.1.0.1:8080"])]
#[case::none_ready_means_none(&["not_ready"], false, &[])]
#[case::terminating_ignored_while_any_ready(
    &["ready", "serving_terminating"],
    false,
    &["10.1.0.1:8080"]
)]
#[case::fallback_to_serving_terminating(
    &["not_ready", "serving_terminating", "serving_terminating"],
    false,
    &["10.1.0.2:8080", "10.1.0.3:8080"]
)]
#[case::terminating_not_serving_never(&["terminating_not_serving"], false, &[])]
#[case::publish_not_ready_uses_all(
    &["not_ready", "terminating_not_serving"],
    true,
    &["10.1.0.1:8080", "10.1.0.2:8080"]
)]
fn endpoint_choice(
    #[case] states: &[&str],
    #[case] publish_not_ready: bool,
    #[case] want: &[&str],
) {
    let mut service = svc("default", "web")
        .cluster_ip("10.96.0.10")
        .port("http", 80, Tcp);
    if publish_not_ready {
        service = service.publish_not_ready();
    }
    let mut sl = slice("default", "web-1")
        .for_service("web")
        .port("http", 8080, Tcp);
    for (i, state) in states.iter().enumerate() {
        sl = sl.endpoint(&format!("10.1.0.{}", i + 1));
        sl = match *state {
            "ready" => sl.ready(),
            "not_ready" => sl.not_ready(),
            "serving_terminating" => sl.serving_terminating(),
            "terminating_not_serving" => sl.terminating_not_serving(),
            other => panic!("unknown endpoint state {other}"),
        };
    }
    let out = compute(vec![service], vec![sl]);
    assert_eq!(backends(&out, "10.96.0.10:80/TCP"), want);
}

/// kube-proxy's slice cache keeps the first copy of an endpoint, but a later
/// copy on this node replaces it.
#[test]
fn duplicate_endpoint_local_copy_wins() {
    let out = compute(
        vec![
            svc("default", "web")
                .cluster_ip("10.96.0.10")
                .port("http", 80, Tcp)
                .internal_policy(Local),
        ],
        vec![
            slice("default", "web-a")
                .for_service("web")
                .port("http", 8080, Tcp)
                .endpoint("10.1.0.5")
                .on_node("elsewhere"),
            slice("default", "web-b")
                .for_service("web")
                .port("http", 8080, Tcp)
                .endpoint("10.1.0.5")
                .on_node(HOST),
        ],
    );
    assert_eq!(backends(&out, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
}

/// Every listed endpoint is retained, whatever its conditions and whether or
/// not a slot uses it: the plan keeps the backend entry of a terminating
/// endpoint (established per-packet flows name it) and of one whose
/// readiness failed, as kube-proxy's conntrack keeps their flows. Another
/// Service's endpoints on the same address count once; an endpoint dropped
/// from the slice is no longer retained.
#[test]
fn every_listed_endpoint_is_retained_used_or_not() {
    let web = |states: &[&str]| {
        let mut sl = slice("default", "web-1")
            .for_service("web")
            .port("http", 8080, Tcp);
        for (i, state) in states.iter().enumerate() {
            sl = sl.endpoint(&format!("10.1.0.{}", i + 1));
            sl = match *state {
                "ready" => sl.ready(),
                "not_ready" => sl.not_ready(),
                "serving_terminating" => sl.serving_terminating(),
                "terminating_not_serving" => sl.terminating_not_serving(),
                other => panic!("unknown endpoint state {other}"),
            };
        }
        compute(
            vec![
                svc("default", "web")
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp),
            ],
            vec![sl],
        )
    };
    let retained = |out: &DesiredOutcome| -> Vec<String> {
        out.state
            .retained_backends
            .keys()
            .map(ToString::to_string)
            .collect()
    };
    let out = web(&[
        "ready",
        "serving_terminating",
        "terminating_not_serving",
        "not_ready",
    ]);
    assert_eq!(backends(&out, "10.96.0.10:80/TCP"), ["10.1.0.1:8080"]);
    assert_eq!(
        retained(&out),
        [
            "10.1.0.1:8080",
            "10.1.0.2:8080",
            "10.1.0.3:8080",
            "10.1.0.4:8080"
        ]
    );
    assert_eq!(retained(&web(&["ready"])), ["10.1.0.1:8080"]);
}

/// UDP: only serving endpoints are retained (kube-proxy clears the UDP
/// flows of an endpoint that stops serving, so they move to a live one).
#[test]
fn udp_endpoints_are_retained_while_serving() {
    let mut sl = slice("default", "dns-1")
        .for_service("dns")
        .port("dns", 5353, Udp);
    for (i, state) in [
        "ready",
        "serving_terminating",
        "terminating_not_serving",
        "not_ready",
    ]
    .iter()
    .enumerate()
    {
        sl = sl.endpoint(&format!("10.1.0.{}", i + 1));
        sl = match *state {
            "ready" => sl.ready(),
            "not_ready" => sl.not_ready(),
            "serving_terminating" => sl.serving_terminating(),
            _ => sl.terminating_not_serving(),
        };
    }
    let out = compute(
        vec![
            svc("default", "dns")
                .cluster_ip("10.96.0.10")
                .port("dns", 53, Udp),
        ],
        vec![sl],
    );
    let retained: Vec<String> = out
        .state
        .retained_backends
        .keys()
        .map(ToString::to_string)
        .collect();
    assert_eq!(retained, ["10.1.0.1:5353", "10.1.0.2:5353"]);
}
