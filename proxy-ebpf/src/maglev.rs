//! Maglev selection on the tc path: the 5-tuple hash and the table lookup.
//!
//! The hash is `proxy_common::maglev`'s, seeded by `MAGLEV_CFG`'s
//! cluster-wide seed: userspace computes the same function, so every node
//! maps a 5-tuple to the same table entry.

use proxy_common::{Be16, Be32, maglev};

use crate::maps::{MAGLEV, MAGLEV_CFG};

/// The table size and seed, when Maglev is on (`--lb-algorithm=maglev`).
#[inline(always)]
pub fn config() -> Option<(u32, u32)> {
    let cfg = MAGLEV_CFG.get(0)?;
    (cfg.size != 0 && cfg.size <= maglev::MAX_SIZE).then_some((cfg.size, cfg.seed))
}

/// The hash of an IPv4 5-tuple (`proxy_common::maglev::flow_hash_v4`).
#[inline(always)]
pub fn hash4(saddr: Be32, daddr: Be32, sport: Be16, dport: Be16, protocol: u8, seed: u32) -> u32 {
    maglev::flow_hash_v4(
        u32::from_be(saddr.0),
        u32::from_be(daddr.0),
        sport.to_host(),
        dport.to_host(),
        protocol,
        seed,
    )
}

/// The hash of an IPv6 5-tuple (`proxy_common::maglev::flow_hash_v6`).
#[inline(always)]
pub fn hash6(
    saddr: &[u8; 16],
    daddr: &[u8; 16],
    sport: Be16,
    dport: Be16,
    protocol: u8,
    seed: u32,
) -> u32 {
    maglev::flow_hash_v6(
        saddr,
        daddr,
        sport.to_host(),
        dport.to_host(),
        protocol,
        seed,
    )
}

/// The backend id at `index` of table `table` (slot 0's
/// `ServiceValue::maglev_table_id`) in `scope`, or 0 if it is missing (no backend, more backends than entries, or Maglev off). The
/// table is read in place (4 KiB, far more than the stack).
#[inline(always)]
pub fn pick(table: u32, scope: u8, index: u32) -> u32 {
    let Some(table) = MAGLEV.get_ptr(&maglev::key(table, scope)) else {
        return 0;
    };
    // Through a barrier: the compiler knows `index < M ≤ MAX_SIZE` and would
    // drop the check, but the verifier does not follow `%`.
    let i = core::hint::black_box(index) as usize;
    if i >= maglev::MAX_SIZE as usize {
        return 0;
    }
    // SAFETY: the pointer is to a live map value and `i` is in bounds; a
    // concurrent update replaces the whole element, so the read sees the old
    // or the new table.
    unsafe { *(*table).backends.as_ptr().add(i) }
}
