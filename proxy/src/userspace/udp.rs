//! The userspace UDP proxy of one frontend: a socket bound to `VIP:port`, and a
//! session per client address. A session has its own socket connected to the
//! backend chosen when it opened (random, or the affinity backend), so the
//! backend's replies arrive on it and are sent back to the client from
//! `VIP:port`, the address the client wrote to.
//!
//! A session ends after the idle timeout without datagrams either way, when
//! its backend leaves the pool (no UDP flow stays pinned to a backend that is
//! gone: the client's next datagram opens a session to a live backend; one
//! whose endpoint still serves, terminating, is kept: `Pool::keeps`), when
//! the backend refuses (an ICMP error), or when the frontend closes.
//!
//! Datagrams are never queued: a send that would block drops the datagram, as
//! the network would. Sends go straight to the (non-blocking) socket, not
//! through tokio's readiness, which a fresh socket does not have yet. The one
//! buffer is `bytes`' and per worker thread: datagrams are read and sent on
//! with no `await` in between, so a frontend or a session costs a socket and
//! a small task, never a 64 KiB buffer of its own.
//!
//! Must not: block a worker, or let a session keep the frontend's socket open
//! once the frontend has closed (sessions hold it weakly).

use std::{
    cell::RefCell,
    collections::HashMap,
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::BytesMut;
use tokio::{net::UdpSocket, sync::watch, time::Instant};

use super::{
    Settings,
    select::{Affinity, Candidates, Pool},
};
use crate::telemetry::UserspaceCounters;

/// The largest UDP payload.
const DATAGRAM_MAX: usize = 65_535;
/// Sessions one frontend holds at most (each is a socket): beyond it, new
/// clients' datagrams are dropped until sessions end.
const MAX_SESSIONS: usize = 1 << 16;

thread_local! {
    /// Datagrams (client's and backend's) are read here and sent on at once,
    /// with no `await` in between, so one buffer per worker thread serves
    /// every frontend and every session.
    static BUFFER: RefCell<BytesMut> = RefCell::new(BytesMut::zeroed(DATAGRAM_MAX));
}

/// What the receive loop and its sessions share.
pub(super) struct UdpFrontend {
    pub pool: watch::Receiver<Arc<Pool>>,
    pub affinity: Arc<Mutex<Affinity>>,
    pub settings: Arc<Settings>,
    pub counters: UserspaceCounters,
    pub name: String,
}

struct Session {
    id: u64,
    /// Told when the receive loop ends the session (the backend refused).
    ended: tokio::sync::Notify,
    upstream: UdpSocket,
    backend: SocketAddr,
    /// Milliseconds since `epoch` of the last datagram either way.
    last_active: AtomicU64,
}

type Sessions = Mutex<HashMap<SocketAddr, Arc<Session>>>;

/// Receives client datagrams until the task is aborted.
pub(super) async fn serve(socket: UdpSocket, frontend: UdpFrontend) {
    let mut receiver = Receiver {
        socket: Arc::new(socket),
        sessions: Arc::default(),
        epoch: Instant::now(),
        frontend: Arc::new(frontend),
        next_id: 0,
    };
    loop {
        if let Err(error) = receiver.socket.readable().await {
            tracing::warn!(frontend = %receiver.frontend.name, error = %error, "UDP socket failed");
            return;
        }
        if let Err(error) = receiver.drain() {
            // An ICMP error for an earlier reply to a client that left, say.
            tracing::trace!(frontend = %receiver.frontend.name, error = %error, "receive failed");
            if !matches!(
                error.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
            ) {
                // Not a one-off: do not spin on it.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// The receive side of one frontend.
struct Receiver {
    socket: Arc<UdpSocket>,
    sessions: Arc<Sessions>,
    epoch: Instant,
    frontend: Arc<UdpFrontend>,
    next_id: u64,
}

impl Receiver {
    /// Forwards every datagram waiting on the socket; `Ok` once it is empty.
    /// Synchronous, so the worker thread's buffer serves every frontend.
    fn drain(&mut self) -> io::Result<()> {
        BUFFER.with(|buf| {
            let mut buf = buf.borrow_mut();
            loop {
                match self.socket.try_recv_from(&mut buf[..]) {
                    Ok((n, client)) => self.forward(&buf[..n], client),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        })
    }

    fn forward(&mut self, datagram: &[u8], client: SocketAddr) {
        let existing = lock(&self.sessions).get(&client).cloned();
        let session = match existing {
            Some(session) => session,
            None if lock(&self.sessions).len() >= MAX_SESSIONS => {
                tracing::debug!(frontend = %self.frontend.name, %client, "too many UDP sessions; dropping a new client's datagram");
                return;
            }
            None => {
                self.next_id += 1;
                let Some(session) = open(&self.frontend, client, self.next_id, self.epoch) else {
                    return;
                };
                let session = Arc::new(session);
                lock(&self.sessions).insert(client, session.clone());
                self.frontend.counters.udp_sessions.inc();
                tokio::spawn(replies(
                    session.clone(),
                    Arc::downgrade(&self.socket),
                    client,
                    self.frontend.clone(),
                    self.sessions.clone(),
                    self.epoch,
                ));
                session
            }
        };
        session.touch(self.epoch);
        // Straight to the socket: tokio's `try_send` would refuse until the
        // reactor has seen the new socket writable, dropping a first datagram.
        match socket2::SockRef::from(&session.upstream).send(datagram) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => {
                // The backend refused an earlier datagram (ICMP): end the
                // session; the client's next datagram opens another.
                tracing::debug!(frontend = %self.frontend.name, backend = %session.backend, error = %error, "backend send failed; ending the session");
                remove(&self.sessions, client, session.id);
                session.ended.notify_one();
            }
        }
    }
}

/// A session for `client`: a socket connected to its backend.
fn open(frontend: &UdpFrontend, client: SocketAddr, id: u64, epoch: Instant) -> Option<Session> {
    let pool = frontend.pool.borrow().clone();
    if !pool.admits(client.ip()) {
        frontend.counters.source_range_refused.inc();
        tracing::debug!(frontend = %frontend.name, %client, "client outside loadBalancerSourceRanges; dropping its datagram");
        return None;
    }
    let now = std::time::Instant::now();
    let affine = match pool.affinity {
        Some(_) => lock(&frontend.affinity).lookup(client.ip(), &pool, now),
        None => None,
    };
    let tries = frontend.settings.connect_timeouts.len();
    for backend in Candidates::new(&pool, affine, fastrand::usize(..), tries) {
        match connect(backend) {
            Ok(upstream) => {
                if let Some(timeout) = pool.affinity {
                    lock(&frontend.affinity).record(client.ip(), backend, now, timeout);
                }
                let session = Session {
                    id,
                    ended: tokio::sync::Notify::new(),
                    upstream,
                    backend,
                    last_active: AtomicU64::new(0),
                };
                session.touch(epoch);
                return Some(session);
            }
            Err(error) => {
                frontend.counters.backend_failures.inc();
                tracing::debug!(frontend = %frontend.name, %backend, error = %error, "cannot open a UDP socket to the backend");
            }
        }
    }
    None
}

/// A non-blocking UDP socket connected to `backend` (both calls are immediate
/// for UDP, so no `await`).
fn connect(backend: SocketAddr) -> io::Result<UdpSocket> {
    let any: SocketAddr = match backend {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(any)?;
    socket.connect(backend)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// Sends the backend's replies to the client until the session ends.
async fn replies(
    session: Arc<Session>,
    listener: Weak<UdpSocket>,
    client: SocketAddr,
    frontend: Arc<UdpFrontend>,
    sessions: Arc<Sessions>,
    epoch: Instant,
) {
    let mut pool = frontend.pool.clone();
    let idle = frontend.settings.udp_idle_timeout;
    loop {
        let idle_at =
            epoch + Duration::from_millis(session.last_active.load(Ordering::Relaxed)) + idle;
        tokio::select! {
            ready = session.upstream.readable() => {
                if ready.is_err() || !forward(&session, &listener, client, epoch) {
                    break;
                }
            }
            changed = pool.changed() => {
                let stays = changed.is_ok() && pool.borrow_and_update().keeps(session.backend);
                if !stays {
                    tracing::debug!(frontend = %frontend.name, backend = %session.backend, %client, "backend left; ending its UDP session");
                    break;
                }
            }
            () = session.ended.notified() => break,
            () = tokio::time::sleep_until(idle_at) => {
                let last = epoch + Duration::from_millis(session.last_active.load(Ordering::Relaxed));
                if last + idle <= Instant::now() {
                    break;
                }
            }
        }
    }
    remove(&sessions, client, session.id);
}

/// Forwards every reply waiting on the session's socket. False when the
/// session must end (the backend refused, or the frontend closed).
fn forward(
    session: &Session,
    listener: &Weak<UdpSocket>,
    client: SocketAddr,
    epoch: Instant,
) -> bool {
    BUFFER.with(|buf| {
        let mut buf = buf.borrow_mut();
        loop {
            match session.upstream.try_recv(&mut buf[..]) {
                Ok(n) => {
                    let Some(listener) = listener.upgrade() else {
                        return false;
                    };
                    session.touch(epoch);
                    // A full send buffer drops the reply, as the network would.
                    let _ = socket2::SockRef::from(listener.as_ref())
                        .send_to(&buf[..n], &client.into());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
    })
}

impl Session {
    fn touch(&self, epoch: Instant) {
        let ms = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active.store(ms, Ordering::Relaxed);
    }
}

fn remove(sessions: &Sessions, client: SocketAddr, id: u64) {
    let mut map = lock(sessions);
    if map.get(&client).is_some_and(|s| s.id == id) {
        map.remove(&client);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
