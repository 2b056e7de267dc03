//! Reading the pins into plain structs, and building each subcommand's view.
//!
//! [`Pins`] opens maps through their pins under [`PinLayout::maps`] (new file
//! descriptors on the same kernel objects, whether or not a daemon holds
//! them) and links under [`PinLayout::links`]. What the service, backend and
//! name maps hold becomes a [`Dataset`]; the views (`ServicesView`, …) are
//! built from it by pure functions, so tests build them from hand-made data.
//!
//! A map being written while it is read can show a change half done (a slot
//! whose backend just went); such holes show as `null`, never as a failure.
//! Names come from `SVC_NAMES`; pins left by a daemon that did not write it
//! have no names, which show as `null` too.
//!
//! Must not: write to a map, or create, move or remove a pin.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt, fs, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    str::FromStr,
};

use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapType, PerCpuArray};
use proxy_common::{
    AffinityKey, AffinityValue, BackendV4, BackendV6, CtKeyV4, CtKeyV6, CtValueV4, CtValueV6,
    DeviceConfig, Reason, RevNatV4, RevNatV6, ServiceKeyV4, ServiceKeyV6, ServiceName,
    ServiceValue, SockRevNatKeyV4, SockRevNatKeyV6, SockRevNatV4, SockRevNatV6, ct_flags,
    name_flags, names, svc_flags,
};
use serde::Serialize;

use super::InspectError;
use crate::{
    dataplane::{cgroup, link_info, loader::PinLayout, pins},
    model::Protocol,
    telemetry::Mode,
};

/// Every map `proxy run` pins, in the order `status` lists them.
pub const PINNED_MAPS: [&str; 15] = [
    names::SVC_V4,
    names::SVC_V6,
    names::BACKEND_V4,
    names::BACKEND_V6,
    names::REVNAT_V4,
    names::REVNAT_V6,
    names::SVC_NAMES,
    names::SOCK_RNAT_V4,
    names::SOCK_RNAT_V6,
    names::AFFINITY,
    names::STATS,
    names::CT_V4,
    names::CT_V6,
    names::NODE_CFG,
    names::DEVICES,
];

/// The eBPF mode's datapath (`status`).
pub const DATAPATH: &str = "socket-lb";

/// The userspace mode's datapath (`status`): VIPs made local by routes of
/// ours, proxied by the daemon.
pub const USERSPACE_DATAPATH: &str = "userspace-proxy";

/// Why `conntrack` shows nothing when the maps are missing.
pub const NO_CONNTRACK: &str = "no conntrack map pinned (CT_V4/CT_V6): the pins are of a layout \
     without the per-packet (tc) datapath";

/// Cgroup directories looked at, at most, to turn a link's cgroup id into a path.
const MAX_CGROUP_WALK: usize = 100_000;

// ---------------------------------------------------------------------------
// What the maps hold, decoded.

/// A frontend as the service maps key it. The protocol stays a number, so an
/// entry with an unexpected one is still shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FrontendKey {
    pub addr: IpAddr,
    pub port: u16,
    pub proto: u8,
    /// The key's `scope` byte (`proxy_common::scope`); not shown in the
    /// frontend string.
    pub scope: u8,
}

impl fmt::Display for FrontendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            socket(self.addr, self.port),
            protocol_name(self.proto)
        )
    }
}

/// One frontend's entries: slot 0 (absent if only stray slots are left) and
/// slot → backend id for the others.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrontendEntries {
    pub master: Option<ServiceValue>,
    pub slots: BTreeMap<u16, u32>,
}

/// A backend map value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendAddr {
    pub addr: IpAddr,
    pub port: u16,
    pub proto: u8,
    /// `proxy_common::backend_flags`.
    pub flags: u8,
}

/// What the service, backend and name maps hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dataset {
    pub frontends: BTreeMap<FrontendKey, FrontendEntries>,
    pub backends: BTreeMap<u32, BackendAddr>,
    /// Rev-NAT id → owner; empty when `SVC_NAMES` is not pinned.
    pub names: BTreeMap<u16, ServiceName>,
}

// ---------------------------------------------------------------------------
// Views: what each subcommand shows. Field names are the JSON shape (README).

/// A Service port, as `SVC_NAMES` names a frontend's owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
    /// Empty for a Service with a single unnamed port.
    pub port_name: String,
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        if !self.port_name.is_empty() {
            write!(f, ":{}", self.port_name)?;
        }
        Ok(())
    }
}

/// `inspect services`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServicesView {
    pub services: Vec<ServiceEntry>,
}

/// One frontend.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceEntry {
    /// `10.96.0.10:80/TCP`, `[fd00::10]:53/UDP`.
    pub frontend: String,
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: String,
    /// `null` when the frontend has no name (pins of an older daemon).
    pub service: Option<ServiceRef>,
    pub rev_nat_id: u16,
    /// `Cluster` or `Local` (`internalTrafficPolicy`); `null` without a name.
    pub traffic_policy: Option<&'static str>,
    /// ClientIP session affinity timeout; `null` when affinity is off.
    pub affinity_timeout_seconds: Option<u32>,
    /// Slot 0's raw flags (`proxy_common::svc_flags`: 1 affinity, 2
    /// external, 4 NodePort, 8 externalTrafficPolicy Local).
    pub flags: u16,
    /// `ClusterIP`, `NodePort`, `ExternalIP` or `LoadBalancer` (from slot 0's
    /// flags and the name's).
    pub kind: &'static str,
    /// Which clients the entry is for: `internal` (the node and its pods) or
    /// `external` (an `externalTrafficPolicy: Local` frontend's entry for
    /// external clients, holding only local endpoints).
    pub scope: &'static str,
    /// `Cluster` or `Local` (`externalTrafficPolicy`) for external frontends;
    /// `null` for ClusterIPs, and without a name.
    pub external_traffic_policy: Option<&'static str>,
    /// Slot 0's count: how many slots readers pick from (0: refused).
    pub slot_count: u16,
    pub slots: Vec<SlotEntry>,
}

/// One slot of a frontend, `1..=slot_count`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SlotEntry {
    pub slot: u16,
    /// `null` when the slot entry is missing.
    pub backend_id: Option<u32>,
    /// `null` when the backend entry is missing.
    pub addr: Option<IpAddr>,
    pub port: Option<u16>,
}

/// `inspect backends`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendsView {
    pub backends: Vec<BackendEntry>,
}

/// One backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendEntry {
    pub id: u32,
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: String,
    /// Frontends whose published slots (`1..=count`) point at it.
    pub frontends: usize,
    /// The endpoint runs on this node (external traffic to it is not
    /// source-NATed).
    pub local: bool,
}

/// `inspect affinity`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AffinityView {
    pub affinity: Vec<AffinityEntry>,
}

/// One live `AFFINITY` entry: a client stuck to a backend of a frontend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AffinityEntry {
    /// The client: its network namespace cookie (one pod).
    pub client_netns_cookie: u64,
    pub rev_nat_id: u16,
    /// `null` when no frontend has this rev-NAT id any more.
    pub frontend: Option<String>,
    pub service: Option<ServiceRef>,
    pub backend_id: u32,
    /// `ip:port`; `null` when the backend is gone.
    pub backend: Option<String>,
    pub slot: u16,
    /// Since the client's last connection (CLOCK_MONOTONIC, as the kernel stamps it).
    pub age_ms: u64,
    /// The frontend's affinity timeout; `null` when unknown or affinity is off.
    pub timeout_seconds: Option<u32>,
    /// Past the timeout: the next connection is balanced afresh. `null` when
    /// the timeout is unknown.
    pub expired: Option<bool>,
}

/// `inspect conntrack`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConntrackView {
    /// Whether the conntrack maps (`CT_V4`, `CT_V6`) are pinned.
    pub map_present: bool,
    /// Why there is nothing to show, when the maps are not pinned.
    pub reason: Option<&'static str>,
    /// Sorted by frontend (entries whose frontend is gone last), then tuple.
    pub flows: Vec<FlowEntry>,
}

/// One conntrack entry, as `CT_V4`/`CT_V6` hold it, in either family: the
/// input of [`Dataset::conntrack`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtRaw {
    pub proto: u8,
    /// The packet as it arrives.
    pub src: (IpAddr, u16),
    pub dst: (IpAddr, u16),
    /// What its addresses and ports become.
    pub new_src: (IpAddr, u16),
    pub new_dst: (IpAddr, u16),
    pub rev_nat_id: u16,
    /// `proxy_common::ct_flags`.
    pub flags: u8,
    pub backend_id: u32,
    pub last_seen_ns: u64,
}

impl CtRaw {
    pub fn v4(k: &CtKeyV4, v: &CtValueV4) -> Self {
        Self {
            proto: k.proto,
            src: (ip4(k.saddr.octets()), k.sport.to_host()),
            dst: (ip4(k.daddr.octets()), k.dport.to_host()),
            new_src: (ip4(v.saddr.octets()), v.sport.to_host()),
            new_dst: (ip4(v.daddr.octets()), v.dport.to_host()),
            rev_nat_id: v.rev_nat_id,
            flags: v.flags,
            backend_id: v.backend_id,
            last_seen_ns: v.last_seen_ns,
        }
    }

    pub fn v6(k: &CtKeyV6, v: &CtValueV6) -> Self {
        Self {
            proto: k.proto,
            src: (ip6(k.saddr), k.sport.to_host()),
            dst: (ip6(k.daddr), k.dport.to_host()),
            new_src: (ip6(v.saddr), v.sport.to_host()),
            new_dst: (ip6(v.daddr), v.dport.to_host()),
            rev_nat_id: v.rev_nat_id,
            flags: v.flags,
            backend_id: v.backend_id,
            last_seen_ns: v.last_seen_ns,
        }
    }
}

/// One conntrack entry: a packet matching `src` → `dst` is rewritten to
/// `new_src` → `new_dst`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowEntry {
    /// `forward` (client → frontend, rewritten to the backend) or `reply`
    /// (backend → client, rewritten back to come from the frontend).
    pub direction: &'static str,
    pub protocol: String,
    pub src: String,
    pub dst: String,
    pub new_src: String,
    pub new_dst: String,
    /// The flow is SNATed to the node's address.
    pub snat: bool,
    /// A TCP FIN or RST was seen: the entry expires soon.
    pub closing: bool,
    pub rev_nat_id: u16,
    /// `null` when no frontend has this rev-NAT id any more.
    pub frontend: Option<String>,
    pub service: Option<ServiceRef>,
    pub backend_id: u32,
    /// `ip:port`; `null` when the backend is gone.
    pub backend: Option<String>,
    /// Since a packet last matched (CLOCK_MONOTONIC, as the kernel stamps it).
    pub idle_ms: u64,
}

/// `inspect stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatsView {
    pub stats: Vec<StatEntry>,
}

/// One counter, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatEntry {
    /// The `reason` label of `proxy_datapath_events_total`.
    pub reason: &'static str,
    pub count: u64,
}

/// `inspect status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatusView {
    /// The mode in force as the node shows it, as `proxy_mode{mode}`: `ebpf`
    /// when maps of this layout are pinned, `userspace` when none are but VIP
    /// routes of ours exist (see [`StatusView::userspace`]).
    pub mode: &'static str,
    /// `socket-lb` or `userspace-proxy`.
    pub datapath: &'static str,
    pub pin_path: PathBuf,
    pub links: Vec<LinkEntry>,
    /// The tc programs' links, one per device and direction
    /// (`links/tc-<ifindex>/<program>`), sorted by ifindex then program.
    pub tc_links: Vec<TcLinkEntry>,
    pub maps: Vec<MapEntry>,
    /// The VIPs made local by routes carrying our routing protocol: all of
    /// them in userspace mode; in eBPF mode, the frontends served from
    /// userspace because they do not fit the maps. `null` when the routes
    /// could not be listed.
    pub vip_routes: Option<Vec<IpAddr>>,
}

impl StatusView {
    /// No maps pinned, but VIP routes of ours: a daemon in userspace mode
    /// (pins are removed when one starts) serves this node, or did.
    pub fn userspace(pin_path: PathBuf, vip_routes: Vec<IpAddr>) -> Self {
        Self {
            mode: Mode::Userspace.as_str(),
            datapath: USERSPACE_DATAPATH,
            pin_path,
            links: Vec::new(),
            tc_links: Vec::new(),
            maps: Vec::new(),
            vip_routes: Some(vip_routes),
        }
    }

    /// With the VIP routes listed (`None`: they could not be).
    pub fn with_vip_routes(self, vip_routes: Option<Vec<IpAddr>>) -> Self {
        Self { vip_routes, ..self }
    }
}

/// One pinned link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LinkEntry {
    /// The program, as the pin is named.
    pub program: String,
    pub pin: PathBuf,
    pub link_id: Option<u32>,
    pub program_id: Option<u32>,
    /// `cgroup_inet4_connect`, … (bpftool's names).
    pub attach_type: Option<String>,
    /// 0 when the link was detached by hand but is still pinned.
    pub cgroup_id: Option<u64>,
    /// Found by walking the cgroup2 hierarchy; `null` when not found.
    pub cgroup_path: Option<PathBuf>,
    /// Why the other fields are `null`, if they are.
    pub error: Option<String>,
}

/// One pinned link of a tc program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TcLinkEntry {
    /// The device's name now (`null`: no device has that index any more).
    pub device: Option<String>,
    /// The device the pin directory is named for.
    pub ifindex: u32,
    /// `ingress` or `egress`.
    pub direction: &'static str,
    /// The program, as the pin is named.
    pub program: String,
    pub pin: PathBuf,
    pub link_id: Option<u32>,
    pub program_id: Option<u32>,
    /// False when the link was detached (by hand, or its device went away)
    /// but is still pinned.
    pub attached: bool,
    /// Why the other fields are `null`, if they are.
    pub error: Option<String>,
}

/// One pinned map's fill level.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MapEntry {
    pub name: &'static str,
    /// False when not pinned (for example `SVC_NAMES` under an older daemon).
    pub present: bool,
    /// `hash`, `lru_hash`, `percpu_array`.
    pub kind: Option<String>,
    /// Arrays always hold `max_entries`.
    pub entries: Option<u64>,
    pub max_entries: Option<u32>,
    /// `entries / max_entries`, in percent, two decimals.
    pub fill_percent: Option<f64>,
    pub error: Option<String>,
}

impl MapEntry {
    /// A map that is pinned and was read.
    pub fn new(name: &'static str, kind: &str, entries: u64, max_entries: u32) -> Self {
        Self {
            name,
            present: true,
            kind: Some(kind.to_owned()),
            entries: Some(entries),
            max_entries: Some(max_entries),
            fill_percent: Some(percent(entries, max_entries)),
            error: None,
        }
    }

    /// A map that is not pinned.
    pub fn absent(name: &'static str) -> Self {
        Self {
            name,
            present: false,
            kind: None,
            entries: None,
            max_entries: None,
            fill_percent: None,
            error: None,
        }
    }
}

fn percent(entries: u64, max: u32) -> f64 {
    if max == 0 {
        return 0.0;
    }
    // Hundredths of a percent, rounded down, so a full map is never shown
    // below 100 and an almost full one never at 100.
    let hundredths = u128::from(entries) * 10_000 / u128::from(max);
    u32::try_from(hundredths).map_or(f64::MAX, f64::from) / 100.0
}

// ---------------------------------------------------------------------------
// Filters.

/// `--service NAMESPACE/NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSelector {
    pub namespace: String,
    pub name: String,
}

impl FromStr for ServiceSelector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self {
                    namespace: ns.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
        }
    }
}

/// Which frontends a view shows. Empty: all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub service: Option<ServiceSelector>,
    pub vip: Option<IpAddr>,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.service.is_none() && self.vip.is_none()
    }

    /// A frontend without a name never matches `--service`.
    fn matches(&self, vip: IpAddr, owner: Option<&ServiceRef>) -> bool {
        self.vip.is_none_or(|v| v == vip)
            && self.service.as_ref().is_none_or(|s| {
                owner.is_some_and(|o| o.namespace == s.namespace && o.name == s.name)
            })
    }
}

// ---------------------------------------------------------------------------
// Building views (pure).

impl Dataset {
    /// The owner of a rev-NAT id, if named.
    pub fn service_ref(&self, rev_nat_id: u16) -> Option<ServiceRef> {
        self.names.get(&rev_nat_id).map(|n| ServiceRef {
            namespace: String::from_utf8_lossy(n.namespace()).into_owned(),
            name: String::from_utf8_lossy(n.name()).into_owned(),
            port_name: String::from_utf8_lossy(n.port_name()).into_owned(),
        })
    }

    /// Published frontends (those with slot 0), in address order.
    fn published(&self) -> impl Iterator<Item = (&FrontendKey, &ServiceValue, &FrontendEntries)> {
        self.frontends
            .iter()
            .filter_map(|(key, e)| e.master.as_ref().map(|m| (key, m, e)))
    }

    /// The backend ids a published frontend's readers pick from; `None` for a
    /// missing slot.
    fn reachable<'a>(
        master: &ServiceValue,
        entries: &'a FrontendEntries,
    ) -> impl Iterator<Item = (u16, Option<u32>)> + 'a {
        (1..=master.count).map(|slot| (slot, entries.slots.get(&slot).copied()))
    }

    /// `inspect services`.
    pub fn services(&self, filter: &Filter) -> ServicesView {
        let services = self
            .published()
            .filter_map(|(key, master, entries)| {
                let owner = self.service_ref(master.rev_nat_id);
                if !filter.matches(key.addr, owner.as_ref()) {
                    return None;
                }
                let traffic_policy = self.names.get(&master.rev_nat_id).map(|n| {
                    if n.flags & name_flags::INTERNAL_TRAFFIC_POLICY_LOCAL != 0 {
                        "Local"
                    } else {
                        "Cluster"
                    }
                });
                let slots = Self::reachable(master, entries)
                    .map(|(slot, id)| {
                        let backend = id.and_then(|id| self.backends.get(&id));
                        SlotEntry {
                            slot,
                            backend_id: id,
                            addr: backend.map(|b| b.addr),
                            port: backend.map(|b| b.port),
                        }
                    })
                    .collect();
                let external = master.flags & svc_flags::EXTERNAL != 0;
                let owner_flags = self.names.get(&master.rev_nat_id).map(|n| n.flags);
                let kind = if !external {
                    "ClusterIP"
                } else if master.flags & svc_flags::NODE_PORT != 0 {
                    "NodePort"
                } else if owner_flags.is_some_and(|f| f & name_flags::LOAD_BALANCER != 0) {
                    "LoadBalancer"
                } else {
                    "ExternalIP"
                };
                let external_traffic_policy = owner_flags.filter(|_| external).map(|f| {
                    if f & name_flags::EXTERNAL_TRAFFIC_POLICY_LOCAL != 0 {
                        "Local"
                    } else {
                        "Cluster"
                    }
                });
                Some(ServiceEntry {
                    frontend: key.to_string(),
                    vip: key.addr,
                    port: key.port,
                    protocol: protocol_name(key.proto),
                    service: owner,
                    rev_nat_id: master.rev_nat_id,
                    traffic_policy,
                    affinity_timeout_seconds: affinity_timeout(master),
                    flags: master.flags,
                    kind,
                    scope: scope_name(key.scope),
                    external_traffic_policy,
                    slot_count: master.count,
                    slots,
                })
            })
            .collect();
        ServicesView { services }
    }

    /// `inspect backends`: all of them, or with a filter those the matching
    /// frontends reach.
    pub fn backends(&self, filter: &Filter) -> BackendsView {
        let mut frontends_of: HashMap<u32, BTreeSet<FrontendKey>> = HashMap::new();
        let mut wanted: BTreeSet<u32> = BTreeSet::new();
        for (key, master, entries) in self.published() {
            let owner = self.service_ref(master.rev_nat_id);
            let matches = filter.matches(key.addr, owner.as_ref());
            // Both scopes of a frontend count as one frontend.
            let frontend = FrontendKey {
                scope: proxy_common::scope::INTERNAL,
                ..*key
            };
            for id in Self::reachable(master, entries).filter_map(|(_, id)| id) {
                frontends_of.entry(id).or_default().insert(frontend);
                if matches {
                    wanted.insert(id);
                }
            }
        }
        let backends = self
            .backends
            .iter()
            .filter(|(id, _)| filter.is_empty() || wanted.contains(id))
            .map(|(id, b)| BackendEntry {
                id: *id,
                addr: b.addr,
                port: b.port,
                protocol: protocol_name(b.proto),
                frontends: frontends_of.get(id).map_or(0, BTreeSet::len),
                local: b.flags & proxy_common::backend_flags::LOCAL != 0,
            })
            .collect();
        BackendsView { backends }
    }

    /// `inspect affinity`: `entries` from the `AFFINITY` map, aged against
    /// `now_ns` (CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns`).
    pub fn affinity(
        &self,
        entries: &[(AffinityKey, AffinityValue)],
        now_ns: u64,
        filter: &Filter,
    ) -> AffinityView {
        let by_id: HashMap<u16, (&FrontendKey, &ServiceValue)> = self
            .published()
            .filter(|(key, _, _)| key.scope == proxy_common::scope::INTERNAL)
            .map(|(key, master, _)| (master.rev_nat_id, (key, master)))
            .collect();
        let mut out: Vec<(Option<FrontendKey>, AffinityEntry)> = entries
            .iter()
            .filter_map(|(key, value)| {
                let frontend = by_id.get(&key.rev_nat_id);
                let owner = self.service_ref(key.rev_nat_id);
                let matches = match frontend {
                    Some((f, _)) => filter.matches(f.addr, owner.as_ref()),
                    // A frontend gone from the maps matches only "everything".
                    None => filter.is_empty(),
                };
                if !matches {
                    return None;
                }
                let timeout = frontend.and_then(|(_, m)| affinity_timeout(m));
                let age_ns = now_ns.saturating_sub(value.last_used_ns);
                let entry = AffinityEntry {
                    client_netns_cookie: key.client,
                    rev_nat_id: key.rev_nat_id,
                    frontend: frontend.map(|(f, _)| f.to_string()),
                    service: owner,
                    backend_id: value.backend_id,
                    backend: self
                        .backends
                        .get(&value.backend_id)
                        .map(|b| socket(b.addr, b.port)),
                    slot: value.slot,
                    age_ms: age_ns / 1_000_000,
                    timeout_seconds: timeout,
                    expired: timeout.map(|t| age_ns > u64::from(t) * 1_000_000_000),
                };
                Some((frontend.map(|(f, _)| **f), entry))
            })
            .collect();
        // By frontend, entries whose frontend is gone last.
        out.sort_by_key(|(f, e)| (f.is_none(), *f, e.rev_nat_id, e.client_netns_cookie));
        AffinityView {
            affinity: out.into_iter().map(|(_, e)| e).collect(),
        }
    }
}

impl Dataset {
    /// `inspect conntrack`: `entries` from `CT_V4` and `CT_V6`, aged against
    /// `now_ns` (CLOCK_MONOTONIC). `--vip` and `--service` match the flow's
    /// frontend (by its rev-NAT id); a flow whose frontend is gone matches
    /// only no filter.
    pub fn conntrack(&self, entries: &[CtRaw], now_ns: u64, filter: &Filter) -> ConntrackView {
        let by_id: HashMap<u16, &FrontendKey> = self
            .published()
            .map(|(key, master, _)| (master.rev_nat_id, key))
            .collect();
        let mut out: Vec<(Option<FrontendKey>, CtRaw, FlowEntry)> = entries
            .iter()
            .filter_map(|raw| {
                let frontend = by_id.get(&raw.rev_nat_id).copied();
                let owner = self.service_ref(raw.rev_nat_id);
                let matches = match frontend {
                    Some(f) => filter.matches(f.addr, owner.as_ref()),
                    None => filter.is_empty(),
                };
                if !matches {
                    return None;
                }
                let entry = FlowEntry {
                    direction: if raw.flags & ct_flags::REPLY != 0 {
                        "reply"
                    } else {
                        "forward"
                    },
                    protocol: protocol_name(raw.proto),
                    src: socket(raw.src.0, raw.src.1),
                    dst: socket(raw.dst.0, raw.dst.1),
                    new_src: socket(raw.new_src.0, raw.new_src.1),
                    new_dst: socket(raw.new_dst.0, raw.new_dst.1),
                    snat: raw.flags & ct_flags::SNAT != 0,
                    closing: raw.flags & ct_flags::CLOSING != 0,
                    rev_nat_id: raw.rev_nat_id,
                    frontend: frontend.map(ToString::to_string),
                    service: owner,
                    backend_id: raw.backend_id,
                    backend: self
                        .backends
                        .get(&raw.backend_id)
                        .map(|b| socket(b.addr, b.port)),
                    idle_ms: now_ns.saturating_sub(raw.last_seen_ns) / 1_000_000,
                };
                Some((frontend.copied(), *raw, entry))
            })
            .collect();
        out.sort_by_key(|(f, raw, _)| {
            (
                f.is_none(),
                *f,
                raw.flags & ct_flags::REPLY,
                raw.src,
                raw.dst,
                raw.proto,
            )
        });
        ConntrackView {
            map_present: true,
            reason: None,
            flows: out.into_iter().map(|(_, _, e)| e).collect(),
        }
    }
}

/// `inspect stats`, from per-reason totals (a reason the map has no index
/// for, in an older layout, is left out).
pub fn stats_view(totals: &[(Reason, u64)]) -> StatsView {
    StatsView {
        stats: totals
            .iter()
            .map(|(reason, count)| StatEntry {
                reason: reason.name(),
                count: *count,
            })
            .collect(),
    }
}

/// `inspect conntrack` when the conntrack maps are not pinned.
pub fn conntrack_absent() -> ConntrackView {
    ConntrackView {
        map_present: false,
        reason: Some(NO_CONNTRACK),
        flows: Vec::new(),
    }
}

fn affinity_timeout(master: &ServiceValue) -> Option<u32> {
    (master.flags & svc_flags::AFFINITY != 0).then_some(master.affinity_timeout)
}

/// `TCP`, `UDP`, or `proto N` for anything else.
pub fn protocol_name(proto: u8) -> String {
    match Protocol::from_number(proto) {
        Some(p) => p.to_string(),
        None => format!("proto {proto}"),
    }
}

/// `10.0.0.1:80`, `[fd00::1]:80`.
pub fn socket(addr: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(addr, port).to_string()
}

/// bpftool's name for the attach types our hooks use.
pub fn attach_type_name(attach_type: u32) -> String {
    // `enum bpf_attach_type` (uapi/linux/bpf.h).
    let name = match attach_type {
        10 => "cgroup_inet4_connect",
        11 => "cgroup_inet6_connect",
        14 => "cgroup_udp4_sendmsg",
        15 => "cgroup_udp6_sendmsg",
        19 => "cgroup_udp4_recvmsg",
        20 => "cgroup_udp6_recvmsg",
        29 => "cgroup_inet4_getpeername",
        30 => "cgroup_inet6_getpeername",
        other => return format!("attach type {other}"),
    };
    name.to_owned()
}

// ---------------------------------------------------------------------------
// Reading the pins.

/// The pins under one pin path, opened read-only (see the module docs).
#[derive(Debug)]
pub struct Pins {
    layout: PinLayout,
    maps_dir: PathBuf,
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
            Ok(meta) if meta.is_dir() => Ok(Self { layout, maps_dir }),
            Ok(_) => Err(InspectError::NoPins {
                dir: maps_dir,
                found: found(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(InspectError::NoPins {
                dir: maps_dir,
                found: found(),
            }),
            Err(source) => Err(InspectError::PinDir {
                dir: maps_dir,
                source,
            }),
        }
    }

    fn path(&self, map: &'static str) -> PathBuf {
        self.maps_dir.join(map)
    }

    /// A new handle on a pinned map; `None` when it is not pinned.
    fn map_data(&self, map: &'static str) -> Result<Option<MapData>, InspectError> {
        let path = self.path(map);
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(InspectError::PinDir {
                    dir: self.maps_dir.clone(),
                    source,
                });
            }
            Ok(_) => {}
        }
        MapData::from_pin(&path)
            .map(Some)
            .map_err(|source| InspectError::Open { map, path, source })
    }

    fn require(&self, map: &'static str) -> Result<MapData, InspectError> {
        self.map_data(map)?.ok_or_else(|| InspectError::MissingMap {
            map,
            path: self.path(map),
        })
    }

    fn open_error(&self, map: &'static str, source: aya::maps::MapError) -> InspectError {
        InspectError::Open {
            map,
            path: self.path(map),
            source,
        }
    }

    fn read_error(&self, map: &'static str, source: aya::maps::MapError) -> InspectError {
        InspectError::Read {
            map,
            path: self.path(map),
            source,
        }
    }

    /// Every entry of a hash (or LRU hash) map. The walk stops at the map's
    /// capacity: an entry deleted mid-walk makes the kernel start over.
    fn entries<K: aya::Pod, V: aya::Pod>(
        &self,
        map: &'static str,
        data: MapData,
    ) -> Result<Vec<(K, V)>, InspectError> {
        let max = data
            .info()
            .map_err(|e| self.open_error(map, e))?
            .max_entries();
        let typed: BpfHashMap<MapData, K, V> = Map::from_map_data(data)
            .and_then(BpfHashMap::try_from)
            .map_err(|e| self.open_error(map, e))?;
        typed
            .iter()
            .take(max as usize)
            .map(|entry| entry.map_err(|e| self.read_error(map, e)))
            .collect()
    }

    fn required_entries<K: aya::Pod, V: aya::Pod>(
        &self,
        map: &'static str,
    ) -> Result<Vec<(K, V)>, InspectError> {
        let data = self.require(map)?;
        self.entries(map, data)
    }

    /// Reads the service, backend and name maps (services first: a backend is
    /// written before the slot that points at it).
    pub fn dataset(&self) -> Result<Dataset, InspectError> {
        let mut out = Dataset::default();
        for (k, v) in self.required_entries::<ServiceKeyV4, ServiceValue>(names::SVC_V4)? {
            let key = FrontendKey {
                addr: ip4(k.addr.octets()),
                port: k.port.to_host(),
                proto: k.proto,
                scope: k.scope,
            };
            out.add_slot(key, k.slot, v);
        }
        for (k, v) in self.required_entries::<ServiceKeyV6, ServiceValue>(names::SVC_V6)? {
            let key = FrontendKey {
                addr: ip6(k.addr),
                port: k.port.to_host(),
                proto: k.proto,
                scope: k.scope,
            };
            out.add_slot(key, k.slot, v);
        }
        for (id, b) in self.required_entries::<u32, BackendV4>(names::BACKEND_V4)? {
            let addr = ip4(b.addr.octets());
            out.backends.insert(
                id,
                BackendAddr {
                    addr,
                    port: b.port.to_host(),
                    proto: b.proto,
                    flags: b.flags,
                },
            );
        }
        for (id, b) in self.required_entries::<u32, BackendV6>(names::BACKEND_V6)? {
            out.backends.insert(
                id,
                BackendAddr {
                    addr: ip6(b.addr),
                    port: b.port.to_host(),
                    proto: b.proto,
                    flags: b.flags,
                },
            );
        }
        if let Some(data) = self.map_data(names::SVC_NAMES)? {
            for (id, name) in self.entries::<u32, ServiceName>(names::SVC_NAMES, data)? {
                if let Ok(id) = u16::try_from(id) {
                    out.names.insert(id, name);
                }
            }
        }
        Ok(out)
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
        let entries = self.required_entries::<AffinityKey, AffinityValue>(names::AFFINITY)?;
        let dataset = self.dataset()?;
        Ok(dataset.affinity(&entries, monotonic_now_ns()?, filter))
    }

    /// `inspect conntrack`: both conntrack maps, or why there are none.
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
        let dataset = self.dataset()?;
        Ok(dataset.conntrack(&raw, monotonic_now_ns()?, filter))
    }

    /// `inspect stats`: the per-CPU counters summed.
    pub fn stats(&self) -> Result<StatsView, InspectError> {
        let map = names::STATS;
        let data = self.require(map)?;
        let max = data
            .info()
            .map_err(|e| self.open_error(map, e))?
            .max_entries();
        let counters: PerCpuArray<MapData, u64> = Map::from_map_data(data)
            .and_then(PerCpuArray::try_from)
            .map_err(|e| self.open_error(map, e))?;
        let totals = Reason::ALL
            .iter()
            .filter(|reason| (**reason as u32) < max)
            .map(|reason| {
                let per_cpu = counters
                    .get(&(*reason as u32), 0)
                    .map_err(|e| self.read_error(map, e))?;
                Ok((*reason, per_cpu.iter().sum()))
            })
            .collect::<Result<Vec<_>, InspectError>>()?;
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
            names::DEVICES => n(self.entries::<u32, DeviceConfig>(name, data)?),
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
            Err(source) => return Err(InspectError::PinDir { dir, source }),
        };
        for group in groups {
            let group = group.map_err(|source| InspectError::PinDir {
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
            let entries = fs::read_dir(&group_dir).map_err(|source| InspectError::PinDir {
                dir: group_dir.clone(),
                source,
            })?;
            for entry in entries {
                let entry = entry.map_err(|source| InspectError::PinDir {
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
            let entries = fs::read_dir(&dir).map_err(|source| InspectError::PinDir {
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

impl Dataset {
    fn add_slot(&mut self, key: FrontendKey, slot: u16, value: ServiceValue) {
        let entries = self.frontends.entry(key).or_default();
        if slot == 0 {
            entries.master = Some(value);
        } else {
            entries.slots.insert(slot, value.backend_id);
        }
    }
}

/// A key's `scope` byte as `inspect services` shows it.
fn scope_name(scope: u8) -> &'static str {
    match scope {
        proxy_common::scope::INTERNAL => "internal",
        proxy_common::scope::EXTERNAL => "external",
        _ => "unknown",
    }
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

/// An error with its causes, one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

fn ip4(octets: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(octets))
}

fn ip6(octets: [u8; 16]) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(octets))
}
