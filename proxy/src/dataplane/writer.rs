//! Executes plans against a [`DataplaneMaps`], keeping [`Applied`] an exact mirror
//! of what the maps hold.
//!
//! A failed operation skips only the rest of its step (so the ordering rules of
//! `plan` still hold for that frontend) and the writer carries on with the next
//! step. Two safety checks guard readers even against a stale plan: a slot is
//! never pointed at a backend that is not in the maps, and a backend is never
//! deleted while a slot still points at it (nor, for `proxy inspect`, a name
//! before its rev-NAT entry). The next sync re-plans from the
//! mirror, which converges once the cause is gone.
//!
//! The socket hooks' pre-filter bitmap (`SVC_FILTER`) follows the internal
//! frontends around each plan (`plan::prefilter`): a frontend's bit is set
//! before its slot 0 is written (a failed set stops the frontend, as any
//! failed step), and cleared after its slot 0 is deleted, unless a published
//! frontend shares it.
//!
//! Each frontend's outcome is reported as data ([`FrontendOutcome`]: published,
//! no room, failed), as Cilium's reconciler writes a status on each frontend,
//! so what to do about a frontend the maps cannot hold is the caller's pure
//! decision, not a guess from error counts.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::{
    dataplane::{
        batch::MAX_BATCH,
        maps::{BatchError, DataplaneMaps, MapError},
    },
    model::{Backend, DesiredState, Frontend, Protocol},
    plan::{
        self, Applied, BackendId, Draining, Op, Plan, Planned, RevNatId, Subject,
        prefilter::{self, BitRefs, Prefilter},
    },
};

/// What one `apply` did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Operations that succeeded.
    pub ops: usize,
    /// Subjects (a frontend, a backend, a rev-NAT entry) whose operations
    /// stopped early, with the reason.
    pub failures: Vec<StepFailure>,
    /// What became of each frontend the plan wrote or could not place.
    pub frontends: BTreeMap<Frontend, FrontendOutcome>,
    /// Frontends the plan could not place at all (no rev-NAT id left).
    pub unplanned: Vec<Frontend>,
    /// Each UDP frontend with a backend it no longer reaches: connected UDP
    /// sockets translated through it to that backend must be ended (see
    /// `dataplane::sock_frontends`).
    pub udp_backends_gone: Vec<(Frontend, Backend)>,
    /// Time spent planning, and writing the maps.
    pub plan_time: std::time::Duration,
    pub write_time: std::time::Duration,
}

/// What became of one frontend in a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrontendOutcome {
    /// Every operation of the frontend was written: it is in the maps as
    /// desired (or gone from them, if it was deleted).
    Published,
    /// It stopped for want of room: a map it writes to (or one holding a
    /// backend it needs) is full, or no rev-NAT id was left for it.
    NoRoom,
    /// It stopped for another reason (see [`ApplyReport::failures`]).
    Failed,
}

impl ApplyReport {
    /// True when everything planned was written.
    pub fn is_complete(&self) -> bool {
        self.failures.is_empty() && self.unplanned.is_empty()
    }

    /// True when some write of this report found a map full.
    pub fn ran_out_of_room(&self) -> bool {
        self.failures.iter().any(|f| f.error.is_no_room())
    }

    /// Folds in `again`, a second write of the frontends in `retried`: its
    /// outcome replaces this one's for them, and for the failures that only
    /// meant "no room" (they may have been retried too).
    pub fn absorb_retry(&mut self, retried: &BTreeSet<Frontend>, again: ApplyReport) {
        self.ops += again.ops;
        self.failures.retain(|f| match f.subject {
            Subject::Frontend(frontend) => !retried.contains(&frontend),
            _ => !f.error.is_no_room(),
        });
        self.failures.extend(again.failures);
        self.frontends.retain(|f, _| !retried.contains(f));
        self.frontends.extend(again.frontends);
        self.unplanned.retain(|f| !retried.contains(f));
        self.unplanned.extend(again.unplanned);
        self.udp_backends_gone.extend(again.udp_backends_gone);
    }
}

/// A step that did not finish.
#[derive(Debug)]
pub struct StepFailure {
    pub subject: Subject,
    pub error: StepError,
}

/// Why a step stopped.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Map(#[from] MapError),
    #[error("backend {0} is not in the maps (its own write failed)")]
    MissingBackend(BackendId),
    #[error("shared Maglev table {0} is not in the maps (its own write failed)")]
    MissingMaglevTable(RevNatId),
    #[error("shared Maglev table {0} is still named by {1} frontend(s)")]
    MaglevTableInUse(RevNatId, usize),
    #[error("backend {0} is still referenced by {1} slot(s)")]
    BackendInUse(BackendId, usize),
    #[error("backend {0} is still in {1} Maglev table(s)")]
    BackendInTable(BackendId, usize),
    #[error("rev-NAT id {0} still belongs to frontend {1}")]
    RevNatInUse(RevNatId, Frontend),
    #[error("the name of rev-NAT id {0} goes after its rev-NAT entry, which is still there")]
    NameBeforeRevNat(RevNatId),
    #[error("its bit in the socket hooks' pre-filter could not be set: {0}")]
    PrefilterBit(String),
}

impl StepError {
    /// A map had no room left for the write.
    pub fn is_no_room(&self) -> bool {
        matches!(self, StepError::Map(MapError::Full { .. }))
    }
}

/// A sync of this many operations (a cold start, a relist) rebuilds the
/// mirror's maps packed ([`Applied::compact`]): recorded one by one, in key
/// order, their nodes are half empty.
const COMPACT_AFTER_OPS: usize = 10_000;

/// Owns the maps and the mirror of their contents.
pub struct Writer<M> {
    maps: M,
    applied: Applied,
    /// Backends let go, whose deletes wait out the grace period.
    draining: Draining,
    /// Maglev tables for external frontends (`--lb-algorithm=maglev`).
    maglev: Option<plan::Maglev>,
    /// What the kernel's pre-filter bitmap holds, as far as this writer knows.
    filter: Prefilter,
    /// How many published internal frontends hold each pre-filter bit.
    filter_refs: BitRefs,
}

impl<M: DataplaneMaps> Writer<M> {
    /// Reads the maps' current contents (a restart picks up where the last run
    /// left off) and takes ownership of them.
    ///
    /// It also fills the pre-filter bitmap from the service map, whatever it
    /// held (older pins had no bitmap; the daemon created it empty): the
    /// programs that read it are attached after this, so they never see an
    /// empty bitmap beside a non-empty service map.
    pub fn new(maps: M) -> Result<Self, MapError> {
        let mut applied = maps.read()?;
        applied.compact();
        let mut writer = Self {
            maps,
            applied,
            draining: Draining::default(),
            maglev: None,
            filter: Prefilter::default(),
            filter_refs: BitRefs::default(),
        };
        writer.refill_filter()?;
        Ok(writer)
    }

    /// Recomputes the pre-filter from the mirror and writes every word.
    fn refill_filter(&mut self) -> Result<(), MapError> {
        self.filter_refs = BitRefs::of(prefilter::published(&self.applied));
        let target = self.filter_refs.bitmap();
        for (index, word) in target.words() {
            self.maps.set_filter_word(index, word)?;
            self.filter.set_word(index, word);
        }
        Ok(())
    }

    /// Writes the words of `target` that differ from the mirror.
    fn write_filter(&mut self, target: &Prefilter) -> Result<(), MapError> {
        for (index, word) in self.filter.changes(target) {
            self.maps.set_filter_word(index, word)?;
            self.filter.set_word(index, word);
        }
        Ok(())
    }

    /// The pre-filter bitmap as this writer last wrote it.
    pub fn prefilter(&self) -> &Prefilter {
        &self.filter
    }

    /// Writes Maglev tables for external frontends (`--lb-algorithm=maglev`);
    /// `None` (the default): none, and those in the maps are deleted.
    pub fn with_maglev(mut self, maglev: Option<plan::Maglev>) -> Self {
        self.maglev = maglev;
        self
    }

    /// Keeps a backend that no slot uses and no Service lists for `grace`
    /// before deleting it (`--backend-grace-period`): per-packet flows to a
    /// deleted endpoint finish instead of being balanced anew. Zero (the
    /// default): deleted at once.
    pub fn with_backend_grace(mut self, grace: std::time::Duration) -> Self {
        self.draining = Draining::new(grace);
        self
    }

    /// The backends waiting out their grace period.
    pub fn draining(&self) -> &Draining {
        &self.draining
    }

    /// What the maps hold, as far as this writer knows.
    pub fn applied(&self) -> &Applied {
        &self.applied
    }

    /// The maps, for callers that read other state (stats, for example).
    pub fn maps(&self) -> &M {
        &self.maps
    }

    /// Plans against the mirror and applies the plan.
    pub fn sync(&mut self, desired: &DesiredState) -> ApplyReport {
        let maglev = self.maglev;
        self.sync_with(|applied| plan::plan_with(applied, desired, maglev.as_ref()))
    }

    /// Plans only `touched` frontends (see [`plan::plan_frontends`]) and applies.
    pub fn sync_frontends(
        &mut self,
        desired: &DesiredState,
        touched: &BTreeSet<Frontend>,
    ) -> ApplyReport {
        let maglev = self.maglev;
        self.sync_with(|applied| {
            plan::plan_frontends_with(applied, desired, touched, maglev.as_ref())
        })
    }

    fn sync_with(&mut self, make_plan: impl FnOnce(&Applied) -> Plan) -> ApplyReport {
        let started = std::time::Instant::now();
        self.draining.expire(started);
        let mut plan = make_plan(&self.applied);
        for backend in self.draining.hold(&mut plan, &self.applied, started) {
            tracing::info!(
                %backend,
                grace_s = self.draining.grace().as_secs_f64(),
                "backend no longer used or listed; its entry drains for the grace period \
                 (established per-packet flows keep it)"
            );
        }
        let plan_time = started.elapsed();
        let mut report = self.apply(&plan);
        drop(plan);
        if report.ops >= COMPACT_AFTER_OPS {
            self.applied.compact();
        }
        report.plan_time = plan_time;
        report.write_time = started.elapsed() - plan_time;
        report
    }

    /// Re-reads the maps, then syncs. Returns how many entries differed from the
    /// mirror (drift: edited by hand, or left by a write whose result was lost).
    pub fn reconcile(&mut self, desired: &DesiredState) -> Result<(usize, ApplyReport), MapError> {
        let actual = self.maps.read()?;
        let drift = count_differences(&self.applied, &actual);
        // A backend entry this writer did not write (edited by hand) is no
        // endpoint's: it goes without a grace.
        self.draining.release_now(
            actual
                .backends
                .iter()
                .filter(|(id, b)| self.applied.backends.get(id) != Some(b))
                .map(|(id, _)| *id),
        );
        self.applied = actual;
        self.applied.compact();
        if let Err(error) = self.refill_filter() {
            tracing::warn!(%error, "rewriting the socket hooks' pre-filter failed; frontends whose bit is missing are not published");
        }
        Ok((drift, self.sync(desired)))
    }

    /// Executes a plan step by step.
    pub fn apply(&mut self, plan: &Plan) -> ApplyReport {
        let mut report = ApplyReport {
            unplanned: plan.unplanned.iter().map(|(f, _)| *f).collect(),
            ..Default::default()
        };
        let udp_before = self.udp_reach(plan);
        let mut failed: HashSet<Subject> = HashSet::new();
        let touched = self.prefilter_before(plan, &mut failed, &mut report);
        // Runs of operations on the same map go to the kernel as batches.
        for run in plan
            .ops
            .chunk_by(|a, b| a.op.batch_key() == b.op.batch_key())
        {
            let mut pending: Vec<&Planned> = Vec::with_capacity(run.len());
            for planned in run {
                if failed.contains(&planned.subject) {
                    continue;
                }
                match self.guard(&planned.op) {
                    Ok(()) => pending.push(planned),
                    Err(error) => {
                        failed.insert(planned.subject);
                        report.failures.push(StepFailure {
                            subject: planned.subject,
                            error,
                        });
                    }
                }
            }
            // Batches of up to `MAX_BATCH` for the run (a run can be most of
            // a cold sync's plan: its operations are copied and encoded one
            // batch at a time, never all at once next to the plan); after a
            // failure, the rest one by one, so every operation is offered to
            // the kernel at most twice and overflow costs O(n) whatever the
            // cause (a full map fails each new key: retrying batches of what
            // is left would be quadratic).
            let mut rest: &[&Planned] = &pending;
            let mut batched = true;
            while let Some(first) = rest.first() {
                if failed.contains(&first.subject) {
                    // Later operations of a failed subject must not run (a
                    // slot 0 would publish slots that were never written).
                    rest = &rest[1..];
                    continue;
                }
                let take = if batched {
                    rest.len().min(MAX_BATCH)
                } else {
                    1
                };
                let chunk = &rest[..take];
                let ops: Vec<Op> = chunk.iter().map(|p| p.op.clone()).collect();
                let result = self.maps.execute_batch(&ops);
                let done = match &result {
                    Ok(()) => ops.len(),
                    Err(e) => e.done.min(ops.len()),
                };
                for op in &ops[..done] {
                    self.applied.record(op);
                }
                report.ops += done;
                let Err(BatchError { error, .. }) = result else {
                    rest = &rest[take..];
                    continue;
                };
                let Some(failing) = chunk.get(done) else {
                    rest = &rest[take..];
                    continue;
                };
                failed.insert(failing.subject);
                report.failures.push(StepFailure {
                    subject: failing.subject,
                    error: error.into(),
                });
                rest = &rest[done + 1..];
                batched = false;
            }
        }
        self.prefilter_after(&touched);
        let udp_after = self.udp_reach(plan);
        let mut gone: Vec<(Frontend, Backend)> = udp_before
            .into_iter()
            .flat_map(|(frontend, before)| {
                let after = udp_after.get(&frontend).cloned().unwrap_or_default();
                before
                    .into_iter()
                    .filter(move |b| !after.contains(b))
                    .map(move |b| (frontend, b))
            })
            .collect();
        gone.sort();
        gone.dedup();
        report.udp_backends_gone = gone;
        report.frontends = outcomes(plan, &report);
        report
    }

    /// Sets the pre-filter bits of every frontend `plan` publishes; one whose
    /// bit could not be set fails (its slot 0 is not written). Returns the
    /// frontends whose internal slot 0 the plan touches, and whether each was
    /// published before.
    fn prefilter_before(
        &mut self,
        plan: &Plan,
        failed: &mut HashSet<Subject>,
        report: &mut ApplyReport,
    ) -> BTreeMap<Frontend, bool> {
        let mut touched = BTreeMap::new();
        let mut target = self.filter.clone();
        for planned in &plan.ops {
            if let Some((frontend, put)) = prefilter::touched(&planned.op) {
                touched
                    .entry(frontend)
                    .or_insert_with(|| prefilter::is_published(&self.applied, &frontend));
                if put {
                    target.insert(&frontend);
                }
            }
        }
        let Err(error) = self.write_filter(&target) else {
            return touched;
        };
        tracing::warn!(%error, "setting the socket hooks' pre-filter bits failed; the frontends missing theirs are not published");
        for planned in &plan.ops {
            if let Some((frontend, true)) = prefilter::touched(&planned.op)
                && !self.filter.contains(&frontend)
                && failed.insert(planned.subject)
            {
                report.failures.push(StepFailure {
                    subject: planned.subject,
                    error: StepError::PrefilterBit(error.to_string()),
                });
            }
        }
        touched
    }

    /// Counts the frontends the plan published or removed, and clears the
    /// bits no published frontend holds any more. A failed clear only costs
    /// lookups (a set bit means "maybe"); the next plan retries it.
    fn prefilter_after(&mut self, touched: &BTreeMap<Frontend, bool>) {
        let mut target = self.filter.clone();
        for (frontend, was) in touched {
            let now = prefilter::is_published(&self.applied, frontend);
            match (*was, now) {
                (false, true) => self.filter_refs.add(frontend),
                (true, false) => self.filter_refs.remove(frontend),
                _ => {}
            }
            if !now && !self.filter_refs.held(frontend) {
                target.remove(frontend);
            }
        }
        if let Err(error) = self.write_filter(&target) {
            tracing::warn!(%error, "clearing the socket hooks' pre-filter bits failed; retried by the next sync");
        }
    }

    /// What each UDP frontend touched by `plan` reaches now.
    fn udp_reach(&self, plan: &Plan) -> BTreeMap<Frontend, BTreeSet<Backend>> {
        plan.ops
            .iter()
            .filter_map(|planned| match planned.subject {
                Subject::Frontend(f) if f.protocol == Protocol::Udp => Some(f),
                _ => None,
            })
            .map(|f| {
                // Both scopes: an external client's flow counts too.
                let reach = plan::Scope::ALL
                    .into_iter()
                    .flat_map(|scope| self.applied.reachable_slots(f, scope))
                    .filter_map(|id| self.applied.backends.get(&id).copied())
                    .collect();
                (f, reach)
            })
            .collect()
    }

    fn guard(&self, op: &Op) -> Result<(), StepError> {
        match op {
            Op::PutService { slot, value, .. } if *slot != 0 => {
                if self.applied.backends.contains_key(&value.backend_id) {
                    Ok(())
                } else {
                    Err(StepError::MissingBackend(value.backend_id))
                }
            }
            // A slot 0 naming another frontend's table: only once it exists.
            Op::PutService { scope, value, .. }
                if value.maglev_table != 0
                    && !self
                        .applied
                        .maglev
                        .contains_key(&(value.maglev_table, *scope)) =>
            {
                Err(StepError::MissingMaglevTable(value.maglev_table))
            }
            Op::PutMaglev { table, .. } => {
                match table
                    .iter()
                    .find(|id| !self.applied.backends.contains_key(id))
                {
                    Some(id) => Err(StepError::MissingBackend(*id)),
                    None => Ok(()),
                }
            }
            // A shared table goes only once no slot 0 names it (a member
            // whose move to another table failed still does).
            Op::DeleteMaglev { id, scope } => match self.applied.table_users(*id, *scope) {
                0 => Ok(()),
                n => Err(StepError::MaglevTableInUse(*id, n)),
            },
            Op::DeleteRevNat { id, frontend } => match self.applied.frontend(*frontend) {
                Some(v) if v.rev_nat_id == *id => Err(StepError::RevNatInUse(*id, *frontend)),
                _ => Ok(()),
            },
            Op::DeleteServiceName { id } if self.applied.rev_nat.contains_key(id) => {
                Err(StepError::NameBeforeRevNat(*id))
            }
            Op::DeleteBackend { id, .. } => match self.applied.refs(*id) {
                0 if self.applied.table_refs(*id) > 0 => {
                    Err(StepError::BackendInTable(*id, self.applied.table_refs(*id)))
                }
                0 => Ok(()),
                n => Err(StepError::BackendInUse(*id, n)),
            },
            _ => Ok(()),
        }
    }
}

/// What became of each frontend of `plan`, given what the write reported.
fn outcomes(plan: &Plan, report: &ApplyReport) -> BTreeMap<Frontend, FrontendOutcome> {
    // Backends that found their map full: a slot that needed one has no room either.
    let backends_without_room: HashSet<BackendId> = report
        .failures
        .iter()
        .filter_map(|f| match f.subject {
            Subject::Backend(id) if f.error.is_no_room() => Some(id),
            _ => None,
        })
        .collect();
    let mut out: BTreeMap<Frontend, FrontendOutcome> = plan
        .ops
        .iter()
        .filter_map(|planned| match planned.subject {
            Subject::Frontend(f) => Some((f, FrontendOutcome::Published)),
            _ => None,
        })
        .collect();
    for failure in &report.failures {
        let Subject::Frontend(frontend) = failure.subject else {
            continue;
        };
        let outcome = match &failure.error {
            e if e.is_no_room() => FrontendOutcome::NoRoom,
            StepError::MissingBackend(id) if backends_without_room.contains(id) => {
                FrontendOutcome::NoRoom
            }
            _ => FrontendOutcome::Failed,
        };
        out.insert(frontend, outcome);
    }
    for frontend in &report.unplanned {
        out.insert(*frontend, FrontendOutcome::NoRoom);
    }
    out
}

/// Entries present in one mirror and absent or different in the other.
fn count_differences(a: &Applied, b: &Applied) -> usize {
    fn diff<K: Ord, V: PartialEq>(x: &BTreeMap<K, V>, y: &BTreeMap<K, V>) -> usize {
        x.iter().filter(|(k, v)| y.get(k) != Some(v)).count()
            + y.keys().filter(|k| !x.contains_key(k)).count()
    }
    diff(&a.services, &b.services)
        + diff(&a.backends, &b.backends)
        + diff(&a.backend_flags, &b.backend_flags)
        + diff(&a.rev_nat, &b.rev_nat)
        + diff(&a.svc_names, &b.svc_names)
        + diff(&a.source_ranges, &b.source_ranges)
        + diff(&a.maglev, &b.maglev)
}

#[cfg(test)]
impl<M> Writer<M> {
    /// Direct access to the maps, so tests can inject faults and drift.
    pub fn maps_mut_for_tests(&mut self) -> &mut M {
        &mut self.maps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Planned;

    fn fe(port: u16) -> Frontend {
        Frontend {
            addr: std::net::IpAddr::from([10, 96, 0, 10]),
            port,
            protocol: Protocol::Tcp,
        }
    }

    fn planned(subject: Subject) -> Planned {
        Planned {
            subject,
            op: Op::DeleteServiceName { id: 1 },
        }
    }

    fn failure(subject: Subject, error: StepError) -> StepFailure {
        StepFailure { subject, error }
    }

    #[test]
    fn each_frontend_gets_its_outcome_from_its_own_failure() {
        let plan = Plan {
            ops: [1, 2, 3, 4, 5]
                .map(|p| planned(Subject::Frontend(fe(p))))
                .into_iter()
                .chain([planned(Subject::Backend(7)), planned(Subject::Backend(8))])
                .collect(),
            unplanned: vec![(fe(6), "all 65,535 rev-NAT ids are in use")],
        };
        let full = || StepError::Map(MapError::Full { map: "SVC_V4" });
        let report = ApplyReport {
            failures: vec![
                failure(Subject::Backend(7), full()),
                failure(Subject::Backend(8), StepError::Map(MapError::Injected)),
                failure(Subject::Frontend(fe(2)), full()),
                // Its backend found no room: so did it.
                failure(Subject::Frontend(fe(3)), StepError::MissingBackend(7)),
                // Its backend failed for another reason.
                failure(Subject::Frontend(fe(4)), StepError::MissingBackend(8)),
                failure(Subject::Frontend(fe(5)), StepError::Map(MapError::Injected)),
            ],
            unplanned: vec![fe(6)],
            ..ApplyReport::default()
        };
        let got = outcomes(&plan, &report);
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            [
                (fe(1), FrontendOutcome::Published),
                (fe(2), FrontendOutcome::NoRoom),
                (fe(3), FrontendOutcome::NoRoom),
                (fe(4), FrontendOutcome::Failed),
                (fe(5), FrontendOutcome::Failed),
                (fe(6), FrontendOutcome::NoRoom),
            ]
        );
        assert!(report.ran_out_of_room());
    }

    #[test]
    fn a_retry_replaces_the_outcome_of_what_it_retried() {
        let full = || StepError::Map(MapError::Full { map: "SVC_V4" });
        let mut first = ApplyReport {
            ops: 3,
            failures: vec![
                failure(Subject::Frontend(fe(1)), full()),
                failure(Subject::Frontend(fe(2)), StepError::Map(MapError::Injected)),
                failure(Subject::Backend(7), full()),
            ],
            frontends: BTreeMap::from([
                (fe(1), FrontendOutcome::NoRoom),
                (fe(2), FrontendOutcome::Failed),
                (fe(3), FrontendOutcome::NoRoom),
            ]),
            unplanned: vec![fe(3)],
            ..ApplyReport::default()
        };
        let again = ApplyReport {
            ops: 2,
            frontends: BTreeMap::from([(fe(1), FrontendOutcome::Published)]),
            ..ApplyReport::default()
        };
        first.absorb_retry(&BTreeSet::from([fe(1)]), again);
        assert_eq!(first.ops, 5);
        assert_eq!(first.failures.len(), 1, "{:?}", first.failures);
        assert_eq!(first.failures[0].subject, Subject::Frontend(fe(2)));
        assert_eq!(
            first.frontends.into_iter().collect::<Vec<_>>(),
            [
                (fe(1), FrontendOutcome::Published),
                (fe(2), FrontendOutcome::Failed),
                (fe(3), FrontendOutcome::NoRoom),
            ]
        );
        assert_eq!(first.unplanned, [fe(3)]);
    }

    /// A cold sync's runs reach the maps in batches of at most `MAX_BATCH`
    /// operations: never a copy of a whole run (most of the plan) at once.
    #[test]
    fn large_runs_are_written_in_bounded_batches() {
        let desired = many_frontends(9_000);
        let mut fake = crate::dataplane::fake::FakeMaps::default();
        fake.check_invariants = false;
        let mut writer = Writer::new(fake).expect("writer");
        let report = writer.sync(&desired);
        assert!(report.failures.is_empty(), "{report:?}");
        let maps = writer.maps_mut_for_tests();
        assert!(maps.offered > 30_000, "{} operations", maps.offered);
        assert_eq!(maps.largest_batch, MAX_BATCH);
    }

    /// `n` ClusterIP frontends with one backend each.
    fn many_frontends(n: u16) -> DesiredState {
        use crate::model::{FrontendKind, FrontendSpec, ObjectRef};
        let mut desired = DesiredState::default();
        for i in 0..n {
            let frontend = Frontend {
                addr: std::net::IpAddr::from([10, 96, (i >> 8) as u8, i as u8]),
                port: 80,
                protocol: Protocol::Tcp,
            };
            let backend = Backend {
                addr: std::net::IpAddr::from([10, 244, (i >> 8) as u8, i as u8]),
                port: 8080,
                protocol: Protocol::Tcp,
            };
            desired.frontends.insert(
                frontend,
                FrontendSpec {
                    service: ObjectRef::new("ns", format!("s{i}")),
                    port_name: String::new(),
                    kind: FrontendKind::ClusterIp,
                    backends: vec![backend],
                    external_backends: None,
                    affinity_timeout: None,
                    traffic_policy: Default::default(),
                    source_ranges: None,
                },
            );
        }
        desired
    }

    /// Overflow costs O(n): with the maps full after a few entries, every
    /// later new frontend fails, and each operation is offered to the maps at
    /// most twice (once in its run's batch, once on its own), not once per
    /// earlier failure (before: 3.8 million operations offered for this plan
    /// of about 12,000, now under 12,000).
    #[test]
    fn a_full_map_costs_linear_work() {
        use crate::dataplane::fake::FakeMaps;
        let desired = many_frontends(2_000);
        let mut fake = FakeMaps::default();
        fake.service_capacity = Some(100);
        fake.check_invariants = false;
        let mut writer = Writer::new(fake).expect("writer");
        let report = writer.sync(&desired);
        let planned = report.ops + report.failures.len();
        let offered = writer.maps_mut_for_tests().offered;
        assert!(report.ran_out_of_room(), "{report:?}");
        assert!(
            offered <= 2 * planned,
            "{offered} operations offered for a plan of about {planned}"
        );
    }
}
