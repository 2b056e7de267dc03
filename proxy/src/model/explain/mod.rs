//! `proxy explain`: for one Service (or one frontend), which endpoints each
//! frontend uses and the rule that included or excluded each one.
//!
//! Pure: no I/O, no logging, no clock.
//!
//! Nothing here decides. The frontends, their backends and the refusals come
//! from [`service_frontends`]; each endpoint's rule from [`Rules`] (the code
//! [`categorize`](crate::model::desired::categorize) runs); which category a
//! scope uses from [`scope_category`]. So an explanation cannot disagree with
//! what the proxy programs.

pub mod render;

#[cfg(test)]
mod tests;

use std::net::IpAddr;

use serde::Serialize;

use crate::model::{
    Index,
    desired::{
        Candidate, Category, Rule, Rules, Scope, TopologyMode, TopologyWhy, candidates,
        scope_category, service_frontends,
    },
    types::{
        AddressType, EndpointSlice, Frontend, FrontendKind, FrontendSpec, NodeInfo, ObjectRef,
        Protocol, Service, TrafficPolicy,
    },
};

/// What to explain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every frontend of one Service.
    Service(ObjectRef),
    /// The frontend at this address and port (either protocol when `None`).
    Frontend {
        addr: IpAddr,
        port: u16,
        protocol: Option<Protocol>,
    },
}

/// A [`Target`] that does not parse.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot parse target {0:?}: expected NAMESPACE/NAME or VIP:PORT[/tcp|udp] (IPv6: [VIP]:PORT)"
)]
pub struct TargetError(pub String);

impl std::str::FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || TargetError(s.to_owned());
        let (addr_port, protocol) = match s.rsplit_once('/') {
            Some((head, proto)) if proto.eq_ignore_ascii_case("tcp") => (head, Some(Protocol::Tcp)),
            Some((head, proto)) if proto.eq_ignore_ascii_case("udp") => (head, Some(Protocol::Udp)),
            _ => (s, None),
        };
        if let Ok(sa) = addr_port.parse::<std::net::SocketAddr>() {
            return Ok(Target::Frontend {
                addr: sa.ip(),
                port: sa.port(),
                protocol,
            });
        }
        match s.split_once('/') {
            Some((ns, name))
                if !ns.is_empty()
                    && !name.is_empty()
                    && !name.contains('/')
                    && !ns.contains(':') =>
            {
                Ok(Target::Service(ObjectRef::new(ns, name)))
            }
            _ => Err(err()),
        }
    }
}

/// The client `--client` asks about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client {
    pub addr: IpAddr,
    /// On this node (its host or one of its pods): kube-proxy's "internal"
    /// traffic. Otherwise from elsewhere.
    pub on_node: bool,
}

/// The explanation of one Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceExplanation {
    pub service: String,
    pub node: String,
    pub zone: Option<String>,
    pub internal_traffic_policy: &'static str,
    pub external_traffic_policy: &'static str,
    /// `spec.trafficDistribution` and what became of it.
    pub traffic_distribution: Option<TrafficDistribution>,
    /// `None`: affinity off.
    pub session_affinity: Option<Affinity>,
    pub frontends: Vec<FrontendExplanation>,
    /// Frontends not programmed, with why (CVE-2020-8554).
    pub refused: Vec<RefusedFrontend>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrafficDistribution {
    pub value: String,
    pub note: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Affinity {
    pub timeout_seconds: u32,
    pub note: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RefusedFrontend {
    pub frontend: String,
    pub kind: String,
    pub reason: &'static str,
    pub message: String,
}

/// One frontend: its scopes, its endpoints and each one's rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FrontendExplanation {
    pub frontend: String,
    pub kind: String,
    pub port_name: String,
    pub topology: TopologyMode,
    pub topology_why: TopologyWhy,
    pub topology_note: &'static str,
    pub scopes: Vec<ScopeExplanation>,
    pub endpoints: Vec<EndpointExplanation>,
    /// Sources a LoadBalancer frontend accepts (`None`: any).
    pub source_ranges: Option<Vec<String>>,
    pub client: Option<ClientAnswer>,
}

/// The backends traffic from one scope gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScopeExplanation {
    /// `None` for ClusterIP frontends: one set whatever the scope.
    pub scope: Option<Scope>,
    pub category: Category,
    pub policy_note: String,
    pub backends: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointExplanation {
    pub endpoint: String,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub local: bool,
    pub zone_hints: Vec<String>,
    pub node_hints: Vec<String>,
    pub cluster: RuleExplanation,
    pub local_category: RuleExplanation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RuleExplanation {
    pub rule: Rule,
    pub used: bool,
    pub note: &'static str,
}

impl From<Rule> for RuleExplanation {
    fn from(rule: Rule) -> Self {
        Self {
            rule,
            used: rule.used(),
            note: rule.describe(),
        }
    }
}

/// What a client's traffic to a frontend gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClientAnswer {
    pub client: IpAddr,
    pub scope: Scope,
    pub verdict: Verdict,
    pub backends: Vec<String>,
    pub why: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Balanced over `backends`.
    Balanced,
    /// Refused at once: `ECONNREFUSED` at the socket, TCP RST or ICMP
    /// port-unreachable on the tc path.
    Refused,
    /// Dropped silently.
    Dropped,
}

/// Explains `target` over `services` (each with its slices, in slice-name
/// order), for `node`. Services that do not match are skipped; an empty
/// result means nothing matched.
pub fn explain<'a, S>(
    node: &NodeInfo,
    services: impl IntoIterator<Item = (&'a Service, S)>,
    target: &Target,
    client: Option<Client>,
) -> Vec<ServiceExplanation>
where
    S: AsRef<[&'a EndpointSlice]>,
{
    let mut out = Vec::new();
    for (service, slices) in services {
        if let Target::Service(id) = target
            && *id != service.id
        {
            continue;
        }
        let explained = explain_service(node, service, slices.as_ref(), target, client);
        let matched = match target {
            Target::Service(_) => true,
            Target::Frontend { .. } => {
                !explained.frontends.is_empty() || !explained.refused.is_empty()
            }
        };
        if matched {
            out.push(explained);
        }
    }
    out
}

fn wanted(target: &Target, frontend: &Frontend) -> bool {
    match target {
        Target::Service(_) => true,
        Target::Frontend {
            addr,
            port,
            protocol,
        } => {
            frontend.addr == *addr
                && frontend.port == *port
                && protocol.is_none_or(|p| p == frontend.protocol)
        }
    }
}

fn policy(p: TrafficPolicy) -> &'static str {
    match p {
        TrafficPolicy::Cluster => "Cluster",
        TrafficPolicy::Local => "Local",
    }
}

/// One Service's explanation, its frontends restricted to `target`.
pub fn explain_service(
    node: &NodeInfo,
    service: &Service,
    slices: &[&EndpointSlice],
    target: &Target,
    client: Option<Client>,
) -> ServiceExplanation {
    let computed = service_frontends(node, service, slices);
    let refused = computed
        .refusals
        .iter()
        .filter(|r| wanted(target, &r.frontend))
        .map(|r| RefusedFrontend {
            frontend: r.frontend.to_string(),
            kind: r.kind.to_string(),
            reason: r.reason.label(),
            message: r.to_string(),
        })
        .collect();
    let frontends = computed
        .frontends
        .iter()
        .filter(|(f, _)| wanted(target, f))
        .filter_map(|(f, spec)| explain_frontend(node, service, slices, *f, spec, client))
        .collect();
    ServiceExplanation {
        service: service.id.to_string(),
        node: node.name.clone(),
        zone: node.zone.clone(),
        internal_traffic_policy: policy(service.internal_traffic_policy),
        external_traffic_policy: policy(service.external_traffic_policy),
        traffic_distribution: service.traffic_distribution.as_ref().map(|value| {
            TrafficDistribution {
                value: value.clone(),
                note: "read through the hints the EndpointSlice controller writes from it \
                       (as kube-proxy): see each frontend's topology"
                    .to_owned(),
            }
        }),
        session_affinity: service.session_affinity.map(|timeout_seconds| Affinity {
            timeout_seconds,
            note: format!(
                "ClientIP: a client's traffic goes to the backend it got first, for {timeout_seconds}s \
                 after its last packet, while that backend stays in the set"
            ),
        }),
        frontends,
        refused,
    }
}

fn explain_frontend(
    node: &NodeInfo,
    service: &Service,
    slices: &[&EndpointSlice],
    frontend: Frontend,
    spec: &FrontendSpec,
    client: Option<Client>,
) -> Option<FrontendExplanation> {
    let port = service
        .ports
        .iter()
        .find(|p| p.name == spec.port_name && p.protocol == frontend.protocol)?;
    let endpoints = candidates(service, port, AddressType::of(frontend.addr), slices, node);
    let rules = Rules::new(&endpoints, node);
    let decision = rules.topology();
    let show = |backends: &[crate::model::types::Backend]| -> Vec<String> {
        backends.iter().map(ToString::to_string).collect()
    };
    let scopes = if spec.kind == FrontendKind::ClusterIp {
        let category = scope_category(service, spec.kind, Scope::Internal);
        vec![ScopeExplanation {
            scope: None,
            category,
            policy_note: format!(
                "internalTrafficPolicy: {} → the {} endpoints",
                policy(service.internal_traffic_policy),
                category_name(category)
            ),
            backends: show(&spec.backends),
        }]
    } else {
        let external = scope_category(service, spec.kind, Scope::External);
        vec![
            ScopeExplanation {
                scope: Some(Scope::Internal),
                category: scope_category(service, spec.kind, Scope::Internal),
                policy_note: "from this node and its pods: the cluster endpoints, whatever \
                              externalTrafficPolicy (as kube-proxy)"
                    .to_owned(),
                backends: show(&spec.backends),
            },
            ScopeExplanation {
                scope: Some(Scope::External),
                category: external,
                policy_note: format!(
                    "from elsewhere: externalTrafficPolicy: {} → the {} endpoints",
                    policy(service.external_traffic_policy),
                    category_name(external)
                ),
                backends: show(spec.external_backends.as_ref().unwrap_or(&spec.backends)),
            },
        ]
    };
    let client = client.map(|c| answer(c, spec, &endpoints, &scopes));
    Some(FrontendExplanation {
        frontend: frontend.to_string(),
        kind: spec.kind.to_string(),
        port_name: spec.port_name.clone(),
        topology: decision.mode,
        topology_why: decision.why,
        topology_note: decision.why.describe(),
        scopes,
        endpoints: endpoints
            .iter()
            .map(|ep| EndpointExplanation {
                endpoint: ep.backend.to_string(),
                ready: ep.ready,
                serving: ep.serving,
                terminating: ep.terminating,
                local: ep.local,
                zone_hints: ep.zone_hints.to_vec(),
                node_hints: ep.node_hints.to_vec(),
                cluster: rules.cluster(ep).into(),
                local_category: rules.local(ep).into(),
            })
            .collect(),
        source_ranges: spec
            .source_ranges
            .as_ref()
            .map(|r| r.iter().map(ToString::to_string).collect()),
        client,
    })
}

fn category_name(c: Category) -> &'static str {
    match c {
        Category::Cluster => "cluster",
        Category::Local => "local",
    }
}

/// What `client` gets from a frontend, from the frontend's programmed sets
/// (see `docs/semantics.md`, "When there is no usable endpoint").
fn answer(
    client: Client,
    spec: &FrontendSpec,
    endpoints: &[Candidate<'_>],
    scopes: &[ScopeExplanation],
) -> ClientAnswer {
    let scope = if client.on_node {
        Scope::Internal
    } else {
        Scope::External
    };
    let chosen = scopes
        .iter()
        .find(|s| s.scope.is_none_or(|s| s == scope))
        .or(scopes.first());
    let backends = chosen.map(|s| s.backends.clone()).unwrap_or_default();
    let category = chosen.map_or(Category::Cluster, |s| s.category);
    let reply = |verdict, backends, why: String| ClientAnswer {
        client: client.addr,
        scope,
        verdict,
        backends,
        why,
    };
    // Enforced on the tc and userspace paths only: the socket hooks serve
    // this node's clients before their source address is known (README,
    // "Differences from kube-proxy").
    if scope == Scope::External
        && let Some(ranges) = &spec.source_ranges
        && !ranges.iter().any(|r| r.contains(client.addr))
    {
        return reply(
            Verdict::Dropped,
            Vec::new(),
            "the source is not in loadBalancerSourceRanges".to_owned(),
        );
    }
    if !backends.is_empty() {
        let sticky = match spec.affinity_timeout {
            Some(t) => format!("; ClientIP affinity keeps it on one backend for {t}s"),
            None => String::new(),
        };
        let why = format!("the {} endpoints{sticky}", category_name(category));
        return reply(Verdict::Balanced, backends, why);
    }
    let usable_elsewhere = endpoints
        .iter()
        .any(|ep| ep.ready || (ep.serving && ep.terminating));
    if category == Category::Local && usable_elsewhere {
        if spec.kind == FrontendKind::ClusterIp {
            reply(
                Verdict::Refused,
                backends,
                "internalTrafficPolicy: Local and no usable endpoint on this node: refused \
                 (kube-proxy drops; see Differences from kube-proxy)"
                    .to_owned(),
            )
        } else {
            reply(
                Verdict::Dropped,
                backends,
                "externalTrafficPolicy: Local and no usable endpoint on this node: dropped, \
                 as kube-proxy (the load balancer's health check sends traffic elsewhere)"
                    .to_owned(),
            )
        }
    } else {
        reply(
            Verdict::Refused,
            backends,
            "no usable endpoint (none Ready, none Serving and Terminating): refused at once \
             (ECONNREFUSED, TCP RST or ICMP port-unreachable), as kube-proxy's REJECT"
                .to_owned(),
        )
    }
}

/// The Services (with their slices, in slice-name order) that `target` may
/// name, cloned out of `index` so the explanation is computed without it
/// (the daemon holds its lock only this long). A frontend target keeps the
/// Services with that address as a cluster, external or LoadBalancer IP, or
/// that port as a `nodePort`; [`explain`] then picks the exact frontend.
pub fn select(index: &Index, target: &Target) -> Vec<(Service, Vec<EndpointSlice>)> {
    let may_own = |svc: &Service| match target {
        Target::Service(id) => svc.id == *id,
        Target::Frontend { addr, port, .. } => {
            svc.cluster_ips.contains(addr)
                || svc.external_ips.contains(addr)
                || svc.load_balancer_ips.iter().any(|lb| lb.addr == *addr)
                || svc.ports.iter().any(|p| p.node_port == Some(*port))
        }
    };
    index
        .services()
        .filter(|svc| may_own(svc))
        .map(|svc| (svc.clone(), index.slices_for(&svc.id).cloned().collect()))
        .collect()
}

/// [`select`] then [`explain`], for `index`'s node.
pub fn explain_index(
    index: &Index,
    target: &Target,
    client: Option<Client>,
) -> Vec<ServiceExplanation> {
    let node = index.node().clone();
    let owned = select(index, target);
    explain_owned(&node, &owned, target, client)
}

/// [`explain`] over owned Services and slices (what [`select`] returns).
pub fn explain_owned(
    node: &NodeInfo,
    owned: &[(Service, Vec<EndpointSlice>)],
    target: &Target,
    client: Option<Client>,
) -> Vec<ServiceExplanation> {
    explain(
        node,
        owned
            .iter()
            .map(|(svc, slices)| (svc, slices.iter().collect::<Vec<_>>())),
        target,
        client,
    )
}
