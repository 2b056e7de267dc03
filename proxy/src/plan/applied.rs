//! [`Applied`]: an exact mirror of the map contents, in model terms.
//!
//! The writer updates it after every successful operation, and a restarted
//! daemon (or the periodic reconcile) rebuilds it from the maps, so the plan
//! always diffs against what the kernel really holds, including leftovers of a
//! failed write or of someone editing the maps by hand.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
};

use proxy_common::{ServiceName, ServiceValue};

use super::{BackendId, Op, RevNatId, Scope, free_ids::FreeIds};
use crate::model::{Backend, Frontend, SourceRange};

/// Entries of one map, by address family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FamilyCounts {
    pub v4: u64,
    pub v6: u64,
}

impl FamilyCounts {
    fn add(&mut self, addr: IpAddr, add: bool) {
        let n = if addr.is_ipv6() {
            &mut self.v6
        } else {
            &mut self.v4
        };
        if add {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
        }
    }

    fn of<'a>(addrs: impl Iterator<Item = &'a IpAddr>) -> Self {
        let mut n = Self::default();
        for addr in addrs {
            n.add(*addr, true);
        }
        n
    }
}

/// How many entries the service, backend and rev-NAT maps hold, by family
/// (kept by [`Applied::record`]: reading them costs nothing at any size).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryCounts {
    /// `(frontend, scope, slot)` entries, by the frontend's family.
    pub services: FamilyCounts,
    pub backends: FamilyCounts,
    /// By the family of the frontend each entry names.
    pub rev_nat: FamilyCounts,
}

/// The contents of the service, backend, rev-NAT and name maps, plus eight indexes
/// kept up to date by [`Applied::record`] (rebuild them with
/// [`Applied::reindex`] after editing the maps directly).
#[derive(Clone, Debug, Default)]
pub struct Applied {
    /// `(frontend, scope, slot)` → value; slot 0 is the frontend entry.
    pub services: BTreeMap<(Frontend, Scope, u16), ServiceValue>,
    pub backends: BTreeMap<BackendId, Backend>,
    /// The non-zero `backend_flags` of backends in `backends`.
    pub backend_flags: BTreeMap<BackendId, u8>,
    pub rev_nat: BTreeMap<RevNatId, Frontend>,
    /// Rev-NAT id → the Service that owns the frontend (`SVC_NAMES`).
    pub svc_names: BTreeMap<RevNatId, Arc<ServiceName>>,
    /// `(rev-NAT id, range)` → allow (`SRC_RANGE_V4`/`_V6`).
    pub source_ranges: BTreeMap<(RevNatId, SourceRange), bool>,
    /// `(rev-NAT id, scope)` → Maglev table (`MAGLEV`).
    pub maglev: BTreeMap<(RevNatId, Scope), Arc<[BackendId]>>,
    /// Backend → its id.
    by_backend: HashMap<Backend, BackendId>,
    /// Backend id → how many slots (slot 0 excluded) point at it. Counts are
    /// `u32` (no map holds 2³² slots): 100,000 backends' counts take half the
    /// memory of `usize` ones.
    refs: HashMap<BackendId, u32>,
    /// Backends in `backends` that no slot points at: retained for the
    /// per-packet path's established flows, draining, or left to delete.
    unreferenced: BTreeSet<BackendId>,
    /// Frontend → a rev-NAT id whose entry names it (the lowest, when several do).
    rev_nat_of: HashMap<Frontend, RevNatId>,
    /// `(table id, scope)` → how many slot 0s name that shared Maglev table
    /// (`maglev_table` non-zero).
    table_users: HashMap<(RevNatId, Scope), u32>,
    /// Backend id → how many Maglev tables hold it.
    table_refs: HashMap<BackendId, u32>,
    /// Backend ids no entry of `backends` has (what a new backend gets).
    free_backend_ids: FreeIds,
    /// Entries of `services`, `backends` and `rev_nat` by family.
    counts: EntryCounts,
}

/// `map` rebuilt from its sorted entries, which fills every node but the
/// last of each level (`BTreeMap`'s bulk build).
fn compacted<K: Ord, V>(map: BTreeMap<K, V>) -> BTreeMap<K, V> {
    map.into_iter().collect()
}

/// Equal when the map contents are; the indexes follow from them.
impl PartialEq for Applied {
    fn eq(&self, other: &Self) -> bool {
        self.services == other.services
            && self.backends == other.backends
            && self.backend_flags == other.backend_flags
            && self.rev_nat == other.rev_nat
            && self.svc_names == other.svc_names
            && self.source_ranges == other.source_ranges
            && self.maglev == other.maglev
    }
}

impl Eq for Applied {}

impl Applied {
    /// Rebuilds the indexes from the maps.
    pub fn reindex(&mut self) {
        self.by_backend = self.backends.iter().map(|(id, b)| (*b, *id)).collect();
        self.rev_nat_of.clear();
        for (id, frontend) in self.rev_nat.iter().rev() {
            self.rev_nat_of.insert(*frontend, *id);
        }
        self.refs.clear();
        self.table_users.clear();
        self.table_refs.clear();
        let tables: Vec<Arc<[BackendId]>> = self.maglev.values().cloned().collect();
        for table in &tables {
            self.count_table_refs(table, true);
        }
        for ((_, scope, slot), v) in &self.services {
            if *slot != 0 {
                *self.refs.entry(v.backend_id).or_insert(0) += 1;
            } else if v.maglev_table != 0 {
                *self
                    .table_users
                    .entry((v.maglev_table, *scope))
                    .or_insert(0) += 1;
            }
        }
        self.unreferenced = self
            .backends
            .keys()
            .filter(|id| !self.refs.contains_key(id))
            .copied()
            .collect();
        self.free_backend_ids = FreeIds::without(self.backends.keys().copied(), BackendId::MAX);
        self.counts = EntryCounts {
            services: FamilyCounts::of(self.services.keys().map(|(f, _, _)| &f.addr)),
            backends: FamilyCounts::of(self.backends.values().map(|b| &b.addr)),
            rev_nat: FamilyCounts::of(self.rev_nat.values().map(|f| &f.addr)),
        };
    }

    /// The backend ids no backend entry has, lowest first: those
    /// [`super::plan`] gives new backends.
    pub fn free_backend_ids(&self) -> impl Iterator<Item = BackendId> + '_ {
        self.free_backend_ids.iter()
    }

    /// How many entries the service, backend and rev-NAT maps hold, by family.
    pub fn entry_counts(&self) -> EntryCounts {
        self.counts
    }

    /// Rebuilds the large maps with full nodes. Entries recorded in key order
    /// (a cold sync writes frontends and backends in order) leave a
    /// `BTreeMap`'s nodes half full, where one built from a sorted sequence
    /// packs them: at 10,000 Services × 10 endpoints the service and backend
    /// maps took ~13 MB recorded one by one. Contents are unchanged.
    pub fn compact(&mut self) {
        self.services = compacted(std::mem::take(&mut self.services));
        self.backends = compacted(std::mem::take(&mut self.backends));
        self.backend_flags = compacted(std::mem::take(&mut self.backend_flags));
        self.rev_nat = compacted(std::mem::take(&mut self.rev_nat));
        self.svc_names = compacted(std::mem::take(&mut self.svc_names));
        self.source_ranges = compacted(std::mem::take(&mut self.source_ranges));
        self.maglev = compacted(std::mem::take(&mut self.maglev));
        self.unreferenced = std::mem::take(&mut self.unreferenced).into_iter().collect();
    }

    /// Backends the maps hold that no slot points at, lowest id first.
    pub fn unreferenced(&self) -> &BTreeSet<BackendId> {
        &self.unreferenced
    }

    /// The flags a backend has in the maps (0 when absent).
    pub fn backend_flags(&self, id: BackendId) -> u8 {
        self.backend_flags.get(&id).copied().unwrap_or(0)
    }

    /// The id of a backend the maps hold.
    pub fn backend_id(&self, backend: &Backend) -> Option<BackendId> {
        self.by_backend.get(backend).copied()
    }

    /// A rev-NAT id whose entry names `frontend`, whether or not a slot 0
    /// uses it (a write that stopped before publishing leaves such an entry).
    pub fn rev_nat_of(&self, frontend: Frontend) -> Option<RevNatId> {
        self.rev_nat_of.get(&frontend).copied()
    }

    /// How many slot 0s name the shared Maglev table `id` in `scope` (its
    /// owner's own slot 0, whose `maglev_table` is 0, not counted).
    pub fn table_users(&self, id: RevNatId, scope: Scope) -> usize {
        self.table_users
            .get(&(id, scope))
            .map_or(0, |n| *n as usize)
    }

    /// Counts slot 0 `value` in or out of [`Applied::table_users`].
    fn count_table_user(&mut self, scope: Scope, value: &ServiceValue, add: bool) {
        if value.maglev_table == 0 {
            return;
        }
        let key = (value.maglev_table, scope);
        let n = self.table_users.entry(key).or_insert(0);
        if add {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.table_users.remove(&key);
            }
        }
    }

    /// How many Maglev tables hold a backend.
    pub fn table_refs(&self, id: BackendId) -> usize {
        self.table_refs.get(&id).map_or(0, |n| *n as usize)
    }

    /// Counts `table`'s backends in or out of [`Applied::table_refs`].
    fn count_table_refs(&mut self, table: &[BackendId], add: bool) {
        let distinct: BTreeSet<BackendId> = table.iter().copied().collect();
        for id in distinct {
            let n = self.table_refs.entry(id).or_insert(0);
            if add {
                *n += 1;
            } else {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.table_refs.remove(&id);
                }
            }
        }
    }

    /// How many slots point at a backend.
    pub fn refs(&self, id: BackendId) -> usize {
        self.refs.get(&id).map_or(0, |n| *n as usize)
    }

    fn release(&mut self, id: BackendId) {
        if let Some(n) = self.refs.get_mut(&id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.refs.remove(&id);
                if self.backends.contains_key(&id) {
                    self.unreferenced.insert(id);
                }
            }
        }
    }

    fn reference(&mut self, id: BackendId) {
        *self.refs.entry(id).or_insert(0) += 1;
        self.unreferenced.remove(&id);
    }

    /// `id` no longer names `frontend`. (Were there another entry naming it,
    /// a leftover, the index forgets that one too: finding it would cost a
    /// scan, and the worst outcome is a fresh id while the full plan removes
    /// the leftover.)
    fn forget_rev_nat(&mut self, id: RevNatId, frontend: Frontend) {
        if self.rev_nat_of.get(&frontend) == Some(&id) {
            self.rev_nat_of.remove(&frontend);
        }
    }

    /// Records the effect of an operation that succeeded.
    pub fn record(&mut self, op: &Op) {
        match op {
            Op::PutBackend { id, backend, flags } => {
                match self.backends.insert(*id, *backend) {
                    Some(old) => {
                        self.by_backend.remove(&old);
                        self.counts.backends.add(old.addr, false);
                    }
                    None => self.free_backend_ids.take(*id),
                }
                self.counts.backends.add(backend.addr, true);
                self.by_backend.insert(*backend, *id);
                if !self.refs.contains_key(id) {
                    self.unreferenced.insert(*id);
                }
                if *flags == 0 {
                    self.backend_flags.remove(id);
                } else {
                    self.backend_flags.insert(*id, *flags);
                }
            }
            Op::DeleteBackend { id, .. } => {
                if let Some(old) = self.backends.remove(id) {
                    self.by_backend.remove(&old);
                    self.counts.backends.add(old.addr, false);
                    self.free_backend_ids.give(*id);
                }
                self.backend_flags.remove(id);
                self.unreferenced.remove(id);
            }
            Op::PutRevNat { id, frontend } => {
                if let Some(old) = self.rev_nat.insert(*id, *frontend) {
                    self.forget_rev_nat(*id, old);
                    self.counts.rev_nat.add(old.addr, false);
                }
                self.counts.rev_nat.add(frontend.addr, true);
                self.rev_nat_of
                    .entry(*frontend)
                    .and_modify(|kept| *kept = (*kept).min(*id))
                    .or_insert(*id);
            }
            Op::DeleteRevNat { id, .. } => {
                if let Some(old) = self.rev_nat.remove(id) {
                    self.forget_rev_nat(*id, old);
                    self.counts.rev_nat.add(old.addr, false);
                }
            }
            Op::PutServiceName { id, name } => {
                self.svc_names.insert(*id, name.clone());
            }
            Op::DeleteServiceName { id } => {
                self.svc_names.remove(id);
            }
            Op::PutSourceRange { id, range, allow } => {
                self.source_ranges.insert((*id, *range), *allow);
            }
            Op::PutMaglev { id, scope, table } => {
                self.count_table_refs(table, true);
                if let Some(old) = self.maglev.insert((*id, *scope), table.clone()) {
                    self.count_table_refs(&old, false);
                }
            }
            Op::DeleteMaglev { id, scope } => {
                if let Some(old) = self.maglev.remove(&(*id, *scope)) {
                    self.count_table_refs(&old, false);
                }
            }
            Op::DeleteSourceRange { id, range } => {
                self.source_ranges.remove(&(*id, *range));
            }
            Op::PutService {
                frontend,
                scope,
                slot,
                value,
            } => {
                let old = self.services.insert((*frontend, *scope, *slot), *value);
                if old.is_none() {
                    self.counts.services.add(frontend.addr, true);
                }
                if *slot != 0 {
                    // Referenced before the old one is released, so a slot
                    // rewritten to the same backend never shows it unreferenced.
                    self.reference(value.backend_id);
                    if let Some(old) = old {
                        self.release(old.backend_id);
                    }
                } else {
                    self.count_table_user(*scope, value, true);
                    if let Some(old) = old {
                        self.count_table_user(*scope, &old, false);
                    }
                }
            }
            Op::DeleteService {
                frontend,
                scope,
                slot,
            } => {
                let old = self.services.remove(&(*frontend, *scope, *slot));
                if old.is_some() {
                    self.counts.services.add(frontend.addr, false);
                }
                match old {
                    Some(old) if *slot != 0 => self.release(old.backend_id),
                    Some(old) => self.count_table_user(*scope, &old, false),
                    None => {}
                }
            }
        }
    }

    /// The `SRC_RANGE_*` entries of one rev-NAT id.
    pub fn source_ranges_of(&self, id: RevNatId) -> impl Iterator<Item = (SourceRange, bool)> + '_ {
        self.source_ranges
            .range((id, SourceRange::MIN)..=(id, SourceRange::MAX))
            .map(|((_, r), allow)| (*r, *allow))
    }

    /// Every entry of one frontend, scope by scope, slot 0 first in each.
    pub fn entries_of(
        &self,
        frontend: Frontend,
    ) -> impl Iterator<Item = (Scope, u16, &ServiceValue)> {
        self.services
            .range((frontend, Scope::Internal, 0)..=(frontend, Scope::External, u16::MAX))
            .map(|((_, scope, slot), v)| (*scope, *slot, v))
    }

    /// Every entry of one frontend in one scope, slot 0 first.
    pub fn entries_in(
        &self,
        frontend: Frontend,
        scope: Scope,
    ) -> impl Iterator<Item = (u16, &ServiceValue)> {
        self.services
            .range((frontend, scope, 0)..=(frontend, scope, u16::MAX))
            .map(|((_, _, slot), v)| (*slot, v))
    }

    /// The frontend entry (slot 0) of the internal scope, which every
    /// published frontend has, if present.
    pub fn frontend(&self, frontend: Frontend) -> Option<&ServiceValue> {
        self.slot0(frontend, Scope::Internal)
    }

    /// The frontend entry (slot 0) of one scope, if present.
    pub fn slot0(&self, frontend: Frontend, scope: Scope) -> Option<&ServiceValue> {
        self.services.get(&(frontend, scope, 0))
    }

    /// The backends readers can reach through `frontend` in `scope`: slots
    /// `1..=count`. A missing slot shows as id 0, which no backend has.
    pub fn reachable_slots(&self, frontend: Frontend, scope: Scope) -> Vec<BackendId> {
        let count = self.slot0(frontend, scope).map_or(0, |v| v.count);
        (1..=count)
            .map(|slot| {
                self.services
                    .get(&(frontend, scope, slot))
                    .map_or(0, |v| v.backend_id)
            })
            .collect()
    }

    /// Frontends with at least one entry, slot 0 or not.
    pub fn frontends(&self) -> impl Iterator<Item = Frontend> + '_ {
        let mut last = None;
        self.services.keys().filter_map(move |(f, _, _)| {
            if last == Some(*f) {
                None
            } else {
                last = Some(*f);
                Some(*f)
            }
        })
    }
}
