//! Ending connected UDP sockets aimed at a gone backend, in every network
//! namespace of the node.
//!
//! A pod's client (a DNS resolver, typically) lives in the pod's network
//! namespace, and `SOCK_DESTROY` only reaches sockets of the namespace the
//! netlink socket was made in. So each namespace found by [`netns::discover`]
//! is entered in turn, on a thread of its own ([`netns::visit_each`]), and the
//! same sock_diag destroy ([`sockets::destroy_udp_sockets_to`]) runs there.
//!
//! Without `CAP_SYS_ADMIN` the foreign namespaces cannot be entered: that is
//! logged once, counted at every change, and the daemon's own namespace is
//! still served, as before.
//!
//! Must not: run on a tokio worker (it blocks; callers use `block_in_place`).

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use super::{
    netns::{self, Visit},
    sock_frontends::{GoneUdp, SockFrontends},
    sockets,
};

/// Which namespaces are visited.
#[derive(Clone, Debug)]
enum Reach {
    /// The daemon's own only.
    Own,
    /// Those of every process under this cgroup (the hooks'), those pinned
    /// in `pin_dirs`, and the own.
    Served {
        cgroup: PathBuf,
        pin_dirs: Vec<PathBuf>,
    },
}

/// Ends UDP flows to gone backends; remembers whether it already said that
/// it may not enter, or cannot see, namespaces. Shareable (`&self`).
#[derive(Debug)]
pub struct UdpFlowEnder {
    reach: Reach,
    denied_logged: AtomicBool,
    hidden_logged: AtomicBool,
    /// The sockets' frontends (`SOCK_RNAT_*`), to end only the sockets of
    /// the frontend that lost a backend; without them, a socket is ended
    /// only when no UDP frontend reaches its backend.
    frontends: Option<SockFrontends>,
}

/// What one call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndReport {
    /// Namespaces worked in, the own included.
    pub namespaces: usize,
    /// Sockets destroyed, all namespaces together.
    pub destroyed: usize,
    /// Namespaces `setns` refused (no `CAP_SYS_ADMIN`).
    pub denied: usize,
    /// Namespaces where entering or sock_diag failed otherwise.
    pub failed: usize,
    pub took: Duration,
}

impl UdpFlowEnder {
    /// Only the daemon's own namespace (as before pods' namespaces were
    /// visited; also what tests of the maps alone use).
    pub fn own_namespace() -> Self {
        Self {
            reach: Reach::Own,
            denied_logged: AtomicBool::new(false),
            hidden_logged: AtomicBool::new(false),
            frontends: None,
        }
    }

    /// Every namespace of a process under `cgroup` (the cgroup the socket
    /// hooks attach to), every namespace pinned in `pin_dirs`
    /// (`--netns-dir`), and the daemon's own.
    pub fn served_by(cgroup: PathBuf, pin_dirs: Vec<PathBuf>) -> Self {
        Self {
            reach: Reach::Served { cgroup, pin_dirs },
            denied_logged: AtomicBool::new(false),
            hidden_logged: AtomicBool::new(false),
            frontends: None,
        }
    }

    /// Looks sockets' frontends up in these maps (see [`UdpFlowEnder::end_gone`]).
    pub fn with_socket_frontends(mut self, frontends: SockFrontends) -> Self {
        self.frontends = Some(frontends);
        self
    }

    /// Destroys the connected UDP sockets whose peer is one of `gone`, in
    /// each namespace this ender reaches. Blocks for the walk.
    pub fn end(&self, gone: &[SocketAddr]) -> EndReport {
        self.end_where(gone, &|_, _| true)
    }

    /// Destroys the connected UDP sockets that [`GoneUdp::should_end`]
    /// names: those translated through a frontend that no longer reaches
    /// their backend, and those without a record whose backend no UDP
    /// frontend reaches. Blocks for the walk.
    pub fn end_gone(&self, gone: &GoneUdp) -> EndReport {
        let frontends = self.frontends.as_ref();
        self.end_where(gone.peers(), &|peer, cookie| {
            gone.should_end(peer, frontends.and_then(|f| f.vip(cookie, peer)))
        })
    }

    /// The cookies of every TCP and UDP socket in the namespaces this ender
    /// reaches; `None` unless every one of them was read (a socket left out
    /// would look closed).
    pub fn live_cookies(&self) -> Option<std::collections::HashSet<u64>> {
        let others = match &self.reach {
            Reach::Own => Vec::new(),
            Reach::Served { cgroup, pin_dirs } => {
                let found =
                    netns::discover(cgroup, pin_dirs, std::path::Path::new("/proc")).ok()?;
                if found.hidden > 0 && pin_dirs.is_empty() {
                    return None;
                }
                found.others
            }
        };
        let visits = netns::visit_each(others, sockets::socket_cookies).ok()?;
        let mut live = std::collections::HashSet::new();
        for (_, visit) in visits {
            match visit {
                Visit::Done(Ok(cookies)) => live.extend(cookies),
                _ => return None,
            }
        }
        Some(live)
    }

    fn end_where(
        &self,
        gone: &[SocketAddr],
        decide: &(dyn Fn(SocketAddr, u64) -> bool + Sync),
    ) -> EndReport {
        let started = Instant::now();
        let mut report = EndReport::default();
        if gone.is_empty() {
            return report;
        }
        let others = match &self.reach {
            Reach::Own => Vec::new(),
            Reach::Served { cgroup, pin_dirs } => {
                match netns::discover(cgroup, pin_dirs, std::path::Path::new("/proc")) {
                    Ok(found) => {
                        if found.hidden > 0
                            && pin_dirs.is_empty()
                            && !self.hidden_logged.swap(true, Ordering::Relaxed)
                        {
                            tracing::warn!(
                                cgroup = %cgroup.display(),
                                processes = found.hidden,
                                "cannot see the processes of the hooks' cgroup (the daemon runs \
                                 in a pid namespace of its own; hostPID is off): connected UDP \
                                 sockets of pods stay aimed at removed backends; only namespaces \
                                 of visible processes are served (--netns-dir=/run/netns finds \
                                 pods' namespaces without hostPID)"
                            );
                        }
                        found.others
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "cannot list pods' network namespaces; ending UDP sockets in the daemon's own only");
                        report.failed += 1;
                        Vec::new()
                    }
                }
            }
        };
        let visits =
            match netns::visit_each(others, || sockets::destroy_udp_sockets_where(gone, decide)) {
                Ok(visits) => visits,
                Err(error) => {
                    tracing::error!(error = %error, "ending UDP sockets aimed at removed backends");
                    report.failed += 1;
                    report.took = started.elapsed();
                    return report;
                }
            };
        for (ns, visit) in visits {
            let ns = ns.map_or_else(|| "own".to_owned(), |id| id.to_string());
            match visit {
                Visit::Done(Ok(n)) => {
                    report.namespaces += 1;
                    report.destroyed += n;
                }
                Visit::Done(Err(error)) => {
                    report.failed += 1;
                    tracing::warn!(netns = %ns, error = %error, "could not end UDP sockets aimed at removed backends");
                }
                Visit::Denied => report.denied += 1,
                Visit::Failed(errno) => {
                    // A namespace whose last process exited meanwhile is
                    // still enterable through the open handle; this is rare.
                    report.failed += 1;
                    tracing::debug!(netns = %ns, error = %errno, "could not enter a network namespace");
                }
            }
        }
        if report.denied > 0 && !self.denied_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                namespaces = report.denied,
                "may not enter pods' network namespaces (setns needs CAP_SYS_ADMIN): \
                 connected UDP sockets of pods stay aimed at removed backends; only the \
                 daemon's own namespace is served (counted in proxy_udp_flow_ends_total)"
            );
        }
        report.took = started.elapsed();
        report
    }
}
