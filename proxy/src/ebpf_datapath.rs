//! The eBPF implementation of the [`Datapath`] seam.
//!
//! [`EbpfDatapath`] plans against the map mirror and writes the eBPF maps
//! (`dataplane::Writer`). The writer reports each frontend's outcome
//! ([`FrontendOutcome`]); frontends with no room in the maps are handed to a
//! userspace path of its own, so they are still served, and taken back as
//! soon as they fit. It also keeps the socket hooks ([`HookKeeper`]):
//! attached (or taken over from the previous daemon) after the first complete
//! sync, checked at every reconcile.
//!
//! Imports the seam (`datapath`), `dataplane` and `userspace`; none of them
//! imports it.
//!
//! Must not: compute desired state (that is the pure core's), or block the
//! runtime's workers for long (eBPF writes run in `block_in_place`).

mod overflow;

use std::{collections::BTreeSet, time::Instant};

use overflow::OverflowBudget;

use crate::{
    config,
    datapath::{Datapath, DatapathReport, Scope},
    dataplane::{
        ApplyReport, DataplaneMaps, FrontendOutcome, Writer,
        hooks::{HookAction, HookReport, LoadError},
        loader::SocketHooks,
        sock_frontends::GoneUdp,
        udp_flows::UdpFlowEnder,
    },
    events::{EventSink, ServiceProblem},
    log_budget::{self, LogBudget},
    model::{DesiredState, Frontend},
    plan::{Applied, Subject},
    telemetry::{ByFamily, DriftKind, MirroredEntries, Telemetry},
    userspace::UserspaceDatapath,
};

/// The socket hooks as the eBPF datapath sees them: [`SocketHooks`] in the
/// daemon, a fake in tests.
pub trait HookKeeper: Send + 'static {
    /// Attaches every hook that is not attached as it should be (see
    /// [`SocketHooks::ensure`]).
    /// `applied`: the writer's state, which a layout migration translates
    /// the old maps' ids against.
    fn ensure(&mut self, applied: &crate::plan::Applied) -> Result<HookReport, LoadError>;
    /// Attaches the socket path's source check while `wanted` (some frontend
    /// has `loadBalancerSourceRanges`), detaches it otherwise (see
    /// [`SocketHooks::want_source_check`]).
    fn want_source_check(&mut self, _wanted: bool) -> Result<Option<HookAction>, LoadError> {
        Ok(None)
    }
}

impl HookKeeper for SocketHooks {
    fn ensure(&mut self, applied: &crate::plan::Applied) -> Result<HookReport, LoadError> {
        SocketHooks::ensure(self, applied)
    }

    fn want_source_check(&mut self, wanted: bool) -> Result<Option<HookAction>, LoadError> {
        SocketHooks::want_source_check(self, wanted)
    }
}

/// No hooks to keep (tests of the maps alone).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHooks;

impl HookKeeper for NoHooks {
    fn ensure(&mut self, _applied: &crate::plan::Applied) -> Result<HookReport, LoadError> {
        Ok(HookReport::default())
    }
}

/// Where the eBPF datapath is with the hooks.
#[derive(Clone, Copy, Debug, Default)]
struct HookState {
    /// When the first sync started: the hooks are attached at the latest
    /// [`config::ATTACH_GRACE`] after it, complete or not.
    first_sync: Option<Instant>,
    /// An `ensure` has succeeded once: the dataplane runs our programs.
    attached: bool,
    /// The last `ensure` failed: the next sync tries again.
    failing: bool,
}

/// The eBPF maps and socket hooks, and a userspace path for frontends that do
/// not fit the maps.
pub struct EbpfDatapath<M, H = NoHooks> {
    writer: Writer<M>,
    hooks: H,
    hook_state: HookState,
    telemetry: Telemetry,
    overflow: Option<UserspaceDatapath>,
    /// Frontends the maps do not hold (a capacity failure): the userspace
    /// path serves them, up to `budget`.
    over_capacity: BTreeSet<Frontend>,
    /// Which of `over_capacity` the userspace path serves.
    budget: OverflowBudget,
    /// Link and address change notifications (see [`EbpfDatapath::with_device_events`]).
    device_events: Option<tokio::sync::watch::Receiver<u64>>,
    /// A notification came: the next sync checks the hooks (tc devices).
    devices_dirty: bool,
    /// Ends connected UDP sockets aimed at backends that went away.
    udp_flows: UdpFlowEnder,
    /// Where a frontend that finds no room in the maps is reported (a
    /// Service Event, with the Kubernetes source).
    events: EventSink,
    /// The desired frontends with source ranges, as of the last sync: kept
    /// per touched frontend, since a look at every frontend cost a walk of
    /// the desired state at every change.
    ranged: BTreeSet<Frontend>,
}

impl<M: DataplaneMaps + Send + Sync + 'static> EbpfDatapath<M> {
    /// `overflow`: the userspace path for frontends beyond the maps' capacity;
    /// without one they are reported as not served. No hooks: see
    /// [`EbpfDatapath::with_hooks`].
    pub fn new(
        writer: Writer<M>,
        telemetry: Telemetry,
        overflow: Option<UserspaceDatapath>,
    ) -> Self {
        Self {
            writer,
            hooks: NoHooks,
            hook_state: HookState::default(),
            telemetry,
            overflow,
            over_capacity: BTreeSet::new(),
            budget: OverflowBudget::new(usize::MAX),
            device_events: None,
            devices_dirty: false,
            udp_flows: UdpFlowEnder::own_namespace(),
            events: EventSink::default(),
            ranged: BTreeSet::new(),
        }
    }

    /// The socket hooks this datapath attaches after the first complete sync
    /// and checks at every reconcile.
    pub fn with_hooks<H: HookKeeper>(self, hooks: H) -> EbpfDatapath<M, H> {
        EbpfDatapath {
            writer: self.writer,
            hooks,
            hook_state: self.hook_state,
            telemetry: self.telemetry,
            overflow: self.overflow,
            over_capacity: self.over_capacity,
            budget: self.budget,
            device_events: self.device_events,
            devices_dirty: self.devices_dirty,
            udp_flows: self.udp_flows,
            ranged: self.ranged,
            events: self.events,
        }
    }
}

impl<M, H> EbpfDatapath<M, H> {
    /// Link and address changes (`dataplane::devices::watch_links`): each
    /// wakes the sync loop, and the sync then checks the hooks at once, so a
    /// new pod device gets the tc programs without waiting for the reconcile.
    pub fn with_device_events(mut self, events: tokio::sync::watch::Receiver<u64>) -> Self {
        self.device_events = Some(events);
        self
    }

    /// Serves at most `limit` frontends beyond the maps' capacity from
    /// userspace (`--userspace-max-frontends`); the rest are not served.
    pub fn with_overflow_limit(mut self, limit: usize) -> Self {
        self.budget = OverflowBudget::new(limit);
        self
    }

    /// Reports each frontend that finds no room in the maps to `events`.
    pub fn with_events(mut self, events: EventSink) -> Self {
        self.events = events;
        self
    }

    /// How connected UDP sockets aimed at a removed backend are ended (by
    /// default in the daemon's own network namespace only).
    pub fn with_udp_flows(mut self, ender: UdpFlowEnder) -> Self {
        self.udp_flows = ender;
        self
    }
}

impl<M: DataplaneMaps + Send + Sync + 'static, H: HookKeeper> EbpfDatapath<M, H> {
    pub fn writer(&self) -> &Writer<M> {
        &self.writer
    }

    /// Frontends currently beyond the maps' capacity.
    pub fn over_capacity(&self) -> &BTreeSet<Frontend> {
        &self.over_capacity
    }

    fn write(&mut self, desired: &DesiredState, scope: Scope<'_>) -> ApplyReport {
        match scope {
            Scope::Reconcile => match self.writer.reconcile(desired) {
                Ok((drift, report)) => {
                    self.telemetry.drift_repairs(DriftKind::MapEntry, drift);
                    if drift > 0 {
                        tracing::warn!(
                            entries = drift,
                            "reconcile found map entries that differed from what we wrote; repaired"
                        );
                    }
                    report
                }
                Err(error) => {
                    tracing::error!(error = %error, "reconcile could not read the maps");
                    self.writer.sync(desired)
                }
            },
            // Frontends beyond capacity are tried again on every sync, so they
            // move back into the maps as soon as room frees up.
            Scope::Touched(touched) if self.over_capacity.is_empty() => {
                self.writer.sync_frontends(desired, touched)
            }
            Scope::Touched(touched) => {
                let mut retry = self.over_capacity.clone();
                retry.extend(touched.iter().copied());
                self.writer.sync_frontends(desired, &retry)
            }
            Scope::All => self.writer.sync(desired),
        }
    }

    /// Updates the set of frontends beyond capacity from one write's
    /// outcomes. Returns the frontends whose membership changed.
    fn track_capacity(
        &mut self,
        desired: &DesiredState,
        scope: Scope<'_>,
        report: &ApplyReport,
    ) -> BTreeSet<Frontend> {
        let mut looked_at: BTreeSet<Frontend> = self.over_capacity.clone();
        match scope {
            Scope::Touched(touched) => looked_at.extend(touched.iter().copied()),
            Scope::All | Scope::Reconcile => looked_at.extend(desired.frontends.keys().copied()),
        }
        let mut changed = BTreeSet::new();
        let mut entered = Vec::new();
        for frontend in looked_at {
            let published = self.writer.applied().frontend(frontend).is_some();
            let beyond = beyond_capacity(
                self.over_capacity.contains(&frontend),
                desired.frontends.contains_key(&frontend),
                published,
                report.frontends.get(&frontend).copied(),
            );
            if beyond && self.over_capacity.insert(frontend) {
                changed.insert(frontend);
                entered.push(frontend);
            } else if !beyond && self.over_capacity.remove(&frontend) {
                changed.insert(frontend);
                if published {
                    tracing::info!(%frontend, "frontend now fits the eBPF maps; no longer served from userspace");
                }
            }
        }
        // The userspace path's share: what entered or left it changed too.
        changed.extend(self.budget.update(&self.over_capacity));
        for frontend in entered {
            if let Some(spec) = desired.frontends.get(&frontend) {
                self.events.problem(ServiceProblem::no_room(
                    &spec.service,
                    frontend,
                    spec.kind,
                    self.userspace_serves(&frontend),
                ));
            }
        }
        changed
    }

    /// Whether a frontend beyond capacity is served from userspace.
    fn userspace_serves(&self, frontend: &Frontend) -> bool {
        self.overflow.is_some() && self.budget.serves(frontend)
    }
}

/// Whether a frontend is beyond the maps' capacity after a write: it is
/// wanted, not in the maps, and either found no room in this write or was
/// beyond already (a later failure of another kind does not take it from
/// the userspace path; being published does).
fn beyond_capacity(
    was_beyond: bool,
    wanted: bool,
    published: bool,
    outcome: Option<FrontendOutcome>,
) -> bool {
    wanted && !published && (was_beyond || outcome == Some(FrontendOutcome::NoRoom))
}

/// The failures the userspace path does not make up for: those of frontends
/// that are not beyond capacity, and those of other subjects (backends,
/// rev-NAT entries) unless the write ran out of room, which explains them
/// (a backend still used by a frontend that could not be updated, say).
fn unserved_failures(report: &ApplyReport, beyond: &BTreeSet<Frontend>) -> usize {
    let out_of_room = report.ran_out_of_room();
    report
        .failures
        .iter()
        .filter(|f| match f.subject {
            Subject::Frontend(frontend) => !beyond.contains(&frontend),
            _ => !out_of_room,
        })
        .count()
}

/// Entry counts of the mirrored maps, for the metrics.
fn mirrored_entries(applied: &Applied) -> MirroredEntries {
    // Counted by the mirror as it records each write: a walk of a million
    // entries here cost milliseconds at every change.
    let counts = applied.entry_counts();
    let family = |n: crate::plan::FamilyCounts| ByFamily { v4: n.v4, v6: n.v6 };
    MirroredEntries {
        services: family(counts.services),
        backends: family(counts.backends),
        rev_nat: family(counts.rev_nat),
        svc_names: applied.svc_names.len() as u64,
    }
}

impl<M: DataplaneMaps + Send + Sync + 'static, H: HookKeeper> Datapath for EbpfDatapath<M, H> {
    async fn apply<'a>(
        &'a mut self,
        desired: &'a DesiredState,
        scope: Scope<'a>,
    ) -> DatapathReport {
        self.hook_state.first_sync.get_or_insert_with(Instant::now);
        // The socket path's source check goes on before any frontend says it
        // has ranges, and comes off after the last one stopped saying so.
        self.track_ranged(desired, scope);
        let ranged = !self.ranged.is_empty();
        if ranged {
            self.source_check(true);
        }
        let mut report = tokio::task::block_in_place(|| self.write(desired, scope));
        if !ranged {
            self.source_check(false);
        }
        if !self.over_capacity.is_empty() && report.ops > 0 {
            // Deletes run after puts within a plan, so room this write made
            // came too late for the frontends waiting for it: one more try.
            let retry = self.over_capacity.clone();
            let again = tokio::task::block_in_place(|| self.writer.sync_frontends(desired, &retry));
            report.absorb_retry(&retry, again);
        }
        self.telemetry
            .map_entries(mirrored_entries(self.writer.applied()));
        if !report.udp_backends_gone.is_empty() {
            let gone = udp_gone(self.writer.applied(), &report.udp_backends_gone);
            let ended = tokio::task::block_in_place(|| end_udp_flows_to(&self.udp_flows, &gone));
            self.telemetry
                .udp_flows_ended(ended.destroyed, ended.denied, ended.failed);
        }
        let changed = self.track_capacity(desired, scope, &report);
        // A full map fails every later new entry: the first few are logged
        // one by one, the rest counted in one line, so an overflow of tens
        // of thousands of entries is not tens of thousands of log lines at
        // every sync.
        let mut failures = LogBudget::default();
        for failure in &report.failures {
            match failure.subject {
                Subject::Frontend(f) if self.over_capacity.contains(&f) => {
                    tracing::debug!(frontend = %f, error = %failure.error, "map write failed: no room");
                }
                _ if failures.admit() => {
                    tracing::error!(subject = ?failure.subject, error = %failure.error, "map write failed; skipped this piece");
                }
                _ => {}
            }
        }
        if failures.hidden() > 0 {
            tracing::error!(
                more = failures.hidden(),
                "{} more map writes failed in this sync and were skipped (the first {} are \
                 logged above)",
                failures.hidden(),
                log_budget::PER_PASS
            );
        }
        let mut out = DatapathReport {
            ops: report.ops,
            failures: report.failures.len(),
            unplanned: report.unplanned.len(),
            plan_time: report.plan_time,
            write_time: report.write_time,
            hooks_pending: false,
        };
        let over = &self.over_capacity;
        let mut overflowed = LogBudget::default();
        for f in changed.iter().filter(|f| over.contains(f)) {
            if !overflowed.admit() {
                continue;
            }
            let service = desired.frontends.get(f).map(|s| s.service.to_string());
            if self.userspace_serves(f) {
                tracing::warn!(frontend = %f, service = service.as_deref().unwrap_or(""), "frontend does not fit the eBPF maps; serving it from userspace");
            } else if self.overflow.is_some() {
                tracing::error!(
                    frontend = %f,
                    service = service.as_deref().unwrap_or(""),
                    limit = self.budget.limit(),
                    "frontend does not fit the eBPF maps and the userspace path serves its \
                     limit already (--userspace-max-frontends): not served"
                );
            } else {
                tracing::error!(frontend = %f, service = service.as_deref().unwrap_or(""), "frontend does not fit the eBPF maps and the userspace path is unavailable: not served");
            }
        }
        if overflowed.hidden() > 0 {
            tracing::warn!(
                more = overflowed.hidden(),
                "{} more frontends do not fit the eBPF maps (the first {} are logged above; \
                 proxy_frontends_over_capacity counts them all)",
                overflowed.hidden(),
                log_budget::PER_PASS
            );
        }
        let served = self.budget.served();
        if let Some(userspace) = self.overflow.as_mut() {
            // The userspace path serves what found no room, up to its limit:
            // what is left are the other failures, those of frontends beyond
            // the limit, and the userspace path's own.
            out.failures = unserved_failures(&report, served);
            out.unplanned = 0;
            // What the userspace path must look at: frontends that entered
            // or left the set, and those in it whose spec may have changed.
            let mut scoped: BTreeSet<Frontend> = changed;
            if let Scope::Touched(touched) = scope {
                scoped.extend(touched.iter().filter(|f| served.contains(f)).copied());
            }
            let sub = match scope {
                Scope::Touched(_) => Scope::Touched(&scoped),
                other => other,
            };
            if !scoped.is_empty() || !matches!(scope, Scope::Touched(_)) {
                let outcome = userspace
                    .apply_filtered(desired, sub, &|f| served.contains(f))
                    .await;
                out.ops += outcome.ops;
                out.failures += outcome.failures;
            }
        }
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let userspace = self.telemetry.userspace();
        userspace.over_capacity.set(gauge(self.over_capacity.len()));
        let served = if self.overflow.is_some() {
            self.budget.served().len()
        } else {
            0
        };
        userspace
            .over_capacity_unserved
            .set(gauge(self.over_capacity.len() - served));
        out.hooks_pending = !self.keep_hooks(out.writes_complete(), scope);
        out
    }

    async fn wake(&mut self) {
        // A draining backend's grace ends: the next sync deletes it.
        let drained = async {
            match self.writer.draining().next_deadline() {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let devices = async {
            let changed = match self.device_events.as_mut() {
                Some(events) => events.changed().await.is_ok(),
                None => false,
            };
            if !changed {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = drained => {}
            () = devices => self.devices_dirty = true,
        }
    }
}

impl<M: DataplaneMaps, H: HookKeeper> EbpfDatapath<M, H> {
    /// Brings [`EbpfDatapath::ranged`] up to date: the frontends `scope`
    /// may have changed, or all of them.
    fn track_ranged(&mut self, desired: &DesiredState, scope: Scope<'_>) {
        let has_ranges = |f: &Frontend| {
            desired
                .frontends
                .get(f)
                .is_some_and(|spec| spec.source_ranges.is_some())
        };
        match scope {
            Scope::Touched(touched) => {
                for f in touched {
                    if has_ranges(f) {
                        self.ranged.insert(*f);
                    } else {
                        self.ranged.remove(f);
                    }
                }
            }
            Scope::All | Scope::Reconcile => {
                self.ranged = desired
                    .frontends
                    .iter()
                    .filter(|(_, spec)| spec.source_ranges.is_some())
                    .map(|(f, _)| *f)
                    .collect();
            }
        }
    }

    /// See [`HookKeeper::want_source_check`]. A failure is logged, and the
    /// next reconcile's `ensure` retries.
    fn source_check(&mut self, wanted: bool) {
        let done = tokio::task::block_in_place(|| self.hooks.want_source_check(wanted));
        if let Err(error) = done {
            self.hook_state.failing = true;
            tracing::error!(
                wanted,
                error = %crate::error_chain::error_chain(&error),
                "cannot attach or detach the socket hooks' source-range check; will retry"
            );
        }
    }

    /// Hooks: attached once the maps hold a complete state (or, should syncs
    /// keep failing, after [`config::ATTACH_GRACE`]), then checked at every
    /// reconcile, and at every sync after a failed attempt. True when every
    /// hook is attached as it should be (as far as we know).
    fn keep_hooks(&mut self, complete: bool, scope: Scope<'_>) -> bool {
        let state = &mut self.hook_state;
        let due = if state.attached {
            state.failing || self.devices_dirty || matches!(scope, Scope::Reconcile)
        } else {
            complete
                || state
                    .first_sync
                    .is_some_and(|first| first.elapsed() >= config::ATTACH_GRACE)
        };
        if !due {
            if !state.attached {
                tracing::warn!(
                    "the first sync is incomplete; the hooks are attached once the maps hold \
                     everything (the previous daemon's hooks, if any, keep serving meanwhile)"
                );
            }
            return state.attached;
        }
        if state.attached {
            self.devices_dirty = false;
        }
        let (hooks, writer) = (&mut self.hooks, &self.writer);
        let ensured = tokio::task::block_in_place(|| hooks.ensure(writer.applied()));
        let ok = note_hooks(ensured, !state.attached, &self.telemetry);
        state.attached |= ok;
        state.failing = !ok;
        ok
    }
}

/// Logs and counts what [`HookKeeper::ensure`] did; true when every hook is
/// attached. `first`: the call that attaches or takes over after a start.
fn note_hooks(ensured: Result<HookReport, LoadError>, first: bool, telemetry: &Telemetry) -> bool {
    let report = match ensured {
        Ok(report) => report,
        Err(error) => {
            tracing::error!(error = %crate::error_chain::error_chain(&error), "cannot attach the socket hooks or the tc programs; will retry");
            return false;
        }
    };
    let (mut took_over, mut attached) = (0, 0);
    for hook in &report.hooks {
        match hook.action {
            HookAction::Kept => {}
            HookAction::TookOver { from_version } => {
                took_over += 1;
                tracing::debug!(program = hook.program, device = ?hook.device, from_version, "hook taken over");
            }
            HookAction::Attached => {
                attached += 1;
                tracing::debug!(program = hook.program, device = ?hook.device, "hook attached");
            }
            HookAction::Repaired(drift) => tracing::warn!(
                program = hook.program,
                device = ?hook.device,
                found = drift.as_str(),
                "socket hook was not attached as it should be; re-attached (drift repaired)"
            ),
        }
    }
    let repaired = report.repaired().count();
    if repaired > 0 {
        telemetry.drift_repairs(DriftKind::Link, repaired);
    }
    if first && !report.hooks.is_empty() {
        tracing::info!(
            hooks = report.hooks.len(),
            took_over,
            attached,
            repaired,
            migrated_from = ?report.migrated_from,
            "hooks attached: the dataplane runs this daemon's programs"
        );
    }
    true
}

/// What left the UDP frontends, with the backends no UDP frontend reaches
/// any more (a UDP backend is only in UDP frontends' slots).
fn udp_gone(
    applied: &crate::plan::Applied,
    pairs: &[(Frontend, crate::model::Backend)],
) -> GoneUdp {
    let sa = |addr, port| std::net::SocketAddr::new(addr, port);
    let by_addr: std::collections::HashMap<std::net::SocketAddr, crate::model::Backend> = pairs
        .iter()
        .map(|(_, b)| (sa(b.addr, b.port), *b))
        .collect();
    GoneUdp::new(
        pairs
            .iter()
            .map(|(f, b)| (sa(f.addr, f.port), sa(b.addr, b.port))),
        |peer| {
            by_addr
                .get(&peer)
                .and_then(|b| applied.backend_id(b))
                .is_some_and(|id| applied.refs(id) > 0)
        },
    )
}

/// Connected UDP sockets keep the backend they were given at `connect()`; when
/// that backend leaves the frontend they were connected through, end them, in
/// every namespace the ender reaches, so the application reconnects (and is
/// balanced, or refused, afresh). Sockets of other frontends that still list
/// the backend are kept.
fn end_udp_flows_to(
    ender: &UdpFlowEnder,
    gone: &GoneUdp,
) -> crate::dataplane::udp_flows::EndReport {
    let report = ender.end_gone(gone);
    tracing::info!(
        backends = gone.peers().len(),
        destroyed = report.destroyed,
        namespaces = report.namespaces,
        denied = report.denied,
        failed = report.failed,
        took_us = report.took.as_micros() as u64,
        "ended UDP sockets aimed at removed backends"
    );
    report
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Arc, Mutex},
        time::Duration,
    };

    use super::*;
    use crate::{
        dataplane::writer::StepError,
        dataplane::{MapError, writer::StepFailure},
        model::Protocol,
    };

    fn fe(port: u16) -> Frontend {
        Frontend {
            addr: std::net::IpAddr::from([10, 96, 0, 10]),
            port,
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn a_frontend_is_beyond_capacity_while_wanted_unpublished_and_without_room() {
        use FrontendOutcome::*;
        // Found no room now, or had none before and is still not in the maps.
        assert!(beyond_capacity(false, true, false, Some(NoRoom)));
        assert!(beyond_capacity(true, true, false, Some(Failed)));
        assert!(beyond_capacity(true, true, false, None));
        // Another failure is retried, not handed to userspace.
        assert!(!beyond_capacity(false, true, false, Some(Failed)));
        // Published, or no longer wanted: back from userspace.
        assert!(!beyond_capacity(true, true, true, Some(Published)));
        assert!(!beyond_capacity(true, false, false, Some(NoRoom)));
    }

    #[test]
    fn failures_the_userspace_path_covers_are_not_counted() {
        let full = || StepError::Map(MapError::Full { map: "BACKEND_V4" });
        let failure = |subject, error| StepFailure { subject, error };
        let mut report = ApplyReport {
            failures: vec![
                failure(Subject::Frontend(fe(1)), full()),
                failure(Subject::Frontend(fe(2)), StepError::Map(MapError::Injected)),
                failure(Subject::Backend(7), StepError::BackendInUse(7, 1)),
            ],
            ..ApplyReport::default()
        };
        let beyond = BTreeSet::from([fe(1)]);
        // The write ran out of room: the backend's failure is explained by it.
        assert_eq!(unserved_failures(&report, &beyond), 1);
        report.failures.remove(0);
        // No room problem left: every other failure counts.
        assert_eq!(unserved_failures(&report, &beyond), 2);
    }

    /// Records what the datapath last asked of the source check.
    struct SourceCheckHooks(Arc<Mutex<Option<bool>>>);

    impl HookKeeper for SourceCheckHooks {
        fn ensure(&mut self, _applied: &crate::plan::Applied) -> Result<HookReport, LoadError> {
            Ok(HookReport {
                hooks: Vec::new(),
                migrated_from: Vec::new(),
                migration: Vec::new(),
            })
        }

        fn want_source_check(&mut self, wanted: bool) -> Result<Option<HookAction>, LoadError> {
            *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(wanted);
            Ok(None)
        }
    }

    fn spec(ranged: bool, backend: &str) -> crate::model::FrontendSpec {
        let range = crate::model::SourceRange::new(std::net::IpAddr::from([192, 0, 2, 0]), 24);
        crate::model::FrontendSpec {
            kind: crate::model::FrontendKind::LoadBalancer,
            external_backends: None,
            service: crate::model::ObjectRef::new("default", "svc"),
            port_name: String::new(),
            backends: vec![crate::model::Backend {
                addr: backend
                    .parse()
                    .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
                port: 8080,
                protocol: Protocol::Tcp,
            }],
            affinity_timeout: None,
            traffic_policy: crate::model::TrafficPolicy::Cluster,
            source_ranges: ranged.then(|| range.into_iter().collect()),
        }
    }

    /// The socket path's source check is on while some frontend has ranges,
    /// as known from the frontends each sync touched (no look at the others).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_source_check_follows_the_touched_frontends_ranges() {
        let wanted = Arc::new(Mutex::new(None));
        let writer = crate::dataplane::Writer::new(crate::dataplane::fake::FakeMaps::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let telemetry = Telemetry::new(crate::telemetry::Mode::Ebpf, Duration::from_secs(60));
        let mut dp =
            EbpfDatapath::new(writer, telemetry, None).with_hooks(SourceCheckHooks(wanted.clone()));
        let (a, b) = (fe(1), fe(2));
        let mut desired = DesiredState::default();
        desired.frontends.insert(a, spec(true, "10.1.0.1"));
        desired.frontends.insert(b, spec(false, "10.1.0.2"));
        let last = || {
            *wanted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        dp.apply(&desired, Scope::All).await;
        assert_eq!(last(), Some(true), "a frontend has ranges");
        let steps: [(Frontend, Option<bool>, bool); 5] = [
            // (touched frontend, its new spec: ranged or not, or gone; wanted after)
            (a, Some(false), false),
            (a, Some(true), true),
            (b, Some(false), true),
            (b, Some(true), true),
            (a, None, true),
        ];
        for (i, (f, ranged, want)) in steps.into_iter().enumerate() {
            match ranged {
                Some(ranged) => {
                    desired.frontends.insert(f, spec(ranged, "10.1.0.3"));
                }
                None => {
                    desired.frontends.remove(&f);
                }
            }
            let touched = BTreeSet::from([f]);
            dp.apply(&desired, Scope::Touched(&touched)).await;
            assert_eq!(last(), Some(want), "step {i}");
        }
        desired.frontends.remove(&b);
        dp.apply(&desired, Scope::Touched(&BTreeSet::from([b])))
            .await;
        assert_eq!(last(), Some(false), "no frontend has ranges left");
    }
}
