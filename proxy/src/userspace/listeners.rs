//! Listening sockets on `VIP:port`, and the tasks that serve them.
//!
//! Sockets are bound with `IP_FREEBIND`/`IPV6_FREEBIND`: an IPv6 VIP made
//! local by a `local` route (not an address on a device) cannot be bound
//! otherwise, and a listener may be opened before its route exists. IPv6
//! sockets are `IPV6_V6ONLY`. TCP listeners have `SO_REUSEADDR` (a restart
//! does not wait for `TIME_WAIT`), `SO_REUSEPORT` (one socket per proxy
//! thread, see [`workers`]), `TCP_NODELAY` (which accepted connections
//! inherit) and a deep backlog.
//!
//! A [`Listener`] closes at once when dropped: the TCP sockets are shut down
//! (which unhashes them, so the port is free again immediately) and their
//! tasks aborted; a UDP task is aborted, which drops the only strong reference to
//! its socket.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use socket2::{Domain, Protocol as SockProtocol, SockRef, Socket, Type};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use super::{
    Settings, congestion,
    select::{Affinity, Pool},
    tcp, udp, workers,
};
use crate::{
    model::{Frontend, Protocol},
    telemetry::UserspaceCounters,
};

/// Pending connections a TCP listener holds (capped by `net.core.somaxconn`).
const BACKLOG: i32 = 4096;
/// A socket of a listener just closed may linger for a moment (its task is
/// being dropped): binding again is retried this many times, this far apart.
const BIND_RETRIES: u32 = 5;
const BIND_PAUSE: Duration = Duration::from_millis(10);

/// A listening frontend. Dropping it stops listening.
pub(super) struct Listener {
    tasks: Vec<JoinHandle<()>>,
    /// The TCP listening sockets (one per proxy thread), to shut down on drop.
    tcp: Vec<Arc<TcpListener>>,
}

/// TCP listening sockets open in this process (every [`Listener`]'s).
static TCP_SOCKETS: AtomicUsize = AtomicUsize::new(0);

/// How many `SO_REUSEPORT` sockets a new TCP frontend gets: one per worker
/// while listening sockets use less than an eighth of the open-files limit,
/// then one, so that 10,000 frontends on a many-CPU node still leave
/// descriptors for the connections (each takes two).
fn sockets_per_frontend(workers: usize, open: usize, nofile: u64) -> usize {
    let budget = usize::try_from(nofile / 8).unwrap_or(usize::MAX);
    if open.saturating_add(workers) <= budget {
        workers.max(1)
    } else {
        1
    }
}

/// The soft limit on open files (after `raise_nofile_limit`), or a
/// conservative 1024 when it cannot be read.
fn nofile_limit() -> u64 {
    super::nofile_limits().map_or(1024, |limit| limit.rlim_cur)
}

impl Drop for Listener {
    fn drop(&mut self) {
        TCP_SOCKETS.fetch_sub(self.tcp.len(), Ordering::Relaxed);
        for listener in &self.tcp {
            let _ = SockRef::from(listener.as_ref()).shutdown(std::net::Shutdown::Read);
        }
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What a listener's tasks share with the frontend's owner.
pub(super) struct Shared {
    pub pool: watch::Receiver<Arc<Pool>>,
    pub affinity: Arc<Mutex<Affinity>>,
    pub settings: Arc<Settings>,
    pub counters: UserspaceCounters,
    /// Its clients are on this node (a ClusterIP): its connections get the
    /// node-side congestion control ([`congestion`]).
    pub local_clients: bool,
}

/// Binds `frontend` and starts serving it: a TCP frontend gets one
/// `SO_REUSEPORT` socket and accept loop per proxy thread ([`workers`]), a UDP
/// frontend one socket and task on the caller's runtime.
pub(super) async fn open(frontend: Frontend, shared: Shared) -> io::Result<Listener> {
    let addr = SocketAddr::new(frontend.addr, frontend.port);
    let congestion = shared
        .settings
        .congestion_control
        .as_deref()
        .filter(|_| shared.local_clients);
    let mut attempt = 0;
    let socket = loop {
        match bind(addr, frontend.protocol, congestion) {
            Ok(socket) => break socket,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && attempt < BIND_RETRIES => {
                attempt += 1;
                tokio::time::sleep(BIND_PAUSE).await;
            }
            Err(e) => return Err(e),
        }
    };
    let name = frontend.to_string();
    match frontend.protocol {
        Protocol::Tcp => {
            let all = workers::all();
            let open = TCP_SOCKETS.load(Ordering::Relaxed);
            let count = sockets_per_frontend(all.len(), open, nofile_limit());
            // With one socket, frontends take turns among the workers.
            let first = if count < all.len() {
                open % all.len().max(1)
            } else {
                0
            };
            let handles = all.get(first..first + count).unwrap_or(all);
            let mut sockets = vec![socket];
            for _ in 1..handles.len() {
                sockets.push(bind(addr, Protocol::Tcp, congestion)?);
            }
            if handles.len() > 1 {
                for (socket, worker) in sockets.iter().zip(handles) {
                    if let Some(cpu) = worker.cpu {
                        socket.set_cpu_affinity(cpu)?;
                    }
                }
            }
            let mut listener = Listener {
                tasks: Vec::with_capacity(handles.len()),
                tcp: Vec::with_capacity(handles.len()),
            };
            for (socket, worker) in sockets.into_iter().zip(handles) {
                let handle = &worker.handle;
                // Registered with the reactor of the thread that serves it.
                let tcp = {
                    let _runtime = handle.enter();
                    Arc::new(TcpListener::from_std(socket.into())?)
                };
                listener.tcp.push(tcp.clone());
                TCP_SOCKETS.fetch_add(1, Ordering::Relaxed);
                listener.tasks.push(handle.spawn(tcp::accept_loop(
                    tcp,
                    tcp::TcpFrontend {
                        pool: shared.pool.clone(),
                        affinity: shared.affinity.clone(),
                        settings: shared.settings.clone(),
                        counters: shared.counters.clone(),
                        name: name.clone(),
                    },
                )));
            }
            Ok(listener)
        }
        Protocol::Udp => {
            let socket = tokio::net::UdpSocket::from_std(socket.into())?;
            let task = tokio::spawn(udp::serve(
                socket,
                udp::UdpFrontend {
                    pool: shared.pool,
                    affinity: shared.affinity,
                    settings: shared.settings,
                    counters: shared.counters,
                    name,
                },
            ));
            Ok(Listener {
                tasks: vec![task],
                tcp: Vec::new(),
            })
        }
    }
}

/// A bound (and, for TCP, listening) socket on `addr`; TCP listeners get
/// `congestion` ([`congestion`]), which accepted connections inherit.
fn bind(addr: SocketAddr, protocol: Protocol, congestion: Option<&str>) -> io::Result<Socket> {
    let domain = Domain::for_address(addr);
    let socket = match protocol {
        Protocol::Tcp => Socket::new(
            domain,
            Type::STREAM.nonblocking().cloexec(),
            Some(SockProtocol::TCP),
        )?,
        Protocol::Udp => Socket::new(
            domain,
            Type::DGRAM.nonblocking().cloexec(),
            Some(SockProtocol::UDP),
        )?,
    };
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
        socket.set_freebind_v6(true)?;
    } else {
        socket.set_freebind_v4(true)?;
    }
    if protocol == Protocol::Tcp {
        socket.set_reuse_address(true)?;
        // One socket per proxy thread on the same address.
        socket.set_reuse_port(true)?;
        // Accepted connections inherit these: no system call per connection.
        socket.set_tcp_nodelay(true)?;
        congestion::apply(&socket, congestion)?;
    }
    socket.bind(&addr.into())?;
    if protocol == Protocol::Tcp {
        socket.listen(BACKLOG)?;
    }
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::{Protocol, bind, congestion, sockets_per_frontend};

    /// Accepted connections take the listener's congestion control, with no
    /// system call of their own.
    #[test]
    fn accepted_connections_inherit_the_listeners_congestion_control() {
        let probe = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        let other = if congestion::of(&probe) == "reno" {
            "cubic"
        } else {
            "reno"
        };
        let listener = bind(
            "127.0.0.1:0".parse().expect("address"),
            Protocol::Tcp,
            Some(other),
        )
        .expect("bind");
        let addr = listener
            .local_addr()
            .expect("address")
            .as_socket()
            .expect("inet");
        let _client = std::net::TcpStream::connect(addr).expect("connect");
        listener.set_nonblocking(false).expect("blocking");
        let (accepted, _) = listener.accept().expect("accept");
        assert_eq!(congestion::of(&accepted), other);
    }

    #[test]
    fn one_socket_per_worker_until_listeners_would_use_an_eighth_of_the_limit() {
        assert_eq!(sockets_per_frontend(2, 0, 20_000), 2);
        assert_eq!(sockets_per_frontend(2, 2_498, 20_000), 2);
        assert_eq!(sockets_per_frontend(2, 2_499, 20_000), 1);
        assert_eq!(sockets_per_frontend(16, 10_000, 20_000), 1);
        assert_eq!(sockets_per_frontend(0, 0, 20_000), 1);
        assert_eq!(sockets_per_frontend(4, 0, 0), 1);
    }
}
