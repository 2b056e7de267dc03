//! A `BTreeMap` stand-in for the kernel maps, for unit tests. After every
//! operation it checks what a lock-free kernel reader relies on, and panics
//! with the offending operation if a write order would let a reader see a
//! half-written service, or a published frontend whose pre-filter bit is
//! clear.

use crate::{
    dataplane::maps::{DataplaneMaps, MapError},
    plan::{Applied, Op, Scope, prefilter::Prefilter},
};

pub struct FakeMaps {
    pub contents: Applied,
    /// Every operation executed, in order.
    pub log: Vec<Op>,
    /// Fail the call with this index (0-based) instead of executing it.
    pub fail_at: Option<usize>,
    /// Check readers' invariants after every operation (on unless a test
    /// measures speed).
    pub check_invariants: bool,
    /// Entries the service map holds (both families and scopes together);
    /// a new key beyond it fails as a full kernel map does. `None`: no limit.
    pub service_capacity: Option<usize>,
    /// Operations handed to [`DataplaneMaps::execute_batch`], summed over
    /// calls: the work a writer asks of the kernel.
    pub offered: usize,
    /// The most operations handed over in one call.
    pub largest_batch: usize,
    /// The pre-filter bitmap (`SVC_FILTER`).
    pub filter: Prefilter,
    /// Fail every pre-filter write from this many on (0-based).
    pub fail_filter_from: Option<usize>,
    /// Pre-filter words written.
    pub filter_writes: usize,
    calls: usize,
}

impl Default for FakeMaps {
    fn default() -> Self {
        Self {
            contents: Applied::default(),
            log: Vec::new(),
            fail_at: None,
            check_invariants: true,
            service_capacity: None,
            offered: 0,
            largest_batch: 0,
            filter: Prefilter::default(),
            fail_filter_from: None,
            filter_writes: 0,
            calls: 0,
        }
    }
}

impl FakeMaps {
    pub fn failing_at(n: usize) -> Self {
        Self {
            fail_at: Some(n),
            ..Default::default()
        }
    }

    /// Panics unless every frontend entry points at slots and backends that
    /// exist, and has a name (what `proxy inspect` shows), and the shared
    /// Maglev table it names exists; every internal one has its pre-filter
    /// bit; and every Maglev table points at backends that exist.
    pub fn check_reader_invariants(&self, after: &Op) {
        for ((frontend, scope, slot), value) in &self.contents.services {
            if *slot != 0 {
                continue;
            }
            assert!(
                *scope != Scope::Internal || self.filter.contains(frontend),
                "after {after:?}: frontend {frontend} is published with its pre-filter bit clear"
            );
            assert!(
                self.contents.rev_nat.get(&value.rev_nat_id) == Some(frontend),
                "after {after:?}: frontend {frontend} has rev-NAT id {} with no matching entry",
                value.rev_nat_id
            );
            assert!(
                self.contents.svc_names.contains_key(&value.rev_nat_id),
                "after {after:?}: frontend {frontend} is published without a name (rev-NAT id {})",
                value.rev_nat_id
            );
            assert!(
                value.maglev_table == 0
                    || self
                        .contents
                        .maglev
                        .contains_key(&(value.maglev_table, *scope)),
                "after {after:?}: {frontend} ({scope:?}) names missing Maglev table {}",
                value.maglev_table
            );
            for s in 1..=value.count {
                let Some(slot_value) = self.contents.services.get(&(*frontend, *scope, s)) else {
                    panic!(
                        "after {after:?}: {frontend} ({scope:?}) has count {} but slot {s} is missing",
                        value.count
                    );
                };
                assert!(
                    self.contents.backends.contains_key(&slot_value.backend_id),
                    "after {after:?}: {frontend} slot {s} points at missing backend {}",
                    slot_value.backend_id
                );
            }
        }
        for ((id, scope), table) in &self.contents.maglev {
            for backend in table.iter() {
                assert!(
                    self.contents.backends.contains_key(backend),
                    "after {after:?}: the Maglev table of rev-NAT id {id} ({scope:?}) points at \
                     missing backend {backend}"
                );
            }
        }
    }
}

impl DataplaneMaps for FakeMaps {
    fn execute(&mut self, op: &Op) -> Result<(), MapError> {
        let call = self.calls;
        self.calls += 1;
        if self.fail_at == Some(call) {
            return Err(MapError::Injected);
        }
        if let (
            Some(capacity),
            Op::PutService {
                frontend,
                scope,
                slot,
                ..
            },
        ) = (self.service_capacity, op)
            && self.contents.services.len() >= capacity
            && !self
                .contents
                .services
                .contains_key(&(*frontend, *scope, *slot))
        {
            return Err(MapError::Full { map: "SVC" });
        }
        self.contents.record(op);
        self.log.push(op.clone());
        if self.check_invariants {
            self.check_reader_invariants(op);
        }
        Ok(())
    }

    fn execute_batch(&mut self, ops: &[Op]) -> Result<(), crate::dataplane::maps::BatchError> {
        self.offered += ops.len();
        self.largest_batch = self.largest_batch.max(ops.len());
        for (done, op) in ops.iter().enumerate() {
            self.execute(op)
                .map_err(|error| crate::dataplane::maps::BatchError { done, error })?;
        }
        Ok(())
    }

    fn set_filter_word(&mut self, index: u32, word: u64) -> Result<(), MapError> {
        if self
            .fail_filter_from
            .is_some_and(|n| self.filter_writes >= n)
        {
            return Err(MapError::Injected);
        }
        self.filter_writes += 1;
        let before = self.filter.clone();
        self.filter.set_word(index, word);
        if self.check_invariants {
            for frontend in crate::plan::prefilter::published(&self.contents) {
                assert!(
                    !before.contains(frontend) || self.filter.contains(frontend),
                    "pre-filter word {index} written as {word:#x}: published frontend {frontend} \
                     lost its bit"
                );
            }
        }
        Ok(())
    }

    fn read(&self) -> Result<Applied, MapError> {
        // Tests edit `contents` directly to simulate drift.
        let mut applied = self.contents.clone();
        applied.reindex();
        Ok(applied)
    }
}
