//! The Maglev maps: `MAGLEV` (one table per external frontend and scope,
//! written by the plan's `PutMaglev`/`DeleteMaglev`) and `MAGLEV_CFG` (the
//! table size and cluster-wide seed; size 0 turns Maglev off in the tc path).

use std::{collections::BTreeMap, sync::Arc};

use aya::maps::{Array, HashMap, MapData};
use proxy_common::{MaglevConfig, MaglevTable, maglev, names};

use crate::plan::{BackendId, Maglev, RevNatId, Scope};

/// The plan's tables by `(rev-NAT id, scope)`, as `Applied::maglev` holds them.
pub type Tables = BTreeMap<(RevNatId, Scope), Arc<[BackendId]>>;

/// One table as the plan names it.
pub type Table = ((RevNatId, Scope), Arc<[BackendId]>);

/// The `MAGLEV_CFG` value for `maglev` (`None`: size 0, random selection).
pub fn config(maglev: Option<&Maglev>) -> MaglevConfig {
    maglev.map_or(MaglevConfig::default(), |m| MaglevConfig {
        size: m.size(),
        seed: m.seed(),
    })
}

/// The `MAGLEV` key of a table.
pub fn key(id: RevNatId, scope: Scope) -> u64 {
    maglev::key(id, scope.number())
}

/// The `MAGLEV` value of a table: its entries, then zeros.
pub fn value(table: &[BackendId]) -> MaglevTable {
    let mut out = MaglevTable {
        backends: [0; maglev::MAX_SIZE as usize],
    };
    for (slot, id) in out.backends.iter_mut().zip(table) {
        *slot = *id;
    }
    out
}

/// A `MAGLEV` entry back in the plan's terms; `None` for a key that cannot
/// be ours (an unknown scope). The table ends at its first zero (backend ids
/// start at 1, and a table fills all its `M` entries).
pub fn decode(key: u64, value: &MaglevTable) -> Option<Table> {
    let id = RevNatId::try_from(key & 0xffff_ffff).ok()?;
    let scope = Scope::from_number(u8::try_from(key >> 32).ok()?)?;
    let len = value
        .backends
        .iter()
        .position(|id| *id == 0)
        .unwrap_or(value.backends.len());
    Some(((id, scope), value.backends[..len].into()))
}

/// Reads every table.
pub fn read(map: &HashMap<MapData, u64, MaglevTable>) -> Result<Tables, super::MapError> {
    let mut out = BTreeMap::new();
    for item in map.iter() {
        let (k, v) = item.map_err(|e| super::MapError::Syscall {
            map: names::MAGLEV,
            op: "iterate",
            source: std::io::Error::other(e.to_string()),
        })?;
        let (key, table) = decode(k, &v).ok_or_else(|| super::MapError::Corrupt {
            map: names::MAGLEV,
            detail: format!("key {k:#x} has no valid scope"),
        })?;
        out.insert(key, table);
    }
    Ok(out)
}

/// Writes `MAGLEV_CFG` when it differs.
pub fn write_config(
    map: &mut Array<MapData, MaglevConfig>,
    maglev: Option<&Maglev>,
) -> Result<(), super::MapError> {
    let want = config(maglev);
    if map.get(&0, 0).ok() == Some(want) {
        return Ok(());
    }
    map.set(0, &want, 0).map_err(|e| super::MapError::Syscall {
        map: names::MAGLEV_CFG,
        op: "update",
        source: std::io::Error::other(e.to_string()),
    })
}
