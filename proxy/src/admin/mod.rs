//! The daemon's own HTTP servers, with kube-proxy's names and meanings where
//! they exist: Prometheus metrics on `--metrics-bind-address` (`/metrics`,
//! `/proxyMode`) and health on `--healthz-bind-address` (`/healthz`,
//! `/livez`). Everything they answer comes from [`Telemetry`]; the
//! health-check node ports are `healthcheck`'s.
//!
//! - `http`: the two hyper servers and their routes.
//!
//! Must not: record anything itself (that is `telemetry`'s), write to the
//! dataplane, or block the sync loop.

pub mod http;

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
    /// Binds both addresses (either may be off), then serves them. Fails,
    /// naming the address, when one cannot be bound; nothing is left running.
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
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| AdminError::Bind {
                    what: site.describe(),
                    addr,
                    source,
                })?;
            // Port 0 picks a free port: report the real one.
            let addr = listener.local_addr().unwrap_or(addr);
            bound.push((site, addr, listener));
        }
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut addrs = Vec::new();
        for (site, addr, listener) in bound {
            tracing::info!(%addr, serving = site.describe(), "admin server listening");
            tasks.push(tokio::spawn(http::serve(
                listener,
                site,
                telemetry.clone(),
                stop_rx.clone(),
            )));
            addrs.push((site, addr));
        }
        Ok(Self { stop, tasks, addrs })
    }

    /// Where each server listens.
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
    async fn a_taken_address_is_an_error_that_names_it() {
        let t = Telemetry::new(Mode::Ebpf, Duration::from_secs(60));
        let first = AdminServers::start(
            BindAddress::parse("127.0.0.1:0", 0).unwrap(),
            BindAddress::parse("", 0).unwrap(),
            t.clone(),
        )
        .await
        .unwrap();
        let (_, taken) = first.addrs()[0];
        let err = AdminServers::start(BindAddress(Some(taken)), BindAddress(None), t.clone())
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&taken.to_string()), "{err}");
        assert!(err.to_string().contains("metrics"), "{err}");
        first.stop().await;
    }
}
