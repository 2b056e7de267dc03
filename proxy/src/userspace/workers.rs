//! The threads that serve TCP frontends: one single-threaded tokio runtime per
//! CPU this process may use, each thread pinned to its CPU, each with its own
//! `SO_REUSEPORT` listening socket per frontend, marked with that CPU
//! (`SO_INCOMING_CPU`). A connection lives on the thread that accepted it.
//!
//! Why not the daemon's multi-threaded runtime: a connection there wakes
//! whichever worker the scheduler picks, and a spawned task makes an idle
//! worker wake up (a `futex` round trip) to steal it. With one runtime per
//! thread, accepting, connecting and copying stay on one thread with no
//! cross-thread wake-up.
//!
//! Why pinned, with `SO_INCOMING_CPU`: the kernel then hands a new connection
//! to the listener of the CPU that took its handshake, which is the CPU the
//! client on this node was running on. The proxy thread is woken there, with
//! no inter-processor interrupt (costly in a VM) and warm caches, while the
//! client waits for its answer. On this machine it took the connection rate
//! from 0.96× to 1.06× HAProxy's. A SYN taken on a CPU no worker owns falls
//! back to the reuseport hash.
//!
//! Under a CPU quota smaller than the cpuset ([`plan`]), there are as many
//! workers as the quota allows, unpinned, with unmarked sockets (the reuseport
//! hash spreads connections), as before pinning.
//!
//! The runtimes start with the first TCP listener and live as long as the
//! process. Where a thread cannot be started, the caller's runtime is used;
//! where it cannot be pinned, it runs unpinned and its sockets unmarked.

use std::sync::OnceLock;

use nix::{
    sched::{CpuSet, sched_getaffinity, sched_setaffinity},
    unistd::Pid,
};
use tokio::runtime::{Builder, Handle};

/// A serving thread.
pub(super) struct Worker {
    pub handle: Handle,
    /// The CPU it is pinned to, if pinning worked.
    pub cpu: Option<usize>,
}

static WORKERS: OnceLock<Vec<Worker>> = OnceLock::new();

/// One serving thread per CPU this process may run on ([`plan`]; at least
/// one: the caller's runtime if none could be started). Must be called inside
/// a tokio runtime.
pub(super) fn all() -> &'static [Worker] {
    WORKERS.get_or_init(|| {
        let cpus = allowed_cpus();
        let mut workers = Vec::with_capacity(cpus.len());
        for (i, cpu) in cpus.iter().enumerate() {
            match start(i, *cpu) {
                Ok(worker) => workers.push(worker),
                Err(error) => {
                    tracing::warn!(error = %error, worker = i, "cannot start a userspace proxy thread");
                    break;
                }
            }
        }
        if workers.is_empty() {
            workers.push(Worker {
                handle: Handle::current(),
                cpu: None,
            });
        }
        tracing::debug!(threads = workers.len(), "userspace TCP proxy threads");
        workers
    })
}

/// The CPUs to serve on: one worker each, pinned when named.
fn allowed_cpus() -> Vec<Option<usize>> {
    let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get().max(1));
    let affinity = sched_getaffinity(Pid::from_raw(0)).ok().map(|set| {
        (0..CpuSet::count())
            .filter(|cpu| set.is_set(*cpu).unwrap_or(false))
            .collect::<Vec<_>>()
    });
    plan(affinity, parallelism)
}

/// One pinned worker per CPU of the affinity mask (the cpuset), when the
/// process may use all of them; otherwise `parallelism` unpinned workers.
/// `parallelism` (`available_parallelism`) also counts a CPU quota
/// (`cpu.max`): a pod limited to 2 CPUs on a 64-CPU node gets 2 workers,
/// not 64 (each a listening socket per frontend), and none pinned, since
/// pinning 2 of them would tie them to 2 CPUs of the 64 its clients run on.
fn plan(affinity: Option<Vec<usize>>, parallelism: usize) -> Vec<Option<usize>> {
    match affinity {
        Some(cpus) if !cpus.is_empty() && cpus.len() <= parallelism => {
            cpus.into_iter().map(Some).collect()
        }
        _ => vec![None; parallelism.max(1)],
    }
}

fn start(i: usize, cpu: Option<usize>) -> std::io::Result<Worker> {
    let runtime = Builder::new_current_thread().enable_all().build()?;
    let handle = runtime.handle().clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("userspace-{i}"))
        .spawn(move || {
            let pinned = cpu.filter(|cpu| pin(*cpu));
            let _ = tx.send(pinned);
            runtime.block_on(std::future::pending::<()>())
        })?;
    let cpu = rx.recv().ok().flatten();
    Ok(Worker { handle, cpu })
}

/// Pins the calling thread to `cpu`; whether that worked.
fn pin(cpu: usize) -> bool {
    let mut set = CpuSet::new();
    set.set(cpu).is_ok() && sched_setaffinity(Pid::from_raw(0), &set).is_ok()
}

#[cfg(test)]
mod tests {
    use super::plan;

    #[test]
    fn pinned_per_cpu_unless_a_quota_allows_fewer() {
        assert_eq!(plan(Some(vec![0, 1]), 2), [Some(0), Some(1)]);
        assert_eq!(plan(Some(vec![2, 5]), 2), [Some(2), Some(5)]);
        // A quota of 2 CPUs on a 4-CPU cpuset.
        assert_eq!(plan(Some(vec![0, 1, 2, 3]), 2), [None, None]);
        assert_eq!(plan(None, 3), [None, None, None]);
        assert_eq!(plan(Some(vec![]), 0), [None]);
    }
}
