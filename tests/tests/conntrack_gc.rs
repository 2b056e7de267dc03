//! The conntrack GC and socket rev-NAT entries: the socket hooks record, for
//! each translated socket, which frontend it asked for (`SOCK_RNAT_V4`); the
//! daemon's GC deletes the entries of sockets that are closed (checked
//! against the live sockets' cookies, sock_diag) and keeps those of open
//! ones. (Expired per-packet flows: `northsouth.rs`,
//! `finished_flows_leave_conntrack_within_a_gc_period`.)

mod common;

use std::{io::Write as _, net::TcpStream, time::Duration};

use aya::maps::{HashMap, Map, MapData};
use common::*;
use proxy_common::{LAYOUT_VERSION, SockRevNatKeyV4, SockRevNatV4, names};

/// The cookies of the entries in the pinned `SOCK_RNAT_V4`.
fn sock_rnat_v4(f: &Fixture) -> Vec<u64> {
    let pin = f
        .sandbox
        .pin_path()
        .join(format!("v{LAYOUT_VERSION}"))
        .join("maps")
        .join(names::SOCK_RNAT_V4);
    let data = MapData::from_pin(&pin)
        .unwrap_or_else(|e| panic!("opening the pinned map {}: {e}", pin.display()));
    let map: HashMap<MapData, SockRevNatKeyV4, SockRevNatV4> =
        HashMap::try_from(Map::LruHashMap(data)).expect("SOCK_RNAT_V4 as a hash map");
    map.keys()
        .filter_map(Result::ok)
        .map(|k| k.cookie)
        .collect()
}

#[test]
fn closed_sockets_lose_their_rev_nat_entries_and_open_ones_keep_them() {
    let mut f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    f.start_proxy_with(&["--conntrack-gc-interval=1s"]);
    f.wait_ready();
    let vip = sock(WEB_VIP4, TCP_PORT);
    f.wait_for(PROPAGATION, &format!("{vip} to be served"), || {
        Kind::Tcp.request(vip, PROBE).is_ok()
    });
    // An open connection, and 20 that are closed at once.
    let mut open = TcpStream::connect_timeout(&vip, REQUEST).expect("connecting to the VIP");
    open.write_all(b"hello\n").expect("writing");
    for i in 0..20 {
        Kind::Tcp
            .request(vip, REQUEST)
            .unwrap_or_else(|e| panic!("request {i} to {vip}: {e}"));
    }
    let before = sock_rnat_v4(&f).len();
    assert!(before >= 21, "21 translated sockets, {before} entries");
    let mut left = before;
    let cleaned = proxy_tests::wait_until(Duration::from_secs(10), || {
        left = sock_rnat_v4(&f).len();
        left == 1
    });
    assert!(
        cleaned,
        "only the open socket's entry must be left within a few GC periods (1 s); {left} of \
         {before} left\n{}",
        f.log()
    );
    // The open socket still works, and still shows the VIP as its peer.
    assert_eq!(open.peer_addr().expect("peer address"), vip);
    f.assert_proxy_running();
}
