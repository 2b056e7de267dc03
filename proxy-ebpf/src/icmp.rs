//! UDP rejects (TCP gets a RST, see `rst`): a packet to a frontend with no
//! backend is turned, in place, into an ICMP port-unreachable (IPv4 type 3 code 3) or ICMPv6 destination
//! unreachable / port unreachable (type 1 code 4) back to its sender, which
//! the caller redirects out of the device it came in on.
//!
//! The reply is built whole in a stack buffer (Ethernet with the MACs
//! swapped, the IP header with the addresses swapped, the ICMP header, the
//! quote), the packet is resized with `bpf_skb_change_tail`, and the buffer
//! stored over it. For IPv4 the quote is the offending IP header plus the
//! first 8 bytes of its transport header (RFC 792's minimum); for IPv6 it is
//! the fixed header and the whole fixed transport header (TCP 20, UDP 8). IPv4 packets with options are not rejected (the
//! caller drops them and counts it): the quote would need a variable length.

use aya_ebpf::{EbpfContext, helpers::bpf_csum_diff, programs::TcContext};
use aya_ebpf::{
    cty::c_long,
    helpers::{bpf_skb_load_bytes, bpf_skb_store_bytes},
};
use proxy_common::{Be32, proto};

use crate::packet::{ETH_HLEN, Flow, IP6_HLEN, IPPROTO_ICMP, IPPROTO_ICMPV6};

const IP4_HLEN: usize = 20;
const ICMP_HLEN: usize = 8;
const QUOTE4: usize = IP4_HLEN + 8;
const LEN4: usize = ETH_HLEN + IP4_HLEN + ICMP_HLEN + QUOTE4;
/// The longest ICMPv6 reject: a TCP header quoted whole.
const LEN6_MAX: usize = ETH_HLEN + IP6_HLEN + ICMP_HLEN + IP6_HLEN + 20;
const HOP_LIMIT: u8 = 64;

/// Copies `N` bytes from the packet at `off` into `dst` (a constant length,
/// which the verifier needs).
#[inline(always)]
fn load<const N: usize>(ctx: &TcContext, off: usize, dst: *mut [u8; N]) -> Result<(), c_long> {
    // SAFETY: `dst` points to `N` writable bytes on the stack.
    let ret = unsafe { bpf_skb_load_bytes(ctx.as_ptr(), off as u32, dst.cast(), N as u32) };
    if ret == 0 { Ok(()) } else { Err(ret) }
}

/// The one's-complement sum of `bytes` (a multiple of 4 long, a constant
/// once inlined), added to `seed`.
#[inline(always)]
pub(crate) fn sum(bytes: &mut [u8], seed: u32) -> Result<u32, c_long> {
    // SAFETY: the helper reads `bytes.len()` bytes from the slice's start and
    // writes nothing.
    let ret = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            bytes.as_mut_ptr().cast(),
            bytes.len() as u32,
            seed,
        )
    };
    if ret < 0 { Err(ret) } else { Ok(ret as u32) }
}

/// Folds a 32-bit sum into the 16-bit checksum, as stored (native order of
/// the summed words, so the bytes come out in network order).
#[inline(always)]
pub(crate) fn fold(sum: u32) -> [u8; 2] {
    let mut s = (sum & 0xffff) + (sum >> 16);
    s = (s & 0xffff) + (s >> 16);
    (!(s as u16)).to_ne_bytes()
}

/// Swaps the Ethernet addresses into `buf[0..12]` and sets the ethertype.
#[inline(always)]
pub(crate) fn ethernet(ctx: &TcContext, buf: &mut [u8], ethertype: [u8; 2]) -> Result<(), c_long> {
    let mut macs = [0u8; 12];
    load(ctx, 0, &mut macs)?;
    buf[..6].copy_from_slice(&macs[6..12]);
    buf[6..12].copy_from_slice(&macs[..6]);
    buf[12..14].copy_from_slice(&ethertype);
    Ok(())
}

/// Turns an IPv4 TCP/UDP packet into the port-unreachable for it.
///
/// Out of line (its buffer gets its own stack frame); returns whether the
/// packet was rewritten (a BPF function returns one register, so no `Result`).
#[inline(never)]
pub fn reject4(ctx: &TcContext, flow: &Flow<Be32>) -> bool {
    build4(ctx, flow).is_ok()
}

#[inline(always)]
fn build4(ctx: &TcContext, flow: &Flow<Be32>) -> Result<(), c_long> {
    if flow.l4_off != ETH_HLEN + IP4_HLEN {
        return Err(-1);
    }
    let mut buf = [0u8; LEN4];
    ethernet(ctx, &mut buf, [0x08, 0x00])?;
    let ip = ETH_HLEN;
    let total = (IP4_HLEN + ICMP_HLEN + QUOTE4) as u16;
    buf[ip] = 0x45;
    buf[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
    buf[ip + 8] = HOP_LIMIT;
    buf[ip + 9] = IPPROTO_ICMP;
    buf[ip + 12..ip + 16].copy_from_slice(&flow.daddr.octets());
    buf[ip + 16..ip + 20].copy_from_slice(&flow.saddr.octets());
    let icmp = ip + IP4_HLEN;
    buf[icmp] = 3;
    buf[icmp + 1] = 3;
    let mut quote = [0u8; QUOTE4];
    load(ctx, ETH_HLEN, &mut quote)?;
    buf[icmp + ICMP_HLEN..].copy_from_slice(&quote);
    let ip_sum = sum(&mut buf[ip..ip + IP4_HLEN], 0)?;
    buf[ip + 10..ip + 12].copy_from_slice(&fold(ip_sum));
    let icmp_sum = sum(&mut buf[icmp..], 0)?;
    buf[icmp + 2..icmp + 4].copy_from_slice(&fold(icmp_sum));
    ctx.change_tail(LEN4 as u32, 0)?;
    ctx.store(0, &buf, 0)
}

/// Turns an IPv6 TCP/UDP packet into the ICMPv6 port-unreachable for it,
/// quoting the IPv6 header and the whole fixed transport header (20 bytes
/// for TCP, 8 for UDP).
///
/// Out of line (its buffer gets its own stack frame); returns whether the
/// packet was rewritten (a BPF function returns one register, so no `Result`).
#[inline(never)]
pub fn reject6(ctx: &TcContext, flow: &Flow<[u8; 16]>) -> bool {
    if flow.proto == proto::TCP {
        build6::<20>(ctx, flow).is_ok()
    } else {
        build6::<8>(ctx, flow).is_ok()
    }
}

/// `T`: how many transport bytes to quote (a constant, so every length the
/// helpers see is one too).
#[inline(always)]
fn build6<const T: usize>(ctx: &TcContext, flow: &Flow<[u8; 16]>) -> Result<(), c_long> {
    let mut buf = [0u8; LEN6_MAX];
    ethernet(ctx, &mut buf, [0x86, 0xdd])?;
    let ip = ETH_HLEN;
    let icmp = ip + IP6_HLEN;
    let quote = IP6_HLEN + T;
    let end = icmp + ICMP_HLEN + quote;
    let payload = (ICMP_HLEN + quote) as u16;
    buf[ip] = 0x60;
    buf[ip + 4..ip + 6].copy_from_slice(&payload.to_be_bytes());
    buf[ip + 6] = IPPROTO_ICMPV6;
    buf[ip + 7] = HOP_LIMIT;
    buf[ip + 8..ip + 24].copy_from_slice(&flow.daddr);
    buf[ip + 24..ip + 40].copy_from_slice(&flow.saddr);
    buf[icmp] = 1;
    buf[icmp + 1] = 4;
    load_into(ctx, ETH_HLEN, &mut buf[icmp + ICMP_HLEN..end])?;
    // The pseudo-header: both addresses, the upper-layer length, the next header.
    let mut pseudo = [0u8; 8];
    pseudo[2..4].copy_from_slice(&payload.to_be_bytes());
    pseudo[7] = IPPROTO_ICMPV6;
    let s = sum(&mut buf[ip + 8..ip + 40], 0)?;
    let s = sum(&mut pseudo, s)?;
    let s = sum(&mut buf[icmp..end], s)?;
    buf[icmp + 2..icmp + 4].copy_from_slice(&fold(s));
    ctx.change_tail(end as u32, 0)?;
    // SAFETY: `end` bytes of `buf` are readable; the helper checks the packet.
    let ret =
        unsafe { bpf_skb_store_bytes(ctx.as_ptr().cast(), 0, buf.as_ptr().cast(), end as u32, 0) };
    if ret == 0 { Ok(()) } else { Err(ret) }
}

/// Copies `dst.len()` bytes (a constant once inlined) from the packet at `off`.
#[inline(always)]
fn load_into(ctx: &TcContext, off: usize, dst: &mut [u8]) -> Result<(), c_long> {
    // SAFETY: `dst` is `dst.len()` writable bytes; the helper checks the packet.
    let ret = unsafe {
        bpf_skb_load_bytes(
            ctx.as_ptr(),
            off as u32,
            dst.as_mut_ptr().cast(),
            dst.len() as u32,
        )
    };
    if ret == 0 { Ok(()) } else { Err(ret) }
}
