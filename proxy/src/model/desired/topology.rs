//! The endpoints of one Service port, and kube-proxy's `CategorizeEndpoints`
//! (`pkg/proxy/topology.go`): which of them serve cluster traffic and which
//! serve local traffic.
//!
//! Pure: no I/O, no logging, no clock.
//!
//! Rules (see `docs/semantics.md`):
//! - endpoints come from the Service's slices whose address type matches the
//!   frontend IP's family, and whose port has the Service port's name and protocol;
//! - an endpoint seen in several slices counts once per (address, target port):
//!   the first slice in name order wins, except that a later copy on this node
//!   replaces it (kube-proxy's `EndpointSliceCache.addEndpoints` favours local);
//! - `publishNotReadyAddresses` makes every endpoint Ready and Serving;
//! - endpoints are sorted into cluster and local categories by [`categorize`], a
//!   port of kube-proxy's `CategorizeEndpoints`.
//!
//! # Topology
//!
//! As in kube-proxy today, topology comes only from the hints the EndpointSlice
//! controller writes: `spec.trafficDistribution` (`PreferClose`,
//! `PreferSameZone`, `PreferSameNode`) is not read here, because the controller
//! turns it into zone or node hints. Node hints come first (kube-proxy's
//! `PreferSameTrafficDistribution` gate, on by default), then zone hints.

use std::{
    collections::{HashMap, hash_map},
    net::IpAddr,
};

use crate::model::types::{AddressType, Backend, EndpointSlice, NodeInfo, Service, ServicePort};

/// One endpoint of one Service port in one IP family, de-duplicated, with the
/// facts [`categorize`] needs (kube-proxy's `Endpoint` interface).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub backend: Backend,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// On this node.
    pub local: bool,
    pub zone_hints: &'a [String],
    pub node_hints: &'a [String],
}

/// The endpoints of one Service port in one family, in slice-name order, each
/// (address, target port) once. See the module docs for which copy wins.
pub(super) fn candidates<'a>(
    service: &Service,
    port: &ServicePort,
    family: AddressType,
    slices: &[&'a EndpointSlice],
    node: &NodeInfo,
) -> Vec<Candidate<'a>> {
    let everything_ready = service.publish_not_ready_addresses;
    let mut position: HashMap<(IpAddr, u16), usize> = HashMap::new();
    let mut out = Vec::new();
    for slice in slices.iter().filter(|s| s.address_type == family) {
        let Some(target) = slice
            .ports
            .iter()
            .find(|p| p.name == port.name && p.protocol == port.protocol)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let candidate = Candidate {
                backend: Backend {
                    addr: ep.address,
                    port: target.port,
                    protocol: port.protocol,
                },
                ready: ep.ready || everything_ready,
                serving: ep.serving || everything_ready,
                terminating: ep.terminating,
                local: node.is_local(ep.node_name.as_deref()),
                zone_hints: &ep.zone_hints,
                node_hints: &ep.node_hints,
            };
            match position.entry((ep.address, target.port)) {
                hash_map::Entry::Vacant(v) => {
                    v.insert(out.len());
                    out.push(candidate);
                }
                hash_map::Entry::Occupied(o) => {
                    if candidate.local
                        && let Some(kept) = out.get_mut(*o.get())
                    {
                        *kept = candidate;
                    }
                }
            }
        }
    }
    out
}

/// Which hints restrict cluster endpoints (kube-proxy's `topologyMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopologyMode {
    /// No restriction: every Ready endpoint.
    None,
    /// Ready endpoints hinted for this node's zone.
    PreferSameZone,
    /// Ready endpoints hinted for this node.
    PreferSameNode,
}

/// kube-proxy's `topologyModeFromHints`: node hints apply when every Ready
/// endpoint has one and at least one names this node; otherwise zone hints,
/// under the same two conditions for this node's zone; otherwise none. Only
/// Ready endpoints are looked at, and without any there is no topology.
pub fn topology_mode(endpoints: &[Candidate<'_>], node: &NodeInfo) -> TopologyMode {
    let mut any_ready = false;
    let (mut all_node_hints, mut hint_for_node) = (true, false);
    let (mut all_zone_hints, mut hint_for_zone) = (true, false);
    for ep in endpoints.iter().filter(|ep| ep.ready) {
        any_ready = true;
        if ep.node_hints.is_empty() {
            all_node_hints = false;
        } else if !node.name.is_empty() && ep.node_hints.contains(&node.name) {
            hint_for_node = true;
        }
        if ep.zone_hints.is_empty() {
            all_zone_hints = false;
        } else if let Some(zone) = &node.zone
            && ep.zone_hints.contains(zone)
        {
            hint_for_zone = true;
        }
    }
    if !any_ready {
        TopologyMode::None
    } else if all_node_hints && hint_for_node {
        TopologyMode::PreferSameNode
    } else if all_zone_hints && hint_for_zone {
        TopologyMode::PreferSameZone
    } else {
        TopologyMode::None
    }
}

fn available_for_topology(ep: &Candidate<'_>, mode: TopologyMode, node: &NodeInfo) -> bool {
    match mode {
        TopologyMode::None => true,
        TopologyMode::PreferSameNode => ep.node_hints.contains(&node.name),
        TopologyMode::PreferSameZone => node
            .zone
            .as_ref()
            .is_some_and(|zone| ep.zone_hints.contains(zone)),
    }
}

/// The endpoints of one Service port, sorted into kube-proxy's categories.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Categories {
    /// For Cluster traffic policy: Ready endpoints passing the topology filter,
    /// else every Serving and Terminating endpoint. Sorted.
    pub cluster: Vec<Backend>,
    /// For Local traffic policy: local Ready endpoints, else local Serving and
    /// Terminating ones; topology does not apply. Sorted.
    pub local: Vec<Backend>,
    /// Some endpoint anywhere is usable (Ready, or Serving and Terminating).
    pub has_any: bool,
}

/// kube-proxy's `CategorizeEndpoints`, computing both categories whatever the
/// Service's policies (which of them a frontend uses is the caller's choice).
/// The cluster and local categories fall back to terminating endpoints
/// independently.
pub fn categorize(endpoints: &[Candidate<'_>], node: &NodeInfo) -> Categories {
    let serving_terminating = |ep: &Candidate<'_>| ep.serving && ep.terminating;
    let select = |keep: &dyn Fn(&Candidate<'_>) -> bool| {
        let mut chosen: Vec<Backend> = endpoints
            .iter()
            .filter(|ep| keep(ep))
            .map(|ep| ep.backend)
            .collect();
        chosen.sort_unstable();
        chosen
    };

    let mode = topology_mode(endpoints, node);
    let mut cluster = select(&|ep| ep.ready && available_for_topology(ep, mode, node));
    // Topology was already ignored if no Ready endpoint matched it, so an empty
    // list here means no Ready endpoint anywhere.
    if cluster.is_empty() {
        cluster = select(&serving_terminating);
    }

    let local = if endpoints.iter().any(|ep| ep.local && ep.ready) {
        select(&|ep| ep.local && ep.ready)
    } else {
        select(&|ep| ep.local && serving_terminating(ep))
    };

    let has_any = endpoints
        .iter()
        .any(|ep| ep.ready || serving_terminating(ep));
    Categories {
        cluster,
        local,
        has_any,
    }
}
