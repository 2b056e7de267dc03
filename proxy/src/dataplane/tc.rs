//! The tc programs on the node's devices: attached through tcx links, pinned
//! per device, and the `DEVICES` and `NODE_CFG` maps that tell them what each
//! device is and which address to SNAT to.
//!
//! [`TcHooks::ensure`] is called with the socket hooks' (from
//! `loader::SocketHooks::ensure`: after the first complete sync, then at every
//! reconcile, and after link or address notifications: see
//! [`devices::watch_links`]). Each call resolves the devices afresh
//! ([`devices::read_links`], [`devices::select`]), so pod devices that
//! appeared since are attached and vanished ones dropped. Per device and direction, the link pinned at
//! `<pin>/v<N>/links/tc-<ifindex>/<program>`:
//!
//! - attached to the device with our program: kept;
//! - attached to the device with another program (a previous daemon's):
//!   taken over with `BPF_LINK_UPDATE`, so the device is never without a
//!   program;
//! - detached (by hand, or the device was replaced) or not pinned: a new link
//!   is attached and pinned under a temporary name, then renamed over. Once
//!   the first `ensure` has succeeded, finding a device we attached in that
//!   state is drift, reported as [`HookAction::Repaired`].
//!
//! A device's `DEVICES` entry is written before its programs are attached, and
//! deleted after its links are dropped; its flags add the local-traffic
//! detector's and `--masquerade-all` ([`local_traffic::device_flags`]).
//! `NODE_CFG` gets the first node address of each family (zero: none);
//! `LOCAL_V4`/`LOCAL_V6` the detector's in-cluster prefixes.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::{
        Array, HashMap as AyaHashMap, MapData, ProgramArray,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{
        LinkOrder, SchedClassifier, TcAttach, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
    },
};
use proxy_common::{Be32, DeviceConfig, NodeConfig, names, programs, tail};

use crate::{nodeport::Cidr, snat_ports::PortRange};

use crate::dataplane::{
    bpffs,
    devices::{self, Device, DeviceSelection, PodDevices, Selected},
    hooks::{AttachedHook, Drift, HookAction, LoadError, link_error, pin_link, program_error},
    link_info,
    local_traffic::{self, LocalDetector},
    pins::{self, PinLayout, TC_LINKS_PREFIX},
    tail_calls,
    xdp::{self, XdpMode},
};

/// Both tc programs, with the hook each attaches to, in attach order.
pub const TC_PROGRAMS: [(&str, TcAttachType); 2] = [
    // Egress (reverse NAT of replies) first: once ingress translates a flow,
    // its replies leaving this device must already be rewritten.
    (programs::TC_EGRESS, TcAttachType::Egress),
    (programs::TC_INGRESS, TcAttachType::Ingress),
];

/// What decides the devices (`--devices`, `--pod-devices`, `--socket-lb`)
/// and how ClusterIP traffic is masqueraded on them (the local-traffic
/// detector, `--masquerade-all`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcSettings {
    pub devices: DeviceSelection,
    pub pod_devices: PodDevices,
    pub socket_lb: bool,
    pub local: LocalDetector,
    pub masquerade_all: bool,
    /// `--lb-mode=dsr`: external flows to remote backends go by direct
    /// server return (`device_flags::DSR` on every device).
    pub dsr: bool,
    /// The source ports SNATed flows take (`--snat-port-range`).
    pub snat_ports: PortRange,
    /// `xdp_ingress` on the external devices (`--xdp`, see [`xdp`]).
    pub xdp: XdpMode,
}

/// The tc programs' links and maps (see the module docs).
#[derive(Debug)]
pub struct TcHooks {
    settings: TcSettings,
    /// The devices the last `ensure` attached, by ifindex.
    attached: BTreeMap<u32, Device>,
    /// The node addresses the last `ensure` found.
    node_addresses: Vec<IpAddr>,
}

impl TcHooks {
    pub fn new(settings: TcSettings) -> Self {
        Self {
            settings,
            attached: BTreeMap::new(),
            node_addresses: Vec::new(),
        }
    }

    pub fn settings(&self) -> &TcSettings {
        &self.settings
    }

    /// The node addresses (global addresses of the external devices, in
    /// device order) the last `ensure` found.
    pub fn node_addresses(&self) -> &[IpAddr] {
        &self.node_addresses
    }

    /// Loads (verifies) both programs and those `tc_ingress` tail-calls
    /// (`proxy_common::tail`).
    pub fn load(ebpf: &mut Ebpf) -> Result<(), LoadError> {
        let tails = tail::PROGRAMS.map(|(_, name)| name);
        let attached = TC_PROGRAMS.map(|(name, _)| name);
        for name in tails.into_iter().chain(attached) {
            classifier(ebpf, name)?
                .load()
                .map_err(|e| program_error(name, "verifier rejected it", e))?;
        }
        Ok(())
    }

    /// Loads `xdp_ingress` when `--xdp` is on.
    pub fn load_xdp(&self, ebpf: &mut Ebpf) -> Result<(), LoadError> {
        if self.settings.xdp == XdpMode::Off {
            return Ok(());
        }
        xdp::load(ebpf)
    }

    /// Resolves the devices and makes both programs attached to each of them
    /// (see the module docs). `settled`: an earlier `ensure` succeeded, so
    /// anything found missing on a device we attached is drift.
    pub fn ensure(
        &mut self,
        ebpf: &mut Ebpf,
        pins: &PinLayout,
        settled: bool,
    ) -> Result<Vec<AttachedHook>, LoadError> {
        let (links, oifs) = devices::read_links().map_err(LoadError::Devices)?;
        let mut selected = devices::select(
            &links,
            &oifs,
            &self.settings.devices,
            &self.settings.pod_devices,
            self.settings.socket_lb,
        );
        for device in &mut selected.devices {
            device.flags |= local_traffic::device_flags(
                &self.settings.local,
                self.settings.masquerade_all,
                &device.name,
            );
            if self.settings.dsr {
                device.flags |= proxy_common::device_flags::DSR;
            }
        }
        write_local_prefixes(ebpf, self.settings.local.prefixes())?;
        self.ensure_selected(ebpf, pins, settled, &selected)
    }

    fn ensure_selected(
        &mut self,
        ebpf: &mut Ebpf,
        pins: &PinLayout,
        settled: bool,
        selected: &Selected,
    ) -> Result<Vec<AttachedHook>, LoadError> {
        for name in &selected.missing {
            tracing::warn!(device = %name, "--devices names a device that does not exist (yet)");
        }
        if selected.node_addresses() != self.node_addresses.as_slice() {
            tracing::info!(
                devices = ?selected.devices.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
                node_addresses = ?selected.node_addresses(),
                "tc devices and node addresses"
            );
            self.node_addresses = selected.node_addresses().to_vec();
        }
        write_node_config(ebpf, selected.snat(), self.settings.snat_ports)?;
        // Before any link runs this daemon's `tc_ingress` (and at every
        // reconcile, which also repairs a slot emptied by hand).
        fill_tail_calls(ebpf)?;
        let mut report = Vec::new();
        let mut failed = None;
        for device in &selected.devices {
            write_device(ebpf, device)?;
            match self.ensure_device(ebpf, pins, settled, device) {
                Ok(actions) => {
                    report.extend(actions);
                    self.attached.insert(device.index, device.clone());
                }
                // A device that went away between the listing and the
                // attach is not an error; the next listing drops it.
                Err(error) => {
                    tracing::warn!(device = %device.name, error = %crate::error_chain::error_chain(&error), "cannot attach the tc programs");
                    failed.get_or_insert(error);
                }
            }
        }
        let wanted: BTreeSet<u32> = selected.devices.iter().map(|d| d.index).collect();
        self.drop_others(ebpf, pins, &wanted);
        match failed {
            Some(error) => Err(error),
            None => Ok(report),
        }
    }

    fn ensure_device(
        &mut self,
        ebpf: &mut Ebpf,
        pins: &PinLayout,
        settled: bool,
        device: &Device,
    ) -> Result<Vec<AttachedHook>, LoadError> {
        let dir = pins.tc_links_for(device.index);
        bpffs::create_dir(&dir)?;
        let known = settled && self.attached.contains_key(&device.index);
        let mut out = Vec::new();
        for (name, attach_type) in TC_PROGRAMS {
            let pin = dir.join(name);
            let program = classifier(ebpf, name)?;
            let prog_id = program
                .info()
                .map_err(|e| program_error(name, "reading its id", e))?
                .id();
            let state = link_info::pinned_link(&pin)
                .map_err(|e| link_error(name, "reading the pinned link", e))?;
            let action = match state {
                Some(s) if s.prog_id == prog_id && s.attached_to_device(device.index) => {
                    HookAction::Kept
                }
                Some(s) if s.attached_to_device(device.index) => {
                    match take_over(program, name, &pin) {
                        Ok(()) if known => HookAction::Repaired(Drift::OtherProgram),
                        Ok(()) => HookAction::TookOver {
                            from_version: proxy_common::LAYOUT_VERSION,
                        },
                        Err(error) => {
                            tracing::warn!(program = name, device = %device.name, error = %error,
                            "could not take the pinned tc link over; attaching a new one");
                            attach_new(program, name, device, attach_type, &pin)?;
                            HookAction::Attached
                        }
                    }
                }
                Some(_) => {
                    attach_new(program, name, device, attach_type, &pin)?;
                    if known {
                        HookAction::Repaired(Drift::LinkDetached)
                    } else {
                        HookAction::Attached
                    }
                }
                None => {
                    attach_new(program, name, device, attach_type, &pin)?;
                    if known {
                        HookAction::Repaired(Drift::PinMissing)
                    } else {
                        HookAction::Attached
                    }
                }
            };
            out.push(AttachedHook {
                program: name,
                device: Some(device.name.clone()),
                action,
            });
        }
        // After tc: a packet XDP passes always finds tc's programs.
        out.extend(xdp::ensure(ebpf, &dir, device, self.settings.xdp, known)?);
        Ok(out)
    }

    /// Drops the links (which detaches them) and `DEVICES` entries of every
    /// device not in `wanted`, including those a previous daemon left.
    fn drop_others(&mut self, ebpf: &mut Ebpf, pins: &PinLayout, wanted: &BTreeSet<u32>) {
        for (index, dir) in tc_link_dirs(&pins.links()) {
            if wanted.contains(&index) {
                continue;
            }
            match pins::remove_tree(&dir) {
                Ok(_) => {
                    tracing::info!(ifindex = index, dir = %dir.display(), "tc programs detached from a device no longer selected")
                }
                Err(error) => {
                    tracing::warn!(ifindex = index, error = %error, "could not remove the tc link pins")
                }
            }
        }
        self.attached.retain(|index, _| wanted.contains(index));
        match devices_map(ebpf) {
            Ok(mut map) => {
                let stale: Vec<u32> = map
                    .keys()
                    .filter_map(Result::ok)
                    .filter(|k| !wanted.contains(k))
                    .collect();
                for key in stale {
                    if let Err(error) = map.remove(&key) {
                        tracing::warn!(ifindex = key, error = %error, "could not delete a DEVICES entry");
                    }
                }
            }
            Err(error) => tracing::warn!(error = %error, "cannot open the DEVICES map"),
        }
    }
}

/// `links/tc-<ifindex>` directories under `links`.
pub fn tc_link_dirs(links: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = fs::read_dir(links) else {
        return Vec::new();
    };
    let mut out: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let index = name.to_str()?.strip_prefix(TC_LINKS_PREFIX)?.parse().ok()?;
            Some((index, e.path()))
        })
        .collect();
    out.sort();
    out
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, LoadError> {
    ebpf.program_mut(name)
        .ok_or(LoadError::MissingProgram(name))?
        .try_into()
        .map_err(|e| program_error(name, "has the wrong type", e))
}

/// Points every `TC_TAIL` slot at this daemon's program (an atomic swap
/// per slot: an older daemon's `tc_ingress`, still attached, tail-calls the
/// new programs from then on, which read the same maps).
pub fn fill_tail_calls(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    for (slot, name) in tail::PROGRAMS {
        let program: &SchedClassifier = ebpf
            .program(name)
            .ok_or(LoadError::MissingProgram(name))?
            .try_into()
            .map_err(|e| program_error(name, "has the wrong type", e))?;
        let id = program
            .info()
            .map_err(|e| program_error(name, "reading its id", e))?
            .id();
        let fd = program
            .fd()
            .map_err(|e| program_error(name, "reading its descriptor", e))?
            .try_clone()
            .map_err(|e| program_error(name, "duplicating its descriptor", e.into()))?;
        // Unchanged slots are not written again: an update re-patches every
        // program that tail-calls through the map (the JIT's direct jumps).
        if let Some(aya::maps::Map::ProgramArray(data)) = ebpf.map(names::TC_TAIL)
            && matches!(tail_calls::slot_program(data.fd().as_fd(), slot), Ok(Some(held)) if held == id)
        {
            continue;
        }
        let map = ebpf
            .map_mut(names::TC_TAIL)
            .ok_or(LoadError::MissingMap(names::TC_TAIL))?;
        let mut array: ProgramArray<&mut MapData> =
            ProgramArray::try_from(map).map_err(|e| map_error(names::TC_TAIL, e))?;
        array
            .set(slot, &fd, 0)
            .map_err(|e| map_error(names::TC_TAIL, e))?;
        tracing::info!(slot, program = name, prog_id = id, "TC_TAIL slot filled");
    }
    Ok(())
}

fn devices_map(ebpf: &mut Ebpf) -> Result<AyaHashMap<&mut MapData, u32, DeviceConfig>, LoadError> {
    let map = ebpf
        .map_mut(names::DEVICES)
        .ok_or(LoadError::MissingMap(names::DEVICES))?;
    AyaHashMap::try_from(map).map_err(|e| map_error(names::DEVICES, e))
}

fn write_device(ebpf: &mut Ebpf, device: &Device) -> Result<(), LoadError> {
    let mut map = devices_map(ebpf)?;
    let value = DeviceConfig {
        flags: device.flags,
    };
    if map.get(&device.index, 0).ok() != Some(value) {
        map.insert(&device.index, &value, 0)
            .map_err(|e| map_error(names::DEVICES, e))?;
    }
    Ok(())
}

/// The `NODE_CFG` value for these SNAT addresses (zero: none) and ports.
pub fn node_config((v4, v6): (Option<Ipv4Addr>, Option<Ipv6Addr>), ports: PortRange) -> NodeConfig {
    NodeConfig {
        snat_v4: Be32::from_octets(v4.map_or([0; 4], |a| a.octets())),
        snat_port_min: ports.first,
        snat_port_max: ports.last,
        snat_v6: v6.map_or([0; 16], |a| a.octets()),
    }
}

fn write_node_config(
    ebpf: &mut Ebpf,
    snat: (Option<Ipv4Addr>, Option<Ipv6Addr>),
    ports: PortRange,
) -> Result<(), LoadError> {
    let map = ebpf
        .map_mut(names::NODE_CFG)
        .ok_or(LoadError::MissingMap(names::NODE_CFG))?;
    let mut array: Array<&mut MapData, NodeConfig> =
        Array::try_from(map).map_err(|e| map_error(names::NODE_CFG, e))?;
    let value = node_config(snat, ports);
    if array.get(&0, 0).ok() != Some(value) {
        array
            .set(0, &value, 0)
            .map_err(|e| map_error(names::NODE_CFG, e))?;
    }
    Ok(())
}

/// Makes `LOCAL_V4` and `LOCAL_V6` hold exactly these prefixes (none: empty).
fn write_local_prefixes(
    ebpf: &mut Ebpf,
    (v4, v6): (Option<Cidr>, Option<Cidr>),
) -> Result<(), LoadError> {
    let octets4 = |c: Cidr| match c.addr {
        IpAddr::V4(a) => Some((u32::from(c.prefix), a.octets())),
        IpAddr::V6(_) => None,
    };
    let octets6 = |c: Cidr| match c.addr {
        IpAddr::V6(a) => Some((u32::from(c.prefix), a.octets())),
        IpAddr::V4(_) => None,
    };
    sync_trie(ebpf, names::LOCAL_V4, v4.and_then(octets4))?;
    sync_trie(ebpf, names::LOCAL_V6, v6.and_then(octets6))
}

/// Makes the trie `name` hold `wanted` alone (value 1).
fn sync_trie<const N: usize>(
    ebpf: &mut Ebpf,
    name: &'static str,
    wanted: Option<(u32, [u8; N])>,
) -> Result<(), LoadError> {
    let map = ebpf.map_mut(name).ok_or(LoadError::MissingMap(name))?;
    let mut trie: LpmTrie<&mut MapData, [u8; N], u8> =
        LpmTrie::try_from(map).map_err(|e| map_error(name, e))?;
    let stale: Vec<Key<[u8; N]>> = trie
        .keys()
        .filter_map(Result::ok)
        .filter(|k| wanted != Some((k.prefix_len(), k.data())))
        .collect();
    for key in stale {
        trie.remove(&key).map_err(|e| map_error(name, e))?;
    }
    if let Some((prefix_len, data)) = wanted {
        let key = Key::new(prefix_len, data);
        if trie.get(&key, 0).ok() != Some(1) {
            trie.insert(&key, &1u8, 0).map_err(|e| map_error(name, e))?;
        }
    }
    Ok(())
}

/// Swaps `program` into the link pinned at `pin` (`BPF_LINK_UPDATE`).
fn take_over(
    program: &mut SchedClassifier,
    name: &'static str,
    pin: &Path,
) -> Result<(), LoadError> {
    let link = PinnedLink::from_pin(pin).map_err(|e| {
        link_error(
            name,
            "opening the pin",
            std::io::Error::other(e.to_string()),
        )
    })?;
    let link = SchedClassifierLink::try_from(FdLink::from(link)).map_err(|e| {
        link_error(
            name,
            "is not a tcx link",
            std::io::Error::other(e.to_string()),
        )
    })?;
    let link_id = program
        .attach_to_link(link)
        .map_err(|e| program_error(name, "updating the pinned link", e))?;
    // The pin already holds this link: dropping our handle keeps it attached.
    let link = program
        .take_link(link_id)
        .map_err(|e| program_error(name, "taking the link", e))?;
    drop(link);
    Ok(())
}

/// Attaches `program` to the device through a new tcx link, pinned at `pin`
/// (replacing, atomically, whatever was pinned there).
fn attach_new(
    program: &mut SchedClassifier,
    name: &'static str,
    device: &Device,
    attach_type: TcAttachType,
    pin: &Path,
) -> Result<(), LoadError> {
    let link_id = program
        .attach(
            device.index,
            TcAttach::Tcx {
                attach_type,
                order: LinkOrder::default(),
            },
        )
        .map_err(|e| program_error(name, &format!("attaching to {}", device.name), e))?;
    let link = program
        .take_link(link_id)
        .map_err(|e| program_error(name, "taking the link", e))?;
    pin_link(link, name, pin)
}

fn map_error(map: &'static str, e: aya::maps::MapError) -> LoadError {
    LoadError::TcMap {
        map,
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use super::*;

    #[test]
    fn node_config_holds_the_addresses_in_network_order_and_the_ports() {
        let ports = PortRange::new(1024, 29999);
        let cfg = node_config((Some(Ipv4Addr::new(192, 0, 2, 1)), None), ports);
        assert_eq!(cfg.snat_v4.octets(), [192, 0, 2, 1]);
        assert_eq!(cfg.snat_v6, [0; 16]);
        assert_eq!((cfg.snat_port_min, cfg.snat_port_max), (1024, 29999));
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let cfg = node_config((None, Some(v6)), ports);
        assert_eq!(cfg.snat_v4, Be32::default());
        assert_eq!(cfg.snat_v6, v6.octets());
    }

    #[test]
    fn tc_link_dirs_are_found_by_prefix() {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["tc-3", "tc-12", "cgroup-5", "tc-x"] {
            fs::create_dir(tmp.path().join(d)).unwrap();
        }
        let found: Vec<u32> = tc_link_dirs(tmp.path())
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(found, [3, 12]);
        assert!(tc_link_dirs(&tmp.path().join("absent")).is_empty());
    }
}
