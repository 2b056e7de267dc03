//! Packet parsing for the tc programs: Ethernet, then IPv4 (IHL honoured) or
//! IPv6 (TCP/UDP directly after the fixed header, or after a Fragment
//! header), then the ports. A fragmented datagram's first fragment records
//! its ports and the later ones take them from that record (`frag`).
//!
//! Every read goes through `bpf_skb_load_bytes` (`TcContext::load`), so a short
//! packet is a failed read, never an out-of-bounds access. Anything we do not
//! translate comes back as the [`Reason`] it passes untouched for.

use aya_ebpf::{EbpfContext, helpers::bpf_skb_load_bytes, programs::TcContext};
use proxy_common::{Be16, Be32, FragPorts, Reason, proto};

use crate::{frag, stats::count};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_FRAGMENT: u8 = 44;
/// Length of the IPv6 Fragment header.
const FRAG6_HLEN: usize = 8;
/// Offsets in the IPv4 header.
pub const IP4_CSUM: usize = ETH_HLEN + 10;
pub const IP4_SADDR: usize = ETH_HLEN + 12;
pub const IP4_DADDR: usize = ETH_HLEN + 16;
/// Offsets in the IPv6 header.
pub const IP6_SADDR: usize = ETH_HLEN + 8;
pub const IP6_DADDR: usize = ETH_HLEN + 24;
pub const IP6_HLEN: usize = 40;
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;

/// A TCP or UDP packet's tuple and where its fields live.
#[derive(Clone, Copy, Default)]
pub struct Flow<A> {
    pub saddr: A,
    pub daddr: A,
    pub sport: Be16,
    pub dport: Be16,
    pub proto: u8,
    /// Offset of the transport header.
    pub l4_off: usize,
    /// Offset of the transport checksum.
    pub csum_off: usize,
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
    /// A fragment after the first: no transport header in this packet
    /// (`l4_off` and `csum_off` mean nothing), its ports are the first
    /// fragment's (`frag`). Only the IP header is rewritten.
    pub l3_only: bool,
}

/// The Ethernet frame's ethertype (host order); `None` for a runt.
#[inline(always)]
pub fn ethertype(ctx: &TcContext) -> Option<u16> {
    ctx.load::<u16>(12).ok().map(u16::from_be)
}

/// IPv4 → TCP/UDP, or the reason the packet is left alone.
#[inline(always)]
pub fn parse4(ctx: &TcContext) -> Result<Flow<Be32>, Reason> {
    let vihl = ctx.load::<u8>(ETH_HLEN).map_err(|_| Reason::TcTruncated)?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 || (ctx.len() as usize) < ETH_HLEN + ihl {
        return Err(Reason::TcTruncated);
    }
    let frag = u16::from_be(
        ctx.load::<u16>(ETH_HLEN + 6)
            .map_err(|_| Reason::TcTruncated)?,
    );
    let protocol = ctx
        .load::<u8>(ETH_HLEN + 9)
        .map_err(|_| Reason::TcTruncated)?;
    let saddr = Be32(
        ctx.load::<u32>(IP4_SADDR)
            .map_err(|_| Reason::TcTruncated)?,
    );
    let daddr = Be32(
        ctx.load::<u32>(IP4_DADDR)
            .map_err(|_| Reason::TcTruncated)?,
    );
    let l4_off = ETH_HLEN + ihl;
    // The identification, read only for fragments.
    let ip_id = || {
        ctx.load::<u16>(ETH_HLEN + 4)
            .map(Be16)
            .map_err(|_| Reason::TcTruncated)
    };
    if frag & 0x1fff != 0 {
        // A later fragment: its ports are its first fragment's.
        let found = frag::ports4(saddr, daddr, ip_id()?, protocol);
        let ports = later_fragment(protocol, found)?;
        let mut flow = Flow {
            saddr,
            daddr,
            ..Flow::default()
        };
        l3_only(&mut flow, protocol, ports);
        return Ok(flow);
    }
    if protocol == IPPROTO_ICMP {
        let kind = ctx.load::<u8>(l4_off).map_err(|_| Reason::TcTruncated)?;
        // Destination unreachable (frag needed included), time exceeded.
        return Err(if kind == 3 || kind == 11 {
            Reason::TcIcmpErrorPassed
        } else {
            Reason::TcPassProtocol
        });
    }
    let (sport, dport, csum_off, tcp_flags) = ports(ctx, protocol, l4_off)?;
    // A first fragment (more follow): its ports, for the later ones.
    if frag & 0x2000 != 0 && !frag::remember4(saddr, daddr, ip_id()?, protocol, sport, dport) {
        return Err(Reason::TcFragmentDropped);
    }
    Ok(Flow {
        saddr,
        daddr,
        sport,
        dport,
        proto: protocol,
        l4_off,
        csum_off,
        tcp_flags,
        l3_only: false,
    })
}

/// A later fragment's ports: the record its first fragment left
/// (`tc_fragment_forwarded`), or the reason it is left alone
/// (`tc_fragment_passed`: not TCP/UDP) or dropped (`tc_fragment_unknown`).
#[inline(always)]
fn later_fragment(protocol: u8, found: Option<FragPorts>) -> Result<FragPorts, Reason> {
    if protocol != proto::TCP && protocol != proto::UDP {
        return Err(Reason::TcFragmentPassed);
    }
    let ports = found.ok_or(Reason::TcFragmentUnknown)?;
    count(Reason::TcFragmentForwarded);
    Ok(ports)
}

/// Fills in a later fragment's flow (addresses already in `out`): the
/// datagram's ports, and nothing of a transport header.
#[inline(always)]
fn l3_only<A>(out: &mut Flow<A>, protocol: u8, ports: FragPorts) {
    out.sport = ports.sport;
    out.dport = ports.dport;
    out.proto = protocol;
    out.l4_off = 0;
    out.csum_off = 0;
    // A later fragment says nothing about a TCP flow's progress: taken as a
    // SYN is, it neither closes the flow nor moves it past the handshake.
    out.tcp_flags = if protocol == proto::TCP { TCP_SYN } else { 0 };
    out.l3_only = true;
}

/// IPv6 → TCP/UDP into `out`, or the reason the packet is left alone. The
/// addresses are loaded straight into `out` (no 16-byte temporaries).
#[inline(always)]
pub fn parse6(ctx: &TcContext, out: &mut Flow<[u8; 16]>) -> Result<(), Reason> {
    let vtc = ctx.load::<u8>(ETH_HLEN).map_err(|_| Reason::TcTruncated)?;
    if vtc >> 4 != 6 {
        return Err(Reason::TcTruncated);
    }
    let mut next = ctx
        .load::<u8>(ETH_HLEN + 6)
        .map_err(|_| Reason::TcTruncated)?;
    load16(ctx, IP6_SADDR, &mut out.saddr)?;
    load16(ctx, IP6_DADDR, &mut out.daddr)?;
    let mut l4_off = ETH_HLEN + IP6_HLEN;
    // A Fragment header right after the fixed header (RFC 8200 §4.5):
    // next header, reserved, offset (13 bits) · 2 reserved bits · M,
    // identification (32 bits).
    let mut first_of: Option<Be32> = None;
    if next == IPPROTO_FRAGMENT {
        let e = |_| Reason::TcTruncated;
        next = ctx.load::<u8>(l4_off).map_err(e)?;
        let frag = u16::from_be(ctx.load::<u16>(l4_off + 2).map_err(e)?);
        let id = Be32(ctx.load::<u32>(l4_off + 4).map_err(e)?);
        l4_off += FRAG6_HLEN;
        if frag & 0xfff8 != 0 {
            let found = frag::ports6(&out.saddr, &out.daddr, id, next);
            l3_only(out, next, later_fragment(next, found)?);
            return Ok(());
        }
        if next != proto::TCP && next != proto::UDP {
            return Err(Reason::TcFragmentPassed);
        }
        if frag & 1 != 0 {
            first_of = Some(id);
        }
    }
    if next == IPPROTO_ICMPV6 {
        let kind = ctx.load::<u8>(l4_off).map_err(|_| Reason::TcTruncated)?;
        // Destination unreachable, packet too big, time exceeded, parameter problem.
        return Err(if (1..=4).contains(&kind) {
            Reason::TcIcmpErrorPassed
        } else {
            Reason::TcPassProtocol
        });
    }
    let (sport, dport, csum_off, tcp_flags) = ports(ctx, next, l4_off)?;
    if let Some(id) = first_of
        && !frag::remember6(&out.saddr, &out.daddr, id, next, FragPorts { sport, dport })
    {
        return Err(Reason::TcFragmentDropped);
    }
    out.sport = sport;
    out.dport = dport;
    out.proto = next;
    out.l4_off = l4_off;
    out.csum_off = csum_off;
    out.tcp_flags = tcp_flags;
    out.l3_only = false;
    Ok(())
}

/// Loads 16 bytes at `off` into `dst`.
#[inline(always)]
fn load16(ctx: &TcContext, off: usize, dst: &mut [u8; 16]) -> Result<(), Reason> {
    // SAFETY: `dst` is 16 writable bytes; the helper checks the packet bounds.
    let ret = unsafe { bpf_skb_load_bytes(ctx.as_ptr(), off as u32, dst.as_mut_ptr().cast(), 16) };
    if ret == 0 {
        Ok(())
    } else {
        Err(Reason::TcTruncated)
    }
}

/// An ICMP error about a TCP/UDP packet: where the quoted packet lives and
/// its tuple (as it was sent, i.e. already translated by us).
#[derive(Clone, Copy, Default)]
pub struct IcmpError<A> {
    pub outer_daddr: A,
    /// Offset of the ICMP header.
    pub icmp_off: usize,
    /// Offset of the quoted IP header.
    pub inner_off: usize,
    /// Offset of the quoted transport header (its first 8 bytes are present).
    pub inner_l4_off: usize,
    pub inner: Flow<A>,
}

/// Parses an ICMPv4 destination-unreachable or time-exceeded quoting a
/// TCP/UDP packet; `Err` for anything else.
#[inline(always)]
pub fn parse_icmp_error4(ctx: &TcContext, out: &mut IcmpError<Be32>) -> Result<(), Reason> {
    let e = |_| Reason::TcIcmpErrorPassed;
    let ihl = usize::from(ctx.load::<u8>(ETH_HLEN).map_err(e)? & 0x0f) * 4;
    let icmp_off = ETH_HLEN + ihl;
    let kind = ctx.load::<u8>(icmp_off).map_err(e)?;
    if kind != 3 && kind != 11 {
        return Err(Reason::TcIcmpErrorPassed);
    }
    let inner_off = icmp_off + 8;
    let inner_ihl = usize::from(ctx.load::<u8>(inner_off).map_err(e)? & 0x0f) * 4;
    if inner_ihl < 20 {
        return Err(Reason::TcIcmpErrorPassed);
    }
    let inner_l4_off = inner_off + inner_ihl;
    // The quote must lie inside the datagram (its total length), not only
    // inside the frame: the ICMP checksum a rewrite updates covers the
    // datagram alone, so bytes past it must not be translated.
    let total = usize::from(u16::from_be(ctx.load::<u16>(ETH_HLEN + 2).map_err(e)?));
    if (ctx.len() as usize) < inner_l4_off + 8 || ETH_HLEN + total < inner_l4_off + 8 {
        return Err(Reason::TcIcmpErrorPassed);
    }
    out.inner.proto = ctx.load::<u8>(inner_off + 9).map_err(e)?;
    if out.inner.proto != proto::TCP && out.inner.proto != proto::UDP {
        return Err(Reason::TcIcmpErrorPassed);
    }
    out.outer_daddr = Be32(ctx.load::<u32>(IP4_DADDR).map_err(e)?);
    out.inner.saddr = Be32(ctx.load::<u32>(inner_off + 12).map_err(e)?);
    out.inner.daddr = Be32(ctx.load::<u32>(inner_off + 16).map_err(e)?);
    out.inner.sport = Be16(ctx.load::<u16>(inner_l4_off).map_err(e)?);
    out.inner.dport = Be16(ctx.load::<u16>(inner_l4_off + 2).map_err(e)?);
    out.icmp_off = icmp_off;
    out.inner_off = inner_off;
    out.inner_l4_off = inner_l4_off;
    Ok(())
}

/// Parses an ICMPv6 destination-unreachable, packet-too-big or
/// time-exceeded quoting a TCP/UDP packet (directly after its fixed header).
#[inline(always)]
pub fn parse_icmp_error6(ctx: &TcContext, out: &mut IcmpError<[u8; 16]>) -> Result<(), Reason> {
    let e = |_| Reason::TcIcmpErrorPassed;
    let icmp_off = ETH_HLEN + IP6_HLEN;
    let kind = ctx.load::<u8>(icmp_off).map_err(e)?;
    if !(1..=3).contains(&kind) {
        return Err(Reason::TcIcmpErrorPassed);
    }
    let inner_off = icmp_off + 8;
    let inner_l4_off = inner_off + IP6_HLEN;
    // Inside the datagram (its payload length), not only the frame: see
    // `parse_icmp_error4`.
    let payload = usize::from(u16::from_be(ctx.load::<u16>(ETH_HLEN + 4).map_err(e)?));
    if (ctx.len() as usize) < inner_l4_off + 8 || icmp_off + payload < inner_l4_off + 8 {
        return Err(Reason::TcIcmpErrorPassed);
    }
    out.inner.proto = ctx.load::<u8>(inner_off + 6).map_err(e)?;
    if out.inner.proto != proto::TCP && out.inner.proto != proto::UDP {
        return Err(Reason::TcIcmpErrorPassed);
    }
    load16(ctx, IP6_DADDR, &mut out.outer_daddr).map_err(|_| Reason::TcIcmpErrorPassed)?;
    load16(ctx, inner_off + 8, &mut out.inner.saddr).map_err(|_| Reason::TcIcmpErrorPassed)?;
    load16(ctx, inner_off + 24, &mut out.inner.daddr).map_err(|_| Reason::TcIcmpErrorPassed)?;
    out.inner.sport = Be16(ctx.load::<u16>(inner_l4_off).map_err(e)?);
    out.inner.dport = Be16(ctx.load::<u16>(inner_l4_off + 2).map_err(e)?);
    out.icmp_off = icmp_off;
    out.inner_off = inner_off;
    out.inner_l4_off = inner_l4_off;
    Ok(())
}

/// Ports, checksum offset and TCP flags; the whole fixed transport header
/// must be present.
#[inline(always)]
fn ports(ctx: &TcContext, protocol: u8, l4_off: usize) -> Result<(Be16, Be16, usize, u8), Reason> {
    let (hlen, csum) = match protocol {
        proto::TCP => (20, 16),
        proto::UDP => (8, 6),
        _ => return Err(Reason::TcPassProtocol),
    };
    if (ctx.len() as usize) < l4_off + hlen {
        return Err(Reason::TcTruncated);
    }
    let sport = Be16(ctx.load::<u16>(l4_off).map_err(|_| Reason::TcTruncated)?);
    let dport = Be16(
        ctx.load::<u16>(l4_off + 2)
            .map_err(|_| Reason::TcTruncated)?,
    );
    let tcp_flags = if protocol == proto::TCP {
        ctx.load::<u8>(l4_off + 13)
            .map_err(|_| Reason::TcTruncated)?
    } else {
        0
    };
    Ok((sport, dport, l4_off + csum, tcp_flags))
}
