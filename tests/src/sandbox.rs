//! [`Sandbox`]: one test's private world, a network namespace, a child cgroup v2
//! and a private bpffs, all undone in `Drop` (also while panicking), plus
//! [`sweep`], which removes what killed runs left behind.
//!
//! Inside the namespace, `lo` is up and the service ranges ([`SERVICE_CIDR_V4`],
//! [`SERVICE_CIDR_V6`]) are routed through a veth pair (`pxv0` → `pxv1`, both ends
//! inside) to a gateway whose neighbour entry is static, so a packet that escapes
//! the socket hooks is sent, arrives on `pxv1` and is dropped there (forwarding is
//! off). A connect to a VIP without translation therefore hangs: it neither
//! succeeds nor fails fast, which is what lets tests tell the proxy's rejection
//! apart from the sandbox's.
//!
//! Must not: touch the root namespace's addresses and routes, the root cgroup's
//! programs, or anything not named with this run's prefixes.

use std::{
    fs::{self, File},
    net::IpAddr,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::Duration,
};

use nix::{
    mount::{MntFlags, MsFlags},
    sched::CloneFlags,
    sys::signal::Signal,
    unistd::Pid,
};

use crate::{Error, cmd};

/// The IPv4 service (ClusterIP) range routed into the dead end: kubeadm's default.
pub const SERVICE_CIDR_V4: &str = "10.96.0.0/12";
/// The IPv6 service range routed into the dead end. A /108 is the largest range
/// kube-apiserver accepts for IPv6 services; VIPs look like `fd00:96::10`.
pub const SERVICE_CIDR_V6: &str = "fd00:96::/108";

/// Names: netns `pxt-<pid>-<n>`, tempdir `<tmp>/pxt-<pid>-<n>-XXXXXX`.
/// Never handed out as ephemeral ports in the sandbox: kube-proxy's metrics
/// (10249) and health (10256) ports, the tests' own admin ports (19200-19399)
/// and the NodePort range (health-check node ports, userspace NodePort
/// listeners), as Kubernetes advises for nodes whose `ip_local_port_range`
/// overlaps them.
pub const RESERVED_PORTS: &str = "10249,10256,19200-19399,30000-32767";
const NETNS_PREFIX: &str = "pxt-";
const TMP_PREFIX: &str = "pxt-";
/// Cgroup `<cgroup2 root>/proxy-test-<pid>-<n>`.
const CGROUP_PREFIX: &str = "proxy-test-";

const VETH: &str = "pxv0";
const VETH_PEER: &str = "pxv1";
/// Fixed, locally administered MACs, so the static neighbour entries can name the peer.
const VETH_MAC: &str = "02:00:00:96:00:00";
const VETH_PEER_MAC: &str = "02:00:00:96:00:01";
/// Gateways of the dead-end routes; they exist only as permanent neighbour entries.
const DEAD_END_GW_V4: &str = "169.254.96.1";
const DEAD_END_GW_V6: &str = "fe80::96:1";

/// Bounded waits for cgroup removal (processes take a moment to leave).
const CGROUP_RMDIR_ATTEMPTS: u32 = 100;
const CGROUP_RMDIR_PAUSE: Duration = Duration::from_millis(20);

static COUNTER: AtomicU32 = AtomicU32::new(0);
/// The cgroup is per process: at most one sandbox may be entered at a time.
static ENTERED: Mutex<()> = Mutex::new(());

thread_local! {
    /// Whether this thread holds `ENTERED` (entering twice would deadlock).
    static ENTERED_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A network namespace, a child cgroup and a private bpffs for one test.
///
/// `Sandbox` is deliberately `!Send`: entering moves the *calling thread* into the
/// namespace, and `Drop` must move that same thread back.
pub struct Sandbox {
    netns: String,
    netns_created: bool,
    cgroup: PathBuf,
    cgroup_created: bool,
    bpffs: PathBuf,
    bpffs_mounted: bool,
    entered: Option<Entered>,
    // Dropped after `Drop::drop` has unmounted the bpffs inside it.
    dir: tempfile::TempDir,
}

/// What `enter()` changed, so that `Drop` can restore it.
struct Entered {
    orig_netns: OwnedFd,
    orig_cgroup: PathBuf,
    _lock: EnteredLock,
}

/// The process-wide "a sandbox is entered" lock, and this thread's note of it.
struct EnteredLock(#[expect(dead_code, reason = "held for its Drop")] MutexGuard<'static, ()>);

impl Drop for EnteredLock {
    fn drop(&mut self) {
        ENTERED_HERE.set(false);
    }
}

impl Sandbox {
    /// Sweeps leftovers of dead runs, then creates the namespace (with `lo` up, a
    /// wide local port range less [`RESERVED_PORTS`], `tcp_tw_reuse=1`, and the dead-end routes), the child
    /// cgroup and the bpffs. Whatever was created is removed again on error.
    pub fn new() -> Result<Self, Error> {
        sweep();
        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{TMP_PREFIX}{pid}-{n}-"))
            .tempdir()
            .map_err(|e| Error::io("creating the sandbox tempdir", std::env::temp_dir(), e))?;
        let mut sandbox = Sandbox {
            netns: format!("{NETNS_PREFIX}{pid}-{n}"),
            netns_created: false,
            cgroup: cgroup2_root()?.join(format!("{CGROUP_PREFIX}{pid}-{n}")),
            cgroup_created: false,
            bpffs: dir.path().join("bpffs"),
            bpffs_mounted: false,
            entered: None,
            dir,
        };
        // A killed run whose pid we now have may have left these exact names
        // behind (the sweep spares them: their owner looks alive). They cannot be
        // ours yet, as `n` is fresh.
        if sandbox.netns_path().exists() {
            cmd::ip(&["netns", "del", &sandbox.netns])?;
        }
        if sandbox.cgroup.exists() {
            remove_cgroup(&sandbox.cgroup)?;
        }
        sandbox.create_netns()?;
        fs::create_dir(&sandbox.cgroup)
            .map_err(|e| Error::io("creating the test cgroup", &sandbox.cgroup, e))?;
        sandbox.cgroup_created = true;
        sandbox.mount_bpffs()?;
        for dir in [sandbox.pin_path(), sandbox.manifests_dir()] {
            fs::create_dir(&dir).map_err(|e| Error::io("creating a sandbox directory", dir, e))?;
        }
        Ok(sandbox)
    }

    fn create_netns(&mut self) -> Result<(), Error> {
        cmd::ip(&["netns", "add", &self.netns])?;
        self.netns_created = true;
        self.ip("link set lo up")?;
        self.ip(&format!(
            "link add {VETH} address {VETH_MAC} type veth peer name {VETH_PEER} address {VETH_PEER_MAC}"
        ))?;
        self.in_netns(|| {
            // Forwarding off: what arrives on the peer is dropped without an ICMP
            // error, so an untranslated connect hangs instead of failing.
            for (key, value) in [
                ("net/ipv4/conf/all/forwarding", "0"),
                ("net/ipv4/conf/default/forwarding", "0"),
                ("net/ipv6/conf/all/forwarding", "0"),
                ("net/ipv6/conf/default/forwarding", "0"),
                ("net/ipv4/ip_local_port_range", "10000 65000"),
                // The wide range takes in the daemon's own ports: a client
                // socket of the test (or of the daemon) given one as its
                // ephemeral port holds it, so the daemon cannot listen there
                // (SO_REUSEADDR does not help against a connected or
                // TIME_WAIT socket that did not set it).
                ("net/ipv4/ip_local_reserved_ports", RESERVED_PORTS),
                ("net/ipv4/tcp_tw_reuse", "1"),
            ] {
                let path = Path::new("/proc/sys").join(key);
                fs::write(&path, value).map_err(|e| Error::io("setting a sysctl", path, e))?;
            }
            Ok(())
        })?;
        self.ip(&format!("link set {VETH} up"))?;
        self.ip(&format!("link set {VETH_PEER} up"))?;
        self.ip(&format!(
            "neigh add {DEAD_END_GW_V4} lladdr {VETH_PEER_MAC} dev {VETH} nud permanent"
        ))?;
        self.ip(&format!(
            "route add {SERVICE_CIDR_V4} via {DEAD_END_GW_V4} dev {VETH} onlink"
        ))?;
        self.ip(&format!(
            "-6 neigh add {DEAD_END_GW_V6} lladdr {VETH_PEER_MAC} dev {VETH} nud permanent"
        ))?;
        self.ip(&format!(
            "-6 route add {SERVICE_CIDR_V6} via {DEAD_END_GW_V6} dev {VETH}"
        ))?;
        Ok(())
    }

    /// `ip -n <netns> <args>`, with `args` split on whitespace; its stdout.
    pub fn ip(&self, args: &str) -> Result<String, Error> {
        let mut argv = vec!["-n", self.netns.as_str()];
        argv.extend(args.split_whitespace());
        cmd::ip(&argv)
    }

    fn mount_bpffs(&mut self) -> Result<(), Error> {
        fs::create_dir(&self.bpffs)
            .map_err(|e| Error::io("creating the bpffs mount point", &self.bpffs, e))?;
        nix::mount::mount(
            Some("bpf"),
            &self.bpffs,
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| Error::sys(format!("mount -t bpf bpf {}", self.bpffs.display()), e))?;
        self.bpffs_mounted = true;
        Ok(())
    }

    /// Runs `f` on a helper thread inside the namespace (the caller stays put).
    fn in_netns<T: Send>(&self, f: impl FnOnce() -> Result<T, Error> + Send) -> Result<T, Error> {
        let path = self.netns_path();
        let ns = File::open(&path).map_err(|e| Error::io("opening the netns", &path, e))?;
        thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
                    .map_err(|e| Error::sys("setns into the test netns", e))?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(Error::Usage("netns helper thread panicked".into())))
        })
    }

    /// Moves this **process** into the child cgroup, then this **thread** into the
    /// namespace (in that order, as environment.md asks). Threads and processes
    /// started afterwards from this thread inherit both. `Drop` undoes it.
    pub fn enter(&mut self) -> Result<(), Error> {
        if self.entered.is_some() {
            return Err(Error::Usage(format!(
                "sandbox {} already entered",
                self.netns
            )));
        }
        if ENTERED_HERE.get() {
            return Err(Error::Usage(
                "this thread has already entered another sandbox; drop it first".into(),
            ));
        }
        let lock = ENTERED.lock().unwrap_or_else(PoisonError::into_inner);
        ENTERED_HERE.set(true);
        let lock = EnteredLock(lock);
        let orig_cgroup = own_cgroup()?;
        let self_ns = "/proc/thread-self/ns/net";
        let orig_netns: OwnedFd = File::open(self_ns)
            .map_err(|e| Error::io("opening the current netns", self_ns, e))?
            .into();
        let procs = self.cgroup.join("cgroup.procs");
        fs::write(&procs, std::process::id().to_string())
            .map_err(|e| Error::io("moving the process into the test cgroup", &procs, e))?;
        self.entered = Some(Entered {
            orig_netns,
            orig_cgroup,
            _lock: lock,
        });
        let path = self.netns_path();
        let ns = File::open(&path).map_err(|e| Error::io("opening the netns", &path, e))?;
        nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::sys(format!("setns into {}", path.display()), e))?;
        Ok(())
    }

    /// Whether [`Sandbox::enter`] has succeeded (and `Drop` has not run).
    pub fn is_entered(&self) -> bool {
        self.entered.is_some()
    }

    /// Puts `ip` on the namespace's `lo` as a /32 or /128 (`nodad` for IPv6), so
    /// backends can bind to it. Works whether or not the sandbox is entered.
    pub fn add_local_addr(&self, ip: IpAddr) -> Result<(), Error> {
        match ip {
            IpAddr::V4(a) => self.ip(&format!("addr add {a}/32 dev lo")),
            IpAddr::V6(a) => self.ip(&format!("-6 addr add {a}/128 dev lo nodad")),
        }
        .map(drop)
    }

    /// The destinations of the `local` routes in table `local` that carry
    /// routing protocol `proto` (the userspace mode marks its VIP routes so),
    /// both families, sorted.
    pub fn local_routes(&self, proto: u8) -> Result<Vec<IpAddr>, Error> {
        let mut out = Vec::new();
        for family in ["-4", "-6"] {
            let text = self.ip(&format!("{family} route show table local proto {proto}"))?;
            for line in text.lines() {
                // `local 10.96.0.10 dev lo scope host`
                let mut words = line.split_whitespace();
                if words.next() == Some("local")
                    && let Some(ip) = words.next().and_then(|w| w.parse().ok())
                {
                    out.push(ip);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every TCP and UDP socket bound to a local address and port in the
    /// namespace that is listening (TCP) or unconnected (UDP), from `ss`.
    pub fn listening(&self) -> Result<Vec<std::net::SocketAddr>, Error> {
        let text = cmd::run("ss", &["-N", &self.netns, "-H", "-l", "-n", "-t", "-u"])?;
        Ok(text
            .lines()
            .filter_map(|line| {
                // `tcp LISTEN 0 4096 10.96.0.10:80 0.0.0.0:*`
                let local = line.split_whitespace().nth(4)?;
                let (ip, port) = local.rsplit_once(':')?;
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                let ip = ip.split('%').next()?;
                Some(std::net::SocketAddr::new(
                    ip.parse().ok()?,
                    port.parse().ok()?,
                ))
            })
            .collect())
    }

    /// The namespace's name (`pxt-<pid>-<n>`), for `ip -n`.
    pub fn netns_name(&self) -> &str {
        &self.netns
    }

    /// `/run/netns/<name>`, for `nsenter --net=…` or `setns(2)`.
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }

    /// The child cgroup, to pass as `proxy run --cgroup`.
    pub fn cgroup_path(&self) -> &Path {
        &self.cgroup
    }

    /// Creates (if missing) the cgroup `<cgroup_path>/<name>` and returns its
    /// path: a place for hooks that the sandbox's own processes are not under
    /// (the north-south tests' client must not be seen by the socket hooks).
    /// Removed with the sandbox.
    pub fn child_cgroup(&self, name: &str) -> Result<PathBuf, Error> {
        let path = self.cgroup.join(name);
        match fs::create_dir(&path) {
            Ok(()) => Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(path),
            Err(e) => Err(Error::io("creating a child cgroup", path, e)),
        }
    }

    /// Where the private bpffs is mounted.
    pub fn bpffs_path(&self) -> &Path {
        &self.bpffs
    }

    /// `<bpffs>/proxy` (created, empty), to pass as `proxy run --pin-path`.
    pub fn pin_path(&self) -> PathBuf {
        self.bpffs.join("proxy")
    }

    /// The sandbox's temporary directory (logs, manifests); removed in `Drop`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `<dir>/manifests` (created, empty), to pass as `proxy run --manifests`.
    pub fn manifests_dir(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(entered) = self.entered.take() {
            if let Err(e) = nix::sched::setns(entered.orig_netns.as_fd(), CloneFlags::CLONE_NEWNET)
            {
                eprintln!("sandbox: could not return to the original netns: {e}");
            }
            let procs = entered.orig_cgroup.join("cgroup.procs");
            if let Err(e) = fs::write(&procs, std::process::id().to_string()) {
                eprintln!(
                    "sandbox: could not move back to cgroup {}: {e}",
                    entered.orig_cgroup.display()
                );
            }
        }
        if self.cgroup_created
            && let Err(e) = remove_cgroup(&self.cgroup)
        {
            eprintln!("sandbox: {e}");
        }
        if self.netns_created
            && let Err(e) = cmd::ip(&["netns", "del", &self.netns])
        {
            eprintln!("sandbox: {e}");
        }
        if self.bpffs_mounted {
            unmount(&self.bpffs);
        }
    }
}

/// The cgroup v2 mount point, from `/proc/self/mountinfo`.
pub fn cgroup2_root() -> Result<PathBuf, Error> {
    mounts()?
        .into_iter()
        .find(|m| m.fstype == "cgroup2")
        .map(|m| m.mount_point)
        .ok_or(Error::NoCgroup2)
}

/// This process's cgroup v2 directory, from `/proc/self/cgroup` and mountinfo.
fn own_cgroup() -> Result<PathBuf, Error> {
    let mount = mounts()?
        .into_iter()
        .find(|m| m.fstype == "cgroup2")
        .ok_or(Error::NoCgroup2)?;
    let text = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| Error::io("reading", "/proc/self/cgroup", e))?;
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or(Error::NoOwnCgroup)?;
    // Paths are relative to the cgroup namespace root, which is the mount's root
    // when the mount is the namespace's own.
    let relative = path
        .strip_prefix(mount.root.as_str())
        .unwrap_or(path)
        .trim_start_matches('/');
    Ok(mount.mount_point.join(relative))
}

struct Mount {
    root: String,
    mount_point: PathBuf,
    fstype: String,
}

fn mounts() -> Result<Vec<Mount>, Error> {
    let text = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("reading", "/proc/self/mountinfo", e))?;
    Ok(text.lines().filter_map(parse_mountinfo_line).collect())
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw` → root,
/// mount point, fstype.
fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let mut left = left.split(' ');
    let root = unescape(left.nth(3)?);
    let mount_point = PathBuf::from(unescape(left.next()?));
    let fstype = right.split(' ').next()?.to_owned();
    Some(Mount {
        root,
        mount_point,
        fstype,
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(char::from(c));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Kills whatever is still in the cgroup (only processes a test started land
/// there), then removes it, retrying for a bounded time.
fn remove_cgroup(path: &Path) -> Result<(), Error> {
    // Child cgroups first ([`Sandbox::child_cgroup`]); a cgroup with children
    // cannot be removed.
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&entry.path())?;
            }
        }
    }
    let me = std::process::id();
    let mut last = None;
    for _ in 0..CGROUP_RMDIR_ATTEMPTS {
        let procs = fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if u32::try_from(pid).ok() != Some(me) {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
        thread::sleep(CGROUP_RMDIR_PAUSE);
    }
    Err(Error::io(
        "removing the test cgroup",
        path,
        last.unwrap_or_else(|| std::io::Error::other("gave up")),
    ))
}

fn unmount(path: &Path) {
    if let Err(e) = nix::mount::umount2(path, MntFlags::empty()) {
        // Busy (a process still has a file open): detach it; the instance goes
        // away with the last reference.
        if let Err(e2) = nix::mount::umount2(path, MntFlags::MNT_DETACH) {
            eprintln!("sandbox: could not unmount {}: {e}; {e2}", path.display());
        }
    }
}

/// `<prefix><pid>-<n>[-anything]` → pid.
fn owner_pid(name: &str, prefix: &str) -> Option<u32> {
    let mut parts = name.strip_prefix(prefix)?.split('-');
    let pid = parts.next()?.parse().ok()?;
    parts.next()?.parse::<u32>().ok()?;
    Some(pid)
}

fn is_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Held while sweeping, so that concurrent test processes do not sweep the same
/// leftovers at once. Hold it yourself to stage fake leftovers that a concurrent
/// sweep must not see half-made (the kit's own sweep test does).
pub struct SweepLock {
    _lock: nix::fcntl::Flock<File>,
}

/// Takes the machine-wide sweep lock (`flock` on a file in `/run/lock`, or in
/// the temp dir where that is missing); blocks until it is free.
pub fn lock_sweep() -> Result<SweepLock, Error> {
    let dir = Path::new("/run/lock");
    let dir = if dir.is_dir() {
        dir.to_owned()
    } else {
        std::env::temp_dir()
    };
    let path = dir.join("proxy-tests-sweep.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("opening the sweep lock", &path, e))?;
    let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::sys(format!("flock {}", path.display()), e))?;
    Ok(SweepLock { _lock: lock })
}

/// Removes the namespaces, cgroups, bpffs mounts and tempdirs that sandboxes of
/// processes no longer alive left behind (a run killed by SIGKILL or a timeout).
/// Best effort: problems are printed, never returned. [`Sandbox::new`] calls it.
pub fn sweep() {
    let _lock = match lock_sweep() {
        Ok(lock) => Some(lock),
        Err(e) => {
            eprintln!("sweep: {e}; sweeping without the lock");
            None
        }
    };
    let dead = |name: &str, prefix: &str| owner_pid(name, prefix).is_some_and(|p| !is_alive(p));
    let names = |dir: &Path| -> Vec<String> {
        fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    };

    for name in names(Path::new("/run/netns")) {
        if dead(&name, NETNS_PREFIX)
            && let Err(e) = cmd::ip(&["netns", "del", &name])
        {
            eprintln!("sweep: {e}");
        }
    }

    if let Ok(root) = cgroup2_root() {
        for name in names(&root) {
            if dead(&name, CGROUP_PREFIX)
                && let Err(e) = remove_cgroup(&root.join(&name))
            {
                eprintln!("sweep: {e}");
            }
        }
    }

    let tmp = std::env::temp_dir();
    let is_stale = |p: &Path| {
        p.strip_prefix(&tmp)
            .ok()
            .and_then(|rel| rel.components().next())
            .and_then(|c| c.as_os_str().to_str())
            .is_some_and(|first| dead(first, TMP_PREFIX))
    };
    if let Ok(mounts) = mounts() {
        // Deepest first, in case something was mounted inside a bpffs.
        let mut stale: Vec<PathBuf> = mounts
            .into_iter()
            .filter(|m| is_stale(&m.mount_point))
            .map(|m| m.mount_point)
            .collect();
        stale.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for path in stale {
            unmount(&path);
        }
    }
    let still_mounted: Vec<PathBuf> = mounts()
        .map(|ms| ms.into_iter().map(|m| m.mount_point).collect())
        .unwrap_or_default();
    for name in names(&tmp) {
        let path = tmp.join(&name);
        if dead(&name, TMP_PREFIX)
            && !still_mounted.iter().any(|m| m.starts_with(&path))
            && let Err(e) = fs::remove_dir_all(&path)
        {
            eprintln!("sweep: could not remove {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo() {
        let m = parse_mountinfo_line(
            "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw",
        )
        .expect("a valid line");
        assert_eq!(m.root, "/");
        assert_eq!(m.mount_point, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(m.fstype, "cgroup2");
        let m = parse_mountinfo_line(r"50 31 0:40 / /tmp/a\040b rw - bpf bpf rw")
            .expect("a valid line");
        assert_eq!(m.mount_point, Path::new("/tmp/a b"));
        assert_eq!(m.fstype, "bpf");
    }

    #[test]
    fn owner_pids() {
        assert_eq!(owner_pid("pxt-123-4", "pxt-"), Some(123));
        assert_eq!(owner_pid("pxt-123-4-AbC9x", "pxt-"), Some(123));
        assert_eq!(owner_pid("proxy-test-9-0", "proxy-test-"), Some(9));
        assert_eq!(owner_pid("pxt-123", "pxt-"), None);
        assert_eq!(owner_pid("pxt-abc-1", "pxt-"), None);
        assert_eq!(owner_pid("other-1-2", "pxt-"), None);
    }
}
