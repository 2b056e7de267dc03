//! The pure part of a migration: what an entry of layout 2's LRU maps
//! becomes in layout 3. Ids are translated through what they name: an old
//! rev-NAT id → its frontend (the old service maps' slot 0) → the new id
//! (the new writer's state); an old backend id → its address (the old
//! backend maps) → the new id. An entry whose frontend or backend no longer
//! exists translates to `None` (the caller drops and counts it).

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use proxy_common::{
    AffinityKey, AffinityValue, CtKeyV4, CtKeyV6, CtValueV4, CtValueV6, SockRevNatKeyV4,
    SockRevNatKeyV6, SockRevNatV4, SockRevNatV6,
};

use super::v2;
use crate::{
    model::{Backend, Frontend, Protocol},
    plan::{Applied, BackendId, RevNatId, Scope},
};

/// What the old layout's ids name, read from its service and backend maps.
#[derive(Clone, Debug, Default)]
pub struct OldIds {
    /// Old rev-NAT id → its frontend (from slot 0 of either scope).
    pub frontends: HashMap<u16, Frontend>,
    /// Old backend id → its address.
    pub backends: HashMap<u32, Backend>,
}

impl OldIds {
    /// Reads the old maps' entries (anything that does not decode, say an
    /// unknown protocol, is left out: its entries are dropped).
    pub fn new(
        svc4: &[(v2::ServiceKeyV4, v2::ServiceValue)],
        svc6: &[(v2::ServiceKeyV6, v2::ServiceValue)],
        backend4: &[(u32, v2::BackendV4)],
        backend6: &[(u32, v2::BackendV6)],
    ) -> Self {
        let mut out = Self::default();
        let slot0_4 = svc4.iter().filter(|(k, _)| k.slot == 0).map(|(k, v)| {
            let addr = IpAddr::V4(Ipv4Addr::from(k.addr.octets()));
            (addr, k.port.to_host(), k.proto, v.rev_nat_id)
        });
        let slot0_6 = svc6.iter().filter(|(k, _)| k.slot == 0).map(|(k, v)| {
            let addr = IpAddr::V6(Ipv6Addr::from(k.addr));
            (addr, k.port.to_host(), k.proto, v.rev_nat_id)
        });
        for (addr, port, proto, id) in slot0_4.chain(slot0_6) {
            if let Some(protocol) = Protocol::from_number(proto) {
                let frontend = Frontend {
                    addr,
                    port,
                    protocol,
                };
                out.frontends.insert(id, frontend);
            }
        }
        let b4 = backend4.iter().map(|(id, b)| {
            let addr = IpAddr::V4(Ipv4Addr::from(b.addr.octets()));
            (*id, addr, b.port.to_host(), b.proto)
        });
        let b6 = backend6.iter().map(|(id, b)| {
            let addr = IpAddr::V6(Ipv6Addr::from(b.addr));
            (*id, addr, b.port.to_host(), b.proto)
        });
        for (id, addr, port, proto) in b4.chain(b6) {
            if let Some(protocol) = Protocol::from_number(proto) {
                let backend = Backend {
                    addr,
                    port,
                    protocol,
                };
                out.backends.insert(id, backend);
            }
        }
        out
    }
}

/// Translates old entries into the new layout's ids.
pub struct Translator<'a> {
    old: &'a OldIds,
    new: &'a Applied,
}

impl<'a> Translator<'a> {
    pub fn new(old: &'a OldIds, new: &'a Applied) -> Self {
        Self { old, new }
    }

    /// The frontend an old rev-NAT id named, if the new state has it.
    fn frontend(&self, old: u16) -> Option<(Frontend, RevNatId)> {
        let frontend = *self.old.frontends.get(&old)?;
        let id = self
            .new
            .frontend(frontend)
            .map(|v| v.rev_nat_id)
            .filter(|id| *id != 0)
            .or_else(|| self.new.rev_nat_of(frontend))?;
        Some((frontend, id))
    }

    /// The new rev-NAT id of an old one (0 stays 0: no frontend).
    pub fn rev_nat(&self, old: u16) -> Option<RevNatId> {
        if old == 0 {
            return Some(0);
        }
        self.frontend(old).map(|(_, id)| id)
    }

    /// The new backend id of an old one (0 stays 0: no backend).
    pub fn backend(&self, old: u32) -> Option<BackendId> {
        if old == 0 {
            return Some(0);
        }
        self.new.backend_id(self.old.backends.get(&old)?)
    }

    pub fn ct_v4(&self, k: &v2::CtKeyV4, v: &v2::CtValueV4) -> Option<(CtKeyV4, CtValueV4)> {
        let key = CtKeyV4 {
            saddr: k.saddr,
            daddr: k.daddr,
            sport: k.sport,
            dport: k.dport,
            proto: k.proto,
            _pad: [0; 3],
        };
        let value = CtValueV4 {
            last_seen_ns: v.last_seen_ns,
            saddr: v.saddr,
            daddr: v.daddr,
            sport: v.sport,
            dport: v.dport,
            flags: v.flags,
            _pad: [0; 3],
            rev_nat_id: self.rev_nat(v.rev_nat_id)?,
            backend_id: self.backend(v.backend_id)?,
        };
        Some((key, value))
    }

    pub fn ct_v6(&self, k: &v2::CtKeyV6, v: &v2::CtValueV6) -> Option<(CtKeyV6, CtValueV6)> {
        let key = CtKeyV6 {
            saddr: k.saddr,
            daddr: k.daddr,
            sport: k.sport,
            dport: k.dport,
            proto: k.proto,
            _pad: [0; 3],
        };
        let value = CtValueV6 {
            last_seen_ns: v.last_seen_ns,
            saddr: v.saddr,
            daddr: v.daddr,
            sport: v.sport,
            dport: v.dport,
            flags: v.flags,
            _pad: [0; 3],
            rev_nat_id: self.rev_nat(v.rev_nat_id)?,
            backend_id: self.backend(v.backend_id)?,
        };
        Some((key, value))
    }

    pub fn sock_v4(
        &self,
        k: &v2::SockRevNatKeyV4,
        v: &v2::SockRevNatV4,
    ) -> Option<(SockRevNatKeyV4, SockRevNatV4)> {
        let key = SockRevNatKeyV4 {
            cookie: k.cookie,
            addr: k.addr,
            port: k.port,
            _pad: 0,
        };
        let value = SockRevNatV4 {
            addr: v.addr,
            port: v.port,
            _pad: 0,
            rev_nat_id: self.rev_nat(v.rev_nat_id)?,
            _pad2: 0,
        };
        Some((key, value))
    }

    pub fn sock_v6(
        &self,
        k: &v2::SockRevNatKeyV6,
        v: &v2::SockRevNatV6,
    ) -> Option<(SockRevNatKeyV6, SockRevNatV6)> {
        let key = SockRevNatKeyV6 {
            cookie: k.cookie,
            addr: k.addr,
            port: k.port,
            _pad: [0; 6],
        };
        let value = SockRevNatV6 {
            addr: v.addr,
            port: v.port,
            _pad: 0,
            rev_nat_id: self.rev_nat(v.rev_nat_id)?,
        };
        Some((key, value))
    }

    /// An affinity entry: its frontend and backend translated, and the slot
    /// the backend now holds in the new service map (internal scope, else
    /// external); a backend no longer among the frontend's slots is dropped,
    /// as the programs would move the client anyway.
    pub fn affinity(
        &self,
        k: &v2::AffinityKey,
        v: &v2::AffinityValue,
    ) -> Option<(AffinityKey, AffinityValue)> {
        let (frontend, rev_nat_id) = self.frontend(k.rev_nat_id)?;
        let backend_id = self.backend(v.backend_id)?;
        let slot = [Scope::Internal, Scope::External]
            .into_iter()
            .find_map(|scope| {
                let slots = self.new.reachable_slots(frontend, scope);
                let index = slots.iter().position(|id| *id == backend_id)?;
                u16::try_from(index + 1).ok()
            })?;
        let key = AffinityKey {
            client: k.client,
            rev_nat_id,
            _pad: 0,
        };
        let value = AffinityValue {
            last_used_ns: v.last_used_ns,
            backend_id,
            slot,
            _pad: 0,
        };
        Some((key, value))
    }
}

#[cfg(test)]
mod tests;
