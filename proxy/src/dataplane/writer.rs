//! Executes plans against a [`DataplaneMaps`], keeping [`Applied`] an exact mirror
//! of what the maps hold.
//!
//! A failed operation skips only the rest of its step (so the ordering rules of
//! `plan` still hold for that frontend) and the writer carries on with the next
//! step. Two safety checks guard readers even against a stale plan: a slot is
//! never pointed at a backend that is not in the maps, and a backend is never
//! deleted while a slot still points at it. The next sync re-plans from the
//! mirror, which converges once the cause is gone.

use std::collections::BTreeMap;

use crate::{
    dataplane::maps::{DataplaneMaps, MapError},
    model::{DesiredState, Frontend},
    plan::{self, Applied, BackendId, Op, Plan, RevNatId, Subject},
};

/// What one `apply` did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Operations that succeeded.
    pub ops: usize,
    /// Steps that stopped early, with the reason.
    pub failures: Vec<StepFailure>,
    /// Frontends the plan could not place at all.
    pub unplanned: usize,
}

impl ApplyReport {
    /// True when everything planned was written.
    pub fn is_complete(&self) -> bool {
        self.failures.is_empty() && self.unplanned == 0
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
    #[error("backend {0} is still referenced by {1} slot(s)")]
    BackendInUse(BackendId, usize),
    #[error("rev-NAT id {0} still belongs to frontend {1}")]
    RevNatInUse(RevNatId, Frontend),
}

/// Owns the maps and the mirror of their contents.
pub struct Writer<M> {
    maps: M,
    applied: Applied,
}

impl<M: DataplaneMaps> Writer<M> {
    /// Reads the maps' current contents (a restart picks up where the last run
    /// left off) and takes ownership of them.
    pub fn new(maps: M) -> Result<Self, MapError> {
        let applied = maps.read()?;
        Ok(Self { maps, applied })
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
        let plan = plan::plan(&self.applied, desired);
        self.apply(&plan)
    }

    /// Re-reads the maps, then syncs. Returns how many entries differed from the
    /// mirror (drift: edited by hand, or left by a write whose result was lost).
    pub fn reconcile(&mut self, desired: &DesiredState) -> Result<(usize, ApplyReport), MapError> {
        let actual = self.maps.read()?;
        let drift = count_differences(&self.applied, &actual);
        self.applied = actual;
        Ok((drift, self.sync(desired)))
    }

    /// Executes a plan step by step.
    pub fn apply(&mut self, plan: &Plan) -> ApplyReport {
        let mut report = ApplyReport {
            unplanned: plan.unplanned.len(),
            ..Default::default()
        };
        let mut refs = self.applied.backend_refs();
        for step in &plan.steps {
            for op in &step.ops {
                if let Err(error) = self.guard(op, &refs) {
                    report.failures.push(StepFailure {
                        subject: step.subject,
                        error,
                    });
                    break;
                }
                if let Err(error) = self.maps.execute(op) {
                    report.failures.push(StepFailure {
                        subject: step.subject,
                        error: error.into(),
                    });
                    break;
                }
                track_refs(&mut refs, &self.applied, op);
                self.applied.record(op);
                report.ops += 1;
            }
        }
        report
    }

    fn guard(&self, op: &Op, refs: &BTreeMap<BackendId, usize>) -> Result<(), StepError> {
        match op {
            Op::PutService { slot, value, .. } if *slot != 0 => {
                if self.applied.backends.contains_key(&value.backend_id) {
                    Ok(())
                } else {
                    Err(StepError::MissingBackend(value.backend_id))
                }
            }
            Op::DeleteRevNat { id, frontend } => match self.applied.frontend(*frontend) {
                Some(v) if v.rev_nat_id == *id => Err(StepError::RevNatInUse(*id, *frontend)),
                _ => Ok(()),
            },
            Op::DeleteBackend { id, .. } => match refs.get(id).copied().unwrap_or(0) {
                0 => Ok(()),
                n => Err(StepError::BackendInUse(*id, n)),
            },
            _ => Ok(()),
        }
    }
}

/// Keeps the slot → backend reference counts right across one operation.
fn track_refs(refs: &mut BTreeMap<BackendId, usize>, before: &Applied, op: &Op) {
    let release = |refs: &mut BTreeMap<BackendId, usize>, id: BackendId| {
        if let Some(n) = refs.get_mut(&id) {
            *n = n.saturating_sub(1);
        }
    };
    match op {
        Op::PutService {
            frontend,
            slot,
            value,
        } if *slot != 0 => {
            if let Some(old) = before.services.get(&(*frontend, *slot)) {
                release(refs, old.backend_id);
            }
            *refs.entry(value.backend_id).or_insert(0) += 1;
        }
        Op::DeleteService { frontend, slot } if *slot != 0 => {
            if let Some(old) = before.services.get(&(*frontend, *slot)) {
                release(refs, old.backend_id);
            }
        }
        _ => {}
    }
}

/// Entries present in one mirror and absent or different in the other.
fn count_differences(a: &Applied, b: &Applied) -> usize {
    fn diff<K: Ord, V: PartialEq>(x: &BTreeMap<K, V>, y: &BTreeMap<K, V>) -> usize {
        x.iter().filter(|(k, v)| y.get(k) != Some(v)).count()
            + y.keys().filter(|k| !x.contains_key(k)).count()
    }
    diff(&a.services, &b.services) + diff(&a.backends, &b.backends) + diff(&a.rev_nat, &b.rev_nat)
}

#[cfg(test)]
impl<M> Writer<M> {
    /// Direct access to the maps, so tests can inject faults and drift.
    pub fn maps_mut_for_tests(&mut self) -> &mut M {
        &mut self.maps
    }
}
