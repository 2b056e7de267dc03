//! Service ports: one frontend per cluster IP × port, which slice port each
//! takes, and what every frontend of a Service shares.

use super::*;

#[test]
fn one_port_one_endpoint() {
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
                .endpoint("10.1.0.5")
                .ready(),
        ],
    );
    assert_eq!(backends(&out, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
    let spec = out.state.frontends.values().next().expect("one frontend");
    assert_eq!(spec.service, ObjectRef::new("default", "web"));
    assert_eq!(spec.port_name, "http");
    assert!(out.conflicts.is_empty());
}

/// Each Service port takes the slice port with the same name and protocol.
#[rstest]
#[case::same_name_and_protocol("http", Tcp, "http", Tcp, &["10.1.0.5:8080"])]
#[case::unnamed_single_port("", Tcp, "", Tcp, &["10.1.0.5:8080"])]
#[case::other_name("http", Tcp, "metrics", Tcp, &[])]
#[case::other_protocol("dns", Udp, "dns", Tcp, &[])]
#[case::named_vs_unnamed("", Tcp, "http", Tcp, &[])]
fn port_matching_by_name_and_protocol(
    #[case] svc_port: &str,
    #[case] svc_proto: Protocol,
    #[case] slice_port: &str,
    #[case] slice_proto: Protocol,
    #[case] want: &[&str],
) {
    let out = compute(
        vec![
            svc("default", "web")
                .cluster_ip("10.96.0.10")
                .port(svc_port, 80, svc_proto),
        ],
        vec![
            slice("default", "web-1")
                .for_service("web")
                .port(slice_port, 8080, slice_proto)
                .endpoint("10.1.0.5"),
        ],
    );
    assert_eq!(backends(&out, &format!("10.96.0.10:80/{svc_proto}")), want);
}

#[test]
fn same_port_number_with_tcp_and_udp() {
    let out = compute(
        vec![
            svc("kube-system", "dns")
                .cluster_ip("10.96.0.53")
                .port("dns", 53, Udp)
                .port("dns-tcp", 53, Tcp),
        ],
        vec![
            slice("kube-system", "dns-1")
                .for_service("dns")
                .port("dns", 5353, Udp)
                .port("dns-tcp", 5354, Tcp)
                .endpoint("10.1.0.7"),
        ],
    );
    assert_eq!(backends(&out, "10.96.0.53:53/UDP"), ["10.1.0.7:5353"]);
    assert_eq!(backends(&out, "10.96.0.53:53/TCP"), ["10.1.0.7:5354"]);
}

#[test]
fn multiport_across_slices() {
    let out = compute(
        vec![
            svc("default", "web")
                .cluster_ip("10.96.0.10")
                .port("http", 80, Tcp)
                .port("https", 443, Tcp),
        ],
        vec![
            slice("default", "web-a")
                .for_service("web")
                .port("http", 8080, Tcp)
                .endpoint("10.1.0.5"),
            slice("default", "web-b")
                .for_service("web")
                .port("https", 8443, Tcp)
                .endpoint("10.1.0.6"),
        ],
    );
    assert_eq!(backends(&out, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
    assert_eq!(backends(&out, "10.96.0.10:443/TCP"), ["10.1.0.6:8443"]);
}

#[test]
fn no_endpoints_still_yields_frontends() {
    let out = compute(
        vec![
            svc("default", "web")
                .cluster_ip("10.96.0.10")
                .port("http", 80, Tcp)
                .port("dns", 53, Udp),
        ],
        vec![],
    );
    assert_eq!(
        frontends_of(&out.state),
        ["10.96.0.10:53/UDP", "10.96.0.10:80/TCP"]
    );
    assert!(out.state.frontends.values().all(|s| s.backends.is_empty()));
}

#[test]
fn affinity_timeout_reaches_every_frontend_of_the_service() {
    let out = compute(
        vec![
            svc("default", "web")
                .cluster_ip("10.96.0.10")
                .cluster_ip("fd00:96::10")
                .port("http", 80, Tcp)
                .port("dns", 53, Udp)
                .affinity(10_800),
            svc("default", "plain")
                .cluster_ip("10.96.0.11")
                .port("http", 80, Tcp),
        ],
        vec![],
    );
    let timeouts: Vec<(String, Option<u32>)> = out
        .state
        .frontends
        .iter()
        .map(|(f, s)| (f.to_string(), s.affinity_timeout))
        .collect();
    assert_eq!(
        timeouts,
        [
            ("10.96.0.10:53/UDP".to_owned(), Some(10_800)),
            ("10.96.0.10:80/TCP".to_owned(), Some(10_800)),
            ("10.96.0.11:80/TCP".to_owned(), None),
            ("[fd00:96::10]:53/UDP".to_owned(), Some(10_800)),
            ("[fd00:96::10]:80/TCP".to_owned(), Some(10_800)),
        ]
    );
}

/// A Service with 100 ports (more than anyone writes by hand), each with its
/// own target port, in one slice.
#[test]
fn hundred_ports() {
    let mut service = svc("default", "many").cluster_ip("10.96.0.10");
    let mut sl = slice("default", "many-1").for_service("many");
    for i in 0..100u16 {
        service = service.port(&format!("p{i}"), 1000 + i, Tcp);
        sl = sl.port(&format!("p{i}"), 2000 + i, Tcp);
    }
    let out = compute(vec![service], vec![sl.endpoint("10.1.0.5")]);
    assert_eq!(out.state.frontends.len(), 100);
    for i in 0..100u16 {
        assert_eq!(
            backends(&out, &format!("10.96.0.10:{}/TCP", 1000 + i)),
            [format!("10.1.0.5:{}", 2000 + i)]
        );
    }
}
