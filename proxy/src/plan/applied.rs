//! [`Applied`]: an exact mirror of the map contents, in model terms.
//!
//! The writer updates it after every successful operation, and a restarted
//! daemon (or the periodic reconcile) rebuilds it from the maps, so the plan
//! always diffs against what the kernel really holds, including leftovers of a
//! failed write or of someone editing the maps by hand.

use std::collections::BTreeMap;

use proxy_common::ServiceValue;

use super::{BackendId, Op, RevNatId};
use crate::model::{Backend, Frontend};

/// The contents of the service, backend and rev-NAT maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// `(frontend, slot)` → value; slot 0 is the frontend entry.
    pub services: BTreeMap<(Frontend, u16), ServiceValue>,
    pub backends: BTreeMap<BackendId, Backend>,
    pub rev_nat: BTreeMap<RevNatId, Frontend>,
}

impl Applied {
    /// Records the effect of an operation that succeeded.
    pub fn record(&mut self, op: &Op) {
        match op {
            Op::PutBackend { id, backend } => {
                self.backends.insert(*id, *backend);
            }
            Op::DeleteBackend { id, .. } => {
                self.backends.remove(id);
            }
            Op::PutRevNat { id, frontend } => {
                self.rev_nat.insert(*id, *frontend);
            }
            Op::DeleteRevNat { id, .. } => {
                self.rev_nat.remove(id);
            }
            Op::PutService {
                frontend,
                slot,
                value,
            } => {
                self.services.insert((*frontend, *slot), *value);
            }
            Op::DeleteService { frontend, slot } => {
                self.services.remove(&(*frontend, *slot));
            }
        }
    }

    /// Every entry of one frontend, slot 0 first.
    pub fn entries_of(&self, frontend: Frontend) -> impl Iterator<Item = (u16, &ServiceValue)> {
        self.services
            .range((frontend, 0)..=(frontend, u16::MAX))
            .map(|((_, slot), v)| (*slot, v))
    }

    /// The frontend entry (slot 0), if present.
    pub fn frontend(&self, frontend: Frontend) -> Option<&ServiceValue> {
        self.services.get(&(frontend, 0))
    }

    /// The backends readers can reach through `frontend`: slots `1..=count`. A
    /// missing slot shows as id 0, which no backend has.
    pub fn reachable_slots(&self, frontend: Frontend) -> Vec<BackendId> {
        let count = self.frontend(frontend).map_or(0, |v| v.count);
        (1..=count)
            .map(|slot| {
                self.services
                    .get(&(frontend, slot))
                    .map_or(0, |v| v.backend_id)
            })
            .collect()
    }

    /// Frontends with at least one entry, slot 0 or not.
    pub fn frontends(&self) -> impl Iterator<Item = Frontend> + '_ {
        let mut last = None;
        self.services.keys().filter_map(move |(f, _)| {
            if last == Some(*f) {
                None
            } else {
                last = Some(*f);
                Some(*f)
            }
        })
    }

    /// How many slots reference each backend (slot 0 excluded).
    pub fn backend_refs(&self) -> BTreeMap<BackendId, usize> {
        let mut refs = BTreeMap::new();
        for ((_, slot), v) in &self.services {
            if *slot != 0 {
                *refs.entry(v.backend_id).or_insert(0) += 1;
            }
        }
        refs
    }
}
