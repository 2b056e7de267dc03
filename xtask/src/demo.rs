//! `cargo xtask demo`: a narrated tour of what the proxy does, on real sockets in
//! a throwaway sandbox (network namespace, child cgroup, private bpffs; see the
//! `proxy-tests` kit). It copies `examples/` into a watched directory, sends
//! requests to the ClusterIP, edits the EndpointSlice twice (scale down, then to
//! zero) and shows the effect of each edit. Everything it creates is removed at
//! the end, also on error; every wait is bounded (the whole tour takes seconds).

use std::{
    collections::BTreeMap,
    fs,
    io::ErrorKind,
    net::{IpAddr, SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use proxy_tests::{
    ProxyProcess, Sandbox, TcpBackend, examples_dir,
    manifest::{self, AddressType, Endpoint, EndpointSlice, Protocol},
    tcp_peer_name, tcp_request, tcp_request_timeout, wait_until,
};

/// What `examples/` declares (checked against the files before use).
const NAMESPACE: &str = "demo";
const SERVICE: &str = "hello";
const VIP4: &str = "10.96.0.10";
const VIP6: &str = "fd00:96::10";
const PORT: u16 = 80;
const TARGET_PORT: u16 = 8080;
const SLICE_FILE: &str = "hello-endpointslice.yaml";
const SLICE_NAME: &str = "hello-7xk2p";
/// The three pods behind `hello`: name, IPv4 address, IPv6 address.
const PODS: [(&str, &str, &str); 3] = [
    ("hello-a", "10.244.0.11", "fd00:244::11"),
    ("hello-b", "10.244.0.12", "fd00:244::12"),
    ("hello-c", "10.244.0.13", "fd00:244::13"),
];
/// A ClusterIP no Service has: shows what the sandbox does without the proxy.
const NO_SERVICE_VIP: &str = "10.96.0.99";

const REQUESTS: usize = 12;
const STARTUP: Duration = Duration::from_secs(15);
const PROPAGATION: Duration = Duration::from_secs(5);

fn sock(ip: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let ip: IpAddr = ip
        .parse()
        .with_context(|| format!("{ip:?} is not an IP address"))?;
    Ok(SocketAddr::new(ip, port))
}

/// `42 µs` below a millisecond, `45.4 ms` above.
fn ms(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{} µs", d.as_micros())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

pub fn run(proxy_bin: &Path) -> anyhow::Result<()> {
    println!("eBPF service proxy: demo");
    println!("========================");
    println!();
    println!("The proxy turns connections to a Kubernetes ClusterIP into connections to one");
    println!("of the Service's endpoints. It does that inside connect() and sendmsg(), with");
    println!("eBPF programs on a cgroup: no NAT, no conntrack, no extra hop.");
    println!();
    println!("Everything below runs in a throwaway sandbox: its own network namespace (the");
    println!("host's network is never touched), a child cgroup the proxy attaches to, and a");
    println!("private bpffs for its pinned maps.");
    println!();

    println!("1. Setting up");
    let mut sandbox = Sandbox::new()
        .context("creating the sandbox (the demo needs root: netns, cgroups, bpffs)")?;
    sandbox.enter().context("entering the sandbox")?;
    println!("   network namespace  {}", sandbox.netns_name());
    println!(
        "                      (10.96.0.0/12 and fd00:96::/108 lead to a dead end there: without"
    );
    println!("                      the proxy, a connect to a ClusterIP would just hang)");
    println!("   cgroup             {}", sandbox.cgroup_path().display());

    let mut backends = Vec::new();
    for (name, v4, v6) in PODS {
        for ip in [v4, v6] {
            let addr = sock(ip, TARGET_PORT)?;
            sandbox
                .add_local_addr(addr.ip())
                .with_context(|| format!("adding {ip} for {name}"))?;
            backends
                .push(TcpBackend::start(addr, name).with_context(|| format!("starting {name}"))?);
        }
        println!("   backend pod        {name:<8} {v4}:{TARGET_PORT}  [{v6}]:{TARGET_PORT}");
    }

    let manifests = sandbox.manifests_dir();
    copy_examples(&manifests)?;

    println!(
        "   proxy              proxy run --manifests {}",
        manifests.display()
    );
    println!(
        "                                --cgroup {}",
        sandbox.cgroup_path().display()
    );
    println!(
        "                                --pin-path {}",
        sandbox.pin_path().display()
    );
    let started = Instant::now();
    let mut proxy =
        ProxyProcess::start(proxy_bin, &sandbox, &manifests).context("starting the proxy")?;
    let result = tour(&mut proxy, &manifests, started);
    if result.is_err() {
        eprintln!(
            "\n----- proxy log ({}) -----\n{}----- end of proxy log -----",
            proxy.log_path().display(),
            proxy.log()
        );
    }
    result?;

    println!();
    println!("6. Cleaning up");
    let status = proxy.stop().context("stopping the proxy")?;
    println!("   proxy stopped with SIGTERM: {status}");
    println!("   (on exit it leaves its programs attached and maps pinned, so traffic keeps");
    println!("   flowing while it restarts; here the sandbox's bpffs and cgroup go away next)");
    drop(proxy);
    drop(backends);
    let netns = sandbox.netns_name().to_owned();
    drop(sandbox);
    println!("   removed namespace {netns}, its cgroup and bpffs");
    Ok(())
}

/// Copies the `*.yaml` files of `examples/` into `dir` and prints what they hold.
fn copy_examples(dir: &Path) -> anyhow::Result<()> {
    let src = examples_dir();
    let mut files: Vec<_> = fs::read_dir(&src)
        .with_context(|| format!("reading {}", src.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut all = String::new();
    for file in &files {
        let name = file.file_name().context("a file name")?;
        let text =
            fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        manifest::write_atomic(dir, &name.to_string_lossy(), &text)
            .with_context(|| format!("copying {}", file.display()))?;
        all.push_str(&text);
    }
    for needle in [VIP4, VIP6, SLICE_NAME] {
        if !all.contains(needle) {
            bail!("examples/ no longer mentions {needle}; update xtask/src/demo.rs to match");
        }
    }
    println!(
        "   manifests          copied from examples/ ({} files, as `kubectl get -o yaml` prints them):",
        files.len()
    );
    println!(
        "                      Service {NAMESPACE}/{SERVICE}     ClusterIP {VIP4}, port {PORT} -> targetPort {TARGET_PORT}"
    );
    println!(
        "                      Service {NAMESPACE}/{SERVICE}-v6  ClusterIP {VIP6}, port {PORT} -> targetPort {TARGET_PORT}"
    );
    println!("                      EndpointSlices listing the three pods (ready) for each");
    Ok(())
}

fn tour(proxy: &mut ProxyProcess, manifests: &Path, started: Instant) -> anyhow::Result<()> {
    let vip = sock(VIP4, PORT)?;
    let vip6 = sock(VIP6, PORT)?;
    let mut last = None;
    let ready = wait_until(STARTUP, || {
        if proxy.exited().is_some() {
            return true;
        }
        last = Some(tcp_request_timeout(vip, Duration::from_millis(300)));
        matches!(last, Some(Ok(_)))
    });
    if let Some(status) = proxy.exited() {
        bail!("the proxy exited during start-up: {status}");
    }
    if !ready {
        bail!("{vip} was not served within {STARTUP:?}; last attempt: {last:?}");
    }
    println!(
        "   ready: {vip} answered {:.2} s after the proxy started",
        started.elapsed().as_secs_f64()
    );

    println!();
    println!("2. {REQUESTS} requests to the ClusterIP {vip}, each on a new TCP connection");
    let tally = requests(vip, REQUESTS, true)?;
    print_tally(&tally);
    let peer = tcp_peer_name(vip).context("connecting to the VIP")?;
    println!("   The client never learns the pod's address: getpeername() on its socket says");
    println!("   {peer}, though the bytes go straight to a pod at port {TARGET_PORT}.");
    println!();
    println!("   The same over IPv6, to {vip6}:");
    let tally6 = requests(vip6, 6, false)?;
    print_tally(&tally6);

    println!();
    println!("3. Scale down: pod hello-c goes away. Rewrite {SLICE_FILE} without 10.244.0.13,");
    println!("   as the EndpointSlice controller would.");
    let (live, gone) = (&PODS[..2], PODS[2].0);
    let changed = Instant::now();
    write_slice(manifests, live)?;
    let converged = wait_until(PROPAGATION, || {
        tcp_requests_quietly(vip, 10).is_some_and(|seen| !seen.contains_key(gone))
    });
    if !converged {
        bail!("new connections still reached {gone} {PROPAGATION:?} after the edit");
    }
    println!(
        "   new connections stopped reaching {gone} within {}",
        ms(changed.elapsed())
    );
    let tally = requests(vip, REQUESTS, false)?;
    print_tally(&tally);
    if tally.contains_key(gone) {
        bail!("{gone} still answered after it was removed");
    }

    println!();
    println!("4. Scale to zero: the EndpointSlice has no endpoints left.");
    write_slice(manifests, &[])?;
    let refused = wait_until(PROPAGATION, || {
        matches!(
            TcpStream::connect_timeout(&vip, Duration::from_millis(300)),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused
        )
    });
    if !refused {
        bail!("{vip} was not refused {PROPAGATION:?} after scaling to zero");
    }
    let start = Instant::now();
    let result = TcpStream::connect_timeout(&vip, Duration::from_secs(2));
    let took = start.elapsed();
    match result {
        Err(e) => println!("   connect({vip}) -> \"{e}\" after {}", ms(took)),
        Ok(_) => bail!("{vip} accepted a connection with no endpoints"),
    }
    println!("   Like kube-proxy, the proxy rejects at once instead of leaving clients waiting.");
    let nothing = sock(NO_SERVICE_VIP, PORT)?;
    let start = Instant::now();
    let result = tcp_request_timeout(nothing, Duration::from_secs(1));
    println!(
        "   Compare {nothing}, a ClusterIP no Service has: the proxy leaves it alone, and the"
    );
    println!(
        "   connect just hangs ({} after {:.1} s).",
        result
            .err()
            .map_or_else(|| "answered?!".to_owned(), |e| e.to_string()),
        start.elapsed().as_secs_f64()
    );

    println!();
    println!("5. Scale back up to three pods: traffic returns.");
    write_slice(manifests, &PODS)?;
    if !wait_until(PROPAGATION, || {
        tcp_request_timeout(vip, Duration::from_millis(300)).is_ok()
    }) {
        bail!("{vip} was not served again {PROPAGATION:?} after scaling up");
    }
    let tally = requests(vip, REQUESTS, false)?;
    print_tally(&tally);
    if let Some(status) = proxy.exited() {
        bail!("the proxy exited during the tour: {status}");
    }
    Ok(())
}

/// Rewrites the IPv4 EndpointSlice of `hello` with these pods, atomically.
fn write_slice(dir: &Path, pods: &[(&str, &str, &str)]) -> anyhow::Result<()> {
    let mut slice = EndpointSlice::new(NAMESPACE, SLICE_NAME, SERVICE, AddressType::IPv4).port(
        "http",
        Protocol::Tcp,
        TARGET_PORT,
    );
    for (_, v4, _) in pods {
        slice = slice.endpoint(Endpoint::ready(v4));
    }
    manifest::write_atomic(dir, SLICE_FILE, &slice.to_yaml())
        .with_context(|| format!("rewriting {SLICE_FILE}"))?;
    let list: Vec<&str> = pods.iter().map(|(name, _, _)| *name).collect();
    println!(
        "   wrote {SLICE_FILE}: endpoints [{}]",
        if list.is_empty() {
            "none".to_owned()
        } else {
            list.join(", ")
        }
    );
    Ok(())
}

/// `n` requests; prints one line per request when `verbose`.
fn requests(vip: SocketAddr, n: usize, verbose: bool) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut tally = BTreeMap::new();
    for i in 1..=n {
        let reply = tcp_request(vip).with_context(|| format!("request {i} to {vip}"))?;
        if verbose {
            let (pod_v4, pod_v6) = PODS
                .iter()
                .find(|(name, _, _)| *name == reply.backend)
                .map_or(("?", "?"), |(_, v4, v6)| (*v4, *v6));
            let pod = if vip.is_ipv4() { pod_v4 } else { pod_v6 };
            println!(
                "   #{i:<2} {vip} -> answered by {:<8} (pod {pod}:{TARGET_PORT})",
                reply.backend
            );
        }
        *tally.entry(reply.backend).or_insert(0) += 1;
    }
    Ok(tally)
}

/// Requests that may fail (while a change propagates): `None` on any failure.
fn tcp_requests_quietly(vip: SocketAddr, n: usize) -> Option<BTreeMap<String, usize>> {
    let mut tally = BTreeMap::new();
    for _ in 0..n {
        let reply = tcp_request_timeout(vip, Duration::from_millis(300)).ok()?;
        *tally.entry(reply.backend).or_insert(0) += 1;
    }
    Some(tally)
}

fn print_tally(tally: &BTreeMap<String, usize>) {
    let total: usize = tally.values().sum();
    let parts: Vec<String> = PODS
        .iter()
        .map(|(name, _, _)| format!("{name} {}", tally.get(*name).copied().unwrap_or(0)))
        .collect();
    println!("   tally of {total}: {}", parts.join(", "));
}
