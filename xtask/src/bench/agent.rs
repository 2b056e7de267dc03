//! The processes the bench runs inside its namespaces: `xtask bench-agent
//! server` (the HTTP backends) and `xtask bench-agent conn|latency` (the Rust
//! load generators). The bench starts them with [`super::world::World`], so
//! they run in the right namespace and cgroup; they print one JSON line.
//!
//! Wire protocol: HTTP/1.1, just enough of it for `wrk` and HAProxy: a request
//! ends at the blank line, the answer is `200` with a two-byte body, and the
//! connection stays open unless the request said `Connection: close`.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
const RESPONSE_CLOSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
const REQUEST_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
/// Bound on each socket operation of the load generators.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(clap::Subcommand)]
pub enum Agent {
    /// HTTP backends on 0.0.0.0:PORT (runs until killed).
    Server {
        #[arg(long)]
        port: u16,
    },
    /// New connections per second: WORKERS threads, each looping connect +
    /// request + response + close against the targets (round robin) for SECONDS.
    Conn {
        #[arg(long, value_delimiter = ',', required = true)]
        targets: Vec<SocketAddr>,
        #[arg(long)]
        seconds: f64,
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
    /// Connect latency (SYN → established) for COUNT connections, each to a
    /// target picked at random from the file (one `ip:port` per line); each
    /// connection then does one request/response, so a broken path fails.
    Latency {
        #[arg(long)]
        targets_file: PathBuf,
        #[arg(long)]
        count: usize,
    },
    /// Waits until every target answers one request (bounded).
    Probe {
        #[arg(long, value_delimiter = ',', required = true)]
        targets: Vec<SocketAddr>,
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
    },
}

/// What `conn` prints.
#[derive(Debug, Serialize, Deserialize)]
pub struct ConnResult {
    pub connections: u64,
    pub errors: u64,
    pub seconds: f64,
    pub first_error: Option<String>,
}

/// What `latency` prints: microseconds.
#[derive(Debug, Serialize, Deserialize)]
pub struct LatencyResult {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub samples: usize,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// What every load generator reports: successes, failures and the first failure.
pub trait Outcome {
    fn outcome(&self) -> (u64, u64, Option<&str>);
}

impl Outcome for ConnResult {
    fn outcome(&self) -> (u64, u64, Option<&str>) {
        (self.connections, self.errors, self.first_error.as_deref())
    }
}

impl Outcome for LatencyResult {
    fn outcome(&self) -> (u64, u64, Option<&str>) {
        (
            self.samples as u64,
            self.errors,
            self.first_error.as_deref(),
        )
    }
}

pub fn run(agent: Agent) -> anyhow::Result<()> {
    match agent {
        Agent::Server { port } => server(port),
        Agent::Conn {
            targets,
            seconds,
            workers,
        } => {
            let r = conn(&targets, Duration::from_secs_f64(seconds), workers.max(1));
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Agent::Latency {
            targets_file,
            count,
        } => {
            let text = std::fs::read_to_string(&targets_file)
                .with_context(|| format!("reading {}", targets_file.display()))?;
            let targets = text
                .lines()
                .map(|l| {
                    l.trim()
                        .parse::<SocketAddr>()
                        .with_context(|| format!("target {l:?}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            if targets.is_empty() {
                bail!("{} lists no targets", targets_file.display());
            }
            let r = latency(&targets, count.max(1));
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Agent::Probe { targets, seconds } => {
            let deadline = Instant::now() + Duration::from_secs_f64(seconds);
            for t in targets {
                loop {
                    match request(t) {
                        Ok(_) => break,
                        Err(e) if Instant::now() > deadline => {
                            bail!("{t} never answered: {e:#}")
                        }
                        Err(_) => thread::sleep(Duration::from_millis(50)),
                    }
                }
            }
            Ok(())
        }
    }
}

/// One connection: connect, request, read the whole answer until the server
/// closes. Returns the connect time.
fn request(target: SocketAddr) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut stream = TcpStream::connect_timeout(&target, IO_TIMEOUT)?;
    let connected = start.elapsed();
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(REQUEST_CLOSE)?;
    let mut buf = [0u8; 256];
    let mut got = 0;
    loop {
        let n = stream.read(&mut buf[got.min(255)..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    if got < RESPONSE_CLOSE.len() || !buf.starts_with(b"HTTP/1.1 200") {
        bail!("{target}: short or wrong answer ({got} bytes)");
    }
    Ok(connected)
}

fn conn(targets: &[SocketAddr], length: Duration, workers: usize) -> ConnResult {
    let done = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let first_error = std::sync::Mutex::new(None::<String>);
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    thread::scope(|s| {
        for w in 0..workers {
            let (done, errors, first_error, stop) = (&done, &errors, &first_error, &stop);
            s.spawn(move || {
                let mut i = w;
                while !stop.load(Ordering::Relaxed) && start.elapsed() < length {
                    match request(targets[i % targets.len()]) {
                        Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            if let Ok(mut f) = first_error.lock() {
                                f.get_or_insert_with(|| format!("{e:#}"));
                            }
                            errors.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    i += workers;
                }
            });
        }
    });
    ConnResult {
        connections: done.into_inner(),
        errors: errors.into_inner(),
        seconds: start.elapsed().as_secs_f64(),
        first_error: first_error.into_inner().ok().flatten(),
    }
}

fn latency(targets: &[SocketAddr], count: usize) -> LatencyResult {
    // A fixed-seed xorshift: the same sequence of Services in every run and
    // for every contender.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut samples = Vec::with_capacity(count);
    let mut errors = 0;
    let mut first_error = None;
    for _ in 0..count {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let target = targets[(state % targets.len() as u64) as usize];
        match request(target) {
            Ok(d) => samples.push(d.as_secs_f64() * 1e6),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if samples.is_empty() {
            0.0
        } else {
            let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i]
        }
    };
    LatencyResult {
        p50_us: pct(0.50),
        p90_us: pct(0.90),
        p99_us: pct(0.99),
        samples: samples.len(),
        errors,
        first_error,
    }
}

fn server(port: u16) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_io()
        .build()?;
    rt.block_on(async move {
        // All addresses of the backend namespace (the bench's pods).
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
            .await
            .with_context(|| format!("binding 0.0.0.0:{port}"))?;
        accept_loop(listener).await;
        Ok(())
    })
}

async fn accept_loop(listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve(stream));
    }
}

async fn serve(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 4096];
    let mut filled = 0;
    loop {
        let Ok(n) = stream.read(&mut buf[filled..]).await else {
            return;
        };
        if n == 0 {
            return;
        }
        filled += n;
        // Answer every complete request in the buffer (wrk may pipeline none,
        // but a request can arrive in pieces).
        while let Some(end) = find(&buf[..filled], b"\r\n\r\n") {
            let head = &buf[..end];
            let close = find(head, b"Connection: close").is_some();
            let answer = if close { RESPONSE_CLOSE } else { RESPONSE };
            if stream.write_all(answer).await.is_err() {
                return;
            }
            if close {
                // We close first: TIME_WAIT stays on the backend, not the client.
                return;
            }
            buf.copy_within(end + 4..filled, 0);
            filled -= end + 4;
        }
        if filled == buf.len() {
            return; // an absurd request
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend on loopback, for the duration of `f`.
    fn with_server(f: impl FnOnce(SocketAddr) + Send) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_io()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        rt.spawn(accept_loop(listener));
        f(addr);
    }

    #[test]
    fn one_request_per_connection_and_keep_alive() {
        with_server(|addr| {
            request(addr).expect("a request with Connection: close");
            // Two requests on one connection, the second in two pieces.
            let mut s = TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
            s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n")
                .expect("write");
            s.write_all(b"Host: a\r\n\r\n").expect("write");
            let mut got = Vec::new();
            let mut buf = [0u8; 256];
            while got.len() < 2 * RESPONSE.len() {
                let n = s.read(&mut buf).expect("read");
                assert!(n > 0, "the server closed a keep-alive connection");
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, [RESPONSE, RESPONSE].concat());
        });
    }

    #[test]
    fn conn_counts_connections_and_errors() {
        with_server(|addr| {
            let r = conn(&[addr], Duration::from_millis(200), 2);
            assert!(r.connections > 0 && r.errors == 0, "{r:?}");
        });
        // Nobody listens on port 1 of loopback: every connect fails, fast.
        let dead: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let r = conn(&[dead], Duration::from_millis(100), 1);
        assert_eq!(r.connections, 0);
        assert!(r.errors > 0 && r.first_error.is_some(), "{r:?}");
    }

    #[test]
    fn latency_percentiles_are_ordered() {
        with_server(|addr| {
            let r = latency(&[addr], 50);
            assert_eq!((r.samples, r.errors), (50, 0));
            assert!(
                0.0 < r.p50_us && r.p50_us <= r.p90_us && r.p90_us <= r.p99_us,
                "{r:?}"
            );
        });
    }
}
