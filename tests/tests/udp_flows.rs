//! No UDP flow stays pinned to a backend that has gone. With the socket hooks a
//! connected UDP socket is translated once, at `connect()`; when its backend
//! leaves the Service the proxy ends the socket (netlink `SOCK_DESTROY`), so
//! the application gets an error and reconnects, to a live backend or to an
//! immediate refusal. The userspace proxies re-translate instead: the session
//! to the removed backend ends and the client's next datagram goes to a live
//! one; with no backend left, nothing listens and the client is refused; with
//! the Service deleted, sockets aimed at its VIP are ended as in eBPF mode.
//! Covers an endpoint removed, a Service scaled to zero, and a Service deleted
//! (kubernetes#139628, #141371), and, in eBPF mode, a client in a pod's own
//! network namespace (not the proxy's): its socket is ended there too.

mod common;

use std::{
    io,
    net::{SocketAddr, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use common::*;
use proxy_tests::{
    Reply,
    manifest::AddressType,
    pod::{PodNetns, PodUdpClient},
};

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

/// How soon a pod's socket must be ended once its endpoint is removed (the
/// issue's bound; the manifest watch and the sync are inside it).
const POD_SOCKET_END: Duration = Duration::from_secs(1);

/// Whether the pod client's request failed with an error other than a
/// timeout: the socket was ended under it.
fn pod_socket_ended(answer: &Result<String, String>) -> bool {
    match answer {
        Ok(_) => false,
        Err(line) => !(line.starts_with("err WouldBlock") || line.starts_with("err TimedOut")),
    }
}

/// A pod's resolver holds a connected UDP socket in the pod's own network
/// namespace; its endpoint is removed. The proxy, which runs in the node's
/// namespace, enters the pod's to end the socket; the pod reconnects and gets
/// a live endpoint.
#[test]
fn a_pods_socket_aimed_at_a_removed_endpoint_is_ended_in_its_own_namespace() {
    let mut f = Fixture::with_web(Mode::Ebpf);
    let pod = PodNetns::create(&f.sandbox, 1).expect("creating the pod's network namespace");
    let mut client =
        PodUdpClient::start(Path::new(env!("CARGO_BIN_EXE_pxt-udp-client")), &pod, PROBE)
            .expect("starting the UDP client in the pod");
    for (family, vip) in family_vips() {
        client
            .connect(vip)
            .unwrap_or_else(|e| panic!("connecting the pod's socket to {vip}: {e}"));
        let first = client
            .ask()
            .unwrap_or_else(|e| panic!("first request from the pod to {vip}: {e}"));
        let all = match family {
            AddressType::IPv4 => BACKENDS_V4,
            AddressType::IPv6 => BACKENDS_V6,
        };
        let keep: Vec<&str> = all
            .iter()
            .copied()
            .filter(|a| backend_name(a, UDP_TARGET) != first)
            .collect();
        let started = Instant::now();
        match family {
            AddressType::IPv4 => f.write_web_slices(&keep, &BACKENDS_V6),
            AddressType::IPv6 => f.write_web_slices(&BACKENDS_V4, &keep),
        }
        let mut last = None;
        f.wait_for(
            PROPAGATION,
            &format!("the pod's socket to {vip} (on {first}) to be ended"),
            || {
                let answer = client.ask();
                let ended = pod_socket_ended(&answer);
                last = Some(answer);
                ended
            },
        );
        let took = started.elapsed();
        eprintln!("the pod's socket to {vip} was ended {took:?} after the change ({last:?})");
        assert!(
            took <= POD_SOCKET_END,
            "expected the pod's socket to {vip} to be ended within {POD_SOCKET_END:?} of the \
             change, it took {took:?}"
        );
        client
            .connect(vip)
            .unwrap_or_else(|e| panic!("reconnecting the pod's socket to {vip}: {e}"));
        let again = client
            .ask()
            .unwrap_or_else(|e| panic!("request from the pod after reconnecting to {vip}: {e}"));
        assert_ne!(
            again, first,
            "the pod's new socket to {vip} went to the removed endpoint {first}"
        );
        f.write_web_slices(&BACKENDS_V4, &BACKENDS_V6);
    }
    f.assert_proxy_running();
}
