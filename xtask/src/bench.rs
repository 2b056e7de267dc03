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
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use proxy_tests::{
    ProxyProcess, Sandbox,
    manifest::{self, AddressType, Endpoint, EndpointSlice, Protocol, Service},
    wait_until,
};

const BACKEND: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 244, 7, 1));
const BACKEND_PORT: u16 = 8080;
const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 96, 7, 1));
const VIP_PORT: u16 = 80;
/// Upper bound on one sample, whatever `--connections` says.
const SAMPLE_DEADLINE: Duration = Duration::from_secs(60);

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Samples per contender.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Connections per sample.
    #[arg(long, default_value_t = 5000)]
    connections: usize,
    /// A short smoke run (3 rounds of 500 connections) for CI.
    #[arg(long)]
    quick: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Contender {
    Direct,
    SocketLb,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Direct => "direct to backend",
            Contender::SocketLb => "ClusterIP via socket LB",
        }
    }
}

pub fn run(root: &Path, proxy_bin: &Path, args: &BenchArgs) -> anyhow::Result<()> {
    let (rounds, connections) = if args.quick {
        (3, 500)
    } else {
        (args.rounds.max(1), args.connections.max(1))
    };
    eprintln!("bench: {rounds} rounds × {connections} connections per contender, alternating");
    let mut direct = Vec::new();
    let mut vip = Vec::new();
    for round in 0..rounds {
        for contender in [Contender::Direct, Contender::SocketLb] {
            let rate = sample(proxy_bin, contender, connections)
                .with_context(|| format!("round {round}, {}", contender.name()))?;
            eprintln!(
                "bench: round {round} {:<26} {rate:>10.0} conn/s",
                contender.name()
            );
            match contender {
                Contender::Direct => direct.push(rate),
                Contender::SocketLb => vip.push(rate),
            }
        }
    }
    let report = report(rounds, connections, &direct, &vip);
    println!("{report}");
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("socket-lb.md");
    std::fs::write(&path, &report)?;
    eprintln!("bench: report written to {}", path.display());
    Ok(())
}

/// One sample in a fresh sandbox: connections per second over `connections`
/// connect + request + response + close cycles.
fn sample(proxy_bin: &Path, contender: Contender, connections: usize) -> anyhow::Result<f64> {
    let mut sandbox = Sandbox::new()?;
    sandbox.add_local_addr(BACKEND)?;
    sandbox.enter()?;
    let backend = Server::start(SocketAddr::new(BACKEND, BACKEND_PORT))?;
    let mut _proxy = None;
    let target = match contender {
        Contender::Direct => SocketAddr::new(BACKEND, BACKEND_PORT),
        Contender::SocketLb => {
            let dir = sandbox.manifests_dir();
            let svc = Service::new("bench", "echo").cluster_ip(VIP).port(
                "tcp",
                Protocol::Tcp,
                VIP_PORT,
                BACKEND_PORT,
            );
            let slice = EndpointSlice::new("bench", "echo-1", "echo", AddressType::IPv4)
                .endpoint(Endpoint::ready(BACKEND))
                .port("tcp", Protocol::Tcp, BACKEND_PORT);
            manifest::write_atomic(
                &dir,
                "echo.yaml",
                &manifest::documents(&[svc.to_yaml(), slice.to_yaml()]),
            )?;
            _proxy = Some(ProxyProcess::start(proxy_bin, &sandbox, &dir)?);
            let vip = SocketAddr::new(VIP, VIP_PORT);
            if !wait_until(Duration::from_secs(10), || one_request(vip).is_ok()) {
                bail!("the VIP never started answering");
            }
            vip
        }
    };
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

fn report(rounds: usize, connections: usize, direct: &[f64], vip: &[f64]) -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let (dm, vm) = (median(direct), median(vip));
    let ((dlo, dhi), (vlo, vhi)) = (min_max(direct), min_max(vip));
    format!(
        "## Socket-level LB: TCP connect + one request/response\n\n\
         Kernel {kernel_trim}, {cpus} CPUs; {rounds} samples × {connections} sequential connections per contender, \
         alternating, each in a fresh network namespace.\n\n\
         | contender | median conn/s | min–max | ratio to direct |\n\
         |---|---|---|---|\n\
         | direct to backend | {dm:.0} | {dlo:.0}–{dhi:.0} | 1.00× |\n\
         | ClusterIP via socket LB | {vm:.0} | {vlo:.0}–{vhi:.0} | {ratio:.3}× |\n\n\
         Per connection: direct {dus:.1} µs, via VIP {vus:.1} µs (median).\n",
        kernel_trim = kernel.trim(),
        ratio = vm / dm,
        dus = 1e6 / dm,
        vus = 1e6 / vm,
    )
}
