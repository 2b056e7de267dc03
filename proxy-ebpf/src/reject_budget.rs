//! The tc path's reject budget: a token bucket per CPU that bounds the RSTs
//! and ICMP errors built for flows no backend serves
//! (`proxy_common::reject_limit`). Without it every packet of a flood to such
//! a frontend would be answered, one for one, to whatever source it claims.
//!
//! Per CPU, so no lock and no atomic: a program is not preempted by another
//! on the same CPU for this hook. The bucket refills by whole tokens, and its
//! stamp advances by exactly the time those tokens stand for, so no fraction
//! of a token is lost between two rejects.

use proxy_common::reject_limit::{BURST, NS_PER_TOKEN};

use crate::maps::REJECT_BUDGET;

/// Takes one token if this CPU has one; `false`: the reject must not be sent.
#[inline(always)]
pub fn take(now_ns: u64) -> bool {
    let Some(bucket) = REJECT_BUDGET.get_ptr_mut(0) else {
        // The one slot always exists; if it did not, answering is the
        // behaviour without a limit.
        return true;
    };
    // SAFETY: per-CPU array slots are private to this CPU, and a BPF program
    // is not preempted by another program on the same CPU for this hook type.
    let bucket = unsafe { &mut *bucket };
    let refill = now_ns.saturating_sub(bucket.stamp_ns) / NS_PER_TOKEN;
    if refill > 0 {
        let tokens = bucket.tokens.saturating_add(refill);
        if tokens >= BURST {
            bucket.tokens = BURST;
            bucket.stamp_ns = now_ns;
        } else {
            bucket.tokens = tokens;
            bucket.stamp_ns += refill * NS_PER_TOKEN;
        }
    }
    if bucket.tokens == 0 {
        return false;
    }
    bucket.tokens -= 1;
    true
}
