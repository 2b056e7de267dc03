//! What each `proxy inspect` subcommand shows: the views' types, whose field
//! names are the JSON shape (README, "Inspecting the dataplane"), and the
//! constants `status` shows.
//!
//! Plain data: built by [`super::compose`] (pure) and [`super::pins`] (the
//! links and fill levels), rendered by [`super::render`].

use std::{fmt, net::IpAddr, path::PathBuf};

use proxy_common::names;
use serde::Serialize;

use crate::telemetry::Mode;

/// Every map `proxy run` pins, in the order `status` lists them.
pub const PINNED_MAPS: [&str; 24] = [
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
    names::CT_PENDING_V4,
    names::CT_PENDING_V6,
    names::NODE_CFG,
    names::DEVICES,
    names::SRC_RANGE_V4,
    names::SRC_RANGE_V6,
    names::LOCAL_V4,
    names::LOCAL_V6,
    names::MAGLEV,
    names::MAGLEV_CFG,
    names::TC_TAIL,
];

/// The eBPF mode's datapath (`status`).
pub const DATAPATH: &str = "socket-lb";

/// The userspace mode's datapath (`status`): VIPs made local by routes of
/// ours, proxied by the daemon.
pub const USERSPACE_DATAPATH: &str = "userspace-proxy";

/// Why `conntrack` shows nothing when the maps are missing.
pub const NO_CONNTRACK: &str = "no conntrack map pinned (CT_V4/CT_V6): the pins are of a layout \
     without the per-packet (tc) datapath";

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
    pub rev_nat_id: u32,
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
    /// The sources a LoadBalancer frontend with `loadBalancerSourceRanges`
    /// admits on the tc path (`198.51.100.0/24`; empty: none); left out when
    /// it admits every source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ranges: Option<Vec<String>>,
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
    pub rev_nat_id: u32,
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
    /// Direct server return (`--lb-mode=dsr`): sent to the backend's node
    /// with the frontend in an IP option, not SNATed; replies bypass this node.
    pub dsr: bool,
    /// A TCP FIN or RST was seen: the entry expires soon.
    pub closing: bool,
    /// Not answered yet (`CT_PENDING_V4`/`_V6`): a TCP flow before the
    /// client's ACK, a UDP flow before its first reply.
    pub pending: bool,
    pub rev_nat_id: u32,
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
    /// The programs `tc_ingress` tail-calls (`TC_TAIL`), by slot; empty
    /// when no tc link is pinned.
    pub tail_calls: Vec<TailCallEntry>,
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
            tail_calls: Vec::new(),
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

/// One `TC_TAIL` slot: the program `tc_ingress` tail-calls through it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TailCallEntry {
    pub slot: u32,
    /// The program the slot is for (`proxy_common::tail::PROGRAMS`).
    pub program: &'static str,
    /// The id of the program the slot holds; `null` when it is empty (its
    /// packets pass untouched, counted as `tc_tail_call_failed`).
    pub program_id: Option<u32>,
    /// Why the slot could not be read, if it could not.
    pub error: Option<String>,
}

/// One pinned map's fill level.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MapEntry {
    pub name: &'static str,
    /// False when not pinned (for example `SVC_NAMES` under an older daemon).
    pub present: bool,
    /// `hash`, `lru_hash`, `percpu_array`, `array`, `lpm_trie`.
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
