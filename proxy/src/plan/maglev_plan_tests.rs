//! The plan's Maglev tables: written for external frontends only, in the
//! readers' order (after their backends, before slot 0 publishes; deleted
//! after slot 0 and before the backends), rewritten only when the backend
//! set changes, and deleted when Maglev is off.
#![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

use super::tests::{be, desired, fe, kinds, take_log};
use super::*;
use crate::{
    dataplane::{Writer, fake::FakeMaps},
    model::FrontendKind,
};

const LB: &str = "192.0.2.10:80";
const CLUSTER_IP: &str = "10.96.0.10:80";

fn maglev() -> Maglev {
    Maglev::new(maglev::DEFAULT_SIZE, maglev::DEFAULT_SEED).unwrap()
}

fn writer() -> Writer<FakeMaps> {
    Writer::new(FakeMaps::default())
        .unwrap()
        .with_maglev(Some(maglev()))
}

/// A LoadBalancer IP and a ClusterIP with the same backends.
fn state(backends: &[&str]) -> DesiredState {
    let mut d = desired(&[(LB, backends), (CLUSTER_IP, backends)]);
    if let Some(spec) = d.frontends.get_mut(&fe(LB)) {
        spec.kind = FrontendKind::LoadBalancer;
    }
    d
}

fn rev_nat(w: &Writer<FakeMaps>, frontend: &str) -> RevNatId {
    w.applied().frontend(fe(frontend)).unwrap().rev_nat_id
}

/// The table of `frontend` as backends.
fn table(w: &Writer<FakeMaps>, frontend: &str) -> Option<Vec<Backend>> {
    let a = w.applied();
    let t = a.maglev.get(&(rev_nat(w, frontend), Scope::Internal))?;
    Some(t.iter().map(|id| a.backends[id]).collect())
}

#[test]
fn external_frontends_get_a_table_before_slot_0_and_cluster_ips_none() {
    let mut w = writer();
    let r = w.sync(&state(&["10.1.0.1:8080", "10.1.0.2:8080"]));
    assert!(r.is_complete());
    let log = kinds(&take_log(&mut w));
    let table_at = log
        .iter()
        .position(|k| k == "put-maglev(internal)")
        .unwrap();
    let publish_at = log
        .iter()
        .rposition(|k| k.starts_with("put-frontend"))
        .unwrap();
    let backends_at = log.iter().rposition(|k| k == "put-backend").unwrap();
    assert!(backends_at < table_at && table_at < publish_at, "{log:?}");
    assert_eq!(log.iter().filter(|k| k.contains("maglev")).count(), 1);
    let t = table(&w, LB).unwrap();
    assert_eq!(t.len(), maglev::DEFAULT_SIZE as usize);
    let want = maglev()
        .table(&[be("10.1.0.1:8080"), be("10.1.0.2:8080")])
        .unwrap();
    let set = [be("10.1.0.1:8080"), be("10.1.0.2:8080")];
    assert_eq!(t, want.iter().map(|i| set[*i]).collect::<Vec<_>>());
    assert_eq!(w.applied().maglev.len(), 1, "no table for the ClusterIP");
}

#[test]
fn the_table_is_rewritten_only_when_its_backends_change() {
    let mut w = writer();
    assert!(
        w.sync(&state(&["10.1.0.1:8080", "10.1.0.2:8080"]))
            .is_complete()
    );
    take_log(&mut w);
    // An unrelated change: another Service appears.
    let mut d = state(&["10.1.0.1:8080", "10.1.0.2:8080"]);
    d.frontends
        .extend(desired(&[("10.96.0.99:53", &["10.3.0.1:53"])]).frontends);
    assert!(w.sync(&d).is_complete());
    assert!(
        !kinds(&take_log(&mut w))
            .iter()
            .any(|k| k.contains("maglev")),
        "an unrelated change rewrote the table"
    );
    // A restart reads the same tables back: nothing to write.
    let mut maps = FakeMaps::default();
    maps.contents = w.maps().contents.clone();
    let restarted = Writer::new(maps).unwrap();
    assert!(plan_with(restarted.applied(), &d, Some(&maglev())).is_empty());
}

#[test]
fn a_removed_backend_leaves_the_table_before_its_entry_goes() {
    let mut w = writer();
    assert!(
        w.sync(&state(&["10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.3:8080"]))
            .is_complete()
    );
    take_log(&mut w);
    assert!(
        w.sync(&state(&["10.1.0.1:8080", "10.1.0.3:8080"]))
            .is_complete()
    );
    let log = kinds(&take_log(&mut w));
    let table_at = log
        .iter()
        .position(|k| k == "put-maglev(internal)")
        .unwrap();
    let delete_at = log.iter().position(|k| k == "delete-backend").unwrap();
    assert!(table_at < delete_at, "{log:?}");
    assert!(!table(&w, LB).unwrap().contains(&be("10.1.0.2:8080")));
    // The fake checked after every operation that no table pointed at a
    // missing backend.
}

#[test]
fn a_frontend_that_goes_away_loses_its_table_after_slot_0() {
    let mut w = writer();
    assert!(w.sync(&state(&["10.1.0.1:8080"])).is_complete());
    take_log(&mut w);
    assert!(w.sync(&desired(&[])).is_complete());
    let log = kinds(&take_log(&mut w));
    let unpublish = log.iter().position(|k| k == "delete-frontend").unwrap();
    let table_at = log
        .iter()
        .position(|k| k == "delete-maglev(internal)")
        .unwrap();
    let backend_at = log.iter().position(|k| k == "delete-backend").unwrap();
    assert!(unpublish < table_at && table_at < backend_at, "{log:?}");
    assert!(w.applied().maglev.is_empty());
}

#[test]
fn no_backend_or_maglev_off_means_no_table() {
    let mut w = writer();
    assert!(w.sync(&state(&["10.1.0.1:8080"])).is_complete());
    assert!(w.sync(&state(&[])).is_complete());
    assert!(w.applied().maglev.is_empty());
    assert!(w.sync(&state(&["10.1.0.1:8080"])).is_complete());
    assert_eq!(w.applied().maglev.len(), 1);
    // `--lb-algorithm=random` on restart: the tables go.
    let mut maps = FakeMaps::default();
    maps.contents = w.maps().contents.clone();
    let mut random = Writer::new(maps).unwrap();
    assert!(random.sync(&state(&["10.1.0.1:8080"])).is_complete());
    assert!(random.applied().maglev.is_empty());
}

// ---------------------------------------------------------------------------
// Shared tables: one per Service port, family and scope.

const NODE_A: &str = "192.168.1.10:30080";
const NODE_B: &str = "192.168.1.11:30080";
const NODE_V6: &str = "[fd00::10]:30080";

/// `frontends` as external frontends of Service `name`'s one port, all
/// with `backends`.
fn external(name: &str, frontends: &[&str], backends: &[&str]) -> DesiredState {
    let pairs: Vec<(&str, &[&str])> = frontends.iter().map(|f| (*f, backends)).collect();
    let mut d = desired(&pairs);
    for spec in d.frontends.values_mut() {
        spec.kind = FrontendKind::NodePort;
        spec.service = crate::model::ObjectRef::new("default", name);
    }
    d
}

/// The table id slot 0 of `frontend` names in the internal scope.
fn named(w: &Writer<FakeMaps>, frontend: &str) -> RevNatId {
    w.applied()
        .slot0(fe(frontend), Scope::Internal)
        .unwrap()
        .maglev_table_id()
}

fn merged(parts: &[DesiredState]) -> DesiredState {
    let mut d = DesiredState::default();
    for p in parts {
        d.frontends.extend(p.frontends.clone());
    }
    d
}

#[test]
fn frontends_of_one_service_port_share_one_table_per_family() {
    let mut w = writer();
    let backends = ["10.1.0.1:8080", "10.1.0.2:8080"];
    let d = merged(&[
        external("web", &[NODE_A, NODE_B, LB], &backends),
        external("web", &[NODE_V6], &["[fd00:1::1]:8080"]),
    ]);
    assert!(w.sync(&d).is_complete());
    let log = kinds(&take_log(&mut w));
    assert_eq!(
        log.iter().filter(|k| k.contains("put-maglev")).count(),
        2,
        "{log:?}"
    );
    assert_eq!(w.applied().maglev.len(), 2, "one table per family");
    let lowest = [NODE_A, NODE_B, LB]
        .map(|f| rev_nat(&w, f))
        .into_iter()
        .min();
    for f in [NODE_A, NODE_B, LB] {
        assert_eq!(Some(named(&w, f)), lowest, "{f}");
    }
    assert_eq!(named(&w, NODE_V6), rev_nat(&w, NODE_V6));
    // The owner's slot 0 keeps 0 (what an older daemon wrote).
    let owner = [NODE_A, NODE_B, LB]
        .into_iter()
        .find(|f| Some(rev_nat(&w, f)) == lowest)
        .unwrap();
    assert_eq!(
        w.applied()
            .slot0(fe(owner), Scope::Internal)
            .unwrap()
            .maglev_table,
        0
    );
    // The same set again: nothing to write.
    assert!(plan_with(w.applied(), &d, Some(&maglev())).is_empty());
}

#[test]
fn other_services_and_other_backends_do_not_share() {
    let mut w = writer();
    let d = merged(&[
        external("web", &[NODE_A], &["10.1.0.1:8080"]),
        external("api", &[NODE_B], &["10.1.0.1:8080"]),
    ]);
    assert!(w.sync(&d).is_complete());
    assert_eq!(w.applied().maglev.len(), 2);
    assert_eq!(named(&w, NODE_A), rev_nat(&w, NODE_A));
    assert_eq!(named(&w, NODE_B), rev_nat(&w, NODE_B));
}

/// The owner goes: the next lowest id's table is written before any slot 0
/// names it, the old table deleted after none does (the fake checks every
/// step); a new frontend with a lower id then takes the table over the same
/// way.
#[test]
fn the_owner_leaving_or_a_lower_id_joining_moves_the_table_in_order() {
    let mut w = writer();
    let backends = ["10.1.0.1:8080", "10.1.0.2:8080"];
    assert!(
        w.sync(&external("web", &[NODE_A, NODE_B, LB], &backends))
            .is_complete()
    );
    let mut ids: Vec<(RevNatId, &str)> = [NODE_A, NODE_B, LB]
        .into_iter()
        .map(|f| (rev_nat(&w, f), f))
        .collect();
    ids.sort();
    let (old_owner, gone) = ids[0];
    let (next_owner, _) = ids[1];
    take_log(&mut w);
    let stay: Vec<&str> = ids[1..].iter().map(|(_, f)| *f).collect();
    assert!(w.sync(&external("web", &stay, &backends)).is_complete());
    let log = take_log(&mut w);
    let put_at = log
        .iter()
        .position(|op| matches!(op, Op::PutMaglev { id, .. } if *id == next_owner))
        .unwrap();
    let delete_at = log
        .iter()
        .position(|op| matches!(op, Op::DeleteMaglev { id, .. } if *id == old_owner))
        .unwrap();
    let slot0s: Vec<usize> = log
        .iter()
        .enumerate()
        .filter(|(_, op)| matches!(op, Op::PutService { slot: 0, .. }))
        .map(|(i, _)| i)
        .collect();
    assert!(!slot0s.is_empty(), "{:?}", kinds(&log));
    assert!(
        slot0s.iter().all(|i| put_at < *i && *i < delete_at),
        "{:?}",
        kinds(&log)
    );
    assert_eq!(
        w.applied().maglev.keys().copied().collect::<Vec<_>>(),
        [(next_owner, Scope::Internal)]
    );
    for f in &stay {
        assert_eq!(named(&w, f), next_owner, "{f}");
    }
    // The gone frontend's id is free again: a new frontend takes it, and
    // the table with it.
    assert!(
        w.sync(&external("web", &[NODE_A, NODE_B, LB], &backends))
            .is_complete()
    );
    assert_eq!(rev_nat(&w, gone), old_owner);
    assert_eq!(
        w.applied().maglev.keys().copied().collect::<Vec<_>>(),
        [(old_owner, Scope::Internal)]
    );
    for f in [NODE_A, NODE_B, LB] {
        assert_eq!(named(&w, f), old_owner, "{f}");
    }
}

/// A scoped plan (the Service's frontends touched, as `model::incremental`
/// reports them) shares the same way, and deletes what the group left.
#[test]
fn a_scoped_plan_shares_and_cleans_up_the_same_way() {
    let mut w = writer();
    let d = external("web", &[NODE_A, NODE_B], &["10.1.0.1:8080"]);
    assert!(w.sync(&d).is_complete());
    let changed = external("web", &[NODE_A, NODE_B], &["10.1.0.2:8080"]);
    let touched: BTreeSet<Frontend> = changed.frontends.keys().copied().collect();
    let p = plan_frontends_with(w.applied(), &changed, &touched, Some(&maglev()));
    let tables: Vec<&Op> = p
        .ops
        .iter()
        .map(|p| &p.op)
        .filter(|op| matches!(op, Op::PutMaglev { .. } | Op::DeleteMaglev { .. }))
        .collect();
    assert_eq!(tables.len(), 1, "{tables:?}");
    assert!(w.apply(&p).failures.is_empty());
    assert_eq!(w.applied().maglev.len(), 1);
    // Maglev off: a scoped plan deletes the group's table too.
    let p = plan_frontends(w.applied(), &changed, &touched);
    assert!(w.apply(&p).failures.is_empty());
    assert!(w.applied().maglev.is_empty());
}

/// A failure at any step of a table move (the owner leaves, the backends
/// change) leaves no slot 0 naming a missing table (the fake checks after
/// every operation), and a retry converges.
#[test]
fn a_failure_anywhere_in_a_table_move_keeps_slot_0s_on_existing_tables() {
    let start = external("web", &[NODE_A, NODE_B, LB], &["10.1.0.1:8080"]);
    let synced = || {
        let mut w = writer();
        assert!(w.sync(&start).is_complete());
        w
    };
    let probe = synced();
    let mut ids: Vec<(RevNatId, &str)> = [NODE_A, NODE_B, LB]
        .into_iter()
        .map(|f| (rev_nat(&probe, f), f))
        .collect();
    ids.sort();
    let stay: Vec<&str> = ids[1..].iter().map(|(_, f)| *f).collect();
    let end = external("web", &stay, &["10.1.0.2:8080"]);
    let total = plan_with(probe.applied(), &end, Some(&maglev()))
        .ops()
        .count();
    for n in 0..total {
        let mut w = synced();
        w.maps_mut_for_tests().fail_at = Some(w.maps().log.len() + n);
        let report = w.sync(&end);
        assert!(!report.failures.is_empty(), "failure {n} was not reported");
        assert!(w.sync(&end).is_complete(), "retry after failure {n}");
        assert_eq!(w.applied().maglev.len(), 1, "after failure {n}");
        for f in &stay {
            assert_eq!(named(&w, f), ids[1].0, "{f} after failure {n}");
        }
    }
}
