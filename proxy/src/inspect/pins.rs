//! Reading the pins: [`Pins`] opens maps through their pins under
//! [`PinLayout::maps`] (new file descriptors on the same kernel objects,
//! whether or not a daemon holds them) and links under [`PinLayout::links`],
//! and hands what they hold to the pure builders ([`super::compose`]).
//!
//! The service, backend, rev-NAT and name maps are read by the one reader of
//! them (`dataplane::reader`); names come from `SVC_NAMES`, and pins left by a
//! daemon that did not write it have no names, which show as `null`.
//!
//! Must not: write to a map, or create, move or remove a pin.

use std::{
    collections::{BTreeSet, HashMap},
    fs, io,
    os::fd::AsFd as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::maps::{Array, Map, MapData, MapType, PerCpuArray};
use proxy_common::{
    AffinityKey, AffinityValue, BackendV4, BackendV6, CtKeyV4, CtKeyV6, CtValueV4, CtValueV6,
    DeviceConfig, MaglevConfig, MaglevTable, RevNatV4, RevNatV6, ServiceKeyV4, ServiceKeyV6,
    ServiceName, ServiceValue, SockRevNatKeyV4, SockRevNatKeyV6, SockRevNatV4, SockRevNatV6,
    SrcRangeV4, SrcRangeV6, names, tail,
};

use super::{
    InspectError,
    compose::{attach_type_name, conntrack_absent, stats_view},
    filter::Filter,
    maglev::MaglevView,
    view::{
        AffinityView, BackendsView, ConntrackView, DATAPATH, LinkEntry, MapEntry, PINNED_MAPS,
        ServicesView, StatsView, StatusView, TailCallEntry, TcLinkEntry,
    },
};
use crate::{
    dataplane::{
        cgroup,
        layout::CtRaw,
        link_info,
        loader::PinLayout,
        maglev::Tables,
        pins,
        reader::{Dataset, PinError, PinnedMaps, counter_totals},
        tail_calls,
    },
    error_chain::error_chain,
    telemetry::Mode,
};

/// Cgroup directories looked at, at most, to turn a link's cgroup id into a path.
const MAX_CGROUP_WALK: usize = 100_000;

/// The pins under one pin path, opened read-only (see the module docs).
#[derive(Debug)]
pub struct Pins {
    layout: PinLayout,
    maps: PinnedMaps,
}

impl Pins {
    /// Checks that the maps are pinned where `layout` says.
    pub fn open(layout: PinLayout) -> Result<Self, InspectError> {
        let maps_dir = layout.maps();
        // Other layout versions' pins, to say so when ours are missing.
        let found = || {
            crate::dataplane::pins::Inventory::read(&layout)
                .map(|inv| inv.layouts.iter().map(|l| l.version).collect())
                .unwrap_or_default()
        };
        match fs::metadata(&maps_dir) {
            // Not pins, whatever the names say (a copy, a stray mkdir).
            Ok(meta) if meta.is_dir() && !crate::dataplane::bpffs::is_bpffs(&maps_dir) => {
                Err(InspectError::NotBpffs { dir: layout.root })
            }
            Ok(meta) if meta.is_dir() => Ok(Self {
                layout,
                maps: PinnedMaps::new(maps_dir),
            }),
            Ok(_) => Err(InspectError::NoPins {
                dir: maps_dir,
                found: found(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(InspectError::NoPins {
                dir: maps_dir,
                found: found(),
            }),
            Err(source) => Err(PinError::Dir {
                dir: maps_dir,
                source,
            }
            .into()),
        }
    }

    /// A new handle on a pinned map; `None` when it is not pinned.
    fn map_data(&self, map: &'static str) -> Result<Option<MapData>, InspectError> {
        Ok(self.maps.map_data(map)?)
    }

    fn require(&self, map: &'static str) -> Result<MapData, InspectError> {
        Ok(self.maps.require(map)?)
    }

    fn open_error(&self, map: &'static str, source: aya::maps::MapError) -> InspectError {
        self.maps.open_error(map, source).into()
    }

    fn read_error(&self, map: &'static str, source: aya::maps::MapError) -> InspectError {
        self.maps.read_error(map, source).into()
    }

    /// Every entry of a hash (or LRU hash) map, no more than its capacity.
    fn entries<K: aya::Pod, V: aya::Pod>(
        &self,
        map: &'static str,
        data: MapData,
    ) -> Result<Vec<(K, V)>, InspectError> {
        Ok(self.maps.entries(map, data)?)
    }

    /// What the service, backend, rev-NAT and name maps hold, through the one
    /// reader of them.
    pub fn dataset(&self) -> Result<Dataset, InspectError> {
        Ok(self.maps.dataset()?)
    }

    /// `inspect services`.
    pub fn services(&self, filter: &Filter) -> Result<ServicesView, InspectError> {
        Ok(self.dataset()?.services(filter))
    }

    /// `inspect backends`.
    pub fn backends(&self, filter: &Filter) -> Result<BackendsView, InspectError> {
        Ok(self.dataset()?.backends(filter))
    }

    /// `inspect affinity`.
    pub fn affinity(&self, filter: &Filter) -> Result<AffinityView, InspectError> {
        let entries = self
            .maps
            .required_entries::<AffinityKey, AffinityValue>(names::AFFINITY)?;
        let dataset = self.dataset()?;
        Ok(dataset.affinity(&entries, monotonic_now_ns()?, filter))
    }

    /// `inspect conntrack`: both conntrack maps and, when pinned, both
    /// pending ones (flows not answered yet), or why there are none.
    pub fn conntrack(&self, filter: &Filter) -> Result<ConntrackView, InspectError> {
        let (Some(v4), Some(v6)) = (self.map_data(names::CT_V4)?, self.map_data(names::CT_V6)?)
        else {
            return Ok(conntrack_absent());
        };
        let mut raw: Vec<CtRaw> = self
            .entries::<CtKeyV4, CtValueV4>(names::CT_V4, v4)?
            .iter()
            .map(|(k, v)| CtRaw::v4(k, v))
            .collect();
        raw.extend(
            self.entries::<CtKeyV6, CtValueV6>(names::CT_V6, v6)?
                .iter()
                .map(|(k, v)| CtRaw::v6(k, v)),
        );
        if let Some(v4) = self.map_data(names::CT_PENDING_V4)? {
            raw.extend(
                self.entries::<CtKeyV4, CtValueV4>(names::CT_PENDING_V4, v4)?
                    .iter()
                    .map(|(k, v)| CtRaw::v4(k, v).pending()),
            );
        }
        if let Some(v6) = self.map_data(names::CT_PENDING_V6)? {
            raw.extend(
                self.entries::<CtKeyV6, CtValueV6>(names::CT_PENDING_V6, v6)?
                    .iter()
                    .map(|(k, v)| CtRaw::v6(k, v).pending()),
            );
        }
        let dataset = self.dataset()?;
        Ok(dataset.conntrack(&raw, monotonic_now_ns()?, filter))
    }

    /// `inspect maglev`: `MAGLEV_CFG` and every `MAGLEV` table; both absent
    /// (not an error) in pins of a layout without Maglev.
    pub fn maglev(&self, filter: &Filter) -> Result<MaglevView, InspectError> {
        let dataset = self.dataset()?;
        let (Some(cfg), Some(tables)) = (
            self.map_data(names::MAGLEV_CFG)?,
            self.map_data(names::MAGLEV)?,
        ) else {
            return Ok(dataset.maglev(None, &Default::default(), filter));
        };
        let cfg_map = names::MAGLEV_CFG;
        let cfg: Array<MapData, MaglevConfig> = Map::from_map_data(cfg)
            .and_then(Array::try_from)
            .map_err(|e| self.open_error(cfg_map, e))?;
        let config = cfg.get(&0, 0).map_err(|e| self.read_error(cfg_map, e))?;
        let mut decoded = Tables::new();
        for (key, value) in self.entries::<u64, MaglevTable>(names::MAGLEV, tables)? {
            // A key that cannot be ours (an unknown scope) is left out.
            if let Some((id, table)) = crate::dataplane::maglev::decode(key, &value) {
                decoded.insert(id, table);
            }
        }
        Ok(dataset.maglev(Some(config), &decoded, filter))
    }

    /// `inspect stats`: the per-CPU counters summed.
    pub fn stats(&self) -> Result<StatsView, InspectError> {
        let map = names::STATS;
        let data = self.require(map)?;
        let counters: PerCpuArray<MapData, u64> = Map::from_map_data(data)
            .and_then(PerCpuArray::try_from)
            .map_err(|e| self.open_error(map, e))?;
        let totals = counter_totals(&counters).map_err(|e| self.read_error(map, e))?;
        Ok(stats_view(&totals))
    }

    /// `inspect status`: links and fill levels. A map or link that cannot be
    /// read is shown with its error rather than failing the whole view.
    pub fn status(&self) -> Result<StatusView, InspectError> {
        Ok(StatusView {
            mode: Mode::Ebpf.as_str(),
            datapath: DATAPATH,
            pin_path: self.layout.root.clone(),
            links: self.links()?,
            tc_links: self.tc_links()?,
            tail_calls: self.tail_calls(),
            maps: PINNED_MAPS.iter().map(|name| self.fill(name)).collect(),
            vip_routes: None,
        })
    }

    fn fill(&self, name: &'static str) -> MapEntry {
        let data = match self.map_data(name) {
            Ok(Some(data)) => data,
            Ok(None) => return MapEntry::absent(name),
            Err(error) => {
                return MapEntry {
                    present: true,
                    error: Some(error_chain(&error)),
                    ..MapEntry::absent(name)
                };
            }
        };
        let info = match data.info() {
            Ok(info) => info,
            Err(e) => {
                return MapEntry {
                    present: true,
                    error: Some(error_chain(&self.open_error(name, e))),
                    ..MapEntry::absent(name)
                };
            }
        };
        let max = info.max_entries();
        let kind = match info.map_type() {
            Ok(MapType::Hash) => "hash".to_owned(),
            Ok(MapType::LruHash) => "lru_hash".to_owned(),
            Ok(MapType::PerCpuArray) => "percpu_array".to_owned(),
            Ok(MapType::Array) => "array".to_owned(),
            Ok(MapType::ProgramArray) => "prog_array".to_owned(),
            Ok(MapType::LpmTrie) => "lpm_trie".to_owned(),
            Ok(other) => format!("{other:?}").to_lowercase(),
            Err(_) => "unknown".to_owned(),
        };
        match self.count(name, data) {
            Ok(entries) => MapEntry::new(name, &kind, entries.unwrap_or(u64::from(max)), max),
            Err(error) => MapEntry {
                present: true,
                kind: Some(kind),
                max_entries: Some(max),
                error: Some(error_chain(&error)),
                ..MapEntry::absent(name)
            },
        }
    }

    /// Entries in one of our maps; `None` for an array (always full).
    fn count(&self, name: &'static str, data: MapData) -> Result<Option<u64>, InspectError> {
        fn n<T>(v: Vec<T>) -> Option<u64> {
            u64::try_from(v.len()).ok()
        }
        Ok(match name {
            names::SVC_V4 => n(self.entries::<ServiceKeyV4, ServiceValue>(name, data)?),
            names::SVC_V6 => n(self.entries::<ServiceKeyV6, ServiceValue>(name, data)?),
            names::BACKEND_V4 => n(self.entries::<u32, BackendV4>(name, data)?),
            names::BACKEND_V6 => n(self.entries::<u32, BackendV6>(name, data)?),
            names::REVNAT_V4 => n(self.entries::<u32, RevNatV4>(name, data)?),
            names::REVNAT_V6 => n(self.entries::<u32, RevNatV6>(name, data)?),
            names::SVC_NAMES => n(self.entries::<u32, ServiceName>(name, data)?),
            names::SOCK_RNAT_V4 => n(self.entries::<SockRevNatKeyV4, SockRevNatV4>(name, data)?),
            names::SOCK_RNAT_V6 => n(self.entries::<SockRevNatKeyV6, SockRevNatV6>(name, data)?),
            names::AFFINITY => n(self.entries::<AffinityKey, AffinityValue>(name, data)?),
            names::CT_V4 => n(self.entries::<CtKeyV4, CtValueV4>(name, data)?),
            names::CT_V6 => n(self.entries::<CtKeyV6, CtValueV6>(name, data)?),
            names::CT_PENDING_V4 => n(self.entries::<CtKeyV4, CtValueV4>(name, data)?),
            names::CT_PENDING_V6 => n(self.entries::<CtKeyV6, CtValueV6>(name, data)?),
            names::DEVICES => n(self.entries::<u32, DeviceConfig>(name, data)?),
            names::SRC_RANGE_V4 => n(self.maps.trie::<SrcRangeV4, u32>(name)?),
            names::SRC_RANGE_V6 => n(self.maps.trie::<SrcRangeV6, u32>(name)?),
            names::LOCAL_V4 => n(self.maps.trie::<[u8; 4], u8>(name)?),
            names::LOCAL_V6 => n(self.maps.trie::<[u8; 16], u8>(name)?),
            names::MAGLEV => n(self.entries::<u64, MaglevTable>(name, data)?),
            names::TC_TAIL => {
                let max = data.info().map(|i| i.max_entries()).unwrap_or(0);
                let mut filled = 0;
                for slot in 0..max {
                    if let Ok(Some(_)) = tail_calls::slot_program(data.fd().as_fd(), slot) {
                        filled += 1;
                    }
                }
                Some(filled)
            }
            _ => None,
        })
    }

    /// Every link pinned under the layout's links directory
    /// (`links/cgroup-<id>/<program>`), sorted by pin.
    fn links(&self) -> Result<Vec<LinkEntry>, InspectError> {
        let dir = self.layout.links();
        let mut pins = Vec::new();
        let groups = match fs::read_dir(&dir) {
            Ok(groups) => groups,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(PinError::Dir { dir, source }.into()),
        };
        for group in groups {
            let group = group.map_err(|source| PinError::Dir {
                dir: dir.clone(),
                source,
            })?;
            let group_dir = group.path();
            let is_tc = group
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(pins::TC_LINKS_PREFIX));
            if is_tc || !group_dir.is_dir() {
                continue;
            }
            let entries = fs::read_dir(&group_dir).map_err(|source| PinError::Dir {
                dir: group_dir.clone(),
                source,
            })?;
            for entry in entries {
                let entry = entry.map_err(|source| PinError::Dir {
                    dir: group_dir.clone(),
                    source,
                })?;
                pins.push(entry.path());
            }
        }
        pins.sort();
        let mut links: Vec<LinkEntry> = pins.into_iter().map(|pin| read_link(&pin)).collect();
        let wanted: BTreeSet<u64> = links
            .iter()
            .filter_map(|l| l.cgroup_id)
            .filter(|id| *id != 0)
            .collect();
        let paths = cgroup::cgroup2_root()
            .map(|root| find_cgroups(&root, &wanted))
            .unwrap_or_default();
        for link in &mut links {
            link.cgroup_path = link.cgroup_id.and_then(|id| paths.get(&id).cloned());
        }
        Ok(links)
    }
}

impl Pins {
    /// Every tc link pinned under `links/tc-<ifindex>/`.
    fn tc_links(&self) -> Result<Vec<TcLinkEntry>, InspectError> {
        let mut out = Vec::new();
        for (ifindex, dir) in crate::dataplane::tc::tc_link_dirs(&self.layout.links()) {
            let entries = fs::read_dir(&dir).map_err(|source| PinError::Dir {
                dir: dir.clone(),
                source,
            })?;
            let mut pins: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            pins.sort();
            let device = crate::dataplane::devices::name_of(ifindex);
            out.extend(
                pins.iter()
                    .map(|pin| read_tc_link(pin, ifindex, device.clone())),
            );
        }
        Ok(out)
    }
}

impl Pins {
    /// Each `TC_TAIL` slot's program (none when no tc link is pinned: the
    /// tc programs are not in use).
    fn tail_calls(&self) -> Vec<TailCallEntry> {
        if crate::dataplane::tc::tc_link_dirs(&self.layout.links()).is_empty() {
            return Vec::new();
        }
        let data = match self.map_data(names::TC_TAIL) {
            Ok(Some(data)) => Ok(data),
            Ok(None) => Err(format!("{} is not pinned", names::TC_TAIL)),
            Err(error) => Err(error_chain(&error)),
        };
        tail::PROGRAMS
            .into_iter()
            .map(|(slot, program)| {
                let read = data.as_ref().map_err(Clone::clone).and_then(|data| {
                    tail_calls::slot_program(data.fd().as_fd(), slot)
                        .map_err(|e| format!("reading slot {slot}: {e}"))
                });
                let (program_id, error) = match read {
                    Ok(id) => (id, None),
                    Err(error) => (None, Some(error)),
                };
                TailCallEntry {
                    slot,
                    program,
                    program_id,
                    error,
                }
            })
            .collect()
    }
}

fn read_tc_link(pin: &Path, ifindex: u32, device: Option<String>) -> TcLinkEntry {
    let program = pin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut entry = TcLinkEntry {
        device,
        ifindex,
        direction: tc_direction(None, &program),
        program,
        pin: pin.to_path_buf(),
        link_id: None,
        program_id: None,
        attached: false,
        error: None,
    };
    match link_info::pinned_link(pin) {
        Ok(Some(state)) if state.ifindex.is_some() => {
            entry.link_id = Some(state.link_id);
            entry.program_id = Some(state.prog_id);
            entry.attached = state.attached_to_device(ifindex);
            entry.direction = tc_direction(Some(state.attach_type), &entry.program);
        }
        Ok(Some(_)) => entry.error = Some("not a tcx link".to_owned()),
        Ok(None) => entry.error = Some("the pin went away while it was read".to_owned()),
        Err(e) => entry.error = Some(format!("reading the link: {e}")),
    }
    entry
}

/// `ingress` or `egress`: from the link's attach type (`BPF_TCX_INGRESS`
/// 46, `BPF_TCX_EGRESS` 47), else from the program's name.
fn tc_direction(attach_type: Option<u32>, program: &str) -> &'static str {
    match attach_type {
        Some(46) => "ingress",
        Some(47) => "egress",
        Some(crate::dataplane::link_info::BPF_XDP) => "xdp",
        _ if program == proxy_common::programs::TC_EGRESS => "egress",
        _ => "ingress",
    }
}

/// CLOCK_MONOTONIC in nanoseconds, the clock of `bpf_ktime_get_ns`.
fn monotonic_now_ns() -> Result<u64, InspectError> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_err(InspectError::Clock)?;
    Ok(u64::try_from(now.tv_sec())
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(now.tv_nsec()).unwrap_or(0)))
}

fn read_link(pin: &Path) -> LinkEntry {
    let mut entry = LinkEntry {
        program: pin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        pin: pin.to_path_buf(),
        link_id: None,
        program_id: None,
        attach_type: None,
        cgroup_id: None,
        cgroup_path: None,
        error: None,
    };
    match link_info::pinned_link(pin) {
        Ok(Some(state)) => {
            entry.link_id = Some(state.link_id);
            entry.program_id = Some(state.prog_id);
            entry.attach_type = Some(attach_type_name(state.attach_type));
            entry.cgroup_id = state.cgroup_id;
            if state.cgroup_id.is_none() {
                entry.error = Some("not a cgroup link".to_owned());
            }
        }
        Ok(None) => entry.error = Some("the pin went away while it was read".to_owned()),
        Err(e) => entry.error = Some(format!("reading the link: {e}")),
    }
    entry
}

/// Cgroup directories whose inode (their cgroup id) is in `wanted`, found by
/// walking the hierarchy from `root` (bounded).
fn find_cgroups(root: &Path, wanted: &BTreeSet<u64>) -> HashMap<u64, PathBuf> {
    let mut found = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut visited = 0;
    while let Some(dir) = stack.pop() {
        if found.len() == wanted.len() || visited >= MAX_CGROUP_WALK {
            break;
        }
        visited += 1;
        if let Ok(meta) = fs::symlink_metadata(&dir)
            && wanted.contains(&meta.ino())
        {
            found.insert(meta.ino(), dir.clone());
        }
        let Ok(children) = fs::read_dir(&dir) else {
            continue;
        };
        stack.extend(
            children
                .flatten()
                .filter(|c| c.file_type().is_ok_and(|t| t.is_dir()))
                .map(|c| c.path()),
        );
    }
    found
}
