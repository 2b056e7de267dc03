//! `cargo xtask bench-control-plane`: how fast the proxy programs a large
//! cluster, and what it costs in memory, next to kube-proxy's rule loaders.
//!
//! In a sandbox (its own network namespace, cgroup and bpffs), the proxy reads
//! N Services × M endpoints from the fake API server (real list/watch over
//! HTTP on the sandbox's loopback) or from a manifest directory. From its own
//! metrics:
//! - cold sync: the first sync (desired state, plan, map writes) once the
//!   initial state is complete (`kubeproxy_sync_proxy_rules_duration_seconds`);
//! - one change: a single endpoint changed, from the Index change to the map
//!   entry (`kubeproxy_network_programming_duration_seconds`), repeated;
//! - kernel memory of every pinned eBPF map after the cold sync (`memlock`,
//!   summed and per map, see `memlock`);
//! - RSS of the daemon after the cold sync and after the changes, with its
//!   breakdown (RssAnon, RssFile, threads) and copies of `/proc/PID/smaps`
//!   in `target/bench/`. `BENCH_MALLINFO=1` also has gdb call glibc's
//!   `malloc_stats()` in the daemon after the cold sync (heap in use vs held
//!   by the allocator); `BENCH_STOP_AFTER_COLD=1` SIGKILLs the daemon (found
//!   under a profiler's wrapper, whose helpers live on) right after the cold
//!   sync, so heaptrack's "leaked" is what was live then.
//!
//! The same run times `iptables-restore` and `nft -f` loading kube-proxy's
//! rulesets for the same N × M (see `baseline`), each in a fresh namespace.
//! `--scales 1000,10000,100000` measures each N in turn; a loader killed at
//! its limit is reported as "> limit" at that N and not tried at larger ones.

mod memlock;

use std::{
    ffi::OsStr,
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use proxy_tests::{FakeApiServer, ProxyProcess, Sandbox, manifest};

use crate::baseline;

const METRICS: &str = "127.0.0.1:19249";
/// Bound on every wait, at least.
const DEADLINE: Duration = Duration::from_secs(180);

/// Bound on a wait at `services` Services: [`DEADLINE`], or 3 ms a Service
/// (100,000 Services: 5 minutes for the first sync), whichever is longer.
fn deadline(services: usize) -> Duration {
    DEADLINE
        .max(Duration::from_millis(3).saturating_mul(u32::try_from(services).unwrap_or(u32::MAX)))
}

#[derive(clap::Args)]
pub struct ControlArgs {
    /// Service counts to measure, comma-separated (e.g. 1000,10000,100000).
    #[arg(long, alias = "services", value_delimiter = ',', default_values_t = [10_000])]
    scales: Vec<usize>,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Single-endpoint changes to time.
    #[arg(long, default_value_t = 20)]
    changes: usize,
    /// Also time iptables-restore and nft -f for the same ruleset size.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    baselines: bool,
    /// Give up on one rule load after this many seconds (it is then reported
    /// as "> limit").
    #[arg(long, default_value_t = 60)]
    baseline_limit_secs: u64,
    /// A small, quick version (1,000 Services only, 5 changes).
    #[arg(long)]
    quick: bool,
    /// Where the proxy reads the cluster from.
    #[arg(long, value_enum, default_value_t = Source::Kubernetes)]
    source: Source,
    /// Measure this proxy binary instead of building a release one (a
    /// profiler's wrapper script, or a debug build for a quick look).
    #[arg(long, value_name = "PATH")]
    pub proxy_bin: Option<std::path::PathBuf>,
}

/// The proxy's source of Services in the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// The fake API server (real list/watch over HTTP), as in a cluster.
    Kubernetes,
    /// A manifest directory.
    Manifests,
}

/// What one run measured.
pub struct Measured {
    pub services: usize,
    pub endpoints: usize,
    pub cold_sync: Duration,
    pub startup: Duration,
    pub change_median: Duration,
    pub change_min: Duration,
    pub change_max: Duration,
    pub rss_cold_mib: f64,
    pub rss_after_mib: f64,
    /// Every pinned map's kernel memory after the cold sync, largest first.
    pub maps: Vec<memlock::MapMemory>,
    /// Frontends beyond the maps' capacity after the cold sync
    /// (`proxy_frontends_over_capacity`: served from userspace, or not at all).
    pub over_capacity: f64,
    pub source: Source,
}

impl Measured {
    /// The pinned maps' kernel memory, summed, in MiB.
    pub fn memlock_mib(&self) -> f64 {
        memlock::total_mib(&self.maps)
    }
}

/// Where the benchmark's cluster lives and how one change is made.
enum Cluster {
    Api(FakeApiServer),
    Dir(std::path::PathBuf),
}

impl Cluster {
    fn change(&self, version: usize) -> anyhow::Result<()> {
        match self {
            Cluster::Api(api) => {
                api.apply(hot_slice_json(version));
                Ok(())
            }
            Cluster::Dir(dir) => write_hot(dir, version),
        }
    }
}

pub fn run(root: &Path, proxy_bin: &Path, args: &ControlArgs) -> anyhow::Result<()> {
    let (mut scales, changes) = if args.quick {
        (vec![1_000], 5)
    } else {
        (args.scales.clone(), args.changes)
    };
    scales.sort_unstable();
    scales.dedup();
    if scales.is_empty() || scales.contains(&0) {
        bail!("--scales: give one or more Service counts, each at least 1");
    }
    let build = match &args.proxy_bin {
        Some(bin) => format!("proxy binary {}", bin.display()),
        None => "release build".to_owned(),
    };
    let mut measured = Vec::new();
    let mut report = String::new();
    for &services in &scales {
        let m = measure(
            proxy_bin,
            args.source,
            services,
            args.endpoints,
            changes.max(1),
        )
        .with_context(|| format!("the proxy at {services} Services"))?;
        eprintln!("bench: {services} Services measured: {}", one_line(&m));
        report.push_str(&proxy_table(&m, &build));
        report.push('\n');
        measured.push(m);
    }
    if measured.len() > 1 {
        report.push_str(&scales_table(&measured));
    }
    if args.baselines {
        let limit = Duration::from_secs(args.baseline_limit_secs);
        let rows = baseline::run_with_limit(1, &scales, limit)?;
        let _ = writeln!(
            report,
            "\n### kube-proxy's rule loaders, same sizes, same run\n"
        );
        report.push_str(&baseline::to_markdown(&rows));
        for row in &rows {
            let Some(m) = measured.iter().find(|m| m.services == row.services) else {
                continue;
            };
            let cold = m.cold_sync.as_secs_f64();
            let line = if row.samples.is_empty() {
                format!(
                    "\n{}, {} Services: over the {} s limit, more than {:.0}× the proxy's cold sync",
                    row.tool,
                    row.services,
                    limit.as_secs(),
                    limit.as_secs_f64() / cold
                )
            } else {
                format!(
                    "\n{}, {} Services: {:.0} ms, {:.1}× the proxy's cold sync",
                    row.tool,
                    row.services,
                    row.median.as_secs_f64() * 1e3,
                    row.median.as_secs_f64() / cold
                )
            };
            report.push_str(&line);
            report.push('\n');
        }
    }
    println!("{report}");
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("control-plane.md");
    std::fs::write(&path, &report)?;
    eprintln!("bench: report written to {}", path.display());
    Ok(())
}

/// One scale's numbers on one line, for the progress log.
fn one_line(m: &Measured) -> String {
    format!(
        "cold sync {:.1} ms, one change {:.2} ms, RSS {:.1} / {:.1} MiB, maps {:.1} MiB, \
         {} frontends beyond the maps",
        m.cold_sync.as_secs_f64() * 1e3,
        m.change_median.as_secs_f64() * 1e3,
        m.rss_cold_mib,
        m.rss_after_mib,
        m.memlock_mib(),
        m.over_capacity
    )
}

/// Every scale side by side.
fn scales_table(measured: &[Measured]) -> String {
    let mut out = String::from(
        "## Control plane by scale\n\n\
         | Services × endpoints | cold sync | one change (median) | RSS after the cold sync / after the changes | kernel map memory (memlock) | frontends beyond the maps |\n\
         |---:|---:|---:|---:|---:|---:|\n",
    );
    for m in measured {
        let _ = writeln!(
            out,
            "| {} × {} | {:.1} ms | {:.2} ms | {:.1} / {:.1} MiB | {:.1} MiB | {} |",
            m.services,
            m.endpoints,
            m.cold_sync.as_secs_f64() * 1e3,
            m.change_median.as_secs_f64() * 1e3,
            m.rss_cold_mib,
            m.rss_after_mib,
            m.memlock_mib(),
            m.over_capacity
        );
    }
    out
}

pub fn measure(
    proxy_bin: &Path,
    source: Source,
    services: usize,
    endpoints: usize,
    changes: usize,
) -> anyhow::Result<Measured> {
    let mut sandbox = Sandbox::new()?;
    sandbox.enter()?;
    let metrics_args = [
        "--metrics-bind-address",
        METRICS,
        "--healthz-bind-address",
        "",
    ];
    let (cluster, started, proxy) = match source {
        Source::Manifests => {
            let dir = sandbox.manifests_dir();
            write_cluster(&dir, services, endpoints)?;
            write_hot(&dir, 0)?;
            eprintln!(
                "bench: {services} Services × {endpoints} endpoints written; starting the proxy"
            );
            let started = Instant::now();
            let proxy = ProxyProcess::start_with_args(proxy_bin, &sandbox, &dir, &metrics_args)?;
            (Cluster::Dir(dir), started, proxy)
        }
        Source::Kubernetes => {
            // The API server runs inside the sandbox's namespace, on its loopback.
            let api = FakeApiServer::start()?;
            for i in 0..services {
                api.apply(service_json(
                    &format!("svc-{i}"),
                    addr(0x0a60_0000, i as u32 + 1),
                ));
                let eps = (0..endpoints).map(|j| addr(0x0a80_0000, (i * endpoints + j) as u32 + 1));
                api.apply(slice_json(&format!("svc-{i}"), eps));
            }
            api.apply(service_json("hot", "10.111.0.1".parse()?));
            api.apply(hot_slice_json(0));
            let kubeconfig = api.write_kubeconfig(sandbox.dir())?;
            eprintln!(
                "bench: {services} Services × {endpoints} endpoints in the fake API server; starting the proxy"
            );
            let started = Instant::now();
            let source_args = [OsStr::new("--kubeconfig"), kubeconfig.as_os_str()];
            let mut extra = vec!["--node-name", "node-1"];
            extra.extend(metrics_args);
            let proxy = ProxyProcess::start_with_source(proxy_bin, &sandbox, &source_args, &extra)?;
            (Cluster::Api(api), started, proxy)
        }
    };
    let limit = deadline(services);
    let first = wait_for(limit, |m| {
        (m.get("kubeproxy_sync_proxy_rules_duration_seconds_count") >= 1.0).then_some(m.clone())
    })
    .with_context(|| format!("waiting for the first sync; proxy log:\n{}", proxy.log()))?;
    let startup = started.elapsed();
    let cold_sync =
        Duration::from_secs_f64(first.get("kubeproxy_sync_proxy_rules_duration_seconds_sum"));
    let rss_cold_mib = rss_mib(proxy.pid())?;
    dump_memory(proxy.pid(), "cold");
    let maps = memlock::pinned(&sandbox.pin_path()).context("reading the maps' memlock")?;
    eprintln!(
        "bench: kernel map memory after the cold sync: {:.1} MiB ({})",
        memlock::total_mib(&maps),
        memlock::summary(&maps)
    );
    if std::env::var_os("BENCH_STOP_AFTER_COLD").is_some() {
        for pid in daemons_in_tree(proxy.pid()) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        bail!("stopped after the cold sync (BENCH_STOP_AFTER_COLD)");
    }
    if std::env::var_os("BENCH_MALLINFO").is_some() {
        std::thread::sleep(Duration::from_millis(300));
        for line in proxy
            .log()
            .lines()
            .filter(|l| l.contains("bytes") || l.starts_with("Arena") || l.contains("synced"))
        {
            eprintln!("bench: malloc_stats: {line}");
        }
    }
    if let Some(line) = proxy.log().lines().find(|l| l.contains("synced")) {
        eprintln!("bench: first sync: {line}");
    }

    let mut samples = Vec::with_capacity(changes);
    for i in 1..=changes {
        // Past the proxy's minimum sync interval, so a change is measured on an
        // idle proxy rather than waiting for the coalescing window.
        std::thread::sleep(Duration::from_millis(100));
        let before = scrape()?;
        let (count0, sum0) = programming(&before);
        cluster.change(i)?;
        let after = wait_for(limit, |m| (programming(m).0 > count0).then_some(m.clone()))
            .with_context(|| format!("waiting for change {i} to be programmed"))?;
        let (count1, sum1) = programming(&after);
        samples.push(Duration::from_secs_f64((sum1 - sum0) / (count1 - count0)));
    }
    samples.sort();
    let rss_after_mib = rss_mib(proxy.pid())?;
    dump_memory(proxy.pid(), "after");
    drop(proxy);
    Ok(Measured {
        services,
        endpoints,
        cold_sync,
        startup,
        change_median: samples[samples.len() / 2],
        change_min: samples[0],
        change_max: samples[samples.len() - 1],
        rss_cold_mib,
        rss_after_mib,
        maps,
        over_capacity: first.get("proxy_frontends_over_capacity"),
        source,
    })
}

fn programming(m: &Metrics) -> (f64, f64) {
    (
        m.get("kubeproxy_network_programming_duration_seconds_count"),
        m.get("kubeproxy_network_programming_duration_seconds_sum"),
    )
}

fn proxy_table(m: &Measured, build: &str) -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "## Control plane: {} Services × {} endpoints\n\n\
         Kernel {}, {cpus} CPUs, {build}, source: {:?}.\n\n\
         | measure | value |\n|---|---|\n\
         | cold sync (desired state + plan + map writes) | {:.1} ms |\n\
         | one endpoint change, Index change → map entry (median, min–max of {}) | {:.2} ms ({:.2}–{:.2}) |\n\
         | start to first sync (eBPF load, YAML parse, sync) | {:.2} s |\n\
         | daemon RSS after the cold sync / after the changes | {:.1} MiB / {:.1} MiB |\n\
         | frontends beyond the maps' capacity after the cold sync (userspace or unserved) | {} |\n\
         | kernel map memory after the cold sync (memlock of the {} pinned maps) | {:.1} MiB |\n\
         | its largest maps | {} |\n",
        m.services,
        m.endpoints,
        kernel.trim(),
        m.source,
        m.cold_sync.as_secs_f64() * 1e3,
        "samples",
        m.change_median.as_secs_f64() * 1e3,
        m.change_min.as_secs_f64() * 1e3,
        m.change_max.as_secs_f64() * 1e3,
        m.startup.as_secs_f64(),
        m.rss_cold_mib,
        m.rss_after_mib,
        m.over_capacity,
        m.maps.len(),
        m.memlock_mib(),
        memlock::summary(&m.maps),
    )
}

/// N Services with M ready endpoints each, 1,000 per file, in compact YAML.
fn write_cluster(dir: &Path, services: usize, endpoints: usize) -> anyhow::Result<()> {
    for (file, chunk) in (0..services).collect::<Vec<_>>().chunks(1000).enumerate() {
        let mut yaml = String::new();
        for &i in chunk {
            let vip = addr(0x0a60_0000, i as u32 + 1);
            let _ = write!(
                yaml,
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: bench}}\n\
                 spec:\n  clusterIP: {vip}\n  ports: [{{name: http, port: 80, protocol: TCP, targetPort: 8080}}]\n\
                 ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {{name: svc-{i}-x, namespace: bench, labels: {{kubernetes.io/service-name: svc-{i}}}}}\n\
                 addressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n"
            );
            for j in 0..endpoints {
                let ep = addr(0x0a80_0000, (i * endpoints + j) as u32 + 1);
                let _ = writeln!(
                    yaml,
                    "- addresses: [\"{ep}\"]\n  conditions: {{ready: true}}"
                );
            }
        }
        manifest::write_atomic(dir, &format!("cluster-{file:03}.yaml"), &yaml)?;
    }
    Ok(())
}

/// The one Service the change loop edits, in a file of its own so a change
/// re-reads one small file.
fn write_hot(dir: &Path, version: usize) -> anyhow::Result<()> {
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: hot, namespace: bench}\n\
         spec:\n  clusterIP: 10.111.0.1\n  ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: hot-x, namespace: bench, labels: {kubernetes.io/service-name: hot}}\n\
         addressType: IPv4\nports: [{name: http, port: 8080, protocol: TCP}]\nendpoints:\n",
    );
    for j in 0..9 {
        let _ = writeln!(
            yaml,
            "- addresses: [\"10.200.0.{}\"]\n  conditions: {{ready: true}}",
            j + 1
        );
    }
    // The tenth endpoint moves on every change.
    let _ = writeln!(
        yaml,
        "- addresses: [\"{}\"]\n  conditions: {{ready: true}}",
        addr(0x0ac8_0100, version as u32)
    );
    manifest::write_atomic(dir, "hot.yaml", &yaml)?;
    Ok(())
}

fn service_json(name: &str, vip: std::net::Ipv4Addr) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {"type": "ClusterIP", "clusterIP": vip.to_string(), "clusterIPs": [vip.to_string()],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}
    })
}

fn slice_json(
    service: &str,
    endpoints: impl Iterator<Item = std::net::Ipv4Addr>,
) -> serde_json::Value {
    let endpoints: Vec<serde_json::Value> = endpoints
        .map(|a| serde_json::json!({"addresses": [a.to_string()], "conditions": {"ready": true}, "nodeName": "node-2"}))
        .collect();
    serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-x"), "namespace": "bench",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

/// The hot Service's slice: nine fixed endpoints and one that moves.
fn hot_slice_json(version: usize) -> serde_json::Value {
    let fixed = (1..=9).map(|j| std::net::Ipv4Addr::new(10, 200, 0, j));
    slice_json(
        "hot",
        fixed.chain(std::iter::once(addr(0x0ac8_0100, version as u32))),
    )
}

fn addr(base: u32, offset: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(base + offset)
}

/// `root` and its descendants that run `proxy run …` (argv[1] is `run`):
/// the daemon itself, not a profiler's wrapper or its helper processes
/// (heaptrack's interpreter must live on to write the data).
fn daemons_in_tree(root: u32) -> Vec<u32> {
    let mut todo = vec![root];
    let mut found = Vec::new();
    while let Some(pid) = todo.pop() {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.split(|&b| b == 0).nth(1) == Some(b"run".as_slice()) {
            found.push(pid);
        }
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
        for task in tasks.into_iter().flatten().flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            todo.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    found
}

/// Prints where the daemon's RSS is (anonymous, file, shared; threads) and
/// keeps its `/proc/PID/smaps` under `target/bench/` for a closer look.
/// Best effort: a read that fails is only reported.
fn dump_memory(pid: u32, when: &str) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let wanted = [
        "VmRSS:",
        "RssAnon:",
        "RssFile:",
        "RssShmem:",
        "VmHWM:",
        "Threads:",
    ];
    let fields: Vec<String> = status
        .lines()
        .filter(|l| wanted.iter().any(|w| l.starts_with(w)))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    eprintln!("bench: memory {when}: {}", fields.join(", "));
    if std::env::var_os("BENCH_MALLINFO").is_some() {
        let out = std::process::Command::new("gdb")
            .args([
                "-batch",
                "-p",
                &pid.to_string(),
                "-ex",
                "call (void)malloc_stats()",
            ])
            .output();
        if let Err(e) = out {
            eprintln!("bench: gdb: {e}");
        }
    }
    let dir = Path::new("target/bench");
    for file in ["smaps_rollup", "smaps"] {
        let copied = std::fs::create_dir_all(dir).and_then(|()| {
            std::fs::copy(
                format!("/proc/{pid}/{file}"),
                dir.join(format!("{file}-{when}.txt")),
            )
        });
        if let Err(e) = copied {
            eprintln!("bench: could not keep /proc/{pid}/{file}: {e}");
        }
    }
}

fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    Ok(kib / 1024.0)
}

/// Parsed Prometheus text: sample name (with labels) → value.
#[derive(Clone, Default)]
struct Metrics(std::collections::HashMap<String, f64>);

impl Metrics {
    fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }
}

fn scrape() -> anyhow::Result<Metrics> {
    let addr: SocketAddr = METRICS.parse()?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    let Some((_, text)) = body.split_once("\r\n\r\n") else {
        bail!("no HTTP body in the metrics answer")
    };
    let mut out = Metrics::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some((name, value)) = line.rsplit_once(' ')
            && let Ok(v) = value.parse::<f64>()
        {
            out.0.insert(name.to_owned(), v);
        }
    }
    Ok(out)
}

/// Polls the metrics until `f` returns something, within `limit`.
fn wait_for<T>(limit: Duration, mut f: impl FnMut(&Metrics) -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(m) = scrape()
            && let Some(v) = f(&m)
        {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("not reached within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
