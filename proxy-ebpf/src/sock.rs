//! cgroup v2 socket hooks: socket-level load balancing.
//!
//! `connect` and `sendmsg` swap a frontend (VIP, port, protocol) for a backend
//! before the kernel routes anything, so a TCP connection or a connected UDP
//! socket pays for balancing once, and no packet is ever rewritten. Each
//! translation records `{socket cookie, backend} → frontend` in `SOCK_RNAT_*`;
//! `recvmsg` and `getpeername` use it to show the VIP to the application.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, dual-stack sockets) are served
//! from the IPv4 maps.
//!
//! A frontend with `loadBalancerSourceRanges` also gets a record in the
//! socket's storage, which `src_check` checks once the source is known.
//!
//! Before any service lookup, `connect` and `sendmsg` test the destination's
//! bit in `SVC_FILTER` (`proxy_common::prefilter`): a clear bit means no
//! Service, answered without touching the service map (issue 18: the cold
//! lookup was most of a non-Service `connect`'s cost). `recvmsg` and
//! `getpeername` look at `SOCK_RNAT_*` only and are unaffected.
//!
//! A service with no usable backend makes `connect`/`sendmsg` fail at once with
//! `ECONNREFUSED` (through `bpf_set_retval`), never after a timeout.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_set_retval},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use aya_log_ebpf::warn;
use proxy_common::{
    Be16, Be32, Reason, ServiceValue, SockRevNatKeyV4, SockRevNatKeyV6, SockRevNatV4, SockRevNatV6,
    prefilter, proto, scope, svc_flags,
};

use crate::{
    lb,
    maps::{SOCK_RNAT_V4, SOCK_RNAT_V6, SVC_FILTER},
    src_check,
    stats::count,
};

/// Verdicts of cgroup sock_addr programs.
const ALLOW: i32 = 1;
const REJECT: i32 = 0;
const ECONNREFUSED: i32 = 111;

#[cgroup_sock_addr(connect4)]
pub fn sock_connect4(ctx: SockAddrContext) -> i32 {
    verdict(&ctx, xlate_fwd4(&ctx))
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    verdict(&ctx, xlate_fwd4(&ctx))
}

#[cgroup_sock_addr(recvmsg4)]
pub fn sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    xlate_rev4(&ctx, Reason::ReplyRevNatted);
    ALLOW
}

#[cgroup_sock_addr(getpeername4)]
pub fn sock_getpeername4(ctx: SockAddrContext) -> i32 {
    xlate_rev4(&ctx, Reason::PeerRevNatted);
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn sock_connect6(ctx: SockAddrContext) -> i32 {
    verdict(&ctx, xlate_fwd6(&ctx))
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sock_sendmsg6(ctx: SockAddrContext) -> i32 {
    verdict(&ctx, xlate_fwd6(&ctx))
}

#[cgroup_sock_addr(recvmsg6)]
pub fn sock_recvmsg6(ctx: SockAddrContext) -> i32 {
    xlate_rev6(&ctx, Reason::ReplyRevNatted);
    ALLOW
}

#[cgroup_sock_addr(getpeername6)]
pub fn sock_getpeername6(ctx: SockAddrContext) -> i32 {
    xlate_rev6(&ctx, Reason::PeerRevNatted);
    ALLOW
}

/// Counts the outcome and turns it into a verdict. Errors refuse the call with
/// `ECONNREFUSED` so the application fails fast. Map inconsistencies (a slot or
/// backend missing under a published frontend) should never happen, so they
/// are also logged; "no backend" is ordinary and only counted.
#[inline(always)]
fn verdict(ctx: &SockAddrContext, outcome: Result<Reason, Reason>) -> i32 {
    match outcome {
        Ok(reason) => {
            count(reason);
            ALLOW
        }
        Err(reason) => {
            count(reason);
            if reason != Reason::NoBackend {
                warn!(
                    ctx,
                    "service maps inconsistent (reason {}): refusing the call", reason as u32
                );
            }
            // SAFETY: the helper only stores the value the syscall will return.
            unsafe { bpf_set_retval(-ECONNREFUSED) };
            REJECT
        }
    }
}

#[inline(always)]
fn cookie(ctx: &SockAddrContext) -> u64 {
    // SAFETY: the context pointer is the one the kernel passed to this program.
    unsafe { bpf_get_socket_cookie(ctx.as_ptr()) }
}

/// Whether the socket cannot have a `SOCK_RNAT_*` entry for this backend
/// yet, so the lookup before the insert can be skipped: TCP connects once
/// (its cookie is new). The lookup is a cold hash bucket, about a fifth of
/// `connect`'s cost (issue 18). UDP looks first, so that repeated `sendmsg`
/// calls to one frontend do not rewrite the entry each time.
#[inline(always)]
fn fresh_socket(protocol: u8) -> bool {
    protocol == proto::TCP
}

/// The client's identity for session affinity: its network namespace (one pod),
/// as Cilium does under socket LB. Only fetched when the frontend uses affinity.
#[inline(always)]
fn client_id(ctx: &SockAddrContext, frontend: &ServiceValue) -> u64 {
    if frontend.flags & svc_flags::AFFINITY == 0 {
        return 0;
    }
    // SAFETY: the context pointer is the one the kernel passed to this program.
    unsafe { bpf_get_netns_cookie(ctx.as_ptr()) }
}

#[inline(always)]
fn balanced_protocol(ctx: &SockAddrContext) -> Option<u8> {
    // SAFETY: `sock_addr` is the valid context pointer the kernel passed in.
    let protocol = unsafe { (*ctx.sock_addr).protocol } as u8;
    (protocol == proto::TCP || protocol == proto::UDP).then_some(protocol)
}

/// The port as the kernel keeps it: network order in the low 16 bits.
#[inline(always)]
fn user_port(ctx: &SockAddrContext) -> Be16 {
    // SAFETY: see `balanced_protocol`.
    Be16(unsafe { (*ctx.sock_addr).user_port } as u16)
}

/// Whether `hash`'s bit is set in `SVC_FILTER`: `false` is a certain "no
/// Service here". A missing word (cannot happen: the index is masked to the
/// array's size) counts as set, so the lookup decides.
#[inline(always)]
fn maybe_service(hash: u32) -> bool {
    SVC_FILTER
        .get(prefilter::word(hash))
        .is_none_or(|word| word & prefilter::bit(hash) != 0)
}

/// Where a forward translation sends the socket.
struct Target<A> {
    addr: A,
    port: Be16,
}

/// Looks up an IPv4 frontend, picks a backend, records the socket's reverse
/// translation. `Ok(None)`: not a service, leave the call alone.
#[inline(always)]
fn fwd4(
    ctx: &SockAddrContext,
    protocol: u8,
    addr: Be32,
    port: Be16,
) -> Result<Option<Target<Be32>>, Reason> {
    if !maybe_service(prefilter::hash_v4(
        u32::from_be(addr.0),
        port.to_host(),
        protocol,
    )) {
        return Ok(None);
    }
    let Some((key, frontend)) = lb::lookup4(addr, port, protocol, scope::INTERNAL) else {
        return Ok(None);
    };
    let cookie = cookie(ctx);
    let client = client_id(ctx, &frontend);
    let chosen = lb::select4(key, frontend, lb::selector(protocol, cookie), client)?;
    let (be_addr, be_port) = (chosen.backend.addr, chosen.backend.port);
    let (flags, id) = (chosen.frontend.flags, chosen.frontend.rev_nat_id);
    src_check::record(ctx, flags, id, 4, src_check::v4_bytes(be_addr), be_port)?;
    let rnat_key = SockRevNatKeyV4 {
        cookie,
        addr: chosen.backend.addr,
        port: chosen.backend.port,
        _pad: 0,
    };
    let rnat = SockRevNatV4 {
        addr,
        port,
        _pad: 0,
        rev_nat_id: chosen.frontend.rev_nat_id,
        _pad2: 0,
    };
    let known = if fresh_socket(protocol) {
        None
    } else {
        // SAFETY: copied out at once; the map is an LRU hash.
        unsafe { SOCK_RNAT_V4.get(&rnat_key) }.copied()
    };
    if known != Some(rnat) && SOCK_RNAT_V4.insert(&rnat_key, &rnat, 0).is_err() {
        count(Reason::SockRevNatUpdateFailed);
    }
    Ok(Some(Target {
        addr: chosen.backend.addr,
        port: chosen.backend.port,
    }))
}

/// The frontend a socket's IPv4 peer stands for, if the socket was translated.
#[inline(always)]
fn rev4(ctx: &SockAddrContext, addr: Be32, port: Be16) -> Option<Target<Be32>> {
    let key = SockRevNatKeyV4 {
        cookie: cookie(ctx),
        addr,
        port,
        _pad: 0,
    };
    // SAFETY: copied out at once.
    let frontend = unsafe { SOCK_RNAT_V4.get(&key) }.copied()?;
    Some(Target {
        addr: frontend.addr,
        port: frontend.port,
    })
}

#[inline(always)]
fn xlate_fwd4(ctx: &SockAddrContext) -> Result<Reason, Reason> {
    let Some(protocol) = balanced_protocol(ctx) else {
        return Ok(Reason::UnsupportedProtocol);
    };
    // SAFETY: see `balanced_protocol`.
    let addr = Be32(unsafe { (*ctx.sock_addr).user_ip4 });
    let Some(target) = fwd4(ctx, protocol, addr, user_port(ctx))? else {
        return Ok(Reason::NotAService);
    };
    // SAFETY: connect4/sendmsg4 may write user_ip4 and user_port.
    unsafe {
        (*ctx.sock_addr).user_ip4 = target.addr.0;
        (*ctx.sock_addr).user_port = target.port.0 as u32;
    }
    Ok(Reason::Translated)
}

#[inline(always)]
fn xlate_rev4(ctx: &SockAddrContext, hit: Reason) {
    // SAFETY: recvmsg4/getpeername4 may read user_ip4.
    let addr = Be32(unsafe { (*ctx.sock_addr).user_ip4 });
    if let Some(frontend) = rev4(ctx, addr, user_port(ctx)) {
        // SAFETY: recvmsg4/getpeername4 may write user_ip4 and user_port.
        unsafe {
            (*ctx.sock_addr).user_ip4 = frontend.addr.0;
            (*ctx.sock_addr).user_port = frontend.port.0 as u32;
        }
        count(hit);
    }
}

/// The first three words of `::ffff:a.b.c.d`, as they sit in `user_ip6`.
const V4_MAPPED_PREFIX: [u32; 3] = [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff])];

/// The socket's IPv6 address as four words (the only way the verifier lets us
/// read `user_ip6`).
#[inline(always)]
fn read_ip6_words(ctx: &SockAddrContext) -> [u32; 4] {
    // SAFETY: every sock_addr hook for IPv6 may read user_ip6, one u32 at a time.
    unsafe {
        [
            (*ctx.sock_addr).user_ip6[0],
            (*ctx.sock_addr).user_ip6[1],
            (*ctx.sock_addr).user_ip6[2],
            (*ctx.sock_addr).user_ip6[3],
        ]
    }
}

/// `Some(v4)` for an IPv4-mapped address (`::ffff:a.b.c.d`): a dual-stack
/// socket talking IPv4, which the IPv4 maps serve.
#[inline(always)]
fn v4_mapped(words: &[u32; 4]) -> Option<Be32> {
    (words[0] == V4_MAPPED_PREFIX[0]
        && words[1] == V4_MAPPED_PREFIX[1]
        && words[2] == V4_MAPPED_PREFIX[2])
        .then_some(Be32(words[3]))
}

#[inline(always)]
fn words_to_bytes(words: &[u32; 4]) -> [u8; 16] {
    let mut addr = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let b = words[i].to_ne_bytes();
        addr[i * 4] = b[0];
        addr[i * 4 + 1] = b[1];
        addr[i * 4 + 2] = b[2];
        addr[i * 4 + 3] = b[3];
        i += 1;
    }
    addr
}

#[inline(always)]
fn write_ip6_words(ctx: &SockAddrContext, words: [u32; 4], port: Be16) {
    // SAFETY: the IPv6 hooks we attach (connect6, sendmsg6, recvmsg6,
    // getpeername6) may write user_ip6, one u32 at a time, and user_port.
    unsafe {
        (*ctx.sock_addr).user_ip6[0] = words[0];
        (*ctx.sock_addr).user_ip6[1] = words[1];
        (*ctx.sock_addr).user_ip6[2] = words[2];
        (*ctx.sock_addr).user_ip6[3] = words[3];
        (*ctx.sock_addr).user_port = port.0 as u32;
    }
}

#[inline(always)]
fn write_ip6_and_port(ctx: &SockAddrContext, addr: &[u8; 16], port: Be16) {
    let word = |i: usize| u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    write_ip6_words(ctx, [word(0), word(4), word(8), word(12)], port);
}

#[inline(always)]
fn write_v4_mapped(ctx: &SockAddrContext, target: &Target<Be32>) {
    let words = [
        V4_MAPPED_PREFIX[0],
        V4_MAPPED_PREFIX[1],
        V4_MAPPED_PREFIX[2],
        target.addr.0,
    ];
    write_ip6_words(ctx, words, target.port);
}

#[inline(always)]
fn xlate_fwd6(ctx: &SockAddrContext) -> Result<Reason, Reason> {
    let Some(protocol) = balanced_protocol(ctx) else {
        return Ok(Reason::UnsupportedProtocol);
    };
    let words = read_ip6_words(ctx);
    let port = user_port(ctx);
    if let Some(addr) = v4_mapped(&words) {
        let Some(target) = fwd4(ctx, protocol, addr, port)? else {
            return Ok(Reason::NotAService);
        };
        write_v4_mapped(ctx, &target);
        return Ok(Reason::Translated);
    }
    let addr = words_to_bytes(&words);
    if !maybe_service(prefilter::hash_v6(&addr, port.to_host(), protocol)) {
        return Ok(Reason::NotAService);
    }
    let Some((key, frontend)) = lb::lookup6(addr, port, protocol, scope::INTERNAL) else {
        return Ok(Reason::NotAService);
    };
    let cookie = cookie(ctx);
    let client = client_id(ctx, &frontend);
    let chosen = lb::select6(key, frontend, lb::selector(protocol, cookie), client)?;
    let (flags, id) = (chosen.frontend.flags, chosen.frontend.rev_nat_id);
    src_check::record(ctx, flags, id, 6, chosen.backend.addr, chosen.backend.port)?;
    let rnat_key = SockRevNatKeyV6 {
        cookie,
        addr: chosen.backend.addr,
        port: chosen.backend.port,
        _pad: [0; 6],
    };
    let rnat = SockRevNatV6 {
        addr,
        port,
        _pad: 0,
        rev_nat_id: chosen.frontend.rev_nat_id,
    };
    let known = if fresh_socket(protocol) {
        None
    } else {
        // SAFETY: copied out at once; the map is an LRU hash.
        unsafe { SOCK_RNAT_V6.get(&rnat_key) }.copied()
    };
    if known != Some(rnat) && SOCK_RNAT_V6.insert(&rnat_key, &rnat, 0).is_err() {
        count(Reason::SockRevNatUpdateFailed);
    }
    write_ip6_and_port(ctx, &chosen.backend.addr, chosen.backend.port);
    Ok(Reason::Translated)
}

#[inline(always)]
fn xlate_rev6(ctx: &SockAddrContext, hit: Reason) {
    let words = read_ip6_words(ctx);
    let port = user_port(ctx);
    if let Some(addr) = v4_mapped(&words) {
        if let Some(frontend) = rev4(ctx, addr, port) {
            write_v4_mapped(ctx, &frontend);
            count(hit);
        }
        return;
    }
    let key = SockRevNatKeyV6 {
        cookie: cookie(ctx),
        addr: words_to_bytes(&words),
        port,
        _pad: [0; 6],
    };
    // SAFETY: copied out at once.
    if let Some(frontend) = unsafe { SOCK_RNAT_V6.get(&key) }.copied() {
        write_ip6_and_port(ctx, &frontend.addr, frontend.port);
        count(hit);
    }
}
