//! Maglev consistent hashing (Eisenbud et al., NSDI 2016) for external
//! frontends: a lookup table of `M` entries (M prime) built from a frontend's
//! backend set, which the tc path indexes by a hash of the packet's 5-tuple.
//!
//! Every input is cluster-wide, so every node builds the same table for the
//! same backend set and maps a 5-tuple to the same backend: a backend's place
//! in the table comes from two hashes of its address and port (never from
//! this node's backend ids), and both hashes and the kernel's 5-tuple hash are
//! seeded by `--maglev-seed`. The table lists indexes into the backends
//! sorted by address and port; the plan turns them into this node's ids.
//!
//! Properties (tested below): each backend gets `⌊M/N⌋` or `⌈M/N⌉` entries
//! (the fill gives every backend one entry per round); removing one of `N`
//! backends moves its own entries and a few more (the paper's "minimal
//! disruption" is approximate); the table depends only on the set, not on
//! its order or on anything else the node holds.
//!
//! The hash is 32-bit MurmurHash3 over 32-bit words, `proxy_common::maglev`'s,
//! which the kernel computes too ([`flow_hash_v4`] and [`flow_hash_v6`] wrap
//! it for userspace's address types).

use std::net::IpAddr;

use proxy_common::maglev::{self as common, MAX_SIZE, murmur3};

use crate::model::Backend;

/// The default table size: the largest prime whose table still fits a 4 KiB
/// kernel allocation (see `proxy_common::maglev`).
pub const DEFAULT_SIZE: u32 = MAX_SIZE;

/// The seed's default, for clusters that set none (any value works as long
/// as every node uses the same).
pub const DEFAULT_SEED: u32 = 0x6d61_676c;

/// Salts of the two permutation hashes, so `offset` and `skip` differ.
const OFFSET_SALT: u32 = 0x9e37_79b9;
const SKIP_SALT: u32 = 0x85eb_ca6b;

/// Why a table size is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("Maglev table size {0} is not a prime")]
    NotPrime(u32),
    #[error("Maglev table size {0} is out of range (3..={MAX_SIZE})")]
    OutOfRange(u32),
}

/// The cluster-wide Maglev parameters: table size `M` and hash seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Maglev {
    size: u32,
    seed: u32,
}

impl Maglev {
    /// Checks `size` (a prime, at most `proxy_common::maglev::MAX_SIZE`).
    pub fn new(size: u32, seed: u32) -> Result<Self, SizeError> {
        if !(3..=MAX_SIZE).contains(&size) {
            return Err(SizeError::OutOfRange(size));
        }
        if !is_prime(size) {
            return Err(SizeError::NotPrime(size));
        }
        Ok(Self { size, seed })
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    pub fn seed(&self) -> u32 {
        self.seed
    }

    /// The table for `backends` (any order, no duplicates needed): entry `i`
    /// is an index into `backends`. `None` for an empty set, or one larger
    /// than the table (Maglev needs `N ≤ M`; such a frontend keeps random
    /// selection).
    pub fn table(&self, backends: &[Backend]) -> Option<Vec<usize>> {
        let n = backends.len();
        if n == 0 || n > self.size as usize {
            return None;
        }
        // Sorted by identity, so the fill order (which breaks ties between
        // backends wanting one entry) is the same on every node.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|i| (backends[*i].addr, backends[*i].port));
        let m = u64::from(self.size);
        let perms: Vec<(u64, u64)> = order
            .iter()
            .map(|i| {
                let words = backend_words(&backends[*i]);
                let offset = u64::from(murmur3(&words, self.seed ^ OFFSET_SALT)) % m;
                let skip = u64::from(murmur3(&words, self.seed ^ SKIP_SALT)) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0u64; n];
        let mut table: Vec<Option<usize>> = vec![None; self.size as usize];
        let mut filled = 0;
        'fill: loop {
            for (rank, (offset, skip)) in perms.iter().enumerate() {
                // `skip` is in 1..M and M is prime: the permutation visits
                // every entry, so a free one is found.
                let mut c = ((offset + next[rank] * skip) % m) as usize;
                while table[c].is_some() {
                    next[rank] += 1;
                    c = ((offset + next[rank] * skip) % m) as usize;
                }
                table[c] = Some(order[rank]);
                next[rank] += 1;
                filled += 1;
                if filled == table.len() {
                    break 'fill;
                }
            }
        }
        Some(table.into_iter().flatten().collect())
    }
}

/// A backend's identity as hash input: its address (network order, in
/// 32-bit words) and its port.
fn backend_words(backend: &Backend) -> Vec<u32> {
    let mut words = ip_words(backend.addr);
    words.push(u32::from(backend.port));
    words
}

fn ip_words(addr: IpAddr) -> Vec<u32> {
    match addr {
        IpAddr::V4(a) => vec![u32::from_be_bytes(a.octets())],
        IpAddr::V6(a) => a
            .octets()
            .as_chunks::<4>()
            .0
            .iter()
            .map(|c| u32::from_be_bytes(*c))
            .collect(),
    }
}

/// The kernel's hash of an IPv4 packet's 5-tuple (ports in host order).
pub fn flow_hash_v4(
    saddr: std::net::Ipv4Addr,
    daddr: std::net::Ipv4Addr,
    sport: u16,
    dport: u16,
    protocol: u8,
    seed: u32,
) -> u32 {
    common::flow_hash_v4(
        u32::from(saddr),
        u32::from(daddr),
        sport,
        dport,
        protocol,
        seed,
    )
}

/// The kernel's hash of an IPv6 packet's 5-tuple.
pub fn flow_hash_v6(
    saddr: std::net::Ipv6Addr,
    daddr: std::net::Ipv6Addr,
    sport: u16,
    dport: u16,
    protocol: u8,
    seed: u32,
) -> u32 {
    common::flow_hash_v6(
        &saddr.octets(),
        &daddr.octets(),
        sport,
        dport,
        protocol,
        seed,
    )
}

fn is_prime(n: u32) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

#[cfg(test)]
mod tests;
