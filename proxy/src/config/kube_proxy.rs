//! kube-proxy's own configuration file (`KubeProxyConfiguration`,
//! `kubeproxy.config.k8s.io/v1alpha1`, the `config.conf` key of kubeadm's
//! `kube-proxy` ConfigMap) as input to `proxy run --config FILE`.
//!
//! [`translate`] reads it as kube-proxy's strict decoding does (an unknown
//! field is an error), applies kube-proxy's defaulting where it matters (an
//! empty `metricsBindAddress`, a `0s` `minSyncPeriod`), and maps each field to
//! one of our settings, by its name in our configuration file: the result is
//! a [`Translation`]: the settings in our format, and every field set to
//! something we do not do, each with the reason ([`NotMapped`]). The caller
//! turns the settings into its settings struct (so a bad value, such as a
//! CIDR that does not parse, is reported by the same code as in our format)
//! and lists the fields not mapped once at start.
//!
//! Must not: import anything of this crate (every layer reads `config`, and
//! `config::file` reads this), or drop a field set to something without a
//! [`Mapped`] or [`NotMapped`] entry.

use std::{collections::BTreeMap, fmt, time::Duration};

use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The `apiVersion` we read.
pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
/// The `kind` we read.
pub const KIND: &str = "KubeProxyConfiguration";

/// Why a `KubeProxyConfiguration` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KubeProxyConfigError {
    /// Not YAML, an unknown field, or a value of the wrong type.
    #[error("invalid KubeProxyConfiguration")]
    Decode(#[source] serde_norway::Error),
    #[error("apiVersion {0:?} is not supported: only {API_VERSION}")]
    ApiVersion(String),
    #[error("kube-proxy field {field}: {reason}")]
    Value { field: &'static str, reason: String },
}

/// A field of the kube-proxy file we do not act on, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotMapped {
    /// The field's path in the kube-proxy file (`conntrack.maxPerCore`).
    pub field: String,
    /// Its value, as written.
    pub value: String,
    pub reason: &'static str,
}

impl fmt::Display for NotMapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (not used: {})",
            self.field, self.value, self.reason
        )
    }
}

/// A kube-proxy file in our terms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Translation {
    /// Our settings, by their field name in our configuration file, each
    /// with the kube-proxy field it came from.
    pub settings: Vec<Mapped>,
    /// What was set but is not used, once per field, in the file's order.
    pub not_mapped: Vec<NotMapped>,
}

/// One of our settings taken from a kube-proxy field.
#[derive(Clone, Debug, PartialEq)]
pub struct Mapped {
    /// Our field (`clusterCidr`).
    pub ours: &'static str,
    /// The kube-proxy field (`clusterCIDR`).
    pub from: &'static str,
    pub value: Value,
}

impl Translation {
    /// The settings as one object of our configuration file.
    pub fn fields(&self) -> Map<String, Value> {
        self.settings
            .iter()
            .map(|m| (m.ours.to_owned(), m.value.clone()))
            .collect()
    }

    /// Our value for `ours`, if mapped.
    pub fn get(&self, ours: &str) -> Option<&Value> {
        self.settings
            .iter()
            .find(|m| m.ours == ours)
            .map(|m| &m.value)
    }
}

/// Whether `text` is a kube-proxy file: a YAML mapping whose `kind` is
/// `KubeProxyConfiguration` or whose `apiVersion` is kube-proxy's group.
pub fn is_kube_proxy(text: &str) -> bool {
    let Ok(serde_norway::Value::Mapping(map)) = serde_norway::from_str(text) else {
        return false;
    };
    let kind = map.get("kind").and_then(serde_norway::Value::as_str);
    let api = map.get("apiVersion").and_then(serde_norway::Value::as_str);
    kind == Some(KIND) || api.is_some_and(|a| a.starts_with("kubeproxy.config.k8s.io/"))
}

/// Reads a kube-proxy file and maps it (see the module docs).
pub fn translate(text: &str) -> Result<Translation, KubeProxyConfigError> {
    let config: KubeProxyConfiguration =
        serde_norway::from_str(text).map_err(KubeProxyConfigError::Decode)?;
    if config.api_version != API_VERSION {
        return Err(KubeProxyConfigError::ApiVersion(config.api_version));
    }
    if config.kind != KIND {
        return Err(KubeProxyConfigError::Value {
            field: "kind",
            reason: format!("{:?} is not {KIND}", config.kind),
        });
    }
    config.map()
}

// kube-proxy's v1alpha1 types (k8s.io/kube-proxy/config/v1alpha1), read
// strictly. Optional (`*T`) fields are `Option`; the rest take Go's zero
// value when left out, as kube-proxy's decoder does.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
struct KubeProxyConfiguration {
    api_version: String,
    kind: String,
    feature_gates: Option<BTreeMap<String, bool>>,
    client_connection: ClientConnection,
    logging: Logging,
    hostname_override: String,
    bind_address: String,
    healthz_bind_address: String,
    metrics_bind_address: String,
    bind_address_hard_fail: bool,
    enable_profiling: bool,
    show_hidden_metrics_for_version: String,
    mode: String,
    iptables: IpTables,
    ipvs: Ipvs,
    nftables: NfTables,
    winkernel: Winkernel,
    detect_local_mode: String,
    detect_local: DetectLocal,
    #[serde(rename = "clusterCIDR")]
    cluster_cidr: String,
    node_port_addresses: Option<Vec<String>>,
    oom_score_adj: Option<i32>,
    conntrack: Conntrack,
    config_sync_period: GoDuration,
    port_range: String,
    windows_run_as_service: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
struct ClientConnection {
    kubeconfig: String,
    accept_content_types: String,
    content_type: String,
    qps: f64,
    burst: i64,
}

/// component-base's `LoggingConfiguration`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
struct Logging {
    format: String,
    /// A duration string or a number of nanoseconds.
    flush_frequency: Option<Value>,
    verbosity: u32,
    vmodule: Option<Vec<Value>>,
    options: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
struct IpTables {
    masquerade_bit: Option<i32>,
    masquerade_all: bool,
    localhost_node_ports: Option<bool>,
    #[serde(rename = "snatNodeInternalIP")]
    snat_node_internal_ip: Option<bool>,
    sync_period: GoDuration,
    min_sync_period: GoDuration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
struct Ipvs {
    sync_period: GoDuration,
    min_sync_period: GoDuration,
    scheduler: String,
    #[serde(rename = "excludeCIDRs")]
    exclude_cidrs: Option<Vec<String>>,
    #[serde(rename = "strictARP")]
    strict_arp: bool,
    tcp_timeout: GoDuration,
    tcp_fin_timeout: GoDuration,
    udp_timeout: GoDuration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
struct NfTables {
    masquerade_bit: Option<i32>,
    masquerade_all: bool,
    sync_period: GoDuration,
    min_sync_period: GoDuration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
struct Winkernel {
    network_name: String,
    source_vip: String,
    #[serde(rename = "enableDSR")]
    enable_dsr: bool,
    root_hns_endpoint_name: String,
    forward_health_check_vip: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
struct DetectLocal {
    bridge_interface: String,
    interface_name_prefix: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
struct Conntrack {
    max_per_core: Option<i32>,
    min: Option<i32>,
    tcp_established_timeout: Option<GoDuration>,
    tcp_close_wait_timeout: Option<GoDuration>,
    tcp_be_liberal: bool,
    udp_timeout: GoDuration,
    udp_stream_timeout: GoDuration,
}

/// A `metav1.Duration`: Go's `time.Duration` text (`1h0m0s`, `250ms`); `null`
/// is zero, as Go's decoder leaves it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct GoDuration(Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        match text {
            None => Ok(Self::default()),
            Some(text) => parse_go_duration(&text)
                .map(Self)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Go's `time.ParseDuration` for non-negative durations: a sequence of
/// decimal numbers, each with a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`).
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration such as 30s, 1m30s or 1h0m0s");
    let mut rest = s.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() || rest.starts_with('-') {
        return Err(bad());
    }
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(digits);
        let number: f64 = number.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total_ns += number * scale;
        rest = tail;
    }
    if !total_ns.is_finite() || total_ns > u64::MAX as f64 {
        return Err(bad());
    }
    // Whole nanoseconds, as Go's.
    Ok(Duration::from_nanos(total_ns.round() as u64))
}

/// A duration as our configuration file writes it (`60s`, `1500ms`; the
/// same text as `file::duration`, which reads this module's output).
fn ours(d: Duration) -> String {
    match d.as_millis() {
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// A duration in milliseconds, for our `…Ms` fields.
fn millis(d: Duration) -> Value {
    json!(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// kube-proxy's defaults that decide a mapped value (pkg/proxy/apis/config/
/// v1alpha1/defaults.go).
mod defaults {
    use std::time::Duration;

    pub const SYNC_PERIOD: Duration = Duration::from_secs(30);
    /// iptables and nftables; ipvs has none (0).
    pub const MIN_SYNC_PERIOD: Duration = Duration::from_secs(1);
    pub const HEALTHZ_PORT: u16 = 10256;
    pub const METRICS_PORT: u16 = 10249;
}

/// Collects the mapping.
struct Out {
    t: Translation,
}

impl Out {
    fn set(&mut self, ours: &'static str, from: &'static str, value: Value) {
        self.t.settings.push(Mapped { ours, from, value });
    }

    fn skip(&mut self, field: impl Into<String>, value: impl fmt::Display, reason: &'static str) {
        self.t.not_mapped.push(NotMapped {
            field: field.into(),
            value: value.to_string(),
            reason,
        });
    }
}

/// Reasons, shared by several fields.
const CONNTRACK: &str = "kube-proxy writes these nf_conntrack sysctls at start; this proxy leaves \
    the node's conntrack settings alone (set them with sysctl on the node)";
const OTHER_MODE: &str = "kube-proxy reads this section only in that mode, which is not the one \
    selected";
const FWMARK: &str = "the eBPF datapath SNATs without marking packets (no fwmark bit is used)";
const WINDOWS: &str = "Windows (HNS) only; this proxy runs on Linux";
const CLIENT: &str = "the Kubernetes client's rate limits and content types are fixed (JSON, \
    watch-based, no client-side throttling settings)";

impl KubeProxyConfiguration {
    fn map(self) -> Result<Translation, KubeProxyConfigError> {
        let mut out = Out {
            t: Translation::default(),
        };
        let mode = match self.mode.as_str() {
            "" | "iptables" => Mode::IpTables,
            "ipvs" => Mode::Ipvs,
            "nftables" => Mode::NfTables,
            other => {
                return Err(KubeProxyConfigError::Value {
                    field: "mode",
                    reason: format!(
                        "{other:?} is not a Linux proxy mode (iptables, ipvs or nftables)"
                    ),
                });
            }
        };
        if !self.mode.is_empty() {
            // Every kube-proxy mode is served by this proxy's eBPF datapath
            // (with its userspace fallback): our `mode` keeps its default.
            out.skip(
                "mode",
                &self.mode,
                "every kube-proxy mode is implemented by this proxy's eBPF datapath (our `mode: \
                 auto`, falling back to userspace); its sync periods and masquerade setting are \
                 taken from that mode's section",
            );
        }

        self.map_addresses(&mut out)?;
        self.map_local_detection(&mut out);
        self.map_nodeports(&mut out, mode);
        if !self.hostname_override.is_empty() {
            out.set(
                "nodeName",
                "hostnameOverride",
                json!(self.hostname_override.trim()),
            );
        }
        if !self.client_connection.kubeconfig.is_empty() {
            out.set(
                "kubeconfig",
                "clientConnection.kubeconfig",
                json!(self.client_connection.kubeconfig),
            );
        }
        self.map_mode_sections(&mut out, mode);
        self.map_conntrack(&mut out);
        self.map_logging(&mut out)?;
        self.map_rest(&mut out);
        Ok(out.t)
    }

    /// `bindAddress`, `healthzBindAddress`, `metricsBindAddress` with
    /// kube-proxy's defaults (its `getDefaultAddresses`).
    fn map_addresses(&self, out: &mut Out) -> Result<(), KubeProxyConfigError> {
        let bind = self.bind_address.trim();
        let ipv6 = match bind {
            "" => false,
            ip => {
                let ip: std::net::IpAddr = ip.parse().map_err(|_| KubeProxyConfigError::Value {
                    field: "bindAddress",
                    reason: format!("{ip:?} is not an IP address"),
                })?;
                if !ip.is_unspecified() {
                    out.skip(
                        "bindAddress",
                        ip,
                        "this proxy takes the node's IPs from its Node object and its \
                         interfaces; only the address family is used (for the default \
                         healthz and metrics addresses)",
                    );
                }
                ip.is_ipv6()
            }
        };
        let (healthz_ip, metrics_ip) = if ipv6 {
            ("[::]", "[::1]")
        } else {
            ("0.0.0.0", "127.0.0.1")
        };
        let with_port = |given: &str, ip: &str, port: u16| match given.trim() {
            "" => format!("{ip}:{port}"),
            given => given.to_owned(),
        };
        out.set(
            "healthzBindAddress",
            "healthzBindAddress",
            json!(with_port(
                &self.healthz_bind_address,
                healthz_ip,
                defaults::HEALTHZ_PORT
            )),
        );
        out.set(
            "metricsBindAddress",
            "metricsBindAddress",
            json!(with_port(
                &self.metrics_bind_address,
                metrics_ip,
                defaults::METRICS_PORT
            )),
        );
        Ok(())
    }

    fn map_local_detection(&self, out: &mut Out) {
        let cidrs: Vec<&str> = self
            .cluster_cidr
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        if !cidrs.is_empty() {
            out.set("clusterCidr", "clusterCIDR", json!(cidrs));
        }
        if !self.detect_local_mode.is_empty() {
            // Spelled as ours (ClusterCIDR, NodeCIDR, BridgeInterface,
            // InterfaceNamePrefix); anything else is refused by our parser.
            out.set(
                "detectLocalMode",
                "detectLocalMode",
                json!(self.detect_local_mode),
            );
        }
        if !self.detect_local.bridge_interface.is_empty() {
            out.set(
                "podBridgeInterface",
                "detectLocal.bridgeInterface",
                json!(self.detect_local.bridge_interface),
            );
        }
        if !self.detect_local.interface_name_prefix.is_empty() {
            out.set(
                "podInterfaceNamePrefix",
                "detectLocal.interfaceNamePrefix",
                json!(self.detect_local.interface_name_prefix),
            );
        }
    }

    /// `nodePortAddresses`: CIDRs and `primary` as they are, `all` as
    /// 0.0.0.0/0 and ::/0, `localhost` not served. Unset: kube-proxy's
    /// default for the mode: `primary` in nftables mode, every address
    /// otherwise (our default).
    fn map_nodeports(&self, out: &mut Out, mode: Mode) {
        let Some(entries) = &self.node_port_addresses else {
            if mode == Mode::NfTables {
                out.set("nodeportAddresses", "nodePortAddresses", json!(["primary"]));
            }
            return;
        };
        let mut ours = Vec::new();
        for entry in entries {
            match entry.trim() {
                "all" => ours.extend(["0.0.0.0/0".to_owned(), "::/0".to_owned()]),
                "localhost" => out.skip(
                    "nodePortAddresses",
                    "localhost",
                    "NodePorts are never served on loopback addresses (CVE-2020-8558)",
                ),
                other => ours.push(other.to_owned()),
            }
        }
        if !ours.is_empty() {
            out.set("nodeportAddresses", "nodePortAddresses", json!(ours));
        }
    }

    /// The section of the selected mode gives the sync periods and
    /// `masqueradeAll` (as kube-proxy's conversion does: ipvs takes
    /// `iptables.masqueradeAll`); every other field of the sections is
    /// listed.
    fn map_mode_sections(&self, out: &mut Out, mode: Mode) {
        let (sync, min_sync, masquerade_all, from) = match mode {
            Mode::IpTables => (
                self.iptables.sync_period,
                self.iptables.min_sync_period,
                self.iptables.masquerade_all,
                [
                    "iptables.syncPeriod",
                    "iptables.minSyncPeriod",
                    "iptables.masqueradeAll",
                ],
            ),
            Mode::NfTables => (
                self.nftables.sync_period,
                self.nftables.min_sync_period,
                self.nftables.masquerade_all,
                [
                    "nftables.syncPeriod",
                    "nftables.minSyncPeriod",
                    "nftables.masqueradeAll",
                ],
            ),
            Mode::Ipvs => (
                self.ipvs.sync_period,
                self.ipvs.min_sync_period,
                self.iptables.masquerade_all,
                [
                    "ipvs.syncPeriod",
                    "ipvs.minSyncPeriod",
                    "iptables.masqueradeAll",
                ],
            ),
        };
        let sync = match sync.0 {
            Duration::ZERO => defaults::SYNC_PERIOD,
            d => d,
        };
        let min_sync = match (min_sync.0, mode) {
            (Duration::ZERO, Mode::IpTables | Mode::NfTables) => defaults::MIN_SYNC_PERIOD,
            (d, _) => d,
        };
        out.set("resyncIntervalMs", from[0], millis(sync));
        out.set("minSyncIntervalMs", from[1], millis(min_sync));
        out.set("masqueradeAll", from[2], json!(masquerade_all));

        let other = |m: Mode| if m == mode { None } else { Some(OTHER_MODE) };
        let ipt = &self.iptables;
        if let Some(bit) = ipt.masquerade_bit {
            out.skip("iptables.masqueradeBit", bit, FWMARK);
        }
        if let Some(true) = ipt.localhost_node_ports {
            out.skip(
                "iptables.localhostNodePorts",
                true,
                "NodePorts are never served on loopback addresses (CVE-2020-8558)",
            );
        }
        if let Some(true) = ipt.snat_node_internal_ip {
            out.skip(
                "iptables.snatNodeInternalIP",
                true,
                "the SNAT address is the first global address of each family on the \
                 external devices",
            );
        }
        // ipvs mode reads iptables.masqueradeAll (above).
        if let Some(reason) =
            other(Mode::IpTables).filter(|_| mode != Mode::Ipvs && ipt.masquerade_all)
        {
            out.skip("iptables.masqueradeAll", true, reason);
        }
        if let Some(reason) = other(Mode::IpTables) {
            skip_duration(out, "iptables.syncPeriod", ipt.sync_period, reason);
            skip_duration(out, "iptables.minSyncPeriod", ipt.min_sync_period, reason);
        }
        let nft = &self.nftables;
        if let Some(bit) = nft.masquerade_bit {
            out.skip("nftables.masqueradeBit", bit, FWMARK);
        }
        if let Some(reason) = other(Mode::NfTables) {
            if nft.masquerade_all {
                out.skip("nftables.masqueradeAll", true, reason);
            }
            skip_duration(out, "nftables.syncPeriod", nft.sync_period, reason);
            skip_duration(out, "nftables.minSyncPeriod", nft.min_sync_period, reason);
        }
        let ipvs = &self.ipvs;
        if let Some(reason) = other(Mode::Ipvs) {
            skip_duration(out, "ipvs.syncPeriod", ipvs.sync_period, reason);
            skip_duration(out, "ipvs.minSyncPeriod", ipvs.min_sync_period, reason);
        }
        const IPVS: &str = "IPVS only; the eBPF datapath has no IPVS scheduler, ARP or IPVS \
            session timeouts (backends are picked at random, as kube-proxy's iptables mode)";
        if !ipvs.scheduler.is_empty() {
            out.skip("ipvs.scheduler", &ipvs.scheduler, IPVS);
        }
        if let Some(cidrs) = ipvs.exclude_cidrs.as_ref().filter(|c| !c.is_empty()) {
            out.skip("ipvs.excludeCIDRs", cidrs.join(","), IPVS);
        }
        if ipvs.strict_arp {
            out.skip("ipvs.strictARP", true, IPVS);
        }
        skip_duration(out, "ipvs.tcpTimeout", ipvs.tcp_timeout, IPVS);
        skip_duration(out, "ipvs.tcpFinTimeout", ipvs.tcp_fin_timeout, IPVS);
        skip_duration(out, "ipvs.udpTimeout", ipvs.udp_timeout, IPVS);
    }

    /// `conntrack.udpStreamTimeout` (an idle UDP flow that has seen replies)
    /// is our userspace UDP idle timeout; the rest are sysctls we leave alone.
    fn map_conntrack(&self, out: &mut Out) {
        let c = &self.conntrack;
        if let Some(n) = c.max_per_core {
            out.skip("conntrack.maxPerCore", n, CONNTRACK);
        }
        if let Some(n) = c.min {
            out.skip("conntrack.min", n, CONNTRACK);
        }
        if let Some(d) = c.tcp_established_timeout {
            skip_duration(out, "conntrack.tcpEstablishedTimeout", d, CONNTRACK);
        }
        if let Some(d) = c.tcp_close_wait_timeout {
            skip_duration(out, "conntrack.tcpCloseWaitTimeout", d, CONNTRACK);
        }
        if c.tcp_be_liberal {
            out.skip("conntrack.tcpBeLiberal", true, CONNTRACK);
        }
        skip_duration(
            out,
            "conntrack.udpTimeout",
            c.udp_timeout,
            "kube-proxy's nf_conntrack_udp_timeout sysctl (unreplied UDP flows); this proxy \
             leaves it alone. Its userspace path has one UDP idle timeout, set from \
             conntrack.udpStreamTimeout",
        );
        if c.udp_stream_timeout.0 != Duration::ZERO {
            out.set(
                "udpIdleTimeout",
                "conntrack.udpStreamTimeout",
                json!(ours(c.udp_stream_timeout.0)),
            );
        }
    }

    fn map_logging(&self, out: &mut Out) -> Result<(), KubeProxyConfigError> {
        let l = &self.logging;
        match l.format.as_str() {
            "" => {}
            "text" | "json" => out.set("logFormat", "logging.format", json!(l.format)),
            other => {
                return Err(KubeProxyConfigError::Value {
                    field: "logging.format",
                    reason: format!("{other:?} is not text or json"),
                });
            }
        }
        const LOGS: &str = "log verbosity and filtering are set with RUST_LOG (e.g. \
            RUST_LOG=debug); the other klog options have no equivalent";
        if l.verbosity != 0 {
            out.skip("logging.verbosity", l.verbosity, LOGS);
        }
        if let Some(v) = l.vmodule.as_ref().filter(|v| !v.is_empty()) {
            out.skip("logging.vmodule", Value::from(v.clone()), LOGS);
        }
        if let Some(f) = l.flush_frequency.as_ref().filter(|f| !is_zero(f)) {
            out.skip("logging.flushFrequency", f, LOGS);
        }
        if let Some(o) = l.options.as_ref().filter(|o| !is_zero(o)) {
            out.skip("logging.options", o, LOGS);
        }
        Ok(())
    }

    fn map_rest(&self, out: &mut Out) {
        if let Some(gates) = &self.feature_gates {
            for (gate, on) in gates {
                out.skip(
                    format!("featureGates.{gate}"),
                    on,
                    "kube-proxy's feature gates do not apply; this proxy's behaviour follows \
                     the current Kubernetes release (see README, Differences from kube-proxy)",
                );
            }
        }
        let cc = &self.client_connection;
        if !cc.accept_content_types.is_empty() {
            out.skip(
                "clientConnection.acceptContentTypes",
                &cc.accept_content_types,
                CLIENT,
            );
        }
        if !cc.content_type.is_empty() {
            out.skip("clientConnection.contentType", &cc.content_type, CLIENT);
        }
        if cc.qps != 0.0 {
            out.skip("clientConnection.qps", cc.qps, CLIENT);
        }
        if cc.burst != 0 {
            out.skip("clientConnection.burst", cc.burst, CLIENT);
        }
        if self.bind_address_hard_fail {
            out.skip(
                "bindAddressHardFail",
                true,
                "a healthz or metrics address in use is always retried (kube-proxy's default); \
                 any other bind error stops the daemon at start",
            );
        }
        if self.enable_profiling {
            out.skip(
                "enableProfiling",
                true,
                "no /debug/pprof handler (a Rust binary; use perf or bpftool prog profile)",
            );
        }
        if !self.show_hidden_metrics_for_version.is_empty() {
            out.skip(
                "showHiddenMetricsForVersion",
                &self.show_hidden_metrics_for_version,
                "this proxy's metrics have no hidden (deprecated) set",
            );
        }
        if let Some(adj) = self.oom_score_adj {
            out.skip(
                "oomScoreAdj",
                adj,
                "the daemon does not change its OOM score; set it with the pod's priority \
                 class and resources",
            );
        }
        skip_duration(
            out,
            "configSyncPeriod",
            self.config_sync_period,
            "Services and EndpointSlices are watched with no periodic relist; drift in the \
             maps is repaired every resyncIntervalMs",
        );
        if !self.port_range.is_empty() {
            out.skip(
                "portRange",
                &self.port_range,
                "unused by kube-proxy too (it was the old userspace mode's)",
            );
        }
        let w = &self.winkernel;
        for (field, value) in [
            ("winkernel.networkName", w.network_name.as_str()),
            ("winkernel.sourceVip", w.source_vip.as_str()),
            (
                "winkernel.rootHnsEndpointName",
                w.root_hns_endpoint_name.as_str(),
            ),
        ] {
            if !value.is_empty() {
                out.skip(field, value, WINDOWS);
            }
        }
        if w.enable_dsr {
            out.skip("winkernel.enableDSR", true, WINDOWS);
        }
        if w.forward_health_check_vip {
            out.skip("winkernel.forwardHealthCheckVip", true, WINDOWS);
        }
        if self.windows_run_as_service {
            out.skip("windowsRunAsService", true, WINDOWS);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    IpTables,
    Ipvs,
    NfTables,
}

fn skip_duration(out: &mut Out, field: &'static str, d: GoDuration, reason: &'static str) {
    if d.0 != Duration::ZERO {
        out.skip(field, ours(d.0), reason);
    }
}

/// Whether a loosely typed value is Go's zero (`0`, `"0"`, `0s`, `""`,
/// `null`, `false`, or a mapping or list of them).
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => {
            s.is_empty() || s == "0" || parse_go_duration(s).is_ok_and(|d| d.is_zero())
        }
        Value::Array(a) => a.iter().all(is_zero),
        Value::Object(o) => o.values().all(is_zero),
    }
}

#[cfg(test)]
#[path = "kube_proxy_tests.rs"]
mod tests;
