//! A bounded spoofed SYN flood at a SNATed NodePort (issue 19, item 1), with
//! real packets in the two-node [`Topology`](proxy_tests::northsouth::Topology):
//! the client's namespace sends 300,000 SYNs from random spoofed sources in
//! `100.64.0.0/10` (routed nowhere: the backends' SYN-ACKs die on node 1)
//! through a raw socket to two of node 1's NodePorts, half each:
//! - `flood`, whose only endpoint is on node 2 (`externalTrafficPolicy:
//!   Cluster`): every flow is SNATed to node 1 and needs one of the ~28,000
//!   source ports towards that backend;
//! - `flood-local` (`externalTrafficPolicy: Local`, its endpoint on node 1):
//!   not SNATed, so nothing but conntrack bounds its flows.
//!
//! During the flood an idle connection and a streaming one to `flood` (made
//! before it) must never be reset, and must keep working after it; a
//! legitimate client makes at least [`ATTEMPTS`] new connections to `flood`
//! while the flood goes on, and at least 95 % of them must succeed. Before
//! the pending conntrack map, the flood's unanswered flows held every SNAT
//! port for a minute (no new connection got through) and all went into the
//! conntrack LRU of established flows, which only the kernel LRU's
//! preference for entries looked up since kept from evicting the idle
//! connection. Now `proxy inspect conntrack` must show none of them there.

#[expect(
    dead_code,
    reason = "this file uses part of the shared north-south world"
)]
mod northsouth_world;

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use proxy_tests::{
    Mode, TcpSession,
    manifest::{AddressType, Endpoint, EndpointSlice, Protocol, Service},
    northsouth::{CLIENT_V4, NODE1_V4, Place},
    proxy_bin, tcp_request_timeout, wait_until,
};

use northsouth_world::*;

const NODE_PORT: u16 = 30080;
/// `flood`'s only endpoint: on node 2, so every flow is SNATed.
const BACKEND: Pod = Pod(2, 1);
/// `flood-local`'s NodePort and endpoint (on node 1).
const LOCAL_NODE_PORT: u16 = 30081;
const LOCAL_BACKEND: Pod = Pod(1, 1);
/// SYNs sent before the client starts: the pending map (16,384 entries, two
/// per flow) is full several times over by then.
const FLOOD_WARMUP: u64 = 40_000;
/// SYNs sent (more entries than `CT_V4` holds, at two per flow), and how
/// long that may take at most.
const FLOOD: u64 = 300_000;
const FLOOD_TIME: Duration = Duration::from_secs(30);
/// New connections the legitimate client makes during the flood.
const ATTEMPTS: usize = 100;
/// Failures allowed among them (95 % must succeed); one more ends the test.
const MAX_FAILURES: usize = ATTEMPTS / 20;
/// Each legitimate connection's connect and request (past one SYN
/// retransmission).
const CONNECT: Duration = Duration::from_millis(2500);
/// Between two requests of the streaming connection.
const STREAM_PACE: Duration = Duration::from_millis(20);

fn frontend() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(NODE1_V4), NODE_PORT)
}

/// The flood's outcome.
#[derive(Debug)]
struct Flood {
    sent: u64,
    elapsed: Duration,
}

/// What the legitimate client saw.
#[derive(Debug, Default)]
struct Client {
    attempts: usize,
    succeeded: usize,
    /// Attempts that ended while the flood was still going.
    during_flood: usize,
    errors: Vec<String>,
}

/// What the streaming connection saw.
#[derive(Debug, Default)]
struct Stream {
    requests: u64,
    error: Option<String>,
}

#[test]
fn syn_flood_spares_established_flows_and_new_connections() {
    let mut w = World::with_pods(Mode::Ebpf, &[BACKEND, LOCAL_BACKEND]);
    // Node 1's ephemeral ports as Linux's default (the sandbox widens them
    // to 10000-65000), so `--snat-port-range auto` gives the SNAT its
    // default 28,976 ports (1024-29999), not 1024-9999: the pending map's
    // 8,192 would hold most of those. Node 1 is this thread's namespace.
    std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "32768 60999")
        .expect("setting node 1's ephemeral ports");
    let svc = Service::new(NAMESPACE, "flood")
        .cluster_ip("10.96.0.50")
        .port("http", Protocol::Tcp, TCP_PORT, TCP_TARGET)
        .service_type("NodePort")
        .node_port("http", NODE_PORT);
    w.write("flood-service.yaml", &svc.to_yaml());
    let slice = EndpointSlice::new(NAMESPACE, "flood-4xk2p", "flood", AddressType::IPv4)
        .port("http", Protocol::Tcp, TCP_TARGET)
        .endpoint(Endpoint::ready(BACKEND.addr(AddressType::IPv4)).on_node(BACKEND.node_name()));
    w.write("flood-slice.yaml", &slice.to_yaml());
    let local = Service::new(NAMESPACE, "flood-local")
        .cluster_ip("10.96.0.51")
        .port("http", Protocol::Tcp, TCP_PORT, TCP_TARGET)
        .service_type("NodePort")
        .external_traffic_policy("Local")
        .node_port("http", LOCAL_NODE_PORT);
    w.write("flood-local-service.yaml", &local.to_yaml());
    let slice = EndpointSlice::new(
        NAMESPACE,
        "flood-local-7bq2x",
        "flood-local",
        AddressType::IPv4,
    )
    .port("http", Protocol::Tcp, TCP_TARGET)
    .endpoint(
        Endpoint::ready(LOCAL_BACKEND.addr(AddressType::IPv4)).on_node(LOCAL_BACKEND.node_name()),
    );
    w.write("flood-local-slice.yaml", &slice.to_yaml());
    w.start_proxy(&[]);
    let local_frontend = SocketAddr::new(IpAddr::V4(NODE1_V4), LOCAL_NODE_PORT);
    w.wait_for(STARTUP, "both NodePorts to be served", |w| {
        w.client(|| {
            tcp_request_timeout(frontend(), PROBE).is_ok()
                && tcp_request_timeout(local_frontend, PROBE).is_ok()
        })
    });

    // The established flows: one idle, one streaming.
    let mut idle = w
        .client(|| TcpSession::open(frontend(), REQUEST))
        .unwrap_or_else(|e| panic!("opening the idle connection: {e}"));
    idle.request()
        .unwrap_or_else(|e| panic!("the idle connection's first request: {e}"));
    let mut streaming = w
        .client(|| TcpSession::open(frontend(), REQUEST))
        .unwrap_or_else(|e| panic!("opening the streaming connection: {e}"));

    let sent = AtomicU64::new(0);
    let flood_done = AtomicBool::new(false);
    let (flood, client, stream) = std::thread::scope(|s| {
        let flood = s.spawn(|| {
            let out = w
                .topo
                .in_ns(Place::Client, || {
                    flood_syns(NODE1_V4, [NODE_PORT, LOCAL_NODE_PORT], &sent)
                })
                .unwrap_or_else(|e| panic!("entering the client namespace: {e}"));
            flood_done.store(true, Ordering::Relaxed);
            out
        });
        let stream = s.spawn(|| {
            let mut out = Stream::default();
            while !flood_done.load(Ordering::Relaxed) {
                match streaming.request() {
                    Ok(_) => out.requests += 1,
                    Err(e) => {
                        out.error = Some(e.to_string());
                        break;
                    }
                }
                std::thread::sleep(STREAM_PACE);
            }
            out
        });
        let client = s.spawn(|| {
            let warm = wait_until(FLOOD_TIME, || {
                sent.load(Ordering::Relaxed) >= FLOOD_WARMUP || flood_done.load(Ordering::Relaxed)
            });
            let out = w
                .topo
                .in_ns(Place::Client, || legitimate_client(&flood_done))
                .unwrap_or_else(|e| panic!("entering the client namespace: {e}"));
            (warm, out)
        });
        (
            flood.join().expect("the flood thread"),
            client.join().expect("the client thread"),
            stream.join().expect("the streaming thread"),
        )
    });
    let flood = flood.unwrap_or_else(|e| panic!("the flood's raw socket: {e}"));
    let (warm, client) = client;
    let counters = [
        "tc_ct_pending_created",
        "tc_ct_promoted",
        "tc_snat_port_reclaimed",
        "tc_snat_ports_exhausted",
    ]
    .map(|reason| {
        format!(
            "{reason}={}",
            stat(&w, reason).map_or("-".into(), |n| n.to_string())
        )
    });
    eprintln!(
        "flood: {} SYNs in {:.1?}; client: {}/{} succeeded ({} during the flood); streaming: {} \
         requests; {}",
        flood.sent,
        flood.elapsed,
        client.succeeded,
        client.attempts,
        client.during_flood,
        stream.requests,
        counters.join(" ")
    );
    assert!(
        warm,
        "the flood sent fewer than {FLOOD_WARMUP} SYNs in {FLOOD_TIME:?}"
    );

    // Established flows: never reset, and still working.
    assert_eq!(
        stream.error, None,
        "the streaming connection failed during the flood after {} requests",
        stream.requests
    );
    streaming
        .request()
        .unwrap_or_else(|e| panic!("the streaming connection after the flood: {e}"));
    idle.request()
        .unwrap_or_else(|e| panic!("the idle connection after the flood: {e}"));

    // New connections during the flood.
    assert!(
        client.succeeded * 100 >= client.attempts * 95 && client.attempts >= ATTEMPTS,
        "only {} of {} new connections succeeded during the flood ({}); errors: {:?}",
        client.succeeded,
        client.attempts,
        counters.join(" "),
        client.errors
    );
    assert!(
        client.during_flood >= ATTEMPTS,
        "the flood ended before the client's attempts: {} of {} during it ({} SYNs sent)",
        client.during_flood,
        client.attempts,
        flood.sent
    );

    // `proxy inspect conntrack`: the flood's flows are all pending, none
    // established; the client's are established.
    let flows = conntrack_by_source(&w);
    assert!(
        flows.spoofed_pending > 0 && flows.spoofed_established == 0,
        "the flood's flows must be pending only: {flows:?}; for example {:?}",
        flows.sample
    );
    assert!(
        flows.client_established >= 2,
        "the client's idle and streaming flows are not established: {flows:?}"
    );
}

/// New connections (connect, one request) until [`ATTEMPTS`] were made, or
/// more than [`MAX_FAILURES`] failed (the goal is then out of reach).
fn legitimate_client(flood_done: &AtomicBool) -> Client {
    let mut out = Client::default();
    while out.attempts < ATTEMPTS && out.attempts - out.succeeded <= MAX_FAILURES {
        out.attempts += 1;
        let result = TcpSession::open(frontend(), CONNECT).and_then(|mut s| s.request());
        if !flood_done.load(Ordering::Relaxed) {
            out.during_flood += 1;
        }
        match result {
            Ok(_) => out.succeeded += 1,
            Err(e) => out.errors.push(e.to_string()),
        }
    }
    out
}

/// Sends [`FLOOD`] spoofed SYNs (or as many as [`FLOOD_TIME`] allows) to
/// `ports` of `dst`, alternately, from the calling thread's namespace.
/// `sent` counts them as they go.
fn flood_syns(dst: Ipv4Addr, ports: [u16; 2], sent: &AtomicU64) -> io::Result<Flood> {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let to = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(dst).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let start = Instant::now();
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    let mut n = 0_u64;
    while n < FLOOD {
        if n.is_multiple_of(1024) && start.elapsed() > FLOOD_TIME {
            break;
        }
        let r = rng.next();
        // 100.64.0.0/10, a random port above 1023.
        let src = Ipv4Addr::from(0x6440_0000 | (r as u32 & 0x003f_ffff));
        let sport = 1024 + ((r >> 32) % 64_000) as u16;
        let target = SocketAddrV4::new(dst, ports[(n % 2) as usize]);
        let packet = syn(SocketAddrV4::new(src, sport), target, (r >> 16) as u32);
        // SAFETY: `packet` and `to` are valid for the lengths given.
        let done = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const to).cast(),
                len,
            )
        };
        if done < 0 {
            let e = io::Error::last_os_error();
            // A full queue drops the packet, as a congested link would.
            if e.raw_os_error() != Some(libc::ENOBUFS) {
                return Err(e);
            }
        }
        n += 1;
        sent.store(n, Ordering::Relaxed);
    }
    Ok(Flood {
        sent: n,
        elapsed: start.elapsed(),
    })
}

/// An IPv4 TCP SYN from `src` to `dst` (the kernel fills in the IP checksum,
/// the total length and the ID of an `IPPROTO_RAW` packet).
fn syn(src: SocketAddrV4, dst: SocketAddrV4, seq: u32) -> [u8; 40] {
    let mut p = [0_u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40_u16.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64; // TTL
    p[9] = 6; // TCP
    p[12..16].copy_from_slice(&src.ip().octets());
    p[16..20].copy_from_slice(&dst.ip().octets());
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&src.port().to_be_bytes());
    t[2..4].copy_from_slice(&dst.port().to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 5 << 4; // data offset: 5 words
    t[13] = 0x02; // SYN
    t[14..16].copy_from_slice(&64_240_u16.to_be_bytes());
    let mut sum = 0_u32;
    for pair in src
        .ip()
        .octets()
        .chunks(2)
        .chain(dst.ip().octets().chunks(2))
    {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    sum += 6 + 20; // protocol, TCP length
    for pair in t.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    t[16..18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p
}

/// A small PRNG (xorshift64): spoofed sources need no quality.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One `STATS` reason's count (`proxy inspect stats --output json`); `None`
/// when the binary does not know it.
fn stat(w: &World, reason: &str) -> Option<u64> {
    let out = std::process::Command::new(proxy_bin())
        .args(["inspect", "stats", "--output", "json", "--pin-path"])
        .arg(w.sandbox.pin_path())
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["stats"]
        .as_array()?
        .iter()
        .find(|e| e["reason"] == reason)?["count"]
        .as_u64()
}

/// Forward flows in `proxy inspect conntrack`, by source and map.
#[derive(Debug)]
struct Flows {
    spoofed_pending: usize,
    /// Not flagged pending (an older binary flags none).
    spoofed_established: usize,
    client_established: usize,
    /// A few of the spoofed established ones, for the failure message.
    sample: Vec<String>,
}

/// Counts the forward flows of `proxy inspect conntrack --output json`.
fn conntrack_by_source(w: &World) -> Flows {
    let out = std::process::Command::new(proxy_bin())
        .args(["inspect", "conntrack", "--output", "json", "--pin-path"])
        .arg(w.sandbox.pin_path())
        .output()
        .expect("running proxy inspect conntrack");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("conntrack JSON");
    let flows = v["flows"].as_array().expect("a flows array");
    let forward_from = |f: &&serde_json::Value, pending: bool, spoofed: bool| {
        let src: Option<SocketAddr> = f["src"].as_str().and_then(|s| s.parse().ok());
        let from_spoofed = src.is_some_and(|a| match a.ip() {
            IpAddr::V4(ip) => u32::from(ip) & 0xffc0_0000 == 0x6440_0000,
            IpAddr::V6(_) => false,
        });
        let from_client = src.is_some_and(|a| a.ip() == IpAddr::V4(CLIENT_V4));
        f["direction"] == "forward"
            && (f["pending"] == true) == pending
            && if spoofed { from_spoofed } else { from_client }
    };
    let count = |pending, spoofed| {
        flows
            .iter()
            .filter(|f| forward_from(f, pending, spoofed))
            .count()
    };
    Flows {
        spoofed_pending: count(true, true),
        spoofed_established: count(false, true),
        client_established: count(false, false),
        sample: flows
            .iter()
            .filter(|f| forward_from(f, false, true))
            .take(3)
            .map(ToString::to_string)
            .collect(),
    }
}
