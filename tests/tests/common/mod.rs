//! The integration tests' shared scenario: a sandbox with three TCP and three UDP
//! backends per IP family on `lo`, the dual-stack Service `pxt/web` that fronts
//! them, the proxy in a given [`Mode`], and helpers that send real traffic and
//! panic with what was expected and what was seen.
//!
//! Addresses (all inside the test's namespace only):
//! - backends: 10.244.1.1-3 and fd00:244::1-3, TCP on :8080, UDP on :5353; each
//!   backend is named after its address (`10.244.1.1:8080`), so a reply names the
//!   endpoint that served it;
//! - `web`: 10.96.0.10 and fd00:96::10, `http` 80/TCP → 8080, `dns` 53/UDP → 5353.

#![allow(
    dead_code,
    reason = "each test binary compiles this module and uses only part of it"
)]

use std::{
    collections::BTreeMap,
    fmt::Debug,
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

pub mod kube;

#[allow(
    unused_imports,
    reason = "each test binary compiles this module and uses only part of it"
)]
pub use proxy_tests::{Mode, both_modes};
use proxy_tests::{
    ProxyProcess, Reply, Sandbox, TcpBackend, UdpBackend,
    manifest::{self, AddressType, Endpoint, EndpointSlice, Protocol, Service},
    proxy_bin, tcp_request_timeout, udp_connected_request_timeout, udp_unconnected_request_timeout,
    wait_until,
};

/// The Kubernetes namespace of every object the tests write.
pub const NAMESPACE: &str = "pxt";
pub const WEB: &str = "web";
pub const WEB_VIP4: &str = "10.96.0.10";
pub const WEB_VIP6: &str = "fd00:96::10";
pub const TCP_PORT: u16 = 80;
pub const TCP_TARGET: u16 = 8080;
pub const UDP_PORT: u16 = 53;
pub const UDP_TARGET: u16 = 5353;
pub const BACKENDS_V4: [&str; 3] = ["10.244.1.1", "10.244.1.2", "10.244.1.3"];
pub const BACKENDS_V6: [&str; 3] = ["fd00:244::1", "fd00:244::2", "fd00:244::3"];

/// How long the proxy may take from start to a working dataplane (eBPF load
/// and verification included: the tc ingress program alone takes about 2 s
/// to verify on an idle machine here, four times that next to other builds).
pub const STARTUP: Duration = Duration::from_secs(30);
/// How long a manifest change may take to reach the dataplane in a test. The
/// goal is < 1 s; the bound is generous so a loaded machine does not flake.
pub const PROPAGATION: Duration = Duration::from_secs(5);
/// Per-step timeout of probes inside `wait_until` loops, so each poll is short.
pub const PROBE: Duration = Duration::from_millis(300);
/// Per-step timeout of ordinary requests.
pub const REQUEST: Duration = Duration::from_secs(2);

pub fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} is not an IP: {e}"))
}

pub fn sock(addr: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(addr), port)
}

/// The name a backend on `addr:port` has (its socket address).
pub fn backend_name(addr: &str, port: u16) -> String {
    sock(addr, port).to_string()
}

/// Backend names for `addrs` on `port`, sorted.
pub fn names(addrs: &[&str], port: u16) -> Vec<String> {
    let mut v: Vec<String> = addrs.iter().map(|a| backend_name(a, port)).collect();
    v.sort();
    v
}

/// A ClusterIP Service with a TCP port `http` and a UDP port `dns`.
pub fn service(name: &str, vips: &[&str], tcp_port: u16, udp_port: u16) -> String {
    let mut svc = Service::new(NAMESPACE, name);
    for vip in vips {
        svc = svc.cluster_ip(vip);
    }
    svc.port("http", Protocol::Tcp, tcp_port, TCP_TARGET)
        .port("dns", Protocol::Udp, udp_port, UDP_TARGET)
        .to_yaml()
}

/// An EndpointSlice `slice_name` of `service` for `family`, with ready
/// endpoints `addrs` (may be empty: `endpoints: null`) and the ports of
/// [`service`].
pub fn slice(service: &str, slice_name: &str, family: AddressType, addrs: &[&str]) -> String {
    let mut s = EndpointSlice::new(NAMESPACE, slice_name, service, family)
        .port("http", Protocol::Tcp, TCP_TARGET)
        .port("dns", Protocol::Udp, UDP_TARGET);
    for a in addrs {
        s = s.endpoint(Endpoint::ready(a));
    }
    s.to_yaml()
}

/// Slice names as the EndpointSlice controller makes them.
pub fn slice_name(service: &str, family: AddressType) -> String {
    match family {
        AddressType::IPv4 => format!("{service}-4xk2p"),
        AddressType::IPv6 => format!("{service}-6q8nd"),
    }
}

/// One test's world. Field order is drop order: the proxy stops first, then the
/// backends, then the sandbox is removed.
pub struct Fixture {
    pub proxy: Option<ProxyProcess>,
    /// The mode `start_proxy` runs the proxy in.
    pub mode: Mode,
    pub tcp: Vec<TcpBackend>,
    pub udp: Vec<UdpBackend>,
    pub sandbox: Sandbox,
}

impl Fixture {
    /// Sandbox entered, addresses on `lo`, all twelve backends running; no
    /// manifests yet, no proxy yet (it will run in `mode`).
    pub fn new(mode: Mode) -> Self {
        // Fail first, with the how-to-build message, when the binary is missing.
        let _ = proxy_bin();
        let mut sandbox = Sandbox::new().expect("creating the sandbox (the tests need root)");
        sandbox.enter().expect("entering the sandbox");
        let (mut tcp, mut udp) = (Vec::new(), Vec::new());
        for a in BACKENDS_V4.iter().chain(BACKENDS_V6.iter()) {
            sandbox
                .add_local_addr(ip(a))
                .unwrap_or_else(|e| panic!("adding {a} to lo: {e}"));
            tcp.push(
                TcpBackend::start(sock(a, TCP_TARGET), &backend_name(a, TCP_TARGET))
                    .unwrap_or_else(|e| panic!("starting the TCP backend on {a}: {e}")),
            );
            udp.push(
                UdpBackend::start(sock(a, UDP_TARGET), &backend_name(a, UDP_TARGET))
                    .unwrap_or_else(|e| panic!("starting the UDP backend on {a}: {e}")),
            );
        }
        Fixture {
            proxy: None,
            mode,
            tcp,
            udp,
            sandbox,
        }
    }

    /// [`Fixture::new`] plus `web` with all three endpoints per family, the
    /// proxy started and the dataplane verified to work.
    pub fn with_web(mode: Mode) -> Self {
        let mut f = Fixture::new(mode);
        f.write_web(&BACKENDS_V4, &BACKENDS_V6);
        f.start_proxy();
        f.wait_ready();
        f
    }

    /// Writes `web`'s Service and both slices (one file each).
    pub fn write_web(&self, v4: &[&str], v6: &[&str]) {
        self.write(
            "web-service.yaml",
            &service(WEB, &[WEB_VIP4, WEB_VIP6], TCP_PORT, UDP_PORT),
        );
        self.write_web_slices(v4, v6);
    }

    /// Rewrites `web`'s slices with these endpoints.
    pub fn write_web_slices(&self, v4: &[&str], v6: &[&str]) {
        for (family, addrs, file) in [
            (AddressType::IPv4, v4, "web-slice-v4.yaml"),
            (AddressType::IPv6, v6, "web-slice-v6.yaml"),
        ] {
            self.write(file, &slice(WEB, &slice_name(WEB, family), family, addrs));
        }
    }

    /// Writes a manifest file atomically into the watched directory.
    pub fn write(&self, file: &str, yaml: &str) {
        manifest::write_atomic(&self.sandbox.manifests_dir(), file, yaml)
            .unwrap_or_else(|e| panic!("writing manifest {file}: {e}"));
    }

    /// Deletes a manifest file from the watched directory.
    pub fn remove(&self, file: &str) {
        manifest::remove(&self.sandbox.manifests_dir(), file)
            .unwrap_or_else(|e| panic!("removing manifest {file}: {e}"));
    }

    /// Starts the proxy in the fixture's mode.
    pub fn start_proxy(&mut self) {
        self.start_proxy_with(&[]);
    }

    /// Starts the proxy in the fixture's mode, with `extra` arguments.
    pub fn start_proxy_with(&mut self, extra: &[&str]) {
        assert!(self.proxy.is_none(), "the proxy is already running");
        let dir = self.sandbox.manifests_dir();
        let mut args: Vec<&str> = self.mode.args().to_vec();
        args.extend_from_slice(extra);
        self.proxy = Some(
            ProxyProcess::start_with_args(&proxy_bin(), &self.sandbox, &dir, &args)
                .unwrap_or_else(|e| panic!("starting the proxy in {} mode: {e}", self.mode)),
        );
    }

    pub fn proxy(&mut self) -> &mut ProxyProcess {
        self.proxy.as_mut().expect("the proxy was started")
    }

    pub fn log(&self) -> String {
        self.proxy
            .as_ref()
            .map(ProxyProcess::log)
            .unwrap_or_default()
    }

    /// Panics when the proxy has exited (its log is printed by its `Drop`).
    pub fn assert_proxy_running(&mut self) {
        if let Some(status) = self.proxy().exited() {
            panic!("expected the proxy to keep running, but it exited with {status}");
        }
    }

    /// Waits until a TCP request to `web`'s IPv4 VIP is answered by a backend.
    pub fn wait_ready(&mut self) {
        let vip = sock(WEB_VIP4, TCP_PORT);
        let mut last = None;
        let mut exited = None;
        let ready = wait_until(STARTUP, || {
            if let Some(status) = self.proxy().exited() {
                exited = Some(status);
                return true;
            }
            last = Some(tcp_request_timeout(vip, PROBE));
            matches!(last, Some(Ok(_)))
        });
        if let Some(status) = exited {
            panic!(
                "expected the proxy ({} mode) to start serving {vip}, but it exited with {status}",
                self.mode
            );
        }
        assert!(
            ready,
            "expected {vip} to be served within {STARTUP:?} of starting the proxy ({} mode); \
             last attempt: {last:?}",
            self.mode
        );
    }

    /// Like [`wait_until`], but fails at once, with a clear message, when the
    /// proxy has exited; and panics with `what` when the time is up.
    pub fn wait_for(&mut self, timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
        let mut exited = None;
        let ok = wait_until(timeout, || {
            if let Some(status) = self.proxy.as_mut().and_then(ProxyProcess::exited) {
                exited = Some(status);
                return true;
            }
            condition()
        });
        if let Some(status) = exited {
            panic!("while waiting for {what}: the proxy exited with {status}");
        }
        assert!(ok, "expected {what} within {timeout:?}, it did not happen");
    }
}

/// How a test talks to a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    UdpUnconnected,
    UdpConnected,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Tcp, Kind::UdpUnconnected, Kind::UdpConnected];

    /// One request over a fresh socket.
    pub fn request(self, vip: SocketAddr, timeout: Duration) -> io::Result<Reply> {
        match self {
            Kind::Tcp => tcp_request_timeout(vip, timeout),
            Kind::UdpUnconnected => udp_unconnected_request_timeout(vip, timeout).map(|(r, _)| r),
            Kind::UdpConnected => udp_connected_request_timeout(vip, timeout).map(|(r, _)| r),
        }
    }
}

/// `n` requests; how often each backend answered. Panics on the first failure.
pub fn tally(kind: Kind, vip: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for i in 0..n {
        let reply = kind
            .request(vip, REQUEST)
            .unwrap_or_else(|e| panic!("{kind:?} request {i} of {n} to {vip} failed: {e}"));
        *seen.entry(reply.backend).or_insert(0) += 1;
    }
    seen
}

/// `n` requests; the backends that answered, or the first error.
pub fn try_backends(kind: Kind, vip: SocketAddr, n: usize) -> io::Result<Vec<String>> {
    (0..n)
        .map(|_| kind.request(vip, PROBE).map(|r| r.backend))
        .collect()
}

/// Requests that must all miss a removed backend before a test believes it
/// is gone: with three backends, 15 random picks miss a live one one time in
/// 400 ((2/3)^15), which made a "stopped reaching" wait pass early; 45 picks
/// miss it one time in 10^8.
const GONE_PROBES: usize = 45;

/// Whether `kind` requests to `vip` no longer reach `removed`: every one of
/// [`GONE_PROBES`] answers, and none comes from it. Stops at the first
/// request that fails or reaches it, so a wait on this stays cheap.
pub fn stopped_reaching(kind: Kind, vip: SocketAddr, removed: &str) -> bool {
    (0..GONE_PROBES).all(|_| {
        kind.request(vip, PROBE)
            .is_ok_and(|reply| reply.backend != removed)
    })
}

/// Asserts that the keys of `seen` are exactly `expected`.
pub fn assert_backends<T: Debug>(what: &str, seen: &BTreeMap<String, T>, expected: &[String]) {
    let got: Vec<&String> = seen.keys().collect();
    let want: Vec<&String> = expected.iter().collect();
    assert_eq!(
        got, want,
        "{what}: expected exactly these backends to answer, saw {seen:?}"
    );
}

/// How a UDP client learns that a Service has no endpoint; `Ok(how long it
/// took)` when it was refused.
///
/// With the socket hooks, `connect()` itself fails with `ECONNREFUSED`. A
/// userspace proxy cannot fail a `connect()` (nothing of it runs in the
/// client's system call), so there nothing listens on `VIP:port` and the first
/// datagram draws an ICMP port unreachable: the socket's receive fails with
/// `ECONNREFUSED`, at once rather than after a timeout.
pub fn udp_refused(mode: Mode, vip: SocketAddr, timeout: Duration) -> Result<Duration, String> {
    let socket = UdpSocket::bind(if vip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })
        .map_err(|e| format!("binding a UDP client: {e}"))?;
    socket
        .set_read_timeout(Some(timeout))
        .map_err(|e| format!("setting a read timeout: {e}"))?;
    let start = Instant::now();
    let connected = socket.connect(vip);
    let result = match (mode, connected) {
        (Mode::Ebpf, connected) => connected.map(|()| "connect() succeeded".to_owned()),
        (Mode::Userspace, Err(e)) => return Err(format!("connect() failed: {e}")),
        (Mode::Userspace, Ok(())) => socket
            .send(b"hello\n")
            .and_then(|_| socket.recv(&mut [0u8; 512]))
            .map(|n| format!("a {n}-byte answer")),
    };
    let elapsed = start.elapsed();
    match result {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(elapsed),
        Err(e) => Err(format!("{e} ({:?}) after {elapsed:?}", e.kind())),
        Ok(what) => Err(format!("{what} after {elapsed:?}")),
    }
}

/// A bound on each HTTP exchange with the proxy's admin servers.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(2);

/// A plain HTTP/1.1 GET of `http://{addr}{path}`; the status code and the body.
pub fn http_get(addr: &str, path: &str) -> io::Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let addr: SocketAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("{addr:?} is not a socket address: {e}"));
    let mut stream = std::net::TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other(format!("no end of headers in the response: {text:?}")))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no status code in {head:?}")))?;
    Ok((code, body.to_owned()))
}
