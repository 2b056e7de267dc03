//! The accept loop every HTTP server in the daemon shares: the admin servers
//! (`admin`), the health-check node ports (`healthcheck`) and the local query
//! socket (`query`, on a Unix socket).
//!
//! HTTP/1 only. Built so that idle or slow clients cannot starve the probes
//! (kubelet's liveness probe on `/livez`, cloud load balancers on the
//! health-check node ports):
//! - headers must arrive within [`HTTP_HEADER_TIMEOUT`] (a keep-alive
//!   connection gets the same time for its next request);
//! - up to [`HTTP_MAX_CONNECTIONS`] connections per server are served at
//!   once; a new one beyond that closes the **oldest** open connection, so
//!   a flood can never lock out a new client, whose request arrives at once;
//! - a failed `accept` (out of file descriptors, usually) is retried after
//!   a short pause instead of spinning;
//! - when `stop` flips, the loop ends and every open connection is dropped.
//!
//! Must not: know what is served (the caller's handler answers every
//! request).

use std::{
    collections::VecDeque,
    convert::Infallible,
    future::Future,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, UnixListener},
    sync::watch,
    task::{AbortHandle, JoinSet},
};

use crate::config::{HTTP_HEADER_TIMEOUT, HTTP_MAX_CONNECTIONS};

/// How long a failed `accept` waits before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// A failing `accept` is logged at most this often.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

/// What one server allows its clients.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: HTTP_MAX_CONNECTIONS,
            header_timeout: HTTP_HEADER_TIMEOUT,
        }
    }
}

/// A listening socket the loop accepts on: TCP or Unix.
pub trait Listener: Send {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Where it listens, for logs.
    fn describe(&self) -> String;
    fn accept(&self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Listener for TcpListener {
    type Stream = tokio::net::TcpStream;
    fn describe(&self) -> String {
        self.local_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string())
    }
    async fn accept(&self) -> std::io::Result<Self::Stream> {
        TcpListener::accept(self).await.map(|(stream, _)| stream)
    }
}

impl Listener for UnixListener {
    type Stream = tokio::net::UnixStream;
    fn describe(&self) -> String {
        self.local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
            .unwrap_or_else(|| "?".to_owned())
    }
    async fn accept(&self) -> std::io::Result<Self::Stream> {
        UnixListener::accept(self).await.map(|(stream, _)| stream)
    }
}

/// A plain-text response (the admin servers' and the query socket's answers).
pub fn text(status: hyper::StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Accepts on `listener` and answers each request with `handler` until
/// `stop` flips. `server` names the server in logs.
pub async fn serve<L, H, F>(
    listener: L,
    server: &'static str,
    handler: H,
    stop: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    L: Listener,
{
    serve_with(listener, server, handler, stop, Limits::default()).await;
}

/// [`serve`] with explicit limits.
pub async fn serve_with<L, H, F>(
    listener: L,
    server: &'static str,
    handler: H,
    mut stop: watch::Receiver<bool>,
    limits: Limits,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    L: Listener,
{
    let addr = listener.describe();
    let mut connections = JoinSet::new();
    // Oldest first; finished ones are skipped when shedding and pruned now
    // and then.
    let mut by_age: VecDeque<AbortHandle> = VecDeque::new();
    let header_timeout = limits.header_timeout;
    let mut last_warned: Option<Instant> = None;
    let mut unwarned = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    while connections.try_join_next().is_some() {}
                    if connections.len() >= limits.max_connections.max(1) {
                        shed_oldest(&mut by_age);
                        tracing::debug!(server, %addr, "too many connections; closed the oldest");
                    }
                    let handler = handler.clone();
                    let handle = connections.spawn(async move {
                        let service = service_fn(move |req| {
                            let answer = handler(req);
                            async move { Ok::<_, Infallible>(answer.await) }
                        });
                        let served = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(header_timeout)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                        if let Err(error) = served {
                            tracing::debug!(server, error = %error, "HTTP connection ended with an error");
                        }
                    });
                    by_age.push_back(handle);
                    if by_age.len() > 2 * limits.max_connections.max(1) {
                        by_age.retain(|h| !h.is_finished());
                    }
                }
                Err(error) => {
                    // Out of descriptors, every retry fails alike: said once
                    // per ACCEPT_WARN_EVERY, with how many were not said.
                    if last_warned.is_none_or(|t: Instant| t.elapsed() >= ACCEPT_WARN_EVERY) {
                        tracing::warn!(server, %addr, error = %error, repeated = unwarned, "accepting a connection failed");
                        last_warned = Some(Instant::now());
                        unwarned = 0;
                    } else {
                        unwarned += 1;
                    }
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
}

/// Closes the oldest connection still open.
fn shed_oldest(by_age: &mut VecDeque<AbortHandle>) {
    while let Some(oldest) = by_age.pop_front() {
        if !oldest.is_finished() {
            oldest.abort();
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    async fn get(addr: std::net::SocketAddr) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn a_new_client_is_answered_while_idle_connections_fill_the_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop) = watch::channel(false);
        let limits = Limits {
            max_connections: 8,
            header_timeout: Duration::from_secs(60),
        };
        let handler =
            |_req: Request<Incoming>| async { Response::new(Full::new(Bytes::from("ok"))) };
        let server = tokio::spawn(serve_with(listener, "test", handler, stop, limits));
        // Six times the cap, idle or sending half a request, all held open.
        let mut flood = Vec::new();
        for i in 0..48 {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            if i % 2 == 0 {
                stream.write_all(b"GET /livez HTTP/1.1\r\n").await.unwrap();
            }
            flood.push(stream);
        }
        for _ in 0..3 {
            let answer = tokio::time::timeout(Duration::from_secs(10), get(addr))
                .await
                .expect("answered while the server is full");
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
        stop_tx.send(true).unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_header_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop) = watch::channel(false);
        let limits = Limits {
            max_connections: 8,
            header_timeout: Duration::from_millis(200),
        };
        let handler =
            |_req: Request<Incoming>| async { Response::new(Full::new(Bytes::from("ok"))) };
        let server = tokio::spawn(serve_with(listener, "test", handler, stop, limits));
        let closed = |mut stream: tokio::net::TcpStream| async move {
            let mut rest = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
                .await
                .expect("closed by the server")
                .ok();
        };
        // Silent from the start.
        closed(tokio::net::TcpStream::connect(addr).await.unwrap()).await;
        // Half a request.
        let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
        half.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        closed(half).await;
        // Silent after a first keep-alive request.
        let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 64];
        let n = kept.read(&mut first).await.unwrap();
        assert!(first[..n].starts_with(b"HTTP/1.1 200"));
        closed(kept).await;
        stop_tx.send(true).unwrap();
        server.await.unwrap();
    }
}
