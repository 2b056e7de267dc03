//! `spec.loadBalancerSourceRanges`: which sources a LoadBalancer frontend
//! accepts (kube-proxy's `firewall-ips`, `allowFromNode`).

use super::*;
use crate::model::types::SourceRange;

fn ranges(list: &[&str]) -> Option<Vec<SourceRange>> {
    let mut out: Vec<SourceRange> = list
        .iter()
        .map(|s| SourceRange::parse(s).unwrap_or_else(|| panic!("bad CIDR {s}")))
        .collect();
    out.sort_unstable();
    Some(out)
}

/// The source ranges of every frontend, by address and kind.
fn ranges_of(out: &DesiredOutcome) -> Vec<(String, FrontendKind, Option<Vec<SourceRange>>)> {
    out.state
        .frontends
        .iter()
        .map(|(f, spec)| (f.addr.to_string(), spec.kind, spec.source_ranges.clone()))
        .collect()
}

/// A dual-stack LoadBalancer Service with a NodePort, an ExternalIP and an
/// ingress IP per family.
fn lb() -> SvcBuilder {
    svc("shop", "web")
        .service_type(ServiceType::LoadBalancer)
        .cluster_ip("10.96.0.10")
        .cluster_ip("fd00:96::10")
        .port("http", 80, Tcp)
        .node_port(30080)
        .external_ip("192.0.2.7")
        .lb_ip("203.0.113.9")
        .lb_ip("2001:db8::9")
}

fn host() -> NodeInfo {
    node(HOST)
        .address("192.168.1.10")
        .nodeport_address("192.168.1.10")
        .into()
}

/// Only the LoadBalancer frontends carry the ranges, each the ranges of its
/// own family; ClusterIP, NodePort and ExternalIP frontends accept every
/// source, as in kube-proxy.
#[test]
fn ranges_apply_to_load_balancer_frontends_of_their_family() {
    let out = compute_on(
        host(),
        vec![
            lb().source_range("198.51.100.0/24")
                .source_range("2001:db8:1::/48")
                .source_range(" 100.64.0.1/32 "),
        ],
        vec![],
    );
    assert_eq!(
        ranges_of(&out),
        vec![
            ("10.96.0.10".into(), FrontendKind::ClusterIp, None),
            ("192.0.2.7".into(), FrontendKind::ExternalIp, None),
            ("192.168.1.10".into(), FrontendKind::NodePort, None),
            (
                "203.0.113.9".into(),
                FrontendKind::LoadBalancer,
                ranges(&["100.64.0.1/32", "198.51.100.0/24"])
            ),
            (
                "2001:db8::9".into(),
                FrontendKind::LoadBalancer,
                ranges(&["2001:db8:1::/48"])
            ),
            ("fd00:96::10".into(), FrontendKind::ClusterIp, None),
        ]
    );
}

/// An empty list allows every source.
#[test]
fn no_ranges_allow_every_source() {
    let out = compute_on(host(), vec![lb()], vec![]);
    assert!(
        ranges_of(&out).iter().all(|(_, _, r)| r.is_none()),
        "{:?}",
        ranges_of(&out)
    );
}

/// Ranges of one family only: the other family's LoadBalancer IP accepts no
/// source at all (the list says who may connect; nobody of that family is
/// on it), rather than every source.
#[test]
fn ranges_of_the_other_family_only_allow_nobody() {
    let out = compute_on(host(), vec![lb().source_range("198.51.100.0/24")], vec![]);
    let v6 = ranges_of(&out)
        .into_iter()
        .find(|(a, _, _)| a == "2001:db8::9");
    assert_eq!(
        v6,
        Some((
            "2001:db8::9".into(),
            FrontendKind::LoadBalancer,
            Some(vec![])
        ))
    );
}

/// kube-proxy's `allowFromNode`: when a range holds one of this node's
/// addresses, the Service's LoadBalancer IPs (of that family) are allowed
/// as sources too: the node's own traffic through a load balancer that
/// comes back from the LoadBalancer IP.
#[test]
fn a_range_holding_a_node_address_allows_the_load_balancer_ips() {
    let out = compute_on(
        host(),
        vec![
            lb().lb_ip("203.0.113.10")
                .source_range("192.168.1.0/24")
                .source_range("2001:db8:1::/48"),
        ],
        vec![],
    );
    let lbs: Vec<_> = ranges_of(&out)
        .into_iter()
        .filter(|(_, kind, _)| *kind == FrontendKind::LoadBalancer)
        .map(|(a, _, r)| (a, r))
        .collect();
    let v4 = ranges(&["192.168.1.0/24", "203.0.113.9/32", "203.0.113.10/32"]);
    assert_eq!(
        lbs,
        vec![
            ("203.0.113.9".into(), v4.clone()),
            ("203.0.113.10".into(), v4),
            // No IPv6 node address is in an IPv6 range: no exception there.
            ("2001:db8::9".into(), ranges(&["2001:db8:1::/48"])),
        ]
    );
}

/// Host bits are cleared, and a range repeated (even written differently)
/// counts once.
#[test]
fn ranges_are_normalised() {
    let out = compute_on(
        host(),
        vec![
            lb().source_range("198.51.100.7/24")
                .source_range("198.51.100.0/24"),
        ],
        vec![],
    );
    let v4 = ranges_of(&out)
        .into_iter()
        .find(|(a, _, _)| a == "203.0.113.9")
        .and_then(|(_, _, r)| r);
    assert_eq!(v4, ranges(&["198.51.100.0/24"]));
}

#[rstest]
#[case("10.0.0.0/8", "10.255.1.2", true)]
#[case("10.0.0.0/8", "11.0.0.1", false)]
#[case("0.0.0.0/0", "203.0.113.1", true)]
#[case("0.0.0.0/0", "2001:db8::1", false)]
#[case("2001:db8::/32", "2001:db8:ffff::1", true)]
#[case("2001:db8::/32", "2001:db9::1", false)]
#[case("192.0.2.1/32", "192.0.2.1", true)]
#[case("192.0.2.1/32", "192.0.2.2", false)]
fn a_range_contains_its_addresses(#[case] range: &str, #[case] ip: &str, #[case] inside: bool) {
    let range = SourceRange::parse(range).expect("valid");
    let ip: std::net::IpAddr = ip.parse().expect("valid");
    assert_eq!(range.contains(ip), inside);
}

#[rstest]
#[case("10.0.0.0")]
#[case("10.0.0.0/33")]
#[case("2001:db8::/129")]
#[case("10.0.0.0/")]
#[case("10.0.0.0/+8")]
#[case("not-a-cidr/8")]
#[case("")]
fn what_is_not_a_cidr(#[case] value: &str) {
    assert_eq!(SourceRange::parse(value), None);
}
