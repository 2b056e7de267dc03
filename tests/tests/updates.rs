//! Changes to the manifests directory reach the dataplane while the proxy runs:
//! an endpoint added and removed, a service added and deleted; in userspace
//! mode, an open connection to a removed backend is closed after the grace
//! period.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::*;
use proxy_tests::{
    manifest::{AddressType, documents},
    wait_until,
};

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
                || stopped_reaching(kind, vip, &removed),
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

/// A TCP echo server that keeps each connection open until the client closes
/// it: the kit's backends answer one line and close.
struct Echo {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    fn start(addr: SocketAddr) -> Self {
        use std::{
            io::{Read, Write},
            sync::{Arc, atomic::AtomicBool, atomic::Ordering},
        };
        let listener = std::net::TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("binding the echo server on {addr}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut workers = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let flag = flag.clone();
                        workers.push(std::thread::spawn(move || {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_read_timeout(Some(Duration::from_millis(50)));
                            let mut buf = [0u8; 256];
                            while !flag.load(Ordering::Relaxed) {
                                match conn.read(&mut buf) {
                                    Ok(0) => return,
                                    Ok(n) => {
                                        if conn.write_all(&buf[..n]).is_err() {
                                            return;
                                        }
                                    }
                                    Err(e)
                                        if matches!(
                                            e.kind(),
                                            std::io::ErrorKind::WouldBlock
                                                | std::io::ErrorKind::TimedOut
                                        ) => {}
                                    Err(_) => return,
                                }
                            }
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            for w in workers {
                let _ = w.join();
            }
        });
        Echo {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One line over an open connection: true when it comes back.
fn echoes(conn: &mut std::net::TcpStream) -> bool {
    use std::io::{Read, Write};
    let mut buf = [0u8; 6];
    conn.write_all(b"hello\n").is_ok() && conn.read_exact(&mut buf).is_ok() && &buf == b"hello\n"
}

// Userspace only: with the socket hooks, an established connection goes
// straight to its backend and the proxy is not on its path, so nothing closes
// it (as with kube-proxy, whose conntrack entries keep it going).
#[test]
fn a_connection_to_a_removed_backend_is_closed_after_the_grace_period() {
    use proxy_tests::manifest::{Endpoint, EndpointSlice, Protocol, Service};
    const HOLD_VIP: &str = "10.96.0.40";
    const HOLD_PORT: u16 = 90;
    const ECHO_PORT: u16 = 9090;
    const GRACE: Duration = Duration::from_secs(3);
    let mut f = Fixture::new(Mode::Userspace);
    let [a, b, _] = BACKENDS_V4;
    let _echo = [
        Echo::start(sock(a, ECHO_PORT)),
        Echo::start(sock(b, ECHO_PORT)),
    ];
    let hold = |endpoint: &str| {
        documents(&[
            Service::new(NAMESPACE, "hold")
                .cluster_ip(HOLD_VIP)
                .port("echo", Protocol::Tcp, HOLD_PORT, ECHO_PORT)
                .to_yaml(),
            EndpointSlice::new(NAMESPACE, "hold-1", "hold", AddressType::IPv4)
                .port("echo", Protocol::Tcp, ECHO_PORT)
                .endpoint(Endpoint::ready(endpoint))
                .to_yaml(),
        ])
    };
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    f.write("hold.yaml", &hold(a));
    f.start_proxy_with(&["--backend-grace-period", "3s"]);
    f.wait_ready();
    let vip = sock(HOLD_VIP, HOLD_PORT);
    let mut conn = std::net::TcpStream::connect_timeout(&vip, REQUEST)
        .unwrap_or_else(|e| panic!("connecting to {vip}: {e}"));
    conn.set_read_timeout(Some(REQUEST)).expect("read timeout");
    assert!(echoes(&mut conn), "no echo through {vip}");

    // Move the Service to `b`: new connections go there at once; the open
    // one, to `a`, keeps working through the grace period, then is closed.
    let moved = std::time::Instant::now();
    f.write("hold.yaml", &hold(b));
    std::thread::sleep(Duration::from_millis(500));
    let mut fresh = std::net::TcpStream::connect_timeout(&vip, REQUEST)
        .unwrap_or_else(|e| panic!("a new connection to {vip} after the change: {e}"));
    fresh.set_read_timeout(Some(REQUEST)).expect("read timeout");
    assert!(echoes(&mut fresh), "a new connection to {vip} got no echo");
    assert!(
        echoes(&mut conn),
        "the connection to the removed backend was closed before the grace period"
    );
    let closed = wait_until(GRACE + PROPAGATION, || !echoes(&mut conn));
    let after = moved.elapsed();
    assert!(
        closed,
        "the connection to the removed backend was still open {after:?} after the change \
         (grace period {GRACE:?})"
    );
    assert!(
        after >= GRACE - Duration::from_millis(500),
        "the connection was closed {after:?} after the change, before the {GRACE:?} grace period"
    );
    assert!(
        echoes(&mut fresh),
        "the connection to the live backend was closed too"
    );
    f.assert_proxy_running();
}

/// Userspace mode, graceful termination: a connection to an endpoint that
/// turns terminating (still serving) carries on past the grace period, as
/// kube-proxy's conntrack keeps it, while new connections avoid the
/// endpoint; once the endpoint is deleted, the connection gets the grace
/// period and is then closed.
#[test]
fn a_connection_to_a_terminating_endpoint_is_kept_until_the_endpoint_is_deleted() {
    use proxy_tests::manifest::{Endpoint, EndpointSlice, Protocol, Service};
    const HOLD_VIP: &str = "10.96.0.41";
    const HOLD_PORT: u16 = 90;
    const ECHO_PORT: u16 = 9090;
    const GRACE: Duration = Duration::from_secs(2);
    let mut f = Fixture::new(Mode::Userspace);
    let [a, b, _] = BACKENDS_V4;
    let _echo = [
        Echo::start(sock(a, ECHO_PORT)),
        Echo::start(sock(b, ECHO_PORT)),
    ];
    let hold =
        |endpoints: &[Endpoint]| {
            let mut slice = EndpointSlice::new(NAMESPACE, "hold-1", "hold", AddressType::IPv4)
                .port("echo", Protocol::Tcp, ECHO_PORT);
            for e in endpoints {
                slice = slice.endpoint(e.clone());
            }
            documents(&[
                Service::new(NAMESPACE, "hold")
                    .cluster_ip(HOLD_VIP)
                    .port("echo", Protocol::Tcp, HOLD_PORT, ECHO_PORT)
                    .to_yaml(),
                slice.to_yaml(),
            ])
        };
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    f.write("hold.yaml", &hold(&[Endpoint::ready(a)]));
    f.start_proxy_with(&["--backend-grace-period", "2s"]);
    f.wait_ready();
    let vip = sock(HOLD_VIP, HOLD_PORT);
    let mut conn = std::net::TcpStream::connect_timeout(&vip, REQUEST)
        .unwrap_or_else(|e| panic!("connecting to {vip}: {e}"));
    conn.set_read_timeout(Some(REQUEST)).expect("read timeout");
    assert!(echoes(&mut conn), "no echo through {vip}");

    // `a` terminates, `b` is ready: the open connection to `a` carries on
    // well past the grace period.
    f.write(
        "hold.yaml",
        &hold(&[Endpoint::terminating(a), Endpoint::ready(b)]),
    );
    std::thread::sleep(GRACE + Duration::from_secs(1));
    assert!(
        echoes(&mut conn),
        "the connection to the terminating endpoint was closed"
    );

    // `a` is deleted: the grace period starts, then the connection closes.
    let deleted = std::time::Instant::now();
    f.write("hold.yaml", &hold(&[Endpoint::ready(b)]));
    let closed = wait_until(GRACE + PROPAGATION, || !echoes(&mut conn));
    assert!(
        closed,
        "the connection to the deleted endpoint was still open {:?} after the deletion \
         (grace period {GRACE:?})",
        deleted.elapsed()
    );
    f.assert_proxy_running();
}

/// A ClusterIP and TCP port whose pre-filter bit (`SVC_FILTER`, see
/// `proxy_common::prefilter`) is `web`'s IPv4 TCP frontend's.
fn sharing_webs_prefilter_bit() -> (String, u16) {
    use proxy_common::prefilter::{bit, hash_v4, word};
    let at = |addr: std::net::Ipv4Addr, port: u16| {
        let h = hash_v4(u32::from(addr), port, proxy_common::proto::TCP);
        (word(h), bit(h))
    };
    let web = at(WEB_VIP4.parse().expect("web's VIP"), TCP_PORT);
    (1..=250u8)
        .flat_map(|host| (1024..=u16::MAX).map(move |port| (host, port)))
        .map(|(host, port)| (std::net::Ipv4Addr::new(10, 96, 1, host), port))
        .find(|(addr, port)| at(*addr, *port) == web)
        .map(|(addr, port)| (addr.to_string(), port))
        .expect("16 million frontends in 65,536 bits: some share web's")
}

/// The socket hooks answer "no Service here" from a bitmap before looking a
/// frontend up; a Service whose bit another frontend shares is served, a
/// Service added while running is translated as soon as it is published,
/// and removing one of two frontends sharing a bit keeps the other served
/// (the bit stays set) while the removed one is no longer translated.
#[test]
fn frontends_sharing_a_prefilter_bit_are_served_until_each_is_removed() {
    let mut f = Fixture::with_web(Mode::Ebpf);
    let (vip, port) = sharing_webs_prefilter_bit();
    let api = sock(&vip, port);
    let web = sock(WEB_VIP4, TCP_PORT);
    let api_yaml = documents(&[
        service("api", &[&vip], port, UDP_PORT),
        slice(
            "api",
            &slice_name("api", AddressType::IPv4),
            AddressType::IPv4,
            &BACKENDS_V4,
        ),
    ]);
    f.write("api.yaml", &api_yaml);
    let expected = names(&BACKENDS_V4, TCP_TARGET);
    f.wait_for(
        PROPAGATION,
        &format!("TCP to the new service's VIP {api} to reach its endpoints"),
        || try_backends(Kind::Tcp, api, 3).is_ok_and(|b| b.iter().all(|n| expected.contains(n))),
    );

    // `web` goes: its bit stays set for `api`, which must keep working.
    f.remove("web-service.yaml");
    f.wait_for(
        PROPAGATION,
        &format!("TCP to the deleted service's VIP {web} to stop reaching a backend"),
        || Kind::Tcp.request(web, PROBE).is_err(),
    );
    let seen = tally(Kind::Tcp, api, 10);
    assert!(
        seen.keys().all(|n| expected.contains(n)) && seen.values().sum::<usize>() == 10,
        "expected every TCP request to {api} after web left to reach api's endpoints \
         {expected:?}, saw {seen:?}"
    );

    // And `api` goes too: no longer translated.
    f.remove("api.yaml");
    f.wait_for(
        PROPAGATION,
        &format!("TCP to the deleted service's VIP {api} to stop reaching a backend"),
        || Kind::Tcp.request(api, PROBE).is_err(),
    );
    f.assert_proxy_running();
}
