//! Steady-state balancing through the proxy, over IPv4 and IPv6 VIPs: new TCP
//! connections and new UDP sockets spread over every endpoint, and clients see
//! only the VIP (getpeername, and the source of unconnected UDP replies).

mod common;

use std::net::SocketAddr;

use common::*;
use proxy_tests::{tcp_peer_name, udp_connected_request, udp_unconnected_request};

/// With 60 tries and 3 equally likely backends, missing one has a chance of
/// about 1e-10: seeing all three is a fair test of "random per connection".
const TRIES: usize = 60;

fn vips(port: u16) -> [SocketAddr; 2] {
    [sock(WEB_VIP4, port), sock(WEB_VIP6, port)]
}

fn expected(vip: SocketAddr, port: u16) -> Vec<String> {
    if vip.is_ipv4() {
        names(&BACKENDS_V4, port)
    } else {
        names(&BACKENDS_V6, port)
    }
}

both_modes! {
    fn tcp_connections_spread_over_all_endpoints(mode) {
        let _f = Fixture::with_web(mode);
        for vip in vips(TCP_PORT) {
            let seen = tally(Kind::Tcp, vip, TRIES);
            assert_backends(
                &format!("{TRIES} TCP connections to {vip}"),
                &seen,
                &expected(vip, TCP_TARGET),
            );
        }
    }

    fn udp_sockets_spread_over_all_endpoints(mode) {
        let _f = Fixture::with_web(mode);
        for vip in vips(UDP_PORT) {
            for kind in [Kind::UdpUnconnected, Kind::UdpConnected] {
                let seen = tally(kind, vip, TRIES);
                assert_backends(
                    &format!("{TRIES} {kind:?} sockets to {vip}"),
                    &seen,
                    &expected(vip, UDP_TARGET),
                );
            }
        }
    }

    fn a_udp_socket_keeps_its_backend(mode) {
        let _f = Fixture::with_web(mode);
        for vip in vips(UDP_PORT) {
            let socket = std::net::UdpSocket::bind(if vip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })
                .expect("binding a UDP client");
            socket
                .set_read_timeout(Some(REQUEST))
                .expect("setting a read timeout");
            let mut seen = std::collections::BTreeMap::new();
            let mut buf = [0u8; 256];
            for i in 0..20 {
                socket
                    .send_to(b"hello\n", vip)
                    .unwrap_or_else(|e| panic!("datagram {i} to {vip}: {e}"));
                let (n, _) = socket
                    .recv_from(&mut buf)
                    .unwrap_or_else(|e| panic!("reply {i} from {vip}: {e}"));
                let reply: proxy_tests::Reply = std::str::from_utf8(&buf[..n])
                    .expect("a UTF-8 reply")
                    .parse()
                    .expect("a backend reply");
                *seen.entry(reply.backend).or_insert(0) += 1;
            }
            assert_eq!(
                seen.len(),
                1,
                "expected one unconnected UDP socket to stick to one backend of {vip} \
                 (selection is per socket), saw {seen:?}"
            );
        }
    }

    fn getpeername_returns_the_vip(mode) {
        let _f = Fixture::with_web(mode);
        for vip in vips(TCP_PORT) {
            for i in 0..10 {
                let peer = tcp_peer_name(vip)
                    .unwrap_or_else(|e| panic!("TCP connect {i} to {vip} failed: {e}"));
                assert_eq!(
                    peer, vip,
                    "getpeername() of a TCP socket connected to {vip}"
                );
            }
        }
        for vip in vips(UDP_PORT) {
            for i in 0..10 {
                let (reply, peer) = udp_connected_request(vip)
                    .unwrap_or_else(|e| panic!("connected UDP request {i} to {vip} failed: {e}"));
                assert_eq!(
                    peer, vip,
                    "getpeername() of a UDP socket connected to {vip} (served by {})",
                    reply.backend
                );
                assert!(
                    expected(vip, UDP_TARGET).contains(&reply.backend),
                    "connected UDP to {vip} answered by {}, not one of its endpoints",
                    reply.backend
                );
            }
        }
    }

    fn unconnected_udp_replies_come_from_the_vip(mode) {
        let _f = Fixture::with_web(mode);
        for vip in vips(UDP_PORT) {
            for i in 0..10 {
                let (reply, from) = udp_unconnected_request(vip)
                    .unwrap_or_else(|e| panic!("UDP request {i} to {vip} failed: {e}"));
                assert_eq!(
                    from, vip,
                    "source of the reply to a datagram sent to {vip} (answered by {})",
                    reply.backend
                );
            }
        }
    }
}
