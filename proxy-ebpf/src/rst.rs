//! TCP rejects: a TCP segment to a frontend with no backend is turned, in
//! place, into the RST that answers it (RFC 793, "Reset Generation"), which
//! the caller redirects out of the device it came in on. A RST ends the
//! client's `connect()` at once; an ICMP error can be dropped by the client's
//! kernel when it arrives while `connect()` holds the socket lock
//! (`TcpExtLockDroppedIcmps`), costing a SYN retransmission.
//!
//! - the segment has ACK: `<SEQ=SEG.ACK><CTL=RST>`;
//! - otherwise (a SYN): `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`, where
//!   `SEG.LEN` counts the payload, SYN and FIN.
//!
//! The reply has no options and no payload (the packet is cut with
//! `bpf_skb_change_tail`); it is built whole in a stack buffer (MACs,
//! addresses and ports swapped), checksums computed from scratch. A segment
//! carrying RST is never answered (RFC 793), nor are IPv4 packets with
//! options (as for the ICMP rejects): the caller drops them.

use aya_ebpf::{cty::c_long, programs::TcContext};
use proxy_common::Be32;

use crate::{
    icmp::{ethernet, fold, sum},
    packet::{ETH_HLEN, Flow, IP6_HLEN, TCP_FIN, TCP_RST, TCP_SYN},
};

const IP4_HLEN: usize = 20;
const TCP_HLEN: usize = 20;
const LEN4: usize = ETH_HLEN + IP4_HLEN + TCP_HLEN;
const LEN6: usize = ETH_HLEN + IP6_HLEN + TCP_HLEN;
const IPPROTO_TCP: u8 = 6;
const HOP_LIMIT: u8 = 64;
const TCP_ACK: u8 = 0x10;

/// The reset's sequence number, acknowledgement number and flags for the
/// segment at `flow.l4_off` whose IP payload is `ip_payload` bytes long.
#[inline(always)]
fn numbers<A>(ctx: &TcContext, flow: &Flow<A>, ip_payload: u16) -> Result<(u32, u32, u8), c_long> {
    if flow.tcp_flags & TCP_RST != 0 {
        return Err(-1);
    }
    let seq = u32::from_be(ctx.load::<u32>(flow.l4_off + 4)?);
    let ack = u32::from_be(ctx.load::<u32>(flow.l4_off + 8)?);
    let doff = usize::from(ctx.load::<u8>(flow.l4_off + 12)? >> 4) * 4;
    if flow.tcp_flags & TCP_ACK != 0 {
        return Ok((ack, 0, TCP_RST));
    }
    let payload = usize::from(ip_payload).saturating_sub(doff) as u32;
    let len = payload
        + u32::from(flow.tcp_flags & TCP_SYN != 0)
        + u32::from(flow.tcp_flags & TCP_FIN != 0);
    Ok((0, seq.wrapping_add(len), TCP_RST | TCP_ACK))
}

/// Writes the TCP header of the reset into `tcp` (checksum left 0).
#[inline(always)]
fn header<A>(tcp: &mut [u8], flow: &Flow<A>, (seq, ack, flags): (u32, u32, u8)) {
    tcp[0..2].copy_from_slice(&flow.dport.0.to_ne_bytes());
    tcp[2..4].copy_from_slice(&flow.sport.0.to_ne_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = (TCP_HLEN as u8 / 4) << 4;
    tcp[13] = flags;
}

/// Turns an IPv4 TCP segment into the RST for it. Out of line (its buffer
/// gets its own stack frame); whether the packet was rewritten.
#[inline(never)]
pub fn reject4(ctx: &TcContext, flow: &Flow<Be32>) -> bool {
    build4(ctx, flow).is_ok()
}

#[inline(always)]
fn build4(ctx: &TcContext, flow: &Flow<Be32>) -> Result<(), c_long> {
    if flow.l4_off != ETH_HLEN + IP4_HLEN {
        return Err(-1);
    }
    let total = u16::from_be(ctx.load::<u16>(ETH_HLEN + 2)?);
    let numbers = numbers(ctx, flow, total.saturating_sub(IP4_HLEN as u16))?;
    let mut buf = [0u8; LEN4];
    ethernet(ctx, &mut buf, [0x08, 0x00])?;
    let ip = ETH_HLEN;
    buf[ip] = 0x45;
    buf[ip + 2..ip + 4].copy_from_slice(&((IP4_HLEN + TCP_HLEN) as u16).to_be_bytes());
    buf[ip + 8] = HOP_LIMIT;
    buf[ip + 9] = IPPROTO_TCP;
    buf[ip + 12..ip + 16].copy_from_slice(&flow.daddr.octets());
    buf[ip + 16..ip + 20].copy_from_slice(&flow.saddr.octets());
    let tcp = ip + IP4_HLEN;
    header(&mut buf[tcp..], flow, numbers);
    let ip_sum = sum(&mut buf[ip..ip + IP4_HLEN], 0)?;
    buf[ip + 10..ip + 12].copy_from_slice(&fold(ip_sum));
    // The pseudo-header: both addresses, zero, the protocol, the TCP length.
    let mut pseudo = [0, IPPROTO_TCP, 0, TCP_HLEN as u8];
    let s = sum(&mut buf[ip + 12..ip + 20], 0)?;
    let s = sum(&mut pseudo, s)?;
    let s = sum(&mut buf[tcp..], s)?;
    buf[tcp + 16..tcp + 18].copy_from_slice(&fold(s));
    ctx.change_tail(LEN4 as u32, 0)?;
    ctx.store(0, &buf, 0)
}

/// Turns an IPv6 TCP segment into the RST for it. Out of line (its buffer
/// gets its own stack frame); whether the packet was rewritten.
#[inline(never)]
pub fn reject6(ctx: &TcContext, flow: &Flow<[u8; 16]>) -> bool {
    build6(ctx, flow).is_ok()
}

#[inline(always)]
fn build6(ctx: &TcContext, flow: &Flow<[u8; 16]>) -> Result<(), c_long> {
    let payload = u16::from_be(ctx.load::<u16>(ETH_HLEN + 4)?);
    let numbers = numbers(ctx, flow, payload)?;
    let mut buf = [0u8; LEN6];
    ethernet(ctx, &mut buf, [0x86, 0xdd])?;
    let ip = ETH_HLEN;
    buf[ip] = 0x60;
    buf[ip + 4..ip + 6].copy_from_slice(&(TCP_HLEN as u16).to_be_bytes());
    buf[ip + 6] = IPPROTO_TCP;
    buf[ip + 7] = HOP_LIMIT;
    buf[ip + 8..ip + 24].copy_from_slice(&flow.daddr);
    buf[ip + 24..ip + 40].copy_from_slice(&flow.saddr);
    let tcp = ip + IP6_HLEN;
    header(&mut buf[tcp..], flow, numbers);
    // The pseudo-header: both addresses, the upper-layer length, the next header.
    let mut pseudo = [0, 0, 0, TCP_HLEN as u8, 0, 0, 0, IPPROTO_TCP];
    let s = sum(&mut buf[ip + 8..ip + 40], 0)?;
    let s = sum(&mut pseudo, s)?;
    let s = sum(&mut buf[tcp..], s)?;
    buf[tcp + 16..tcp + 18].copy_from_slice(&fold(s));
    ctx.change_tail(LEN6 as u32, 0)?;
    ctx.store(0, &buf, 0)
}
