//! The soak (issue 19, item 9): everything at once, for `SOAK_MINUTES`
//! minutes, in the north-south world's namespaces. Run it with `cargo xtask
//! soak --minutes N` (or `./x soak`); it is `#[ignore]`d so `./x test` skips
//! it.
//!
//! - The real `proxy` binary runs in kube mode (`--kubeconfig`, eBPF, socket
//!   hooks on the world's child cgroup, tc on node 1's `eth0`) against the
//!   fake API server, which listens on the sandbox's loopback.
//! - Endpoint churn at [`ENDPOINT_CHANGES_PER_SEC`]: EndpointSlice updates of
//!   the churned Services that add, remove, or flip the conditions of one
//!   endpoint (ready, not ready, terminating). Each churned Service has an
//!   anchor endpoint that stays ready, so it always has a ready backend.
//! - Service churn: [`EXTRA_SERVICES`] NodePort Services (with endpoints) are
//!   created and deleted in turn, one change every [`SERVICE_CHANGE_EVERY`].
//! - Traffic (`pxt-load`, TCP and UDP, both families): from a process in the
//!   socket hooks' cgroup, new connections to the churned Services'
//!   ClusterIPs and long-lived flows to the stable Service's; from the
//!   external client's namespace, the same through node 1's NodePorts (tc).
//! - The daemon is `kill -9`ed every [`KILL_EVERY`] and restarted at once;
//!   the pins stay, so flows go on.
//! - The fake API server cuts every watch every [`DROP_WATCHES_EVERY`] (and
//!   compacts its history every [`COMPACT_EVERY`], as etcd does, which makes
//!   the next resume a relist).
//!
//! The backends never stop serving, so any failed request is a failure; RSS,
//! descriptors and map entries must be flat. The rule is
//! [`proxy_tests::soak::judge`]'s (see its docs). The report (`report.md`,
//! `report.json` with every sample, and each daemon's log) goes to
//! `SOAK_REPORT_DIR` (default `target/soak/`); the test fails when the rule
//! fails.

#[expect(
    dead_code,
    reason = "this file uses part of the shared north-south world"
)]
mod northsouth_world;

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    fs,
    io::{BufRead, BufReader},
    net::{IpAddr, SocketAddr},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use northsouth_world::*;
use proxy_tests::{
    FakeApiServer, Mode,
    fake_apiserver::Resource,
    manifest::{AddressType, Endpoint, EndpointSlice, Node, Protocol, Service},
    northsouth::Place,
    proxy_bin,
    soak::{self, Activity, Failure, Sample, Traffic},
    tcp_request_timeout, wait_until,
};
use serde_json::{Value, json};

const ENDPOINT_CHANGES_PER_SEC: u64 = 100;
const KILL_EVERY: Duration = Duration::from_secs(30);
const DROP_WATCHES_EVERY: Duration = Duration::from_secs(45);
const COMPACT_EVERY: Duration = Duration::from_secs(300);
const SERVICE_CHANGE_EVERY: Duration = Duration::from_millis(500);
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Pause between two requests of one load thread.
const LOAD_PAUSE_MS: u64 = 50;
/// The first daemon's life: the warm-up; also the length of the map windows.
const WARM_UP: f64 = 30.0;
/// The daemon's extra flags: a conntrack GC pass every 5 s, so the
/// conntrack maps' sawtooth is small against their size.
const DAEMON_ARGS: &[&str] = &["--conntrack-gc-interval=5s"];
/// When the map windows begin: the conntrack maps only reach their steady
/// state once the first flows can expire (UDP's 60 s idle timeout) and a GC
/// pass has followed (5 s), plus a margin; before that they grow by design.
const MAPS_FROM: f64 = 70.0;
/// How long the maps that follow the desired state may take to reach it,
/// at the start and after the churn is undone at the end.
const STATE_SETTLE: Duration = Duration::from_secs(20);

/// The Service of the long-lived flows: its endpoints never change.
const STABLE: &str = "stable";
const STABLE_PODS: [Pod; 2] = [Pod(1, 1), Pod(2, 1)];
/// Long-lived TCP flows per family and path (UDP: one).
const LONG_TCP_FLOWS: usize = 2;
/// The Services whose endpoints churn (and that take new connections).
const CHURNED: u8 = 3;
/// The Services created and deleted in turn (no traffic).
const EXTRA_SERVICES: u8 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EpState {
    Absent,
    Ready,
    NotReady,
    Terminating,
}

/// `a.b.c.d` / `fd00:96::…` of Service `group` (0 stable, 1 churned, 2 extra) number `i`.
fn vip(family: AddressType, group: u8, i: u8) -> IpAddr {
    match family {
        AddressType::IPv4 => IpAddr::from([10, 96, group, 10 + i]),
        AddressType::IPv6 => format!("fd00:96::{group:x}:{:x}", 0x10 + u16::from(i))
            .parse()
            .expect("a valid IPv6 VIP"),
    }
}

/// (TCP, UDP) NodePorts.
fn node_ports(group: u8, i: u8) -> (u16, u16) {
    let base = 30_000 + 100 * u16::from(group) + u16::from(i);
    (base, base + 50)
}

fn service(name: &str, group: u8, i: u8) -> Service {
    let (tcp, udp) = node_ports(group, i);
    Service::new(NAMESPACE, name)
        .service_type("NodePort")
        .cluster_ip(vip(AddressType::IPv4, group, i))
        .cluster_ip(vip(AddressType::IPv6, group, i))
        .port("http", Protocol::Tcp, TCP_PORT, TCP_TARGET)
        .port("dns", Protocol::Udp, UDP_PORT, UDP_TARGET)
        .node_port("http", tcp)
        .node_port("dns", udp)
}

fn slice_name(service: &str, family: AddressType) -> String {
    match family {
        AddressType::IPv4 => format!("{service}-v4"),
        AddressType::IPv6 => format!("{service}-v6"),
    }
}

fn slice(service: &str, family: AddressType, endpoints: &[(Pod, EpState)]) -> EndpointSlice {
    let mut s = EndpointSlice::new(NAMESPACE, &slice_name(service, family), service, family)
        .port("http", Protocol::Tcp, TCP_TARGET)
        .port("dns", Protocol::Udp, UDP_TARGET);
    for &(pod, state) in endpoints {
        let addr = pod.addr(family);
        let ep = match state {
            EpState::Absent => continue,
            EpState::Ready => Endpoint::ready(addr),
            EpState::NotReady => Endpoint::not_ready(addr),
            EpState::Terminating => Endpoint::terminating(addr),
        };
        s = s.endpoint(ep.on_node(pod.node_name()));
    }
    s
}

fn apply_service(api: &FakeApiServer, name: &str, group: u8, i: u8, pods: &[(Pod, EpState)]) {
    api.apply_service(&service(name, group, i));
    for family in FAMILIES {
        api.apply_slice(&slice(name, family, pods));
    }
}

fn delete_service(api: &FakeApiServer, name: &str) {
    api.delete(Resource::Services, NAMESPACE, name);
    for family in FAMILIES {
        api.delete(
            Resource::EndpointSlices,
            NAMESPACE,
            &slice_name(name, family),
        );
    }
}

/// xorshift64*: reproducible churn from the seed in the report.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// The churned Services' endpoints: per Service and family, every pod's state;
/// the anchor (index `i`) stays ready.
struct Churn {
    states: Vec<BTreeMap<(usize, usize), EpState>>,
}

impl Churn {
    fn new() -> Self {
        let states = (0..CHURNED)
            .map(|i| {
                let mut m = BTreeMap::new();
                for f in 0..FAMILIES.len() {
                    for p in 0..ALL_PODS.len() {
                        let state = if p == usize::from(i) || p == usize::from(i) + 3 {
                            EpState::Ready
                        } else {
                            EpState::Absent
                        };
                        m.insert((f, p), state);
                    }
                }
                m
            })
            .collect();
        Churn { states }
    }

    fn anchor(i: usize) -> usize {
        i
    }

    fn endpoints(&self, i: usize, f: usize) -> Vec<(Pod, EpState)> {
        (0..ALL_PODS.len())
            .map(|p| (ALL_PODS[p], self.states[i][&(f, p)]))
            .collect()
    }

    /// Changes one endpoint of one slice; returns the Service and family index.
    fn step(&mut self, rng: &mut Rng) -> (usize, usize) {
        let i = rng.below(usize::from(CHURNED));
        let f = rng.below(FAMILIES.len());
        let mut p = rng.below(ALL_PODS.len() - 1);
        if p >= Self::anchor(i) {
            p += 1;
        }
        let all = [
            EpState::Absent,
            EpState::Ready,
            EpState::NotReady,
            EpState::Terminating,
        ];
        let state = self.states[i]
            .get_mut(&(f, p))
            .expect("every pod has a state");
        let mut next = all[rng.below(all.len())];
        if next == *state {
            next = all[(all.iter().position(|s| *s == next).unwrap_or(0) + 1) % all.len()];
        }
        *state = next;
        (i, f)
    }
}

fn churned_name(i: usize) -> String {
    format!("churn-{i}")
}

fn extra_name(i: u8) -> String {
    format!("extra-{i}")
}

/// What the API server's thread did.
#[derive(Default)]
struct ApiActivity {
    endpoint_changes: u64,
    service_changes: u64,
    watch_drops: u64,
}

/// The API server's side, on its own thread (the server is not `Sync`):
/// endpoint changes at the target rate, a Service created or deleted every
/// [`SERVICE_CHANGE_EVERY`], every watch cut every [`DROP_WATCHES_EVERY`], the
/// history compacted every [`COMPACT_EVERY`]. Gives the server back at the end.
fn api_side(api: FakeApiServer, stop: &AtomicBool, seed: u64) -> (FakeApiServer, ApiActivity) {
    let mut done = ApiActivity::default();
    let started = Instant::now();
    let (mut next_drop, mut next_compact) = (DROP_WATCHES_EVERY, COMPACT_EVERY);
    let mut rng = Rng(seed | 1);
    let mut churn = Churn::new();
    let mut extra_up = [false; EXTRA_SERVICES as usize];
    let period = Duration::from_micros(1_000_000 / ENDPOINT_CHANGES_PER_SEC);
    let per_service_change = (SERVICE_CHANGE_EVERY.as_micros() / period.as_micros()).max(1) as u64;
    let mut next = Instant::now();
    let mut tick = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let (i, f) = churn.step(&mut rng);
        api.apply_slice(&slice(
            &churned_name(i),
            FAMILIES[f],
            &churn.endpoints(i, f),
        ));
        done.endpoint_changes += 1;
        tick += 1;
        if tick.is_multiple_of(per_service_change) {
            let k = ((tick / per_service_change) % u64::from(EXTRA_SERVICES)) as u8;
            let name = extra_name(k);
            if extra_up[usize::from(k)] {
                delete_service(&api, &name);
            } else {
                let pods = [(Pod(1, 3), EpState::Ready), (Pod(2, 3), EpState::Ready)];
                apply_service(&api, &name, 2, k, &pods);
            }
            extra_up[usize::from(k)] ^= true;
            done.service_changes += 1;
        }
        if started.elapsed() >= next_drop {
            api.drop_watches();
            done.watch_drops += 1;
            next_drop += DROP_WATCHES_EVERY;
        }
        if started.elapsed() >= next_compact {
            api.compact();
            next_compact += COMPACT_EVERY;
        }
        next += period;
        match next.checked_duration_since(Instant::now()) {
            Some(wait) => thread::sleep(wait),
            // Behind (a slow machine): go on at once, never in a burst.
            None => next = Instant::now(),
        }
    }
    // Undo the churn: the desired state is the start's again, so the maps
    // that follow it must hold what they held then (`soak::StateMaps`).
    let initial = Churn::new();
    for i in 0..usize::from(CHURNED) {
        for (f, family) in FAMILIES.iter().enumerate() {
            api.apply_slice(&slice(&churned_name(i), *family, &initial.endpoints(i, f)));
        }
    }
    for k in (0..EXTRA_SERVICES).filter(|&k| extra_up[usize::from(k)]) {
        delete_service(&api, &extra_name(k));
    }
    (api, done)
}

/// A `pxt-load` process and what it printed.
struct Load {
    path: &'static str,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Load {
    /// `pxt-load` through `wrapper` (e.g. `nsenter --net=…`), or in the hooks'
    /// cgroup; it ends by itself after `seconds`.
    fn start(
        path: &'static str,
        wrapper: &[&OsStr],
        cgroup: Option<&Path>,
        seconds: u64,
        specs: &[String],
    ) -> Self {
        let bin = env!("CARGO_BIN_EXE_pxt-load");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        if let Some(cgroup) = cgroup {
            cmd.arg("--cgroup").arg(cgroup);
        }
        cmd.args(["--seconds", &seconds.to_string()])
            .args(["--pause-ms", &LOAD_PAUSE_MS.to_string()])
            .args(specs)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no
        // memory of the parent; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting pxt-load ({path}): {e}"));
        let stdout = child.stdout.take().expect("pxt-load's stdout is piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Load {
            path,
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Waits for the end (bounded) and parses what it printed.
    fn finish(
        mut self,
        started_unix_ms: u128,
        traffic: &mut Vec<Traffic>,
        failures: &mut Vec<Failure>,
    ) {
        let ended = wait_until(Duration::from_secs(15), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !ended {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let lines = std::mem::take(&mut *self.lines.lock().unwrap_or_else(|e| e.into_inner()));
        for line in lines {
            let words: Vec<&str> = line.splitn(5, ' ').collect();
            match words.as_slice() {
                ["fail", kind, target, ms, message] => failures.push(Failure {
                    t: (ms
                        .parse::<u128>()
                        .unwrap_or(0)
                        .saturating_sub(started_unix_ms)) as f64
                        / 1000.0,
                    path: self.path.to_owned(),
                    kind: (*kind).to_owned(),
                    target: (*target).to_owned(),
                    message: (*message).to_owned(),
                }),
                ["done", kind, target, ok, rest] => {
                    let (failed, backends) = rest.split_once(' ').unwrap_or((rest, "-"));
                    traffic.push(Traffic {
                        path: self.path.to_owned(),
                        kind: (*kind).to_owned(),
                        target: (*target).to_owned(),
                        ok: ok.parse().unwrap_or(0),
                        failed: failed.parse().unwrap_or(0),
                        backends: backends
                            .split(',')
                            .filter(|b| *b != "-")
                            .map(str::to_owned)
                            .collect(),
                    });
                }
                _ => failures.push(Failure {
                    t: 0.0,
                    path: self.path.to_owned(),
                    kind: "output".into(),
                    target: "-".into(),
                    message: format!("unexpected pxt-load output: {line}"),
                }),
            }
        }
        if !ended {
            failures.push(Failure {
                t: 0.0,
                path: self.path.to_owned(),
                kind: "process".into(),
                target: "-".into(),
                message: "pxt-load did not end in time and was killed".into(),
            });
        }
    }
}

/// The load specs for one path: long-lived flows to the stable Service,
/// new connections to each churned one, both families.
fn specs(addr_of: impl Fn(AddressType, u8, u8, Protocol) -> SocketAddr) -> Vec<String> {
    let mut v = Vec::new();
    for family in FAMILIES {
        for _ in 0..LONG_TCP_FLOWS {
            v.push(format!("tcp-long={}", addr_of(family, 0, 0, Protocol::Tcp)));
        }
        v.push(format!("udp-long={}", addr_of(family, 0, 0, Protocol::Udp)));
        for i in 0..CHURNED {
            v.push(format!("tcp-new={}", addr_of(family, 1, i, Protocol::Tcp)));
            v.push(format!("udp-new={}", addr_of(family, 1, i, Protocol::Udp)));
        }
    }
    v
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// RSS (KiB) and open descriptors of `pid`.
fn process_sample(pid: u32) -> (Option<u64>, Option<u64>) {
    let rss = fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        });
    let fds = fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count() as u64);
    (rss, fds)
}

/// Entries per pinned map, from `proxy inspect status -o json`.
fn map_entries(pins: &Path) -> BTreeMap<String, u64> {
    let output = Command::new(proxy_bin())
        .args(["inspect", "status", "-o", "json", "--pin-path"])
        .arg(pins)
        .stderr(Stdio::null())
        .output();
    let Ok(output) = output else {
        return BTreeMap::new();
    };
    let status: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    status["maps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| Some((m["name"].as_str()?.to_owned(), m["entries"].as_u64()?)))
        .collect()
}

/// The maps that follow the desired state, once two readings a second apart
/// agree (the first sync's writes are done); the last reading after
/// [`STATE_SETTLE`] otherwise.
fn steady_state_maps(pins: &Path) -> BTreeMap<String, u64> {
    let deadline = Instant::now() + STATE_SETTLE;
    let mut last = soak::StateMaps::of(&map_entries(pins));
    loop {
        thread::sleep(Duration::from_secs(1));
        let now = soak::StateMaps::of(&map_entries(pins));
        if (now == last && !now.is_empty()) || Instant::now() >= deadline {
            return now;
        }
        last = now;
    }
}

/// The maps that follow the desired state, once they hold `start`'s entries
/// again after the churn was undone; the last reading after
/// [`STATE_SETTLE`] otherwise (the verdict names the maps that differ).
fn state_maps_back_to(pins: &Path, start: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let deadline = Instant::now() + STATE_SETTLE;
    loop {
        let now = soak::StateMaps::of(&map_entries(pins));
        if &now == start || Instant::now() >= deadline {
            return now;
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// The kernel's non-zero counters, from `proxy inspect stats -o json`.
fn datapath_events(pins: &Path) -> BTreeMap<String, u64> {
    let output = Command::new(proxy_bin())
        .args(["inspect", "stats", "-o", "json", "--pin-path"])
        .arg(pins)
        .stderr(Stdio::null())
        .output();
    let Ok(output) = output else {
        return BTreeMap::new();
    };
    let stats: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    stats["stats"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s["reason"].as_str()?.to_owned(), s["count"].as_u64()?)))
        .filter(|(_, count)| *count > 0)
        .collect()
}

/// Daemon logs kept besides the first ones and those that exited by
/// themselves: the last few (an hours-long soak has hundreds of daemons).
const FIRST_LOGS: usize = 2;
const LAST_LOGS: usize = 5;

/// Copies daemon `n`'s log into the report (`proxy-N.log`, or
/// `proxy-N-exited.log`, always kept) and drops the one that fell out of the
/// last [`LAST_LOGS`].
fn save_log(dir: &Path, log: &Path, n: usize, exited: bool) {
    let name = if exited {
        format!("proxy-{n}-exited.log")
    } else {
        format!("proxy-{n}.log")
    };
    if let Err(e) = fs::copy(log, dir.join(name)) {
        eprintln!("soak: copying {}: {e}", log.display());
    }
    if let Some(old) = n.checked_sub(LAST_LOGS).filter(|old| *old >= FIRST_LOGS) {
        let _ = fs::remove_file(dir.join(format!("proxy-{old}.log")));
    }
}

fn report_dir() -> PathBuf {
    std::env::var_os("SOAK_REPORT_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/soak"),
        PathBuf::from,
    )
}

/// Waits until every Service the traffic uses answers through node 1's
/// NodePorts from the client (the same sync programs the ClusterIPs).
fn wait_programmed(w: &mut World) {
    w.wait_for(
        STARTUP,
        "the stable and churned Services' NodePorts to answer",
        |w| {
            w.client(|| {
                FAMILIES.iter().all(|&family| {
                    (0..=CHURNED).all(|n| {
                        let (group, i) = if n == 0 { (0, 0) } else { (1, n - 1) };
                        let port = node_ports(group, i).0;
                        tcp_request_timeout(SocketAddr::new(node1_ip(family), port), PROBE).is_ok()
                    })
                })
            })
        },
    );
}

#[test]
#[ignore = "the soak: run it with `cargo xtask soak --minutes N`"]
fn soak() {
    let minutes: f64 = std::env::var("SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(2.0);
    let duration = Duration::from_secs_f64(minutes * 60.0);
    let dir = report_dir();
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let seed = u64::try_from(unix_ms() & 0xffff_ffff).unwrap_or(1);

    let mut w = World::new(Mode::Ebpf);
    let api = FakeApiServer::start().expect("starting the fake API server in the sandbox");
    api.apply_node(&Node::new(NODE1).internal_ip(node1_ip(AddressType::IPv4)));
    api.apply_node(&Node::new(NODE2));
    let kubeconfig = api
        .write_kubeconfig(w.sandbox.dir())
        .expect("writing the kubeconfig");
    let stable: Vec<_> = STABLE_PODS.iter().map(|&p| (p, EpState::Ready)).collect();
    apply_service(&api, STABLE, 0, 0, &stable);
    let initial = Churn::new();
    for i in 0..usize::from(CHURNED) {
        api.apply_service(&service(&churned_name(i), 1, i as u8));
        for (f, family) in FAMILIES.iter().enumerate() {
            api.apply_slice(&slice(&churned_name(i), *family, &initial.endpoints(i, f)));
        }
    }
    let source = [OsStr::new("--kubeconfig"), kubeconfig.as_os_str()];
    w.start_proxy_with_source(&source, DAEMON_ARGS);
    let mut incarnation_started = Instant::now();
    wait_programmed(&mut w);
    let pins = w.sandbox.pin_path();
    let state_start = steady_state_maps(&pins);

    // t = 0: the load starts, then the churn, the kills and the drops.
    let started = Instant::now();
    let started_unix_ms = unix_ms();
    let seconds = duration.as_secs().max(1);
    let hooks = w.hooks_cgroup();
    let cluster_ip = Load::start(
        "clusterip",
        &[],
        Some(&hooks),
        seconds,
        &specs(|family, group, i, proto| {
            let port = if proto == Protocol::Tcp {
                TCP_PORT
            } else {
                UDP_PORT
            };
            SocketAddr::new(vip(family, group, i), port)
        }),
    );
    let client_ns = format!("--net={}", w.topo.netns_path(Place::Client).display());
    let node_port = Load::start(
        "nodeport",
        &[
            OsStr::new("nsenter"),
            OsStr::new(&client_ns),
            OsStr::new("--"),
        ],
        None,
        seconds,
        &specs(|family, group, i, proto| {
            let (tcp, udp) = node_ports(group, i);
            let port = if proto == Protocol::Tcp { tcp } else { udp };
            SocketAddr::new(node1_ip(family), port)
        }),
    );

    let stop = AtomicBool::new(false);
    let mut samples: Vec<Sample> = Vec::new();
    let mut activity = Activity::default();
    let mut problems: Vec<String> = Vec::new();
    let mut incarnation = 0usize;
    let (_api, done) = thread::scope(|s| {
        let api_thread = s.spawn(|| api_side(api, &stop, seed));
        let mut next_kill = KILL_EVERY;
        let mut next_sample = Duration::ZERO;
        while started.elapsed() < duration {
            let now = started.elapsed();
            if now >= next_kill {
                let proxy = w.proxy.as_mut().expect("a running proxy");
                proxy.kill().expect("kill -9 of the proxy");
                save_log(&dir, proxy.log_path(), incarnation, false);
                w.proxy = None;
                w.start_proxy_with_source(&source, DAEMON_ARGS);
                incarnation += 1;
                incarnation_started = Instant::now();
                activity.kills += 1;
                activity.kill_times.push(now.as_secs_f64());
                next_kill += KILL_EVERY;
            }
            if now >= next_sample {
                let proxy = w.proxy.as_mut().expect("a running proxy");
                if let Some(status) = proxy.exited() {
                    problems.push(format!(
                        "daemon {incarnation} exited by itself at {:.1} s: {status}",
                        now.as_secs_f64()
                    ));
                    save_log(&dir, proxy.log_path(), incarnation, true);
                    w.proxy = None;
                    w.start_proxy_with_source(&source, DAEMON_ARGS);
                    incarnation += 1;
                    incarnation_started = Instant::now();
                } else {
                    let pid = proxy.pid();
                    let (rss_kib, fds) = process_sample(pid);
                    samples.push(Sample {
                        t: now.as_secs_f64(),
                        incarnation,
                        age: incarnation_started.elapsed().as_secs_f64(),
                        pid,
                        rss_kib,
                        fds,
                        maps: map_entries(&pins),
                    });
                }
                next_sample += SAMPLE_EVERY;
            }
            thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
        api_thread
            .join()
            .unwrap_or_else(|_| panic!("the API server's thread panicked"))
    });
    activity.seconds = started.elapsed().as_secs_f64();
    activity.endpoint_changes = done.endpoint_changes;
    activity.service_changes = done.service_changes;
    activity.watch_drops = done.watch_drops;
    activity.datapath_events = datapath_events(&pins);

    let (mut traffic, mut failures) = (Vec::new(), Vec::new());
    cluster_ip.finish(started_unix_ms, &mut traffic, &mut failures);
    node_port.finish(started_unix_ms, &mut traffic, &mut failures);
    let state = soak::StateMaps {
        end: state_maps_back_to(&pins, &state_start),
        start: state_start,
    };
    // Stopped here, not by `Drop` during the assertion's panic (which would
    // print the whole log: it is in the report directory).
    if let Some(mut proxy) = w.proxy.take() {
        let _ = proxy.stop();
        save_log(&dir, proxy.log_path(), incarnation, false);
    }

    // Map windows: after the conntrack maps settle, up to WARM_UP long, and
    // whole cycles of the extra Services' churn (all created, then all
    // deleted: 10 s), whose entries would otherwise tip a window's mean (20 s
    // each in a 2-minute run).
    let end = samples.iter().map(|s| s.t).fold(0.0, f64::max);
    let cycle = 2.0 * f64::from(EXTRA_SERVICES) * SERVICE_CHANGE_EVERY.as_secs_f64();
    let fits = WARM_UP.min((end - MAPS_FROM) / 2.0);
    let map_window = ((fits / cycle).floor() * cycle).max(cycle);
    let mut verdict = soak::judge(&samples, &traffic, MAPS_FROM, map_window, &state);
    verdict.problems.extend(problems);
    let rate = activity.endpoint_changes as f64 / activity.seconds.max(1.0);
    if rate < 0.9 * ENDPOINT_CHANGES_PER_SEC as f64 {
        verdict.problems.push(format!(
            "endpoint churn ran at {rate:.1}/s, below 90 % of {ENDPOINT_CHANGES_PER_SEC}/s"
        ));
    }
    // Failure lines without a count behind them (unexpected output, a client
    // that had to be killed) fail the run too.
    verdict.failed_requests = verdict.failed_requests.max(failures.len() as u64);
    let config = json!({
        "minutes": minutes, "seed": seed, "started_unix_ms": started_unix_ms as u64,
        "endpoint_changes_per_sec": ENDPOINT_CHANGES_PER_SEC,
        "kill_every_s": KILL_EVERY.as_secs(), "drop_watches_every_s": DROP_WATCHES_EVERY.as_secs(),
        "compact_every_s": COMPACT_EVERY.as_secs(),
        "service_change_every_ms": SERVICE_CHANGE_EVERY.as_millis() as u64,
        "sample_every_s": SAMPLE_EVERY.as_secs(), "load_pause_ms": LOAD_PAUSE_MS,
        "warm_up_s": WARM_UP, "maps_from_s": MAPS_FROM, "map_window_s": map_window,
        "age_window_s": [*soak::AGE_WINDOW.start(), *soak::AGE_WINDOW.end()],
        "flat_tolerance": soak::FLAT_TOLERANCE, "map_slack_entries": soak::MAP_SLACK_ENTRIES,
        "churned_services": CHURNED, "extra_services": EXTRA_SERVICES,
    });
    let json = soak::report_json(&config, &activity, &verdict, &traffic, &failures, &samples);
    let md = soak::report_markdown(&activity, &verdict, &traffic, &failures);
    fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("writing the report: {e}"));
    fs::write(dir.join("report.md"), &md).unwrap_or_else(|e| panic!("writing the report: {e}"));
    eprintln!("{md}\nreport: {}", dir.display());
    assert!(
        verdict.passed(),
        "the soak failed (report in {}):\n{md}",
        dir.display()
    );
}
