//! Where `getpeername` finds a translated TCP socket's frontend (issue 18):
//! `connect` records it in the socket's own storage (`SOCK_PEER`), not in
//! `SOCK_RNAT_V4` (the LRU insert was about half of a translated
//! `connect`). `getpeername` reads `SOCK_PEER` first and falls back to
//! `SOCK_RNAT_V4`, which still holds the TCP sockets an older daemon
//! translated before an upgrade (simulated here: the socket's `SOCK_PEER`
//! record removed, an old-style entry written in its place).

mod common;

use std::{
    net::{IpAddr, SocketAddr, TcpStream},
    os::fd::AsRawFd as _,
    path::PathBuf,
};

use aya::maps::{HashMap, Map, MapData, SkStorage};
use common::*;
use proxy_common::{Be16, Be32, LAYOUT_VERSION, SockPeer, SockRevNatKeyV4, SockRevNatV4, names};

fn pin(f: &Fixture, name: &str) -> PathBuf {
    f.sandbox
        .pin_path()
        .join(format!("v{LAYOUT_VERSION}"))
        .join("maps")
        .join(name)
}

fn sock_peer(f: &Fixture) -> SkStorage<MapData, SockPeer> {
    let pin = pin(f, names::SOCK_PEER);
    let data = MapData::from_pin(&pin)
        .unwrap_or_else(|e| panic!("opening the pinned map {}: {e}", pin.display()));
    SkStorage::try_from(Map::SkStorage(data)).expect("SOCK_PEER as socket storage")
}

fn sock_rnat_v4(f: &Fixture) -> HashMap<MapData, SockRevNatKeyV4, SockRevNatV4> {
    let pin = pin(f, names::SOCK_RNAT_V4);
    let data = MapData::from_pin(&pin)
        .unwrap_or_else(|e| panic!("opening the pinned map {}: {e}", pin.display()));
    HashMap::try_from(Map::LruHashMap(data)).expect("SOCK_RNAT_V4 as a hash map")
}

/// The socket's cookie (`SO_COOKIE`), as `bpf_get_socket_cookie` sees it.
fn cookie(stream: &TcpStream) -> u64 {
    let mut value: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of the sizes given, and
    // the descriptor is the stream's, open for the whole call.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            std::ptr::from_mut(&mut value).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "SO_COOKIE: {}", std::io::Error::last_os_error());
    value
}

fn v4(addr: SocketAddr) -> (Be32, Be16) {
    let IpAddr::V4(ip) = addr.ip() else {
        panic!("{addr} is not IPv4");
    };
    (Be32(u32::from(ip).to_be()), Be16(addr.port().to_be()))
}

#[test]
fn tcp_sockets_keep_their_frontend_in_socket_storage_and_old_entries_still_count() {
    let mut f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    f.start_proxy();
    f.wait_ready();
    let vip = sock(WEB_VIP4, TCP_PORT);
    f.wait_for(PROPAGATION, &format!("{vip} to be served"), || {
        Kind::Tcp.request(vip, PROBE).is_ok()
    });
    let mut storage = sock_peer(&f);
    let rnat = sock_rnat_v4(&f);
    let before = rnat.keys().count();

    let stream = TcpStream::connect_timeout(&vip, REQUEST).expect("connecting to the VIP");
    assert_eq!(stream.peer_addr().expect("peer address"), vip);
    let record = storage
        .get(&stream, 0)
        .expect("the translated socket has a SOCK_PEER record");
    let backend = SocketAddr::new(
        IpAddr::from([
            record.backend_addr[0],
            record.backend_addr[1],
            record.backend_addr[2],
            record.backend_addr[3],
        ]),
        u16::from_be(record.backend_port.0),
    );
    assert_eq!(record.family, 4, "{record:?}");
    assert!(
        BACKENDS_V4.contains(&backend.ip().to_string().as_str()) && backend.port() == TCP_TARGET,
        "the record names a backend of {vip}: {record:?}"
    );
    assert_eq!(
        (record.frontend_addr[..4].to_vec(), record.frontend_port),
        (
            match vip.ip() {
                IpAddr::V4(ip) => ip.octets().to_vec(),
                IpAddr::V6(_) => unreachable!(),
            },
            Be16(vip.port().to_be())
        ),
        "the record names the frontend: {record:?}"
    );
    assert_eq!(
        rnat.keys().count(),
        before,
        "a TCP connect writes no SOCK_RNAT_V4 entry"
    );

    // Without its record the socket shows its real peer: the record is what
    // made it show the VIP.
    storage
        .remove(&stream)
        .expect("removing the SOCK_PEER record");
    assert_eq!(stream.peer_addr().expect("peer address"), backend);

    // A socket an older daemon translated has its entry in SOCK_RNAT_V4.
    let (baddr, bport) = v4(backend);
    let (vaddr, vport) = v4(vip);
    let mut rnat = sock_rnat_v4(&f);
    rnat.insert(
        &SockRevNatKeyV4 {
            cookie: cookie(&stream),
            addr: baddr,
            port: bport,
            _pad: 0,
        },
        &SockRevNatV4 {
            addr: vaddr,
            port: vport,
            rev_nat_id: 1,
        },
        0,
    )
    .expect("writing an old-style SOCK_RNAT_V4 entry");
    assert_eq!(
        stream.peer_addr().expect("peer address"),
        vip,
        "getpeername falls back to SOCK_RNAT_V4"
    );
    f.assert_proxy_running();
}
