//! Which `MAGLEV` tables a plan writes and deletes, and which one each
//! frontend's slot 0 names.
//!
//! External frontends of one Service port, family and scope with the same
//! backends (a NodePort on each node address, the LoadBalancer IPs, the
//! ExternalIPs) share one table: its id is the lowest rev-NAT id among them,
//! and every member's slot 0 names it (`ServiceValue::maglev_table`, 0 for
//! the owner itself). A group is always planned whole: a change to a Service
//! touches all its frontends (`model::incremental`).
//!
//! Ordering: a table is written ([`Phase::PutTables`]) before any slot 0
//! naming it is written (`Unpublish` or `Publish`), and deleted
//! ([`Phase::DeleteSlots`]) only after every slot 0 that named it was
//! rewritten or removed. When the owner leaves a group, the next lowest id's
//! table is written first, the members move to it, and the old one goes last.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use super::{BackendId, Op, Phase, Planner, RevNatId, Scope, Subject};
use crate::model::{Backend, Frontend, FrontendSpec, ObjectRef};

/// The tables a plan wants, and who names them.
#[derive(Debug, Default)]
pub(super) struct Tables {
    /// `(frontend, scope)` → the table id its slot 0 names.
    of: HashMap<(Frontend, Scope), RevNatId>,
    /// `(table id, scope)` of every table the planned frontends keep.
    wanted: BTreeSet<(RevNatId, Scope)>,
}

impl Tables {
    /// Slot 0's `maglev_table` for `frontend` (rev-NAT id `rev_nat_id`) in
    /// `scope`: the shared table's id, or 0 for its own table (or none).
    pub(super) fn slot0_field(
        &self,
        frontend: Frontend,
        scope: Scope,
        rev_nat_id: RevNatId,
    ) -> RevNatId {
        match self.of.get(&(frontend, scope)) {
            Some(id) if *id != rev_nat_id => *id,
            _ => 0,
        }
    }
}

/// Frontends that share a table: same Service port, family, scope and
/// backends.
type GroupKey<'a> = (&'a ObjectRef, &'a str, bool, Scope, &'a [Backend]);

impl<'a> Planner<'a> {
    /// Groups the planned external frontends (with their rev-NAT ids), writes
    /// each group's table when the maps' differs, and returns who names what.
    pub(super) fn put_tables(
        &mut self,
        planned: &[(&'a Frontend, &'a FrontendSpec, RevNatId)],
        backend_ids: &HashMap<Backend, BackendId>,
    ) -> Tables {
        let mut tables = Tables::default();
        let Some(maglev) = self.maglev else {
            return tables;
        };
        let mut groups: BTreeMap<GroupKey<'a>, Vec<(RevNatId, Frontend)>> = BTreeMap::new();
        for (frontend, spec, rev_nat_id) in planned {
            if !spec.kind.is_external() {
                continue;
            }
            let scopes = std::iter::once((Scope::Internal, spec.backends.as_slice())).chain(
                spec.external_backends
                    .as_deref()
                    .map(|backends| (Scope::External, backends)),
            );
            for (scope, backends) in scopes {
                let key = (
                    &spec.service,
                    spec.port_name.as_str(),
                    frontend.addr.is_ipv6(),
                    scope,
                    backends,
                );
                groups
                    .entry(key)
                    .or_default()
                    .push((*rev_nat_id, **frontend));
            }
        }
        for ((_, _, _, scope, backends), members) in groups {
            let Some(table) = maglev.table(backends) else {
                continue;
            };
            let Some(&(id, owner)) = members.iter().min() else {
                continue;
            };
            let table: Arc<[BackendId]> =
                table.iter().map(|i| backend_ids[&backends[*i]]).collect();
            if self.applied.maglev.get(&(id, scope)) != Some(&table) {
                self.out.push(
                    Phase::PutTables,
                    Subject::Frontend(owner),
                    Op::PutMaglev { id, scope, table },
                );
            }
            tables.wanted.insert((id, scope));
            for (_, frontend) in members {
                tables.of.insert((frontend, scope), id);
            }
        }
        tables
    }

    /// Tables no planned frontend names any more: all such in a full plan;
    /// in a scoped one, those keyed by or named by the planned and the gone
    /// frontends. After every slot 0 rewrite, before the backends go.
    pub(super) fn delete_tables(
        &mut self,
        planned: &[(&'a Frontend, &'a FrontendSpec, RevNatId)],
        gone: &[Frontend],
        tables: &Tables,
    ) {
        let applied = self.applied;
        let mut keys: BTreeMap<(RevNatId, Scope), Subject> = BTreeMap::new();
        let candidates = planned
            .iter()
            .map(|(f, _, id)| (**f, Some(*id)))
            .chain(gone.iter().map(|f| (*f, None)));
        for (frontend, rev_nat_id) in candidates {
            for scope in Scope::ALL {
                let named = applied.slot0(frontend, scope).map(|v| v.maglev_table_id());
                for id in [rev_nat_id, named].into_iter().flatten() {
                    keys.entry((id, scope))
                        .or_insert(Subject::Frontend(frontend));
                }
            }
        }
        if self.touched.is_none() {
            for (id, scope) in applied.maglev.keys() {
                keys.entry((*id, *scope)).or_insert(Subject::RevNat(*id));
            }
        }
        for ((id, scope), subject) in keys {
            if applied.maglev.contains_key(&(id, scope)) && !tables.wanted.contains(&(id, scope)) {
                self.out
                    .push(Phase::DeleteSlots, subject, Op::DeleteMaglev { id, scope });
            }
        }
    }
}
