//! [`Draining`]: backend deletes held back for a grace period, so per-packet
//! (tc) flows to an endpoint that was just deleted finish instead of being
//! balanced anew mid-stream (which, for TCP, the new backend answers with a
//! RST).
//!
//! TCP only: UDP flows to a deleted endpoint are moved to a live one at once,
//! as kube-proxy clears their conntrack entries.
//!
//! Pure: the caller passes the time. A plan deletes a backend only once no
//! slot points at it and no Service lists its endpoint; [`Draining::hold`]
//! takes such a delete out of the plan the first time it is planned and
//! starts the backend's grace period. When the period is over
//! ([`Draining::expire`]), the next plan's delete goes through. Nothing here
//! can leave a slot dangling: a held backend is one no slot points at, and
//! one that a slot uses again is forgotten (its grace starts afresh the next
//! time it is let go).

use std::{
    collections::{BTreeMap, BTreeSet, btree_map},
    time::{Duration, Instant},
};

use super::{Applied, BackendId, Op, Plan};
use crate::model::{Backend, Protocol};

/// Backends let go and not yet deleted, each with the end of its grace.
#[derive(Clone, Debug, Default)]
pub struct Draining {
    grace: Duration,
    deadlines: BTreeMap<BackendId, Instant>,
    /// Graces that ended: the next [`Draining::hold`] lets their deletes through.
    due: BTreeSet<BackendId>,
}

impl Draining {
    /// Holds deletes for `grace` (zero: never held).
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            ..Self::default()
        }
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Backends draining, each with the end of its grace.
    pub fn deadlines(&self) -> &BTreeMap<BackendId, Instant> {
        &self.deadlines
    }

    /// The earliest end of a grace: when a sync should run to delete it.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.values().min().copied()
    }

    /// Ends the graces due at `now`; true when one did (a plan should run).
    pub fn expire(&mut self, now: Instant) -> bool {
        let ended: Vec<BackendId> = self
            .deadlines
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in &ended {
            self.deadlines.remove(id);
            self.due.insert(*id);
        }
        !ended.is_empty()
    }

    /// Lets the next plan delete these backends without a grace (entries
    /// nobody wrote as an endpoint's: drift found by the reconcile).
    pub fn release_now(&mut self, ids: impl IntoIterator<Item = BackendId>) {
        for id in ids {
            self.deadlines.remove(&id);
            self.due.insert(id);
        }
    }

    /// Takes out of `plan` the deletes of backends whose grace has not ended,
    /// starting it (at `now`) for those let go just now. `applied` is what
    /// the plan was made against: a draining backend a slot uses again, or
    /// gone from the maps, is forgotten. Returns the backends whose grace
    /// started now.
    pub fn hold(&mut self, plan: &mut Plan, applied: &Applied, now: Instant) -> Vec<Backend> {
        self.deadlines
            .retain(|id, _| applied.refs(*id) == 0 && applied.backends.contains_key(id));
        // A grace that ended applies to this plan only: a backend it did not
        // delete is wanted or listed again.
        let due = std::mem::take(&mut self.due);
        let mut started = Vec::new();
        if self.grace.is_zero() {
            return started;
        }
        let until = now + self.grace;
        plan.ops.retain(|planned| match planned.op {
            // UDP flows to a deleted endpoint move to a live one at once
            // (kube-proxy clears their conntrack entries).
            Op::DeleteBackend { id, backend }
                if backend.protocol != Protocol::Udp && !due.contains(&id) =>
            {
                if let btree_map::Entry::Vacant(v) = self.deadlines.entry(id) {
                    v.insert(until);
                    started.push(backend);
                }
                false
            }
            _ => true,
        });
        started
    }
}

#[cfg(test)]
mod tests;
