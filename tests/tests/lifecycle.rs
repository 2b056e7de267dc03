//! The daemon's lifecycle: on SIGTERM it exits 0 and leaves its programs
//! attached and its maps pinned, so the dataplane keeps serving without it; a
//! new daemon picks up from the pins (or, in userspace mode, its VIP routes)
//! and applies changes again. And drift (reliability.md, item 11): map
//! entries deleted or changed by hand, and hooks detached or unpinned by hand,
//! are put back by the periodic reconcile and counted in
//! `proxy_drift_repairs_total{kind}` (eBPF mode).

mod common;

use std::{
    fs,
    io::{Read as _, Write as _},
    net::TcpStream,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::maps::{HashMap, Map, MapData};
use common::*;
use proxy::dataplane::link_info::pinned_link;
use proxy_common::{
    BackendV4, Be16, Be32, LAYOUT_VERSION, ServiceKeyV4, ServiceValue, names, programs, proto,
};
use proxy_tests::{ProxyProcess, proxy_bin};

/// How long the proxy may take to exit after SIGTERM.
const EXIT: Duration = Duration::from_secs(5);

fn assert_web_serves_all(what: &str) {
    for (vip, backends) in [
        (sock(WEB_VIP4, TCP_PORT), &BACKENDS_V4),
        (sock(WEB_VIP6, TCP_PORT), &BACKENDS_V6),
    ] {
        let seen = tally(Kind::Tcp, vip, 60);
        assert_backends(
            &format!("{what}: TCP to {vip}"),
            &seen,
            &names(backends, TCP_TARGET),
        );
    }
    for (vip, backends) in [
        (sock(WEB_VIP4, UDP_PORT), &BACKENDS_V4),
        (sock(WEB_VIP6, UDP_PORT), &BACKENDS_V6),
    ] {
        let seen = tally(Kind::UdpUnconnected, vip, 60);
        assert_backends(
            &format!("{what}: UDP to {vip}"),
            &seen,
            &names(backends, UDP_TARGET),
        );
    }
}

// eBPF only: in userspace mode nothing serves once the daemon is gone (the
// proxies are the daemon); `modes.rs` covers its restarts.
#[test]
fn sigterm_exits_zero_and_leaves_the_dataplane_in_place() {
    let mut f = Fixture::with_web(Mode::Ebpf);
    let started = std::time::Instant::now();
    let status = f.proxy().stop().expect("stopping the proxy");
    let took = started.elapsed();
    assert!(
        status.success(),
        "expected the proxy to exit 0 on SIGTERM, it exited with {status} after {took:?}"
    );
    assert!(took < EXIT, "the proxy took {took:?} to exit after SIGTERM");

    let pins: Vec<_> = fs::read_dir(f.sandbox.pin_path())
        .expect("reading the pin path")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    assert!(
        !pins.is_empty(),
        "expected pinned objects under {} after exit, found none",
        f.sandbox.pin_path().display()
    );

    assert_web_serves_all("after the proxy exited");
}

both_modes! {
    /// In userspace mode the restarted proxy adopts its VIP routes and listens again.
    fn a_restarted_proxy_takes_over_and_applies_changes(mode) {
        let mut f = Fixture::with_web(mode);
        let status = f.proxy().stop().expect("stopping the proxy");
        assert!(status.success(), "expected exit 0 on SIGTERM, saw {status}");
        f.proxy = None;

        // Changed while no daemon runs: the first endpoint of each family is gone.
        f.write_web_slices(&BACKENDS_V4[1..], &BACKENDS_V6[1..]);
        f.start_proxy();
        for (vip, removed) in [
            (sock(WEB_VIP4, TCP_PORT), BACKENDS_V4[0]),
            (sock(WEB_VIP6, TCP_PORT), BACKENDS_V6[0]),
        ] {
            let removed = backend_name(removed, TCP_TARGET);
            f.wait_for(
                STARTUP,
                &format!("the restarted proxy to stop sending {vip} to {removed}"),
                || stopped_reaching(Kind::Tcp, vip, &removed),
            );
        }

        // And it keeps applying changes: all three are back.
        f.write_web_slices(&BACKENDS_V4, &BACKENDS_V6);
        f.wait_for(PROPAGATION, "all endpoints to be back", || {
            [
                (sock(WEB_VIP4, TCP_PORT), BACKENDS_V4[0]),
                (sock(WEB_VIP6, TCP_PORT), BACKENDS_V6[0]),
            ]
            .into_iter()
            .all(|(vip, back)| {
                let back = backend_name(back, TCP_TARGET);
                try_backends(Kind::Tcp, vip, 15).is_ok_and(|b| b.contains(&back))
            })
        });
        assert_web_serves_all("after a restart");
        f.assert_proxy_running();
    }
}

// ----- drift: what the periodic reconcile repairs -----
//
// The map and link tests are eBPF only (they tamper with the pinned maps and
// links); the userspace mode's drift is its VIP routes (the last test).

/// Where the drift tests' proxy serves metrics (loopback of the sandbox's
/// namespace).
const METRICS_ADDR: &str = "127.0.0.1:19249";
/// A short reconcile period, so repairs come quickly.
const RESYNC_MS: &str = "300";
/// How long a repair may take: a few reconcile periods.
const REPAIR: Duration = Duration::from_secs(5);

/// `web` served by a proxy that reconciles every [`RESYNC_MS`] and serves metrics.
fn drift_fixture() -> Fixture {
    let mut f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    let dir = f.sandbox.manifests_dir();
    f.proxy = Some(
        ProxyProcess::start_with_args(
            &proxy_bin(),
            &f.sandbox,
            &dir,
            &[
                "--mode",
                "ebpf",
                "--resync-interval-ms",
                RESYNC_MS,
                "--metrics-bind-address",
                METRICS_ADDR,
            ],
        )
        .unwrap_or_else(|e| panic!("starting the proxy: {e}")),
    );
    f.wait_ready();
    f
}

/// `proxy_drift_repairs_total{kind}` from /metrics (None when unreachable).
fn drift_repairs(kind: &str) -> Option<f64> {
    let addr: std::net::SocketAddr = METRICS_ADDR.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&addr, PROBE).ok()?;
    stream.set_read_timeout(Some(REQUEST)).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    let series = format!("proxy_drift_repairs_total{{kind=\"{kind}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
}

fn layout_dir(f: &Fixture) -> PathBuf {
    f.sandbox.pin_path().join(format!("v{LAYOUT_VERSION}"))
}

fn open_map<K: aya::Pod, V: aya::Pod>(f: &Fixture, name: &str) -> HashMap<MapData, K, V> {
    let pin = layout_dir(f).join("maps").join(name);
    let data = MapData::from_pin(&pin)
        .unwrap_or_else(|e| panic!("opening the pinned map {}: {e}", pin.display()));
    let map = Map::from_map_data(data).unwrap_or_else(|e| panic!("{name}: {e}"));
    HashMap::try_from(map).unwrap_or_else(|e| panic!("{name} as a hash map: {e}"))
}

fn web_frontend_key() -> ServiceKeyV4 {
    let std::net::IpAddr::V4(vip) = ip(WEB_VIP4) else {
        unreachable!("WEB_VIP4 is IPv4")
    };
    ServiceKeyV4 {
        addr: Be32::from_octets(vip.octets()),
        port: Be16::from_host(TCP_PORT),
        slot: 0,
        proto: proto::TCP,
        scope: proxy_common::scope::INTERNAL,
        _pad: [0; 2],
    }
}

#[test]
fn map_entries_deleted_or_changed_by_hand_are_repaired() {
    let mut f = drift_fixture();
    let vip = sock(WEB_VIP4, TCP_PORT);
    let mut services: HashMap<MapData, ServiceKeyV4, ServiceValue> = open_map(&f, names::SVC_V4);
    let mut backends: HashMap<MapData, u32, BackendV4> = open_map(&f, names::BACKEND_V4);
    let key = web_frontend_key();
    let frontend = services
        .get(&key, 0)
        .unwrap_or_else(|e| panic!("web's frontend entry is not in SVC_V4: {e}"));
    let before = drift_repairs("map_entry").expect("scraping /metrics");

    // Deleted by hand: web's IPv4 TCP frontend.
    services.remove(&key).expect("deleting web's frontend");
    // Restored with its backend count; its rev-NAT id may be a new one (the
    // entry that held the old one is what was deleted).
    f.wait_for(REPAIR, "the deleted frontend entry to be restored", || {
        services
            .get(&key, 0)
            .is_ok_and(|v| v.count == frontend.count && v.rev_nat_id != 0)
    });
    assert!(
        tally(Kind::Tcp, vip, 10).keys().count() >= 1,
        "{vip} serves again"
    );

    // Changed by hand: a backend pointed at a port nobody listens on.
    let (id, backend) = backends
        .iter()
        .filter_map(Result::ok)
        .find(|(_, b)| b.proto == proto::TCP)
        .expect("a TCP backend in BACKEND_V4");
    let wrong = BackendV4 {
        port: Be16::from_host(9),
        ..backend
    };
    backends.insert(&id, &wrong, 0).expect("changing a backend");
    // Repaired: the backend is back (perhaps under a new id, with the slots
    // pointing at it) and the wrong entry is gone.
    f.wait_for(REPAIR, "the changed backend entry to be repaired", || {
        let now: Vec<BackendV4> = backends
            .iter()
            .filter_map(|e| e.ok().map(|(_, b)| b))
            .collect();
        now.contains(&backend) && !now.contains(&wrong)
    });
    assert_web_serves_all("after the map entries were repaired");
    let after = drift_repairs("map_entry").expect("scraping /metrics");
    assert!(
        after >= before + 2.0,
        "expected proxy_drift_repairs_total{{kind=\"map_entry\"}} to count both repairs: \
         {before} before, {after} after"
    );
    f.assert_proxy_running();
}

/// `BPF_LINK_DETACH` on the link pinned at `pin`, as `bpftool link detach` does.
fn detach_link(pin: &Path) {
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    #[repr(C)]
    struct LinkDetach {
        link_fd: u32,
    }
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_DETACH: libc::c_long = 34;
    let path = std::ffi::CString::new(pin.as_os_str().as_encoded_bytes()).expect("a pin path");
    let mut get = ObjGet {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    // SAFETY: a valid `bpf_attr` for BPF_OBJ_GET; `path` outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &mut get as *mut ObjGet,
            std::mem::size_of::<ObjGet>(),
        )
    };
    assert!(
        fd >= 0,
        "BPF_OBJ_GET {}: {}",
        pin.display(),
        std::io::Error::last_os_error()
    );
    let mut detach = LinkDetach { link_fd: fd as u32 };
    // SAFETY: a valid `bpf_attr` for BPF_LINK_DETACH on the fd just opened.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_DETACH,
            &mut detach as *mut LinkDetach,
            std::mem::size_of::<LinkDetach>(),
        )
    };
    let error = std::io::Error::last_os_error();
    // SAFETY: `fd` is ours, from BPF_OBJ_GET above, and closed once.
    unsafe { libc::close(fd as i32) };
    assert!(rc == 0, "BPF_LINK_DETACH {}: {error}", pin.display());
}

#[test]
fn hooks_detached_or_unpinned_by_hand_are_reattached() {
    let mut f = drift_fixture();
    let cgroup_id = fs::metadata(f.sandbox.cgroup_path())
        .expect("the sandbox's cgroup")
        .ino();
    let links = layout_dir(&f)
        .join("links")
        .join(format!("cgroup-{cgroup_id}"));
    let attached = |program: &str| {
        pinned_link(&links.join(program))
            .ok()
            .flatten()
            .is_some_and(|s| s.attached_to(cgroup_id))
    };
    for program in [programs::CONNECT4, programs::CONNECT6] {
        assert!(attached(program), "expected {program} attached at first");
    }
    let before = drift_repairs("link").expect("scraping /metrics");

    // Detached: the pin stays, the hook is gone from the cgroup.
    detach_link(&links.join(programs::CONNECT4));
    // Unpinned: nothing else holds the link, so it is released.
    fs::remove_file(links.join(programs::CONNECT6)).expect("removing connect6's pin");

    f.wait_for(REPAIR, "both hooks to be attached again", || {
        attached(programs::CONNECT4) && attached(programs::CONNECT6)
    });
    f.wait_for(REPAIR, "both repairs to be counted", || {
        drift_repairs("link").is_some_and(|n| n >= before + 2.0)
    });
    assert_web_serves_all("after the hooks were re-attached");
    let log = f.log();
    for (program, found) in [
        (programs::CONNECT4, "link_detached"),
        (programs::CONNECT6, "pin_missing"),
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("drift repaired") && l.contains(program) && l.contains(found)),
            "expected a log line about re-attaching {program} ({found}); the log:\n{log}"
        );
    }

    // Detached while no daemon runs: the next one starts, and re-attaches it
    // instead of failing to take the dead link over.
    let status = f.proxy().stop().expect("stopping the proxy");
    assert!(status.success(), "expected exit 0 on SIGTERM, saw {status}");
    f.proxy = None;
    detach_link(&links.join(programs::CONNECT4));
    assert!(
        !attached(programs::CONNECT4),
        "connect4 should be detached now"
    );
    f.proxy = Some(
        ProxyProcess::start_with_args(
            &proxy_bin(),
            &f.sandbox,
            &f.sandbox.manifests_dir(),
            &["--mode", "ebpf", "--metrics-bind-address", METRICS_ADDR],
        )
        .unwrap_or_else(|e| panic!("restarting the proxy: {e}")),
    );
    f.wait_for(STARTUP, "the restarted proxy to re-attach connect4", || {
        attached(programs::CONNECT4)
    });
    assert_web_serves_all("after a restart found a hook detached");
    f.assert_proxy_running();
}

/// Userspace mode: a VIP route deleted by hand is put back by the reconcile
/// (the VIP serves again), and counted in `proxy_drift_repairs_total{kind="route"}`.
#[test]
fn a_vip_route_deleted_by_hand_is_repaired_in_userspace_mode() {
    let mut f = Fixture::new(Mode::Userspace);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    f.start_proxy_with(&[
        "--resync-interval-ms",
        RESYNC_MS,
        "--metrics-bind-address",
        METRICS_ADDR,
    ]);
    f.wait_ready();
    let routes = |f: &Fixture| {
        f.sandbox
            .local_routes(proxy::config::ROUTE_PROTOCOL)
            .expect("listing the VIP routes")
    };
    assert!(routes(&f).contains(&ip(WEB_VIP4)), "{:?}", routes(&f));
    let before = drift_repairs("route").expect("scraping /metrics");

    f.sandbox
        .ip(&format!(
            "route del local {WEB_VIP4}/32 dev lo table local proto {}",
            proxy::config::ROUTE_PROTOCOL
        ))
        .expect("deleting web's VIP route");
    assert!(
        proxy_tests::wait_until(REPAIR, || routes(&f).contains(&ip(WEB_VIP4))),
        "expected the deleted VIP route to be put back within {REPAIR:?}: {:?}",
        routes(&f)
    );
    f.wait_for(REPAIR, "the repair to be counted", || {
        drift_repairs("route").is_some_and(|n| n > before)
    });
    let vip = sock(WEB_VIP4, TCP_PORT);
    assert!(
        tally(Kind::Tcp, vip, 10).keys().count() >= 1,
        "{vip} serves again"
    );
    f.assert_proxy_running();
}
