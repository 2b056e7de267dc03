//! Service lookup and backend selection, shared by every hook.
//!
//! A frontend lives in slot 0 of the service map; slots `1..=count` hold backend
//! ids. Userspace writes backends, then slots, then slot 0 last, and shrinks by
//! lowering slot 0's count first, so a reader that found slot 0 always finds
//! the slots and backends it points to. A miss anyway (drift, a torn update) is
//! reported as its own reason and the call is refused, never sent nowhere.
//!
//! Lookups take the [`proxy_common::scope`]: socket hooks always use the
//! internal scope, the tc path tries the external scope first.

use aya_ebpf::{
    btf_maps::lpm_trie::Key,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns},
};
use proxy_common::{
    AffinityKey, AffinityValue, BackendV4, BackendV6, Be16, Be32, Reason, ServiceKeyV4,
    ServiceKeyV6, ServiceValue, SrcRangeV4, SrcRangeV6, proto, src_range, svc_flags,
};

use crate::{
    maps::{AFFINITY, BACKEND_V4, BACKEND_V6, SRC_RANGE_V4, SRC_RANGE_V6, SVC_V4, SVC_V6},
    stats,
};

/// A frontend together with the backend chosen for it.
pub struct Selected<B> {
    pub frontend: ServiceValue,
    pub backend: B,
    /// The chosen backend's id (the `BACKEND_*` key), kept by conntrack.
    pub backend_id: u32,
}

/// How to pick a slot: at random for TCP (one pick per connection), and by a
/// hash of the socket cookie for UDP, so that an unconnected UDP socket keeps
/// talking to one backend across `sendmsg` calls, as Cilium does.
#[inline(always)]
pub fn selector(protocol: u8, cookie: u64) -> u32 {
    if protocol == proto::TCP {
        // SAFETY: the helper takes no arguments and has no preconditions.
        unsafe { bpf_get_prandom_u32() }
    } else {
        let folded = (cookie as u32) ^ ((cookie >> 32) as u32);
        folded.wrapping_mul(0x9E37_79B1)
    }
}

/// How far `find_slot` looks for a sticky backend that changed slot.
const MAX_AFFINITY_SCAN: u16 = 64;

#[inline(always)]
fn slot_for(count: u16, selector: u32) -> u16 {
    ((selector % count as u32) + 1) as u16
}

/// Chooses a backend id for a frontend. `slot_backend(n)` reads slot `n`.
///
/// With ClientIP affinity the client's previous backend is reused while it is
/// fresh (last connection within the timeout) and still one of the frontend's
/// slots; otherwise a new one is picked and remembered. Affinity survives
/// backends being added (slots keep their positions) and moves the client when
/// its backend leaves.
#[inline(always)]
fn choose<F: Fn(u16) -> Option<u32>>(
    frontend: &ServiceValue,
    selector: u32,
    client: u64,
    slot_backend: F,
) -> Result<u32, Reason> {
    let count = frontend.count;
    if count == 0 {
        return Err(Reason::NoBackend);
    }
    if frontend.flags & svc_flags::AFFINITY == 0 {
        return slot_backend(slot_for(count, selector)).ok_or(Reason::SlotMissing);
    }
    let key = AffinityKey {
        client,
        rev_nat_id: frontend.rev_nat_id,
        _pad: 0,
    };
    // SAFETY: the helper takes no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let timeout_ns = u64::from(frontend.affinity_timeout) * 1_000_000_000;
    // SAFETY: copied out at once; the map is an LRU hash.
    // Saturating: another CPU may have refreshed the entry after `now` was
    // read (an age of 0, not a wrapped-around huge one; see tc.rs `fresh`).
    if let Some(prev) = unsafe { AFFINITY.get(&key) }.copied()
        && now.saturating_sub(prev.last_used_ns) <= timeout_ns
        && let Some(slot) = find_slot(&prev, count, &slot_backend)
    {
        remember(&key, now, prev.backend_id, slot);
        stats::count(Reason::AffinityHit);
        return Ok(prev.backend_id);
    }
    let slot = slot_for(count, selector);
    let id = slot_backend(slot).ok_or(Reason::SlotMissing)?;
    remember(&key, now, id, slot);
    Ok(id)
}

/// The slot that still holds the client's previous backend, if any.
#[inline(always)]
fn find_slot<F: Fn(u16) -> Option<u32>>(
    prev: &AffinityValue,
    count: u16,
    slot_backend: &F,
) -> Option<u16> {
    if prev.slot >= 1 && prev.slot <= count && slot_backend(prev.slot) == Some(prev.backend_id) {
        return Some(prev.slot);
    }
    let mut slot = 1;
    while slot <= MAX_AFFINITY_SCAN && slot <= count {
        if slot_backend(slot) == Some(prev.backend_id) {
            return Some(slot);
        }
        slot += 1;
    }
    None
}

#[inline(always)]
fn remember(key: &AffinityKey, now: u64, backend_id: u32, slot: u16) {
    let value = AffinityValue {
        last_used_ns: now,
        backend_id,
        slot,
        _pad: 0,
    };
    if AFFINITY.insert(key, &value, 0).is_err() {
        stats::count(Reason::AffinityUpdateFailed);
    }
}

/// Looks up an IPv4 frontend in one [`proxy_common::scope`]. `None` means
/// "not a service" (in that scope).
#[inline(always)]
pub fn lookup4(
    addr: Be32,
    port: Be16,
    protocol: u8,
    scope: u8,
) -> Option<(ServiceKeyV4, ServiceValue)> {
    let key = ServiceKeyV4 {
        addr,
        port,
        slot: 0,
        proto: protocol,
        scope,
        _pad: [0; 2],
    };
    // SAFETY: the value is copied out at once, before any other map operation
    // could recycle the slot behind the reference.
    let value = unsafe { SVC_V4.get(&key) }.copied()?;
    Some((key, value))
}

/// Picks a backend for an IPv4 frontend found by [`lookup4`] (the slots are
/// read in the key's scope). `client` identifies the client for session
/// affinity: a network namespace cookie on the socket path, a tagged client
/// address on the tc path (see `tc::affinity_client4`).
#[inline(always)]
pub fn select4(
    key: ServiceKeyV4,
    frontend: ServiceValue,
    selector: u32,
    client: u64,
) -> Result<Selected<BackendV4>, Reason> {
    let id = choose(&frontend, selector, client, |slot| {
        let slot_key = ServiceKeyV4 { slot, ..key };
        // SAFETY: copied out at once, see `lookup4`.
        unsafe { SVC_V4.get(&slot_key) }.map(|v| v.backend_id)
    })?;
    // SAFETY: copied out at once, see `lookup4`.
    let backend = unsafe { BACKEND_V4.get(&id) }
        .copied()
        .ok_or(Reason::BackendMissing)?;
    Ok(Selected {
        frontend,
        backend,
        backend_id: id,
    })
}

/// Looks up an IPv6 frontend in one [`proxy_common::scope`]. `None` means
/// "not a service" (in that scope).
#[inline(always)]
pub fn lookup6(
    addr: [u8; 16],
    port: Be16,
    protocol: u8,
    scope: u8,
) -> Option<(ServiceKeyV6, ServiceValue)> {
    let key = ServiceKeyV6 {
        addr,
        port,
        slot: 0,
        proto: protocol,
        scope,
        _pad: [0; 2],
    };
    // SAFETY: copied out at once, see `lookup4`.
    let value = unsafe { SVC_V6.get(&key) }.copied()?;
    Some((key, value))
}

/// Picks a backend for an IPv6 frontend found by [`lookup6`].
#[inline(always)]
pub fn select6(
    key: ServiceKeyV6,
    frontend: ServiceValue,
    selector: u32,
    client: u64,
) -> Result<Selected<BackendV6>, Reason> {
    let id = choose(&frontend, selector, client, |slot| {
        let slot_key = ServiceKeyV6 { slot, ..key };
        // SAFETY: copied out at once, see `lookup4`.
        unsafe { SVC_V6.get(&slot_key) }.map(|v| v.backend_id)
    })?;
    // SAFETY: copied out at once, see `lookup4`.
    let backend = unsafe { BACKEND_V6.get(&id) }
        .copied()
        .ok_or(Reason::BackendMissing)?;
    Ok(Selected {
        frontend,
        backend,
        backend_id: id,
    })
}

/// Whether backend `id` still exists (conntrack re-balances flows whose
/// backend was removed).
#[inline(always)]
pub fn backend4_exists(id: u32) -> bool {
    BACKEND_V4.get_ptr(&id).is_some()
}

/// IPv6 counterpart of [`backend4_exists`].
#[inline(always)]
pub fn backend6_exists(id: u32) -> bool {
    BACKEND_V6.get_ptr(&id).is_some()
}

/// Whether `saddr` may reach the frontend with rev-NAT id `rev_nat_id`
/// (`loadBalancerSourceRanges`, see `proxy_common::src_range`): no entry for
/// the frontend allows every source.
#[inline(always)]
pub fn source_allowed4(rev_nat_id: u32, saddr: Be32) -> bool {
    let key = Key::new(
        src_range::ID_BITS + 32,
        SrcRangeV4 {
            rev_nat_id: Be32(rev_nat_id.to_be()),
            addr: saddr,
        },
    );
    SRC_RANGE_V4
        .get(&key)
        .is_none_or(|verdict| *verdict != src_range::DENY)
}

/// [`source_allowed4`] for IPv6.
#[inline(always)]
pub fn source_allowed6(rev_nat_id: u32, saddr: [u8; 16]) -> bool {
    let key = Key::new(
        src_range::ID_BITS + 128,
        SrcRangeV6 {
            rev_nat_id: Be32(rev_nat_id.to_be()),
            addr: saddr,
        },
    );
    SRC_RANGE_V6
        .get(&key)
        .is_none_or(|verdict| *verdict != src_range::DENY)
}
