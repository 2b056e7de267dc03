//! Listening again when an admin address is in use, as kube-proxy's
//! `serveHealthz`/`serveMetrics` do (`wait.Until(..., 5*time.Second)`): the
//! daemon keeps serving Services meanwhile, and each failure is counted
//! (`proxy_health_bind_failures_total{server}`) and logged, rate-limited.
//!
//! Only "address in use" is retried: another process (a daemon being
//! replaced, a client socket that took the port as its ephemeral port) can
//! let go of it. Any other error (the address is not on this node, no
//! permission) is a configuration error that waiting does not fix: the
//! daemon stops at start, naming the address (`AdminServers::start`).
//!
//! Must not: block the caller; outlive the servers' stop signal.

use std::{io, net::SocketAddr, time::Duration};

use tokio::{net::TcpListener, sync::watch};

use super::http::Site;
use crate::telemetry::Telemetry;

/// The first retry's delay; each next one doubles, up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_millis(500);
/// kube-proxy's period between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(5);
/// Failures logged one by one; after them, one in [`WARN_EVERY`] (about once a
/// minute at [`MAX_DELAY`]).
const WARN_FIRST: u32 = 5;
const WARN_EVERY: u32 = 12;

/// Whether a failed bind is retried (in use) rather than fatal.
pub fn is_retried(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::AddrInUse
}

/// The delay before attempt `attempt + 1`, after `attempt` failures (≥ 1).
pub fn delay_after(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
}

/// Whether failure number `attempt` (from 1) is logged.
pub fn warns(attempt: u32) -> bool {
    logged(attempt, WARN_FIRST, WARN_EVERY)
}

/// Rate-limited logging of repeated failures: failure number `attempt`
/// (from 1) is logged when it is one of the first `first`, then one in `every`.
pub fn logged(attempt: u32, first: u32, every: u32) -> bool {
    attempt <= first || attempt.is_multiple_of(every)
}

/// Counts and (rate-limited) logs failure number `attempt` of `site` on `addr`.
pub fn record_failure(
    telemetry: &Telemetry,
    site: Site,
    addr: SocketAddr,
    attempt: u32,
    error: &io::Error,
) {
    telemetry.admin_bind_failed(site.label());
    if warns(attempt) {
        tracing::warn!(
            %addr,
            server = site.label(),
            error = %error,
            attempt,
            retry_in = ?delay_after(attempt),
            "cannot listen for {}: retrying; Services are served meanwhile",
            site.describe()
        );
    }
}

/// Tries `addr` again with backoff, after a first failure, until it is bound
/// (the listener) or `stop` flips (`None`). A later error other than "in
/// use" is logged and retried too: the daemon is running, and the
/// datapath must not stop for its admin server.
pub async fn listen_later(
    addr: SocketAddr,
    site: Site,
    telemetry: Telemetry,
    mut stop: watch::Receiver<bool>,
) -> Option<TcpListener> {
    let mut attempt = 1;
    loop {
        tokio::select! {
            () = tokio::time::sleep(delay_after(attempt)) => {}
            _ = stop.changed() => return None,
        }
        if *stop.borrow() {
            return None;
        }
        match TcpListener::bind(addr).await {
            Ok(listener) => {
                tracing::info!(
                    %addr,
                    serving = site.describe(),
                    failed_attempts = attempt,
                    "admin server listening"
                );
                return Some(listener);
            }
            Err(error) => {
                attempt = attempt.saturating_add(1);
                record_failure(&telemetry, site, addr, attempt, &error);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_from_half_a_second_up_to_kube_proxys_five() {
        let delays: Vec<_> = (1..=6).map(delay_after).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 5000, 5000].map(Duration::from_millis)
        );
        assert_eq!(delay_after(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn the_first_failures_are_logged_then_about_one_a_minute() {
        let logged: Vec<u32> = (1..=60).filter(|a| warns(*a)).collect();
        assert_eq!(logged, [1, 2, 3, 4, 5, 12, 24, 36, 48, 60]);
    }

    #[test]
    fn only_an_address_in_use_is_retried() {
        assert!(is_retried(&io::Error::from(io::ErrorKind::AddrInUse)));
        for kind in [
            io::ErrorKind::AddrNotAvailable,
            io::ErrorKind::PermissionDenied,
            io::ErrorKind::InvalidInput,
        ] {
            assert!(!is_retried(&io::Error::from(kind)), "{kind:?}");
        }
    }
}
