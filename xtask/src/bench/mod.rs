//! `cargo xtask bench`: this proxy against direct-to-backend, kube-proxy's
//! iptables and nftables rulesets and HAProxy, side by side, at several scales.
//!
//! For each scale N, the bench builds one [`world::World`] per contender
//! (client pod → node → backend pods, each world its own namespaces and cgroup),
//! programs the same N Services into each contender's own mechanism, then runs
//! the workloads in rounds, alternating the contenders (A B C A B C …), so slow
//! drift of a noisy machine hits them all alike:
//! - new connections per second, each with one small request and response
//!   (the Rust load generator in [`agent`]);
//! - requests per second over long-lived connections (`wrk`);
//! - bulk throughput (`iperf3`);
//! - connect latency to a Service picked at random among the N ([`agent`]).
//!
//! NodePort contenders ([`Contender::is_nodeport`]): the same N Services, each
//! also a NodePort (`externalTrafficPolicy: Cluster`, node ports from
//! [`NODE_PORT_BASE`] up, as with `--service-node-port-range=20000-32767`, so
//! 10,000 fit), reached at the node's address by a client that is *outside*
//! the node (not in its cgroup: no socket hook sees it), so every packet takes
//! the per-packet path: this proxy's tc programs, or kube-proxy's
//! `KUBE-NODEPORTS` chain / `service-nodeports` verdict map. All three
//! masquerade, as kube-proxy does for `externalTrafficPolicy: Cluster` (the
//! proxy is told its endpoints are on another node, so it SNATs too), which
//! keeps them comparable; `× iptables` for them is against iptables' NodePort.
//!
//! The control plane is measured per scale too: the proxy's cold sync, one
//! change and RSS (`bench_control`, fake API server), next to the time
//! `iptables-restore` and `nft -f` took to load the same Services into the
//! worlds. [`report`] writes Markdown, JSON and SVG plots under `target/bench/`.
//! Every loop and command is bounded in time; all traffic stays in the worlds'
//! namespaces.

pub mod agent;
mod cost;
mod plot;
mod report;
mod tools;
mod workload;
mod world;

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use proxy_tests::manifest;
use serde::{Deserialize, Serialize};

use crate::{
    baseline::{self, SvcSpec, Tool},
    bench_control,
};
use world::{BACKENDS, HTTP_PORT, IPERF_PORT, World, backend};

/// The measured Service: after the N-1 synthetic ones, in the sandbox's service
/// range. 5 endpoints.
const MEASURED_VIP: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);
const MEASURED_ENDPOINTS: u8 = 5;
/// The bulk Service (one endpoint, as iperf3's control and data connections
/// must meet the same server); programmed in addition to the N.
const BULK_VIP: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 2);
const VIP_PORT: u16 = 80;
/// The NodePort contenders' node port of Service `i` is `NODE_PORT_BASE + i`
/// (the measured one is `NODE_PORT_BASE + N - 1`, the bulk one `+ N`).
pub const NODE_PORT_BASE: u16 = 20000;
/// Node ports from [`NODE_PORT_BASE`] to 65535.
const NODE_PORTS: usize = (u16::MAX - NODE_PORT_BASE) as usize + 1;
/// The proxy's node name in the tc world, and the node its endpoints are on
/// (another one: their traffic is SNATed, like kube-proxy's masquerade).
const NODE_NAME: &str = "bench-node";
const ENDPOINT_NODE: &str = "bench-other-node";
/// Bound on loading one ruleset.
const LOAD_LIMIT: Duration = Duration::from_secs(240);
/// Endpoints per Service in the control-plane measurement (the average of the
/// data-plane cluster's 2 to 10).
const CONTROL_ENDPOINTS: usize = 6;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Service counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 1000, 10000])]
    scales: Vec<usize>,
    /// Rounds per scale; every contender runs every workload once per round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per timed workload.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Connections in the latency workload.
    #[arg(long, default_value_t = 2000)]
    latency_connections: usize,
    /// Only these contenders (default: all that exist).
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Contender>,
    /// A short smoke run for CI: 1 and 100 Services, one round, 1 s workloads.
    #[arg(long)]
    quick: bool,
    /// Also copy the report to BENCHMARKS.md and the plots to docs/bench/.
    #[arg(long)]
    publish: bool,
    /// Use this proxy binary instead of building `target/release/proxy`
    /// (e.g. a debug build, to compare eBPF programs: their cost does not
    /// depend on how the userspace was compiled).
    #[arg(long)]
    pub proxy_bin: Option<std::path::PathBuf>,
    /// Measure nothing: render the report and plots again from
    /// target/bench/results.json (with --publish, publish them).
    #[arg(long)]
    replot: bool,
}

/// Who forwards the client's traffic.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Contender {
    /// Straight to the backend IPs: the physical limit.
    Direct,
    /// This proxy's cgroup socket hooks.
    SocketLb,
    /// This proxy's userspace fallback (`--mode userspace`): VIPs made local
    /// on the node, tokio proxies listening on them.
    Userspace,
    /// kube-proxy's iptables ruleset.
    Iptables,
    /// kube-proxy's nftables ruleset.
    Nftables,
    /// HAProxy in TCP mode, the userspace reference (the measured Services only).
    Haproxy,
    /// This proxy's tc programs, through a NodePort, from outside the node.
    Tc,
    /// The same with `--lb-algorithm=random` (`Tc` is Maglev, the default).
    TcRandom,
    /// `Tc` with `--xdp=auto`: `xdp_ingress` ahead of tc on the node's
    /// device (generic mode on the bench's veth) for established flows.
    Xdp,
    /// kube-proxy's iptables ruleset, through a NodePort (`KUBE-NODEPORTS`).
    IptablesNodeport,
    /// kube-proxy's nftables ruleset, through a NodePort (`service-nodeports`).
    NftablesNodeport,
}

impl Contender {
    const ALL: [Contender; 11] = [
        Contender::Direct,
        Contender::SocketLb,
        Contender::Userspace,
        Contender::Iptables,
        Contender::Nftables,
        Contender::Haproxy,
        Contender::Tc,
        Contender::TcRandom,
        Contender::Xdp,
        Contender::IptablesNodeport,
        Contender::NftablesNodeport,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Contender::Direct => "direct to backend",
            Contender::SocketLb => "socket LB (this proxy)",
            Contender::Userspace => "userspace fallback (this proxy)",
            Contender::Iptables => "iptables (kube-proxy rules)",
            Contender::Nftables => "nftables (kube-proxy rules)",
            Contender::Haproxy => "HAProxy (TCP mode)",
            Contender::Tc => "tc NodePort (this proxy)",
            Contender::TcRandom => "tc NodePort, random (this proxy)",
            Contender::Xdp => "XDP + tc NodePort (this proxy)",
            Contender::IptablesNodeport => "iptables NodePort (kube-proxy rules)",
            Contender::NftablesNodeport => "nftables NodePort (kube-proxy rules)",
        }
    }

    /// Measured through a NodePort by a client outside the node.
    pub fn is_nodeport(self) -> bool {
        matches!(
            self,
            Contender::Tc
                | Contender::TcRandom
                | Contender::Xdp
                | Contender::IptablesNodeport
                | Contender::NftablesNodeport
        )
    }

    /// The contender this one's `× iptables` column is against.
    pub fn iptables_peer(self) -> Contender {
        if self.is_nodeport() {
            Contender::IptablesNodeport
        } else {
            Contender::Iptables
        }
    }

    /// HAProxy is a userspace reference for the measured Services; a config of
    /// thousands of listeners says nothing about kube-proxy replacements, so
    /// it runs at the smallest scale only.
    fn runs_at(self, scale: usize, smallest: usize) -> bool {
        self != Contender::Haproxy || scale == smallest
    }
}

/// The Services of one scale.
struct Cluster {
    specs: Vec<SvcSpec>,
}

impl Cluster {
    /// `n - 1` synthetic Services with 2 to 10 endpoints each (on the 10 backend
    /// pods), the measured Service last among the N (the worst case for a
    /// linear rule list, as in kube-proxy's own scale figures), then the bulk one.
    fn new(n: usize) -> Self {
        let mut specs = baseline::synthetic(n.saturating_sub(1), 0);
        for (i, svc) in specs.iter_mut().enumerate() {
            let count = 2 + i % 9;
            svc.endpoints = (0..count)
                .map(|j| (backend(((i + j) % usize::from(BACKENDS)) as u8), HTTP_PORT))
                .collect();
        }
        specs.push(spec(
            "measured",
            "http",
            MEASURED_VIP,
            VIP_PORT,
            (0..MEASURED_ENDPOINTS)
                .map(|i| (backend(i), HTTP_PORT))
                .collect(),
        ));
        specs.push(spec(
            "bulk",
            "iperf",
            BULK_VIP,
            IPERF_PORT,
            vec![(backend(0), IPERF_PORT)],
        ));
        Self { specs }
    }

    /// Service `i`'s node port (see [`NODE_PORT_BASE`]). There are
    /// [`NODE_PORTS`] of them: beyond that many Services (100,000, say), the
    /// first ones are ClusterIP only, so the last ones, the measured and the
    /// bulk Service among them, keep theirs.
    fn node_port(&self, i: usize) -> Option<u16> {
        let first = self.specs.len().saturating_sub(NODE_PORTS);
        let offset = u16::try_from(i.checked_sub(first)?).ok()?;
        NODE_PORT_BASE.checked_add(offset)
    }

    /// The Services with their node ports (see [`Cluster::node_port`]).
    fn with_node_ports(&self) -> Vec<SvcSpec> {
        self.specs
            .iter()
            .enumerate()
            .map(|(i, svc)| SvcSpec {
                node_port: self.node_port(i),
                ..svc.clone()
            })
            .collect()
    }

    /// The N Services' NodePorts on the node's client-facing address (not the
    /// bulk one), for the latency workload.
    fn node_port_frontends(&self) -> Vec<SocketAddr> {
        (0..self.specs.len().saturating_sub(1))
            .filter_map(|i| self.node_port(i))
            .map(|port| SocketAddr::from((world::NODE, port)))
            .collect()
    }

    /// The measured Service's NodePort (last of the N) and the bulk one's.
    fn measured_node_ports(&self) -> (SocketAddr, SocketAddr) {
        let n = self.specs.len();
        let at = |i| SocketAddr::from((world::NODE, self.node_port(i).unwrap_or(NODE_PORT_BASE)));
        (at(n.saturating_sub(2)), at(n.saturating_sub(1)))
    }

    /// The N Services' frontends (not the bulk one), for the latency workload.
    fn frontends(&self) -> Vec<SocketAddr> {
        self.specs
            .iter()
            .filter(|s| s.cluster_ip != BULK_VIP)
            .map(|s| SocketAddr::from((s.cluster_ip, s.port)))
            .collect()
    }
}

fn spec(
    name: &str,
    port_name: &str,
    vip: Ipv4Addr,
    port: u16,
    endpoints: Vec<(Ipv4Addr, u16)>,
) -> SvcSpec {
    SvcSpec {
        namespace: "bench".to_owned(),
        name: name.to_owned(),
        port_name: port_name.to_owned(),
        cluster_ip: vip,
        port,
        protocol: baseline::Protocol::Tcp,
        endpoints,
        node_port: None,
    }
}

/// Where each workload sends its traffic, for one contender.
pub struct Targets {
    /// Connection rate: round robin over these.
    conn: Vec<SocketAddr>,
    /// `wrk`'s URL host:port.
    rr: SocketAddr,
    /// iperf3's server.
    bulk: SocketAddr,
    /// Latency: picked at random.
    latency: Vec<SocketAddr>,
    /// Addresses that are no Service, connected to through the socket hooks
    /// (their cost when nothing is translated); only for [`Contender::SocketLb`].
    non_service: Option<Vec<SocketAddr>>,
}

impl Targets {
    fn new(contender: Contender, cluster: &Cluster) -> Self {
        let measured = SocketAddr::from((MEASURED_VIP, VIP_PORT));
        match contender {
            Contender::Direct => Targets {
                conn: (0..MEASURED_ENDPOINTS)
                    .map(|i| SocketAddr::from((backend(i), HTTP_PORT)))
                    .collect(),
                rr: SocketAddr::from((backend(0), HTTP_PORT)),
                bulk: SocketAddr::from((backend(0), IPERF_PORT)),
                latency: (0..BACKENDS)
                    .map(|i| SocketAddr::from((backend(i), HTTP_PORT)))
                    .collect(),
                non_service: None,
            },
            Contender::Tc
            | Contender::TcRandom
            | Contender::Xdp
            | Contender::IptablesNodeport
            | Contender::NftablesNodeport => {
                let (measured, bulk) = cluster.measured_node_ports();
                Targets {
                    conn: vec![measured],
                    rr: measured,
                    bulk,
                    latency: cluster.node_port_frontends(),
                    non_service: None,
                }
            }
            Contender::Haproxy => Targets {
                conn: vec![measured],
                rr: measured,
                bulk: SocketAddr::from((BULK_VIP, IPERF_PORT)),
                latency: vec![measured],
                non_service: None,
            },
            _ => Targets {
                conn: vec![measured],
                rr: measured,
                bulk: SocketAddr::from((BULK_VIP, IPERF_PORT)),
                latency: cluster.frontends(),
                non_service: (contender == Contender::SocketLb).then(|| {
                    (0..BACKENDS)
                        .map(|i| SocketAddr::from((backend(i), HTTP_PORT)))
                        .collect()
                }),
            },
        }
    }
}

/// The bench's settings after `--quick`.
pub struct Settings {
    pub scales: Vec<usize>,
    pub rounds: usize,
    pub seconds: f64,
    pub latency_connections: usize,
    pub changes: usize,
    pub contenders: Vec<Contender>,
    pub quick: bool,
}

pub fn run(root: &Path, proxy_bin: &Path, agent: &Path, args: &BenchArgs) -> anyhow::Result<()> {
    let dir = root.join("target/bench");
    if args.replot {
        let path = dir.join("results.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (run the bench first)", path.display()))?;
        let results: report::Results =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        return output(root, &dir, &results, args.publish);
    }
    if !nix::unistd::Uid::effective().is_root() {
        anyhow::bail!("the bench creates network namespaces and cgroups: run it as root");
    }
    let settings = Settings {
        scales: if args.quick {
            vec![1, 100]
        } else {
            args.scales.clone()
        },
        rounds: if args.quick { 1 } else { args.rounds.max(1) },
        seconds: if args.quick {
            1.0
        } else {
            args.seconds.max(0.5)
        },
        latency_connections: if args.quick {
            200
        } else {
            args.latency_connections.max(10)
        },
        changes: if args.quick { 3 } else { 20 },
        contenders: if args.only.is_empty() {
            Contender::ALL.to_vec()
        } else {
            args.only.clone()
        },
        quick: args.quick,
    };
    let versions = tools::ensure()?;
    // Per-program run time and count while the bench runs (the cost
    // breakdown); the kernel turns them off again when this is dropped or
    // the process dies.
    let _stats = match cost::StatsGuard::enable() {
        Ok(guard) => Some(guard),
        Err(e) => {
            eprintln!("bench: no per-program cost breakdown: {e:#}");
            None
        }
    };
    let started = Instant::now();
    let mut results = report::Results::new(&settings, versions);
    let smallest = settings.scales.iter().copied().min().unwrap_or(1);
    // Rule loaders killed at their limit, and the scale: a larger one is not tried.
    let mut over_limit: Vec<(Contender, usize)> = Vec::new();
    let mut scales = settings.scales.clone();
    scales.sort_unstable();
    for &scale in &scales {
        let cluster = Cluster::new(scale);
        eprintln!("bench: {scale} Services: control plane");
        let control = bench_control::measure(
            proxy_bin,
            bench_control::Source::Kubernetes,
            scale,
            CONTROL_ENDPOINTS,
            settings.changes,
        )
        .with_context(|| format!("control plane at {scale} Services"))?;
        results.control(scale, &control);
        let contenders: Vec<Contender> = settings
            .contenders
            .iter()
            .copied()
            .filter(|c| c.runs_at(scale, smallest))
            .collect();
        let mut worlds = Vec::new();
        for &contender in &contenders {
            if let Some(&(_, at)) = over_limit.iter().find(|(c, _)| *c == contender) {
                let e = anyhow::anyhow!(
                    "its rules took over the {} s load limit at {at} Services already",
                    LOAD_LIMIT.as_secs()
                );
                eprintln!(
                    "bench: {} at {scale} Services skipped: {e}",
                    contender.label()
                );
                results.skip(scale, contender, &e);
                continue;
            }
            eprintln!("bench: {scale} Services: setting up {}", contender.label());
            match setup(agent, proxy_bin, contender, &cluster, &mut results, scale) {
                Ok(world) => worlds.push((contender, world, Targets::new(contender, &cluster))),
                // One contender failing (a ruleset load over its limit, say)
                // is reported, and the others still run.
                Err(e) => {
                    eprintln!(
                        "bench: {} at {scale} Services skipped: {e:#}",
                        contender.label()
                    );
                    let e = if e.chain().any(|c| c.is::<baseline::TimedOut>()) {
                        over_limit.push((contender, scale));
                        e.context(format!("over the {} s load limit", LOAD_LIMIT.as_secs()))
                    } else {
                        e
                    };
                    results.skip(scale, contender, &e);
                }
            }
        }
        for round in 0..settings.rounds {
            let mut failed = Vec::new();
            for (i, (contender, world, targets)) in worlds.iter_mut().enumerate() {
                let sample = world
                    .check()
                    .and_then(|()| workload::sample(agent, world, targets, &settings));
                match sample {
                    Ok(sample) => {
                        eprintln!(
                            "bench: {scale:>6} Services  round {round}  {:<28} {sample}",
                            contender.label()
                        );
                        results.push(scale, *contender, sample);
                    }
                    Err(e) => {
                        eprintln!(
                            "bench: {} at {scale} Services, round {round}: {e:#}",
                            contender.label()
                        );
                        results.skip(scale, *contender, &e.context(format!("round {round}")));
                        failed.push(i);
                    }
                }
            }
            for i in failed.into_iter().rev() {
                worlds.remove(i);
            }
        }
        if let Some((_, world, _)) = worlds.iter().find(|(c, _, _)| *c == Contender::Tc) {
            match maglev_tables(proxy_bin, &world.sandbox().pin_path()) {
                Ok(tables) => results.maglev_tables(scale, tables),
                Err(e) => eprintln!("bench: counting the Maglev tables at {scale} Services: {e:#}"),
            }
        }
    }
    results.finish(started.elapsed());
    output(root, &dir, &results, args.publish)?;
    if !results.skipped.is_empty() {
        anyhow::bail!(
            "{} contender(s) could not be measured everywhere; see the report",
            results.skipped.len()
        );
    }
    Ok(())
}

/// Writes the report, the JSON and the plots, publishes them if asked, and
/// prints the report.
fn output(root: &Path, dir: &Path, results: &report::Results, publish: bool) -> anyhow::Result<()> {
    for path in report::write(dir, results)? {
        eprintln!("bench: wrote {}", path.display());
    }
    if publish {
        report::publish(root, dir, results)?;
        eprintln!("bench: published BENCHMARKS.md and docs/bench/");
    }
    println!("{}", report::markdown(results, "."));
    Ok(())
}

/// How many Maglev tables `MAGLEV` holds under `pins` (`proxy inspect
/// status`'s fill level of it).
fn maglev_tables(proxy_bin: &Path, pins: &Path) -> anyhow::Result<u64> {
    let out = Command::new(proxy_bin)
        .args(["inspect", "status", "--output", "json", "--pin-path"])
        .arg(pins)
        .output()
        .context("running proxy inspect status")?;
    let status: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("proxy inspect status printed no JSON")?;
    status["maps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == "MAGLEV")
        .and_then(|m| m["entries"].as_u64())
        .context("no MAGLEV entry count in proxy inspect status")
}

/// Builds a contender's world and programs the cluster into it.
fn setup(
    agent: &Path,
    proxy_bin: &Path,
    contender: Contender,
    cluster: &Cluster,
    results: &mut report::Results,
    scale: usize,
) -> anyhow::Result<World> {
    let mut server = Command::new(agent);
    server.args(["bench-agent", "server", "--port", &HTTP_PORT.to_string()]);
    let mut world = World::new(&server)?;
    if contender.is_nodeport() {
        world.set_external_client();
    }
    let targets = Targets::new(contender, cluster);
    match contender {
        Contender::Direct => {}
        Contender::SocketLb
        | Contender::Userspace
        | Contender::Tc
        | Contender::TcRandom
        | Contender::Xdp => {
            let (mode, specs, extra): (&str, Vec<SvcSpec>, &[&str]) = match contender {
                Contender::Tc => (
                    "ebpf",
                    cluster.with_node_ports(),
                    &["--node-name", NODE_NAME, "--devices", world::DEVICES],
                ),
                Contender::TcRandom => (
                    "ebpf",
                    cluster.with_node_ports(),
                    &[
                        "--node-name",
                        NODE_NAME,
                        "--devices",
                        world::DEVICES,
                        "--lb-algorithm=random",
                    ],
                ),
                Contender::Xdp => (
                    "ebpf",
                    cluster.with_node_ports(),
                    &[
                        "--node-name",
                        NODE_NAME,
                        "--devices",
                        world::DEVICES,
                        "--xdp=auto",
                    ],
                ),
                Contender::SocketLb => ("ebpf", cluster.specs.clone(), &[]),
                _ => ("userspace", cluster.specs.clone(), &[]),
            };
            let dir = world.sandbox().manifests_dir();
            manifest::write_atomic(&dir, "cluster.yaml", &manifests(&specs))?;
            let log = world.sandbox().dir().join("proxy.log");
            let log = std::fs::File::create(&log)
                .with_context(|| format!("creating {}", log.display()))?;
            let mut cmd = Command::new(proxy_bin);
            cmd.arg("run")
                .arg("--manifests")
                .arg(&dir)
                .arg("--cgroup")
                .arg(world.sandbox().cgroup_path())
                .arg("--pin-path")
                .arg(world.sandbox().pin_path())
                .args(["--mode", mode, "--log-format", "text"])
                .args(extra)
                .stdout(log.try_clone()?)
                .stderr(log);
            world.spawn_on_node(world::PROXY, &mut cmd)?;
        }
        Contender::Iptables => {
            let rules = baseline::iptables_ruleset(&cluster.specs);
            let took = baseline::load_in(
                &world.node_netns(),
                Tool::IptablesRestoreFull,
                &rules,
                LOAD_LIMIT,
            )?;
            results.load_time(scale, contender, took);
        }
        Contender::Nftables => {
            let rules = baseline::nft_ruleset(&cluster.specs);
            let took = baseline::load_in(&world.node_netns(), Tool::Nft, &rules, LOAD_LIMIT)?;
            results.load_time(scale, contender, took);
        }
        Contender::IptablesNodeport => {
            let rules = baseline::iptables_ruleset(&cluster.with_node_ports());
            let took = baseline::load_in(
                &world.node_netns(),
                Tool::IptablesRestoreFull,
                &rules,
                LOAD_LIMIT,
            )?;
            results.load_time(scale, contender, took);
        }
        Contender::NftablesNodeport => {
            let rules =
                baseline::nft_ruleset_with_nodeports(&cluster.with_node_ports(), &[world::NODE]);
            let took = baseline::load_in(&world.node_netns(), Tool::Nft, &rules, LOAD_LIMIT)?;
            results.load_time(scale, contender, took);
        }
        Contender::Haproxy => {
            let cfg = world.sandbox().dir().join("haproxy.cfg");
            std::fs::write(&cfg, haproxy_config(cluster))?;
            for vip in [MEASURED_VIP, BULK_VIP] {
                world.add_node_addr(vip)?;
            }
            let mut cmd = Command::new("haproxy");
            cmd.arg("-db").arg("-f").arg(&cfg);
            world.spawn_on_node("haproxy", &mut cmd)?;
        }
    }
    // Ready when every kind of target answers through the contender.
    let mut probe = Command::new(agent);
    let mut check: Vec<SocketAddr> = targets.conn.clone();
    check.push(targets.rr);
    check.extend(targets.latency.iter().take(3));
    check.extend(targets.latency.last());
    // The proxy's start grows with the Services (YAML, then the first sync):
    // a minute, plus a second per 1,000 Services.
    let wait = 60 + scale / 1000;
    probe.args([
        "bench-agent",
        "probe",
        "--seconds",
        &wait.to_string(),
        "--targets",
    ]);
    probe.arg(
        check
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    world.client_command(&mut probe)?;
    baseline::run_checked(probe, Duration::from_secs(wait as u64 + 30)).with_context(|| {
        let log =
            std::fs::read_to_string(world.sandbox().dir().join("proxy.log")).unwrap_or_default();
        format!(
            "waiting for {} to forward; proxy log (if any):\n{log}",
            contender.label()
        )
    })?;
    world.check()?;
    Ok(world)
}

/// HAProxy in TCP mode in front of the measured and the bulk Service.
fn haproxy_config(cluster: &Cluster) -> String {
    let mut cfg = String::from(
        "global\n  maxconn 8000\n  nbthread 2\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n",
    );
    for svc in cluster
        .specs
        .iter()
        .filter(|s| s.cluster_ip == MEASURED_VIP || s.cluster_ip == BULK_VIP)
    {
        let _ = write!(
            cfg,
            "\nfrontend {name}\n  bind {vip}:{port}\n  default_backend {name}\n\nbackend {name}\n  balance random\n",
            name = svc.name,
            vip = svc.cluster_ip,
            port = svc.port
        );
        for (i, (ip, port)) in svc.endpoints.iter().enumerate() {
            let _ = writeln!(cfg, "  server s{i} {ip}:{port}");
        }
    }
    cfg
}

/// The Services as manifests for the proxy (compact YAML). A Service with a
/// node port is a NodePort with `externalTrafficPolicy: Cluster` whose
/// endpoints are on [`ENDPOINT_NODE`].
fn manifests(specs: &[SvcSpec]) -> String {
    let mut yaml = String::new();
    for (i, svc) in specs.iter().enumerate() {
        let tp = svc.endpoints.first().map_or(HTTP_PORT, |e| e.1);
        let (kind, node_port, node_name) = match svc.node_port {
            Some(np) => (
                "\n  type: NodePort\n  externalTrafficPolicy: Cluster",
                format!(", nodePort: {np}"),
                format!("\n  nodeName: {ENDPOINT_NODE}"),
            ),
            None => ("", String::new(), String::new()),
        };
        let _ = write!(
            yaml,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec:\n  clusterIP: {vip}{kind}\n  ports: [{{name: {pn}, port: {port}, protocol: TCP, targetPort: {tp}{node_port}}}]\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: s{i}, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{{name: {pn}, port: {tp}, protocol: TCP}}]\nendpoints:\n",
            name = svc.name,
            ns = svc.namespace,
            pn = svc.port_name,
            vip = svc.cluster_ip,
            port = svc.port,
        );
        for (addr, _) in &svc.endpoints {
            let _ = writeln!(
                yaml,
                "- addresses: [\"{addr}\"]\n  conditions: {{ready: true}}{node_name}"
            );
        }
    }
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_has_n_services_plus_bulk_with_2_to_10_endpoints() {
        let c = Cluster::new(1000);
        assert_eq!(c.specs.len(), 1001);
        assert_eq!(c.frontends().len(), 1000);
        let measured = &c.specs[999];
        assert_eq!(
            (measured.cluster_ip, measured.endpoints.len()),
            (MEASURED_VIP, 5)
        );
        for svc in &c.specs[..999] {
            assert!((2..=10).contains(&svc.endpoints.len()), "{}", svc.name);
            let mut ips: Vec<_> = svc.endpoints.iter().map(|e| e.0).collect();
            ips.sort();
            ips.dedup();
            assert_eq!(
                ips.len(),
                svc.endpoints.len(),
                "{}: repeated endpoint",
                svc.name
            );
            assert!(ips.iter().all(|ip| ip.octets()[..3] == [10, 244, 255]));
        }
        let mut vips: Vec<_> = c.specs.iter().map(|s| s.cluster_ip).collect();
        vips.sort();
        vips.dedup();
        assert_eq!(vips.len(), 1001, "VIPs must be unique");
        // At N = 1 only the measured and the bulk Service exist.
        assert_eq!(Cluster::new(1).specs.len(), 2);
    }

    #[test]
    fn haproxy_fronts_the_measured_services_only() {
        let cfg = haproxy_config(&Cluster::new(100));
        assert!(cfg.contains("bind 10.100.0.1:80") && cfg.contains("bind 10.100.0.2:5201"));
        assert_eq!(cfg.matches("\n  server ").count(), 6, "{cfg}");
        assert_eq!(cfg.matches("frontend ").count(), 2);
    }

    #[test]
    fn targets_differ_by_contender() {
        let c = Cluster::new(10);
        let direct = Targets::new(Contender::Direct, &c);
        assert!(direct.conn.iter().all(|a| a.port() == HTTP_PORT));
        assert_eq!(direct.latency.len(), usize::from(BACKENDS));
        let lb = Targets::new(Contender::SocketLb, &c);
        assert_eq!(lb.conn, vec![SocketAddr::from((MEASURED_VIP, VIP_PORT))]);
        assert_eq!(lb.latency.len(), 10);
        assert_eq!(lb.bulk, SocketAddr::from((BULK_VIP, IPERF_PORT)));
    }

    #[test]
    fn nodeport_contenders_use_node_ports_on_the_node() {
        let c = Cluster::new(10);
        let tc = Targets::new(Contender::Tc, &c);
        // The measured Service is the 10th (index 9), the bulk one after it.
        assert_eq!(
            tc.conn,
            vec![SocketAddr::from((world::NODE, NODE_PORT_BASE + 9))]
        );
        assert_eq!(
            tc.bulk,
            SocketAddr::from((world::NODE, NODE_PORT_BASE + 10))
        );
        assert_eq!(tc.latency.len(), 10);
        assert!(tc.latency.iter().all(|a| a.ip() == world::NODE));
        let specs = c.with_node_ports();
        assert_eq!(specs[9].cluster_ip, MEASURED_VIP);
        assert_eq!(specs[9].node_port, Some(NODE_PORT_BASE + 9));
        assert_eq!(specs[10].cluster_ip, BULK_VIP);
        assert_eq!(specs[10].node_port, Some(NODE_PORT_BASE + 10));
        // 10,000 Services fit below 32768.
        assert!(Cluster::new(10_000).measured_node_ports().1.port() < 32768);
        // 100,000 do not fit the port range: the last 45,536 have node ports,
        // each its own, the measured and the bulk one last.
        let big = Cluster::new(100_000);
        let specs = big.with_node_ports();
        let ports: std::collections::BTreeSet<u16> =
            specs.iter().filter_map(|s| s.node_port).collect();
        assert_eq!(ports.len(), NODE_PORTS);
        assert_eq!(
            specs.iter().filter(|s| s.node_port.is_some()).count(),
            NODE_PORTS
        );
        assert_eq!(specs[0].node_port, None);
        assert_eq!(
            big.measured_node_ports(),
            (
                SocketAddr::from((world::NODE, u16::MAX - 1)),
                SocketAddr::from((world::NODE, u16::MAX))
            )
        );
        assert_eq!(big.node_port_frontends().len(), NODE_PORTS - 1);
        let yaml = manifests(&specs[9..]);
        assert!(
            yaml.contains("type: NodePort\n  externalTrafficPolicy: Cluster"),
            "{yaml}"
        );
        assert!(
            yaml.contains("targetPort: 8080, nodePort: 20009}"),
            "{yaml}"
        );
        assert!(
            yaml.contains(&format!("nodeName: {ENDPOINT_NODE}")),
            "{yaml}"
        );
        assert!(!manifests(&c.specs).contains("NodePort"));
        assert_eq!(Contender::Tc.iptables_peer(), Contender::IptablesNodeport);
        assert_eq!(Contender::SocketLb.iptables_peer(), Contender::Iptables);
    }

    #[test]
    fn manifests_name_every_service_and_endpoint() {
        let c = Cluster::new(3);
        let yaml = manifests(&c.specs);
        assert_eq!(yaml.matches("kind: Service\n").count(), 4);
        let endpoints: usize = c.specs.iter().map(|s| s.endpoints.len()).sum();
        assert_eq!(yaml.matches("- addresses:").count(), endpoints);
        assert!(yaml.contains("name: iperf, port: 5201, protocol: TCP, targetPort: 5201"));
    }
}
