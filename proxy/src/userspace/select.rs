//! Backend choice for the userspace proxies, the same rules the socket hooks
//! follow: a random backend per connection (TCP) or per session (UDP), ClientIP
//! session affinity with its timeout, and a bounded list of fallbacks when a
//! backend does not answer.
//!
//! Which endpoints are eligible (ready ones, the terminating fallback, topology,
//! traffic policy) is already decided by the pure core: [`FrontendSpec::backends`]
//! is the list. This module only picks among them. No I/O, no clock of its own
//! (callers pass `now` and the random number), so every rule is unit-tested.

use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use crate::model::{Backend, FrontendSpec, Protocol, SourceRange};

/// What one frontend balances over: its backends and its affinity timeout.
/// Published to the listener and to every open connection, which compare it
/// with their own backend to learn that it was removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pool {
    /// Sorted (the spec's order), so [`Pool::contains`] is a binary search.
    backends: Vec<SocketAddr>,
    /// Backends that left the pool while their endpoint is still listed (a
    /// terminating endpoint): open connections to them carry on, as
    /// kube-proxy's conntrack keeps them; new ones never start there. Sorted.
    kept: Vec<SocketAddr>,
    /// ClientIP affinity timeout; `None`: affinity off.
    pub affinity: Option<Duration>,
    /// The sources a LoadBalancer frontend accepts
    /// (`loadBalancerSourceRanges`); `None`: every source.
    sources: Option<Vec<SourceRange>>,
}

impl Pool {
    /// The frontend's backends: the external scope's when it has one (see
    /// the module docs of `userspace`), else the internal one's.
    pub fn from_spec(spec: &FrontendSpec) -> Self {
        let mut backends: Vec<SocketAddr> = spec
            .external_backends
            .as_ref()
            .unwrap_or(&spec.backends)
            .iter()
            .map(|b| SocketAddr::new(b.addr, b.port))
            .collect();
        backends.sort_unstable();
        backends.dedup();
        Self {
            backends,
            kept: Vec::new(),
            affinity: spec
                .affinity_timeout
                .map(|s| Duration::from_secs(u64::from(s))),
            sources: spec.source_ranges.clone(),
        }
    }

    /// Whether a new connection or UDP session from `client` may be served
    /// (inside the frontend's source ranges, or it has none). An IPv4 client
    /// seen through an IPv6 socket counts as IPv4.
    pub fn admits(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        self.sources
            .as_ref()
            .is_none_or(|ranges| ranges.iter().any(|r| r.contains(client)))
    }

    pub fn backends(&self) -> &[SocketAddr] {
        &self.backends
    }

    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    pub fn contains(&self, backend: SocketAddr) -> bool {
        self.backends.binary_search(&backend).is_ok()
    }

    /// Carries over from `previous` (this frontend's pool so far) the
    /// backends that leave the pool while `listed` still lists their
    /// endpoint: `listed` is the frontend's own Service's
    /// (`DesiredState::retained_by_service`), not every Service's.
    pub fn keeping(
        mut self,
        previous: Option<&Pool>,
        listed: &BTreeSet<Backend>,
        protocol: Protocol,
    ) -> Self {
        let Some(previous) = previous else {
            return self;
        };
        let mut kept: Vec<SocketAddr> = previous
            .backends
            .iter()
            .chain(&previous.kept)
            .filter(|b| !self.contains(**b))
            .filter(|b| {
                listed.contains(&Backend {
                    addr: b.ip(),
                    port: b.port(),
                    protocol,
                })
            })
            .copied()
            .collect();
        kept.sort_unstable();
        kept.dedup();
        self.kept = kept;
        self
    }

    /// Whether an open connection (or session) to `backend` carries on: it
    /// is in the pool, or kept.
    pub fn keeps(&self, backend: SocketAddr) -> bool {
        self.contains(backend) || self.kept.binary_search(&backend).is_ok()
    }
}

/// The order in which one connection tries backends: the affinity backend (if
/// it is still in the pool), else a random one; then the following ones in the
/// pool's order, wrapping around, each at most once; `tries` at most in all.
#[derive(Clone, Debug)]
pub struct Candidates<'a> {
    backends: &'a [SocketAddr],
    start: usize,
    i: usize,
    len: usize,
}

impl<'a> Candidates<'a> {
    /// `random`: any number (it is reduced modulo the pool size).
    pub fn new(pool: &'a Pool, affine: Option<SocketAddr>, random: usize, tries: usize) -> Self {
        let n = pool.backends.len();
        let start = match affine.and_then(|b| pool.backends.binary_search(&b).ok()) {
            Some(i) => i,
            None if n == 0 => 0,
            None => random % n,
        };
        Self {
            backends: &pool.backends,
            start,
            i: 0,
            len: tries.min(n),
        }
    }
}

impl Iterator for Candidates<'_> {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        if self.i >= self.len {
            return None;
        }
        let pick = self
            .backends
            .get((self.start + self.i) % self.backends.len());
        self.i += 1;
        pick.copied()
    }
}

/// ClientIP session affinity of one frontend: client address → the backend it
/// was last given and when. An entry is reused while it is younger than the
/// timeout and its backend is still in the pool, and refreshed on each use, as
/// the socket hooks do (`AFFINITY` map).
#[derive(Debug, Default)]
pub struct Affinity {
    entries: HashMap<IpAddr, (SocketAddr, Instant)>,
}

/// Beyond this many clients, expired entries are swept before a new one is
/// added; if all are live, the new client is simply not remembered.
const AFFINITY_MAX: usize = 1 << 16;

impl Affinity {
    /// The backend `client` should keep, if its entry is still valid.
    pub fn lookup(&self, client: IpAddr, pool: &Pool, now: Instant) -> Option<SocketAddr> {
        let timeout = pool.affinity?;
        let (backend, last) = self.entries.get(&client)?;
        (now.saturating_duration_since(*last) < timeout && pool.contains(*backend))
            .then_some(*backend)
    }

    /// `client` was given `backend` at `now`.
    pub fn record(&mut self, client: IpAddr, backend: SocketAddr, now: Instant, timeout: Duration) {
        if self.entries.len() >= AFFINITY_MAX && !self.entries.contains_key(&client) {
            self.entries
                .retain(|_, (_, last)| now.saturating_duration_since(*last) < timeout);
            if self.entries.len() >= AFFINITY_MAX {
                return;
            }
        }
        self.entries.insert(client, (backend, now));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use super::*;
    use crate::model::ObjectRef;

    fn pool(backends: &[&str], affinity: Option<u32>) -> Pool {
        Pool::from_spec(&FrontendSpec {
            kind: crate::model::FrontendKind::ClusterIp,
            external_backends: None,
            service: ObjectRef::new("ns", "svc"),
            port_name: String::new(),
            backends: backends
                .iter()
                .map(|s| {
                    let a: SocketAddr = s.parse().unwrap();
                    Backend {
                        addr: a.ip(),
                        port: a.port(),
                        protocol: Protocol::Tcp,
                    }
                })
                .collect(),
            affinity_timeout: affinity,
            traffic_policy: Default::default(),
            source_ranges: None,
        })
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const ABC: [&str; 3] = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"];

    /// A backend that leaves the pool while its endpoint is listed (it
    /// terminates) is kept for open connections, and stays kept until it is
    /// no longer listed; new connections never start there.
    #[test]
    fn a_listed_backend_that_leaves_the_pool_is_kept_for_open_connections() {
        let listed = |addrs: &[&str]| -> BTreeSet<Backend> {
            addrs
                .iter()
                .map(|s| {
                    let a = addr(s);
                    Backend {
                        addr: a.ip(),
                        port: a.port(),
                        protocol: Protocol::Tcp,
                    }
                })
                .collect()
        };
        let all = pool(&ABC, None);
        // 10.0.0.1 terminates: out of the pool, still listed.
        let p = pool(&ABC[1..], None).keeping(Some(&all), &listed(&ABC), Protocol::Tcp);
        assert!(!p.contains(addr(ABC[0])) && p.keeps(addr(ABC[0])));
        assert!(p.keeps(addr(ABC[1])));
        assert!(Candidates::new(&p, None, 0, 3).all(|b| b != addr(ABC[0])));
        // Still listed at the next change: still kept.
        let p = pool(&ABC[1..], None).keeping(Some(&p), &listed(&ABC), Protocol::Tcp);
        assert!(p.keeps(addr(ABC[0])));
        // Deleted: no longer kept (its connections get the grace period).
        let gone = pool(&ABC[1..], None).keeping(Some(&p), &listed(&ABC[1..]), Protocol::Tcp);
        assert!(!gone.keeps(addr(ABC[0])));
        assert_ne!(gone, p, "the change is published to open connections");
        // Never in this frontend's pool: not kept, listed or not.
        let fresh = pool(&ABC[1..], None).keeping(None, &listed(&ABC), Protocol::Tcp);
        assert!(!fresh.keeps(addr(ABC[0])));
    }

    #[test]
    fn an_external_scope_replaces_the_internal_backends() {
        let mut spec = FrontendSpec {
            kind: crate::model::FrontendKind::NodePort,
            external_backends: None,
            service: ObjectRef::new("ns", "svc"),
            port_name: String::new(),
            backends: vec![Backend {
                addr: addr("10.0.0.1:80").ip(),
                port: 80,
                protocol: Protocol::Tcp,
            }],
            affinity_timeout: None,
            traffic_policy: Default::default(),
            source_ranges: None,
        };
        assert_eq!(Pool::from_spec(&spec).backends(), [addr("10.0.0.1:80")]);
        spec.external_backends = Some(Vec::new());
        assert!(Pool::from_spec(&spec).is_empty(), "ETP Local, none here");
    }

    #[test]
    fn a_random_start_then_each_other_backend_once_within_the_tries() {
        let p = pool(&ABC, None);
        let got: Vec<_> = Candidates::new(&p, None, 4, 3).collect();
        assert_eq!(
            got,
            [
                addr("10.0.0.2:80"),
                addr("10.0.0.3:80"),
                addr("10.0.0.1:80")
            ]
        );
        let got: Vec<_> = Candidates::new(&p, None, 0, 2).collect();
        assert_eq!(got, [addr("10.0.0.1:80"), addr("10.0.0.2:80")]);
        // More tries than backends: each once.
        assert_eq!(Candidates::new(&p, None, 7, 10).count(), 3);
    }

    #[test]
    fn every_backend_can_come_first() {
        let p = pool(&ABC, None);
        let firsts: std::collections::BTreeSet<_> = (0..3)
            .map(|r| Candidates::new(&p, None, r, 3).next().unwrap())
            .collect();
        assert_eq!(firsts.len(), 3);
    }

    #[test]
    fn an_empty_pool_yields_nothing() {
        let p = pool(&[], None);
        assert_eq!(Candidates::new(&p, None, 5, 3).next(), None);
        assert_eq!(
            Candidates::new(&p, Some(addr("10.0.0.1:80")), 5, 3).next(),
            None
        );
    }

    #[test]
    fn the_affinity_backend_comes_first_and_is_not_tried_twice() {
        let p = pool(&ABC, Some(60));
        let got: Vec<_> = Candidates::new(&p, Some(addr("10.0.0.2:80")), 0, 3).collect();
        assert_eq!(
            got,
            [
                addr("10.0.0.2:80"),
                addr("10.0.0.3:80"),
                addr("10.0.0.1:80")
            ]
        );
        // An affinity backend that left the pool is ignored.
        let got: Vec<_> = Candidates::new(&p, Some(addr("10.0.0.9:80")), 0, 3).collect();
        assert_eq!(got.len(), 3);
        assert!(!got.contains(&addr("10.0.0.9:80")));
    }

    #[test]
    fn affinity_holds_within_the_timeout_while_the_backend_stays() {
        let p = pool(&ABC, Some(10));
        let mut a = Affinity::default();
        let t0 = Instant::now();
        let client: IpAddr = "10.1.0.1".parse().unwrap();
        assert_eq!(a.lookup(client, &p, t0), None);
        a.record(client, addr("10.0.0.3:80"), t0, Duration::from_secs(10));
        let later = t0 + Duration::from_secs(9);
        assert_eq!(a.lookup(client, &p, later), Some(addr("10.0.0.3:80")));
        // Each use refreshes it.
        a.record(client, addr("10.0.0.3:80"), later, Duration::from_secs(10));
        assert_eq!(
            a.lookup(client, &p, later + Duration::from_secs(9)),
            Some(addr("10.0.0.3:80"))
        );
        // Expired.
        assert_eq!(a.lookup(client, &p, later + Duration::from_secs(10)), None);
        // Its backend left the pool.
        let smaller = pool(&ABC[..2], Some(10));
        assert_eq!(a.lookup(client, &smaller, later), None);
        // Affinity off.
        assert_eq!(a.lookup(client, &pool(&ABC, None), later), None);
    }

    #[test]
    fn a_full_table_sweeps_expired_entries_first() {
        let mut a = Affinity::default();
        let t0 = Instant::now();
        let timeout = Duration::from_secs(1);
        for i in 0..AFFINITY_MAX {
            let ip = IpAddr::from(u32::try_from(i).unwrap().to_be_bytes());
            a.record(ip, addr("10.0.0.1:80"), t0, timeout);
        }
        assert_eq!(a.len(), AFFINITY_MAX);
        let late = t0 + Duration::from_secs(2);
        a.record(
            "192.0.2.1".parse().unwrap(),
            addr("10.0.0.1:80"),
            late,
            timeout,
        );
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn pools_compare_membership() {
        let p = pool(&["10.0.0.2:80", "10.0.0.1:80", "10.0.0.1:80"], None);
        assert_eq!(p.backends(), [addr("10.0.0.1:80"), addr("10.0.0.2:80")]);
        assert!(p.contains(addr("10.0.0.2:80")));
        assert!(!p.contains(addr("10.0.0.2:81")));
        assert!(pool(&[], None).is_empty());
    }
}
