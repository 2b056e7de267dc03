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
