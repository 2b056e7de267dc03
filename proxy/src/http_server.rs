//! The accept loop every HTTP server in the daemon shares: the admin servers
//! (`admin`), the health-check node ports (`healthcheck`) and the local query
//! socket (`query`, on a Unix socket).
//!
//! HTTP/1 only. Headers must arrive within [`HTTP_HEADER_TIMEOUT`]; at most
//! [`HTTP_MAX_CONNECTIONS`] connections are served at once per server (one
//! beyond that is closed at once); a failed `accept` (out of file
//! descriptors, usually) is retried after a short pause instead of spinning;
//! when `stop` flips, the loop ends and every open connection is dropped.
//!
//! Must not: know what is served (the caller's handler answers every
//! request).

use std::{convert::Infallible, future::Future, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, UnixListener},
    sync::watch,
    task::JoinSet,
};

use crate::config::{HTTP_HEADER_TIMEOUT, HTTP_MAX_CONNECTIONS};

/// How long a failed `accept` waits before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

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

/// Accepts on `listener` and answers each request with `handler` until
/// `stop` flips. `server` names the server in logs.
pub async fn serve<L, H, F>(
    listener: L,
    server: &'static str,
    handler: H,
    mut stop: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    L: Listener,
{
    let addr = listener.describe();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    if connections.len() >= HTTP_MAX_CONNECTIONS {
                        tracing::debug!(server, %addr, "too many connections; closing a new one");
                        continue;
                    }
                    let handler = handler.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |req| {
                            let answer = handler(req);
                            async move { Ok::<_, Infallible>(answer.await) }
                        });
                        let served = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HTTP_HEADER_TIMEOUT)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                        if let Err(error) = served {
                            tracing::debug!(server, error = %error, "HTTP connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(server, %addr, error = %error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
}
