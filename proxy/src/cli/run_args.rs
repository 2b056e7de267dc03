//! The settings of `proxy run`: every flag, each also a field of the
//! configuration file (`--config`), with its parser and default. `run.rs`
//! is what the daemon does with them.

use std::{path::PathBuf, str::FromStr as _, time::Duration};

use clap::{ArgMatches, Args, FromArgMatches as _, ValueEnum, parser::ValueSource};
use serde::{Deserialize, Serialize};

use super::LogFormat;
use crate::{
    config::{self, BindAddress, file, map_entries},
    dataplane::{
        devices::{DeviceSelection, PodDevices},
        local_traffic::DetectLocalMode,
    },
    model::{ExternalIpGuard, selection},
    nodeport::{Cidr, NodePortAddress},
    query,
    source::manifests,
};

/// `--mode` (`mode:` in the configuration file, spelled as the flag's values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeArg {
    /// eBPF, falling back to userspace when loading or attaching fails.
    Auto,
    /// eBPF socket hooks only; fail when they cannot be loaded.
    Ebpf,
    /// Userspace proxies on local VIPs only.
    Userspace,
}

/// `--lb-algorithm` (`lbAlgorithm:` in the configuration file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LbAlgorithmArg {
    /// External frontends: a Maglev table indexed by a hash of the 5-tuple,
    /// the same choice on every node.
    Maglev,
    /// A random backend per new flow, on each node on its own.
    Random,
}

/// `--lb-mode` (`lbMode:` in the configuration file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LbModeArg {
    /// A flow to a backend on another node is SNATed to this node: replies
    /// come back through it, the backend sees the node's address.
    Snat,
    /// Direct server return: DNAT only, the frontend carried to the
    /// backend's node in an IP option; replies go straight to the client, the
    /// backend sees the client's address.
    Dsr,
}

/// `--xdp` (`xdp:` in the configuration file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpArg {
    /// No XDP program: tc alone.
    #[default]
    Off,
    /// Driver (native) mode on every external device; fail when a driver
    /// cannot.
    Native,
    /// Native mode on devices backed by a driver, generic (SKB) mode on
    /// virtual devices and where native fails.
    Auto,
}

impl From<XdpArg> for crate::dataplane::xdp::XdpMode {
    fn from(arg: XdpArg) -> Self {
        match arg {
            XdpArg::Off => Self::Off,
            XdpArg::Native => Self::Native,
            XdpArg::Auto => Self::Auto,
        }
    }
}

/// `--maglev-table-size`: a prime in `3..=997`.
fn parse_maglev_size(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|e| format!("{s:?} is not a number: {e}"))?;
    crate::plan::Maglev::new(n, 0)
        .map(|_| n)
        .map_err(|e| e.to_string())
}

/// `--initial-list` (`initialList:` in the configuration file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitialListArg {
    /// A streaming list (WatchList, `sendInitialEvents`), falling back to
    /// `paginated` where the API server refuses it.
    Streaming,
    /// A list in pages of 500 (`limit`/`continue`), then a watch.
    Paginated,
}

impl From<InitialListArg> for crate::source::kube::InitialList {
    fn from(arg: InitialListArg) -> Self {
        match arg {
            InitialListArg::Streaming => Self::Streaming,
            InitialListArg::Paginated => Self::Paginated,
        }
    }
}

/// `--external-ip-guard` (`externalIpGuard:` in the configuration file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExternalIpGuardArg {
    /// Serve ExternalIPs and LoadBalancer IPs on this node's addresses, as kube-proxy does.
    Default,
    /// Refuse them.
    Strict,
}

impl From<ExternalIpGuardArg> for ExternalIpGuard {
    fn from(arg: ExternalIpGuardArg) -> Self {
        match arg {
            ExternalIpGuardArg::Default => ExternalIpGuard::Default,
            ExternalIpGuardArg::Strict => ExternalIpGuard::Strict,
        }
    }
}

/// Every setting of `proxy run`. Each field is both a flag and a field of the
/// configuration file (`--config`, the flag's name in camelCase; see
/// [`config::file`]): a new setting is one new field here, with its `#[arg]`,
/// and a type that serde can read (or a `#[serde(with)]` adapter).
///
/// The defaults are clap's (`default_value`s below): [`Default`] and
/// `proxy config print-defaults` take them from here.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct RunArgs {
    /// A YAML configuration file holding any of these settings (`proxy config
    /// print-defaults` prints one with all of them). Flags, and their
    /// environment variables, override it.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// The addresses NodePorts are served on: comma-separated IPs or CIDRs
    /// (kube-proxy's flag), or `primary`: the node's primary IPv4 and IPv6
    /// addresses from its Node object. Empty: every address of this network
    /// namespace's interfaces except loopback and IPv6 link-local ones.
    #[arg(long, value_name = "CIDRS", value_delimiter = ',')]
    pub nodeport_addresses: Vec<NodePortAddress>,
    /// A directory of Kubernetes YAML (Services, EndpointSlices), watched for
    /// changes. Optional when a cluster is configured; both can be used at once.
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// The largest manifest file read, in bytes; a larger one is rejected.
    #[arg(long, value_name = "BYTES", default_value_t = manifests::limits::DEFAULT_MAX_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub manifest_max_bytes: u64,
    /// How deep a manifest file's sequences and mappings may nest (at most 128).
    #[arg(long, value_name = "N", default_value_t = manifests::limits::DEFAULT_MAX_DEPTH,
          value_parser = |s: &str| bounded_usize(s, manifests::limits::MAX_DEPTH_CEILING))]
    pub manifest_max_depth: usize,
    /// How many values a manifest file may hold once its YAML aliases are
    /// expanded (bounds alias bombs).
    #[arg(long, value_name = "N", default_value_t = manifests::limits::DEFAULT_MAX_NODES,
          value_parser = |s: &str| bounded_usize(s, usize::MAX))]
    pub manifest_max_nodes: usize,
    /// A kubeconfig for the Kubernetes API server [default: the in-cluster
    /// service account when running in a pod].
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name: selects its Node object and makes its endpoints local
    /// [default: the hostname].
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Serve only the Services and EndpointSlices labelled
    /// `service.kubernetes.io/service-proxy-name=NAME` [default: those without that label].
    #[arg(long, value_name = "NAME", value_parser = proxy_name)]
    #[serde(deserialize_with = "de_proxy_name")]
    pub service_proxy_name: Option<String>,
    /// How the initial state is read from the API server: `streaming` (a
    /// WatchList, as kube-proxy does since Kubernetes 1.35; a paginated list
    /// where the server does not offer it) or `paginated`.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = InitialListArg::Streaming)]
    pub initial_list: InitialListArg,
    /// How long a streaming list may go without an event before its end is
    /// given up on, for a paginated list of that resource (e.g. 30s).
    #[arg(long, value_name = "DURATION", default_value = config::DEFAULT_INITIAL_LIST_TIMEOUT,
          value_parser = config::parse_duration)]
    #[serde(with = "file::duration")]
    pub initial_list_timeout: Duration,
    /// The cgroup v2 directory the socket hooks attach to [default: the cgroup2 root].
    #[arg(long, value_name = "DIR")]
    pub cgroup: Option<PathBuf>,
    /// Where maps and links are pinned (a bpffs is mounted there if missing).
    #[arg(long, default_value = config::DEFAULT_PIN_PATH, env = config::PIN_PATH_ENV)]
    pub pin_path: PathBuf,
    /// The local query socket `proxy explain` and `proxy diff` ask (a Unix
    /// socket, mode 0600: root only); empty for off.
    #[arg(long, value_name = "PATH", default_value = query::DEFAULT_SOCKET, env = query::SOCKET_ENV)]
    pub query_socket: PathBuf,
    /// Minimum time between syncs, in milliseconds; changes within it are coalesced.
    #[arg(long, value_parser = humantime_ms, default_value = "20")]
    #[serde(with = "file::millis")]
    pub min_sync_interval_ms: Duration,
    /// Period of the full reconcile that repairs drift in the maps, in milliseconds.
    #[arg(long, value_parser = humantime_ms, default_value = "60000")]
    #[serde(with = "file::millis")]
    pub resync_interval_ms: Duration,
    /// Where to serve Prometheus metrics (`/metrics`): IP:port, or empty for off.
    #[arg(long, value_name = "ADDR", default_value = config::DEFAULT_METRICS_BIND_ADDRESS,
          value_parser = |s: &str| BindAddress::parse(s, config::DEFAULT_METRICS_PORT))]
    #[serde(
        serialize_with = "file::bind_address::serialize",
        deserialize_with = "file::bind_address::deserialize::<_, { config::DEFAULT_METRICS_PORT }>"
    )]
    pub metrics_bind_address: BindAddress,
    /// Where to serve `/healthz` and `/livez`: IP:port, or empty for off.
    #[arg(long, value_name = "ADDR", default_value = config::DEFAULT_HEALTHZ_BIND_ADDRESS,
          value_parser = |s: &str| BindAddress::parse(s, config::DEFAULT_HEALTHZ_PORT))]
    #[serde(
        serialize_with = "file::bind_address::serialize",
        deserialize_with = "file::bind_address::deserialize::<_, { config::DEFAULT_HEALTHZ_PORT }>"
    )]
    pub healthz_bind_address: BindAddress,
    /// How long a change may wait to be programmed before the health checks
    /// answer 503 (e.g. 60s, 2m).
    #[arg(long, value_name = "DURATION", default_value = config::DEFAULT_HEALTHZ_TIMEOUT,
          value_parser = config::parse_duration)]
    #[serde(with = "file::duration")]
    pub healthz_timeout: Duration,
    /// How Services are implemented: `ebpf` (socket hooks), `userspace`
    /// (VIPs made local, proxies in the daemon), or `auto`: eBPF, falling back
    /// to userspace when loading or attaching fails.
    #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
    pub mode: ModeArg,
    /// How long a connection to a backend that left the Service may go on
    /// (e.g. 30s, 2m): the userspace path closes it then; the eBPF path keeps
    /// a deleted endpoint's backend entry that long for its per-packet flows.
    #[arg(long, value_name = "DURATION", default_value = config::DEFAULT_BACKEND_GRACE_TEXT,
          value_parser = config::parse_duration)]
    #[serde(with = "file::duration")]
    pub backend_grace_period: Duration,
    /// Userspace path: a UDP session with no datagram either way for this long ends.
    #[arg(long, value_name = "DURATION", default_value = config::DEFAULT_UDP_IDLE_TIMEOUT_TEXT,
          value_parser = config::parse_duration)]
    #[serde(with = "file::duration")]
    pub udp_idle_timeout: Duration,
    /// Userspace path: the TCP congestion control of the proxy's connections
    /// to backends and of ClusterIP connections (clients on this node), as
    /// in `net.ipv4.tcp_available_congestion_control`. Empty: the node's
    /// default. NodePort, ExternalIP and LoadBalancer clients always get the
    /// node's default.
    #[arg(long, value_name = "NAME", default_value = config::DEFAULT_USERSPACE_CONGESTION_CONTROL)]
    pub userspace_congestion_control: String,
    /// eBPF: entries of each service map (`SVC_V4`, `SVC_V6`: one per frontend
    /// plus one per backend of each frontend), when the maps are created
    /// [default: 4194304, enough for 100,000 Services of 10 endpoints with
    /// NodePorts on 2 node addresses]. 1 to 134217728. Not preallocated:
    /// kernel memory grows with the entries present. Frontends that do not
    /// fit are served from userspace.
    #[arg(long, value_name = "N", value_parser = map_entries::parse)]
    #[serde(deserialize_with = "de_map_entries")]
    pub service_map_entries: Option<u32>,
    /// eBPF: entries of each backend map (`BACKEND_V4`, `BACKEND_V6`: one per
    /// distinct endpoint address, port and protocol), when the maps are
    /// created [default: 2097152, twice 100,000 Services of 10 endpoints].
    /// 1 to 134217728. Not preallocated. Frontends whose backends do not fit
    /// are served from userspace.
    #[arg(long, value_name = "N", value_parser = map_entries::parse)]
    #[serde(deserialize_with = "de_map_entries")]
    pub backend_map_entries: Option<u32>,
    /// eBPF: at most this many frontends that do not fit the maps are served
    /// from userspace (each holds a listening socket, a route, and two
    /// descriptors per connection); the rest are not served, and are counted
    /// in `proxy_frontends_over_capacity_unserved`.
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_USERSPACE_MAX_FRONTENDS)]
    pub userspace_max_frontends: usize,
    /// eBPF: the node's external devices, where the tc programs serve
    /// NodePorts, ExternalIPs and LoadBalancer IPs: comma-separated interface
    /// names, or `auto`: the interfaces that carry the node's addresses or its
    /// default route, loopback excluded; bridges, Open vSwitch, veths and
    /// netkit devices (the pods' side) only with the default route.
    #[arg(long, value_name = "NAMES", default_value = "auto", value_parser = DeviceSelection::from_str)]
    pub devices: DeviceSelection,
    /// eBPF: devices facing pods (comma-separated names or globs such as
    /// `veth*`), where the tc programs also translate ClusterIPs per packet
    /// (for clients the socket hooks do not see). Empty: none.
    #[arg(long, value_name = "NAMES", default_value = "", value_parser = PodDevices::from_str)]
    pub pod_devices: PodDevices,
    /// eBPF: balance ClusterIP connections at the socket (cgroup hooks).
    /// false: no socket hooks, and every tc device translates ClusterIPs per
    /// packet.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub socket_lb: bool,
    /// ExternalIPs and LoadBalancer IPs equal to one of this node's
    /// addresses: `default` serves them, as kube-proxy does; `strict`
    /// refuses them (CVE-2020-8554). Loopback, unspecified and link-local
    /// addresses, and the kubelet's port 10250, are refused in both.
    #[arg(long, value_enum, default_value_t = ExternalIpGuardArg::Default)]
    pub external_ip_guard: ExternalIpGuardArg,
    /// The cluster's pod CIDRs: comma-separated, at most one IPv4 and one
    /// IPv6 (kube-proxy's flag). With `--detect-local-mode=ClusterCIDR`,
    /// ClusterIP traffic from any other source is masqueraded (eBPF: it is
    /// translated per packet on every tc device and SNATed to the node).
    /// Empty: no detector.
    #[arg(long, value_name = "CIDRS", value_delimiter = ',')]
    pub cluster_cidr: Vec<Cidr>,
    /// How in-cluster (pod) traffic is told from the rest: `ClusterCIDR`
    /// (source in `--cluster-cidr`), `NodeCIDR` (source in this Node's
    /// `spec.podCIDRs`; needs the Kubernetes source), `BridgeInterface`
    /// (arriving on `--pod-bridge-interface`), `InterfaceNamePrefix`
    /// (arriving on an interface named `--pod-interface-name-prefix*`).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = DetectLocalMode::ClusterCidr)]
    pub detect_local_mode: DetectLocalMode,
    /// The pods' bridge, for `--detect-local-mode=BridgeInterface`.
    #[arg(long, value_name = "NAME", default_value = "")]
    pub pod_bridge_interface: String,
    /// The pods' interface name prefix, for
    /// `--detect-local-mode=InterfaceNamePrefix`.
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub pod_interface_name_prefix: String,
    /// eBPF: SNAT every ClusterIP flow the tc programs translate, whatever
    /// its source, and translate ClusterIPs on every tc device (kube-proxy's
    /// flag).
    #[arg(long, value_name = "BOOL", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub masquerade_all: bool,
    /// eBPF: how the tc programs pick a backend for a new flow to a NodePort,
    /// ExternalIP or LoadBalancer IP: `maglev` (a consistent-hash table per
    /// frontend, the same choice on every node with the same seed and size)
    /// or `random`. ClusterIPs in the socket hooks, and the userspace
    /// fallback, are always random.
    #[arg(long, value_enum, value_name = "ALGORITHM", default_value_t = LbAlgorithmArg::Maglev)]
    pub lb_algorithm: LbAlgorithmArg,
    /// eBPF: how the tc programs send a new flow to a NodePort, ExternalIP or
    /// LoadBalancer IP (`externalTrafficPolicy: Cluster`) to a backend on
    /// another node: `snat` (SNAT to this node, replies back through it) or
    /// `dsr` (direct server return: the backend sees the client, replies go
    /// straight to it; IPv4, every node must run the proxy). Cluster-wide
    /// with `--lb-algorithm=maglev`, flows moved between nodes survive.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = LbModeArg::Snat)]
    pub lb_mode: LbModeArg,
    /// eBPF: `xdp_ingress` on the external tc devices, ahead of tc: packets
    /// of established NodePort, ExternalIP and LoadBalancer-IP flows are
    /// translated and forwarded there, everything else goes on to tc.
    /// `off`, `native` (driver mode; fails when a driver cannot) or `auto`
    /// (native on NICs, generic SKB mode on virtual devices or when native
    /// fails).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = XdpArg::Off)]
    pub xdp: XdpArg,
    /// eBPF, `--lb-algorithm=maglev`: entries per Maglev table (a prime, at
    /// most 997, so a table fits a 4 KiB kernel allocation). Cluster-wide:
    /// every node must use the same.
    #[arg(long, value_name = "M", default_value_t = crate::plan::maglev::DEFAULT_SIZE,
          value_parser = parse_maglev_size)]
    pub maglev_table_size: u32,
    /// eBPF, `--lb-algorithm=maglev`: the seed of the Maglev hashes.
    /// Cluster-wide: every node must use the same, or the nodes pick
    /// different backends for one flow.
    #[arg(long, value_name = "SEED", default_value_t = crate::plan::maglev::DEFAULT_SEED)]
    pub maglev_seed: u32,
    /// eBPF: the source ports NodePort/ExternalIP/LoadBalancer flows SNATed
    /// to the node take, `FIRST-LAST`. `auto`: the largest block of
    /// 1024-65535 outside the node's ephemeral ports
    /// (`net.ipv4.ip_local_port_range`, read at start) and the NodePort range
    /// 30000-32767. A range overlapping the ephemeral ports is refused (the
    /// node's own connections to a backend would have their replies
    /// hijacked by a SNATed flow on the same port).
    #[arg(long, value_name = "RANGE", default_value = "auto")]
    pub snat_port_range: String,
    /// eBPF: how often the conntrack garbage collector deletes expired
    /// per-packet flows (`CT_V4`/`CT_V6`, `CT_PENDING_*`) and entries of closed sockets
    /// (`SOCK_RNAT_V4`/`_V6`) (e.g. 30s). `0s`: never (the LRU evicts).
    #[arg(long, value_name = "DURATION", default_value = "30s",
          value_parser = config::parse_duration)]
    #[serde(with = "file::duration")]
    pub conntrack_gc_interval: Duration,
    /// The Service CIDRs (kube-apiserver's flag): comma-separated, at most
    /// one IPv4 and one IPv6. When set, a ClusterIP outside them is refused,
    /// reported and counted (CVE-2020-8554). Empty: ClusterIPs are not
    /// checked against a range.
    #[arg(long, value_name = "CIDRS", value_delimiter = ',')]
    pub service_cluster_ip_range: Vec<Cidr>,
    /// Directories of pinned network namespaces (comma-separated), such as
    /// `/run/netns`, where containerd and CRI-O pin the pods'. When a UDP
    /// backend goes away, connected UDP sockets aimed at it are ended in each
    /// of them too, besides the namespaces of the processes under the hooks'
    /// cgroup (which needs `hostPID`). Entering a namespace needs
    /// `CAP_SYS_ADMIN`.
    #[arg(long, value_name = "DIRS", value_delimiter = ',')]
    pub netns_dir: Vec<PathBuf>,
    /// eBPF: mount a BPF filesystem for the pins when the pin path is on
    /// none (as Cilium does). `false`: stop with an error instead. In a
    /// container, a filesystem mounted there dies with it, and the pins (so
    /// the hooks) with it: `deploy/daemonset.yaml` sets `false`.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub mount_bpffs: bool,
    /// Log format: `text` or `json`. The flag is `proxy --log-format`, shared by
    /// every subcommand (see [`super::Cli`]); [`resolve`] fills this in.
    #[arg(skip = LogFormat::Text)]
    pub log_format: LogFormat,
    /// When `--config` is kube-proxy's `KubeProxyConfiguration`: what was
    /// mapped and what was not ([`config::kube_proxy`]), logged at start.
    #[arg(skip)]
    #[serde(skip)]
    pub kube_proxy: Option<config::kube_proxy::Translation>,
}

/// A count from 1 to `max`.
fn bounded_usize(s: &str, max: usize) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from 1 to {max}")),
    }
}

/// What `proxy config print-defaults` says about `logFormat`, the one file
/// field whose flag is global (`proxy --log-format`), not `run`'s.
pub const LOG_FORMAT_HELP: &str =
    "Log format: text, or json (JSON lines) (flag: --log-format, env PROXY_LOG_FORMAT)";

impl Default for RunArgs {
    /// clap's defaults, without the environment (`NODE_NAME`, `PROXY_PIN_PATH`).
    fn default() -> Self {
        let command =
            RunArgs::augment_args(clap::Command::new("run")).mut_args(|arg| arg.env(None::<&str>));
        command
            .try_get_matches_from(["run"])
            .and_then(|matches| RunArgs::from_arg_matches(&matches))
            .unwrap_or_else(|e| panic!("the defaults of `proxy run` do not parse: {e}"))
    }
}

/// The settings `proxy run` runs with: `--config`'s file, if any, with every
/// flag given on the command line or through its environment variable over
/// it. `flags` are the parsed flags (clap's defaults where none was given),
/// `log_format` the global `--log-format`, and `matches` the `run`
/// subcommand's, which say where each value came from.
pub fn resolve(
    mut flags: RunArgs,
    log_format: LogFormat,
    matches: &ArgMatches,
) -> Result<RunArgs, file::ConfigFileError> {
    flags.log_format = log_format;
    let Some(path) = flags.config.clone() else {
        return Ok(flags);
    };
    let loaded = file::load_any::<RunArgs>(&path)?;
    let from_file = loaded.settings;
    let given: Vec<String> = matches
        .ids()
        .filter(|id| {
            matches!(
                matches.value_source(id.as_str()),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        })
        .map(|id| file::field_name(id.as_str()))
        .collect();
    let mut settings = file::layer(&from_file, &flags, &given)?;
    settings.config = Some(path);
    settings.kube_proxy = loaded.kube_proxy;
    Ok(settings)
}

fn proxy_name(s: &str) -> Result<String, selection::InvalidProxyName> {
    selection::validate_proxy_name(s).map(|()| s.to_owned())
}

fn de_proxy_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    file::optional_from_str_with(d, "a label value", proxy_name)
}

/// `serviceMapEntries`, `backendMapEntries`: as their flags, 1 to
/// [`map_entries::MAX`] (`null`: the default).
fn de_map_entries<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    map_entries::deserialize_optional(d)
}

fn humantime_ms(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|e| format!("{s:?} is not a number of milliseconds: {e}"))
}
