//! Tests of the kube-proxy configuration mapping: kube-proxy's own default
//! file (`kube-proxy --write-config-to`), kubeadm's ConfigMap, and each field.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;

/// `kube-proxy --write-config-to` with no flags (v1alpha1, defaulted as
/// pkg/proxy/apis/config/v1alpha1/defaults.go does).
const DEFAULTS: &str = include_str!("testdata/kube-proxy-defaults.yaml");
/// The `config.conf` key of the `kube-proxy` ConfigMap kubeadm writes
/// (podSubnet 10.244.0.0/16).
const KUBEADM: &str = include_str!("testdata/kubeadm-config.conf");

fn ok(text: &str) -> Translation {
    translate(text).unwrap_or_else(|e| panic!("{e:?}\n{text}"))
}

/// A minimal file with `body` after the type fields.
fn with(body: &str) -> Translation {
    ok(&format!("apiVersion: {API_VERSION}\nkind: {KIND}\n{body}"))
}

fn not_mapped(t: &Translation) -> Vec<&str> {
    t.not_mapped.iter().map(|n| n.field.as_str()).collect()
}

#[test]
fn kube_proxys_default_file_maps_to_its_addresses_and_sync_periods() {
    assert!(is_kube_proxy(DEFAULTS));
    let t = ok(DEFAULTS);
    assert_eq!(
        Value::Object(t.fields()),
        json!({
            "healthzBindAddress": "0.0.0.0:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            "resyncIntervalMs": 30000,
            "minSyncIntervalMs": 1000,
            "masqueradeAll": false,
            "logFormat": "text",
        })
    );
    assert_eq!(
        not_mapped(&t),
        [
            "iptables.masqueradeBit",
            "iptables.localhostNodePorts",
            "nftables.masqueradeBit",
            "conntrack.maxPerCore",
            "conntrack.min",
            "conntrack.tcpEstablishedTimeout",
            "conntrack.tcpCloseWaitTimeout",
            "logging.flushFrequency",
            "clientConnection.contentType",
            "clientConnection.qps",
            "clientConnection.burst",
            "oomScoreAdj",
            "configSyncPeriod",
        ]
    );
    let shown: Vec<String> = t.not_mapped.iter().map(ToString::to_string).collect();
    assert!(
        shown.contains(&"conntrack.tcpEstablishedTimeout: 86400s (not used: kube-proxy writes these nf_conntrack sysctls at start; this proxy leaves the node's conntrack settings alone (set them with sysctl on the node))".to_owned()),
        "{shown:#?}"
    );
}

#[test]
fn kubeadms_configmap_maps_its_kubeconfig_and_cluster_cidr_and_leaves_nothing_out() {
    let t = ok(KUBEADM);
    assert_eq!(
        Value::Object(t.fields()),
        json!({
            "healthzBindAddress": "0.0.0.0:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            "clusterCidr": ["10.244.0.0/16"],
            "kubeconfig": "/var/lib/kube-proxy/kubeconfig.conf",
            "resyncIntervalMs": 30000,
            "minSyncIntervalMs": 1000,
            "masqueradeAll": false,
        })
    );
    assert_eq!(not_mapped(&t), Vec::<&str>::new(), "{:#?}", t.not_mapped);
    let cluster_cidr = t.settings.iter().find(|m| m.ours == "clusterCidr");
    assert_eq!(cluster_cidr.map(|m| m.from), Some("clusterCIDR"));
}

#[test]
fn the_addresses_take_kube_proxys_defaults_by_the_bind_address_family() {
    let t = with("bindAddress: \"::\"\n");
    assert_eq!(t.get("healthzBindAddress"), Some(&json!("[::]:10256")));
    assert_eq!(t.get("metricsBindAddress"), Some(&json!("[::1]:10249")));
    assert!(t.not_mapped.is_empty(), "{:?}", t.not_mapped);
    let t = with(
        "bindAddress: 10.0.0.5\nmetricsBindAddress: 0.0.0.0\nhealthzBindAddress: 127.0.0.1:9\n",
    );
    assert_eq!(
        t.get("metricsBindAddress"),
        Some(&json!("0.0.0.0")),
        "a bare IP: our parser adds the port"
    );
    assert_eq!(t.get("healthzBindAddress"), Some(&json!("127.0.0.1:9")));
    assert_eq!(not_mapped(&t), ["bindAddress"]);
    assert!(
        translate(&format!(
            "apiVersion: {API_VERSION}\nkind: {KIND}\nbindAddress: node1\n"
        ))
        .is_err()
    );
}

#[test]
fn local_traffic_detection_maps_to_our_flags() {
    let t = with(
        "clusterCIDR: 10.244.0.0/16, fd00:10::/56\ndetectLocalMode: BridgeInterface\n\
         detectLocal:\n  bridgeInterface: cni0\n  interfaceNamePrefix: veth\n",
    );
    assert_eq!(
        t.get("clusterCidr"),
        Some(&json!(["10.244.0.0/16", "fd00:10::/56"]))
    );
    assert_eq!(t.get("detectLocalMode"), Some(&json!("BridgeInterface")));
    assert_eq!(t.get("podBridgeInterface"), Some(&json!("cni0")));
    assert_eq!(t.get("podInterfaceNamePrefix"), Some(&json!("veth")));
    let t = with("");
    assert_eq!(t.get("clusterCidr"), None);
    assert_eq!(
        t.get("detectLocalMode"),
        None,
        "ours defaults to ClusterCIDR, as kube-proxy's"
    );
}

#[test]
fn nodeport_addresses_keep_cidrs_and_primary_expand_all_and_refuse_localhost() {
    let t = with("nodePortAddresses: [10.0.0.0/8, all, localhost]\n");
    assert_eq!(
        t.get("nodeportAddresses"),
        Some(&json!(["10.0.0.0/8", "0.0.0.0/0", "::/0"]))
    );
    assert_eq!(not_mapped(&t), ["nodePortAddresses"]);
    assert_eq!(t.not_mapped[0].value, "localhost");
    let t = with("nodePortAddresses: [primary]\n");
    assert_eq!(t.get("nodeportAddresses"), Some(&json!(["primary"])));
    let t = with("mode: nftables\n");
    assert_eq!(
        t.get("nodeportAddresses"),
        Some(&json!(["primary"])),
        "unset in nftables mode: kube-proxy's default there"
    );
    let t = with("mode: iptables\nnodePortAddresses: null\n");
    assert_eq!(
        t.get("nodeportAddresses"),
        None,
        "every address, our default"
    );
}

#[test]
fn the_hostname_override_is_the_node_name_and_the_kubeconfig_is_ours() {
    let t = with(
        "hostnameOverride: node-1\nclientConnection:\n  kubeconfig: /etc/kube.conf\n  qps: 50\n",
    );
    assert_eq!(t.get("nodeName"), Some(&json!("node-1")));
    assert_eq!(t.get("kubeconfig"), Some(&json!("/etc/kube.conf")));
    assert_eq!(not_mapped(&t), ["clientConnection.qps"]);
}

#[test]
fn the_selected_modes_section_gives_the_sync_periods_and_masquerade_all() {
    let t = with(
        "mode: nftables\nnftables:\n  syncPeriod: 1m30s\n  minSyncPeriod: 250ms\n  masqueradeAll: true\n\
         iptables:\n  syncPeriod: 10s\n  masqueradeAll: true\n",
    );
    assert_eq!(t.get("resyncIntervalMs"), Some(&json!(90_000)));
    assert_eq!(t.get("minSyncIntervalMs"), Some(&json!(250)));
    assert_eq!(t.get("masqueradeAll"), Some(&json!(true)));
    assert_eq!(
        not_mapped(&t),
        ["mode", "iptables.masqueradeAll", "iptables.syncPeriod"],
        "the iptables section is not nftables mode's"
    );
    assert!(
        t.not_mapped[0].reason.contains("eBPF"),
        "{}",
        t.not_mapped[0]
    );

    // ipvs: its periods, iptables' masqueradeAll (kube-proxy's conversion);
    // no minimum by default.
    let t = with(
        "mode: ipvs\niptables:\n  masqueradeAll: true\nipvs:\n  scheduler: lc\n  strictARP: true\n",
    );
    assert_eq!(t.get("masqueradeAll"), Some(&json!(true)));
    assert_eq!(t.get("minSyncIntervalMs"), Some(&json!(0)));
    assert_eq!(t.get("resyncIntervalMs"), Some(&json!(30_000)));
    assert_eq!(not_mapped(&t), ["mode", "ipvs.scheduler", "ipvs.strictARP"]);

    let error = translate(&format!(
        "apiVersion: {API_VERSION}\nkind: {KIND}\nmode: kernelspace\n"
    ));
    assert!(
        matches!(
            error,
            Err(KubeProxyConfigError::Value { field: "mode", .. })
        ),
        "{error:?}"
    );
}

#[test]
fn conntrack_udp_stream_timeout_is_our_udp_idle_timeout_and_the_sysctls_are_listed() {
    let t = with("conntrack:\n  udpStreamTimeout: 2m0s\n  udpTimeout: 30s\n  tcpBeLiberal: true\n");
    assert_eq!(t.get("udpIdleTimeout"), Some(&json!("120s")));
    assert_eq!(
        not_mapped(&t),
        ["conntrack.tcpBeLiberal", "conntrack.udpTimeout"]
    );
}

#[test]
fn logging_format_is_ours_and_the_rest_is_listed() {
    let t = with("logging:\n  format: json\n  verbosity: 4\n  vmodule: [sync=5]\n");
    assert_eq!(t.get("logFormat"), Some(&json!("json")));
    assert_eq!(not_mapped(&t), ["logging.verbosity", "logging.vmodule"]);
    assert!(
        translate(&format!(
            "apiVersion: {API_VERSION}\nkind: {KIND}\nlogging:\n  format: xml\n"
        ))
        .is_err()
    );
}

#[test]
fn every_other_field_set_is_listed_once_with_its_reason() {
    let t = with(
        "featureGates:\n  AllAlpha: true\n  Foo: false\nbindAddressHardFail: true\nenableProfiling: true\n\
         showHiddenMetricsForVersion: \"1.30\"\noomScoreAdj: -999\nconfigSyncPeriod: 15m\nportRange: 30000-32767\n\
         winkernel:\n  networkName: l2bridge\n  enableDSR: true\nwindowsRunAsService: true\n",
    );
    assert_eq!(
        not_mapped(&t),
        [
            "featureGates.AllAlpha",
            "featureGates.Foo",
            "bindAddressHardFail",
            "enableProfiling",
            "showHiddenMetricsForVersion",
            "oomScoreAdj",
            "configSyncPeriod",
            "portRange",
            "winkernel.networkName",
            "winkernel.enableDSR",
            "windowsRunAsService",
        ]
    );
    assert!(t.not_mapped.iter().all(|n| !n.reason.is_empty()));
}

#[test]
fn unknown_fields_and_other_versions_are_errors_as_in_kube_proxys_strict_decoding() {
    for (text, want) in [
        ("clusterCidr: 10.0.0.0/8\n", "clusterCidr"),
        ("iptables:\n  masqueradeBits: 14\n", "masqueradeBits"),
        ("conntrack:\n  udpTimeout: soon\n", "soon"),
    ] {
        let error = translate(&format!("apiVersion: {API_VERSION}\nkind: {KIND}\n{text}"));
        let shown = match error {
            Err(e) => format!("{:#}", anyhow::Error::from(e)),
            Ok(t) => panic!("{text:?} was accepted: {t:?}"),
        };
        assert!(shown.contains(want), "{shown}");
    }
    let other = "apiVersion: kubeproxy.config.k8s.io/v1alpha2\nkind: KubeProxyConfiguration\n";
    assert!(is_kube_proxy(other));
    assert!(
        matches!(translate(other), Err(KubeProxyConfigError::ApiVersion(v)) if v.ends_with("v1alpha2"))
    );
    assert!(
        !is_kube_proxy("clusterCidr: [10.0.0.0/8]\n"),
        "our own format"
    );
    assert!(!is_kube_proxy(""));
}

#[test]
fn go_durations_parse_as_go_prints_them() {
    for (text, want) in [
        ("0s", Duration::ZERO),
        ("0", Duration::ZERO),
        ("1h0m0s", Duration::from_secs(3600)),
        ("24h0m0s", Duration::from_secs(86_400)),
        ("15m0s", Duration::from_secs(900)),
        ("1m30s", Duration::from_secs(90)),
        ("250ms", Duration::from_millis(250)),
        ("1.5s", Duration::from_millis(1500)),
        ("100us", Duration::from_micros(100)),
    ] {
        assert_eq!(parse_go_duration(text), Ok(want), "{text}");
    }
    for bad in ["", "5", "-1s", "1d", "s", "1.2.3s"] {
        assert!(parse_go_duration(bad).is_err(), "{bad}");
    }
}
