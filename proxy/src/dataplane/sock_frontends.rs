//! Which frontend a connected UDP socket was translated through, and whether
//! it must be ended when backends leave UDP frontends.
//!
//! A backend can sit behind several Services. When it leaves one of them,
//! only the sockets connected through *that* frontend must be ended:
//! kube-proxy clears a removed UDP endpoint's conntrack per Service port, so a
//! client of another Service that still lists the backend keeps its flow. The
//! socket hooks record, for each translated socket, `{cookie, backend}` → the
//! frontend the application asked for (`SOCK_RNAT_V4`/`_V6`); sock_diag gives
//! each socket's cookie, so the frontend is looked up here. A socket without
//! an entry (the LRU evicted it, or it was never translated) falls back to
//! "the backend is in no UDP frontend at all".
//!
//! [`GoneUdp`] is the pure rule; [`SockFrontends`] the read-only map handles.

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
    path::Path,
};

use aya::maps::{HashMap, Map, MapData};
use proxy_common::{
    Be16, Be32, SockRevNatKeyV4, SockRevNatKeyV6, SockRevNatV4, SockRevNatV6, names,
};

use crate::dataplane::maps::MapError;

/// What left the UDP frontends in one write: the sockets to end are decided
/// from it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GoneUdp {
    /// `(frontend address:port, backend address:port)`: the frontend no
    /// longer reaches the backend.
    pairs: HashSet<(SocketAddr, SocketAddr)>,
    /// Backends of `pairs` that no UDP frontend reaches any more.
    unreached: HashSet<SocketAddr>,
    /// Every backend of `pairs`, sorted: the peers worth looking at.
    peers: Vec<SocketAddr>,
}

impl GoneUdp {
    /// `pairs`: each frontend with a backend it no longer reaches;
    /// `still_reached`: whether some UDP frontend still reaches a backend.
    pub fn new(
        pairs: impl IntoIterator<Item = (SocketAddr, SocketAddr)>,
        still_reached: impl Fn(SocketAddr) -> bool,
    ) -> Self {
        let pairs: HashSet<_> = pairs.into_iter().collect();
        let mut peers: Vec<SocketAddr> = pairs.iter().map(|(_, b)| *b).collect();
        peers.sort();
        peers.dedup();
        let unreached = peers
            .iter()
            .copied()
            .filter(|b| !still_reached(*b))
            .collect();
        Self {
            pairs,
            unreached,
            peers,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The backends that left some frontend: sockets aimed elsewhere are
    /// never ended.
    pub fn peers(&self) -> &[SocketAddr] {
        &self.peers
    }

    /// Whether a connected socket aimed at `peer`, translated from `vip`
    /// (`None`: no record of it), must be ended.
    pub fn should_end(&self, peer: SocketAddr, vip: Option<SocketAddr>) -> bool {
        match vip {
            Some(vip) => self.pairs.contains(&(vip, peer)),
            None => self.unreached.contains(&peer),
        }
    }
}

/// Read-only handles on `SOCK_RNAT_V4`/`_V6`, opened from their pins.
pub struct SockFrontends {
    v4: HashMap<MapData, SockRevNatKeyV4, SockRevNatV4>,
    v6: HashMap<MapData, SockRevNatKeyV6, SockRevNatV6>,
}

impl std::fmt::Debug for SockFrontends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SockFrontends").finish_non_exhaustive()
    }
}

impl SockFrontends {
    /// Opens both maps from `maps_dir` (`<pin-path>/v<N>/maps`).
    pub fn open(maps_dir: &Path) -> Result<Self, MapError> {
        fn one<K: aya::Pod, V: aya::Pod>(
            maps_dir: &Path,
            name: &'static str,
        ) -> Result<HashMap<MapData, K, V>, MapError> {
            let data = MapData::from_pin(maps_dir.join(name))
                .map_err(|source| MapError::Open { map: name, source })?;
            HashMap::try_from(Map::LruHashMap(data))
                .map_err(|source| MapError::Open { map: name, source })
        }
        Ok(Self {
            v4: one(maps_dir, names::SOCK_RNAT_V4)?,
            v6: one(maps_dir, names::SOCK_RNAT_V6)?,
        })
    }

    /// The frontend the socket with `cookie` asked for when it was sent to
    /// `peer`; `None` when there is no entry (or the lookup failed).
    pub fn vip(&self, cookie: u64, peer: SocketAddr) -> Option<SocketAddr> {
        match peer.ip() {
            IpAddr::V4(addr) => {
                let key = SockRevNatKeyV4 {
                    cookie,
                    addr: Be32::from_octets(addr.octets()),
                    port: Be16::from_host(peer.port()),
                    _pad: 0,
                };
                let v = self.v4.get(&key, 0).ok()?;
                Some(SocketAddr::new(
                    IpAddr::from(v.addr.octets()),
                    v.port.to_host(),
                ))
            }
            IpAddr::V6(addr) => {
                let key = SockRevNatKeyV6 {
                    cookie,
                    addr: addr.octets(),
                    port: Be16::from_host(peer.port()),
                    _pad: [0; 6],
                };
                let v = self.v6.get(&key, 0).ok()?;
                Some(SocketAddr::new(IpAddr::from(v.addr), v.port.to_host()))
            }
        }
    }
}

/// A sock_diag cookie (`idiag_cookie`: two host-order 32-bit halves, low
/// first) as the `u64` `bpf_get_socket_cookie` returns.
pub fn diag_cookie(raw: [u8; 8]) -> u64 {
    let lo = u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let hi = u32::from_ne_bytes([raw[4], raw[5], raw[6], raw[7]]);
    u64::from(lo) | (u64::from(hi) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("a socket address literal")
    }

    #[test]
    fn a_socket_is_ended_only_through_the_frontend_that_lost_its_backend() {
        let b = sa("10.1.0.5:53");
        let gone = GoneUdp::new([(sa("10.96.0.10:53"), b)], |_| true);
        // Connected through the Service that dropped the backend: ended.
        assert!(gone.should_end(b, Some(sa("10.96.0.10:53"))));
        // Connected through another Service that still lists it: kept.
        assert!(!gone.should_end(b, Some(sa("10.96.0.11:53"))));
        // No record, and another frontend still reaches it: kept.
        assert!(!gone.should_end(b, None));
        assert_eq!(gone.peers(), &[b]);
    }

    #[test]
    fn without_a_record_a_socket_is_ended_when_no_frontend_reaches_its_backend() {
        let b = sa("10.1.0.5:53");
        let other = sa("10.1.0.6:53");
        let gone = GoneUdp::new(
            [(sa("10.96.0.10:53"), b), (sa("10.96.0.10:53"), other)],
            |x| x == other,
        );
        assert!(gone.should_end(b, None));
        assert!(!gone.should_end(other, None));
        // A frontend deleted outright lost all its backends.
        assert!(gone.should_end(other, Some(sa("10.96.0.10:53"))));
    }

    #[test]
    fn nothing_gone_ends_nothing() {
        let gone = GoneUdp::new([], |_| false);
        assert!(gone.is_empty());
        assert!(!gone.should_end(sa("10.1.0.5:53"), None));
    }

    #[test]
    fn diag_cookies_read_low_half_first() {
        let mut raw = [0u8; 8];
        raw[..4].copy_from_slice(&0x0000_0002u32.to_ne_bytes());
        raw[4..].copy_from_slice(&0x0000_0001u32.to_ne_bytes());
        assert_eq!(diag_cookie(raw), 0x1_0000_0002);
    }
}
