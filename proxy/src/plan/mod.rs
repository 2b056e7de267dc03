//! The pure plan: diff what the maps hold ([`Applied`]) against what should be
//! there ([`DesiredState`]) and return ordered operations. No I/O.
//!
//! Ordering keeps kernel readers safe (they look up slot 0, then a slot, then a
//! backend, with no lock). Operations are grouped into global phases (see
//! [`Phase`]) so the writer can batch them, and within those phases:
//! - new backends are written first and unused ones deleted last;
//! - a frontend that grows (or is new) gets its rev-NAT entry and its name
//!   (`SVC_NAMES`, for `proxy inspect`), then its slots, then slot 0 last;
//! - a frontend that shrinks gets slot 0 (the lower count) first, then its slots;
//! - a frontend that goes away loses slot 0 first, then its slots, its rev-NAT
//!   entry, and its name and source ranges last;
//! - a LoadBalancer frontend's source ranges (`SRC_RANGE_*`) are written with
//!   its name, before slot 0, and those no longer wanted deleted after it;
//! - an external frontend's Maglev table ([`maglev`], `MAGLEV`), shared by
//!   the frontends of one Service port, family and scope with the same
//!   backends ([`maglev_tables`]), is written after the backends it names and
//!   before any slot 0 naming it, and deleted after no slot 0 names it, before
//!   its backends go.
//!
//! Each frontend has entries in the internal [`Scope`], and in the external
//! one when its spec has `external_backends`; both share the frontend's
//! rev-NAT id and name, and each follows the rules above on its own. A
//! backend's flags (`LOCAL`, from the desired state's local endpoints) are
//! rewritten in place when they change.
//!
//! Backend ids are stable and shared across frontends (Katran's reals); slot
//! positions are kept where a backend stays, so a change writes only what moved.
//!
//! A backend leaves the maps only when no slot points at it and no Service
//! lists its endpoint any more (`DesiredState::retained_backends`): the tc
//! path's established flows name their backend by id, and a terminating
//! endpoint must keep serving them. [`Draining`] then holds its delete for a
//! grace period (the caller's clock), so flows to a deleted endpoint finish.
#![forbid(unsafe_code)]

mod applied;
mod drain;
mod free_ids;
pub mod maglev;
mod maglev_tables;
mod ops;
pub mod prefilter;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Arc,
};

pub use applied::{Applied, EntryCounts, FamilyCounts};
pub use drain::Draining;
pub use maglev::Maglev;
pub use ops::{
    BackendId, BatchKey, MAX_REV_NAT_ID, Op, RevNatId, Scope, Subject, frontend_flags,
    service_name, source_range_entries,
};
use proxy_common::{ServiceName, backend_flags, svc_flags};

use crate::model::{Backend, DesiredState, Frontend, FrontendSpec};

/// The result of [`plan`]: operations in execution order, each tagged with
/// the subject it belongs to, and frontends that could not be planned at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<Planned>,
    /// Frontends left out, with the reason (for example, ids exhausted).
    pub unplanned: Vec<(Frontend, &'static str)>,
}

/// One operation and the unit it belongs to. When an operation fails, the
/// writer skips every later operation of the same subject, which keeps the
/// ordering guarantees for that unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub subject: Subject,
    pub op: Op,
}

impl Plan {
    /// True when applying the plan would change nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// All operations, in execution order.
    pub fn ops(&self) -> impl Iterator<Item = &Op> {
        self.ops.iter().map(|p| &p.op)
    }
}

/// The global order of operations. Every frontend's own ordering rule holds
/// because its operations fall into these phases in the right order, and
/// operations of one phase can be written in large batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// New backends, before anything points at them.
    PutBackends,
    /// Rev-NAT entries of new frontends, before their slot 0 is published.
    PutRevNat,
    /// Names of new (or renamed) frontends, also before slot 0 is published,
    /// so every published frontend has one.
    PutNames,
    /// Maglev tables, before any slot 0 names them.
    PutTables,
    /// Slot 0 of shrinking frontends (the lower count) and of frontends that go
    /// away: readers stop using what is about to change.
    Unpublish,
    /// Backend slots: new, rewritten, or moved.
    PutSlots,
    /// Slot 0 of new and growing frontends: publishes the slots just written.
    Publish,
    /// Slots beyond a frontend's count, and all slots of removed frontends.
    DeleteSlots,
    /// Rev-NAT entries no frontend owns.
    DeleteRevNat,
    /// Their names, after them (same subject: a refused rev-NAT delete keeps
    /// the name too).
    DeleteNames,
    /// Backends nobody references, last.
    DeleteBackends,
}

const PHASES: usize = Phase::DeleteBackends as usize + 1;

/// Collects operations per phase, then flattens them in phase order.
struct Phased {
    phases: [Vec<Planned>; PHASES],
}

impl Phased {
    fn new() -> Self {
        Self {
            phases: std::array::from_fn(|_| Vec::new()),
        }
    }

    fn push(&mut self, phase: Phase, subject: Subject, op: Op) {
        self.phases[phase as usize].push(Planned { subject, op });
    }

    /// The phases in order, in one Vec grown from the largest phase's (a
    /// cold sync's plan is mostly one phase), so the plan is not held twice
    /// while it is flattened.
    fn into_ops(self) -> Vec<Planned> {
        let mut phases = self.phases;
        let total: usize = phases.iter().map(Vec::len).sum();
        let largest = (0..PHASES).max_by_key(|&i| phases[i].len()).unwrap_or(0);
        let mut ops = std::mem::take(&mut phases[largest]);
        ops.reserve_exact(total - ops.len());
        let (before, after) = phases.split_at_mut(largest);
        let head: Vec<Planned> = before.iter_mut().flat_map(std::mem::take).collect();
        ops.splice(0..0, head);
        for phase in after {
            ops.append(phase);
        }
        ops
    }
}

/// Computes the ordered operations that turn `applied` into `desired`.
///
/// Anything in the maps that the desired state does not explain (a leftover
/// of a failed write, an entry added by hand) is deleted, readers-first.
pub fn plan(applied: &Applied, desired: &DesiredState) -> Plan {
    plan_scoped(applied, desired, None, None)
}

/// [`plan`] with Maglev tables for external frontends (`None`: random
/// selection, no tables).
pub fn plan_with(applied: &Applied, desired: &DesiredState, maglev: Option<&Maglev>) -> Plan {
    plan_scoped(applied, desired, None, maglev)
}

/// [`plan_frontends`] with Maglev tables (see [`plan_with`]).
pub fn plan_frontends_with(
    applied: &Applied,
    desired: &DesiredState,
    touched: &BTreeSet<Frontend>,
    maglev: Option<&Maglev>,
) -> Plan {
    plan_scoped(applied, desired, Some(touched), maglev)
}

/// Like [`plan`], but only for the frontends in `touched` (those whose desired
/// state may have changed since the last sync): the cost follows the size of
/// the change, not of the cluster. Leftovers elsewhere are left to the next
/// full [`plan`] (the periodic reconcile).
pub fn plan_frontends(
    applied: &Applied,
    desired: &DesiredState,
    touched: &BTreeSet<Frontend>,
) -> Plan {
    plan_scoped(applied, desired, Some(touched), None)
}

fn plan_scoped(
    applied: &Applied,
    desired: &DesiredState,
    touched: Option<&BTreeSet<Frontend>>,
    maglev: Option<&Maglev>,
) -> Plan {
    // Each step below is one stage of the plan, in the order the phases
    // need: the order of `push` calls within a phase is the order the
    // writer executes them.
    let mut planner = Planner {
        applied,
        desired,
        touched,
        maglev,
        out: Phased::new(),
        unplanned: Vec::new(),
    };
    let in_scope = planner.in_scope();
    let backend_ids = planner.put_backends(&in_scope);
    let (kept_rev_nat, tables) = planner.converge_frontends(&in_scope, &backend_ids);
    let gone = planner.remove_gone_frontends();
    planner.delete_rev_nat(&gone, &kept_rev_nat);
    planner.delete_names(&gone, &kept_rev_nat);
    planner.delete_source_ranges(&gone, &kept_rev_nat);
    planner.delete_tables(&tables.planned, &gone, &tables.tables);
    planner.delete_unused_backends(&backend_ids);
    Plan {
        ops: planner.out.into_ops(),
        unplanned: planner.unplanned,
    }
}

/// The frontends [`Planner::converge_frontends`] planned, with their rev-NAT
/// ids, and the Maglev tables they name.
struct PlannedTables<'a> {
    planned: Vec<(&'a Frontend, &'a FrontendSpec, RevNatId)>,
    tables: maglev_tables::Tables,
}

/// One plan being built: what the maps hold, what should be there, which
/// frontends to look at (`None`: all of them), and the operations so far.
struct Planner<'a> {
    applied: &'a Applied,
    desired: &'a DesiredState,
    touched: Option<&'a BTreeSet<Frontend>>,
    maglev: Option<&'a Maglev>,
    out: Phased,
    unplanned: Vec<(Frontend, &'static str)>,
}

impl<'a> Planner<'a> {
    /// The desired frontends to converge: all of them, or the touched ones
    /// that are still desired.
    fn in_scope(&self) -> Vec<(&'a Frontend, &'a FrontendSpec)> {
        let desired = self.desired;
        match self.touched {
            None => desired.frontends.iter().collect(),
            Some(touched) => touched
                .iter()
                .filter_map(|f| desired.frontends.get_key_value(f))
                .collect(),
        }
    }

    /// Backend ids: reuse what the maps already hold, give the rest the
    /// lowest free ids. New backends, and
    /// those whose flags changed, are written first ([`Phase::PutBackends`]).
    fn put_backends(
        &mut self,
        in_scope: &[(&Frontend, &FrontendSpec)],
    ) -> HashMap<Backend, BackendId> {
        let (applied, desired) = (self.applied, self.desired);
        // The lowest ids no backend entry has, read off the mirror's index
        // (not a sort of every used id: this runs at every change).
        let mut free_ids = applied.free_backend_ids();
        let mut backend_ids: HashMap<Backend, BackendId> = HashMap::new();
        let mut new_backends: Vec<(BackendId, Backend, u8)> = Vec::new();
        let flags_of = |b: &Backend| {
            if desired.local_endpoints.contains(&b.addr) {
                backend_flags::LOCAL
            } else {
                0
            }
        };
        for (_, spec) in in_scope {
            for backend in spec
                .backends
                .iter()
                .chain(spec.external_backends.iter().flatten())
            {
                if backend_ids.contains_key(backend) {
                    continue;
                }
                let flags = flags_of(backend);
                let id = match applied.backend_id(backend) {
                    Some(id) => {
                        // Rewritten in place when only its flags changed: a
                        // reader sees the old or the new value, both valid.
                        if applied.backend_flags(id) != flags {
                            new_backends.push((id, *backend, flags));
                        }
                        id
                    }
                    None => {
                        // 2^32 - 1 backends fit in no map: the free ids cannot
                        // run out before the backend map is full.
                        let id = free_ids.next().unwrap_or(BackendId::MAX);
                        new_backends.push((id, *backend, flags));
                        id
                    }
                };
                backend_ids.insert(*backend, id);
            }
        }
        new_backends.sort_unstable();
        for (id, backend, flags) in new_backends {
            self.out.push(
                Phase::PutBackends,
                Subject::Backend(id),
                Op::PutBackend { id, backend, flags },
            );
        }
        backend_ids
    }

    /// Desired frontends, new or changed: their rev-NAT entries, names and
    /// both scopes, and their Maglev tables. Rev-NAT ids stay with their
    /// frontend. Returns the rev-NAT ids the desired frontends keep, and the
    /// planned frontends with the tables they name.
    fn converge_frontends(
        &mut self,
        in_scope: &[(&'a Frontend, &'a FrontendSpec)],
        backend_ids: &HashMap<Backend, BackendId>,
    ) -> (BTreeSet<RevNatId>, PlannedTables<'a>) {
        let applied = self.applied;
        let mut rev_ids: Option<IdAllocator> = None;
        let mut kept_rev_nat: BTreeSet<RevNatId> = BTreeSet::new();
        let mut planned = Vec::with_capacity(in_scope.len());
        for (frontend, spec) in in_scope {
            // An unpublished frontend (a write that stopped before slot 0, say for
            // want of room) keeps the rev-NAT entry it already has, rather than
            // leaking one per attempt.
            let current = applied
                .frontend(**frontend)
                .map(|v| v.rev_nat_id)
                .filter(|id| *id != 0)
                .or_else(|| applied.rev_nat_of(**frontend));
            let rev_nat_id = current.or_else(|| {
                let rev_ids = rev_ids.get_or_insert_with(|| {
                    IdAllocator::new(
                        applied
                            .rev_nat
                            .keys()
                            .chain(applied.services.values().map(|v| &v.rev_nat_id))
                            .copied(),
                        MAX_REV_NAT_ID,
                    )
                });
                rev_ids.next()
            });
            let Some(rev_nat_id) = rev_nat_id else {
                self.unplanned.push((
                    **frontend,
                    "every rev-NAT id is in use (the REVNAT maps' capacity)",
                ));
                continue;
            };
            kept_rev_nat.insert(rev_nat_id);
            planned.push((*frontend, *spec, rev_nat_id));
        }
        // Every rev-NAT id is known: the tables' ids (the lowest of each
        // group's) are too.
        let tables = self.put_tables(&planned, backend_ids);
        for (frontend, spec, rev_nat_id) in &planned {
            let (frontend, rev_nat_id) = (*frontend, *rev_nat_id);
            converge_frontend(
                &mut self.out,
                applied,
                *frontend,
                rev_nat_id,
                service_name(spec),
            );
            converge_source_ranges(&mut self.out, applied, *frontend, rev_nat_id, spec);
            let ids_of = |backends: &[Backend]| -> Vec<BackendId> {
                backends.iter().map(|b| backend_ids[b]).collect()
            };
            // `SOURCE_RANGES` on both scopes: the hooks and the tc path
            // look ranges up only for such frontends.
            let ranges = if spec.source_ranges.is_some() {
                svc_flags::SOURCE_RANGES
            } else {
                0
            };
            let internal = Entry {
                frontend: *frontend,
                scope: Scope::Internal,
                rev_nat_id,
                affinity_timeout: spec.affinity_timeout,
                flags: frontend_flags(spec.kind, Scope::Internal) | ranges,
                maglev_table: tables.slot0_field(*frontend, Scope::Internal, rev_nat_id),
            };
            // The external scope first: its slot 0 is published before the
            // internal one, so a failure there (a full map) leaves the frontend
            // unpublished, never published without the scope its policy needs.
            match &spec.external_backends {
                Some(external) => {
                    let entry = Entry {
                        scope: Scope::External,
                        flags: frontend_flags(spec.kind, Scope::External) | ranges,
                        maglev_table: tables.slot0_field(*frontend, Scope::External, rev_nat_id),
                        ..internal
                    };
                    converge_scope(&mut self.out, applied, &entry, &ids_of(external));
                }
                None => remove_scope(&mut self.out, applied, *frontend, Scope::External),
            }
            converge_scope(&mut self.out, applied, &internal, &ids_of(&spec.backends));
        }
        (kept_rev_nat, PlannedTables { planned, tables })
    }

    /// Frontends that go away: slot 0 first, so readers stop finding them.
    /// Returns them.
    fn remove_gone_frontends(&mut self) -> Vec<Frontend> {
        let (applied, desired) = (self.applied, self.desired);
        let gone: Vec<Frontend> = match self.touched {
            None => applied
                .frontends()
                .filter(|f| !desired.frontends.contains_key(f))
                .collect(),
            Some(touched) => touched
                .iter()
                .filter(|f| {
                    !desired.frontends.contains_key(f) && applied.entries_of(**f).next().is_some()
                })
                .copied()
                .collect(),
        };
        for frontend in &gone {
            for scope in Scope::ALL {
                remove_scope(&mut self.out, applied, *frontend, scope);
            }
        }
        gone
    }

    /// Rev-NAT entries no frontend owns: all of them in a full plan; those of
    /// the frontends that went away in a scoped one.
    fn delete_rev_nat(&mut self, gone: &[Frontend], kept_rev_nat: &BTreeSet<RevNatId>) {
        let applied = self.applied;
        let rev_nat_gone: Vec<(RevNatId, Frontend)> = match self.touched {
            None => applied
                .rev_nat
                .iter()
                .filter(|(id, _)| !kept_rev_nat.contains(id))
                .map(|(id, f)| (*id, *f))
                .collect(),
            Some(_) => gone
                .iter()
                .filter_map(|f| applied.frontend(*f).map(|v| (v.rev_nat_id, *f)))
                .filter(|(id, f)| applied.rev_nat.get(id) == Some(f) && !kept_rev_nat.contains(id))
                .collect(),
        };
        for (id, frontend) in rev_nat_gone {
            self.out.push(
                Phase::DeleteRevNat,
                Subject::RevNat(id),
                Op::DeleteRevNat { id, frontend },
            );
        }
    }

    /// Names no frontend owns, likewise (a name may outlive its rev-NAT entry
    /// when its delete failed, so they are chosen on their own).
    fn delete_names(&mut self, gone: &[Frontend], kept_rev_nat: &BTreeSet<RevNatId>) {
        let applied = self.applied;
        let names_gone: Vec<RevNatId> = match self.touched {
            None => applied
                .svc_names
                .keys()
                .filter(|id| !kept_rev_nat.contains(id))
                .copied()
                .collect(),
            Some(_) => {
                let mut ids: Vec<RevNatId> = gone
                    .iter()
                    .filter_map(|f| applied.frontend(*f).map(|v| v.rev_nat_id))
                    .filter(|id| applied.svc_names.contains_key(id) && !kept_rev_nat.contains(id))
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                ids
            }
        };
        for id in names_gone {
            self.out.push(
                Phase::DeleteNames,
                Subject::RevNat(id),
                Op::DeleteServiceName { id },
            );
        }
    }

    /// Source ranges no frontend owns, likewise, each id's `/0` entry first
    /// (it sorts first), after the frontends were unpublished. Those of a
    /// frontend that went away share its subject: were its unpublishing to
    /// fail, it would keep its ranges rather than be left open to everyone.
    fn delete_source_ranges(&mut self, gone: &[Frontend], kept_rev_nat: &BTreeSet<RevNatId>) {
        let applied = self.applied;
        let mut ids: BTreeMap<RevNatId, Subject> = gone
            .iter()
            .filter_map(|f| {
                let id = applied.frontend(*f)?.rev_nat_id;
                Some((id, Subject::Frontend(*f)))
            })
            .filter(|(id, _)| !kept_rev_nat.contains(id))
            .collect();
        if self.touched.is_none() {
            for (id, _) in applied.source_ranges.keys() {
                if !kept_rev_nat.contains(id) {
                    ids.entry(*id).or_insert(Subject::RevNat(*id));
                }
            }
        }
        for (id, subject) in ids {
            for (range, _) in applied.source_ranges_of(id) {
                self.out.push(
                    Phase::DeleteNames,
                    subject,
                    Op::DeleteSourceRange { id, range },
                );
            }
        }
    }

    /// Backends nobody references any more. A scoped plan only considers those
    /// the touched frontends used, when nothing outside them does, and those
    /// no slot uses at all (a retained or draining backend let go). Backends
    /// of listed endpoints (`DesiredState::retained_backends`) are kept even
    /// with no slot: established per-packet flows still name them.
    fn delete_unused_backends(&mut self, backend_ids: &HashMap<Backend, BackendId>) {
        let (applied, desired) = (self.applied, self.desired);
        let wanted: HashSet<BackendId> = backend_ids.values().copied().collect();
        let kept = |id: &BackendId| {
            wanted.contains(id)
                || applied
                    .backends
                    .get(id)
                    .is_some_and(|b| desired.retained_backends.contains_key(b))
        };
        let unused: Vec<BackendId> = match self.touched {
            None => applied
                .backends
                .keys()
                .filter(|id| !kept(id))
                .copied()
                .collect(),
            Some(touched) => {
                let mut from_touched: HashMap<BackendId, usize> = HashMap::new();
                for f in touched {
                    for (_, _, v) in applied.entries_of(*f).filter(|(_, slot, _)| *slot != 0) {
                        *from_touched.entry(v.backend_id).or_insert(0) += 1;
                    }
                }
                // Disjoint: the first have slots, the second none.
                let mut unused: Vec<BackendId> = from_touched
                    .into_iter()
                    .filter(|(id, n)| !kept(id) && applied.refs(*id) == *n)
                    .map(|(id, _)| id)
                    .chain(
                        applied
                            .unreferenced()
                            .iter()
                            .copied()
                            .filter(|id| !kept(id)),
                    )
                    .collect();
                unused.sort_unstable();
                unused
            }
        };
        for id in unused {
            if let Some(backend) = applied.backends.get(&id) {
                self.out.push(
                    Phase::DeleteBackends,
                    Subject::Backend(id),
                    Op::DeleteBackend {
                        id,
                        backend: *backend,
                    },
                );
            }
        }
    }
}

/// The rev-NAT entry and the name of one desired frontend (shared by its
/// scopes), written before any slot 0 publishes them.
fn converge_frontend(
    out: &mut Phased,
    applied: &Applied,
    frontend: Frontend,
    rev_nat_id: RevNatId,
    name: ServiceName,
) {
    let subject = Subject::Frontend(frontend);
    if applied.rev_nat.get(&rev_nat_id) != Some(&frontend) {
        out.push(
            Phase::PutRevNat,
            subject,
            Op::PutRevNat {
                id: rev_nat_id,
                frontend,
            },
        );
    }
    if applied.svc_names.get(&rev_nat_id).map(|n| **n) != Some(name) {
        out.push(
            Phase::PutNames,
            subject,
            Op::PutServiceName {
                id: rev_nat_id,
                name: Arc::new(name),
            },
        );
    }
}

/// The `loadBalancerSourceRanges` entries of one desired frontend. New and
/// changed entries go before any slot 0 is published, ranges before the
/// `/0` entry that denies everyone else, so a source on the list is never
/// refused on the way; entries no longer wanted go after publishing, the
/// `/0` entry first (when the list empties), for the same reason.
fn converge_source_ranges(
    out: &mut Phased,
    applied: &Applied,
    frontend: Frontend,
    rev_nat_id: RevNatId,
    spec: &FrontendSpec,
) {
    let subject = Subject::Frontend(frontend);
    let want = source_range_entries(frontend, spec);
    for (range, allow) in &want {
        if applied.source_ranges.get(&(rev_nat_id, *range)) != Some(allow) {
            out.push(
                Phase::PutNames,
                subject,
                Op::PutSourceRange {
                    id: rev_nat_id,
                    range: *range,
                    allow: *allow,
                },
            );
        }
    }
    // The `/0` entry sorts first among one family's ranges.
    for (range, _) in applied.source_ranges_of(rev_nat_id) {
        if !want.iter().any(|(r, _)| *r == range) {
            out.push(
                Phase::DeleteNames,
                subject,
                Op::DeleteSourceRange {
                    id: rev_nat_id,
                    range,
                },
            );
        }
    }
}

/// What slot 0 of one scope of a frontend says, besides its count.
#[derive(Clone, Copy)]
struct Entry {
    frontend: Frontend,
    scope: Scope,
    rev_nat_id: RevNatId,
    affinity_timeout: Option<u32>,
    flags: u16,
    /// The shared Maglev table slot 0 names (0: its own, or none).
    maglev_table: RevNatId,
}

/// Operations that make one scope's entries of a desired frontend match `want`.
fn converge_scope(out: &mut Phased, applied: &Applied, entry: &Entry, want: &[BackendId]) {
    let Entry {
        frontend, scope, ..
    } = *entry;
    let subject = Subject::Frontend(frontend);
    let old = applied.reachable_slots(frontend, scope);
    let new = next_slots(&old, want);
    let count = slot_count(new.len());

    let master = Op::put_frontend(
        frontend,
        scope,
        count,
        entry.rev_nat_id,
        entry.affinity_timeout,
        entry.flags,
        entry.maglev_table,
    );
    let master_changed = match (&master, applied.slot0(frontend, scope)) {
        (Op::PutService { value, .. }, Some(current)) => value != current,
        _ => true,
    };
    if master_changed {
        // Shrinking: slot 0 first stops readers from using the tail. Growing
        // (or same size): slot 0 last publishes the slots written before it.
        let phase = if new.len() < old.len() {
            Phase::Unpublish
        } else {
            Phase::Publish
        };
        out.push(phase, subject, master);
    }
    for (i, id) in new.iter().enumerate() {
        let slot = slot_number(i);
        if applied
            .services
            .get(&(frontend, scope, slot))
            .map(|v| v.backend_id)
            != Some(*id)
        {
            out.push(
                Phase::PutSlots,
                subject,
                Op::put_slot(frontend, scope, slot, *id),
            );
        }
    }
    for (slot, _) in applied
        .entries_in(frontend, scope)
        .filter(|(slot, _)| *slot > count)
    {
        out.push(
            Phase::DeleteSlots,
            subject,
            Op::DeleteService {
                frontend,
                scope,
                slot,
            },
        );
    }
}

/// Deletes every entry of one scope of a frontend: slot 0 first, so readers
/// stop finding it, then its slots.
fn remove_scope(out: &mut Phased, applied: &Applied, frontend: Frontend, scope: Scope) {
    let subject = Subject::Frontend(frontend);
    for (slot, _) in applied.entries_in(frontend, scope) {
        let phase = if slot == 0 {
            Phase::Unpublish
        } else {
            Phase::DeleteSlots
        };
        out.push(
            phase,
            subject,
            Op::DeleteService {
                frontend,
                scope,
                slot,
            },
        );
    }
}

/// The new slot list (position `i` is slot `i + 1`): a backend that stays keeps
/// its position when that position still exists; new backends fill the gaps.
fn next_slots(old: &[BackendId], want: &[BackendId]) -> Vec<BackendId> {
    // `want` is sorted by backend and de-duplicated by the model; ids follow.
    let wanted: HashSet<BackendId> = want.iter().copied().collect();
    let n = wanted.len();
    let mut slots: Vec<Option<BackendId>> = (0..n)
        .map(|i| old.get(i).copied().filter(|id| wanted.contains(id)))
        .collect();
    let placed: HashSet<BackendId> = slots.iter().flatten().copied().collect();
    let mut rest = want.iter().filter(|id| !placed.contains(id));
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

/// Hands out the lowest ids not in use, from 1 to `max`. Ids only go up
/// within one plan, so a cursor over the sorted used ids is enough.
struct IdAllocator {
    used: Vec<u32>,
    next_used: usize,
    cursor: u32,
    max: u32,
}

impl IdAllocator {
    fn new(used: impl Iterator<Item = u32>, max: u32) -> Self {
        let mut used: Vec<u32> = used.collect();
        used.sort_unstable();
        used.dedup();
        Self {
            used,
            next_used: 0,
            cursor: 1,
            max,
        }
    }

    fn next(&mut self) -> Option<u32> {
        while self.cursor <= self.max {
            while self
                .used
                .get(self.next_used)
                .is_some_and(|u| *u < self.cursor)
            {
                self.next_used += 1;
            }
            let id = self.cursor;
            self.cursor += 1;
            if self.used.get(self.next_used) != Some(&id) {
                return Some(id);
            }
        }
        None
    }
}

#[cfg(test)]
mod maglev_plan_tests;
#[cfg(test)]
mod prefilter_tests;
#[cfg(test)]
mod source_range_tests;
#[cfg(test)]
mod tests;
