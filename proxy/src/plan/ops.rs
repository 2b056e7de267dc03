//! Operations on the dataplane maps, grouped into steps.

use std::sync::Arc;

use proxy_common::{ServiceName, ServiceValue, name_flags, scope, svc_flags};

use crate::model::{Backend, Frontend, FrontendKind, FrontendSpec, SourceRange, TrafficPolicy};

/// Stable id of a backend in the backend maps, shared by every frontend using it.
pub type BackendId = u32;
/// Id of a frontend in the rev-NAT maps.
pub type RevNatId = u32;
/// The largest rev-NAT id the planner hands out: the `REVNAT_*` maps'
/// capacity (ids start at 1), so every id in use fits its map.
pub const MAX_REV_NAT_ID: RevNatId = proxy_common::capacity::REVNAT;

/// Which clients a service entry is for (the key's `scope` byte, see
/// `proxy_common::maps`): every frontend has an internal entry; an external
/// frontend with `externalTrafficPolicy: Local` also has an external one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Clients on the node and its pods (socket hooks, pod-facing devices).
    Internal,
    /// External clients of an `externalTrafficPolicy: Local` frontend.
    External,
}

impl Scope {
    pub const ALL: [Scope; 2] = [Scope::Internal, Scope::External];

    /// The key's `scope` byte.
    pub fn number(self) -> u8 {
        match self {
            Scope::Internal => scope::INTERNAL,
            Scope::External => scope::EXTERNAL,
        }
    }

    /// The inverse of [`Scope::number`].
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            scope::INTERNAL => Some(Scope::Internal),
            scope::EXTERNAL => Some(Scope::External),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Internal => "internal",
            Scope::External => "external",
        }
    }
}

/// One map write or delete. Cheap to clone: the one large value (a Service
/// name) is shared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Writes a backend; `flags` are `proxy_common::backend_flags`.
    PutBackend {
        id: BackendId,
        backend: Backend,
        flags: u8,
    },
    DeleteBackend {
        id: BackendId,
        backend: Backend,
    },
    PutRevNat {
        id: RevNatId,
        frontend: Frontend,
    },
    DeleteRevNat {
        id: RevNatId,
        frontend: Frontend,
    },
    /// Writes slot `slot` (0 is the frontend entry itself) of one scope.
    PutService {
        frontend: Frontend,
        scope: Scope,
        slot: u16,
        value: ServiceValue,
    },
    DeleteService {
        frontend: Frontend,
        scope: Scope,
        slot: u16,
    },
    /// Names the Service that owns rev-NAT id `id` (`SVC_NAMES`, read only by
    /// `proxy inspect`). Same lifecycle as the rev-NAT entry.
    PutServiceName {
        id: RevNatId,
        name: Arc<ServiceName>,
    },
    DeleteServiceName {
        id: RevNatId,
    },
    /// One `loadBalancerSourceRanges` entry of the frontend with rev-NAT id
    /// `id` (`SRC_RANGE_V4`/`_V6`, by the range's family): `allow` for a
    /// range, or the frontend's `/0` entry (deny unless a range is `/0`).
    PutSourceRange {
        id: RevNatId,
        range: SourceRange,
        allow: bool,
    },
    DeleteSourceRange {
        id: RevNatId,
        range: SourceRange,
    },
    /// The Maglev table `id` in `scope` (`MAGLEV`), shared by the frontends
    /// whose slot 0 names it (`id` is the lowest of their rev-NAT ids):
    /// `table[i]` is the backend of entry `i`.
    PutMaglev {
        id: RevNatId,
        scope: Scope,
        table: Arc<[BackendId]>,
    },
    DeleteMaglev {
        id: RevNatId,
        scope: Scope,
    },
}

/// Operations with equal keys touch the same map the same way, so a run of
/// them can go to the kernel as one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchKey {
    kind: u8,
    v6: bool,
}

impl Op {
    /// See [`BatchKey`].
    pub fn batch_key(&self) -> BatchKey {
        let (kind, addr) = match self {
            Op::PutBackend { backend, .. } => (0, backend.addr),
            Op::DeleteBackend { backend, .. } => (1, backend.addr),
            Op::PutRevNat { frontend, .. } => (2, frontend.addr),
            Op::DeleteRevNat { frontend, .. } => (3, frontend.addr),
            Op::PutService { frontend, .. } => (4, frontend.addr),
            Op::DeleteService { frontend, .. } => (5, frontend.addr),
            // One map for both families.
            Op::PutServiceName { .. } => return BatchKey { kind: 6, v6: false },
            Op::DeleteServiceName { .. } => return BatchKey { kind: 7, v6: false },
            Op::PutSourceRange { range, .. } => (8, range.addr()),
            Op::DeleteSourceRange { range, .. } => (9, range.addr()),
            // One map for both families.
            Op::PutMaglev { .. } => {
                return BatchKey {
                    kind: 10,
                    v6: false,
                };
            }
            Op::DeleteMaglev { .. } => {
                return BatchKey {
                    kind: 11,
                    v6: false,
                };
            }
        };
        BatchKey {
            kind,
            v6: addr.is_ipv6(),
        }
    }

    /// A backend slot (`slot >= 1`) pointing at `backend`.
    pub fn put_slot(frontend: Frontend, scope: Scope, slot: u16, backend: BackendId) -> Self {
        Op::PutService {
            frontend,
            scope,
            slot,
            value: ServiceValue {
                backend_id: backend,
                ..Default::default()
            },
        }
    }

    /// The frontend entry (slot 0) of one scope. `affinity_timeout`:
    /// ClientIP session affinity in seconds, or `None`; `flags`: the
    /// `svc_flags` other than `AFFINITY` (see [`frontend_flags`]);
    /// `maglev_table`: the `MAGLEV` table it shares (0: its own, or none).
    pub fn put_frontend(
        frontend: Frontend,
        scope: Scope,
        count: u16,
        rev_nat_id: RevNatId,
        affinity_timeout: Option<u32>,
        flags: u16,
        maglev_table: RevNatId,
    ) -> Self {
        let (affinity, affinity_timeout) = match affinity_timeout {
            Some(t) => (svc_flags::AFFINITY, t),
            None => (0, 0),
        };
        Op::PutService {
            frontend,
            scope,
            slot: 0,
            value: ServiceValue {
                count,
                rev_nat_id,
                flags: flags | affinity,
                maglev_table,
                affinity_timeout,
                ..Default::default()
            },
        }
    }
}

/// The slot-0 flags (affinity aside) of a frontend's entry in `scope`:
/// `EXTERNAL` for NodePort, ExternalIP and LoadBalancer frontends, `NODE_PORT`
/// for NodePorts, `ETP_LOCAL` on the external scope (which exists only under
/// `externalTrafficPolicy: Local`).
pub fn frontend_flags(kind: FrontendKind, scope: Scope) -> u16 {
    let mut flags = 0;
    if kind.is_external() {
        flags |= svc_flags::EXTERNAL;
    }
    if kind == FrontendKind::NodePort {
        flags |= svc_flags::NODE_PORT;
    }
    if scope == Scope::External {
        flags |= svc_flags::ETP_LOCAL;
    }
    flags
}

/// The `SVC_NAMES` value for a frontend: its Service, port name, traffic
/// policies and whether it is a LoadBalancer IP. Strings longer than the map's fields (which Kubernetes' own limits
/// never produce) are cut at a character boundary.
pub fn service_name(spec: &FrontendSpec) -> ServiceName {
    let mut out = ServiceName::EMPTY;
    out.namespace_len = copy_truncated(&mut out.namespace, &spec.service.namespace);
    out.name_len = copy_truncated(&mut out.name, &spec.service.name);
    out.port_name_len = copy_truncated(&mut out.port_name, &spec.port_name);
    if spec.traffic_policy == TrafficPolicy::Local {
        out.flags |= name_flags::INTERNAL_TRAFFIC_POLICY_LOCAL;
    }
    if spec.kind == FrontendKind::LoadBalancer {
        out.flags |= name_flags::LOAD_BALANCER;
    }
    if spec.kind.is_external() && spec.external_backends.is_some() {
        out.flags |= name_flags::EXTERNAL_TRAFFIC_POLICY_LOCAL;
    }
    out
}

/// The `SRC_RANGE_*` entries of a frontend: none without ranges; else one
/// `allow` entry per range, then the frontend's `/0` entry of its family,
/// which allows only if a range is `/0` (the order a writer must follow when
/// adding: the ranges before the entry that denies everyone else).
pub fn source_range_entries(frontend: Frontend, spec: &FrontendSpec) -> Vec<(SourceRange, bool)> {
    let Some(ranges) = &spec.source_ranges else {
        return Vec::new();
    };
    let all = match frontend.addr {
        std::net::IpAddr::V4(_) => SourceRange::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0),
        std::net::IpAddr::V6(_) => SourceRange::new(std::net::Ipv6Addr::UNSPECIFIED.into(), 0),
    };
    let Some(all) = all else {
        return Vec::new();
    };
    let same_family = |r: &&SourceRange| r.addr().is_ipv4() == frontend.addr.is_ipv4();
    let mut out: Vec<(SourceRange, bool)> = ranges
        .iter()
        .filter(same_family)
        .filter(|r| r.prefix() > 0)
        .map(|r| (*r, true))
        .collect();
    out.push((all, ranges.contains(&all)));
    out
}

/// Copies the longest prefix of `s` that fits in `dst` and ends on a character
/// boundary; returns its length.
fn copy_truncated(dst: &mut [u8], s: &str) -> u8 {
    let max = dst.len().min(usize::from(u8::MAX));
    let mut len = s.len().min(max);
    while !s.is_char_boundary(len) {
        len -= 1;
    }
    dst[..len].copy_from_slice(&s.as_bytes()[..len]);
    // `len <= u8::MAX` by construction.
    u8::try_from(len).unwrap_or(u8::MAX)
}

/// What an operation is about, so the writer can report and skip per unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    Backend(BackendId),
    Frontend(Frontend),
    RevNat(RevNatId),
}
