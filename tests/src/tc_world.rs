//! The tc programs (`tc_ingress`, `tc_egress`) loaded for `BPF_PROG_TEST_RUN`:
//! no device is attached and no packet is sent. Shared by the packet tests
//! (`tests/tests/tc_packets.rs`) and the packet fuzzer (`fuzz/`).
//!
//! [`TcWorld::load`] loads the object the `proxy` binary embeds (the caller
//! passes it: this kit does not depend on the daemon's crate) with its maps
//! pinned in a directory of a private bpffs, loads both tc programs and
//! those `tc_ingress` tail-calls, fills `TC_TAIL` and writes the node's SNAT
//! addresses; [`TcWorld::set_service`] programs a
//! frontend with its backends as the daemon's plan writes them;
//! [`TcWorld::run`] runs one frame through a hook.
//!
//! Needs root (CAP_BPF, CAP_NET_ADMIN) and a bpffs directory of its own.

use std::{net::IpAddr, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, MapData, PerCpuArray, ProgramArray,
        lpm_trie::{Key as LpmKey, LpmTrie},
    },
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use proxy_common::{
    BackendV4, BackendV6, Be16, Be32, DeviceConfig, NodeConfig, Reason, ServiceKeyV4, ServiceKeyV6,
    ServiceValue, names, programs, tail,
};

/// `TC_ACT_OK`: the packet goes on (to the stack, or out).
pub const TC_ACT_OK: u32 = 0;
/// `TC_ACT_SHOT`: dropped.
pub const TC_ACT_SHOT: u32 = 2;
/// `TC_ACT_REDIRECT`: handed to another device (`bpf_redirect*`).
pub const TC_ACT_REDIRECT: u32 = 7;

/// Which tc program a frame goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Ingress,
    Egress,
}

/// A frontend as the daemon's plan writes it: slot 0 holds the service's
/// value, slots 1..=n each a backend id.
#[derive(Clone, Debug)]
pub struct TcService {
    pub vip: IpAddr,
    pub port: u16,
    pub proto: u8,
    pub scope: u8,
    pub flags: u16,
    pub rev_nat_id: u32,
    /// Seconds of ClientIP affinity (with `svc_flags::AFFINITY`).
    pub affinity_timeout: u32,
}

/// One backend of a [`TcService`]: its id in `BACKEND_V4`/`BACKEND_V6`.
#[derive(Clone, Copy, Debug)]
pub struct TcBackend {
    pub id: u32,
    pub addr: IpAddr,
    pub port: u16,
    pub flags: u8,
}

/// The loaded object, its tc programs loaded.
pub struct TcWorld {
    ebpf: Ebpf,
}

impl TcWorld {
    /// Loads `object` with its maps pinned under `dir` (an empty directory of
    /// a bpffs), loads both tc programs and sets the node's SNAT addresses.
    pub fn load(
        dir: &Path,
        object: &[u8],
        snat_v4: [u8; 4],
        snat_v6: [u8; 16],
    ) -> Result<Self, String> {
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(dir)
            .load(object)
            .map_err(|e| format!("loading the object: {e}"))?;
        // An object without them (an older build, which `per_packet_cost`
        // can measure) loads without.
        let tails: Vec<(u32, &str)> = tail::PROGRAMS
            .into_iter()
            .filter(|(_, name)| ebpf.program(name).is_some())
            .collect();
        let names = tails.iter().map(|(_, name)| *name);
        for name in names.chain([programs::TC_INGRESS, programs::TC_EGRESS]) {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(format!("no program {name}"))?
                .try_into()
                .map_err(|e| format!("{name}: {e}"))?;
            prog.load().map_err(|e| {
                // The verifier's log is long: its end says why.
                let text = format!("{e:?}").replace("\\n", "\n");
                let tail = text.len().saturating_sub(4000);
                format!(
                    "verifier rejected {name}: …{}",
                    text.get(tail..).unwrap_or(&text)
                )
            })?;
        }
        let mut world = Self { ebpf };
        for (slot, _) in tails {
            world.set_tail_call(slot, true)?;
        }
        let cfg = NodeConfig {
            snat_v4: Be32::from_octets(snat_v4),
            // Zero: the programs' built-in range.
            snat_port_min: 0,
            snat_port_max: 0,
            snat_v6,
        };
        world.set_node_config(&cfg)?;
        Ok(world)
    }

    /// Points `TC_TAIL` slot `slot` at its program (as the daemon does
    /// before it attaches `tc_ingress`), or empties it (`filled` false).
    pub fn set_tail_call(&mut self, slot: u32, filled: bool) -> Result<(), String> {
        let (_, name) = tail::PROGRAMS
            .into_iter()
            .find(|(s, _)| *s == slot)
            .ok_or(format!("no TC_TAIL slot {slot}"))?;
        let prog: &SchedClassifier = self
            .ebpf
            .program(name)
            .ok_or(format!("no program {name}"))?
            .try_into()
            .map_err(|e| format!("{name}: {e}"))?;
        let fd = prog
            .fd()
            .map_err(|e| format!("{name}: {e}"))?
            .try_clone()
            .map_err(|e| format!("{name}: {e}"))?;
        let mut array: ProgramArray<&mut MapData> = self.map(names::TC_TAIL)?;
        if filled {
            array.set(slot, &fd, 0)
        } else {
            array.clear_index(&slot)
        }
        .map_err(|e| format!("{}: {e}", names::TC_TAIL))
    }

    /// Replaces `NODE_CFG` (all zero: no SNAT address).
    pub fn set_node_config(&mut self, cfg: &NodeConfig) -> Result<(), String> {
        let mut node: Array<&mut MapData, NodeConfig> = self.map(names::NODE_CFG)?;
        node.set(0, cfg, 0).map_err(|e| e.to_string())
    }

    /// One of the object's maps, typed.
    pub fn map<'a, T: TryFrom<&'a mut aya::maps::Map>>(
        &'a mut self,
        name: &str,
    ) -> Result<T, String>
    where
        T::Error: std::fmt::Display,
    {
        self.ebpf
            .map_mut(name)
            .ok_or(format!("no map {name}"))?
            .try_into()
            .map_err(|e: T::Error| format!("{name}: {e}"))
    }

    /// Runs `input` (an Ethernet frame) through `hook`: the verdict and the
    /// frame as the program left it. The output buffer has room for the
    /// frame to grow by 512 bytes (a reject quotes the packet).
    pub fn run(&self, hook: Hook, input: &[u8]) -> Result<(u32, Vec<u8>), String> {
        let name = match hook {
            Hook::Ingress => programs::TC_INGRESS,
            Hook::Egress => programs::TC_EGRESS,
        };
        self.run_program(name, input)
            .map(|(verdict, out, _)| (verdict, out))
    }

    /// Runs `input` through the tc program `name` (a tail-call target
    /// too): the verdict, the frame as the program left it, and the run's
    /// time as the kernel measured it.
    pub fn run_program(
        &self,
        name: &str,
        input: &[u8],
    ) -> Result<(u32, Vec<u8>, std::time::Duration), String> {
        let prog: &SchedClassifier = self
            .ebpf
            .program(name)
            .ok_or("no program")?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        let mut out = vec![0u8; input.len() + 512];
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(input),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .map_err(|e| format!("test_run: {e:?}"))?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out, result.duration))
    }

    /// Runs `input` through `xdp_ingress` (loaded on first use; the same
    /// maps as the tc programs): the XDP action and the frame as the program
    /// left it.
    pub fn run_xdp(&mut self, input: &[u8]) -> Result<(u32, Vec<u8>), String> {
        let name = programs::XDP_INGRESS;
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or(format!("no program {name}"))?
            .try_into()
            .map_err(|e| format!("{name}: {e}"))?;
        if prog.fd().is_err() {
            prog.load()
                .map_err(|e| format!("verifier rejected {name}: {e:?}"))?;
        }
        let mut out = vec![0u8; input.len()];
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(input),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .map_err(|e| format!("test_run: {e:?}"))?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out))
    }

    /// The `STATS` counter named `name` (a [`Reason`]'s snake_case name),
    /// summed over CPUs.
    pub fn stat(&mut self, name: &str) -> Result<u64, String> {
        let reason = Reason::ALL
            .into_iter()
            .find(|r| r.name() == name)
            .ok_or(format!("no reason named {name}"))?;
        let stats: PerCpuArray<&mut MapData, u64> = self.map(names::STATS)?;
        stats
            .get(&(reason as u32), 0)
            .map(|v| v.iter().sum())
            .map_err(|e| format!("reading STATS: {e}"))
    }

    /// Sets the `DEVICES` entry of `ifindex`.
    pub fn set_device(&mut self, ifindex: u32, flags: u32) -> Result<(), String> {
        let mut devs: HashMap<&mut MapData, u32, DeviceConfig> = self.map(names::DEVICES)?;
        devs.insert(&ifindex, &DeviceConfig { flags }, 0)
            .map_err(|e| e.to_string())
    }

    /// Adds a prefix to `LOCAL_V4` or `LOCAL_V6` (the cluster CIDR, read on
    /// devices with a `DETECT_CIDR_*` flag).
    pub fn add_local_cidr(&mut self, addr: IpAddr, prefix: u32) -> Result<(), String> {
        match addr {
            IpAddr::V4(a) => {
                let mut local: LpmTrie<&mut MapData, [u8; 4], u8> = self.map(names::LOCAL_V4)?;
                local.insert(&LpmKey::new(prefix, a.octets()), &1, 0)
            }
            IpAddr::V6(a) => {
                let mut local: LpmTrie<&mut MapData, [u8; 16], u8> = self.map(names::LOCAL_V6)?;
                local.insert(&LpmKey::new(prefix, a.octets()), &1, 0)
            }
        }
        .map_err(|e| e.to_string())
    }

    /// Writes `svc` with `backends` (backends, slots, then slot 0, the
    /// daemon's order), and deletes the backend ids in `gone`.
    pub fn set_service(
        &mut self,
        svc: &TcService,
        backends: &[TcBackend],
        gone: &[u32],
    ) -> Result<(), String> {
        let count = u16::try_from(backends.len()).map_err(|_| "too many backends")?;
        let frontend = ServiceValue {
            backend_id: 0,
            count,
            rev_nat_id: svc.rev_nat_id,
            flags: svc.flags,
            maglev_table: 0,
            affinity_timeout: svc.affinity_timeout,
            _pad: 0,
        };
        let err = |e: aya::maps::MapError| e.to_string();
        let slot = |b: &TcBackend| ServiceValue {
            backend_id: b.id,
            ..ServiceValue::default()
        };
        match svc.vip {
            IpAddr::V4(vip) => {
                let mut bes: HashMap<&mut MapData, u32, BackendV4> = self.map(names::BACKEND_V4)?;
                for b in backends {
                    let IpAddr::V4(addr) = b.addr else {
                        return Err(format!("backend {} is not IPv4", b.addr));
                    };
                    let v = BackendV4 {
                        addr: Be32::from_octets(addr.octets()),
                        port: Be16::from_host(b.port),
                        proto: svc.proto,
                        flags: b.flags,
                    };
                    bes.insert(&b.id, &v, 0).map_err(err)?;
                }
                for id in gone {
                    bes.remove(id).map_err(err)?;
                }
                let mut svcs: HashMap<&mut MapData, ServiceKeyV4, ServiceValue> =
                    self.map(names::SVC_V4)?;
                let key = |slot: u16| ServiceKeyV4 {
                    addr: Be32::from_octets(vip.octets()),
                    port: Be16::from_host(svc.port),
                    slot,
                    proto: svc.proto,
                    scope: svc.scope,
                    _pad: [0; 2],
                };
                for (i, b) in (1..).zip(backends) {
                    svcs.insert(&key(i), &slot(b), 0).map_err(err)?;
                }
                svcs.insert(&key(0), &frontend, 0).map_err(err)?;
            }
            IpAddr::V6(vip) => {
                let mut bes: HashMap<&mut MapData, u32, BackendV6> = self.map(names::BACKEND_V6)?;
                for b in backends {
                    let IpAddr::V6(addr) = b.addr else {
                        return Err(format!("backend {} is not IPv6", b.addr));
                    };
                    let v = BackendV6 {
                        addr: addr.octets(),
                        port: Be16::from_host(b.port),
                        proto: svc.proto,
                        flags: b.flags,
                    };
                    bes.insert(&b.id, &v, 0).map_err(err)?;
                }
                for id in gone {
                    bes.remove(id).map_err(err)?;
                }
                let mut svcs: HashMap<&mut MapData, ServiceKeyV6, ServiceValue> =
                    self.map(names::SVC_V6)?;
                let key = |slot: u16| ServiceKeyV6 {
                    addr: vip.octets(),
                    port: Be16::from_host(svc.port),
                    slot,
                    proto: svc.proto,
                    scope: svc.scope,
                    _pad: [0; 2],
                };
                for (i, b) in (1..).zip(backends) {
                    svcs.insert(&key(i), &slot(b), 0).map_err(err)?;
                }
                svcs.insert(&key(0), &frontend, 0).map_err(err)?;
            }
        }
        Ok(())
    }
}
