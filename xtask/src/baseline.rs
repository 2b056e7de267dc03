//! `cargo xtask bench-baseline`: how long kube-proxy's rule loading takes at the
//! scale our control plane is benchmarked at, so both numbers come from the same
//! machine and the same run.
//!
//! For N Services × M endpoints we generate the input kube-proxy itself would hand
//! to the kernel on a full sync, then time the tool loading it into an empty,
//! freshly created network namespace:
//!
//! - **iptables mode** ([`iptables_ruleset`]): the `iptables-restore` input of
//!   `pkg/proxy/iptables/proxier.go` (`syncProxyRules`): `*filter` and `*nat`,
//!   `KUBE-SERVICES` → `KUBE-SVC-<hash>` (`-m statistic --mode random
//!   --probability 1/n` per endpoint) → `KUBE-SEP-<hash>` (hairpin mark + `DNAT`),
//!   `KUBE-MARK-MASQ`, `KUBE-POSTROUTING`, and the "large cluster mode" that drops
//!   per-endpoint comments above 1,000 endpoints. kube-proxy adds the jumps from
//!   the built-in chains (`PREROUTING`/`OUTPUT` → `KUBE-SERVICES`, …) with separate
//!   `iptables -I` calls before the restore; here they are `-I` lines of the same
//!   input, so one command loads everything. It runs as kube-proxy runs it,
//!   `iptables-restore -w 5 --noflush --counters FILE`, and also without
//!   `--noflush` (whole-table restore). In an empty namespace both load the same
//!   rules, but iptables-nft 1.8.9 is superlinear with `--noflush`, all of it in
//!   user space (here: 1,000 Services ≈ 4 s against 0.6 s without it; 10,000
//!   still running after 25 min), so both are reported.
//! - **nftables mode** ([`nft_ruleset`]): the transaction `pkg/proxy/nftables`
//!   sends (through knftables, as `nft -f -`) on its first full sync: table `ip
//!   kube-proxy`, its base and helper chains, the `service-ips` verdict map keyed
//!   by `ipv4_addr . inet_proto . inet_service`, per Service a chain
//!   `service-<hash>-<ns>/<name>/<proto>/<port>` with `numgen random mod N vmap`
//!   to per-endpoint chains that `dnat to` the endpoint. Timed as `nft -f FILE`.
//!   On this kernel (6.18) that transaction is superlinear too, in the kernel
//!   (system time): 1,000 Services ≈ 0.8 s, 5,000 ≈ 19 s, 10,000 ≈ 130 s; hence
//!   the default [`LOAD_LIMIT`] of 5 min.
//!
//! Chain names are hashed exactly as kube-proxy hashes them (base32 of SHA-256);
//! the unit tests check them against names in kube-proxy's own tests. The
//! configuration modelled is kube-proxy's default: ClusterIP Services with
//! `Cluster` traffic policy, no session affinity, `--detect-local-mode=ClusterCIDR`
//! with [`CLUSTER_CIDR`], masquerade bit 14, NodePorts on all addresses.
//!
//! Debian's `iptables-restore` is iptables-nft (the nf_tables backend); where
//! `iptables-legacy-restore` is installed it is measured too, since nodes run
//! either, depending on the distribution.
//!
//! Each sample gets its own namespace (`pxb-<pid>-<n>`, deleted afterwards, also
//! on error; leftovers of killed runs are swept at the next start). A load is
//! killed after [`LOAD_LIMIT`] (or the limit given to [`run_with_limit`]) and
//! reported as "> limit"; that contender is then skipped for the rest of the
//! run. Helper commands are killed after [`COMMAND_LIMIT`]. Nothing touches the
//! root namespace's rules: the tools only ever run through `nsenter --net=…`.
//! `--write-rules DIR` writes the generated inputs for loading by hand.

use std::{
    fmt::Write as _,
    fs,
    io::{Read as _, Seek as _},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use data_encoding::BASE32;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use sha2::{Digest as _, Sha256};

/// The pod range: endpoints come from here, and kube-proxy's "not from a pod"
/// masquerade rule matches on it (`--cluster-cidr`, ClusterCIDR local detection).
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The Service range (`--service-cluster-ip-range`), which the nftables mode's
/// "drop traffic to unallocated ClusterIPs" rule names.
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// Endpoints per Service in [`run`].
pub const ENDPOINTS_PER_SERVICE: usize = 10;
/// Upper bound on a helper process (`ip netns …`, a dump, `--version`).
pub const COMMAND_LIMIT: Duration = Duration::from_secs(120);
/// Default upper bound on one load; a load killed at it is reported as "> limit".
pub const LOAD_LIMIT: Duration = Duration::from_secs(300);

/// kube-proxy's default masquerade mark (`--iptables-masquerade-bit=14`).
const MASQ_MARK: &str = "0x4000";
/// kube-proxy drops per-endpoint comments when a sync has more endpoints than this.
const LARGE_CLUSTER_ENDPOINTS_THRESHOLD: usize = 1000;
/// nftables chain names are at most 256 bytes; kube-proxy keeps 16 for the prefix.
const NFT_CHAIN_NAME_BASE_MAX: usize = 256 - 16;

const NETNS_PREFIX: &str = "pxb-";
const NETNS_DIR: &str = "/run/netns";
static NETNS_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Appends one formatted line to a `String` (writing into a `String` cannot fail).
macro_rules! emit {
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

// ---------------------------------------------------------------------------
// Services
// ---------------------------------------------------------------------------

/// An L4 protocol of a Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the synthetic Services are TCP")
    )]
    Udp,
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the synthetic Services are TCP")
    )]
    Sctp,
}

impl Protocol {
    /// The lower-case name kube-proxy uses in rules and hashes.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One Service port and its ready endpoints: what kube-proxy turns into rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvcSpec {
    pub namespace: String,
    pub name: String,
    /// The port's name (`ServicePort.name`); part of kube-proxy's chain-name hash.
    /// May be empty (single-port Services).
    pub port_name: String,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub endpoints: Vec<(Ipv4Addr, u16)>,
    /// `nodePort` (a NodePort Service with `externalTrafficPolicy: Cluster`).
    pub node_port: Option<u16>,
}

impl SvcSpec {
    /// kube-proxy's `ServicePortName.String()`: `ns/name` or `ns/name:port`.
    fn port_name_string(&self) -> String {
        if self.port_name.is_empty() {
            format!("{}/{}", self.namespace, self.name)
        } else {
            format!("{}/{}:{}", self.namespace, self.name, self.port_name)
        }
    }
}

/// `n_services` deterministic Services with `endpoints_each` endpoints each:
/// ClusterIPs from 10.96.1.0 upwards (inside [`SERVICE_CIDR`]), endpoints
/// `10.244.x.y:8080` (inside [`CLUSTER_CIDR`]), 100 Services per namespace.
/// Endpoint addresses repeat after 65,534 endpoints (a pod backing several
/// Services); ClusterIPs repeat only beyond a million Services.
pub fn synthetic(n_services: usize, endpoints_each: usize) -> Vec<SvcSpec> {
    const VIP_BASE: u32 = u32::from_be_bytes([10, 96, 1, 0]);
    const VIP_SPAN: u32 = (1 << 20) - 256;
    const POD_BASE: u32 = u32::from_be_bytes([10, 244, 0, 0]);
    const POD_SPAN: u64 = 65534;
    let mut next_endpoint: u64 = 0;
    (0..n_services)
        .map(|i| {
            let vip_offset = u32::try_from(i % VIP_SPAN as usize).unwrap_or(0);
            let endpoints = (0..endpoints_each)
                .map(|_| {
                    let host = u32::try_from(next_endpoint % POD_SPAN).unwrap_or(0) + 1;
                    next_endpoint += 1;
                    (Ipv4Addr::from(POD_BASE + host), 8080)
                })
                .collect();
            SvcSpec {
                namespace: format!("bench-{}", i / 100),
                name: format!("svc-{i}"),
                port_name: "http".to_owned(),
                cluster_ip: Ipv4Addr::from(VIP_BASE + vip_offset),
                port: 80,
                protocol: Protocol::Tcp,
                endpoints,
                node_port: None,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Chain names (kube-proxy's hashing)
// ---------------------------------------------------------------------------

/// Base32 (RFC 4648, standard alphabet) of SHA-256, as Go's
/// `base32.StdEncoding.EncodeToString(sha256.Sum256(…))`.
fn base32_sha256(input: &str) -> String {
    BASE32.encode(&Sha256::digest(input.as_bytes()))
}

/// iptables mode: `KUBE-SVC-` + `portProtoHash(servicePortName, protocol)`.
pub fn iptables_svc_chain(svc: &SvcSpec) -> String {
    let hash = base32_sha256(&format!(
        "{}{}",
        svc.port_name_string(),
        svc.protocol.as_str()
    ));
    format!("KUBE-SVC-{}", &hash[..16])
}

/// iptables mode: `KUBE-EXT-` + the same hash as the `KUBE-SVC-` chain.
pub fn iptables_ext_chain(svc: &SvcSpec) -> String {
    iptables_svc_chain(svc).replacen("KUBE-SVC-", "KUBE-EXT-", 1)
}

/// iptables mode: `servicePortEndpointChainName(servicePortName, protocol, "ip:port")`.
pub fn iptables_sep_chain(svc: &SvcSpec, endpoint: (Ipv4Addr, u16)) -> String {
    let hash = base32_sha256(&format!(
        "{}{}{}:{}",
        svc.port_name_string(),
        svc.protocol.as_str(),
        endpoint.0,
        endpoint.1
    ));
    format!("KUBE-SEP-{}", &hash[..16])
}

/// nftables mode's `hashAndTruncate`: `HASH8-name`, cut to 240 bytes.
fn nft_hash_and_truncate(name: &str) -> String {
    let mut out = format!("{}-{name}", &base32_sha256(name)[..8]);
    if out.len() > NFT_CHAIN_NAME_BASE_MAX {
        out.truncate(NFT_CHAIN_NAME_BASE_MAX - 3);
        out.push_str("...");
    }
    out
}

/// nftables mode: `service-HASH-ns/name/proto/port`.
pub fn nft_service_chain(svc: &SvcSpec) -> String {
    let base = format!(
        "{}/{}/{}/{}",
        svc.namespace,
        svc.name,
        svc.protocol.as_str(),
        svc.port_name
    );
    format!("service-{}", nft_hash_and_truncate(&base))
}

/// nftables mode: `external-HASH-ns/name/proto/port`.
pub fn nft_external_chain(svc: &SvcSpec) -> String {
    nft_service_chain(svc).replacen("service-", "external-", 1)
}

/// nftables mode: `endpoint-HASH-ns/name/proto/port__ip/port`.
pub fn nft_endpoint_chain(svc: &SvcSpec, endpoint: (Ipv4Addr, u16)) -> String {
    let base = format!(
        "{}/{}/{}/{}__{}/{}",
        svc.namespace,
        svc.name,
        svc.protocol.as_str(),
        svc.port_name,
        endpoint.0,
        endpoint.1
    );
    format!("endpoint-{}", nft_hash_and_truncate(&base))
}

/// kube-proxy's `computeProbability`: `fmt.Sprintf("%0.10f", 1.0/float64(n))`.
fn probability(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}

// ---------------------------------------------------------------------------
// iptables mode
// ---------------------------------------------------------------------------

/// The `iptables-restore` input kube-proxy's iptables mode loads on a full sync
/// for `services` (see the module docs for what is modelled).
pub fn iptables_ruleset(services: &[SvcSpec]) -> String {
    let total_endpoints: usize = services.iter().map(|s| s.endpoints.len()).sum();
    let large_cluster = total_endpoints > LARGE_CLUSTER_ENDPOINTS_THRESHOLD;
    // About 330 bytes per endpoint in large-cluster mode; reserve generously.
    let mut out = String::with_capacity(4096 + 400 * total_endpoints + 300 * services.len());

    // *filter: the same every sync when every Service has endpoints.
    emit!(out, "*filter");
    for chain in [
        "KUBE-SERVICES",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-FORWARD",
        "KUBE-NODEPORTS",
        "KUBE-PROXY-FIREWALL",
        "KUBE-FIREWALL",
    ] {
        emit!(out, ":{chain} - [0:0]");
    }
    // `iptablesJumpChains` (filter) and `iptablesKubeletJumpChains`.
    let new = "-m conntrack --ctstate NEW ";
    for (src, extra, comment, dst) in [
        (
            "INPUT",
            new,
            "kubernetes externally-visible service portals",
            "KUBE-EXTERNAL-SERVICES",
        ),
        (
            "FORWARD",
            new,
            "kubernetes externally-visible service portals",
            "KUBE-EXTERNAL-SERVICES",
        ),
        (
            "INPUT",
            "",
            "kubernetes health check service ports",
            "KUBE-NODEPORTS",
        ),
        (
            "FORWARD",
            new,
            "kubernetes service portals",
            "KUBE-SERVICES",
        ),
        ("OUTPUT", new, "kubernetes service portals", "KUBE-SERVICES"),
        ("FORWARD", "", "kubernetes forwarding rules", "KUBE-FORWARD"),
        (
            "INPUT",
            new,
            "kubernetes load balancer firewall",
            "KUBE-PROXY-FIREWALL",
        ),
        (
            "OUTPUT",
            new,
            "kubernetes load balancer firewall",
            "KUBE-PROXY-FIREWALL",
        ),
        (
            "FORWARD",
            new,
            "kubernetes load balancer firewall",
            "KUBE-PROXY-FIREWALL",
        ),
    ] {
        emit!(
            out,
            "-I {src} {extra}-m comment --comment \"{comment}\" -j {dst}"
        );
    }
    emit!(out, "-I INPUT -j KUBE-FIREWALL");
    emit!(out, "-I OUTPUT -j KUBE-FIREWALL");
    emit!(
        out,
        "-A KUBE-FIREWALL -m comment --comment \"block incoming localnet connections\" \
         -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
    );
    emit!(
        out,
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP"
    );
    emit!(
        out,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" \
         -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT"
    );
    emit!(
        out,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" \
         -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    );
    emit!(out, "COMMIT");

    // *nat: chain lines first (natChains), then rules (natRules), as kube-proxy writes them.
    let mut chains = String::with_capacity(64 * (services.len() + total_endpoints) + 256);
    let mut rules = String::with_capacity(out.capacity());
    for chain in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ] {
        emit!(chains, ":{chain} - [0:0]");
    }
    for (src, comment, dst) in [
        ("OUTPUT", "kubernetes service portals", "KUBE-SERVICES"),
        ("PREROUTING", "kubernetes service portals", "KUBE-SERVICES"),
        (
            "POSTROUTING",
            "kubernetes postrouting rules",
            "KUBE-POSTROUTING",
        ),
    ] {
        emit!(
            rules,
            "-I {src} -m comment --comment \"{comment}\" -j {dst}"
        );
    }
    emit!(
        rules,
        "-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"
    );
    emit!(rules, "-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}");
    emit!(
        rules,
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" \
         -j MASQUERADE --random-fully"
    );
    emit!(rules, "-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}");

    for svc in services.iter().filter(|s| !s.endpoints.is_empty()) {
        let spn = svc.port_name_string();
        let proto = svc.protocol.as_str();
        let svc_chain = iptables_svc_chain(svc);
        let ip = svc.cluster_ip;
        let port = svc.port;
        let seps: Vec<String> = svc
            .endpoints
            .iter()
            .map(|&ep| iptables_sep_chain(svc, ep))
            .collect();

        emit!(chains, ":{svc_chain} - [0:0]");
        if let Some(node_port) = svc.node_port {
            // externalTrafficPolicy: Cluster: masquerade, then the cluster chain.
            let ext_chain = iptables_ext_chain(svc);
            emit!(chains, ":{ext_chain} - [0:0]");
            emit!(
                rules,
                "-A KUBE-NODEPORTS -m comment --comment {spn} \
                 -m {proto} -p {proto} --dport {node_port} -j {ext_chain}"
            );
            emit!(
                rules,
                "-A {ext_chain} -m comment --comment \"masquerade traffic for {spn} external destinations\" \
                 -j KUBE-MARK-MASQ"
            );
            emit!(rules, "-A {ext_chain} -j {svc_chain}");
        }
        emit!(
            rules,
            "-A KUBE-SERVICES -m comment --comment \"{spn} cluster IP\" \
             -m {proto} -p {proto} -d {ip} --dport {port} -j {svc_chain}"
        );
        emit!(
            rules,
            "-A {svc_chain} -m comment --comment \"{spn} cluster IP\" \
             -m {proto} -p {proto} -d {ip} --dport {port} ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ"
        );
        // writeServiceToEndpointRules
        let n = svc.endpoints.len();
        for (i, (&(ep_ip, ep_port), sep)) in svc.endpoints.iter().zip(&seps).enumerate() {
            let _ = write!(rules, "-A {svc_chain} ");
            if !large_cluster {
                let _ = write!(
                    rules,
                    "-m comment --comment \"{spn} -> {ep_ip}:{ep_port}\" "
                );
            }
            if i + 1 < n {
                let _ = write!(
                    rules,
                    "-m statistic --mode random --probability {} ",
                    probability(n - i)
                );
            }
            emit!(rules, "-j {sep}");
        }
        // The per-endpoint chains.
        let comment = if large_cluster {
            String::new()
        } else {
            format!("-m comment --comment {spn} ")
        };
        for (&(ep_ip, ep_port), sep) in svc.endpoints.iter().zip(&seps) {
            emit!(chains, ":{sep} - [0:0]");
            emit!(rules, "-A {sep} {comment}-s {ep_ip} -j KUBE-MARK-MASQ");
            emit!(
                rules,
                "-A {sep} {comment}-m {proto} -p {proto} -j DNAT --to-destination {ep_ip}:{ep_port}"
            );
        }
    }
    emit!(
        rules,
        "-A KUBE-SERVICES -m comment --comment \
         \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" \
         -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
    );
    emit!(out, "*nat");
    out.push_str(&chains);
    out.push_str(&rules);
    emit!(out, "COMMIT");
    out
}

// ---------------------------------------------------------------------------
// nftables mode
// ---------------------------------------------------------------------------

/// The `nft -f` transaction kube-proxy's nftables mode runs on its first full
/// sync for `services` (see the module docs for what is modelled).
pub fn nft_ruleset(services: &[SvcSpec]) -> String {
    nft_ruleset_with_nodeports(services, &[])
}

/// [`nft_ruleset`] for a node whose NodePort addresses (`nodeport-ips`,
/// `--nodeport-addresses`) are `nodeport_ips`: Services with a `node_port`
/// get their `service-nodeports` element and `external-…` chain.
pub fn nft_ruleset_with_nodeports(services: &[SvcSpec], nodeport_ips: &[Ipv4Addr]) -> String {
    const T: &str = "ip kube-proxy";
    let total_endpoints: usize = services.iter().map(|s| s.endpoints.len()).sum();
    let mut out = String::with_capacity(8192 + 450 * total_endpoints + 450 * services.len());

    // setupNFTables
    emit!(
        out,
        "add table {T} {{ comment \"rules for kube-proxy\" ; }}"
    );
    let base_chains = [
        ("filter-prerouting-pre-dnat", "filter", "prerouting", "-110"),
        ("filter-output-pre-dnat", "filter", "output", "-110"),
        ("filter-forward", "filter", "forward", "0"),
        ("filter-input", "filter", "input", "0"),
        ("filter-output", "filter", "output", "0"),
        ("nat-output", "nat", "output", "-100"),
        ("nat-postrouting", "nat", "postrouting", "100"),
        ("nat-prerouting", "nat", "prerouting", "-100"),
    ];
    // The first sync's add+delete, which lets later ones change base-chain properties.
    for (name, ..) in base_chains {
        emit!(out, "add chain {T} {name}");
        emit!(out, "delete chain {T} {name}");
    }
    for (name, kind, hook, priority) in base_chains {
        emit!(
            out,
            "add chain {T} {name} {{ type {kind} hook {hook} priority {priority} ; }}"
        );
        emit!(out, "flush chain {T} {name}");
    }
    let mut created: Vec<&str> = Vec::new();
    let mut ensure_chain = |out: &mut String, chain: &'static str| {
        if !created.contains(&chain) {
            created.push(chain);
            emit!(out, "add chain {T} {chain}");
            emit!(out, "flush chain {T} {chain}");
        }
    };
    for (dst, src, extra) in [
        (
            "firewall-check",
            "filter-prerouting-pre-dnat",
            "ct state new ",
        ),
        ("firewall-check", "filter-output-pre-dnat", "ct state new "),
        ("service-endpoints-check", "filter-forward", "ct state new "),
        ("service-endpoints-check", "filter-input", "ct state new "),
        ("service-endpoints-check", "filter-output", "ct state new "),
        ("nodeport-endpoints-check", "filter-input", "ct state new "),
        ("cluster-ips-check", "filter-forward", "ct state new "),
        ("cluster-ips-check", "filter-output", "ct state new "),
        ("services", "nat-output", ""),
        ("services", "nat-prerouting", ""),
        ("masquerading", "nat-postrouting", ""),
    ] {
        ensure_chain(&mut out, dst);
        emit!(out, "add rule {T} {src} {extra}jump {dst}");
    }
    for chain in [
        "services",
        "cluster-ips-check",
        "masquerading",
        "mark-for-masquerade",
    ] {
        ensure_chain(&mut out, chain);
    }
    emit!(
        out,
        "add rule {T} mark-for-masquerade mark set mark or {MASQ_MARK}"
    );
    emit!(
        out,
        "add rule {T} masquerading mark and {MASQ_MARK} == 0 return"
    );
    emit!(
        out,
        "add rule {T} masquerading mark set mark xor {MASQ_MARK}"
    );
    emit!(out, "add rule {T} masquerading masquerade fully-random");
    emit!(
        out,
        "add set {T} cluster-ips {{ type ipv4_addr ; comment \"Active ClusterIPs\" ; }}"
    );
    emit!(
        out,
        "add rule {T} cluster-ips-check ip daddr @cluster-ips reject \
         comment \"Reject traffic to invalid ports of ClusterIPs\""
    );
    emit!(
        out,
        "add rule {T} cluster-ips-check ip daddr {{ {SERVICE_CIDR} }} drop \
         comment \"Drop traffic to unallocated ClusterIPs\""
    );
    // NodePorts on the node's addresses (none unless given).
    emit!(
        out,
        "add set {T} nodeport-ips {{ type ipv4_addr ; comment \"IPs that accept NodePort traffic\" ; }}"
    );
    emit!(out, "flush set {T} nodeport-ips");
    for ip in nodeport_ips {
        emit!(out, "add element {T} nodeport-ips {{ {ip} }}");
    }
    emit!(
        out,
        "add map {T} no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict ; \
         comment \"vmap to drop or reject packets to services with no endpoints\" ; }}"
    );
    emit!(
        out,
        "add map {T} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; \
         comment \"vmap to drop or reject packets to service nodeports with no endpoints\" ; }}"
    );
    emit!(
        out,
        "add chain {T} reject-chain {{ comment \"helper for @no-endpoint-services / @no-endpoint-nodeports\" ; }}"
    );
    emit!(out, "flush chain {T} reject-chain");
    emit!(out, "add rule {T} reject-chain reject");
    emit!(
        out,
        "add rule {T} service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services"
    );
    emit!(
        out,
        "add rule {T} nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport \
         vmap @no-endpoint-nodeports"
    );
    emit!(
        out,
        "add map {T} firewall-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; \
         comment \"destinations that are subject to LoadBalancerSourceRanges\" ; }}"
    );
    ensure_chain(&mut out, "firewall-check");
    emit!(
        out,
        "add rule {T} firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips"
    );
    emit!(
        out,
        "add map {T} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; \
         comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}"
    );
    emit!(
        out,
        "add map {T} service-nodeports {{ type inet_proto . inet_service : verdict ; \
         comment \"NodePort traffic\" ; }}"
    );
    emit!(
        out,
        "add rule {T} services ip daddr . meta l4proto . th dport vmap @service-ips"
    );
    emit!(
        out,
        "add rule {T} services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports"
    );
    emit!(out, "flush set {T} cluster-ips");
    for map in [
        "service-ips",
        "firewall-ips",
        "no-endpoint-services",
        "no-endpoint-nodeports",
        "service-nodeports",
    ] {
        emit!(out, "flush map {T} {map}");
    }

    // syncProxyRules, per Service port.
    for svc in services.iter().filter(|s| !s.endpoints.is_empty()) {
        let proto = svc.protocol.as_str();
        let ip = svc.cluster_ip;
        let svc_chain = nft_service_chain(svc);
        let ep_chains: Vec<String> = svc
            .endpoints
            .iter()
            .map(|&ep| nft_endpoint_chain(svc, ep))
            .collect();
        for chain in ep_chains.iter().chain([&svc_chain]) {
            emit!(out, "add chain {T} {chain}");
            emit!(out, "flush chain {T} {chain}");
        }
        if let Some(node_port) = svc.node_port {
            // externalTrafficPolicy: Cluster: masquerade, then the cluster chain.
            let ext_chain = nft_external_chain(svc);
            emit!(out, "add chain {T} {ext_chain}");
            emit!(out, "flush chain {T} {ext_chain}");
            emit!(out, "add rule {T} {ext_chain} jump mark-for-masquerade");
            emit!(out, "add rule {T} {ext_chain} goto {svc_chain}");
            emit!(
                out,
                "add element {T} service-nodeports {{ {proto} . {node_port} : goto {ext_chain} }}"
            );
        }
        emit!(out, "add element {T} cluster-ips {{ {ip} }}");
        emit!(
            out,
            "add element {T} service-ips {{ {ip} . {proto} . {} : goto {svc_chain} }}",
            svc.port
        );
        emit!(
            out,
            "add rule {T} {svc_chain} ip daddr {ip} ip saddr != {CLUSTER_CIDR} jump mark-for-masquerade"
        );
        let _ = write!(
            out,
            "add rule {T} {svc_chain} numgen random mod {} vmap {{ ",
            ep_chains.len()
        );
        for (i, chain) in ep_chains.iter().enumerate() {
            let sep = if i + 1 < ep_chains.len() { " ," } else { "" };
            let _ = write!(out, "{i} : goto {chain}{sep} ");
        }
        emit!(out, "}}");
        for (&(ep_ip, ep_port), chain) in svc.endpoints.iter().zip(&ep_chains) {
            emit!(
                out,
                "add rule {T} {chain} ip saddr {ep_ip} jump mark-for-masquerade"
            );
            emit!(
                out,
                "add rule {T} {chain} meta l4proto {proto} dnat to {ep_ip}:{ep_port}"
            );
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Running the tools
// ---------------------------------------------------------------------------

/// A rule loader and the flags it is run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// The distribution's `iptables-restore` (iptables-nft on Debian 12) with
    /// kube-proxy's flags: `-w 5 --noflush --counters`.
    IptablesRestore,
    /// The same binary restoring whole tables (`-w 5 --counters`, no `--noflush`),
    /// the other way to do a cold load. iptables-nft 1.8.9 is superlinear with
    /// `--noflush` (all of it in user space), so at scale this differs a lot.
    IptablesRestoreFull,
    /// `iptables-legacy-restore`, where installed, with kube-proxy's flags.
    IptablesLegacyRestore,
    /// `nft -f`, as knftables runs it.
    Nft,
}

impl Tool {
    pub const ALL: [Tool; 4] = [
        Tool::IptablesRestore,
        Tool::IptablesRestoreFull,
        Tool::IptablesLegacyRestore,
        Tool::Nft,
    ];

    fn program(self) -> &'static str {
        match self {
            Tool::IptablesRestore | Tool::IptablesRestoreFull => "iptables-restore",
            Tool::IptablesLegacyRestore => "iptables-legacy-restore",
            Tool::Nft => "nft",
        }
    }

    /// The flags before the file argument.
    fn flags(self) -> &'static [&'static str] {
        match self {
            Tool::IptablesRestore | Tool::IptablesLegacyRestore => {
                &["-w", "5", "--noflush", "--counters"]
            }
            Tool::IptablesRestoreFull => &["-w", "5", "--counters"],
            Tool::Nft => &["-f"],
        }
    }

    /// Which ruleset this tool loads.
    fn is_nft(self) -> bool {
        self == Tool::Nft
    }

    /// The command and arguments that dump what was loaded.
    #[cfg(test)]
    fn dump_command(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Tool::IptablesRestore | Tool::IptablesRestoreFull => ("iptables-save", &[]),
            Tool::IptablesLegacyRestore => ("iptables-legacy-save", &[]),
            Tool::Nft => ("nft", &["list", "ruleset"]),
        }
    }

    /// The version line (`iptables-restore v1.8.9 (nf_tables)`, `nftables v1.0.6 …`),
    /// or `None` when the tool is not installed or does not run.
    pub fn version(self) -> Option<String> {
        let mut cmd = Command::new(self.program());
        cmd.arg("--version");
        let done = run_bounded(cmd, Duration::from_secs(10)).ok()?;
        if !done.status.success() {
            return None;
        }
        let text = if done.stdout.trim().is_empty() {
            done.stderr
        } else {
            done.stdout
        };
        text.lines().next().map(|l| l.trim().to_owned())
    }

    /// What the report calls this contender: version and flags.
    fn label(self, version: &str) -> String {
        let version = version.replace(" (Lester Gooch #5)", "");
        match self {
            Tool::Nft => format!("nft -f ({version})"),
            // The flags after `-w 5`.
            _ => format!(
                "{version} {}",
                self.flags().get(2..).unwrap_or_default().join(" ")
            ),
        }
    }
}

/// A child process killed at its time limit.
#[derive(Debug)]
pub struct TimedOut {
    pub limit: Duration,
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "did not finish within {:?}; killed it", self.limit)
    }
}

impl std::error::Error for TimedOut {}

/// A finished child process.
pub(crate) struct Finished {
    pub status: ExitStatus,
    pub elapsed: Duration,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` with stdin closed and stdout/stderr captured in temporary files,
/// killing it after `limit`. `elapsed` is the wall clock from spawn to exit.
pub(crate) fn run_bounded(mut cmd: Command, limit: Duration) -> anyhow::Result<Finished> {
    let what = format!("{cmd:?}");
    let mut out = tempfile::tempfile().context("creating a temporary file for stdout")?;
    let mut err = tempfile::tempfile().context("creating a temporary file for stderr")?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().context("duplicating a file handle")?)
        .stderr(err.try_clone().context("duplicating a file handle")?);
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("spawning {what}"))?;
    let pid = Pid::from_raw(i32::try_from(child.id()).context("child pid out of range")?);
    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send((status, start.elapsed()));
    });
    let (status, elapsed) = match rx.recv_timeout(limit) {
        Ok((status, elapsed)) => (
            status.with_context(|| format!("waiting for {what}"))?,
            elapsed,
        ),
        Err(_) => {
            // Not reaped yet (the waiter would have sent), so the pid is still ours.
            let _ = kill(pid, Signal::SIGKILL);
            let _ = rx.recv_timeout(Duration::from_secs(5));
            return Err(anyhow::Error::new(TimedOut { limit }).context(what));
        }
    };
    let _ = waiter.join();
    let read = |file: &mut fs::File| -> anyhow::Result<String> {
        let mut text = String::new();
        file.rewind().context("rewinding captured output")?;
        file.read_to_string(&mut text)
            .context("reading captured output")?;
        Ok(text)
    };
    Ok(Finished {
        status,
        elapsed,
        stdout: read(&mut out)?,
        stderr: read(&mut err)?,
    })
}

/// Runs `cmd` for at most `limit`; a non-zero exit is an error carrying its stderr.
pub(crate) fn run_checked(cmd: Command, limit: Duration) -> anyhow::Result<Finished> {
    let what = format!("{cmd:?}");
    let done = run_bounded(cmd, limit)?;
    if !done.status.success() {
        bail!(
            "{what} failed ({}): {}",
            done.status,
            truncate_for_report(done.stderr.trim())
        );
    }
    Ok(done)
}

/// The first lines of a long stderr (iptables-restore can be very chatty).
fn truncate_for_report(text: &str) -> String {
    const MAX: usize = 2000;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    run_checked(cmd, COMMAND_LIMIT).map(|_| ())
}

/// A network namespace of our own, deleted on drop (also when unwinding).
struct Netns {
    name: String,
}

impl Netns {
    fn create() -> anyhow::Result<Self> {
        sweep();
        let name = format!(
            "{NETNS_PREFIX}{}-{}",
            std::process::id(),
            NETNS_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]).context("creating a network namespace")?;
        Ok(Netns { name })
    }

    fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// `program args…` inside the namespace. `nsenter --net` changes only the
    /// network namespace (unlike `ip netns exec`, it does not remount `/sys`,
    /// and it costs less, which matters for the tiny loads).
    #[cfg(test)]
    fn command(&self, program: &str, args: &[impl AsRef<str>]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program)
            .args(args.iter().map(AsRef::as_ref));
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "delete", &self.name]) {
            eprintln!("baseline: could not delete netns {}: {e:#}", self.name);
        }
    }
}

/// Deletes `pxb-<pid>-<n>` namespaces whose process is gone (killed runs).
fn sweep() {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NETNS_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = ip(&["netns", "delete", &name]);
        }
    }
}

/// Loads `rules` with `tool` into `ns` and returns the wall clock of the command
/// (killed after `limit`: the error then carries [`TimedOut`]).
fn load_into(ns: &Netns, tool: Tool, rules: &str, limit: Duration) -> anyhow::Result<Duration> {
    load_in(&ns.path(), tool, rules, limit)
}

/// Loads `rules` with `tool` into the network namespace at `netns` (a
/// `/run/netns/…` path, never the root namespace's) and returns the wall clock
/// of the command, killed after `limit` (the error then carries [`TimedOut`]).
pub fn load_in(netns: &Path, tool: Tool, rules: &str, limit: Duration) -> anyhow::Result<Duration> {
    let mut file = tempfile::Builder::new()
        .prefix("pxb-rules-")
        .tempfile()
        .context("creating the rules file")?;
    std::io::Write::write_all(&mut file, rules.as_bytes()).context("writing the rules file")?;
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns.display()))
        .arg("--")
        .arg(tool.program())
        .args(tool.flags())
        .arg(file.path());
    Ok(run_checked(cmd, limit)
        .with_context(|| {
            format!(
                "loading {} lines with {}",
                rules.lines().count(),
                tool.program()
            )
        })?
        .elapsed)
}

/// Times `tool` loading `rules` into a fresh, empty network namespace, killing
/// it after `limit`.
pub fn time_load(tool: Tool, rules: &str, limit: Duration) -> anyhow::Result<Duration> {
    let ns = Netns::create()?;
    load_into(&ns, tool, rules, limit)
}

/// Times `iptables-restore -w 5 --noflush --counters` (kube-proxy's invocation)
/// loading `rules` into a fresh network namespace; killed after [`LOAD_LIMIT`].
/// (The sweep calls [`time_load`] with its own limit, for every [`Tool`].)
#[cfg_attr(not(test), expect(dead_code, reason = "the sweep uses time_load"))]
pub fn time_iptables_restore(rules: &str) -> anyhow::Result<Duration> {
    time_load(Tool::IptablesRestore, rules, LOAD_LIMIT)
}

/// Times `nft -f` loading `rules` into a fresh network namespace; killed after
/// [`LOAD_LIMIT`].
#[cfg_attr(not(test), expect(dead_code, reason = "the sweep uses time_load"))]
pub fn time_nft(rules: &str) -> anyhow::Result<Duration> {
    time_load(Tool::Nft, rules, LOAD_LIMIT)
}

// ---------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------

/// One contender at one scale.
#[derive(Clone, Debug)]
pub struct BaselineRow {
    /// The tool, its version and flags, e.g. `iptables-restore v1.8.9 (nf_tables) --noflush --counters`.
    pub tool: String,
    pub services: usize,
    pub endpoints_each: usize,
    /// Size of the loaded input.
    pub ruleset_lines: usize,
    pub ruleset_bytes: usize,
    /// Wall clock of each completed load, in the order taken.
    pub samples: Vec<Duration>,
    /// The load limit, when a load was killed at it: the contender is then
    /// skipped for the remaining rounds and for larger scales.
    pub timed_out: Option<Duration>,
    pub median: Duration,
    pub min: Duration,
    pub max: Duration,
}

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    match sorted.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    }
}

/// Loads the kube-proxy rulesets for each of `scales` Services (×
/// [`ENDPOINTS_PER_SERVICE`]) `rounds` times with every installed [`Tool`],
/// alternating the tools within a round, each load in a fresh namespace and
/// killed after `limit`.
pub fn run_with_limit(
    rounds: usize,
    scales: &[usize],
    limit: Duration,
) -> anyhow::Result<Vec<BaselineRow>> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the baseline creates network namespaces: run it as root");
    }
    let rounds = rounds.max(1);
    let tools: Vec<(Tool, String)> = Tool::ALL
        .into_iter()
        .filter_map(|t| t.version().map(|v| (t, t.label(&v))))
        .collect();
    if !tools.iter().any(|(t, _)| *t != Tool::IptablesLegacyRestore) {
        bail!("neither iptables-restore nor nft is installed (scripts/setup.sh installs them)");
    }
    let mut given_up: Vec<Option<Duration>> = vec![None; tools.len()];
    let mut rows = Vec::new();
    for &n in scales {
        let specs = synthetic(n, ENDPOINTS_PER_SERVICE);
        let iptables = iptables_ruleset(&specs);
        let nft = nft_ruleset(&specs);
        let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); tools.len()];
        let mut timed_out: Vec<Option<Duration>> = given_up.clone();
        for round in 0..rounds {
            for (i, (tool, label)) in tools.iter().enumerate() {
                if timed_out[i].is_some() {
                    continue;
                }
                let rules = if tool.is_nft() { &nft } else { &iptables };
                match time_load(*tool, rules, limit) {
                    Ok(took) => {
                        eprintln!(
                            "baseline: {n:>6} services × {ENDPOINTS_PER_SERVICE}  round {round}  {label:<56} {}",
                            fmt_ms(took)
                        );
                        samples[i].push(took);
                    }
                    Err(e) if e.chain().any(|c| c.is::<TimedOut>()) => {
                        eprintln!(
                            "baseline: {n:>6} services × {ENDPOINTS_PER_SERVICE}  round {round}  {label:<56} > {limit:?}, killed; skipping it from here on"
                        );
                        timed_out[i] = Some(limit);
                    }
                    Err(e) => {
                        return Err(e.context(format!("{label}, {n} services, round {round}")));
                    }
                }
            }
        }
        for (i, ((tool, label), samples)) in tools.iter().zip(samples).enumerate() {
            let rules = if tool.is_nft() { &nft } else { &iptables };
            rows.push(BaselineRow {
                tool: label.clone(),
                services: n,
                endpoints_each: ENDPOINTS_PER_SERVICE,
                ruleset_lines: rules.lines().count(),
                ruleset_bytes: rules.len(),
                timed_out: timed_out[i],
                median: median(&samples),
                min: samples.iter().min().copied().unwrap_or_default(),
                max: samples.iter().max().copied().unwrap_or_default(),
                samples,
            });
        }
        given_up = timed_out;
    }
    Ok(rows)
}

/// Writes the inputs for each of `scales` Services (× [`ENDPOINTS_PER_SERVICE`])
/// to `dir/iptables-<N>.rules` and `dir/nft-<N>.rules`, for loading by hand
/// (inside a namespace of your own) or inspection. Returns the files written.
pub fn write_rulesets(dir: &Path, scales: &[usize]) -> anyhow::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    for &n in scales {
        let specs = synthetic(n, ENDPOINTS_PER_SERVICE);
        for (kind, rules) in [
            ("iptables", iptables_ruleset(&specs)),
            ("nft", nft_ruleset(&specs)),
        ] {
            let path = dir.join(format!("{kind}-{n}.rules"));
            fs::write(&path, rules).with_context(|| format!("writing {}", path.display()))?;
            written.push(path);
        }
    }
    Ok(written)
}

fn fmt_ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The rows as a Markdown table.
pub fn to_markdown(rows: &[BaselineRow]) -> String {
    let mut out = String::new();
    emit!(
        out,
        "| loader | Services × endpoints | input (lines / MiB) | median | min–max | samples |"
    );
    emit!(out, "|---|---|---|---|---|---|");
    for r in rows {
        let (median, range) = match (r.timed_out, r.samples.is_empty()) {
            (Some(limit), true) => (format!("> {} s (killed)", limit.as_secs()), "–".to_owned()),
            (timed_out, _) => (
                fmt_ms(r.median),
                format!(
                    "{} – {}{}",
                    fmt_ms(r.min),
                    fmt_ms(r.max),
                    if timed_out.is_some() {
                        ", then killed"
                    } else {
                        ""
                    }
                ),
            ),
        };
        emit!(
            out,
            "| {} | {} × {} | {} / {:.1} | {median} | {range} | {} |",
            r.tool,
            r.services,
            r.endpoints_each,
            r.ruleset_lines,
            r.ruleset_bytes as f64 / (1024.0 * 1024.0),
            r.samples.len()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    //! The ruleset tests are pure. The `loads_*` tests need root: each creates its
    //! own namespace and runs the tools there through `nsenter`, never changing
    //! the test process's own namespaces, so they are safe in-process too; CI runs
    //! them under `cargo nextest run -p xtask` (one process per test).

    use super::*;

    /// kube-proxy's test fixture: `ns1/svc1:p80` at 10.20.30.41:80 → 10.180.0.1:80.
    fn fixture(ns: &str, name: &str, vip: [u8; 4], endpoint: [u8; 4]) -> SvcSpec {
        SvcSpec {
            namespace: ns.to_owned(),
            name: name.to_owned(),
            port_name: "p80".to_owned(),
            cluster_ip: Ipv4Addr::from(vip),
            port: 80,
            protocol: Protocol::Tcp,
            endpoints: vec![(Ipv4Addr::from(endpoint), 80)],
            node_port: None,
        }
    }

    #[test]
    fn nodeports_are_laid_out_as_kube_proxy_does() {
        // Lines of kube-proxy's expected output (proxier_test.go) for a NodePort
        // with externalTrafficPolicy: Cluster.
        let svc = SvcSpec {
            node_port: Some(3001),
            ..fixture("ns2", "svc2", [172, 30, 0, 42], [10, 180, 0, 2])
        };
        let rules = iptables_ruleset(std::slice::from_ref(&svc));
        for line in [
            ":KUBE-EXT-GNZBNJ2PO5MGZ6GT - [0:0]",
            "-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp --dport 3001 \
             -j KUBE-EXT-GNZBNJ2PO5MGZ6GT",
            "-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment \"masquerade traffic for \
             ns2/svc2:p80 external destinations\" -j KUBE-MARK-MASQ",
            "-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -j KUBE-SVC-GNZBNJ2PO5MGZ6GT",
        ] {
            assert!(
                rules.lines().any(|l| l == line),
                "missing {line:?} in\n{rules}"
            );
        }
        let rules = nft_ruleset_with_nodeports(&[svc], &[Ipv4Addr::new(192, 168, 0, 2)]);
        for line in [
            "add element ip kube-proxy nodeport-ips { 192.168.0.2 }",
            "add chain ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80",
            "add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 jump mark-for-masquerade",
            "add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 goto \
             service-42NFTM6N-ns2/svc2/tcp/p80",
            "add element ip kube-proxy service-nodeports { tcp . 3001 : goto \
             external-42NFTM6N-ns2/svc2/tcp/p80 }",
        ] {
            assert!(
                rules.lines().any(|l| l == line),
                "missing {line:?} in\n{rules}"
            );
        }
        // Without a node port, none of it.
        let plain = iptables_ruleset(&[fixture("ns2", "svc2", [172, 30, 0, 42], [10, 180, 0, 2])]);
        assert!(!plain.contains("KUBE-EXT-"), "{plain}");
    }

    #[test]
    fn iptables_chain_names_match_kube_proxy() {
        // Names from kubernetes/pkg/proxy/iptables/proxier_test.go.
        let svc1 = fixture("ns1", "svc1", [10, 20, 30, 41], [10, 180, 0, 1]);
        assert_eq!(iptables_svc_chain(&svc1), "KUBE-SVC-XPGD46QRK7WJZT7O");
        assert_eq!(
            iptables_sep_chain(&svc1, svc1.endpoints[0]),
            "KUBE-SEP-SXIVWICOYRO3J4NJ"
        );
        let svc2 = fixture("ns2", "svc2", [172, 30, 0, 42], [10, 180, 0, 2]);
        assert_eq!(iptables_svc_chain(&svc2), "KUBE-SVC-GNZBNJ2PO5MGZ6GT");
        assert_eq!(
            iptables_sep_chain(&svc2, svc2.endpoints[0]),
            "KUBE-SEP-RS4RBKLTHTF2IUXJ"
        );
    }

    #[test]
    fn nft_chain_names_match_kube_proxy() {
        // Names from kubernetes/pkg/proxy/nftables/proxier_test.go.
        let svc1 = fixture("ns1", "svc1", [172, 30, 0, 41], [10, 180, 0, 1]);
        assert_eq!(
            nft_service_chain(&svc1),
            "service-ULMVA6XW-ns1/svc1/tcp/p80"
        );
        assert_eq!(
            nft_endpoint_chain(&svc1, svc1.endpoints[0]),
            "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
        );
        let svc2 = fixture("ns2", "svc2", [172, 30, 0, 42], [10, 180, 0, 2]);
        assert_eq!(
            nft_service_chain(&svc2),
            "service-42NFTM6N-ns2/svc2/tcp/p80"
        );
        assert_eq!(
            nft_endpoint_chain(&svc2, svc2.endpoints[0]),
            "endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80"
        );
    }

    #[test]
    fn probabilities_are_formatted_like_go() {
        assert_eq!(probability(2), "0.5000000000");
        assert_eq!(probability(3), "0.3333333333");
        assert_eq!(probability(10), "0.1000000000");
    }

    #[test]
    fn iptables_ruleset_has_kube_proxys_lines() {
        // Lines of kube-proxy's expected output for this fixture, with our cluster CIDR.
        let rules = iptables_ruleset(&[fixture("ns1", "svc1", [10, 20, 30, 41], [10, 180, 0, 1])]);
        for line in [
            ":KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]",
            ":KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]",
            "-A KUBE-SERVICES -m comment --comment \"ns1/svc1:p80 cluster IP\" -m tcp -p tcp -d 10.20.30.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O",
            "-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment \"ns1/svc1:p80 cluster IP\" -m tcp -p tcp -d 10.20.30.41 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ",
            "-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment \"ns1/svc1:p80 -> 10.180.0.1:80\" -j KUBE-SEP-SXIVWICOYRO3J4NJ",
            "-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ",
            "-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80",
            "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
            "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
        ] {
            assert!(
                rules.lines().any(|l| l == line),
                "missing {line:?} in\n{rules}"
            );
        }
        // The node-port jump stays the last rule of KUBE-SERVICES.
        let last = rules
            .lines()
            .rfind(|l| l.starts_with("-A KUBE-SERVICES "))
            .expect("KUBE-SERVICES has rules");
        assert!(last.ends_with("-j KUBE-NODEPORTS"), "{last}");
    }

    #[test]
    fn protocols_are_spelled_in_lower_case() {
        let mut svc = fixture("ns1", "svc1", [10, 20, 30, 41], [10, 180, 0, 1]);
        for (protocol, name) in [(Protocol::Udp, "udp"), (Protocol::Sctp, "sctp")] {
            svc.protocol = protocol;
            let ipt = iptables_ruleset(std::slice::from_ref(&svc));
            assert!(ipt.contains(&format!("-m {name} -p {name} -d 10.20.30.41 --dport 80")));
            let nft = nft_ruleset(std::slice::from_ref(&svc));
            assert!(nft.contains(&format!("{{ 10.20.30.41 . {name} . 80 : goto service-")));
            assert!(nft.contains(&format!(
                "/{name}/p80__10.180.0.1/80 meta l4proto {name} dnat"
            )));
        }
    }

    #[test]
    fn iptables_probabilities_and_large_cluster_mode() {
        let small = iptables_ruleset(&synthetic(1, 3));
        let probs: Vec<&str> = small
            .lines()
            .filter_map(|l| l.split("--probability ").nth(1))
            .map(|rest| rest.split(' ').next().unwrap_or(""))
            .collect();
        assert_eq!(probs, ["0.3333333333", "0.5000000000"]);
        assert!(small.contains("-> 10.244.0.1:8080"));
        // 101 × 10 endpoints > 1000: no per-endpoint comments, as kube-proxy does.
        let large = iptables_ruleset(&synthetic(101, 10));
        assert!(!large.contains(" -> "));
        assert!(large.contains("cluster IP\""));
    }

    #[test]
    fn nft_ruleset_has_kube_proxys_lines() {
        let rules = nft_ruleset(&[fixture("ns1", "svc1", [172, 30, 0, 41], [10, 180, 0, 1])]);
        for line in [
            "add table ip kube-proxy { comment \"rules for kube-proxy\" ; }",
            "add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }",
            "add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips",
            "add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80",
            "add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
            "add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 }",
            "add chain ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80",
            "add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 ip saddr 10.180.0.1 jump mark-for-masquerade",
            "add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 meta l4proto tcp dnat to 10.180.0.1:80",
            "add element ip kube-proxy cluster-ips { 172.30.0.41 }",
            "add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }",
        ] {
            assert!(
                rules.lines().any(|l| l == line),
                "missing {line:?} in\n{rules}"
            );
        }
        let two = nft_ruleset(&synthetic(1, 2));
        assert!(
            two.lines().any(
                |l| l.contains("numgen random mod 2 vmap { 0 : goto endpoint-")
                    && l.contains(" , 1 : goto endpoint-")
                    && l.ends_with(" }")
            ),
            "{two}"
        );
    }

    #[test]
    fn synthetic_is_deterministic_and_in_range() {
        let a = synthetic(3000, 10);
        assert_eq!(a, synthetic(3000, 10));
        assert_eq!(a.len(), 3000);
        for svc in &a {
            assert_eq!(svc.cluster_ip.octets()[0..2], [10, 96]);
            assert_eq!(svc.endpoints.len(), 10);
            for (ip, _) in &svc.endpoints {
                assert_eq!(ip.octets()[0..2], [10, 244]);
                assert_ne!(ip.octets()[2..4], [0, 0]);
            }
        }
        let vips: std::collections::HashSet<_> = a.iter().map(|s| s.cluster_ip).collect();
        assert_eq!(vips.len(), a.len());
    }

    #[test]
    fn medians() {
        let ms = Duration::from_millis;
        assert_eq!(median(&[ms(3), ms(1), ms(2)]), ms(2));
        assert_eq!(
            median(&[ms(4), ms(1), ms(2), ms(3)]),
            Duration::from_micros(2500)
        );
    }

    fn require_root() {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "this test creates network namespaces: run it as root (cargo nextest run -p xtask)"
        );
    }

    /// Loads two Services with `tool` into a fresh namespace and returns the dump.
    fn load_and_dump(tool: Tool, rules: &str) -> String {
        let ns = Netns::create().expect("creating a namespace");
        load_into(&ns, tool, rules, LOAD_LIMIT).expect("loading the ruleset");
        let (program, args) = tool.dump_command();
        run_checked(ns.command(program, args), COMMAND_LIMIT)
            .expect("dumping the ruleset")
            .stdout
    }

    #[test]
    fn loads_iptables_restore() {
        require_root();
        assert!(
            Tool::IptablesRestore.version().is_some(),
            "iptables-restore is missing: scripts/setup.sh installs it"
        );
        let mut specs = synthetic(2, 3);
        specs[1].node_port = Some(30080);
        for tool in [Tool::IptablesRestore, Tool::IptablesRestoreFull] {
            let dump = load_and_dump(tool, &iptables_ruleset(&specs));
            check_iptables_dump(&specs, &dump);
            let ext = iptables_ext_chain(&specs[1]);
            assert!(
                dump.contains(&format!("--dport 30080 -j {ext}")),
                "no KUBE-NODEPORTS rule:\n{dump}"
            );
        }
    }

    #[test]
    fn loads_iptables_legacy_restore() {
        require_root();
        if Tool::IptablesLegacyRestore.version().is_none() {
            eprintln!("iptables-legacy-restore is not installed; nothing to check");
            return;
        }
        let specs = synthetic(2, 3);
        let dump = load_and_dump(Tool::IptablesLegacyRestore, &iptables_ruleset(&specs));
        check_iptables_dump(&specs, &dump);
    }

    fn check_iptables_dump(specs: &[SvcSpec], dump: &str) {
        for svc in specs {
            let svc_chain = iptables_svc_chain(svc);
            assert!(
                dump.contains(&format!(":{svc_chain} - ")),
                "{svc_chain} missing:\n{dump}"
            );
            assert!(
                dump.contains(&format!("--dport 80 -j {svc_chain}")),
                "no KUBE-SERVICES jump to {svc_chain}:\n{dump}"
            );
            for &ep in &svc.endpoints {
                let sep = iptables_sep_chain(svc, ep);
                assert!(
                    dump.contains(&format!("-A {sep} ")) && dump.contains(&format!("-j {sep}")),
                    "{sep} missing:\n{dump}"
                );
            }
            assert!(
                dump.contains("--mode random --probability 0.33333333"),
                "{dump}"
            );
        }
        assert!(
            dump.contains(
                "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
            ),
            "{dump}"
        );
    }

    #[test]
    fn loads_nft() {
        require_root();
        assert!(
            Tool::Nft.version().is_some(),
            "nft is missing: scripts/setup.sh installs it"
        );
        let mut specs = synthetic(2, 3);
        specs[1].node_port = Some(30080);
        let dump = load_and_dump(
            Tool::Nft,
            &nft_ruleset_with_nodeports(&specs, &[Ipv4Addr::new(192, 168, 0, 2)]),
        );
        assert!(dump.contains("table ip kube-proxy"), "{dump}");
        let external = nft_external_chain(&specs[1]);
        assert!(
            dump.contains(&format!("tcp . 30080 : goto {external}")),
            "no service-nodeports entry:\n{dump}"
        );
        for svc in &specs {
            let chain = nft_service_chain(svc);
            assert!(
                dump.contains(&format!("chain {chain} {{")),
                "{chain} missing:\n{dump}"
            );
            assert!(
                dump.contains(&format!(": goto {chain}")),
                "no service-ips entry for {chain}:\n{dump}"
            );
            for &ep in &svc.endpoints {
                let ep_chain = nft_endpoint_chain(svc, ep);
                assert!(
                    dump.contains(&format!("chain {ep_chain} {{")),
                    "{ep_chain} missing:\n{dump}"
                );
                assert!(
                    dump.contains(&format!("dnat to {}:{}", ep.0, ep.1)),
                    "{dump}"
                );
            }
        }
    }

    #[test]
    fn times_a_small_load_and_cleans_up() {
        require_root();
        let specs = synthetic(1, 10);
        let took = time_iptables_restore(&iptables_ruleset(&specs)).expect("iptables-restore");
        assert!(took > Duration::ZERO && took < COMMAND_LIMIT);
        let took = time_nft(&nft_ruleset(&specs)).expect("nft");
        assert!(took > Duration::ZERO && took < COMMAND_LIMIT);
        // A load error comes back with the tool's stderr.
        let err = time_nft("add rule ip nonexistent-table nochain drop\n")
            .expect_err("a bad ruleset must fail");
        assert!(format!("{err:#}").contains("nft"), "{err:#}");
        // A load past its limit is killed and reported as such.
        let err = time_load(
            Tool::Nft,
            &nft_ruleset(&synthetic(1000, 10)),
            Duration::from_millis(1),
        )
        .expect_err("1 ms is too short");
        assert!(err.chain().any(|c| c.is::<TimedOut>()), "{err:#}");
        let prefix = format!("{NETNS_PREFIX}{}-", std::process::id());
        let left: Vec<String> = fs::read_dir(NETNS_DIR)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&prefix))
                    .collect()
            })
            .unwrap_or_default();
        // Other tests of this process may hold a namespace right now (plain `cargo
        // test` runs them as threads); under nextest this process is ours alone.
        if std::env::var_os("NEXTEST").is_some() {
            assert!(left.is_empty(), "namespaces left behind: {left:?}");
        }
    }
}
