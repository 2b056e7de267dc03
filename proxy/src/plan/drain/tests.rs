//! Retained and draining backends: a terminating endpoint's backend entry
//! stays while its Service lists it, a deleted one's for the grace period,
//! and neither ever leaves a slot pointing at a missing backend (the fake
//! maps check the readers' invariants after every operation).
#![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use super::Draining;
use crate::{
    dataplane::{Writer, fake::FakeMaps},
    model::{Backend, DesiredState, Frontend, Protocol},
    plan::{
        plan, plan_frontends,
        tests::{be, desired, fe, kinds, reachable, synced, take_log},
    },
};

const WEB: &str = "10.96.0.10:80";
const A: &str = "10.1.0.1:8080";
const B: &str = "10.1.0.2:8080";
const GRACE: Duration = Duration::from_secs(30);

/// `WEB` with `slots` in its slots and `listed` listed by its Service.
fn web(slots: &[&str], listed: &[&str]) -> DesiredState {
    let mut d = desired(&[(WEB, slots)]);
    d.retained_backends = listed.iter().map(|b| (be(b), 1)).collect();
    d
}

fn touched() -> BTreeSet<Frontend> {
    BTreeSet::from([fe(WEB)])
}

/// Whether the maps hold `backend`; also checks that the mirror's index of
/// unreferenced backends, kept up to date op by op, equals a rebuilt one.
fn holds(w: &Writer<FakeMaps>, backend: &str) -> bool {
    let mut rebuilt = w.applied().clone();
    rebuilt.reindex();
    assert_eq!(w.applied().unreferenced(), rebuilt.unreferenced());
    w.applied().backend_id(&be(backend)).is_some()
}

#[test]
fn a_terminating_endpoint_leaves_the_slots_but_keeps_its_backend_while_listed() {
    let mut w = synced(&web(&[A, B], &[A, B]));
    take_log(&mut w);
    // A turns terminating: out of the slots, still listed.
    assert!(
        w.sync_frontends(&web(&[B], &[A, B]), &touched())
            .is_complete()
    );
    assert_eq!(
        kinds(&take_log(&mut w)),
        ["put-frontend(count=1)", "put-slot(1)", "delete-slot(2)"],
        "the slots shrink readers-first and A's backend entry stays"
    );
    assert_eq!(reachable(w.maps(), WEB), [be(B)]);
    assert!(holds(&w, A));
    assert_eq!(w.applied().unreferenced().len(), 1);
    // A full plan (the reconcile) keeps it too.
    assert!(plan(w.applied(), &web(&[B], &[A, B])).is_empty());
}

#[test]
fn a_backend_no_longer_listed_is_deleted_by_the_next_scoped_plan_without_a_grace() {
    let mut w = synced(&web(&[A, B], &[A, B]));
    w.sync_frontends(&web(&[B], &[A, B]), &touched());
    take_log(&mut w);
    // A is deleted from the slice. Even a plan that touches no frontend
    // (any later sync) picks it up: it is unreferenced.
    assert!(
        w.sync_frontends(&web(&[B], &[B]), &BTreeSet::new())
            .is_complete()
    );
    assert_eq!(kinds(&take_log(&mut w)), ["delete-backend"]);
    assert!(!holds(&w, A));
    assert!(w.applied().unreferenced().is_empty());
}

#[test]
fn a_backend_another_frontend_still_uses_is_not_deleted() {
    let other = "10.96.0.11:80";
    let both = |web_slots: &[&str], listed: &[&str]| {
        let mut d = desired(&[(WEB, web_slots), (other, &[A])]);
        d.retained_backends = listed.iter().map(|b| (be(b), 1)).collect();
        d
    };
    let mut w = synced(&both(&[A, B], &[A, B]));
    take_log(&mut w);
    assert!(
        w.sync_frontends(&both(&[B], &[B]), &touched())
            .is_complete()
    );
    assert_eq!(
        kinds(&take_log(&mut w)),
        ["put-frontend(count=1)", "put-slot(1)", "delete-slot(2)"]
    );
    assert!(holds(&w, A));
    assert!(w.applied().unreferenced().is_empty());
}

#[test]
fn a_deleted_endpoint_drains_for_the_grace_period_then_goes() {
    let mut w = Writer::new(FakeMaps::default())
        .unwrap()
        .with_backend_grace(GRACE);
    assert!(w.sync(&web(&[A, B], &[A, B])).is_complete());
    take_log(&mut w);
    // A deleted at once (no terminating phase): out of the slots, its
    // backend entry held.
    assert!(w.sync_frontends(&web(&[B], &[B]), &touched()).is_complete());
    assert_eq!(
        kinds(&take_log(&mut w)),
        ["put-frontend(count=1)", "put-slot(1)", "delete-slot(2)"]
    );
    assert!(holds(&w, A));
    let id = w.applied().backend_id(&be(A)).unwrap();
    let deadline = w.draining().deadlines()[&id];
    assert_eq!(w.draining().next_deadline(), Some(deadline));
    // Later syncs (scoped or full) keep holding it, with the same deadline.
    assert!(
        w.sync_frontends(&web(&[B], &[B]), &BTreeSet::new())
            .is_complete()
    );
    assert!(w.sync(&web(&[B], &[B])).is_complete());
    assert!(take_log(&mut w).is_empty());
    assert_eq!(w.draining().deadlines()[&id], deadline);
}

/// The pure part, with the clock in the test's hands.
#[test]
fn a_grace_ends_at_its_deadline_and_only_then_lets_the_delete_through() {
    // A terminating endpoint is deleted: the plan would delete its backend.
    let mut w = a_unreferenced();
    let t0 = Instant::now();
    let mut draining = Draining::new(GRACE);
    let d = web(&[B], &[B]);
    let mut p = plan_frontends(w.applied(), &d, &BTreeSet::new());
    assert_eq!(draining.hold(&mut p, w.applied(), t0), [be(A)]);
    assert!(p.is_empty(), "held: {p:?}");
    assert_eq!(draining.next_deadline(), Some(t0 + GRACE));
    assert!(!draining.expire(t0 + GRACE - Duration::from_millis(1)));
    let mut p = plan_frontends(w.applied(), &d, &BTreeSet::new());
    assert_eq!(draining.hold(&mut p, w.applied(), t0 + GRACE / 2), []);
    assert!(p.is_empty(), "still held: {p:?}");
    assert!(draining.expire(t0 + GRACE));
    assert_eq!(draining.next_deadline(), None);
    let mut p = plan_frontends(w.applied(), &d, &BTreeSet::new());
    draining.hold(&mut p, w.applied(), t0 + GRACE);
    assert_eq!(
        kinds(&p.ops().cloned().collect::<Vec<_>>()),
        ["delete-backend"]
    );
    let report = w.apply(&p);
    assert!(report.is_complete());
    assert!(!holds(&w, A));
}

#[test]
fn a_draining_backend_that_comes_back_is_forgotten_and_drains_afresh_next_time() {
    let mut w = a_unreferenced();
    let t0 = Instant::now();
    let mut draining = Draining::new(GRACE);
    let mut p = plan(w.applied(), &web(&[B], &[B]));
    draining.hold(&mut p, w.applied(), t0);
    assert!(p.is_empty());
    // A is back in the slots: its entry is reused (no new backend written).
    let back = web(&[A, B], &[A, B]);
    let mut p = plan(w.applied(), &back);
    draining.hold(&mut p, w.applied(), t0 + GRACE / 2);
    assert!(!kinds(&p.ops().cloned().collect::<Vec<_>>()).contains(&"put-backend".to_owned()));
    assert!(w.apply(&p).is_complete());
    let mut p = plan(w.applied(), &back);
    draining.hold(&mut p, w.applied(), t0 + GRACE / 2);
    assert!(
        draining.deadlines().is_empty(),
        "forgotten once a slot uses it"
    );
    // Let go again after the first grace would have ended: a new grace.
    let later = t0 + GRACE * 2;
    assert!(!draining.expire(later));
    let gone = web(&[B], &[B]);
    let mut p = plan(w.applied(), &gone);
    draining.hold(&mut p, w.applied(), later);
    assert!(w.apply(&p).is_complete());
    assert!(holds(&w, A), "held again");
    assert_eq!(draining.next_deadline(), Some(later + GRACE));
    assert_eq!(reachable(w.maps(), WEB), [be(B)]);
}

/// UDP flows to a deleted endpoint move to a live one at once (kube-proxy
/// clears their conntrack entries): a UDP backend is not held.
#[test]
fn a_udp_backend_is_not_held() {
    let udp = |s: &str| Backend {
        protocol: Protocol::Udp,
        ..be(s)
    };
    let dns = Frontend {
        protocol: Protocol::Udp,
        ..fe("10.96.0.10:53")
    };
    let with = |slots: &[Backend]| {
        let mut d = DesiredState::default();
        let mut spec = desired(&[(WEB, &[])])
            .frontends
            .into_values()
            .next()
            .unwrap();
        spec.backends = slots.to_vec();
        d.frontends.insert(dns, spec);
        d
    };
    let mut w = Writer::new(FakeMaps::default())
        .unwrap()
        .with_backend_grace(GRACE);
    assert!(w.sync(&with(&[udp(A), udp(B)])).is_complete());
    take_log(&mut w);
    let report = w.sync_frontends(&with(&[udp(B)]), &BTreeSet::from([dns]));
    assert!(report.is_complete());
    assert!(kinds(&take_log(&mut w)).contains(&"delete-backend".to_owned()));
    assert!(w.applied().backend_id(&udp(A)).is_none());
    assert!(w.draining().deadlines().is_empty());
}

#[test]
fn without_a_grace_nothing_is_held() {
    let mut w = a_unreferenced();
    let mut draining = Draining::new(Duration::ZERO);
    let mut p = plan(w.applied(), &web(&[B], &[B]));
    draining.hold(&mut p, w.applied(), Instant::now());
    assert_eq!(
        kinds(&p.ops().cloned().collect::<Vec<_>>()),
        ["delete-backend"]
    );
    assert!(w.apply(&p).is_complete());
    assert!(draining.next_deadline().is_none());
}

/// The maps after A went through `WEB`'s slots and out of them while
/// listed (terminating): they hold A, unreferenced, and B in the slots.
fn a_unreferenced() -> Writer<FakeMaps> {
    let mut w = synced(&web(&[A, B], &[A, B]));
    assert!(w.sync(&web(&[B], &[A, B])).is_complete());
    assert!(holds(&w, A));
    take_log(&mut w);
    w
}

/// Entries the writer did not write (drift the reconcile finds) are no
/// endpoint's: with a grace configured they still go at once, and the
/// backend changed by hand is restored.
#[test]
fn the_reconcile_deletes_a_hand_made_backend_entry_without_a_grace() {
    use crate::plan::Scope;
    let d = web(&[A, B], &[A, B]);
    let mut w = Writer::new(FakeMaps::default())
        .unwrap()
        .with_backend_grace(GRACE);
    assert!(w.sync(&d).is_complete());
    let good = w.maps().contents.clone();
    // A stray backend, and B's entry pointed elsewhere.
    let b_id = w.applied().backend_id(&be(B)).unwrap();
    let maps = w.maps_mut_for_tests();
    maps.contents.backends.insert(99, be("10.9.9.9:1"));
    maps.contents.backends.insert(b_id, be("10.1.0.2:1"));
    maps.contents.reindex();
    let (_, report) = w.reconcile(&d).unwrap();
    assert!(report.is_complete());
    assert!(w.draining().deadlines().is_empty());
    assert_eq!(reachable(w.maps(), WEB), [be(A), be(B)]);
    assert_eq!(
        w.maps().contents.backends.len(),
        2,
        "{:?}",
        w.maps().contents
    );
    assert_eq!(
        w.maps()
            .contents
            .reachable_slots(fe(WEB), Scope::Internal)
            .len(),
        good.reachable_slots(fe(WEB), Scope::Internal).len()
    );
}

/// A write that fails at any position while one endpoint turns terminating
/// and another is deleted (with a grace): readers never see a slot pointing
/// at a missing backend (the fake maps check it op by op), the mirror stays
/// exact, and the next sync converges to the same maps as a clean run, the
/// terminating endpoint's entry kept and the deleted one's held.
#[test]
fn any_failed_write_with_retained_and_draining_backends_converges() {
    const C: &str = "10.1.0.3:8080";
    let start = web(&[A, B, C], &[A, B, C]);
    // A terminates (listed, no slot); C is deleted (drains).
    let end = web(&[B], &[A, B]);
    let graced = || {
        let mut w = Writer::new(FakeMaps::default())
            .unwrap()
            .with_backend_grace(GRACE);
        assert!(w.sync(&start).is_complete());
        w
    };
    let mut expected = graced();
    assert!(expected.sync(&end).is_complete());
    assert!(holds(&expected, A) && holds(&expected, C));
    let total = plan(graced().applied(), &end).ops().count();
    assert!(total > 3, "{total} ops");
    for n in 0..total {
        let mut w = graced();
        w.maps_mut_for_tests().fail_at = Some(w.maps().log.len() + n);
        w.sync_frontends(&end, &touched());
        assert_eq!(&w.maps().contents, w.applied(), "mirror after failure {n}");
        assert!(
            w.sync(&end).is_complete(),
            "retry after failure {n} did not complete"
        );
        assert_eq!(
            w.maps().contents,
            expected.maps().contents,
            "did not converge after failure {n}"
        );
        assert!(holds(&w, A) && holds(&w, C));
    }
}
