//! Changes to the manifests directory reach the dataplane while the proxy runs:
//! an endpoint added and removed, a service added and deleted.

mod common;

use std::net::SocketAddr;

use common::*;
use proxy_tests::manifest::{AddressType, documents};

/// Requests per probe when waiting for a backend to appear: with 3 backends,
/// 15 requests all missing the new one has a chance of about 2e-3, and the
/// probe repeats until the deadline.
const PROBE_REQUESTS: usize = 15;
/// Consecutive requests that must avoid a removed backend.
const AFTER_REMOVAL: usize = 30;

/// The VIP, expected backend names and protocol for each (family, protocol).
fn cases() -> Vec<(Kind, SocketAddr, &'static [&'static str], u16)> {
    let mut v = Vec::new();
    for (vip, backends) in [(WEB_VIP4, &BACKENDS_V4), (WEB_VIP6, &BACKENDS_V6)] {
        v.push((Kind::Tcp, sock(vip, TCP_PORT), &backends[..], TCP_TARGET));
        v.push((
            Kind::UdpUnconnected,
            sock(vip, UDP_PORT),
            &backends[..],
            UDP_TARGET,
        ));
    }
    v
}

both_modes! {
    fn endpoint_added_then_removed_takes_effect(mode) {
        let mut f = Fixture::new(mode);
        f.write_web(&BACKENDS_V4[..2], &BACKENDS_V6[..2]);
        f.start_proxy();
        f.wait_ready();

        // Two endpoints per family: the third backend never answers.
        for (kind, vip, backends, port) in cases() {
            let seen = tally(kind, vip, 30);
            assert_backends(
                &format!("{kind:?} to {vip} with two endpoints"),
                &seen,
                &names(&backends[..2], port),
            );
        }

        // Add the third endpoint to both slices.
        f.write_web_slices(&BACKENDS_V4, &BACKENDS_V6);
        for (kind, vip, backends, port) in cases() {
            let added = backend_name(backends[2], port);
            f.wait_for(
                PROPAGATION,
                &format!("{kind:?} to {vip} to reach the added endpoint {added}"),
                || try_backends(kind, vip, PROBE_REQUESTS).is_ok_and(|b| b.contains(&added)),
            );
        }

        // Remove the first endpoint from both slices.
        f.write_web_slices(&BACKENDS_V4[1..], &BACKENDS_V6[1..]);
        for (kind, vip, backends, port) in cases() {
            let removed = backend_name(backends[0], port);
            f.wait_for(
                PROPAGATION,
                &format!("{kind:?} to {vip} to stop reaching the removed endpoint {removed}"),
                || try_backends(kind, vip, PROBE_REQUESTS).is_ok_and(|b| !b.contains(&removed)),
            );
            let seen = tally(kind, vip, AFTER_REMOVAL);
            assert_backends(
                &format!("{kind:?} to {vip} after removing {removed}"),
                &seen,
                &names(&backends[1..], port),
            );
        }
        f.assert_proxy_running();
    }

    fn service_added_then_deleted_takes_effect(mode) {
        let mut f = Fixture::with_web(mode);
        const API_VIP4: &str = "10.96.0.20";
        const API_VIP6: &str = "fd00:96::20";
        const API_TCP: u16 = 8000;
        const API_UDP: u16 = 5300;
        let api = [
            (Kind::Tcp, sock(API_VIP4, API_TCP), &BACKENDS_V4, TCP_TARGET),
            (
                Kind::UdpUnconnected,
                sock(API_VIP4, API_UDP),
                &BACKENDS_V4,
                UDP_TARGET,
            ),
            (Kind::Tcp, sock(API_VIP6, API_TCP), &BACKENDS_V6, TCP_TARGET),
            (
                Kind::UdpUnconnected,
                sock(API_VIP6, API_UDP),
                &BACKENDS_V6,
                UDP_TARGET,
            ),
        ];

        // Before: the VIPs are not translated (the sandbox routes them to a dead end).
        for (kind, vip, _, _) in api {
            let result = kind.request(vip, PROBE);
            assert!(
                result.is_err(),
                "expected {kind:?} to {vip} to fail before the service exists, saw {result:?}"
            );
        }

        // One multi-document file, as `kubectl apply -f api.yaml` would take it.
        let api_yaml = documents(&[
            service("api", &[API_VIP4, API_VIP6], API_TCP, API_UDP),
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
        f.write("api.yaml", &api_yaml);
        for (kind, vip, backends, port) in api {
            let expected = names(&backends[..], port);
            f.wait_for(
                PROPAGATION,
                &format!("{kind:?} to the new service's VIP {vip} to reach its endpoints"),
                || try_backends(kind, vip, 3).is_ok_and(|b| b.iter().all(|n| expected.contains(n))),
            );
        }

        f.remove("api.yaml");
        for (kind, vip, _, _) in api {
            f.wait_for(
                PROPAGATION,
                &format!("{kind:?} to {vip} to stop reaching a backend once the service is deleted"),
                || kind.request(vip, PROBE).is_err(),
            );
            for i in 0..3 {
                let result = kind.request(vip, PROBE);
                assert!(
                    result.is_err(),
                    "expected {kind:?} request {i} to the deleted service's VIP {vip} to fail, \
                     saw {result:?}"
                );
            }
        }

        // The other service was never disturbed.
        for vip in [sock(WEB_VIP4, TCP_PORT), sock(WEB_VIP6, TCP_PORT)] {
            let seen = tally(Kind::Tcp, vip, 10);
            assert!(
                !seen.is_empty(),
                "expected web ({vip}) to keep working, saw {seen:?}"
            );
        }
        f.assert_proxy_running();
    }
}
