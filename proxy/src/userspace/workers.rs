//! The threads that serve TCP frontends: one single-threaded tokio runtime per
//! CPU, each with its own `SO_REUSEPORT` listening socket per frontend, so the
//! kernel spreads new connections over them and a connection lives on the
//! thread that accepted it.
//!
//! Why not the daemon's multi-threaded runtime: a connection there wakes
//! whichever worker the scheduler picks, and a spawned task makes an idle
//! worker wake up (a `futex` round trip) to steal it. With one runtime per
//! thread, accepting, connecting and copying stay on one thread with no
//! cross-thread wake-up; the kernel's reuseport hash does the balancing.
//!
//! The runtimes start with the first TCP listener and live as long as the
//! process. Where a thread cannot be started, the caller's runtime is used.

use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle};

static WORKERS: OnceLock<Vec<Handle>> = OnceLock::new();

/// One handle per serving thread (at least one: the caller's runtime if none
/// could be started). Must be called inside a tokio runtime.
pub(super) fn handles() -> &'static [Handle] {
    WORKERS.get_or_init(|| {
        let count = std::thread::available_parallelism().map_or(2, |n| n.get().max(1));
        let mut handles = Vec::with_capacity(count);
        for i in 0..count {
            match start(i) {
                Ok(handle) => handles.push(handle),
                Err(error) => {
                    tracing::warn!(error = %error, worker = i, "cannot start a userspace proxy thread");
                    break;
                }
            }
        }
        if handles.is_empty() {
            handles.push(Handle::current());
        }
        tracing::debug!(threads = handles.len(), "userspace TCP proxy threads");
        handles
    })
}

fn start(i: usize) -> std::io::Result<Handle> {
    let runtime = Builder::new_current_thread().enable_all().build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name(format!("userspace-{i}"))
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    Ok(handle)
}
