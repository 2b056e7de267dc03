//! `loadBalancerSourceRanges` for in-cluster clients whose `connect()` and
//! `sendmsg()` the socket hooks translate: node processes and pods under the
//! proxy's cgroup. The hooks run before the kernel picks the source address,
//! so the check is made by `sock_egress` (`cgroup_skb/egress`) on the first
//! packet, against the source the kernel chose; the program is attached only
//! while some Service has ranges.
//!
//! The world: the common fixture (backends on the sandbox's `lo`, the test
//! process in the proxy's cgroup, the sandbox's namespace as the node), a
//! dual-stack LoadBalancer Service `lbsr` over the same backends, and two pod
//! namespaces ([`PodNetns`], 10.250.<i>.2 and fd00:250:<i>::2) whose clients
//! are threads of the test process: under the cgroup, as a pod's processes
//! are under the node's. Node clients bind a node address first (the source
//! a node process's route would pick).

mod common;

use std::{
    io::{self, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    os::fd::FromRawFd as _,
    path::Path,
    time::Duration,
};

use common::*;
use proxy_tests::{
    Reply,
    manifest::{AddressType, Protocol, Service},
    northsouth::in_netns,
    pod::PodNetns,
    proxy_bin,
};

const LB: &str = "lbsr";
const LB_V4: &str = "203.0.113.20";
const LB_V6: &str = "fd00:203::20";
/// Node addresses the node clients bind.
const NODE_V4: &str = "192.168.77.1";
const NODE_V6: &str = "fd00:77::1";
/// How long a denied request is given before it counts as not answered.
const DENIED: Duration = Duration::from_millis(400);

/// The dual-stack LoadBalancer Service `lbsr` (`http` 80/TCP, `dns` 53/UDP)
/// with `loadBalancerSourceRanges` `ranges`.
fn lb_service(ranges: &[String]) -> String {
    let mut svc = Service::new(NAMESPACE, LB)
        .service_type("LoadBalancer")
        .cluster_ip("10.96.0.70")
        .cluster_ip("fd00:96::70")
        .port("http", Protocol::Tcp, TCP_PORT, TCP_TARGET)
        .port("dns", Protocol::Udp, UDP_PORT, UDP_TARGET)
        .node_port("http", 30082)
        .node_port("dns", 30055)
        .load_balancer_ingress(LB_V4)
        .load_balancer_ingress(LB_V6);
    for r in ranges {
        svc = svc.load_balancer_source_range(r);
    }
    svc.to_yaml()
}

fn write_lb(f: &Fixture, ranges: &[String]) {
    f.write("lbsr-service.yaml", &lb_service(ranges));
}

/// Who sends: a pod (its namespace), or the node bound to its address.
#[derive(Clone, Copy)]
enum Client<'a> {
    Pod(&'a PodNetns),
    Node,
}

impl std::fmt::Debug for Client<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Client::Pod(pod) => write!(f, "pod {}", pod.v4()),
            Client::Node => write!(f, "node {NODE_V4}"),
        }
    }
}

impl Client<'_> {
    fn source(self, family: AddressType) -> IpAddr {
        match (self, family) {
            (Client::Pod(pod), AddressType::IPv4) => pod.v4().into(),
            (Client::Pod(pod), AddressType::IPv6) => pod.v6().into(),
            (Client::Node, AddressType::IPv4) => ip(NODE_V4),
            (Client::Node, AddressType::IPv6) => ip(NODE_V6),
        }
    }

    /// A `/32` or `/128` range of this client's source.
    fn range(self, family: AddressType) -> String {
        let bits = match family {
            AddressType::IPv4 => 32,
            AddressType::IPv6 => 128,
        };
        format!("{}/{bits}", self.source(family))
    }

    /// One request of `kind` to the LoadBalancer IP of `family`.
    fn request(self, kind: Kind, family: AddressType, timeout: Duration) -> io::Result<Reply> {
        let (lb, port) = match (family, kind) {
            (AddressType::IPv4, Kind::Tcp) => (LB_V4, TCP_PORT),
            (AddressType::IPv4, _) => (LB_V4, UDP_PORT),
            (AddressType::IPv6, Kind::Tcp) => (LB_V6, TCP_PORT),
            (AddressType::IPv6, _) => (LB_V6, UDP_PORT),
        };
        let to = sock(lb, port);
        match self {
            Client::Pod(pod) => in_netns(&pod.netns_path(), || kind.request(to, timeout))
                .unwrap_or_else(|e| panic!("entering {}: {e}", pod.name())),
            Client::Node => bound_request(kind, self.source(family), to, timeout),
        }
    }
}

/// A request from a socket bound to `source` first (a node process's source).
fn bound_request(
    kind: Kind,
    source: IpAddr,
    to: SocketAddr,
    timeout: Duration,
) -> io::Result<Reply> {
    let from = SocketAddr::new(source, 0);
    let mut buf = [0u8; 512];
    let n = match kind {
        Kind::Tcp => {
            let mut s = tcp_bound_connect(from, to, timeout)?;
            s.set_read_timeout(Some(timeout))?;
            s.write_all(b"hello\n")?;
            let mut len = 0;
            while len < buf.len() && !buf[..len].contains(&b'\n') {
                match s.read(&mut buf[len..])? {
                    0 => break,
                    n => len += n,
                }
            }
            len
        }
        Kind::UdpUnconnected | Kind::UdpConnected => {
            let s = UdpSocket::bind(from)?;
            s.set_read_timeout(Some(timeout))?;
            if kind == Kind::UdpConnected {
                s.connect(to)?;
                s.send(b"hello\n")?;
            } else {
                s.send_to(b"hello\n", to)?;
            }
            s.recv(&mut buf)?
        }
    };
    std::str::from_utf8(&buf[..n])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        .trim()
        .parse()
}

/// `socket`, `bind(from)`, then a `connect(to)` bounded by `timeout`
/// (std has no bind-before-connect for TCP).
fn tcp_bound_connect(from: SocketAddr, to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let domain = if from.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain syscalls on a descriptor this function owns; the
    // sockaddr buffers live for the calls.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // Owned from here: closed on every early return.
        let owned = TcpStream::from_raw_fd(fd);
        let (addr, len) = sockaddr(from);
        if libc::bind(fd, (&raw const addr).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        owned.set_nonblocking(true)?;
        let (addr, len) = sockaddr(to);
        if libc::connect(fd, (&raw const addr).cast(), len) != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        match libc::poll(&raw mut pfd, 1, ms) {
            0 => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
            n if n < 0 => return Err(io::Error::last_os_error()),
            _ => {}
        }
        if let Some(e) = owned.take_error()? {
            return Err(e);
        }
        owned.set_nonblocking(false)?;
        Ok(owned)
    }
}

fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and aligned for it.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// The kinds every check covers.
const KINDS: [Kind; 3] = [Kind::Tcp, Kind::UdpUnconnected, Kind::UdpConnected];

/// Waits until `client`'s requests of every kind and family are answered
/// (`served`) or not, then checks a few more: an answer saw the client's
/// own source; a denied datagram's `send` fails with `EPERM` (the egress
/// program dropped it) and a denied `connect` times out.
fn expect(f: &mut Fixture, what: &str, client: Client<'_>, served: bool) {
    for family in FAMILIES {
        for kind in KINDS {
            let probe = if served { PROBE } else { DENIED };
            f.wait_for(
                PROPAGATION,
                &format!("{what}: {client:?} {kind:?} {family:?} served: {served}"),
                || client.request(kind, family, probe).is_ok() == served,
            );
            for _ in 0..3 {
                let r = client.request(kind, family, probe);
                assert_eq!(
                    r.is_ok(),
                    served,
                    "{what}: {client:?} {kind:?} to the {family:?} LoadBalancer IP: {r:?}"
                );
                if let Ok(reply) = &r {
                    assert_eq!(
                        reply.peer.ip(),
                        client.source(family),
                        "{what}: the backend sees the client's own source"
                    );
                }
                match (served, kind, &r) {
                    (false, Kind::UdpUnconnected | Kind::UdpConnected, Err(e)) => assert_eq!(
                        e.kind(),
                        io::ErrorKind::PermissionDenied,
                        "{what}: a denied datagram's send fails with EPERM: {e}"
                    ),
                    // The SYN is dropped, and TCP retransmits it: the
                    // client waits, as behind kube-proxy's drop.
                    (false, Kind::Tcp, Err(e)) => assert_eq!(
                        e.kind(),
                        io::ErrorKind::TimedOut,
                        "{what}: a denied connect times out: {e}"
                    ),
                    _ => {}
                }
            }
        }
    }
}

const FAMILIES: [AddressType; 2] = [AddressType::IPv4, AddressType::IPv6];

/// `sock_egress`'s link as `proxy inspect status` lists it, if it does.
fn egress_link(pins: &Path) -> Option<serde_json::Value> {
    let out = std::process::Command::new(proxy_bin())
        .args(["inspect", "status", "--output", "json", "--pin-path"])
        .arg(pins)
        .output()
        .unwrap_or_else(|e| panic!("proxy inspect status: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("proxy inspect status printed no JSON ({e}):\n{text}"));
    let link = v["links"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["program"] == "sock_egress")
        .cloned()?;
    assert_eq!(link["attach_type"], "cgroup_inet_egress", "{link:#}");
    assert!(link["program_id"].is_u64(), "attached: {link:#}");
    Some(link)
}

/// The count of one `STATS` reason (`proxy inspect stats --output json`).
fn stat(f: &Fixture, reason: &str) -> u64 {
    let out = std::process::Command::new(proxy_bin())
        .args(["inspect", "stats", "--output", "json", "--pin-path"])
        .arg(f.sandbox.pin_path())
        .output()
        .unwrap_or_else(|e| panic!("proxy inspect stats: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("proxy inspect stats printed no JSON ({e}):\n{text}"));
    v["stats"]
        .as_array()
        .and_then(|list| list.iter().find(|e| e["reason"] == reason))
        .and_then(|e| e["count"].as_u64())
        .unwrap_or_else(|| panic!("no count for {reason:?} in {v:#}"))
}

/// Pods and node processes under the proxy's cgroup, reaching a
/// LoadBalancer IP through the socket hooks, over TCP, unconnected and
/// connected UDP, both families: with no ranges, everyone is served and no
/// egress program is attached; with ranges, a source inside is served and
/// one outside is not (the check attached); the list changed live flips
/// who gets in; the check outlives the daemon and a restart adopts it;
/// emptied, everyone is served again and the program is gone.
#[test]
fn load_balancer_source_ranges_hold_for_clients_the_socket_hooks_serve() {
    let mut f = Fixture::new(Mode::Ebpf);
    for a in [NODE_V4, NODE_V6] {
        f.sandbox
            .add_local_addr(ip(a))
            .unwrap_or_else(|e| panic!("adding {a} to lo: {e}"));
    }
    let pod1 = PodNetns::create(&f.sandbox, 1).expect("creating pod 1");
    let pod2 = PodNetns::create(&f.sandbox, 2).expect("creating pod 2");
    let (p1, p2, node) = (Client::Pod(&pod1), Client::Pod(&pod2), Client::Node);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    for family in FAMILIES {
        f.write(
            &format!("lbsr-slice-{family:?}.yaml"),
            &slice(
                LB,
                &slice_name(LB, family),
                family,
                match family {
                    AddressType::IPv4 => &BACKENDS_V4,
                    AddressType::IPv6 => &BACKENDS_V6,
                },
            ),
        );
    }
    write_lb(&f, &[]);
    f.start_proxy();
    f.wait_ready();
    let pins = f.sandbox.pin_path();

    for client in [p1, p2, node] {
        expect(&mut f, "no ranges", client, true);
    }
    assert_eq!(
        egress_link(&pins),
        None,
        "no Service has ranges: no egress program is attached"
    );

    let pod1_only: Vec<String> = FAMILIES.iter().map(|fam| p1.range(*fam)).collect();
    write_lb(&f, &pod1_only);
    expect(&mut f, "pod 1 admitted", p1, true);
    expect(&mut f, "pod 1 admitted", p2, false);
    expect(&mut f, "pod 1 admitted", node, false);
    assert!(
        egress_link(&pins).is_some(),
        "a Service has ranges: the egress program is attached (proxy inspect status)"
    );
    assert!(
        stat(&f, "sock_source_range_dropped") > 0,
        "the drops are counted"
    );

    let changed: Vec<String> = FAMILIES
        .iter()
        .flat_map(|fam| [p2.range(*fam), node.range(*fam)])
        .collect();
    write_lb(&f, &changed);
    expect(&mut f, "changed live", p1, false);
    expect(&mut f, "changed live", p2, true);
    expect(&mut f, "changed live", node, true);

    // The link is pinned: the check holds while no daemon runs, and a
    // restarted daemon adopts it.
    if let Some(mut proxy) = f.proxy.take() {
        proxy.stop().expect("stopping the proxy");
    }
    expect(&mut f, "no daemon running", p1, false);
    expect(&mut f, "no daemon running", p2, true);
    f.start_proxy();
    f.wait_ready();
    expect(&mut f, "restarted", p1, false);
    expect(&mut f, "restarted", node, true);

    write_lb(&f, &[]);
    for client in [p1, p2, node] {
        expect(&mut f, "emptied", client, true);
    }
    f.wait_for(PROPAGATION, "the egress program detached", || {
        egress_link(&pins).is_none()
    });
}

/// Whether `proxy inspect services` lists a frontend on `vip`.
fn programmed(pins: &Path, vip: &str) -> bool {
    std::process::Command::new(proxy_bin())
        .args([
            "inspect",
            "services",
            "--vip",
            vip,
            "--output",
            "json",
            "--pin-path",
        ])
        .arg(pins)
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v["services"].as_array().map(|s| !s.is_empty()))
        .unwrap_or(false)
}

/// `--socket-lb=false`: no socket hook translates, so no `sock_egress` is
/// attached, even with a Service that has ranges (the tc path checks them).
#[test]
fn without_socket_lb_no_egress_program_is_attached() {
    let mut f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    write_lb(&f, &[Client::Node.range(AddressType::IPv4)]);
    f.start_proxy_with(&["--socket-lb=false"]);
    let pins = f.sandbox.pin_path();
    f.wait_for(STARTUP, "the LoadBalancer IP programmed", || {
        programmed(&pins, LB_V4)
    });
    assert_eq!(egress_link(&pins), None);
    f.assert_proxy_running();
}

/// `sock_egress` unpinned by hand (which detaches it) while a Service has
/// ranges: the node's denied client gets through until the next reconcile
/// attaches the check again, as for the other hooks.
#[test]
fn an_egress_program_unpinned_by_hand_is_reattached() {
    let mut f = Fixture::new(Mode::Ebpf);
    for a in [NODE_V4, NODE_V6] {
        f.sandbox
            .add_local_addr(ip(a))
            .unwrap_or_else(|e| panic!("adding {a} to lo: {e}"));
    }
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    for family in FAMILIES {
        f.write(
            &format!("lbsr-slice-{family:?}.yaml"),
            &slice(
                LB,
                &slice_name(LB, family),
                family,
                match family {
                    AddressType::IPv4 => &BACKENDS_V4,
                    AddressType::IPv6 => &BACKENDS_V6,
                },
            ),
        );
    }
    // Nobody on the node is admitted.
    write_lb(
        &f,
        &["198.51.100.0/24".to_owned(), "fd00:99::/64".to_owned()],
    );
    f.start_proxy_with(&["--resync-interval-ms", "300"]);
    f.wait_ready();
    let pins = f.sandbox.pin_path();
    expect(&mut f, "ranges", Client::Node, false);
    let link = egress_link(&pins).expect("sock_egress attached");
    let pin = link["pin"].as_str().expect("the link's pin").to_owned();
    std::fs::remove_file(&pin).unwrap_or_else(|e| panic!("removing {pin}: {e}"));
    f.wait_for(PROPAGATION, "sock_egress attached again", || {
        egress_link(&pins).is_some()
    });
    expect(&mut f, "re-attached", Client::Node, false);
    let log = f.log();
    assert!(
        log.lines()
            .any(|l| l.contains("drift repaired") && l.contains("sock_egress")),
        "the repair is logged:\n{log}"
    );
}
