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
pub fn candidates<'a>(
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
                zone_hints: ep.zone_hints(),
                node_hints: ep.node_hints(),
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TopologyMode {
    /// No restriction: every Ready endpoint.
    None,
    /// Ready endpoints hinted for this node's zone.
    PreferSameZone,
    /// Ready endpoints hinted for this node.
    PreferSameNode,
}

/// Why [`topology_decision`] chose its mode: the branch of kube-proxy's
/// `topologyModeFromHints` taken, for `proxy explain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TopologyWhy {
    /// No Ready endpoint: hints are not looked at.
    NoReadyEndpoints,
    /// Every Ready endpoint has a node hint and one names this node.
    NodeHintsForThisNode,
    /// Every Ready endpoint has a zone hint and one names this node's zone.
    ZoneHintsForThisZone,
    /// No Ready endpoint has any hint.
    NoHints,
    /// Some Ready endpoint has a hint and another has none: hints are ignored.
    SomeEndpointWithoutHint,
    /// Every Ready endpoint has a zone hint, but none names this node's zone
    /// (or the node has no zone label): hints are ignored.
    NoHintForThisZone,
}

impl TopologyWhy {
    /// One sentence for people.
    pub fn describe(self) -> &'static str {
        match self {
            TopologyWhy::NoReadyEndpoints => "no Ready endpoint, so hints are not looked at",
            TopologyWhy::NodeHintsForThisNode => {
                "every Ready endpoint has a node hint and one names this node: node hints apply"
            }
            TopologyWhy::ZoneHintsForThisZone => {
                "every Ready endpoint has a zone hint and one names this node's zone: zone hints apply"
            }
            TopologyWhy::NoHints => "no endpoint has a topology hint",
            TopologyWhy::SomeEndpointWithoutHint => {
                "some Ready endpoint has no hint, so hints are ignored"
            }
            TopologyWhy::NoHintForThisZone => {
                "no hint names this node or its zone (or the node has no zone label), so hints are ignored"
            }
        }
    }
}

/// The topology mode and why (see [`topology_decision`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TopologyDecision {
    pub mode: TopologyMode,
    pub why: TopologyWhy,
}

/// kube-proxy's `topologyModeFromHints`: node hints apply when every Ready
/// endpoint has one and at least one names this node; otherwise zone hints,
/// under the same two conditions for this node's zone; otherwise none. Only
/// Ready endpoints are looked at, and without any there is no topology.
pub fn topology_mode(endpoints: &[Candidate<'_>], node: &NodeInfo) -> TopologyMode {
    topology_decision(endpoints, node).mode
}

/// [`topology_mode`] with the reason for it.
pub fn topology_decision(endpoints: &[Candidate<'_>], node: &NodeInfo) -> TopologyDecision {
    let mut any_ready = false;
    let mut any_hint = false;
    let (mut all_node_hints, mut hint_for_node) = (true, false);
    let (mut all_zone_hints, mut hint_for_zone) = (true, false);
    for ep in endpoints.iter().filter(|ep| ep.ready) {
        any_ready = true;
        any_hint |= !ep.node_hints.is_empty() || !ep.zone_hints.is_empty();
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
    let (mode, why) = if !any_ready {
        (TopologyMode::None, TopologyWhy::NoReadyEndpoints)
    } else if all_node_hints && hint_for_node {
        (
            TopologyMode::PreferSameNode,
            TopologyWhy::NodeHintsForThisNode,
        )
    } else if all_zone_hints && hint_for_zone {
        (
            TopologyMode::PreferSameZone,
            TopologyWhy::ZoneHintsForThisZone,
        )
    } else if !any_hint {
        (TopologyMode::None, TopologyWhy::NoHints)
    } else if all_zone_hints {
        (TopologyMode::None, TopologyWhy::NoHintForThisZone)
    } else {
        (TopologyMode::None, TopologyWhy::SomeEndpointWithoutHint)
    };
    TopologyDecision { mode, why }
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

/// Why one endpoint is in or out of one category: what [`Rules`] decides and
/// [`categorize`] acts on, so `proxy explain` prints the rule that decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// In: Ready (and no topology restriction applies).
    Ready,
    /// In: Ready, with a node hint for this node (node hints apply).
    HintedForThisNode,
    /// In: Ready, with a zone hint for this node's zone (zone hints apply).
    HintedForThisZone,
    /// In: no Ready endpoint in the category, and this one is Serving and
    /// Terminating (kube-proxy's terminating fallback).
    TerminatingFallback,
    /// Out: node hints apply and this endpoint's do not name this node.
    NotHintedForThisNode,
    /// Out: zone hints apply and this endpoint's do not name this zone.
    NotHintedForThisZone,
    /// Out: Serving and Terminating, but Ready endpoints are used instead.
    ReadyEndpointsPreferred,
    /// Out: Terminating and no longer Serving.
    TerminatingNotServing,
    /// Out: not Ready (and not Terminating).
    NotReady,
    /// Out of the local category: on another node (or `nodeName` unknown).
    NotLocal,
}

impl Rule {
    /// Whether the endpoint is in the category.
    pub fn used(self) -> bool {
        matches!(
            self,
            Rule::Ready
                | Rule::HintedForThisNode
                | Rule::HintedForThisZone
                | Rule::TerminatingFallback
        )
    }

    /// One sentence for people.
    pub fn describe(self) -> &'static str {
        match self {
            Rule::Ready => "Ready",
            Rule::HintedForThisNode => "Ready, hinted for this node",
            Rule::HintedForThisZone => "Ready, hinted for this node's zone",
            Rule::TerminatingFallback => {
                "Serving and Terminating, used because no endpoint is Ready (terminating fallback)"
            }
            Rule::NotHintedForThisNode => "Ready, but node hints apply and none names this node",
            Rule::NotHintedForThisZone => {
                "Ready, but zone hints apply and none names this node's zone"
            }
            Rule::ReadyEndpointsPreferred => {
                "Serving and Terminating, not used while a Ready endpoint exists"
            }
            Rule::TerminatingNotServing => "Terminating and no longer Serving",
            Rule::NotReady => "not Ready",
            Rule::NotLocal => "not on this node",
        }
    }
}

/// The per-endpoint rules of kube-proxy's `CategorizeEndpoints` for one set
/// of candidates: the topology decision and whether each category falls back
/// to terminating endpoints. No allocation; [`categorize`] uses it, and so
/// does `proxy explain`.
#[derive(Clone, Copy, Debug)]
pub struct Rules<'n> {
    node: &'n NodeInfo,
    topology: TopologyDecision,
    cluster_fallback: bool,
    local_fallback: bool,
}

impl<'n> Rules<'n> {
    pub fn new(endpoints: &[Candidate<'_>], node: &'n NodeInfo) -> Self {
        let topology = topology_decision(endpoints, node);
        // Topology is already ignored if no Ready endpoint matches it, so the
        // cluster fallback happens only with no Ready endpoint anywhere.
        let cluster_fallback = !endpoints
            .iter()
            .any(|ep| ep.ready && available_for_topology(ep, topology.mode, node));
        let local_fallback = !endpoints.iter().any(|ep| ep.local && ep.ready);
        Self {
            node,
            topology,
            cluster_fallback,
            local_fallback,
        }
    }

    pub fn topology(&self) -> TopologyDecision {
        self.topology
    }

    /// Whether and why `ep` is in the cluster category: Ready endpoints
    /// passing the topology filter, else Serving and Terminating ones.
    pub fn cluster(&self, ep: &Candidate<'_>) -> Rule {
        if ep.ready {
            let hinted = available_for_topology(ep, self.topology.mode, self.node);
            match (self.topology.mode, hinted) {
                (TopologyMode::None, _) => Rule::Ready,
                (TopologyMode::PreferSameNode, true) => Rule::HintedForThisNode,
                (TopologyMode::PreferSameNode, false) => Rule::NotHintedForThisNode,
                (TopologyMode::PreferSameZone, true) => Rule::HintedForThisZone,
                (TopologyMode::PreferSameZone, false) => Rule::NotHintedForThisZone,
            }
        } else {
            not_ready(ep, self.cluster_fallback)
        }
    }

    /// Whether and why `ep` is in the local category: local Ready endpoints,
    /// else local Serving and Terminating ones; topology does not apply.
    pub fn local(&self, ep: &Candidate<'_>) -> Rule {
        if !ep.local {
            Rule::NotLocal
        } else if ep.ready {
            Rule::Ready
        } else {
            not_ready(ep, self.local_fallback)
        }
    }
}

/// The rule for an endpoint that is not Ready, in a category that does or
/// does not fall back to terminating endpoints.
fn not_ready(ep: &Candidate<'_>, fallback: bool) -> Rule {
    match (ep.serving, ep.terminating) {
        (true, true) if fallback => Rule::TerminatingFallback,
        (true, true) => Rule::ReadyEndpointsPreferred,
        (false, true) => Rule::TerminatingNotServing,
        (_, false) => Rule::NotReady,
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
    let rules = Rules::new(endpoints, node);
    let select = |keep: &dyn Fn(&Candidate<'_>) -> Rule| {
        let mut chosen: Vec<Backend> = endpoints
            .iter()
            .filter(|ep| keep(ep).used())
            .map(|ep| ep.backend)
            .collect();
        chosen.sort_unstable();
        chosen
    };
    let cluster = select(&|ep| rules.cluster(ep));
    let local = select(&|ep| rules.local(ep));
    let has_any = endpoints
        .iter()
        .any(|ep| ep.ready || (ep.serving && ep.terminating));
    Categories {
        cluster,
        local,
        has_any,
    }
}
