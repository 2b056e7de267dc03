//! How long a watcher waits before it tries again after an error.
//!
//! Two schedules, chosen by the error that came last:
//! - the API server **answered** (an HTTP error such as 429 or 5xx, a watch
//!   `ERROR` event): it is up but unwilling or failing, so back off as
//!   client-go does (kube's default: 0.8 s doubling to 30 s, jittered, reset
//!   after a quiet spell), not to pile load on a struggling server;
//! - it was **not reached** (connection refused or reset, DNS, TLS, a
//!   timeout): retry within about a second (0.1 s doubling to 0.5 s, each
//!   step jittered up to twice its length). While the server is down each try
//!   costs it nothing; once it is back, every watcher is too within a second,
//!   and a watch resumes from its last version (cheap) or, after a 410 Gone,
//!   relists at once (see the module above). So deleted objects stop being
//!   served about a second after the server returns, not after the backoff
//!   the outage grew (up to a minute).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use kube::runtime::{
    utils::Backoff,
    watcher::{self, DefaultBackoff, ExponentialBackoff},
};

/// The first wait after an unreachable server.
const UNREACHABLE_MIN: Duration = Duration::from_millis(100);
/// The longest wait (before jitter) while the server stays unreachable.
const UNREACHABLE_MAX: Duration = Duration::from_millis(500);

/// A [`Backoff`] that follows one of two schedules, by the last error's kind
/// (see the module doc). [`Retry::classify`] is called on every error before
/// the backoff is asked for its delay.
pub(super) struct Retry {
    answered: Arc<AtomicBool>,
    server: DefaultBackoff,
    unreachable: ExponentialBackoff,
}

impl Retry {
    pub(super) fn new() -> Self {
        let unreachable = backon::ExponentialBuilder::default()
            .with_min_delay(UNREACHABLE_MIN)
            .with_max_delay(UNREACHABLE_MAX)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Self {
            answered: Arc::new(AtomicBool::new(false)),
            server: DefaultBackoff::default(),
            unreachable: unreachable.into(),
        }
    }

    /// A function to call on each error as it goes by, before the backoff
    /// stream asks for its delay: it records which schedule applies.
    pub(super) fn classifier(&self) -> impl Fn(&watcher::Error) + Send + Sync + 'static {
        let answered = Arc::clone(&self.answered);
        move |error| answered.store(server_answered(error), Ordering::Relaxed)
    }
}

impl Iterator for Retry {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.answered.load(Ordering::Relaxed) {
            self.server.next()
        } else {
            self.unreachable.next()
        }
    }
}

impl Backoff for Retry {
    fn reset(&mut self) {
        self.server.reset();
        self.unreachable.reset();
    }
}

/// Whether the API server itself produced `error` (it is up), rather than
/// the way to it failing.
fn server_answered(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchError(_) => true,
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => matches!(e, kube::Error::Api(_)),
        watcher::Error::NoResourceVersion => true,
    }
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(
            Status::failure("overloaded", "TooManyRequests").with_code(code),
        ))
    }

    fn unreachable() -> kube::Error {
        kube::Error::Service(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )))
    }

    #[test]
    fn errors_are_told_apart_by_who_produced_them() {
        assert!(server_answered(&watcher::Error::InitialListFailed(
            api_error(429)
        )));
        assert!(server_answered(&watcher::Error::WatchStartFailed(
            api_error(503)
        )));
        assert!(!server_answered(&watcher::Error::InitialListFailed(
            unreachable()
        )));
        assert!(!server_answered(
            &watcher::Error::WatchFailed(unreachable())
        ));
    }

    /// An unreachable server is retried within a second, however long it has
    /// been away; one that answers with errors gets client-go's growing steps.
    #[test]
    fn an_unreachable_server_is_retried_within_a_second_an_answering_one_backs_off() {
        let mut retry = Retry::new();
        let classify = retry.classifier();
        classify(&watcher::Error::WatchFailed(unreachable()));
        for _ in 0..50 {
            let delay = retry.next().unwrap_or_default();
            assert!(delay <= 2 * UNREACHABLE_MAX, "{delay:?}");
        }
        classify(&watcher::Error::WatchStartFailed(api_error(503)));
        let grown = (0..10)
            .filter_map(|_| retry.next())
            .max()
            .unwrap_or_default();
        assert!(
            grown >= Duration::from_secs(20),
            "client-go grows to 30 s: {grown:?}"
        );
    }
}
