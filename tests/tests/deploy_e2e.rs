//! The DaemonSet's container, run on one machine: the command, arguments,
//! environment, volumes, capabilities, `allowPrivilegeEscalation` and
//! read-only root of `deploy/daemonset.yaml`, with the configuration file of
//! `deploy/configmap.yaml`, all read from the files, so a change there that
//! breaks the proxy breaks this test. It then walks the README's life cycle:
//! deploy, verify (`proxy inspect services`, the probes, the metrics), upgrade
//! (a new daemon takes the hooks over while Services keep working) and remove
//! (`proxy cleanup`).
//!
//! `runtime_pod.rs` runs the same pod template from the image with a real
//! runtime (podman, runc); this test keeps the faster, finer-grained checks.
//! What a machine without a cluster cannot do, and what stands in for it:
//! - the host paths: the DaemonSet's volumes are mapped onto the sandbox (its
//!   private bpffs for `/sys/fs/bpf`, its child cgroup for the cgroup2 root,
//!   bound read-only as the volume is; a directory holding the ConfigMap's
//!   files), and every argument and environment value under a mount path is
//!   rewritten to match. Hooks on the real cgroup2 root would reach every
//!   process of the machine (environment.md, network safety rule 3);
//! - the runtime: [`Confinement`] gives the process exactly the container's
//!   capabilities, `no_new_privs` and a read-only root (the host's root, not
//!   the image's); seccomp and AppArmor profiles are not applied;
//! - the in-cluster client: the fake API server speaks plain HTTP and there
//!   are no service-account files, so the proxy gets `--kubeconfig` in place
//!   of `KUBERNETES_SERVICE_HOST`/`_PORT`. The kube-apiserver ConfigMap as
//!   shipped (empty values) is run first, and must stop the proxy with a
//!   message saying what to set;
//! - the downward API: `NODE_NAME` is set to the fake cluster's node.

mod common;
mod deploy_common;

use std::{
    ffi::{OsStr, OsString},
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use common::*;
use deploy_common::Deploy;
use proxy::{
    cli::run::{ModeArg, RunArgs},
    config::file,
};
use proxy_tests::{
    Confinement, FakeApiServer, ProxyProcess, Reply,
    fake_apiserver::ApiRequest,
    manifest::{AddressType, Node},
    pod::{PodNetns, PodUdpClient},
    proxy_bin, wait_until,
};

const NODE: &str = "node-1";

/// The DaemonSet's container, mapped onto a sandbox.
struct Container {
    args: Vec<OsString>,
    env: Vec<(String, OsString)>,
    confinement: Confinement,
    /// The container's `PROXY_PIN_PATH`, mapped.
    pin_path: PathBuf,
    /// The probes' port.
    healthz_port: u16,
    /// The container's `--netns-dir`, mapped.
    netns_dir: Option<PathBuf>,
}

impl Container {
    fn new(d: &Deploy, f: &Fixture) -> Self {
        let c = d.container();
        let pod = d.pod();
        let mut mounts = Vec::new();
        let mut confinement = Confinement::default();
        for m in c.volume_mounts.iter().flatten() {
            let volume = pod
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == m.name)
                .unwrap_or_else(|| panic!("volume {} is not defined", m.name));
            let host = volume.host_path.as_ref().map(|h| h.path.as_str());
            let local = match (host, &volume.config_map) {
                (Some("/sys/fs/bpf"), _) => f.sandbox.bpffs_path().to_path_buf(),
                (Some("/sys/fs/cgroup"), _) => {
                    // The host's cgroup2 root is the sandbox's child cgroup,
                    // bound read-only as the volume mount is.
                    let target = f.sandbox.dir().join("cgroupv2");
                    fs::create_dir_all(&target).unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(m.read_only, Some(true), "the cgroup mount");
                    confinement
                        .read_only_binds
                        .push((f.sandbox.cgroup_path().to_path_buf(), target.clone()));
                    target
                }
                (Some("/run/netns"), _) => {
                    // The runtime's pinned pod namespaces: a directory of the
                    // sandbox, where tests pin their pods' (not the machine's
                    // /run/netns, which holds other tests' namespaces).
                    let dir = f.sandbox.dir().join("netns");
                    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
                    dir
                }
                (None, None) if volume.empty_dir.is_some() => {
                    // An emptyDir (the query socket's): a directory of the sandbox.
                    let dir = f.sandbox.dir().join(format!("emptydir-{}", m.name));
                    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
                    confinement.writable_dirs.push(dir.clone());
                    dir
                }
                (None, Some(source)) => {
                    let dir = f.sandbox.dir().join(format!("configmap-{}", source.name));
                    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(
                        Some(source.name.as_str()),
                        d.config.metadata.name.as_deref()
                    );
                    for (name, text) in d.config.data.iter().flatten() {
                        fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("{e}"));
                    }
                    dir
                }
                _ => panic!(
                    "volume {} ({volume:?}) has no stand-in in this test: teach it",
                    m.name
                ),
            };
            mounts.push((m.mount_path.clone(), local));
        }
        let rewrite = |value: &str| -> OsString {
            for (mount_path, local) in &mounts {
                if value == mount_path {
                    return local.clone().into_os_string();
                }
                if let Some(rest) = value.strip_prefix(&format!("{mount_path}/")) {
                    return local.join(rest).into_os_string();
                }
            }
            value.into()
        };
        let mut args: Vec<OsString> = Vec::new();
        for arg in c.args.iter().flatten() {
            match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => {
                    let mut a = OsString::from(format!("{flag}="));
                    a.push(rewrite(value));
                    args.push(a);
                }
                _ => args.push(rewrite(arg)),
            }
        }
        assert!(c.command.is_none(), "the image's entrypoint runs the proxy");

        let mut env = Vec::new();
        for from in c.env_from.iter().flatten() {
            let name = from
                .config_map_ref
                .as_ref()
                .map(|r| r.name.as_str())
                .unwrap_or_else(|| panic!("envFrom {from:?}"));
            assert_eq!(Some(name), d.apiserver.metadata.name.as_deref());
            for (k, v) in d.apiserver.data.iter().flatten() {
                env.push((k.clone(), OsString::from(v)));
            }
        }
        for e in c.env.iter().flatten() {
            let value = match (&e.value, &e.value_from) {
                (Some(v), None) => rewrite(v),
                (None, Some(from)) => {
                    let field = from.field_ref.as_ref().map(|f| f.field_path.as_str());
                    assert_eq!(field, Some("spec.nodeName"), "{e:?}");
                    OsString::from(NODE)
                }
                _ => panic!("env {e:?} has no stand-in in this test"),
            };
            env.push((e.name.clone(), value));
        }
        let pin_path = env
            .iter()
            .find(|(k, _)| k == "PROXY_PIN_PATH")
            .map(|(_, v)| PathBuf::from(v))
            .unwrap_or_else(|| panic!("no PROXY_PIN_PATH"));

        let sc = c
            .security_context
            .as_ref()
            .unwrap_or_else(|| panic!("no securityContext"));
        assert_eq!(sc.privileged, Some(false));
        let caps = sc.capabilities.as_ref();
        assert_eq!(
            caps.and_then(|c| c.drop.as_deref()),
            Some(&["ALL".to_owned()][..])
        );
        confinement.capabilities = caps.and_then(|c| c.add.clone()).unwrap_or_default();
        confinement.no_new_privs = sc.allow_privilege_escalation == Some(false);
        confinement.read_only_root = sc.read_only_root_filesystem == Some(true);

        let healthz_port = c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("healthz"))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .unwrap_or_else(|| panic!("no healthz port"));
        let netns_dir = args
            .iter()
            .find_map(|a| a.to_str()?.strip_prefix("--netns-dir=").map(PathBuf::from));
        Container {
            args,
            env,
            confinement,
            pin_path,
            healthz_port,
            netns_dir,
        }
    }

    /// The environment, optionally without the API server's variables.
    fn env(&self, in_cluster: bool) -> Vec<(&str, &OsStr)> {
        self.env
            .iter()
            .filter(|(k, _)| in_cluster || !k.starts_with("KUBERNETES_SERVICE_"))
            .map(|(k, v)| (k.as_str(), v.as_os_str()))
            .collect()
    }

    /// Starts the container's command, plus `extra` arguments.
    fn start(&self, f: &Fixture, in_cluster: bool, extra: &[&OsStr]) -> ProxyProcess {
        let mut args: Vec<&OsStr> = self.args.iter().map(OsString::as_os_str).collect();
        args.extend(extra);
        ProxyProcess::start_raw(
            &proxy_bin(),
            &f.sandbox,
            &args,
            &self.env(in_cluster),
            Some(&self.confinement),
        )
        .unwrap_or_else(|e| panic!("starting the DaemonSet's container: {e}"))
    }

    /// `kubectl exec ds/proxy -- proxy ARGS…`: the same confinement and
    /// environment, another command.
    fn exec(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(proxy_bin());
        cmd.args(args).env_clear();
        for (k, v) in self.env(true) {
            cmd.env(k, v);
        }
        self.confinement
            .apply_to(&mut cmd)
            .unwrap_or_else(|e| panic!("{e}"));
        cmd.output()
            .unwrap_or_else(|e| panic!("running proxy {args:?}: {e}"))
    }
}

/// The status code of `GET path` on `addr` (HTTP/1.0, inside the sandbox),
/// and the body.
fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&addr, REQUEST).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(REQUEST))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    Ok((code, body.unwrap_or_default()))
}

/// (API group, resource, verb) of a request, as RBAC sees it.
fn rbac_of(r: &ApiRequest) -> Option<(String, String, String)> {
    let (group, rest) = if let Some(rest) = r.path.strip_prefix("/api/v1/") {
        (String::new(), rest)
    } else {
        let rest = r.path.strip_prefix("/apis/")?;
        let mut parts = rest.splitn(3, '/');
        let group = parts.next()?.to_owned();
        let _version = parts.next()?;
        (group, parts.next()?)
    };
    let mut segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    if segments.first() == Some(&"namespaces") && segments.len() >= 3 {
        segments.drain(..2);
    }
    let resource = (*segments.first()?).to_owned();
    let named = segments.len() > 1;
    let verb = match r.method.as_str() {
        "GET"
            if r.watch
                || r.query
                    .get("watch")
                    .is_some_and(|w| w == "true" || w == "1") =>
        {
            "watch"
        }
        "GET" if named => "get",
        "GET" => "list",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        other => other,
    };
    Some((group, resource, verb.to_owned()))
}

fn granted(d: &Deploy, (group, resource, verb): &(String, String, String)) -> bool {
    d.cluster_role.rules.iter().flatten().any(|rule| {
        rule.api_groups.iter().flatten().any(|g| g == group)
            && rule.resources.iter().flatten().any(|r| r == resource)
            && rule.verbs.iter().any(|v| v == verb)
    })
}

fn wait_exit(p: &mut ProxyProcess, within: Duration) -> Option<std::process::ExitStatus> {
    let mut status = None;
    wait_until(within, || {
        status = p.exited();
        status.is_some()
    });
    status
}

fn pins_left(pin_path: &Path) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(pin_path, &mut out);
    out
}

#[test]
fn the_daemonsets_container_deploys_verifies_upgrades_and_is_removed() {
    let d = Deploy::load();
    // The container's own settings choose the mode (below: they must give eBPF).
    let mut f = Fixture::new(Mode::Ebpf);
    let api = FakeApiServer::start().expect("starting the fake API server in the sandbox");
    api.apply_node(&Node::new(NODE).zone("zone-a").internal_ip("192.168.96.1"));
    api.apply_yaml(&service(WEB, &[WEB_VIP4, WEB_VIP6], TCP_PORT, UDP_PORT));
    for (family, addrs) in [
        (AddressType::IPv4, &BACKENDS_V4[..]),
        (AddressType::IPv6, &BACKENDS_V6[..]),
    ] {
        api.apply_yaml(&slice(WEB, &slice_name(WEB, family), family, addrs));
    }
    let kubeconfig = api
        .write_kubeconfig(f.sandbox.dir())
        .expect("writing the kubeconfig");
    let c = Container::new(&d, &f);
    let settings: RunArgs = file::parse(d.config_file()).unwrap_or_else(|e| panic!("{e}"));
    // This test is of the eBPF path: in `auto`, a fallback to userspace
    // would serve the Services too, so the mode in force is checked below.
    assert!(
        matches!(settings.mode, ModeArg::Auto | ModeArg::Ebpf),
        "the ConfigMap's mode: {:?}",
        settings.mode
    );

    // 1. As shipped, kube-apiserver.yaml's values are empty: the proxy stops
    //    before touching anything, and says what to set.
    let mut unset = c.start(&f, true, &[]);
    let status = wait_exit(&mut unset, STARTUP);
    let log = unset.log();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{log}");
    assert!(
        log.contains("KUBERNETES_SERVICE_HOST") && log.contains("kube-apiserver.yaml"),
        "{log}"
    );
    assert!(pins_left(&c.pin_path).is_empty(), "it changed nothing");

    // 2. Deploy: with the API server's address (the fake one's kubeconfig),
    //    the ConfigMap's settings, the container's flags and confinement.
    f.proxy = Some(c.start(
        &f,
        false,
        &[OsStr::new("--kubeconfig"), kubeconfig.as_os_str()],
    ));
    f.wait_ready();
    for vip in [WEB_VIP4, WEB_VIP6] {
        for (kind, port, target) in [
            (Kind::Tcp, TCP_PORT, TCP_TARGET),
            (Kind::UdpConnected, UDP_PORT, UDP_TARGET),
        ] {
            let vip = sock(vip, port);
            f.wait_for(PROPAGATION, &format!("{kind:?} to {vip}"), || {
                kind.request(vip, PROBE).is_ok()
            });
            let backends = if vip.is_ipv4() {
                &BACKENDS_V4
            } else {
                &BACKENDS_V6
            };
            assert_backends(
                &format!("{kind:?} to {vip}"),
                &tally(kind, vip, 20),
                &names(backends, target),
            );
        }
    }
    let log = f.log();
    assert!(
        log.lines()
            .any(|l| serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|v| v["level"] == "INFO")),
        "logFormat: json from the ConfigMap:\n{log}"
    );

    // 3. Verify, as the README does: the probes, the metrics, and
    //    `kubectl exec ds/proxy -- proxy inspect services`.
    let healthz = SocketAddr::from(([127, 0, 0, 1], c.healthz_port));
    for path in ["/livez", "/healthz"] {
        let (code, body) = http_get(healthz, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(code, 200, "{path}: {body}");
    }
    let metrics = settings
        .metrics_bind_address
        .addr()
        .unwrap_or_else(|| panic!("metrics are off in the ConfigMap"));
    // eBPF, not `auto`'s fallback: the container's capabilities load the
    // programs.
    let (code, body) = http_get(healthz, "/healthz").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        code == 200 && body.contains(r#""mode":"ebpf""#),
        "/healthz: {code} {body}\n{}",
        f.log()
    );
    assert_eq!(
        http_get(metrics, "/proxyMode").unwrap_or_else(|e| panic!("{e}")),
        (200, "ebpf".to_owned()),
        "the mode in force (a fallback to userspace?):\n{}",
        f.log()
    );
    assert!(
        !f.log().contains("falling back"),
        "the container fell back to userspace:\n{}",
        f.log()
    );
    let (code, body) = http_get(metrics, "/metrics").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code, 200);
    assert!(
        body.contains("proxy_mode{mode=\"ebpf\"} 1"),
        "no proxy_mode{{mode=\"ebpf\"}} 1 in:\n{body}"
    );
    for family in [
        "proxy_map_capacity",
        "proxy_datapath_events_total",
        "kubeproxy_sync_proxy_rules_duration_seconds",
    ] {
        assert!(
            body.contains(family),
            "no {family} in the metrics (capabilities?):\n{body}"
        );
    }
    let out = c.exec(&["inspect", "services"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in ["10.96.0.10:80/TCP", "[fd00:96::10]:53/UDP", "pxt/web:http"] {
        assert!(text.contains(expected), "no {expected} in:\n{text}");
    }
    // `kubectl exec ds/proxy -- proxy explain` finds the daemon's query
    // socket through the container's PROXY_QUERY_SOCKET, and `proxy diff`
    // finds the maps agreeing with it.
    let out = c.exec(&["explain", "pxt/web"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("cluster: used (Ready)"),
        "no used endpoint in:\n{text}"
    );
    let out = c.exec(&["diff"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let out = c.exec(&["inspect", "status", "-o", "json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "inspect status: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(
        status["links"].as_array().map(Vec::len),
        Some(8),
        "{status}"
    );
    assert_eq!(status["mode"], "ebpf", "{status}");

    // Every request the proxy made is one its ClusterRole grants.
    let requests = api.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        let rbac = rbac_of(r).unwrap_or_else(|| panic!("not a resource request: {r:?}"));
        assert!(
            granted(&d, &rbac),
            "{rbac:?} ({r:?}) is not granted by deploy/clusterrole.yaml"
        );
    }

    // 4. Upgrade: the old pod stops (SIGTERM), Services keep working with no
    //    daemon, and the new one takes the hooks over in place.
    let status = f.proxy().stop().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean exit");
    let vip = sock(WEB_VIP4, TCP_PORT);
    tcp_request_timeout_ok(vip, "while no daemon runs");
    f.proxy = Some(c.start(
        &f,
        false,
        &[OsStr::new("--kubeconfig"), kubeconfig.as_os_str()],
    ));
    let took_over = |log: &str| {
        log.lines().any(|l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["took_over"] == 8)
        })
    };
    let new_daemon = f
        .proxy
        .as_ref()
        .map(ProxyProcess::log_path)
        .map(Path::to_path_buf);
    assert!(
        wait_until(STARTUP, || {
            new_daemon
                .as_ref()
                .and_then(|p| fs::read_to_string(p).ok())
                .is_some_and(|log| took_over(&log))
        }),
        "the new daemon did not take the 8 hooks over:\n{}",
        f.log()
    );
    tcp_request_timeout_ok(vip, "after the upgrade");

    // 5. Remove: the pods go, then `proxy cleanup` on the node.
    let status = f.proxy().stop().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status.code(), Some(0));
    f.proxy = None;
    let out = c.exec(&["cleanup"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        pins_left(&c.pin_path).is_empty(),
        "{:?}",
        pins_left(&c.pin_path)
    );
    // The kernel releases an unpinned link (detaching its hook) from a work
    // queue, a moment after the unpin.
    let mut last = None;
    let gone = wait_until(PROPAGATION, || {
        last = Some(Kind::Tcp.request(vip, PROBE));
        last.as_ref().is_some_and(Result::is_err)
    });
    assert!(
        gone,
        "{vip} is still translated {PROPAGATION:?} after cleanup: {last:?}"
    );
}

fn tcp_request_timeout_ok(vip: SocketAddr, when: &str) {
    if let Err(e) = Kind::Tcp.request(vip, REQUEST) {
        panic!("TCP to {vip} {when}: {e}");
    }
}

/// The capabilities the eBPF path needs (`daemonset.yaml` says why).
const EBPF_CAPABILITIES: [&str; 3] = ["BPF", "NET_ADMIN", "PERFMON"];
/// The capabilities `auto`'s fallback, the userspace proxies, needs:
/// NET_ADMIN for the VIPs' local routes, NET_BIND_SERVICE to listen on
/// Service ports below 1024.
const USERSPACE_CAPABILITIES: [&str; 2] = ["NET_ADMIN", "NET_BIND_SERVICE"];

/// The capability that ends pods' connected UDP sockets aimed at a removed
/// endpoint (setns into their namespaces); without it the proxy works but
/// cannot: shown by
/// `sys_admin_lets_the_container_end_a_pods_udp_socket_in_its_namespace`.
const POD_UDP_CAPABILITIES: [&str; 1] = ["SYS_ADMIN"];

/// A fake API server with the node and `web` (TCP 80, UDP 53), and its kubeconfig.
fn cluster_with_web(f: &Fixture) -> (FakeApiServer, PathBuf) {
    let api = FakeApiServer::start().expect("starting the fake API server in the sandbox");
    api.apply_node(&Node::new(NODE));
    api.apply_yaml(&service(WEB, &[WEB_VIP4, WEB_VIP6], TCP_PORT, UDP_PORT));
    for (family, addrs) in [
        (AddressType::IPv4, &BACKENDS_V4[..]),
        (AddressType::IPv6, &BACKENDS_V6[..]),
    ] {
        api.apply_yaml(&slice(WEB, &slice_name(WEB, family), family, addrs));
    }
    let kubeconfig = api
        .write_kubeconfig(f.sandbox.dir())
        .expect("writing the kubeconfig");
    (api, kubeconfig)
}

#[test]
fn each_capability_the_daemonset_adds_is_needed() {
    let d = Deploy::load();
    let f = Fixture::new(Mode::Ebpf);
    let (_api, kubeconfig) = cluster_with_web(&f);
    let mut c = Container::new(&d, &f);
    let all = c.confinement.capabilities.clone();
    for cap in &all {
        assert!(
            EBPF_CAPABILITIES.contains(&cap.as_str())
                || USERSPACE_CAPABILITIES.contains(&cap.as_str())
                || POD_UDP_CAPABILITIES.contains(&cap.as_str()),
            "{cap}: not needed by the eBPF path, the userspace fallback, nor pods' UDP flows"
        );
    }
    // SYS_ADMIN implies BPF and PERFMON to the kernel: each of the others is
    // needed once it is gone (the least-privilege set README names, which
    // gives up only ending pods' UDP flows).
    let least: Vec<String> = all
        .iter()
        .filter(|c| !POD_UDP_CAPABILITIES.contains(&c.as_str()))
        .cloned()
        .collect();
    for dropped in &least {
        c.confinement.capabilities = least.iter().filter(|c| *c != dropped).cloned().collect();
        if EBPF_CAPABILITIES.contains(&dropped.as_str()) {
            // `--mode ebpf` (over the ConfigMap's mode): no fallback to hide it.
            let mut p = c.start(
                &f,
                false,
                &[
                    OsStr::new("--kubeconfig"),
                    kubeconfig.as_os_str(),
                    OsStr::new("--mode=ebpf"),
                ],
            );
            let status = wait_exit(&mut p, STARTUP);
            let log = p.log();
            assert_eq!(
                status.and_then(|s| s.code()),
                Some(1),
                "without {dropped}, expected the proxy to fail at load:\n{log}"
            );
            assert!(
                log.contains("loading the dataplane"),
                "without {dropped}:\n{log}"
            );
        }
        if USERSPACE_CAPABILITIES.contains(&dropped.as_str()) {
            // The userspace proxies cannot serve `web` (its VIPs are not
            // made local, or port 80 cannot be bound).
            let mut p = c.start(
                &f,
                false,
                &[
                    OsStr::new("--kubeconfig"),
                    kubeconfig.as_os_str(),
                    OsStr::new("--mode=userspace"),
                ],
            );
            let vip = sock(WEB_VIP4, TCP_PORT);
            let served = wait_until(PROPAGATION, || {
                p.exited().is_some() || Kind::Tcp.request(vip, PROBE).is_ok()
            }) && p.exited().is_none();
            let log = p.log();
            assert!(
                !served,
                "without {dropped}, the userspace proxies served {vip}:\n{log}"
            );
            assert!(
                log.contains("Permission denied") || log.contains("Operation not permitted"),
                "without {dropped}, expected the kernel's refusal in the log:\n{log}"
            );
            drop(p);
            // Its VIP routes, if it could add them, would let the next run
            // serve without adding any.
            c.confinement.capabilities = all.clone();
            let out = c.exec(&["cleanup"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The container as shipped ends a pod's connected UDP socket aimed at a
/// removed endpoint, in the pod's own namespace (found in the runtime's pin
/// directory, the `netns` volume); without `SYS_ADMIN` the same container
/// keeps serving but cannot, and the pod's socket stays on its endpoint.
#[test]
fn sys_admin_lets_the_container_end_a_pods_udp_socket_in_its_namespace() {
    let d = Deploy::load();
    let f = Fixture::new(Mode::Ebpf);
    let (api, kubeconfig) = cluster_with_web(&f);
    let c = Container::new(&d, &f);
    let pins = c
        .netns_dir
        .clone()
        .unwrap_or_else(|| panic!("the container has no --netns-dir"));
    let pod = PodNetns::create(&f.sandbox, 1).expect("creating the pod's network namespace");
    std::os::unix::fs::symlink(pod.netns_path(), pins.join("cni-pod1"))
        .unwrap_or_else(|e| panic!("pinning the pod's namespace: {e}"));
    let vip = sock(WEB_VIP4, UDP_PORT);
    let slice4 = slice_name(WEB, AddressType::IPv4);
    for with_sys_admin in [true, false] {
        let mut c = Container::new(&d, &f);
        if !with_sys_admin {
            c.confinement.capabilities.retain(|cap| cap != "SYS_ADMIN");
        }
        let mut p = c.start(
            &f,
            false,
            &[
                OsStr::new("--kubeconfig"),
                kubeconfig.as_os_str(),
                OsStr::new("--mode=ebpf"),
            ],
        );
        let mut client =
            PodUdpClient::start(Path::new(env!("CARGO_BIN_EXE_pxt-udp-client")), &pod, PROBE)
                .expect("starting the UDP client in the pod");
        let mut first = Err(String::new());
        let served = wait_until(PROPAGATION, || {
            if client.connect(vip).is_err() {
                return false;
            }
            first = client.ask();
            first.is_ok()
        });
        assert!(
            served,
            "the pod's first request to {vip}: {first:?}\n{}",
            p.log()
        );
        let first = first.unwrap_or_default();
        // A socket of the node's own namespace, on the same endpoint: its
        // end says the change was programmed.
        let ask = |socket: &std::net::UdpSocket| -> std::io::Result<String> {
            socket.send(b"hello\n")?;
            let mut buf = [0u8; 512];
            let n = socket.recv(&mut buf)?;
            let reply: Reply = String::from_utf8_lossy(&buf[..n]).parse()?;
            Ok(reply.backend)
        };
        let mut own = None;
        let own_on = wait_until(PROPAGATION, || {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("binding");
            socket.set_read_timeout(Some(PROBE)).expect("timeout");
            let on = socket.connect(vip).is_ok() && ask(&socket).is_ok_and(|b| b == first);
            own = Some(socket);
            on
        });
        let own = own.unwrap_or_else(|| panic!("no socket"));
        assert!(own_on, "no socket of the node's namespace reached {first}");
        let keep: Vec<&str> = BACKENDS_V4
            .iter()
            .copied()
            .filter(|a| backend_name(a, UDP_TARGET) != first)
            .collect();
        api.apply_yaml(&slice(WEB, &slice4, AddressType::IPv4, &keep));
        // The socket above may have gone through hooks an earlier container
        // left pinned while this one still loads its programs (seconds on a
        // loaded machine): the change lands after that, so the start-up bound.
        let own_ended = wait_until(STARTUP, || {
            ask(&own).is_err_and(|e| {
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            })
        });
        assert!(
            own_ended,
            "the node's own socket on {first} was not ended\n{}",
            p.log()
        );
        let answer = client.ask();
        let pod_ended = match &answer {
            Ok(_) => false,
            Err(line) => !(line.starts_with("err WouldBlock") || line.starts_with("err TimedOut")),
        };
        assert_eq!(
            pod_ended,
            with_sys_admin,
            "with SYS_ADMIN: {with_sys_admin}; the pod's socket on {first} answered {answer:?}\n{}",
            p.log()
        );
        api.apply_yaml(&slice(WEB, &slice4, AddressType::IPv4, &BACKENDS_V4));
        drop(client);
        let _ = p.kill();
    }
}

#[test]
fn autos_fallback_serves_with_the_daemonsets_capabilities() {
    // A node where the programs cannot be loaded (here: no CAP_BPF, as with
    // a seccomp profile that refuses bpf(2)): the ConfigMap's `auto` falls
    // back to the userspace proxies, with the rest of the container's
    // capabilities, and Services below port 1024 work.
    let d = Deploy::load();
    let settings: RunArgs = file::parse(d.config_file()).unwrap_or_else(|e| panic!("{e}"));
    if settings.mode != ModeArg::Auto {
        eprintln!(
            "the ConfigMap's mode is {:?}: no fallback to test",
            settings.mode
        );
        return;
    }
    let mut f = Fixture::new(Mode::Userspace);
    let (_api, kubeconfig) = cluster_with_web(&f);
    let mut c = Container::new(&d, &f);
    // SYS_ADMIN would stand in for BPF: a node whose seccomp profile refuses
    // bpf(2) refuses it whatever the capabilities.
    c.confinement
        .capabilities
        .retain(|cap| cap != "BPF" && cap != "SYS_ADMIN");
    f.proxy = Some(c.start(
        &f,
        false,
        &[OsStr::new("--kubeconfig"), kubeconfig.as_os_str()],
    ));
    f.wait_ready();
    for vip in [WEB_VIP4, WEB_VIP6] {
        for (kind, port, target) in [
            (Kind::Tcp, TCP_PORT, TCP_TARGET),
            (Kind::UdpUnconnected, UDP_PORT, UDP_TARGET),
        ] {
            let vip = sock(vip, port);
            f.wait_for(PROPAGATION, &format!("{kind:?} to {vip}"), || {
                kind.request(vip, PROBE).is_ok()
            });
            let backends = if vip.is_ipv4() {
                &BACKENDS_V4
            } else {
                &BACKENDS_V6
            };
            assert_backends(
                &format!("{kind:?} to {vip}"),
                &tally(kind, vip, 45),
                &names(backends, target),
            );
        }
    }
    let metrics = settings
        .metrics_bind_address
        .addr()
        .unwrap_or_else(|| panic!("metrics are off in the ConfigMap"));
    assert_eq!(
        http_get(metrics, "/proxyMode").unwrap_or_else(|e| panic!("{e}")),
        (200, "userspace".to_owned()),
        "{}",
        f.log()
    );
    assert!(f.log().contains("falling back"), "{}", f.log());
}
