//! IP fragments on the tc path, as Cilium handles them
//! (`ipv4_handle_fragmentation`, `IPV4_FRAG_DATAGRAMS_MAP`): only a
//! datagram's first fragment carries the transport header, so it records the
//! ports under `{saddr, daddr, IP ID, proto}` (`FRAG_V4`/`FRAG_V6`, LRU), and
//! each later fragment of the same datagram looks them up. With its ports
//! known a later fragment gets the same conntrack lookup as the first, and
//! the same address rewrite (IP header only: it has no transport header;
//! the transport checksum the first fragment carries covers the whole
//! datagram, and the incremental update of the first fragment already moved
//! it by the rewrite's difference).
//!
//! Keys hold the addresses as the fragments arrive at the hook, before any
//! rewrite, so every fragment of a datagram finds the same entry. Nothing
//! removes an entry: the LRU recycles it (a datagram's fragments arrive
//! within milliseconds of one another).

use proxy_common::{Be16, Be32, FragKeyV4, FragKeyV6, FragPorts};

use crate::maps::{FRAG_V4, FRAG_V6};

/// Records a first fragment's ports; whether the map took them.
#[inline(always)]
pub fn remember4(saddr: Be32, daddr: Be32, id: Be16, proto: u8, sport: Be16, dport: Be16) -> bool {
    let key = FragKeyV4 {
        saddr,
        daddr,
        id,
        proto,
        _pad: 0,
    };
    FRAG_V4.insert(&key, &FragPorts { sport, dport }, 0).is_ok()
}

/// The ports of the datagram a later IPv4 fragment belongs to, if its first
/// fragment was seen.
#[inline(always)]
pub fn ports4(saddr: Be32, daddr: Be32, id: Be16, proto: u8) -> Option<FragPorts> {
    let key = FragKeyV4 {
        saddr,
        daddr,
        id,
        proto,
        _pad: 0,
    };
    // SAFETY: copied out at once, before another map operation could recycle
    // the LRU slot behind the reference.
    unsafe { FRAG_V4.get(&key) }.copied()
}

/// Records a first IPv6 fragment's ports; whether the map took them.
#[inline(always)]
pub fn remember6(
    saddr: &[u8; 16],
    daddr: &[u8; 16],
    id: Be32,
    proto: u8,
    ports: FragPorts,
) -> bool {
    let key = FragKeyV6 {
        saddr: *saddr,
        daddr: *daddr,
        id,
        proto,
        _pad: [0; 3],
    };
    FRAG_V6.insert(&key, &ports, 0).is_ok()
}

/// The ports of the datagram a later IPv6 fragment belongs to, if its first
/// fragment was seen.
#[inline(always)]
pub fn ports6(saddr: &[u8; 16], daddr: &[u8; 16], id: Be32, proto: u8) -> Option<FragPorts> {
    let key = FragKeyV6 {
        saddr: *saddr,
        daddr: *daddr,
        id,
        proto,
        _pad: [0; 3],
    };
    // SAFETY: copied out at once, see `ports4`.
    unsafe { FRAG_V6.get(&key) }.copied()
}
