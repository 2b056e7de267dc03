//! One sample: every workload once, against one contender's world, each run
//! as the client pod and bounded in time.

use std::{fmt, path::Path, process::Command, time::Duration};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use super::{
    Settings, Targets, agent,
    cost::{self, Snapshot, WorkloadCost},
    world::World,
};
use crate::baseline;

/// `wrk`'s connections and threads for the request/response workload.
const RR_CONNECTIONS: usize = 8;
/// Slack on top of a workload's own length before it is killed.
const SLACK: Duration = Duration::from_secs(30);

/// What one round measured for one contender.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sample {
    /// New connections per second (each with one request/response).
    pub conn_per_s: f64,
    /// Requests per second over long-lived connections.
    pub rr_per_s: f64,
    /// Bulk throughput, Gbit/s.
    pub bulk_gbps: f64,
    /// Connect latency to a random Service, µs.
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    /// Failed connections in the connection-rate and latency workloads.
    pub errors: u64,
    /// What each workload cost per program and in the proxy process (empty
    /// in results from before the breakdown existed).
    #[serde(default)]
    pub costs: Vec<WorkloadCost>,
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>8.0} conn/s {:>8.0} req/s {:>6.2} Gbit/s  connect p50/p90/p99 {:.0}/{:.0}/{:.0} µs{}",
            self.conn_per_s,
            self.rr_per_s,
            self.bulk_gbps,
            self.p50_us,
            self.p90_us,
            self.p99_us,
            if self.errors > 0 {
                format!("  ({} errors)", self.errors)
            } else {
                String::new()
            }
        )
    }
}

/// Measures the cost of each workload while it runs (see [`cost`]).
struct Meter<'a> {
    world: &'a World,
    tick_ns: u64,
    costs: Vec<WorkloadCost>,
}

impl Meter<'_> {
    fn snapshot(&self) -> anyhow::Result<Snapshot> {
        cost::snapshot(&self.world.sandbox().pin_path(), self.world.proxy_pid())
    }

    /// Runs `f`, which returns its result and how many `unit`s it did.
    fn measure<T>(
        &mut self,
        workload: &str,
        unit: &str,
        f: impl FnOnce() -> anyhow::Result<(T, f64)>,
    ) -> anyhow::Result<T> {
        let before = self.snapshot()?;
        let (out, units) = f()?;
        let after = self.snapshot()?;
        self.costs.push(WorkloadCost::between(
            workload,
            unit,
            units,
            &before,
            &after,
            self.tick_ns,
        ));
        Ok(out)
    }
}

pub fn sample(
    agent: &Path,
    world: &World,
    targets: &Targets,
    s: &Settings,
) -> anyhow::Result<Sample> {
    let length = Duration::from_secs_f64(s.seconds);
    let mut m = Meter {
        world,
        tick_ns: cost::tick_ns(),
        costs: Vec::new(),
    };
    let conn = m.measure("conn", "connection", || {
        let c = conn_rate(agent, world, &targets.conn, length)?;
        let n = c.connections as f64;
        Ok((c, n))
    })?;
    let rr = m.measure("rr", "request", || {
        let r = request_rate(world, targets, length)?;
        let n = r.requests;
        Ok((r, n))
    })?;
    let bulk = m.measure("bulk", "MiB", || {
        let b = bulk(world, targets, length)?;
        let mib = b.bytes / (1024.0 * 1024.0);
        Ok((b, mib))
    })?;
    let lat = m.measure("latency", "connection", || {
        let l = latency(agent, world, &targets.latency, s.latency_connections)?;
        let n = l.samples as f64;
        Ok((l, n))
    })?;
    let mut errors = conn.errors + lat.errors;
    if let Some(others) = &targets.non_service {
        // The socket hooks' cost when the destination is no Service.
        let l = m.measure("connect-non-service", "connection", || {
            let l = latency(agent, world, others, s.latency_connections)?;
            let n = l.samples as f64;
            Ok((l, n))
        })?;
        errors += l.errors;
    }
    Ok(Sample {
        conn_per_s: conn.connections as f64 / conn.seconds,
        rr_per_s: rr.per_s,
        bulk_gbps: bulk.gbps,
        p50_us: lat.p50_us,
        p90_us: lat.p90_us,
        p99_us: lat.p99_us,
        errors,
        costs: m.costs,
    })
}

fn run_client(world: &World, mut cmd: Command, limit: Duration) -> anyhow::Result<String> {
    world.client_command(&mut cmd)?;
    Ok(baseline::run_checked(cmd, limit)?.stdout)
}

fn conn_rate(
    agent: &Path,
    world: &World,
    targets: &[std::net::SocketAddr],
    length: Duration,
) -> anyhow::Result<agent::ConnResult> {
    let mut cmd = Command::new(agent);
    cmd.args([
        "bench-agent",
        "conn",
        "--seconds",
        &length.as_secs_f64().to_string(),
        "--targets",
    ])
    .arg(join(targets));
    let out = run_client(world, cmd, length + SLACK)?;
    parse_outcome(&out)
}

/// What `wrk` reported.
struct RequestRate {
    per_s: f64,
    /// Requests done in all (its `N requests in` line).
    requests: f64,
}

/// `wrk` over long-lived connections; its `Requests/sec:` line.
fn request_rate(world: &World, t: &Targets, length: Duration) -> anyhow::Result<RequestRate> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        &format!("-c{RR_CONNECTIONS}"),
        &format!("-d{}s", length.as_secs().max(1)),
        &format!("http://{}/", t.rr),
    ]);
    let out = run_client(world, cmd, length + SLACK)?;
    if let Some(line) = out
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
    {
        bail!("wrk saw errors: {line}");
    }
    let per_s = out
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{out}"))?;
    Ok(RequestRate {
        per_s,
        requests: wrk_requests(&out).unwrap_or(per_s * length.as_secs().max(1) as f64),
    })
}

/// The total of wrk's `  12345 requests in 3.00s, 1.2MB read` line.
fn wrk_requests(out: &str) -> Option<f64> {
    out.lines().find_map(|l| {
        let (n, rest) = l.trim().split_once(' ')?;
        rest.starts_with("requests in").then(|| n.parse().ok())?
    })
}

/// What iperf3 reported.
struct Bulk {
    gbps: f64,
    /// Bytes received.
    bytes: f64,
}

/// `iperf3 -J`, one stream; the receiver's rate in Gbit/s.
fn bulk(world: &World, t: &Targets, length: Duration) -> anyhow::Result<Bulk> {
    let mut cmd = Command::new("iperf3");
    cmd.args([
        "-c",
        &t.bulk.ip().to_string(),
        "-p",
        &t.bulk.port().to_string(),
        "-t",
        &length.as_secs().max(1).to_string(),
        "-J",
    ]);
    let out = run_client(world, cmd, length + SLACK)?;
    let v: serde_json::Value = serde_json::from_str(&out).context("parsing iperf3 -J")?;
    let gbps = v
        .pointer("/end/sum_received/bits_per_second")
        .and_then(serde_json::Value::as_f64)
        .map(|bps| bps / 1e9)
        .with_context(|| {
            format!(
                "no end.sum_received.bits_per_second in iperf3's output: {}",
                v.get("error").unwrap_or(&v)
            )
        })?;
    let bytes = v
        .pointer("/end/sum_received/bytes")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0);
    Ok(Bulk { gbps, bytes })
}

fn latency(
    agent: &Path,
    world: &World,
    targets: &[std::net::SocketAddr],
    count: usize,
) -> anyhow::Result<agent::LatencyResult> {
    let file = world.sandbox().dir().join("latency-targets");
    std::fs::write(
        &file,
        targets.iter().map(|a| format!("{a}\n")).collect::<String>(),
    )?;
    let mut cmd = Command::new(agent);
    cmd.args([
        "bench-agent",
        "latency",
        "--count",
        &count.to_string(),
        "--targets-file",
    ])
    .arg(&file);
    let out = run_client(world, cmd, Duration::from_secs(120))?;
    parse_outcome(&out)
}

/// Parses a load generator's JSON line; an error when nothing succeeded, a
/// note when some connections failed.
fn parse_outcome<T: agent::Outcome + serde::de::DeserializeOwned>(out: &str) -> anyhow::Result<T> {
    let r: T = serde_json::from_str(out.trim())
        .with_context(|| format!("parsing the load generator's {out:?}"))?;
    let (succeeded, errors, first_error) = r.outcome();
    if succeeded == 0 {
        bail!(
            "no connection succeeded: {}",
            first_error.unwrap_or_default()
        );
    }
    if let Some(e) = first_error {
        eprintln!("bench: {errors} failed connections, the first: {e}");
    }
    Ok(r)
}

fn join(addrs: &[std::net::SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_total_requests() {
        let out = "Running 3s test @ http://10.100.0.1:80/\n  1 threads and 8 connections\n  \
                   84512 requests in 3.00s, 6.53MB read\nRequests/sec:  28170.12\n";
        assert_eq!(wrk_requests(out), Some(84512.0));
        assert_eq!(wrk_requests("Requests/sec: 1\n"), None);
    }
}
