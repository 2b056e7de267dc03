//! Key and value layouts of the guards' maps: `loadBalancerSourceRanges`
//! (`SRC_RANGE_*`, and `SOCK_SRC_CHECK` for the socket path), the reject
//! budget (`REJECT_BUDGET`) and fragment tracking (`FRAG_*`). Re-exported at
//! the crate root like [`crate::maps`]; their `aya::Pod` impls are with the
//! other map types' (`maps::pod`).

use crate::{Be16, Be32};

/// Values of `SRC_RANGE_V4` and `SRC_RANGE_V6`.
///
/// A LoadBalancer frontend with `loadBalancerSourceRanges` has one entry per
/// range of its family (`ALLOW`) and one covering only its rev-NAT id (prefix
/// length 32: every source), which is `DENY` unless a range is `/0`. A
/// longest-prefix lookup of `{rev-NAT id, source}` (prefix length 32 + the
/// address's bits) thus finds `ALLOW` for a source inside a range, `DENY`
/// for any other source, and nothing for a frontend without ranges (allowed).
pub mod src_range {
    /// The source is outside every range: drop (tc) or refuse (socket hooks).
    pub const DENY: u32 = 0;
    /// The source is inside a range.
    pub const ALLOW: u32 = 1;
    /// Bits of the key's prefix that cover the rev-NAT id.
    pub const ID_BITS: u32 = 32;
}

/// Data of an `SRC_RANGE_V4` key (after the LPM trie's `u32` prefix length,
/// which counts [`src_range::ID_BITS`] plus the source prefix's bits).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SrcRangeV4 {
    /// The frontend's rev-NAT id, big-endian (the prefix always covers it whole).
    pub rev_nat_id: Be32,
    /// The source prefix's address, host bits zero.
    pub addr: Be32,
}
const _: () = assert!(core::mem::size_of::<SrcRangeV4>() == 8);

/// Data of an `SRC_RANGE_V6` key (see [`SrcRangeV4`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SrcRangeV6 {
    /// The frontend's rev-NAT id, big-endian.
    pub rev_nat_id: Be32,
    /// The source prefix's address, network order, host bits zero.
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<SrcRangeV6>() == 20);

/// How many RSTs and ICMP errors the tc path may send for flows it cannot
/// serve: a token bucket per CPU, so a flood of packets to a frontend with no
/// backend cannot be reflected one for one (spoofed sources would turn the
/// node into an amplifier). Linux limits its own ICMP errors alike
/// (`net.ipv4.icmp_msgs_per_sec`, 1000, with a burst of 50). What is over
/// the budget is dropped and counted (`tc_reject_rate_limited`).
pub mod reject_limit {
    /// Tokens added per second, per CPU.
    pub const PER_SECOND: u64 = 1000;
    /// The bucket's size: rejects in a row before the rate applies.
    pub const BURST: u64 = 100;
    /// Nanoseconds per token.
    pub const NS_PER_TOKEN: u64 = 1_000_000_000 / PER_SECOND;
}

/// Value of `REJECT_BUDGET` (per CPU): the token bucket of
/// [`reject_limit`]. All zero at first, which reads as a full bucket (the
/// time since 0 refills it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RejectBudget {
    /// Tokens left.
    pub tokens: u64,
    /// `bpf_ktime_get_ns` when the bucket was last refilled.
    pub stamp_ns: u64,
}
const _: () = assert!(core::mem::size_of::<RejectBudget>() == 16);

/// Value of `SOCK_SRC_CHECK` (socket storage): written by `connect`/`sendmsg`
/// when they translate a socket to a frontend with
/// [`svc_flags::SOURCE_RANGES`]; read by `sock_egress` for the first packet
/// to the recorded backend, which sets `family` to 0 once the source passed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockSrcCheck {
    /// The backend the socket was sent to, network order (IPv4: the first
    /// four bytes, the rest zero).
    pub addr: [u8; 16],
    /// The backend port.
    pub port: Be16,
    /// 4 or 6: which `SRC_RANGE_*` trie, and how `addr` is read; 0 once
    /// the check passed (nothing left to check).
    pub family: u8,
    /// Zero.
    pub _pad: u8,
    /// The frontend's rev-NAT id (the `SRC_RANGE_*` key).
    pub rev_nat_id: u32,
}
const _: () = assert!(core::mem::size_of::<SockSrcCheck>() == 24);

/// Key of `FRAG_V4`: a fragmented IPv4 datagram, as its fragments arrive at
/// the hook (addresses before any rewrite).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKeyV4 {
    /// Source address.
    pub saddr: Be32,
    /// Destination address.
    pub daddr: Be32,
    /// The IP header's identification field, as in the packet.
    pub id: Be16,
    /// [`crate::proto`] number.
    pub proto: u8,
    /// Zero.
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<FragKeyV4>() == 12);

/// Key of `FRAG_V6`: a fragmented IPv6 datagram (the Fragment header's
/// 32-bit identification).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKeyV6 {
    /// Source address, network order.
    pub saddr: [u8; 16],
    /// Destination address, network order.
    pub daddr: [u8; 16],
    /// The Fragment header's identification, as in the packet.
    pub id: Be32,
    /// [`crate::proto`] number (the Fragment header's next header).
    pub proto: u8,
    /// Zero.
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<FragKeyV6>() == 40);

/// Value of `FRAG_V4` and `FRAG_V6`: the datagram's ports, from its first
/// fragment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragPorts {
    /// Source port.
    pub sport: Be16,
    /// Destination port.
    pub dport: Be16,
}
const _: () = assert!(core::mem::size_of::<FragPorts>() == 4);
