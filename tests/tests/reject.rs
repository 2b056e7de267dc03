//! A service without endpoints rejects: a TCP `connect()` fails at once with
//! ECONNREFUSED (semantics.md, "When there is no usable endpoint"), and so
//! does UDP (see `udp_refused` for how each mode shows it). The sandbox routes
//! untranslated VIPs into a dead end where a connect hangs, so a fast refusal
//! can only come from the proxy. In userspace mode the VIP is local and nothing
//! listens on its port: the kernel answers the SYN with a RST.

mod common;

use std::{
    io::ErrorKind,
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use common::*;
use proxy_tests::manifest::AddressType;

/// Far above a refused connect's real cost (microseconds), far below a hang.
const AT_ONCE: Duration = Duration::from_secs(1);

const EMPTY_VIP4: &str = "10.96.0.30";
const EMPTY_VIP6: &str = "fd00:96::30";
const ORPHAN_VIP4: &str = "10.96.0.31";

/// `Ok(how long it took)` when a connect to `vip` is refused.
fn refused_tcp(vip: SocketAddr, timeout: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let result = TcpStream::connect_timeout(&vip, timeout);
    let elapsed = start.elapsed();
    match result {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(elapsed),
        Err(e) => Err(format!("{e} ({:?}) after {elapsed:?}", e.kind())),
        Ok(s) => Err(format!(
            "a connection (getpeername {:?}) after {elapsed:?}",
            s.peer_addr()
        )),
    }
}

fn assert_refused_at_once(what: &str, vip: SocketAddr) {
    for i in 0..5 {
        match refused_tcp(vip, REQUEST) {
            Ok(elapsed) => assert!(
                elapsed < AT_ONCE,
                "{what}: connect {i} to {vip} was refused, but only after {elapsed:?}"
            ),
            Err(seen) => panic!(
                "{what}: expected connect {i} to {vip} to fail at once with ECONNREFUSED, \
                 saw {seen}"
            ),
        }
    }
}

both_modes! {
    fn tcp_connect_without_endpoints_is_refused_at_once(mode) {
        let mut f = Fixture::new(mode);
        f.write_web(&BACKENDS_V4, &BACKENDS_V6);
        // `empty`: slices with `endpoints: null`, as after scaling to zero.
        f.write(
            "empty-service.yaml",
            &service("empty", &[EMPTY_VIP4, EMPTY_VIP6], TCP_PORT, UDP_PORT),
        );
        for family in [AddressType::IPv4, AddressType::IPv6] {
            f.write(
                &format!("empty-slice-{family}.yaml"),
                &slice("empty", &slice_name("empty", family), family, &[]),
            );
        }
        // `orphan`: no slice at all.
        f.write(
            "orphan-service.yaml",
            &service("orphan", &[ORPHAN_VIP4], TCP_PORT, UDP_PORT),
        );
        f.start_proxy();
        f.wait_ready();

        let vips = [
            (
                "service with empty slices, IPv4",
                sock(EMPTY_VIP4, TCP_PORT),
            ),
            (
                "service with empty slices, IPv6",
                sock(EMPTY_VIP6, TCP_PORT),
            ),
            ("service without slices", sock(ORPHAN_VIP4, TCP_PORT)),
        ];
        for (what, vip) in vips {
            // `web` works, so the proxy has synced; allow for the odd straggler.
            f.wait_for(PROPAGATION, &format!("{what}: {vip} to refuse"), || {
                refused_tcp(vip, PROBE).is_ok()
            });
            assert_refused_at_once(what, vip);
        }
        f.assert_proxy_running();
    }

    fn udp_connect_without_endpoints_is_refused_at_once(mode) {
        let mut f = Fixture::new(mode);
        f.write_web(&BACKENDS_V4, &BACKENDS_V6);
        f.write(
            "empty-service.yaml",
            &service("empty", &[EMPTY_VIP4, EMPTY_VIP6], TCP_PORT, UDP_PORT),
        );
        for family in [AddressType::IPv4, AddressType::IPv6] {
            f.write(
                &format!("empty-slice-{family}.yaml"),
                &slice("empty", &slice_name("empty", family), family, &[]),
            );
        }
        f.start_proxy();
        f.wait_ready();

        for vip in [sock(EMPTY_VIP4, UDP_PORT), sock(EMPTY_VIP6, UDP_PORT)] {
            f.wait_for(
                PROPAGATION,
                &format!("UDP to {vip} to be refused"),
                || udp_refused(mode, vip, PROBE).is_ok(),
            );
            for i in 0..5 {
                match udp_refused(mode, vip, REQUEST) {
                    Ok(elapsed) => assert!(
                        elapsed < AT_ONCE,
                        "UDP request {i} to {vip} was refused, but only after {elapsed:?}"
                    ),
                    Err(seen) => panic!(
                        "expected UDP {i} to {vip} (no endpoints) to be refused at once \
                         with ECONNREFUSED ({mode} mode), saw {seen}"
                    ),
                }
            }
        }
        f.assert_proxy_running();
    }

    fn scaling_to_zero_refuses_and_scaling_up_serves_again(mode) {
        let mut f = Fixture::with_web(mode);
        let vips = [sock(WEB_VIP4, TCP_PORT), sock(WEB_VIP6, TCP_PORT)];

        f.write_web_slices(&[], &[]);
        for vip in vips {
            f.wait_for(
                PROPAGATION,
                &format!("{vip} to refuse after scaling to zero"),
                || refused_tcp(vip, PROBE).is_ok(),
            );
            assert_refused_at_once("web scaled to zero", vip);
        }

        f.write_web_slices(&BACKENDS_V4[..1], &BACKENDS_V6[..1]);
        for (vip, only) in vips.into_iter().zip([BACKENDS_V4[0], BACKENDS_V6[0]]) {
            let expected = backend_name(only, TCP_TARGET);
            f.wait_for(
                PROPAGATION,
                &format!("{vip} to serve again after scaling to one"),
                || try_backends(Kind::Tcp, vip, 3).is_ok_and(|b| b.iter().all(|n| *n == expected)),
            );
        }
        f.assert_proxy_running();
    }
}
