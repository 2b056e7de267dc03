//! The seam between the writer and the kernel maps: a small trait with an aya
//! implementation (`kernel::KernelMaps`) and, for unit tests, a `BTreeMap` fake
//! (`fake::FakeMaps`) that checks the readers' invariants after every write.

use crate::plan::{Applied, Op};

/// Errors from map operations.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("map {map} is full")]
    Full { map: &'static str },
    #[error("{op} on map {map} failed")]
    Syscall {
        map: &'static str,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("map {map} holds an entry that does not decode: {detail}")]
    Corrupt { map: &'static str, detail: String },
    #[error("map {map} is missing from the eBPF object")]
    Missing { map: &'static str },
    #[error("opening map {map}")]
    Open {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("injected failure (test seam)")]
    Injected,
}

/// A batch that stopped early: `done` operations succeeded, the next failed.
#[derive(Debug)]
pub struct BatchError {
    pub done: usize,
    pub error: MapError,
}

/// The dataplane maps as the writer sees them.
pub trait DataplaneMaps {
    /// Performs one write or delete. Deleting an absent entry is not an error.
    fn execute(&mut self, op: &Op) -> Result<(), MapError>;

    /// Performs a run of operations that share one [`crate::plan::BatchKey`],
    /// in order, stopping at the first failure. Implementations may use one
    /// system call for the whole run.
    fn execute_batch(&mut self, ops: &[Op]) -> Result<(), BatchError> {
        for (done, op) in ops.iter().enumerate() {
            self.execute(op)
                .map_err(|error| BatchError { done, error })?;
        }
        Ok(())
    }
    /// Writes word `index` of the socket hooks' pre-filter bitmap
    /// (`SVC_FILTER`, see [`crate::plan::prefilter`]).
    fn set_filter_word(&mut self, index: u32, word: u64) -> Result<(), MapError>;

    /// Reads everything the plan diffs against (not the LRU or stats maps).
    fn read(&self) -> Result<Applied, MapError>;
}
