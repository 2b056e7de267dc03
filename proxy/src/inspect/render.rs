//! Turns a view from [`super::view`] into text: an aligned table for
//! people, or pretty JSON whose shape is the views' fields (documented in the
//! README under "Inspecting the dataplane"). Pure: no I/O.

use serde::Serialize;

use super::{
    InspectError,
    view::{AffinityView, BackendsView, ConntrackView, ServicesView, StatsView, StatusView},
};
use crate::dataplane::layout::socket;

/// `--output`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns, for people.
    #[default]
    Table,
    /// Pretty-printed JSON, for scripts.
    Json,
}

/// A view that can be shown as a table; JSON comes from its fields.
pub trait View: Serialize {
    fn table(&self) -> String;
}

/// `view` as `output`, ending with a newline.
pub fn render<V: View>(view: &V, output: Output) -> Result<String, InspectError> {
    match output {
        Output::Table => Ok(view.table()),
        Output::Json => {
            let mut text = serde_json::to_string_pretty(view).map_err(InspectError::Json)?;
            text.push('\n');
            Ok(text)
        }
    }
}

/// Columns padded to their widest cell, two spaces apart.
pub(super) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(super) fn new(header: &[&'static str]) -> Self {
        Self {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub(super) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(super) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let width = widths.get(i).copied().unwrap_or(0);
                line.extend(std::iter::repeat_n(
                    ' ',
                    width.saturating_sub(cell.chars().count()),
                ));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// `850ms`, `12.3s`, `5m03s`, `2h01m`.
pub fn human_age(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{}.{}s", ms / 1_000, ms % 1_000 / 100),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms % 60_000 / 1_000),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

impl View for ServicesView {
    fn table(&self) -> String {
        if self.services.is_empty() {
            return "no frontends in the service maps\n".to_owned();
        }
        let mut t = Table::new(&[
            "FRONTEND",
            "KIND",
            "SCOPE",
            "SERVICE",
            "REVNAT",
            "POLICY",
            "ETP",
            "AFFINITY",
            "SLOTS",
            "SLOT",
            "BACKEND ID",
            "BACKEND",
        ]);
        for s in &self.services {
            let head = vec![
                s.frontend.clone(),
                s.kind.to_owned(),
                s.scope.to_owned(),
                or_dash(s.service.as_ref()),
                s.rev_nat_id.to_string(),
                or_dash(s.traffic_policy),
                or_dash(s.external_traffic_policy),
                or_dash(s.affinity_timeout_seconds.map(|t| format!("{t}s"))),
                s.slot_count.to_string(),
            ];
            if s.slots.is_empty() {
                t.row([head, vec!["-".into(), "-".into(), "-".into()]].concat());
                continue;
            }
            for (i, slot) in s.slots.iter().enumerate() {
                let lead = if i == 0 {
                    head.clone()
                } else {
                    vec![String::new(); head.len()]
                };
                let backend = match (slot.backend_id, slot.addr, slot.port) {
                    (None, _, _) => "slot missing".to_owned(),
                    (Some(_), Some(addr), Some(port)) => socket(addr, port),
                    (Some(_), _, _) => "backend missing".to_owned(),
                };
                t.row(
                    [
                        lead,
                        vec![slot.slot.to_string(), or_dash(slot.backend_id), backend],
                    ]
                    .concat(),
                );
            }
        }
        let mut out = t.render();
        for s in &self.services {
            if let Some(ranges) = &s.source_ranges {
                let admitted = if ranges.is_empty() {
                    "no source".to_owned()
                } else {
                    ranges.join(", ")
                };
                out.push_str(&format!(
                    "{} ({}) admits only: {admitted}\n",
                    s.frontend, s.scope
                ));
            }
        }
        out
    }
}

impl View for BackendsView {
    fn table(&self) -> String {
        if self.backends.is_empty() {
            return "no backends in the backend maps\n".to_owned();
        }
        let mut t = Table::new(&["ID", "BACKEND", "PROTO", "FRONTENDS", "LOCAL"]);
        for b in &self.backends {
            t.row(vec![
                b.id.to_string(),
                socket(b.addr, b.port),
                b.protocol.clone(),
                // In no published slot: kept for the per-packet path's
                // established flows (its endpoint terminates, or was deleted
                // and drains for the grace period).
                if b.frontends == 0 {
                    "0 (retained)".to_owned()
                } else {
                    b.frontends.to_string()
                },
                if b.local { "yes" } else { "no" }.to_owned(),
            ]);
        }
        t.render()
    }
}

impl View for AffinityView {
    fn table(&self) -> String {
        if self.affinity.is_empty() {
            return "no session-affinity entries\n".to_owned();
        }
        let mut t = Table::new(&[
            "CLIENT NETNS",
            "FRONTEND",
            "SERVICE",
            "BACKEND ID",
            "BACKEND",
            "SLOT",
            "AGE",
            "TIMEOUT",
            "STATE",
        ]);
        for a in &self.affinity {
            t.row(vec![
                a.client_netns_cookie.to_string(),
                or_dash(a.frontend.as_ref()),
                or_dash(a.service.as_ref()),
                a.backend_id.to_string(),
                a.backend.clone().unwrap_or_else(|| "missing".to_owned()),
                a.slot.to_string(),
                human_age(a.age_ms),
                or_dash(a.timeout_seconds.map(|t| format!("{t}s"))),
                or_dash(a.expired.map(|e| if e { "expired" } else { "live" })),
            ]);
        }
        t.render()
    }
}

impl View for ConntrackView {
    fn table(&self) -> String {
        if let Some(reason) = self.reason {
            return format!("{reason}\n");
        }
        let mut t = Table::new(&[
            "PROTO", "DIR", "SRC", "DST", "NEW SRC", "NEW DST", "FLAGS", "FRONTEND", "SERVICE",
            "BACKEND", "IDLE",
        ]);
        for f in &self.flows {
            let mut flags: Vec<&str> = Vec::new();
            if f.snat {
                flags.push("snat");
            }
            if f.dsr {
                flags.push("dsr");
            }
            if f.closing {
                flags.push("closing");
            }
            if f.pending {
                flags.push("pending");
            }
            t.row(vec![
                f.protocol.clone(),
                f.direction.to_owned(),
                f.src.clone(),
                f.dst.clone(),
                f.new_src.clone(),
                f.new_dst.clone(),
                if flags.is_empty() {
                    "-".to_owned()
                } else {
                    flags.join(",")
                },
                or_dash(f.frontend.as_ref()),
                or_dash(f.service.as_ref()),
                or_dash(f.backend.as_ref()),
                human_age(f.idle_ms),
            ]);
        }
        t.render()
    }
}

impl View for StatsView {
    fn table(&self) -> String {
        let mut t = Table::new(&["REASON", "COUNT"]);
        for s in &self.stats {
            t.row(vec![s.reason.to_owned(), s.count.to_string()]);
        }
        t.render()
    }
}

impl View for StatusView {
    fn table(&self) -> String {
        let mut out = format!(
            "mode:      {} ({})\npin path:  {}\n",
            self.mode,
            self.datapath,
            self.pin_path.display()
        );
        match &self.vip_routes {
            None => out.push_str("vip routes: could not be listed\n"),
            Some(vips) if vips.is_empty() => {}
            Some(vips) => {
                let list: Vec<String> = vips.iter().map(ToString::to_string).collect();
                let why = if self.mode == crate::telemetry::Mode::Userspace.as_str() {
                    "VIPs made local, proxied by the daemon"
                } else {
                    "frontends beyond the maps' capacity, served from userspace"
                };
                out.push_str(&format!(
                    "vip routes: {} ({why}): {}\n",
                    vips.len(),
                    list.join(", ")
                ));
            }
        }
        out.push('\n');
        if self.mode == crate::telemetry::Mode::Userspace.as_str() {
            out.push_str(
                "no pinned maps or links: the eBPF dataplane is not in use on this node \
                 (its views show nothing)\n",
            );
            return out;
        }
        if self.links.is_empty() {
            out.push_str("no links pinned: the socket hooks are not attached\n");
        } else {
            let mut t = Table::new(&[
                "PROGRAM",
                "LINK ID",
                "PROG ID",
                "ATTACH TYPE",
                "CGROUP ID",
                "CGROUP",
            ]);
            for l in &self.links {
                let cgroup = match (&l.error, l.cgroup_id, &l.cgroup_path) {
                    (Some(error), _, _) => error.clone(),
                    (None, Some(0), _) => "detached".to_owned(),
                    (None, _, Some(path)) => path.display().to_string(),
                    (None, _, None) => "-".to_owned(),
                };
                t.row(vec![
                    l.program.clone(),
                    or_dash(l.link_id),
                    or_dash(l.program_id),
                    or_dash(l.attach_type.as_ref()),
                    or_dash(l.cgroup_id),
                    cgroup,
                ]);
            }
            out.push_str(&t.render());
        }
        out.push('\n');
        if self.tc_links.is_empty() {
            out.push_str("no tc links pinned: the tc programs are not attached\n");
        } else {
            let mut t = Table::new(&[
                "DEVICE",
                "IFINDEX",
                "DIRECTION",
                "PROGRAM",
                "LINK ID",
                "PROG ID",
                "STATE",
            ]);
            for l in &self.tc_links {
                let state = match (&l.error, l.attached) {
                    (Some(error), _) => error.clone(),
                    (None, true) => "attached".to_owned(),
                    (None, false) => "detached".to_owned(),
                };
                t.row(vec![
                    or_dash(l.device.as_ref()),
                    l.ifindex.to_string(),
                    l.direction.to_owned(),
                    l.program.clone(),
                    or_dash(l.link_id),
                    or_dash(l.program_id),
                    state,
                ]);
            }
            out.push_str(&t.render());
        }
        if !self.tail_calls.is_empty() {
            out.push('\n');
            let mut t = Table::new(&["TAIL SLOT", "PROGRAM", "PROG ID", "STATE"]);
            for c in &self.tail_calls {
                let state = match (&c.error, c.program_id) {
                    (Some(error), _) => error.clone(),
                    (None, Some(_)) => "filled".to_owned(),
                    (None, None) => "empty: its packets pass untranslated".to_owned(),
                };
                t.row(vec![
                    c.slot.to_string(),
                    c.program.to_owned(),
                    or_dash(c.program_id),
                    state,
                ]);
            }
            out.push_str(&t.render());
        }
        out.push('\n');
        let mut t = Table::new(&["MAP", "TYPE", "ENTRIES", "MAX ENTRIES", "FILL"]);
        for m in &self.maps {
            let fill = match (&m.error, m.present, m.fill_percent) {
                (Some(error), _, _) => error.clone(),
                (None, false, _) => "not pinned".to_owned(),
                (None, true, Some(p)) => format!("{p:.2}%"),
                (None, true, None) => "-".to_owned(),
            };
            t.row(vec![
                m.name.to_owned(),
                or_dash(m.kind.as_ref()),
                or_dash(m.entries),
                or_dash(m.max_entries),
                fill,
            ]);
        }
        out.push_str(&t.render());
        out
    }
}
