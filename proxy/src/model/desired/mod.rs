//! The desired-state function: from Services and their EndpointSlices to the
//! frontends the dataplane should serve and the backends behind each.
//!
//! Pure and synchronous: no I/O, no logging, no clock. [`crate::model::Index`]
//! calls it; tests can call it directly.
//!
//! Split along kube-proxy's own seams (semantics: `docs/semantics.md`):
//! - [`frontends`]: what one Service contributes: its ClusterIP, NodePort,
//!   ExternalIP and LoadBalancer frontends, the backends each uses under the
//!   traffic policies, its refusals, its local endpoints and its health check;
//! - [`topology`]: the endpoints of one Service port ([`Candidate`]) and
//!   kube-proxy's `CategorizeEndpoints` (`pkg/proxy/topology.go`);
//! - here: the whole state over every Service, and what spans Services.
//!
//! Rules that span Services:
//! - two Services claiming one frontend: the lowest [`ObjectRef`] wins and the
//!   clash is reported as a [`Conflict`] in [`DesiredOutcome::conflicts`]
//!   ([`DesiredState`] itself carries no problems);
//! - [`DesiredState::local_endpoints`]: every endpoint address on this node;
//! - [`DesiredState::retained_backends`]: every endpoint listed, used or not;
//! - [`DesiredState::health_checks`]: two Services on one port: the lowest
//!   [`ObjectRef`] wins;
//! - ports without a local endpoint are summed into
//!   [`DesiredOutcome::no_local_endpoints`].

use std::{
    collections::{BTreeMap, BTreeSet, btree_map::Entry},
    fmt,
};

use super::types::{
    Backend, DesiredState, EndpointSlice, Frontend, FrontendSpec, HealthCheck, NodeInfo, ObjectRef,
    Service,
};

pub mod frontends;
pub mod topology;

#[cfg(test)]
mod tests;

pub use frontends::{
    Category, KUBELET_PORT, Refusal, RefusalReason, Scope, ServiceFrontends, scope_category,
    service_frontends,
};
pub use topology::{
    Candidate, Categories, Rule, Rules, TopologyDecision, TopologyMode, TopologyWhy, candidates,
    categorize, topology_decision, topology_mode,
};

/// Desired state plus what went wrong, or is worth counting, while computing it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredOutcome {
    pub state: DesiredState,
    /// Frontends claimed by more than one Service, sorted by frontend.
    pub conflicts: Vec<Conflict>,
    /// External frontends refused for safety, sorted by Service, then
    /// frontend, then kind.
    pub refusals: Vec<Refusal>,
    /// Service ports with a Local traffic policy (internal, or external on an
    /// externally reachable Service) that have usable endpoints, but none on
    /// this node; each port counts once. kube-proxy's
    /// `sync_proxy_rules_no_local_endpoints_total`, whose two series are in
    /// [`DesiredOutcome::no_local_endpoints_by_policy`].
    pub no_local_endpoints: usize,
    pub no_local_endpoints_by_policy: NoLocalEndpoints,
}

/// Service ports with no local endpoint, by the policy that wanted one (the
/// `traffic_policy` label of kube-proxy's metric). kube-proxy counts per Service
/// port; a port of a dual-stack Service counts once, when any of its families
/// lacks a local endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoLocalEndpoints {
    /// `internalTrafficPolicy: Local`.
    pub internal: usize,
    /// `externalTrafficPolicy: Local` on a NodePort or LoadBalancer Service, or
    /// one with external IPs.
    pub external: usize,
}

/// A frontend claimed by more than one Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub frontend: Frontend,
    /// The Service that got the frontend: the lowest [`ObjectRef`].
    pub winner: ObjectRef,
    /// The others, sorted.
    pub losers: Vec<ObjectRef>,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frontend {} is claimed by several Services: using Service {}, ignoring",
            self.frontend, self.winner
        )?;
        for (i, loser) in self.losers.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}Service {loser}")?;
        }
        Ok(())
    }
}

/// Computes the whole desired state for `node`. Each item is a Service with the
/// slices that name it (same namespace, `service_name` equal to its name), in
/// slice-name order. The order of Services does not matter.
pub fn desired<'a, S>(
    node: &NodeInfo,
    services: impl IntoIterator<Item = (&'a Service, S)>,
) -> DesiredOutcome
where
    S: AsRef<[&'a EndpointSlice]>,
{
    let mut frontends: BTreeMap<Frontend, FrontendSpec> = BTreeMap::new();
    let mut losers: BTreeMap<Frontend, BTreeSet<ObjectRef>> = BTreeMap::new();
    let mut no_local = NoLocalEndpoints::default();
    let mut no_local_ports = 0;
    let mut refusals = Vec::new();
    let mut local_endpoints = BTreeSet::new();
    let mut retained_backends: BTreeMap<Backend, u32> = BTreeMap::new();
    let mut retained_by_service = BTreeMap::new();
    let mut health_checks: BTreeMap<u16, HealthCheck> = BTreeMap::new();
    for (service, slices) in services {
        let computed = service_frontends(node, service, slices.as_ref());
        refusals.extend(computed.refusals);
        local_endpoints.extend(computed.local_endpoints);
        if !computed.retained_backends.is_empty() {
            for backend in &computed.retained_backends {
                *retained_backends.entry(*backend).or_insert(0) += 1;
            }
            retained_by_service.insert(service.id.clone(), computed.retained_backends);
        }
        if let Some((port, check)) = computed.health_check {
            // Two Services on one port (the API server prevents it): the lowest wins.
            match health_checks.entry(port) {
                Entry::Vacant(v) => {
                    v.insert(check);
                }
                Entry::Occupied(mut o) => {
                    if check.service < o.get().service {
                        o.insert(check);
                    }
                }
            }
        }
        no_local.internal += computed.no_local.internal;
        no_local.external += computed.no_local.external;
        no_local_ports += computed.no_local_ports;
        for (frontend, spec) in computed.frontends {
            match frontends.entry(frontend) {
                Entry::Vacant(v) => {
                    v.insert(spec);
                }
                Entry::Occupied(mut o) => {
                    if o.get().service == spec.service {
                        continue;
                    }
                    let loser = if spec.service < o.get().service {
                        std::mem::replace(o.get_mut(), spec).service
                    } else {
                        spec.service
                    };
                    losers.entry(frontend).or_default().insert(loser);
                }
            }
        }
    }
    let conflicts = losers
        .into_iter()
        .filter_map(|(frontend, losers)| {
            let winner = frontends.get(&frontend)?.service.clone();
            Some(Conflict {
                frontend,
                winner,
                losers: losers.into_iter().collect(),
            })
        })
        .collect();
    refusals.sort();
    DesiredOutcome {
        state: DesiredState {
            frontends,
            local_endpoints,
            retained_backends,
            retained_by_service,
            health_checks,
        },
        conflicts,
        refusals,
        no_local_endpoints: no_local_ports,
        no_local_endpoints_by_policy: no_local,
    }
}
