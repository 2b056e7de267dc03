//! `cargo xtask bench`: the cost of a TCP connect plus one small request and
//! response through a ClusterIP (socket-level LB) next to the same work done
//! directly against the backend, measured in the same run.
//!
//! Each sample starts from a fresh sandbox (network namespace, cgroup, bpffs):
//! connection-rate runs leave TIME_WAIT state behind that would skew the next
//! sample. Contenders alternate (direct, VIP, direct, VIP, …); we report the
//! median with min–max and the ratio of medians. Everything stays inside the
//! sandbox's namespace; every loop is bounded in count and time.

use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use proxy_tests::{ProxyProcess, Sandbox, manifest, wait_until};

use crate::baseline::{self, SvcSpec, synthetic};

const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 244, 255, 1);
const BACKEND_PORT: u16 = 8080;
/// The measured Service's ClusterIP: outside the range `baseline::synthetic`
/// uses for the other Services, inside the sandbox's dead-end service route.
const VIP: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);
const VIP_PORT: u16 = 80;
/// Upper bound on one sample, whatever `--connections` says.
const SAMPLE_DEADLINE: Duration = Duration::from_secs(60);
/// Upper bound on loading one ruleset.
const LOAD_DEADLINE: Duration = Duration::from_secs(120);

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Samples per contender.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Connections per sample.
    #[arg(long, default_value_t = 5000)]
    connections: usize,
    /// Services programmed (2 endpoints each); the one measured is the last.
    #[arg(long, default_value_t = 1)]
    services: usize,
    /// Also measure kube-proxy's iptables and nftables rulesets doing the same DNAT.
    #[arg(long)]
    kube_proxy: bool,
    /// A short smoke run (3 rounds of 500 connections) for CI.
    #[arg(long)]
    quick: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Contender {
    Direct,
    SocketLb,
    Iptables,
    Nftables,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Direct => "direct to backend",
            Contender::SocketLb => "ClusterIP via socket LB",
            Contender::Iptables => "ClusterIP via iptables (kube-proxy rules)",
            Contender::Nftables => "ClusterIP via nftables (kube-proxy rules)",
        }
    }
}

pub fn run(root: &Path, proxy_bin: &Path, args: &BenchArgs) -> anyhow::Result<()> {
    let (rounds, connections) = if args.quick {
        (3, 500)
    } else {
        (args.rounds.max(1), args.connections.max(1))
    };
    let services = args.services.max(1);
    let mut contenders = vec![Contender::Direct, Contender::SocketLb];
    if args.kube_proxy {
        contenders.extend([Contender::Iptables, Contender::Nftables]);
    }
    eprintln!(
        "bench: {rounds} rounds × {connections} connections per contender, {services} Services, alternating"
    );
    let specs = cluster(services);
    let mut results: Vec<(Contender, Vec<f64>)> =
        contenders.iter().map(|c| (*c, Vec::new())).collect();
    for round in 0..rounds {
        for (contender, samples) in results.iter_mut() {
            let rate = sample(proxy_bin, *contender, &specs, connections)
                .with_context(|| format!("round {round}, {}", contender.name()))?;
            eprintln!(
                "bench: round {round} {:<44} {rate:>10.0} conn/s",
                contender.name()
            );
            samples.push(rate);
        }
    }
    let report = report(rounds, connections, services, &results);
    println!("{report}");
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("socket-lb.md");
    std::fs::write(&path, &report)?;
    eprintln!("bench: report written to {}", path.display());
    Ok(())
}

/// `n - 1` synthetic Services plus the measured one (last, as in the
/// kube-proxy reference figures: the worst case for a linear rule list).
fn cluster(n: usize) -> Vec<SvcSpec> {
    let mut specs = synthetic(n - 1, 2);
    specs.push(SvcSpec {
        namespace: "bench".to_owned(),
        name: "measured".to_owned(),
        port_name: "http".to_owned(),
        cluster_ip: VIP,
        port: VIP_PORT,
        protocol: baseline::Protocol::Tcp,
        endpoints: vec![(BACKEND, BACKEND_PORT)],
    });
    specs
}

/// One sample in a fresh sandbox: connections per second over `connections`
/// connect + request + response + close cycles.
fn sample(
    proxy_bin: &Path,
    contender: Contender,
    specs: &[SvcSpec],
    connections: usize,
) -> anyhow::Result<f64> {
    let mut sandbox = Sandbox::new()?;
    sandbox.add_local_addr(IpAddr::V4(BACKEND))?;
    sandbox.enter()?;
    let backend = Server::start(SocketAddr::new(IpAddr::V4(BACKEND), BACKEND_PORT))?;
    let mut _proxy = None;
    let vip = SocketAddr::new(IpAddr::V4(VIP), VIP_PORT);
    let target = match contender {
        Contender::Direct => SocketAddr::new(IpAddr::V4(BACKEND), BACKEND_PORT),
        Contender::SocketLb => {
            let dir = sandbox.manifests_dir();
            manifest::write_atomic(&dir, "cluster.yaml", &manifests(specs))?;
            _proxy = Some(ProxyProcess::start(proxy_bin, &sandbox, &dir)?);
            vip
        }
        // The sandbox thread is in the namespace: the loaders run there too.
        Contender::Iptables => {
            load(
                "iptables-restore",
                &["-w", "5", "--counters"],
                &baseline::iptables_ruleset(specs),
            )?;
            vip
        }
        Contender::Nftables => {
            load("nft", &["-f"], &baseline::nft_ruleset(specs))?;
            vip
        }
    };
    if !wait_until(Duration::from_secs(30), || one_request(target).is_ok()) {
        bail!("{target} never started answering");
    }
    // Warm up, then measure.
    for _ in 0..50 {
        one_request(target)?;
    }
    let start = Instant::now();
    let mut done = 0;
    while done < connections && start.elapsed() < SAMPLE_DEADLINE {
        one_request(target)?;
        done += 1;
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    drop(backend);
    Ok(rate)
}

/// Runs a rule loader on `rules` in the current network namespace (the
/// sandbox's), bounded by [`LOAD_DEADLINE`].
fn load(tool: &str, args: &[&str], rules: &str) -> anyhow::Result<()> {
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), rules)?;
    let mut child = Command::new(tool)
        .args(args)
        .arg(file.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {tool}"))?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                bail!("{tool} failed ({status}): {err}");
            }
            eprintln!(
                "bench: {tool} loaded the ruleset in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed() > LOAD_DEADLINE {
            let _ = child.kill();
            bail!("{tool} did not finish within {LOAD_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The same Services as manifests for the proxy (compact YAML).
fn manifests(specs: &[SvcSpec]) -> String {
    let mut yaml = String::new();
    for (i, svc) in specs.iter().enumerate() {
        let _ = write!(
            yaml,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec:\n  clusterIP: {vip}\n  ports: [{{name: http, port: {port}, protocol: TCP, targetPort: {tp}}}]\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: s{i}, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {tp}, protocol: TCP}}]\nendpoints:\n",
            name = svc.name,
            ns = svc.namespace,
            vip = svc.cluster_ip,
            port = svc.port,
            tp = svc.endpoints.first().map_or(BACKEND_PORT, |e| e.1),
        );
        for (addr, _) in &svc.endpoints {
            let _ = writeln!(
                yaml,
                "- addresses: [\"{addr}\"]\n  conditions: {{ready: true}}"
            );
        }
    }
    yaml
}

fn one_request(target: SocketAddr) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_nodelay(true)?;
    stream.write_all(b"ping\n")?;
    let mut reply = [0u8; 16];
    let n = stream.read(&mut reply)?;
    if &reply[..n] != b"pong\n" {
        bail!(
            "unexpected reply {:?}",
            String::from_utf8_lossy(&reply[..n])
        );
    }
    Ok(())
}

/// A minimal sequential server: read a line, answer `pong`, close. Sequential on
/// purpose, as the client is: the measurement is latency-bound, not parallel.
struct Server {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    thread: Option<thread::JoinHandle<()>>,
}

impl Server {
    fn start(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 64];
                if matches!(stream.read(&mut buf), Ok(n) if n > 0) {
                    let _ = stream.write_all(b"pong\n");
                }
            }
        });
        Ok(Self {
            stop,
            addr,
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        })
}

fn report(
    rounds: usize,
    connections: usize,
    services: usize,
    results: &[(Contender, Vec<f64>)],
) -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let direct = results
        .iter()
        .find(|(c, _)| *c == Contender::Direct)
        .map_or(1.0, |(_, v)| median(v));
    let mut out = format!(
        "## TCP connect + one request/response, {services} Service(s) programmed\n\n\
         Kernel {}, {cpus} CPUs; {rounds} samples × {connections} sequential connections per contender, \
         alternating, each in a fresh network namespace; the measured Service is the last of {services}.\n\n\
         | contender | median conn/s | min–max | ratio to direct | µs per connection |\n|---|---|---|---|---|\n",
        kernel.trim()
    );
    for (contender, samples) in results {
        let m = median(samples);
        let (lo, hi) = min_max(samples);
        let _ = writeln!(
            out,
            "| {} | {m:.0} | {lo:.0}–{hi:.0} | {:.3}× | {:.1} |",
            contender.name(),
            m / direct,
            1e6 / m
        );
    }
    out
}
