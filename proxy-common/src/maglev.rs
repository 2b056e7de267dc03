//! Maglev consistent hashing: the `MAGLEV` tables and `MAGLEV_CFG` (see
//! `maps`), and their key.

/// The largest table size `M` (a prime): a `MAGLEV` element (the hash
/// table's 48-byte header, the 8-byte key, `4 × M` bytes of value and the
/// allocator's 8-byte list node) then fits one 4 KiB allocation. 1009
/// entries would need the next size class, 8 KiB.
pub const MAX_SIZE: u32 = 997;

/// The `MAGLEV` key of a frontend's table in one scope.
pub const fn key(rev_nat_id: u16, scope: u8) -> u32 {
    (rev_nat_id as u32) | ((scope as u32) << 16)
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
