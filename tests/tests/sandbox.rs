//! Self-tests of the sandbox kit. They need root but no proxy: the sandbox is
//! created and removed without leftovers (also when a test panics, and after a
//! run was killed), the backends answer over IPv4 and IPv6, and a VIP without
//! translation is a dead end (a connect hangs rather than fails).

use std::{
    fs,
    io::ErrorKind,
    net::{IpAddr, SocketAddr},
    os::unix::fs::MetadataExt,
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use proxy_tests::{
    Sandbox, TcpBackend, UdpBackend, cgroup2_root, lock_sweep, sweep, tcp_peer_name, tcp_request,
    tcp_request_timeout, udp_connected_request, udp_unconnected_request,
    udp_unconnected_request_timeout,
};

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a literal socket address")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("a literal IP address")
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn mounted_at(path: &Path) -> bool {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let wanted = path.to_str().expect("a UTF-8 path");
    mountinfo
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(wanted))
}

fn thread_netns() -> u64 {
    fs::metadata("/proc/thread-self/ns/net")
        .expect("own netns")
        .ino()
}

fn own_cgroup() -> String {
    fs::read_to_string("/proc/self/cgroup").expect("own cgroup")
}

/// What a sandbox leaves on the system while it exists.
struct Traces {
    netns: String,
    cgroup: PathBuf,
    bpffs: PathBuf,
    dir: PathBuf,
}

impl Traces {
    fn of(sandbox: &Sandbox) -> Self {
        Traces {
            netns: sandbox.netns_name().to_owned(),
            cgroup: sandbox.cgroup_path().to_owned(),
            bpffs: sandbox.bpffs_path().to_owned(),
            dir: sandbox.dir().to_owned(),
        }
    }

    fn assert_present(&self) {
        assert!(netns_exists(&self.netns), "netns {} missing", self.netns);
        assert!(
            self.cgroup.is_dir(),
            "cgroup {} missing",
            self.cgroup.display()
        );
        assert!(
            mounted_at(&self.bpffs),
            "no bpffs at {}",
            self.bpffs.display()
        );
    }

    fn assert_gone(&self) {
        assert!(
            !netns_exists(&self.netns),
            "netns {} left behind",
            self.netns
        );
        assert!(
            !self.cgroup.exists(),
            "cgroup {} left behind",
            self.cgroup.display()
        );
        assert!(
            !mounted_at(&self.bpffs),
            "bpffs {} still mounted",
            self.bpffs.display()
        );
        assert!(
            !self.dir.exists(),
            "tempdir {} left behind",
            self.dir.display()
        );
    }
}

#[test]
fn sandbox_is_created_entered_and_removed() {
    let cgroup_before = own_cgroup();
    let netns_before = thread_netns();
    let traces;
    {
        let mut sandbox = Sandbox::new().expect("creating a sandbox");
        traces = Traces::of(&sandbox);
        traces.assert_present();
        assert!(sandbox.pin_path().is_dir(), "pin path not created");
        assert!(
            sandbox.manifests_dir().is_dir(),
            "manifests dir not created"
        );
        assert!(
            sandbox
                .cgroup_path()
                .starts_with(cgroup2_root().expect("cgroup2 root")),
            "cgroup {} is not under the cgroup2 root",
            sandbox.cgroup_path().display()
        );

        // A sweep in a live process leaves its sandboxes alone.
        sweep();
        traces.assert_present();

        sandbox.enter().expect("entering the sandbox");
        assert_ne!(thread_netns(), netns_before, "thread did not change netns");
        let cgroup_inside = own_cgroup();
        assert!(
            cgroup_inside.contains(
                &sandbox
                    .cgroup_path()
                    .file_name()
                    .expect("cgroup name")
                    .to_string_lossy()
                    .into_owned()
            ),
            "process not in the test cgroup: {cgroup_inside}"
        );
        let sysctl = |k: &str| proxy_tests::read_sysctl(k).expect("a sysctl");
        assert_eq!(sysctl("net/ipv4/tcp_tw_reuse"), "1");
        assert_eq!(
            sysctl("net/ipv4/ip_local_reserved_ports"),
            proxy_tests::RESERVED_PORTS
        );
        assert_eq!(
            sysctl("net/ipv4/ip_local_port_range")
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["10000", "65000"]
        );
        // Threads spawned from here are inside too.
        let inner = std::thread::spawn(thread_netns).join().expect("thread");
        assert_eq!(
            inner,
            thread_netns(),
            "a new thread did not inherit the netns"
        );
    }
    traces.assert_gone();
    assert_eq!(thread_netns(), netns_before, "thread not back in its netns");
    assert_eq!(
        own_cgroup(),
        cgroup_before,
        "process not back in its cgroup"
    );
}

#[test]
fn sandbox_is_removed_when_the_test_panics() {
    let cgroup_before = own_cgroup();
    let netns_before = thread_netns();
    let mut traces = None;
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut sandbox = Sandbox::new().expect("creating a sandbox");
        traces = Some(Traces::of(&sandbox));
        sandbox.enter().expect("entering the sandbox");
        panic!("deliberate panic inside an entered sandbox");
    }));
    assert!(result.is_err(), "the closure should have panicked");
    let traces = traces.expect("the sandbox was created");
    traces.assert_gone();
    assert_eq!(thread_netns(), netns_before, "thread not back in its netns");
    assert_eq!(
        own_cgroup(),
        cgroup_before,
        "process not back in its cgroup"
    );
}

#[test]
fn sweep_removes_leftovers_of_dead_processes() {
    // A pid that is surely dead: a child we started and reaped.
    let dead = Command::new("true")
        .spawn()
        .and_then(|mut c| c.wait().map(|_| c.id()))
        .expect("running `true`");
    let netns = format!("pxt-{dead}-0");
    let cgroup = cgroup2_root()
        .expect("cgroup2 root")
        .join(format!("proxy-test-{dead}-0"));
    let dir = std::env::temp_dir().join(format!("pxt-{dead}-0-leftover"));
    let bpffs = dir.join("bpffs");

    // Staged under the sweep lock, so a concurrent test's sweep cannot remove
    // half of it before we look.
    let lock = lock_sweep().expect("taking the sweep lock");
    let run = |cmd: &mut Command| {
        let status = cmd.status().expect("running a setup command");
        assert!(status.success(), "{cmd:?} failed: {status}");
    };
    run(Command::new("ip").args(["netns", "add", &netns]));
    fs::create_dir(&cgroup).expect("creating a stale cgroup");
    fs::create_dir_all(&bpffs).expect("creating a stale tempdir");
    run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&bpffs));
    let traces = Traces {
        netns,
        cgroup,
        bpffs,
        dir,
    };
    traces.assert_present();
    drop(lock);

    sweep();
    traces.assert_gone();
}

#[test]
fn backends_answer_directly_over_ipv4_and_ipv6() {
    let mut sandbox = Sandbox::new().expect("creating a sandbox");
    sandbox.enter().expect("entering the sandbox");
    for a in ["10.244.9.1", "fd00:244::9"] {
        sandbox
            .add_local_addr(ip(a))
            .expect("adding a local address");
    }
    for (bind, tag) in [("10.244.9.1:8080", "v4"), ("[fd00:244::9]:8080", "v6")] {
        let bind = addr(bind);
        let tcp = TcpBackend::start(bind, &format!("tcp-{tag}")).expect("TCP backend");
        let udp = UdpBackend::start(bind, &format!("udp-{tag}")).expect("UDP backend");

        let reply = tcp_request(bind).expect("a direct TCP request");
        assert_eq!(reply.backend, tcp.name(), "TCP reply from {bind}");
        assert_eq!(reply.peer.is_ipv4(), bind.is_ipv4(), "peer family: {reply}");
        assert_eq!(
            tcp_peer_name(bind).expect("a direct TCP connect"),
            bind,
            "getpeername of a direct TCP connection"
        );

        let (reply, from) = udp_unconnected_request(bind).expect("a direct UDP request");
        assert_eq!(reply.backend, udp.name(), "UDP reply from {bind}");
        assert_eq!(from, bind, "source of the UDP reply");
        let (reply, peer) = udp_connected_request(bind).expect("a connected UDP request");
        assert_eq!(reply.backend, udp.name(), "connected UDP reply from {bind}");
        assert_eq!(peer, bind, "getpeername of a connected UDP socket");

        assert_eq!(
            tcp.served(),
            1,
            "TCP requests served (getpeername sends nothing)"
        );
        assert_eq!(udp.served(), 2, "UDP requests served");
    }
}

#[test]
fn untranslated_vip_is_a_dead_end() {
    let mut sandbox = Sandbox::new().expect("creating a sandbox");
    sandbox.enter().expect("entering the sandbox");
    // Global addresses, as the integration tests have, so source selection works.
    for a in ["10.244.9.1", "fd00:244::9"] {
        sandbox
            .add_local_addr(ip(a))
            .expect("adding a local address");
    }
    let timeout = Duration::from_millis(700);
    for vip in ["10.96.0.10:80", "[fd00:96::10]:80"] {
        let vip = addr(vip);
        let start = Instant::now();
        let result = tcp_request_timeout(vip, timeout);
        let elapsed = start.elapsed();
        match result {
            Err(e) if e.kind() == ErrorKind::TimedOut => {}
            other => panic!(
                "expected a TCP connect to {vip} to hang (time out after {timeout:?}) \
                 without the proxy, saw {other:?} after {elapsed:?}"
            ),
        }
        assert!(
            elapsed >= timeout,
            "gave up after {elapsed:?}, before {timeout:?}"
        );

        match udp_unconnected_request_timeout(vip, timeout) {
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {}
            other => panic!("expected no UDP reply from {vip} without the proxy, saw {other:?}"),
        }
    }
}

#[test]
fn entering_a_second_sandbox_is_an_error_not_a_deadlock() {
    let mut first = Sandbox::new().expect("creating a sandbox");
    let mut second = Sandbox::new().expect("creating a second sandbox");
    first.enter().expect("entering the first sandbox");
    let err = second
        .enter()
        .expect_err("entering a second sandbox on the same thread must fail");
    assert!(
        err.to_string().contains("already entered"),
        "unexpected error: {err}"
    );
    assert!(!second.is_entered());
    drop(first);
    second
        .enter()
        .expect("entering the second sandbox once the first is gone");
}

#[test]
fn stale_names_of_a_dead_run_with_our_pid_are_replaced() {
    // The first sandbox of this process is `-0` (nextest: one process per test).
    let pid = std::process::id();
    let netns = format!("pxt-{pid}-0");
    let cgroup = cgroup2_root()
        .expect("cgroup2 root")
        .join(format!("proxy-test-{pid}-0"));
    assert!(
        !netns_exists(&netns) && !cgroup.exists(),
        "{netns} or {} already exist: run this test under nextest",
        cgroup.display()
    );
    let status = Command::new("ip")
        .args(["netns", "add", &netns])
        .status()
        .expect("running ip");
    assert!(status.success(), "ip netns add {netns}: {status}");
    fs::create_dir(&cgroup).expect("creating a stale cgroup");

    let sandbox = Sandbox::new().expect("creating a sandbox over stale names");
    assert_eq!(sandbox.netns_name(), netns);
    assert_eq!(sandbox.cgroup_path(), cgroup);
    let traces = Traces::of(&sandbox);
    traces.assert_present();
    drop(sandbox);
    traces.assert_gone();
}

#[test]
fn confinement_keeps_only_the_given_capabilities_and_a_read_only_root() {
    let confinement = proxy_tests::Confinement {
        capabilities: vec!["BPF".into(), "NET_ADMIN".into()],
        no_new_privs: true,
        read_only_root: true,
        read_only_binds: Vec::new(),
        writable_dirs: Vec::new(),
    };
    let mut cmd = std::process::Command::new("cat");
    cmd.args(["/proc/self/status", "/proc/self/mountinfo"]);
    confinement
        .apply_to(&mut cmd)
        .expect("preparing the confinement");
    let out = cmd.output().expect("running cat");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // NET_ADMIN is bit 12, BPF bit 39.
    let want = format!("{:016x}", (1u64 << 12) | (1u64 << 39));
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(set))
            .unwrap_or_default();
        assert!(line.ends_with(&want), "{set}: {line}, expected {want}");
    }
    for set in ["CapInh", "CapAmb"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(set))
            .unwrap_or_default();
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    assert!(
        text.lines().any(|l| l.starts_with("NoNewPrivs:\t1")),
        "{text}"
    );
    let root = text
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .unwrap_or_default();
    assert!(
        root.split_whitespace()
            .nth(5)
            .is_some_and(|o| o.split(',').any(|o| o == "ro")),
        "the root is not read-only: {root}"
    );
}
