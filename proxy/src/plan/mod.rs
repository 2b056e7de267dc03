//! The pure plan: diff what the maps hold ([`Applied`]) against what should be
//! there ([`DesiredState`]) and return ordered operations. No I/O.
//!
//! Ordering keeps kernel readers safe (they look up slot 0, then a slot, then a
//! backend, with no lock):
//! - new backends are written first and unused ones deleted last;
//! - a frontend that grows (or is new) gets its rev-NAT entry, then its slots,
//!   then slot 0 last;
//! - a frontend that shrinks gets slot 0 (the lower count) first, then its slots;
//! - a frontend that goes away loses slot 0 first, then its slots and rev-NAT entry.
//!
//! Backend ids are stable and shared across frontends (Katran's reals); slot
//! positions are kept where a backend stays, so a change writes only what moved.
#![forbid(unsafe_code)]

mod applied;
mod ops;

use std::collections::{BTreeMap, BTreeSet};

pub use applied::Applied;
pub use ops::{BackendId, Op, RevNatId, Step, Subject};

use crate::model::{Backend, DesiredState, Frontend};

/// The result of [`plan`]: steps to execute in order, and frontends that could
/// not be planned at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Frontends left out, with the reason (for example, ids exhausted).
    pub unplanned: Vec<(Frontend, &'static str)>,
}

impl Plan {
    /// True when applying the plan would change nothing.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// All operations, flattened in execution order.
    pub fn ops(&self) -> impl Iterator<Item = &Op> {
        self.steps.iter().flat_map(|s| s.ops.iter())
    }
}

/// Computes the ordered operations that turn `applied` into `desired`.
///
/// Anything in the maps that the desired state does not explain (a leftover
/// of a failed write, an entry added by hand) is deleted, readers-first.
pub fn plan(applied: &Applied, desired: &DesiredState) -> Plan {
    let mut out = Plan::default();

    // 1. Backend ids: reuse what the maps already hold, allocate the rest.
    let mut ids = IdAllocator::new(applied.backends.keys().copied());
    let known: BTreeMap<&Backend, BackendId> =
        applied.backends.iter().map(|(id, b)| (b, *id)).collect();
    let mut backend_ids: BTreeMap<Backend, BackendId> = BTreeMap::new();
    for spec in desired.frontends.values() {
        for backend in &spec.backends {
            if !backend_ids.contains_key(backend) {
                let id = known.get(backend).copied().unwrap_or_else(|| ids.next());
                backend_ids.insert(*backend, id);
            }
        }
    }
    for (backend, id) in &backend_ids {
        if applied.backends.get(id) != Some(backend) {
            out.steps.push(Step {
                subject: Subject::Backend(*id),
                ops: vec![Op::PutBackend {
                    id: *id,
                    backend: *backend,
                }],
            });
        }
    }

    // 2. Desired frontends, new or changed. Rev-NAT ids stay with their frontend.
    let mut rev_ids = RevNatAllocator::new(
        applied
            .rev_nat
            .keys()
            .copied()
            .chain(applied.services.values().map(|v| v.rev_nat_id)),
    );
    let mut kept_rev_nat: BTreeSet<RevNatId> = BTreeSet::new();
    for (frontend, spec) in &desired.frontends {
        let current = applied
            .frontend(*frontend)
            .map(|v| v.rev_nat_id)
            .filter(|id| *id != 0);
        let Some(rev_nat_id) = current.or_else(|| rev_ids.next()) else {
            out.unplanned
                .push((*frontend, "all 65,535 rev-NAT ids are in use"));
            continue;
        };
        kept_rev_nat.insert(rev_nat_id);
        let want: Vec<BackendId> = spec.backends.iter().map(|b| backend_ids[b]).collect();
        let ops = converge_frontend(applied, *frontend, rev_nat_id, &want, spec.affinity_timeout);
        if !ops.is_empty() {
            out.steps.push(Step {
                subject: Subject::Frontend(*frontend),
                ops,
            });
        }
    }

    // 3. Frontends that go away: slot 0 first, so readers stop finding them.
    for frontend in applied.frontends() {
        if !desired.frontends.contains_key(&frontend) {
            let mut ops: Vec<Op> = Vec::new();
            if applied.frontend(frontend).is_some() {
                ops.push(Op::DeleteService { frontend, slot: 0 });
            }
            ops.extend(
                applied
                    .entries_of(frontend)
                    .filter(|(slot, _)| *slot != 0)
                    .map(|(slot, _)| Op::DeleteService { frontend, slot }),
            );
            out.steps.push(Step {
                subject: Subject::Frontend(frontend),
                ops,
            });
        }
    }

    // 4. Rev-NAT entries no frontend owns.
    for (id, frontend) in &applied.rev_nat {
        if !kept_rev_nat.contains(id) {
            out.steps.push(Step {
                subject: Subject::RevNat(*id),
                ops: vec![Op::DeleteRevNat {
                    id: *id,
                    frontend: *frontend,
                }],
            });
        }
    }

    // 5. Backends nobody references any more, last.
    let wanted: BTreeSet<BackendId> = backend_ids.values().copied().collect();
    for (id, backend) in &applied.backends {
        if !wanted.contains(id) {
            out.steps.push(Step {
                subject: Subject::Backend(*id),
                ops: vec![Op::DeleteBackend {
                    id: *id,
                    backend: *backend,
                }],
            });
        }
    }
    out
}

/// Operations that make one desired frontend's entries match `want`.
fn converge_frontend(
    applied: &Applied,
    frontend: Frontend,
    rev_nat_id: RevNatId,
    want: &[BackendId],
    affinity_timeout: Option<u32>,
) -> Vec<Op> {
    let old = applied.reachable_slots(frontend);
    let new = next_slots(&old, want);
    let count = slot_count(new.len());

    let mut ops = Vec::new();
    if applied.rev_nat.get(&rev_nat_id) != Some(&frontend) {
        ops.push(Op::PutRevNat {
            id: rev_nat_id,
            frontend,
        });
    }
    let master = Op::put_frontend(frontend, count, rev_nat_id, affinity_timeout);
    let master_changed = match (&master, applied.frontend(frontend)) {
        (Op::PutService { value, .. }, Some(current)) => value != current,
        _ => true,
    };
    let rewrites: Vec<Op> = new
        .iter()
        .enumerate()
        .filter(|(i, id)| {
            applied
                .services
                .get(&(frontend, slot_number(*i)))
                .map(|v| v.backend_id)
                != Some(**id)
        })
        .map(|(i, id)| Op::put_slot(frontend, slot_number(i), *id))
        .collect();
    let stale: Vec<Op> = applied
        .entries_of(frontend)
        .filter(|(slot, _)| *slot > count)
        .map(|(slot, _)| Op::DeleteService { frontend, slot })
        .collect();

    if new.len() >= old.len() {
        // Growing (or same size): slots first, then slot 0 publishes them.
        ops.extend(rewrites);
        if master_changed {
            ops.push(master);
        }
    } else {
        // Shrinking: slot 0 stops readers from using the tail first.
        if master_changed {
            ops.push(master);
        }
        ops.extend(rewrites);
    }
    ops.extend(stale);
    ops
}

/// The new slot list (position `i` is slot `i + 1`): a backend that stays keeps
/// its position when that position still exists; new backends fill the gaps.
fn next_slots(old: &[BackendId], want: &[BackendId]) -> Vec<BackendId> {
    let wanted: BTreeSet<BackendId> = want.iter().copied().collect();
    let n = wanted.len();
    let mut slots: Vec<Option<BackendId>> = (0..n)
        .map(|i| old.get(i).copied().filter(|id| wanted.contains(id)))
        .collect();
    let placed: BTreeSet<BackendId> = slots.iter().flatten().copied().collect();
    let mut rest = wanted.iter().filter(|id| !placed.contains(id));
    for slot in slots.iter_mut().filter(|s| s.is_none()) {
        *slot = rest.next().copied();
    }
    slots.into_iter().flatten().collect()
}

fn slot_number(index: usize) -> u16 {
    // Frontends never have more than u16::MAX - 1 backends: `slot_count` caps
    // the count, and the desired state comes from EndpointSlices far smaller.
    u16::try_from(index + 1).unwrap_or(u16::MAX)
}

fn slot_count(len: usize) -> u16 {
    u16::try_from(len).unwrap_or(u16::MAX - 1)
}

/// Hands out the lowest backend ids not in use, starting at 1.
struct IdAllocator {
    used: BTreeSet<BackendId>,
    cursor: BackendId,
}

impl IdAllocator {
    fn new(used: impl Iterator<Item = BackendId>) -> Self {
        Self {
            used: used.collect(),
            cursor: 1,
        }
    }

    fn next(&mut self) -> BackendId {
        while self.used.contains(&self.cursor) {
            self.cursor += 1;
        }
        self.used.insert(self.cursor);
        self.cursor
    }
}

/// Hands out the lowest free rev-NAT ids (`1..=u16::MAX`).
struct RevNatAllocator {
    used: BTreeSet<RevNatId>,
    cursor: u32,
}

impl RevNatAllocator {
    fn new(used: impl Iterator<Item = RevNatId>) -> Self {
        Self {
            used: used.collect(),
            cursor: 1,
        }
    }

    fn next(&mut self) -> Option<RevNatId> {
        while self.cursor <= u32::from(u16::MAX) {
            let id = self.cursor as RevNatId;
            self.cursor += 1;
            if self.used.insert(id) {
                return Some(id);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
