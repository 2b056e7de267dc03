//! Maglev consistent hashing: the `MAGLEV` tables and `MAGLEV_CFG` (see
//! `maps`), their key, and the one hash both sides compute.
//!
//! The hash is 32-bit MurmurHash3 over 32-bit words, seeded by the
//! cluster-wide seed. The kernel indexes a table by [`flow_hash_v4`] or
//! [`flow_hash_v6`] of a packet's 5-tuple; userspace computes the same
//! functions (the tc packet tests predict a flow's backend with them) and
//! hashes backends with [`murmur3`] to build the tables. One copy, so every
//! node and both sides agree bit for bit (the values are pinned below).
//! `#[inline(always)]` and index loops: the kernel's code is generated as
//! when the hash was written there.

/// The largest table size `M` (a prime): a `MAGLEV` element (the hash
/// table's 48-byte header, the 8-byte key, `4 × M` bytes of value and the
/// allocator's 8-byte list node) then fits one 4 KiB allocation. 1009
/// entries would need the next size class, 8 KiB.
pub const MAX_SIZE: u32 = 997;

/// The `MAGLEV` key of a table in one scope: `rev_nat_id` is the table id
/// a frontend's slot 0 names (`ServiceValue::maglev_table_id`), one of the
/// rev-NAT ids of the frontends sharing it.
pub const fn key(rev_nat_id: u32, scope: u8) -> u64 {
    (rev_nat_id as u64) | ((scope as u64) << 32)
}

/// Value of `MAGLEV`: backend ids (`BACKEND_*` keys). Only the first
/// [`MaglevConfig::size`] entries are used; entry `hash(5-tuple) % size` is
/// the flow's backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MaglevTable {
    /// Backend ids.
    pub backends: [u32; MAX_SIZE as usize],
}
const _: () = assert!(core::mem::size_of::<MaglevTable>() == 3988);

/// Value of `MAGLEV_CFG` (an array of one).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MaglevConfig {
    /// The table size `M` (a prime, at most [`MAX_SIZE`]); 0: the
    /// tc path picks backends at random (`--lb-algorithm=random`).
    pub size: u32,
    /// The cluster-wide seed of the 5-tuple hash.
    pub seed: u32,
}
const _: () = assert!(core::mem::size_of::<MaglevConfig>() == 8);

/// One MurmurHash3 block: `w` mixed into `h`.
#[inline(always)]
pub const fn murmur3_round(h: u32, w: u32) -> u32 {
    let k = w
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

/// MurmurHash3's finalizer, after `words` 4-byte blocks.
#[inline(always)]
pub const fn murmur3_finish(h: u32, words: u32) -> u32 {
    let mut h = h ^ words.wrapping_mul(4);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// 32-bit MurmurHash3 of `words` (each one 4-byte block).
#[inline(always)]
pub fn murmur3(words: &[u32], seed: u32) -> u32 {
    let mut h = seed;
    let mut i = 0;
    while i < words.len() {
        h = murmur3_round(h, words[i]);
        i += 1;
    }
    // At most a few words: the cast cannot truncate.
    murmur3_finish(h, words.len() as u32)
}

/// The ports and protocol: the last two blocks of both 5-tuple hashes.
#[inline(always)]
const fn ports(h: u32, sport: u16, dport: u16, protocol: u8) -> u32 {
    let h = murmur3_round(h, ((sport as u32) << 16) | dport as u32);
    murmur3_round(h, protocol as u32)
}

/// The hash of an IPv4 5-tuple: addresses as numbers (`u32::from_be` of the
/// network-order field), ports in host order.
#[inline(always)]
pub const fn flow_hash_v4(
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
    protocol: u8,
    seed: u32,
) -> u32 {
    let h = murmur3_round(seed, saddr);
    let h = murmur3_round(h, daddr);
    murmur3_finish(ports(h, sport, dport, protocol), 4)
}

/// The hash of an IPv6 5-tuple: addresses in network order, each read as
/// four big-endian words; ports in host order.
#[inline(always)]
pub const fn flow_hash_v6(
    saddr: &[u8; 16],
    daddr: &[u8; 16],
    sport: u16,
    dport: u16,
    protocol: u8,
    seed: u32,
) -> u32 {
    let mut h = seed;
    let mut i = 0;
    while i < 4 {
        let o = i * 4;
        h = murmur3_round(
            h,
            u32::from_be_bytes([saddr[o], saddr[o + 1], saddr[o + 2], saddr[o + 3]]),
        );
        i += 1;
    }
    let mut i = 0;
    while i < 4 {
        let o = i * 4;
        h = murmur3_round(
            h,
            u32::from_be_bytes([daddr[o], daddr[o + 1], daddr[o + 2], daddr[o + 3]]),
        );
        i += 1;
    }
    murmur3_finish(ports(h, sport, dport, protocol), 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_matches_the_reference_vectors() {
        assert_eq!(murmur3(&[0], 0), 0x2362_f9de);
        assert_eq!(murmur3(&[0x6463_6261], 0x9747_b28c), 0xf047_8627);
    }

    /// Pinned: a change here moves every flow to another table entry on
    /// nodes running the new code only (kernel and userspace share this
    /// function, so they cannot drift apart; nodes of two versions can).
    #[test]
    fn the_flow_hashes_are_pinned() {
        let v4 = |a: [u8; 4]| u32::from_be_bytes(a);
        assert_eq!(
            flow_hash_v4(
                v4([192, 0, 2, 1]),
                v4([10, 96, 0, 10]),
                40000,
                80,
                6,
                0x6d61_676c
            ),
            0x2e18_bf56
        );
        assert_eq!(
            flow_hash_v4(v4([198, 51, 100, 7]), v4([203, 0, 113, 9]), 1, 65535, 17, 1),
            0x43ef_24c8
        );
        let mut c = [0u8; 16];
        c[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        c[15] = 1;
        let mut v = [0u8; 16];
        v[..6].copy_from_slice(&[0xfd, 0x00, 0x00, 0x96, 0x00, 0x00]);
        v[15] = 0x10;
        assert_eq!(flow_hash_v6(&c, &v, 40000, 80, 6, 0x6d61_676c), 0x4e2d_e22f);
        let c = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6];
        let mut v = [0u8; 16];
        v[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        v[14..].copy_from_slice(&[0xff, 0xff]);
        assert_eq!(flow_hash_v6(&c, &v, 1, 65535, 17, 1), 0xc580_6b4c);
    }

    #[test]
    fn the_v4_hash_is_murmur3_of_the_tuple_words() {
        let words = [0xc000_0201, 0x0a60_000a, (40000 << 16) | 80, 6];
        assert_eq!(
            flow_hash_v4(words[0], words[1], 40000, 80, 6, 7),
            murmur3(&words, 7)
        );
    }
}
