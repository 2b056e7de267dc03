//! Building each subcommand's view from what the maps hold (pure: no I/O).
//!
//! The input is the [`Dataset`] of the one reader of the maps
//! (`dataplane::reader`), plus the raw `AFFINITY` and conntrack entries and
//! the counters, so tests build every view from hand-made data. Holes left by
//! a change half done (a slot whose backend just went, a frontend without a
//! name) show as `null`, never as a failure.
//!
//! The per-map views are methods on [`Dataset`] (`services`, `backends`,
//! `affinity`, `conntrack`), defined here rather than beside the type, so the
//! reader in `dataplane` knows nothing of `inspect`.

use std::collections::{BTreeSet, HashMap};

use proxy_common::{
    AffinityKey, AffinityValue, Reason, ServiceValue, ct_flags, name_flags, svc_flags,
};

use super::{
    filter::Filter,
    view::{
        AffinityEntry, AffinityView, BackendEntry, BackendsView, ConntrackView, FlowEntry,
        NO_CONNTRACK, ServiceEntry, ServiceRef, ServicesView, SlotEntry, StatEntry, StatsView,
    },
};
use crate::dataplane::{
    layout::{CtRaw, FrontendKey, protocol_name, socket},
    reader::{Dataset, FrontendEntries},
};

impl Dataset {
    /// The owner of a rev-NAT id, if named.
    pub fn service_ref(&self, rev_nat_id: u32) -> Option<ServiceRef> {
        self.names.get(&rev_nat_id).map(|n| ServiceRef {
            namespace: String::from_utf8_lossy(n.namespace()).into_owned(),
            name: String::from_utf8_lossy(n.name()).into_owned(),
            port_name: String::from_utf8_lossy(n.port_name()).into_owned(),
        })
    }

    /// Published frontends (those with slot 0), in address order.
    fn published(&self) -> impl Iterator<Item = (&FrontendKey, &ServiceValue, &FrontendEntries)> {
        self.frontends
            .iter()
            .filter_map(|(key, e)| e.master.as_ref().map(|m| (key, m, e)))
    }

    /// The backend ids a published frontend's readers pick from; `None` for a
    /// missing slot.
    fn reachable<'a>(
        master: &ServiceValue,
        entries: &'a FrontendEntries,
    ) -> impl Iterator<Item = (u16, Option<u32>)> + 'a {
        (1..=master.count).map(|slot| (slot, entries.slots.get(&slot).copied()))
    }

    /// `inspect services`.
    pub fn services(&self, filter: &Filter) -> ServicesView {
        let services = self
            .published()
            .filter_map(|(key, master, entries)| {
                let owner = self.service_ref(master.rev_nat_id);
                if !filter.matches(key.addr, owner.as_ref()) {
                    return None;
                }
                let traffic_policy = self.names.get(&master.rev_nat_id).map(|n| {
                    if n.flags & name_flags::INTERNAL_TRAFFIC_POLICY_LOCAL != 0 {
                        "Local"
                    } else {
                        "Cluster"
                    }
                });
                let slots = Self::reachable(master, entries)
                    .map(|(slot, id)| {
                        let backend = id.and_then(|id| self.backends.get(&id));
                        SlotEntry {
                            slot,
                            backend_id: id,
                            addr: backend.map(|b| b.addr),
                            port: backend.map(|b| b.port),
                        }
                    })
                    .collect();
                let external = master.flags & svc_flags::EXTERNAL != 0;
                let owner_flags = self.names.get(&master.rev_nat_id).map(|n| n.flags);
                let kind = if !external {
                    "ClusterIP"
                } else if master.flags & svc_flags::NODE_PORT != 0 {
                    "NodePort"
                } else if owner_flags.is_some_and(|f| f & name_flags::LOAD_BALANCER != 0) {
                    "LoadBalancer"
                } else {
                    "ExternalIP"
                };
                let external_traffic_policy = owner_flags.filter(|_| external).map(|f| {
                    if f & name_flags::EXTERNAL_TRAFFIC_POLICY_LOCAL != 0 {
                        "Local"
                    } else {
                        "Cluster"
                    }
                });
                Some(ServiceEntry {
                    frontend: key.to_string(),
                    vip: key.addr,
                    port: key.port,
                    protocol: protocol_name(key.proto),
                    service: owner,
                    rev_nat_id: master.rev_nat_id,
                    traffic_policy,
                    affinity_timeout_seconds: affinity_timeout(master),
                    flags: master.flags,
                    kind,
                    scope: scope_name(key.scope),
                    external_traffic_policy,
                    slot_count: master.count,
                    slots,
                    source_ranges: self.source_ranges.get(&master.rev_nat_id).map(|entries| {
                        entries
                            .iter()
                            .filter(|e| e.allow)
                            .map(|e| format!("{}/{}", e.addr, e.prefix))
                            .collect()
                    }),
                })
            })
            .collect();
        ServicesView { services }
    }

    /// `inspect backends`: all of them, or with a filter those the matching
    /// frontends reach.
    pub fn backends(&self, filter: &Filter) -> BackendsView {
        let mut frontends_of: HashMap<u32, BTreeSet<FrontendKey>> = HashMap::new();
        let mut wanted: BTreeSet<u32> = BTreeSet::new();
        for (key, master, entries) in self.published() {
            let owner = self.service_ref(master.rev_nat_id);
            let matches = filter.matches(key.addr, owner.as_ref());
            // Both scopes of a frontend count as one frontend.
            let frontend = FrontendKey {
                scope: proxy_common::scope::INTERNAL,
                ..*key
            };
            for id in Self::reachable(master, entries).filter_map(|(_, id)| id) {
                frontends_of.entry(id).or_default().insert(frontend);
                if matches {
                    wanted.insert(id);
                }
            }
        }
        let backends = self
            .backends
            .iter()
            .filter(|(id, _)| filter.is_empty() || wanted.contains(id))
            .map(|(id, b)| BackendEntry {
                id: *id,
                addr: b.addr,
                port: b.port,
                protocol: protocol_name(b.proto),
                frontends: frontends_of.get(id).map_or(0, BTreeSet::len),
                local: b.flags & proxy_common::backend_flags::LOCAL != 0,
            })
            .collect();
        BackendsView { backends }
    }

    /// `inspect affinity`: `entries` from the `AFFINITY` map, aged against
    /// `now_ns` (CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns`).
    pub fn affinity(
        &self,
        entries: &[(AffinityKey, AffinityValue)],
        now_ns: u64,
        filter: &Filter,
    ) -> AffinityView {
        let by_id: HashMap<u32, (&FrontendKey, &ServiceValue)> = self
            .published()
            .filter(|(key, _, _)| key.scope == proxy_common::scope::INTERNAL)
            .map(|(key, master, _)| (master.rev_nat_id, (key, master)))
            .collect();
        let mut out: Vec<(Option<FrontendKey>, AffinityEntry)> = entries
            .iter()
            .filter_map(|(key, value)| {
                let frontend = by_id.get(&key.rev_nat_id);
                let owner = self.service_ref(key.rev_nat_id);
                let matches = match frontend {
                    Some((f, _)) => filter.matches(f.addr, owner.as_ref()),
                    // A frontend gone from the maps matches only "everything".
                    None => filter.is_empty(),
                };
                if !matches {
                    return None;
                }
                let timeout = frontend.and_then(|(_, m)| affinity_timeout(m));
                let age_ns = now_ns.saturating_sub(value.last_used_ns);
                let entry = AffinityEntry {
                    client_netns_cookie: key.client,
                    rev_nat_id: key.rev_nat_id,
                    frontend: frontend.map(|(f, _)| f.to_string()),
                    service: owner,
                    backend_id: value.backend_id,
                    backend: self
                        .backends
                        .get(&value.backend_id)
                        .map(|b| socket(b.addr, b.port)),
                    slot: value.slot,
                    age_ms: age_ns / 1_000_000,
                    timeout_seconds: timeout,
                    expired: timeout.map(|t| age_ns > u64::from(t) * 1_000_000_000),
                };
                Some((frontend.map(|(f, _)| **f), entry))
            })
            .collect();
        // By frontend, entries whose frontend is gone last.
        out.sort_by_key(|(f, e)| (f.is_none(), *f, e.rev_nat_id, e.client_netns_cookie));
        AffinityView {
            affinity: out.into_iter().map(|(_, e)| e).collect(),
        }
    }
}

impl Dataset {
    /// `inspect conntrack`: `entries` from `CT_V4` and `CT_V6`, aged against
    /// `now_ns` (CLOCK_MONOTONIC). `--vip` and `--service` match the flow's
    /// frontend (by its rev-NAT id); a flow whose frontend is gone matches
    /// only no filter.
    pub fn conntrack(&self, entries: &[CtRaw], now_ns: u64, filter: &Filter) -> ConntrackView {
        let by_id: HashMap<u32, &FrontendKey> = self
            .published()
            .map(|(key, master, _)| (master.rev_nat_id, key))
            .collect();
        let mut out: Vec<(Option<FrontendKey>, CtRaw, FlowEntry)> = entries
            .iter()
            .filter_map(|raw| {
                let frontend = by_id.get(&raw.rev_nat_id).copied();
                let owner = self.service_ref(raw.rev_nat_id);
                let matches = match frontend {
                    Some(f) => filter.matches(f.addr, owner.as_ref()),
                    None => filter.is_empty(),
                };
                if !matches {
                    return None;
                }
                let entry = FlowEntry {
                    direction: if raw.flags & ct_flags::REPLY != 0 {
                        "reply"
                    } else {
                        "forward"
                    },
                    protocol: protocol_name(raw.proto),
                    src: socket(raw.src.0, raw.src.1),
                    dst: socket(raw.dst.0, raw.dst.1),
                    new_src: socket(raw.new_src.0, raw.new_src.1),
                    new_dst: socket(raw.new_dst.0, raw.new_dst.1),
                    snat: raw.flags & ct_flags::SNAT != 0,
                    dsr: raw.flags & ct_flags::DSR != 0,
                    closing: raw.flags & ct_flags::CLOSING != 0,
                    pending: raw.pending,
                    rev_nat_id: raw.rev_nat_id,
                    frontend: frontend.map(ToString::to_string),
                    service: owner,
                    backend_id: raw.backend_id,
                    backend: self
                        .backends
                        .get(&raw.backend_id)
                        .map(|b| socket(b.addr, b.port)),
                    idle_ms: now_ns.saturating_sub(raw.last_seen_ns) / 1_000_000,
                };
                Some((frontend.copied(), *raw, entry))
            })
            .collect();
        out.sort_by_key(|(f, raw, _)| {
            (
                f.is_none(),
                *f,
                raw.flags & ct_flags::REPLY,
                raw.src,
                raw.dst,
                raw.proto,
            )
        });
        ConntrackView {
            map_present: true,
            reason: None,
            flows: out.into_iter().map(|(_, _, e)| e).collect(),
        }
    }
}

/// `inspect stats`, from per-reason totals (a reason the map has no index
/// for, in an older layout, is left out).
pub fn stats_view(totals: &[(Reason, u64)]) -> StatsView {
    StatsView {
        stats: totals
            .iter()
            .map(|(reason, count)| StatEntry {
                reason: reason.name(),
                count: *count,
            })
            .collect(),
    }
}

/// `inspect conntrack` when the conntrack maps are not pinned.
pub fn conntrack_absent() -> ConntrackView {
    ConntrackView {
        map_present: false,
        reason: Some(NO_CONNTRACK),
        flows: Vec::new(),
    }
}

fn affinity_timeout(master: &ServiceValue) -> Option<u32> {
    (master.flags & svc_flags::AFFINITY != 0).then_some(master.affinity_timeout)
}

/// bpftool's name for the attach types our hooks use.
pub fn attach_type_name(attach_type: u32) -> String {
    // `enum bpf_attach_type` (uapi/linux/bpf.h).
    let name = match attach_type {
        1 => "cgroup_inet_egress",
        10 => "cgroup_inet4_connect",
        11 => "cgroup_inet6_connect",
        14 => "cgroup_udp4_sendmsg",
        15 => "cgroup_udp6_sendmsg",
        19 => "cgroup_udp4_recvmsg",
        20 => "cgroup_udp6_recvmsg",
        29 => "cgroup_inet4_getpeername",
        30 => "cgroup_inet6_getpeername",
        other => return format!("attach type {other}"),
    };
    name.to_owned()
}

/// A key's `scope` byte as `inspect services` shows it.
pub(super) fn scope_name(scope: u8) -> &'static str {
    match scope {
        proxy_common::scope::INTERNAL => "internal",
        proxy_common::scope::EXTERNAL => "external",
        _ => "unknown",
    }
}
