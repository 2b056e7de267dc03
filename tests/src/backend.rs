//! Test backends: a TCP and a UDP server, each on its own thread, answering every
//! request with one line that names the backend and the peer it saw:
//! `backend=<name> peer=<addr:port>\n` (parsed by [`crate::Reply`]).
//!
//! A TCP backend started with [`TcpBackend::start_sessions`] keeps each
//! connection open and answers every line on it, for long-lived flows.
//!
//! Create them after [`crate::Sandbox::enter`], so they bind inside the namespace.
//! Both stop in `Drop` within about [`POLL_INTERVAL`]; every read is bounded, so a
//! silent client cannot wedge them.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsFd,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::Error;

/// How often the server threads look at their stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long a TCP connection may take to send its request line.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a session connection may stay idle before the backend closes it.
const SESSION_IDLE: Duration = Duration::from_secs(60);
/// The longest request line read; the rest is ignored.
const MAX_REQUEST: usize = 1024;
/// Connections served on their own thread at once; beyond that, inline.
const MAX_CONNECTION_THREADS: usize = 64;

/// The reply line a backend sends.
fn reply_line(name: &str, peer: SocketAddr) -> String {
    format!("backend={name} peer={peer}\n")
}

struct Shared {
    name: String,
    /// Answer every line of a connection (not only the first).
    sessions: bool,
    stop: AtomicBool,
    served: AtomicU64,
}

/// A TCP server that reads one line per connection and answers with its name and
/// the client address it saw, then closes.
pub struct TcpBackend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl TcpBackend {
    /// Binds `bind` (the address must exist in the current namespace) and serves
    /// on a thread until dropped.
    pub fn start(bind: SocketAddr, name: &str) -> Result<Self, Error> {
        Self::start_inner(bind, name, false)
    }

    /// Like [`TcpBackend::start`], but each connection stays open and every
    /// line on it is answered (each answer counted), until the client closes
    /// it or it is idle for a minute.
    pub fn start_sessions(bind: SocketAddr, name: &str) -> Result<Self, Error> {
        Self::start_inner(bind, name, true)
    }

    fn start_inner(bind: SocketAddr, name: &str, sessions: bool) -> Result<Self, Error> {
        let listener =
            TcpListener::bind(bind).map_err(|e| Error::socket("binding a TCP backend", bind, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::socket("reading a TCP backend's address", bind, e))?;
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            sessions,
            stop: AtomicBool::new(false),
            served: AtomicU64::new(0),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name(format!("tcp-{name}"))
            .spawn(move || tcp_accept_loop(&listener, &thread_shared))
            .map_err(|e| Error::socket("spawning a backend thread", bind, e))?;
        Ok(TcpBackend {
            addr,
            shared,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its name, as it appears in replies.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// How many requests it has answered (counted as the reply is sent).
    pub fn served(&self) -> u64 {
        self.shared.served.load(Ordering::Relaxed)
    }
}

impl Drop for TcpBackend {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// True when `fd` became readable within one poll interval.
fn readable(fd: &impl AsFd) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(POLL_INTERVAL).unwrap_or(PollTimeout::NONE);
    matches!(poll(&mut fds, timeout), Ok(n) if n > 0)
}

fn tcp_accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let active = Arc::new(AtomicUsize::new(0));
    while !shared.stop.load(Ordering::Relaxed) {
        if !readable(listener) {
            continue;
        }
        let Ok((stream, peer)) = listener.accept() else {
            continue;
        };
        if active.load(Ordering::Relaxed) >= MAX_CONNECTION_THREADS {
            serve_tcp(stream, peer, shared);
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let (conn_shared, conn_active) = (Arc::clone(shared), Arc::clone(&active));
        let spawned = thread::Builder::new().spawn(move || {
            serve_tcp(stream, peer, &conn_shared);
            conn_active.fetch_sub(1, Ordering::Relaxed);
        });
        if spawned.is_err() {
            // The closure (and the connection) is gone; only the count is left over.
            active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn serve_tcp(mut stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    if shared.sessions {
        serve_session(stream, peer, shared);
        return;
    }
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
    // Read up to the first newline (or EOF, or the limit); a client that only
    // connects and closes gets nothing.
    let mut buf = [0u8; MAX_REQUEST];
    let mut len = 0;
    while len < buf.len() {
        match stream.read(&mut buf[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                len += n;
                if buf[..len].contains(&b'\n') {
                    break;
                }
            }
        }
    }
    if len == 0 {
        return;
    }
    // Counted before the reply goes out, so a client holding the reply always
    // sees it counted.
    shared.served.fetch_add(1, Ordering::Relaxed);
    let _ = stream.write_all(reply_line(&shared.name, peer).as_bytes());
}

/// Answers every line of the connection until EOF, an error, an idle minute
/// or the backend stopping (checked between reads, every poll interval).
fn serve_session(mut stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(POLL_INTERVAL));
    let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; MAX_REQUEST];
    let mut idle = Duration::ZERO;
    while !shared.stop.load(Ordering::Relaxed) && idle < SESSION_IDLE {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                idle = Duration::ZERO;
                pending.extend_from_slice(&buf[..n]);
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    pending.drain(..=end);
                    shared.served.fetch_add(1, Ordering::Relaxed);
                    if stream
                        .write_all(reply_line(&shared.name, peer).as_bytes())
                        .is_err()
                    {
                        return;
                    }
                }
                if pending.len() > MAX_REQUEST {
                    pending.clear();
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                idle += POLL_INTERVAL;
            }
            Err(_) => return,
        }
    }
}

/// A UDP server that answers every datagram with its name and the source it saw.
pub struct UdpBackend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl UdpBackend {
    /// Binds `bind` and serves on a thread until dropped.
    pub fn start(bind: SocketAddr, name: &str) -> Result<Self, Error> {
        let socket =
            UdpSocket::bind(bind).map_err(|e| Error::socket("binding a UDP backend", bind, e))?;
        let addr = socket
            .local_addr()
            .map_err(|e| Error::socket("reading a UDP backend's address", bind, e))?;
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            sessions: false,
            stop: AtomicBool::new(false),
            served: AtomicU64::new(0),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name(format!("udp-{name}"))
            .spawn(move || udp_loop(&socket, &thread_shared))
            .map_err(|e| Error::socket("spawning a backend thread", bind, e))?;
        Ok(UdpBackend {
            addr,
            shared,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its name, as it appears in replies.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// How many datagrams it has answered (counted as the reply is sent).
    pub fn served(&self) -> u64 {
        self.shared.served.load(Ordering::Relaxed)
    }
}

impl Drop for UdpBackend {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn udp_loop(socket: &UdpSocket, shared: &Shared) {
    let mut buf = [0u8; MAX_REQUEST];
    while !shared.stop.load(Ordering::Relaxed) {
        if !readable(socket) {
            continue;
        }
        let Ok((_, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        shared.served.fetch_add(1, Ordering::Relaxed);
        let _ = socket.send_to(reply_line(&shared.name, peer).as_bytes(), peer);
    }
}
