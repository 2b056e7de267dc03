//! The conntrack garbage collector (as Cilium's agent has one): the tc
//! programs never delete a `CT_V4`/`CT_V6` entry, they only stop trusting it
//! once it is idle for longer than its timeout, and the socket hooks never
//! delete a `SOCK_RNAT_V4`/`_V6` entry. Left alone, both fill up with dead
//! flows and sockets until the LRU starts evicting live ones.
//!
//! Each pass, on a thread of its own (never on the async runtime):
//! - walks `CT_V4`/`CT_V6` and `CT_PENDING_V4`/`_V6` (new flows not
//!   answered yet) and deletes each entry idle past its timeout
//!   ([`ct_timeout::for_entry`], the programs' own rule, against
//!   `CLOCK_MONOTONIC`, which `bpf_ktime_get_ns` reads). An entry is read
//!   again just before its delete, and kept if a packet refreshed it
//!   meanwhile;
//! - takes the keys of `SOCK_RNAT_V4`/`_V6`, then the cookies of every live
//!   TCP and UDP socket in the namespaces the hooks serve (sock_diag, see
//!   [`UdpFlowEnder::live_cookies`]), and deletes the keys whose socket is
//!   gone. Keys are taken first, so a socket made during the pass is never
//!   mistaken for a closed one. When some namespace cannot be read (no
//!   `CAP_SYS_ADMIN`, processes hidden by a pid namespace), this half of the
//!   pass is skipped: a live socket's entry must never go.
//!
//! Work per pass is bounded: at most each map's capacity of keys is walked.

use std::{
    collections::HashSet,
    path::Path,
    time::{Duration, Instant},
};

use aya::{
    Pod,
    maps::{HashMap, IterableMap as _, Map, MapData},
};
use proxy_common::{
    CtKeyV4, CtKeyV6, CtValueV4, CtValueV6, SockRevNatKeyV4, SockRevNatKeyV6, SockRevNatV4,
    SockRevNatV6, ct_timeout, names,
};

use crate::{dataplane::maps::MapError, dataplane::udp_flows::UdpFlowEnder, telemetry::Telemetry};

/// Whether a conntrack entry last seen at `last_seen_ns` is dead at `now_ns`.
pub fn expired(protocol: u8, flags: u8, last_seen_ns: u64, now_ns: u64) -> bool {
    now_ns.saturating_sub(last_seen_ns) > ct_timeout::for_entry(protocol, flags)
}

/// The keys among `keys` whose socket cookie is not in `live`.
pub fn stale<K: Copy>(keys: &[K], cookie: impl Fn(&K) -> u64, live: &HashSet<u64>) -> Vec<K> {
    keys.iter()
        .filter(|k| !live.contains(&cookie(k)))
        .copied()
        .collect()
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Conntrack entries looked at, and deleted.
    pub ct_seen: u64,
    pub ct_deleted: u64,
    /// Socket rev-NAT entries looked at and deleted; `None`: that half was
    /// skipped (some namespace could not be read).
    pub sock_seen: u64,
    pub sock_deleted: Option<u64>,
    pub took: Duration,
}

/// The GC's own handles on the maps (opened from their pins).
pub struct ConntrackGc {
    ct4: HashMap<MapData, CtKeyV4, CtValueV4>,
    ct6: HashMap<MapData, CtKeyV6, CtValueV6>,
    pending4: HashMap<MapData, CtKeyV4, CtValueV4>,
    pending6: HashMap<MapData, CtKeyV6, CtValueV6>,
    rnat4: HashMap<MapData, SockRevNatKeyV4, SockRevNatV4>,
    rnat6: HashMap<MapData, SockRevNatKeyV6, SockRevNatV6>,
    sockets: UdpFlowEnder,
}

fn open<K: Pod, V: Pod>(
    maps_dir: &Path,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, MapError> {
    let data = MapData::from_pin(maps_dir.join(name))
        .map_err(|source| MapError::Open { map: name, source })?;
    HashMap::try_from(Map::LruHashMap(data)).map_err(|source| MapError::Open { map: name, source })
}

/// How long until the wall clock reaches the next multiple of `interval`:
/// passes fall on the same instants whatever the daemon's start, so a
/// restarted daemon keeps the rhythm (and samples taken on a fixed grid see
/// the swept maps at the same phase).
fn until_next_multiple(interval: Duration) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let step = interval.as_nanos().max(1);
    let into = now.as_nanos() % step;
    Duration::from_nanos(u64::try_from(step - into).unwrap_or(u64::MAX))
}

/// `CLOCK_MONOTONIC` in nanoseconds (`bpf_ktime_get_ns`'s clock).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Walks `map` (at most `max` keys) and deletes what `dead` says, each
/// entry read again just before its delete. Returns (seen, deleted).
fn sweep_ct<K: Pod + Eq, V: Pod>(
    map: &mut HashMap<MapData, K, V>,
    max: u32,
    dead: impl Fn(&K, &V) -> bool,
) -> (u64, u64) {
    let mut seen = 0;
    let mut doomed = Vec::new();
    for entry in map.iter().take(max as usize) {
        let Ok((k, v)) = entry else { break };
        seen += 1;
        if dead(&k, &v) {
            doomed.push(k);
        }
    }
    let mut deleted = 0;
    for k in doomed {
        // A packet may have refreshed it since the walk.
        let still_dead = map.get(&k, 0).is_ok_and(|v| dead(&k, &v));
        if still_dead && map.remove(&k).is_ok() {
            deleted += 1;
        }
    }
    (seen, deleted)
}

fn keys_of<K: Pod, V: Pod>(map: &HashMap<MapData, K, V>, max: u32) -> Vec<K> {
    map.keys()
        .take(max as usize)
        .map_while(Result::ok)
        .collect()
}

impl ConntrackGc {
    /// Opens the maps from `maps_dir` (`<pin-path>/v<N>/maps`); `sockets`
    /// reaches the namespaces whose sockets the hooks translate.
    pub fn open(maps_dir: &Path, sockets: UdpFlowEnder) -> Result<Self, MapError> {
        Ok(Self {
            ct4: open(maps_dir, names::CT_V4)?,
            ct6: open(maps_dir, names::CT_V6)?,
            pending4: open(maps_dir, names::CT_PENDING_V4)?,
            pending6: open(maps_dir, names::CT_PENDING_V6)?,
            rnat4: open(maps_dir, names::SOCK_RNAT_V4)?,
            rnat6: open(maps_dir, names::SOCK_RNAT_V6)?,
            sockets,
        })
    }

    fn capacity<K: Pod, V: Pod>(map: &HashMap<MapData, K, V>) -> u32 {
        map.map().info().map_or(1 << 20, |i| i.max_entries())
    }

    /// One pass (see the module docs). Blocks.
    pub fn pass(&mut self) -> PassReport {
        let started = Instant::now();
        let mut report = PassReport::default();
        let now = monotonic_ns();
        let max4 = Self::capacity(&self.ct4);
        let (s4, d4) = sweep_ct(&mut self.ct4, max4, |k, v| {
            expired(k.proto, v.flags, v.last_seen_ns, now)
        });
        let max6 = Self::capacity(&self.ct6);
        let (s6, d6) = sweep_ct(&mut self.ct6, max6, |k, v| {
            expired(k.proto, v.flags, v.last_seen_ns, now)
        });
        let max4 = Self::capacity(&self.pending4);
        let (p4, e4) = sweep_ct(&mut self.pending4, max4, |k, v| {
            expired(k.proto, v.flags, v.last_seen_ns, now)
        });
        let max6 = Self::capacity(&self.pending6);
        let (p6, e6) = sweep_ct(&mut self.pending6, max6, |k, v| {
            expired(k.proto, v.flags, v.last_seen_ns, now)
        });
        report.ct_seen = s4 + s6 + p4 + p6;
        report.ct_deleted = d4 + d6 + e4 + e6;

        let keys4 = keys_of(&self.rnat4, Self::capacity(&self.rnat4));
        let keys6 = keys_of(&self.rnat6, Self::capacity(&self.rnat6));
        report.sock_seen = (keys4.len() + keys6.len()) as u64;
        if !keys4.is_empty() || !keys6.is_empty() {
            report.sock_deleted = self.sockets.live_cookies().map(|live| {
                let mut n = 0;
                for k in stale(&keys4, |k| k.cookie, &live) {
                    n += u64::from(self.rnat4.remove(&k).is_ok());
                }
                for k in stale(&keys6, |k| k.cookie, &live) {
                    n += u64::from(self.rnat6.remove(&k).is_ok());
                }
                n
            });
        } else {
            report.sock_deleted = Some(0);
        }
        report.took = started.elapsed();
        report
    }

    /// Runs a pass at once and then at each multiple of `interval` of the
    /// wall clock, on a thread of its own, for the life of the process.
    pub fn spawn(mut self, interval: Duration, telemetry: Telemetry) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("conntrack-gc".to_owned())
            .spawn(move || {
                let mut skipped_logged = false;
                loop {
                    // A pass at start too: a daemon restarted more often
                    // than the interval still collects.
                    let r = self.pass();
                    telemetry.conntrack_gc(r.ct_deleted, r.sock_deleted.unwrap_or(0));
                    if r.sock_deleted.is_none() && !skipped_logged {
                        skipped_logged = true;
                        tracing::warn!(
                            "conntrack GC: cannot read the sockets of every served network \
                             namespace; entries of closed sockets in SOCK_RNAT_V4/V6 are left \
                             to the LRU"
                        );
                    }
                    tracing::debug!(
                        ct_seen = r.ct_seen,
                        ct_deleted = r.ct_deleted,
                        sock_seen = r.sock_seen,
                        sock_deleted = ?r.sock_deleted,
                        took_ms = r.took.as_millis() as u64,
                        "conntrack GC pass"
                    );
                    std::thread::sleep(until_next_multiple(interval));
                }
            })
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use proxy_common::{ct_flags, proto};

    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn entries_expire_by_their_protocol_and_state() {
        let now = 100_000 * S;
        // UDP: 60 s.
        assert!(!expired(proto::UDP, 0, now - 60 * S, now));
        assert!(expired(proto::UDP, 0, now - 61 * S, now));
        // TCP closing: 10 s; SYN only: 60 s; established: 6 h.
        assert!(expired(proto::TCP, ct_flags::CLOSING, now - 11 * S, now));
        assert!(!expired(proto::TCP, ct_flags::CLOSING, now - 9 * S, now));
        assert!(expired(proto::TCP, ct_flags::SYN_ONLY, now - 61 * S, now));
        assert!(!expired(proto::TCP, 0, now - 3600 * S, now));
        assert!(expired(proto::TCP, 0, now - 6 * 3600 * S - S, now));
        // Refreshed by another CPU after `now` was read: age 0.
        assert!(!expired(proto::UDP, 0, now + S, now));
    }

    #[test]
    fn passes_wait_for_the_next_multiple_of_the_interval() {
        let d = until_next_multiple(Duration::from_secs(5));
        assert!(d > Duration::ZERO && d <= Duration::from_secs(5), "{d:?}");
    }

    #[test]
    fn only_keys_of_closed_sockets_are_stale() {
        let keys = [1u64, 2, 3, 4];
        let live = HashSet::from([2, 4, 9]);
        assert_eq!(stale(&keys, |k| *k, &live), vec![1, 3]);
        assert_eq!(
            stale(&keys, |k| *k, &HashSet::from([1, 2, 3, 4])),
            Vec::<u64>::new()
        );
    }
}
