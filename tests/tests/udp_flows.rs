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
    manifest::AddressType,
    pod::{PodNetns, PodUdpClient},
    udp_ask,
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
    udp_ask(socket).map(|r| r.backend)
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

/// A second Service over the same backends as `web`.
const OTHER: &str = "other";
const OTHER_VIP4: &str = "10.96.0.11";

/// Two Services share a UDP backend; it leaves one of them. A connected
/// socket of the other Service, which still lists it, keeps its flow
/// (kube-proxy clears a removed endpoint's conntrack per Service port); a
/// socket of the Service it left is ended.
#[test]
fn a_backend_leaving_one_service_keeps_the_sockets_of_another_that_still_lists_it() {
    let mut f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    f.write(
        "other-service.yaml",
        &service(OTHER, &[OTHER_VIP4], TCP_PORT, UDP_PORT),
    );
    f.write(
        "other-slice-v4.yaml",
        &slice(
            OTHER,
            &slice_name(OTHER, AddressType::IPv4),
            AddressType::IPv4,
            &BACKENDS_V4,
        ),
    );
    f.start_proxy();
    f.wait_ready();
    let web = sock(WEB_VIP4, UDP_PORT);
    let other = sock(OTHER_VIP4, UDP_PORT);
    f.wait_for(PROPAGATION, &format!("{other} to be served"), || {
        Kind::UdpConnected.request(other, PROBE).is_ok()
    });
    let (kept, on) = connected(web);
    // A socket of the other Service on the same backend (balancing is
    // random: try until one lands there).
    let leaving = (0..200)
        .map(|_| connected(other))
        .find(|(_, b)| *b == on)
        .map(|(s, _)| s)
        .unwrap_or_else(|| panic!("no socket to {other} landed on {on} in 200 tries"));
    let rest: Vec<&str> = BACKENDS_V4
        .iter()
        .copied()
        .filter(|a| backend_name(a, UDP_TARGET) != on)
        .collect();
    f.write(
        "other-slice-v4.yaml",
        &slice(
            OTHER,
            &slice_name(OTHER, AddressType::IPv4),
            AddressType::IPv4,
            &rest,
        ),
    );
    f.wait_for(
        PROPAGATION,
        &format!("the socket to {other} (on {on}) to be ended"),
        || ended(&leaving),
    );
    for i in 0..5 {
        let answer = ask(&kept);
        assert_eq!(
            answer.as_ref().map_err(|e| e.to_string()),
            Ok(&on),
            "request {i}: the socket to {web} on {on} (still listed by {web}) was disturbed \
             when {on} left {other}"
        );
    }
    f.assert_proxy_running();
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

/// Userspace mode: a pod's connected socket to a VIP reaches the node's
/// listener through routing; when the Service is deleted the listener and
/// the VIP route go, and the proxy ends the pod's socket in the pod's
/// namespace (without that its datagrams would vanish, unanswered).
#[test]
fn userspace_deleting_the_service_ends_a_pods_socket_in_its_own_namespace() {
    let mut f = Fixture::with_web(Mode::Userspace);
    let pod = PodNetns::create(&f.sandbox, 1).expect("creating the pod's network namespace");
    let mut clients: Vec<(SocketAddr, PodUdpClient)> = family_vips()
        .into_iter()
        .map(|(_, vip)| {
            let mut client =
                PodUdpClient::start(Path::new(env!("CARGO_BIN_EXE_pxt-udp-client")), &pod, PROBE)
                    .expect("starting the UDP client in the pod");
            client
                .connect(vip)
                .unwrap_or_else(|e| panic!("connecting the pod's socket to {vip}: {e}"));
            let mut first = Err(String::new());
            let served = proxy_tests::wait_until(PROPAGATION, || {
                first = client.ask();
                first.is_ok()
            });
            assert!(served, "the pod's first request to {vip} failed: {first:?}");
            (vip, client)
        })
        .collect();
    f.remove("web-service.yaml");
    for (vip, client) in &mut clients {
        f.wait_for(
            PROPAGATION,
            &format!("the pod's socket to {vip} to be ended"),
            || pod_socket_ended(&client.ask()),
        );
    }
    f.assert_proxy_running();
}

/// Starts the proxy on the fixture's manifests under `wrapper` (a command
/// that execs or forks it: `setpriv …`, `unshare …`), and waits until ready.
fn start_wrapped(f: &mut Fixture, wrapper: &[&str], args: &[&str]) {
    let manifests = f.sandbox.manifests_dir();
    let source = [std::ffi::OsStr::new("--manifests"), manifests.as_os_str()];
    f.proxy = Some(
        proxy_tests::ProxyProcess::start_wrapped(
            wrapper,
            &proxy_tests::proxy_bin(),
            &f.sandbox,
            &source,
            args,
        )
        .unwrap_or_else(|e| panic!("starting the proxy under {wrapper:?}: {e}")),
    );
    f.wait_ready();
}

/// A container without `hostPID` (here: the proxy in a pid namespace of its
/// own) cannot name the pods' processes, so their namespaces are found where
/// the runtime pins them (`--netns-dir`, as `deploy/daemonset.yaml` mounts
/// `/run/netns`): the pod's socket aimed at a removed endpoint is ended there.
/// Without the flag the same proxy cannot reach it (checked by
/// `without_sys_admin_…` for the capability, and by hand for the flag).
#[test]
fn without_host_pid_a_pods_socket_is_ended_through_the_pinned_namespaces() {
    let mut f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    let pod = PodNetns::create(&f.sandbox, 1).expect("creating the pod's network namespace");
    // The runtime's pin directory, holding this pod's namespace only (the
    // machine's /run/netns holds other tests' namespaces).
    let pins = f.sandbox.dir().join("netns");
    std::fs::create_dir_all(&pins).expect("creating the pin directory");
    std::os::unix::fs::symlink(pod.netns_path(), pins.join("cni-pod1"))
        .expect("pinning the pod's namespace");
    let netns_dir = format!("--netns-dir={}", pins.display());
    let mut args: Vec<&str> = Mode::Ebpf.args().to_vec();
    args.push(&netns_dir);
    let own_pid_namespace = ["unshare", "--pid", "--kill-child=SIGTERM", "--"];
    start_wrapped(&mut f, &own_pid_namespace, &args);
    let mut client =
        PodUdpClient::start(Path::new(env!("CARGO_BIN_EXE_pxt-udp-client")), &pod, PROBE)
            .expect("starting the UDP client in the pod");
    let vip = sock(WEB_VIP4, UDP_PORT);
    client
        .connect(vip)
        .unwrap_or_else(|e| panic!("connecting the pod's socket to {vip}: {e}"));
    let first = client
        .ask()
        .unwrap_or_else(|e| panic!("first request from the pod to {vip}: {e}"));
    let keep: Vec<&str> = BACKENDS_V4
        .iter()
        .copied()
        .filter(|a| backend_name(a, UDP_TARGET) != first)
        .collect();
    f.write_web_slices(&keep, &BACKENDS_V6);
    f.wait_for(
        PROPAGATION,
        &format!("the pod's socket to {vip} (on {first}) to be ended"),
        || pod_socket_ended(&client.ask()),
    );
    client
        .connect(vip)
        .unwrap_or_else(|e| panic!("reconnecting the pod's socket to {vip}: {e}"));
    let again = client
        .ask()
        .unwrap_or_else(|e| panic!("request from the pod after reconnecting to {vip}: {e}"));
    assert_ne!(
        again, first,
        "the pod's new socket went to the removed endpoint"
    );
    let log = f.log();
    assert!(
        !log.contains("cannot see the processes of the hooks' cgroup"),
        "with --netns-dir the hidden processes are not a gap to warn about:\n{log}"
    );
    f.assert_proxy_running();
}

const METRICS_ADDR: &str = "127.0.0.1:19249";

/// The value of one series (`name{labels}` exactly as exposed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Without `CAP_SYS_ADMIN` (the least-privilege set, README) the proxy may
/// not enter a pod's namespace: it says so once, counts each namespace it
/// skipped, keeps running, and still ends the sockets of its own namespace.
#[test]
fn without_sys_admin_pods_sockets_are_skipped_counted_and_the_own_namespace_still_served() {
    let mut f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    let mut args: Vec<&str> = Mode::Ebpf.args().to_vec();
    args.extend(["--metrics-bind-address", METRICS_ADDR]);
    let drop_sys_admin = [
        "setpriv",
        "--bounding-set",
        "-sys_admin",
        "--inh-caps",
        "-sys_admin",
        "--",
    ];
    start_wrapped(&mut f, &drop_sys_admin, &args);
    let pod = PodNetns::create(&f.sandbox, 1).expect("creating the pod's network namespace");
    let mut client =
        PodUdpClient::start(Path::new(env!("CARGO_BIN_EXE_pxt-udp-client")), &pod, PROBE)
            .expect("starting the UDP client in the pod");
    let vip = sock(WEB_VIP4, UDP_PORT);
    for round in 0..2 {
        let (own, _) = connected(vip);
        client
            .connect(vip)
            .unwrap_or_else(|e| panic!("connecting the pod's socket to {vip}: {e}"));
        let on = client
            .ask()
            .unwrap_or_else(|e| panic!("first request from the pod to {vip}: {e}"));
        f.write_web_slices(&[], &BACKENDS_V6);
        f.wait_for(
            PROPAGATION,
            &format!("round {round}: the proxy's own namespace's socket to {vip} to be ended"),
            || ended(&own),
        );
        // The backend still runs: the pod's socket, not ended, is answered.
        let still = client.ask();
        assert_eq!(
            still.as_deref(),
            Ok(on.as_str()),
            "round {round}: without CAP_SYS_ADMIN the pod's socket cannot be ended, and its \
             backend still answers"
        );
        f.write_web_slices(&BACKENDS_V4, &BACKENDS_V6);
        f.wait_for(PROPAGATION, &format!("{vip} to be served again"), || {
            Kind::UdpConnected.request(vip, PROBE).is_ok()
        });
    }
    let log = f.log();
    let warnings = log
        .matches("may not enter pods' network namespaces")
        .count();
    assert_eq!(
        warnings, 1,
        "expected the missing capability to be logged exactly once over two changes, \
         saw {warnings} times:\n{log}"
    );
    let (_, body) = http_get(METRICS_ADDR, "/metrics").expect("scraping /metrics");
    let denied = sample(&body, r#"proxy_udp_netns_skipped_total{reason="denied"}"#);
    assert!(
        denied.is_some_and(|n| n >= 2.0),
        "expected proxy_udp_netns_skipped_total{{reason=\"denied\"}} >= 2 (the pod's \
         namespace, twice), got {denied:?}"
    );
    f.assert_proxy_running();
}

/// Not a check: what ending UDP flows costs the daemon per change with N pod
/// namespaces (`PXT_PODS`, default 10; at most 250), each holding one
/// connected socket to the removed endpoint. Prints the daemon's own timing
/// (`took_us` of its "ended UDP sockets" log line). Run with
/// `PXT_PODS=100 cargo nextest run -p proxy-tests --test udp_flows --run-ignored only cost --no-capture`.
#[test]
#[ignore = "a measurement, run by hand"]
fn cost_of_ending_udp_flows_with_n_pod_namespaces() {
    let n: u8 = std::env::var("PXT_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .clamp(1, 250);
    let mut f = Fixture::with_web(Mode::Ebpf);
    let vip = sock(WEB_VIP4, UDP_PORT);
    let mut pods = Vec::new();
    for i in 1..=n {
        let pod = PodNetns::create(&f.sandbox, i).expect("creating a pod's network namespace");
        let client =
            PodUdpClient::start(Path::new(env!("CARGO_BIN_EXE_pxt-udp-client")), &pod, PROBE)
                .expect("starting a UDP client in a pod");
        pods.push((pod, client));
    }
    for round in 0..3 {
        let mut on = std::collections::BTreeMap::<String, usize>::new();
        for (_, client) in &mut pods {
            client.connect(vip).expect("connecting a pod's socket");
            *on.entry(client.ask().expect("a pod's first request"))
                .or_default() += 1;
        }
        let (removed, _) = on.iter().max_by_key(|(_, n)| **n).expect("some backend");
        let keep: Vec<&str> = BACKENDS_V4
            .iter()
            .copied()
            .filter(|a| backend_name(a, UDP_TARGET) != *removed)
            .collect();
        let before = f.log().matches("ended UDP sockets").count();
        f.write_web_slices(&keep, &BACKENDS_V6);
        let log_path = f.proxy().log_path().to_owned();
        let done = proxy_tests::wait_until(PROPAGATION, || {
            std::fs::read_to_string(&log_path)
                .is_ok_and(|log| log.matches("ended UDP sockets").count() > before)
        });
        assert!(
            done,
            "the proxy did not end the sockets within {PROPAGATION:?}"
        );
        let log = f.log();
        let line = log
            .lines()
            .filter(|l| l.contains("ended UDP sockets"))
            .nth(before)
            .unwrap_or_default()
            .to_owned();
        eprintln!(
            "pods={n} round={round} sockets_on_removed={}: {line}",
            on[removed]
        );
        f.write_web_slices(&BACKENDS_V4, &BACKENDS_V6);
    }
}
