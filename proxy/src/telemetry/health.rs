//! The proxy's own health, with kube-proxy's meaning
//! (`pkg/proxy/healthcheck/proxy_health.go`): the proxy is healthy unless a
//! change has been waiting longer than the health timeout to be programmed.
//!
//! The sync loop feeds it: [`HealthState::queued`] when a source bumps the
//! change counter, [`HealthState::sync_started`] and
//! [`HealthState::sync_finished`] around each sync. Only a *complete* sync
//! (every write done) counts as "updated", so a dataplane that keeps failing
//! turns unhealthy once its oldest unprogrammed change passes the timeout.
//!
//! Bumps are reported by a task of their own, so they carry the counter's
//! value: a bump the sync had already read (reported late, while the sync
//! runs) is programmed by it, a later one is not.
//!
//! One departure from kube-proxy: kube-proxy ignores a queued update until its
//! proxier has synced once (it is busy listing the cluster at start-up). Our
//! sources bump the counter only once their initial list is complete, so a
//! first sync that never completes is reported like any other stuck update.
//!
//! Pure: the caller passes the time in, so tests drive the clock.

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::Mode;

/// A point in time on both clocks: monotonic for durations, wall for reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub mono: Instant,
    pub wall: SystemTime,
}

impl Stamp {
    pub fn now() -> Self {
        Self {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// This stamp moved forward by `d` on both clocks (for tests and reports).
    pub fn after(self, d: Duration) -> Self {
        Self {
            mono: self.mono + d,
            wall: self.wall + d,
        }
    }

    fn since(self, earlier: Stamp) -> Duration {
        self.mono.saturating_duration_since(earlier.mono)
    }
}

/// A sync in progress.
#[derive(Clone, Copy, Debug)]
struct Running {
    /// The change counter's value the sync read: it programs every change up
    /// to this one.
    version: u64,
    /// The oldest change it programs.
    covers: Option<Stamp>,
    /// The first change queued after it read the counter.
    queued_since_start: Option<Stamp>,
}

/// Queued, updated and timed out; see the module docs.
#[derive(Clone, Debug)]
pub struct HealthState {
    timeout: Duration,
    last_updated: Option<Stamp>,
    /// The oldest change that is not known to be programmed.
    pending: Option<Stamp>,
    /// The change counter's value the last complete sync read.
    programmed: u64,
    running: Option<Running>,
    node_eligible: bool,
}

/// What `/healthz` and `/livez` report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    /// No change has waited longer than the timeout.
    pub healthy: bool,
    /// The last complete sync; `None` before the first.
    pub last_updated: Option<Stamp>,
    pub current_time: Stamp,
    /// False when the node is going away (a later Node watch sets it).
    pub node_eligible: bool,
}

impl HealthState {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            last_updated: None,
            pending: None,
            programmed: 0,
            running: None,
            node_eligible: true,
        }
    }

    /// A source changed something that must be programmed; `version` is the
    /// change counter's value after the change.
    pub fn queued(&mut self, version: u64, now: Stamp) {
        if version <= self.programmed {
            // Reported after the sync that programmed it had finished.
            return;
        }
        self.pending.get_or_insert(now);
        if let Some(running) = &mut self.running {
            if version > running.version {
                running.queued_since_start.get_or_insert(now);
            } else {
                // Reported late: the running sync has it.
                running.covers.get_or_insert(now);
            }
        }
    }

    /// A sync began, having read the change counter's `version`: it programs
    /// every change up to that one. A change not reported yet (its reporter
    /// has not run) counts as queued now.
    pub fn sync_started(&mut self, version: u64, now: Stamp) {
        self.running = None;
        self.queued(version, now);
        self.running = Some(Running {
            version,
            covers: self.pending,
            queued_since_start: None,
        });
    }

    /// A sync ended. When it was complete, returns how long the oldest change
    /// it programmed had waited (the network programming latency), if any.
    pub fn sync_finished(&mut self, now: Stamp, complete: bool) -> Option<Duration> {
        let running = self.running.take().unwrap_or(Running {
            version: u64::MAX,
            covers: self.pending,
            queued_since_start: None,
        });
        if !complete {
            // What was pending still is; the oldest change keeps its age.
            return None;
        }
        self.last_updated = Some(now);
        self.programmed = self.programmed.max(running.version);
        self.pending = running.queued_since_start;
        running.covers.map(|since| now.since(since))
    }

    /// The node is (or is no longer) eligible to receive traffic.
    pub fn set_node_eligible(&mut self, eligible: bool) {
        self.node_eligible = eligible;
    }

    /// The oldest change not yet programmed, if any.
    pub fn pending_since(&self) -> Option<Stamp> {
        self.pending
    }

    pub fn status(&self, now: Stamp) -> Health {
        let late = self
            .pending
            .is_some_and(|since| now.since(since) >= self.timeout);
        Health {
            healthy: !late,
            last_updated: self.last_updated,
            current_time: now,
            node_eligible: self.node_eligible,
        }
    }
}

/// Which endpoint is answering: `/healthz` also requires the node to be
/// eligible, `/livez` does not (as in kube-proxy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    Healthz,
    Livez,
}

/// The JSON body, in kube-proxy's shape plus our `mode`. kube-proxy's
/// per-family `status` map is left out (it is optional there): one sync
/// programs both families here, so it would only repeat the top level.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthBody {
    pub last_updated: String,
    pub current_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_eligible: Option<bool>,
    pub healthy: bool,
    pub mode: &'static str,
}

impl Health {
    /// The HTTP status and body for `probe`.
    pub fn response(&self, probe: Probe, mode: Mode) -> (u16, HealthBody) {
        let ok = match probe {
            Probe::Healthz => self.healthy && self.node_eligible,
            Probe::Livez => self.healthy,
        };
        // As kube-proxy: a healthy answer reports the current time as
        // lastUpdated (older releases did, and clients rely on it being recent).
        let last_updated = if ok {
            Some(self.current_time)
        } else {
            self.last_updated
        };
        let body = HealthBody {
            last_updated: rfc3339(last_updated.map(|s| s.wall)),
            current_time: rfc3339(Some(self.current_time.wall)),
            node_eligible: (probe == Probe::Healthz).then_some(self.node_eligible),
            healthy: self.healthy,
            mode: mode.as_str(),
        };
        (if ok { 200 } else { 503 }, body)
    }
}

/// RFC 3339 in UTC, as Go's `time.Time` marshals; `None` is Go's zero time.
fn rfc3339(t: Option<SystemTime>) -> String {
    const ZERO: &str = "0001-01-01T00:00:00Z";
    match t.map(k8s_openapi::jiff::Timestamp::try_from) {
        Some(Ok(ts)) => ts.to_string(),
        _ => ZERO.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(60);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    struct Clock {
        start: Stamp,
    }

    impl Clock {
        fn at(&self, s: u64) -> Stamp {
            self.start.after(secs(s))
        }
    }

    fn setup() -> (HealthState, Clock) {
        (
            HealthState::new(TIMEOUT),
            Clock {
                start: Stamp::now(),
            },
        )
    }

    #[test]
    fn healthy_at_start_and_while_nothing_is_queued() {
        let (h, c) = setup();
        assert!(h.status(c.at(0)).healthy);
        assert!(h.status(c.at(3600)).healthy);
        assert_eq!(h.status(c.at(0)).last_updated, None);
    }

    #[test]
    fn a_queued_update_turns_unhealthy_only_after_the_timeout() {
        let (mut h, c) = setup();
        h.queued(1, c.at(10));
        assert!(h.status(c.at(69)).healthy, "59 s after queueing");
        assert!(!h.status(c.at(70)).healthy, "60 s after queueing");
    }

    #[test]
    fn a_complete_sync_clears_the_queue_and_records_the_update() {
        let (mut h, c) = setup();
        h.queued(1, c.at(0));
        h.sync_started(1, c.at(0));
        let latency = h.sync_finished(c.at(2), true);
        assert_eq!(latency, Some(secs(2)));
        assert!(h.status(c.at(500)).healthy);
        assert_eq!(h.status(c.at(500)).last_updated, Some(c.at(2)));
    }

    #[test]
    fn the_oldest_queued_update_counts_not_the_latest() {
        let (mut h, c) = setup();
        h.queued(1, c.at(0));
        h.queued(1, c.at(50));
        assert!(!h.status(c.at(60)).healthy);
    }

    #[test]
    fn an_incomplete_sync_keeps_the_update_pending() {
        let (mut h, c) = setup();
        h.queued(1, c.at(0));
        h.sync_started(1, c.at(0));
        assert_eq!(h.sync_finished(c.at(1), false), None);
        assert!(!h.status(c.at(60)).healthy);
        // The retry that succeeds reports the latency from the first change.
        h.sync_started(1, c.at(60));
        assert_eq!(h.sync_finished(c.at(61), true), Some(secs(61)));
        assert!(h.status(c.at(62)).healthy);
    }

    #[test]
    fn a_change_queued_during_a_sync_stays_pending_after_it() {
        let (mut h, c) = setup();
        h.queued(1, c.at(0));
        h.sync_started(1, c.at(0));
        h.queued(2, c.at(5));
        assert_eq!(h.sync_finished(c.at(6), true), Some(secs(6)));
        assert_eq!(h.pending_since(), Some(c.at(5)));
        assert!(!h.status(c.at(65)).healthy);
        h.sync_started(2, c.at(65));
        assert_eq!(h.sync_finished(c.at(66), true), Some(secs(61)));
        assert_eq!(h.pending_since(), None);
    }

    #[test]
    fn a_change_not_reported_yet_is_timed_from_the_sync_that_reads_it() {
        let (mut h, c) = setup();
        h.sync_started(1, c.at(0));
        // Its reporter runs late, while the sync is running.
        h.queued(1, c.at(1));
        assert_eq!(h.sync_finished(c.at(2), true), Some(secs(2)));
        assert_eq!(h.pending_since(), None);
        assert!(h.status(c.at(3600)).healthy);
    }

    #[test]
    fn a_change_reported_after_the_sync_that_programmed_it_is_not_pending() {
        let (mut h, c) = setup();
        h.sync_started(3, c.at(0));
        assert_eq!(h.sync_finished(c.at(1), true), Some(secs(1)));
        h.queued(2, c.at(2));
        h.queued(3, c.at(2));
        assert_eq!(h.pending_since(), None);
        assert!(h.status(c.at(3600)).healthy);
        h.queued(4, c.at(3));
        assert_eq!(h.pending_since(), Some(c.at(3)));
    }

    #[test]
    fn a_resync_with_nothing_new_reports_no_latency() {
        let (mut h, c) = setup();
        h.sync_started(1, c.at(0));
        assert_eq!(h.sync_finished(c.at(1), true), Some(secs(1)));
        h.sync_started(1, c.at(60));
        assert_eq!(h.sync_finished(c.at(61), true), None);
        assert_eq!(h.status(c.at(61)).last_updated, Some(c.at(61)));
    }

    #[test]
    fn healthz_needs_an_eligible_node_livez_does_not() {
        let (mut h, c) = setup();
        h.set_node_eligible(false);
        let status = h.status(c.at(0));
        assert_eq!(status.response(Probe::Healthz, Mode::Ebpf).0, 503);
        assert_eq!(status.response(Probe::Livez, Mode::Ebpf).0, 200);
    }

    #[test]
    fn the_body_has_kube_proxys_fields_and_our_mode() {
        let (mut h, c) = setup();
        h.queued(1, c.at(0));
        let (code, body) = h.status(c.at(61)).response(Probe::Healthz, Mode::Ebpf);
        assert_eq!(code, 503);
        let json: serde_json::Value = serde_json::to_value(&body).unwrap();
        assert_eq!(json["lastUpdated"], "0001-01-01T00:00:00Z", "{json}");
        assert!(
            json["currentTime"].as_str().unwrap().ends_with('Z'),
            "{json}"
        );
        assert_eq!(json["nodeEligible"], true);
        assert_eq!(json["healthy"], false);
        assert_eq!(json["mode"], "ebpf");

        let (code, body) = h.status(c.at(61)).response(Probe::Livez, Mode::Ebpf);
        assert_eq!(code, 503);
        let json = serde_json::to_value(&body).unwrap();
        assert!(json.get("nodeEligible").is_none(), "{json}");
    }

    #[test]
    fn a_healthy_answer_reports_the_current_time_as_last_updated() {
        let (h, c) = setup();
        let (code, body) = h.status(c.at(5)).response(Probe::Healthz, Mode::Ebpf);
        assert_eq!(code, 200);
        assert_eq!(body.last_updated, body.current_time);
    }
}
