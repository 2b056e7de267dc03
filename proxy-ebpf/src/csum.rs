//! Incremental Internet checksum updates (RFC 1624, `HC' = ~(~HC + ~m + m')`)
//! for programs with direct packet access (XDP), where tc uses
//! `bpf_l3_csum_replace`/`bpf_l4_csum_replace`.
//!
//! Values are taken as they sit in the packet (network order read as native
//! words): the one's complement sum is the same in either byte order as long
//! as every operand is read the same way.

/// Folds a 32-bit one's complement sum to 16 bits.
#[inline(always)]
fn fold(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// `csum` after one 16-bit word of what it covers changed from `from` to `to`.
#[inline(always)]
pub fn replace16(csum: u16, from: u16, to: u16) -> u16 {
    !fold(u32::from(!csum) + u32::from(!from) + u32::from(to))
}

/// `csum` after one 32-bit word (an IPv4 address) changed from `from` to `to`.
#[inline(always)]
pub fn replace32(csum: u16, from: u32, to: u32) -> u16 {
    let sum = u32::from(!csum)
        + u32::from(!(from as u16))
        + u32::from(!((from >> 16) as u16))
        + u32::from(to as u16)
        + u32::from((to >> 16) as u16);
    !fold(sum)
}

/// `csum` after 16 bytes (an IPv6 address) changed from `from` to `to`.
#[inline(always)]
pub fn replace128(csum: u16, from: &[u8; 16], to: &[u8; 16]) -> u16 {
    let mut sum = u32::from(!csum);
    let mut i = 0;
    while i < 16 {
        let old = u16::from_ne_bytes([from[i], from[i + 1]]);
        let new = u16::from_ne_bytes([to[i], to[i + 1]]);
        sum += u32::from(!old) + u32::from(new);
        i += 2;
    }
    !fold(sum)
}

/// A UDP checksum update: 0 means "no checksum" (IPv4) and stays 0, and a
/// computed 0 is written as `0xffff` (`BPF_F_MARK_MANGLED_0` in tc).
#[inline(always)]
pub fn udp(csum: u16, update: impl FnOnce(u16) -> u16) -> u16 {
    if csum == 0 {
        return 0;
    }
    match update(csum) {
        0 => 0xffff,
        new => new,
    }
}
