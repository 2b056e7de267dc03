//! The soak's judgement (`tests/tests/soak.rs` runs it; `cargo xtask soak`
//! starts that): the samples taken while it ran, the traffic it saw, and the
//! pass rule, as pure functions so the rule has unit tests of its own.
//!
//! The rule ([`judge`]):
//! - **No failed request.** The backends never stop serving; the churn only
//!   changes which endpoints are listed and ready, and every Service keeps at
//!   least one ready endpoint. So whatever the daemon last programmed points
//!   at a live backend, and *any* failed request or broken long-lived flow is
//!   a failure of the proxy.
//! - **Resources flat within [`FLAT_TOLERANCE`] after the warm-up.**
//!   - RSS and open descriptors belong to one daemon process, and every
//!     `kill -9` starts a fresh one, so they are compared per incarnation at
//!     equal ages: for each incarnation that lived a whole kill period, the
//!     mean of its samples taken [`AGE_WINDOW`] after its start. The first
//!     incarnation is the warm-up (first list, first programming of the
//!     maps); the first one after it is compared with the last one.
//!   - Map entries live in the pinned maps across restarts. The maps that
//!     follow the desired state alone (services, backends, rev-NAT, Maglev
//!     tables, names: every map but [`follows_flows`]'s) go up and down with
//!     the churn by design, so a window's mean says nothing about a leak.
//!     They are judged exactly instead ([`StateMaps`]): the soak undoes its
//!     churn at the end, so the desired state is the one it started with,
//!     and each such map must then hold as many entries as at the start. A
//!     leaked entry (one a deletion missed) or a lost one fails the run.
//!   - The maps that follow flows are compared in wall-clock windows: the
//!     mean of the first window after the warm-up against the mean of the
//!     last window, per map. For maps the soak's warm-up is the time the
//!     conntrack maps need to settle (their longest idle timeout plus a GC
//!     pass): before it they grow by design. A map with few entries cannot
//!     move by less than one entry, so a map may move by
//!     `max(5 %, MAP_SLACK_ENTRIES)`.
//!   - The maps the daemon's conntrack GC empties ([`GC_MAPS`]) are a
//!     sawtooth: they fill between two passes and drop at each, and where
//!     in its teeth a window's samples fall (and a `kill -9` delaying the
//!     next pass) moves a window's mean by far more than 5 % without any
//!     growth. Their level is what each pass leaves: per window, the mean
//!     of the minima of its [`GC_CHUNK`]-second chunks (each holds a pass).
//!     A leak leaves entries no pass removes, so that level rises with it.
//!     It may grow by 5 % of the first window's mean (the level itself can
//!     be near 0); a lower level is no leak.

use std::{collections::BTreeMap, fmt::Write as _, ops::RangeInclusive};

use proxy_common::names;
use serde_json::{Value, json};

/// How far a resource may move between the first and the last window.
pub const FLAT_TOLERANCE: f64 = 0.05;
/// Seconds after a daemon's start whose samples count for RSS and descriptors.
pub const AGE_WINDOW: RangeInclusive<f64> = 10.0..=26.0;
/// The entries any map may move by, whatever its size.
pub const MAP_SLACK_ENTRIES: f64 = 1.0;
/// The maps the daemon's conntrack GC empties (see the module docs).
pub const GC_MAPS: [&str; 6] = [
    names::CT_V4,
    names::CT_V6,
    names::CT_PENDING_V4,
    names::CT_PENDING_V6,
    names::SOCK_RNAT_V4,
    names::SOCK_RNAT_V6,
];
/// Whether a map's entries follow flows and time (conntrack, socket
/// rev-NAT, affinity), not the desired state alone.
pub fn follows_flows(name: &str) -> bool {
    GC_MAPS.contains(&name) || name == names::AFFINITY
}

/// The entries of the maps that follow the desired state alone (not
/// [`follows_flows`]), read at the soak's start and again at its end, after
/// the churn was undone: the same desired state, so the same entries.
#[derive(Clone, Debug, Default)]
pub struct StateMaps {
    pub start: BTreeMap<String, u64>,
    pub end: BTreeMap<String, u64>,
}

impl StateMaps {
    /// Only the maps that follow the desired state, of a reading of all.
    pub fn of(all: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
        all.iter()
            .filter(|(name, _)| !follows_flows(name))
            .map(|(name, &n)| (name.clone(), n))
            .collect()
    }

    /// Whether every map holds at the end what it held at the start.
    pub fn agree(&self) -> bool {
        !self.start.is_empty() && self.start == self.end
    }
}

/// Seconds per chunk whose minimum is a GC'd map's level: at least one GC
/// pass in each (the soak runs one every 5 s), with a restart's delay.
pub const GC_CHUNK: f64 = 10.0;

/// One sample of the running daemon.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Seconds since the soak started.
    pub t: f64,
    /// Which daemon (0: the first; each `kill -9` starts the next).
    pub incarnation: usize,
    /// Seconds since this daemon started.
    pub age: f64,
    pub pid: u32,
    /// `VmRSS`, KiB.
    pub rss_kib: Option<u64>,
    /// Entries of `/proc/<pid>/fd`.
    pub fds: Option<u64>,
    /// Entries per pinned map (`proxy inspect status`).
    pub maps: BTreeMap<String, u64>,
}

impl Sample {
    pub fn to_json(&self) -> Value {
        json!({
            "t": round(self.t), "incarnation": self.incarnation, "age": round(self.age),
            "pid": self.pid, "rss_kib": self.rss_kib, "fds": self.fds, "maps": self.maps,
        })
    }
}

/// What one load thread (a `pxt-load` `KIND=ADDR`) saw.
#[derive(Clone, Debug)]
pub struct Traffic {
    /// Where the client ran: `clusterip` (socket hooks) or `nodeport` (tc).
    pub path: String,
    pub kind: String,
    pub target: String,
    pub ok: u64,
    pub failed: u64,
    pub backends: Vec<String>,
}

/// One failed request, as the client reported it.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Seconds since the soak started.
    pub t: f64,
    pub path: String,
    pub kind: String,
    pub target: String,
    pub message: String,
}

/// What the soak did besides the traffic.
#[derive(Clone, Debug, Default)]
pub struct Activity {
    pub seconds: f64,
    pub kills: u64,
    pub watch_drops: u64,
    pub endpoint_changes: u64,
    pub service_changes: u64,
    /// Seconds after the start at which each daemon was killed.
    pub kill_times: Vec<f64>,
    /// The kernel's counters at the end (`proxy inspect stats`), non-zero only.
    pub datapath_events: BTreeMap<String, u64>,
}

/// One resource's comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Flatness {
    pub resource: String,
    pub first: f64,
    pub last: f64,
    /// How far `last` may be from `first`.
    pub allowed: f64,
    pub ok: bool,
}

impl Flatness {
    fn new(resource: String, first: f64, last: f64, allowed: f64) -> Self {
        let ok = (last - first).abs() <= allowed;
        Flatness {
            resource,
            first,
            last,
            allowed,
            ok,
        }
    }

    /// `last` relative to `first`, in percent.
    pub fn change_percent(&self) -> f64 {
        if self.first == 0.0 {
            if self.last == 0.0 { 0.0 } else { 100.0 }
        } else {
            (self.last - self.first) / self.first * 100.0
        }
    }
}

/// The verdict.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    pub failed_requests: u64,
    pub flatness: Vec<Flatness>,
    /// Why the rule could not be applied or failed, besides the above.
    pub problems: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.failed_requests == 0 && self.problems.is_empty() && self.flatness.iter().all(|f| f.ok)
    }
}

/// One number of a sample.
type Metric = fn(&Sample) -> Option<u64>;

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / f64::from(n))
}

/// Per incarnation (that reached the end of [`AGE_WINDOW`]), the mean of
/// `metric` over its samples in the window; incarnation 0 is left out.
fn per_incarnation(samples: &[Sample], metric: impl Fn(&Sample) -> Option<u64>) -> Vec<f64> {
    let last = samples.iter().map(|s| s.incarnation).max().unwrap_or(0);
    (1..=last)
        .filter_map(|i| {
            let mine: Vec<&Sample> = samples.iter().filter(|s| s.incarnation == i).collect();
            let lived = mine.iter().any(|s| s.age >= *AGE_WINDOW.end());
            if !lived {
                return None;
            }
            mean(
                mine.iter()
                    .filter(|s| AGE_WINDOW.contains(&s.age))
                    .filter_map(|s| metric(s).map(|v| v as f64)),
            )
        })
        .collect()
}

/// Applies the rule (see the module docs). `warm_up` and `window` are in
/// seconds: the map windows are `[warm_up, warm_up + window)` and the last
/// `window` seconds.
pub fn judge(
    samples: &[Sample],
    traffic: &[Traffic],
    warm_up: f64,
    window: f64,
    state: &StateMaps,
) -> Verdict {
    let mut verdict = Verdict {
        failed_requests: traffic.iter().map(|t| t.failed).sum(),
        ..Verdict::default()
    };
    for t in traffic.iter().filter(|t| t.ok == 0) {
        verdict.problems.push(format!(
            "{} {} to {}: no request went through",
            t.path, t.kind, t.target
        ));
    }
    let process: [(&str, Metric); 2] = [("rss_kib", |s| s.rss_kib), ("open_fds", |s| s.fds)];
    for (name, metric) in process {
        let means = per_incarnation(samples, metric);
        match (means.first(), means.last()) {
            (Some(&first), Some(&last)) if means.len() >= 2 => verdict.flatness.push(
                Flatness::new(name.to_owned(), first, last, first * FLAT_TOLERANCE),
            ),
            _ => verdict.problems.push(format!(
                "{name}: {} daemon(s) after the warm-up lived a whole window; at least 2 are \
                 needed (run longer)",
                means.len()
            )),
        }
    }
    let end = samples.iter().map(|s| s.t).fold(0.0, f64::max);
    let first_window = warm_up..warm_up + window;
    let last_window = (end - window).max(warm_up + window)..end + 1.0;
    if end < warm_up + 2.0 * window {
        verdict.problems.push(format!(
            "maps: {end:.0} s of samples; the warm-up and two {window:.0} s windows need {:.0} s",
            warm_up + 2.0 * window
        ));
        return verdict;
    }
    let names: std::collections::BTreeSet<&String> =
        samples.iter().flat_map(|s| s.maps.keys()).collect();
    for name in names {
        let in_window = |w: &std::ops::Range<f64>| {
            mean(
                samples
                    .iter()
                    .filter(|s| w.contains(&s.t))
                    .filter_map(|s| s.maps.get(name).map(|&v| v as f64)),
            )
        };
        if !follows_flows(name) {
            continue;
        }
        let Some(first_mean) = in_window(&first_window) else {
            continue;
        };
        let allowed = (first_mean * FLAT_TOLERANCE).max(MAP_SLACK_ENTRIES);
        if GC_MAPS.contains(&name.as_str()) {
            let level = |w: &std::ops::Range<f64>| gc_level(samples, name, w);
            if let (Some(first), Some(last)) = (level(&first_window), level(&last_window)) {
                let mut level =
                    Flatness::new(format!("map {name} (after GC)"), first, last, allowed);
                // Only growth is a leak: the level a pass leaves is the
                // live flows', which a kill -9's pause can lower.
                level.ok = last - first <= allowed;
                verdict.flatness.push(level);
            }
        } else if let Some(last) = in_window(&last_window) {
            verdict.flatness.push(Flatness::new(
                format!("map {name}"),
                first_mean,
                last,
                allowed,
            ));
        }
    }
    judge_state_maps(&mut verdict, state);
    verdict
}

/// The maps that follow the desired state: as many entries at the end as at
/// the start (see [`StateMaps`]), exactly.
fn judge_state_maps(verdict: &mut Verdict, state: &StateMaps) {
    if state.start.is_empty() {
        verdict
            .problems
            .push("maps: the state maps were not read at the start".to_owned());
        return;
    }
    let names: std::collections::BTreeSet<&String> =
        state.start.keys().chain(state.end.keys()).collect();
    for name in names {
        match (state.start.get(name), state.end.get(name)) {
            (Some(&start), Some(&end)) => verdict.flatness.push(Flatness::new(
                format!("map {name} (same desired state)"),
                start as f64,
                end as f64,
                0.0,
            )),
            (start, end) => verdict.problems.push(format!(
                "map {name}: read at the start: {}, at the end: {}",
                start.is_some(),
                end.is_some()
            )),
        }
    }
}

/// A GC'd map's level in window `w`: the mean, over the window's whole
/// [`GC_CHUNK`]-second chunks (a shorter rest at its end may hold no pass),
/// of each chunk's fewest entries.
fn gc_level(samples: &[Sample], name: &str, w: &std::ops::Range<f64>) -> Option<f64> {
    let chunks = (((w.end - w.start) / GC_CHUNK) as u64).max(1);
    let mut minima: BTreeMap<u64, u64> = BTreeMap::new();
    for s in samples.iter().filter(|s| w.contains(&s.t)) {
        let chunk = ((s.t - w.start) / GC_CHUNK) as u64;
        if chunk >= chunks {
            continue;
        }
        if let Some(&v) = s.maps.get(name) {
            minima
                .entry(chunk)
                .and_modify(|m| *m = (*m).min(v))
                .or_insert(v);
        }
    }
    mean(minima.values().map(|&v| v as f64))
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The report's JSON: the configuration, the activity, the verdict, the
/// traffic, the failures and every sample.
pub fn report_json(
    config: &Value,
    activity: &Activity,
    verdict: &Verdict,
    traffic: &[Traffic],
    failures: &[Failure],
    samples: &[Sample],
) -> Value {
    json!({
        "config": config,
        "activity": {
            "seconds": round(activity.seconds), "kills": activity.kills,
            "kill_times": activity.kill_times.iter().map(|&t| round(t)).collect::<Vec<_>>(),
            "watch_drops": activity.watch_drops, "endpoint_changes": activity.endpoint_changes,
            "service_changes": activity.service_changes,
            "datapath_events": activity.datapath_events,
        },
        "passed": verdict.passed(),
        "failed_requests": verdict.failed_requests,
        "problems": verdict.problems,
        "flatness": verdict.flatness.iter().map(|f| json!({
            "resource": f.resource, "first": round(f.first), "last": round(f.last),
            "change_percent": round(f.change_percent()), "allowed": round(f.allowed), "ok": f.ok,
        })).collect::<Vec<_>>(),
        "traffic": traffic.iter().map(|t| json!({
            "path": t.path, "kind": t.kind, "target": t.target, "ok": t.ok,
            "failed": t.failed, "backends": t.backends,
        })).collect::<Vec<_>>(),
        "failures": failures.iter().map(|f| json!({
            "t": round(f.t), "path": f.path, "kind": f.kind, "target": f.target,
            "message": f.message,
        })).collect::<Vec<_>>(),
        "samples": samples.iter().map(Sample::to_json).collect::<Vec<_>>(),
    })
}

/// The report in markdown.
pub fn report_markdown(
    activity: &Activity,
    verdict: &Verdict,
    traffic: &[Traffic],
    failures: &[Failure],
) -> String {
    let mut md = String::new();
    let result = if verdict.passed() { "PASS" } else { "FAIL" };
    let secs = activity.seconds.max(1.0);
    let _ = writeln!(md, "# Soak report: {result}\n");
    let _ = writeln!(
        md,
        "{:.0} s; {} `kill -9` restarts (every daemon's kill time: {}); {} watch drops; \
         {} endpoint changes ({:.1}/s); {} Service changes ({:.1}/s).\n",
        activity.seconds,
        activity.kills,
        activity
            .kill_times
            .iter()
            .map(|t| format!("{t:.0} s"))
            .collect::<Vec<_>>()
            .join(", "),
        activity.watch_drops,
        activity.endpoint_changes,
        activity.endpoint_changes as f64 / secs,
        activity.service_changes,
        activity.service_changes as f64 / secs,
    );
    let _ = writeln!(
        md,
        "Rule: no request may fail (the backends never stop serving; churn only changes \
         which are listed and ready, and each Service keeps a ready one). RSS and open \
         descriptors: per daemon, the mean {:.0}–{:.0} s after its start, the first daemon \
         after the warm-up against the last; map entries: the first window after the \
         warm-up against the last (maps the conntrack GC empties: the level each GC pass \
         leaves, the mean of the {:.0} s chunks' minima); each within {:.0} % (maps: of \
         the first window's mean, or {:.0} entry; GC'd maps: growth only). The maps that \
         follow the desired state alone (\"same desired state\"): the churn is undone at \
         the end, and each must hold exactly as many entries as at the start.\n",
        AGE_WINDOW.start(),
        AGE_WINDOW.end(),
        GC_CHUNK,
        FLAT_TOLERANCE * 100.0,
        MAP_SLACK_ENTRIES,
    );
    let total: u64 = traffic.iter().map(|t| t.ok + t.failed).sum();
    let _ = writeln!(
        md,
        "## Traffic: {} failed of {total} requests\n\n| path | kind | target | ok | failed | backends |\n|---|---|---|---|---|---|",
        verdict.failed_requests
    );
    for t in traffic {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            t.path,
            t.kind,
            t.target,
            t.ok,
            t.failed,
            t.backends.len()
        );
    }
    if !failures.is_empty() {
        let _ = writeln!(md, "\nFailures (first {}):\n", failures.len().min(50));
        for f in failures.iter().take(50) {
            let _ = writeln!(
                md,
                "- {:.1} s: {} {} {}: {}",
                f.t, f.path, f.kind, f.target, f.message
            );
        }
    }
    let _ = writeln!(
        md,
        "\n## Resources (first window after the warm-up → last window; same desired state: start → end)\n\n\
         | resource | first | last | change | allowed | ok |\n|---|---|---|---|---|---|"
    );
    for f in &verdict.flatness {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.1} | {:+.2} % | ±{:.1} | {} |",
            f.resource,
            f.first,
            f.last,
            f.change_percent(),
            f.allowed,
            if f.ok { "yes" } else { "**no**" }
        );
    }
    if !activity.datapath_events.is_empty() {
        let _ = writeln!(
            md,
            "\n## Datapath counters at the end (`proxy inspect stats`)\n\n| reason | count |\n|---|---|"
        );
        for (reason, count) in &activity.datapath_events {
            let _ = writeln!(md, "| {reason} | {count} |");
        }
    }
    if !verdict.problems.is_empty() {
        let _ = writeln!(md, "\n## Problems\n");
        for p in &verdict.problems {
            let _ = writeln!(md, "- {p}");
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four daemons of 30 s each, sampled every 2 s; `rss(incarnation, age)`.
    fn samples(rss: impl Fn(usize, f64) -> u64, ct: impl Fn(f64) -> u64) -> Vec<Sample> {
        let mut v = Vec::new();
        for step in 0..60 {
            let t = f64::from(step) * 2.0;
            let incarnation = (step / 15) as usize;
            let age = t - incarnation as f64 * 30.0;
            v.push(Sample {
                t,
                incarnation,
                age,
                pid: 100 + incarnation as u32,
                rss_kib: Some(rss(incarnation, age)),
                fds: Some(40),
                maps: BTreeMap::from([("CT_V4".to_owned(), ct(t)), ("SVC_V4".to_owned(), 3)]),
            });
        }
        v
    }

    fn find<'a>(v: &'a Verdict, resource: &str) -> &'a Flatness {
        v.flatness
            .iter()
            .find(|f| f.resource == resource)
            .unwrap_or_else(|| panic!("no {resource} in {v:#?}"))
    }

    /// The state maps as the soak reads them: the same at its end as at its start.
    fn same_state() -> StateMaps {
        let maps = BTreeMap::from([("SVC_V4".to_owned(), 3), ("BACKEND_V4".to_owned(), 2)]);
        StateMaps {
            start: maps.clone(),
            end: maps,
        }
    }

    fn clean_traffic() -> Vec<Traffic> {
        vec![Traffic {
            path: "clusterip".into(),
            kind: "tcp-new".into(),
            target: "10.96.0.10:80".into(),
            ok: 10,
            failed: 0,
            backends: vec!["a".into()],
        }]
    }

    #[test]
    fn flat_resources_and_no_failure_pass() {
        // RSS grows within each daemon's life but is the same at equal ages.
        let s = samples(|_, age| 10_000 + age as u64 * 10, |_| 200);
        let v = judge(&s, &clean_traffic(), 30.0, 30.0, &same_state());
        assert!(v.passed(), "{v:#?}");
        assert_eq!(
            v.flatness.len(),
            5,
            "rss, fds, a flow map in windows and two state maps: {v:#?}"
        );
    }

    #[test]
    fn rss_growing_across_daemons_fails() {
        let s = samples(|i, _| 10_000 + i as u64 * 1_000, |_| 200);
        let v = judge(&s, &clean_traffic(), 30.0, 30.0, &same_state());
        assert!(!v.passed());
        let rss = find(&v, "rss_kib");
        assert!(!rss.ok, "{rss:?}");
        assert_eq!((rss.first, rss.last), (11_000.0, 13_000.0));
    }

    #[test]
    fn a_map_that_keeps_filling_fails_and_small_maps_get_one_entry_of_slack() {
        let s = samples(|_, _| 10_000, |t| 100 + t as u64);
        let v = judge(&s, &clean_traffic(), 30.0, 30.0, &same_state());
        let ct = find(&v, "map CT_V4 (after GC)");
        assert!(!ct.ok, "{ct:?}");
        let s = samples(|_, _| 10_000, |t| 3 + u64::from(t >= 88.0));
        let v = judge(&s, &clean_traffic(), 30.0, 30.0, &same_state());
        let ct = find(&v, "map CT_V4 (after GC)");
        assert!(ct.ok && ct.allowed == MAP_SLACK_ENTRIES, "{ct:?}");
    }

    /// The service map follows the churn (10 % fewer slots in the last
    /// window): no leak, as long as the end holds what the start held.
    #[test]
    fn a_state_map_that_follows_the_churn_is_judged_by_its_start_and_end() {
        let mut s = samples(|_, _| 10_000, |_| 200);
        for x in &mut s {
            x.maps
                .insert("SVC_V4".to_owned(), if x.t >= 88.0 { 90 } else { 100 });
        }
        let v = judge(&s, &clean_traffic(), 30.0, 30.0, &same_state());
        assert!(v.passed(), "{v:#?}");
        let svc = find(&v, "map SVC_V4 (same desired state)");
        assert_eq!((svc.first, svc.last, svc.allowed), (3.0, 3.0, 0.0));
        assert!(v.flatness.iter().all(|f| f.resource != "map SVC_V4"));
    }

    #[test]
    fn a_state_map_with_one_entry_more_at_the_end_fails() {
        let s = samples(|_, _| 10_000, |_| 200);
        let mut state = same_state();
        state.end.insert("BACKEND_V4".to_owned(), 3);
        let v = judge(&s, &clean_traffic(), 30.0, 30.0, &state);
        assert!(!v.passed());
        assert!(!find(&v, "map BACKEND_V4 (same desired state)").ok);
        let mut state = same_state();
        state.end.remove("SVC_V4");
        assert!(!judge(&s, &clean_traffic(), 30.0, 30.0, &state).passed());
    }

    #[test]
    fn state_maps_not_read_at_the_start_fail() {
        let s = samples(|_, _| 10_000, |_| 200);
        let v = judge(&s, &clean_traffic(), 30.0, 30.0, &StateMaps::default());
        assert!(!v.passed());
        assert!(!v.problems.is_empty(), "{v:#?}");
    }

    #[test]
    fn only_the_flow_maps_are_left_out_of_the_state_maps() {
        let all = BTreeMap::from([
            ("CT_V4".to_owned(), 5),
            ("SOCK_RNAT_V6".to_owned(), 5),
            ("AFFINITY".to_owned(), 5),
            ("MAGLEV".to_owned(), 5),
            ("SVC_V6".to_owned(), 5),
        ]);
        let names: Vec<_> = StateMaps::of(&all).into_keys().collect();
        assert_eq!(names, ["MAGLEV", "SVC_V6"]);
    }

    /// A GC'd map's sawtooth: filled by 60 entries a second over a level of
    /// 1,000, emptied down to the level every 10 s; in the last window the
    /// teeth are half again as tall (passes delayed by restarts).
    fn sawtooth(t: f64) -> u64 {
        let tooth = 60 * (t as u64 % 10);
        1_000 + if t >= 88.0 { tooth * 3 / 2 } else { tooth }
    }

    fn window_mean(s: &[Sample], w: std::ops::Range<f64>) -> f64 {
        mean(
            s.iter()
                .filter(|x| w.contains(&x.t))
                .map(|x| x.maps["CT_V4"] as f64),
        )
        .expect("samples in the window")
    }

    #[test]
    fn a_gc_sawtooth_passes() {
        let s = samples(|_, _| 10_000, sawtooth);
        let (first, last) = (window_mean(&s, 30.0..60.0), window_mean(&s, 88.0..119.0));
        assert!(
            (last - first) / first > FLAT_TOLERANCE,
            "the window means move by more than the tolerance: {first} → {last}"
        );
        let v = judge(&s, &clean_traffic(), 30.0, 30.0, &same_state());
        assert!(v.passed(), "{v:#?}");
        let ct = find(&v, "map CT_V4 (after GC)");
        assert_eq!((ct.first, ct.last), (1_000.0, 1_000.0));
    }

    #[test]
    fn a_slow_leak_under_a_gc_sawtooth_fails() {
        // Entries no pass removes: 10 % of the map's mean over the run after
        // the warm-up.
        let leak = |t: f64| (0.1 * 1_270.0 * (t - 30.0).max(0.0) / 88.0) as u64;
        let s = samples(|_, _| 10_000, |t| sawtooth(t) + leak(t));
        let v = judge(&s, &clean_traffic(), 30.0, 30.0, &same_state());
        assert!(!v.passed());
        let ct = find(&v, "map CT_V4 (after GC)");
        assert!(!ct.ok, "{ct:?}");
    }

    #[test]
    fn a_lower_level_after_gc_passes() {
        let s = samples(
            |_, _| 10_000,
            |t| {
                if t >= 88.0 {
                    sawtooth(t) - 200
                } else {
                    sawtooth(t)
                }
            },
        );
        let v = judge(&s, &clean_traffic(), 30.0, 30.0, &same_state());
        assert!(v.passed(), "{v:#?}");
    }

    #[test]
    fn any_failed_request_fails() {
        let s = samples(|_, _| 10_000, |_| 200);
        let mut traffic = clean_traffic();
        traffic[0].failed = 1;
        let v = judge(&s, &traffic, 30.0, 30.0, &same_state());
        assert!(!v.passed());
        assert_eq!(v.failed_requests, 1);
        assert!(report_markdown(&Activity::default(), &v, &traffic, &[]).contains("FAIL"));
    }

    #[test]
    fn too_short_a_run_cannot_pass() {
        let s: Vec<Sample> = samples(|_, _| 10_000, |_| 200)
            .into_iter()
            .filter(|s| s.t < 70.0)
            .collect();
        let v = judge(&s, &clean_traffic(), 30.0, 30.0, &same_state());
        assert!(!v.passed());
        assert!(!v.problems.is_empty(), "{v:#?}");
    }

    #[test]
    fn a_path_with_no_successful_request_fails() {
        let s = samples(|_, _| 10_000, |_| 200);
        let mut traffic = clean_traffic();
        traffic[0].ok = 0;
        assert!(!judge(&s, &traffic, 30.0, 30.0, &same_state()).passed());
    }
}
