//! `tc_egress`: a reply leaving through the device (backend → client, not
//! SNATed) is rewritten to come from the frontend: through the flow's
//! conntrack entry (`CT_*`, then `CT_PENDING_*`), or, on a backend's node
//! under `--lb-mode=dsr`, through the frontend a DSR option recorded
//! (`DSR_*`, see `crate::dsr`), with the backend's SYN-ACK MSS lowered by the
//! option's size.

use aya_ebpf::{macros::classifier, programs::TcContext};
use proxy_common::{Reason, ct_flags, proto};

use crate::{
    dsr,
    family::{Ct, Family, Tuple, V4, V6},
    packet::{self, Flow, TCP_SYN},
    tc::{Verdict, apply, finish, fresh, now, parse_failed, tuple},
};

#[classifier]
pub fn tc_egress(ctx: TcContext) -> i32 {
    match packet::ethertype(&ctx) {
        Some(packet::ETH_P_IP) => egress::<V4>(&ctx),
        Some(packet::ETH_P_IPV6) => egress::<V6>(&ctx),
        _ => finish(&ctx, Verdict::Pass(Reason::TcPassNonIp)),
    }
}

#[inline(never)]
fn egress<F: Family>(ctx: &TcContext) -> i32 {
    let mut flow = Flow::default();
    if let Err(reason) = F::parse(ctx, &mut flow) {
        return finish(ctx, parse_failed(reason));
    }
    let verdict = match reply::<F>(ctx, &flow, Ct::Established) {
        Verdict::Pass(Reason::TcPass) => match reply::<F>(ctx, &flow, Ct::Pending) {
            Verdict::Pass(Reason::TcPass) => dsr_reply::<F>(ctx, &flow),
            verdict => verdict,
        },
        verdict => verdict,
    };
    finish(ctx, verdict)
}

/// Egress's only step: a reply (not SNATed) leaving towards the client is
/// rewritten to come from the frontend (its entry looked up in `table`).
#[inline(never)]
fn reply<F: Family>(ctx: &TcContext, flow: &Flow<F::Addr>, table: Ct) -> Verdict {
    let key = tuple(flow);
    let now = now();
    match F::ct_get(&key, table) {
        Some(entry)
            if entry.flags & ct_flags::REPLY != 0
                && entry.flags & ct_flags::SNAT == 0
                && fresh(&entry, flow.proto, now) =>
        {
            apply::<F>(ctx, flow, &key, &entry, now, table)
        }
        _ => Verdict::Pass(Reason::TcPass),
    }
}

/// A backend's reply to a flow that arrived by DSR (`crate::dsr`): from
/// the frontend the flow's option named, straight on to the client.
#[inline(never)]
fn dsr_reply<F: Family>(ctx: &TcContext, flow: &Flow<F::Addr>) -> Verdict {
    let Some((saddr, sport)) = F::dsr_frontend(&tuple(flow)) else {
        return Verdict::Pass(Reason::TcPass);
    };
    let to = Tuple {
        saddr,
        sport,
        ..tuple(flow)
    };
    if !F::rewrite(ctx, flow, &to) {
        return Verdict::Drop(Reason::TcRewriteFailed);
    }
    // The backend's SYN-ACK: its MSS made room for the option the client's
    // segments gain on the first node.
    if F::DSR_SLOT.is_some()
        && flow.proto == proto::TCP
        && !flow.l3_only
        && flow.tcp_flags & TCP_SYN != 0
        && dsr::clamp_mss(ctx, flow.l4_off, flow.csum_off).is_err()
    {
        return Verdict::Drop(Reason::TcRewriteFailed);
    }
    Verdict::Pass(Reason::TcDsrReply)
}
