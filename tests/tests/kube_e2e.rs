//! End to end with the Kubernetes source: the fake API server runs in the test
//! process, inside the sandbox's network namespace on 127.0.0.1, and the real
//! `proxy run --kubeconfig … --node-name …` reads from it over HTTP and programs
//! the real dataplane; the tests send real traffic through the VIPs.
//!
//! The fake server is started after `Sandbox::enter()` (by `Fixture::new`), so it
//! listens inside the namespace, where the proxy shares its loopback.

mod common;

use std::{
    ffi::OsStr,
    io::{Read, Write},
    net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use common::{
    kube::{self, NODE},
    *,
};
use proxy_tests::{
    FakeApiServer, ProxyProcess, Reply,
    fake_apiserver::{Resource, SERVICE_PROXY_NAME_LABEL, json_from_yaml, with_label},
    manifest::AddressType,
    proxy_bin, wait_until,
};

/// The fake API server with this node's Node (in zone-a), and its kubeconfig.
fn start_api(f: &Fixture) -> (FakeApiServer, PathBuf) {
    kube::start_api(f, &kube::this_node("zone-a"))
}

/// `proxy run --kubeconfig K --node-name node-1` (plus `--manifests` when asked).
fn start_proxy(f: &mut Fixture, kubeconfig: &Path, with_manifests: bool) {
    assert!(f.proxy.is_none(), "the proxy is already running");
    let manifests = f.sandbox.manifests_dir();
    let mut source = vec![OsStr::new("--kubeconfig"), kubeconfig.as_os_str()];
    if with_manifests {
        source.extend([OsStr::new("--manifests"), manifests.as_os_str()]);
    }
    f.proxy = Some(
        ProxyProcess::start_with_source(
            &proxy_bin(),
            &f.sandbox,
            &source,
            &["--node-name", NODE, "--mode", "ebpf"],
        )
        .unwrap_or_else(|e| panic!("starting the proxy: {e}")),
    );
}

/// Creates a dual-stack Service (TCP `http`, UDP `dns`) and its two slices.
fn apply_service(api: &FakeApiServer, name: &str, vips: &[&str], v4: &[&str], v6: &[&str]) {
    api.apply_yaml(&service(name, vips, TCP_PORT, UDP_PORT));
    apply_slices(api, name, v4, v6);
}

fn apply_slices(api: &FakeApiServer, name: &str, v4: &[&str], v6: &[&str]) {
    for (family, addrs) in [(AddressType::IPv4, v4), (AddressType::IPv6, v6)] {
        api.apply_yaml(&slice(name, &slice_name(name, family), family, addrs));
    }
}

fn delete_service(api: &FakeApiServer, name: &str) {
    api.delete(Resource::Services, NAMESPACE, name);
    for family in [AddressType::IPv4, AddressType::IPv6] {
        api.delete(
            Resource::EndpointSlices,
            NAMESPACE,
            &slice_name(name, family),
        );
    }
}

/// Waits until `vip` is served by a backend.
fn wait_served(f: &mut Fixture, kind: Kind, vip: SocketAddr) {
    f.wait_for(STARTUP, &format!("{kind:?} to {vip} to be served"), || {
        kind.request(vip, PROBE).is_ok()
    });
}

/// Asserts that `vip` is not translated: requests fail (they hang in the
/// sandbox's dead end until the probe timeout).
fn assert_not_served(what: &str, kind: Kind, vip: SocketAddr) {
    for i in 0..3 {
        let result = kind.request(vip, PROBE);
        assert!(
            result.is_err(),
            "{what}: expected {kind:?} request {i} to {vip} to fail, saw {result:?}"
        );
    }
}

#[test]
fn a_service_created_through_the_api_works_and_follows_endpoint_changes() {
    let mut f = Fixture::new(Mode::Ebpf);
    let (api, kubeconfig) = start_api(&f);
    start_proxy(&mut f, &kubeconfig, false);

    // Created after the proxy started: it arrives through the watch.
    apply_service(
        &api,
        WEB,
        &[WEB_VIP4, WEB_VIP6],
        &BACKENDS_V4[..2],
        &BACKENDS_V6[..2],
    );
    f.wait_ready();
    for (vip, backends) in [(WEB_VIP4, &BACKENDS_V4), (WEB_VIP6, &BACKENDS_V6)] {
        for (kind, port, target) in [
            (Kind::Tcp, TCP_PORT, TCP_TARGET),
            (Kind::UdpUnconnected, UDP_PORT, UDP_TARGET),
        ] {
            let vip = sock(vip, port);
            wait_served(&mut f, kind, vip);
            let seen = tally(kind, vip, 20);
            assert_backends(
                &format!("{kind:?} to {vip} with two endpoints"),
                &seen,
                &names(&backends[..2], target),
            );
        }
    }

    // An endpoint change propagates: the first endpoint goes, the third comes.
    apply_slices(&api, WEB, &BACKENDS_V4[1..], &BACKENDS_V6[1..]);
    for (vip, backends) in [(WEB_VIP4, &BACKENDS_V4), (WEB_VIP6, &BACKENDS_V6)] {
        let vip = sock(vip, TCP_PORT);
        let added = backend_name(backends[2], TCP_TARGET);
        let removed = backend_name(backends[0], TCP_TARGET);
        f.wait_for(
            PROPAGATION,
            &format!("TCP to {vip} to reach {added} and not {removed}"),
            || {
                try_backends(Kind::Tcp, vip, 15)
                    .is_ok_and(|b| b.contains(&added) && !b.contains(&removed))
            },
        );
        let seen = tally(Kind::Tcp, vip, 30);
        assert_backends(
            &format!("TCP to {vip} after the endpoint change"),
            &seen,
            &names(&backends[1..], TCP_TARGET),
        );
    }
    let log = f.log();
    assert!(
        log.contains("Kubernetes initial lists complete"),
        "expected the proxy to log its initial lists; log:\n{log}"
    );
    f.assert_proxy_running();
}

/// Echoes every byte back on each connection until the client closes or the
/// server is dropped; each read is bounded, so nothing can hang.
struct EchoServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    fn start(bind: SocketAddr) -> Self {
        let listener = TcpListener::bind(bind).unwrap_or_else(|e| panic!("binding {bind}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut connections = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let flag = flag.clone();
                        connections.push(thread::spawn(move || echo(stream, &flag)));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
            for c in connections {
                let _ = c.join();
            }
        });
        EchoServer {
            stop,
            thread: Some(thread),
        }
    }
}

fn echo(mut stream: TcpStream, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 256];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One line over an established connection, and its echo.
fn round_trip(stream: &mut TcpStream, line: &str) -> std::io::Result<String> {
    stream.write_all(line.as_bytes())?;
    let mut buf = vec![0u8; line.len()];
    stream.read_exact(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// One datagram over a connected UDP socket, and the backend that answered.
fn udp_round_trip(socket: &UdpSocket) -> std::io::Result<Reply> {
    socket.send(b"hello\n")?;
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf)?;
    String::from_utf8_lossy(&buf[..n]).parse()
}

#[test]
fn an_api_server_outage_keeps_connections_and_known_services() {
    const ECHO: &str = "echo";
    const ECHO_VIP: &str = "10.96.0.50";
    const ECHO_PORT: u16 = 7000;
    let mut f = Fixture::new(Mode::Ebpf);
    let echo_backend = sock(BACKENDS_V4[0], ECHO_PORT);
    let _echo = EchoServer::start(echo_backend);
    let (mut api, kubeconfig) = start_api(&f);
    apply_service(&api, WEB, &[WEB_VIP4, WEB_VIP6], &BACKENDS_V4, &BACKENDS_V6);
    api.apply_yaml(
        &proxy_tests::manifest::Service::new(NAMESPACE, ECHO)
            .cluster_ip(ECHO_VIP)
            .port(
                "echo",
                proxy_tests::manifest::Protocol::Tcp,
                ECHO_PORT,
                ECHO_PORT,
            )
            .to_yaml(),
    );
    api.apply_yaml(
        &proxy_tests::manifest::EndpointSlice::new(
            NAMESPACE,
            &slice_name(ECHO, AddressType::IPv4),
            ECHO,
            AddressType::IPv4,
        )
        .port("echo", proxy_tests::manifest::Protocol::Tcp, ECHO_PORT)
        .endpoint(proxy_tests::manifest::Endpoint::ready(BACKENDS_V4[0]))
        .to_yaml(),
    );
    start_proxy(&mut f, &kubeconfig, false);
    f.wait_ready();
    let echo_vip = sock(ECHO_VIP, ECHO_PORT);
    wait_served(&mut f, Kind::Tcp, sock(WEB_VIP4, TCP_PORT));

    // Long-lived flows, set up while the API server is there.
    let mut conn = TcpStream::connect_timeout(&echo_vip, REQUEST)
        .unwrap_or_else(|e| panic!("connecting to {echo_vip}: {e}"));
    conn.set_read_timeout(Some(REQUEST))
        .expect("a read timeout");
    assert_eq!(
        round_trip(&mut conn, "before\n").expect("an echo"),
        "before\n"
    );
    let udp = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).expect("a UDP socket");
    udp.set_read_timeout(Some(REQUEST)).expect("a read timeout");
    udp.connect(sock(WEB_VIP6, UDP_PORT))
        .expect("connecting UDP to the VIP");
    let udp_backend = udp_round_trip(&udp).expect("a UDP reply").backend;

    // The API server goes away for a few seconds.
    api.stop();
    let outage = Instant::now();
    let mut rounds = 0;
    while outage.elapsed() < Duration::from_secs(4) {
        rounds += 1;
        let line = format!("during {rounds}\n");
        assert_eq!(
            round_trip(&mut conn, &line).unwrap_or_else(|e| panic!(
                "the established connection broke during the outage (round {rounds}): {e}"
            )),
            line
        );
        let reply = udp_round_trip(&udp).unwrap_or_else(|e| {
            panic!("the connected UDP socket broke during the outage (round {rounds}): {e}")
        });
        assert_eq!(reply.backend, udp_backend, "the UDP flow kept its backend");
        for vip in [sock(WEB_VIP4, TCP_PORT), sock(WEB_VIP6, TCP_PORT), echo_vip] {
            let result = if vip == echo_vip {
                TcpStream::connect_timeout(&vip, REQUEST).map(drop)
            } else {
                Kind::Tcp.request(vip, REQUEST).map(drop)
            };
            if let Err(e) = result {
                panic!("a new connection to {vip} failed during the outage (round {rounds}): {e}");
            }
        }
        thread::sleep(Duration::from_millis(250));
    }
    f.assert_proxy_running();
    let log = f.log();
    assert!(
        log.contains("Kubernetes watch failed"),
        "expected the proxy to notice the outage; log:\n{log}"
    );

    // It comes back; changes flow again (the watch resumed).
    api.restart().expect("restarting the fake API server");
    apply_slices(&api, WEB, &BACKENDS_V4[1..], &BACKENDS_V6[1..]);
    let vip = sock(WEB_VIP4, TCP_PORT);
    let removed = backend_name(BACKENDS_V4[0], TCP_TARGET);
    f.wait_for(
        STARTUP,
        &format!("TCP to {vip} to stop reaching {removed} once the API server is back"),
        || stopped_reaching(Kind::Tcp, vip, &removed),
    );
    assert_eq!(
        round_trip(&mut conn, "after\n").expect("an echo"),
        "after\n"
    );
    f.assert_proxy_running();
}

#[test]
fn a_service_of_another_proxy_is_ignored() {
    const OTHER: &str = "other";
    const OTHER_VIP4: &str = "10.96.0.40";
    let mut f = Fixture::new(Mode::Ebpf);
    let (api, kubeconfig) = start_api(&f);
    apply_service(&api, WEB, &[WEB_VIP4, WEB_VIP6], &BACKENDS_V4, &BACKENDS_V6);
    // As the EndpointSlice controller does, the slices carry the Service's label.
    let labelled = |yaml: String, value: &str| {
        with_label(json_from_yaml(&yaml), SERVICE_PROXY_NAME_LABEL, value)
    };
    let other_objects = |value: &str| {
        vec![
            labelled(service(OTHER, &[OTHER_VIP4], TCP_PORT, UDP_PORT), value),
            labelled(
                slice(
                    OTHER,
                    &slice_name(OTHER, AddressType::IPv4),
                    AddressType::IPv4,
                    &BACKENDS_V4,
                ),
                value,
            ),
        ]
    };
    for object in other_objects("other") {
        api.apply(object);
    }
    start_proxy(&mut f, &kubeconfig, false);
    f.wait_ready();
    // Same initial lists as `web`, so by now it would be programmed.
    let other = sock(OTHER_VIP4, TCP_PORT);
    assert_not_served(
        "a Service labelled service-proxy-name: other",
        Kind::Tcp,
        other,
    );

    // Without the label (and so listed by the proxy's selector), it works: the
    // label was the only thing keeping it out.
    for object in other_objects("other") {
        let mut object = object;
        if let Some(labels) = object["metadata"]["labels"].as_object_mut() {
            labels.remove(SERVICE_PROXY_NAME_LABEL);
        }
        api.apply(object);
    }
    f.wait_for(
        PROPAGATION,
        &format!("TCP to {other} once the label is gone"),
        || Kind::Tcp.request(other, PROBE).is_ok(),
    );
    f.assert_proxy_running();
}

#[test]
fn a_service_deleted_while_the_api_server_was_down_is_pruned() {
    const API: &str = "api";
    const API_VIP4: &str = "10.96.0.20";
    const API_VIP6: &str = "fd00:96::20";
    let mut f = Fixture::new(Mode::Ebpf);
    let (mut api, kubeconfig) = start_api(&f);
    apply_service(&api, WEB, &[WEB_VIP4, WEB_VIP6], &BACKENDS_V4, &BACKENDS_V6);
    apply_service(&api, API, &[API_VIP4, API_VIP6], &BACKENDS_V4, &BACKENDS_V6);
    start_proxy(&mut f, &kubeconfig, false);
    f.wait_ready();
    let gone = [sock(API_VIP4, TCP_PORT), sock(API_VIP6, TCP_PORT)];
    for vip in gone {
        wait_served(&mut f, Kind::Tcp, vip);
    }

    api.stop();
    delete_service(&api, API);
    // The history since the proxy's last version is compacted away, so it must
    // relist when it reconnects.
    api.expire_history();
    thread::sleep(Duration::from_secs(1));
    for vip in gone {
        Kind::Tcp.request(vip, REQUEST).unwrap_or_else(|e| {
            panic!("{vip} stopped working before the API server came back: {e}")
        });
    }

    api.restart().expect("restarting the fake API server");
    for vip in gone {
        // Without its slices the Service would refuse at once; once the Service
        // itself is pruned, its VIP is not translated at all (and hangs in the
        // sandbox's dead end).
        f.wait_for(
            STARTUP,
            &format!("{vip} to stop being translated after the relist"),
            || {
                Kind::Tcp
                    .request(vip, PROBE)
                    .is_err_and(|e| e.kind() != std::io::ErrorKind::ConnectionRefused)
            },
        );
        assert_not_served(
            "the Service deleted while the API server was down",
            Kind::Tcp,
            vip,
        );
    }
    for vip in [sock(WEB_VIP4, TCP_PORT), sock(WEB_VIP6, TCP_PORT)] {
        let seen = tally(Kind::Tcp, vip, 10);
        assert!(
            !seen.is_empty(),
            "expected web ({vip}) to keep working, saw {seen:?}"
        );
    }
    let log = f.log();
    assert!(
        log.contains("relisted"),
        "expected the proxy to relist after 410 Gone; log:\n{log}"
    );
    f.assert_proxy_running();
}

#[test]
fn manifests_and_the_api_together_wait_for_each_other() {
    const API: &str = "api";
    const API_VIP4: &str = "10.96.0.20";
    let mut f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    let (api, kubeconfig) = start_api(&f);
    apply_service(&api, API, &[API_VIP4], &BACKENDS_V4, &[]);
    api.hold_lists(Resource::EndpointSlices);
    start_proxy(&mut f, &kubeconfig, true);

    // The manifests are read at once, but nothing is programmed while the
    // Kubernetes source's initial lists are incomplete.
    let web = sock(WEB_VIP4, TCP_PORT);
    assert!(
        wait_until(STARTUP, || f.log().contains("watching the Kubernetes API")),
        "expected the proxy to start both sources; log:\n{}",
        f.log()
    );
    // Ample time for a sync, were one allowed.
    thread::sleep(Duration::from_secs(1));
    assert_not_served(
        "web (manifests) while the EndpointSlices list is held",
        Kind::Tcp,
        web,
    );

    api.release_lists(Resource::EndpointSlices);
    f.wait_ready();
    wait_served(&mut f, Kind::Tcp, sock(API_VIP4, TCP_PORT));
    f.assert_proxy_running();
}
