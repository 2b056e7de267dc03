//! Counters of the UDP-flow ender (`dataplane::udp_flows`): sockets it
//! destroyed, and network namespaces it could not work in. A leaf, like the
//! rest of `telemetry`: the dataplane hands it plain numbers.

use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

pub const SOCKETS_ENDED: &str = "proxy_udp_sockets_ended";
pub const NETNS_SKIPPED: &str = "proxy_udp_netns_skipped";

/// Why a namespace was skipped (the `reason` label of `proxy_udp_netns_skipped_total`).
const DENIED: &str = "denied";
const FAILED: &str = "failed";

#[derive(Clone, Debug, Default)]
pub struct UdpFlowCounters {
    ended: Counter,
    skipped: Family<[(&'static str, &'static str); 1], Counter>,
}

impl UdpFlowCounters {
    pub fn register(registry: &mut Registry) -> Self {
        let counters = Self::default();
        registry.register(
            SOCKETS_ENDED,
            "Connected UDP sockets destroyed because their backend went away, in every \
             network namespace visited",
            counters.ended.clone(),
        );
        registry.register(
            NETNS_SKIPPED,
            "Network namespaces where connected UDP sockets could not be ended at a \
             backend's removal, by reason: denied (setns needs CAP_SYS_ADMIN), failed",
            counters.skipped.clone(),
        );
        for reason in [DENIED, FAILED] {
            counters
                .skipped
                .get_or_create(&[("reason", reason)])
                .inc_by(0);
        }
        counters
    }

    /// One walk's outcome: sockets destroyed, namespaces denied and failed.
    pub fn record(&self, destroyed: usize, denied: usize, failed: usize) {
        let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        self.ended.inc_by(n(destroyed));
        self.skipped
            .get_or_create(&[("reason", DENIED)])
            .inc_by(n(denied));
        self.skipped
            .get_or_create(&[("reason", FAILED)])
            .inc_by(n(failed));
    }
}
