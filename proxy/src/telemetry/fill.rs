//! Map fill levels: the warning that fires before a map overflows.
//!
//! A map at or above [`WARN_AT`] of its capacity is reported once, when it
//! gets there; it is reported again, as recovered, once it is back under
//! [`CLEAR_AT`] (the gap keeps a map hovering at the threshold from logging
//! at every sync). Overflow itself is handled elsewhere (frontends that do
//! not fit are served from userspace); this is the early notice.
//!
//! Pure: the caller logs what [`FillWatch::observe`] returns.

use std::collections::BTreeSet;

/// A map's name and its `max_entries`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapCapacity {
    pub map: &'static str,
    pub capacity: u32,
}

/// The share of a map's capacity at which it is reported as nearly full.
pub const WARN_AT: f64 = 0.9;
/// The share under which a nearly full map is reported as recovered.
pub const CLEAR_AT: f64 = 0.85;

/// A map that crossed a threshold at this observation.
#[derive(Clone, Debug, PartialEq)]
pub struct FillChange {
    pub map: &'static str,
    pub entries: u64,
    pub capacity: u32,
    /// `true`: it reached [`WARN_AT`]; `false`: it fell under [`CLEAR_AT`].
    pub nearly_full: bool,
}

impl FillChange {
    pub fn ratio(&self) -> f64 {
        ratio(self.entries, self.capacity)
    }
}

/// The flag that sizes `map`, for the warning's advice; `None` for a map
/// whose size is fixed by the object (`proxy_common::capacity`).
pub fn size_flag(map: &str) -> Option<&'static str> {
    use proxy_common::names;
    match map {
        names::SVC_V4 | names::SVC_V6 => Some("--service-map-entries"),
        names::BACKEND_V4 | names::BACKEND_V6 => Some("--backend-map-entries"),
        _ => None,
    }
}

/// The warning's advice for a nearly full `map`.
pub fn advice(map: &str) -> String {
    match size_flag(map) {
        Some(flag) => format!("raise {flag} (it applies when the maps are created)"),
        None => "its size is fixed; remove unused Services".to_owned(),
    }
}

/// `entries / capacity`, 0 for a map of no capacity.
pub fn ratio(entries: u64, capacity: u32) -> f64 {
    if capacity == 0 {
        0.0
    } else {
        entries as f64 / f64::from(capacity)
    }
}

/// Which maps are nearly full now.
#[derive(Debug, Default)]
pub struct FillWatch {
    nearly_full: BTreeSet<&'static str>,
}

impl FillWatch {
    /// The maps that crossed a threshold since the last call, given each
    /// map's entries and every map's capacity (maps without one are skipped).
    pub fn observe(
        &mut self,
        entries: &[(&'static str, u64)],
        capacities: &[MapCapacity],
    ) -> Vec<FillChange> {
        let mut out = Vec::new();
        for &(map, n) in entries {
            let Some(capacity) = capacities.iter().find(|c| c.map == map).map(|c| c.capacity)
            else {
                continue;
            };
            let r = ratio(n, capacity);
            let was = self.nearly_full.contains(map);
            let now = if was { r >= CLEAR_AT } else { r >= WARN_AT };
            if now != was {
                if now {
                    self.nearly_full.insert(map);
                } else {
                    self.nearly_full.remove(map);
                }
                out.push(FillChange {
                    map,
                    entries: n,
                    capacity,
                    nearly_full: now,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> Vec<MapCapacity> {
        vec![MapCapacity {
            map: "SVC_V4",
            capacity: 100,
        }]
    }

    #[test]
    fn reported_once_at_ninety_percent_and_again_under_eighty_five() {
        let mut watch = FillWatch::default();
        let at = |watch: &mut FillWatch, n| watch.observe(&[("SVC_V4", n)], &caps());
        assert!(at(&mut watch, 89).is_empty());
        let up = at(&mut watch, 90);
        assert_eq!(up.len(), 1);
        assert!(up[0].nearly_full);
        assert!((up[0].ratio() - 0.9).abs() < 1e-9);
        assert!(at(&mut watch, 95).is_empty(), "once");
        assert!(at(&mut watch, 86).is_empty(), "hysteresis");
        let down = at(&mut watch, 84);
        assert_eq!(down.len(), 1);
        assert!(!down[0].nearly_full);
        assert!(at(&mut watch, 89).is_empty());
    }

    #[test]
    fn each_sized_map_names_its_flag() {
        for (map, flag) in [
            ("SVC_V4", "--service-map-entries"),
            ("SVC_V6", "--service-map-entries"),
            ("BACKEND_V4", "--backend-map-entries"),
            ("BACKEND_V6", "--backend-map-entries"),
        ] {
            assert_eq!(size_flag(map), Some(flag), "{map}");
            assert!(advice(map).contains(flag), "{map}");
        }
        assert_eq!(size_flag("STATS"), None);
    }

    #[test]
    fn maps_without_a_capacity_are_skipped() {
        let mut watch = FillWatch::default();
        assert!(watch.observe(&[("AFFINITY", 1_000)], &caps()).is_empty());
        assert_eq!(ratio(5, 0), 0.0);
    }
}
