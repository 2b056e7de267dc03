//! Restarts and upgrades never interrupt traffic (reliability.md, items 1-3):
//! - the daemon is `kill -9`ed and restarted 20 times, at random moments of
//!   its start-up too, under long-lived connections and a steady stream of
//!   new ones: no connect fails, no connection resets, every reply comes from
//!   a backend of the Service asked for;
//! - changes made while the daemon is down (a Service deleted, one added, one
//!   whose endpoints moved) apply on restart, while an untouched Service
//!   never blips;
//! - pins of the unversioned layout (version 0) are migrated under traffic,
//!   even by daemons killed half-way through, and pins of a newer layout make
//!   the start fail, with a clear message, leaving them alone (in `--mode
//!   auto` too: no fallback to userspace over them).
//!
//! eBPF only: in userspace mode the proxies are the daemon, so a `kill -9`
//! drops its connections by nature; its restarts are covered in
//! `lifecycle.rs` (`a_restarted_proxy_takes_over_and_applies_changes`, both
//! modes).
//!
//! Everything runs inside the sandbox's namespace; every load loop is bounded
//! in count and time.

mod common;

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsFd as _,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use common::*;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use proxy_common::LAYOUT_VERSION;
use proxy_tests::{
    ProxyProcess,
    manifest::{AddressType, Endpoint, EndpointSlice, Protocol, Service},
    tcp_request_timeout, wait_until,
};

const RESTARTS: usize = 20;
/// How long a daemon that came up serves before the next kill.
const SERVE_BETWEEN_KILLS: Duration = Duration::from_millis(150);
/// Long-lived connections through `chat`.
const LONG_LIVED: usize = 6;
/// Pause between two new connections of the steady stream (about 100/s).
const STREAM_PAUSE: Duration = Duration::from_millis(8);
/// Pause between two exchanges on a long-lived connection.
const CHAT_PAUSE: Duration = Duration::from_millis(25);
/// Hard bounds on the load loops, whatever happens to the test.
const MAX_STREAM_CONNECTIONS: u64 = 30_000;
const MAX_LOAD_TIME: Duration = Duration::from_secs(120);

/// What the daemon logs once its own programs run the hooks.
const HOOKS_ATTACHED: &str = "hooks attached: the dataplane runs this daemon's programs";
const MIGRATED: &str = "layout migration complete";
/// When the daemons that die during the migration are killed: once their
/// log says this, plus a delay.
const MIGRATION_KILLS: [(&str, Duration); 3] = [
    ("programs loaded", Duration::ZERO),
    ("programs loaded", Duration::from_millis(3)),
    ("synced", Duration::ZERO),
];

/// `chat`: long-lived echo connections, 81/TCP → 8081 on the usual backends.
const CHAT: &str = "chat";
const CHAT_VIP4: &str = "10.96.0.30";
const CHAT_VIP6: &str = "fd00:96::30";
const CHAT_PORT: u16 = 81;
const CHAT_TARGET: u16 = 8081;

// ----- a backend that keeps connections open -----

/// Answers every line on a connection with its own name, until the client
/// leaves or the backend is dropped. One thread per connection (the tests
/// open a handful).
struct EchoBackend {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoBackend {
    fn start(bind: SocketAddr) -> Self {
        let listener = TcpListener::bind(bind)
            .unwrap_or_else(|e| panic!("binding the echo backend on {bind}: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let name = bind.to_string();
        let thread = thread::spawn(move || {
            let mut connections = Vec::new();
            while !thread_stop.load(Ordering::Relaxed) {
                let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
                if !matches!(poll(&mut fds, PollTimeout::from(50u8)), Ok(n) if n > 0) {
                    continue;
                }
                let Ok((stream, _)) = listener.accept() else {
                    continue;
                };
                let (stop, name) = (Arc::clone(&thread_stop), name.clone());
                connections.push(thread::spawn(move || echo(stream, &name, &stop)));
            }
            for c in connections {
                let _ = c.join();
            }
        });
        EchoBackend {
            stop,
            thread: Some(thread),
        }
    }
}

fn echo(stream: TcpStream, name: &str, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) if line.ends_with('\n') => {
                if writer.write_all(format!("{name}\n").as_bytes()).is_err() {
                    return;
                }
                line.clear();
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ----- the load -----

/// A load thread and its stop flag.
struct Load<T> {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<T>,
}

impl<T> Load<T> {
    fn finish(self) -> T {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .unwrap_or_else(|_| panic!("a load thread panicked"))
    }
}

/// What a steady stream of new connections saw.
#[derive(Debug, Default)]
struct StreamReport {
    ok: u64,
    /// The first failures (at most 20), with when they happened.
    failures: Vec<String>,
    failed: u64,
}

/// New connections, one request each, alternating over `vips`, until
/// stopped; each reply must come from one of `expected`.
fn steady_stream(vips: Vec<SocketAddr>, expected: Vec<String>) -> Load<StreamReport> {
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = Arc::clone(&stop);
    let thread = thread::spawn(move || {
        let started = Instant::now();
        let mut report = StreamReport::default();
        let mut n = 0u64;
        while !thread_stop.load(Ordering::Relaxed)
            && n < MAX_STREAM_CONNECTIONS
            && started.elapsed() < MAX_LOAD_TIME
        {
            let vip = vips[n as usize % vips.len()];
            n += 1;
            let failure = match tcp_request_timeout(vip, REQUEST) {
                Ok(reply) if expected.contains(&reply.backend) => None,
                Ok(reply) => Some(format!("{vip} answered by {}", reply.backend)),
                Err(e) => Some(format!("{vip}: {e}")),
            };
            match failure {
                None => report.ok += 1,
                Some(f) => {
                    report.failed += 1;
                    if report.failures.len() < 20 {
                        report
                            .failures
                            .push(format!("at {:?}: {f}", started.elapsed()));
                    }
                }
            }
            thread::sleep(STREAM_PAUSE);
        }
        report
    });
    Load { stop, thread }
}

/// One long-lived connection to `vip`, exchanging a line every
/// [`CHAT_PAUSE`] until stopped. Ok(exchanges), or what went wrong: a reset,
/// a timeout, or a reply from another backend than the first one.
fn long_lived(vip: SocketAddr) -> Load<Result<u64, String>> {
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = Arc::clone(&stop);
    let thread = thread::spawn(move || {
        let started = Instant::now();
        let stream = TcpStream::connect_timeout(&vip, REQUEST)
            .map_err(|e| format!("connecting to {vip}: {e}"))?;
        let setup = |r: std::io::Result<()>| r.map_err(|e| format!("setting up {vip}: {e}"));
        setup(stream.set_read_timeout(Some(REQUEST)))?;
        setup(stream.set_write_timeout(Some(REQUEST)))?;
        let mut writer = stream
            .try_clone()
            .map_err(|e| format!("cloning {vip}: {e}"))?;
        let mut reader = BufReader::new(stream);
        let mut backend: Option<String> = None;
        let mut exchanges = 0u64;
        while !thread_stop.load(Ordering::Relaxed) && started.elapsed() < MAX_LOAD_TIME {
            let fail = |what: &str| {
                format!(
                    "{vip}, after {exchanges} exchanges ({:?} in): {what}",
                    started.elapsed()
                )
            };
            writer
                .write_all(b"ping\n")
                .map_err(|e| fail(&format!("send: {e}")))?;
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => return Err(fail("the connection was closed")),
                Ok(_) => {}
                Err(e) => return Err(fail(&format!("receive: {e}"))),
            }
            let name = line.trim().to_owned();
            match &backend {
                None => backend = Some(name),
                Some(b) if *b == name => {}
                Some(b) => return Err(fail(&format!("answered by {name}, began with {b}"))),
            }
            exchanges += 1;
            thread::sleep(CHAT_PAUSE);
        }
        Ok(exchanges)
    });
    Load { stop, thread }
}

// ----- the scenario -----

/// A Service with one TCP port, and its slices (one file).
fn one_port_service(name: &str, vips: [&str; 2], port: u16, target: u16) -> String {
    let mut svc = Service::new(NAMESPACE, name);
    for vip in vips {
        svc = svc.cluster_ip(vip);
    }
    let mut docs = vec![svc.port("tcp", Protocol::Tcp, port, target).to_yaml()];
    for (family, addrs) in [
        (AddressType::IPv4, &BACKENDS_V4),
        (AddressType::IPv6, &BACKENDS_V6),
    ] {
        let mut s = EndpointSlice::new(NAMESPACE, &slice_name(name, family), name, family).port(
            "tcp",
            Protocol::Tcp,
            target,
        );
        for a in addrs {
            s = s.endpoint(Endpoint::ready(a));
        }
        docs.push(s.to_yaml());
    }
    proxy_tests::manifest::documents(&docs)
}

/// `web` and `chat`, with echo backends for `chat`, the proxy started and
/// serving.
fn fixture_with_chat() -> (Fixture, Vec<EchoBackend>) {
    let mut f = Fixture::new(Mode::Ebpf);
    let echoes = BACKENDS_V4
        .iter()
        .chain(BACKENDS_V6.iter())
        .map(|a| EchoBackend::start(sock(a, CHAT_TARGET)))
        .collect();
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    f.write(
        "chat.yaml",
        &one_port_service(CHAT, [CHAT_VIP4, CHAT_VIP6], CHAT_PORT, CHAT_TARGET),
    );
    f.start_proxy();
    f.wait_ready();
    f.wait_for(PROPAGATION, "chat to answer", || {
        [CHAT_VIP4, CHAT_VIP6]
            .into_iter()
            .all(|vip| long_lived_once(sock(vip, CHAT_PORT)))
    });
    (f, echoes)
}

/// One exchange with an echo backend through `vip`.
fn long_lived_once(vip: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&vip, PROBE) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(PROBE));
    if stream.write_all(b"ping\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.ends_with('\n')
}

/// The web VIPs and the names of every web TCP backend.
fn web_stream() -> Load<StreamReport> {
    let mut expected = names(&BACKENDS_V4, TCP_TARGET);
    expected.extend(names(&BACKENDS_V6, TCP_TARGET));
    steady_stream(
        vec![sock(WEB_VIP4, TCP_PORT), sock(WEB_VIP6, TCP_PORT)],
        expected,
    )
}

/// Waits until the running proxy's log says `needle`, failing at once when
/// the proxy exits.
fn wait_for_log(f: &mut Fixture, timeout: Duration, needle: &str) {
    let mut log = String::new();
    let mut exited = None;
    let seen = wait_until(timeout, || {
        if let Some(status) = f.proxy().exited() {
            exited = Some(status);
            return true;
        }
        log = f.log();
        log.contains(needle)
    });
    if let Some(status) = exited {
        panic!("while waiting for {needle:?} in the proxy's log, it exited with {status}");
    }
    assert!(
        seen,
        "expected the proxy to log {needle:?} within {timeout:?}; its log:\n{log}"
    );
}

/// SIGKILL as soon as (1 ms polls) the proxy's log says `needle`, plus `extra`.
fn kill_when_logged(proxy: &mut ProxyProcess, needle: &str, extra: Duration) {
    let deadline = Instant::now() + STARTUP;
    while !proxy.log().contains(needle) && proxy.exited().is_none() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(extra);
    proxy.kill().expect("kill -9 of the proxy");
}

fn assert_stream_clean(what: &str, report: &StreamReport, at_least: u64) {
    assert!(
        report.failed == 0,
        "{what}: expected no failed new connection, saw {} failures out of {} \
         (first ones: {:#?})",
        report.failed,
        report.failed + report.ok,
        report.failures
    );
    assert!(
        report.ok >= at_least,
        "{what}: expected at least {at_least} new connections to go through, saw {}",
        report.ok
    );
}

#[test]
fn twenty_kill_9_restarts_interrupt_no_connection() {
    let started = Instant::now();
    let (mut f, _echoes) = fixture_with_chat();
    let chats: Vec<_> = (0..LONG_LIVED)
        .map(|i| {
            let vip = if i % 2 == 0 { CHAT_VIP4 } else { CHAT_VIP6 };
            long_lived(sock(vip, CHAT_PORT))
        })
        .collect();
    let stream = web_stream();

    for i in 0..RESTARTS {
        f.proxy().kill().expect("kill -9 of the proxy");
        f.proxy = None;
        f.start_proxy();
        if i % 2 == 1 && i + 1 < RESTARTS {
            // Die somewhere in the start-up (about 70 ms here): loading,
            // verifying, adopting the maps, the first sync, or the takeover
            // of the links.
            thread::sleep(Duration::from_millis(((i * 11) % 80) as u64));
        } else {
            wait_for_log(&mut f, STARTUP, HOOKS_ATTACHED);
            thread::sleep(SERVE_BETWEEN_KILLS);
        }
    }
    // Traffic goes on a little under the last daemon.
    thread::sleep(Duration::from_millis(300));

    let report = stream.finish();
    let chat_results: Vec<_> = chats.into_iter().map(Load::finish).collect();
    eprintln!(
        "{RESTARTS} restarts in {:?}: {} new connections, long-lived: {chat_results:?}",
        started.elapsed(),
        report.ok
    );
    assert_stream_clean("new connections to web during the restarts", &report, 200);
    for (i, result) in chat_results.iter().enumerate() {
        match result {
            Ok(n) => assert!(
                *n >= 20,
                "long-lived connection {i}: expected at least 20 exchanges, saw {n}"
            ),
            Err(e) => panic!("long-lived connection {i} was interrupted: {e}"),
        }
    }
    f.assert_proxy_running();
    let log = f.log();
    assert!(
        !log.contains(" ERROR "),
        "the last proxy logged an error:\n{log}"
    );
}

#[test]
fn changes_made_while_down_apply_on_restart_and_others_never_blip() {
    const GONE_VIP4: &str = "10.96.0.40";
    const GONE_VIP6: &str = "fd00:96::40";
    const MOVED_VIP4: &str = "10.96.0.50";
    const MOVED_VIP6: &str = "fd00:96::50";
    const ADDED_VIP4: &str = "10.96.0.60";
    const ADDED_VIP6: &str = "fd00:96::60";
    let mut f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    let write_service = |f: &Fixture, name: &str, vips: [&str; 2], v4: &[&str], v6: &[&str]| {
        f.write(
            &format!("{name}.yaml"),
            &proxy_tests::manifest::documents(&[
                service(name, &vips, TCP_PORT, UDP_PORT),
                slice(
                    name,
                    &slice_name(name, AddressType::IPv4),
                    AddressType::IPv4,
                    v4,
                ),
                slice(
                    name,
                    &slice_name(name, AddressType::IPv6),
                    AddressType::IPv6,
                    v6,
                ),
            ]),
        );
    };
    write_service(
        &f,
        "gone",
        [GONE_VIP4, GONE_VIP6],
        &BACKENDS_V4,
        &BACKENDS_V6,
    );
    write_service(
        &f,
        "moved",
        [MOVED_VIP4, MOVED_VIP6],
        &BACKENDS_V4[..2],
        &BACKENDS_V6[..2],
    );
    f.start_proxy();
    f.wait_ready();
    let tcp = |vip: &str| sock(vip, TCP_PORT);
    for (vip, expected) in [
        (tcp(GONE_VIP4), names(&BACKENDS_V4, TCP_TARGET)),
        (tcp(GONE_VIP6), names(&BACKENDS_V6, TCP_TARGET)),
        (tcp(MOVED_VIP4), names(&BACKENDS_V4[..2], TCP_TARGET)),
        (tcp(MOVED_VIP6), names(&BACKENDS_V6[..2], TCP_TARGET)),
    ] {
        f.wait_for(PROPAGATION, &format!("{vip} to be served"), || {
            try_backends(Kind::Tcp, vip, 10).is_ok_and(|b| b.iter().all(|n| expected.contains(n)))
        });
    }
    for vip in [tcp(ADDED_VIP4), tcp(ADDED_VIP6)] {
        let result = Kind::Tcp.request(vip, PROBE);
        assert!(
            result.is_err(),
            "expected {vip} to be unrouted before its Service exists, saw {result:?}"
        );
    }

    let stream = web_stream();
    f.proxy().kill().expect("kill -9 of the proxy");
    f.proxy = None;
    // While no daemon runs: one Service deleted, one added, one moved.
    f.remove("gone.yaml");
    write_service(
        &f,
        "added",
        [ADDED_VIP4, ADDED_VIP6],
        &BACKENDS_V4,
        &BACKENDS_V6,
    );
    write_service(
        &f,
        "moved",
        [MOVED_VIP4, MOVED_VIP6],
        &BACKENDS_V4[2..],
        &BACKENDS_V6[2..],
    );
    thread::sleep(Duration::from_millis(200));
    f.start_proxy();
    wait_for_log(&mut f, STARTUP, HOOKS_ATTACHED);

    for (vip, expected) in [
        (tcp(ADDED_VIP4), names(&BACKENDS_V4, TCP_TARGET)),
        (tcp(ADDED_VIP6), names(&BACKENDS_V6, TCP_TARGET)),
        (tcp(MOVED_VIP4), names(&BACKENDS_V4[2..], TCP_TARGET)),
        (tcp(MOVED_VIP6), names(&BACKENDS_V6[2..], TCP_TARGET)),
    ] {
        f.wait_for(
            PROPAGATION,
            &format!("{vip} to be served by {expected:?} only"),
            || {
                try_backends(Kind::Tcp, vip, 10)
                    .is_ok_and(|b| b.iter().all(|n| expected.contains(n)))
            },
        );
        let seen = tally(Kind::Tcp, vip, 20);
        assert!(
            seen.keys().all(|n| expected.contains(n)),
            "{vip} after the restart: expected only {expected:?}, saw {seen:?}"
        );
    }
    for vip in [tcp(GONE_VIP4), tcp(GONE_VIP6)] {
        f.wait_for(
            PROPAGATION,
            &format!("the deleted Service's {vip} to be pruned"),
            || Kind::Tcp.request(vip, PROBE).is_err(),
        );
        for i in 0..3 {
            let result = Kind::Tcp.request(vip, PROBE);
            assert!(
                result.is_err(),
                "expected request {i} to the deleted Service's {vip} to fail, saw {result:?}"
            );
        }
    }
    let report = stream.finish();
    assert_stream_clean("web, untouched, during the restart", &report, 50);
    f.assert_proxy_running();
}

/// Turns this layout's pins into the layout from before versions existed
/// (`<pin>/maps`, `<pin>/links`): what a node running an older proxy has.
fn make_unversioned(pin_path: &Path) {
    let versioned = pin_path.join(format!("v{LAYOUT_VERSION}"));
    for dir in ["maps", "links"] {
        fs::rename(versioned.join(dir), pin_path.join(dir))
            .unwrap_or_else(|e| panic!("moving {dir} out of {}: {e}", versioned.display()));
    }
    fs::remove_dir(&versioned).unwrap_or_else(|e| panic!("removing {}: {e}", versioned.display()));
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    v.sort();
    v
}

#[test]
fn unversioned_pins_are_migrated_under_traffic() {
    let (mut f, _echoes) = fixture_with_chat();
    let status = f.proxy().stop().expect("stopping the proxy");
    assert!(status.success(), "expected exit 0 on SIGTERM, saw {status}");
    f.proxy = None;
    let pin_path = f.sandbox.pin_path();
    make_unversioned(&pin_path);
    assert_eq!(entries(&pin_path), ["links", "maps"]);

    // The old pins serve while the new daemon migrates.
    let chats: Vec<_> = [CHAT_VIP4, CHAT_VIP6]
        .into_iter()
        .map(|vip| long_lived(sock(vip, CHAT_PORT)))
        .collect();
    let stream = web_stream();
    thread::sleep(Duration::from_millis(200));
    // Daemons killed in the middle of the migration: right after loading
    // (the new maps exist, empty), during the first sync, and as soon as it
    // is written (while the links are being taken over). The old pins stay
    // until the end, and the next start resumes.
    let mut migrated = false;
    for (needle, extra) in MIGRATION_KILLS {
        f.start_proxy();
        let mut killed = f.proxy.take().expect("the proxy was started");
        kill_when_logged(&mut killed, needle, extra);
        migrated |= killed.log().contains(MIGRATED);
    }
    f.start_proxy();
    wait_for_log(&mut f, STARTUP, HOOKS_ATTACHED);
    migrated |= f.log().contains(MIGRATED);
    assert!(migrated, "expected one of the daemons to log {MIGRATED:?}");
    thread::sleep(Duration::from_millis(300));
    let report = stream.finish();
    let chat_results: Vec<_> = chats.into_iter().map(Load::finish).collect();

    assert_stream_clean("new connections to web during the migration", &report, 20);
    for (i, result) in chat_results.iter().enumerate() {
        if let Err(e) = result {
            panic!("long-lived connection {i} was interrupted by the migration: {e}");
        }
    }
    let version = format!("v{LAYOUT_VERSION}");
    assert_eq!(
        entries(&pin_path),
        [version.as_str()],
        "expected only the new layout's directory to be left"
    );
    let links = pin_path.join(&version).join("links");
    let cgroups = entries(&links);
    assert_eq!(
        cgroups.len(),
        1,
        "expected one cgroup's links, saw {cgroups:?}"
    );
    assert_eq!(
        entries(&links.join(&cgroups[0])).len(),
        8,
        "expected the 8 hooks pinned"
    );

    // The programs now use the new maps: a change reaches the dataplane.
    f.write_web_slices(&BACKENDS_V4[1..], &BACKENDS_V6[1..]);
    for (vip, removed) in [
        (sock(WEB_VIP4, TCP_PORT), BACKENDS_V4[0]),
        (sock(WEB_VIP6, TCP_PORT), BACKENDS_V6[0]),
    ] {
        let removed = backend_name(removed, TCP_TARGET);
        f.wait_for(
            PROPAGATION,
            &format!("{vip} to stop reaching {removed} after the migration"),
            || stopped_reaching(Kind::Tcp, vip, &removed),
        );
    }
    f.assert_proxy_running();
}

#[test]
fn pins_of_a_newer_layout_make_the_start_fail_and_are_left_alone() {
    newer_layout_refused("ebpf");
}

/// `--mode auto` does not fall back to userspace over a newer proxy's pins
/// (which would remove them): it refuses them like `ebpf`.
#[test]
fn pins_of_a_newer_layout_are_refused_in_auto_mode_too() {
    newer_layout_refused("auto");
}

fn newer_layout_refused(mode: &str) {
    let mut f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    let pin_path = f.sandbox.pin_path();
    let newer = LAYOUT_VERSION + 1;
    let newer_dir = pin_path.join(format!("v{newer}"));
    fs::create_dir_all(newer_dir.join("maps")).expect("creating the newer layout's directory");
    fs::create_dir_all(newer_dir.join("links")).expect("creating the newer layout's directory");

    f.proxy = Some(
        ProxyProcess::start_with_args(
            &proxy_tests::proxy_bin(),
            &f.sandbox,
            &f.sandbox.manifests_dir(),
            &["--mode", mode],
        )
        .unwrap_or_else(|e| panic!("starting the proxy in {mode} mode: {e}")),
    );
    let exited = wait_until(STARTUP, || f.proxy().exited().is_some());
    assert!(
        exited,
        "expected the proxy ({mode} mode) to refuse to start within {STARTUP:?}"
    );
    let status = f.proxy().exited().expect("exited");
    assert!(
        !status.success(),
        "expected a non-zero exit on pins of a newer layout ({mode} mode), saw {status}"
    );
    let log = f.log();
    for needle in [
        format!("layout version {newer}"),
        format!("this proxy uses layout version {LAYOUT_VERSION}"),
        format!("proxy cleanup --pin-path {}", pin_path.display()),
    ] {
        assert!(
            log.contains(&needle),
            "expected the error to say {needle:?}; the log:\n{log}"
        );
    }
    assert_eq!(
        entries(&pin_path),
        [format!("v{newer}")],
        "expected the pin path to be left as it was"
    );
    assert_eq!(entries(&newer_dir), ["links", "maps"]);
    assert!(entries(&newer_dir.join("maps")).is_empty());
}
