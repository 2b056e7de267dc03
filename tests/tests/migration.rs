//! A layout migration under traffic, with a real daemon of the previous
//! layout: the layout-2 reference (`PROXY_V2_BIN`, built from git by
//! `./x test`, see xtask's `compat`) programs the world and serves it, then
//! is killed (`kill -9`, as a DaemonSet rollout would) while long-lived
//! NodePort flows (tc path), ClientIP-affinity clients and connected UDP
//! sockets (socket LB) run; this layout's daemon starts on the same pins and
//! migrates. Nothing the old daemon's programs knew may be lost: no reset
//! and no lost reply on the flows, no affinity move, `getpeername()` still
//! the VIP, and the old pins gone.

#[expect(
    dead_code,
    reason = "this file uses part of the shared north-south world"
)]
mod northsouth_world;

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use proxy_common::LAYOUT_VERSION;
use proxy_tests::{
    Mode, TcpSession,
    manifest::{AddressType, Endpoint, EndpointSlice, Protocol, Service},
    tcp_request_timeout, wait_until,
};

use northsouth_world::*;

/// The NodePort of the long-lived flows' Service.
const NODE_PORT: u16 = 30180;
/// Long-lived NodePort connections per family: with three endpoints, a
/// migration that lost conntrack would keep them all on their backend with
/// probability (1/3)^8.
const FLOWS: usize = 4;
/// Services with ClientIP affinity (per family, one affinity entry each).
const STICKY: u8 = 3;
const PODS: [Pod; 3] = [Pod(1, 1), Pod(1, 2), Pod(2, 1)];
/// The log line of each map the migration copied.
const COPIED: &str = "layout migration: entries copied into the new map";
const HOOKS_ATTACHED: &str = "hooks attached";

fn v2_binary() -> PathBuf {
    match std::env::var_os("PROXY_V2_BIN") {
        Some(path) => PathBuf::from(path),
        None => panic!(
            "PROXY_V2_BIN is not set: run `./x test` (it builds the layout-2 reference into \
             ~/.cache/ebpf-proxy/compat/v2-<commit>), or set it to that binary"
        ),
    }
}

fn vip(n: u8, family: AddressType) -> std::net::IpAddr {
    let s = match family {
        AddressType::IPv4 => format!("10.96.0.{n}"),
        AddressType::IPv6 => format!("fd00:96::{n:x}"),
    };
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn write_service(w: &World, name: &str, n: u8, affinity: bool) {
    let mut svc = Service::new(NAMESPACE, name)
        .cluster_ip(vip(n, AddressType::IPv4).to_string())
        .cluster_ip(vip(n, AddressType::IPv6).to_string())
        .port("http", Protocol::Tcp, TCP_PORT, TCP_TARGET)
        .port("dns", Protocol::Udp, UDP_PORT, UDP_TARGET);
    svc = if affinity {
        svc.session_affinity(3600)
    } else {
        svc.service_type("NodePort").node_port("http", NODE_PORT)
    };
    w.write(&format!("{name}-service.yaml"), &svc.to_yaml());
    for family in FAMILIES {
        let mut s = EndpointSlice::new(NAMESPACE, &format!("{name}-{family}"), name, family)
            .port("http", Protocol::Tcp, TCP_TARGET)
            .port("dns", Protocol::Udp, UDP_TARGET);
        for pod in PODS {
            s = s.endpoint(Endpoint::ready(pod.addr(family)).on_node(pod.node_name()));
        }
        w.write(&format!("{name}-slice-{family}.yaml"), &s.to_yaml());
    }
}

/// A long-lived connection from the client, asking on it every few
/// milliseconds until stopped: every reply must come from its first backend.
struct Flow {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Result<(String, usize), String>>,
}

impl Flow {
    fn start(w: &World, frontend: SocketAddr) -> Self {
        let mut session = w
            .client(|| TcpSession::open(frontend, REQUEST))
            .unwrap_or_else(|e| panic!("connecting to {frontend}: {e}"));
        let first = session
            .request()
            .unwrap_or_else(|e| panic!("first request to {frontend}: {e}"))
            .backend;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = thread::spawn(move || {
            let mut n = 1;
            while !stop2.load(Ordering::Relaxed) {
                match session.request() {
                    Ok(r) if r.backend == first => n += 1,
                    Ok(r) => {
                        return Err(format!(
                            "{frontend}: reply {n} from {} (was {first})",
                            r.backend
                        ));
                    }
                    Err(e) => return Err(format!("{frontend}: request {n}: {e}")),
                }
                thread::sleep(Duration::from_millis(20));
            }
            Ok((first, n))
        });
        Flow { stop, thread }
    }

    fn finish(self) -> Result<(String, usize), String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the flow's thread panicked")
    }
}

/// `pxt-sock-client` in the socket hooks' cgroup.
struct SockClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl SockClient {
    fn start(w: &World) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pxt-sock-client"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting pxt-sock-client");
        let procs = w.hooks_cgroup().join("cgroup.procs");
        std::fs::write(&procs, child.id().to_string())
            .unwrap_or_else(|e| panic!("moving the client into {}: {e}", procs.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        SockClient {
            child,
            stdin,
            stdout,
        }
    }

    fn say(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").expect("writing to pxt-sock-client");
        self.stdin
            .flush()
            .expect("flushing pxt-sock-client's input");
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("reading pxt-sock-client");
        match line.trim_end().strip_prefix("ok") {
            Some(rest) => rest.trim().to_owned(),
            None => panic!("pxt-sock-client, {command:?}: {}", line.trim_end()),
        }
    }
}

impl Drop for SockClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `copied` count of `map` in the migration's log line.
fn copied(log: &str, map: &str) -> Option<u64> {
    let line = log
        .lines()
        .find(|l| l.contains(COPIED) && l.contains(&format!("map=\"{map}\"")))?;
    let (_, rest) = line.split_once(" copied=")?;
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn a_v2_to_v3_migration_keeps_every_flow() {
    let v2 = v2_binary();
    assert!(
        v2.exists(),
        "the layout-2 reference {} is missing",
        v2.display()
    );
    let mut w = World::with_pods(Mode::Ebpf, &PODS);
    write_service(&w, "web", 60, false);
    for i in 0..STICKY {
        write_service(&w, &format!("sticky{i}"), 61 + i, true);
    }
    w.start_proxy_bin(&v2, &[]);
    for family in FAMILIES {
        let frontend = SocketAddr::new(node1_ip(family), NODE_PORT);
        w.wait_for(STARTUP, &format!("{frontend} served by v2"), |w| {
            w.client(|| tcp_request_timeout(frontend, PROBE)).is_ok()
        });
    }

    // Socket LB, under v2: affinity and connected UDP sockets.
    let mut client = SockClient::start(&w);
    let mut sticky = Vec::new();
    for i in 0..STICKY {
        for family in FAMILIES {
            let vip = SocketAddr::new(vip(61 + i, family), TCP_PORT);
            let backend = client.say(&format!("tcp {vip}"));
            sticky.push((vip, backend));
        }
    }
    let mut udp = Vec::new();
    for family in FAMILIES {
        let vip = SocketAddr::new(vip(61, family), UDP_PORT);
        let index = client.say(&format!("udp {vip}"));
        client.say(&format!("ask {index}"));
        assert_eq!(
            client.say(&format!("peer {index}")),
            vip.to_string(),
            "v2's getpeername"
        );
        udp.push((vip, index));
    }

    // The tc path, under v2: long-lived NodePort flows from the client.
    let flows: Vec<Flow> = FAMILIES
        .iter()
        .flat_map(|family| {
            let frontend = SocketAddr::new(node1_ip(*family), NODE_PORT);
            (0..FLOWS).map(move |_| frontend)
        })
        .map(|frontend| Flow::start(&w, frontend))
        .collect();
    thread::sleep(Duration::from_millis(300));

    // The upgrade: v2 killed, this layout's daemon on the same pins.
    let mut old = w.proxy.take().expect("the v2 daemon");
    old.kill().expect("kill -9 of the v2 daemon");
    w.start_proxy(&[]);
    let attached = wait_until(STARTUP, || w.log().contains(HOOKS_ATTACHED));
    assert!(
        attached,
        "the new daemon did not attach its hooks:\n{}",
        w.log()
    );
    thread::sleep(Duration::from_secs(1));

    let mut broken = Vec::new();
    for flow in flows {
        if let Err(e) = flow.finish() {
            broken.push(e);
        }
    }
    assert!(
        broken.is_empty(),
        "flows broken by the migration: {broken:#?}\n{}",
        w.log()
    );
    for (vip, before) in &sticky {
        for _ in 0..3 {
            let now = client.say(&format!("tcp {vip}"));
            assert_eq!(&now, before, "the affinity client of {vip} moved");
        }
    }
    for (vip, index) in &udp {
        assert_eq!(
            client.say(&format!("peer {index}")),
            vip.to_string(),
            "getpeername() of a socket connected to {vip} before the migration"
        );
        client.say(&format!("ask {index}"));
    }

    let log = w.log();
    for map in ["CT_V4", "CT_V6", "AFFINITY", "SOCK_RNAT_V4", "SOCK_RNAT_V6"] {
        let n = copied(&log, map).unwrap_or_else(|| panic!("no copy logged for {map}:\n{log}"));
        assert!(n > 0, "{map}: nothing copied:\n{log}");
    }
    let pins = w.sandbox.pin_path();
    let left: Vec<String> = std::fs::read_dir(&pins)
        .unwrap_or_else(|e| panic!("reading {}: {e}", pins.display()))
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert_eq!(
        left,
        [format!("v{LAYOUT_VERSION}")],
        "the old pins are removed"
    );
}
