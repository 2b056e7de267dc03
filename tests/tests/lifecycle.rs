//! The daemon's lifecycle: on SIGTERM it exits 0 and leaves its programs
//! attached and its maps pinned, so the dataplane keeps serving without it; a
//! new daemon picks up from the pins (or, in userspace mode, its VIP routes)
//! and applies changes again.

mod common;

use std::{fs, time::Duration};

use common::*;

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
                || try_backends(Kind::Tcp, vip, 15).is_ok_and(|b| !b.contains(&removed)),
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
