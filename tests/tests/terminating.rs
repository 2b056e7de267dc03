//! Terminating endpoints (KEP-1669), end to end: while any endpoint is ready,
//! new connections avoid terminating ones; when every endpoint is terminating
//! but still serving, new connections use them rather than fail.

mod common;

use common::*;
use proxy_tests::manifest::{AddressType, Endpoint, EndpointSlice, Protocol};

/// `web`'s IPv4 slice with these endpoints.
fn v4_slice(endpoints: &[Endpoint]) -> String {
    let mut slice = EndpointSlice::new(
        NAMESPACE,
        &slice_name(WEB, AddressType::IPv4),
        WEB,
        AddressType::IPv4,
    )
    .port("http", Protocol::Tcp, TCP_TARGET)
    .port("dns", Protocol::Udp, UDP_TARGET);
    for e in endpoints {
        slice = slice.endpoint(e.clone());
    }
    slice.to_yaml()
}

both_modes! {
    fn terminating_endpoints_are_used_only_when_nothing_is_ready(mode) {
        let mut f = Fixture::with_web(mode);
        let vip = sock(WEB_VIP4, TCP_PORT);
        let [a, b, c] = BACKENDS_V4;

        // One ready, two terminating: only the ready one gets new connections.
        f.write(
            "web-slice-v4.yaml",
            &v4_slice(&[
                Endpoint::ready(a),
                Endpoint::terminating(b),
                Endpoint::terminating(c),
            ]),
        );
        let only_a = [backend_name(a, TCP_TARGET)];
        f.wait_for(
            PROPAGATION,
            "new connections to avoid the terminating endpoints",
            || try_backends(Kind::Tcp, vip, 10).is_ok_and(|seen| seen.iter().all(|n| *n == only_a[0])),
        );
        assert_backends(
            "one ready, two terminating",
            &tally(Kind::Tcp, vip, 40),
            &only_a,
        );

        // All terminating but serving: they take the traffic instead of a refusal.
        f.write(
            "web-slice-v4.yaml",
            &v4_slice(&[
                Endpoint::terminating(a),
                Endpoint::terminating(b),
                Endpoint::not_ready(c),
            ]),
        );
        let a_and_b = names(&[a, b], TCP_TARGET);
        f.wait_for(PROPAGATION, "the terminating-only set to serve", || {
            try_backends(Kind::Tcp, vip, 10).is_ok_and(|seen| seen.iter().any(|n| *n == a_and_b[1]))
        });
        assert_backends(
            "all terminating (one not serving)",
            &tally(Kind::Tcp, vip, 60),
            &a_and_b,
        );
        f.assert_proxy_running();
    }
}
