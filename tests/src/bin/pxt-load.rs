//! A load generator in its own process, for tests that need the client in
//! another cgroup or network namespace than the test (the soak: ClusterIP
//! clients in the socket hooks' cgroup, NodePort clients in the external
//! client's namespace, entered with `nsenter --net`).
//!
//! `pxt-load [--cgroup DIR] --seconds N [--pause-ms P] KIND=ADDR…`, one thread
//! per `KIND=ADDR` until `N` seconds have passed:
//! - `tcp-new`: a new connection per request (one line, one reply);
//! - `udp-new`: a fresh unconnected socket per request; the reply must come
//!   from `ADDR` (reverse NAT);
//! - `tcp-long`: one connection, a request every `P` ms; it must stay open
//!   and be answered by the same backend throughout;
//! - `udp-long`: one connected socket, the same.
//!
//! A long flow that fails is reopened (and the failure counted). With
//! `--cgroup DIR` the process first moves itself into that cgroup v2
//! directory, before any socket exists.
//!
//! Output, one line each, as things happen: `fail KIND ADDR UNIX_MS MESSAGE`
//! (the first 100 per thread; the rest are only counted), then at the end
//! `done KIND ADDR OK FAILED BACKENDS` (`BACKENDS`: the distinct backends that
//! answered, comma-separated).

use std::{
    collections::BTreeSet,
    io::{self, Write},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    process::ExitCode,
    sync::Mutex,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use proxy_tests::{Reply, TcpSession, tcp_request_timeout, udp_unconnected_request_timeout};

/// Each step of a request (connect, send, receive).
const STEP_TIMEOUT: Duration = Duration::from_secs(2);
/// Failure lines printed per thread; the rest are counted.
const MAX_FAIL_LINES: u64 = 100;

static STDOUT: Mutex<()> = Mutex::new(());

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    TcpNew,
    UdpNew,
    TcpLong,
    UdpLong,
}

impl Kind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "tcp-new" => Kind::TcpNew,
            "udp-new" => Kind::UdpNew,
            "tcp-long" => Kind::TcpLong,
            "udp-long" => Kind::UdpLong,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Kind::TcpNew => "tcp-new",
            Kind::UdpNew => "udp-new",
            Kind::TcpLong => "tcp-long",
            Kind::UdpLong => "udp-long",
        }
    }
}

struct Args {
    cgroup: Option<String>,
    seconds: u64,
    pause: Duration,
    specs: Vec<(Kind, SocketAddr)>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        cgroup: None,
        seconds: 0,
        pause: Duration::from_millis(20),
        specs: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--cgroup" => args.cgroup = Some(value("--cgroup")?),
            "--seconds" => {
                args.seconds = value("--seconds")?
                    .parse()
                    .map_err(|e| format!("--seconds: {e}"))?;
            }
            "--pause-ms" => {
                let ms = value("--pause-ms")?
                    .parse()
                    .map_err(|e| format!("--pause-ms: {e}"))?;
                args.pause = Duration::from_millis(ms);
            }
            spec => {
                let (kind, addr) = spec
                    .split_once('=')
                    .ok_or(format!("{spec:?}: expected KIND=ADDR"))?;
                let kind = Kind::parse(kind).ok_or(format!("{spec:?}: unknown kind {kind:?}"))?;
                let addr = addr.parse().map_err(|e| format!("{spec:?}: {e}"))?;
                args.specs.push((kind, addr));
            }
        }
    }
    if args.seconds == 0 || args.specs.is_empty() {
        return Err("usage: pxt-load [--cgroup DIR] --seconds N [--pause-ms P] KIND=ADDR…".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("pxt-load: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(cgroup) = &args.cgroup {
        let procs = std::path::Path::new(cgroup).join("cgroup.procs");
        if let Err(e) = std::fs::write(&procs, std::process::id().to_string()) {
            eprintln!("pxt-load: joining {}: {e}", procs.display());
            return ExitCode::from(1);
        }
    }
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let pause = args.pause;
    thread::scope(|s| {
        for &(kind, addr) in &args.specs {
            s.spawn(move || run(kind, addr, until, pause));
        }
    });
    ExitCode::SUCCESS
}

/// What one thread saw.
#[derive(Default)]
struct Tally {
    ok: u64,
    failed: u64,
    backends: BTreeSet<String>,
}

impl Tally {
    fn fail(&mut self, kind: Kind, addr: SocketAddr, message: &str) {
        self.failed += 1;
        if self.failed <= MAX_FAIL_LINES {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            say(&format!("fail {} {addr} {ms} {message}", kind.name()));
        }
    }
}

fn say(line: &str) {
    let _guard = STDOUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{}", line.replace('\n', " "));
    let _ = out.flush();
}

fn run(kind: Kind, addr: SocketAddr, until: Instant, pause: Duration) {
    let mut tally = Tally::default();
    match kind {
        Kind::TcpNew | Kind::UdpNew => {
            while Instant::now() < until {
                let result = if kind == Kind::TcpNew {
                    tcp_request_timeout(addr, STEP_TIMEOUT)
                } else {
                    udp_unconnected_request_timeout(addr, STEP_TIMEOUT).and_then(|(reply, from)| {
                        if from == addr {
                            Ok(reply)
                        } else {
                            Err(io::Error::other(format!("reply came from {from}")))
                        }
                    })
                };
                match result {
                    Ok(reply) => {
                        tally.ok += 1;
                        tally.backends.insert(reply.backend);
                    }
                    Err(e) => tally.fail(kind, addr, &format!("{:?}: {e}", e.kind())),
                }
                thread::sleep(pause);
            }
        }
        Kind::TcpLong | Kind::UdpLong => long_flows(kind, addr, until, pause, &mut tally),
    }
    let backends: Vec<_> = tally.backends.into_iter().collect();
    say(&format!(
        "done {} {addr} {} {} {}",
        kind.name(),
        tally.ok,
        tally.failed,
        if backends.is_empty() {
            "-".to_owned()
        } else {
            backends.join(",")
        }
    ));
}

/// A long-lived flow: TCP connection or connected UDP socket.
enum Flow {
    Tcp(TcpSession),
    Udp(UdpSocket),
}

impl Flow {
    fn open(kind: Kind, addr: SocketAddr) -> io::Result<Self> {
        if kind == Kind::TcpLong {
            return TcpSession::open(addr, STEP_TIMEOUT).map(Flow::Tcp);
        }
        let any: SocketAddr = match addr {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(any)?;
        socket.set_read_timeout(Some(STEP_TIMEOUT))?;
        socket.set_write_timeout(Some(STEP_TIMEOUT))?;
        socket.connect(addr)?;
        Ok(Flow::Udp(socket))
    }

    fn request(&mut self) -> io::Result<Reply> {
        match self {
            Flow::Tcp(session) => session.request(),
            Flow::Udp(socket) => {
                socket.send(b"hello\n")?;
                let mut buf = [0u8; 1024];
                let n = socket.recv(&mut buf)?;
                String::from_utf8_lossy(&buf[..n]).parse()
            }
        }
    }
}

fn long_flows(kind: Kind, addr: SocketAddr, until: Instant, pause: Duration, tally: &mut Tally) {
    // The flow and the backend that answered its first request.
    let mut flow: Option<(Flow, Option<String>)> = None;
    let mut opened = 0u64;
    while Instant::now() < until {
        if flow.is_none() {
            match Flow::open(kind, addr) {
                Ok(f) => {
                    opened += 1;
                    flow = Some((f, None));
                }
                Err(e) => {
                    tally.fail(kind, addr, &format!("opening: {:?}: {e}", e.kind()));
                    thread::sleep(pause);
                    continue;
                }
            }
        }
        let Some((f, first)) = flow.as_mut() else {
            continue;
        };
        let failure = match f.request() {
            Ok(reply) => match first {
                None => {
                    *first = Some(reply.backend.clone());
                    tally.backends.insert(reply.backend);
                    None
                }
                Some(b) if *b == reply.backend => None,
                Some(b) => Some(format!(
                    "flow {opened} answered by {}, began with {b}",
                    reply.backend
                )),
            },
            Err(e) => Some(format!("flow {opened}: {:?}: {e}", e.kind())),
        };
        match failure {
            None => tally.ok += 1,
            Some(message) => {
                tally.fail(kind, addr, &message);
                flow = None;
            }
        }
        thread::sleep(pause);
    }
}
