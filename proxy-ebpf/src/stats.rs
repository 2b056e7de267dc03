//! Per-CPU counters by reason: the hot path's only form of telemetry.

use proxy_common::Reason;

use crate::maps::STATS;

/// Adds one to the counter for `reason` on this CPU.
#[inline(always)]
pub fn count(reason: Reason) {
    if let Some(slot) = STATS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU array slots are private to this CPU, and a BPF program
        // is not preempted by another program on the same CPU for this hook type.
        unsafe { *slot += 1 };
    }
}
