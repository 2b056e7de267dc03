//! The socket hooks' "no Service here" pre-filter: `SVC_FILTER`, a bitmap of
//! hashed `{address, port, protocol}` of every frontend the hooks translate
//! (each frontend's internal-scope slot 0), in an array of [`WORDS`] `u64`
//! words (8 KiB, two pages, one bitmap for both families).
//!
//! `connect` and `sendmsg` test the destination's bit before touching the
//! service map: a clear bit is a certain miss, so a connection to anything
//! but a Service (a pod, the API server, the internet) costs one array read
//! instead of a cold hash lookup. A set bit only means "maybe": the lookup
//! follows, as before, so a collision costs time, never correctness.
//!
//! Userspace sets a frontend's bit before publishing it and clears bits only
//! after the frontends are gone (ARCHITECTURE.md, update ordering). The hash
//! is here so both sides compute it alike (values pinned below).

use crate::maglev::{murmur3_finish, murmur3_round};

/// Bits in the bitmap, log 2.
pub const BITS_LOG2: u32 = 16;
/// Entries of `SVC_FILTER` (`u64` words).
pub const WORDS: u32 = (1 << BITS_LOG2) / 64;
/// The hash's seed ("svcf").
pub const SEED: u32 = 0x7376_6366;

/// The hash of an IPv4 frontend: the address as a number (`u32::from_be` of
/// the network-order field), the port in host order.
#[inline(always)]
pub const fn hash_v4(addr: u32, port: u16, protocol: u8) -> u32 {
    let h = murmur3_round(SEED, addr);
    let h = murmur3_round(h, ((port as u32) << 8) | protocol as u32);
    murmur3_finish(h, 2)
}

/// The hash of an IPv6 frontend: the address in network order, read as four
/// big-endian words; the port in host order.
#[inline(always)]
pub const fn hash_v6(addr: &[u8; 16], port: u16, protocol: u8) -> u32 {
    let mut h = SEED;
    let mut i = 0;
    while i < 4 {
        let o = i * 4;
        h = murmur3_round(
            h,
            u32::from_be_bytes([addr[o], addr[o + 1], addr[o + 2], addr[o + 3]]),
        );
        i += 1;
    }
    let h = murmur3_round(h, ((port as u32) << 8) | protocol as u32);
    murmur3_finish(h, 5)
}

/// The `SVC_FILTER` index of the word holding `hash`'s bit.
#[inline(always)]
pub const fn word(hash: u32) -> u32 {
    (hash >> 6) & (WORDS - 1)
}

/// `hash`'s bit within its word.
#[inline(always)]
pub const fn bit(hash: u32) -> u64 {
    1 << (hash & 63)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned: the kernel and userspace share these functions, so they
    /// cannot drift apart; a change would only matter to a daemon of one
    /// version filling a bitmap read by programs of another (an upgrade
    /// refills it before attaching its own programs).
    #[test]
    fn the_hashes_are_pinned() {
        let v4 = |a: [u8; 4]| u32::from_be_bytes(a);
        assert_eq!(hash_v4(v4([10, 96, 0, 10]), 80, 6), 0x673c_2881);
        assert_eq!(hash_v4(v4([10, 96, 0, 10]), 80, 17), 0xf436_4fbc);
        assert_eq!(hash_v4(v4([192, 0, 2, 1]), 30080, 6), 0x4bc6_59e3);
        let mut a = [0u8; 16];
        a[..6].copy_from_slice(&[0xfd, 0x00, 0x00, 0x96, 0x00, 0x00]);
        a[15] = 0x10;
        assert_eq!(hash_v6(&a, 80, 6), 0x5790_5c58);
    }

    #[test]
    fn word_and_bit_cover_the_bitmap() {
        assert_eq!(WORDS, 1024);
        assert_eq!(word(u32::MAX), WORDS - 1);
        assert_eq!(bit(u32::MAX), 1 << 63);
        assert_eq!((word(0), bit(0)), (0, 1));
        assert_eq!((word(64 * 5 + 3), bit(64 * 5 + 3)), (5, 8));
    }
}
