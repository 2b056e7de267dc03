//! `proxy diff`: the desired frontends (the daemon's, or computed from
//! manifests) against what the pinned maps hold, frontend by frontend and
//! scope by scope: missing, extra and different entries.
//!
//! Pure: compares a [`DesiredDump`] with an `inspect services` view. What it
//! compares per (frontend, scope): the owning Service, the set of backends
//! (`addr:port`) the slots reach, and the affinity timeout. A desired
//! frontend with `externalTrafficPolicy: Local` has a second, external entry.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::view::{ServiceEntry, ServicesView};
use crate::{dataplane::layout::socket, query::DesiredDump};

/// The result of `proxy diff`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DiffView {
    /// Entries that agree.
    pub same: usize,
    /// Entries that do not, in frontend then scope order.
    pub differences: Vec<Difference>,
}

impl DiffView {
    pub fn agrees(&self) -> bool {
        self.differences.is_empty()
    }
}

/// One entry that differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub frontend: String,
    /// `internal` or `external`.
    pub scope: &'static str,
    pub status: Status,
    /// The Service that owns it (desired, else the maps').
    pub service: Option<String>,
    /// Backends desired but not in the maps.
    pub missing_backends: Vec<String>,
    /// Backends in the maps but not desired.
    pub extra_backends: Vec<String>,
    /// Anything else that differs, in words.
    pub notes: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Desired, not in the maps.
    Missing,
    /// In the maps, not desired.
    Extra,
    /// In both, with different contents.
    Different,
}

/// What one entry should hold.
struct Want<'a> {
    service: &'a str,
    backends: BTreeSet<String>,
    affinity: Option<u32>,
}

/// Compares `desired` with the maps' `services` view.
pub fn diff(desired: &DesiredDump, held: &ServicesView) -> DiffView {
    let mut want: BTreeMap<(String, &'static str), Want<'_>> = BTreeMap::new();
    for (frontend, d) in &desired.frontends {
        let entry = |backends: &[String]| Want {
            service: &d.service,
            backends: backends.iter().cloned().collect(),
            affinity: d.affinity_timeout,
        };
        want.insert((frontend.clone(), "internal"), entry(&d.backends));
        if let Some(external) = &d.external_backends {
            want.insert((frontend.clone(), "external"), entry(external));
        }
    }
    let mut have: BTreeMap<(String, &'static str), &ServiceEntry> = BTreeMap::new();
    for e in &held.services {
        have.insert((e.frontend.clone(), e.scope), e);
    }

    let mut out = DiffView::default();
    let keys: BTreeSet<&(String, &'static str)> = want.keys().chain(have.keys()).collect();
    for key in keys {
        let (frontend, scope) = (key.0.clone(), key.1);
        match (want.get(key), have.get(key)) {
            (Some(w), None) => out.differences.push(Difference {
                frontend,
                scope,
                status: Status::Missing,
                service: Some(w.service.to_owned()),
                missing_backends: w.backends.iter().cloned().collect(),
                extra_backends: Vec::new(),
                notes: Vec::new(),
            }),
            (None, Some(h)) => out.differences.push(Difference {
                frontend,
                scope,
                status: Status::Extra,
                service: owner(h),
                missing_backends: Vec::new(),
                extra_backends: held_backends(h).0.into_iter().collect(),
                notes: Vec::new(),
            }),
            (Some(w), Some(h)) => {
                let (backends, holes) = held_backends(h);
                let mut notes = Vec::new();
                if holes > 0 {
                    notes.push(format!("{holes} slot(s) reach no backend entry"));
                }
                match owner(h) {
                    Some(o) if o == w.service => {}
                    Some(o) => {
                        notes.push(format!("owned by {o} in the maps, {} desired", w.service))
                    }
                    None => notes.push("no owner name in the maps".to_owned()),
                }
                if h.affinity_timeout_seconds != w.affinity {
                    notes.push(format!(
                        "affinity timeout {} in the maps, {} desired",
                        seconds(h.affinity_timeout_seconds),
                        seconds(w.affinity)
                    ));
                }
                let missing: Vec<String> = w.backends.difference(&backends).cloned().collect();
                let extra: Vec<String> = backends.difference(&w.backends).cloned().collect();
                if missing.is_empty() && extra.is_empty() && notes.is_empty() {
                    out.same += 1;
                } else {
                    out.differences.push(Difference {
                        frontend,
                        scope,
                        status: Status::Different,
                        service: Some(w.service.to_owned()),
                        missing_backends: missing,
                        extra_backends: extra,
                        notes,
                    });
                }
            }
            (None, None) => {}
        }
    }
    out
}

fn owner(e: &ServiceEntry) -> Option<String> {
    e.service
        .as_ref()
        .map(|s| format!("{}/{}", s.namespace, s.name))
}

/// The backends an entry's slots reach, and how many slots reach none.
fn held_backends(e: &ServiceEntry) -> (BTreeSet<String>, usize) {
    let mut holes = 0;
    let mut set = BTreeSet::new();
    for slot in &e.slots {
        match (slot.addr, slot.port) {
            (Some(addr), Some(port)) => {
                set.insert(socket(addr, port));
            }
            _ => holes += 1,
        }
    }
    (set, holes)
}

fn seconds(t: Option<u32>) -> String {
    t.map_or_else(|| "off".to_owned(), |t| format!("{t}s"))
}

/// The diff as text, for people.
pub fn text(view: &DiffView) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for d in &view.differences {
        let status = match d.status {
            Status::Missing => "MISSING",
            Status::Extra => "EXTRA",
            Status::Different => "DIFFERENT",
        };
        let service = d.service.as_deref().unwrap_or("(unnamed)");
        let _ = writeln!(out, "{status:<9} {} {} {service}", d.frontend, d.scope);
        if !d.missing_backends.is_empty() {
            let _ = writeln!(
                out,
                "  - backends desired, not in the maps: {}",
                d.missing_backends.join(" ")
            );
        }
        if !d.extra_backends.is_empty() {
            let _ = writeln!(
                out,
                "  + backends in the maps, not desired: {}",
                d.extra_backends.join(" ")
            );
        }
        for note in &d.notes {
            let _ = writeln!(out, "  ! {note}");
        }
    }
    let _ = writeln!(
        out,
        "{} entries agree, {} differ",
        view.same,
        view.differences.len()
    );
    out
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::{
        inspect::view::{ServiceRef, SlotEntry},
        query::DesiredFrontend,
    };

    fn held(frontend: &str, scope: &'static str, backends: &[(&str, u16)]) -> ServiceEntry {
        ServiceEntry {
            frontend: frontend.to_owned(),
            vip: IpAddr::from([10, 96, 0, 10]),
            port: 80,
            protocol: "TCP".to_owned(),
            service: Some(ServiceRef {
                namespace: "default".to_owned(),
                name: "web".to_owned(),
                port_name: "http".to_owned(),
            }),
            rev_nat_id: 1,
            traffic_policy: Some("Cluster"),
            affinity_timeout_seconds: None,
            flags: 0,
            kind: "ClusterIP",
            scope,
            external_traffic_policy: None,
            slot_count: u16::try_from(backends.len()).expect("test data"),
            slots: backends
                .iter()
                .zip(1..)
                .map(|((a, p), slot)| SlotEntry {
                    slot,
                    backend_id: Some(u32::from(slot)),
                    addr: Some(a.parse().expect("test data")),
                    port: Some(*p),
                })
                .collect(),
            source_ranges: None,
        }
    }

    /// A frontend, its backends and its external scope's backends.
    type Row<'a> = (&'a str, &'a [&'a str], Option<&'a [&'a str]>);

    fn desired(frontends: &[Row<'_>]) -> DesiredDump {
        DesiredDump {
            frontends: frontends
                .iter()
                .map(|(f, b, e)| {
                    let list = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
                    (
                        (*f).to_owned(),
                        DesiredFrontend {
                            service: "default/web".to_owned(),
                            kind: "ClusterIP".to_owned(),
                            backends: list(b),
                            external_backends: e.map(list),
                            affinity_timeout: None,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn agreeing_maps_are_the_same() {
        let d = desired(&[("10.96.0.10:80/TCP", &["10.1.0.1:8080"], None)]);
        let h = ServicesView {
            services: vec![held("10.96.0.10:80/TCP", "internal", &[("10.1.0.1", 8080)])],
        };
        let v = diff(&d, &h);
        assert!(v.agrees(), "{v:?}");
        assert_eq!(v.same, 1);
        assert_eq!(text(&v), "1 entries agree, 0 differ\n");
    }

    #[test]
    fn missing_extra_and_different_entries() {
        let d = desired(&[
            (
                "10.96.0.10:80/TCP",
                &["10.1.0.1:8080", "10.1.0.2:8080"],
                None,
            ),
            ("10.96.0.11:80/TCP", &["10.1.0.1:8080"], Some(&[])),
        ]);
        let mut wrong = held(
            "10.96.0.10:80/TCP",
            "internal",
            &[("10.1.0.1", 8080), ("10.1.0.9", 8080)],
        );
        wrong.affinity_timeout_seconds = Some(60);
        let h = ServicesView {
            services: vec![
                wrong,
                held("10.96.0.11:80/TCP", "internal", &[("10.1.0.1", 8080)]),
                held("10.96.0.12:80/TCP", "internal", &[]),
            ],
        };
        let v = diff(&d, &h);
        let got: Vec<(&str, &str, Status)> = v
            .differences
            .iter()
            .map(|d| (d.frontend.as_str(), d.scope, d.status))
            .collect();
        assert_eq!(
            got,
            [
                ("10.96.0.10:80/TCP", "internal", Status::Different),
                ("10.96.0.11:80/TCP", "external", Status::Missing),
                ("10.96.0.12:80/TCP", "internal", Status::Extra),
            ]
        );
        assert_eq!(v.differences[0].missing_backends, ["10.1.0.2:8080"]);
        assert_eq!(v.differences[0].extra_backends, ["10.1.0.9:8080"]);
        assert_eq!(
            v.differences[0].notes,
            ["affinity timeout 60s in the maps, off desired"]
        );
        assert_eq!(v.same, 1);
        assert!(
            text(&v).contains("DIFFERENT 10.96.0.10:80/TCP internal default/web\n"),
            "{}",
            text(&v)
        );
    }
}
