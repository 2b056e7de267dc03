//! The bench's results: collected per scale and contender, written as
//! Markdown (medians, min–max, ratios against direct and against iptables),
//! JSON and SVG plots under `target/bench/`, and optionally published to
//! `BENCHMARKS.md` and `docs/bench/`.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::{CONTROL_ENDPOINTS, Contender, Settings, cost, plot, workload::Sample};
use crate::bench_control;

#[derive(Serialize, Deserialize)]
pub struct Results {
    pub date: String,
    pub kernel: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub commit: String,
    pub tools: Vec<(String, String)>,
    pub scales: Vec<usize>,
    pub rounds: usize,
    pub seconds_per_workload: f64,
    pub latency_connections: usize,
    pub quick: bool,
    pub duration_s: f64,
    pub data: Vec<Row>,
    pub control: Vec<ControlRow>,
    pub loads: Vec<LoadRow>,
    /// Contenders that failed at a scale, and why.
    pub skipped: Vec<Skipped>,
    /// The Maglev tables the tc NodePort contender's node held, per scale
    /// (`MAGLEV`'s entries, read after the rounds); absent in older results.
    #[serde(default)]
    pub maglev: Vec<MaglevRow>,
}

/// How many Maglev tables (4 KiB of kernel memory each) a scale needed.
#[derive(Serialize, Deserialize)]
pub struct MaglevRow {
    pub scale: usize,
    pub tables: u64,
}

#[derive(Serialize, Deserialize)]
pub struct Skipped {
    pub scale: usize,
    pub contender: Contender,
    pub reason: String,
}

#[derive(Serialize, Deserialize)]
pub struct Row {
    pub scale: usize,
    pub contender: Contender,
    pub samples: Vec<Sample>,
}

#[derive(Serialize, Deserialize)]
pub struct ControlRow {
    pub scale: usize,
    pub endpoints_each: usize,
    pub cold_sync_ms: f64,
    pub change_median_ms: f64,
    pub change_min_ms: f64,
    pub change_max_ms: f64,
    pub rss_mib: f64,
    pub start_to_first_sync_s: f64,
    /// Kernel memory of every pinned map after the cold sync (0 in results
    /// from before it was measured).
    #[serde(default)]
    pub memlock_mib: f64,
}

/// How long a contender's rules took to load into its world.
#[derive(Serialize, Deserialize)]
pub struct LoadRow {
    pub scale: usize,
    pub contender: Contender,
    pub seconds: f64,
}

impl Results {
    pub fn new(s: &Settings, tools: Vec<(String, String)>) -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        Results {
            date: output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            commit: output("git", &["describe", "--always", "--dirty"]),
            tools,
            scales: s.scales.clone(),
            rounds: s.rounds,
            seconds_per_workload: s.seconds,
            latency_connections: s.latency_connections,
            quick: s.quick,
            duration_s: 0.0,
            data: Vec::new(),
            control: Vec::new(),
            loads: Vec::new(),
            skipped: Vec::new(),
            maglev: Vec::new(),
        }
    }

    /// Records the Maglev tables counted at `scale`.
    pub fn maglev_tables(&mut self, scale: usize, tables: u64) {
        self.maglev.push(MaglevRow { scale, tables });
    }

    pub fn push(&mut self, scale: usize, contender: Contender, sample: Sample) {
        match self
            .data
            .iter_mut()
            .find(|r| r.scale == scale && r.contender == contender)
        {
            Some(row) => row.samples.push(sample),
            None => self.data.push(Row {
                scale,
                contender,
                samples: vec![sample],
            }),
        }
    }

    pub fn control(&mut self, scale: usize, m: &bench_control::Measured) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        self.control.push(ControlRow {
            scale,
            endpoints_each: CONTROL_ENDPOINTS,
            cold_sync_ms: ms(m.cold_sync),
            change_median_ms: ms(m.change_median),
            change_min_ms: ms(m.change_min),
            change_max_ms: ms(m.change_max),
            rss_mib: m.rss_after_mib,
            start_to_first_sync_s: m.startup.as_secs_f64(),
            memlock_mib: m.memlock_mib(),
        });
    }

    pub fn load_time(&mut self, scale: usize, contender: Contender, took: Duration) {
        self.loads.push(LoadRow {
            scale,
            contender,
            seconds: took.as_secs_f64(),
        });
    }

    pub fn skip(&mut self, scale: usize, contender: Contender, e: &anyhow::Error) {
        self.skipped.push(Skipped {
            scale,
            contender,
            reason: format!("{e:#}")
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
        });
    }

    pub fn finish(&mut self, took: Duration) {
        self.duration_s = took.as_secs_f64();
    }

    fn row(&self, scale: usize, contender: Contender) -> Option<&Row> {
        self.data
            .iter()
            .find(|r| r.scale == scale && r.contender == contender)
    }

    fn load(&self, scale: usize, contender: Contender) -> Option<f64> {
        self.loads
            .iter()
            .find(|l| l.scale == scale && l.contender == contender)
            .map(|l| l.seconds)
    }

    /// The contenders present, in their canonical order.
    pub fn contenders(&self) -> Vec<Contender> {
        let mut c: Vec<Contender> = self.data.iter().map(|r| r.contender).collect();
        c.sort();
        c.dedup();
        c
    }
}

/// One measured quantity of a [`Sample`].
#[derive(Clone, Copy)]
pub struct Metric {
    pub title: &'static str,
    pub unit: &'static str,
    pub file: &'static str,
    pub higher_is_better: bool,
    pub get: fn(&Sample) -> f64,
    pub decimals: usize,
}

pub const METRICS: [Metric; 6] = [
    Metric {
        title: "New connections per second (connect, one request/response, close; 2 client threads)",
        unit: "conn/s",
        file: "conn-rate",
        higher_is_better: true,
        get: |s| s.conn_per_s,
        decimals: 0,
    },
    Metric {
        title: "Requests per second over 8 long-lived connections (wrk)",
        unit: "req/s",
        file: "request-rate",
        higher_is_better: true,
        get: |s| s.rr_per_s,
        decimals: 0,
    },
    Metric {
        title: "Bulk throughput, one TCP stream (iperf3)",
        unit: "Gbit/s",
        file: "bulk",
        higher_is_better: true,
        get: |s| s.bulk_gbps,
        decimals: 2,
    },
    Metric {
        title: "Connect latency to a random Service, p50",
        unit: "µs",
        file: "latency-p50",
        higher_is_better: false,
        get: |s| s.p50_us,
        decimals: 0,
    },
    Metric {
        title: "Connect latency to a random Service, p90",
        unit: "µs",
        file: "latency-p90",
        higher_is_better: false,
        get: |s| s.p90_us,
        decimals: 0,
    },
    Metric {
        title: "Connect latency to a random Service, p99",
        unit: "µs",
        file: "latency-p99",
        higher_is_better: false,
        get: |s| s.p99_us,
        decimals: 0,
    },
];

/// Median of a metric over a row's samples, and its min and max.
pub fn stats(row: &Row, metric: &Metric) -> (f64, f64, f64) {
    let mut v: Vec<f64> = row.samples.iter().map(metric.get).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = match n {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    (
        median,
        v.first().copied().unwrap_or(0.0),
        v.last().copied().unwrap_or(0.0),
    )
}

fn ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".to_owned(),
    }
}

/// The report; `plots` is the directory the SVGs are linked from.
pub fn markdown(r: &Results, plots: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Run {} on {} CPUs ({}), kernel {}, commit `{}`; {} round(s), {} s per timed workload, \
         {} latency connections; the whole run took {:.0} s{}.\n",
        r.date,
        r.cpus,
        r.cpu_model,
        r.kernel,
        r.commit,
        r.rounds,
        r.seconds_per_workload,
        r.latency_connections,
        r.duration_s,
        if r.quick {
            " (`--quick`: a smoke run, not for quoting)"
        } else {
            ""
        }
    );
    let tools: Vec<String> = r.tools.iter().map(|(n, v)| format!("{n}: {v}")).collect();
    let _ = writeln!(out, "Tools: {}.\n", tools.join("; "));
    let _ = writeln!(
        out,
        "Each cell is the median over the rounds, with min–max; ratios are of medians from this \
         run. Latency ratios below 1 and throughput ratios above 1 favour the contender. \
         The NodePort contenders (tc, iptables NodePort, nftables NodePort) are reached from \
         outside the node at a NodePort, masqueraded (`externalTrafficPolicy: Cluster`); their \
         × iptables column is against iptables' NodePort. \
         HAProxy serves only the measured Services, so it runs at the smallest scale.\n"
    );
    out.push_str(&headlines(r));
    for metric in &METRICS {
        let _ = writeln!(out, "### {}\n", metric.title);
        let _ = writeln!(
            out,
            "| Services | contender | median {} ({} is better) | min–max | × direct | × iptables |\n|---:|---|---:|---:|---:|---:|",
            metric.unit,
            if metric.higher_is_better {
                "higher"
            } else {
                "lower"
            }
        );
        for &scale in &r.scales {
            let base = |c| r.row(scale, c).map(|row| stats(row, metric).0);
            let direct = base(Contender::Direct);
            for c in r.contenders() {
                let Some(row) = r.row(scale, c) else { continue };
                // NodePort contenders against iptables' NodePort.
                let iptables = base(c.iptables_peer());
                let (m, lo, hi) = stats(row, metric);
                let d = metric.decimals;
                let _ = writeln!(
                    out,
                    "| {scale} | {} | {m:.d$} | {lo:.d$}–{hi:.d$} | {} | {} |",
                    c.label(),
                    ratio(m, direct),
                    ratio(m, iptables),
                );
            }
        }
        let _ = writeln!(out, "\n![{}]({plots}/{}.svg)\n", metric.title, metric.file);
    }
    let errors: u64 = r
        .data
        .iter()
        .flat_map(|row| &row.samples)
        .map(|s| s.errors)
        .sum();
    let _ = writeln!(out, "Failed connections over the whole run: {errors}.\n");
    out.push_str(&breakdown(r));
    for s in &r.skipped {
        let _ = writeln!(
            out,
            "**Not measured:** {} at {} Services: {}\n",
            s.contender.label(),
            s.scale,
            s.reason
        );
    }
    let _ = writeln!(
        out,
        "### Control plane\n\n\
         The proxy: N Services × {CONTROL_ENDPOINTS} endpoints from the fake API server (real list/watch), \
         its own metrics. kube-proxy's loaders: the same N Services (2 to 10 endpoints each, \
         {CONTROL_ENDPOINTS} on average) loaded into the iptables and nftables worlds above, \
         one load each (whole-table `iptables-restore`; kube-proxy's `--noflush` is slower still, \
         see `cargo xtask bench-baseline`).\n\n\
         | Services | proxy cold sync | one change, median (min–max) | proxy RSS | kernel map memory (memlock) | iptables-restore | nft -f | iptables-restore ÷ cold sync | nft -f ÷ cold sync |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for c in &r.control {
        let ipt = r.load(c.scale, Contender::Iptables);
        let nft = r.load(c.scale, Contender::Nftables);
        // A loader not timed at this scale: over its limit (here or at a
        // smaller scale), or not run.
        let ms = |v: Option<f64>, contender| match v {
            Some(s) => format!("{:.0} ms", s * 1e3),
            None if r.skipped.iter().any(|k| {
                k.scale == c.scale && k.contender == contender && k.reason.contains("limit")
            }) =>
            {
                "> limit".to_owned()
            }
            None => "–".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {:.1} ms | {:.2} ms ({:.2}–{:.2}) | {:.1} MiB | {:.1} MiB | {} | {} | {} | {} |",
            c.scale,
            c.cold_sync_ms,
            c.change_median_ms,
            c.change_min_ms,
            c.change_max_ms,
            c.rss_mib,
            c.memlock_mib,
            ms(ipt, Contender::Iptables),
            ms(nft, Contender::Nftables),
            ratio(ipt.unwrap_or(0.0) * 1e3, Some(c.cold_sync_ms)),
            ratio(nft.unwrap_or(0.0) * 1e3, Some(c.cold_sync_ms)),
        );
    }
    let _ = writeln!(out, "\n![control plane]({plots}/control-plane.svg)");
    out
}

/// The cost breakdown of every contender that ran eBPF programs or a proxy
/// process, per scale and workload (see [`cost`]).
fn breakdown(r: &Results) -> String {
    let mut rows = Vec::new();
    for &scale in &r.scales {
        for c in r.contenders() {
            let Some(row) = r.row(scale, c) else { continue };
            let mut workloads: Vec<&str> = Vec::new();
            for w in row.samples.iter().flat_map(|s| &s.costs) {
                if !workloads.contains(&w.workload.as_str()) {
                    workloads.push(&w.workload);
                }
            }
            for w in workloads {
                let same: Vec<&cost::WorkloadCost> = row
                    .samples
                    .iter()
                    .flat_map(|s| &s.costs)
                    .filter(|x| x.workload == w)
                    .collect();
                if let Some(t) = cost::total(&same)
                    && (!t.progs.is_empty() || t.proxy_cpu_ns.is_some())
                {
                    rows.push((scale, c.label(), t));
                }
            }
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    cost::table(&rows) + "\n"
}

/// The ratios the project's goals are stated in, from this run's medians.
fn headlines(r: &Results) -> String {
    let median =
        |scale: usize, c: Contender, m: usize| r.row(scale, c).map(|row| stats(row, &METRICS[m]).0);
    let ratio_of = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let (Some(&smallest), Some(&largest)) = (r.scales.iter().min(), r.scales.iter().max()) else {
        return String::new();
    };
    let mut lines = Vec::new();
    let mut line = |text: String, value: Option<f64>| {
        if let Some(v) = value {
            lines.push(format!("| {text} | {v:.2}× |"));
        }
    };
    for scale in &r.scales {
        line(
            format!("socket LB ÷ direct, new connections/s, {scale} Services"),
            ratio_of(
                median(*scale, Contender::SocketLb, 0),
                median(*scale, Contender::Direct, 0),
            ),
        );
    }
    line(
        format!("socket LB ÷ direct, requests/s, {largest} Services"),
        ratio_of(
            median(largest, Contender::SocketLb, 1),
            median(largest, Contender::Direct, 1),
        ),
    );
    line(
        format!("socket LB ÷ iptables, new connections/s, {largest} Services"),
        ratio_of(
            median(largest, Contender::SocketLb, 0),
            median(largest, Contender::Iptables, 0),
        ),
    );
    line(
        format!("socket LB ÷ nftables, new connections/s, {largest} Services"),
        ratio_of(
            median(largest, Contender::SocketLb, 0),
            median(largest, Contender::Nftables, 0),
        ),
    );
    line(
        format!("iptables p99 ÷ socket LB p99, connect latency, {largest} Services"),
        ratio_of(
            median(largest, Contender::Iptables, 5),
            median(largest, Contender::SocketLb, 5),
        ),
    );
    line(
        format!("userspace fallback ÷ direct, bulk throughput, {smallest} Services"),
        ratio_of(
            median(smallest, Contender::Userspace, 2),
            median(smallest, Contender::Direct, 2),
        ),
    );
    line(
        format!("userspace fallback ÷ HAProxy, bulk throughput, {smallest} Services"),
        ratio_of(
            median(smallest, Contender::Userspace, 2),
            median(smallest, Contender::Haproxy, 2),
        ),
    );
    line(
        format!("userspace fallback ÷ HAProxy, new connections/s, {smallest} Services"),
        ratio_of(
            median(smallest, Contender::Userspace, 0),
            median(smallest, Contender::Haproxy, 0),
        ),
    );
    for scale in &r.scales {
        line(
            format!("tc NodePort ÷ direct, new connections/s, {scale} Services"),
            ratio_of(
                median(*scale, Contender::Tc, 0),
                median(*scale, Contender::Direct, 0),
            ),
        );
    }
    // Maglev (the default) against random selection: the goal is equal
    // within noise. Memory: one 4 KiB MAGLEV element per Service port,
    // family and scope (`proxy_common::maglev::MAX_SIZE`).
    for scale in &r.scales {
        line(
            format!("tc NodePort Maglev ÷ random, new connections/s, {scale} Services"),
            ratio_of(
                median(*scale, Contender::Tc, 0),
                median(*scale, Contender::TcRandom, 0),
            ),
        );
    }
    for (what, m) in [("new connections/s", 0), ("requests/s", 1)] {
        for (peer, contender) in [
            ("iptables", Contender::IptablesNodeport),
            ("nftables", Contender::NftablesNodeport),
        ] {
            line(
                format!("tc NodePort ÷ {peer} NodePort, {what}, {largest} Services"),
                ratio_of(
                    median(largest, Contender::Tc, m),
                    median(largest, contender, m),
                ),
            );
        }
    }
    if largest != smallest {
        for (what, m) in [("new connections/s", 0), ("requests/s", 1)] {
            line(
                format!("tc NodePort flatness, {what}, {largest} ÷ {smallest} Services"),
                ratio_of(
                    median(largest, Contender::Tc, m),
                    median(smallest, Contender::Tc, m),
                ),
            );
        }
    }
    if let Some(c) = r.control.iter().find(|c| c.scale == largest) {
        for (tool, contender) in [
            ("iptables-restore", Contender::Iptables),
            ("nft -f", Contender::Nftables),
        ] {
            line(
                format!("{tool} load ÷ proxy cold sync, {largest} Services"),
                ratio_of(
                    r.load(largest, contender).map(|s| s * 1e3),
                    Some(c.cold_sync_ms),
                ),
            );
        }
    }
    // Kernel memory of the Maglev tables (`MAGLEV`, not preallocated): one
    // 4 KiB element per Service port, family and scope, shared by its
    // external frontends (each Service's NodePort is a frontend on each of
    // the node's addresses, all naming one table), counted in the tc
    // contender's `MAGLEV` after the rounds. A scale N holds N + 1
    // Services (N - 1 synthetic ones, the measured and the bulk one). Scales
    // not counted (older results) get no line.
    if !lines.is_empty() {
        for m in &r.maglev {
            lines.push(format!(
                "| Maglev tables (kernel memory), {} Services: {} tables × 4 KiB, {:.1} KiB \
                 per Service (of {}) | {} KiB |",
                m.scale,
                m.tables,
                m.tables as f64 * 4.0 / (m.scale + 1) as f64,
                m.scale + 1,
                m.tables * 4
            ));
        }
    }
    if lines.is_empty() {
        return String::new();
    }
    format!(
        "### Headline ratios\n\n| ratio of medians | value |\n|---|---:|\n{}\n\n",
        lines.join("\n")
    )
}

/// Writes `report.md`, `results.json` and the plots into `dir`.
pub fn write(dir: &Path, r: &Results) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = plot::all(dir, r)?;
    let md = dir.join("report.md");
    std::fs::write(&md, format!("# Benchmark report\n\n{}", markdown(r, ".")))
        .with_context(|| format!("writing {}", md.display()))?;
    let json = dir.join("results.json");
    std::fs::write(&json, serde_json::to_string_pretty(r)?)
        .with_context(|| format!("writing {}", json.display()))?;
    written.extend([md, json]);
    Ok(written)
}

/// Replaces the generated part of `BENCHMARKS.md` (between the markers) and
/// copies the plots to `docs/bench/`.
pub fn publish(root: &Path, dir: &Path, r: &Results) -> anyhow::Result<()> {
    const BEGIN: &str = "<!-- bench:begin (cargo xtask bench --publish writes this part) -->";
    const END: &str = "<!-- bench:end -->";
    let docs = root.join("docs/bench");
    std::fs::create_dir_all(&docs)?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "svg")
            && let Some(name) = path.file_name()
        {
            std::fs::copy(&path, docs.join(name))?;
        }
    }
    let file = root.join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let generated = format!("{BEGIN}\n{}\n{END}", markdown(r, "docs/bench"));
    let new = match (text.find(BEGIN), text.find(END)) {
        (Some(a), Some(b)) if b > a => {
            format!("{}{generated}{}", &text[..a], &text[b + END.len()..])
        }
        _ => format!("{text}\n{generated}\n"),
    };
    std::fs::write(&file, new).with_context(|| format!("writing {}", file.display()))
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(conn: f64) -> Sample {
        Sample {
            conn_per_s: conn,
            rr_per_s: 2.0 * conn,
            bulk_gbps: 1.0,
            p50_us: 10.0,
            p90_us: 20.0,
            p99_us: 30.0,
            errors: 0,
            costs: Vec::new(),
        }
    }

    #[test]
    fn the_report_has_the_cost_breakdown_summed_over_rounds() {
        let mut r = results();
        assert!(
            !markdown(&r, ".").contains("### Cost breakdown"),
            "no costs: no section"
        );
        for ns in [1_000, 3_000] {
            let mut s = sample(100.0);
            s.costs.push(cost::WorkloadCost {
                workload: "latency".into(),
                unit: "connection".into(),
                units: 10.0,
                progs: vec![cost::ProgCost {
                    program: "sock_connect4".into(),
                    runs: 10,
                    run_time_ns: ns,
                }],
                proxy_cpu_ns: None,
            });
            r.push(1, Contender::SocketLb, s);
        }
        let md = markdown(&r, ".");
        assert!(
            md.contains("| 1 | socket LB (this proxy) | latency | `sock_connect4` | 200 | 1.00 per connection | 200 |"),
            "{md}"
        );
    }

    fn results() -> Results {
        let settings = Settings {
            scales: vec![1, 1000],
            rounds: 3,
            seconds: 1.0,
            latency_connections: 10,
            changes: 1,
            contenders: Contender::ALL.to_vec(),
            quick: false,
        };
        let mut r = Results::new(&settings, vec![("wrk".into(), "4.1".into())]);
        for scale in [1, 1000] {
            for v in [100.0, 300.0, 200.0] {
                r.push(scale, Contender::Direct, sample(v));
                r.push(scale, Contender::Iptables, sample(v / 2.0));
            }
        }
        r.load_time(1000, Contender::Iptables, Duration::from_millis(500));
        r
    }

    #[test]
    fn control_rows_show_the_maps_memory_and_loaders_over_their_limit() {
        let mut r = results();
        r.control.push(ControlRow {
            scale: 1000,
            endpoints_each: 6,
            cold_sync_ms: 50.0,
            change_median_ms: 1.0,
            change_min_ms: 1.0,
            change_max_ms: 1.0,
            rss_mib: 10.0,
            start_to_first_sync_s: 0.1,
            memlock_mib: 212.5,
        });
        r.skip(
            1000,
            Contender::Nftables,
            &anyhow::anyhow!("did not finish within 240s; killed it")
                .context("over the 240 s load limit"),
        );
        let md = markdown(&r, ".");
        assert!(
            md.contains(
                "| 1000 | 50.0 ms | 1.00 ms (1.00–1.00) | 10.0 MiB | 212.5 MiB | 500 ms | > limit |"
            ),
            "{md}"
        );
    }

    #[test]
    fn median_min_max() {
        let r = results();
        let metric = &METRICS[0];
        let row = r.row(1, Contender::Direct).expect("row");
        assert_eq!(stats(row, metric), (200.0, 100.0, 300.0));
        let mut even = Row {
            scale: 1,
            contender: Contender::Direct,
            samples: vec![sample(1.0), sample(4.0)],
        };
        assert_eq!(stats(&even, metric).0, 2.5);
        even.samples.clear();
        assert_eq!(stats(&even, metric), (0.0, 0.0, 0.0));
    }

    #[test]
    fn markdown_has_ratios_against_direct_and_iptables() {
        let mut r = results();
        r.skip(
            1000,
            Contender::Nftables,
            &anyhow::anyhow!("nft -f did not finish\nmore"),
        );
        let md = markdown(&r, "plots");
        assert!(
            md.contains("| 1 | iptables (kube-proxy rules) | 100 | 50–150 | 0.50× | 1.00× |"),
            "{md}"
        );
        assert!(
            md.contains("| 1 | direct to backend | 200 | 100–300 | 1.00× | 2.00× |"),
            "{md}"
        );
        assert!(md.contains("![Bulk throughput, one TCP stream (iperf3)](plots/bulk.svg)"));
        assert!(md.contains("**Not measured:** nftables (kube-proxy rules) at 1000 Services: nft -f did not finish\n"));
    }

    #[test]
    fn headline_ratios_come_from_the_medians() {
        let mut r = results();
        for v in [100.0, 300.0, 200.0] {
            r.push(1000, Contender::SocketLb, sample(v * 0.9));
        }
        r.control.push(ControlRow {
            scale: 1000,
            endpoints_each: 6,
            cold_sync_ms: 50.0,
            change_median_ms: 1.0,
            change_min_ms: 1.0,
            change_max_ms: 1.0,
            rss_mib: 10.0,
            start_to_first_sync_s: 0.1,
            memlock_mib: 70.5,
        });
        let md = markdown(&r, ".");
        for line in [
            "| socket LB ÷ direct, new connections/s, 1000 Services | 0.90× |",
            "| socket LB ÷ iptables, new connections/s, 1000 Services | 1.80× |",
            "| iptables-restore load ÷ proxy cold sync, 1000 Services | 10.00× |",
        ] {
            assert!(md.contains(line), "missing {line:?} in\n{md}");
        }
        assert!(
            !md.contains("tc NodePort"),
            "no tc samples, no tc ratio: {md}"
        );
        // No socket-LB samples at 1 Service, no HAProxy: no ratio invented.
        assert!(!md.contains("new connections/s, 1 Services"), "{md}");
        assert!(!md.contains("HAProxy, bulk"), "{md}");
    }

    #[test]
    fn tc_nodeport_ratios_are_against_the_nodeport_baselines() {
        let mut r = results();
        for v in [100.0, 300.0, 200.0] {
            r.push(1, Contender::Tc, sample(v));
            r.push(1000, Contender::Tc, sample(v * 0.95));
            r.push(1000, Contender::IptablesNodeport, sample(v / 2.0));
            r.push(1000, Contender::NftablesNodeport, sample(v / 4.0));
        }
        let md = markdown(&r, ".");
        for line in [
            "| tc NodePort ÷ iptables NodePort, new connections/s, 1000 Services | 1.90× |",
            "| tc NodePort ÷ nftables NodePort, new connections/s, 1000 Services | 3.80× |",
            "| tc NodePort flatness, new connections/s, 1000 ÷ 1 Services | 0.95× |",
            // The table's × iptables column: against iptables' NodePort (190 ÷ 100).
            "| 1000 | tc NodePort (this proxy) | 190 | 95–285 | 0.95× | 1.90× |",
        ] {
            assert!(md.contains(line), "missing {line:?} in\n{md}");
        }
    }

    /// The Maglev memory lines come from the tables counted in `MAGLEV` (one
    /// per Service on the bench's node: its NodePort frontends on the two
    /// node addresses share it); a scale not counted gets none.
    #[test]
    fn maglev_memory_is_the_counted_tables() {
        let mut r = results();
        for v in [100.0, 300.0, 200.0] {
            r.push(1, Contender::Tc, sample(v));
            r.push(1000, Contender::Tc, sample(v));
        }
        r.maglev_tables(1000, 1001);
        let md = markdown(&r, ".");
        let line = "| Maglev tables (kernel memory), 1000 Services: 1001 tables × 4 KiB, 4.0 KiB \
                    per Service (of 1001) | 4004 KiB |";
        assert!(md.contains(line), "missing {line:?} in\n{md}");
        assert!(
            !md.contains("Maglev tables (kernel memory), 1 Services"),
            "{md}"
        );
    }

    #[test]
    fn write_and_publish() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("target/bench");
        let r = results();
        let written = write(&dir, &r).expect("write");
        assert!(written.iter().any(|p| p.ends_with("conn-rate.svg")));
        let svg = std::fs::read_to_string(dir.join("conn-rate.svg")).expect("svg");
        assert!(svg.starts_with("<svg") && svg.contains("iptables (kube-proxy rules)"));
        let md = root.path().join("BENCHMARKS.md");
        std::fs::write(&md, "# Benchmarks\n\nintro\n").expect("write");
        publish(root.path(), &dir, &r).expect("publish");
        publish(root.path(), &dir, &r).expect("publish twice");
        let text = std::fs::read_to_string(&md).expect("read");
        assert!(text.starts_with("# Benchmarks\n\nintro\n"));
        assert_eq!(
            text.matches("bench:begin").count(),
            1,
            "publishing replaces, not appends"
        );
        assert!(root.path().join("docs/bench/bulk.svg").exists());
    }
}
