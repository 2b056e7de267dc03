//! What differs between IPv4 and IPv6 on the tc path, behind one trait so the
//! conntrack and NAT logic in `tc` is written once: map access (conntrack,
//! established or pending, services, backends, the SNAT address) and the packet rewrites with their
//! checksum updates.
//!
//! Checksums are updated incrementally: `bpf_l3_csum_replace` for the IPv4
//! header, `bpf_l4_csum_replace` with `BPF_F_PSEUDO_HDR` for address changes
//! (the pseudo-header) and without it for ports. UDP uses
//! `BPF_F_MARK_MANGLED_0`, so an IPv4 UDP checksum of 0 ("none") stays 0 and a
//! computed 0 is written as `0xffff`.

use aya_ebpf::{btf_maps::lpm_trie::Key, programs::TcContext};
use proxy_common::{
    Be16, Be32, CtKeyV4, CtKeyV6, CtValueV4, CtValueV6, Reason, ServiceKeyV4, ServiceKeyV6,
    ServiceValue, ct_flags, ct_timeout, device_flags, proto, tail,
};

pub use crate::rewrite::Tuple;

use crate::{
    dsr, fib, icmp, lb, maglev,
    maps::{
        BACKEND_V4, BACKEND_V6, CT_PENDING_V4, CT_PENDING_V6, CT_V4, CT_V6, LOCAL_V4, LOCAL_V6,
        NODE_CFG,
    },
    packet::{self, Flow, IcmpError, TCP_FIN, TCP_RST, TCP_SYN},
    rewrite::{icmp_error4, icmp_error6, rewrite4, rewrite6},
    rst,
};

/// Which conntrack map: the established flows' (`CT_*`), or the pending one
/// (`CT_PENDING_*`) of new flows not answered yet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Ct {
    Established,
    Pending,
}

/// Runs `$body` with `$m` bound to the family's map of `$table` (the two maps
/// differ in type by their capacity).
macro_rules! in_table {
    ($table:expr, $established:ident, $pending:ident, |$m:ident| $body:expr) => {
        match $table {
            Ct::Established => {
                let $m = &$established;
                $body
            }
            Ct::Pending => {
                let $m = &$pending;
                $body
            }
        }
    };
}

/// A conntrack value, family-independent.
#[derive(Clone, Copy)]
pub struct CtEntry<A> {
    pub last_seen_ns: u64,
    /// The rewrite (`proto` unused).
    pub to: Tuple<A>,
    pub rev_nat_id: u32,
    pub flags: u8,
    pub backend_id: u32,
}

/// The backend chosen for a new flow.
pub struct Chosen<A> {
    pub addr: A,
    pub port: Be16,
    pub flags: u8,
    pub id: u32,
}

pub trait Family {
    type Addr: Copy + PartialEq + Default;
    type SvcKey: Copy;
    /// The `DEVICES` flag that turns this family's source-prefix detector on.
    const DETECT_CIDR: u32;
    /// The `TC_TAIL` slot of the family's DSR program (`crate::dsr`); `None`:
    /// its flows keep SNAT under `--lb-mode=dsr`.
    const DSR_SLOT: Option<u32>;

    /// Leaves the frontend `addr:port` in `skb->cb` for the DSR program.
    fn dsr_mark(ctx: &TcContext, addr: Self::Addr, port: Be16);
    /// Whether the packet has IP options or extension headers, where a DSR
    /// option would be.
    fn dsr_option(flow: &Flow<Self::Addr>) -> bool;
    /// The frontend a reply with tuple `key` must come from, when its flow
    /// arrived here by direct server return.
    fn dsr_frontend(key: &Tuple<Self::Addr>) -> Option<(Self::Addr, Be16)>;

    /// Parses the packet (Ethernet already known to carry this family) into
    /// `out`. Out of line, like `rewrite`: its temporaries get their own frame.
    fn parse(ctx: &TcContext, out: &mut Flow<Self::Addr>) -> Result<(), Reason>;
    fn ct_get(key: &Tuple<Self::Addr>, table: Ct) -> Option<CtEntry<Self::Addr>>;
    /// The fresh entry at `key`, established first, else pending. One call
    /// that copies one entry out (the ICMP error path has little stack left).
    fn ct_find(key: &Tuple<Self::Addr>, now: u64) -> Option<CtEntry<Self::Addr>>;
    /// Refreshes the entry at `key`: `last_seen_ns = now`, the `set` flags
    /// set and the `clear` flags cleared, if the entry still exists.
    fn ct_touch(key: &Tuple<Self::Addr>, table: Ct, now: u64, set: u8, clear: u8);
    /// Whether the entry at `key` is missing or idle past its timeout, read
    /// in place (no copy on the caller's stack).
    fn ct_idle(key: &Tuple<Self::Addr>, table: Ct, protocol: u8, now: u64) -> bool;
    /// Whether a fresh entry at `key`, in either map, belongs to another
    /// flow: its rewrite's source (the frontend a reply is rewritten to)
    /// is not `to`'s. Read in place (no copy on the caller's stack).
    fn ct_clash(key: &Tuple<Self::Addr>, to: &Tuple<Self::Addr>, now: u64) -> bool;
    fn ct_put(
        key: &Tuple<Self::Addr>,
        table: Ct,
        entry: &CtEntry<Self::Addr>,
        flags: u64,
    ) -> Result<(), i32>;
    fn ct_remove(key: &Tuple<Self::Addr>, table: Ct);
    /// Moves the pending entry at `key` to the established map, refreshed
    /// and no longer `SYN_ONLY`, in place (no copy on the stack). It is
    /// written there before it is removed from the pending map, so a packet
    /// on another CPU finds it in one or the other. False when there was no
    /// such entry or the write failed (it then stays pending, refreshed).
    fn ct_promote(key: &Tuple<Self::Addr>, now: u64) -> bool;
    fn lookup(
        addr: Self::Addr,
        port: Be16,
        protocol: u8,
        scope: u8,
    ) -> Option<(Self::SvcKey, ServiceValue)>;
    /// Picks a backend into `out`. Out of line, so arguments are passed by
    /// reference and the result through `out` (a BPF call takes at most five
    /// registers and returns one).
    fn select(
        key: &Self::SvcKey,
        frontend: &ServiceValue,
        selector: u32,
        client: u64,
        out: &mut Chosen<Self::Addr>,
    ) -> Result<(), Reason>;
    /// The Maglev hash of a packet's 5-tuple (see `maglev`).
    fn flow_hash(flow: &Flow<Self::Addr>, seed: u32) -> u32;
    /// Reads backend `id` into `out`; whether it exists.
    fn backend(id: u32, out: &mut Chosen<Self::Addr>) -> bool;
    fn backend_exists(id: u32) -> bool;
    /// Whether `saddr` is inside the frontend's `loadBalancerSourceRanges`
    /// (true for a frontend without ranges).
    fn source_allowed(rev_nat_id: u32, saddr: Self::Addr) -> bool;
    /// The node's SNAT address of this family, if configured (non-zero).
    fn snat_addr() -> Option<Self::Addr>;
    /// Whether `addr` is in one of the in-cluster prefixes (`LOCAL_V4`/`LOCAL_V6`).
    fn local_source(addr: Self::Addr) -> bool;
    /// The session-affinity client id for a client address. Tagged in the
    /// top bits so it cannot collide with the socket path's netns cookies.
    fn affinity_client(addr: Self::Addr) -> u64;
    /// Rewrites the packet's addresses and ports from `flow` to `to`.
    /// Out of line (its temporaries get their own frame); returns whether
    /// every helper succeeded (a BPF function returns one register).
    fn rewrite(ctx: &TcContext, flow: &Flow<Self::Addr>, to: &Tuple<Self::Addr>) -> bool;
    /// Parses an ICMP error quoting a TCP/UDP packet (see `packet`).
    fn parse_icmp_error(ctx: &TcContext, out: &mut IcmpError<Self::Addr>) -> Result<(), Reason>;
    /// Translates an ICMP error back: the quoted packet becomes
    /// `to.daddr:to.dport → to.saddr:to.sport` (the reverse of the rewrite
    /// `to` stored for the quoted packet's replies), and the error goes to
    /// `to.daddr`. A quoted UDP checksum is updated too (a quoted TCP
    /// checksum lies past the 8 bytes quoted). Whether every helper succeeded.
    fn rewrite_icmp_error(
        ctx: &TcContext,
        e: &IcmpError<Self::Addr>,
        to: &Tuple<Self::Addr>,
    ) -> bool;
    /// Turns the packet into the reject for its sender: a TCP RST for TCP,
    /// an ICMP port-unreachable for UDP; whether it could.
    fn reject(ctx: &TcContext, flow: &Flow<Self::Addr>) -> bool;
    /// Forwards a translated packet through the FIB (see `fib`); the reason
    /// to count, `TcFibRedirected*` meaning `TC_ACT_REDIRECT`.
    fn forward(ctx: &TcContext) -> Reason;
}

pub struct V4;
pub struct V6;

impl Family for V4 {
    type Addr = Be32;
    type SvcKey = ServiceKeyV4;
    const DETECT_CIDR: u32 = device_flags::DETECT_CIDR_V4;
    const DSR_SLOT: Option<u32> = Some(tail::DSR4);

    #[inline(always)]
    fn dsr_mark(ctx: &TcContext, addr: Be32, port: Be16) {
        dsr::mark(ctx, Some((&[addr.0], port)));
    }

    #[inline(always)]
    fn dsr_option(flow: &Flow<Be32>) -> bool {
        dsr::has_options4(flow)
    }

    #[inline(always)]
    fn dsr_frontend(key: &Tuple<Be32>) -> Option<(Be32, Be16)> {
        dsr::frontend4(&key4(key))
    }

    #[inline(never)]
    fn parse(ctx: &TcContext, out: &mut Flow<Be32>) -> Result<(), Reason> {
        *out = packet::parse4(ctx)?;
        Ok(())
    }

    #[inline(never)]
    fn ct_get(key: &Tuple<Be32>, table: Ct) -> Option<CtEntry<Be32>> {
        // SAFETY: copied out at once, before another map operation could
        // recycle the LRU slot behind the reference.
        let v = in_table!(table, CT_V4, CT_PENDING_V4, |m| unsafe {
            m.get(&key4(key))
        }
        .copied())?;
        Some(CtEntry {
            last_seen_ns: v.last_seen_ns,
            to: Tuple {
                saddr: v.saddr,
                daddr: v.daddr,
                sport: v.sport,
                dport: v.dport,
                proto: key.proto,
            },
            rev_nat_id: v.rev_nat_id,
            flags: v.flags,
            backend_id: v.backend_id,
        })
    }

    #[inline(never)]
    fn ct_find(key: &Tuple<Be32>, now: u64) -> Option<CtEntry<Be32>> {
        let k = key4(key);
        let fresh = |v: &&CtValueV4| fresh_at(v.last_seen_ns, v.flags, key.proto, now);
        // SAFETY: copied out at once, see `ct_get`.
        let v = unsafe {
            match CT_V4.get(&k).filter(fresh) {
                Some(v) => *v,
                None => *CT_PENDING_V4.get(&k).filter(fresh)?,
            }
        };
        Some(CtEntry {
            last_seen_ns: v.last_seen_ns,
            to: Tuple {
                saddr: v.saddr,
                daddr: v.daddr,
                sport: v.sport,
                dport: v.dport,
                proto: key.proto,
            },
            rev_nat_id: v.rev_nat_id,
            flags: v.flags,
            backend_id: v.backend_id,
        })
    }

    #[inline(never)]
    fn ct_idle(key: &Tuple<Be32>, table: Ct, protocol: u8, now: u64) -> bool {
        let ptr = in_table!(table, CT_V4, CT_PENDING_V4, |m| m.get_ptr(&key4(key)));
        match ptr {
            // SAFETY: the pointer is to a live map value, read at once; a
            // racing refresh can only make the entry look older than it is
            // by one packet, which the timeout tolerates.
            Some(v) => unsafe { !fresh_at((*v).last_seen_ns, (*v).flags, protocol, now) },
            None => true,
        }
    }

    #[inline(always)]
    fn ct_touch(key: &Tuple<Be32>, table: Ct, now: u64, set: u8, clear: u8) {
        let ptr = in_table!(table, CT_V4, CT_PENDING_V4, |m| m.get_ptr_mut(&key4(key)));
        if let Some(v) = ptr {
            // SAFETY: the pointer is to a live map value; a racing writer can
            // at worst lose one refresh, which the timeout tolerates.
            unsafe {
                (*v).last_seen_ns = now;
                (*v).flags = ((*v).flags & !clear) | set;
            }
        }
    }

    #[inline(never)]
    fn ct_clash(key: &Tuple<Be32>, to: &Tuple<Be32>, now: u64) -> bool {
        let k = key4(key);
        let other = |v: *const CtValueV4| {
            // SAFETY: the pointer is to a live map value, read at once (see
            // `ct_idle`).
            unsafe {
                fresh_at((*v).last_seen_ns, (*v).flags, key.proto, now)
                    && ((*v).saddr != to.saddr || (*v).sport != to.sport)
            }
        };
        CT_V4.get_ptr(&k).is_some_and(other) || CT_PENDING_V4.get_ptr(&k).is_some_and(other)
    }

    #[inline(never)]
    fn ct_put(key: &Tuple<Be32>, table: Ct, e: &CtEntry<Be32>, flags: u64) -> Result<(), i32> {
        let value = CtValueV4 {
            last_seen_ns: e.last_seen_ns,
            saddr: e.to.saddr,
            daddr: e.to.daddr,
            sport: e.to.sport,
            dport: e.to.dport,
            rev_nat_id: e.rev_nat_id,
            flags: e.flags,
            _pad: [0; 3],
            backend_id: e.backend_id,
        };
        in_table!(table, CT_V4, CT_PENDING_V4, |m| m.insert(
            &key4(key),
            &value,
            flags
        ))
    }

    #[inline(always)]
    fn ct_remove(key: &Tuple<Be32>, table: Ct) {
        let _ = in_table!(table, CT_V4, CT_PENDING_V4, |m| m.remove(&key4(key)));
    }

    #[inline(never)]
    fn ct_promote(key: &Tuple<Be32>, now: u64) -> bool {
        let k = key4(key);
        let Some(v) = CT_PENDING_V4.get_ptr_mut(&k) else {
            return false;
        };
        // SAFETY: the pointer is to a live map value, updated in place and
        // then copied by the map update; a racing writer can at worst lose
        // one refresh, which the timeout tolerates.
        let written = unsafe {
            (*v).last_seen_ns = now;
            (*v).flags &= !ct_flags::SYN_ONLY;
            CT_V4.insert(&k, &*v, 0).is_ok()
        };
        if written {
            let _ = CT_PENDING_V4.remove(&k);
        }
        written
    }

    #[inline(always)]
    fn lookup(
        addr: Be32,
        port: Be16,
        protocol: u8,
        scope: u8,
    ) -> Option<(ServiceKeyV4, ServiceValue)> {
        lb::lookup4(addr, port, protocol, scope)
    }

    #[inline(never)]
    fn select(
        key: &ServiceKeyV4,
        frontend: &ServiceValue,
        selector: u32,
        client: u64,
        out: &mut Chosen<Be32>,
    ) -> Result<(), Reason> {
        let s = lb::select4(*key, *frontend, selector, client)?;
        *out = Chosen {
            addr: s.backend.addr,
            port: s.backend.port,
            flags: s.backend.flags,
            id: s.backend_id,
        };
        Ok(())
    }

    #[inline(always)]
    fn flow_hash(flow: &Flow<Be32>, seed: u32) -> u32 {
        maglev::hash4(
            flow.saddr, flow.daddr, flow.sport, flow.dport, flow.proto, seed,
        )
    }

    #[inline(always)]
    fn backend(id: u32, out: &mut Chosen<Be32>) -> bool {
        // SAFETY: copied out at once.
        let Some(b) = (unsafe { BACKEND_V4.get(&id) }).copied() else {
            return false;
        };
        *out = Chosen {
            addr: b.addr,
            port: b.port,
            flags: b.flags,
            id,
        };
        true
    }

    #[inline(always)]
    fn backend_exists(id: u32) -> bool {
        lb::backend4_exists(id)
    }

    #[inline(always)]
    fn source_allowed(rev_nat_id: u32, saddr: Be32) -> bool {
        lb::source_allowed4(rev_nat_id, saddr)
    }

    #[inline(always)]
    fn snat_addr() -> Option<Be32> {
        let addr = NODE_CFG.get(0)?.snat_v4;
        (addr.0 != 0).then_some(addr)
    }

    #[inline(always)]
    fn local_source(addr: Be32) -> bool {
        LOCAL_V4.get(&Key::new(32, addr.octets())).is_some()
    }

    #[inline(always)]
    fn affinity_client(addr: Be32) -> u64 {
        (1 << 63) | u64::from(addr.0)
    }

    #[inline(never)]
    fn rewrite(ctx: &TcContext, flow: &Flow<Be32>, to: &Tuple<Be32>) -> bool {
        rewrite4(ctx, flow, to).is_ok()
    }

    #[inline(never)]
    fn parse_icmp_error(ctx: &TcContext, out: &mut IcmpError<Be32>) -> Result<(), Reason> {
        packet::parse_icmp_error4(ctx, out)
    }

    #[inline(never)]
    fn rewrite_icmp_error(ctx: &TcContext, e: &IcmpError<Be32>, to: &Tuple<Be32>) -> bool {
        icmp_error4(ctx, e, to).is_ok()
    }

    #[inline(always)]
    fn reject(ctx: &TcContext, flow: &Flow<Be32>) -> bool {
        if flow.proto == proto::TCP {
            rst::reject4(ctx, flow)
        } else {
            icmp::reject4(ctx, flow)
        }
    }

    #[inline(always)]
    fn forward(ctx: &TcContext) -> Reason {
        fib::forward4(ctx)
    }
}

#[inline(always)]
fn key4(t: &Tuple<Be32>) -> CtKeyV4 {
    CtKeyV4 {
        saddr: t.saddr,
        daddr: t.daddr,
        sport: t.sport,
        dport: t.dport,
        proto: t.proto,
        _pad: [0; 3],
    }
}

#[inline(always)]
fn key6(t: &Tuple<[u8; 16]>) -> CtKeyV6 {
    CtKeyV6 {
        saddr: t.saddr,
        daddr: t.daddr,
        sport: t.sport,
        dport: t.dport,
        proto: t.proto,
        _pad: [0; 3],
    }
}

impl Family for V6 {
    type Addr = [u8; 16];
    type SvcKey = ServiceKeyV6;
    const DETECT_CIDR: u32 = device_flags::DETECT_CIDR_V6;
    /// No IPv6 DSR option yet: IPv6 flows keep SNAT under `--lb-mode=dsr`.
    const DSR_SLOT: Option<u32> = None;

    #[inline(always)]
    fn dsr_mark(_ctx: &TcContext, _addr: [u8; 16], _port: Be16) {}

    #[inline(always)]
    fn dsr_option(_flow: &Flow<[u8; 16]>) -> bool {
        false
    }

    #[inline(always)]
    fn dsr_frontend(key: &Tuple<[u8; 16]>) -> Option<([u8; 16], Be16)> {
        dsr::frontend6(&key6(key))
    }

    #[inline(never)]
    fn parse(ctx: &TcContext, out: &mut Flow<[u8; 16]>) -> Result<(), Reason> {
        packet::parse6(ctx, out)
    }

    #[inline(never)]
    fn ct_get(key: &Tuple<[u8; 16]>, table: Ct) -> Option<CtEntry<[u8; 16]>> {
        // SAFETY: copied out at once, see `V4::ct_get`.
        let v = in_table!(table, CT_V6, CT_PENDING_V6, |m| unsafe {
            m.get(&key6(key))
        }
        .copied())?;
        Some(CtEntry {
            last_seen_ns: v.last_seen_ns,
            to: Tuple {
                saddr: v.saddr,
                daddr: v.daddr,
                sport: v.sport,
                dport: v.dport,
                proto: key.proto,
            },
            rev_nat_id: v.rev_nat_id,
            flags: v.flags,
            backend_id: v.backend_id,
        })
    }

    #[inline(never)]
    fn ct_find(key: &Tuple<[u8; 16]>, now: u64) -> Option<CtEntry<[u8; 16]>> {
        let k = key6(key);
        let fresh = |v: &&CtValueV6| fresh_at(v.last_seen_ns, v.flags, key.proto, now);
        // SAFETY: copied out at once, see `ct_get`.
        let v = unsafe {
            match CT_V6.get(&k).filter(fresh) {
                Some(v) => *v,
                None => *CT_PENDING_V6.get(&k).filter(fresh)?,
            }
        };
        Some(CtEntry {
            last_seen_ns: v.last_seen_ns,
            to: Tuple {
                saddr: v.saddr,
                daddr: v.daddr,
                sport: v.sport,
                dport: v.dport,
                proto: key.proto,
            },
            rev_nat_id: v.rev_nat_id,
            flags: v.flags,
            backend_id: v.backend_id,
        })
    }

    #[inline(never)]
    fn ct_idle(key: &Tuple<[u8; 16]>, table: Ct, protocol: u8, now: u64) -> bool {
        let ptr = in_table!(table, CT_V6, CT_PENDING_V6, |m| m.get_ptr(&key6(key)));
        match ptr {
            // SAFETY: the pointer is to a live map value, read at once; a
            // racing refresh can only make the entry look older than it is
            // by one packet, which the timeout tolerates.
            Some(v) => unsafe { !fresh_at((*v).last_seen_ns, (*v).flags, protocol, now) },
            None => true,
        }
    }

    #[inline(always)]
    fn ct_touch(key: &Tuple<[u8; 16]>, table: Ct, now: u64, set: u8, clear: u8) {
        let ptr = in_table!(table, CT_V6, CT_PENDING_V6, |m| m.get_ptr_mut(&key6(key)));
        if let Some(v) = ptr {
            // SAFETY: see `V4::ct_touch`.
            unsafe {
                (*v).last_seen_ns = now;
                (*v).flags = ((*v).flags & !clear) | set;
            }
        }
    }

    #[inline(never)]
    fn ct_clash(key: &Tuple<[u8; 16]>, to: &Tuple<[u8; 16]>, now: u64) -> bool {
        let k = key6(key);
        let other = |v: *const CtValueV6| {
            // SAFETY: the pointer is to a live map value, read at once (see
            // `ct_idle`).
            unsafe {
                fresh_at((*v).last_seen_ns, (*v).flags, key.proto, now)
                    && ((*v).saddr != to.saddr || (*v).sport != to.sport)
            }
        };
        CT_V6.get_ptr(&k).is_some_and(other) || CT_PENDING_V6.get_ptr(&k).is_some_and(other)
    }

    #[inline(never)]
    fn ct_put(
        key: &Tuple<[u8; 16]>,
        table: Ct,
        e: &CtEntry<[u8; 16]>,
        flags: u64,
    ) -> Result<(), i32> {
        let value = CtValueV6 {
            last_seen_ns: e.last_seen_ns,
            saddr: e.to.saddr,
            daddr: e.to.daddr,
            sport: e.to.sport,
            dport: e.to.dport,
            rev_nat_id: e.rev_nat_id,
            flags: e.flags,
            _pad: [0; 3],
            backend_id: e.backend_id,
        };
        in_table!(table, CT_V6, CT_PENDING_V6, |m| m.insert(
            &key6(key),
            &value,
            flags
        ))
    }

    #[inline(always)]
    fn ct_remove(key: &Tuple<[u8; 16]>, table: Ct) {
        let _ = in_table!(table, CT_V6, CT_PENDING_V6, |m| m.remove(&key6(key)));
    }

    #[inline(never)]
    fn ct_promote(key: &Tuple<[u8; 16]>, now: u64) -> bool {
        let k = key6(key);
        let Some(v) = CT_PENDING_V6.get_ptr_mut(&k) else {
            return false;
        };
        // SAFETY: the pointer is to a live map value, updated in place and
        // then copied by the map update; a racing writer can at worst lose
        // one refresh, which the timeout tolerates.
        let written = unsafe {
            (*v).last_seen_ns = now;
            (*v).flags &= !ct_flags::SYN_ONLY;
            CT_V6.insert(&k, &*v, 0).is_ok()
        };
        if written {
            let _ = CT_PENDING_V6.remove(&k);
        }
        written
    }

    #[inline(always)]
    fn lookup(
        addr: [u8; 16],
        port: Be16,
        protocol: u8,
        scope: u8,
    ) -> Option<(ServiceKeyV6, ServiceValue)> {
        lb::lookup6(addr, port, protocol, scope)
    }

    #[inline(never)]
    fn select(
        key: &ServiceKeyV6,
        frontend: &ServiceValue,
        selector: u32,
        client: u64,
        out: &mut Chosen<[u8; 16]>,
    ) -> Result<(), Reason> {
        let s = lb::select6(*key, *frontend, selector, client)?;
        *out = Chosen {
            addr: s.backend.addr,
            port: s.backend.port,
            flags: s.backend.flags,
            id: s.backend_id,
        };
        Ok(())
    }

    #[inline(always)]
    fn flow_hash(flow: &Flow<[u8; 16]>, seed: u32) -> u32 {
        maglev::hash6(
            &flow.saddr,
            &flow.daddr,
            flow.sport,
            flow.dport,
            flow.proto,
            seed,
        )
    }

    #[inline(always)]
    fn backend(id: u32, out: &mut Chosen<[u8; 16]>) -> bool {
        // SAFETY: copied out at once.
        let Some(b) = (unsafe { BACKEND_V6.get(&id) }).copied() else {
            return false;
        };
        *out = Chosen {
            addr: b.addr,
            port: b.port,
            flags: b.flags,
            id,
        };
        true
    }

    #[inline(always)]
    fn backend_exists(id: u32) -> bool {
        lb::backend6_exists(id)
    }

    #[inline(always)]
    fn source_allowed(rev_nat_id: u32, saddr: [u8; 16]) -> bool {
        lb::source_allowed6(rev_nat_id, saddr)
    }

    #[inline(always)]
    fn snat_addr() -> Option<[u8; 16]> {
        let addr = NODE_CFG.get(0)?.snat_v6;
        (addr != [0; 16]).then_some(addr)
    }

    #[inline(always)]
    fn local_source(addr: [u8; 16]) -> bool {
        LOCAL_V6.get(&Key::new(128, addr)).is_some()
    }

    #[inline(always)]
    fn affinity_client(addr: [u8; 16]) -> u64 {
        let w = |i: usize| {
            u64::from(u32::from_ne_bytes([
                addr[i],
                addr[i + 1],
                addr[i + 2],
                addr[i + 3],
            ]))
        };
        let folded = ((w(0) ^ w(8)) << 32) | (w(4) ^ w(12));
        (0b11 << 62) | (folded & ((1 << 62) - 1))
    }

    #[inline(never)]
    fn rewrite(ctx: &TcContext, flow: &Flow<[u8; 16]>, to: &Tuple<[u8; 16]>) -> bool {
        rewrite6(ctx, flow, to).is_ok()
    }

    #[inline(never)]
    fn parse_icmp_error(ctx: &TcContext, out: &mut IcmpError<[u8; 16]>) -> Result<(), Reason> {
        packet::parse_icmp_error6(ctx, out)
    }

    #[inline(never)]
    fn rewrite_icmp_error(ctx: &TcContext, e: &IcmpError<[u8; 16]>, to: &Tuple<[u8; 16]>) -> bool {
        icmp_error6(ctx, e, to).is_ok()
    }

    #[inline(always)]
    fn reject(ctx: &TcContext, flow: &Flow<[u8; 16]>) -> bool {
        if flow.proto == proto::TCP {
            rst::reject6(ctx, flow)
        } else {
            icmp::reject6(ctx, flow)
        }
    }

    #[inline(always)]
    fn forward(ctx: &TcContext) -> Reason {
        fib::forward6(ctx)
    }
}

/// Whether an entry last seen at `last_seen_ns`, with `flags`, still counts
/// at `now` (see `tc::fresh`): an entry refreshed after `now` by another CPU
/// has age 0.
#[inline(always)]
pub fn fresh_at(last_seen_ns: u64, flags: u8, protocol: u8, now: u64) -> bool {
    let timeout = if protocol != proto::TCP {
        ct_timeout::UDP_NS
    } else if flags & ct_flags::CLOSING != 0 {
        ct_timeout::TCP_CLOSING_NS
    } else if flags & ct_flags::SYN_ONLY != 0 {
        ct_timeout::TCP_SYN_NS
    } else {
        ct_timeout::TCP_NS
    };
    now.saturating_sub(last_seen_ns) <= timeout
}

/// What a TCP packet says about its flow's progress: `CLOSING` when it
/// carries FIN or RST, `SYN_ONLY` when it carries SYN (for a new flow's
/// entries; an existing entry only ever loses `SYN_ONLY`).
#[inline(always)]
pub(crate) fn progress_flags<A>(flow: &Flow<A>) -> u8 {
    if flow.proto != proto::TCP {
        return 0;
    }
    let closing = if flow.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        ct_flags::CLOSING
    } else {
        0
    };
    let syn = if flow.tcp_flags & TCP_SYN != 0 {
        ct_flags::SYN_ONLY
    } else {
        0
    };
    closing | syn
}
