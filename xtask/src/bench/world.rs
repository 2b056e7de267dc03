//! One contender's world: the topology every workload runs through.
//!
//! ```text
//!  client netns                 node netns (a kit Sandbox:            backend netns
//!  (a pod: 10.244.254.2)        cgroup, bpffs, dead-end routes)       (pods: 10.244.255.1-10)
//!  eth0 ───────── veth ──────── cli0 10.244.254.1   be0 10.244.255.254 ─── veth ─── eth0
//!  default via 10.244.254.1     forwarding on (off on the dead end)        default via .254
//! ```
//!
//! The client is a pod on the node: its IP is inside the cluster CIDR, so
//! kube-proxy's rules DNAT without masquerading, as for pod-to-Service traffic.
//! Its processes run in the node sandbox's cgroup, where the socket hooks are
//! attached (cgroup hooks follow the process, whatever its network namespace).
//! For the NodePort contenders ([`World::set_external_client`]) the client's
//! processes stay out of that cgroup: it is an outside client, and only the
//! per-packet path sees its traffic.
//! The backends are a small HTTP server and `iperf3 -s`, both in the backend
//! namespace. Every world is its own sandbox, so worlds can exist side by side
//! and one contender's rules or hooks never see another's traffic.
//!
//! Safety: nothing here touches the root namespace or the root cgroup. All
//! addresses live in namespaces this module created; the extra namespaces are
//! named after the sandbox's (`pxt-<pid>-<n>-cli`, `-be`), so the kit's sweep
//! removes them when a run is killed, and `Drop` removes them otherwise.

use std::{
    fs::File,
    net::Ipv4Addr,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use proxy_tests::Sandbox;

/// The client pod's address and its gateway (the node's end of the veth).
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 254, 2);
const CLIENT_GW: Ipv4Addr = Ipv4Addr::new(10, 244, 254, 1);
/// The node's address the client reaches NodePorts at (its end of the client link).
pub const NODE: Ipv4Addr = CLIENT_GW;
/// The node's devices towards the client and towards the backends: the tc
/// contender's `--devices` (replies to SNATed flows come back on `be0`).
pub const DEVICES: &str = "cli0,be0";
/// The node's end of the backend link, and the backend pods' gateway.
const BACKEND_GW: Ipv4Addr = Ipv4Addr::new(10, 244, 255, 254);
/// Backend pod addresses: 10.244.255.1 ..= 10.244.255.BACKENDS.
pub const BACKENDS: u8 = 10;
/// The HTTP backends' port, and iperf3's.
pub const HTTP_PORT: u16 = 8080;
pub const IPERF_PORT: u16 = 5201;
/// What [`World::spawn_on_node`] calls the proxy process.
pub const PROXY: &str = "proxy run";
/// Bound on every helper command.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// Backend pod `i` (0-based).
pub fn backend(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 255, i % BACKENDS + 1)
}

/// A namespace of the world's own, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn create(name: String) -> anyhow::Result<Self> {
        if Path::new("/run/netns").join(&name).exists() {
            ip(&["netns", "del", &name])?;
        }
        ip(&["netns", "add", &name])?;
        Ok(Self { name })
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("bench: could not delete netns {}: {e:#}", self.name);
        }
    }
}

/// A child process killed (and reaped) on drop; it also gets SIGKILL if the
/// bench dies (`PR_SET_PDEATHSIG`).
pub struct Spawned {
    what: String,
    child: Child,
}

impl Spawned {
    /// Whether it is still running; an error names it when it has exited.
    pub fn check(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early ({status})", self.what);
        }
        Ok(())
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The world of one contender. Fields drop in order: processes first, then the
/// namespaces, then the node sandbox.
pub struct World {
    processes: Vec<Spawned>,
    /// The client runs outside the node's cgroup (see the module docs).
    external_client: bool,
    client: Netns,
    backends: Netns,
    node: Sandbox,
}

impl World {
    /// Builds the topology and starts the backends.
    pub fn new(server: &Command) -> anyhow::Result<Self> {
        let node = Sandbox::new()?;
        let n = node.netns_name().to_owned();
        let client = Netns::create(format!("{n}-cli"))?;
        let backends = Netns::create(format!("{n}-be"))?;
        let mut world = World {
            processes: Vec::new(),
            external_client: false,
            client,
            backends,
            node,
        };
        world.wire()?;
        world.start_backends(server)?;
        Ok(world)
    }

    fn wire(&self) -> anyhow::Result<()> {
        let (node, cli, be) = (
            self.node.netns_name(),
            self.client.name.as_str(),
            self.backends.name.as_str(),
        );
        let gw_c = format!("{CLIENT_GW}/24");
        let gw_b = format!("{BACKEND_GW}/24");
        let client = format!("{CLIENT}/24");
        for args in [
            vec![
                "-n", node, "link", "add", "cli0", "type", "veth", "peer", "name", "eth0", "netns",
                cli,
            ],
            vec![
                "-n", node, "link", "add", "be0", "type", "veth", "peer", "name", "eth0", "netns",
                be,
            ],
            vec!["-n", node, "addr", "add", &gw_c, "dev", "cli0"],
            vec!["-n", node, "addr", "add", &gw_b, "dev", "be0"],
            vec!["-n", node, "link", "set", "cli0", "up"],
            vec!["-n", node, "link", "set", "be0", "up"],
            vec!["-n", cli, "link", "set", "lo", "up"],
            vec!["-n", cli, "addr", "add", &client, "dev", "eth0"],
            vec!["-n", cli, "link", "set", "eth0", "up"],
            vec![
                "-n",
                cli,
                "route",
                "add",
                "default",
                "via",
                &CLIENT_GW.to_string(),
            ],
            vec!["-n", be, "link", "set", "lo", "up"],
            vec!["-n", be, "link", "set", "eth0", "up"],
        ] {
            ip(&args)?;
        }
        for i in 0..BACKENDS {
            ip(&[
                "-n",
                be,
                "addr",
                "add",
                &format!("{}/24", backend(i)),
                "dev",
                "eth0",
            ])?;
        }
        ip(&[
            "-n",
            be,
            "route",
            "add",
            "default",
            "via",
            &BACKEND_GW.to_string(),
        ])?;
        // The node forwards between the pods; the sandbox's dead end (pxv1) keeps
        // forwarding off, so a packet that escapes translation still dies there.
        self.sysctl(
            &self.node_netns(),
            &[
                ("net.ipv4.conf.all.forwarding", "1"),
                ("net.ipv4.conf.pxv1.forwarding", "0"),
            ],
        )?;
        // Short conntrack TIME_WAIT, so connection-rate runs through the
        // netfilter contenders do not fill the table (best effort: the knob
        // exists only once conntrack is loaded).
        let _ = self.sysctl(
            &self.node_netns(),
            &[("net.netfilter.nf_conntrack_tcp_timeout_time_wait", "10")],
        );
        self.sysctl(
            &self.client.path(),
            &[
                ("net.ipv4.ip_local_port_range", "10000 65000"),
                ("net.ipv4.tcp_tw_reuse", "1"),
            ],
        )?;
        self.sysctl(
            &self.backends.path(),
            &[
                ("net.core.somaxconn", "4096"),
                ("net.ipv4.tcp_max_syn_backlog", "4096"),
                // The backends close first (see `agent.rs`), so TIME_WAIT is
                // theirs. Through a NodePort every contender SNATs to the one
                // node address, and at thousands of connections per second a
                // reused (node address, port) meets a TIME_WAIT socket whose
                // SYN check fails about half the time (1 s retransmit). That is
                // an artifact of this one-client, one-node shape, the same for
                // kube-proxy's masquerade and ours: keep no TIME_WAIT here.
                ("net.ipv4.tcp_max_tw_buckets", "0"),
            ],
        )?;
        Ok(())
    }

    fn sysctl(&self, netns: &Path, pairs: &[(&str, &str)]) -> anyhow::Result<()> {
        for (key, value) in pairs {
            let mut cmd = Command::new("nsenter");
            cmd.arg(format!("--net={}", netns.display())).args([
                "--",
                "sysctl",
                "-qw",
                &format!("{key}={value}"),
            ]);
            crate::baseline::run_checked(cmd, COMMAND_LIMIT)?;
        }
        Ok(())
    }

    fn start_backends(&mut self, server: &Command) -> anyhow::Result<()> {
        let mut http = clone_command(server);
        let http = self.spawn_backend("the HTTP backends", &mut http)?;
        let mut iperf = Command::new("iperf3");
        iperf.args(["-s", "-p", &IPERF_PORT.to_string()]);
        let iperf = self.spawn_backend("iperf3 -s", &mut iperf)?;
        self.processes.extend([http, iperf]);
        Ok(())
    }

    fn spawn_backend(&self, what: &str, cmd: &mut Command) -> anyhow::Result<Spawned> {
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        spawn(what, cmd, &self.backends.path(), None)
    }

    /// Starts a long-running process in the node namespace (a proxy, HAProxy).
    /// It stays in this process's cgroup: the socket hooks are not for it.
    pub fn spawn_on_node(&mut self, what: &str, cmd: &mut Command) -> anyhow::Result<()> {
        let child = spawn(what, cmd, &self.node_netns(), None)?;
        self.processes.push(child);
        Ok(())
    }

    /// The pid of the proxy (`proxy run`), if this world runs one.
    pub fn proxy_pid(&self) -> Option<u32> {
        self.processes
            .iter()
            .find(|p| p.what == PROXY)
            .map(|p| p.child.id())
    }

    /// Checks that every process of the world is still running.
    pub fn check(&mut self) -> anyhow::Result<()> {
        self.processes.iter_mut().try_for_each(Spawned::check)
    }

    /// From now on the client is outside the node: its commands stay out of
    /// the node's cgroup, so no socket hook sees them.
    pub fn set_external_client(&mut self) {
        self.external_client = true;
    }

    /// `cmd` prepared to run as the client: in the client namespace, and in
    /// the node's cgroup unless the client is external. Run it with
    /// [`crate::baseline::run_checked`].
    pub fn client_command(&self, cmd: &mut Command) -> anyhow::Result<()> {
        let cgroup = (!self.external_client).then(|| self.node.cgroup_path());
        prepare(cmd, &self.client.path(), cgroup)
    }

    /// `/run/netns/<node>`.
    pub fn node_netns(&self) -> PathBuf {
        self.node.netns_path()
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.node
    }

    /// Puts `ip` on the node's `lo` (for HAProxy's listening VIPs).
    pub fn add_node_addr(&self, ip: Ipv4Addr) -> anyhow::Result<()> {
        self.node.add_local_addr(ip.into())?;
        Ok(())
    }
}

fn spawn(
    what: &str,
    cmd: &mut Command,
    netns: &Path,
    cgroup: Option<&Path>,
) -> anyhow::Result<Spawned> {
    prepare(cmd, netns, cgroup)?;
    let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    Ok(Spawned {
        what: what.to_owned(),
        child,
    })
}

/// Makes `cmd` join `cgroup` (if any) and then enter `netns` between fork and
/// exec, and die with the bench. The files are opened here, before the fork, so
/// the child only makes system calls.
fn prepare(cmd: &mut Command, netns: &Path, cgroup: Option<&Path>) -> anyhow::Result<()> {
    let ns = File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
    let procs = cgroup
        .map(|c| {
            let path = c.join("cgroup.procs");
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))
        })
        .transpose()?;
    // SAFETY: between fork and exec the closure only makes async-signal-safe
    // system calls (write, setns, prctl) on descriptors it owns (moved in, so
    // they stay open until the Command is dropped); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(procs) = &procs
                && libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// A copy of `cmd`'s program and arguments (a `Command` is not `Clone`).
pub fn clone_command(cmd: &Command) -> Command {
    let mut copy = Command::new(cmd.get_program());
    copy.args(cmd.get_args());
    copy
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    crate::baseline::run_checked(cmd, COMMAND_LIMIT)
        .with_context(|| format!("ip {}", args.join(" ")))?;
    Ok(())
}
