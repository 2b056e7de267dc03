//! The daemon's own HTTP servers, with kube-proxy's names and meanings where
//! they exist: Prometheus metrics on `--metrics-bind-address` (`/metrics`,
//! `/proxyMode`) and health on `--healthz-bind-address` (`/healthz`,
//! `/livez`). Everything they answer comes from [`Telemetry`]; the
//! health-check node ports are `healthcheck`'s.
//!
//! - `http`: the two hyper servers and their routes;
//! - `retry`: listening again, with backoff, on an address in use.
//!
//! Must not: record anything itself (that is `telemetry`'s), write to the
//! dataplane, or block the sync loop.

pub mod http;
pub mod retry;

use std::{net::SocketAddr, time::Duration};

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{config::BindAddress, telemetry::Telemetry};

/// Errors starting the servers.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot listen for {what} on {addr}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The running servers; [`AdminServers::stop`] ends them.
#[derive(Debug)]
pub struct AdminServers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    addrs: Vec<(http::Site, SocketAddr)>,
}

impl AdminServers {
    /// Binds both addresses (either may be off), then serves them. An
    /// address in use is tried again in the background with backoff
    /// (`retry`), counted and logged, while the daemon goes on; any other
    /// bind error fails here, naming the address, and nothing is left
    /// running.
    pub async fn start(
        metrics: BindAddress,
        healthz: BindAddress,
        telemetry: Telemetry,
    ) -> Result<Self, AdminError> {
        let mut bound = Vec::new();
        for (site, bind) in [
            (http::Site::Metrics, metrics),
            (http::Site::Health, healthz),
        ] {
            let Some(addr) = bind.addr() else { continue };
            match TcpListener::bind(addr).await {
                // Port 0 picks a free port: report the real one.
                Ok(listener) => {
                    bound.push((site, listener.local_addr().unwrap_or(addr), Some(listener)))
                }
                Err(source) if retry::is_retried(&source) => {
                    retry::record_failure(&telemetry, site, addr, 1, &source);
                    bound.push((site, addr, None));
                }
                Err(source) => {
                    return Err(AdminError::Bind {
                        what: site.describe(),
                        addr,
                        source,
                    });
                }
            }
        }
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut addrs = Vec::new();
        for (site, addr, listener) in bound {
            let telemetry = telemetry.clone();
            let stop_rx = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                let listener = match listener {
                    Some(listener) => {
                        tracing::info!(%addr, serving = site.describe(), "admin server listening");
                        listener
                    }
                    None => {
                        let later =
                            retry::listen_later(addr, site, telemetry.clone(), stop_rx.clone());
                        match later.await {
                            Some(listener) => listener,
                            None => return,
                        }
                    }
                };
                http::serve(listener, site, telemetry, stop_rx).await;
            }));
            addrs.push((site, addr));
        }
        Ok(Self { stop, tasks, addrs })
    }

    /// Where each server listens (or will, once its address is free).
    pub fn addrs(&self) -> &[(http::Site, SocketAddr)] {
        &self.addrs
    }

    /// Stops accepting, drops open connections, and waits (bounded) for the tasks.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            for task in self.tasks {
                let _ = task.await;
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use super::*;
    use crate::telemetry::Mode;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_taken_address_is_retried_counted_and_served_once_free() {
        let t = Telemetry::new(Mode::Ebpf, Duration::from_secs(60));
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = holder.local_addr().unwrap();
        let servers = AdminServers::start(BindAddress(None), BindAddress(Some(taken)), t.clone())
            .await
            .unwrap();
        assert_eq!(servers.addrs(), [(http::Site::Health, taken)]);
        assert_eq!(t.admin_bind_failures("healthz"), 1);
        assert_eq!(t.admin_bind_failures("metrics"), 0);
        tokio::time::sleep(retry::FIRST_DELAY * 2).await;
        assert!(t.admin_bind_failures("healthz") >= 2, "retried while taken");
        drop(holder);
        let answered = tokio::time::timeout(retry::MAX_DELAY * 2, async {
            loop {
                if let Ok(mut s) = tokio::net::TcpStream::connect(taken).await {
                    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                    s.write_all(b"GET /livez HTTP/1.0\r\n\r\n").await.unwrap();
                    let mut text = String::new();
                    let _ = s.read_to_string(&mut text).await;
                    if text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200") {
                        return text;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(
            answered.is_ok(),
            "/livez never answered on {taken} once it was free"
        );
        servers.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_address_not_on_this_node_is_an_error_that_names_it() {
        let t = Telemetry::new(Mode::Ebpf, Duration::from_secs(60));
        // TEST-NET-1: never a local address.
        let foreign: SocketAddr = "192.0.2.1:10256".parse().unwrap();
        let err = AdminServers::start(BindAddress(Some(foreign)), BindAddress(None), t.clone())
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&foreign.to_string()), "{err}");
        assert!(err.to_string().contains("metrics"), "{err}");
        assert_eq!(t.admin_bind_failures("metrics"), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn stop_ends_a_server_still_waiting_for_its_address() {
        let t = Telemetry::new(Mode::Ebpf, Duration::from_secs(60));
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = holder.local_addr().unwrap();
        let servers = AdminServers::start(BindAddress(Some(taken)), BindAddress(None), t)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(1), servers.stop())
            .await
            .unwrap();
    }
}
