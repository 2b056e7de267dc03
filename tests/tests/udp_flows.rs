//! No UDP flow stays pinned to a backend that has gone. With the socket hooks a
//! connected UDP socket is translated once, at `connect()`; when its backend
//! leaves the Service the proxy ends the socket (netlink `SOCK_DESTROY`), so
//! the application gets an error and reconnects, to a live backend or to an
//! immediate refusal. The userspace proxies re-translate instead: the session
//! to the removed backend ends and the client's next datagram goes to a live
//! one; with no backend left, nothing listens and the client is refused; with
//! the Service deleted, sockets aimed at its VIP are ended as in eBPF mode.
//! Covers an endpoint removed, a Service scaled to zero, and a Service deleted
//! (kubernetes#139628, #141371).

mod common;

use std::{
    io,
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use common::*;
use proxy_tests::{Reply, manifest::AddressType};

/// A connected UDP socket to `vip`, and the backend that answered it.
fn connected(vip: SocketAddr) -> (UdpSocket, String) {
    let bind: SocketAddr = if vip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .expect("literal");
    let socket = UdpSocket::bind(bind).expect("binding a UDP client");
    socket
        .set_read_timeout(Some(REQUEST))
        .expect("read timeout");
    socket
        .connect(vip)
        .unwrap_or_else(|e| panic!("connecting UDP to {vip}: {e}"));
    let backend = ask(&socket).unwrap_or_else(|e| panic!("first request to {vip}: {e}"));
    (socket, backend)
}

/// One request on a connected socket; the backend's name.
fn ask(socket: &UdpSocket) -> io::Result<String> {
    socket.send(b"hello\n")?;
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf)?;
    let reply: Reply = String::from_utf8_lossy(&buf[..n]).parse()?;
    Ok(reply.backend)
}

/// True once the socket reports an error other than a timeout: the proxy ended it.
fn ended(socket: &UdpSocket) -> bool {
    match ask(socket) {
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
    }
}

fn family_vips() -> [(AddressType, SocketAddr); 2] {
    [
        (AddressType::IPv4, sock(WEB_VIP4, UDP_PORT)),
        (AddressType::IPv6, sock(WEB_VIP6, UDP_PORT)),
    ]
}

both_modes! {
    fn a_socket_aimed_at_a_removed_endpoint_is_ended_and_reconnects_elsewhere(mode) {
        let mut f = Fixture::with_web(mode);
        for (family, vip) in family_vips() {
            let (socket, first) = connected(vip);
            let all = match family {
                AddressType::IPv4 => BACKENDS_V4,
                AddressType::IPv6 => BACKENDS_V6,
            };
            let keep: Vec<&str> = all
                .iter()
                .copied()
                .filter(|a| backend_name(a, UDP_TARGET) != first)
                .collect();
            match family {
                AddressType::IPv4 => f.write_web_slices(&keep, &BACKENDS_V6),
                AddressType::IPv6 => f.write_web_slices(&BACKENDS_V4, &keep),
            }
            match mode {
                Mode::Ebpf => f.wait_for(
                    PROPAGATION,
                    &format!("the socket to {vip} (on {first}) to be ended"),
                    || ended(&socket),
                ),
                // The proxy's end of the flow moves; the client's socket stays.
                Mode::Userspace => f.wait_for(
                    PROPAGATION,
                    &format!("the socket to {vip} (on {first}) to be answered elsewhere"),
                    || ask(&socket).is_ok_and(|b| b != first),
                ),
            }
            for _ in 0..10 {
                let (_socket, again) = connected(vip);
                assert_ne!(
                    again, first,
                    "a new socket to {vip} went to the removed endpoint {first}"
                );
            }
            f.write_web_slices(&BACKENDS_V4, &BACKENDS_V6);
        }
        f.assert_proxy_running();
    }

    fn scaling_to_zero_ends_the_socket_and_reconnecting_is_refused(mode) {
        let mut f = Fixture::with_web(mode);
        let sockets: Vec<(SocketAddr, UdpSocket)> = family_vips()
            .into_iter()
            .map(|(_, vip)| (vip, connected(vip).0))
            .collect();
        f.write_web_slices(&[], &[]);
        for (vip, socket) in &sockets {
            f.wait_for(
                PROPAGATION,
                &format!("the socket to {vip} to be ended"),
                || ended(socket),
            );
            if let Err(seen) = udp_refused(mode, *vip, REQUEST) {
                panic!("a fresh UDP socket to {vip} (no endpoints) was not refused: {seen}");
            }
        }
        f.assert_proxy_running();
    }

    fn deleting_the_service_ends_the_socket_and_no_packet_reaches_the_old_backend(mode) {
        let mut f = Fixture::with_web(mode);
        let sockets: Vec<(SocketAddr, UdpSocket, String)> = family_vips()
            .into_iter()
            .map(|(_, vip)| {
                let (socket, backend) = connected(vip);
                (vip, socket, backend)
            })
            .collect();
        f.remove("web-service.yaml");
        for (vip, socket, backend) in &sockets {
            f.wait_for(
                PROPAGATION,
                &format!("the socket to {vip} to be ended"),
                || ended(socket),
            );
            let served_before: u64 = f.udp.iter().map(|b| b.served()).sum();
            // A new socket to the VIP is no longer translated: its datagrams go to
            // the sandbox's dead end, and no backend answers.
            let bind: SocketAddr = if vip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
                .parse()
                .expect("literal");
            let fresh = UdpSocket::bind(bind).expect("binding a UDP client");
            fresh
                .set_read_timeout(Some(Duration::from_millis(500)))
                .expect("read timeout");
            if fresh.connect(vip).is_ok() {
                let answer = ask(&fresh);
                assert!(
                    answer.is_err(),
                    "{vip} answered after its Service was deleted: {answer:?} (was {backend})"
                );
            }
            let served_after: u64 = f.udp.iter().map(|b| b.served()).sum();
            assert_eq!(
                served_before, served_after,
                "a UDP backend was reached through {vip} after the Service was deleted"
            );
        }
        f.assert_proxy_running();
    }
}
