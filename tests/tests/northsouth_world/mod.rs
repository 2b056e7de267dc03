//! One north-south test's world, shared by `northsouth`,
//! `conformance_flows_ns`, `conformance_service_northsouth` and
//! `local_traffic`: the sandbox (node 1), the two-node [`Topology`] around it,
//! a TCP (:8080, answering every line of a connection) and a UDP (:5353)
//! backend on each family's address of the chosen pods, each named
//! `<addr>:<port>`, and the proxy on node 1 (`--devices eth0`), started once
//! the test has written its manifests. A test may run a second proxy on node 2
//! ([`World::start_proxy_on_node2`]): its own namespace, hooks cgroup, pin
//! directory and query socket, `--node-name node-2`, the same manifests.
//!
//! Each test file adds its own probes in an `impl World` block of its own.

use std::{
    ffi::{OsStr, OsString},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use proxy_tests::{
    Mode, ProxyProcess, Reply, Sandbox, TcpBackend, UdpBackend,
    manifest::{self, AddressType},
    northsouth::{
        CLIENT_V4, CLIENT_V6, LAN_DEVICE, NODE1_V4, NODE1_V6, Place, Topology, pod_v4, pod_v6,
    },
    proxy_bin, wait_until,
};

pub const NAMESPACE: &str = "pxt";
/// The node the proxy runs as (node 1, the sandbox).
pub const NODE1: &str = "node-1";
pub const NODE2: &str = "node-2";
/// Runs node 2's proxy in node 2's network namespace (mounts kept).
const NSENTER: &str = "/usr/bin/nsenter";
pub const TCP_PORT: u16 = 80;
pub const TCP_TARGET: u16 = 8080;
pub const UDP_PORT: u16 = 53;
pub const UDP_TARGET: u16 = 5353;

/// How long the proxy may take from start to a working dataplane.
pub const STARTUP: Duration = Duration::from_secs(20);
/// How long a manifest change may take to reach the dataplane.
pub const PROPAGATION: Duration = Duration::from_secs(5);
/// Per-step timeout of probes inside waits.
pub const PROBE: Duration = Duration::from_millis(500);
/// Per-step timeout of ordinary requests.
pub const REQUEST: Duration = Duration::from_secs(2);

pub const FAMILIES: [AddressType; 2] = [AddressType::IPv4, AddressType::IPv6];

/// A pod: its node (1 or 2) and index (1..=3).
#[derive(Clone, Copy, Debug)]
pub struct Pod(pub u8, pub u8);

/// Every pod of both nodes.
pub const ALL_PODS: [Pod; 6] = [
    Pod(1, 1),
    Pod(1, 2),
    Pod(1, 3),
    Pod(2, 1),
    Pod(2, 2),
    Pod(2, 3),
];

impl Pod {
    pub fn addr(self, family: AddressType) -> IpAddr {
        match family {
            AddressType::IPv4 => pod_v4(self.0, self.1).into(),
            AddressType::IPv6 => pod_v6(self.0, self.1).into(),
        }
    }

    pub fn node_name(self) -> &'static str {
        if self.0 == 1 { NODE1 } else { NODE2 }
    }

    /// The namespace the pod lives in.
    pub fn place(self) -> Place {
        if self.0 == 1 {
            Place::Pods1
        } else {
            Place::Pods2
        }
    }

    /// Its TCP backend's name (`<addr>:8080`).
    pub fn tcp_name(self, family: AddressType) -> String {
        SocketAddr::new(self.addr(family), TCP_TARGET).to_string()
    }

    /// Its UDP backend's name (`<addr>:5353`).
    pub fn udp_name(self, family: AddressType) -> String {
        SocketAddr::new(self.addr(family), UDP_TARGET).to_string()
    }
}

pub fn client_ip(family: AddressType) -> IpAddr {
    match family {
        AddressType::IPv4 => CLIENT_V4.into(),
        AddressType::IPv6 => CLIENT_V6.into(),
    }
}

pub fn node1_ip(family: AddressType) -> IpAddr {
    match family {
        AddressType::IPv4 => NODE1_V4.into(),
        AddressType::IPv6 => NODE1_V6.into(),
    }
}

/// The source addresses the backends saw, sorted, without duplicates.
pub fn peers(replies: &[Reply]) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = replies.iter().map(|r| r.peer.ip()).collect();
    v.sort();
    v.dedup();
    v
}

/// One test's world. Field order is drop order: the proxy stops first, then
/// the backends, then the topology's namespaces, then the sandbox (node 1).
pub struct World {
    pub proxy: Option<ProxyProcess>,
    /// The proxy on node 2, when [`World::start_proxy_on_node2`] ran.
    pub proxy2: Option<ProxyProcess>,
    pub mode: Mode,
    #[expect(
        dead_code,
        reason = "held for their Drop: they serve until the test ends"
    )]
    tcp: Vec<TcpBackend>,
    #[expect(
        dead_code,
        reason = "held for their Drop: they serve until the test ends"
    )]
    udp: Vec<UdpBackend>,
    pub topo: Topology,
    pub sandbox: Sandbox,
}

impl World {
    /// The topology with every backend of [`ALL_PODS`] running; no manifests,
    /// no proxy yet (it will run in `mode`).
    pub fn new(mode: Mode) -> Self {
        Self::with_pods(mode, &ALL_PODS)
    }

    /// As [`World::new`], with backends on `pods` only.
    pub fn with_pods(mode: Mode, pods: &[Pod]) -> Self {
        let _ = proxy_bin();
        let mut sandbox = Sandbox::new().expect("creating the sandbox (the tests need root)");
        sandbox.enter().expect("entering the sandbox");
        let topo = Topology::build(&sandbox).expect("building the north-south topology");
        let (mut tcp, mut udp) = (Vec::new(), Vec::new());
        for pod in pods {
            for family in FAMILIES {
                let addr = pod.addr(family);
                tcp.push(
                    topo.tcp_session_backend(
                        pod.place(),
                        SocketAddr::new(addr, TCP_TARGET),
                        &pod.tcp_name(family),
                    )
                    .unwrap_or_else(|e| panic!("starting the TCP backend on {addr}: {e}")),
                );
                udp.push(
                    topo.udp_backend(
                        pod.place(),
                        SocketAddr::new(addr, UDP_TARGET),
                        &pod.udp_name(family),
                    )
                    .unwrap_or_else(|e| panic!("starting the UDP backend on {addr}: {e}")),
                );
            }
        }
        World {
            proxy: None,
            proxy2: None,
            mode,
            tcp,
            udp,
            topo,
            sandbox,
        }
    }

    pub fn write(&self, file: &str, yaml: &str) {
        manifest::write_atomic(&self.sandbox.manifests_dir(), file, yaml)
            .unwrap_or_else(|e| panic!("writing manifest {file}: {e}"));
    }

    /// `proxy run --mode M --node-name node-1 --devices eth0` plus `extra`,
    /// with the socket hooks on a child cgroup of the sandbox's: the test
    /// process (the client's requests are made from it) sits in the sandbox's
    /// cgroup, and an outside client must not be seen by the socket hooks
    /// (they would translate its NodePort connects at `connect()`).
    pub fn start_proxy(&mut self, extra: &[&str]) {
        let manifests = self.sandbox.manifests_dir();
        self.start_proxy_with_source(&[OsStr::new("--manifests"), manifests.as_os_str()], extra);
    }

    /// The socket hooks' cgroup: a child of the sandbox's (created if missing).
    pub fn hooks_cgroup(&self) -> std::path::PathBuf {
        self.sandbox
            .child_cgroup("node-hooks")
            .unwrap_or_else(|e| panic!("creating the hooks' cgroup: {e}"))
    }

    /// [`World::start_proxy`] with `source` (for example `["--kubeconfig",
    /// PATH]`) in place of `--manifests DIR`.
    pub fn start_proxy_with_source(&mut self, source: &[&OsStr], extra: &[&str]) {
        self.start_proxy_bin_with_source(&proxy_bin(), source, extra);
    }

    /// [`World::start_proxy`] with another binary (an older release, for
    /// the layout-migration test).
    pub fn start_proxy_bin(&mut self, bin: &Path, extra: &[&str]) {
        let manifests = self.sandbox.manifests_dir();
        let source = [OsStr::new("--manifests"), manifests.as_os_str()];
        self.start_proxy_bin_with_source(bin, &source, extra);
    }

    fn start_proxy_bin_with_source(&mut self, bin: &Path, source: &[&OsStr], extra: &[&str]) {
        let hooks = self.hooks_cgroup();
        let pins = self.sandbox.pin_path();
        let query = self.sandbox.dir().join("proxy.sock");
        let args = self.run_args(source, NODE1, &hooks, &pins, &query, extra);
        let args: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
        let path = std::env::var_os("PATH").unwrap_or_default();
        self.proxy = Some(
            ProxyProcess::start_raw(bin, &self.sandbox, &args, &[("PATH", &path)], None)
                .unwrap_or_else(|e| panic!("starting the proxy in {} mode: {e}", self.mode)),
        );
    }

    /// Node 2's proxy's pin directory: `<sandbox bpffs>/node2` (created).
    pub fn node2_pin_path(&self) -> PathBuf {
        let pins = self.sandbox.bpffs_path().join("node2");
        std::fs::create_dir_all(&pins)
            .unwrap_or_else(|e| panic!("creating {}: {e}", pins.display()));
        pins
    }

    /// Node 2's proxy's query socket, in the sandbox's directory.
    pub fn node2_query_socket(&self) -> PathBuf {
        self.sandbox.dir().join("proxy-node2.sock")
    }

    /// A second `proxy run` (same mode, same manifests, `extra` flags) on
    /// node 2, as node 1's runs: `--node-name node-2 --devices eth0`, its
    /// socket hooks on a child cgroup of its own (no process in it), its pins
    /// under [`World::node2_pin_path`], its query socket
    /// [`World::node2_query_socket`]. It runs in node 2's network namespace
    /// (`nsenter --net`, which keeps the mounts: the cgroup2 mount and the
    /// bpffs stay visible) and stops with the world, like node 1's.
    pub fn start_proxy_on_node2(&mut self, extra: &[&str]) {
        let hooks = self
            .sandbox
            .child_cgroup("node2-hooks")
            .unwrap_or_else(|e| panic!("creating node 2's hooks cgroup: {e}"));
        let pins = self.node2_pin_path();
        let query = self.node2_query_socket();
        let manifests = self.sandbox.manifests_dir();
        let source = [OsStr::new("--manifests"), manifests.as_os_str()];
        let mut args = vec![
            OsString::from(format!(
                "--net={}",
                self.topo.netns_path(Place::Node2).display()
            )),
            OsString::from("--"),
            proxy_bin().into_os_string(),
        ];
        args.extend(self.run_args(&source, NODE2, &hooks, &pins, &query, extra));
        let args: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
        let path = std::env::var_os("PATH").unwrap_or_default();
        self.proxy2 = Some(
            ProxyProcess::start_raw(
                Path::new(NSENTER),
                &self.sandbox,
                &args,
                &[("PATH", &path)],
                None,
            )
            .unwrap_or_else(|e| panic!("starting node 2's proxy in {} mode: {e}", self.mode)),
        );
    }

    /// `run SOURCE… --cgroup HOOKS --pin-path PINS --log-format text
    /// --node-name NODE --devices eth0 --query-socket=QUERY MODE… EXTRA…`.
    fn run_args(
        &self,
        source: &[&OsStr],
        node: &str,
        hooks: &Path,
        pins: &Path,
        query: &Path,
        extra: &[&str],
    ) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["run".into()];
        args.extend(source.iter().map(|s| s.to_os_string()));
        args.extend([
            OsString::from("--cgroup"),
            hooks.as_os_str().to_owned(),
            OsString::from("--pin-path"),
            pins.as_os_str().to_owned(),
            OsString::from("--log-format"),
            OsString::from("text"),
            OsString::from("--node-name"),
            OsString::from(node),
            OsString::from("--devices"),
            OsString::from(LAN_DEVICE),
        ]);
        // The query socket in the sandbox, never the host's default path.
        args.push(OsString::from(format!(
            "--query-socket={}",
            query.display()
        )));
        args.extend(self.mode.args().iter().map(OsString::from));
        args.extend(extra.iter().map(OsString::from));
        args
    }

    pub fn log(&self) -> String {
        self.proxy
            .as_ref()
            .map(ProxyProcess::log)
            .unwrap_or_default()
    }

    /// Runs `f` in the client's namespace.
    pub fn client<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.topo
            .in_ns(Place::Client, f)
            .unwrap_or_else(|e| panic!("running in the client namespace: {e}"))
    }

    /// Waits until `condition` holds (checked from the test thread; use
    /// [`World::client`] inside), failing at once when the proxy exits.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        mut condition: impl FnMut(&Self) -> bool,
    ) {
        let mut exited = None;
        let ok = wait_until(timeout, || {
            for proxy in [&mut self.proxy, &mut self.proxy2] {
                if let Some(status) = proxy.as_mut().and_then(ProxyProcess::exited) {
                    exited = Some(status);
                    return true;
                }
            }
            condition(self)
        });
        if let Some(status) = exited {
            panic!("while waiting for {what}: the proxy exited with {status}");
        }
        assert!(
            ok,
            "{}: expected {what} within {timeout:?}; it did not happen",
            self.mode
        );
    }
}
