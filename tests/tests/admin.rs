//! The admin endpoints of the real proxy: `/metrics` carries kube-proxy's sync
//! metrics and our map and datapath metrics once a Service is programmed, the
//! datapath counter moves when a connection goes through a VIP, rejected
//! manifests are counted, and `/healthz` and `/livez` answer 200 after a sync.
//!
//! Both servers listen on loopback inside the sandbox's namespace only.

mod common;

use std::time::Duration;

use common::*;
use proxy_tests::tcp_request_timeout;

const METRICS_ADDR: &str = "127.0.0.1:19249";
const HEALTHZ_ADDR: &str = "127.0.0.1:19256";
/// Both servers on loopback.
const ADMIN_ARGS: [&str; 4] = [
    "--metrics-bind-address",
    METRICS_ADDR,
    "--healthz-bind-address",
    HEALTHZ_ADDR,
];

/// `web` with all endpoints, the proxy started in `mode` with both admin
/// servers on loopback, and the dataplane verified to work.
fn fixture_in(mode: Mode) -> Fixture {
    let mut f = Fixture::new(mode);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    f.start_proxy_with(&ADMIN_ARGS);
    f.wait_ready();
    f
}

/// The map and datapath metrics exist only with the socket hooks.
fn fixture() -> Fixture {
    fixture_in(Mode::Ebpf)
}

fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_get(addr, path)
}

fn scrape() -> String {
    match get(METRICS_ADDR, "/metrics") {
        Ok((200, body)) => body,
        Ok((code, body)) => panic!("expected 200 from /metrics, got {code}: {body}"),
        Err(e) => panic!("scraping http://{METRICS_ADDR}/metrics failed: {e}"),
    }
}

/// The value of one series (`name{labels}` exactly as exposed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn value(text: &str, series: &str) -> f64 {
    sample(text, series)
        .unwrap_or_else(|| panic!("expected the series {series} in /metrics, got:\n{text}"))
}

fn metric_type(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("# TYPE {name} ")))
        .map(str::to_owned)
}

#[test]
fn metrics_carry_kube_proxy_names_and_map_entries_after_a_sync() {
    let _f = fixture();
    let m = scrape();
    for (name, kind) in [
        ("kubeproxy_sync_proxy_rules_duration_seconds", "histogram"),
        (
            "kubeproxy_network_programming_duration_seconds",
            "histogram",
        ),
        ("kubeproxy_sync_proxy_rules_last_timestamp_seconds", "gauge"),
        (
            "kubeproxy_sync_proxy_rules_service_changes_total",
            "counter",
        ),
        (
            "kubeproxy_sync_proxy_rules_endpoint_changes_total",
            "counter",
        ),
        (
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "gauge",
        ),
        (
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "gauge",
        ),
        (
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "gauge",
        ),
        ("proxy_map_entries", "gauge"),
        ("proxy_map_capacity", "gauge"),
        ("proxy_datapath_events_total", "counter"),
        ("proxy_sync_failures_total", "counter"),
        ("proxy_drift_repairs_total", "counter"),
        ("proxy_mode", "gauge"),
    ] {
        assert_eq!(
            metric_type(&m, name).as_deref(),
            Some(kind),
            "expected {name} to be exported as a {kind}; /metrics:\n{m}"
        );
    }
    assert!(value(&m, "kubeproxy_sync_proxy_rules_duration_seconds_count") >= 1.0);
    assert!(value(&m, "kubeproxy_network_programming_duration_seconds_count") >= 1.0);
    assert!(value(&m, "kubeproxy_sync_proxy_rules_last_timestamp_seconds") > 1.0e9);
    assert!(value(&m, "kubeproxy_sync_proxy_rules_service_changes_total") >= 1.0);
    // Two slices (one per family).
    assert!(value(&m, "kubeproxy_sync_proxy_rules_endpoint_changes_total") >= 2.0);
    // Every change was taken by a sync.
    assert_eq!(
        value(&m, "kubeproxy_sync_proxy_rules_service_changes_pending"),
        0.0
    );
    assert_eq!(
        value(&m, "kubeproxy_sync_proxy_rules_endpoint_changes_pending"),
        0.0
    );
    assert_eq!(value(&m, r#"proxy_mode{mode="ebpf"}"#), 1.0);
    assert_eq!(value(&m, "proxy_sync_failures_total"), 0.0);

    // `web` per family: 2 frontends (http, dns), each slot 0 + 3 backend slots;
    // 3 TCP + 3 UDP backends; one rev-NAT entry per frontend.
    for (family, svc, backends, revnat) in [("V4", 8.0, 6.0, 2.0), ("V6", 8.0, 6.0, 2.0)] {
        for (map, want) in [
            (format!("SVC_{family}"), svc),
            (format!("BACKEND_{family}"), backends),
            (format!("REVNAT_{family}"), revnat),
        ] {
            assert_eq!(
                value(&m, &format!(r#"proxy_map_entries{{map="{map}"}}"#)),
                want,
                "entries of {map}"
            );
            let capacity = value(&m, &format!(r#"proxy_map_capacity{{map="{map}"}}"#));
            assert!(capacity >= want, "capacity of {map} is {capacity}");
        }
    }
    // One name per rev-NAT entry, both families.
    assert_eq!(value(&m, r#"proxy_map_entries{map="SVC_NAMES"}"#), 4.0);
    assert!(value(&m, r#"proxy_map_capacity{map="SVC_NAMES"}"#) >= 4.0);
    for lru in ["SOCK_RNAT_V4", "SOCK_RNAT_V6"] {
        assert!(
            sample(&m, &format!(r#"proxy_map_entries{{map="{lru}"}}"#)).is_some(),
            "expected an entry count for {lru}; /metrics:\n{m}"
        );
    }
    assert_eq!(
        get(METRICS_ADDR, "/proxyMode").expect("GET /proxyMode"),
        (200, "ebpf".to_owned())
    );
}

#[test]
fn a_connection_through_a_vip_counts_as_translated() {
    let _f = fixture();
    let series = r#"proxy_datapath_events_total{reason="translated"}"#;
    let before = value(&scrape(), series);
    let vip = sock(WEB_VIP4, TCP_PORT);
    for i in 0..3 {
        tcp_request_timeout(vip, REQUEST)
            .unwrap_or_else(|e| panic!("TCP request {i} to {vip} failed: {e}"));
    }
    let after = value(&scrape(), series);
    assert!(
        after >= before + 3.0,
        "expected {series} to grow by at least 3 after 3 connections to {vip}: \
         {before} before, {after} after"
    );
}

both_modes! {
    /// Health, `/proxyMode` and the `proxy_mode` metric all report the mode in force.
    fn health_is_ok_after_a_sync_with_kube_proxys_body_and_the_mode(mode) {
        let _f = fixture_in(mode);
        for path in ["/healthz", "/livez"] {
            let (code, body) = get(HEALTHZ_ADDR, path)
                .unwrap_or_else(|e| panic!("GET http://{HEALTHZ_ADDR}{path} failed: {e}"));
            assert_eq!(code, 200, "{path} answered {code}: {body}");
            let mode_field = format!(r#""mode":"{mode}""#);
            for field in [
                r#""lastUpdated":""#,
                r#""currentTime":""#,
                r#""healthy":true"#,
                mode_field.as_str(),
            ] {
                assert!(
                    body.contains(field),
                    "expected {field} in {path}'s body: {body}"
                );
            }
            assert_eq!(
                body.contains(r#""nodeEligible":true"#),
                path == "/healthz",
                "nodeEligible is in /healthz's body only: {path} said {body}"
            );
        }
        let m = scrape();
        assert!(value(&m, r#"kubeproxy_proxy_healthz_total{code="200"}"#) >= 1.0);
        assert!(value(&m, r#"kubeproxy_proxy_livez_total{code="200"}"#) >= 1.0);
        for other in Mode::ALL {
            let series = format!(r#"proxy_mode{{mode="{other}"}}"#);
            assert_eq!(value(&m, &series), f64::from(u8::from(other == mode)), "{series}");
        }
        assert_eq!(
            get(METRICS_ADDR, "/proxyMode").expect("GET /proxyMode"),
            (200, mode.to_string())
        );
        assert_eq!(value(&m, "proxy_sync_failures_total"), 0.0);
    }
}

/// The health port held by another socket at start (a daemon being replaced,
/// or a client that got it as its ephemeral port): the daemon serves Services
/// anyway, counts and logs the failed binds, and `/healthz` answers once the
/// holder lets go, as kube-proxy's health server retries.
#[test]
fn a_health_port_in_use_at_start_is_retried_while_services_are_served() {
    let mut f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    let holder = std::net::TcpListener::bind(HEALTHZ_ADDR)
        .unwrap_or_else(|e| panic!("holding {HEALTHZ_ADDR}: {e}"));
    f.start_proxy_with(&ADMIN_ARGS);
    f.wait_ready();
    let series = r#"proxy_health_bind_failures_total{server="healthz"}"#;
    f.wait_for(PROPAGATION, "a retried bind to be counted", || {
        sample(&scrape(), series).is_some_and(|v| v >= 2.0)
    });
    assert_eq!(
        value(
            &scrape(),
            r#"proxy_health_bind_failures_total{server="metrics"}"#
        ),
        0.0
    );
    let log = f.log();
    assert!(
        log.contains("cannot listen for health checks") && log.contains(HEALTHZ_ADDR),
        "expected a warning naming {HEALTHZ_ADDR} in the log:\n{log}"
    );
    drop(holder);
    f.wait_for(
        Duration::from_secs(15),
        "/healthz to answer 200 once its port is free",
        || matches!(get(HEALTHZ_ADDR, "/healthz"), Ok((200, _))),
    );
    f.assert_proxy_running();
    tcp_request_timeout(sock(WEB_VIP4, TCP_PORT), PROBE).expect("web still served");
}

#[test]
fn a_rejected_manifest_is_counted_by_reason() {
    let mut f = fixture();
    f.write(
        "bad-service.yaml",
        &service("bad", &["not-an-ip"], TCP_PORT, UDP_PORT),
    );
    let series = r#"proxy_config_rejects_total{source="manifests",reason="invalid_cluster_ip"}"#;
    f.wait_for(PROPAGATION, "the bad clusterIP to be counted", || {
        sample(&scrape(), series).is_some_and(|v| v >= 1.0)
    });
    // The proxy keeps serving what was good.
    let vip = sock(WEB_VIP4, TCP_PORT);
    tcp_request_timeout(vip, REQUEST)
        .unwrap_or_else(|e| panic!("after the bad manifest, {vip} stopped answering: {e}"));
}
