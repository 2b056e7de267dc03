//! Keeps the programs' per-flow state across a layout migration: conntrack
//! (`CT_*`, `CT_PENDING_*`), ClientIP affinity (`AFFINITY`) and the sockets'
//! rev-NAT (`SOCK_RNAT_*`) are copied from the old layout's pins into the
//! new maps, their ids translated ([`translate`]), so NodePort flows keep
//! their backend, affinity clients stay, and `getpeername()` keeps showing
//! the VIP.
//!
//! The loader calls [`copy`] twice (see `SocketHooks::ensure`): once after
//! the first sync programmed the new service maps and before the programs
//! are swapped (every entry, overwriting), then once after the swap with
//! `BPF_NOEXIST` (entries the old programs made in between; an entry the new
//! programs already made wins). Then the old pins are removed. Only layout 2
//! is read ([`v2`]); older layouts (0, 1) start the new maps empty, as before.

pub mod translate;
pub mod v2;

use std::path::{Path, PathBuf};

use aya::maps::{HashMap, Map, MapData, MapError};
use proxy_common::names;

use crate::{dataplane::reader, plan::Applied};
use translate::{OldIds, Translator};

/// The layout whose LRU maps a migration can read.
pub const READS_VERSION: u32 = 2;

/// `BPF_NOEXIST`: insert only if the key is absent.
const NOEXIST: u64 = 1;

/// Why a migration could not read the old maps or write the new ones.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot open the pinned map {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<MapError>,
    },
    #[error("cannot read the pinned map {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: Box<reader::ReadError>,
    },
}

/// Which copy this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// Before the swap: every entry, overwriting.
    BeforeSwap,
    /// After the swap: only keys the new maps do not hold (`BPF_NOEXIST`).
    AfterSwap,
}

/// What one pass did to one map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapCopy {
    pub map: &'static str,
    /// Entries written into the new map.
    pub copied: u64,
    /// Entries whose frontend or backend no longer exists (or that the new
    /// map refused).
    pub dropped: u64,
    /// Entries the new map already held (after the swap: the new programs'
    /// entry wins).
    pub kept_new: u64,
}

impl MapCopy {
    /// Adds another pass's counts.
    pub fn add(&mut self, other: &MapCopy) {
        self.copied += other.copied;
        self.dropped += other.dropped;
        self.kept_new += other.kept_new;
    }
}

/// Copies every LRU map of the old layout (`old_maps`, layout
/// [`READS_VERSION`]) into the new layout's (`new_maps`), translated against
/// the new writer's state. A map missing on either side is skipped.
pub fn copy(
    old_maps: &Path,
    new_maps: &Path,
    applied: &Applied,
    pass: Pass,
) -> Result<Vec<MapCopy>, MigrateError> {
    let old = Pins(old_maps);
    let new = Pins(new_maps);
    let ids = OldIds::new(
        &old.entries::<v2::ServiceKeyV4, v2::ServiceValue>(names::SVC_V4)?,
        &old.entries::<v2::ServiceKeyV6, v2::ServiceValue>(names::SVC_V6)?,
        &old.entries::<u32, v2::BackendV4>(names::BACKEND_V4)?,
        &old.entries::<u32, v2::BackendV6>(names::BACKEND_V6)?,
    );
    let t = Translator::new(&ids, applied);
    let flags = match pass {
        Pass::BeforeSwap => 0,
        Pass::AfterSwap => NOEXIST,
    };
    Ok(vec![
        copy_map(&old, &new, names::CT_V4, flags, |k, v| t.ct_v4(k, v))?,
        copy_map(&old, &new, names::CT_V6, flags, |k, v| t.ct_v6(k, v))?,
        copy_map(&old, &new, names::CT_PENDING_V4, flags, |k, v| {
            t.ct_v4(k, v)
        })?,
        copy_map(&old, &new, names::CT_PENDING_V6, flags, |k, v| {
            t.ct_v6(k, v)
        })?,
        copy_map(&old, &new, names::AFFINITY, flags, |k, v| t.affinity(k, v))?,
        copy_map(&old, &new, names::SOCK_RNAT_V4, flags, |k, v| {
            t.sock_v4(k, v)
        })?,
        copy_map(&old, &new, names::SOCK_RNAT_V6, flags, |k, v| {
            t.sock_v6(k, v)
        })?,
    ])
}

fn copy_map<OK: aya::Pod, OV: aya::Pod, NK: aya::Pod, NV: aya::Pod>(
    old: &Pins<'_>,
    new: &Pins<'_>,
    map: &'static str,
    flags: u64,
    translate: impl Fn(&OK, &OV) -> Option<(NK, NV)>,
) -> Result<MapCopy, MigrateError> {
    let mut out = MapCopy {
        map,
        ..MapCopy::default()
    };
    let Some(mut target) = new.open::<NK, NV>(map)? else {
        return Ok(out);
    };
    for (k, v) in old.entries::<OK, OV>(map)? {
        let Some((key, value)) = translate(&k, &v) else {
            out.dropped += 1;
            continue;
        };
        match target.insert(&key, &value, flags) {
            Ok(()) => out.copied += 1,
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                out.kept_new += 1;
            }
            Err(error) => {
                tracing::debug!(map, error = %error, "migration: the new map refused an entry");
                out.dropped += 1;
            }
        }
    }
    Ok(out)
}

/// A directory of pinned maps.
struct Pins<'a>(&'a Path);

impl Pins<'_> {
    /// The map pinned as `name`, or `None` when there is none.
    fn open<K: aya::Pod, V: aya::Pod>(
        &self,
        name: &'static str,
    ) -> Result<Option<HashMap<MapData, K, V>>, MigrateError> {
        let path = self.0.join(name);
        if !path.exists() {
            return Ok(None);
        }
        let open = |source| MigrateError::Open {
            path: path.clone(),
            source: Box::new(source),
        };
        let data = MapData::from_pin(&path).map_err(open)?;
        let map = Map::from_map_data(data).map_err(open)?;
        HashMap::try_from(map).map(Some).map_err(open)
    }

    /// Every entry of the map pinned as `name` (none when there is none).
    fn entries<K: aya::Pod, V: aya::Pod>(
        &self,
        name: &'static str,
    ) -> Result<Vec<(K, V)>, MigrateError> {
        let Some(map) = self.open::<K, V>(name)? else {
            return Ok(Vec::new());
        };
        reader::walk(&map, name, true).map_err(|source| MigrateError::Read {
            path: self.0.join(name),
            source: Box::new(source),
        })
    }
}
