//! The `#[repr(C)]` map layouts (`proxy_common`) ⇄ our own types, in one
//! place: encoding what the writer puts (model frontends and backends → keys
//! and values), decoding what the maps hold into plain structs that keep the
//! raw numbers (so an entry with an unexpected protocol still shows), and the
//! address helpers both sides use.
//!
//! Pure: no I/O. Must not: decide anything about what a map should hold.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use proxy_common::{
    BackendV4, BackendV6, Be16, Be32, CtKeyV4, CtKeyV6, CtValueV4, CtValueV6, RevNatV4, RevNatV6,
    ServiceKeyV4, ServiceKeyV6,
};

use crate::{
    model::{Backend, Frontend, Protocol},
    plan::Scope,
};

// ---------------------------------------------------------------------------
// Addresses.

pub fn ip4(addr: Be32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(addr.octets()))
}

pub fn ip6(addr: [u8; 16]) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(addr))
}

pub fn v4(a: Ipv4Addr) -> Be32 {
    Be32::from_octets(a.octets())
}

/// `10.0.0.1:80`, `[fd00::1]:80`.
pub fn socket(addr: IpAddr, port: u16) -> String {
    SocketAddr::new(addr, port).to_string()
}

/// `TCP`, `UDP`, or `proto N` for anything else.
pub fn protocol_name(proto: u8) -> String {
    match Protocol::from_number(proto) {
        Some(p) => p.to_string(),
        None => format!("proto {proto}"),
    }
}

// ---------------------------------------------------------------------------
// Decoding: map entries → plain structs.

/// A frontend as the service maps key it. The protocol stays a number, so an
/// entry with an unexpected one is still shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FrontendKey {
    pub addr: IpAddr,
    pub port: u16,
    pub proto: u8,
    /// The key's `scope` byte (`proxy_common::scope`); not shown in the
    /// frontend string.
    pub scope: u8,
}

impl FrontendKey {
    pub fn v4(k: &ServiceKeyV4) -> Self {
        Self {
            addr: ip4(k.addr),
            port: k.port.to_host(),
            proto: k.proto,
            scope: k.scope,
        }
    }

    pub fn v6(k: &ServiceKeyV6) -> Self {
        Self {
            addr: ip6(k.addr),
            port: k.port.to_host(),
            proto: k.proto,
            scope: k.scope,
        }
    }
}

impl fmt::Display for FrontendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            socket(self.addr, self.port),
            protocol_name(self.proto)
        )
    }
}

/// A backend map value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendAddr {
    pub addr: IpAddr,
    pub port: u16,
    pub proto: u8,
    /// `proxy_common::backend_flags`.
    pub flags: u8,
}

impl BackendAddr {
    pub fn v4(b: &BackendV4) -> Self {
        Self {
            addr: ip4(b.addr),
            port: b.port.to_host(),
            proto: b.proto,
            flags: b.flags,
        }
    }

    pub fn v6(b: &BackendV6) -> Self {
        Self {
            addr: ip6(b.addr),
            port: b.port.to_host(),
            proto: b.proto,
            flags: b.flags,
        }
    }
}

/// A rev-NAT map value: the frontend a reply is made to come from. It carries
/// no protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevNatAddr {
    pub addr: IpAddr,
    pub port: u16,
}

impl RevNatAddr {
    pub fn v4(v: &RevNatV4) -> Self {
        Self {
            addr: ip4(v.addr),
            port: v.port.to_host(),
        }
    }

    pub fn v6(v: &RevNatV6) -> Self {
        Self {
            addr: ip6(v.addr),
            port: v.port.to_host(),
        }
    }
}

/// One conntrack entry, as `CT_V4`/`CT_V6` (or the pending maps) hold it, in
/// either family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtRaw {
    pub proto: u8,
    /// The packet as it arrives.
    pub src: (IpAddr, u16),
    pub dst: (IpAddr, u16),
    /// What its addresses and ports become.
    pub new_src: (IpAddr, u16),
    pub new_dst: (IpAddr, u16),
    pub rev_nat_id: u32,
    /// `proxy_common::ct_flags`.
    pub flags: u8,
    pub backend_id: u32,
    pub last_seen_ns: u64,
    /// Read from `CT_PENDING_V4`/`_V6`: the flow is not answered yet.
    pub pending: bool,
}

impl CtRaw {
    /// The same entry, read from a pending map.
    pub fn pending(self) -> Self {
        Self {
            pending: true,
            ..self
        }
    }

    pub fn v4(k: &CtKeyV4, v: &CtValueV4) -> Self {
        Self {
            proto: k.proto,
            src: (ip4(k.saddr), k.sport.to_host()),
            dst: (ip4(k.daddr), k.dport.to_host()),
            new_src: (ip4(v.saddr), v.sport.to_host()),
            new_dst: (ip4(v.daddr), v.dport.to_host()),
            rev_nat_id: v.rev_nat_id,
            flags: v.flags,
            backend_id: v.backend_id,
            last_seen_ns: v.last_seen_ns,
            pending: false,
        }
    }

    pub fn v6(k: &CtKeyV6, v: &CtValueV6) -> Self {
        Self {
            proto: k.proto,
            src: (ip6(k.saddr), k.sport.to_host()),
            dst: (ip6(k.daddr), k.dport.to_host()),
            new_src: (ip6(v.saddr), v.sport.to_host()),
            new_dst: (ip6(v.daddr), v.dport.to_host()),
            rev_nat_id: v.rev_nat_id,
            flags: v.flags,
            backend_id: v.backend_id,
            last_seen_ns: v.last_seen_ns,
            pending: false,
        }
    }
}

// ---------------------------------------------------------------------------
// Encoding: model types → map entries.

pub enum ServiceKey {
    V4(ServiceKeyV4),
    V6(ServiceKeyV6),
}

pub fn service_key(f: &Frontend, scope: Scope, slot: u16) -> ServiceKey {
    let port = Be16::from_host(f.port);
    let proto = f.protocol.number();
    match f.addr {
        IpAddr::V4(a) => ServiceKey::V4(ServiceKeyV4 {
            addr: v4(a),
            port,
            slot,
            proto,
            scope: scope.number(),
            _pad: [0; 2],
        }),
        IpAddr::V6(a) => ServiceKey::V6(ServiceKeyV6 {
            addr: a.octets(),
            port,
            slot,
            proto,
            scope: scope.number(),
            _pad: [0; 2],
        }),
    }
}

pub enum EncodedBackend {
    V4(BackendV4),
    V6(BackendV6),
}

pub fn encode_backend(b: &Backend, flags: u8) -> EncodedBackend {
    let port = Be16::from_host(b.port);
    let proto = b.protocol.number();
    match b.addr {
        IpAddr::V4(a) => EncodedBackend::V4(BackendV4 {
            addr: v4(a),
            port,
            proto,
            flags,
        }),
        IpAddr::V6(a) => EncodedBackend::V6(BackendV6 {
            addr: a.octets(),
            port,
            proto,
            flags,
        }),
    }
}

pub enum EncodedRevNat {
    V4(RevNatV4),
    V6(RevNatV6),
}

pub fn encode_revnat(frontend: &Frontend) -> EncodedRevNat {
    let port = Be16::from_host(frontend.port);
    match frontend.addr {
        IpAddr::V4(a) => EncodedRevNat::V4(RevNatV4 {
            addr: v4(a),
            port,
            _pad: 0,
        }),
        IpAddr::V6(a) => EncodedRevNat::V6(RevNatV6 {
            addr: a.octets(),
            port,
            _pad: 0,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frontend_round_trips_through_its_service_key() {
        for addr in ["10.96.0.10", "fd00:96::10"] {
            let f = Frontend {
                addr: addr.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                port: 443,
                protocol: Protocol::Udp,
            };
            let key = match service_key(&f, Scope::External, 3) {
                ServiceKey::V4(k) => FrontendKey::v4(&k),
                ServiceKey::V6(k) => FrontendKey::v6(&k),
            };
            assert_eq!((key.addr, key.port), (f.addr, f.port));
            assert_eq!(key.proto, Protocol::Udp.number());
            assert_eq!(key.scope, Scope::External.number());
            assert_eq!(key.to_string(), format!("{}/UDP", socket(f.addr, 443)));
        }
    }

    #[test]
    fn an_unknown_protocol_is_named_by_its_number() {
        assert_eq!(protocol_name(6), "TCP");
        assert_eq!(protocol_name(132), "proto 132");
    }
}
