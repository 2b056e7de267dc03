//! The packet rewrites of the tc path, per family: addresses and ports of a
//! packet (`rewrite4`/`rewrite6`), and of the packet an ICMP error quotes
//! (`icmp_error4`/`icmp_error6`), with their incremental checksum updates
//! (see [`crate::family`] for the checksum rules).

use aya_ebpf::cty::c_long;
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    helpers::bpf_csum_diff,
    programs::TcContext,
};
use proxy_common::{Be16, Be32, proto};

use crate::packet::{Flow, IP4_CSUM, IP4_DADDR, IP4_SADDR, IP6_DADDR, IP6_SADDR, IcmpError};

/// Addresses and ports: a conntrack key (with `proto`), or the rewrite a
/// conntrack entry stores.
#[derive(Clone, Copy)]
pub struct Tuple<A> {
    pub saddr: A,
    pub daddr: A,
    pub sport: Be16,
    pub dport: Be16,
    pub proto: u8,
}

#[inline(always)]
pub(crate) fn l4_flags(protocol: u8) -> u64 {
    if protocol == proto::UDP {
        u64::from(BPF_F_MARK_MANGLED_0)
    } else {
        0
    }
}

/// Rewrites the ports (shared by both families).
#[inline(always)]
pub(crate) fn rewrite_ports<A>(
    ctx: &TcContext,
    flow: &Flow<A>,
    to: &Tuple<A>,
) -> Result<(), c_long> {
    let flags = l4_flags(flow.proto);
    if to.sport != flow.sport {
        ctx.l4_csum_replace(
            flow.csum_off,
            u64::from(flow.sport.0),
            u64::from(to.sport.0),
            flags | 2,
        )?;
        ctx.store(flow.l4_off, &to.sport.0, 0)?;
    }
    if to.dport != flow.dport {
        ctx.l4_csum_replace(
            flow.csum_off,
            u64::from(flow.dport.0),
            u64::from(to.dport.0),
            flags | 2,
        )?;
        ctx.store(flow.l4_off + 2, &to.dport.0, 0)?;
    }
    Ok(())
}

#[inline(always)]
pub(crate) fn rewrite4(ctx: &TcContext, flow: &Flow<Be32>, to: &Tuple<Be32>) -> Result<(), c_long> {
    let pseudo = u64::from(BPF_F_PSEUDO_HDR) | l4_flags(flow.proto) | 4;
    // A later fragment has no transport header: the IP header only.
    let l4 = !flow.l3_only;
    if to.saddr != flow.saddr {
        let (from, new) = (u64::from(flow.saddr.0), u64::from(to.saddr.0));
        if l4 {
            ctx.l4_csum_replace(flow.csum_off, from, new, pseudo)?;
        }
        ctx.l3_csum_replace(IP4_CSUM, from, new, 4)?;
        ctx.store(IP4_SADDR, &to.saddr.0, 0)?;
    }
    if to.daddr != flow.daddr {
        let (from, new) = (u64::from(flow.daddr.0), u64::from(to.daddr.0));
        if l4 {
            ctx.l4_csum_replace(flow.csum_off, from, new, pseudo)?;
        }
        ctx.l3_csum_replace(IP4_CSUM, from, new, 4)?;
        ctx.store(IP4_DADDR, &to.daddr.0, 0)?;
    }
    if l4 {
        rewrite_ports(ctx, flow, to)
    } else {
        Ok(())
    }
}

#[inline(always)]
pub(crate) fn rewrite6(
    ctx: &TcContext,
    flow: &Flow<[u8; 16]>,
    to: &Tuple<[u8; 16]>,
) -> Result<(), c_long> {
    if flow.l3_only {
        // A later fragment: no transport header, and IPv6 has no header
        // checksum, so the addresses are all there is to rewrite.
        if to.saddr != flow.saddr {
            ctx.store(IP6_SADDR, &to.saddr, 0)?;
        }
        if to.daddr != flow.daddr {
            ctx.store(IP6_DADDR, &to.daddr, 0)?;
        }
        return Ok(());
    }
    if to.saddr != flow.saddr {
        replace6(ctx, flow, IP6_SADDR, &flow.saddr, &to.saddr)?;
    }
    if to.daddr != flow.daddr {
        replace6(ctx, flow, IP6_DADDR, &flow.daddr, &to.daddr)?;
    }
    rewrite_ports(ctx, flow, to)
}

/// Rewrites the quoted ports (covered by the ICMP checksum, no pseudo-header)
/// and folds the change of a quoted UDP checksum into the ICMP checksum.
/// `udp_old` is the quoted UDP checksum before the address updates.
#[inline(always)]
fn icmp_error_ports<A>(
    ctx: &TcContext,
    e: &IcmpError<A>,
    to: &Tuple<A>,
    udp_old: Option<u16>,
) -> Result<(), c_long> {
    let csum = e.icmp_off + 2;
    let udp_csum = e.inner_l4_off + 6;
    let mangled = u64::from(BPF_F_MARK_MANGLED_0);
    if udp_old.is_some() {
        if to.dport != e.inner.sport {
            let (from, new) = (u64::from(e.inner.sport.0), u64::from(to.dport.0));
            ctx.l4_csum_replace(udp_csum, from, new, mangled | 2)?;
        }
        if to.sport != e.inner.dport {
            let (from, new) = (u64::from(e.inner.dport.0), u64::from(to.sport.0));
            ctx.l4_csum_replace(udp_csum, from, new, mangled | 2)?;
        }
    }
    if let Some(old) = udp_old {
        let new = ctx.load::<u16>(udp_csum)?;
        if new != old {
            ctx.l4_csum_replace(csum, u64::from(old), u64::from(new), 2)?;
        }
    }
    if to.dport != e.inner.sport {
        ctx.l4_csum_replace(csum, u64::from(e.inner.sport.0), u64::from(to.dport.0), 2)?;
        ctx.store(e.inner_l4_off, &to.dport.0, 0)?;
    }
    if to.sport != e.inner.dport {
        ctx.l4_csum_replace(csum, u64::from(e.inner.dport.0), u64::from(to.sport.0), 2)?;
        ctx.store(e.inner_l4_off + 2, &to.sport.0, 0)?;
    }
    Ok(())
}

/// The quoted UDP checksum, when the quote is UDP with a checksum (not 0);
/// `None` for TCP, whose checksum lies past the 8 quoted bytes.
#[inline(always)]
fn udp_checksum<A>(ctx: &TcContext, e: &IcmpError<A>) -> Result<Option<u16>, c_long> {
    if e.inner.proto != proto::UDP {
        return Ok(None);
    }
    let csum = ctx.load::<u16>(e.inner_l4_off + 6)?;
    Ok((csum != 0).then_some(csum))
}

/// IPv4: the outer destination (IP checksum), the quoted addresses (the
/// quoted header's checksum moves by the opposite amount, so the ICMP
/// checksum is unchanged by them), the quoted ports (ICMP checksum).
#[inline(always)]
pub(crate) fn icmp_error4(
    ctx: &TcContext,
    e: &IcmpError<Be32>,
    to: &Tuple<Be32>,
) -> Result<(), c_long> {
    if to.daddr != e.outer_daddr {
        let (from, new) = (u64::from(e.outer_daddr.0), u64::from(to.daddr.0));
        ctx.l3_csum_replace(IP4_CSUM, from, new, 4)?;
        ctx.store(IP4_DADDR, &to.daddr.0, 0)?;
    }
    let inner_csum = e.inner_off + 10;
    let udp_csum = e.inner_l4_off + 6;
    let udp_old = udp_checksum(ctx, e)?;
    // The quoted UDP checksum (when not 0) covers the quoted addresses.
    let udp_flags = u64::from(BPF_F_MARK_MANGLED_0) | 4;
    if to.daddr != e.inner.saddr {
        let (from, new) = (u64::from(e.inner.saddr.0), u64::from(to.daddr.0));
        ctx.l3_csum_replace(inner_csum, from, new, 4)?;
        if udp_old.is_some() {
            ctx.l4_csum_replace(udp_csum, from, new, udp_flags)?;
        }
        ctx.store(e.inner_off + 12, &to.daddr.0, 0)?;
    }
    if to.saddr != e.inner.daddr {
        let (from, new) = (u64::from(e.inner.daddr.0), u64::from(to.saddr.0));
        ctx.l3_csum_replace(inner_csum, from, new, 4)?;
        if udp_old.is_some() {
            ctx.l4_csum_replace(udp_csum, from, new, udp_flags)?;
        }
        ctx.store(e.inner_off + 16, &to.saddr.0, 0)?;
    }
    icmp_error_ports(ctx, e, to, udp_old)
}

/// The one's-complement difference between two 16-byte addresses.
#[inline(always)]
fn diff16(from: &[u8; 16], to: &[u8; 16]) -> Result<u64, c_long> {
    let mut from = *from;
    let mut to = *to;
    // SAFETY: both pointers are to 16-byte stack arrays, the sizes given.
    let diff =
        unsafe { bpf_csum_diff(from.as_mut_ptr().cast(), 16, to.as_mut_ptr().cast(), 16, 0) };
    if diff < 0 { Err(diff) } else { Ok(diff as u64) }
}

/// IPv6: the ICMPv6 checksum covers the outer addresses (pseudo-header) and
/// the quoted packet, so every change goes into it.
#[inline(always)]
pub(crate) fn icmp_error6(
    ctx: &TcContext,
    e: &IcmpError<[u8; 16]>,
    to: &Tuple<[u8; 16]>,
) -> Result<(), c_long> {
    let csum = e.icmp_off + 2;
    if to.daddr != e.outer_daddr {
        let diff = diff16(&e.outer_daddr, &to.daddr)?;
        ctx.l4_csum_replace(csum, 0, diff, u64::from(BPF_F_PSEUDO_HDR))?;
        ctx.store(IP6_DADDR, &to.daddr, 0)?;
    }
    let udp_csum = e.inner_l4_off + 6;
    let udp_old = udp_checksum(ctx, e)?;
    let mangled = u64::from(BPF_F_MARK_MANGLED_0);
    if to.daddr != e.inner.saddr {
        let diff = diff16(&e.inner.saddr, &to.daddr)?;
        ctx.l4_csum_replace(csum, 0, diff, 0)?;
        if udp_old.is_some() {
            ctx.l4_csum_replace(udp_csum, 0, diff, mangled)?;
        }
        ctx.store(e.inner_off + 8, &to.daddr, 0)?;
    }
    if to.saddr != e.inner.daddr {
        let diff = diff16(&e.inner.daddr, &to.saddr)?;
        ctx.l4_csum_replace(csum, 0, diff, 0)?;
        if udp_old.is_some() {
            ctx.l4_csum_replace(udp_csum, 0, diff, mangled)?;
        }
        ctx.store(e.inner_off + 24, &to.saddr, 0)?;
    }
    icmp_error_ports(ctx, e, to, udp_old)
}

/// Replaces a 16-byte address at `addr_off`, updating the transport checksum
/// (pseudo-header) by the difference.
#[inline(always)]
fn replace6(
    ctx: &TcContext,
    flow: &Flow<[u8; 16]>,
    addr_off: usize,
    from: &[u8; 16],
    to: &[u8; 16],
) -> Result<(), c_long> {
    let mut from = *from;
    let mut to = *to;
    // SAFETY: both pointers are to 16-byte stack arrays, the sizes given.
    let diff =
        unsafe { bpf_csum_diff(from.as_mut_ptr().cast(), 16, to.as_mut_ptr().cast(), 16, 0) };
    if diff < 0 {
        return Err(diff);
    }
    ctx.l4_csum_replace(
        flow.csum_off,
        0,
        diff as u64,
        u64::from(BPF_F_PSEUDO_HDR) | l4_flags(flow.proto),
    )?;
    ctx.store(addr_off, &to, 0)
}
