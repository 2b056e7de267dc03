//! [`KernelMaps`]: the aya implementation of [`DataplaneMaps`], and the
//! conversions between model types and the `#[repr(C)]` map layouts.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd as _, OwnedFd},
    sync::Arc,
};

use aya::{
    Ebpf,
    maps::{HashMap, Map, MapData, PerCpuArray},
};
use proxy_common::{
    BackendV4, BackendV6, Be16, Be32, RevNatV4, RevNatV6, ServiceKeyV4, ServiceKeyV6, ServiceName,
    ServiceValue, names,
};

use crate::{
    dataplane::{
        batch,
        maps::{BatchError, DataplaneMaps, MapError},
    },
    model::{Backend, Frontend, Protocol},
    plan::{Applied, Op, Scope},
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
    pub(crate) stats: PerCpuArray<MapData, u64>,
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
            stats: typed!(ebpf, names::STATS, PerCpuArray<MapData, u64>),
        })
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
                    Op::PutServiceName { id, name } => Some((u32::from(*id), **name)),
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
                let id = u32::from(*id);
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
                IpAddr::V4(_) => removed(self.revnat4.remove(&u32::from(*id)), names::REVNAT_V4),
                IpAddr::V6(_) => removed(self.revnat6.remove(&u32::from(*id)), names::REVNAT_V6),
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
            Op::PutServiceName { id, name } => inserted(
                self.svc_names.insert(&u32::from(*id), &**name, 0),
                names::SVC_NAMES,
            ),
            Op::DeleteServiceName { id } => {
                removed(self.svc_names.remove(&u32::from(*id)), names::SVC_NAMES)
            }
        }
    }

    fn read(&self) -> Result<Applied, MapError> {
        use names::{BACKEND_V4, BACKEND_V6, SVC_V4, SVC_V6};
        let mut applied = Applied::default();
        for entry in entries(&self.svc4, SVC_V4) {
            let (k, v) = entry?;
            let f = frontend(ip4(k.addr), k.port, k.proto, SVC_V4)?;
            applied
                .services
                .insert((f, scope(k.scope, SVC_V4)?, k.slot), v);
        }
        for entry in entries(&self.svc6, SVC_V6) {
            let (k, v) = entry?;
            let f = frontend(ip6(k.addr), k.port, k.proto, SVC_V6)?;
            applied
                .services
                .insert((f, scope(k.scope, SVC_V6)?, k.slot), v);
        }
        for entry in entries(&self.backend4, BACKEND_V4) {
            let (id, b) = entry?;
            let f = frontend(ip4(b.addr), b.port, b.proto, BACKEND_V4)?;
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
        for entry in entries(&self.backend6, BACKEND_V6) {
            let (id, b) = entry?;
            let f = frontend(ip6(b.addr), b.port, b.proto, BACKEND_V6)?;
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
        let owners: std::collections::BTreeMap<u16, Frontend> = applied
            .services
            .iter()
            .filter(|((_, _, slot), _)| *slot == 0)
            .map(|((f, _, _), v)| (v.rev_nat_id, *f))
            .collect();
        let revnat_frontend = |id: u32, addr: IpAddr, port: Be16| {
            let id = u16::try_from(id).map_err(|_| MapError::Corrupt {
                map: names::REVNAT_V4,
                detail: format!("rev-NAT id {id} does not fit in 16 bits"),
            })?;
            let owned = owners
                .get(&id)
                .filter(|f| f.addr == addr && f.port == port.to_host());
            let frontend = owned.copied().unwrap_or(Frontend {
                addr,
                port: port.to_host(),
                protocol: Protocol::Tcp,
            });
            Ok::<_, MapError>((id, frontend))
        };
        for entry in entries(&self.revnat4, names::REVNAT_V4) {
            let (id, v) = entry?;
            let (id, f) = revnat_frontend(id, ip4(v.addr), v.port)?;
            applied.rev_nat.insert(id, f);
        }
        for entry in entries(&self.revnat6, names::REVNAT_V6) {
            let (id, v) = entry?;
            let (id, f) = revnat_frontend(id, ip6(v.addr), v.port)?;
            applied.rev_nat.insert(id, f);
        }
        for entry in entries(&self.svc_names, names::SVC_NAMES) {
            let (id, name) = entry?;
            let id = u16::try_from(id).map_err(|_| MapError::Corrupt {
                map: names::SVC_NAMES,
                detail: format!("rev-NAT id {id} does not fit in 16 bits"),
            })?;
            applied.svc_names.insert(id, Arc::new(name));
        }
        applied.reindex();
        Ok(applied)
    }
}

/// Every entry of a hash map, with errors named after the map.
fn entries<'a, K: aya::Pod, V: aya::Pod>(
    map: &'a HashMap<MapData, K, V>,
    name: &'static str,
) -> impl Iterator<Item = Result<(K, V), MapError>> + 'a {
    map.iter()
        .map(move |entry| entry.map_err(|e| syscall(name, "iterate", e)))
}

fn ip4(addr: Be32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(addr.octets()))
}

fn ip6(addr: [u8; 16]) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(addr))
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
        Op::PutRevNat { id, frontend } => Some((u32::from(*id), encode_revnat(frontend))),
        _ => None,
    }
}

enum EncodedRevNat {
    V4(RevNatV4),
    V6(RevNatV6),
}

fn encode_revnat(frontend: &Frontend) -> EncodedRevNat {
    let port = Be16::from_host(frontend.port);
    match frontend.addr {
        IpAddr::V4(a) => EncodedRevNat::V4(RevNatV4 {
            addr: v4(a),
            port,
            _pad: 0,
        }),
        IpAddr::V6(a) => EncodedRevNat::V6(RevNatV6 {
            addr: a.octets(),
            port,
            _pad: 0,
        }),
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

fn frontend(addr: IpAddr, port: Be16, proto: u8, map: &'static str) -> Result<Frontend, MapError> {
    Ok(Frontend {
        addr,
        port: port.to_host(),
        protocol: protocol(proto, map)?,
    })
}

fn v4(a: Ipv4Addr) -> Be32 {
    Be32::from_octets(a.octets())
}

enum ServiceKey {
    V4(ServiceKeyV4),
    V6(ServiceKeyV6),
}

fn service_key(f: &Frontend, scope: Scope, slot: u16) -> ServiceKey {
    let port = Be16::from_host(f.port);
    let proto = f.protocol.number();
    match f.addr {
        IpAddr::V4(a) => ServiceKey::V4(ServiceKeyV4 {
            addr: v4(a),
            port,
            slot,
            proto,
            scope: scope.number(),
            _pad: [0; 2],
        }),
        IpAddr::V6(a) => ServiceKey::V6(ServiceKeyV6 {
            addr: a.octets(),
            port,
            slot,
            proto,
            scope: scope.number(),
            _pad: [0; 2],
        }),
    }
}

enum Encoded {
    V4(BackendV4),
    V6(BackendV6),
}

fn encode_backend(b: &Backend, flags: u8) -> Encoded {
    let port = Be16::from_host(b.port);
    let proto = b.protocol.number();
    match b.addr {
        IpAddr::V4(a) => Encoded::V4(BackendV4 {
            addr: v4(a),
            port,
            proto,
            flags,
        }),
        IpAddr::V6(a) => Encoded::V6(BackendV6 {
            addr: a.octets(),
            port,
            proto,
            flags,
        }),
    }
}
