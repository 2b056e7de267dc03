//! Tests of the metrics registry and its collectors.

#![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

use super::*;
use crate::{dataplane::MapError, telemetry::rejects::ConfigSource};

#[derive(Debug)]
struct FakeUsage;

impl DataplaneUsage for FakeUsage {
    fn capacities(&self) -> Vec<MapCapacity> {
        vec![MapCapacity {
            map: names::SVC_V4,
            capacity: 1 << 18,
        }]
    }
    fn datapath_events(&self) -> Result<Vec<(Reason, u64)>, UsageError> {
        Ok(Reason::ALL.iter().map(|r| (*r, 7)).collect())
    }
    fn lru_entries(&self) -> Vec<(&'static str, Result<u64, UsageError>)> {
        vec![
            (names::SOCK_RNAT_V4, Ok(3)),
            (names::SOCK_RNAT_V6, Err(MapError::Injected.into())),
        ]
    }
}

fn text(m: &Metrics) -> String {
    m.encode().unwrap()
}

/// The `# TYPE` line of a metric.
fn type_of(text: &str, metric: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("# TYPE {metric} ")))
        .map(str::to_owned)
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn kube_proxy_names_carry_kube_proxy_types() {
    let rejects = ConfigRejects::default();
    let m = Metrics::new(Mode::Ebpf, &rejects);
    // Labelled families show only once they have a series.
    rejects.record(ConfigSource::Kubernetes, "other");
    m.probe_answered(Probe::Healthz, 200);
    m.probe_answered(Probe::Livez, 200);
    let t = text(&m);
    for (metric, kind) in [
        ("kubeproxy_sync_proxy_rules_duration_seconds", "histogram"),
        (
            "kubeproxy_network_programming_duration_seconds",
            "histogram",
        ),
        ("kubeproxy_sync_proxy_rules_last_timestamp_seconds", "gauge"),
        (
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "gauge",
        ),
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
        ("kubeproxy_proxy_healthz_total", "counter"),
        ("kubeproxy_proxy_livez_total", "counter"),
        ("proxy_sync_failures_total", "counter"),
        ("proxy_drift_repairs_total", "counter"),
        ("proxy_config_rejects_total", "counter"),
        ("proxy_mode", "gauge"),
        ("proxy_map_entries", "gauge"),
        ("proxy_userspace_frontends", "gauge"),
        ("proxy_frontends_over_capacity", "gauge"),
        ("proxy_userspace_connections_total", "counter"),
        ("proxy_userspace_backend_failures_total", "counter"),
        ("proxy_userspace_unserved_connections_total", "counter"),
        ("proxy_userspace_source_range_refused_total", "counter"),
    ] {
        assert_eq!(
            type_of(&t, metric).as_deref(),
            Some(kind),
            "{metric} in:\n{t}"
        );
    }
    assert_eq!(sample(&t, r#"proxy_mode{mode="ebpf"}"#), Some(1.0), "{t}");
    assert_eq!(
        sample(&t, r#"proxy_mode{mode="userspace"}"#),
        Some(0.0),
        "{t}"
    );
    m.set_mode(Mode::Userspace);
    m.userspace().tcp_connections.inc();
    m.userspace().frontends_serving.set(2);
    let t = text(&m);
    assert_eq!(sample(&t, r#"proxy_mode{mode="ebpf"}"#), Some(0.0), "{t}");
    assert_eq!(
        sample(&t, r#"proxy_mode{mode="userspace"}"#),
        Some(1.0),
        "{t}"
    );
    assert_eq!(
        sample(&t, r#"proxy_userspace_connections_total{protocol="tcp"}"#),
        Some(1.0),
        "{t}"
    );
    assert_eq!(
        sample(&t, r#"proxy_userspace_frontends{state="serving"}"#),
        Some(2.0),
        "{t}"
    );
    assert_eq!(
        sample(
            &t,
            r#"kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy="internal"}"#
        ),
        Some(0.0),
        "{t}"
    );
    // kube-proxy's bucket layout.
    assert!(
        t.contains(r#"kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.001"}"#),
        "{t}"
    );
    assert!(
        t.contains(r#"kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="16.384"}"#),
        "{t}"
    );
    assert!(
        t.contains(r#"kubeproxy_network_programming_duration_seconds_bucket{le="300"}"#),
        "{t}"
    );
}

#[test]
fn syncs_feed_the_sync_metrics() {
    let m = Metrics::new(Mode::Ebpf, &ConfigRejects::default());
    m.sync_done(
        Duration::from_millis(3),
        true,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1000),
        Some(Duration::from_millis(400)),
    );
    m.sync_done(Duration::from_millis(3), false, SystemTime::now(), None);
    m.index_changes(5, 7);
    m.index_changes(6, 7);
    m.changes_pending(PendingChanges {
        services: 2,
        endpoints: 3,
    });
    m.drift_repairs(DriftKind::MapEntry, 2);
    m.drift_repairs(DriftKind::Link, 1);
    m.no_local_endpoints(NoLocalEndpoints {
        internal: 1,
        external: 0,
    });
    let t = text(&m);
    for (series, value) in [
        ("kubeproxy_sync_proxy_rules_duration_seconds_count", 2.0),
        ("kubeproxy_network_programming_duration_seconds_count", 1.0),
        (
            r#"kubeproxy_network_programming_duration_seconds_bucket{le="0.5"}"#,
            1.0,
        ),
        (
            r#"kubeproxy_network_programming_duration_seconds_bucket{le="0.25"}"#,
            0.0,
        ),
        ("kubeproxy_sync_proxy_rules_last_timestamp_seconds", 1000.0),
        ("kubeproxy_sync_proxy_rules_service_changes_total", 6.0),
        ("kubeproxy_sync_proxy_rules_endpoint_changes_total", 7.0),
        ("kubeproxy_sync_proxy_rules_service_changes_pending", 2.0),
        ("kubeproxy_sync_proxy_rules_endpoint_changes_pending", 3.0),
        ("proxy_sync_failures_total", 1.0),
        (r#"proxy_drift_repairs_total{kind="map_entry"}"#, 2.0),
        (r#"proxy_drift_repairs_total{kind="link"}"#, 1.0),
        (
            r#"kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy="internal"}"#,
            1.0,
        ),
    ] {
        assert_eq!(sample(&t, series), Some(value), "{series} in:\n{t}");
    }
}

#[test]
fn dataplane_usage_is_read_at_scrape_time() {
    let m = Metrics::new(Mode::Ebpf, &ConfigRejects::default());
    m.map_entries(MirroredEntries::default());
    let before = text(&m);
    assert_eq!(
        sample(&before, r#"proxy_map_entries{map="SVC_V4"}"#),
        Some(0.0)
    );
    assert!(type_of(&before, "proxy_datapath_events_total").is_none());

    m.set_dataplane_usage(Box::new(FakeUsage));
    let t = text(&m);
    assert_eq!(
        type_of(&t, "proxy_datapath_events_total").as_deref(),
        Some("counter")
    );
    assert_eq!(
        sample(&t, r#"proxy_datapath_events_total{reason="translated"}"#),
        Some(7.0),
        "{t}"
    );
    assert_eq!(
        sample(&t, r#"proxy_map_capacity{map="SVC_V4"}"#),
        Some(262144.0)
    );
    assert_eq!(
        sample(&t, r#"proxy_map_entries{map="SOCK_RNAT_V4"}"#),
        Some(3.0)
    );
    // A map that cannot be counted is left out, not reported as empty.
    assert_eq!(sample(&t, r#"proxy_map_entries{map="SOCK_RNAT_V6"}"#), None);
}

#[test]
fn rejects_and_probes_are_counted_by_label() {
    let rejects = ConfigRejects::default();
    let m = Metrics::new(Mode::Ebpf, &rejects);
    rejects.record(ConfigSource::Manifests, "invalid_cluster_ip");
    m.probe_answered(Probe::Healthz, 503);
    m.probe_answered(Probe::Livez, 200);
    let t = text(&m);
    assert_eq!(
        sample(
            &t,
            r#"proxy_config_rejects_total{source="manifests",reason="invalid_cluster_ip"}"#
        ),
        Some(1.0),
        "{t}"
    );
    assert_eq!(
        sample(&t, r#"kubeproxy_proxy_healthz_total{code="503"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&t, r#"kubeproxy_proxy_livez_total{code="200"}"#),
        Some(1.0)
    );
}
