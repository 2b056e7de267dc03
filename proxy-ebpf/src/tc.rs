//! tc (tcx) programs: north-south service translation, packet by packet.
//!
//! `tc_ingress` runs on every attached device. It only reads the ethertype
//! and tail-calls (`TC_TAIL`, see `tc_tail`) `tc_ingress4` or `tc_ingress6`,
//! which run the same generic path for their family: step 1 there
//! ([`ingress_tracked`]), steps 2 and 3 in `tc_ingress4_new`/`tc_ingress6_new`
//! ([`ingress_new`]), tail-called in turn for a packet to a frontend no
//! conntrack entry knows (each program verified on its own):
//! 1. conntrack: a packet whose tuple has a fresh `CT_*` entry, else a
//!    fresh `CT_PENDING_*` entry, gets the entry's rewrite (forward: to the
//!    backend, SNATed to the node when the flow is; reply: back to frontend
//!    → client). A forward entry whose backend was removed is re-balanced as
//!    a new flow. A pending flow's first answer (TCP: a client's packet
//!    without SYN or RST, so past the handshake; UDP: a reply) moves both its entries to
//!    `CT_*` (see [`promote`]): a flood of new flows that are never answered
//!    (spoofed SYNs) churns only the small pending LRU and never evicts an
//!    established flow.
//! 2. a new flow to a frontend (external scope first, then internal; only
//!    internal for a pod's flow on a pod-facing device, as the local-traffic
//!    detector tells pods: kube-proxy's short-circuit for
//!    `externalTrafficPolicy: Local`;
//!    ClusterIPs as [`cluster_ip_rule`] says: from off-cluster sources, as
//!    the local-traffic detector finds them, on any device and SNATed; from
//!    others only on `CLUSTER_IP` devices) gets a backend as the socket
//!    path picks one (random slot, ClientIP affinity keyed by the client's
//!    address), SNAT when the frontend is external without
//!    `externalTrafficPolicy: Local` and the backend is remote, for hairpin
//!    (client == backend), or for a masqueraded ClusterIP flow to a remote
//!    backend, and two conntrack entries in `CT_PENDING_*`: forward, keyed
//!    by the client's packet, and reply, keyed by the reply as it will
//!    arrive. A SNAT port is free when neither map holds a fresh entry for
//!    its reply key (a pending entry the LRU evicted, or one idle past its
//!    timeout, frees its port). Without SNAT, a reply key a fresh entry of
//!    another flow holds (the client reused its source port towards another
//!    frontend with the same backend) gets the client's source port
//!    remapped to a free one, as netfilter's implicit source NAT does; the
//!    older flow's entries are never overwritten. A LoadBalancer
//!    frontend with `loadBalancerSourceRanges` first drops a new flow from a
//!    source outside them (`SRC_RANGE_*`).
//! 3. no backend: dropped for an `externalTrafficPolicy: Local` frontend,
//!    otherwise answered out of the same device: a TCP RST for TCP, an ICMP
//!    port-unreachable for UDP.
//!
//! IP fragments: a datagram's first fragment is translated like any packet,
//! and records its ports for the later ones, which get the same conntrack
//! lookup and an IP-header-only rewrite (see [`crate::frag`]); a later
//! fragment whose first was not seen is dropped.
//!
//! ICMP errors quoting a tracked flow are translated back through the entry
//! of the flow's other direction (see [`icmp_error`]).
//!
//! `tc_egress` (in `crate::tc_egress`) only rewrites replies leaving
//! through the device (backend → client, not SNATed) to come from the
//! frontend.
//!
//! A packet translated on ingress is forwarded by the program itself (see
//! [`crate::fib`]): a FIB lookup on the rewritten packet, then a redirect out
//! of the next hop's device; what the FIB does not forward (a local
//! destination, forwarding off, ...) continues up the stack (`TC_ACT_OK`).
//! Egress rewrites continue as `TC_ACT_OK`. Every outcome is counted in `STATS`.

use aya_ebpf::{
    EbpfContext,
    bindings::{__sk_buff, BPF_NOEXIST, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_redirect},
    programs::TcContext,
};
use proxy_common::{Be16, Reason, backend_flags, ct_flags, device_flags, proto, scope, svc_flags};

use crate::{
    cluster_ip::{ClusterIpRule, Origin, cluster_ip_rule, origin},
    family::{self, Chosen, Ct, CtEntry, Family, Tuple},
    maglev,
    maps::DEVICES,
    packet::{Flow, IcmpError, TCP_RST, TCP_SYN},
    reject_budget,
    stats::count,
};

/// First and last SNAT source port when `NODE_CFG` sets none (userspace
/// always does: `--snat-port-range`, outside the node's ephemeral ports).
const SNAT_PORT_MIN: u32 = 32768;
const SNAT_PORT_MAX: u32 = 60999;

/// A random SNAT source port in the range `NODE_CFG` configures. Not
/// inlined: the caller's stack frame must not grow (the combined limit).
#[inline(never)]
fn snat_port() -> u32 {
    let (min, max) = match crate::maps::NODE_CFG.get(0) {
        Some(c) if c.snat_port_min != 0 && c.snat_port_min <= c.snat_port_max => {
            (u32::from(c.snat_port_min), u32::from(c.snat_port_max))
        }
        _ => (SNAT_PORT_MIN, SNAT_PORT_MAX),
    };
    min + random() % (max - min + 1)
}

/// How many random SNAT ports are tried before the packet is dropped.
const SNAT_TRIES: u32 = 8;
/// `-EEXIST`: a `BPF_NOEXIST` update found the key taken.
const EEXIST: i32 = -17;

/// What to do with the packet, and why.
pub(crate) enum Verdict {
    Pass(Reason),
    Drop(Reason),
    /// The packet was turned into a reject: send it back out of its device.
    Bounce(Reason),
    /// A frontend with no backend: answer with a RST or port-unreachable (done by
    /// `ingress` after `choose` returned, so the frames do not stack).
    Reject,
    /// Translated for direct server return (`crate::dsr`): the DSR program,
    /// tail-called next, adds the frontend (left in `skb->cb`) and forwards.
    Dsr(Reason),
}

/// What ingress's functions return for a packet the family's DSR program
/// (`TC_TAIL` slot `Family::DSR_SLOT`) takes on: the program entry makes the
/// tail call from its own frame. Not a `TC_ACT_*` value.
pub(crate) const TAIL_DSR: i32 = 0x0d5a;

/// `skb->cb[0]` bit set by `tc_ingress4`/`tc_ingress6` (`tc_tail`) before the tail call
/// into the new-flow program: the packet's forward entry was removed because
/// its backend is gone (counted as `tc_rebalanced` once translated).
pub(crate) const CB_REBALANCED: u32 = 1;

#[inline(always)]
pub(crate) fn finish(ctx: &TcContext, verdict: Verdict) -> i32 {
    match verdict {
        Verdict::Pass(reason) => {
            count(reason);
            TC_ACT_OK
        }
        Verdict::Drop(reason) => {
            count(reason);
            TC_ACT_SHOT
        }
        // `ingress` turns it into `Bounce` or `Drop` before this.
        Verdict::Reject => {
            count(Reason::TcRejectFailed);
            TC_ACT_SHOT
        }
        Verdict::Bounce(reason) => {
            count(reason);
            // SAFETY: the helper only records where the packet goes once the
            // program returns TC_ACT_REDIRECT.
            unsafe { bpf_redirect(ifindex(ctx), 0) as i32 }
        }
        // Only ingress translates for DSR (see `finish_ingress`).
        Verdict::Dsr(reason) => {
            count(reason);
            TC_ACT_OK
        }
    }
}

/// Ingress's verdict: a translated packet (new flow, tracked forward or
/// reply) is forwarded through the FIB when it can be; anything else as
/// [`finish`] does.
#[inline(always)]
fn finish_ingress<F: Family>(ctx: &TcContext, verdict: Verdict) -> i32 {
    match verdict {
        Verdict::Pass(reason @ (Reason::TcDnat | Reason::TcCtForward | Reason::TcCtReply)) => {
            count(reason);
            forward::<F>(ctx)
        }
        Verdict::Dsr(reason) => {
            count(reason);
            TAIL_DSR
        }
        verdict => finish(ctx, verdict),
    }
}

/// Forwards a translated packet through the FIB when it can (counting how).
#[inline(always)]
pub(crate) fn forward<F: Family>(ctx: &TcContext) -> i32 {
    let how = F::forward(ctx);
    count(how);
    match how {
        Reason::TcFibRedirected | Reason::TcFibRedirectedNeigh | Reason::TcFibRedirectedPeer => {
            TC_ACT_REDIRECT
        }
        _ => TC_ACT_OK,
    }
}

#[inline(always)]
fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: the context is the `__sk_buff` the kernel passed in.
    unsafe { (*(ctx.as_ptr() as *const __sk_buff)).ifindex }
}

#[inline(always)]
pub(crate) fn now() -> u64 {
    // SAFETY: the helper takes no arguments.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn random() -> u32 {
    // SAFETY: the helper takes no arguments.
    unsafe { bpf_get_prandom_u32() }
}

#[inline(always)]
pub(crate) fn tuple<A: Copy>(flow: &Flow<A>) -> Tuple<A> {
    Tuple {
        saddr: flow.saddr,
        daddr: flow.daddr,
        sport: flow.sport,
        dport: flow.dport,
        proto: flow.proto,
    }
}

/// Whether a conntrack entry was seen recently enough to still count.
///
/// `now` was read before the lookup, so an entry can have been refreshed
/// after it by a packet of the same flow on another CPU (a bulk TCP flow's
/// segments and ACK-clocked transmissions are processed on every CPU at
/// once): `last_seen_ns > now` is an age of 0, not a wrapped-around huge
/// age. Taking it for idle made the flow a miss mid-stream, balanced anew
/// and SNATed from another port: the backend answered with a RST.
#[inline(always)]
pub(crate) fn fresh<A>(entry: &CtEntry<A>, protocol: u8, now: u64) -> bool {
    family::fresh_at(entry.last_seen_ns, entry.flags, protocol, now)
}

/// What the conntrack half of ingress leaves to the new-flow program.
pub(crate) enum Step {
    /// The packet's verdict.
    Done(i32),
    /// No fresh entry: a new flow (`true`: its forward entry was removed, the
    /// backend being gone).
    New(bool),
}

/// Parse and conntrack (see `tc_tail::ingress`). Each step is its own BPF function
/// called in turn, so their stack frames are never stacked on one another
/// (the verifier allows 512 bytes for the whole call chain).
#[inline(never)]
pub(crate) fn ingress_tracked<F: Family>(ctx: &TcContext) -> Step {
    let mut flow = Flow::default();
    match F::parse(ctx, &mut flow) {
        Ok(()) => {}
        Err(Reason::TcIcmpErrorPassed) => return Step::Done(finish(ctx, icmp_error::<F>(ctx))),
        Err(reason) => return Step::Done(finish(ctx, parse_failed(reason))),
    }
    match tracked::<F>(ctx, &flow, now()) {
        Tracked::Done(verdict) => Step::Done(finish_ingress::<F>(ctx, verdict)),
        // Most packets on a device are to no frontend (the node's own
        // traffic): passed here, without the new-flow program's tail call
        // and second parse (+250 ns a packet, measured).
        Tracked::Untracked if !is_frontend::<F>(&flow) => {
            // Options or extension headers: maybe a DSR option for a
            // backend here (`crate::dsr`), which the DSR program records.
            if F::dsr_option(&flow) {
                crate::dsr::mark(ctx, None);
                return Step::Done(TAIL_DSR);
            }
            Step::Done(finish(ctx, Verdict::Pass(Reason::TcPass)))
        }
        Tracked::Untracked => Step::New(false),
        Tracked::BackendGone => Step::New(true),
    }
}

/// Whether the packet's destination is a frontend of either scope (what
/// [`choose`] looks up first; it passes anything else as `TcPass`).
#[inline(never)]
fn is_frontend<F: Family>(flow: &Flow<F::Addr>) -> bool {
    F::lookup(flow.daddr, flow.dport, flow.proto, scope::EXTERNAL).is_some()
        || F::lookup(flow.daddr, flow.dport, flow.proto, scope::INTERNAL).is_some()
}

/// A packet [`ingress_tracked`] found no fresh entry for: a new flow to a
/// frontend, else a reject, else passed.
#[inline(never)]
pub(crate) fn ingress_new<F: Family>(ctx: &TcContext) -> i32 {
    let rebalanced = ctx.cb().first().is_some_and(|cb| cb & CB_REBALANCED != 0);
    let mut flow = Flow::default();
    if let Err(reason) = F::parse(ctx, &mut flow) {
        // `ingress_tracked` parsed it: not reached, but for a changed packet.
        return finish(ctx, parse_failed(reason));
    }
    let now = now();
    let mut chosen = Choice {
        backend: Chosen {
            addr: flow.daddr,
            port: flow.dport,
            flags: 0,
            id: 0,
        },
        frontend: flow.daddr,
        rev_nat_id: 0,
        maglev_table: 0,
        snat: 0,
    };
    let verdict = match choose::<F>(ctx, &flow, &mut chosen) {
        Verdict::Pass(Reason::TcDnat) => {
            maglev_select::<F>(&flow, &mut chosen);
            if flow.proto == proto::TCP && flow.tcp_flags & TCP_SYN == 0 {
                count(Reason::TcMidFlowMiss);
            }
            if rebalanced {
                count(Reason::TcRebalanced);
            }
            commit::<F>(ctx, &flow, &chosen, now)
        }
        Verdict::Reject if !reject_budget::take(now) => Verdict::Drop(Reason::TcRejectRateLimited),
        Verdict::Reject => {
            if F::reject(ctx, &flow) {
                Verdict::Bounce(Reason::TcRejected)
            } else {
                Verdict::Drop(Reason::TcRejectFailed)
            }
        }
        verdict => verdict,
    };
    finish_ingress::<F>(ctx, verdict)
}

/// A packet the parser left alone: passed untouched, except fragments that
/// cannot follow the rest of their datagram (`frag`), which are dropped.
#[inline(always)]
pub(crate) fn parse_failed(reason: Reason) -> Verdict {
    match reason {
        Reason::TcFragmentUnknown | Reason::TcFragmentDropped => Verdict::Drop(reason),
        reason => Verdict::Pass(reason),
    }
}

/// An ICMP error about a packet we translated (it quotes the packet as we
/// sent it): the reverse of the quoted tuple is the key of the entry that
/// rewrites the flow's other direction, whose rewrite tells what the quoted
/// packet looked like before translation and who should get the error.
#[inline(never)]
fn icmp_error<F: Family>(ctx: &TcContext) -> Verdict {
    let mut error = IcmpError::default();
    if F::parse_icmp_error(ctx, &mut error).is_err() {
        return Verdict::Pass(Reason::TcIcmpErrorPassed);
    }
    let key = Tuple {
        saddr: error.inner.daddr,
        daddr: error.inner.saddr,
        sport: error.inner.dport,
        dport: error.inner.sport,
        proto: error.inner.proto,
    };
    match F::ct_find(&key, now()) {
        Some(entry) => {
            if F::rewrite_icmp_error(ctx, &error, &entry.to) {
                Verdict::Pass(Reason::TcIcmpErrorTranslated)
            } else {
                Verdict::Drop(Reason::TcRewriteFailed)
            }
        }
        None => Verdict::Pass(Reason::TcIcmpErrorPassed),
    }
}

/// The conntrack step's outcome.
enum Tracked {
    /// A fresh entry matched and was applied (or the packet dropped).
    Done(Verdict),
    /// No fresh entry.
    Untracked,
    /// A fresh forward entry whose backend was removed.
    BackendGone,
}

/// The established map first (one lookup for established traffic), then
/// the pending one.
#[inline(always)]
fn tracked<F: Family>(ctx: &TcContext, flow: &Flow<F::Addr>, now: u64) -> Tracked {
    match tracked_in::<F>(ctx, flow, now, Ct::Established) {
        Tracked::Untracked => tracked_in::<F>(ctx, flow, now, Ct::Pending),
        done => done,
    }
}

#[inline(never)]
fn tracked_in<F: Family>(ctx: &TcContext, flow: &Flow<F::Addr>, now: u64, table: Ct) -> Tracked {
    let key = tuple(flow);
    let Some(entry) = F::ct_get(&key, table) else {
        return Tracked::Untracked;
    };
    if !fresh(&entry, flow.proto, now) {
        return Tracked::Untracked;
    }
    if entry.flags & ct_flags::REPLY == 0 && !F::backend_exists(entry.backend_id) {
        // Re-balanced as a new flow, whose entries go to the pending map:
        // this one must not shadow them.
        F::ct_remove(&key, table);
        return Tracked::BackendGone;
    }
    Tracked::Done(apply::<F>(ctx, flow, &key, &entry, now, table))
}

/// What [`choose`] decided for a new flow.
struct Choice<A> {
    backend: Chosen<A>,
    /// The frontend's address (the packet's destination).
    frontend: A,
    rev_nat_id: u32,
    /// The `MAGLEV` table slot 0 names (`ServiceValue::maglev_table_id`).
    maglev_table: u32,
    /// [`choice_bits`]: SNAT, and what [`maglev_select`] needs (one byte, so
    /// `ingress`'s frame does not grow: the call chain is at the verifier's
    /// 512 bytes).
    snat: u8,
}

/// The [`choice_bits`] `MAGLEV` (`EXTERNAL` without `AFFINITY`) and
/// `EXTERNAL_SCOPE` (`ETP_LOCAL`, set only on external-scope entries) of a
/// frontend's `svc_flags`, without a branch.
#[inline(always)]
fn maglev_bits(flags: u16) -> u8 {
    const _: () = assert!(svc_flags::AFFINITY == 1 && svc_flags::EXTERNAL == 2);
    const _: () = assert!(svc_flags::ETP_LOCAL == choice_bits::EXTERNAL_SCOPE as u16);
    let external_no_affinity = (flags >> 1) & !flags & 1;
    ((external_no_affinity as u8) << 2) | (flags & svc_flags::ETP_LOCAL) as u8
}

/// Bits of [`Choice::snat`].
mod choice_bits {
    /// The flow is SNATed.
    pub const SNAT: u8 = 1 << 0;
    /// A backend on another node would be SNATed (an external frontend
    /// without `externalTrafficPolicy: Local`, not short-circuited).
    pub const SNAT_IF_REMOTE: u8 = 1 << 1;
    /// An external frontend without ClientIP affinity: Maglev may choose.
    pub const MAGLEV: u8 = 1 << 2;
    /// The backends came from the external scope.
    pub const EXTERNAL_SCOPE: u8 = 1 << 3;
    /// `--lb-mode=dsr` on this device (`device_flags::DSR`) for a family
    /// with a DSR option: a backend on another node gets DSR, not SNAT.
    pub const DSR_MODE: u8 = 1 << 4;
    /// The flow goes by direct server return (not SNATed).
    pub const DSR: u8 = 1 << 5;
}

/// A packet without a (fresh) conntrack entry: finds its frontend and picks
/// a backend into `out`. `Pass(TcDnat)` means "translate"; `Reject` means
/// "answer with a port-unreachable"; anything else is final.
#[inline(never)]
fn choose<F: Family>(ctx: &TcContext, flow: &Flow<F::Addr>, out: &mut Choice<F::Addr>) -> Verdict {
    let dev = device_flags_of(ctx);
    let external_entry = F::lookup(flow.daddr, flow.dport, flow.proto, scope::EXTERNAL);
    // kube-proxy's short-circuit: a pod's traffic to an
    // `externalTrafficPolicy: Local` frontend (seen on a pod-facing device,
    // the detector saying in-cluster) uses the cluster-wide endpoints, as if
    // it had gone out to a load balancer and come back. The detector is only
    // asked once a frontend is found, so other traffic pays nothing for it.
    let short_circuit = external_entry.is_some()
        && dev & device_flags::CLUSTER_IP != 0
        && origin::<F>(dev, flow.saddr) == Origin::InCluster;
    let found = match external_entry {
        Some(found) if !short_circuit => Some((scope::EXTERNAL, found)),
        _ => F::lookup(flow.daddr, flow.dport, flow.proto, scope::INTERNAL)
            .map(|found| (scope::INTERNAL, found)),
    };
    let Some((svc_scope, (svc_key, frontend))) = found else {
        return Verdict::Pass(Reason::TcPass);
    };
    let external = frontend.flags & svc_flags::EXTERNAL != 0;
    // Why a ClusterIP flow is SNATed (`None`: it is not).
    let mut masquerade = None;
    if !external {
        match cluster_ip_rule(dev, origin::<F>(dev, flow.saddr)) {
            ClusterIpRule::Skip => return Verdict::Pass(Reason::TcClusterIpSkipped),
            ClusterIpRule::Translate => {}
            ClusterIpRule::Masquerade(reason) => masquerade = Some(reason),
        }
    }
    // A later fragment without a conntrack entry: its first fragment was not
    // translated (dropped, rejected or never seen), so it cannot be either.
    if flow.l3_only {
        return Verdict::Drop(Reason::TcFragmentDropped);
    }
    // `loadBalancerSourceRanges`: checked for new flows only, as kube-proxy's
    // firewall chain sees only `ct state new`; established flows keep going.
    // Only frontends with ranges (`SOURCE_RANGES`) pay for the lookup.
    if frontend.flags & svc_flags::SOURCE_RANGES != 0
        && !F::source_allowed(frontend.rev_nat_id, flow.saddr)
    {
        return Verdict::Drop(Reason::TcSourceRangeDropped);
    }
    let etp_local = frontend.flags & svc_flags::ETP_LOCAL != 0;
    let client = F::affinity_client(flow.saddr);
    match F::select(&svc_key, &frontend, random(), client, &mut out.backend) {
        Ok(()) => {}
        Err(Reason::NoBackend) if svc_scope == scope::EXTERNAL || etp_local => {
            return Verdict::Drop(Reason::TcEtpLocalDropped);
        }
        Err(Reason::NoBackend) => return Verdict::Reject,
        Err(reason) => return Verdict::Drop(reason),
    }
    let hairpin = flow.saddr == out.backend.addr;
    let snat_if_remote = external && !etp_local && !short_circuit;
    let snat = hairpin || (snat_if_remote && out.backend.flags & backend_flags::LOCAL == 0);
    // Constant `false` for a family without DSR (its frame must not grow:
    // `tc_ingress6_new`'s call chain is at the verifier's 512 bytes).
    let dsr_mode = F::DSR_SLOT.is_some() && dev & device_flags::DSR != 0;
    // Bit arithmetic, not branches: the verifier keeps one state.
    out.snat = u8::from(snat)
        | (u8::from(snat_if_remote) << 1)
        | maglev_bits(frontend.flags)
        | (u8::from(dsr_mode) << 4);
    // A masqueraded ClusterIP flow is SNATed when its backend is on another
    // node, as external `externalTrafficPolicy: Cluster` flows are: a local
    // backend's replies come back through this node anyway (and may come in
    // on a device without these programs, where a reply to the node's own
    // address would be taken for local traffic).
    if let Some(reason) = masquerade
        && (hairpin || out.backend.flags & backend_flags::LOCAL == 0)
    {
        count(reason);
        out.snat |= choice_bits::SNAT;
    }
    out.frontend = flow.daddr;
    out.rev_nat_id = frontend.rev_nat_id;
    out.maglev_table = frontend.maglev_table_id();
    Verdict::Pass(Reason::TcDnat)
}

/// Replaces the (random) backend [`choose`] picked for a new flow to an
/// external frontend without ClientIP affinity by the backend of the
/// frontend's Maglev table for this packet's 5-tuple, the same on every node
/// (`--lb-algorithm=maglev`), and redoes the SNAT decision for it. Nothing
/// changes when Maglev is off, the frontend has no table (no backend, or
/// more than the table has entries), or the entry's backend is missing.
/// Called by `ingress` after `choose` returned, so its frame is never stacked
/// on `choose`'s (the verifier's 512 bytes).
#[inline(never)]
fn maglev_select<F: Family>(flow: &Flow<F::Addr>, out: &mut Choice<F::Addr>) {
    maglev_replace::<F>(flow, out);
    // `--lb-mode=dsr`: a backend on another node (SNAT for it, not hairpin)
    // gets direct server return instead. Decided here, not in `choose`,
    // whose frame must not grow.
    const DSR_SNAT: u8 = choice_bits::DSR_MODE | choice_bits::SNAT;
    if out.snat & DSR_SNAT == DSR_SNAT && flow.saddr != out.backend.addr {
        out.snat = (out.snat & !choice_bits::SNAT) | choice_bits::DSR;
    }
    // Only `SNAT` and `DSR` from here on: fewer distinct states for the
    // verifier to walk `commit` with.
    out.snat &= choice_bits::SNAT | choice_bits::DSR;
}

#[inline(always)]
fn maglev_replace<F: Family>(flow: &Flow<F::Addr>, out: &mut Choice<F::Addr>) {
    if out.snat & choice_bits::MAGLEV == 0 {
        return;
    }
    let Some((size, seed)) = maglev::config() else {
        return;
    };
    let svc_scope = if out.snat & choice_bits::EXTERNAL_SCOPE != 0 {
        scope::EXTERNAL
    } else {
        scope::INTERNAL
    };
    let id = maglev::pick(out.maglev_table, svc_scope, F::flow_hash(flow, seed) % size);
    if id == 0 || !F::backend(id, &mut out.backend) {
        return;
    }
    let snat = flow.saddr == out.backend.addr
        || (out.snat & choice_bits::SNAT_IF_REMOTE != 0
            && out.backend.flags & backend_flags::LOCAL == 0);
    out.snat = (out.snat & !choice_bits::SNAT) | u8::from(snat);
    count(Reason::MaglevPick);
}

/// Writes both conntrack entries of a new flow into the pending map
/// (claiming a SNAT port when needed) and rewrites the packet. One key and
/// one entry are reused for both directions, to keep the frame small.
#[inline(never)]
fn commit<F: Family>(
    ctx: &TcContext,
    flow: &Flow<F::Addr>,
    choice: &Choice<F::Addr>,
    now: u64,
) -> Verdict {
    let backend = &choice.backend;
    let progress = family::progress_flags(flow);
    // The reply direction: backend → client (or → node:port when SNATed),
    // rewritten to frontend → client.
    let mut entry = CtEntry {
        last_seen_ns: now,
        to: Tuple {
            saddr: choice.frontend,
            daddr: flow.saddr,
            sport: flow.dport,
            dport: flow.sport,
            proto: flow.proto,
        },
        rev_nat_id: choice.rev_nat_id,
        flags: ct_flags::REPLY | progress,
        backend_id: backend.id,
    };
    let mut key = Tuple {
        saddr: backend.addr,
        daddr: flow.saddr,
        sport: backend.port,
        dport: flow.sport,
        proto: flow.proto,
    };
    let snat = choice.snat & choice_bits::SNAT != 0;
    // Constant `false` for a family without DSR: its frames stay as they were.
    let dsr = F::DSR_SLOT.is_some() && choice.snat & choice_bits::DSR != 0;
    if dsr {
        entry.flags |= ct_flags::DSR;
    }
    if snat {
        let Some(node) = F::snat_addr() else {
            return Verdict::Drop(Reason::TcNoSnatAddress);
        };
        key.daddr = node;
        entry.flags |= ct_flags::SNAT;
    }
    // Without SNAT, the reply key can be held by a live flow of another
    // frontend: the client reused its source port towards another frontend
    // with the same backend. That flow's entry is found first for replies
    // and must not be overwritten (a spoofed SYN must not end it), so the
    // new flow's source port is remapped (the client's address kept), as
    // netfilter's implicit source NAT does on such a clash; an entry past
    // its timeout is taken over.
    // Under DSR the backend answers the client itself: a remapped port
    // would not be mapped back, and this node never sees the replies, so
    // the reply entry is only written (for `promote`), never remapped.
    let remap = !snat && !dsr && F::ct_clash(&key, &entry.to, now);
    if remap {
        count(Reason::TcCtReplyClash);
    }
    if snat || remap {
        let mut claimed = false;
        let mut tries = 0;
        while tries < SNAT_TRIES {
            let port = snat_port();
            key.dport = Be16::from_host(port as u16);
            tries += 1;
            // The port is taken by an established flow, unless that flow went
            // idle: a closed flow's entry stays in the LRU until evicted, and
            // without this every port would look taken after the first 28k
            // flows to a backend.
            if !F::ct_idle(&key, Ct::Established, flow.proto, now) {
                continue;
            }
            match F::ct_put(&key, Ct::Pending, &entry, u64::from(BPF_NOEXIST)) {
                Ok(()) => {
                    claimed = true;
                    break;
                }
                Err(EEXIST) => {}
                // Not a taken port: the LRU found no free element.
                Err(_) => return Verdict::Drop(Reason::TcCtUpdateFailed),
            }
            // Held by a pending flow: taken over when it was never answered
            // within its timeout (`TCP_SYN_NS` for a SYN).
            if F::ct_idle(&key, Ct::Pending, flow.proto, now)
                && F::ct_put(&key, Ct::Pending, &entry, 0).is_ok()
            {
                count(Reason::TcSnatPortReclaimed);
                claimed = true;
                break;
            }
        }
        if !claimed {
            return Verdict::Drop(Reason::TcSnatPortsExhausted);
        }
    } else if F::ct_put(&key, Ct::Pending, &entry, 0).is_err() {
        return Verdict::Drop(Reason::TcCtUpdateFailed);
    }
    // The forward direction: the client's packet, rewritten to the backend
    // (from the claimed node address and port when SNATed).
    let reply_saddr = key.saddr;
    let reply_dport = key.dport;
    entry.to = Tuple {
        saddr: key.daddr,
        daddr: reply_saddr,
        sport: reply_dport,
        dport: backend.port,
        proto: flow.proto,
    };
    entry.flags =
        if snat { ct_flags::SNAT } else { 0 } | if dsr { ct_flags::DSR } else { 0 } | progress;
    let reply_key = key;
    key = tuple(flow);
    if F::ct_put(&key, Ct::Pending, &entry, 0).is_err() {
        F::ct_remove(&reply_key, Ct::Pending);
        return Verdict::Drop(Reason::TcCtUpdateFailed);
    }
    count(Reason::TcCtPendingCreated);
    if !F::rewrite(ctx, flow, &entry.to) {
        return Verdict::Drop(Reason::TcRewriteFailed);
    }
    if dsr {
        F::dsr_mark(ctx, flow.daddr, flow.dport);
        return Verdict::Dsr(Reason::TcDnat);
    }
    Verdict::Pass(Reason::TcDnat)
}

/// Applies a conntrack hit's rewrite (found in `table`) and refreshes the
/// entry, or promotes a pending flow that this packet answers.
#[inline(always)]
pub(crate) fn apply<F: Family>(
    ctx: &TcContext,
    flow: &Flow<F::Addr>,
    key: &Tuple<F::Addr>,
    entry: &CtEntry<F::Addr>,
    now: u64,
    table: Ct,
) -> Verdict {
    let progress = family::progress_flags(flow);
    let past_syn = flow.proto == proto::TCP && progress & ct_flags::SYN_ONLY == 0;
    if table == Ct::Pending && answers(flow, entry) {
        promote::<F>(key, entry, now);
        if progress & ct_flags::CLOSING != 0 {
            F::ct_touch(key, Ct::Established, now, ct_flags::CLOSING, 0);
        }
    } else if past_syn && entry.flags & ct_flags::SYN_ONLY != 0 {
        // Past the handshake: the other direction's entry too, once, so an
        // idle connection's reply entry (which may have seen only the
        // SYN-ACK) keeps the established timeout.
        touch_peer::<F>(entry, table, now, ct_flags::SYN_ONLY);
        F::ct_touch(
            key,
            table,
            now,
            progress & ct_flags::CLOSING,
            ct_flags::SYN_ONLY,
        );
    } else {
        if table == Ct::Pending {
            // Both directions of a pending flow age alike in the LRU (a
            // lookup marks an entry referenced): otherwise the forward
            // entries, never looked up again while the backend's SYN-ACKs
            // mark the reply entries, would be evicted first, and the reply
            // entries left would hold twice the SNAT ports.
            touch_peer::<F>(entry, table, now, 0);
        }
        let closing = progress & ct_flags::CLOSING;
        if table == Ct::Pending || closing & !entry.flags != 0 || !recent(entry, now) {
            F::ct_touch(key, table, now, closing, 0);
        }
    }
    if !F::rewrite(ctx, flow, &entry.to) {
        return Verdict::Drop(Reason::TcRewriteFailed);
    }
    // A DSR flow's forward entry: its key is the packet as it arrived, to
    // the frontend.
    if F::DSR_SLOT.is_some() && entry.flags & (ct_flags::DSR | ct_flags::REPLY) == ct_flags::DSR {
        F::dsr_mark(ctx, key.daddr, key.dport);
        return Verdict::Dsr(Reason::TcCtForward);
    }
    Verdict::Pass(if entry.flags & ct_flags::REPLY != 0 {
        Reason::TcCtReply
    } else {
        Reason::TcCtForward
    })
}

/// How stale an established entry's `last_seen_ns` may get before a packet
/// refreshes it: the timeouts are 10 s and more, and a write per packet
/// (a second lookup, and a cache line every CPU of a bulk flow writes)
/// showed in the per-packet cost.
const REFRESH_NS: u64 = 1_000_000_000;

/// Whether `entry` was refreshed less than [`REFRESH_NS`] ago (or later than
/// `now`, by another CPU).
#[inline(always)]
pub(crate) fn recent<A>(entry: &CtEntry<A>, now: u64) -> bool {
    now.saturating_sub(entry.last_seen_ns) < REFRESH_NS
}

/// Refreshes the other direction's entry of `entry`'s flow in `table`,
/// clearing the `clear` flags. Its key is `entry`'s rewrite, reversed. Out of
/// line: the key gets its own frame.
#[inline(never)]
fn touch_peer<F: Family>(entry: &CtEntry<F::Addr>, table: Ct, now: u64, clear: u8) {
    let peer = Tuple {
        saddr: entry.to.daddr,
        daddr: entry.to.saddr,
        sport: entry.to.dport,
        dport: entry.to.sport,
        proto: entry.to.proto,
    };
    F::ct_touch(&peer, table, now, 0, clear);
}

/// Whether a packet hitting a pending entry answers its flow: for TCP, a
/// packet from the client without SYN or RST (its ACK completing the
/// handshake, which a spoofed SYN's flow never sends; the backend's packets
/// do not count: besides its SYN-ACK, a backend answers a SYN on a SNAT port
/// that an earlier flow left in `SYN_RECV` or `TIME_WAIT` with a bare ACK);
/// for UDP, a reply from the backend, or under DSR (whose replies never come
/// back here) the client's second datagram.
#[inline(always)]
fn answers<A>(flow: &Flow<A>, entry: &CtEntry<A>) -> bool {
    let reply = entry.flags & ct_flags::REPLY != 0;
    if flow.proto == proto::TCP {
        !reply && flow.tcp_flags & (TCP_SYN | TCP_RST) == 0
    } else {
        reply || entry.flags & ct_flags::DSR != 0
    }
}

/// Moves an answered pending flow's entries (the one at `key`, and its other
/// direction's, keyed by `entry`'s rewrite reversed) to the established
/// map (see `Family::ct_promote`).
#[inline(never)]
fn promote<F: Family>(key: &Tuple<F::Addr>, entry: &CtEntry<F::Addr>, now: u64) {
    if !F::ct_promote(key, now) {
        return;
    }
    let peer = Tuple {
        saddr: entry.to.daddr,
        daddr: entry.to.saddr,
        sport: entry.to.dport,
        dport: entry.to.sport,
        proto: entry.to.proto,
    };
    F::ct_promote(&peer, now);
    count(Reason::TcCtPromoted);
}

#[inline(always)]
fn device_flags_of(ctx: &TcContext) -> u32 {
    // SAFETY: copied out at once.
    unsafe { DEVICES.get(&ifindex(ctx)) }.map_or(0, |d| d.flags)
}
