//! Read-only views of the kernel maps for the metrics endpoint: each map's
//! capacity, how many entries the LRU maps hold, and the datapath counters.
//!
//! [`UsageReader`] holds its own handles on the maps (new file descriptors on
//! the same kernel objects), so a scrape reads them without sharing the
//! writer's handles or waiting for the sync loop. It must never write: the
//! writer is the only place map contents change.
//!
//! Entry counts of the service, backend and rev-NAT maps are not read here:
//! the writer's `Applied` mirror has them for free. The LRU maps have no
//! mirror, so they are counted by walking their keys, which costs one syscall
//! per entry; callers rate-limit it.
//!
//! The metrics read it through `telemetry::DataplaneUsage`, implemented here
//! so that `telemetry` needs nothing from the dataplane.

use std::{os::fd::AsFd as _, path::Path};

use aya::maps::{HashMap, IterableMap, Map, MapData, PerCpuArray};
use proxy_common::{
    AffinityKey, AffinityValue, Reason, SockRevNatKeyV4, SockRevNatKeyV6, SockRevNatV4,
    SockRevNatV6, names,
};

pub use crate::telemetry::MapCapacity;
use crate::{
    dataplane::{kernel::KernelMaps, maps::MapError},
    telemetry::{DataplaneUsage, UsageError},
};

/// One LRU map, typed so its keys can be walked.
enum LruMap {
    SockRevNatV4(HashMap<MapData, SockRevNatKeyV4, SockRevNatV4>),
    SockRevNatV6(HashMap<MapData, SockRevNatKeyV6, SockRevNatV6>),
    Affinity(HashMap<MapData, AffinityKey, AffinityValue>),
}

impl LruMap {
    fn name(&self) -> &'static str {
        match self {
            LruMap::SockRevNatV4(_) => names::SOCK_RNAT_V4,
            LruMap::SockRevNatV6(_) => names::SOCK_RNAT_V6,
            LruMap::Affinity(_) => names::AFFINITY,
        }
    }

    /// Walks the keys, never more than `max` of them.
    fn count(&self, max: u32) -> Result<u64, MapError> {
        fn keys<K: aya::Pod, V: aya::Pod>(
            map: &HashMap<MapData, K, V>,
            name: &'static str,
            max: u32,
        ) -> Result<u64, MapError> {
            let mut n = 0;
            // An entry evicted or deleted between two steps of the walk makes
            // the kernel restart from the first key, so under churn the walk
            // could go on: it stops at the capacity. The count is an estimate
            // either way, which is all a gauge of an LRU map can be.
            for key in map.keys().take(max as usize) {
                key.map_err(|e| read_error(name, "iterate", e))?;
                n += 1;
            }
            Ok(n)
        }
        match self {
            LruMap::SockRevNatV4(m) => keys(m, self.name(), max),
            LruMap::SockRevNatV6(m) => keys(m, self.name(), max),
            LruMap::Affinity(m) => keys(m, self.name(), max),
        }
    }
}

/// Read-only handles for metrics; see the module docs.
pub struct UsageReader {
    stats: PerCpuArray<MapData, u64>,
    /// Each LRU map with its capacity.
    lru: Vec<(LruMap, u32)>,
    capacities: Vec<MapCapacity>,
}

impl std::fmt::Debug for UsageReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageReader")
            .field("capacities", &self.capacities)
            .finish_non_exhaustive()
    }
}

impl KernelMaps {
    /// Opens a [`UsageReader`]: new handles on this object's maps, plus the LRU
    /// maps, which `KernelMaps` does not hold, from their pins in `maps_dir`
    /// (`<pin-path>/v<N>/maps`). An LRU map that is not pinned there (an older
    /// object) is left out rather than failing the whole reader.
    pub fn usage_reader(&self, maps_dir: &Path) -> Result<UsageReader, MapError> {
        let mut capacities = Vec::new();
        // Records the map's capacity and returns it.
        let mut capacity = |map: &'static str, data: &MapData| -> Result<u32, MapError> {
            let info = data
                .info()
                .map_err(|source| MapError::Open { map, source })?;
            let capacity = info.max_entries();
            capacities.push(MapCapacity { map, capacity });
            Ok(capacity)
        };
        capacity(names::SVC_V4, self.svc4.map())?;
        capacity(names::SVC_V6, self.svc6.map())?;
        capacity(names::BACKEND_V4, self.backend4.map())?;
        capacity(names::BACKEND_V6, self.backend6.map())?;
        capacity(names::REVNAT_V4, self.revnat4.map())?;
        capacity(names::REVNAT_V6, self.revnat6.map())?;
        capacity(names::SVC_NAMES, self.svc_names.map())?;
        capacity(names::STATS, self.stats.map())?;

        // A duplicate of our own descriptor, not `MapData::from_id`: getting a
        // map by id needs CAP_SYS_ADMIN, which the DaemonSet does not grant.
        let stats_fd = self
            .stats
            .map()
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| MapError::Syscall {
                map: names::STATS,
                op: "dup",
                source,
            })?;
        let stats = MapData::from_fd(stats_fd)
            .and_then(|data| PerCpuArray::try_from(Map::PerCpuArray(data)))
            .map_err(|source| MapError::Open {
                map: names::STATS,
                source,
            })?;

        let mut lru = Vec::new();
        for name in [names::SOCK_RNAT_V4, names::SOCK_RNAT_V6, names::AFFINITY] {
            let path = maps_dir.join(name);
            if !path.exists() {
                tracing::debug!(map = name, path = %path.display(), "map not pinned; not counting its entries");
                continue;
            }
            let data =
                MapData::from_pin(&path).map_err(|source| MapError::Open { map: name, source })?;
            let max = capacity(name, &data)?;
            let map = Map::LruHashMap(data);
            let typed = match name {
                names::SOCK_RNAT_V4 => HashMap::try_from(map).map(LruMap::SockRevNatV4),
                names::SOCK_RNAT_V6 => HashMap::try_from(map).map(LruMap::SockRevNatV6),
                _ => HashMap::try_from(map).map(LruMap::Affinity),
            };
            lru.push((
                typed.map_err(|source| MapError::Open { map: name, source })?,
                max,
            ));
        }
        capacities.sort_by_key(|c| c.map);
        Ok(UsageReader {
            stats,
            lru,
            capacities,
        })
    }
}

impl UsageReader {
    /// Every map's `max_entries`, sorted by name (read once, at open).
    pub fn capacities(&self) -> &[MapCapacity] {
        &self.capacities
    }

    /// The datapath counters, summed over CPUs, in [`Reason`] order.
    pub fn datapath_events(&self) -> Result<Vec<(Reason, u64)>, MapError> {
        super::reader::counter_totals(&self.stats)
            .map_err(|e| read_error(names::STATS, "lookup", e))
    }

    /// Entries in each LRU map, by walking its keys (one syscall per entry).
    pub fn lru_entries(&self) -> Vec<(&'static str, Result<u64, MapError>)> {
        self.lru
            .iter()
            .map(|(m, max)| (m.name(), m.count(*max)))
            .collect()
    }
}

impl DataplaneUsage for UsageReader {
    fn capacities(&self) -> Vec<MapCapacity> {
        UsageReader::capacities(self).to_vec()
    }
    fn datapath_events(&self) -> Result<Vec<(Reason, u64)>, UsageError> {
        Ok(UsageReader::datapath_events(self)?)
    }
    fn lru_entries(&self) -> Vec<(&'static str, Result<u64, UsageError>)> {
        UsageReader::lru_entries(self)
            .into_iter()
            .map(|(map, n)| (map, n.map_err(UsageError::from)))
            .collect()
    }
}

/// A failed read, as the writer's errors spell it.
fn read_error(map: &'static str, op: &'static str, error: aya::maps::MapError) -> MapError {
    let source = match error {
        aya::maps::MapError::SyscallError(e) => e.io_error,
        aya::maps::MapError::IoError(e) => e,
        other => std::io::Error::other(other.to_string()),
    };
    MapError::Syscall { map, op, source }
}
