//! Services beyond the eBPF maps' capacity are served from userspace, counted
//! and logged, and move back into the maps once there is room (reliability.md
//! #9). eBPF mode only: userspace mode has no maps to fill.
//!
//! The service maps are sized for exactly `web` (`--service-map-entries 8`:
//! per family, two frontends of a slot 0 and three backend slots), so a second
//! Service cannot fit.

mod common;

use std::net::IpAddr;

use common::*;
use proxy_tests::{
    manifest::{AddressType, documents},
    wait_until,
};

const METRICS_ADDR: &str = "127.0.0.1:19249";
const ROUTE_PROTOCOL: u8 = 158;
const API_VIP4: &str = "10.96.0.20";
const API_VIP6: &str = "fd00:96::20";
const API_TCP: u16 = 8000;
const API_UDP: u16 = 5300;

fn metric(series: &str) -> Option<f64> {
    let (_, text) = http_get(METRICS_ADDR, "/metrics").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Every endpoint of the family answers TCP and UDP on `vip`'s ports.
fn assert_serves(what: &str, vip4: &str, vip6: &str, tcp: u16, udp: u16) {
    for (vip, backends) in [(vip4, &BACKENDS_V4), (vip6, &BACKENDS_V6)] {
        for (kind, port, target) in [
            (Kind::Tcp, tcp, TCP_TARGET),
            (Kind::UdpUnconnected, udp, UDP_TARGET),
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

/// `api`: a second dual-stack Service on every backend, which does not fit
/// the maps next to `web`.
fn write_api(f: &Fixture) {
    let slice_of = |family| {
        slice(
            "api",
            &slice_name("api", family),
            family,
            match family {
                AddressType::IPv4 => &BACKENDS_V4,
                AddressType::IPv6 => &BACKENDS_V6,
            },
        )
    };
    f.write(
        "api.yaml",
        &documents(&[
            service("api", &[API_VIP4, API_VIP6], API_TCP, API_UDP),
            slice_of(AddressType::IPv4),
            slice_of(AddressType::IPv6),
        ]),
    );
}

#[test]
fn a_service_beyond_map_capacity_is_served_from_userspace_until_it_fits() {
    let mut f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    f.start_proxy_with(&[
        "--service-map-entries",
        "8",
        "--metrics-bind-address",
        METRICS_ADDR,
    ]);
    f.wait_ready();
    // web fills the service maps exactly: warned before anything overflows,
    // and the fill level is a metric.
    let warned = wait_until(PROPAGATION, || {
        f.log().contains("eBPF map SVC_V4 is 100 % full")
    });
    assert!(warned, "no nearly-full warning:\n{}", f.log());
    assert_eq!(metric(r#"proxy_map_fill_ratio{map="SVC_V4"}"#), Some(1.0));
    let routes = |f: &Fixture| {
        f.sandbox
            .local_routes(ROUTE_PROTOCOL)
            .expect("listing local routes")
    };

    write_api(&f);
    let over = "proxy_frontends_over_capacity";
    f.wait_for(PROPAGATION, "api's 4 frontends to be over capacity", || {
        metric(over) == Some(4.0)
    });
    let mut api_vips: Vec<IpAddr> = vec![ip(API_VIP4), ip(API_VIP6)];
    api_vips.sort();
    assert_eq!(routes(&f), api_vips, "only api's VIPs are made local");
    assert_serves("api, beyond capacity", API_VIP4, API_VIP6, API_TCP, API_UDP);
    assert_serves("web, in the maps", WEB_VIP4, WEB_VIP6, TCP_PORT, UDP_PORT);
    assert_eq!(
        metric(r#"proxy_userspace_frontends{state="serving"}"#),
        Some(4.0)
    );
    assert_eq!(metric("proxy_sync_failures_total"), Some(0.0));
    let log = f.log();
    for frontend in [
        format!("{API_VIP4}:{API_TCP}/TCP"),
        format!("[{API_VIP6}]:{API_UDP}/UDP"),
    ] {
        assert!(
            log.lines().any(|l| l.contains("does not fit the eBPF maps")
                && l.contains(&frontend)
                && l.contains("pxt/api")),
            "expected a log line naming {frontend} as beyond capacity:\n{log}"
        );
    }

    // `web` goes: `api` fits now and leaves the userspace path.
    f.remove("web-service.yaml");
    f.wait_for(PROPAGATION, "api to fit the maps", || {
        metric(over) == Some(0.0)
    });
    assert!(
        wait_until(PROPAGATION, || routes(&f).is_empty()),
        "expected api's VIP routes to go once it fits the maps, saw {:?}",
        routes(&f)
    );
    assert_serves("api, in the maps", API_VIP4, API_VIP6, API_TCP, API_UDP);
    assert_eq!(
        metric(r#"proxy_userspace_frontends{state="serving"}"#),
        Some(0.0)
    );
    // No rev-NAT entry leaked while api kept failing to fit.
    for map in ["REVNAT_V4", "REVNAT_V6"] {
        assert_eq!(
            metric(&format!(r#"proxy_map_entries{{map="{map}"}}"#)),
            Some(2.0),
            "entries of {map}"
        );
    }
    f.assert_proxy_running();
}

/// `--userspace-max-frontends`: of api's four frontends beyond capacity, the
/// userspace path serves two (the IPv4 ones, first in order); the IPv6 ones
/// are not served, logged and counted, until room in the maps takes them all.
#[test]
fn frontends_beyond_the_userspace_limit_are_reported_not_served() {
    let mut f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    f.start_proxy_with(&[
        "--service-map-entries",
        "8",
        "--userspace-max-frontends",
        "2",
        "--metrics-bind-address",
        METRICS_ADDR,
    ]);
    f.wait_ready();
    write_api(&f);
    let unserved = "proxy_frontends_over_capacity_unserved";
    f.wait_for(
        PROPAGATION,
        "2 of api's 4 frontends to be left unserved",
        || metric("proxy_frontends_over_capacity") == Some(4.0) && metric(unserved) == Some(2.0),
    );
    for (kind, port, target) in [
        (Kind::Tcp, API_TCP, TCP_TARGET),
        (Kind::UdpUnconnected, API_UDP, UDP_TARGET),
    ] {
        let vip = sock(API_VIP4, port);
        assert_backends(
            &format!("{kind:?} to {vip}, served from userspace"),
            &tally(kind, vip, 30),
            &names(&BACKENDS_V4, target),
        );
        let vip = sock(API_VIP6, port);
        assert!(
            kind.request(vip, PROBE).is_err(),
            "{vip} is beyond the userspace limit, yet it answered"
        );
    }
    assert_eq!(
        metric(r#"proxy_userspace_frontends{state="serving"}"#),
        Some(2.0)
    );
    let log = f.log();
    let v6 = format!("[{API_VIP6}]:{API_TCP}/TCP");
    assert!(
        log.lines().any(|l| l.contains(&v6)
            && l.contains("--userspace-max-frontends")
            && l.contains("not served")),
        "expected a log line naming {v6} as not served:\n{log}"
    );

    // web goes: all of api fits the maps, nothing is left unserved.
    f.remove("web-service.yaml");
    f.wait_for(PROPAGATION, "api to fit the maps", || {
        metric("proxy_frontends_over_capacity") == Some(0.0) && metric(unserved) == Some(0.0)
    });
    assert_serves("api, in the maps", API_VIP4, API_VIP6, API_TCP, API_UDP);
    f.assert_proxy_running();
}

/// `--backend-map-entries`: the backend maps hold 3 of web's 6 backends per
/// family (3 endpoints × a TCP and a UDP target port), so web's frontends
/// that need the others are served from userspace, and the nearly-full
/// warning names the flag that sizes the backend maps.
#[test]
fn frontends_whose_backends_do_not_fit_are_served_from_userspace() {
    let mut f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    f.start_proxy_with(&[
        "--backend-map-entries",
        "3",
        "--metrics-bind-address",
        METRICS_ADDR,
    ]);
    f.wait_for(PROPAGATION, "web's frontends to be over capacity", || {
        metric("proxy_frontends_over_capacity").is_some_and(|n| n >= 2.0)
    });
    for map in ["BACKEND_V4", "BACKEND_V6"] {
        assert_eq!(
            metric(&format!(r#"proxy_map_capacity{{map="{map}"}}"#)),
            Some(3.0),
            "capacity of {map}"
        );
    }
    let warned = wait_until(PROPAGATION, || {
        f.log().lines().any(|l| {
            l.contains("eBPF map BACKEND_V4 is 100 % full") && l.contains("--backend-map-entries")
        })
    });
    assert!(
        warned,
        "no nearly-full warning naming the flag:\n{}",
        f.log()
    );
    assert_serves(
        "web, partly beyond capacity",
        WEB_VIP4,
        WEB_VIP6,
        TCP_PORT,
        UDP_PORT,
    );
    assert_eq!(metric("proxy_sync_failures_total"), Some(0.0));
    f.assert_proxy_running();
}

/// A map size out of the kernel's range is refused at start, naming the flag.
#[test]
fn a_map_size_out_of_range_is_refused() {
    for (flag, value) in [
        ("--backend-map-entries", "0"),
        ("--service-map-entries", "134217729"),
    ] {
        let out = std::process::Command::new(proxy_tests::proxy_bin())
            .args(["run", flag, value])
            .output()
            .expect("running the proxy");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} was accepted");
        assert!(
            stderr.contains(flag) && stderr.contains("1 to 134217728"),
            "{flag} {value}: {stderr}"
        );
    }
}
