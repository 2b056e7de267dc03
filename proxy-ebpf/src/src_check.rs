//! `loadBalancerSourceRanges` for clients the socket hooks serve.
//!
//! `connect`/`sendmsg` translate a socket before the kernel has chosen its
//! source address, so they cannot check it. Instead, when the frontend has
//! [`svc_flags::SOURCE_RANGES`], they [`record`] `{rev-NAT id, backend}` in
//! the socket's storage (`SOCK_SRC_CHECK`). `sock_egress` (`cgroup_skb/egress`,
//! on the same cgroup, attached by the daemon only while some frontend has
//! ranges) looks at the first packet such a socket sends to that backend:
//! its source is now known. Outside the ranges, the packet is dropped (a
//! datagram's `sendmsg` fails with `EPERM`; a TCP SYN is retransmitted until
//! `connect` times out, as with kube-proxy's drop). Inside, the record is
//! marked done (family 0): a connected socket's source never changes, so its
//! later packets only pay for the storage lookup. An unconnected UDP socket's
//! record is rewritten in place by each `sendmsg` to the frontend, and
//! checked by the datagram that follows. Records go with their socket.

use aya_ebpf::{
    EbpfContext,
    bindings::{__sk_buff, bpf_sock},
    helpers::generated::{bpf_sk_fullsock, bpf_sk_storage_get},
    macros::cgroup_skb,
    programs::{SkBuffContext, SockAddrContext},
};
use proxy_common::{Be16, Be32, Reason, SockSrcCheck, svc_flags};

use crate::{lb, maps::SOCK_SRC_CHECK, stats::count};

/// Verdicts of cgroup_skb programs.
const PASS: i32 = 1;
const DROP: i32 = 0;

/// `SockSrcCheck::family` of a record whose check passed: nothing to do.
const DONE: u8 = 0;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// Records the check a translated socket owes, when `flags` (the frontend's
/// `svc_flags`) say it has source ranges. `addr` is the backend, network
/// order (IPv4 in the first four bytes). An error refuses the call: without
/// the record, the source would go unchecked.
#[inline(always)]
pub fn record(
    ctx: &SockAddrContext,
    flags: u16,
    rev_nat_id: u32,
    family: u8,
    addr: [u8; 16],
    port: Be16,
) -> Result<(), Reason> {
    if flags & svc_flags::SOURCE_RANGES == 0 {
        return Ok(());
    }
    let slot = SOCK_SRC_CHECK.get_or_insert_ptr_mut(ctx, None);
    if slot.is_null() {
        return Err(Reason::SockSourceCheckFailed);
    }
    // SAFETY: a non-null pointer from `bpf_sk_storage_get` is the socket's
    // storage, valid for the whole program run.
    unsafe {
        *slot = SockSrcCheck {
            addr,
            port,
            rev_nat_id,
            family,
            _pad: 0,
        };
    }
    Ok(())
}

/// The IPv4 address as the first four bytes of a record's `addr`.
#[inline(always)]
pub fn v4_bytes(addr: Be32) -> [u8; 16] {
    let b = addr.0.to_ne_bytes();
    let mut out = [0u8; 16];
    out[0] = b[0];
    out[1] = b[1];
    out[2] = b[2];
    out[3] = b[3];
    out
}

#[cgroup_skb(egress)]
pub fn sock_egress(ctx: SkBuffContext) -> i32 {
    match check(&ctx) {
        Ok(()) => PASS,
        Err(reason) => {
            count(reason);
            DROP
        }
    }
}

#[inline(always)]
fn map_ptr() -> *mut core::ffi::c_void {
    core::ptr::from_ref(&SOCK_SRC_CHECK).cast_mut().cast()
}

#[inline(always)]
fn check(ctx: &SkBuffContext) -> Result<(), Reason> {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: the context is the `__sk_buff` the kernel passed in; cgroup_skb
    // programs may read `sk`.
    let sk: *mut bpf_sock = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return Ok(());
    }
    // SAFETY: `sk` is the packet's socket, checked non-null above.
    let sk = unsafe { bpf_sk_fullsock(sk) };
    if sk.is_null() {
        return Ok(());
    }
    // SAFETY: a full socket; no value and no flags: a lookup only.
    let found = unsafe { bpf_sk_storage_get(map_ptr(), sk.cast(), core::ptr::null_mut(), 0) }
        .cast::<SockSrcCheck>();
    if found.is_null() {
        return Ok(());
    }
    // SAFETY: non-null storage of this socket, valid for the program run.
    let want = unsafe { *found };
    let allowed = match want.family {
        4 => allowed4(ctx, &want),
        6 => allowed6(ctx, &want),
        _ => None,
    };
    match allowed {
        // Not the packet the record is about (another destination).
        None => Ok(()),
        Some(false) => Err(Reason::SockSourceRangeDropped),
        Some(true) => {
            // Marked done rather than deleted: the socket's later packets
            // find a record with nothing to check (as cheap as a miss), and
            // the next `sendmsg` of an unconnected socket rewrites it in
            // place instead of allocating it again.
            // SAFETY: non-null storage of this socket, as above.
            unsafe { (*found).family = DONE };
            Ok(())
        }
    }
}

/// The destination port of a TCP or UDP header at `l4`, if the packet has one.
#[inline(always)]
fn dport(ctx: &SkBuffContext, protocol: u8, l4: usize) -> Option<u16> {
    if protocol != IPPROTO_TCP && protocol != IPPROTO_UDP {
        return None;
    }
    ctx.load::<u16>(l4 + 2).ok()
}

/// `Some(allowed)` when the IPv4 packet goes to the recorded backend.
#[inline(always)]
fn allowed4(ctx: &SkBuffContext, want: &SockSrcCheck) -> Option<bool> {
    let ver_ihl = ctx.load::<u8>(0).ok()?;
    if ver_ihl >> 4 != 4 {
        return None;
    }
    let daddr = ctx.load::<[u8; 4]>(16).ok()?;
    if daddr != [want.addr[0], want.addr[1], want.addr[2], want.addr[3]] {
        return None;
    }
    let protocol = ctx.load::<u8>(9).ok()?;
    let l4 = usize::from(ver_ihl & 0x0f) * 4;
    if dport(ctx, protocol, l4).is_some_and(|p| p != want.port.0) {
        return None;
    }
    let saddr = ctx.load::<u32>(12).ok()?;
    Some(lb::source_allowed4(want.rev_nat_id, Be32(saddr)))
}

/// `Some(allowed)` when the IPv6 packet goes to the recorded backend. The
/// port is compared when no extension header comes first.
#[inline(always)]
fn allowed6(ctx: &SkBuffContext, want: &SockSrcCheck) -> Option<bool> {
    let first = ctx.load::<u8>(0).ok()?;
    if first >> 4 != 6 {
        return None;
    }
    let daddr = ctx.load::<[u8; 16]>(24).ok()?;
    if daddr != want.addr {
        return None;
    }
    let protocol = ctx.load::<u8>(6).ok()?;
    if dport(ctx, protocol, 40).is_some_and(|p| p != want.port.0) {
        return None;
    }
    let saddr = ctx.load::<[u8; 16]>(8).ok()?;
    Some(lb::source_allowed6(want.rev_nat_id, saddr))
}
