//! `proxy diff` against a real dataplane: the daemon's desired state (over
//! its query socket, or computed from the manifests) agrees with the pinned
//! maps (exit 0); after the maps are tampered with by hand, it names the
//! frontend and the backends that differ (exit 1); it only reads.

mod common;

use std::{
    path::Path,
    process::{Command, Output},
};

use aya::maps::{HashMap, Map, MapData};
use common::*;
use proxy_common::{
    BackendV4, Be16, Be32, LAYOUT_VERSION, ServiceKeyV4, ServiceValue, names, proto,
};
use proxy_tests::{ProxyProcess, proxy_bin};
use serde_json::Value;

fn run_diff(pin: &Path, args: &[&str]) -> Output {
    Command::new(proxy_bin())
        .arg("diff")
        .arg("--pin-path")
        .arg(pin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running proxy diff {args:?}: {e}"))
}

/// `proxy diff ARGS --output json`: its exit code and JSON.
fn diff(pin: &Path, args: &[&str]) -> (Option<i32>, Value) {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let out = run_diff(pin, &all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "`proxy diff {all:?}` printed no JSON ({e}), exit {}:\n{stdout}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), value)
}

fn open_map<K: aya::Pod, V: aya::Pod>(f: &Fixture, name: &str) -> HashMap<MapData, K, V> {
    let pin = f
        .sandbox
        .pin_path()
        .join(format!("v{LAYOUT_VERSION}"))
        .join("maps")
        .join(name);
    let data = MapData::from_pin(&pin)
        .unwrap_or_else(|e| panic!("opening the pinned map {}: {e}", pin.display()));
    let map = Map::from_map_data(data).unwrap_or_else(|e| panic!("{name}: {e}"));
    HashMap::try_from(map).unwrap_or_else(|e| panic!("{name} as a hash map: {e}"))
}

#[test]
fn diff_agrees_then_names_what_was_tampered_with() {
    let f = Fixture::with_web(Mode::Ebpf);
    let pin = f.sandbox.pin_path();
    let socket = ProxyProcess::query_socket(&f.sandbox).display().to_string();
    let daemon = ["--socket", socket.as_str()];

    let (code, view) = diff(&pin, &daemon);
    assert_eq!(code, Some(0), "expected the maps to agree: {view:#}");
    assert!(
        view["same"].as_u64().unwrap_or(0) >= 4,
        "web's four frontends agree: {view:#}"
    );

    // Offline, from the same manifests: the same answer (web has ClusterIPs only).
    let dir = f.sandbox.manifests_dir().display().to_string();
    let (code, offline) = diff(&pin, &["--manifests", &dir]);
    assert_eq!(code, Some(0), "offline: {offline:#}");
    assert_eq!(offline, view, "daemon vs offline");

    // A backend entry changed by hand: it points at port 9.
    let mut backends: HashMap<MapData, u32, BackendV4> = open_map(&f, names::BACKEND_V4);
    let (id, backend) = backends
        .iter()
        .filter_map(Result::ok)
        .find(|(_, b)| b.proto == proto::TCP)
        .expect("a TCP backend in BACKEND_V4");
    backends
        .insert(
            &id,
            &BackendV4 {
                port: Be16::from_host(9),
                ..backend
            },
            0,
        )
        .expect("changing a backend");
    let (code, view) = diff(&pin, &daemon);
    assert_eq!(code, Some(1), "expected a difference: {view:#}");
    let tcp4 = format!("{WEB_VIP4}:{TCP_PORT}/TCP");
    let d = view["differences"]
        .as_array()
        .expect("differences")
        .iter()
        .find(|d| d["frontend"] == tcp4.as_str())
        .unwrap_or_else(|| panic!("expected {tcp4} among the differences: {view:#}"));
    assert_eq!(d["status"], "different", "{d:#}");
    assert_eq!(d["service"], format!("{NAMESPACE}/{WEB}"), "{d:#}");
    let extra = d["extra_backends"].as_array().expect("extra_backends");
    assert_eq!(extra.len(), 1, "one backend on port 9: {d:#}");
    assert!(
        extra[0].as_str().is_some_and(|b| b.ends_with(":9")),
        "{d:#}"
    );

    // web's IPv4 TCP frontend deleted by hand: missing.
    let mut services: HashMap<MapData, ServiceKeyV4, ServiceValue> = open_map(&f, names::SVC_V4);
    let std::net::IpAddr::V4(vip) = ip(WEB_VIP4) else {
        unreachable!("WEB_VIP4 is IPv4")
    };
    services
        .remove(&ServiceKeyV4 {
            addr: Be32::from_octets(vip.octets()),
            port: Be16::from_host(TCP_PORT),
            slot: 0,
            proto: proto::TCP,
            scope: proxy_common::scope::INTERNAL,
            _pad: [0; 2],
        })
        .expect("deleting web's frontend");
    let out = run_diff(&pin, &daemon);
    assert_eq!(out.status.code(), Some(1), "expected a difference");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = format!("MISSING   {tcp4} internal {NAMESPACE}/{WEB}");
    assert!(text.contains(&line), "expected {line:?} in:\n{text}");

    // No daemon and no --manifests: an error, exit 2.
    let out = run_diff(&pin, &["--socket", "/nonexistent/proxy.sock"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
