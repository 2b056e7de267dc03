//! reliability.md item 8: 1,000 endpoint changes per second for a minute,
//! through the Kubernetes source (the fake API server's watch), while a client
//! keeps sending requests through the Service.
//!
//! - Every request succeeds: the churn only changes which of `web`'s
//!   backends are listed (never fewer than one), and every backend keeps
//!   listening, so any failure is the proxy's.
//! - Memory stays bounded: the daemon's RSS at the end is within a margin of
//!   its RSS after the first 10 s of churn.
//! - Updates are coalesced: the daemon syncs far fewer times than it gets
//!   changes (`--min-sync-interval-ms`, 20 ms by default).
//! - The last change reaches the dataplane: the final endpoint set is served.
//!
//! How fast each change reached the maps is a benchmark's business
//! (`cargo xtask bench-control-plane`), so it is printed, not asserted.

mod common;

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use common::{kube, *};
use proxy_tests::{fake_apiserver::json_from_yaml, manifest::AddressType};
use serde_json::Value;

const METRICS_ADDR: &str = "127.0.0.1:19249";
/// Changes per second, and for how long (`CHURN_SECONDS` overrides, e.g. to
/// run it for an hour by hand).
const RATE: u64 = 1_000;
const DEFAULT_SECONDS: u64 = 60;
/// RSS is compared with its value this far into the churn (allocator pools,
/// the watch's buffers and the maps' mirrors are warm by then).
const WARM_UP: Duration = Duration::from_secs(10);
/// How much the RSS may grow after the warm-up: a quarter, at least 16 MiB.
const RSS_SLACK_KIB: u64 = 16 * 1024;

/// The daemon's resident set, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading the proxy's /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// One series' value from the daemon's /metrics.
fn metric(series: &str) -> f64 {
    let (_, text) = http_get(METRICS_ADDR, "/metrics").expect("scraping /metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
}

/// `web`'s IPv4 slice with each non-empty subset of the backends, as JSON
/// ready to apply (built once: the churn loop only clones).
fn subsets() -> Vec<Value> {
    (1..(1u32 << BACKENDS_V4.len()))
        .map(|mask| {
            let addrs: Vec<&str> = BACKENDS_V4
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, a)| *a)
                .collect();
            let name = slice_name(WEB, AddressType::IPv4);
            json_from_yaml(&slice(WEB, &name, AddressType::IPv4, &addrs))
        })
        .collect()
}

#[test]
fn a_thousand_endpoint_changes_per_second_for_a_minute() {
    let seconds = std::env::var("CHURN_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SECONDS);
    let changes = RATE * seconds;

    let mut f = Fixture::new(Mode::Ebpf);
    let (api, kubeconfig) = kube::start_api(&f, &kube::this_node("zone-a"));
    api.apply_yaml(&service(WEB, &[WEB_VIP4, WEB_VIP6], TCP_PORT, UDP_PORT));
    for (family, addrs) in [
        (AddressType::IPv4, &BACKENDS_V4),
        (AddressType::IPv6, &BACKENDS_V6),
    ] {
        api.apply_yaml(&slice(WEB, &slice_name(WEB, family), family, addrs));
    }
    kube::start_kube_proxy(
        &mut f,
        &kubeconfig,
        &["--metrics-bind-address", METRICS_ADDR],
    );
    f.wait_ready();
    let pid = f.proxy().pid();

    // The client: TCP and UDP requests through the IPv4 VIP, back to back.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        thread::spawn(move || {
            let mut errors = Vec::new();
            let valid: BTreeSet<String> = names(&BACKENDS_V4, TCP_TARGET)
                .into_iter()
                .chain(names(&BACKENDS_V4, UDP_TARGET))
                .collect();
            for i in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (kind, vip) = if i % 2 == 0 {
                    (Kind::Tcp, sock(WEB_VIP4, TCP_PORT))
                } else {
                    (Kind::UdpUnconnected, sock(WEB_VIP4, UDP_PORT))
                };
                match kind.request(vip, REQUEST) {
                    Ok(reply) if valid.contains(&reply.backend) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        if errors.len() < 10 {
                            errors.push(format!("{kind:?} to {vip}: {other:?}"));
                        }
                    }
                }
            }
            errors
        })
    };

    let sets = subsets();
    let syncs = "kubeproxy_sync_proxy_rules_duration_seconds_count";
    let (syncs_before, changes_before) = (
        metric(syncs),
        metric("kubeproxy_sync_proxy_rules_endpoint_changes_total"),
    );
    let start = Instant::now();
    let mut warm_rss = None;
    let mut peak_rss = 0;
    for i in 0..changes {
        // Paced on an absolute schedule: a slow step is caught up, not lost.
        let due = start + Duration::from_micros(i * 1_000_000 / RATE);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        api.apply(sets[(i as usize) % sets.len()].clone());
        if i % RATE == 0 {
            let rss = rss_kib(pid);
            peak_rss = peak_rss.max(rss);
            if warm_rss.is_none() && start.elapsed() >= WARM_UP {
                warm_rss = Some(rss);
            }
            f.assert_proxy_running();
        }
    }
    let churned = start.elapsed();
    // The last word: only the third backend.
    let last = [BACKENDS_V4[2]];
    let name = slice_name(WEB, AddressType::IPv4);
    api.apply_yaml(&slice(WEB, &name, AddressType::IPv4, &last));
    let want = names(&last, TCP_TARGET);
    f.wait_for(PROPAGATION, "the final endpoint set to be served", || {
        try_backends(Kind::Tcp, sock(WEB_VIP4, TCP_PORT), 6)
            .is_ok_and(|seen| seen.iter().all(|b| want.contains(b)))
    });
    stop.store(true, Ordering::Relaxed);
    let errors = client.join().expect("the client thread");
    let end_rss = rss_kib(pid);

    let synced = metric(syncs) - syncs_before;
    let counted = metric("kubeproxy_sync_proxy_rules_endpoint_changes_total") - changes_before;
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let warm = warm_rss.unwrap_or(peak_rss);
    eprintln!(
        "{changes} changes in {churned:.1?} ({:.0}/s); the daemon counted {counted} and synced {synced} times; \
         requests: {ok} ok, {failed} failed; RSS after warm-up {warm} KiB, peak {peak_rss} KiB, at the end {end_rss} KiB; \
         sync time: {:.2} ms on average",
        changes as f64 / churned.as_secs_f64(),
        1000.0 * metric("kubeproxy_sync_proxy_rules_duration_seconds_sum") / metric(syncs).max(1.0),
    );
    f.assert_proxy_running();
    assert_eq!(failed, 0, "requests failed during the churn: {errors:#?}");
    assert!(ok > 0, "the client sent nothing");
    assert!(
        counted >= changes as f64 / 2.0,
        "the daemon saw only {counted} of {changes} changes: the churn did not reach it"
    );
    assert!(
        synced * 10.0 <= counted,
        "{counted} endpoint changes took {synced} syncs: not coalesced"
    );
    let slack = RSS_SLACK_KIB.max(warm / 4);
    assert!(
        end_rss <= warm + slack && peak_rss <= warm + slack,
        "RSS grew from {warm} KiB after the warm-up to {end_rss} KiB (peak {peak_rss} KiB): unbounded"
    );
}
