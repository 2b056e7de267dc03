//! Failed binds of the daemon's own HTTP servers (`admin`): a counter per
//! server, as kube-proxy reports a health server that cannot listen
//! (`FailedToStartProxierHealthcheck`) and keeps retrying. A leaf: the
//! servers hand it their label.

use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

pub const BIND_FAILURES: &str = "proxy_health_bind_failures";

/// The `server` label of each admin server.
pub const SERVERS: [&str; 3] = ["healthz", "metrics", "service-health"];

#[derive(Clone, Debug, Default)]
pub struct BindFailureCounters {
    failures: Family<[(&'static str, &'static str); 1], Counter>,
}

impl BindFailureCounters {
    pub fn register(registry: &mut Registry) -> Self {
        let counters = Self::default();
        registry.register(
            BIND_FAILURES,
            "Attempts to listen on --healthz-bind-address, --metrics-bind-address or a \
             health-check node port that failed (retried), by server: healthz, metrics or \
             service-health",
            counters.failures.clone(),
        );
        for server in SERVERS {
            counters
                .failures
                .get_or_create(&[("server", server)])
                .inc_by(0);
        }
        counters
    }

    /// One failed attempt of `server` (one of [`SERVERS`]).
    pub fn record(&self, server: &'static str) {
        self.failures.get_or_create(&[("server", server)]).inc();
    }

    /// Failed attempts of `server` so far.
    pub fn get(&self, server: &'static str) -> u64 {
        self.failures.get_or_create(&[("server", server)]).get()
    }
}
