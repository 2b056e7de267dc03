//! Forwarding translated packets ourselves, as Cilium does: after a rewrite
//! on ingress, a `bpf_fib_lookup` on the rewritten packet finds the next hop,
//! and the packet is sent straight out of that device (`bpf_redirect` with
//! the FIB's MACs, or `bpf_redirect_neigh` when the neighbour is not resolved
//! yet), its TTL/hop limit decremented as forwarding would (the IPv4 header
//! checksum updated). When that device is a veth whose peer is in another
//! namespace (a pod's), `bpf_redirect_peer` hands the packet straight to the
//! peer's ingress instead: no egress pass over the veth (its tc programs
//! included) and no trip through the per-CPU backlog queue.
//!
//! This is needed, not only faster: an IPv4 reply rewritten to come from the
//! node's own address (a NodePort reply) is a forwarded packet with a local
//! source, which the kernel drops as martian if it goes up the stack.
//!
//! Anything the FIB does not forward (a local or non-unicast destination,
//! forwarding off on the device, no route, needs fragmenting, a TTL that
//! would expire, a helper error) goes to the stack (`TC_ACT_OK`) as before.
//! The lookup gives no length (`tot_len` 0), so the helper checks the MTU
//! with `is_skb_forwardable`, which understands GSO packets.

use aya_ebpf::{
    EbpfContext,
    bindings::{
        __sk_buff, BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_NOT_FWDED, BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_REDIRECT,
        bpf_fib_lookup as FibParams,
    },
    helpers::{
        bpf_fib_lookup, bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer, bpf_skb_load_bytes,
    },
    programs::TcContext,
};
use proxy_common::{Reason, device_flags};

use crate::{
    maps::DEVICES,
    packet::{ETH_HLEN, IP4_CSUM, IP4_DADDR, IP4_SADDR, IP6_DADDR, IP6_SADDR},
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// Offset of the IPv4 TTL (followed by the protocol: one 16-bit word of the
/// header checksum).
const IP4_TTL: usize = ETH_HLEN + 8;
/// Offset of the IPv6 hop limit.
const IP6_HOP_LIMIT: usize = ETH_HLEN + 7;
/// The flow label and traffic class bits of the IPv6 header's first word
/// (`IPV6_FLOWINFO_MASK`), in network order.
const IP6_FLOWINFO_MASK: u32 = 0x0fff_ffff_u32.to_be();

#[inline(always)]
fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: the context is the `__sk_buff` the kernel passed in.
    unsafe { (*(ctx.as_ptr() as *const __sk_buff)).ifindex }
}

/// An all-zero parameter block (every field is an integer or array of them).
#[inline(always)]
fn zeroed() -> FibParams {
    // SAFETY: `bpf_fib_lookup` is plain old data; all zeros is valid.
    unsafe { core::mem::zeroed() }
}

/// What the lookup said, as the reason to count when the packet goes to the
/// stack; `Ok` when it can be forwarded (`neigh`: the neighbour is unresolved).
#[inline(always)]
fn outcome(ret: i64) -> Result<bool, Reason> {
    if ret < 0 {
        return Err(Reason::TcFibPassed);
    }
    match ret as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => Ok(false),
        BPF_FIB_LKUP_RET_NO_NEIGH => Ok(true),
        BPF_FIB_LKUP_RET_NOT_FWDED => Err(Reason::TcFibNotForwarded),
        BPF_FIB_LKUP_RET_FWD_DISABLED => Err(Reason::TcFibForwardingOff),
        _ => Err(Reason::TcFibPassed),
    }
}

/// Sends the packet out of the FIB's device; the reason to count.
#[inline(always)]
fn redirect(ctx: &TcContext, params: &FibParams, neigh: bool) -> Reason {
    if neigh {
        // SAFETY: no parameter block (NULL, length 0): the helper looks the
        // next hop up itself. It only records where the packet goes.
        let ret = unsafe { bpf_redirect_neigh(params.ifindex, core::ptr::null_mut(), 0, 0) };
        return if ret == i64::from(TC_ACT_REDIRECT) {
            Reason::TcFibRedirectedNeigh
        } else {
            Reason::TcFibPassed
        };
    }
    // SAFETY: reading the output half of the union, which the helper wrote
    // on success.
    let macs = unsafe { params.__bindgen_anon_6.__bindgen_anon_2 };
    if ctx.store(0, &macs.dmac, 0).is_err() || ctx.store(6, &macs.smac, 0).is_err() {
        return Reason::TcFibPassed;
    }
    if peer_netns(params.ifindex) {
        // SAFETY: the helper only records where the packet goes; the kernel
        // checks, when the program returns, that the device has a peer in
        // another namespace and that this is tc ingress (only ingress
        // forwards).
        let ret = unsafe { bpf_redirect_peer(params.ifindex, 0) };
        return if ret == i64::from(TC_ACT_REDIRECT) {
            Reason::TcFibRedirectedPeer
        } else {
            Reason::TcFibPassed
        };
    }
    // SAFETY: the helper only records where the packet goes.
    let ret = unsafe { bpf_redirect(params.ifindex, 0) };
    if ret == i64::from(TC_ACT_REDIRECT) {
        Reason::TcFibRedirected
    } else {
        Reason::TcFibPassed
    }
}

/// Whether `ifindex` is an attached veth or netkit whose peer is in another
/// namespace (`DEVICES` flag `PEER_NETNS`, set by userspace): the packet can
/// go straight into the peer's ingress, without the device's egress (its
/// qdisc and tc programs) and the veth's per-CPU backlog queue in between:
/// the kernel's `bpf_redirect_peer` fast path, as Cilium delivers to pods.
#[inline(always)]
fn peer_netns(ifindex: u32) -> bool {
    // SAFETY: copied out at once.
    unsafe { DEVICES.get(&ifindex) }.is_some_and(|d| d.flags & device_flags::PEER_NETNS != 0)
}

/// IPv4: looks the rewritten packet up and redirects it. The reason counted
/// says which; only `TcFibRedirected*` mean `TC_ACT_REDIRECT`. Out of line:
/// the 64-byte parameter block gets its own frame.
#[inline(never)]
pub fn forward4(ctx: &TcContext) -> Reason {
    let mut params = zeroed();
    params.family = AF_INET;
    params.ifindex = ifindex(ctx);
    let (Ok(tos), Ok(saddr), Ok(daddr), Ok(ttl_proto)) = (
        ctx.load::<u8>(ETH_HLEN + 1),
        ctx.load::<u32>(IP4_SADDR),
        ctx.load::<u32>(IP4_DADDR),
        ctx.load::<u16>(IP4_TTL),
    ) else {
        return Reason::TcFibPassed;
    };
    params.l4_protocol = (u16::from_be(ttl_proto) & 0xff) as u8;
    params.__bindgen_anon_2.tos = tos;
    params.__bindgen_anon_3.ipv4_src = saddr;
    params.__bindgen_anon_4.ipv4_dst = daddr;
    // SAFETY: `params` is a live parameter block of the size given.
    let ret = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            &mut params,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    let neigh = match outcome(ret) {
        Ok(neigh) => neigh,
        Err(reason) => return reason,
    };
    // The TTL is the word's first byte (big-endian high byte).
    let ttl = (u16::from_be(ttl_proto) >> 8) as u8;
    if ttl <= 1 {
        return Reason::TcFibTtlExpired;
    }
    let new = u16::from_be(ttl_proto).wrapping_sub(0x100).to_be();
    if ctx
        .l3_csum_replace(IP4_CSUM, u64::from(ttl_proto), u64::from(new), 2)
        .is_err()
        || ctx.store(IP4_TTL, &new, 0).is_err()
    {
        return Reason::TcFibPassed;
    }
    redirect(ctx, &params, neigh)
}

/// IPv6: as [`forward4`]; the hop limit has no checksum.
#[inline(never)]
pub fn forward6(ctx: &TcContext) -> Reason {
    let mut params = zeroed();
    params.family = AF_INET6;
    params.ifindex = ifindex(ctx);
    let (Ok(first), Ok(next), Ok(hops)) = (
        ctx.load::<u32>(ETH_HLEN),
        ctx.load::<u8>(ETH_HLEN + 6),
        ctx.load::<u8>(IP6_HOP_LIMIT),
    ) else {
        return Reason::TcFibPassed;
    };
    params.l4_protocol = next;
    params.__bindgen_anon_2.flowinfo = first & IP6_FLOWINFO_MASK;
    // SAFETY: each destination is 16 writable bytes inside `params` (raw
    // pointers to union fields, nothing read); the helper checks the packet.
    let loaded = unsafe {
        bpf_skb_load_bytes(
            ctx.as_ptr(),
            IP6_SADDR as u32,
            (&raw mut params.__bindgen_anon_3.ipv6_src).cast(),
            16,
        ) | bpf_skb_load_bytes(
            ctx.as_ptr(),
            IP6_DADDR as u32,
            (&raw mut params.__bindgen_anon_4.ipv6_dst).cast(),
            16,
        )
    };
    if loaded != 0 {
        return Reason::TcFibPassed;
    }
    // SAFETY: `params` is a live parameter block of the size given.
    let ret = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            &mut params,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    let neigh = match outcome(ret) {
        Ok(neigh) => neigh,
        Err(reason) => return reason,
    };
    if hops <= 1 {
        return Reason::TcFibTtlExpired;
    }
    if ctx.store(IP6_HOP_LIMIT, &(hops - 1), 0).is_err() {
        return Reason::TcFibPassed;
    }
    redirect(ctx, &params, neigh)
}
