//! [`KernelMaps`]: the aya implementation of [`DataplaneMaps`]. Entries are
//! encoded and decoded in [`super::layout`]; reading goes through the one
//! reader of these maps ([`super::reader::MapReader`]), whose entries are
//! turned here into the writer's [`Applied`] mirror, strictly: an entry that
//! cannot be ours is an error, not a gap.

use std::{
    net::IpAddr,
    os::fd::{AsFd as _, OwnedFd},
    sync::Arc,
};

use aya::{
    Ebpf,
    maps::{
        Array, HashMap, Map, MapData, PerCpuArray,
        lpm_trie::{Key as LpmKey, LpmTrie},
    },
};
use proxy_common::{
    BackendV4, BackendV6, Be32, MaglevConfig, MaglevTable, RevNatV4, RevNatV6, ServiceKeyV4,
    ServiceKeyV6, ServiceName, ServiceValue, SrcRangeV4, SrcRangeV6, names, src_range,
};

use crate::{
    dataplane::{
        batch,
        layout::{
            BackendAddr, EncodedBackend as Encoded, EncodedRevNat, FrontendKey, RevNatAddr,
            ServiceKey, encode_backend, encode_revnat, service_key,
        },
        maglev,
        maps::{BatchError, DataplaneMaps, MapError},
        reader::{LbEntries, MapReader, ReadError},
    },
    model::{Backend, Frontend, Protocol, SourceRange},
    plan::{Applied, MAX_REV_NAT_ID, Op, RevNatId, Scope},
};

/// The service, backend and rev-NAT maps of both families, the Service names,
/// plus the counters.
pub struct KernelMaps {
    pub(crate) svc4: HashMap<MapData, ServiceKeyV4, ServiceValue>,
    pub(crate) svc6: HashMap<MapData, ServiceKeyV6, ServiceValue>,
    pub(crate) backend4: HashMap<MapData, u32, BackendV4>,
    pub(crate) backend6: HashMap<MapData, u32, BackendV6>,
    pub(crate) revnat4: HashMap<MapData, u32, RevNatV4>,
    pub(crate) revnat6: HashMap<MapData, u32, RevNatV6>,
    pub(crate) svc_names: HashMap<MapData, u32, ServiceName>,
    pub(crate) src_range4: LpmTrie<MapData, SrcRangeV4, u32>,
    pub(crate) src_range6: LpmTrie<MapData, SrcRangeV6, u32>,
    pub(crate) stats: PerCpuArray<MapData, u64>,
    pub(crate) maglev: HashMap<MapData, u64, MaglevTable>,
    pub(crate) maglev_cfg: Array<MapData, MaglevConfig>,
    pub(crate) filter: Array<MapData, u64>,
    /// Second handles on the maps we bulk-write, for `BPF_MAP_UPDATE_BATCH`.
    batch: BatchFds,
}

struct BatchFds {
    svc4: OwnedFd,
    svc6: OwnedFd,
    backend4: OwnedFd,
    backend6: OwnedFd,
    revnat4: OwnedFd,
    revnat6: OwnedFd,
    svc_names: OwnedFd,
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, MapError> {
    ebpf.take_map(name).ok_or(MapError::Missing { map: name })
}

macro_rules! typed {
    ($ebpf:expr, $name:expr, $ty:ty) => {
        <$ty>::try_from(take($ebpf, $name)?)
            .map_err(|source| MapError::Open { map: $name, source })?
    };
}

/// A duplicate of a map's fd, taken before aya wraps the map in a typed handle.
fn dup_fd(ebpf: &Ebpf, name: &'static str) -> Result<OwnedFd, MapError> {
    let map = ebpf.map(name).ok_or(MapError::Missing { map: name })?;
    let data = match map {
        Map::HashMap(data) | Map::LruHashMap(data) => data,
        _ => {
            return Err(MapError::Corrupt {
                map: name,
                detail: "not a hash map".to_owned(),
            });
        }
    };
    data.fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| MapError::Syscall {
            map: name,
            op: "dup",
            source,
        })
}

impl KernelMaps {
    /// Takes the maps out of a loaded object.
    pub fn take_from(ebpf: &mut Ebpf) -> Result<Self, MapError> {
        let batch = BatchFds {
            svc4: dup_fd(ebpf, names::SVC_V4)?,
            svc6: dup_fd(ebpf, names::SVC_V6)?,
            backend4: dup_fd(ebpf, names::BACKEND_V4)?,
            backend6: dup_fd(ebpf, names::BACKEND_V6)?,
            revnat4: dup_fd(ebpf, names::REVNAT_V4)?,
            revnat6: dup_fd(ebpf, names::REVNAT_V6)?,
            svc_names: dup_fd(ebpf, names::SVC_NAMES)?,
        };
        Ok(Self {
            batch,
            svc4: typed!(ebpf, names::SVC_V4, HashMap<MapData, ServiceKeyV4, ServiceValue>),
            svc6: typed!(ebpf, names::SVC_V6, HashMap<MapData, ServiceKeyV6, ServiceValue>),
            backend4: typed!(ebpf, names::BACKEND_V4, HashMap<MapData, u32, BackendV4>),
            backend6: typed!(ebpf, names::BACKEND_V6, HashMap<MapData, u32, BackendV6>),
            revnat4: typed!(ebpf, names::REVNAT_V4, HashMap<MapData, u32, RevNatV4>),
            revnat6: typed!(ebpf, names::REVNAT_V6, HashMap<MapData, u32, RevNatV6>),
            svc_names: typed!(ebpf, names::SVC_NAMES, HashMap<MapData, u32, ServiceName>),
            src_range4: typed!(ebpf, names::SRC_RANGE_V4, LpmTrie<MapData, SrcRangeV4, u32>),
            src_range6: typed!(ebpf, names::SRC_RANGE_V6, LpmTrie<MapData, SrcRangeV6, u32>),
            stats: typed!(ebpf, names::STATS, PerCpuArray<MapData, u64>),
            maglev: typed!(ebpf, names::MAGLEV, HashMap<MapData, u64, MaglevTable>),
            maglev_cfg: typed!(ebpf, names::MAGLEV_CFG, Array<MapData, MaglevConfig>),
            filter: typed!(ebpf, names::SVC_FILTER, Array<MapData, u64>),
        })
    }

    /// Writes `MAGLEV_CFG`: the tc path's table size and seed (`None`:
    /// random selection). Before the first sync, whose plan writes the
    /// tables (or deletes them).
    pub fn configure_maglev(
        &mut self,
        maglev: Option<&crate::plan::Maglev>,
    ) -> Result<(), MapError> {
        maglev::write_config(&mut self.maglev_cfg, maglev)
    }
}

/// Maps aya's errors to ours; a full hash map reports `E2BIG`.
fn syscall(map: &'static str, op: &'static str, error: aya::maps::MapError) -> MapError {
    match error {
        aya::maps::MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::E2BIG) => {
            MapError::Full { map }
        }
        aya::maps::MapError::SyscallError(e) => MapError::Syscall {
            map,
            op,
            source: e.io_error,
        },
        aya::maps::MapError::IoError(source) => MapError::Syscall { map, op, source },
        other => MapError::Syscall {
            map,
            op,
            source: std::io::Error::other(other.to_string()),
        },
    }
}

/// Deleting what is already gone is fine: the goal state holds.
fn removed(result: Result<(), aya::maps::MapError>, map: &'static str) -> Result<(), MapError> {
    match result {
        Ok(())
        | Err(aya::maps::MapError::KeyNotFound)
        | Err(aya::maps::MapError::ElementNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        Err(e) => Err(syscall(map, "delete", e)),
    }
}

fn inserted(result: Result<(), aya::maps::MapError>, map: &'static str) -> Result<(), MapError> {
    result.map_err(|e| syscall(map, "update", e))
}

impl DataplaneMaps for KernelMaps {
    fn set_filter_word(&mut self, index: u32, word: u64) -> Result<(), MapError> {
        inserted(self.filter.set(index, &word, 0), names::SVC_FILTER)
    }

    /// Puts (the bulk of a large sync) go to the kernel in batches; deletes
    /// one by one.
    fn execute_batch(&mut self, ops: &[Op]) -> Result<(), BatchError> {
        let Some(first) = ops.first() else {
            return Ok(());
        };
        let fds = &self.batch;
        let result = match first {
            Op::PutService { frontend, .. } if frontend.addr.is_ipv4() => {
                put_run(&fds.svc4, ops, names::SVC_V4, |op| {
                    match service_entry(op)? {
                        (ServiceKey::V4(k), v) => Some((k, v)),
                        _ => None,
                    }
                })
            }
            Op::PutService { .. } => put_run(&fds.svc6, ops, names::SVC_V6, |op| {
                match service_entry(op)? {
                    (ServiceKey::V6(k), v) => Some((k, v)),
                    _ => None,
                }
            }),
            Op::PutBackend { backend, .. } if backend.addr.is_ipv4() => put_run(
                &fds.backend4,
                ops,
                names::BACKEND_V4,
                |op| match backend_entry(op)? {
                    (id, Encoded::V4(v)) => Some((id, v)),
                    _ => None,
                },
            ),
            Op::PutBackend { .. } => {
                put_run(
                    &fds.backend6,
                    ops,
                    names::BACKEND_V6,
                    |op| match backend_entry(op)? {
                        (id, Encoded::V6(v)) => Some((id, v)),
                        _ => None,
                    },
                )
            }
            Op::PutRevNat { frontend, .. } if frontend.addr.is_ipv4() => put_run(
                &fds.revnat4,
                ops,
                names::REVNAT_V4,
                |op| match revnat_entry(op)? {
                    (id, EncodedRevNat::V4(v)) => Some((id, v)),
                    _ => None,
                },
            ),
            Op::PutRevNat { .. } => {
                put_run(
                    &fds.revnat6,
                    ops,
                    names::REVNAT_V6,
                    |op| match revnat_entry(op)? {
                        (id, EncodedRevNat::V6(v)) => Some((id, v)),
                        _ => None,
                    },
                )
            }
            Op::PutServiceName { .. } => {
                put_run(&fds.svc_names, ops, names::SVC_NAMES, |op| match op {
                    Op::PutServiceName { id, name } => Some((*id, **name)),
                    _ => None,
                })
            }
            _ => None,
        };
        match result {
            Some(result) => result,
            None => {
                for (done, op) in ops.iter().enumerate() {
                    self.execute(op)
                        .map_err(|error| BatchError { done, error })?;
                }
                Ok(())
            }
        }
    }

    fn execute(&mut self, op: &Op) -> Result<(), MapError> {
        match op {
            Op::PutBackend { id, backend, flags } => match encode_backend(backend, *flags) {
                Encoded::V4(v) => inserted(self.backend4.insert(id, &v, 0), names::BACKEND_V4),
                Encoded::V6(v) => inserted(self.backend6.insert(id, &v, 0), names::BACKEND_V6),
            },
            Op::DeleteBackend { id, backend } => match backend.addr {
                IpAddr::V4(_) => removed(self.backend4.remove(id), names::BACKEND_V4),
                IpAddr::V6(_) => removed(self.backend6.remove(id), names::BACKEND_V6),
            },
            Op::PutRevNat { id, frontend } => {
                let id = *id;
                match encode_revnat(frontend) {
                    EncodedRevNat::V4(v) => {
                        inserted(self.revnat4.insert(&id, &v, 0), names::REVNAT_V4)
                    }
                    EncodedRevNat::V6(v) => {
                        inserted(self.revnat6.insert(&id, &v, 0), names::REVNAT_V6)
                    }
                }
            }
            Op::DeleteRevNat { id, frontend } => match frontend.addr {
                IpAddr::V4(_) => removed(self.revnat4.remove(id), names::REVNAT_V4),
                IpAddr::V6(_) => removed(self.revnat6.remove(id), names::REVNAT_V6),
            },
            Op::PutService {
                frontend,
                scope,
                slot,
                value,
            } => match service_key(frontend, *scope, *slot) {
                ServiceKey::V4(k) => inserted(self.svc4.insert(&k, value, 0), names::SVC_V4),
                ServiceKey::V6(k) => inserted(self.svc6.insert(&k, value, 0), names::SVC_V6),
            },
            Op::DeleteService {
                frontend,
                scope,
                slot,
            } => match service_key(frontend, *scope, *slot) {
                ServiceKey::V4(k) => removed(self.svc4.remove(&k), names::SVC_V4),
                ServiceKey::V6(k) => removed(self.svc6.remove(&k), names::SVC_V6),
            },
            Op::PutServiceName { id, name } => {
                inserted(self.svc_names.insert(id, &**name, 0), names::SVC_NAMES)
            }
            Op::DeleteServiceName { id } => removed(self.svc_names.remove(id), names::SVC_NAMES),
            Op::PutSourceRange { id, range, allow } => {
                let verdict = if *allow {
                    src_range::ALLOW
                } else {
                    src_range::DENY
                };
                match src_range_key(*id, range) {
                    SrcRangeKey::V4(k) => {
                        inserted(self.src_range4.insert(&k, &verdict, 0), names::SRC_RANGE_V4)
                    }
                    SrcRangeKey::V6(k) => {
                        inserted(self.src_range6.insert(&k, &verdict, 0), names::SRC_RANGE_V6)
                    }
                }
            }
            Op::DeleteSourceRange { id, range } => match src_range_key(*id, range) {
                SrcRangeKey::V4(k) => removed(self.src_range4.remove(&k), names::SRC_RANGE_V4),
                SrcRangeKey::V6(k) => removed(self.src_range6.remove(&k), names::SRC_RANGE_V6),
            },
            Op::PutMaglev { id, scope, table } => inserted(
                self.maglev
                    .insert(&maglev::key(*id, *scope), &maglev::value(table), 0),
                names::MAGLEV,
            ),
            Op::DeleteMaglev { id, scope } => {
                removed(self.maglev.remove(&maglev::key(*id, *scope)), names::MAGLEV)
            }
        }
    }

    fn read(&self) -> Result<Applied, MapError> {
        let entries = self.reader().entries().map_err(|error| match error {
            ReadError::Info { map, source } => MapError::Open { map, source },
            ReadError::Iterate { map, source } => syscall(map, "iterate", source),
        })?;
        let mut applied = applied(&entries)?;
        self.read_source_ranges(&mut applied)?;
        applied.maglev = maglev::read(&self.maglev)?;
        Ok(applied)
    }
}

/// A `SRC_RANGE_V4`/`_V6` key.
enum SrcRangeKey {
    V4(LpmKey<SrcRangeV4>),
    V6(LpmKey<SrcRangeV6>),
}

fn src_range_key(id: RevNatId, range: &SourceRange) -> SrcRangeKey {
    let rev_nat_id = Be32(id.to_be());
    let prefix_len = src_range::ID_BITS + u32::from(range.prefix());
    match range.addr() {
        IpAddr::V4(a) => SrcRangeKey::V4(LpmKey::new(
            prefix_len,
            SrcRangeV4 {
                rev_nat_id,
                addr: Be32::from_octets(a.octets()),
            },
        )),
        IpAddr::V6(a) => SrcRangeKey::V6(LpmKey::new(
            prefix_len,
            SrcRangeV6 {
                rev_nat_id,
                addr: a.octets(),
            },
        )),
    }
}

/// The inverse of [`src_range_key`]: the rev-NAT id, range and verdict of an
/// entry, strictly (an entry that cannot be ours is corrupt).
fn src_range_entry(
    map: &'static str,
    prefix_len: u32,
    id: Be32,
    addr: IpAddr,
    verdict: u32,
) -> Result<((RevNatId, SourceRange), bool), MapError> {
    let corrupt = |detail: String| MapError::Corrupt { map, detail };
    let id = rev_nat_id(u32::from_be(id.0), map)?;
    let range = prefix_len
        .checked_sub(src_range::ID_BITS)
        .and_then(|p| u8::try_from(p).ok())
        .and_then(|p| SourceRange::new(addr, p))
        .filter(|r| r.addr() == addr)
        .ok_or_else(|| corrupt(format!("prefix length {prefix_len} for {addr}")))?;
    let allow = match verdict {
        src_range::ALLOW => true,
        src_range::DENY => false,
        other => return Err(corrupt(format!("unknown verdict {other}"))),
    };
    Ok(((id, range), allow))
}

impl KernelMaps {
    /// Adds the `SRC_RANGE_*` entries to `applied`.
    fn read_source_ranges(&self, applied: &mut Applied) -> Result<(), MapError> {
        use names::{SRC_RANGE_V4, SRC_RANGE_V6};
        for item in self.src_range4.iter() {
            let (k, v) = item.map_err(|e| syscall(SRC_RANGE_V4, "iterate", e))?;
            let data = k.data();
            let addr = IpAddr::from(data.addr.octets());
            let (key, allow) =
                src_range_entry(SRC_RANGE_V4, k.prefix_len(), data.rev_nat_id, addr, v)?;
            applied.source_ranges.insert(key, allow);
        }
        for item in self.src_range6.iter() {
            let (k, v) = item.map_err(|e| syscall(SRC_RANGE_V6, "iterate", e))?;
            let data = k.data();
            let addr = IpAddr::from(data.addr);
            let (key, allow) =
                src_range_entry(SRC_RANGE_V6, k.prefix_len(), data.rev_nat_id, addr, v)?;
            applied.source_ranges.insert(key, allow);
        }
        Ok(())
    }
}

impl KernelMaps {
    /// The one reader of these maps, over our own handles. Unbounded: no one
    /// else writes them while we read.
    pub fn reader(&self) -> MapReader<'_> {
        MapReader {
            svc4: &self.svc4,
            svc6: &self.svc6,
            backend4: &self.backend4,
            backend6: &self.backend6,
            revnat4: Some(&self.revnat4),
            revnat6: Some(&self.revnat6),
            names: Some(&self.svc_names),
            bounded: false,
        }
    }
}

/// What the maps hold, as the writer's mirror. Strict where the reader's
/// [`crate::dataplane::reader::Dataset`] is lenient: an unknown protocol or
/// scope, or an id over 16 bits, is [`MapError::Corrupt`].
pub fn applied(entries: &LbEntries) -> Result<Applied, MapError> {
    use names::{BACKEND_V4, BACKEND_V6, REVNAT_V4, REVNAT_V6, SVC_NAMES, SVC_V4, SVC_V6};
    let mut applied = Applied::default();
    let v4 = entries
        .svc4
        .iter()
        .map(|(k, v)| (FrontendKey::v4(k), k.slot, v, SVC_V4));
    let v6 = entries
        .svc6
        .iter()
        .map(|(k, v)| (FrontendKey::v6(k), k.slot, v, SVC_V6));
    for (key, slot, value, map) in v4.chain(v6) {
        let f = frontend(key.addr, key.port, key.proto, map)?;
        applied
            .services
            .insert((f, scope(key.scope, map)?, slot), *value);
    }
    let v4 = entries
        .backend4
        .iter()
        .map(|(id, b)| (*id, BackendAddr::v4(b), BACKEND_V4));
    let v6 = entries
        .backend6
        .iter()
        .map(|(id, b)| (*id, BackendAddr::v6(b), BACKEND_V6));
    for (id, b, map) in v4.chain(v6) {
        let f = frontend(b.addr, b.port, b.proto, map)?;
        applied.backends.insert(
            id,
            Backend {
                addr: f.addr,
                port: f.port,
                protocol: f.protocol,
            },
        );
        if b.flags != 0 {
            applied.backend_flags.insert(id, b.flags);
        }
    }
    // Rev-NAT values carry no protocol: take it from the frontend that owns
    // the id, so the mirror compares equal to what the plan wrote.
    let owners: std::collections::BTreeMap<u32, Frontend> = applied
        .services
        .iter()
        .filter(|((_, _, slot), _)| *slot == 0)
        .map(|((f, _, _), v)| (v.rev_nat_id, *f))
        .collect();
    let v4 = entries
        .revnat4
        .iter()
        .map(|(id, v)| (*id, RevNatAddr::v4(v), REVNAT_V4));
    let v6 = entries
        .revnat6
        .iter()
        .map(|(id, v)| (*id, RevNatAddr::v6(v), REVNAT_V6));
    for (id, v, map) in v4.chain(v6) {
        let id = rev_nat_id(id, map)?;
        let owned = owners
            .get(&id)
            .filter(|f| f.addr == v.addr && f.port == v.port);
        let frontend = owned.copied().unwrap_or(Frontend {
            addr: v.addr,
            port: v.port,
            protocol: Protocol::Tcp,
        });
        applied.rev_nat.insert(id, frontend);
    }
    for (id, name) in &entries.names {
        applied
            .svc_names
            .insert(rev_nat_id(*id, SVC_NAMES)?, Arc::new(*name));
    }
    applied.reindex();
    Ok(applied)
}

fn rev_nat_id(id: u32, map: &'static str) -> Result<RevNatId, MapError> {
    if id <= MAX_REV_NAT_ID {
        Ok(id)
    } else {
        Err(MapError::Corrupt {
            map,
            detail: format!("rev-NAT id {id} is past the largest id, {MAX_REV_NAT_ID}"),
        })
    }
}

/// A run of puts to one map as one batch; `entry` turns each op into the
/// map's key and value. `None` when the run is not uniform (the caller then
/// falls back to single writes).
fn put_run<K: aya::Pod, V: aya::Pod>(
    fd: &OwnedFd,
    ops: &[Op],
    map: &'static str,
    entry: impl Fn(&Op) -> Option<(K, V)>,
) -> Option<Result<(), BatchError>> {
    let mut keys = Vec::with_capacity(ops.len());
    let mut values = Vec::with_capacity(ops.len());
    for op in ops {
        let (k, v) = entry(op)?;
        keys.push(k);
        values.push(v);
    }
    Some(batch_result(batch::update(fd.as_fd(), &keys, &values), map))
}

fn service_entry(op: &Op) -> Option<(ServiceKey, ServiceValue)> {
    match op {
        Op::PutService {
            frontend,
            scope,
            slot,
            value,
        } => Some((service_key(frontend, *scope, *slot), *value)),
        _ => None,
    }
}

fn backend_entry(op: &Op) -> Option<(u32, Encoded)> {
    match op {
        Op::PutBackend { id, backend, flags } => Some((*id, encode_backend(backend, *flags))),
        _ => None,
    }
}

fn revnat_entry(op: &Op) -> Option<(u32, EncodedRevNat)> {
    match op {
        Op::PutRevNat { id, frontend } => Some((*id, encode_revnat(frontend))),
        _ => None,
    }
}

fn batch_result(
    result: Result<(), (usize, std::io::Error)>,
    map: &'static str,
) -> Result<(), BatchError> {
    result.map_err(|(done, source)| {
        let error = if source.raw_os_error() == Some(libc::E2BIG) {
            MapError::Full { map }
        } else {
            MapError::Syscall {
                map,
                op: "batch update",
                source,
            }
        };
        BatchError { done, error }
    })
}

fn protocol(n: u8, map: &'static str) -> Result<Protocol, MapError> {
    Protocol::from_number(n).ok_or_else(|| MapError::Corrupt {
        map,
        detail: format!("unknown protocol {n}"),
    })
}

fn scope(n: u8, map: &'static str) -> Result<Scope, MapError> {
    Scope::from_number(n).ok_or_else(|| MapError::Corrupt {
        map,
        detail: format!("unknown service scope {n}"),
    })
}

fn frontend(addr: IpAddr, port: u16, proto: u8, map: &'static str) -> Result<Frontend, MapError> {
    Ok(Frontend {
        addr,
        port,
        protocol: protocol(proto, map)?,
    })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn frontend(addr: IpAddr, port: u16, protocol: Protocol) -> Frontend {
        Frontend {
            addr,
            port,
            protocol,
        }
    }

    /// The entries the kernel would hold after `ops`, as the reader returns them.
    fn entries_after(ops: &[Op]) -> LbEntries {
        let mut out = LbEntries::default();
        for op in ops {
            match op {
                Op::PutService { .. } => match service_entry(op) {
                    Some((ServiceKey::V4(k), v)) => out.svc4.push((k, v)),
                    Some((ServiceKey::V6(k), v)) => out.svc6.push((k, v)),
                    None => {}
                },
                Op::PutBackend { .. } => match backend_entry(op) {
                    Some((id, Encoded::V4(b))) => out.backend4.push((id, b)),
                    Some((id, Encoded::V6(b))) => out.backend6.push((id, b)),
                    None => {}
                },
                Op::PutRevNat { .. } => match revnat_entry(op) {
                    Some((id, EncodedRevNat::V4(v))) => out.revnat4.push((id, v)),
                    Some((id, EncodedRevNat::V6(v))) => out.revnat6.push((id, v)),
                    None => {}
                },
                Op::PutServiceName { id, name } => out.names.push((*id, **name)),
                _ => {}
            }
        }
        out
    }

    /// What the writer's mirror records for `ops` equals what reading the
    /// maps back gives, in both families, with a UDP frontend's rev-NAT entry
    /// taking its protocol from the frontend.
    #[test]
    fn reading_back_what_was_written_gives_the_mirror() {
        let web = frontend(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)), 53, Protocol::Udp);
        let web6 = frontend(
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x10)),
            80,
            Protocol::Tcp,
        );
        let backend = |addr: IpAddr| Backend {
            addr,
            port: 8080,
            protocol: Protocol::Udp,
        };
        let ops = [
            Op::PutBackend {
                id: 1,
                backend: backend(IpAddr::V4(Ipv4Addr::new(10, 244, 0, 1))),
                flags: proxy_common::backend_flags::LOCAL,
            },
            Op::PutBackend {
                id: 2,
                backend: backend(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                flags: 0,
            },
            Op::PutRevNat {
                id: 7,
                frontend: web,
            },
            Op::PutRevNat {
                id: 8,
                frontend: web6,
            },
            Op::PutService {
                frontend: web,
                scope: Scope::Internal,
                slot: 1,
                value: ServiceValue {
                    backend_id: 1,
                    ..Default::default()
                },
            },
            Op::PutService {
                frontend: web,
                scope: Scope::Internal,
                slot: 0,
                value: ServiceValue {
                    count: 1,
                    rev_nat_id: 7,
                    ..Default::default()
                },
            },
            Op::PutService {
                frontend: web6,
                scope: Scope::External,
                slot: 0,
                value: ServiceValue {
                    rev_nat_id: 8,
                    ..Default::default()
                },
            },
            Op::PutServiceName {
                id: 7,
                name: Arc::new(ServiceName::EMPTY),
            },
        ];
        let mut mirror = Applied::default();
        for op in &ops {
            mirror.record(op);
        }
        let read = applied(&entries_after(&ops)).map_err(|e| e.to_string());
        let read = read.as_ref().map(|a| {
            (
                &a.services,
                &a.backends,
                &a.backend_flags,
                &a.rev_nat,
                &a.svc_names,
            )
        });
        let expected = (
            &mirror.services,
            &mirror.backends,
            &mirror.backend_flags,
            &mirror.rev_nat,
            &mirror.svc_names,
        );
        assert_eq!(read, Ok(expected));
    }

    #[test]
    fn an_entry_that_cannot_be_ours_is_corrupt() {
        let entries = LbEntries {
            names: vec![(2_000_000, ServiceName::EMPTY)],
            ..Default::default()
        };
        let error = applied(&entries).map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(
            error,
            Err(
                "map SVC_NAMES holds an entry that does not decode: rev-NAT id 2000000 is past \
                 the largest id, 1048576"
                    .to_owned()
            )
        );
    }

    /// A source range's key carries the rev-NAT id big-endian and the prefix
    /// length past it; decoding gives back the range and the verdict.
    #[test]
    fn source_range_keys_round_trip() {
        for (id, range, allow) in [
            (7, "198.51.100.0/24", true),
            (7, "0.0.0.0/0", false),
            (65_535, "2001:db8::/32", true),
            (1, "::/0", true),
        ] {
            let range = SourceRange::parse(range).unwrap_or_else(|| panic!("{range}"));
            let verdict = if allow {
                src_range::ALLOW
            } else {
                src_range::DENY
            };
            let decoded = match src_range_key(id, &range) {
                SrcRangeKey::V4(k) => {
                    let data = k.data();
                    assert_eq!(data.rev_nat_id.octets(), id.to_be_bytes());
                    src_range_entry(
                        names::SRC_RANGE_V4,
                        k.prefix_len(),
                        data.rev_nat_id,
                        IpAddr::from(data.addr.octets()),
                        verdict,
                    )
                }
                SrcRangeKey::V6(k) => {
                    let data = k.data();
                    src_range_entry(
                        names::SRC_RANGE_V6,
                        k.prefix_len(),
                        data.rev_nat_id,
                        IpAddr::from(data.addr),
                        verdict,
                    )
                }
            };
            assert_eq!(decoded.ok(), Some(((id, range), allow)));
        }
    }

    /// Host bits set, a prefix shorter than the id's bits, or an unknown
    /// verdict cannot be ours.
    #[test]
    fn a_source_range_entry_that_cannot_be_ours_is_corrupt() {
        let id = Be32(7u32.to_be());
        let addr = IpAddr::from([198, 51, 100, 1]);
        let map = names::SRC_RANGE_V4;
        assert!(src_range_entry(map, 32 + 24, id, addr, src_range::ALLOW).is_err());
        assert!(src_range_entry(map, 16, id, IpAddr::from([0; 4]), src_range::ALLOW).is_err());
        let net = IpAddr::from([198, 51, 100, 0]);
        assert!(src_range_entry(map, 32 + 24, id, net, 9).is_err());
        assert!(src_range_entry(map, 32 + 24, id, net, src_range::ALLOW).is_ok());
    }
}
