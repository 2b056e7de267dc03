//! Plan and writer tests through the fake maps, which check the readers'
//! invariants after every single operation.
#![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use super::*;
use crate::{
    dataplane::{Writer, fake::FakeMaps, writer},
    model::{FrontendKind, FrontendSpec, ObjectRef, Protocol, TrafficPolicy},
};
use proxy_common::svc_flags;

pub(super) fn fe(s: &str) -> Frontend {
    let (addr, port) = s.rsplit_once(':').unwrap();
    Frontend {
        addr: addr.trim_matches(['[', ']']).parse::<IpAddr>().unwrap(),
        port: port.parse().unwrap(),
        protocol: Protocol::Tcp,
    }
}

pub(super) fn be(s: &str) -> Backend {
    let f = fe(s);
    Backend {
        addr: f.addr,
        port: f.port,
        protocol: f.protocol,
    }
}

pub(super) fn desired(services: &[(&str, &[&str])]) -> DesiredState {
    let mut d = DesiredState::default();
    for (frontend, backends) in services {
        let mut backends: Vec<Backend> = backends.iter().map(|b| be(b)).collect();
        backends.sort();
        d.frontends.insert(
            fe(frontend),
            FrontendSpec {
                kind: FrontendKind::ClusterIp,
                external_backends: None,
                service: ObjectRef::new("default", "svc"),
                port_name: String::new(),
                backends,
                affinity_timeout: None,
                traffic_policy: TrafficPolicy::Cluster,
                source_ranges: None,
            },
        );
    }
    d
}

/// Backends reachable through a frontend, as a reader would see them.
pub(super) fn reachable(maps: &FakeMaps, frontend: &str) -> Vec<Backend> {
    let mut out: Vec<Backend> = maps
        .contents
        .reachable_slots(fe(frontend), Scope::Internal)
        .iter()
        .map(|id| maps.contents.backends[id])
        .collect();
    out.sort();
    out
}

/// What readers can observe, id-independent: each frontend's reachable
/// backends per scope. Also asserts the maps hold nothing beyond that (no
/// orphans).
fn logical(a: &Applied) -> BTreeMap<(Frontend, Scope), Vec<Backend>> {
    let mut out = BTreeMap::new();
    let mut referenced = BTreeSet::new();
    let mut entries = 0;
    let mut frontends = 0;
    for frontend in a.frontends() {
        frontends += 1;
        for scope in Scope::ALL {
            if a.slot0(frontend, scope).is_none() {
                continue;
            }
            let ids = a.reachable_slots(frontend, scope);
            entries += ids.len() + 1;
            referenced.extend(ids.iter().copied());
            let mut backends: Vec<Backend> = ids.iter().map(|id| a.backends[id]).collect();
            backends.sort();
            out.insert((frontend, scope), backends);
        }
    }
    assert_eq!(a.services.len(), entries, "orphan service slots in {a:?}");
    assert_eq!(
        a.backends.len(),
        referenced.len(),
        "orphan backends in {a:?}"
    );
    assert_eq!(
        a.rev_nat.len(),
        frontends,
        "orphan rev-NAT entries in {a:?}"
    );
    assert_eq!(a.svc_names.len(), frontends, "orphan names in {a:?}");
    out
}

pub(super) fn kinds(ops: &[Op]) -> Vec<String> {
    ops.iter()
        .map(|op| match op {
            Op::PutBackend { .. } => "put-backend".to_owned(),
            Op::DeleteBackend { .. } => "delete-backend".to_owned(),
            Op::PutRevNat { .. } => "put-revnat".to_owned(),
            Op::DeleteRevNat { .. } => "delete-revnat".to_owned(),
            Op::PutService { slot, value, .. } if *slot == 0 => {
                format!("put-frontend(count={})", value.count)
            }
            Op::PutService { slot, .. } => format!("put-slot({slot})"),
            Op::DeleteService { slot, .. } if *slot == 0 => "delete-frontend".to_owned(),
            Op::DeleteService { slot, .. } => format!("delete-slot({slot})"),
            Op::PutServiceName { .. } => "put-name".to_owned(),
            Op::DeleteServiceName { .. } => "delete-name".to_owned(),
            Op::PutSourceRange { range, allow, .. } => format!("put-range({range},{allow})"),
            Op::DeleteSourceRange { range, .. } => format!("delete-range({range})"),
            Op::PutMaglev { scope, .. } => format!("put-maglev({})", scope.as_str()),
            Op::DeleteMaglev { scope, .. } => format!("delete-maglev({})", scope.as_str()),
        })
        .collect()
}

pub(super) fn synced(d: &DesiredState) -> Writer<FakeMaps> {
    let mut w = Writer::new(FakeMaps::default()).unwrap();
    assert!(w.sync(d).is_complete());
    w
}

pub(super) fn take_log(w: &mut Writer<FakeMaps>) -> Vec<Op> {
    std::mem::take(&mut w.maps_mut_for_tests().log)
}

#[test]
fn new_service_writes_backends_then_revnat_then_slots_then_frontend() {
    let mut w = synced(&DesiredState::default());
    let d = desired(&[("10.96.0.10:80", &["10.1.0.1:8080", "10.1.0.2:8080"])]);
    assert!(w.sync(&d).is_complete());
    assert_eq!(
        kinds(&take_log(&mut w)),
        [
            "put-backend",
            "put-backend",
            "put-revnat",
            "put-name",
            "put-slot(1)",
            "put-slot(2)",
            "put-frontend(count=2)"
        ]
    );
    assert_eq!(
        reachable(w.maps(), "10.96.0.10:80"),
        [be("10.1.0.1:8080"), be("10.1.0.2:8080")]
    );
}

#[test]
fn a_second_plan_is_empty() {
    let d = desired(&[
        ("10.96.0.10:80", &["10.1.0.1:8080"]),
        ("[fd00::10]:80", &["[fd00::1]:8080"]),
    ]);
    let w = synced(&d);
    assert!(plan(w.applied(), &d).is_empty());
}

#[test]
fn growing_writes_the_new_slot_before_the_count() {
    let mut w = synced(&desired(&[("10.96.0.10:80", &["10.1.0.1:8080"])]));
    take_log(&mut w);
    w.sync(&desired(&[(
        "10.96.0.10:80",
        &["10.1.0.1:8080", "10.1.0.2:8080"],
    )]));
    assert_eq!(
        kinds(&take_log(&mut w)),
        ["put-backend", "put-slot(2)", "put-frontend(count=2)"]
    );
}

#[test]
fn shrinking_lowers_the_count_first_and_deletes_the_backend_last() {
    let three = ["10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.3:8080"];
    let mut w = synced(&desired(&[("10.96.0.10:80", &three)]));
    take_log(&mut w);
    // Drop the first backend: the last one moves into its slot.
    w.sync(&desired(&[("10.96.0.10:80", &three[1..])]));
    assert_eq!(
        kinds(&take_log(&mut w)),
        [
            "put-frontend(count=2)",
            "put-slot(1)",
            "delete-slot(3)",
            "delete-backend"
        ]
    );
    assert_eq!(
        reachable(w.maps(), "10.96.0.10:80"),
        [be(three[1]), be(three[2])]
    );
}

#[test]
fn a_backend_that_stays_keeps_its_slot() {
    let mut w = synced(&desired(&[(
        "10.96.0.10:80",
        &["10.1.0.1:8080", "10.1.0.2:8080"],
    )]));
    take_log(&mut w);
    w.sync(&desired(&[(
        "10.96.0.10:80",
        &["10.1.0.1:8080", "10.1.0.3:8080"],
    )]));
    // Only slot 2 changes; the count stays, so slot 0 is not rewritten.
    assert_eq!(
        kinds(&take_log(&mut w)),
        ["put-backend", "put-slot(2)", "delete-backend"]
    );
}

#[test]
fn removing_a_service_unpublishes_it_first() {
    let mut w = synced(&desired(&[(
        "10.96.0.10:80",
        &["10.1.0.1:8080", "10.1.0.2:8080"],
    )]));
    take_log(&mut w);
    w.sync(&DesiredState::default());
    assert_eq!(
        kinds(&take_log(&mut w)),
        [
            "delete-frontend",
            "delete-slot(1)",
            "delete-slot(2)",
            "delete-revnat",
            "delete-name",
            "delete-backend",
            "delete-backend"
        ]
    );
    assert_eq!(w.maps().contents, Applied::default());
}

#[test]
fn backends_are_shared_across_frontends_and_outlive_one_of_them() {
    let shared = "10.1.0.1:8080";
    let mut w = synced(&desired(&[
        ("10.96.0.10:80", &[shared]),
        ("10.96.0.11:80", &[shared]),
    ]));
    assert_eq!(w.applied().backends.len(), 1);
    w.sync(&desired(&[("10.96.0.11:80", &[shared])]));
    assert_eq!(w.applied().backends.len(), 1);
    assert_eq!(reachable(w.maps(), "10.96.0.11:80"), [be(shared)]);
}

#[test]
fn no_endpoints_publishes_a_frontend_with_count_zero() {
    let mut w = synced(&DesiredState::default());
    w.sync(&desired(&[("10.96.0.10:80", &[])]));
    assert_eq!(
        kinds(&take_log(&mut w)),
        ["put-revnat", "put-name", "put-frontend(count=0)"]
    );
    assert_eq!(
        w.applied().frontend(fe("10.96.0.10:80")).map(|v| v.count),
        Some(0)
    );
}

#[test]
fn ids_are_stable_across_unrelated_changes() {
    let mut w = synced(&desired(&[("10.96.0.10:80", &["10.1.0.1:8080"])]));
    let before = w.applied().frontend(fe("10.96.0.10:80")).copied();
    w.sync(&desired(&[
        ("10.96.0.9:80", &["10.1.0.9:8080"]),
        ("10.96.0.10:80", &["10.1.0.1:8080"]),
    ]));
    assert_eq!(w.applied().frontend(fe("10.96.0.10:80")).copied(), before);
}

/// Every possible single write failure, at every position: readers never see a
/// torn service (the fake checks after each op), and the next sync converges
/// to exactly what a clean run writes.
#[test]
fn any_failed_write_converges_on_the_next_sync() {
    let start = desired(&[
        (
            "10.96.0.10:80",
            &["10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.3:8080"],
        ),
        ("10.96.0.11:53", &["10.1.0.4:53"]),
        ("[fd00::10]:80", &["[fd00::1]:8080"]),
    ]);
    let end = desired(&[
        ("10.96.0.10:80", &["10.1.0.3:8080", "10.1.0.5:8080"]),
        ("10.96.0.12:80", &["10.1.0.1:8080"]),
        ("[fd00::10]:80", &[]),
    ]);
    let clean = synced(&start);
    let total = plan(clean.applied(), &end).ops().count();
    let mut expected = synced(&start);
    expected.sync(&end);

    for n in 0..total {
        let mut w = synced(&start);
        w.maps_mut_for_tests().fail_at = Some(w.maps().log.len() + n);
        let report = w.sync(&end);
        assert!(!report.failures.is_empty(), "failure {n} was not reported");
        assert_eq!(
            &w.maps().contents,
            w.applied(),
            "mirror diverged after failure {n}"
        );
        let report = w.sync(&end);
        assert!(
            report.is_complete(),
            "retry after failure {n} did not complete: {report:?}"
        );
        assert_eq!(
            logical(&w.maps().contents),
            logical(&expected.maps().contents),
            "did not converge after failure {n}"
        );
    }
}

#[test]
fn a_frontend_that_keeps_failing_before_its_slot_0_keeps_one_rev_nat_entry() {
    // A frontend that does not fit (its slots or slot 0 fail, every sync)
    // must not take a new rev-NAT id on every attempt.
    let d = desired(&[("10.96.0.10:80", &["10.1.0.1:8080", "10.1.0.2:8080"])]);
    let mut w = synced(&DesiredState::default());
    for attempt in 0..5 {
        // Ops of this sync: backends (first time only), rev-NAT (first time
        // only), then the slots: fail at the first slot. (The fake counts
        // calls: the successes logged, plus one failure per earlier attempt.)
        let before = w.maps().log.len() + attempt;
        let first_slot = plan(w.applied(), &d)
            .ops()
            .position(|op| matches!(op, Op::PutService { .. }))
            .unwrap();
        w.maps_mut_for_tests().fail_at = Some(before + first_slot);
        // Incremental syncs: a full plan would also delete stray entries.
        let touched: BTreeSet<Frontend> = d.frontends.keys().copied().collect();
        assert!(
            !w.sync_frontends(&d, &touched).is_complete(),
            "attempt {attempt} succeeded"
        );
        assert_eq!(
            w.applied().rev_nat.len(),
            1,
            "attempt {attempt} left {:?}",
            w.applied().rev_nat
        );
    }
    w.maps_mut_for_tests().fail_at = None;
    assert!(w.sync(&d).is_complete());
    let id = w
        .applied()
        .frontend(fe("10.96.0.10:80"))
        .unwrap()
        .rev_nat_id;
    assert_eq!(
        w.applied().rev_nat.keys().copied().collect::<Vec<_>>(),
        [id]
    );
}

#[test]
fn reconcile_repairs_entries_changed_behind_our_back() {
    let d = desired(&[("10.96.0.10:80", &["10.1.0.1:8080", "10.1.0.2:8080"])]);
    let mut w = synced(&d);
    let good = w.maps().contents.clone();
    // Someone deletes a slot and adds a stray backend by hand.
    let maps = w.maps_mut_for_tests();
    maps.contents
        .services
        .remove(&(fe("10.96.0.10:80"), Scope::Internal, 2));
    maps.contents.backends.insert(99, be("10.9.9.9:1"));
    let (drift, report) = w.reconcile(&d).unwrap();
    assert_eq!(drift, 2);
    assert!(report.is_complete());
    assert_eq!(w.maps().contents, good);
}

#[test]
fn turning_affinity_on_rewrites_only_the_frontend_entry() {
    let mut d = desired(&[("10.96.0.10:80", &["10.1.0.1:8080", "10.1.0.2:8080"])]);
    let mut w = synced(&d);
    take_log(&mut w);
    for spec in d.frontends.values_mut() {
        spec.affinity_timeout = Some(10_800);
    }
    w.sync(&d);
    let log = take_log(&mut w);
    assert_eq!(kinds(&log), ["put-frontend(count=2)"]);
    let value = w.applied().frontend(fe("10.96.0.10:80")).copied().unwrap();
    assert_eq!(
        (value.flags, value.affinity_timeout),
        (proxy_common::svc_flags::AFFINITY, 10_800)
    );
}

/// Not a timed assertion: prints how long planning and applying (to the fake)
/// take at 10,000 services × 10 endpoints. `cargo test --release -p proxy --lib
/// plan::tests::scale -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, run by hand"]
fn scale_10k_services_10_endpoints() {
    let mut d = DesiredState::default();
    for i in 0..10_000u32 {
        let vip = std::net::Ipv4Addr::from(0x0a60_0000 + i);
        let backends = (0..10u32)
            .map(|j| Backend {
                addr: IpAddr::V4(std::net::Ipv4Addr::from(0x0a80_0000 + i * 10 + j)),
                port: 8080,
                protocol: Protocol::Tcp,
            })
            .collect();
        d.frontends.insert(
            Frontend {
                addr: IpAddr::V4(vip),
                port: 80,
                protocol: Protocol::Tcp,
            },
            FrontendSpec {
                kind: FrontendKind::ClusterIp,
                external_backends: None,
                service: ObjectRef::new("bench", format!("svc-{i}")),
                port_name: String::new(),
                backends,
                affinity_timeout: None,
                traffic_policy: TrafficPolicy::Cluster,
                source_ranges: None,
            },
        );
    }
    let started = std::time::Instant::now();
    let p = plan(&Applied::default(), &d);
    let planned = started.elapsed();
    let mut fake = FakeMaps::default();
    fake.check_invariants = false;
    let mut w = Writer::new(fake).unwrap();
    let started = std::time::Instant::now();
    let report = w.apply(&p);
    println!(
        "plan {planned:?} ({} ops), apply to fake {:?}, complete {}",
        p.ops.len(),
        started.elapsed(),
        report.is_complete()
    );
}

/// A scoped plan over the frontends that changed reaches the same maps as a
/// full plan, change after change (and the fake checks readers' invariants).
#[test]
fn planning_only_the_touched_frontends_converges_like_a_full_plan() {
    let pool = [
        "10.1.0.1:8080",
        "10.1.0.2:8080",
        "10.1.0.3:8080",
        "10.1.0.4:8080",
        "10.1.0.5:8080",
    ];
    let vips = [
        "10.96.0.10:80",
        "10.96.0.11:80",
        "10.96.0.12:80",
        "[fd00::10]:80",
    ];
    let mut seed = 11u64;
    let mut next = |n: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) % n
    };
    let mut current: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut incremental = synced(&DesiredState::default());
    let mut full = synced(&DesiredState::default());
    for step in 0..500 {
        let vip = vips[next(vips.len() as u64) as usize];
        let before = desired_of(&current);
        if next(5) == 0 {
            current.remove(vip);
        } else {
            let v6 = vip.starts_with('[');
            let backends: Vec<&str> = if v6 {
                ["[fd00::1]:8080", "[fd00::2]:8080"]
                    .into_iter()
                    .filter(|_| next(2) == 0)
                    .collect()
            } else {
                pool.iter().copied().filter(|_| next(2) == 0).collect()
            };
            current.insert(vip, backends);
        }
        let after = desired_of(&current);
        let touched: BTreeSet<Frontend> = before
            .frontends
            .keys()
            .chain(after.frontends.keys())
            .filter(|f| before.frontends.get(f) != after.frontends.get(f))
            .copied()
            .collect();
        assert!(
            incremental.sync_frontends(&after, &touched).is_complete(),
            "step {step}"
        );
        assert!(full.sync(&after).is_complete(), "step {step}");
        assert_eq!(
            logical(incremental.applied()),
            logical(full.applied()),
            "step {step}"
        );
        assert_eq!(
            &incremental.maps().contents,
            incremental.applied(),
            "step {step}: mirror diverged"
        );
        assert_indexes_current(incremental.applied(), step);
        assert_indexes_current(full.applied(), step);
    }
}

/// The indexes the mirror keeps as it records (what a plan reads instead of
/// walking the maps) equal what its maps say: the lowest free backend ids,
/// and the entry counts by family.
fn assert_indexes_current(a: &Applied, step: usize) {
    let free: Vec<BackendId> = (1..)
        .filter(|id| !a.backends.contains_key(id))
        .take(16)
        .collect();
    assert_eq!(
        a.free_backend_ids().take(16).collect::<Vec<_>>(),
        free,
        "step {step}: free backend ids"
    );
    let mut rebuilt = a.clone();
    rebuilt.reindex();
    assert_eq!(
        a.entry_counts(),
        rebuilt.entry_counts(),
        "step {step}: entry counts"
    );
    let v6 = a
        .services
        .keys()
        .filter(|(f, _, _)| f.addr.is_ipv6())
        .count();
    assert_eq!(a.entry_counts().services.v6, v6 as u64, "step {step}");
    assert_eq!(
        a.entry_counts().services.v4,
        (a.services.len() - v6) as u64,
        "step {step}"
    );
}

fn desired_of(current: &BTreeMap<&str, Vec<&str>>) -> DesiredState {
    let services: Vec<(&str, &[&str])> = current.iter().map(|(k, v)| (*k, v.as_slice())).collect();
    desired(&services)
}

fn name_of(w: &Writer<FakeMaps>, frontend: &str) -> Option<proxy_common::ServiceName> {
    let id = w.maps().contents.frontend(fe(frontend))?.rev_nat_id;
    w.maps().contents.svc_names.get(&id).map(|n| **n)
}

#[test]
fn the_name_is_written_with_the_rev_nat_entry_before_publishing() {
    let mut w = synced(&DesiredState::default());
    let mut d = desired(&[("10.96.0.10:80", &["10.1.0.1:8080"])]);
    for spec in d.frontends.values_mut() {
        spec.service = ObjectRef::new("shop", "cart");
        spec.port_name = "http".to_owned();
        spec.traffic_policy = TrafficPolicy::Local;
    }
    assert!(w.sync(&d).is_complete());
    assert_eq!(
        kinds(&take_log(&mut w)),
        [
            "put-backend",
            "put-revnat",
            "put-name",
            "put-slot(1)",
            "put-frontend(count=1)"
        ]
    );
    let name = name_of(&w, "10.96.0.10:80").unwrap();
    assert_eq!(
        (name.namespace(), name.name(), name.port_name(), name.flags),
        (
            &b"shop"[..],
            &b"cart"[..],
            &b"http"[..],
            proxy_common::name_flags::INTERNAL_TRAFFIC_POLICY_LOCAL
        )
    );
}

#[test]
fn a_failed_name_write_leaves_the_frontend_unpublished_until_the_retry() {
    let d = desired(&[("10.96.0.10:80", &["10.1.0.1:8080"])]);
    // Calls: put-backend, put-revnat, put-name (fails).
    let mut w = Writer::new(FakeMaps::failing_at(2)).unwrap();
    let report = w.sync(&d);
    assert!(
        matches!(
            report.failures.as_slice(),
            [writer::StepFailure {
                subject: Subject::Frontend(_),
                ..
            }]
        ),
        "expected the frontend's step to fail, got {report:?}"
    );
    assert_eq!(w.maps().contents.frontend(fe("10.96.0.10:80")), None);
    assert!(w.sync(&d).is_complete());
    assert!(name_of(&w, "10.96.0.10:80").is_some());
}

#[test]
fn renaming_the_owner_rewrites_only_the_name() {
    let mut d = desired(&[("10.96.0.10:80", &["10.1.0.1:8080"])]);
    let mut w = synced(&d);
    take_log(&mut w);
    for spec in d.frontends.values_mut() {
        spec.service = ObjectRef::new("default", "renamed");
    }
    assert!(w.sync(&d).is_complete());
    assert_eq!(kinds(&take_log(&mut w)), ["put-name"]);
    assert_eq!(name_of(&w, "10.96.0.10:80").unwrap().name(), b"renamed");
}

/// Pins written by a daemon that knew no names: the next full sync (the first
/// one after a restart, or the reconcile) names every frontend.
#[test]
fn names_missing_from_older_pins_are_written_by_the_reconcile() {
    let d = desired(&[("10.96.0.10:80", &["10.1.0.1:8080"])]);
    let mut w = synced(&d);
    w.maps_mut_for_tests().contents.svc_names.clear();
    take_log(&mut w);
    let (drift, report) = w.reconcile(&d).unwrap();
    assert_eq!(drift, 1);
    assert!(report.is_complete());
    assert_eq!(kinds(&take_log(&mut w)), ["put-name"]);
    assert!(name_of(&w, "10.96.0.10:80").is_some());
}

#[test]
fn a_name_is_never_deleted_before_its_rev_nat_entry() {
    let d = desired(&[("10.96.0.10:80", &["10.1.0.1:8080"])]);
    let mut w = synced(&d);
    let id = w
        .applied()
        .frontend(fe("10.96.0.10:80"))
        .unwrap()
        .rev_nat_id;
    // A stale plan that deletes the name but not the rev-NAT entry.
    let stale = Plan {
        ops: vec![Planned {
            subject: Subject::RevNat(id),
            op: Op::DeleteServiceName { id },
        }],
        unplanned: Vec::new(),
    };
    let report = w.apply(&stale);
    assert!(
        matches!(
            report.failures.as_slice(),
            [writer::StepFailure {
                error: writer::StepError::NameBeforeRevNat(_),
                ..
            }]
        ),
        "expected the guard to refuse, got {report:?}"
    );
    assert!(name_of(&w, "10.96.0.10:80").is_some());
}

#[test]
fn a_scoped_plan_deletes_the_name_of_a_removed_frontend_last_but_one() {
    let two = desired(&[
        ("10.96.0.10:80", &["10.1.0.1:8080"]),
        ("10.96.0.11:80", &["10.1.0.2:8080"]),
    ]);
    let mut w = synced(&two);
    take_log(&mut w);
    let one = desired(&[("10.96.0.10:80", &["10.1.0.1:8080"])]);
    let touched = BTreeSet::from([fe("10.96.0.11:80")]);
    assert!(w.sync_frontends(&one, &touched).is_complete());
    assert_eq!(
        kinds(&take_log(&mut w)),
        [
            "delete-frontend",
            "delete-slot(1)",
            "delete-revnat",
            "delete-name",
            "delete-backend"
        ]
    );
    assert_eq!(w.applied().svc_names.len(), 1);
}

#[test]
fn service_names_are_cut_at_a_character_boundary() {
    let spec = FrontendSpec {
        kind: FrontendKind::ClusterIp,
        external_backends: None,
        service: ObjectRef::new("n".repeat(70), format!("{}é", "a".repeat(63))),
        port_name: "p".repeat(15),
        backends: Vec::new(),
        affinity_timeout: None,
        traffic_policy: TrafficPolicy::Cluster,
        source_ranges: None,
    };
    let name = service_name(&spec);
    assert_eq!(name.namespace().len(), 64);
    // "é" is two bytes and would end at 65: it is left out whole.
    assert_eq!(name.name(), "a".repeat(63).as_bytes());
    assert_eq!(name.port_name(), b"ppppppppppppppp");
    assert_eq!(name.flags, 0);
}

/// A NodePort frontend with `externalTrafficPolicy: Local`: cluster-wide
/// backends in the internal scope, the local one in the external scope, and
/// the local endpoint's backend flagged.
fn etp_local(local: bool) -> DesiredState {
    let mut d = desired(&[("192.168.1.10:30080", &["10.1.0.1:8080", "10.2.0.1:8080"])]);
    let spec = d
        .frontends
        .values_mut()
        .next()
        .unwrap_or_else(|| panic!("one frontend"));
    spec.kind = FrontendKind::NodePort;
    if local {
        spec.external_backends = Some(vec![be("10.1.0.1:8080")]);
    }
    d.local_endpoints.insert(be("10.1.0.1:8080").addr);
    d
}

#[test]
fn an_etp_local_frontend_has_both_scopes_sharing_its_rev_nat_id_and_flags() {
    let w = synced(&etp_local(true));
    let a = w.applied();
    let f = fe("192.168.1.10:30080");
    assert_eq!(
        logical(a),
        BTreeMap::from([
            (
                (f, Scope::Internal),
                vec![be("10.1.0.1:8080"), be("10.2.0.1:8080")]
            ),
            ((f, Scope::External), vec![be("10.1.0.1:8080")]),
        ])
    );
    let internal = a.slot0(f, Scope::Internal).copied().unwrap();
    let external = a.slot0(f, Scope::External).copied().unwrap();
    assert_eq!(internal.flags, svc_flags::EXTERNAL | svc_flags::NODE_PORT);
    assert_eq!(
        external.flags,
        svc_flags::EXTERNAL | svc_flags::NODE_PORT | svc_flags::ETP_LOCAL
    );
    assert_eq!(internal.rev_nat_id, external.rev_nat_id);
    let local_id = a.backend_id(&be("10.1.0.1:8080")).unwrap();
    let remote_id = a.backend_id(&be("10.2.0.1:8080")).unwrap();
    assert_eq!(a.backend_flags(local_id), backend_flags::LOCAL);
    assert_eq!(a.backend_flags(remote_id), 0);
    // The maps read back (a restart) give the same mirror: nothing to do.
    let mut maps = FakeMaps::default();
    maps.contents = w.maps().contents.clone();
    let restarted = Writer::new(maps).unwrap();
    assert!(plan(restarted.applied(), &etp_local(true)).is_empty());
}

#[test]
fn switching_to_etp_cluster_unpublishes_the_external_scope_first() {
    let mut w = synced(&etp_local(true));
    take_log(&mut w);
    assert!(w.sync(&etp_local(false)).is_complete());
    // The name records the policy too (for `proxy inspect`).
    assert_eq!(
        kinds(&take_log(&mut w)),
        ["put-name", "delete-frontend", "delete-slot(1)"]
    );
    let f = fe("192.168.1.10:30080");
    assert_eq!(w.applied().slot0(f, Scope::External), None);
    // And back: slots first, slot 0 last (the fake checks readers throughout).
    assert!(w.sync(&etp_local(true)).is_complete());
    assert_eq!(
        kinds(&take_log(&mut w)),
        ["put-name", "put-slot(1)", "put-frontend(count=1)"]
    );
}

#[test]
fn a_backend_that_becomes_local_is_rewritten_in_place() {
    let mut d = etp_local(true);
    let mut w = synced(&d);
    take_log(&mut w);
    d.local_endpoints.insert(be("10.2.0.1:8080").addr);
    assert!(w.sync(&d).is_complete());
    let log = take_log(&mut w);
    let id = w.applied().backend_id(&be("10.2.0.1:8080")).unwrap();
    assert_eq!(
        log,
        [Op::PutBackend {
            id,
            backend: be("10.2.0.1:8080"),
            flags: backend_flags::LOCAL
        }]
    );
}

#[test]
fn reconcile_repairs_external_entries_and_backend_flags() {
    let d = etp_local(true);
    let mut w = synced(&d);
    let good = w.maps().contents.clone();
    let f = fe("192.168.1.10:30080");
    let maps = w.maps_mut_for_tests();
    maps.contents.services.remove(&(f, Scope::External, 1));
    maps.contents.services.remove(&(f, Scope::External, 0));
    maps.contents.backend_flags.clear();
    let (drift, report) = w.reconcile(&d).unwrap();
    assert_eq!(drift, 3);
    assert!(report.is_complete());
    assert_eq!(w.maps().contents, good);
}

#[test]
fn any_failed_write_of_scoped_entries_converges_on_the_next_sync() {
    let start = etp_local(false);
    let mut end = etp_local(true);
    end.frontends.insert(
        fe("10.96.0.10:80"),
        FrontendSpec {
            kind: FrontendKind::ClusterIp,
            external_backends: None,
            service: ObjectRef::new("default", "other"),
            port_name: String::new(),
            backends: vec![be("10.2.0.1:8080")],
            affinity_timeout: None,
            traffic_policy: TrafficPolicy::Cluster,
            source_ranges: None,
        },
    );
    end.local_endpoints.insert(be("10.2.0.1:8080").addr);
    let total = plan(synced(&start).applied(), &end).ops().count();
    let mut expected = synced(&start);
    expected.sync(&end);
    for n in 0..total {
        let mut w = synced(&start);
        w.maps_mut_for_tests().fail_at = Some(w.maps().log.len() + n);
        let report = w.sync(&end);
        assert!(!report.failures.is_empty(), "failure {n} was not reported");
        assert!(w.sync(&end).is_complete(), "retry after failure {n}");
        assert_eq!(
            w.maps().contents,
            expected.maps().contents,
            "did not converge after failure {n}"
        );
    }
}

#[test]
fn a_failed_external_publish_leaves_the_frontend_unpublished() {
    let d = etp_local(true);
    let ops: Vec<Op> = plan(&Applied::default(), &d).ops().cloned().collect();
    let f = fe("192.168.1.10:30080");
    let external_publish = ops
        .iter()
        .position(|op| {
            matches!(
                op,
                Op::PutService {
                    scope: Scope::External,
                    slot: 0,
                    ..
                }
            )
        })
        .unwrap();
    let mut w = Writer::new(FakeMaps::default()).unwrap();
    w.maps_mut_for_tests().fail_at = Some(external_publish);
    assert!(!w.sync(&d).is_complete());
    assert_eq!(w.applied().slot0(f, Scope::External), None);
    assert_eq!(
        w.applied().frontend(f),
        None,
        "the internal scope must not be published without the external one"
    );
    assert!(w.sync(&d).is_complete());
    assert!(w.applied().frontend(f).is_some());
}

/// Flattening keeps the phase order, and each phase's own order, whichever
/// phase is the largest (its Vec is the one grown in place).
#[test]
fn phases_flatten_in_order() {
    let phases = [Phase::PutBackends, Phase::PutSlots, Phase::DeleteBackends];
    for largest in phases {
        let mut phased = Phased::new();
        let mut pushed: Vec<(Phase, RevNatId)> = Vec::new();
        let mut id: RevNatId = 0;
        // Pushed from the last phase to the first, interleaved.
        for round in 0..5 {
            for phase in phases.into_iter().rev() {
                if phase != largest && round >= 2 {
                    continue;
                }
                id += 1;
                pushed.push((phase, id));
                phased.push(
                    phase,
                    Subject::RevNat(id),
                    Op::DeleteRevNat {
                        id,
                        frontend: fe("10.96.0.1:80"),
                    },
                );
            }
        }
        // A stable sort by phase is the order wanted.
        pushed.sort_by_key(|(phase, _)| *phase);
        let expected: Vec<RevNatId> = pushed.into_iter().map(|(_, id)| id).collect();
        let got: Vec<RevNatId> = phased
            .into_ops()
            .iter()
            .map(|p| match p.subject {
                Subject::RevNat(id) => id,
                ref other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, expected, "largest phase {largest:?}");
    }
}

/// Rev-NAT ids are `u32`: past the 65,535 of layout 2, up to the `REVNAT`
/// maps' capacity, and none past it.
#[test]
fn rev_nat_ids_go_past_16_bits_up_to_the_maps_capacity() {
    let mut ids = IdAllocator::new(1..=70_000, MAX_REV_NAT_ID);
    assert_eq!(ids.next(), Some(70_001));
    let mut full = IdAllocator::new(1..=MAX_REV_NAT_ID, MAX_REV_NAT_ID);
    assert_eq!(full.next(), None);
    assert_eq!(MAX_REV_NAT_ID, proxy_common::capacity::REVNAT);
    const _: () = assert!(MAX_REV_NAT_ID >= 100_000 * 3 * 2);
}

/// Packing the mirror's maps after a large sync changes neither their
/// contents nor the indexes the planner reads, and the next plan is empty.
#[test]
fn compacting_the_mirror_keeps_its_contents_and_indexes() {
    let services: Vec<(String, Vec<String>)> = (1..=40u32)
        .map(|i| {
            // Three of its own, one every frontend shares.
            let backends = (1..=3u32)
                .map(|j| format!("10.1.{i}.{j}:8080"))
                .chain(["10.2.0.1:8080".to_owned()])
                .collect();
            (format!("10.96.0.{i}:80"), backends)
        })
        .collect();
    let as_refs: Vec<(&str, Vec<&str>)> = services
        .iter()
        .map(|(f, b)| (f.as_str(), b.iter().map(String::as_str).collect()))
        .collect();
    let slices: Vec<(&str, &[&str])> = as_refs.iter().map(|(f, b)| (*f, b.as_slice())).collect();
    let mut w = Writer::new(FakeMaps::default()).unwrap();
    assert!(w.sync(&desired(&slices)).is_complete());
    // A backend nobody uses any more, kept as listed: an unreferenced entry.
    let mut d = desired(&slices[1..]);
    d.retained_backends = [(be("10.1.1.1:8080"), 1), (be("10.1.1.2:8080"), 1)]
        .into_iter()
        .collect();
    assert!(w.sync(&d).is_complete());
    let before = w.applied().clone();
    let mut packed = before.clone();
    packed.compact();
    assert_eq!(packed, before);
    for id in before.backends.keys() {
        assert_eq!(packed.refs(*id), before.refs(*id), "refs of backend {id}");
        assert_eq!(packed.backend_id(&before.backends[id]), Some(*id));
    }
    assert!(before.refs(before.backend_id(&be("10.2.0.1:8080")).unwrap()) > 1);
    assert_eq!(before.unreferenced().len(), 2);
    assert_eq!(packed.unreferenced(), before.unreferenced());
    assert!(plan(&packed, &d).ops.is_empty());
}
