//! The accept loop both kinds of HTTP server in the daemon share: the admin
//! servers (`admin`) and the health-check node ports (`healthcheck`).
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
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

use crate::config::{HTTP_HEADER_TIMEOUT, HTTP_MAX_CONNECTIONS};

/// How long a failed `accept` waits before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Accepts on `listener` and answers each request with `handler` until
/// `stop` flips. `server` names the server in logs.
pub async fn serve<H, F>(
    listener: TcpListener,
    server: &'static str,
    handler: H,
    mut stop: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let addr = listener.local_addr().ok();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    if connections.len() >= HTTP_MAX_CONNECTIONS {
                        tracing::debug!(server, ?addr, "too many connections; closing a new one");
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
                    tracing::warn!(server, ?addr, error = %error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
}
