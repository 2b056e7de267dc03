//! `inspect maglev`: the tc path's Maglev configuration (`MAGLEV_CFG`: table
//! size and seed, or random selection) and, per table in `MAGLEV` (one per
//! Service port, family and scope, shared by its external frontends), the
//! frontends whose slot 0 names it and each backend's
//! share of its entries. Built from the [`Dataset`] and the decoded tables
//! (pure: no I/O); [`super::Pins::maglev`] reads them.

use std::{collections::BTreeMap, net::IpAddr};

use proxy_common::MaglevConfig;
use serde::Serialize;

use super::{
    filter::Filter,
    render::{Table, View},
    view::ServiceRef,
};
use crate::dataplane::{layout::socket, maglev::Tables, reader::Dataset};

/// Bytes of kernel memory one `MAGLEV` table costs: its element (hash table
/// header, key and `4 × MAX_SIZE` bytes of backend ids) fits one 4 KiB
/// allocation (see `proxy_common::maglev::MAX_SIZE`).
pub const TABLE_BYTES: u64 = 4096;

/// `inspect maglev`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MaglevView {
    /// `maglev`, or `random` (`MAGLEV_CFG` size 0, or not pinned).
    pub algorithm: &'static str,
    /// `MAGLEV_CFG`: entries per table (0 under `random`).
    pub table_size: u32,
    /// `MAGLEV_CFG`: the cluster-wide seed of the 5-tuple hash.
    pub seed: u32,
    /// Whether `MAGLEV_CFG` and `MAGLEV` are pinned (pins of a layout without
    /// Maglev have neither).
    pub maps_present: bool,
    /// Kernel memory of the tables shown, [`TABLE_BYTES`] each.
    pub memory_bytes: u64,
    pub tables: Vec<MaglevTableEntry>,
}

/// One table: the backends of the frontends sharing it, in one scope.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MaglevTableEntry {
    /// The table's id (`MAGLEV` key): the lowest rev-NAT id of the
    /// frontends sharing it.
    pub rev_nat_id: u32,
    /// `internal`, or `external` (an `externalTrafficPolicy: Local`
    /// frontend's table of local endpoints, for external clients).
    pub scope: &'static str,
    /// The frontends (`VIP:port/protocol`) whose slot 0 in this scope names
    /// this table.
    pub frontends: Vec<String>,
    /// `null` without a name.
    pub service: Option<ServiceRef>,
    /// The table's length (the configured size, unless written under another).
    pub entries: usize,
    /// Each backend's share, by backend id.
    pub backends: Vec<MaglevShare>,
}

/// How many entries of a table one backend owns.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MaglevShare {
    pub backend_id: u32,
    /// `null` when the backend entry is missing.
    pub addr: Option<IpAddr>,
    pub port: Option<u16>,
    pub entries: usize,
    /// `entries` over the table's length, in percent (two decimals).
    pub percent: f64,
}

impl Dataset {
    /// `inspect maglev`: `config` (`None`: `MAGLEV_CFG` not pinned) and
    /// `tables`; a table is shown when one of its frontends matches `filter`
    /// (a table whose frontend is gone matches only an empty filter).
    pub fn maglev(
        &self,
        config: Option<MaglevConfig>,
        tables: &Tables,
        filter: &Filter,
    ) -> MaglevView {
        let mut frontends: BTreeMap<(u32, u8), Vec<String>> = BTreeMap::new();
        let mut matching: BTreeMap<(u32, u8), bool> = BTreeMap::new();
        for (key, entries) in &self.frontends {
            let Some(master) = entries.master.as_ref() else {
                continue;
            };
            let id = (master.maglev_table_id(), key.scope);
            frontends.entry(id).or_default().push(key.to_string());
            let owner = self.service_ref(master.rev_nat_id);
            *matching.entry(id).or_default() |= filter.matches(key.addr, owner.as_ref());
        }
        let tables: Vec<MaglevTableEntry> = tables
            .iter()
            .filter_map(|((rev_nat_id, scope), table)| {
                let id = (*rev_nat_id, scope.number());
                let shown = matching.get(&id).copied().unwrap_or(filter.is_empty());
                shown.then(|| self.maglev_table(*rev_nat_id, scope.number(), table, &frontends))
            })
            .collect();
        let maps_present = config.is_some();
        let config = config.unwrap_or_default();
        MaglevView {
            algorithm: if config.size == 0 { "random" } else { "maglev" },
            table_size: config.size,
            seed: config.seed,
            maps_present,
            memory_bytes: TABLE_BYTES * tables.len() as u64,
            tables,
        }
    }

    fn maglev_table(
        &self,
        rev_nat_id: u32,
        scope: u8,
        table: &[u32],
        frontends: &BTreeMap<(u32, u8), Vec<String>>,
    ) -> MaglevTableEntry {
        let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
        for id in table {
            *counts.entry(*id).or_default() += 1;
        }
        let backends = counts
            .into_iter()
            .map(|(backend_id, entries)| {
                let backend = self.backends.get(&backend_id);
                MaglevShare {
                    backend_id,
                    addr: backend.map(|b| b.addr),
                    port: backend.map(|b| b.port),
                    entries,
                    percent: percent(entries, table.len()),
                }
            })
            .collect();
        MaglevTableEntry {
            rev_nat_id,
            scope: super::compose::scope_name(scope),
            frontends: frontends
                .get(&(rev_nat_id, scope))
                .cloned()
                .unwrap_or_default(),
            service: self.service_ref(rev_nat_id),
            entries: table.len(),
            backends,
        }
    }
}

/// `part` of `whole` in percent, rounded to two decimals.
fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 * 10_000.0 / whole as f64).round() / 100.0
}

impl View for MaglevView {
    fn table(&self) -> String {
        if !self.maps_present {
            return "no Maglev maps pinned (MAGLEV, MAGLEV_CFG): pins of a layout without \
                    Maglev, whose tc path picks backends at random\n"
                .to_owned();
        }
        let mut out = if self.algorithm == "random" {
            "algorithm: random (MAGLEV_CFG size 0: the tc path picks backends at random)\n"
                .to_owned()
        } else {
            format!(
                "algorithm: maglev  table size: {}  seed: {}\n",
                self.table_size, self.seed
            )
        };
        out.push_str(&format!(
            "tables: {}  kernel memory: {} KiB\n",
            self.tables.len(),
            self.memory_bytes / 1024
        ));
        if self.tables.is_empty() {
            return out;
        }
        let mut t = Table::new(&[
            "FRONTEND",
            "SCOPE",
            "SERVICE",
            "REVNAT",
            "ENTRIES",
            "BACKEND ID",
            "BACKEND",
            "SHARE",
        ]);
        for table in &self.tables {
            let frontends = if table.frontends.is_empty() {
                "-".to_owned()
            } else {
                table.frontends.join(", ")
            };
            let head = vec![
                frontends,
                table.scope.to_owned(),
                table
                    .service
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), ToString::to_string),
                table.rev_nat_id.to_string(),
                table.entries.to_string(),
            ];
            for (i, share) in table.backends.iter().enumerate() {
                let lead = if i == 0 {
                    head.clone()
                } else {
                    vec![String::new(); head.len()]
                };
                let backend = match (share.addr, share.port) {
                    (Some(addr), Some(port)) => socket(addr, port),
                    _ => "backend missing".to_owned(),
                };
                t.row(
                    [
                        lead,
                        vec![
                            share.backend_id.to_string(),
                            backend,
                            format!("{} ({:.2} %)", share.entries, share.percent),
                        ],
                    ]
                    .concat(),
                );
            }
        }
        out.push_str(&t.render());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::percent;

    #[test]
    fn percentages_round_to_two_decimals() {
        assert_eq!(percent(250, 997), 25.08);
        assert_eq!(percent(0, 997), 0.0);
        assert_eq!(percent(1, 0), 0.0);
    }
}
