//! The cost breakdown: what each eBPF program and the proxy process spent per
//! connection (or request) in one workload.
//!
//! While the bench runs it holds a `BPF_ENABLE_STATS` file descriptor
//! ([`StatsGuard`]), which turns `kernel.bpf_stats_enabled` on for as long as
//! it is open: the kernel turns it back off (or leaves it on, if someone else
//! had it on) when the bench exits, however it exits, Ctrl-C and panics
//! included. The kernel then keeps, per program, `run_cnt` and
//! `run_time_ns`; [`snapshot`] reads them (`BPF_OBJ_GET_INFO_BY_FD` through
//! aya) for the programs a world's proxy pinned links for, and
//! [`WorkloadCost::between`] turns two snapshots into ns per run and runs per
//! unit. The proxy's CPU time comes from `/proc/<pid>/stat` (utime + stime).

use std::{
    collections::BTreeMap,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use aya::programs::{
    links::{FdLink, PinnedLink},
    loaded_programs,
};
use serde::{Deserialize, Serialize};

/// Keeps the kernel's per-program run statistics on while it lives.
pub struct StatsGuard {
    _fd: OwnedFd,
}

impl StatsGuard {
    pub fn enable() -> anyhow::Result<Self> {
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .context("BPF_ENABLE_STATS (kernel.bpf_stats_enabled)")?;
        Ok(Self { _fd: fd })
    }
}

/// One program's cumulative counters at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgCounters {
    pub name: String,
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

/// Counters by program id, plus the proxy's CPU ticks, at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub progs: BTreeMap<u32, ProgCounters>,
    /// utime + stime of the proxy process, in clock ticks.
    pub proxy_ticks: Option<u64>,
}

/// What one program cost over one workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgCost {
    pub program: String,
    pub runs: u64,
    pub run_time_ns: u64,
}

impl ProgCost {
    /// Average ns per run; `None` when it never ran.
    pub fn ns_per_run(&self) -> Option<f64> {
        (self.runs > 0).then(|| self.run_time_ns as f64 / self.runs as f64)
    }
}

/// What a workload cost, per program and in the proxy process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkloadCost {
    /// The workload (`conn`, `rr`, `bulk`, `latency`, `connect-non-service`).
    pub workload: String,
    /// What one unit is (`connection`, `request`, `MiB`).
    pub unit: String,
    /// How many units the workload did.
    pub units: f64,
    /// Programs that ran at least once, by name.
    pub progs: Vec<ProgCost>,
    /// The proxy process's CPU time over the workload, ns (a contender
    /// without a proxy process: `None`).
    pub proxy_cpu_ns: Option<u64>,
}

impl WorkloadCost {
    /// The difference between two snapshots. Programs are summed by name (a
    /// name may be loaded more than once, for IPv4 and IPv6 say); a program
    /// that appeared or was reloaded in between counts from zero; counters
    /// never go backwards (a reload would) without it showing as zero.
    pub fn between(
        workload: &str,
        unit: &str,
        units: f64,
        before: &Snapshot,
        after: &Snapshot,
        tick_ns: u64,
    ) -> Self {
        let mut by_name: BTreeMap<&str, ProgCost> = BTreeMap::new();
        for (id, now) in &after.progs {
            let (cnt0, time0) = before
                .progs
                .get(id)
                .filter(|b| b.run_cnt <= now.run_cnt && b.run_time_ns <= now.run_time_ns)
                .map_or((0, 0), |b| (b.run_cnt, b.run_time_ns));
            let entry = by_name.entry(&now.name).or_insert_with(|| ProgCost {
                program: now.name.clone(),
                runs: 0,
                run_time_ns: 0,
            });
            entry.runs += now.run_cnt - cnt0;
            entry.run_time_ns += now.run_time_ns - time0;
        }
        let proxy_cpu_ns = match (before.proxy_ticks, after.proxy_ticks) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b) * tick_ns),
            _ => None,
        };
        WorkloadCost {
            workload: workload.to_owned(),
            unit: unit.to_owned(),
            units,
            progs: by_name.into_values().filter(|p| p.runs > 0).collect(),
            proxy_cpu_ns,
        }
    }

    /// Runs of `p` per unit.
    pub fn runs_per_unit(&self, p: &ProgCost) -> Option<f64> {
        (self.units > 0.0).then(|| p.runs as f64 / self.units)
    }

    /// The proxy's CPU µs per unit.
    pub fn proxy_us_per_unit(&self) -> Option<f64> {
        let ns = self.proxy_cpu_ns?;
        (self.units > 0.0).then(|| ns as f64 / 1e3 / self.units)
    }
}

/// Adds up the same workload's costs over several rounds (sums of runs and
/// time, so the average is over every run, not a mean of means).
pub fn total(costs: &[&WorkloadCost]) -> Option<WorkloadCost> {
    let first = costs.first()?;
    let mut progs: BTreeMap<String, ProgCost> = BTreeMap::new();
    let mut units = 0.0;
    let mut cpu: Option<u64> = None;
    for c in costs {
        units += c.units;
        if let Some(ns) = c.proxy_cpu_ns {
            *cpu.get_or_insert(0) += ns;
        }
        for p in &c.progs {
            let e = progs.entry(p.program.clone()).or_insert_with(|| ProgCost {
                program: p.program.clone(),
                runs: 0,
                run_time_ns: 0,
            });
            e.runs += p.runs;
            e.run_time_ns += p.run_time_ns;
        }
    }
    Some(WorkloadCost {
        workload: first.workload.clone(),
        unit: first.unit.clone(),
        units,
        progs: progs.into_values().collect(),
        proxy_cpu_ns: cpu,
    })
}

/// The cost-breakdown table: one row per program per workload, and one for
/// the proxy process. `rows` are `(Services, contender, totals)`.
pub fn table(rows: &[(usize, &str, WorkloadCost)]) -> String {
    let mut out = String::from(
        "### Cost breakdown\n\n\
         Per eBPF program (kernel run statistics, `kernel.bpf_stats_enabled` on during the run; \
         the statistics themselves add some tens of ns per run) and for the proxy process \
         (utime + stime from `/proc`, in clock ticks of 10 ms: coarse for a short workload, and no \
         row when not one tick was spent), summed over the rounds. `connect-non-service`: \
         connections from the client pod through the socket hooks to pod addresses that are \
         no Service. Programs that did not run are left out.\n\n\
         | Services | contender | workload | program | ns per run | runs per unit | ns per unit |\n\
         |---:|---|---|---|---:|---:|---:|\n",
    );
    for (scale, contender, c) in rows {
        let unit = &c.unit;
        for p in &c.progs {
            let per_run = p.ns_per_run().map_or("–".to_owned(), |v| format!("{v:.0}"));
            let runs = c.runs_per_unit(p);
            let per_unit = runs
                .zip(p.ns_per_run())
                .map_or("–".to_owned(), |(r, ns)| format!("{:.0}", r * ns));
            let runs = runs.map_or("–".to_owned(), runs_text);
            out.push_str(&format!(
                "| {scale} | {contender} | {} | `{}` | {per_run} | {runs} per {unit} | {per_unit} |\n",
                c.workload, p.program
            ));
        }
        if let Some(us) = c.proxy_us_per_unit().filter(|us| *us > 0.0) {
            out.push_str(&format!(
                "| {scale} | {contender} | {} | proxy process (CPU) | – | – | {:.0} |\n",
                c.workload,
                us * 1e3
            ));
        }
    }
    out
}

/// Runs per unit with two decimals, or two significant digits below 0.01
/// (a program that runs once per connection of a long-lived workload).
fn runs_text(r: f64) -> String {
    if r == 0.0 || r >= 0.01 {
        format!("{r:.2}")
    } else {
        format!("{r:.1e}")
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The
/// command name (field 2) is in parentheses and may hold spaces, so fields
/// are counted after its closing parenthesis.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ")": field 3 (state) is index 0, so field 14 is index 11.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Nanoseconds per clock tick (`sysconf(_SC_CLK_TCK)`).
pub fn tick_ns() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        1_000_000_000 / hz as u64
    } else {
        10_000_000
    }
}

fn proxy_ticks(pid: u32) -> Option<u64> {
    parse_stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every link pinned under `pin_path` (any layout version, cgroup and tc).
fn pinned_links(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            pinned_links(&path, out);
        } else if path.components().any(|c| c.as_os_str() == "links") {
            out.push(path);
        }
    }
}

/// The counters of the programs behind the links pinned under `pin_path`,
/// and the proxy's CPU ticks. Nothing pinned (a contender without eBPF): no
/// programs.
pub fn snapshot(pin_path: &Path, proxy_pid: Option<u32>) -> anyhow::Result<Snapshot> {
    let mut links = Vec::new();
    pinned_links(pin_path, &mut links);
    links.sort();
    // Program id → its full name: the pin's file name is the program's
    // (the kernel keeps only 15 characters: `sock_getpeernam`).
    let mut ids: BTreeMap<u32, String> = BTreeMap::new();
    for path in &links {
        let link = PinnedLink::from_pin(path)
            .with_context(|| format!("opening the pinned link {}", path.display()))?;
        let link: FdLink = link.into();
        let info = link
            .info()
            .with_context(|| format!("reading the link {}", path.display()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        ids.insert(info.program_id(), name);
    }
    let mut progs = BTreeMap::new();
    if !ids.is_empty() {
        // Programs of others may come and go while this walks the list (an
        // error for one of them); ours stay loaded while their links are pinned.
        for info in loaded_programs().filter_map(Result::ok) {
            if let Some(name) = ids.get(&info.id()) {
                progs.insert(
                    info.id(),
                    ProgCounters {
                        name: name.clone(),
                        run_cnt: info.run_count(),
                        run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                    },
                );
            }
        }
    }
    Ok(Snapshot {
        progs,
        proxy_ticks: proxy_pid.and_then(proxy_ticks),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(progs: &[(u32, &str, u64, u64)], ticks: Option<u64>) -> Snapshot {
        Snapshot {
            progs: progs
                .iter()
                .map(|&(id, name, run_cnt, run_time_ns)| {
                    (
                        id,
                        ProgCounters {
                            name: name.to_owned(),
                            run_cnt,
                            run_time_ns,
                        },
                    )
                })
                .collect(),
            proxy_ticks: ticks,
        }
    }

    #[test]
    fn deltas_per_program_summed_by_name() {
        let before = snap(
            &[
                (1, "sock_connect4", 10, 1_000),
                (2, "tc_ingress", 5, 500),
                (3, "tc_ingress", 0, 0),
                (4, "sock_recvmsg4", 7, 70),
            ],
            Some(100),
        );
        let after = snap(
            &[
                (1, "sock_connect4", 110, 41_000),
                (2, "tc_ingress", 15, 1_500),
                (3, "tc_ingress", 10, 3_000),
                (4, "sock_recvmsg4", 7, 70),
            ],
            Some(103),
        );
        let c = WorkloadCost::between("conn", "connection", 100.0, &before, &after, 10_000_000);
        assert_eq!(
            c.progs,
            vec![
                ProgCost {
                    program: "sock_connect4".into(),
                    runs: 100,
                    run_time_ns: 40_000
                },
                ProgCost {
                    program: "tc_ingress".into(),
                    runs: 20,
                    run_time_ns: 4_000
                },
            ],
            "programs that did not run are left out"
        );
        assert_eq!(c.progs[0].ns_per_run(), Some(400.0));
        assert_eq!(c.runs_per_unit(&c.progs[1]), Some(0.2));
        assert_eq!(c.proxy_cpu_ns, Some(30_000_000));
        assert_eq!(c.proxy_us_per_unit(), Some(300.0));
    }

    #[test]
    fn a_new_or_reloaded_program_counts_from_zero() {
        let before = snap(&[(1, "sock_connect4", 500, 9_000)], None);
        let after = snap(
            &[
                (1, "sock_connect4", 20, 2_000),
                (9, "sock_sendmsg4", 3, 300),
            ],
            None,
        );
        let c = WorkloadCost::between("conn", "connection", 0.0, &before, &after, 1);
        assert_eq!(c.progs[0].runs, 20);
        assert_eq!(c.progs[1].run_time_ns, 300);
        assert_eq!(c.proxy_cpu_ns, None);
        assert_eq!(c.runs_per_unit(&c.progs[0]), None, "no units: no ratio");
    }

    #[test]
    fn totals_sum_runs_and_time_over_rounds() {
        let round = |runs, ns, cpu| WorkloadCost {
            workload: "conn".into(),
            unit: "connection".into(),
            units: 10.0,
            progs: vec![ProgCost {
                program: "sock_connect4".into(),
                runs,
                run_time_ns: ns,
            }],
            proxy_cpu_ns: cpu,
        };
        let (a, b) = (round(10, 1_000, Some(5)), round(30, 1_000, None));
        let t = total(&[&a, &b]).expect("two rounds");
        assert_eq!(t.units, 20.0);
        assert_eq!(t.progs[0].runs, 40);
        assert_eq!(
            t.progs[0].ns_per_run(),
            Some(50.0),
            "not the mean of 100 and 33"
        );
        assert_eq!(t.proxy_cpu_ns, Some(5));
        assert!(total(&[]).is_none());
    }

    #[test]
    fn table_rows_per_program_and_for_the_proxy() {
        let c = WorkloadCost {
            workload: "conn".into(),
            unit: "connection".into(),
            units: 100.0,
            progs: vec![ProgCost {
                program: "sock_connect4".into(),
                runs: 200,
                run_time_ns: 60_000,
            }],
            proxy_cpu_ns: Some(5_000_000),
        };
        let c0 = c.clone();
        let t = table(&[(1000, "socket LB", c)]);
        assert!(
            t.contains(
                "| 1000 | socket LB | conn | `sock_connect4` | 300 | 2.00 per connection | 600 |"
            ),
            "{t}"
        );
        assert!(
            t.contains("| 1000 | socket LB | conn | proxy process (CPU) | – | – | 50000 |"),
            "{t}"
        );
        let idle = WorkloadCost {
            proxy_cpu_ns: Some(0),
            progs: Vec::new(),
            ..c0
        };
        assert!(
            !table(&[(1, "tc", idle)]).contains("proxy process (CPU)"),
            "not one tick: no row"
        );
    }

    #[test]
    fn small_run_ratios_keep_two_digits() {
        assert_eq!(runs_text(1.0), "1.00");
        assert_eq!(runs_text(0.0), "0.00");
        assert_eq!(runs_text(0.000_123), "1.2e-4");
    }

    #[test]
    fn stat_ticks_skip_a_command_with_spaces() {
        let line = "1234 (proxy run (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 4 0 12345 1000000 500 18446744073709551615";
        assert_eq!(parse_stat_ticks(line), Some(300));
        assert_eq!(parse_stat_ticks("garbage"), None);
        assert_eq!(parse_stat_ticks("1 (x) S 1 2"), None);
    }
}
