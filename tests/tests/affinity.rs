//! ClientIP session affinity: a client keeps its backend while it keeps
//! connecting within the timeout, keeps it when backends are added, moves when
//! its backend leaves, and is balanced afresh once the timeout passes with no
//! connection. The socket hooks know a client by its network namespace, the
//! userspace proxies by its source address; the test's client has one of each.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::*;
use proxy_tests::manifest::{Protocol, Service};

/// `web` with ClientIP affinity of `timeout` seconds on both ports and families.
fn sticky_web(timeout: u32) -> String {
    Service::new(NAMESPACE, WEB)
        .cluster_ip(WEB_VIP4)
        .cluster_ip(WEB_VIP6)
        .port("http", Protocol::Tcp, TCP_PORT, TCP_TARGET)
        .port("dns", Protocol::Udp, UDP_PORT, UDP_TARGET)
        .session_affinity(timeout)
        .to_yaml()
}

fn start(mode: Mode, timeout: u32, v4: &[&str], v6: &[&str]) -> Fixture {
    let mut f = Fixture::new(mode);
    f.write("web-service.yaml", &sticky_web(timeout));
    f.write_web_slices(v4, v6);
    f.start_proxy();
    f.wait_ready();
    f
}

/// The one backend `n` connections of `kind` reached; panics if there were several.
fn sticky_backend(kind: Kind, vip: SocketAddr, n: usize) -> String {
    let seen = tally(kind, vip, n);
    assert_eq!(
        seen.len(),
        1,
        "{kind:?} to {vip} with affinity: expected one backend for all {n} connections, saw {seen:?}"
    );
    seen.into_keys().next().expect("one entry")
}

both_modes! {
    fn a_client_sticks_to_one_backend_while_it_keeps_connecting(mode) {
        let _f = start(mode, 3600, &BACKENDS_V4, &BACKENDS_V6);
        for vip in [sock(WEB_VIP4, TCP_PORT), sock(WEB_VIP6, TCP_PORT)] {
            sticky_backend(Kind::Tcp, vip, 40);
        }
        for vip in [sock(WEB_VIP4, UDP_PORT), sock(WEB_VIP6, UDP_PORT)] {
            // A fresh UDP socket each time: only affinity keeps them on one backend.
            sticky_backend(Kind::UdpConnected, vip, 40);
        }
    }

    fn affinity_survives_added_backends_and_moves_when_its_backend_leaves(mode) {
        let mut f = start(mode, 3600, &BACKENDS_V4[..2], &BACKENDS_V6[..2]);
        let vip = sock(WEB_VIP4, TCP_PORT);
        let first = sticky_backend(Kind::Tcp, vip, 20);

        f.write_web_slices(&BACKENDS_V4, &BACKENDS_V6);
        let third = backend_name(BACKENDS_V4[2], TCP_TARGET);
        f.wait_for(PROPAGATION, "the third backend to be programmed", || {
            // A client in another namespace would see it; ours must not move.
            try_backends(Kind::Tcp, vip, 1).is_ok()
        });
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            sticky_backend(Kind::Tcp, vip, 30),
            first,
            "adding {third} moved the client away from {first}"
        );

        let keep: Vec<&str> = BACKENDS_V4
            .iter()
            .copied()
            .filter(|a| backend_name(a, TCP_TARGET) != first)
            .collect();
        f.write_web_slices(&keep, &BACKENDS_V6);
        f.wait_for(
            PROPAGATION,
            &format!("the client to leave the removed backend {first}"),
            || try_backends(Kind::Tcp, vip, 1).is_ok_and(|b| b[0] != first),
        );
        let second = sticky_backend(Kind::Tcp, vip, 20);
        assert_ne!(second, first);
    }

    fn affinity_expires_after_the_timeout_without_connections(mode) {
        let _f = start(mode, 1, &BACKENDS_V4, &BACKENDS_V6);
        let vip = sock(WEB_VIP4, TCP_PORT);
        // Within the timeout: one backend.
        sticky_backend(Kind::Tcp, vip, 10);
        // Past it, each connection is balanced afresh: with three backends, twelve
        // expired picks all landing on one backend has odds of 3^-11.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..12 {
            std::thread::sleep(Duration::from_millis(1300));
            let reply = Kind::Tcp
                .request(vip, REQUEST)
                .unwrap_or_else(|e| panic!("request to {vip}: {e}"));
            seen.insert(reply.backend);
            if seen.len() > 1 {
                return;
            }
        }
        panic!(
            "expected affinity to expire after 1 s without connections, but every pick went to {seen:?}"
        );
    }
}
