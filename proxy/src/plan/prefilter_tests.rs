//! Writer tests of the socket hooks' pre-filter bitmap (`SVC_FILTER`): a
//! frontend's bit is set before it is published (the fake maps check that
//! after every operation), cleared once it is gone unless a live frontend
//! shares it, and filled from the service map when a writer starts.
#![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

use super::{
    prefilter::{BitRefs, Prefilter},
    tests::{desired, fe, synced},
    *,
};
use crate::dataplane::{Writer, fake::FakeMaps, writer::StepError};

/// What the kernel's bitmap must be for what the maps publish.
fn expected(w: &Writer<FakeMaps>) -> Prefilter {
    BitRefs::of(prefilter::published(&w.maps().contents)).bitmap()
}

#[test]
fn the_bitmap_holds_the_published_frontends_and_loses_the_removed_ones() {
    let both = desired(&[
        ("10.96.0.10:80", &["10.1.0.1:8080"]),
        ("[fd00::10]:53", &["[fd00::1]:53"]),
    ]);
    let mut w = synced(&both);
    let filter = &w.maps().filter;
    assert!(filter.contains(&fe("10.96.0.10:80")));
    assert!(filter.contains(&fe("[fd00::10]:53")));
    assert!(!filter.contains(&fe("10.96.0.10:81")));
    assert_eq!(filter.bits_set(), 2);
    assert_eq!(w.prefilter(), filter);

    assert!(
        w.sync(&desired(&[("10.96.0.10:80", &["10.1.0.1:8080"])]))
            .is_complete()
    );
    assert!(!w.maps().filter.contains(&fe("[fd00::10]:53")));
    assert_eq!(w.maps().filter, expected(&w));

    assert!(w.sync(&DesiredState::default()).is_complete());
    assert_eq!(w.maps().filter, Prefilter::default());
}

/// Two ClusterIP ports whose bits are the same.
fn colliding() -> (String, String) {
    let first = "10.96.0.10:1".to_owned();
    let one = Prefilter::of([&fe(&first)]);
    let other = (2..=u16::MAX)
        .map(|port| format!("10.96.0.10:{port}"))
        .find(|f| one.contains(&fe(f)))
        .unwrap();
    (first, other)
}

#[test]
fn a_bit_shared_with_a_live_frontend_stays_set() {
    let (gone, live) = colliding();
    let mut w = synced(&desired(&[
        (&gone, &["10.1.0.1:8080"]),
        (&live, &["10.1.0.2:8080"]),
    ]));
    assert_eq!(w.maps().filter.bits_set(), 1);
    let report = w.sync(&desired(&[(&live, &["10.1.0.2:8080"])]));
    assert!(report.is_complete(), "{report:?}");
    assert!(
        w.maps().filter.contains(&fe(&live)),
        "the live frontend keeps its bit"
    );
    // And the scoped plan (the sync loop's usual path) does the same.
    let touched = [fe(&live)].into_iter().collect();
    w.sync_frontends(&DesiredState::default(), &touched);
    assert_eq!(w.maps().filter, Prefilter::default());
}

#[test]
fn a_failed_bit_write_leaves_the_frontend_unpublished_until_the_retry() {
    let mut w = synced(&DesiredState::default());
    let writes = w.maps().filter_writes;
    w.maps_mut_for_tests().fail_filter_from = Some(writes);
    let d = desired(&[("10.96.0.10:80", &["10.1.0.1:8080"])]);
    let report = w.sync(&d);
    assert!(
        matches!(report.failures[..], [ref f] if matches!(f.error, StepError::PrefilterBit(_))),
        "{report:?}"
    );
    assert!(prefilter::published(&w.maps().contents).next().is_none());
    w.maps_mut_for_tests().fail_filter_from = None;
    assert!(w.sync(&d).is_complete());
    assert!(w.maps().filter.contains(&fe("10.96.0.10:80")));
}

#[test]
fn a_new_writer_fills_the_bitmap_of_older_pins_from_the_service_map() {
    let w = synced(&desired(&[
        ("10.96.0.10:80", &["10.1.0.1:8080"]),
        ("10.96.0.11:443", &["10.1.0.2:8443"]),
    ]));
    // Pins from before the bitmap existed: the daemon created it empty.
    let mut maps = FakeMaps::default();
    maps.contents = w.maps().contents.clone();
    assert_eq!(maps.filter, Prefilter::default());
    let restarted = Writer::new(maps).unwrap();
    assert_eq!(restarted.maps().filter, expected(&restarted));
    assert_eq!(restarted.maps().filter.bits_set(), 2);
}

#[test]
fn reconcile_repairs_a_bitmap_changed_behind_our_back() {
    let d = desired(&[("10.96.0.10:80", &["10.1.0.1:8080"])]);
    let mut w = synced(&d);
    w.maps_mut_for_tests().filter = Prefilter::default();
    w.reconcile(&d).unwrap();
    assert!(w.maps().filter.contains(&fe("10.96.0.10:80")));
}
