//! The userspace TCP proxy of one frontend: an accept loop on `VIP:port`, and
//! one task per connection that picks a backend, connects (moving on to the
//! next backend when one fails, a bounded number of times), and copies both
//! ways until both sides are done.
//!
//! - Copying: `splice(2)` through a pipe (the bytes never enter userspace),
//!   falling back to a buffered copy where splice is refused. Each direction
//!   ends on its own: a FIN from one side becomes a `shutdown(SHUT_WR)` towards
//!   the other, and the other direction goes on (half-close). A side that
//!   does not read stops the other side's reads (backpressure: nothing is
//!   buffered beyond one pipe or one buffer per direction).
//! - `TCP_NODELAY` on both sockets: the proxy must not add Nagle delays to
//!   what the client already sent in small writes.
//! - A connection whose backend leaves the pool is closed (reset) after the
//!   grace period, unless the backend comes back within it; the same when the
//!   frontend goes away. A backend whose endpoint is still listed (it is
//!   terminating) is kept (`Pool::keeps`): its connections carry on, as
//!   kube-proxy's conntrack keeps them.
//! - No backend could be reached: the client's connection is reset.
//!
//! Must not: block a worker thread, or hold a lock across an `await`.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::Interest,
    net::{TcpListener, TcpStream},
    sync::watch,
    time::Instant,
};

use super::{
    Settings, congestion,
    select::{Affinity, Candidates, Pool},
    splice,
};
use crate::telemetry::UserspaceCounters;

/// What the accept loop and its connections share.
pub(super) struct TcpFrontend {
    pub pool: watch::Receiver<Arc<Pool>>,
    pub affinity: Arc<Mutex<Affinity>>,
    pub settings: Arc<Settings>,
    pub counters: UserspaceCounters,
    /// For logs.
    pub name: String,
}

/// Accepts until the task is aborted or the listener shut down.
pub(super) async fn accept_loop(listener: Arc<TcpListener>, frontend: TcpFrontend) {
    let frontend = Arc::new(frontend);
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                frontend.counters.tcp_connections.inc();
                tokio::spawn(connection(client, peer, frontend.clone()));
            }
            // Shut down: the frontend closed.
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => return,
            Err(error) => {
                // Out of file descriptors, usually: back off rather than spin.
                tracing::warn!(frontend = %frontend.name, error = %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(client: TcpStream, peer: SocketAddr, frontend: Arc<TcpFrontend>) {
    let mut pool_rx = frontend.pool.clone();
    let pool = pool_rx.borrow_and_update().clone();
    if !pool.admits(peer.ip()) {
        // `loadBalancerSourceRanges`: kube-proxy drops the SYN; once the
        // kernel has accepted, the nearest is to reset at once.
        frontend.counters.source_range_refused.inc();
        tracing::debug!(frontend = %frontend.name, client = %peer, "client outside loadBalancerSourceRanges; resetting it");
        reset(&client);
        return;
    }
    let now = std::time::Instant::now();
    let affine = match pool.affinity {
        Some(_) => lock(&frontend.affinity).lookup(peer.ip(), &pool, now),
        None => None,
    };
    let settings = &frontend.settings;
    let candidates = Candidates::new(
        &pool,
        affine,
        fastrand::usize(..),
        settings.connect_timeouts.len(),
    );
    let mut upstream = None;
    for (backend, timeout) in candidates.zip(settings.connect_timeouts.iter()) {
        match connect(backend, *timeout, settings.congestion_control.as_deref()).await {
            Ok(Ok(stream)) => {
                upstream = Some((stream, backend));
                break;
            }
            Ok(Err(error)) => {
                frontend.counters.backend_failures.inc();
                tracing::debug!(frontend = %frontend.name, %backend, error = %error, "backend refused; trying the next");
            }
            Err(_) => {
                frontend.counters.backend_failures.inc();
                tracing::debug!(frontend = %frontend.name, %backend, timeout_ms = timeout.as_millis() as u64, "backend did not answer; trying the next");
            }
        }
    }
    let Some((server, backend)) = upstream else {
        frontend.counters.unserved.inc();
        tracing::debug!(frontend = %frontend.name, client = %peer, "no backend took the connection; resetting it");
        reset(&client);
        return;
    };
    if let Some(timeout) = pool.affinity {
        lock(&frontend.affinity).record(peer.ip(), backend, now, timeout);
    }
    drop(pool);

    let expired = {
        let copy = splice::bidirectional(&client, &server);
        tokio::pin!(copy);
        let mut deadline: Option<Instant> = None;
        let mut watching = true;
        loop {
            let grace_over = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                result = &mut copy => {
                    if let Err(error) = result {
                        tracing::trace!(frontend = %frontend.name, %backend, error = %error, "connection ended with an error");
                        break true;
                    }
                    break false;
                }
                changed = pool_rx.changed(), if watching => {
                    let still_there = match changed {
                        Ok(()) => pool_rx.borrow_and_update().keeps(backend),
                        // The frontend went away.
                        Err(_) => {
                            watching = false;
                            false
                        }
                    };
                    deadline = match (still_there, deadline) {
                        (true, _) => None,
                        (false, Some(at)) => Some(at),
                        (false, None) => Some(Instant::now() + settings.backend_grace),
                    };
                }
                () = grace_over => {
                    tracing::debug!(frontend = %frontend.name, %backend, "backend removed; closing its connection after the grace period");
                    break true;
                }
            }
        }
    };
    if expired {
        // Tell both ends at once, rather than a FIN that looks like a clean end.
        reset(&client);
        reset(&server);
    }
}

/// Connects to `backend` within `timeout`; `Err(Elapsed)` when it did not
/// answer in time.
///
/// Cheaper than `TcpStream::connect` under `timeout`, per connection:
/// - `TCP_NODELAY` (and the congestion control, [`congestion`]) are set
///   before the handshake (the client's socket inherits them from the
///   listener);
/// - success is read from the readiness the reactor reports (writable, with
///   no error and no hang-up) rather than asked with `getsockopt(SO_ERROR)`;
///   only a failure asks for its error;
/// - a backend on the node or next to it has usually answered by the time
///   `connect(2)` returns, so the task first yields once (the reactor polls
///   without blocking) and arms the timer only if the handshake is still
///   going: arming one wakes the reactor through its eventfd.
async fn connect(
    backend: SocketAddr,
    timeout: Duration,
    congestion_control: Option<&str>,
) -> Result<std::io::Result<TcpStream>, tokio::time::error::Elapsed> {
    let connecting = handshake(backend, congestion_control);
    tokio::pin!(connecting);
    tokio::select! {
        biased;
        done = &mut connecting => return Ok(done),
        () = tokio::task::yield_now() => {}
    }
    tokio::time::timeout(timeout, connecting).await
}

async fn handshake(
    backend: SocketAddr,
    congestion_control: Option<&str>,
) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(backend),
        socket2::Type::STREAM.nonblocking().cloexec(),
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_tcp_nodelay(true)?;
    congestion::apply(&socket, congestion_control)?;
    match socket.connect(&backend.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(socket.into())?;
    let ready = stream.ready(Interest::WRITABLE | Interest::ERROR).await?;
    if ready.is_error() || ready.is_write_closed() {
        return Err(stream
            .take_error()?
            .unwrap_or_else(|| std::io::ErrorKind::ConnectionRefused.into()));
    }
    Ok(stream)
}

/// Makes the close that follows send a RST.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::model::{Backend, FrontendSpec, ObjectRef, Protocol};

    /// An echo server on loopback; its address.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = conn.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// A loopback port nothing listens on (connects are refused).
    async fn dead() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }

    /// A frontend on loopback over `backends`, every client stuck (by
    /// affinity) to `first`; its address, counters and pool (dropping the
    /// pool's sender means "frontend removed").
    async fn frontend(
        backends: &[SocketAddr],
        first: SocketAddr,
    ) -> (SocketAddr, UserspaceCounters, watch::Sender<Arc<Pool>>) {
        let spec = FrontendSpec {
            kind: crate::model::FrontendKind::ClusterIp,
            external_backends: None,
            service: ObjectRef::new("ns", "svc"),
            port_name: String::new(),
            backends: backends
                .iter()
                .map(|a| Backend {
                    addr: a.ip(),
                    port: a.port(),
                    protocol: Protocol::Tcp,
                })
                .collect(),
            affinity_timeout: Some(60),
            traffic_policy: Default::default(),
            source_ranges: None,
        };
        let pool = Arc::new(Pool::from_spec(&spec));
        let mut affinity = Affinity::default();
        affinity.record(
            "127.0.0.1".parse().unwrap(),
            first,
            std::time::Instant::now(),
            Duration::from_secs(60),
        );
        let (tx, rx) = watch::channel(pool);
        let listener = Arc::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let addr = listener.local_addr().unwrap();
        let counters = UserspaceCounters::default();
        tokio::spawn(accept_loop(
            listener,
            TcpFrontend {
                pool: rx,
                affinity: Arc::new(Mutex::new(affinity)),
                settings: Arc::new(Settings::default()),
                counters: counters.clone(),
                name: "test".into(),
            },
        ));
        (addr, counters, tx)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refusing_backend_is_skipped_for_the_next_one() {
        let (live, gone) = (echo().await, dead().await);
        let (addr, counters, _pool) = frontend(&[live, gone], gone).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        assert_eq!(counters.backend_failures.get(), 1);
        assert_eq!(counters.tcp_connections.get(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_to_backends_get_the_configured_congestion_control() {
        let backend = echo().await;
        let default = handshake(backend, None).await.unwrap();
        let node_default = congestion::of(&socket2::SockRef::from(&default));
        let other = if node_default == "reno" {
            "cubic"
        } else {
            "reno"
        };
        let stream = handshake(backend, Some(other)).await.unwrap();
        assert_eq!(congestion::of(&socket2::SockRef::from(&stream)), other);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_backend_answering_resets_the_client() {
        let gone = dead().await;
        let (addr, counters, _pool) = frontend(&[gone], gone).await;
        // The reset may land before `connect` has even returned.
        let read = match TcpStream::connect(addr).await {
            Ok(mut client) => client.read(&mut [0u8; 4]).await.map(drop),
            Err(e) => Err(e),
        };
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "expected a reset, got {read:?}"
        );
        assert_eq!(counters.unserved.get(), 1);
    }
}
