//! Choosing the dataplane mode, and changing it across restarts:
//!
//! - `--mode auto` falls back to userspace for real when eBPF cannot be loaded:
//!   the proxy runs without `CAP_BPF`, `CAP_SYS_ADMIN` and `CAP_PERFMON`
//!   (dropped with `setpriv` from its bounding and inheritable sets), so the
//!   kernel refuses to create its maps; Services still work, and health, the
//!   metrics and `/proxyMode` say `userspace`;
//! - eBPF → userspace → eBPF across restarts leaves no stale hooks, VIP routes
//!   or listeners behind;
//! - a restarted userspace proxy adopts its own VIP routes and removes exactly
//!   those it no longer needs, never a route someone else added; so does
//!   `proxy cleanup`.

mod common;

use std::{fs, net::IpAddr, path::Path};

use common::*;
use proxy_tests::{
    ProxyProcess,
    manifest::{AddressType, documents},
    proxy_bin, wait_until,
};

/// The routing protocol number of the userspace mode's VIP routes
/// (`proxy::config::ROUTE_PROTOCOL`).
const ROUTE_PROTOCOL: u8 = 158;

const METRICS_ADDR: &str = "127.0.0.1:19249";
const HEALTHZ_ADDR: &str = "127.0.0.1:19256";

/// `web` serves every endpoint of both families, TCP and UDP.
fn assert_web_serves_all(what: &str) {
    for (vip, backends) in [(WEB_VIP4, &BACKENDS_V4), (WEB_VIP6, &BACKENDS_V6)] {
        for (kind, port, target) in [
            (Kind::Tcp, TCP_PORT, TCP_TARGET),
            (Kind::UdpUnconnected, UDP_PORT, UDP_TARGET),
        ] {
            let vip = sock(vip, port);
            assert_backends(
                &format!("{what}: {kind:?} to {vip}"),
                &tally(kind, vip, 45),
                &names(backends, target),
            );
        }
    }
}

fn web_vips() -> Vec<IpAddr> {
    let mut v = vec![ip(WEB_VIP4), ip(WEB_VIP6)];
    v.sort();
    v
}

/// Pins left under the pin path (maps, links), recursively.
fn pins(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(pins(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

/// Sockets listening on a service VIP.
fn vip_listeners(f: &Fixture) -> Vec<std::net::SocketAddr> {
    f.sandbox
        .listening()
        .expect("listing sockets with ss")
        .into_iter()
        .filter(|a| {
            a.ip().to_string().starts_with("10.96.") || a.ip().to_string().starts_with("fd00:96:")
        })
        .collect()
}

fn routes(f: &Fixture) -> Vec<IpAddr> {
    f.sandbox
        .local_routes(ROUTE_PROTOCOL)
        .expect("listing local routes")
}

#[test]
fn auto_falls_back_to_userspace_when_the_kernel_refuses_ebpf() {
    let mut f = Fixture::new(Mode::Userspace);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    let dir = f.sandbox.manifests_dir();
    let source = [std::ffi::OsStr::new("--manifests"), dir.as_os_str()];
    let caps = "-bpf,-sys_admin,-perfmon";
    f.proxy = Some(
        ProxyProcess::start_wrapped(
            &["setpriv", "--bounding-set", caps, "--inh-caps", caps, "--"],
            &proxy_bin(),
            &f.sandbox,
            &source,
            &[
                "--mode",
                "auto",
                "--metrics-bind-address",
                METRICS_ADDR,
                "--healthz-bind-address",
                HEALTHZ_ADDR,
            ],
        )
        .unwrap_or_else(|e| panic!("starting the proxy without eBPF capabilities: {e}")),
    );
    f.wait_ready();
    assert_web_serves_all("auto mode without CAP_BPF");

    let log = f.log();
    let fell_back = log
        .lines()
        .find(|l| l.contains("falling back to the userspace proxies"))
        .unwrap_or_else(|| panic!("expected a log line about the fallback, got:\n{log}"));
    assert!(
        fell_back.contains("Operation not permitted"),
        "expected the fallback line to give the kernel's reason: {fell_back}"
    );
    let (code, body) = http_get(HEALTHZ_ADDR, "/healthz").expect("GET /healthz");
    assert_eq!(code, 200, "/healthz: {body}");
    assert!(body.contains(r#""mode":"userspace""#), "/healthz: {body}");
    let (_, metrics) = http_get(METRICS_ADDR, "/metrics").expect("GET /metrics");
    assert!(
        metrics.contains("proxy_mode{mode=\"userspace\"} 1"),
        "expected proxy_mode{{mode=\"userspace\"}} 1 in:\n{metrics}"
    );
    assert_eq!(
        http_get(METRICS_ADDR, "/proxyMode").expect("GET /proxyMode"),
        (200, "userspace".to_owned())
    );
    assert_eq!(
        pins(&f.sandbox.pin_path()),
        Vec::<String>::new(),
        "a failed load left pins behind"
    );
    assert_eq!(routes(&f), web_vips(), "the VIP routes");
    f.assert_proxy_running();
}

#[test]
fn switching_modes_across_restarts_leaves_no_stale_vips_hooks_or_listeners() {
    let mut f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    f.start_proxy();
    f.wait_ready();
    assert_web_serves_all("eBPF mode");
    assert!(
        !pins(&f.sandbox.pin_path()).is_empty(),
        "eBPF mode pinned nothing"
    );
    assert_eq!(
        routes(&f),
        Vec::<IpAddr>::new(),
        "eBPF mode added VIP routes"
    );
    f.proxy().stop().expect("stopping the proxy");
    f.proxy = None;

    // eBPF → userspace: the hooks must go, or they would keep steering VIP
    // traffic with whatever the maps held.
    // (Until the new daemon removes them, the old hooks still serve: a ready
    // VIP alone proves nothing here.)
    f.mode = Mode::Userspace;
    f.start_proxy();
    let pin_path = f.sandbox.pin_path();
    assert!(
        wait_until(STARTUP, || pins(&pin_path).is_empty()),
        "userspace mode left the eBPF run's pins (and hooks) in place: {:?}",
        pins(&pin_path)
    );
    f.wait_ready();
    assert!(
        wait_until(PROPAGATION, || routes(&f) == web_vips()),
        "expected VIP routes for {:?} in userspace mode, saw {:?}",
        web_vips(),
        routes(&f)
    );
    let listening = vip_listeners(&f);
    for port in [TCP_PORT, UDP_PORT] {
        for vip in [WEB_VIP4, WEB_VIP6] {
            assert!(
                listening.contains(&sock(vip, port)),
                "expected a listener on {vip}:{port}, saw {listening:?}"
            );
        }
    }
    assert_web_serves_all("userspace mode after eBPF mode");
    f.proxy().stop().expect("stopping the proxy");
    f.proxy = None;
    assert_eq!(
        vip_listeners(&f),
        Vec::new(),
        "listeners outlived the userspace proxy"
    );

    // userspace → eBPF: the VIP routes go at the first sync.
    f.mode = Mode::Ebpf;
    f.start_proxy();
    f.wait_ready();
    assert!(
        wait_until(PROPAGATION, || routes(&f).is_empty()),
        "expected the userspace run's VIP routes to be removed, saw {:?}",
        routes(&f)
    );
    assert_eq!(vip_listeners(&f), Vec::new(), "eBPF mode listens on VIPs");
    assert_web_serves_all("eBPF mode after userspace mode");
    f.assert_proxy_running();
}

#[test]
fn a_restarted_userspace_proxy_and_cleanup_remove_exactly_their_own_routes() {
    const API_VIP4: &str = "10.96.0.20";
    const API_VIP6: &str = "fd00:96::20";
    // A local route someone else added for an address in the service range.
    const FOREIGN: &str = "10.96.0.99";
    let mut f = Fixture::new(Mode::Userspace);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    let api = documents(&[
        service("api", &[API_VIP4, API_VIP6], 8000, 5300),
        slice(
            "api",
            &slice_name("api", AddressType::IPv4),
            AddressType::IPv4,
            &BACKENDS_V4,
        ),
        slice(
            "api",
            &slice_name("api", AddressType::IPv6),
            AddressType::IPv6,
            &BACKENDS_V6,
        ),
    ]);
    f.write("api.yaml", &api);
    f.sandbox
        .ip(&format!(
            "route add local {FOREIGN}/32 dev lo table local proto static"
        ))
        .expect("adding someone else's local route");
    f.start_proxy();
    f.wait_ready();
    let mut all = vec![ip(WEB_VIP4), ip(WEB_VIP6), ip(API_VIP4), ip(API_VIP6)];
    all.sort();
    assert!(
        wait_until(PROPAGATION, || routes(&f) == all),
        "expected the routes {all:?}, saw {:?}",
        routes(&f)
    );
    f.proxy().stop().expect("stopping the proxy");
    f.proxy = None;

    // `api` is deleted while no proxy runs.
    f.remove("api.yaml");
    f.start_proxy();
    f.wait_ready();
    assert!(
        wait_until(PROPAGATION, || routes(&f) == web_vips()),
        "expected only web's VIP routes once api is gone, saw {:?}",
        routes(&f)
    );
    let foreign = f
        .sandbox
        .ip(&format!("route show table local {FOREIGN}"))
        .expect("listing the foreign route");
    assert!(
        foreign.contains(FOREIGN),
        "the proxy removed a local route it did not add: {foreign:?}"
    );
    assert_web_serves_all("after a userspace restart");
    f.assert_proxy_running();

    // Stopped, the routes stay for the next daemon; `proxy cleanup` removes
    // them (and only them).
    f.proxy().stop().expect("stopping the proxy");
    f.proxy = None;
    assert_eq!(routes(&f), web_vips(), "the routes after the proxy stopped");
    let out = std::process::Command::new(proxy_bin())
        .arg("cleanup")
        .arg("--pin-path")
        .arg(f.sandbox.pin_path())
        .output()
        .expect("running proxy cleanup");
    assert!(
        out.status.success(),
        "proxy cleanup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        routes(&f),
        Vec::<IpAddr>::new(),
        "routes after proxy cleanup"
    );
    let foreign = f
        .sandbox
        .ip(&format!("route show table local {FOREIGN}"))
        .expect("listing the foreign route");
    assert!(
        foreign.contains(FOREIGN),
        "proxy cleanup removed a local route it did not add: {foreign:?}"
    );
}
