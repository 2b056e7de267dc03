//! Every map the kernel programs use, declared once. Names and default sizes come
//! from `proxy_common`; userspace may resize them at load time. All maps are BTF
//! maps pinned by name, so a restarted daemon finds the same maps and `bpftool map
//! dump` can print them.

use aya_ebpf::{
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, SkStorage},
    macros::btf_map,
};
use proxy_common::{
    AffinityKey, AffinityValue, BackendV4, BackendV6, CtKeyV4, CtKeyV6, CtValueV4, CtValueV6,
    DeviceConfig, FragKeyV4, FragKeyV6, FragPorts, MaglevConfig, MaglevTable, NodeConfig,
    RejectBudget, RevNatV4, RevNatV6, ServiceKeyV4, ServiceKeyV6, ServiceName, ServiceValue,
    SockRevNatKeyV4, SockRevNatKeyV6, SockRevNatV4, SockRevNatV6, SockSrcCheck, SrcRangeV4,
    SrcRangeV6, capacity, prefilter,
};

const SERVICES: usize = capacity::SERVICES as usize;
const BACKENDS: usize = capacity::BACKENDS as usize;
const REVNAT: usize = capacity::REVNAT as usize;
const SOCK_REVNAT: usize = capacity::SOCK_REVNAT as usize;
const AFFINITY_ENTRIES: usize = capacity::AFFINITY as usize;
const SVC_NAMES_ENTRIES: usize = capacity::SVC_NAMES as usize;
const REASONS: usize = capacity::STATS as usize;
const CONNTRACK: usize = capacity::CONNTRACK as usize;
const CONNTRACK_PENDING: usize = capacity::CONNTRACK_PENDING as usize;
const DEVICES_ENTRIES: usize = capacity::DEVICES as usize;
const SRC_RANGES: usize = capacity::SRC_RANGES as usize;
const LOCAL_PREFIXES: usize = capacity::LOCAL_PREFIXES as usize;
const FRAGMENTS: usize = capacity::FRAGMENTS as usize;
const MAGLEV_TABLES: usize = capacity::MAGLEV_TABLES as usize;
const FILTER_WORDS: usize = prefilter::WORDS as usize;
const TC_TAIL_SLOTS: usize = capacity::TC_TAIL as usize;
const DSR_FLOWS: usize = capacity::DSR as usize;
/// `BPF_F_NO_PREALLOC` (uapi/linux/bpf.h): entries are allocated on insert.
const NO_PREALLOC: usize = 1;

/// Frontends and their backend slots. Written only from userspace, so not
/// preallocated: sized for 100,000 Services (`proxy_common::capacity`), they
/// cost their bucket array (16 bytes per entry of capacity) plus the entries
/// present, not the preallocated maximum.
#[btf_map(pin_by_name)]
pub static SVC_V4: HashMap<ServiceKeyV4, ServiceValue, SERVICES, NO_PREALLOC> = HashMap::new();
#[btf_map(pin_by_name)]
pub static SVC_V6: HashMap<ServiceKeyV6, ServiceValue, SERVICES, NO_PREALLOC> = HashMap::new();
/// Backends by id. Written only from userspace; not preallocated either.
#[btf_map(pin_by_name)]
pub static BACKEND_V4: HashMap<u32, BackendV4, BACKENDS, NO_PREALLOC> = HashMap::new();
#[btf_map(pin_by_name)]
pub static BACKEND_V6: HashMap<u32, BackendV6, BACKENDS, NO_PREALLOC> = HashMap::new();
/// Frontends by rev-NAT id. Written only from userspace; not preallocated,
/// so the large default capacity costs its bucket array plus the ids in use.
#[btf_map(pin_by_name)]
pub static REVNAT_V4: HashMap<u32, RevNatV4, REVNAT, NO_PREALLOC> = HashMap::new();
#[btf_map(pin_by_name)]
pub static REVNAT_V6: HashMap<u32, RevNatV6, REVNAT, NO_PREALLOC> = HashMap::new();
#[btf_map(pin_by_name)]
pub static SOCK_RNAT_V4: LruHashMap<SockRevNatKeyV4, SockRevNatV4, SOCK_REVNAT> = LruHashMap::new();
#[btf_map(pin_by_name)]
pub static SOCK_RNAT_V6: LruHashMap<SockRevNatKeyV6, SockRevNatV6, SOCK_REVNAT> = LruHashMap::new();
#[btf_map(pin_by_name)]
pub static AFFINITY: LruHashMap<AffinityKey, AffinityValue, AFFINITY_ENTRIES> = LruHashMap::new();
#[btf_map(pin_by_name)]
pub static STATS: PerCpuArray<u64, REASONS> = PerCpuArray::new();
/// The tc path's reject budget, per CPU (`proxy_common::reject_limit`).
#[btf_map(pin_by_name)]
pub static REJECT_BUDGET: PerCpuArray<RejectBudget, 1> = PerCpuArray::new();
/// Which Service owns each frontend, by rev-NAT id, for `proxy inspect`. No
/// program reads it: it is declared here so it is created and pinned with the
/// others. Not preallocated, since it is written only from userspace.
#[btf_map(pin_by_name)]
pub static SVC_NAMES: HashMap<u32, ServiceName, SVC_NAMES_ENTRIES, NO_PREALLOC> = HashMap::new();
/// tc path conntrack: a packet's tuple as it arrives → the rewrite to apply.
#[btf_map(pin_by_name)]
pub static CT_V4: LruHashMap<CtKeyV4, CtValueV4, CONNTRACK> = LruHashMap::new();
#[btf_map(pin_by_name)]
pub static CT_V6: LruHashMap<CtKeyV6, CtValueV6, CONNTRACK> = LruHashMap::new();
/// tc path conntrack of new flows until they are answered (then moved to
/// `CT_V4`/`CT_V6`): a flood of unanswered flows churns only this LRU.
#[btf_map(pin_by_name)]
pub static CT_PENDING_V4: LruHashMap<CtKeyV4, CtValueV4, CONNTRACK_PENDING> = LruHashMap::new();
#[btf_map(pin_by_name)]
pub static CT_PENDING_V6: LruHashMap<CtKeyV6, CtValueV6, CONNTRACK_PENDING> = LruHashMap::new();
/// The node's SNAT addresses (one entry, index 0).
#[btf_map(pin_by_name)]
pub static NODE_CFG: Array<NodeConfig, 1> = Array::new();
/// What the tc programs do on each device, by ifindex.
#[btf_map(pin_by_name)]
pub static DEVICES: HashMap<u32, DeviceConfig, DEVICES_ENTRIES> = HashMap::new();
/// `loadBalancerSourceRanges`: `{rev-NAT id, source prefix}` → verdict
/// (`proxy_common::src_range`). Written only from userspace; LPM tries are
/// never preallocated.
#[btf_map(pin_by_name)]
pub static SRC_RANGE_V4: LpmTrie<SrcRangeV4, u32, SRC_RANGES> = LpmTrie::new();
#[btf_map(pin_by_name)]
pub static SRC_RANGE_V6: LpmTrie<SrcRangeV6, u32, SRC_RANGES> = LpmTrie::new();
/// In-cluster IPv4 source prefixes (the local-traffic detector's CIDRs).
#[btf_map(pin_by_name)]
pub static LOCAL_V4: LpmTrie<[u8; 4], u8, LOCAL_PREFIXES> = LpmTrie::new();
/// In-cluster IPv6 source prefixes.
#[btf_map(pin_by_name)]
pub static LOCAL_V6: LpmTrie<[u8; 16], u8, LOCAL_PREFIXES> = LpmTrie::new();
/// The source check a translated socket owes (`src_check`): socket storage,
/// freed with the socket.
#[btf_map(pin_by_name)]
pub static SOCK_SRC_CHECK: SkStorage<SockSrcCheck> = SkStorage::new();
/// The ports of fragmented datagrams, recorded by each first fragment for
/// the later ones (`frag`).
#[btf_map(pin_by_name)]
pub static FRAG_V4: LruHashMap<FragKeyV4, FragPorts, FRAGMENTS> = LruHashMap::new();
#[btf_map(pin_by_name)]
pub static FRAG_V6: LruHashMap<FragKeyV6, FragPorts, FRAGMENTS> = LruHashMap::new();
/// Maglev lookup tables of external frontends, by `{rev-NAT id, scope}`
/// (`proxy_common::maglev::key`). Written only from userspace; not
/// preallocated, so a table costs memory only while its frontend exists.
#[btf_map(pin_by_name)]
pub static MAGLEV: HashMap<u64, MaglevTable, MAGLEV_TABLES, NO_PREALLOC> = HashMap::new();
/// The Maglev table size and hash seed (one entry, index 0); size 0 means
/// random selection.
#[btf_map(pin_by_name)]
pub static MAGLEV_CFG: Array<MaglevConfig, 1> = Array::new();
/// The socket hooks' "no Service here" bitmap (`proxy_common::prefilter`):
/// a clear bit is a certain miss of the internal scope's service lookup.
#[btf_map(pin_by_name)]
pub static SVC_FILTER: Array<u64, FILTER_WORDS> = Array::new();
/// The programs `tc_ingress` tail-calls, by `proxy_common::tail` slot. Pinned
/// like the other maps: a prog array is emptied when the last file
/// descriptor or pin of it goes, and the attached `tc_ingress` outlives the
/// daemon.
#[btf_map(pin_by_name)]
pub static TC_TAIL: ProgramArray<TC_TAIL_SLOTS> = ProgramArray::new();
/// Direct server return on the backend's node (`dsr`): the frontend a DSR
/// flow arrived for, keyed by its reply's tuple as the backend sends it, so
/// `tc_egress` rewrites the reply to come from the frontend.
#[btf_map(pin_by_name)]
pub static DSR_V4: LruHashMap<CtKeyV4, RevNatV4, DSR_FLOWS> = LruHashMap::new();
#[btf_map(pin_by_name)]
pub static DSR_V6: LruHashMap<CtKeyV6, RevNatV6, DSR_FLOWS> = LruHashMap::new();
