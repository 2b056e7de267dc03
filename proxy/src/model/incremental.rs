//! [`DesiredCache`]: desired state kept up to date one Service at a time.
//!
//! Recomputing the whole desired state on every change costs time in
//! proportion to the cluster (tens of milliseconds at 10,000 Services). The
//! Index records which Services a change touched ([`Index::take_dirty`]); the
//! cache recomputes only those, re-resolves the frontends they claim, and
//! reports exactly which frontends may have changed, so the plan can look at
//! those alone. The result equals [`Index::desired_outcome`]'s (a test checks
//! this on random changes). Pure: no I/O.

use std::collections::{BTreeSet, HashMap};

use super::{
    Index,
    desired::{Conflict, NoLocalEndpoints, ServiceFrontends, service_frontends},
    index::Dirty,
    types::{DesiredState, EndpointSlice, Frontend, ObjectRef},
};

/// Which frontends an update may have changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Touched {
    /// Everything was recomputed (the first update, or the node changed).
    All,
    /// Only these.
    Some(BTreeSet<Frontend>),
}

/// The desired state, each Service's share of it, and who claims each frontend.
#[derive(Debug, Default)]
pub struct DesiredCache {
    state: DesiredState,
    per_service: HashMap<ObjectRef, ServiceFrontends>,
    /// Frontend → the Services whose ports name it (several: a conflict; the
    /// lowest id wins, as in [`super::desired::desired`]).
    claims: HashMap<Frontend, BTreeSet<ObjectRef>>,
    no_local: NoLocalEndpoints,
    no_local_ports: usize,
    primed: bool,
}

impl DesiredCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current desired state.
    pub fn state(&self) -> &DesiredState {
        &self.state
    }

    /// Service ports with a Local policy and no local endpoint (see
    /// [`super::desired::DesiredOutcome::no_local_endpoints`]).
    pub fn no_local_endpoints(&self) -> (usize, NoLocalEndpoints) {
        (self.no_local_ports, self.no_local)
    }

    /// Frontends claimed by several Services, sorted by frontend.
    pub fn conflicts(&self) -> Vec<Conflict> {
        let mut out: Vec<Conflict> = self
            .claims
            .iter()
            .filter(|(_, ids)| ids.len() > 1)
            .filter_map(|(frontend, ids)| self.conflict(*frontend, ids))
            .collect();
        out.sort_by_key(|c| c.frontend);
        out
    }

    /// The conflicts among `frontends` (those an update touched, say).
    pub fn conflicts_in<'a>(
        &self,
        frontends: impl IntoIterator<Item = &'a Frontend>,
    ) -> Vec<Conflict> {
        frontends
            .into_iter()
            .filter_map(|f| {
                self.claims
                    .get(f)
                    .filter(|ids| ids.len() > 1)
                    .map(|ids| (f, ids))
            })
            .filter_map(|(f, ids)| self.conflict(*f, ids))
            .collect()
    }

    fn conflict(&self, frontend: Frontend, ids: &BTreeSet<ObjectRef>) -> Option<Conflict> {
        let winner = self.state.frontends.get(&frontend)?.service.clone();
        let losers = ids.iter().filter(|id| **id != winner).cloned().collect();
        Some(Conflict {
            frontend,
            winner,
            losers,
        })
    }

    /// Brings the cache up to date with `index`, taking its dirty set.
    pub fn update(&mut self, index: &mut Index) -> Touched {
        let dirty = index.take_dirty();
        if !self.primed || dirty.all {
            self.rebuild(index);
            return Touched::All;
        }
        let Dirty { services, .. } = dirty;
        let mut touched = BTreeSet::new();
        for id in services {
            self.recompute(index, id, &mut touched);
        }
        for frontend in &touched {
            self.resolve(*frontend);
        }
        Touched::Some(touched)
    }

    fn rebuild(&mut self, index: &Index) {
        *self = Self {
            primed: true,
            ..Self::default()
        };
        let ids: Vec<ObjectRef> = index.services().map(|s| s.id.clone()).collect();
        let mut touched = BTreeSet::new();
        for id in ids {
            self.recompute(index, id, &mut touched);
        }
        for frontend in &touched {
            self.resolve(*frontend);
        }
    }

    /// Replaces one Service's share; adds the frontends it had or has to `touched`.
    fn recompute(&mut self, index: &Index, id: ObjectRef, touched: &mut BTreeSet<Frontend>) {
        if let Some(old) = self.per_service.remove(&id) {
            self.no_local.internal -= old.no_local.internal;
            self.no_local.external -= old.no_local.external;
            self.no_local_ports -= old.no_local_ports;
            for (frontend, _) in &old.frontends {
                if let Some(ids) = self.claims.get_mut(frontend) {
                    ids.remove(&id);
                }
                touched.insert(*frontend);
            }
        }
        let Some(service) = index.service(&id) else {
            return;
        };
        let slices: Vec<&EndpointSlice> = index.slices_for(&id).collect();
        let new = service_frontends(index.node(), service, &slices);
        self.no_local.internal += new.no_local.internal;
        self.no_local.external += new.no_local.external;
        self.no_local_ports += new.no_local_ports;
        for (frontend, _) in &new.frontends {
            self.claims.entry(*frontend).or_default().insert(id.clone());
            touched.insert(*frontend);
        }
        self.per_service.insert(id, new);
    }

    /// Picks the winner of one frontend again.
    fn resolve(&mut self, frontend: Frontend) {
        let spec = self.claims.get(&frontend).and_then(|ids| {
            ids.iter().find_map(|id| {
                let share = self.per_service.get(id)?;
                share
                    .frontends
                    .iter()
                    .find(|(f, _)| *f == frontend)
                    .map(|(_, spec)| spec.clone())
            })
        });
        match spec {
            Some(spec) => {
                self.state.frontends.insert(frontend, spec);
            }
            None => {
                self.state.frontends.remove(&frontend);
                self.claims.remove(&frontend);
            }
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::model::{
        NodeInfo, SourceId,
        desired::builders::{slice, svc},
        types::Protocol::{Tcp, Udp},
    };

    /// A small deterministic pseudo-random sequence (no dependency needed).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    #[test]
    fn incremental_updates_equal_a_full_recompute() {
        let mut index = Index::new(NodeInfo::named("n1"));
        let mut cache = DesiredCache::new();
        let mut rng = Lcg(7);
        assert_eq!(cache.update(&mut index), Touched::All);
        for step in 0..2_000 {
            let s = rng.next(12);
            let name = format!("s{s}");
            match rng.next(6) {
                0 => {
                    // Services share VIPs on purpose, to exercise conflicts.
                    let ip = format!("10.96.0.{}", rng.next(8) + 1);
                    let proto = if rng.next(2) == 0 { Tcp } else { Udp };
                    index.apply_service(
                        SourceId::Manifests,
                        svc("default", &name).cluster_ip(&ip).port("p", 80, proto),
                    );
                }
                1 => {
                    index.delete_service(SourceId::Manifests, &ObjectRef::new("default", &name));
                }
                2 | 3 => {
                    let mut sl = slice("default", &format!("{name}-{}", rng.next(2)))
                        .for_service(&name)
                        .port("p", 8080, Tcp)
                        .port("p", 8080, Udp);
                    for _ in 0..rng.next(4) {
                        sl = sl
                            .endpoint(&format!("10.1.{}.{}", rng.next(3), rng.next(5) + 1))
                            .ready();
                    }
                    index.apply_slice(SourceId::Manifests, sl);
                }
                4 => {
                    index.delete_slice(
                        SourceId::Manifests,
                        &ObjectRef::new("default", format!("{name}-{}", rng.next(2))),
                    );
                }
                _ => {
                    if rng.next(10) == 0 {
                        index.set_node(NodeInfo::named(format!("n{}", rng.next(2))));
                    }
                }
            }
            let before = cache.state().clone();
            let touched = cache.update(&mut index);
            let full = index.desired_outcome();
            assert_eq!(
                cache.state(),
                &full.state,
                "step {step}: incremental state differs from a full recompute"
            );
            assert_eq!(
                cache.conflicts(),
                full.conflicts,
                "step {step}: conflicts differ"
            );
            assert_eq!(
                cache.no_local_endpoints().0,
                full.no_local_endpoints,
                "step {step}"
            );
            if let Touched::Some(touched) = touched {
                // Every frontend that changed is reported as touched.
                for f in before.frontends.keys().chain(full.state.frontends.keys()) {
                    if before.frontends.get(f) != full.state.frontends.get(f) {
                        assert!(
                            touched.contains(f),
                            "step {step}: {f} changed but was not reported"
                        );
                    }
                }
            }
        }
    }
}
