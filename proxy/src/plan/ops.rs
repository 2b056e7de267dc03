//! Operations on the dataplane maps, grouped into steps.

use proxy_common::{ServiceValue, svc_flags};

use crate::model::{Backend, Frontend};

/// Stable id of a backend in the backend maps, shared by every frontend using it.
pub type BackendId = u32;
/// Id of a frontend in the rev-NAT maps.
pub type RevNatId = u16;

/// One map write or delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    PutBackend {
        id: BackendId,
        backend: Backend,
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
    /// Writes slot `slot` (0 is the frontend entry itself).
    PutService {
        frontend: Frontend,
        slot: u16,
        value: ServiceValue,
    },
    DeleteService {
        frontend: Frontend,
        slot: u16,
    },
}

impl Op {
    /// A backend slot (`slot >= 1`) pointing at `backend`.
    pub fn put_slot(frontend: Frontend, slot: u16, backend: BackendId) -> Self {
        Op::PutService {
            frontend,
            slot,
            value: ServiceValue {
                backend_id: backend,
                ..Default::default()
            },
        }
    }

    /// The frontend entry (slot 0). `affinity_timeout`: ClientIP session
    /// affinity in seconds, or `None`.
    pub fn put_frontend(
        frontend: Frontend,
        count: u16,
        rev_nat_id: RevNatId,
        affinity_timeout: Option<u32>,
    ) -> Self {
        let (flags, affinity_timeout) = match affinity_timeout {
            Some(t) => (svc_flags::AFFINITY, t),
            None => (0, 0),
        };
        Op::PutService {
            frontend,
            slot: 0,
            value: ServiceValue {
                count,
                rev_nat_id,
                flags,
                affinity_timeout,
                ..Default::default()
            },
        }
    }
}

/// What a step is about, so the writer can report and skip per unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    Backend(BackendId),
    Frontend(Frontend),
    RevNat(RevNatId),
}

/// Operations that belong together. If one fails, the writer skips the rest of
/// the step (keeping the ordering guarantees) and carries on with the next step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub subject: Subject,
    pub ops: Vec<Op>,
}
