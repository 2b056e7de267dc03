//! The tc ingress entry points and their tail calls (`TC_TAIL`, slots in
//! `proxy_common::tail`): `tc_ingress`, attached to the devices, reads the
//! ethertype and tail-calls `tc_ingress4` or `tc_ingress6` (conntrack, see
//! [`tc::ingress_tracked`]), which tail-call `tc_ingress4_new` or
//! `tc_ingress6_new` (a new flow, see [`tc::ingress_new`]) for a packet to a
//! frontend no conntrack entry knows. Every piece is verified on its own. A
//! tail call that fails (an empty slot) is counted as `tc_tail_call_failed`
//! and the packet passed untouched, as with no program attached.

use aya_ebpf::{macros::classifier, programs::TcContext};
use proxy_common::{Reason, tail};

use crate::{
    dsr,
    family::{Family, V4, V6},
    maps::TC_TAIL,
    packet,
    stats::count,
    tc,
};

/// The ingress entry point: by ethertype, a tail call into the family's
/// program (`TC_TAIL`), so each family's path is verified on its own (the
/// generic path monomorphized for both families did not leave room under
/// the verifier's 1,000,000 instructions). A tail call that fails (an empty
/// slot) is counted and the packet passed untouched, as with no program.
#[classifier]
pub fn tc_ingress(ctx: TcContext) -> i32 {
    let slot = match packet::ethertype(&ctx) {
        Some(packet::ETH_P_IP) => tail::INGRESS4,
        Some(packet::ETH_P_IPV6) => tail::INGRESS6,
        _ => return tc::finish(&ctx, tc::Verdict::Pass(Reason::TcPassNonIp)),
    };
    // SAFETY: the context is the one the kernel passed in; on success the
    // call does not return, on failure it changes nothing.
    unsafe { TC_TAIL.tail_call(&ctx, slot) };
    tc::finish(&ctx, tc::Verdict::Pass(Reason::TcTailCallFailed))
}

/// IPv4 ingress (`TC_TAIL` slot `tail::INGRESS4`): conntrack, then a tail
/// call into `tc_ingress4_new` for a packet no entry knows.
#[classifier]
pub fn tc_ingress4(ctx: TcContext) -> i32 {
    ingress::<V4>(ctx, tail::NEW4)
}

/// IPv4 direct server return (`TC_TAIL` slot `tail::DSR4`, see
/// [`crate::dsr`]): tail-called by `tc_ingress4` or `tc_ingress4_new` for a
/// packet just translated for DSR (the option added, then forwarded), or by
/// `tc_ingress4` for an untracked packet with IP options (a DSR option
/// recorded, the packet passed on).
#[classifier]
pub fn tc_dsr4(ctx: TcContext) -> i32 {
    match dsr::task4(&ctx) {
        dsr::Task::Add(addr, port) => match dsr::add4(&ctx, addr, port) {
            Ok(()) => {
                count(Reason::TcDsrSent);
                tc::forward::<V4>(&ctx)
            }
            Err(_) => tc::finish(&ctx, tc::Verdict::Drop(Reason::TcDsrFailed)),
        },
        dsr::Task::Record => tc::finish(&ctx, tc::Verdict::Pass(dsr::record4(&ctx))),
    }
}

/// IPv6 ingress (`TC_TAIL` slot `tail::INGRESS6`), as `tc_ingress4`.
#[classifier]
pub fn tc_ingress6(ctx: TcContext) -> i32 {
    ingress::<V6>(ctx, tail::NEW6)
}

/// An IPv4 packet no conntrack entry knows (`TC_TAIL` slot `tail::NEW4`):
/// a new flow to a frontend, a reject, or passed.
#[classifier]
pub fn tc_ingress4_new(ctx: TcContext) -> i32 {
    let verdict = tc::ingress_new::<V4>(&ctx);
    dsr_tail::<V4>(&ctx, verdict)
}

/// The same for IPv6 (`TC_TAIL` slot `tail::NEW6`).
#[classifier]
pub fn tc_ingress6_new(ctx: TcContext) -> i32 {
    let verdict = tc::ingress_new::<V6>(&ctx);
    dsr_tail::<V6>(&ctx, verdict)
}

/// `verdict`, unless it is [`tc::TAIL_DSR`]: then a tail call into the
/// family's DSR program (a failed one drops the packet, which cannot go on
/// without its option). Made from the program's own frame.
#[inline(always)]
fn dsr_tail<F: Family>(ctx: &TcContext, verdict: i32) -> i32 {
    // A family without DSR never asks for it; nothing here for it, so its
    // programs' frames stay as they were (`tc_ingress6_new`'s call chain is
    // at the verifier's 512 bytes).
    let Some(slot) = F::DSR_SLOT else {
        return verdict;
    };
    if verdict != tc::TAIL_DSR {
        return verdict;
    }
    // SAFETY: as in `tc_ingress`.
    unsafe { TC_TAIL.tail_call(ctx, slot) };
    tc::finish(ctx, tc::Verdict::Drop(Reason::TcTailCallFailed))
}

/// One family's ingress, in two programs: parse and conntrack here, and a
/// packet no fresh entry knows goes on, by a tail call to `slot`, to
/// [`tc::ingress_new`] (a new flow, else a reject), which parses it again. Two
/// programs, so each is verified on its own (the whole path of one family
/// took most of the verifier's 1,000,000 instructions). The tail call is made
/// from the program's own frame, never from a BPF function (the verifier
/// limits the frames below a tail call to 256 bytes).
#[inline(always)]
fn ingress<F: Family>(mut ctx: TcContext, slot: u32) -> i32 {
    match tc::ingress_tracked::<F>(&ctx) {
        tc::Step::Done(verdict) => dsr_tail::<F>(&ctx, verdict),
        tc::Step::New(rebalanced) => {
            if let Some(cb) = ctx.cb_mut().first_mut() {
                *cb = if rebalanced { tc::CB_REBALANCED } else { 0 };
            }
            // SAFETY: as in `tc_ingress`.
            unsafe { TC_TAIL.tail_call(&ctx, slot) };
            tc::finish(&ctx, tc::Verdict::Pass(Reason::TcTailCallFailed))
        }
    }
}
