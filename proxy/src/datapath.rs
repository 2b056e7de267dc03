//! The seam between the sync loop and what implements Services on the node.
//!
//! The sync loop computes the desired state (pure) and hands it to a
//! [`Datapath`], saying which frontends may have changed ([`Scope`]), and
//! reads back a [`DatapathReport`]. Two implementations:
//!
//! - `ebpf_datapath::EbpfDatapath`: plans against the map mirror and writes the
//!   eBPF maps, with a userspace path of its own for frontends the maps cannot
//!   hold, and keeps the socket hooks;
//! - `userspace::UserspaceDatapath`: makes VIPs local and proxies in tokio,
//!   used when eBPF cannot be (`--mode userspace`, or `auto` after a load or
//!   attach failure).
//!
//! Both import this module and it imports neither (only `model`), so the eBPF
//! datapath can hand frontends to the userspace one without an import loop.
//!
//! Must not: compute desired state (that is the pure core's), or know any
//! implementation.

use std::{collections::BTreeSet, future::Future, time::Duration};

use crate::model::{DesiredState, Frontend};

/// Which frontends a sync looks at.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    /// Only these may have changed.
    Touched(&'a BTreeSet<Frontend>),
    /// Every frontend, against what the datapath believes it applied.
    All,
    /// Every frontend, against the kernel's state re-read (drift repair).
    Reconcile,
}

impl Scope<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            Scope::Touched(_) => "incremental",
            Scope::All => "full",
            Scope::Reconcile => "reconcile",
        }
    }
}

/// What one sync did, whatever the datapath.
#[derive(Clone, Debug, Default)]
pub struct DatapathReport {
    /// Changes made (map operations, routes, listeners).
    pub ops: usize,
    /// Pieces that could not be applied; the next sync retries them.
    pub failures: usize,
    /// Frontends that could not even be planned (eBPF: ids exhausted).
    pub unplanned: usize,
    pub plan_time: Duration,
    pub write_time: Duration,
    /// eBPF: the socket hooks are not (all) attached yet, or could not be
    /// repaired; the next sync retries.
    pub hooks_pending: bool,
}

impl DatapathReport {
    /// True when everything planned was applied (nothing to retry).
    pub fn is_complete(&self) -> bool {
        self.writes_complete() && !self.hooks_pending
    }

    /// True when every change was applied (the hooks aside).
    pub fn writes_complete(&self) -> bool {
        self.failures == 0 && self.unplanned == 0
    }
}

/// What the sync loop drives. See the module docs.
pub trait Datapath: Send + 'static {
    /// Brings the frontends in `scope` to what `desired` says.
    fn apply<'a>(
        &'a mut self,
        desired: &'a DesiredState,
        scope: Scope<'a>,
    ) -> impl Future<Output = DatapathReport> + Send + 'a;

    /// Resolves when the datapath wants a sync for reasons of its own (the
    /// eBPF datapath: the node's devices changed); never, by default. The
    /// sync loop waits on it between syncs, after the first.
    fn wake(&mut self) -> impl Future<Output = ()> + Send + '_ {
        std::future::pending()
    }
}
