//! Map names, default capacities, and the key and value layouts.
//!
//! Layout (Cilium's shape, see ARCHITECTURE.md):
//! - `SVC_V4`/`SVC_V6`: `{addr, port, slot, proto}` → [`ServiceValue`]. Slot 0 is the
//!   frontend (backend count, flags, rev-NAT id); slots `1..=count` hold backend ids.
//! - `BACKEND_V4`/`BACKEND_V6`: backend id → address, port, protocol.
//! - `REVNAT_V4`/`REVNAT_V6`: rev-NAT id → the frontend's address and port.
//! - `SOCK_RNAT_V4`/`SOCK_RNAT_V6` (LRU): `{socket cookie, backend addr, port}` → the
//!   frontend, so `recvmsg` and `getpeername` can show the VIP to the application.
//! - `AFFINITY` (LRU): `{client, rev-NAT id}` → the client's backend, for
//!   ClientIP session affinity.
//! - `STATS`: per-CPU counters indexed by [`crate::Reason`].
//! - `SVC_NAMES`: rev-NAT id → [`ServiceName`], the Service that owns the
//!   frontend. Only userspace reads it (`proxy inspect`); no program looks at it.
//! - `CT_V4`/`CT_V6` (LRU, tc path only): a packet's 5-tuple as it arrives →
//!   the rewrite to apply ([`CtValueV4`]). A translated flow has two entries:
//!   the client's direction (rewrite to the backend, maybe SNATed) and the
//!   reply's direction (rewrite back to the frontend and the client).
//! - `CT_PENDING_V4`/`CT_PENDING_V6` (LRU, tc path only): the same entries
//!   for a new flow until it is answered (TCP: the client's first packet
//!   without SYN or RST; UDP: its first reply), when they move to `CT_*`.
//! - `NODE_CFG` (array, one entry): [`NodeConfig`], the node's SNAT addresses.
//! - `DEVICES`: ifindex → [`DeviceConfig`], what the tc programs do on each
//!   device they are attached to.
//! - `SRC_RANGE_V4`/`SRC_RANGE_V6` (LPM tries): `{rev-NAT id, source prefix}`
//!   → [`src_range`] verdict, a LoadBalancer frontend's
//!   `loadBalancerSourceRanges` (see [`SrcRangeV4`]).
//! - `LOCAL_V4`/`LOCAL_V6` (LPM tries): the prefixes whose sources are
//!   in-cluster (`--cluster-cidr`, or the Node's `spec.podCIDRs`), for the
//!   local-traffic detector of devices with [`device_flags::DETECT_CIDR_V4`]
//!   or [`device_flags::DETECT_CIDR_V6`].
//! - `FRAG_V4`/`FRAG_V6` (LRU, tc path only): `{addresses, IP ID, proto}` of
//!   a fragmented datagram → its ports ([`FragPorts`]), written by its first
//!   fragment so the later ones (which carry no transport header) get the
//!   same conntrack lookup (Cilium's `IPV4_FRAG_DATAGRAMS_MAP`).
//!
//! - `MAGLEV` (hash, not preallocated): `{rev-NAT id, scope}` ([`crate::maglev::key`])
//!   → [`crate::MaglevTable`], the Maglev lookup table of an external frontend's
//!   backends in one scope (`--lb-algorithm=maglev`).
//! - `MAGLEV_CFG` (array, one entry): [`crate::MaglevConfig`], the table size and the
//!   cluster-wide hash seed; size 0 means random selection everywhere.
//! - `SVC_FILTER` (array of [`crate::prefilter::WORDS`] `u64`): the socket
//!   hooks' "no Service here" bitmap of hashed internal frontends
//!   ([`crate::prefilter`]). Adding it was not a layout change: older pins
//!   without it get it created and filled before the new programs attach.
//!
//! # Scopes
//!
//! The service key carries a [`scope`]. Every frontend has an
//! [`scope::INTERNAL`] entry: the backends for clients on the node and its pods
//! (socket LB, and the per-packet path on pod-facing devices). A NodePort,
//! ExternalIP or LoadBalancer frontend of a Service with
//! `externalTrafficPolicy: Local` also has an [`scope::EXTERNAL`] entry that
//! holds only this node's endpoints (flag [`svc_flags::ETP_LOCAL`]). The tc
//! path on an external device looks up the external scope first and falls back
//! to the internal one; socket hooks only ever look up the internal scope.

use crate::{Be16, Be32};

/// The version of the pinned layout: which maps exist, their names, types,
/// capacities and key and value layouts, what their entries mean, and how
/// links are pinned. Userspace pins everything under
/// `<pin-path>/v<LAYOUT_VERSION>/` (`maps/`, `links/`), so the version is in
/// the path, never in a kernel object name (those are limited to 15 bytes).
///
/// Bump it in the change that makes pins left by the previous daemon unsafe
/// to adopt as they are:
/// - a key or value layout changes, even at the same size (aya only checks sizes);
/// - a map changes type, capacity, flags, or the meaning of its entries;
/// - a map is renamed or removed, or links are pinned differently.
///
/// Adding a map, or changing only program code, needs no bump: a new map is
/// created empty and the first sync fills it before the new programs are
/// attached. On start the daemon adopts pins of this version, migrates pins
/// of an older one (fresh maps programmed from the desired state, then the
/// programs swapped onto the existing links with `BPF_LINK_UPDATE`, then the
/// old pins removed), and refuses to start on pins of a newer one. The
/// unversioned layout (`<pin-path>/maps`, before versions existed) is version 0.
///
/// History: 1 was the socket-LB layout. 2 gave the service key a [`scope`]
/// byte, `STATS` a fixed [`capacity::STATS`] slots (so new reasons need no
/// bump), and added the tc path's maps (`CT_V4`, `CT_V6`, `NODE_CFG`,
/// `DEVICES`). 3 widened rev-NAT ids to `u32` (`ServiceValue`, `SOCK_RNAT_*`,
/// `AFFINITY`'s key, `CT_*` values, the `MAGLEV` key, `SOCK_SRC_CHECK`) and
/// raised [`capacity::REVNAT`] and [`capacity::SVC_NAMES`], not preallocated.
pub const LAYOUT_VERSION: u32 = 3;

/// Map names as they appear in the object file and under `<pin-path>/v<LAYOUT_VERSION>/maps`.
pub mod names {
    /// IPv4 frontends and their backend slots ([`ServiceKeyV4`](super::ServiceKeyV4) → [`ServiceValue`](super::ServiceValue)).
    pub const SVC_V4: &str = "SVC_V4";
    /// IPv6 frontends and their backend slots ([`ServiceKeyV6`](super::ServiceKeyV6) → [`ServiceValue`](super::ServiceValue)).
    pub const SVC_V6: &str = "SVC_V6";
    /// IPv4 backends by id ([`BackendV4`](super::BackendV4)).
    pub const BACKEND_V4: &str = "BACKEND_V4";
    /// IPv6 backends by id ([`BackendV6`](super::BackendV6)).
    pub const BACKEND_V6: &str = "BACKEND_V6";
    /// IPv4 frontends by rev-NAT id ([`RevNatV4`](super::RevNatV4)).
    pub const REVNAT_V4: &str = "REVNAT_V4";
    /// IPv6 frontends by rev-NAT id ([`RevNatV6`](super::RevNatV6)).
    pub const REVNAT_V6: &str = "REVNAT_V6";
    /// (LRU) the IPv4 frontend each socket asked for ([`SockRevNatKeyV4`](super::SockRevNatKeyV4) → [`SockRevNatV4`](super::SockRevNatV4)).
    pub const SOCK_RNAT_V4: &str = "SOCK_RNAT_V4";
    /// (LRU) the IPv6 frontend each socket asked for ([`SockRevNatKeyV6`](super::SockRevNatKeyV6) → [`SockRevNatV6`](super::SockRevNatV6)).
    pub const SOCK_RNAT_V6: &str = "SOCK_RNAT_V6";
    /// (LRU) ClientIP session affinity ([`AffinityKey`](super::AffinityKey) → [`AffinityValue`](super::AffinityValue)).
    pub const AFFINITY: &str = "AFFINITY";
    /// Per-CPU counters indexed by [`crate::Reason`].
    pub const STATS: &str = "STATS";
    /// The Service port that owns each frontend, by rev-NAT id ([`ServiceName`](super::ServiceName)).
    pub const SVC_NAMES: &str = "SVC_NAMES";
    /// (LRU) IPv4 conntrack of the tc path ([`CtKeyV4`](super::CtKeyV4) → [`CtValueV4`](super::CtValueV4)).
    pub const CT_V4: &str = "CT_V4";
    /// (LRU) IPv6 conntrack of the tc path ([`CtKeyV6`](super::CtKeyV6) → [`CtValueV6`](super::CtValueV6)).
    pub const CT_V6: &str = "CT_V6";
    /// (LRU) IPv4 conntrack of flows not answered yet, same layout as `CT_V4`
    /// (see [`capacity::CONNTRACK_PENDING`](super::capacity::CONNTRACK_PENDING)).
    pub const CT_PENDING_V4: &str = "CT_PENDING_V4";
    /// (LRU) IPv6 conntrack of flows not answered yet, same layout as `CT_V6`.
    pub const CT_PENDING_V6: &str = "CT_PENDING_V6";
    /// The node's SNAT addresses (an array of one [`NodeConfig`](super::NodeConfig)).
    pub const NODE_CFG: &str = "NODE_CFG";
    /// What the tc programs do on each device, by ifindex ([`DeviceConfig`](super::DeviceConfig)).
    pub const DEVICES: &str = "DEVICES";
    /// `loadBalancerSourceRanges` of IPv4 LoadBalancer frontends (LPM trie).
    pub const SRC_RANGE_V4: &str = "SRC_RANGE_V4";
    /// `loadBalancerSourceRanges` of IPv6 LoadBalancer frontends (LPM trie).
    pub const SRC_RANGE_V6: &str = "SRC_RANGE_V6";
    /// (LPM trie) in-cluster IPv4 source prefixes (key: prefix length, 4 address bytes → `u8` 1).
    pub const LOCAL_V4: &str = "LOCAL_V4";
    /// (LPM trie) in-cluster IPv6 source prefixes (key: prefix length, 16 address bytes → `u8` 1).
    pub const LOCAL_V6: &str = "LOCAL_V6";
    /// Socket storage (`BPF_MAP_TYPE_SK_STORAGE`): the source check a socket
    /// translated to a frontend with `loadBalancerSourceRanges` still owes.
    pub const SOCK_SRC_CHECK: &str = "SOCK_SRC_CHECK";
    /// (per-CPU array of one [`RejectBudget`](super::RejectBudget)) the tc
    /// path's budget of RSTs and ICMP errors ([`reject_limit`](super::reject_limit)).
    pub const REJECT_BUDGET: &str = "REJECT_BUDGET";
    /// (LRU) the ports of fragmented IPv4 datagrams ([`FragKeyV4`](super::FragKeyV4) → [`FragPorts`](super::FragPorts)).
    pub const FRAG_V4: &str = "FRAG_V4";
    /// (LRU) the ports of fragmented IPv6 datagrams ([`FragKeyV6`](super::FragKeyV6) → [`FragPorts`](super::FragPorts)).
    pub const FRAG_V6: &str = "FRAG_V6";
    /// Maglev lookup tables of external frontends ([`maglev::key`](crate::maglev::key) → [`MaglevTable`](crate::MaglevTable)).
    pub const MAGLEV: &str = "MAGLEV";
    /// The Maglev table size and hash seed (an array of one [`MaglevConfig`](crate::MaglevConfig)).
    pub const MAGLEV_CFG: &str = "MAGLEV_CFG";
    /// The socket hooks' pre-filter bitmap (an array of `u64` words, see [`crate::prefilter`]).
    pub const SVC_FILTER: &str = "SVC_FILTER";
    /// (prog array) the tc programs `tc_ingress` tail-calls, by
    /// [`tail`](super::tail) slot; filled by the daemon before it attaches
    /// `tc_ingress` anywhere.
    pub const TC_TAIL: &str = "TC_TAIL";
    /// (LRU) the frontends of IPv4 flows that arrived by direct server
    /// return, keyed by the reply's tuple as the backend sends it
    /// ([`CtKeyV4`](super::CtKeyV4) → [`RevNatV4`](super::RevNatV4)).
    pub const DSR_V4: &str = "DSR_V4";
    /// (LRU) the same for IPv6 ([`CtKeyV6`](super::CtKeyV6) → [`RevNatV6`](super::RevNatV6)).
    pub const DSR_V6: &str = "DSR_V6";
}

/// Slots of the `TC_TAIL` prog array: which program `tc_ingress` tail-calls
/// for a packet of each family.
pub mod tail {
    /// `tc_ingress4`: an IPv4 packet's ingress.
    pub const INGRESS4: u32 = 0;
    /// `tc_ingress6`: an IPv6 packet's ingress.
    pub const INGRESS6: u32 = 1;
    /// `tc_ingress4_new`: an IPv4 packet no conntrack entry knows,
    /// tail-called by `tc_ingress4`.
    pub const NEW4: u32 = 2;
    /// `tc_ingress6_new`: the same for IPv6, tail-called by `tc_ingress6`.
    pub const NEW6: u32 = 3;
    /// `tc_dsr4`: adds the DSR option to an IPv4 packet the others
    /// translated (and forwards it), or records the option of one that
    /// arrived with it.
    pub const DSR4: u32 = 4;
    /// Every slot with its program, in slot order.
    pub const PROGRAMS: [(u32, &str); 5] = [
        (INGRESS4, super::programs::TC_INGRESS4),
        (INGRESS6, super::programs::TC_INGRESS6),
        (NEW4, super::programs::TC_INGRESS4_NEW),
        (NEW6, super::programs::TC_INGRESS6_NEW),
        (DSR4, super::programs::TC_DSR4),
    ];
}

/// Program names (the function names in `proxy-ebpf`).
pub mod programs {
    /// `cgroup/connect4`: a TCP or connected UDP IPv4 socket to a VIP goes to a backend.
    pub const CONNECT4: &str = "sock_connect4";
    /// `cgroup/connect6`: the same for IPv6.
    pub const CONNECT6: &str = "sock_connect6";
    /// `cgroup/sendmsg4`: an unconnected IPv4 UDP datagram to a VIP goes to a backend.
    pub const SENDMSG4: &str = "sock_sendmsg4";
    /// `cgroup/sendmsg6`: the same for IPv6.
    pub const SENDMSG6: &str = "sock_sendmsg6";
    /// `cgroup/recvmsg4`: an IPv4 UDP reply shows the VIP as its source.
    pub const RECVMSG4: &str = "sock_recvmsg4";
    /// `cgroup/recvmsg6`: the same for IPv6.
    pub const RECVMSG6: &str = "sock_recvmsg6";
    /// `cgroup/getpeername4`: an IPv4 socket's peer shows as the VIP.
    pub const GETPEERNAME4: &str = "sock_getpeername4";
    /// `cgroup/getpeername6`: the same for IPv6.
    pub const GETPEERNAME6: &str = "sock_getpeername6";
    /// tc ingress (tcx) on each device: north-south DNAT, reverse SNAT, rejects.
    pub const TC_INGRESS: &str = "tc_ingress";
    /// Tail-called by `tc_ingress` for IPv4 packets (`TC_TAIL` slot
    /// [`tail::INGRESS4`](super::tail::INGRESS4)): the IPv4 ingress path.
    pub const TC_INGRESS4: &str = "tc_ingress4";
    /// Tail-called by `tc_ingress` for IPv6 packets (slot
    /// [`tail::INGRESS6`](super::tail::INGRESS6)).
    pub const TC_INGRESS6: &str = "tc_ingress6";
    /// Tail-called by `tc_ingress4` for an IPv4 packet no conntrack entry
    /// knows (slot [`tail::NEW4`](super::tail::NEW4)): a new flow, a reject,
    /// or passed.
    pub const TC_INGRESS4_NEW: &str = "tc_ingress4_new";
    /// The same for IPv6 (slot [`tail::NEW6`](super::tail::NEW6)).
    pub const TC_INGRESS6_NEW: &str = "tc_ingress6_new";
    /// Direct server return for IPv4 (slot [`tail::DSR4`](super::tail::DSR4)):
    /// adds the frontend's option to a translated packet, or records the
    /// option of an arriving one.
    pub const TC_DSR4: &str = "tc_dsr4";
    /// tc egress (tcx) on each device: reverse NAT of replies that leave here.
    pub const TC_EGRESS: &str = "tc_egress";
    /// XDP on each tc device (`--xdp`): the established flows' fast path.
    pub const XDP_INGRESS: &str = "xdp_ingress";
    /// `cgroup_skb/egress`: checks the source address the kernel chose for a
    /// socket the hooks translated to a frontend with
    /// `loadBalancerSourceRanges`. Attached only while such a frontend exists.
    pub const SOCK_EGRESS: &str = "sock_egress";
}

/// Default capacities. Userspace may override them at load time
/// (`EbpfLoader::set_max_entries`); the kernel side only uses these as defaults.
pub mod capacity {
    /// Service slots per family, frontends included (`--service-map-entries`):
    /// a frontend takes one slot plus one per backend. 100,000 single-port
    /// Services of 10 endpoints, each with a ClusterIP and NodePorts on 2 node
    /// addresses of the family, take 100,000 × 3 × 11 = 3,300,000 slots: 79 %
    /// of 2^22, below the 90 % fill warning. Not preallocated (written only
    /// from userspace): the kernel charges the bucket array, 16 bytes × 2^22
    /// = 64 MiB, plus about 80 bytes per entry present.
    pub const SERVICES: u32 = 1 << 22;
    /// Distinct backends (address, port, protocol) per family
    /// (`--backend-map-entries`): 1,000,000 endpoints take 48 % of 2^21,
    /// leaving room for backends kept through `--backend-grace-period`. Not
    /// preallocated: 32 MiB of buckets plus about 64 (IPv4) or 80 (IPv6)
    /// bytes per entry present.
    pub const BACKENDS: u32 = 1 << 21;
    /// Frontends, and the largest rev-NAT id (ids are `u32`, 0 unused, one id
    /// space for both families): 100,000 Services with a ClusterIP and a
    /// NodePort on 2 node addresses, in 2 families, take 600,000.
    /// Written only from userspace, so not preallocated: an entry costs
    /// its ~64 bytes (element header, 8-byte key and value) only while it
    /// exists; the fixed cost is the hash buckets, 16 bytes each for
    /// 2^20 buckets, 16 MiB per map.
    pub const REVNAT: u32 = 1 << 20;
    /// Live sockets that went through a VIP.
    pub const SOCK_REVNAT: u32 = 1 << 17;
    /// (client, frontend) pairs with ClientIP session affinity.
    pub const AFFINITY: u32 = 1 << 16;
    /// One name per frontend, so as many as rev-NAT ids. The map is not
    /// preallocated: it costs memory only for the entries it holds.
    pub const SVC_NAMES: u32 = REVNAT;
    /// Slots of the per-CPU `STATS` array: room for [`crate::Reason`] to grow
    /// without a layout bump.
    pub const STATS: u32 = 64;
    /// Slots of `TC_TAIL`: more than [`tail::PROGRAMS`](super::tail::PROGRAMS)
    /// holds, so later programs fit a map an older daemon pinned.
    pub const TC_TAIL: u32 = 8;
    /// Conntrack entries per family (two per translated flow).
    pub const CONNTRACK: u32 = 1 << 18;
    /// Entries per family of the conntrack of new flows not answered yet
    /// (`CT_PENDING_V4`/`_V6`, two per flow): a flood of new flows (spoofed
    /// SYNs) churns only this LRU, never the established flows' `CT_*`.
    /// Well below the SNAT port range of one backend (28,232 ports), so
    /// pending flows can hold at most 8,192 of its ports. Preallocated:
    /// 1.8 MiB of kernel memory for IPv4 and 2.5 MiB for IPv6 (`bpftool`'s
    /// memlock; `CT_V4` takes 28 MiB).
    pub const CONNTRACK_PENDING: u32 = 1 << 14;
    /// Devices the tc programs may be attached to.
    pub const DEVICES: u32 = 256;
    /// Source-range entries per family (one per range of each LoadBalancer
    /// frontend, plus one per frontend with ranges). Not preallocated.
    pub const SRC_RANGES: u32 = 1 << 16;
    /// In-cluster source prefixes per family (`LOCAL_V4`, `LOCAL_V6`).
    pub const LOCAL_PREFIXES: u32 = 64;
    /// Fragmented datagrams in flight per family (`FRAG_V4`, `FRAG_V6`):
    /// Cilium's default (`CILIUM_IPV4_FRAG_MAP_MAX_ENTRIES`). An entry lives
    /// until the LRU evicts it; a datagram's fragments arrive within
    /// milliseconds, so 8,192 covers that many datagrams in flight at once.
    /// Preallocated: about 0.6 MB for `FRAG_V4` (12-byte key, 4-byte value,
    /// ~56 bytes of kernel overhead per entry) and 0.8 MB for `FRAG_V6`
    /// (40-byte key).
    pub const FRAGMENTS: u32 = 8192;
    /// Flows that arrived by direct server return, per family (`DSR_V4`,
    /// `DSR_V6`, LRU): one entry per flow whose backend is on this node.
    pub const DSR: u32 = 1 << 16;
    /// Maglev tables (`MAGLEV`): one per external frontend and scope. Not
    /// preallocated: each table costs one 4 KiB allocation while it exists.
    pub const MAGLEV_TABLES: u32 = 1 << 16;
}

/// Conntrack idle timeouts: an entry not refreshed for this long is a miss.
pub mod ct_timeout {
    /// An established TCP flow.
    pub const TCP_NS: u64 = 6 * 3600 * 1_000_000_000;
    /// A TCP flow that has seen only SYNs
    /// ([`ct_flags::SYN_ONLY`](super::ct_flags::SYN_ONLY)): Cilium's SYN
    /// timeout (Linux keeps `SYN_SENT` 120 s).
    pub const TCP_SYN_NS: u64 = 60 * 1_000_000_000;
    /// A TCP flow after FIN or RST was seen.
    pub const TCP_CLOSING_NS: u64 = 10 * 1_000_000_000;
    /// A UDP flow.
    pub const UDP_NS: u64 = 60 * 1_000_000_000;

    /// The idle timeout of an entry of `protocol` with [`ct_flags`](super::ct_flags)
    /// `flags` (the tc programs' `fresh_at` rule; the daemon's conntrack GC
    /// deletes entries idle for longer).
    pub const fn for_entry(protocol: u8, flags: u8) -> u64 {
        if protocol != crate::proto::TCP {
            UDP_NS
        } else if flags & super::ct_flags::CLOSING != 0 {
            TCP_CLOSING_NS
        } else if flags & super::ct_flags::SYN_ONLY != 0 {
            TCP_SYN_NS
        } else {
            TCP_NS
        }
    }
}

/// Values of the service key's `scope` byte (see the module docs).
pub mod scope {
    /// Clients on the node and its pods; every frontend has this entry.
    pub const INTERNAL: u8 = 0;
    /// External clients of an `externalTrafficPolicy: Local` frontend.
    pub const EXTERNAL: u8 = 1;
}

/// Flags in [`BackendV4::flags`] and [`BackendV6::flags`].
pub mod backend_flags {
    /// The endpoint runs on this node: external traffic to it is not SNATed.
    pub const LOCAL: u8 = 1 << 0;
}

/// Flags in [`DeviceConfig::flags`].
pub mod device_flags {
    /// Translate ClusterIP frontends arriving on this device too (a
    /// pod-facing device, or every device when socket LB is off). External
    /// frontends are translated on every attached device.
    pub const CLUSTER_IP: u32 = 1 << 0;
    /// The local-traffic detector works by source address for IPv4: a source
    /// in `LOCAL_V4` is in-cluster, any other is off-cluster
    /// (`--detect-local-mode` `ClusterCIDR` or `NodeCIDR` with an IPv4 CIDR).
    pub const DETECT_CIDR_V4: u32 = 1 << 1;
    /// The same for IPv6 (`LOCAL_V6`).
    pub const DETECT_CIDR_V6: u32 = 1 << 2;
    /// The local-traffic detector works by device: traffic arriving on a
    /// device with [`LOCAL_DEVICE`] is in-cluster, on any other off-cluster
    /// (`BridgeInterface`, `InterfaceNamePrefix`).
    pub const DETECT_BY_DEVICE: u32 = 1 << 3;
    /// With [`DETECT_BY_DEVICE`]: this device is the pods' bridge, or has the
    /// pods' interface name prefix.
    pub const LOCAL_DEVICE: u32 = 1 << 4;
    /// `--masquerade-all`: every flow translated to a ClusterIP is SNATed.
    pub const MASQUERADE_ALL: u32 = 1 << 5;
    /// A veth or netkit device whose peer is in another network namespace (a
    /// pod's, or a test's): a packet tc ingress forwards out of it goes
    /// straight to the peer's ingress (`bpf_redirect_peer`).
    pub const PEER_NETNS: u32 = 1 << 6;
    /// `--lb-mode=dsr`: a new flow arriving here for an external frontend
    /// without `externalTrafficPolicy: Local`, to a backend on another
    /// node, goes by direct server return instead of SNAT.
    pub const DSR: u32 = 1 << 7;
}

/// Flags in [`CtValueV4::flags`] and [`CtValueV6::flags`].
pub mod ct_flags {
    /// The entry is for the reply direction (backend → client).
    pub const REPLY: u8 = 1 << 0;
    /// The flow is source-NATed to the node's address.
    pub const SNAT: u8 = 1 << 1;
    /// A FIN or RST was seen: the short TCP timeout applies.
    pub const CLOSING: u8 = 1 << 2;
    /// A TCP flow created by a SYN that no packet without SYN has followed
    /// yet, in either direction: it lives only
    /// [`ct_timeout::TCP_SYN_NS`](super::ct_timeout::TCP_SYN_NS) (Cilium's
    /// `seen_non_syn`, inverted), so a flood of spoofed SYNs leaves entries,
    /// and SNAT ports, that are free again within a minute, not six hours.
    /// Cleared on both of the flow's entries by its first packet without SYN.
    /// Entries written before this flag existed lack it, and keep the
    /// established timeout.
    pub const SYN_ONLY: u8 = 1 << 3;
    /// The flow goes by direct server return (`--lb-mode=dsr`): its forward
    /// packets leave with the frontend in a DSR option, its replies never
    /// come back through this node.
    pub const DSR: u8 = 1 << 4;
}

/// Flags in [`ServiceValue::flags`] (slot 0 only).
pub mod svc_flags {
    /// ClientIP session affinity is on; `affinity_timeout` holds its timeout.
    pub const AFFINITY: u16 = 1 << 0;
    /// A NodePort, ExternalIP or LoadBalancer frontend: the tc path translates
    /// it on every attached device.
    pub const EXTERNAL: u16 = 1 << 1;
    /// A NodePort frontend (its address is one of the node's).
    pub const NODE_PORT: u16 = 1 << 2;
    /// `externalTrafficPolicy: Local` (external scope only): no SNAT, and no
    /// backend means drop, not reject.
    pub const ETP_LOCAL: u16 = 1 << 3;
    /// The frontend has `loadBalancerSourceRanges` (`SRC_RANGE_*` entries):
    /// the socket hooks record translated sockets for the `sock_egress`
    /// source check, and only such frontends pay for the LPM lookup.
    pub const SOURCE_RANGES: u16 = 1 << 4;
}

/// Key of `SVC_V4`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKeyV4 {
    /// The frontend address.
    pub addr: Be32,
    /// The frontend port.
    pub port: Be16,
    /// 0 for the frontend entry, `1..=count` for backend slots.
    pub slot: u16,
    /// [`crate::proto`] number.
    pub proto: u8,
    /// [`scope`].
    pub scope: u8,
    /// Zero.
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<ServiceKeyV4>() == 12);

/// Key of `SVC_V6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKeyV6 {
    /// The frontend address, network order.
    pub addr: [u8; 16],
    /// The frontend port.
    pub port: Be16,
    /// 0 for the frontend entry, `1..=count` for backend slots.
    pub slot: u16,
    /// [`crate::proto`] number.
    pub proto: u8,
    /// [`scope`].
    pub scope: u8,
    /// Zero.
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<ServiceKeyV6>() == 24);

/// Value of `SVC_V4` and `SVC_V6`.
///
/// In slot 0: `count`, `rev_nat_id`, `flags` and `affinity_timeout` describe the
/// frontend and `backend_id` is 0. In slots `1..=count`: only `backend_id` is set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceValue {
    /// Backend slots: the backend's id (a `BACKEND_V4`/`BACKEND_V6` key). 0 in slot 0.
    pub backend_id: u32,
    /// Slot 0: how many backend slots follow.
    pub count: u16,
    /// Slot 0: [`svc_flags`].
    pub flags: u16,
    /// Slot 0: the frontend's rev-NAT id (`REVNAT_*` and `SVC_NAMES` key).
    pub rev_nat_id: u32,
    /// Slot 0: the rev-NAT id keying this frontend's `MAGLEV` table (see
    /// [`ServiceValue::maglev_table_id`]), shared by the frontends of one
    /// Service port, family and scope with the same backends; 0: the
    /// frontend's own `rev_nat_id` (what a daemon that wrote no shared
    /// tables left here). 0 in other slots.
    pub maglev_table: u32,
    /// Seconds; 0 when affinity is off.
    pub affinity_timeout: u32,
    /// Zero.
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ServiceValue>() == 24);

impl ServiceValue {
    /// The id whose `MAGLEV` table (`crate::maglev::key`) slot 0 names:
    /// `maglev_table` when set, else the frontend's own `rev_nat_id`.
    #[inline(always)]
    pub const fn maglev_table_id(&self) -> u32 {
        if self.maglev_table != 0 {
            self.maglev_table
        } else {
            self.rev_nat_id
        }
    }
}

/// Value of `BACKEND_V4`, keyed by backend id (`u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackendV4 {
    /// The endpoint address.
    pub addr: Be32,
    /// The endpoint (target) port.
    pub port: Be16,
    /// [`crate::proto`] number.
    pub proto: u8,
    /// [`backend_flags`].
    pub flags: u8,
}
const _: () = assert!(core::mem::size_of::<BackendV4>() == 8);

/// Value of `BACKEND_V6`, keyed by backend id (`u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackendV6 {
    /// The endpoint address, network order.
    pub addr: [u8; 16],
    /// The endpoint (target) port.
    pub port: Be16,
    /// [`crate::proto`] number.
    pub proto: u8,
    /// [`backend_flags`].
    pub flags: u8,
}
const _: () = assert!(core::mem::size_of::<BackendV6>() == 20);

/// Value of `REVNAT_V4`, keyed by rev-NAT id (`u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RevNatV4 {
    /// The frontend address.
    pub addr: Be32,
    /// The frontend port.
    pub port: Be16,
    /// Zero.
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<RevNatV4>() == 8);

/// Value of `REVNAT_V6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RevNatV6 {
    /// The frontend address, network order.
    pub addr: [u8; 16],
    /// The frontend port.
    pub port: Be16,
    /// Zero.
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<RevNatV6>() == 20);

/// Key of `SOCK_RNAT_V4`: which backend a socket was sent to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockRevNatKeyV4 {
    /// The socket cookie (`bpf_get_socket_cookie`).
    pub cookie: u64,
    /// The backend address the socket was sent to.
    pub addr: Be32,
    /// The backend port.
    pub port: Be16,
    /// Zero.
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<SockRevNatKeyV4>() == 16);

/// Value of `SOCK_RNAT_V4`: the frontend the application asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockRevNatV4 {
    /// The frontend address the application asked for.
    pub addr: Be32,
    /// The frontend port.
    pub port: Be16,
    /// Zero.
    pub _pad: u16,
    /// The frontend's rev-NAT id.
    pub rev_nat_id: u32,
    /// Zero.
    pub _pad2: u32,
}
const _: () = assert!(core::mem::size_of::<SockRevNatV4>() == 16);

/// Key of `SOCK_RNAT_V6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockRevNatKeyV6 {
    /// The socket cookie (`bpf_get_socket_cookie`).
    pub cookie: u64,
    /// The backend address, network order.
    pub addr: [u8; 16],
    /// The backend port.
    pub port: Be16,
    /// Zero.
    pub _pad: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<SockRevNatKeyV6>() == 32);

/// Value of `SOCK_RNAT_V6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockRevNatV6 {
    /// The frontend address, network order.
    pub addr: [u8; 16],
    /// The frontend port.
    pub port: Be16,
    /// Zero.
    pub _pad: u16,
    /// The frontend's rev-NAT id.
    pub rev_nat_id: u32,
}
const _: () = assert!(core::mem::size_of::<SockRevNatV6>() == 24);

/// Key of `AFFINITY` (LRU): one client and one frontend. Under socket LB the
/// client is the network namespace cookie (one pod), as in Cilium; rev-NAT ids
/// identify frontends across both families, so one map serves v4 and v6.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    /// The client: the network namespace cookie under socket LB.
    pub client: u64,
    /// The frontend's rev-NAT id.
    pub rev_nat_id: u32,
    /// Zero.
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<AffinityKey>() == 16);

/// Value of `AFFINITY`: the backend the client sticks to, the slot it was
/// found in (checked on reuse, so a backend that left the service is not
/// reused), and when the client last connected.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AffinityValue {
    /// `bpf_ktime_get_ns()` of the last connection.
    pub last_used_ns: u64,
    /// The backend the client sticks to.
    pub backend_id: u32,
    /// The slot it was found in, checked on reuse.
    pub slot: u16,
    /// Zero.
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<AffinityValue>() == 16);

/// Value of `NODE_CFG` (an array of one): the addresses external traffic
/// under `externalTrafficPolicy: Cluster`, and hairpin traffic, is SNATed to.
/// An all-zero address means "none known": such flows are dropped and counted.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeConfig {
    /// The IPv4 SNAT address (zero: none).
    pub snat_v4: Be32,
    /// First source port a SNATed flow may take, host order
    /// (`--snat-port-range`; zero: the programs' built-in 32768-60999).
    pub snat_port_min: u16,
    /// Last source port a SNATed flow may take, host order.
    pub snat_port_max: u16,
    /// The IPv6 SNAT address, network order (zero: none).
    pub snat_v6: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<NodeConfig>() == 24);

/// Value of `DEVICES`, keyed by ifindex (`u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DeviceConfig {
    /// [`device_flags`].
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<DeviceConfig>() == 4);

/// Key of `CT_V4`: a packet's addresses and ports as it arrives at the hook.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtKeyV4 {
    /// Source address.
    pub saddr: Be32,
    /// Destination address.
    pub daddr: Be32,
    /// Source port.
    pub sport: Be16,
    /// Destination port.
    pub dport: Be16,
    /// [`crate::proto`] number.
    pub proto: u8,
    /// Zero.
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<CtKeyV4>() == 16);

/// Value of `CT_V4`: what a matching packet's addresses and ports become.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtValueV4 {
    /// `bpf_ktime_get_ns()` when a packet last matched.
    pub last_seen_ns: u64,
    /// The source address to write.
    pub saddr: Be32,
    /// The destination address to write.
    pub daddr: Be32,
    /// The source port to write.
    pub sport: Be16,
    /// The destination port to write.
    pub dport: Be16,
    /// [`ct_flags`].
    pub flags: u8,
    /// Zero.
    pub _pad: [u8; 3],
    /// The frontend's rev-NAT id.
    pub rev_nat_id: u32,
    /// The backend the flow was sent to.
    pub backend_id: u32,
}
const _: () = assert!(core::mem::size_of::<CtValueV4>() == 32);

/// Key of `CT_V6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtKeyV6 {
    /// Source address, network order.
    pub saddr: [u8; 16],
    /// Destination address, network order.
    pub daddr: [u8; 16],
    /// Source port.
    pub sport: Be16,
    /// Destination port.
    pub dport: Be16,
    /// [`crate::proto`] number.
    pub proto: u8,
    /// Zero.
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<CtKeyV6>() == 40);

/// Value of `CT_V6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtValueV6 {
    /// `bpf_ktime_get_ns()` when a packet last matched.
    pub last_seen_ns: u64,
    /// The source address to write.
    pub saddr: [u8; 16],
    /// The destination address to write.
    pub daddr: [u8; 16],
    /// The source port to write.
    pub sport: Be16,
    /// The destination port to write.
    pub dport: Be16,
    /// [`ct_flags`].
    pub flags: u8,
    /// Zero.
    pub _pad: [u8; 3],
    /// The frontend's rev-NAT id.
    pub rev_nat_id: u32,
    /// The backend the flow was sent to.
    pub backend_id: u32,
}
const _: () = assert!(core::mem::size_of::<CtValueV6>() == 56);

/// Flags in [`ServiceName::flags`].
pub mod name_flags {
    /// The Service has `internalTrafficPolicy: Local`: its frontends reach only
    /// this node's endpoints.
    pub const INTERNAL_TRAFFIC_POLICY_LOCAL: u8 = 1 << 0;
    /// The frontend is a LoadBalancer ingress IP (slot 0's `svc_flags` tell
    /// ClusterIPs and NodePorts apart, not ExternalIPs from these).
    pub const LOAD_BALANCER: u8 = 1 << 1;
    /// The Service has `externalTrafficPolicy: Local` (set on its external
    /// frontends, which then have an external-scope entry).
    pub const EXTERNAL_TRAFFIC_POLICY_LOCAL: u8 = 1 << 2;
}

/// Value of `SVC_NAMES`, keyed by rev-NAT id (`u32`): which Service port owns a frontend, for `proxy inspect`. Strings are
/// UTF-8, not NUL-terminated; the `*_len` fields say how many bytes count.
/// Kubernetes limits namespaces and Service names to 63 bytes and port names
/// to 15, so they fit; userspace truncates anything longer.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceName {
    /// The Service's namespace (UTF-8, `namespace_len` bytes).
    pub namespace: [u8; 64],
    /// The Service's name (UTF-8, `name_len` bytes).
    pub name: [u8; 64],
    /// The Service port's name (UTF-8, `port_name_len` bytes; empty for a single unnamed port).
    pub port_name: [u8; 16],
    /// How many bytes of `namespace` count.
    pub namespace_len: u8,
    /// How many bytes of `name` count.
    pub name_len: u8,
    /// How many bytes of `port_name` count.
    pub port_name_len: u8,
    /// [`name_flags`].
    pub flags: u8,
}
const _: () = assert!(core::mem::size_of::<ServiceName>() == 148);

impl ServiceName {
    /// All zero: empty strings, no flags.
    pub const EMPTY: Self = Self {
        namespace: [0; 64],
        name: [0; 64],
        port_name: [0; 16],
        namespace_len: 0,
        name_len: 0,
        port_name_len: 0,
        flags: 0,
    };

    /// The namespace's bytes (a length past the array is clamped).
    pub fn namespace(&self) -> &[u8] {
        prefix(&self.namespace, self.namespace_len)
    }
    /// The Service name's bytes.
    pub fn name(&self) -> &[u8] {
        prefix(&self.name, self.name_len)
    }
    /// The Service port's name's bytes (empty for a single unnamed port).
    pub fn port_name(&self) -> &[u8] {
        prefix(&self.port_name, self.port_name_len)
    }
}

fn prefix(bytes: &[u8], len: u8) -> &[u8] {
    bytes.get(..usize::from(len)).unwrap_or(bytes)
}

/// Shows the strings, not 144 bytes of arrays.
impl core::fmt::Debug for ServiceName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        fn text(b: &[u8]) -> &str {
            core::str::from_utf8(b).unwrap_or("<not UTF-8>")
        }
        f.debug_struct("ServiceName")
            .field("namespace", &text(self.namespace()))
            .field("name", &text(self.name()))
            .field("port_name", &text(self.port_name()))
            .field("flags", &self.flags)
            .finish()
    }
}

#[cfg(feature = "user")]
mod pod {
    //! `aya::Pod` for every map type, so userspace can read and write them.
    use super::*;

    macro_rules! pod {
        ($($t:ty),* $(,)?) => {$(
            // SAFETY: the type is `#[repr(C)]`, `Copy`, made only of integers and
            // byte arrays, with every padding byte spelled out as a field, so any
            // bit pattern is valid and there is no uninitialised padding.
            unsafe impl aya::Pod for $t {}
        )*};
    }
    pod!(
        ServiceKeyV4,
        ServiceKeyV6,
        ServiceValue,
        BackendV4,
        BackendV6,
        RevNatV4,
        RevNatV6,
        SockRevNatKeyV4,
        SockRevNatV4,
        SockRevNatKeyV6,
        SockRevNatV6,
        AffinityKey,
        AffinityValue,
        ServiceName,
        NodeConfig,
        DeviceConfig,
        CtKeyV4,
        CtValueV4,
        CtKeyV6,
        CtValueV6,
        crate::SrcRangeV4,
        crate::SrcRangeV6,
        crate::SockSrcCheck,
        crate::FragKeyV4,
        crate::FragKeyV6,
        crate::FragPorts,
        crate::MaglevTable,
        crate::MaglevConfig,
    );
}
