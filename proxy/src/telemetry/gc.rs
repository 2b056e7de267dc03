//! Counters of the conntrack garbage collector (`dataplane::ct_gc`): entries
//! it deleted, by map kind. A leaf: the GC hands it plain numbers.

use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

pub const GC_DELETED: &str = "proxy_conntrack_gc_deleted";

/// The `map` label: conntrack entries (`CT_V4`/`CT_V6`) or socket rev-NAT
/// entries (`SOCK_RNAT_V4`/`_V6`).
const CONNTRACK: &str = "conntrack";
const SOCKET_REV_NAT: &str = "socket_rev_nat";

#[derive(Clone, Debug, Default)]
pub struct GcCounters {
    deleted: Family<[(&'static str, &'static str); 1], Counter>,
}

impl GcCounters {
    pub fn register(registry: &mut Registry) -> Self {
        let counters = Self::default();
        registry.register(
            GC_DELETED,
            "Entries the conntrack garbage collector deleted, by map: conntrack (expired \
             per-packet flows) or socket_rev_nat (entries of closed sockets)",
            counters.deleted.clone(),
        );
        for map in [CONNTRACK, SOCKET_REV_NAT] {
            counters.deleted.get_or_create(&[("map", map)]).inc_by(0);
        }
        counters
    }

    /// One pass's deletions.
    pub fn record(&self, conntrack: u64, socket_rev_nat: u64) {
        self.deleted
            .get_or_create(&[("map", CONNTRACK)])
            .inc_by(conntrack);
        self.deleted
            .get_or_create(&[("map", SOCKET_REV_NAT)])
            .inc_by(socket_rev_nat);
    }
}
