//! Maglev selection on the tc path: the 5-tuple hash and the table lookup.
//!
//! The hash is 32-bit MurmurHash3 over the tuple's 32-bit words, seeded by
//! `MAGLEV_CFG`'s cluster-wide seed; it must match `proxy::plan::maglev`'s
//! `flow_hash_v4`/`flow_hash_v6` bit for bit (the tc packet tests check it),
//! so every node maps a 5-tuple to the same table entry.

use proxy_common::{Be16, Be32, maglev};

use crate::maps::{MAGLEV, MAGLEV_CFG};

#[inline(always)]
fn round(h: u32, w: u32) -> u32 {
    let k = w
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn finish(h: u32, words: u32) -> u32 {
    let mut h = h ^ (words * 4);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[inline(always)]
fn ports(sport: Be16, dport: Be16, protocol: u8, h: u32) -> u32 {
    let h = round(
        h,
        (u32::from(sport.to_host()) << 16) | u32::from(dport.to_host()),
    );
    round(h, u32::from(protocol))
}

/// The table size and seed, when Maglev is on (`--lb-algorithm=maglev`).
#[inline(always)]
pub fn config() -> Option<(u32, u32)> {
    let cfg = MAGLEV_CFG.get(0)?;
    (cfg.size != 0 && cfg.size <= maglev::MAX_SIZE).then_some((cfg.size, cfg.seed))
}

/// The hash of an IPv4 5-tuple.
#[inline(always)]
pub fn hash4(saddr: Be32, daddr: Be32, sport: Be16, dport: Be16, protocol: u8, seed: u32) -> u32 {
    let h = round(seed, u32::from_be(saddr.0));
    let h = round(h, u32::from_be(daddr.0));
    finish(ports(sport, dport, protocol, h), 4)
}

/// The hash of an IPv6 5-tuple.
#[inline(always)]
pub fn hash6(
    saddr: &[u8; 16],
    daddr: &[u8; 16],
    sport: Be16,
    dport: Be16,
    protocol: u8,
    seed: u32,
) -> u32 {
    let mut h = seed;
    let mut i = 0;
    while i < 4 {
        let o = i * 4;
        h = round(
            h,
            u32::from_be_bytes([saddr[o], saddr[o + 1], saddr[o + 2], saddr[o + 3]]),
        );
        i += 1;
    }
    let mut i = 0;
    while i < 4 {
        let o = i * 4;
        h = round(
            h,
            u32::from_be_bytes([daddr[o], daddr[o + 1], daddr[o + 2], daddr[o + 3]]),
        );
        i += 1;
    }
    finish(ports(sport, dport, protocol, h), 10)
}

/// The backend id at `index` of the frontend's table in `scope`, or 0 if it
/// has none (no backend, more backends than entries, or Maglev off). The
/// table is read in place (4 KiB, far more than the stack).
#[inline(always)]
pub fn pick(rev_nat_id: u16, scope: u8, index: u32) -> u32 {
    let Some(table) = MAGLEV.get_ptr(&maglev::key(rev_nat_id, scope)) else {
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
