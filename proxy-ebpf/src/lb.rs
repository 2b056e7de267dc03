//! Service lookup and backend selection, shared by every hook.
//!
//! A frontend lives in slot 0 of the service map; slots `1..=count` hold backend
//! ids. Userspace writes backends, then slots, then slot 0 last, and shrinks by
//! lowering slot 0's count first, so a reader that found slot 0 always finds
//! the slots and backends it points to. A miss anyway (drift, a torn update) is
//! reported as its own reason and the call is refused, never sent nowhere.

use aya_ebpf::helpers::bpf_get_prandom_u32;
use proxy_common::{
    BackendV4, BackendV6, Be16, Be32, Reason, ServiceKeyV4, ServiceKeyV6, ServiceValue, proto,
};

use crate::maps::{BACKEND_V4, BACKEND_V6, SVC_V4, SVC_V6};

/// A frontend together with the backend chosen for it.
pub struct Selected<B> {
    pub frontend: ServiceValue,
    pub backend: B,
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

#[inline(always)]
fn slot_for(frontend: &ServiceValue, selector: u32) -> Result<u16, Reason> {
    let count = frontend.count as u32;
    if count == 0 {
        return Err(Reason::NoBackend);
    }
    Ok(((selector % count) + 1) as u16)
}

/// Looks up an IPv4 frontend. `Ok(None)` means "not a service".
#[inline(always)]
pub fn lookup4(addr: Be32, port: Be16, protocol: u8) -> Option<(ServiceKeyV4, ServiceValue)> {
    let key = ServiceKeyV4 {
        addr,
        port,
        slot: 0,
        proto: protocol,
        _pad: [0; 3],
    };
    // SAFETY: the value is copied out at once, before any other map operation
    // could recycle the slot behind the reference.
    let value = unsafe { SVC_V4.get(&key) }.copied()?;
    Some((key, value))
}

/// Picks a backend for an IPv4 frontend found by [`lookup4`].
#[inline(always)]
pub fn select4(
    mut key: ServiceKeyV4,
    frontend: ServiceValue,
    selector: u32,
) -> Result<Selected<BackendV4>, Reason> {
    key.slot = slot_for(&frontend, selector)?;
    // SAFETY: copied out at once, see `lookup4`.
    let slot = unsafe { SVC_V4.get(&key) }
        .copied()
        .ok_or(Reason::SlotMissing)?;
    // SAFETY: copied out at once, see `lookup4`.
    let backend = unsafe { BACKEND_V4.get(&slot.backend_id) }
        .copied()
        .ok_or(Reason::BackendMissing)?;
    Ok(Selected { frontend, backend })
}

/// Looks up an IPv6 frontend. `None` means "not a service".
#[inline(always)]
pub fn lookup6(addr: [u8; 16], port: Be16, protocol: u8) -> Option<(ServiceKeyV6, ServiceValue)> {
    let key = ServiceKeyV6 {
        addr,
        port,
        slot: 0,
        proto: protocol,
        _pad: [0; 3],
    };
    // SAFETY: copied out at once, see `lookup4`.
    let value = unsafe { SVC_V6.get(&key) }.copied()?;
    Some((key, value))
}

/// Picks a backend for an IPv6 frontend found by [`lookup6`].
#[inline(always)]
pub fn select6(
    mut key: ServiceKeyV6,
    frontend: ServiceValue,
    selector: u32,
) -> Result<Selected<BackendV6>, Reason> {
    key.slot = slot_for(&frontend, selector)?;
    // SAFETY: copied out at once, see `lookup4`.
    let slot = unsafe { SVC_V6.get(&key) }
        .copied()
        .ok_or(Reason::SlotMissing)?;
    // SAFETY: copied out at once, see `lookup4`.
    let backend = unsafe { BACKEND_V6.get(&slot.backend_id) }
        .copied()
        .ok_or(Reason::BackendMissing)?;
    Ok(Selected { frontend, backend })
}
