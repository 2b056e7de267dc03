//! Text output of `proxy explain`, for people (`--output json` serializes the
//! [`ServiceExplanation`]s instead).
//!
//! Pure: builds a string.

use std::fmt::Write;

use super::{RuleExplanation, ServiceExplanation, Verdict};
use crate::model::desired::Scope;

/// The explanations as text, one block per Service.
pub fn text(explained: &[ServiceExplanation]) -> String {
    let mut out = String::new();
    for (i, svc) in explained.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        service(&mut out, svc);
    }
    out
}

fn service(out: &mut String, svc: &ServiceExplanation) {
    let zone = svc.zone.as_deref().unwrap_or("(none)");
    let _ = writeln!(
        out,
        "Service {} (node {:?}, zone {zone})",
        svc.service, svc.node
    );
    let _ = writeln!(
        out,
        "  internalTrafficPolicy: {}, externalTrafficPolicy: {}",
        svc.internal_traffic_policy, svc.external_traffic_policy
    );
    if let Some(td) = &svc.traffic_distribution {
        let _ = writeln!(out, "  trafficDistribution: {}: {}", td.value, td.note);
    }
    match &svc.session_affinity {
        Some(a) => {
            let _ = writeln!(out, "  sessionAffinity: {}", a.note);
        }
        None => {
            let _ = writeln!(out, "  sessionAffinity: None");
        }
    }
    for r in &svc.refused {
        let _ = writeln!(
            out,
            "  REFUSED {} {} [{}]: {}",
            r.kind, r.frontend, r.reason, r.message
        );
    }
    for f in &svc.frontends {
        let _ = writeln!(out, "  {} {} (port {:?})", f.kind, f.frontend, f.port_name);
        let _ = writeln!(out, "    topology: {}", f.topology_note);
        if let Some(ranges) = &f.source_ranges {
            let _ = writeln!(out, "    loadBalancerSourceRanges: {}", list(ranges));
        }
        for s in &f.scopes {
            let label = match s.scope {
                None => "backends",
                Some(Scope::Internal) => "internal",
                Some(Scope::External) => "external",
            };
            let _ = writeln!(
                out,
                "    {label}: {} ({})",
                list(&s.backends),
                s.policy_note
            );
        }
        for ep in &f.endpoints {
            let mut facts = Vec::new();
            for (on, name) in [
                (ep.ready, "ready"),
                (ep.serving, "serving"),
                (ep.terminating, "terminating"),
                (ep.local, "local"),
            ] {
                if on {
                    facts.push(name.to_owned());
                }
            }
            if !ep.zone_hints.is_empty() {
                facts.push(format!("zone hints {}", ep.zone_hints.join(",")));
            }
            if !ep.node_hints.is_empty() {
                facts.push(format!("node hints {}", ep.node_hints.join(",")));
            }
            let _ = writeln!(out, "    endpoint {} [{}]", ep.endpoint, facts.join(", "));
            let _ = writeln!(out, "      cluster: {}", rule(ep.cluster));
            let _ = writeln!(out, "      local:   {}", rule(ep.local_category));
        }
        if let Some(c) = &f.client {
            let scope = match c.scope {
                Scope::Internal => "on this node",
                Scope::External => "from elsewhere",
            };
            let verdict = match c.verdict {
                Verdict::Balanced => format!("balanced over {}", list(&c.backends)),
                Verdict::Refused => "REFUSED".to_owned(),
                Verdict::Dropped => "DROPPED".to_owned(),
            };
            let _ = writeln!(
                out,
                "    client {} ({scope}): {verdict}: {}",
                c.client, c.why
            );
        }
    }
    if svc.frontends.is_empty() && svc.refused.is_empty() {
        let _ = writeln!(out, "  no frontend (no TCP or UDP port, or no cluster IP)");
    }
}

fn rule(r: RuleExplanation) -> String {
    format!("{} ({})", if r.used { "used" } else { "not used" }, r.note)
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(" ")
    }
}
