//! `proxy run --config FILE` with kube-proxy's own `KubeProxyConfiguration`
//! (the `config.conf` of its ConfigMap): the real daemon serves its metrics
//! and health checks where the file says, takes its `clusterCIDR` as the
//! local-traffic detector, balances traffic, and lists each field it does
//! not use once, with the reason. `proxy config convert` and `check` print
//! the same mapping.
//!
//! Both admin servers listen on loopback inside the sandbox's namespace.

mod common;

use std::process::Command;

use common::*;
use proxy_tests::proxy_bin;

const METRICS_ADDR: &str = "127.0.0.1:19349";
const HEALTHZ_ADDR: &str = "127.0.0.1:19356";

/// A kubeadm-like ConfigMap `config.conf` with the admin addresses moved
/// (they must differ from ours and kube-proxy's defaults to show they took
/// effect), a pod CIDR, and fields this proxy does not use.
fn kube_proxy_file() -> String {
    format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n\
         kind: KubeProxyConfiguration\n\
         bindAddress: 0.0.0.0\n\
         clientConnection:\n  kubeconfig: \"\"\n  qps: 0\n\
         clusterCIDR: 10.244.0.0/16,fd00:244::/48\n\
         configSyncPeriod: 0s\n\
         conntrack:\n  maxPerCore: 32768\n  min: null\n  udpTimeout: 0s\n\
         detectLocalMode: \"\"\n\
         healthzBindAddress: {HEALTHZ_ADDR}\n\
         metricsBindAddress: {METRICS_ADDR}\n\
         iptables:\n  masqueradeAll: false\n  masqueradeBit: null\n  minSyncPeriod: 0s\n  syncPeriod: 0s\n\
         mode: nftables\n\
         nftables:\n  minSyncPeriod: 100ms\n\
         nodePortAddresses: null\n\
         oomScoreAdj: -999\n"
    )
}

#[test]
fn the_daemon_runs_with_kube_proxys_configuration_file() {
    let mut f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    let config = f.sandbox.dir().join("kube-proxy.conf");
    std::fs::write(&config, kube_proxy_file()).unwrap_or_else(|e| panic!("{e}"));
    let config = config.display().to_string();
    f.start_proxy_with(&["--config", &config]);
    f.wait_ready();

    // The file's admin addresses, not the defaults.
    match http_get(METRICS_ADDR, "/metrics") {
        Ok((200, body)) => assert!(body.contains("kubeproxy_sync_proxy_rules"), "{body}"),
        other => panic!("/metrics at the file's {METRICS_ADDR}: {other:?}"),
    }
    match http_get(HEALTHZ_ADDR, "/healthz") {
        Ok((200, _)) => {}
        other => panic!("/healthz at the file's {HEALTHZ_ADDR}: {other:?}"),
    }
    assert!(
        http_get("127.0.0.1:10249", "/metrics").is_err(),
        "nothing on the default metrics address"
    );

    let log = f.log();
    // clusterCIDR is the detector.
    let detector = log
        .lines()
        .find(|l| l.contains("local-traffic detector"))
        .unwrap_or_else(|| panic!("no local-traffic detector line:\n{log}"));
    assert!(
        detector.contains("10.244.0.0/16") && detector.contains("fd00:244::/48"),
        "{detector}"
    );
    // Each field not used: one line, with the reason.
    for field in ["mode", "conntrack.maxPerCore", "oomScoreAdj"] {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains("kube-proxy field not used")
                    && l.contains(&format!("kube_proxy_field={field} "))
            })
            .collect();
        assert_eq!(lines.len(), 1, "{field}:\n{log}");
        assert!(lines[0].contains("reason="), "{}", lines[0]);
    }
    assert_eq!(
        log.matches("kube-proxy field not used").count(),
        3,
        "only the fields set to something not used:\n{log}"
    );
    f.assert_proxy_running();
}

#[test]
fn config_convert_and_check_print_the_mapping_of_a_kube_proxy_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("config.conf");
    std::fs::write(&path, kube_proxy_file()).unwrap_or_else(|e| panic!("{e}"));
    let run = |what: &str| {
        let out = Command::new(proxy_bin())
            .args(["config", what])
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("running proxy config {what}: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let converted = run("convert");
    for line in [
        "\nclusterCidr:\n- 10.244.0.0/16\n- fd00:244::/48\n",
        &format!("\nmetricsBindAddress: {METRICS_ADDR}\n"),
        "\n# from kube-proxy's nftables.minSyncPeriod\nminSyncIntervalMs: 100\n",
        "\nnodeportAddresses:\n- primary\n",
        "\n#   oomScoreAdj: -999 (not used: ",
    ] {
        assert!(converted.contains(line), "{line:?} missing:\n{converted}");
    }
    // The converted file is our format: check reads it as such.
    let ours = dir.path().join("ours.yaml");
    std::fs::write(&ours, &converted).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(proxy_bin())
        .args(["config", "check"])
        .arg(&ours)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let ours_checked = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{ours_checked}");
    let checked = run("check");
    assert!(
        checked.contains("\n# kube-proxy fields not used:\n"),
        "{checked}"
    );
    assert!(
        checked.starts_with(&ours_checked),
        "check of the kube-proxy file = check of its conversion, then the list:\n{checked}\n---\n{ours_checked}"
    );

    // Our own format is not converted.
    let out = Command::new(proxy_bin())
        .args(["config", "convert"])
        .arg(&ours)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a KubeProxyConfiguration"));
}
