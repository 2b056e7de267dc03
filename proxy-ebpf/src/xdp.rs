//! `xdp_ingress` (`--xdp`): the established flows' fast path on the devices
//! tc attaches to, ahead of `tc_ingress`, with the same conntrack maps.
//!
//! A TCP or UDP packet whose tuple has a fresh entry in the established map
//! (`CT_V4`/`CT_V6`: a flow tc translated and saw answered) gets the
//! entry's rewrite (forward: to the backend, SNATed when the flow is; reply:
//! back to frontend → client) with direct packet access and incremental
//! checksums ([`crate::csum`]), the TTL/hop limit decremented, and is sent
//! out of the FIB's next hop: `XDP_TX` when that is the device it came in
//! on, `bpf_redirect` otherwise. The entry is refreshed as tc refreshes it
//! (at most once per `REFRESH_NS`).
//!
//! Everything else goes on to tc unchanged (`XDP_PASS`), decided before any
//! byte is written, so tc never sees a packet XDP rewrote:
//! - non-IP frames, IPv4 with options, IPv6 with extension headers,
//!   fragments, ICMP (errors included), protocols other than TCP/UDP,
//!   truncated headers, and packets no fresh established entry knows (new
//!   flows, pending flows, source ranges: tc decides those): `xdp_pass`;
//! - TCP SYN, FIN or RST, and flows whose entry still says `SYN_ONLY`
//!   (tc's conntrack moves the flow's state): `xdp_pass_tc_state`;
//! - a FIB lookup that does not give a resolved next hop (a local
//!   destination, no neighbour yet, forwarding off, needs fragmenting), or a
//!   TTL/hop limit that would expire: `xdp_fib_passed`.
//!
//! A forward entry whose backend was removed is passed, so tc re-balances
//! the flow. Checksums are updated, never recomputed: the packet must carry
//! a full transport checksum, as received from a NIC; a `CHECKSUM_PARTIAL`
//! packet from a local virtual device (a veth whose sender offloads
//! checksums) would come out with a wrong one (see ARCHITECTURE.md).

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams, xdp_action},
    helpers::{bpf_fib_lookup, bpf_ktime_get_ns, bpf_redirect},
    macros::xdp,
    programs::XdpContext,
};
use proxy_common::{Be16, Be32, Reason, ct_flags, proto};

use crate::{
    csum,
    family::{self, Ct, CtEntry, Family, Tuple, V4, V6},
    packet::{ETH_HLEN, ETH_P_IP, ETH_P_IPV6, IP6_HLEN, TCP_FIN, TCP_RST, TCP_SYN},
    stats::count,
    tc,
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// IPv4 header without options.
const IP4_HLEN: usize = 20;
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;

#[xdp]
pub fn xdp_ingress(ctx: XdpContext) -> u32 {
    let (reason, action) = match ingress(&ctx) {
        Ok(done) => done,
        Err(reason) => (reason, xdp_action::XDP_PASS),
    };
    count(reason);
    action
}

#[inline(always)]
fn ingress(ctx: &XdpContext) -> Result<(Reason, u32), Reason> {
    let eth = at::<[u8; ETH_HLEN]>(ctx, 0)?;
    // SAFETY: `at` checked the 14 bytes are inside the packet.
    let ethertype = u16::from_be_bytes(unsafe { [(*eth)[12], (*eth)[13]] });
    match ethertype {
        ETH_P_IP => ingress4(ctx),
        ETH_P_IPV6 => ingress6(ctx),
        _ => Err(Reason::XdpPass),
    }
}

/// A pointer to a `T` at `off` in the packet, if the packet holds it.
#[inline(always)]
fn at<T>(ctx: &XdpContext, off: usize) -> Result<*mut T, Reason> {
    let start = ctx.data() + off;
    if start + core::mem::size_of::<T>() > ctx.data_end() {
        return Err(Reason::XdpPass);
    }
    Ok(start as *mut T)
}

/// Reads a `T` at `p` (packet data: no alignment).
///
/// # Safety
/// `p` must point to `size_of::<T>()` readable bytes.
#[inline(always)]
unsafe fn get<T: Copy>(p: *const u8) -> T {
    // SAFETY: the caller's contract.
    unsafe { core::ptr::read_unaligned(p.cast::<T>()) }
}

/// Writes `v` at `p` (packet data: no alignment).
///
/// # Safety
/// `p` must point to `size_of::<T>()` writable bytes.
#[inline(always)]
unsafe fn put<T>(p: *mut u8, v: T) {
    // SAFETY: the caller's contract.
    unsafe { core::ptr::write_unaligned(p.cast::<T>(), v) }
}

/// A transport header: where it is, its ports, checksum offset in it, flags.
struct L4 {
    base: *mut u8,
    sport: Be16,
    dport: Be16,
    /// Offset of the checksum from `base`.
    csum_at: usize,
    tcp_flags: u8,
}

/// The TCP or UDP header at `off`.
#[inline(always)]
fn l4(ctx: &XdpContext, protocol: u8, off: usize) -> Result<L4, Reason> {
    let (base, csum_at, flags_at) = if protocol == proto::TCP {
        (at::<[u8; TCP_HLEN]>(ctx, off)?.cast::<u8>(), 16, Some(13))
    } else if protocol == proto::UDP {
        (at::<[u8; UDP_HLEN]>(ctx, off)?.cast::<u8>(), 6, None)
    } else {
        return Err(Reason::XdpPass);
    };
    // SAFETY: `at` checked the whole header (20 or 8 bytes) is in the packet.
    unsafe {
        Ok(L4 {
            base,
            sport: Be16(get::<u16>(base)),
            dport: Be16(get::<u16>(base.add(2))),
            csum_at,
            tcp_flags: flags_at.map_or(0, |f| *base.add(f)),
        })
    }
}

/// The fresh established entry for `key`, or why tc should have the packet.
#[inline(always)]
fn established<F: Family>(
    key: &Tuple<F::Addr>,
    tcp_flags: u8,
    now: u64,
) -> Result<CtEntry<F::Addr>, Reason> {
    if key.proto == proto::TCP && tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST) != 0 {
        return Err(Reason::XdpPassTcState);
    }
    let entry = F::ct_get(key, Ct::Established).ok_or(Reason::XdpPass)?;
    if !family::fresh_at(entry.last_seen_ns, entry.flags, key.proto, now) {
        return Err(Reason::XdpPass);
    }
    if entry.flags & ct_flags::SYN_ONLY != 0 {
        return Err(Reason::XdpPassTcState);
    }
    if entry.flags & ct_flags::REPLY == 0 && !F::backend_exists(entry.backend_id) {
        return Err(Reason::XdpPass);
    }
    Ok(entry)
}

/// Refreshes the entry as tc does, and says which way the flow went.
#[inline(always)]
fn refresh<F: Family>(key: &Tuple<F::Addr>, entry: &CtEntry<F::Addr>, now: u64) -> Reason {
    if !tc::recent(entry, now) {
        F::ct_touch(key, Ct::Established, now, 0, 0);
    }
    if entry.flags & ct_flags::REPLY != 0 {
        Reason::XdpCtReply
    } else {
        Reason::XdpCtForward
    }
}

/// An all-zero parameter block (every field is an integer or array of them).
#[inline(always)]
fn zeroed() -> FibParams {
    // SAFETY: `bpf_fib_lookup` is plain old data; all zeros is valid.
    unsafe { core::mem::zeroed() }
}

/// Where the FIB sends a packet: the device and the Ethernet header.
struct Hop {
    ifindex: u32,
    dmac: [u8; 6],
    smac: [u8; 6],
}

/// Looks `params` up; the next hop only when it is resolved.
#[inline(always)]
fn lookup(ctx: &XdpContext, params: &mut FibParams) -> Result<Hop, Reason> {
    // SAFETY: `params` is a live parameter block of the size given.
    let ret = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            params,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    if ret != i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        return Err(Reason::XdpFibPassed);
    }
    // SAFETY: reading the output half of the union, which the helper wrote
    // on success.
    let macs = unsafe { params.__bindgen_anon_6.__bindgen_anon_2 };
    Ok(Hop {
        ifindex: params.ifindex,
        dmac: macs.dmac,
        smac: macs.smac,
    })
}

/// Writes the next hop's MACs and sends the packet out of its device.
#[inline(always)]
fn send(ctx: &XdpContext, hop: &Hop) -> Result<u32, Reason> {
    let eth = at::<[u8; ETH_HLEN]>(ctx, 0)?.cast::<u8>();
    // SAFETY: `eth` is 14 bytes inside the packet.
    unsafe {
        put(eth, hop.dmac);
        put(eth.add(6), hop.smac);
    }
    if hop.ifindex == ctx.ingress_ifindex() as u32 {
        return Ok(xdp_action::XDP_TX);
    }
    // SAFETY: the helper only records where the packet goes.
    Ok(unsafe { bpf_redirect(hop.ifindex, 0) } as u32)
}

/// The transport checksum after the addresses (`addr`) and ports changed.
#[inline(always)]
fn l4_csum(
    protocol: u8,
    old: u16,
    addr: impl Fn(u16) -> u16,
    l4: &L4,
    to_sport: Be16,
    to_dport: Be16,
) -> u16 {
    let update = |c: u16| {
        let c = addr(c);
        let c = csum::replace16(c, l4.sport.0, to_sport.0);
        csum::replace16(c, l4.dport.0, to_dport.0)
    };
    if protocol == proto::UDP {
        csum::udp(old, update)
    } else {
        update(old)
    }
}

/// Writes the ports and the transport checksum.
///
/// # Safety
/// `l4.base` must point to the whole header [`l4`] checked.
#[inline(always)]
unsafe fn write_l4(l4: &L4, csum: u16, to: &Tuple<impl Copy>) {
    // SAFETY: the caller's contract: offsets 0, 2 and `csum_at` (6 or 16)
    // are inside the header.
    unsafe {
        put(l4.base, to.sport.0);
        put(l4.base.add(2), to.dport.0);
        put(l4.base.add(l4.csum_at), csum);
    }
}

/// Out of line, like `ingress6`: each family's frame on its own (the
/// verifier's 512 bytes for a call chain).
#[inline(never)]
fn ingress4(ctx: &XdpContext) -> Result<(Reason, u32), Reason> {
    let ip = at::<[u8; IP4_HLEN]>(ctx, ETH_HLEN)?.cast::<u8>();
    // SAFETY: `at` checked the 20 bytes are in the packet.
    let (vihl, frag, ttl, protocol, saddr, daddr) = unsafe {
        (
            *ip,
            u16::from_be(get::<u16>(ip.add(6))),
            *ip.add(8),
            *ip.add(9),
            Be32(get::<u32>(ip.add(12))),
            Be32(get::<u32>(ip.add(16))),
        )
    };
    // Options, fragments (more to come, or an offset): tc's.
    if vihl != 0x45 || frag & 0x3fff != 0 {
        return Err(Reason::XdpPass);
    }
    let l4 = l4(ctx, protocol, ETH_HLEN + IP4_HLEN)?;
    let key = Tuple {
        saddr,
        daddr,
        sport: l4.sport,
        dport: l4.dport,
        proto: protocol,
    };
    // SAFETY: the helper takes no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let entry = established::<V4>(&key, l4.tcp_flags, now)?;
    if ttl <= 1 {
        return Err(Reason::XdpFibPassed);
    }
    let to = entry.to;
    let hop = fib4(ctx, &to, ip)?;
    // From here on the packet is ours: rewritten and sent.
    let addr = |c: u16| {
        let c = csum::replace32(c, saddr.0, to.saddr.0);
        csum::replace32(c, daddr.0, to.daddr.0)
    };
    // SAFETY: `ip` is the 20 checked bytes; `l4.base` its checked header.
    unsafe {
        let ttl_proto = get::<u16>(ip.add(8));
        put(ip.add(8), ttl - 1);
        let ip_csum = csum::replace16(
            addr(get::<u16>(ip.add(10))),
            ttl_proto,
            get::<u16>(ip.add(8)),
        );
        put(ip.add(10), ip_csum);
        put(ip.add(12), to.saddr.0);
        put(ip.add(16), to.daddr.0);
        let old = get::<u16>(l4.base.add(l4.csum_at));
        write_l4(
            &l4,
            l4_csum(protocol, old, addr, &l4, to.sport, to.dport),
            &to,
        );
    }
    let reason = refresh::<V4>(&key, &entry, now);
    Ok((reason, send(ctx, &hop)?))
}

/// The IPv4 FIB lookup for the packet whose (checked) header is at `ip`,
/// rewritten to `to`. Out of line: the parameter block gets its own frame
/// (and BPF functions take 5 arguments at most).
#[inline(never)]
fn fib4(ctx: &XdpContext, to: &Tuple<Be32>, ip: *const u8) -> Result<Hop, Reason> {
    // SAFETY: `ingress4` checked the 20 bytes at `ip`.
    let (tos, tot_len, protocol) =
        unsafe { (*ip.add(1), u16::from_be(get::<u16>(ip.add(2))), *ip.add(9)) };
    let mut params = zeroed();
    params.family = AF_INET;
    params.ifindex = ctx.ingress_ifindex() as u32;
    params.l4_protocol = protocol;
    params.sport = to.sport.0;
    params.dport = to.dport.0;
    params.__bindgen_anon_1.tot_len = tot_len;
    params.__bindgen_anon_2.tos = tos;
    params.__bindgen_anon_3.ipv4_src = to.saddr.0;
    params.__bindgen_anon_4.ipv4_dst = to.daddr.0;
    lookup(ctx, &mut params)
}

#[inline(never)]
fn ingress6(ctx: &XdpContext) -> Result<(Reason, u32), Reason> {
    let ip = at::<[u8; IP6_HLEN]>(ctx, ETH_HLEN)?.cast::<u8>();
    // SAFETY: `at` checked the 40 bytes are in the packet.
    let (first, next, hops, saddr, daddr) = unsafe {
        (
            get::<u32>(ip),
            *ip.add(6),
            *ip.add(7),
            get::<[u8; 16]>(ip.add(8)),
            get::<[u8; 16]>(ip.add(24)),
        )
    };
    if u32::from_be(first) >> 28 != 6 {
        return Err(Reason::XdpPass);
    }
    // Extension headers (fragments included) and ICMPv6: `l4` passes them.
    let l4 = l4(ctx, next, ETH_HLEN + IP6_HLEN)?;
    let key = Tuple {
        saddr,
        daddr,
        sport: l4.sport,
        dport: l4.dport,
        proto: next,
    };
    // SAFETY: the helper takes no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let entry = established::<V6>(&key, l4.tcp_flags, now)?;
    if hops <= 1 {
        return Err(Reason::XdpFibPassed);
    }
    let hop = fib6(ctx, &entry.to, ip)?;
    rewrite6(ip, &l4, &key, &entry.to);
    let reason = refresh::<V6>(&key, &entry, now);
    Ok((reason, send(ctx, &hop)?))
}

/// The IPv6 FIB lookup for the packet whose (checked) header is at `ip`,
/// rewritten to `to`. Out of line, as [`fib4`].
#[inline(never)]
fn fib6(ctx: &XdpContext, to: &Tuple<[u8; 16]>, ip: *const u8) -> Result<Hop, Reason> {
    // SAFETY: `ingress6` checked the 40 bytes at `ip`.
    let (first, payload_len, next) = unsafe {
        (
            get::<u32>(ip),
            u16::from_be(get::<u16>(ip.add(4))),
            *ip.add(6),
        )
    };
    let mut params = zeroed();
    params.family = AF_INET6;
    params.ifindex = ctx.ingress_ifindex() as u32;
    params.l4_protocol = next;
    params.sport = to.sport.0;
    params.dport = to.dport.0;
    params.__bindgen_anon_1.tot_len = payload_len.saturating_add(IP6_HLEN as u16);
    // The traffic class and flow label (`IPV6_FLOWINFO_MASK`).
    params.__bindgen_anon_2.flowinfo = first & 0x0fff_ffff_u32.to_be();
    params.__bindgen_anon_3.ipv6_src = u8x16_to_u32x4(&to.saddr);
    params.__bindgen_anon_4.ipv6_dst = u8x16_to_u32x4(&to.daddr);
    lookup(ctx, &mut params)
}

/// Rewrites an IPv6 packet (`key`: its tuple as received) to `to`, the hop
/// limit decremented. Out of line: its own frame.
#[inline(never)]
fn rewrite6(ip: *mut u8, l4: &L4, key: &Tuple<[u8; 16]>, to: &Tuple<[u8; 16]>) {
    let next = key.proto;
    let addr = |c: u16| {
        let c = csum::replace128(c, &key.saddr, &to.saddr);
        csum::replace128(c, &key.daddr, &to.daddr)
    };
    // SAFETY: `ip` is the 40 bytes `ingress6` checked; `l4.base` the header
    // `l4` checked.
    unsafe {
        // `ingress6` passes a hop limit of 0 or 1 to tc.
        put(ip.add(7), (*ip.add(7)).saturating_sub(1));
        put(ip.add(8), to.saddr);
        put(ip.add(24), to.daddr);
        let old = get::<u16>(l4.base.add(l4.csum_at));
        write_l4(l4, l4_csum(next, old, addr, l4, to.sport, to.dport), to);
    }
}

/// An IPv6 address as the FIB parameter block holds it (network order words).
#[inline(always)]
fn u8x16_to_u32x4(a: &[u8; 16]) -> [u32; 4] {
    let w = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}
