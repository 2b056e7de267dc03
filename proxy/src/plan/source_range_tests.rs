//! Plan tests of `loadBalancerSourceRanges` (`SRC_RANGE_*`): written before
//! the frontend is published, ranges before the entry that denies everyone
//! else, and removed after.
#![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

use std::net::IpAddr;

use super::*;
use crate::{
    dataplane::{Writer, fake::FakeMaps},
    model::{FrontendKind, ObjectRef, Protocol, SourceRange, TrafficPolicy},
};

const LB: &str = "203.0.113.9";
const LB6: &str = "2001:db8::9";

fn range(s: &str) -> SourceRange {
    SourceRange::parse(s).unwrap()
}

fn lb_frontend(addr: &str) -> Frontend {
    Frontend {
        addr: addr.parse::<IpAddr>().unwrap(),
        port: 80,
        protocol: Protocol::Tcp,
    }
}

/// One LoadBalancer frontend (per address) with one backend and `ranges`
/// (`None`: no `loadBalancerSourceRanges`).
fn desired(addrs: &[&str], ranges: Option<&[&str]>) -> DesiredState {
    let mut d = DesiredState::default();
    for addr in addrs {
        let backend = Backend {
            addr: if addr.contains(':') {
                "fd00::1".parse().unwrap()
            } else {
                "10.1.0.1".parse().unwrap()
            },
            port: 8080,
            protocol: Protocol::Tcp,
        };
        d.frontends.insert(
            lb_frontend(addr),
            FrontendSpec {
                service: ObjectRef::new("shop", "web"),
                port_name: String::new(),
                kind: FrontendKind::LoadBalancer,
                backends: vec![backend],
                external_backends: None,
                affinity_timeout: None,
                traffic_policy: TrafficPolicy::Cluster,
                // Sorted, as the model hands them over.
                source_ranges: ranges.map(|r| {
                    let mut r: Vec<SourceRange> = r.iter().map(|s| range(s)).collect();
                    r.sort_unstable();
                    r
                }),
            },
        );
    }
    d
}

fn synced(d: &DesiredState) -> Writer<FakeMaps> {
    let mut w = Writer::new(FakeMaps::default()).unwrap();
    assert!(w.sync(d).is_complete());
    std::mem::take(&mut w.maps_mut_for_tests().log);
    w
}

/// The operations of a sync on source ranges and slot 0, in order.
fn sync_log(w: &mut Writer<FakeMaps>, d: &DesiredState) -> Vec<String> {
    assert!(w.sync(d).is_complete());
    std::mem::take(&mut w.maps_mut_for_tests().log)
        .iter()
        .filter_map(|op| match op {
            Op::PutSourceRange { range, allow, .. } => Some(format!("put {range} {allow}")),
            Op::DeleteSourceRange { range, .. } => Some(format!("delete {range}")),
            Op::PutService { slot: 0, .. } => Some("publish".to_owned()),
            Op::DeleteService { slot: 0, .. } => Some("unpublish".to_owned()),
            _ => None,
        })
        .collect()
}

/// The `SRC_RANGE_*` contents, as `range=allow` strings.
fn contents(w: &Writer<FakeMaps>) -> Vec<String> {
    w.maps()
        .contents
        .source_ranges
        .iter()
        .map(|((_, r), allow)| format!("{r}={allow}"))
        .collect()
}

#[test]
fn a_new_frontend_gets_its_ranges_then_the_deny_entry_then_slot_0() {
    let mut w = synced(&DesiredState::default());
    let d = desired(&[LB], Some(&["198.51.100.0/24", "192.0.2.1/32"]));
    assert_eq!(
        sync_log(&mut w, &d),
        [
            "put 192.0.2.1/32 true",
            "put 198.51.100.0/24 true",
            "put 0.0.0.0/0 false",
            "publish"
        ]
    );
    let id = w.applied().frontend(lb_frontend(LB)).unwrap().rev_nat_id;
    assert!(
        w.applied().source_ranges.keys().all(|(rid, _)| *rid == id),
        "entries are keyed by the frontend's rev-NAT id"
    );
}

#[test]
fn an_ipv6_frontend_gets_an_ipv6_deny_entry() {
    let mut w = synced(&DesiredState::default());
    let d = desired(&[LB6], Some(&["2001:db8:1::/48"]));
    assert_eq!(
        sync_log(&mut w, &d),
        ["put 2001:db8:1::/48 true", "put ::/0 false", "publish"]
    );
}

#[test]
fn a_slash_zero_range_allows_everyone_through_the_same_entry() {
    let mut w = synced(&DesiredState::default());
    let d = desired(&[LB], Some(&["0.0.0.0/0", "10.0.0.0/8"]));
    assert_eq!(
        sync_log(&mut w, &d),
        ["put 10.0.0.0/8 true", "put 0.0.0.0/0 true", "publish"]
    );
}

/// Ranges of the other family only: the frontend denies every source.
#[test]
fn no_range_of_the_frontends_family_denies_everyone() {
    let mut w = synced(&DesiredState::default());
    let d = desired(&[LB], Some(&[]));
    assert_eq!(sync_log(&mut w, &d), ["put 0.0.0.0/0 false", "publish"]);
}

#[test]
fn without_ranges_nothing_is_written() {
    let mut w = synced(&DesiredState::default());
    assert_eq!(sync_log(&mut w, &desired(&[LB], None)), ["publish"]);
    assert!(contents(&w).is_empty());
}

/// A live change adds the new ranges before removing the old ones, so a
/// source on both lists is never refused; slot 0 is not touched.
#[test]
fn changing_the_ranges_adds_before_it_removes() {
    let mut w = synced(&desired(&[LB], Some(&["198.51.100.0/24"])));
    assert_eq!(
        sync_log(&mut w, &desired(&[LB], Some(&["192.0.2.0/24"]))),
        ["put 192.0.2.0/24 true", "delete 198.51.100.0/24"]
    );
    assert_eq!(contents(&w), ["0.0.0.0/0=false", "192.0.2.0/24=true"]);
}

/// Emptying the list removes the deny entry first: no moment where the
/// frontend denies a source that was on the list.
#[test]
fn emptying_the_list_removes_the_deny_entry_first() {
    let mut w = synced(&desired(&[LB], Some(&["198.51.100.0/24"])));
    assert_eq!(
        sync_log(&mut w, &desired(&[LB], None)),
        // Slot 0 drops `SOURCE_RANGES` first.
        ["publish", "delete 0.0.0.0/0", "delete 198.51.100.0/24"]
    );
    assert!(contents(&w).is_empty());
}

#[test]
fn a_list_added_to_a_live_frontend_writes_the_deny_entry_last() {
    let mut w = synced(&desired(&[LB], None));
    assert_eq!(
        sync_log(&mut w, &desired(&[LB], Some(&["198.51.100.0/24"]))),
        // Slot 0 gets `SOURCE_RANGES` last.
        ["put 198.51.100.0/24 true", "put 0.0.0.0/0 false", "publish"]
    );
}

#[test]
fn a_removed_frontend_loses_its_ranges_after_it_is_unpublished() {
    let mut w = synced(&desired(&[LB], Some(&["198.51.100.0/24"])));
    assert_eq!(
        sync_log(&mut w, &DesiredState::default()),
        ["unpublish", "delete 0.0.0.0/0", "delete 198.51.100.0/24"]
    );
    assert!(contents(&w).is_empty());
}

/// Entries of a rev-NAT id no frontend owns (left behind by a failed
/// write, or written by hand) are removed by a full plan, and entries
/// changed behind our back are repaired.
#[test]
fn the_reconcile_repairs_source_ranges() {
    let d = desired(&[LB], Some(&["198.51.100.0/24"]));
    let mut w = synced(&d);
    let id = w.applied().frontend(lb_frontend(LB)).unwrap().rev_nat_id;
    let contents = &mut w.maps_mut_for_tests().contents;
    contents
        .source_ranges
        .insert((id + 100, range("10.0.0.0/8")), true);
    contents
        .source_ranges
        .insert((id, range("0.0.0.0/0")), true);
    let (repaired, report) = w.reconcile(&d).unwrap();
    assert!(report.is_complete());
    assert_eq!(repaired, 2);
    assert_eq!(
        self::contents(&w),
        ["0.0.0.0/0=false", "198.51.100.0/24=true"]
    );
}

/// A write that fails at any point converges on the next sync, and the
/// frontend is never published before its deny entry exists.
#[test]
fn any_failed_write_converges_and_never_publishes_an_open_frontend() {
    let start = desired(&[LB], None);
    let end = desired(&[LB, LB6], Some(&["198.51.100.0/24", "2001:db8:1::/48"]));
    let total = plan(synced(&start).applied(), &end).ops().count();
    for n in 0..total {
        let mut w = Writer::new(FakeMaps::default()).unwrap();
        assert!(w.sync(&start).is_complete());
        w.maps_mut_for_tests().fail_at = Some(w.maps().log.len() + n);
        let report = w.sync(&end);
        assert!(!report.failures.is_empty(), "failure {n} was not reported");
        let maps = w.maps();
        if let Some(v) = maps.contents.frontend(lb_frontend(LB6)) {
            assert_eq!(
                maps.contents
                    .source_ranges
                    .get(&(v.rev_nat_id, range("::/0"))),
                Some(&false),
                "after failure {n}: {LB6} published without its deny entry"
            );
        }
        assert!(w.sync(&end).is_complete(), "retry after failure {n}");
        assert_eq!(
            w.maps().contents.source_ranges.len(),
            4,
            "after failure {n}: {:?}",
            w.maps().contents.source_ranges
        );
    }
}

/// The `svc_flags` of the frontend's internal-scope slot 0.
fn slot0_flags(w: &Writer<FakeMaps>, f: Frontend) -> u16 {
    w.applied().slot0(f, Scope::Internal).unwrap().flags
}

#[test]
fn the_source_ranges_flag_follows_the_list() {
    let f = lb_frontend(LB);
    let mut w = synced(&desired(&[LB], None));
    assert_eq!(
        slot0_flags(&w, f) & proxy_common::svc_flags::SOURCE_RANGES,
        0
    );
    let ranged = desired(&[LB], Some(&["198.51.100.0/24"]));
    assert_eq!(
        sync_log(&mut w, &ranged),
        ["put 198.51.100.0/24 true", "put 0.0.0.0/0 false", "publish"],
        "the ranges are in place before slot 0 says the frontend has them"
    );
    assert_ne!(
        slot0_flags(&w, f) & proxy_common::svc_flags::SOURCE_RANGES,
        0
    );
    // Ranges only of the other family: the frontend still has the flag
    // (its `/0` entry denies everyone).
    let other = desired(&[LB], Some(&["2001:db8::/32"]));
    sync_log(&mut w, &other);
    assert_ne!(
        slot0_flags(&w, f) & proxy_common::svc_flags::SOURCE_RANGES,
        0
    );
    assert_eq!(
        sync_log(&mut w, &desired(&[LB], None)),
        ["publish", "delete 0.0.0.0/0"],
        "slot 0 drops the flag before the entries go"
    );
    assert_eq!(
        slot0_flags(&w, f) & proxy_common::svc_flags::SOURCE_RANGES,
        0
    );
}
