//! Direct server return (`--lb-mode=dsr`), the encapsulation-free dispatch
//! Cilium calls "opt": a flow to an external frontend (without
//! `externalTrafficPolicy: Local`) whose backend is on another node is DNATed
//! but not SNATed, and its packets carry the frontend's address and port to
//! the backend's node in an IPv4 option (type [`OPT4_TYPE`], 8 bytes: type,
//! length, port, address; Cilium's layout). The backend's node records them
//! ([`crate::maps::DSR_V4`], keyed by the reply's tuple) and its `tc_egress`
//! rewrites the backend's replies to come from the frontend: they go
//! straight to the client, never back through the first node.
//!
//! Every forward packet of a DSR flow carries the option, not only the first
//! (Cilium adds it to TCP SYNs and every UDP datagram): the backend's node
//! then needs no state it could lose, and a flow moved to another first node
//! mid-stream (which finds it by Maglev, with no conntrack) is recorded
//! again by its next packet. The option stays on the packet: Linux ignores
//! IPv4 options it does not know on received packets (`ip_options_compile`
//! skips unknown types when there is an skb), so the backend's stack accepts
//! it as Cilium's backends do. The option is the first of the header's
//! options (it is inserted right after the base header), which is where the
//! backend's node looks for it.
//!
//! The tc programs reach this module by a tail call (`tc_dsr4`, `TC_TAIL`
//! slot `tail::DSR4`), with `skb->cb` telling what to do ([`mark`]): add the
//! option to a packet just translated and forward it, or record the option
//! of a packet that arrived with one.

use aya_ebpf::{
    EbpfContext,
    bindings::{__sk_buff, bpf_adj_room_mode::BPF_ADJ_ROOM_NET},
    cty::c_long,
    programs::TcContext,
};
use proxy_common::{Be16, Be32, CtKeyV4, CtKeyV6, Reason, RevNatV4};

use crate::{
    maps::{DSR_V4, DSR_V6},
    packet::{self, ETH_HLEN, IP4_CSUM},
};

/// The IPv4 option's type: copied to fragments, class 0, number 26 (Cilium's
/// `DSR_IPV4_OPT_TYPE`, unassigned by IANA).
pub const OPT4_TYPE: u8 = 0x9a;
/// The IPv4 option's length: type, length, port (2), IPv4 address (4).
pub const OPT4_LEN: usize = 8;
/// The IPv4 base header (no options).
const IP4_HLEN: usize = 20;
/// The largest IHL (in 32-bit words) a header may have before the option
/// goes in (15 words at most after it).
const IHL_MAX_BEFORE: u8 = 15 - (OPT4_LEN / 4) as u8;

/// `skb->cb[4]` bit: add the option ([`mark`]); without it the DSR program
/// records the option of an arriving packet.
const CB_ADD: u32 = 1 << 16;

/// What the DSR program is asked to do, from `skb->cb`.
pub(crate) enum Task<A> {
    /// Add the frontend (address, port) to the translated packet, forward it.
    Add(A, Be16),
    /// Record the option of an arriving packet.
    Record,
}

/// Tells the DSR program (tail-called next) what to do with the packet:
/// add the frontend `addr`/`port` (`Some`) or record an arriving option
/// (`None`). `words` holds the address as `skb->cb` words (one for IPv4, four
/// for IPv6).
#[inline(always)]
pub(crate) fn mark(ctx: &TcContext, words: Option<(&[u32], Be16)>) {
    let skb = ctx.as_ptr() as *mut __sk_buff;
    // SAFETY: the context is the `__sk_buff` the kernel passed in, and `cb`
    // is writable from tc programs; at most 4 address words plus `cb[4]`.
    unsafe {
        match words {
            Some((addr, port)) => {
                for (i, w) in addr.iter().take(4).enumerate() {
                    (*skb).cb[i] = *w;
                }
                (*skb).cb[4] = u32::from(port.0) | CB_ADD;
            }
            None => (*skb).cb[4] = 0,
        }
    }
}

/// The IPv4 task `mark` left in `skb->cb`.
#[inline(always)]
pub(crate) fn task4(ctx: &TcContext) -> Task<Be32> {
    let cb = ctx.cb();
    match (cb.first(), cb.get(4)) {
        (Some(&addr), Some(&c4)) if c4 & CB_ADD != 0 => Task::Add(Be32(addr), Be16(c4 as u16)),
        _ => Task::Record,
    }
}

/// Inserts the option carrying `addr:port` right after the IPv4 base header
/// (existing options follow it), and fixes the IHL, total length and header
/// checksum. The transport checksum does not cover IP options or the header
/// length, so it is left as it is. A GSO packet's segment size shrinks by the
/// option (`bpf_skb_adjust_room` without `BPF_F_ADJ_ROOM_FIXED_GSO`), so its
/// segments keep their size on the wire. Fails when the header has no room
/// for 8 more bytes of options.
#[inline(never)]
pub(crate) fn add4(ctx: &TcContext, addr: Be32, port: Be16) -> Result<(), c_long> {
    let word0 = ctx.load::<u16>(ETH_HLEN)?;
    let vihl = ctx.load::<u8>(ETH_HLEN)?;
    if vihl & 0x0f > IHL_MAX_BEFORE {
        return Err(-1);
    }
    let tot_len = ctx.load::<u16>(ETH_HLEN + 2)?;
    ctx.adjust_room(OPT4_LEN as i32, BPF_ADJ_ROOM_NET, 0)?;
    let port_bytes = port.0.to_ne_bytes();
    let opt_head = u32::from_ne_bytes([OPT4_TYPE, OPT4_LEN as u8, port_bytes[0], port_bytes[1]]);
    ctx.store(ETH_HLEN + IP4_HLEN, &opt_head, 0)?;
    ctx.store(ETH_HLEN + IP4_HLEN + 4, &addr.0, 0)?;
    // The IHL is the low nibble of the header's first byte: +2 words, in the
    // first 16-bit word as the checksum sees it.
    let new_word0 = {
        let mut b = word0.to_ne_bytes();
        b[0] = vihl + (OPT4_LEN / 4) as u8;
        u16::from_ne_bytes(b)
    };
    ctx.store(ETH_HLEN, &new_word0, 0)?;
    let new_tot = (u16::from_be(tot_len) + OPT4_LEN as u16).to_be();
    ctx.store(ETH_HLEN + 2, &new_tot, 0)?;
    ctx.l3_csum_replace(IP4_CSUM, u64::from(word0), u64::from(new_word0), 2)?;
    ctx.l3_csum_replace(IP4_CSUM, u64::from(tot_len), u64::from(new_tot), 2)?;
    ctx.l3_csum_replace(IP4_CSUM, 0, u64::from(opt_head), 4)?;
    ctx.l3_csum_replace(IP4_CSUM, 0, u64::from(addr.0), 4)?;
    Ok(())
}

/// The TCP header without options.
const TCP_HLEN: usize = 20;
/// TCP option kinds: end of the list, no-op, maximum segment size.
const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_MSS: u8 = 2;
/// The MSS option's length: kind, length, MSS (2).
const TCPOLEN_MSS: u8 = 4;
/// The most option bytes a TCP header has (a no-op is one byte, so this
/// bounds the options walked too).
const TCP_OPTS_MAX: usize = 40;

/// Lowers the MSS option of a backend's SYN-ACK (a DSR reply, rewritten by
/// `tc_egress` on the backend's node) by [`OPT4_LEN`] and fixes the TCP
/// checksum. The client's segments are sized by that MSS and each of them
/// gains the option on the first node, so a full-size one would exceed the
/// MTU by 8 bytes; with the MSS 8 bytes lower it fits (1460 → 1452 at MTU
/// 1500). The client's own SYN is left as it is: its MSS sizes the replies,
/// which carry no option. A SYN-ACK without an MSS option is left so (the
/// client then assumes 536). `l4_off`/`csum_off` are the TCP header's and
/// its checksum's offsets.
#[inline(never)]
pub(crate) fn clamp_mss(ctx: &TcContext, l4_off: usize, csum_off: usize) -> Result<(), c_long> {
    let doff = ctx.load::<u8>(l4_off + 12)? >> 4;
    let end = l4_off + usize::from(doff) * 4;
    let mut off = l4_off + TCP_HLEN;
    for _ in 0..TCP_OPTS_MAX {
        // No room left for an MSS option: the list ends before one.
        if off + usize::from(TCPOLEN_MSS) > end {
            break;
        }
        let [kind, len] = ctx.load::<[u8; 2]>(off)?;
        match kind {
            TCPOPT_EOL => break,
            TCPOPT_NOP => off += 1,
            TCPOPT_MSS if len == TCPOLEN_MSS => {
                let old = ctx.load::<u16>(off + 2)?;
                let mss = u16::from_be(old);
                if mss <= OPT4_LEN as u16 {
                    return Ok(());
                }
                let new = (mss - OPT4_LEN as u16).to_be();
                ctx.store(off + 2, &new, 0)?;
                ctx.l4_csum_replace(csum_off, u64::from(old), u64::from(new), 2)?;
                return Ok(());
            }
            _ if len < 2 => break,
            _ => off += usize::from(len),
        }
    }
    Ok(())
}

/// Whether an IPv4 packet has options (where a DSR option would be).
#[inline(always)]
pub(crate) fn has_options4<A>(flow: &packet::Flow<A>) -> bool {
    !flow.l3_only && flow.l4_off > ETH_HLEN + IP4_HLEN
}

/// Records the frontend of an IPv4 packet that arrived with the DSR option
/// as its first option, under its reply's tuple; the reason to count
/// (`TcPass` when it has no DSR option). The packet goes on untouched.
#[inline(never)]
pub(crate) fn record4(ctx: &TcContext) -> Reason {
    let flow = match packet::parse4(ctx) {
        Ok(flow) if has_options4(&flow) && flow.l4_off >= ETH_HLEN + IP4_HLEN + OPT4_LEN => flow,
        Ok(_) => return Reason::TcPass,
        Err(reason) => return reason,
    };
    let (Ok(head), Ok(addr)) = (
        ctx.load::<[u8; 4]>(ETH_HLEN + IP4_HLEN),
        ctx.load::<u32>(ETH_HLEN + IP4_HLEN + 4),
    ) else {
        return Reason::TcTruncated;
    };
    if head[0] != OPT4_TYPE || usize::from(head[1]) != OPT4_LEN {
        return Reason::TcPass;
    }
    let key = CtKeyV4 {
        saddr: flow.daddr,
        daddr: flow.saddr,
        sport: flow.dport,
        dport: flow.sport,
        proto: flow.proto,
        _pad: [0; 3],
    };
    let value = RevNatV4 {
        addr: Be32(addr),
        port: Be16(u16::from_ne_bytes([head[2], head[3]])),
        _pad: 0,
    };
    // Written only when it changes: every packet of a DSR flow carries it.
    // SAFETY: copied out at once.
    if unsafe { DSR_V4.get(&key) } != Some(&value) && DSR_V4.insert(&key, &value, 0).is_err() {
        return Reason::TcDsrFailed;
    }
    Reason::TcDsrRecorded
}

/// The frontend (address, port) an IPv4 reply leaving with tuple `key`
/// answers for, when its flow arrived by DSR.
#[inline(always)]
pub(crate) fn frontend4(key: &CtKeyV4) -> Option<(Be32, Be16)> {
    // SAFETY: copied out at once.
    unsafe { DSR_V4.get(key) }.map(|v| (v.addr, v.port))
}

/// The same for IPv6.
#[inline(always)]
pub(crate) fn frontend6(key: &CtKeyV6) -> Option<([u8; 16], Be16)> {
    // SAFETY: copied out at once.
    unsafe { DSR_V6.get(key) }.map(|v| (v.addr, v.port))
}
