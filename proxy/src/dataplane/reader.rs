//! The one read-only reader of the service, backend, rev-NAT and name maps,
//! and of the counters ([`counter_totals`]).
//!
//! [`MapReader`] walks the maps, through whichever handles the caller has:
//! the writer's own (`KernelMaps::reader`, for its `Applied` mirror) or new
//! ones opened from the pins ([`PinnedMaps`], for `proxy inspect`). What it
//! reads is [`LbEntries`] (every entry as the kernel holds it), and from that
//! a [`Dataset`]: the entries decoded (see [`super::layout`]) and grouped by
//! frontend, with nothing inferred.
//!
//! A map being written while it is read can show a change half done: a slot
//! whose backend just went, a frontend with stray slots but no slot 0, a
//! backend with no rev-NAT entry, a rev-NAT id with no name. Decoding never
//! fails on these: they are gaps in the [`Dataset`] (a missing key), for the
//! caller to show or to judge. The writer's mirror, which must not guess, converts the raw
//! [`LbEntries`] strictly instead (`kernel::applied`).
//!
//! Must not: write to a map, or create, move or remove a pin. The writer
//! (`dataplane::writer`) is the only place map contents change.

use std::{
    collections::BTreeMap,
    fs, io,
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::maps::{HashMap, IterableMap as _, LpmTrie, Map, MapData, PerCpuArray};
use proxy_common::{
    BackendV4, BackendV6, Be32, Reason, RevNatV4, RevNatV6, ServiceKeyV4, ServiceKeyV6,
    ServiceName, ServiceValue, SrcRangeV4, SrcRangeV6, names, src_range,
};

use super::layout::{BackendAddr, FrontendKey, RevNatAddr};

/// One frontend's entries: slot 0 (absent if only stray slots are left) and
/// slot → backend id for the others.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrontendEntries {
    pub master: Option<ServiceValue>,
    pub slots: BTreeMap<u16, u32>,
}

/// What the service, backend, rev-NAT and name maps hold, decoded and grouped
/// by frontend. `proxy inspect` builds its views from it (the methods in
/// `inspect::compose`); the writer's mirror is converted from the raw
/// [`LbEntries`] instead (`kernel::applied`), which keeps every field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dataset {
    pub frontends: BTreeMap<FrontendKey, FrontendEntries>,
    /// Backend id → address; both families.
    pub backends: BTreeMap<u32, BackendAddr>,
    /// Rev-NAT id → the frontend replies are made to come from; empty when
    /// the rev-NAT maps are not pinned.
    pub rev_nat: BTreeMap<u32, RevNatAddr>,
    /// Rev-NAT id → owner; empty when `SVC_NAMES` is not pinned.
    pub names: BTreeMap<u32, ServiceName>,
    /// Rev-NAT id → its `loadBalancerSourceRanges` entries (`SRC_RANGE_*`),
    /// sorted; filled only from the pins ([`PinnedMaps::dataset`]).
    pub source_ranges: BTreeMap<u32, Vec<SourceRangeEntry>>,
}

/// One `SRC_RANGE_V4`/`_V6` entry: a source prefix and its verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SourceRangeEntry {
    pub addr: IpAddr,
    pub prefix: u8,
    pub allow: bool,
}

impl SourceRangeEntry {
    /// Decodes a key's parts; `None` for a key that cannot be ours (a prefix
    /// shorter than the id's bits).
    pub fn decode(prefix_len: u32, id: Be32, addr: IpAddr, verdict: u32) -> Option<(u32, Self)> {
        let id = u32::from_be(id.0);
        let prefix = u8::try_from(prefix_len.checked_sub(src_range::ID_BITS)?).ok()?;
        Some((
            id,
            Self {
                addr,
                prefix,
                allow: verdict != src_range::DENY,
            },
        ))
    }
}

impl Dataset {
    /// Files one service map entry under its frontend.
    pub fn add_slot(&mut self, key: FrontendKey, slot: u16, value: ServiceValue) {
        let entries = self.frontends.entry(key).or_default();
        if slot == 0 {
            entries.master = Some(value);
        } else {
            entries.slots.insert(slot, value.backend_id);
        }
    }
}

/// Every entry of the maps a [`Dataset`] is made of, as the kernel holds them.
#[derive(Clone, Debug, Default)]
pub struct LbEntries {
    pub svc4: Vec<(ServiceKeyV4, ServiceValue)>,
    pub svc6: Vec<(ServiceKeyV6, ServiceValue)>,
    pub backend4: Vec<(u32, BackendV4)>,
    pub backend6: Vec<(u32, BackendV6)>,
    pub revnat4: Vec<(u32, RevNatV4)>,
    pub revnat6: Vec<(u32, RevNatV6)>,
    pub names: Vec<(u32, ServiceName)>,
}

impl LbEntries {
    /// Decodes and groups the entries (pure; never fails, see the module docs).
    pub fn decode(&self) -> Dataset {
        let mut out = Dataset::default();
        for (k, v) in &self.svc4 {
            out.add_slot(FrontendKey::v4(k), k.slot, *v);
        }
        for (k, v) in &self.svc6 {
            out.add_slot(FrontendKey::v6(k), k.slot, *v);
        }
        for (id, b) in &self.backend4 {
            out.backends.insert(*id, BackendAddr::v4(b));
        }
        for (id, b) in &self.backend6 {
            out.backends.insert(*id, BackendAddr::v6(b));
        }
        let revnat4 = self.revnat4.iter().map(|(id, v)| (id, RevNatAddr::v4(v)));
        let revnat6 = self.revnat6.iter().map(|(id, v)| (id, RevNatAddr::v6(v)));
        for (id, v) in revnat4.chain(revnat6) {
            out.rev_nat.insert(*id, v);
        }
        for (id, name) in &self.names {
            out.names.insert(*id, *name);
        }
        out
    }
}

/// Why a walk of a map failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the capacity of map {map}")]
    Info {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("iterating map {map}")]
    Iterate {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// Handles on the maps a [`Dataset`] is made of, borrowed from their owner.
/// The rev-NAT and name maps may be missing (pins of an older daemon).
pub struct MapReader<'a> {
    pub svc4: &'a HashMap<MapData, ServiceKeyV4, ServiceValue>,
    pub svc6: &'a HashMap<MapData, ServiceKeyV6, ServiceValue>,
    pub backend4: &'a HashMap<MapData, u32, BackendV4>,
    pub backend6: &'a HashMap<MapData, u32, BackendV6>,
    pub revnat4: Option<&'a HashMap<MapData, u32, RevNatV4>>,
    pub revnat6: Option<&'a HashMap<MapData, u32, RevNatV6>>,
    pub names: Option<&'a HashMap<MapData, u32, ServiceName>>,
    /// Stop each walk at the map's capacity: an entry deleted mid-walk makes
    /// the kernel start over, so a walk beside a busy writer could go on.
    pub bounded: bool,
}

impl MapReader<'_> {
    /// Reads every entry (services first: a backend is written before the
    /// slot that points at it) and decodes them.
    pub fn read(&self) -> Result<Dataset, ReadError> {
        Ok(self.entries()?.decode())
    }

    /// Every entry, undecoded.
    pub fn entries(&self) -> Result<LbEntries, ReadError> {
        let bounded = self.bounded;
        Ok(LbEntries {
            svc4: walk(self.svc4, names::SVC_V4, bounded)?,
            svc6: walk(self.svc6, names::SVC_V6, bounded)?,
            backend4: walk(self.backend4, names::BACKEND_V4, bounded)?,
            backend6: walk(self.backend6, names::BACKEND_V6, bounded)?,
            revnat4: walk_some(self.revnat4, names::REVNAT_V4, bounded)?,
            revnat6: walk_some(self.revnat6, names::REVNAT_V6, bounded)?,
            names: walk_some(self.names, names::SVC_NAMES, bounded)?,
        })
    }
}

/// Every entry of a hash (or LRU hash) map; with `bounded`, no more than its
/// capacity.
pub fn walk<K: aya::Pod, V: aya::Pod>(
    map: &HashMap<MapData, K, V>,
    name: &'static str,
    bounded: bool,
) -> Result<Vec<(K, V)>, ReadError> {
    let limit = if bounded {
        let info = map
            .map()
            .info()
            .map_err(|source| ReadError::Info { map: name, source })?;
        usize::try_from(info.max_entries()).unwrap_or(usize::MAX)
    } else {
        usize::MAX
    };
    map.iter()
        .take(limit)
        .map(|entry| entry.map_err(|source| ReadError::Iterate { map: name, source }))
        .collect()
}

/// The datapath counters (`STATS`), summed over CPUs, in [`Reason`] order.
/// Reasons past the map's `max_entries` (pins of an older object with fewer
/// slots) are left out. The one decoder of `STATS`, for the metrics and for
/// `proxy inspect stats`.
pub fn counter_totals(
    stats: &PerCpuArray<MapData, u64>,
) -> Result<Vec<(Reason, u64)>, aya::maps::MapError> {
    let max = stats.map().info()?.max_entries();
    Reason::ALL
        .iter()
        .filter(|reason| (**reason as u32) < max)
        .map(|reason| {
            let per_cpu = stats.get(&(*reason as u32), 0)?;
            Ok((*reason, per_cpu.iter().sum()))
        })
        .collect()
}

fn walk_some<K: aya::Pod, V: aya::Pod>(
    map: Option<&HashMap<MapData, K, V>>,
    name: &'static str,
    bounded: bool,
) -> Result<Vec<(K, V)>, ReadError> {
    map.map_or(Ok(Vec::new()), |map| walk(map, name, bounded))
}

// ---------------------------------------------------------------------------
// Handles of our own, from the pins.

/// Why a pinned map could not be opened or read. Each variant names the pin.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("cannot read the pin directory {dir}", dir = dir.display())]
    Dir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("map {map} is not pinned at {path}", path = path.display())]
    Missing { map: &'static str, path: PathBuf },
    #[error("opening map {map} pinned at {path} read-only", path = path.display())]
    Get {
        map: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("opening map {map} pinned at {path}", path = path.display())]
    Open {
        map: &'static str,
        path: PathBuf,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("reading map {map} pinned at {path}", path = path.display())]
    Read {
        map: &'static str,
        path: PathBuf,
        #[source]
        source: aya::maps::MapError,
    },
}

/// The maps pinned in one directory (`<pin-path>/v<N>/maps`), opened on
/// demand as new read-only file descriptors (`BPF_F_RDONLY`) on the same
/// kernel objects, whether or not a daemon holds them.
#[derive(Clone, Debug)]
pub struct PinnedMaps {
    dir: PathBuf,
}

impl PinnedMaps {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, map: &'static str) -> PathBuf {
        self.dir.join(map)
    }

    /// A new handle on a pinned map; `None` when it is not pinned.
    pub fn map_data(&self, map: &'static str) -> Result<Option<MapData>, PinError> {
        let path = self.path(map);
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(PinError::Dir {
                    dir: self.dir.clone(),
                    source,
                });
            }
            Ok(_) => {}
        }
        // Read-only descriptors: the kernel itself refuses any write through
        // them, whatever a reader's code does.
        let fd = super::link_info::obj_get_read_only(&path).map_err(|source| PinError::Get {
            map,
            path: path.clone(),
            source,
        })?;
        MapData::from_fd(fd)
            .map(Some)
            .map_err(|source| PinError::Open { map, path, source })
    }

    /// A new handle on a map that must be pinned.
    pub fn require(&self, map: &'static str) -> Result<MapData, PinError> {
        self.map_data(map)?.ok_or_else(|| PinError::Missing {
            map,
            path: self.path(map),
        })
    }

    pub fn open_error(&self, map: &'static str, source: aya::maps::MapError) -> PinError {
        PinError::Open {
            map,
            path: self.path(map),
            source,
        }
    }

    pub fn read_error(&self, map: &'static str, source: aya::maps::MapError) -> PinError {
        PinError::Read {
            map,
            path: self.path(map),
            source,
        }
    }

    fn pin_error(&self, error: ReadError) -> PinError {
        match error {
            ReadError::Info { map, source } => self.open_error(map, source),
            ReadError::Iterate { map, source } => self.read_error(map, source),
        }
    }

    fn typed<K: aya::Pod, V: aya::Pod>(
        &self,
        map: &'static str,
        data: MapData,
    ) -> Result<HashMap<MapData, K, V>, PinError> {
        Map::from_map_data(data)
            .and_then(HashMap::try_from)
            .map_err(|e| self.open_error(map, e))
    }

    fn required<K: aya::Pod, V: aya::Pod>(
        &self,
        map: &'static str,
    ) -> Result<HashMap<MapData, K, V>, PinError> {
        let data = self.require(map)?;
        self.typed(map, data)
    }

    fn optional<K: aya::Pod, V: aya::Pod>(
        &self,
        map: &'static str,
    ) -> Result<Option<HashMap<MapData, K, V>>, PinError> {
        self.map_data(map)?
            .map(|data| self.typed(map, data))
            .transpose()
    }

    /// Every entry of a hash (or LRU hash) map, no more than its capacity.
    pub fn entries<K: aya::Pod, V: aya::Pod>(
        &self,
        map: &'static str,
        data: MapData,
    ) -> Result<Vec<(K, V)>, PinError> {
        let typed = self.typed::<K, V>(map, data)?;
        walk(&typed, map, true).map_err(|e| self.pin_error(e))
    }

    /// Every entry of a hash map that must be pinned.
    pub fn required_entries<K: aya::Pod, V: aya::Pod>(
        &self,
        map: &'static str,
    ) -> Result<Vec<(K, V)>, PinError> {
        let data = self.require(map)?;
        self.entries(map, data)
    }

    /// Reads the service, backend, rev-NAT and name maps through
    /// [`MapReader`]. The service and backend maps must be pinned; the
    /// others may not be (an older daemon's pins).
    pub fn dataset(&self) -> Result<Dataset, PinError> {
        let svc4 = self.required(names::SVC_V4)?;
        let svc6 = self.required(names::SVC_V6)?;
        let backend4 = self.required(names::BACKEND_V4)?;
        let backend6 = self.required(names::BACKEND_V6)?;
        let revnat4 = self.optional(names::REVNAT_V4)?;
        let revnat6 = self.optional(names::REVNAT_V6)?;
        let svc_names = self.optional(names::SVC_NAMES)?;
        let mut dataset = MapReader {
            svc4: &svc4,
            svc6: &svc6,
            backend4: &backend4,
            backend6: &backend6,
            revnat4: revnat4.as_ref(),
            revnat6: revnat6.as_ref(),
            names: svc_names.as_ref(),
            bounded: true,
        }
        .read()
        .map_err(|e| self.pin_error(e))?;
        let v4 = self.trie::<SrcRangeV4, u32>(names::SRC_RANGE_V4)?;
        let v6 = self.trie::<SrcRangeV6, u32>(names::SRC_RANGE_V6)?;
        let v4 = v4.iter().map(|(k, v)| {
            (
                k.prefix_len(),
                k.data().rev_nat_id,
                IpAddr::from(k.data().addr.octets()),
                *v,
            )
        });
        let v6 = v6.iter().map(|(k, v)| {
            (
                k.prefix_len(),
                k.data().rev_nat_id,
                IpAddr::from(k.data().addr),
                *v,
            )
        });
        for (prefix_len, id, addr, verdict) in v4.chain(v6) {
            if let Some((id, entry)) = SourceRangeEntry::decode(prefix_len, id, addr, verdict) {
                dataset.source_ranges.entry(id).or_default().push(entry);
            }
        }
        for entries in dataset.source_ranges.values_mut() {
            entries.sort_unstable();
        }
        Ok(dataset)
    }

    /// Every entry of an LPM trie, no more than its capacity; none when it is
    /// not pinned (a daemon that predates it).
    pub fn trie<K: aya::Pod, V: aya::Pod>(
        &self,
        map: &'static str,
    ) -> Result<Vec<(aya::maps::lpm_trie::Key<K>, V)>, PinError> {
        let Some(data) = self.map_data(map)? else {
            return Ok(Vec::new());
        };
        let trie: LpmTrie<MapData, K, V> = Map::from_map_data(data)
            .and_then(LpmTrie::try_from)
            .map_err(|e| self.open_error(map, e))?;
        let limit = trie
            .map()
            .info()
            .map(|info| usize::try_from(info.max_entries()).unwrap_or(usize::MAX))
            .map_err(|e| self.open_error(map, e))?;
        trie.iter()
            .take(limit)
            .map(|entry| entry.map_err(|e| self.read_error(map, e)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use proxy_common::{Be16, Be32, proto};

    use super::*;

    fn svc(addr: [u8; 4], slot: u16, value: ServiceValue) -> (ServiceKeyV4, ServiceValue) {
        let key = ServiceKeyV4 {
            addr: Be32::from_octets(addr),
            port: Be16::from_host(80),
            slot,
            proto: proto::TCP,
            scope: proxy_common::scope::INTERNAL,
            _pad: [0; 2],
        };
        (key, value)
    }

    fn backend(addr: [u8; 4]) -> BackendV4 {
        BackendV4 {
            addr: Be32::from_octets(addr),
            port: Be16::from_host(8080),
            proto: proto::TCP,
            flags: 0,
        }
    }

    /// A change half done: slot 2's backend went, a frontend lost slot 0 but
    /// not its slots, a rev-NAT id has no name, a backend no rev-NAT entry.
    #[test]
    fn half_written_entries_are_gaps_not_failures() {
        let master = ServiceValue {
            count: 2,
            rev_nat_id: 1,
            ..Default::default()
        };
        let slot = |backend_id| ServiceValue {
            backend_id,
            ..Default::default()
        };
        let entries = LbEntries {
            svc4: vec![
                svc([10, 96, 0, 10], 0, master),
                svc([10, 96, 0, 10], 1, slot(7)),
                svc([10, 96, 0, 10], 2, slot(8)),
                svc([10, 96, 0, 20], 1, slot(7)),
            ],
            backend4: vec![(7, backend([10, 244, 0, 7]))],
            revnat4: vec![(
                1,
                RevNatV4 {
                    addr: Be32::from_octets([10, 96, 0, 10]),
                    port: Be16::from_host(80),
                    _pad: 0,
                },
            )],
            ..Default::default()
        };
        let data = entries.decode();
        assert_eq!(data.frontends.len(), 2);
        let stray = data
            .frontends
            .iter()
            .find(|(k, _)| k.addr.to_string() == "10.96.0.20")
            .map(|(_, e)| e.clone())
            .unwrap_or_default();
        assert_eq!(stray.master, None);
        assert_eq!(stray.slots, BTreeMap::from([(1, 7)]));
        assert!(data.backends.contains_key(&7) && !data.backends.contains_key(&8));
        assert_eq!(data.rev_nat.len(), 1);
        assert!(data.names.is_empty());
    }

    #[test]
    fn a_rev_nat_id_over_16_bits_is_decoded() {
        let entries = LbEntries {
            names: vec![(70_000, ServiceName::EMPTY), (3, ServiceName::EMPTY)],
            ..Default::default()
        };
        assert_eq!(
            entries.decode().names.keys().copied().collect::<Vec<_>>(),
            [3, 70_000]
        );
    }
}
