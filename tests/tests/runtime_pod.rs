//! The DaemonSet's own pod, run by a real container runtime: podman 4.3 with
//! runc (`podman play kube`), from the image `cargo xtask image` builds, with
//! the runtime's default seccomp profile, its capability handling, its
//! read-only root and its mounts. Where `deploy_e2e.rs` imitates the runtime
//! ([`proxy_tests::Confinement`]), this lets one do it.
//!
//! The Pod is `deploy/daemonset.yaml`'s pod template, read from the file, with
//! the ConfigMaps as shipped (`podman play kube --configmap`). Changed, and
//! only this:
//! - the image: the test's, built from `PROXY_BIN` (or `PROXY_IMAGE` when set);
//! - the host paths point at the test's sandbox: its private bpffs for
//!   `/sys/fs/bpf`, its child cgroup for the cgroup2 root, a directory of its
//!   own for `/run/netns`. Never the machine's (environment.md, network
//!   safety rules 3 and 5);
//! - the API server: the fake one, through a kubeconfig in one more hostPath
//!   volume and `--kubeconfig` (it speaks plain HTTP and there is no service
//!   account token); the shipped kube-apiserver ConfigMap stays, empty;
//! - `NODE_NAME`: podman 4.3 refuses `fieldRef: spec.nodeName`, so the node's
//!   name is written in;
//! - `ports` is dropped, the probes' named port resolved to its number first:
//!   podman 4.3 turns container ports into port mappings, which it refuses
//!   with the host network.
//!
//! `hostNetwork: true` is kept. To podman it means no network namespace of
//! the pod's own: the containers stay in the namespace of the podman process
//! that *starts* them (and `podman exec` in that of its caller). So every
//! podman command here runs under `nsenter --net=<the sandbox's namespace>`,
//! and before the proxy starts, the pod's infra container is started alone
//! and its namespace checked to be the sandbox's.
//!
//! Not done by podman 4.3, so not tested here: `mountPropagation` (ignored:
//! the mounts are private), the probes (it turns them into a `curl`
//! healthcheck run by systemd timers; the image has no curl and the machine no
//! systemd: the test sends the probes' requests itself), the scheduling fields
//! (priority class, tolerations, service account).

mod common;
mod deploy_common;

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use common::*;
use deploy_common::{deploy_dir, read_value, repo_root};
use proxy_tests::{FakeApiServer, manifest::AddressType, manifest::Node, proxy_bin, wait_until};
use serde_json::{Value, json};

const NODE: &str = "node-1";
/// Where the kubeconfig is mounted in the container.
const KUBECONFIG_DIR: &str = "/run/proxy/kube";
/// How long a pod may take from `podman pod start` to serving.
const POD_STARTUP: Duration = Duration::from_secs(30);

/// podman; with a sandbox, every command run in its network namespace.
struct Podman {
    netns: Option<PathBuf>,
}

impl Podman {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = match &self.netns {
            Some(netns) => {
                let mut cmd = Command::new("nsenter");
                cmd.arg(format!("--net={}", netns.display()))
                    .arg("--")
                    .arg("podman");
                cmd
            }
            None => Command::new("podman"),
        };
        cmd.args(args);
        if std::env::var_os("CONTAINERS_CONF").is_none() {
            // What ./x exports (scripts/setup.sh writes it): runc, and
            // ulimits this machine allows.
            let conf = repo_root().join(".cache/containers/containers.conf");
            assert!(
                conf.is_file(),
                "{} is missing: run scripts/setup.sh",
                conf.display()
            );
            cmd.env("CONTAINERS_CONF", conf);
        }
        cmd
    }

    fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap_or_else(|e| {
            panic!("running podman {args:?} (scripts/setup.sh installs it): {e}")
        })
    }

    /// Stdout of a command that must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// The image under test: `PROXY_IMAGE`, or one built from `PROXY_BIN` by
/// `cargo xtask image` (once per binary: the tag names its size and time).
fn test_image() -> String {
    if let Some(image) = std::env::var_os("PROXY_IMAGE") {
        return image.to_string_lossy().into_owned();
    }
    let bin = proxy_bin();
    let meta = fs::metadata(&bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let tag = format!(
        "localhost/ebpf-proxy:test-{:x}-{:x}",
        meta.size(),
        meta.mtime()
    );
    let root = repo_root();
    let lock = root.join("target").join("image-context.lock");
    // One build at a time (tests run in parallel), none when it exists; the
    // images of earlier binaries go.
    let script = format!(
        "podman image exists {tag} && exit 0
         podman images --quiet --filter 'reference=localhost/ebpf-proxy:test-*' \
           | xargs --no-run-if-empty podman rmi --force >/dev/null
         cargo xtask image --binary {bin} --tag {tag} >&2",
        bin = bin.display()
    );
    let mut cmd = Command::new("flock");
    cmd.arg(&lock)
        .args(["bash", "-c", &script])
        .current_dir(&root);
    if std::env::var_os("CONTAINERS_CONF").is_none() {
        cmd.env(
            "CONTAINERS_CONF",
            root.join(".cache/containers/containers.conf"),
        );
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("building the image: {e}"));
    assert!(
        out.status.success(),
        "building the image: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tag
}

/// The paths of this test's stand-ins for the node.
struct HostPaths {
    bpffs: PathBuf,
    cgroup: PathBuf,
    netns_dir: PathBuf,
    kubeconfig_dir: PathBuf,
}

/// `deploy/daemonset.yaml`'s pod template as a Pod named `name`, mapped onto
/// the test's node (see the module docs for every change).
fn pod_from_daemonset(name: &str, image: &str, node: &HostPaths) -> Value {
    let ds = read_value(&deploy_dir().join("daemonset.yaml"));
    let template = &ds["spec"]["template"];
    let mut spec = template["spec"].clone();
    assert_eq!(spec["hostNetwork"], json!(true));
    let volumes = spec["volumes"]
        .as_array_mut()
        .unwrap_or_else(|| panic!("no volumes"));
    for v in volumes.iter_mut() {
        let Some(path) = v["hostPath"]["path"].as_str() else {
            continue;
        };
        let local = match path {
            "/sys/fs/bpf" => &node.bpffs,
            "/sys/fs/cgroup" => &node.cgroup,
            "/run/netns" => &node.netns_dir,
            other => panic!("hostPath {other} has no stand-in in this test: teach it"),
        };
        v["hostPath"]["path"] = json!(local.display().to_string());
    }
    volumes.push(json!({
        "name": "kubeconfig",
        "hostPath": {"path": node.kubeconfig_dir.display().to_string(), "type": "Directory"},
    }));
    let containers = spec["containers"]
        .as_array_mut()
        .unwrap_or_else(|| panic!("no containers"));
    assert_eq!(containers.len(), 1, "one container");
    let c = &mut containers[0];
    c["image"] = json!(image);
    c["imagePullPolicy"] = json!("Never");
    c["args"]
        .as_array_mut()
        .unwrap_or_else(|| panic!("no args"))
        .push(json!(format!("--kubeconfig={KUBECONFIG_DIR}/kubeconfig")));
    c["volumeMounts"]
        .as_array_mut()
        .unwrap_or_else(|| panic!("no volumeMounts"))
        .push(json!({"name": "kubeconfig", "mountPath": KUBECONFIG_DIR, "readOnly": true}));
    for e in c["env"].as_array_mut().into_iter().flatten() {
        if e["valueFrom"]["fieldRef"]["fieldPath"] == json!("spec.nodeName") {
            *e = json!({"name": e["name"], "value": NODE});
        }
    }
    let ports = c["ports"].take();
    for probe in ["livenessProbe", "readinessProbe"] {
        let port = &mut c[probe]["httpGet"]["port"];
        if let Some(named) = port.as_str() {
            let number = ports
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == json!(named))
                .map(|p| p["containerPort"].clone())
                .unwrap_or_else(|| panic!("{probe}: no port named {named}"));
            *port = number;
        }
    }
    c.as_object_mut().map(|o| o.remove("ports"));
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": template["metadata"]["labels"]},
        "spec": spec,
    })
}

/// The healthz port of the shipped container.
fn healthz_port() -> u16 {
    let ds = read_value(&deploy_dir().join("daemonset.yaml"));
    ds["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == json!("healthz"))
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("no healthz port"))
}

/// A pod of the runtime, removed (with its containers) on drop.
struct RuntimePod<'a> {
    podman: &'a Podman,
    name: String,
    /// The pod's ConfigMap volumes, removed after it.
    volumes: Vec<String>,
}

impl RuntimePod<'_> {
    /// The proxy's container.
    fn container(&self) -> String {
        format!("{}-proxy", self.name)
    }

    fn logs(&self) -> String {
        let out = self.podman.output(&["logs", &self.container()]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn running(&self) -> bool {
        self.podman.ok(&[
            "inspect",
            "--format",
            "{{.State.Running}}",
            &self.container(),
        ]) == "true"
    }

    fn exit_code(&self) -> Option<i32> {
        if self.running() {
            return None;
        }
        self.podman
            .ok(&[
                "inspect",
                "--format",
                "{{.State.ExitCode}}",
                &self.container(),
            ])
            .parse()
            .ok()
    }

    /// The container's main process, as the host sees it.
    fn pid(&self) -> u32 {
        let pid = self
            .podman
            .ok(&["inspect", "--format", "{{.State.Pid}}", &self.container()]);
        pid.parse().unwrap_or_else(|e| panic!("pid {pid:?}: {e}"))
    }

    /// `kubectl exec`: `podman exec` of the image's binary.
    fn exec(&self, args: &[&str]) -> Output {
        let container = self.container();
        let mut all = vec!["exec", container.as_str(), "/usr/local/bin/proxy"];
        all.extend_from_slice(args);
        self.podman.output(&all)
    }
}

impl Drop for RuntimePod<'_> {
    fn drop(&mut self) {
        let out = self
            .podman
            .output(&["pod", "rm", "--force", "--time=5", &self.name]);
        if !out.status.success() {
            eprintln!(
                "removing pod {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for v in &self.volumes {
            let _ = self.podman.output(&["volume", "rm", "--force", v]);
        }
    }
}

/// The test's node: the sandbox's paths, a kubeconfig for the fake API server.
fn node_of(f: &Fixture, kubeconfig: &Path) -> HostPaths {
    let dir = f.sandbox.dir();
    let netns_dir = dir.join("netns");
    let kubeconfig_dir = dir.join("kube");
    for d in [&netns_dir, &kubeconfig_dir] {
        fs::create_dir_all(d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    }
    fs::copy(kubeconfig, kubeconfig_dir.join("kubeconfig"))
        .unwrap_or_else(|e| panic!("copying the kubeconfig: {e}"));
    HostPaths {
        bpffs: f.sandbox.bpffs_path().to_path_buf(),
        cgroup: f.sandbox.cgroup_path().to_path_buf(),
        netns_dir,
        kubeconfig_dir,
    }
}

/// Creates the pod from `pod`, starts its infra container alone and checks
/// it is in the sandbox's network namespace, then starts the proxy.
fn play<'a>(podman: &'a Podman, f: &Fixture, pod: &Value) -> RuntimePod<'a> {
    let name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("no name"))
        .to_owned();
    let file = f.sandbox.dir().join(format!("{name}.yaml"));
    let mut volumes = Vec::new();
    // podman keeps a ConfigMap volume under the ConfigMap's name and reuses
    // it, stale, when it exists: each pod gets the shipped ConfigMap under a
    // name of its own, removed with it.
    let mut spec = pod.clone();
    let mut configmaps = vec![deploy_dir().join("kube-apiserver.yaml")];
    for v in spec["spec"]["volumes"].as_array_mut().into_iter().flatten() {
        let Some(shipped) = v["configMap"]["name"].as_str().map(str::to_owned) else {
            continue;
        };
        let own = format!("{shipped}-{name}");
        let mut cm = read_value(&deploy_dir().join("configmap.yaml"));
        assert_eq!(
            cm["metadata"]["name"],
            json!(shipped),
            "deploy/configmap.yaml"
        );
        cm["metadata"]["name"] = json!(own);
        let path = f.sandbox.dir().join(format!("{own}.yaml"));
        let text = serde_norway::to_string(&cm).unwrap_or_else(|e| panic!("{e}"));
        fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        configmaps.push(path);
        v["configMap"]["name"] = json!(own);
        volumes.push(own);
    }
    let yaml = serde_norway::to_string(&spec).unwrap_or_else(|e| panic!("{e}"));
    fs::write(&file, yaml).unwrap_or_else(|e| panic!("{e}"));
    let mut args = vec!["play", "kube", "--start=false"];
    for c in &configmaps {
        args.extend(["--configmap", c.to_str().unwrap_or_default()]);
    }
    let file_arg = file.display().to_string();
    args.push(&file_arg);
    let out = podman.output(&args);
    // Removed on drop even when `play` failed half-way.
    let pod = RuntimePod {
        podman,
        name,
        volumes,
    };
    assert!(
        out.status.success(),
        "podman play kube: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let infra = podman.ok(&[
        "pod",
        "inspect",
        "--format",
        "{{.InfraContainerID}}",
        &pod.name,
    ]);
    podman.ok(&["start", &infra]);
    let pid = podman.ok(&["inspect", "--format", "{{.State.Pid}}", &infra]);
    let ns = |path: &Path| {
        fs::metadata(path)
            .map(|m| (m.dev(), m.ino()))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    assert_eq!(
        ns(&PathBuf::from(format!("/proc/{pid}/ns/net"))),
        ns(&f.sandbox.netns_path()),
        "hostNetwork put the pod outside the sandbox's network namespace: stopped \
         before the proxy started"
    );
    podman.ok(&["pod", "start", &pod.name]);
    pod
}

/// The status code of `GET path` on `addr` (HTTP/1.0), and the body.
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
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

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

/// Waits until `web`'s IPv4 VIP answers over TCP, or the container exits.
fn wait_serving(pod: &RuntimePod<'_>) {
    let vip = sock(WEB_VIP4, TCP_PORT);
    let mut exited = None;
    let served = wait_until(POD_STARTUP, || {
        exited = pod.exit_code();
        exited.is_some() || Kind::Tcp.request(vip, PROBE).is_ok()
    });
    assert!(
        served && exited.is_none(),
        "the pod did not serve {vip} within {POD_STARTUP:?} (exit code {exited:?}):\n{}",
        pod.logs()
    );
}

/// A capability set as `/proc/PID/status` prints it (`CapEff`).
fn cap_mask(names: &[&str]) -> u64 {
    names
        .iter()
        .map(|n| {
            proxy_tests::container::capability_number(n)
                .unwrap_or_else(|| panic!("unknown capability {n}"))
        })
        .fold(0, |m, n| m | 1 << n)
}

/// A `/proc/PID/status` field.
fn status_field(pid: u32, field: &str) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A unique pod name for this test process.
fn pod_name(what: &str) -> String {
    format!("pxt-{what}-{}", std::process::id())
}

#[test]
fn the_daemonsets_pod_runs_under_a_real_runtime_in_ebpf_mode() {
    let image = test_image();
    let f = Fixture::new(Mode::Ebpf);
    let (_api, kubeconfig) = cluster_with_web(&f);
    let node = node_of(&f, &kubeconfig);
    let podman = Podman {
        netns: Some(f.sandbox.netns_path()),
    };
    let spec = pod_from_daemonset(&pod_name("proxy"), &image, &node);
    let pod = play(&podman, &f, &spec);
    wait_serving(&pod);

    // TCP and UDP through the ClusterIP, both families, every endpoint.
    for vip in [WEB_VIP4, WEB_VIP6] {
        for (kind, port, target) in [
            (Kind::Tcp, TCP_PORT, TCP_TARGET),
            (Kind::UdpConnected, UDP_PORT, UDP_TARGET),
            (Kind::UdpUnconnected, UDP_PORT, UDP_TARGET),
        ] {
            let vip = sock(vip, port);
            assert!(
                wait_until(PROPAGATION, || kind.request(vip, PROBE).is_ok()),
                "{kind:?} to {vip} through the pod:\n{}",
                pod.logs()
            );
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

    // The probes' requests on the probes' port: eBPF, not `auto`'s fallback.
    let healthz = SocketAddr::from(([127, 0, 0, 1], healthz_port()));
    for path in ["/livez", "/healthz"] {
        let (code, body) = http_get(healthz, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(code, 200, "{path}: {body}");
    }
    let (_, body) = http_get(healthz, "/healthz").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        body.contains(r#""mode":"ebpf""#),
        "/healthz: {body}\n{}",
        pod.logs()
    );
    let logs = pod.logs();
    assert!(
        !logs.contains("falling back"),
        "the pod fell back to userspace:\n{logs}"
    );

    // What the runtime did to the process: exactly the added capabilities,
    // the default seccomp filter, privilege escalation allowed (SYS_ADMIN),
    // a read-only root.
    let pid = pod.pid();
    let ds = read_value(&deploy_dir().join("daemonset.yaml"));
    let sc = &ds["spec"]["template"]["spec"]["containers"][0]["securityContext"];
    let added: Vec<&str> = sc["capabilities"]["add"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        u64::from_str_radix(&status_field(pid, "CapEff"), 16).ok(),
        Some(cap_mask(&added)),
        "CapEff of the container, expected exactly {added:?}"
    );
    assert_eq!(status_field(pid, "CapInh"), format!("{:016x}", 0));
    assert_eq!(
        status_field(pid, "Seccomp"),
        "2",
        "the default seccomp profile"
    );
    assert_eq!(status_field(pid, "NoNewPrivs"), "0");
    let mounts =
        fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_else(|e| panic!("{e}"));
    let root = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .unwrap_or_else(|| panic!("no / in\n{mounts}"));
    assert!(
        root.split_whitespace()
            .nth(5)
            .is_some_and(|o| o.split(',').any(|o| o == "ro")),
        "readOnlyRootFilesystem: {root}"
    );

    // `kubectl exec ds/proxy -- proxy inspect services`.
    let out = pod.exec(&["inspect", "services"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "proxy inspect services: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for vip in [WEB_VIP4, WEB_VIP6] {
        assert!(text.contains(vip), "no {vip} in:\n{text}");
    }
}

/// Every file of a directory tree, relative, with its metadata.
fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, fs::Metadata)>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        let meta = fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{e}"));
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        if meta.is_dir() {
            walk(root, &path, out);
        }
        out.push((rel, meta));
    }
}

#[test]
fn the_image_holds_one_binary_its_c_runtime_and_labels_and_no_shell() {
    let image = test_image();
    let podman = Podman { netns: None };
    let root = PathBuf::from(podman.ok(&["image", "mount", &image]));
    let mut entries = Vec::new();
    walk(&root, &root, &mut entries);
    podman.ok(&["image", "unmount", &image]);

    let mut files: Vec<&str> = entries
        .iter()
        .filter(|(_, m)| !m.is_dir())
        .map(|(p, _)| p.as_str())
        .collect();
    files.sort_unstable();
    assert_eq!(
        files,
        [
            "etc/ssl/certs/ca-certificates.crt",
            "lib/x86_64-linux-gnu/libc.so.6",
            "lib/x86_64-linux-gnu/libgcc_s.so.1",
            "lib/x86_64-linux-gnu/libm.so.6",
            "lib64/ld-linux-x86-64.so.2",
            "usr/local/bin/proxy",
        ],
        "the image's files (no shell, no package manager, one binary)"
    );
    for (path, meta) in &entries {
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{path} is not root's");
        assert_eq!(
            meta.mode() & 0o022,
            0,
            "{path} is writable by others than its owner: {:o}",
            meta.mode()
        );
        assert!(meta.is_dir() || meta.is_file(), "{path}: not a plain file");
    }

    let inspect = podman.ok(&["image", "inspect", &image]);
    let config: Value = serde_json::from_str(&inspect).unwrap_or_else(|e| panic!("{e}"));
    let config = &config[0]["Config"];
    assert_eq!(config["Entrypoint"], json!(["/usr/local/bin/proxy"]));
    assert_eq!(config["Cmd"], json!(["run"]));
    let labels = &config["Labels"];
    for label in [
        "org.opencontainers.image.title",
        "org.opencontainers.image.description",
        "org.opencontainers.image.licenses",
        "org.opencontainers.image.revision",
        "org.opencontainers.image.version",
    ] {
        assert!(
            labels[label].as_str().is_some_and(|v| !v.is_empty()),
            "no label {label} in {labels}"
        );
    }
    assert_eq!(
        labels["org.opencontainers.image.version"],
        json!(env!("CARGO_PKG_VERSION"))
    );
    // It runs, and from nothing but itself and those files.
    let out = podman.output(&["run", "--rm", "--network=none", &image, "--version"]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("proxy "),
        "{out:?}"
    );
    let out = podman.output(&[
        "run",
        "--rm",
        "--network=none",
        "--entrypoint=/bin/sh",
        &image,
    ]);
    assert!(!out.status.success(), "a shell ran in the image: {out:?}");
}

/// The capabilities the eBPF path needs (`daemonset.yaml` says why).
const EBPF_CAPABILITIES: [&str; 3] = ["BPF", "NET_ADMIN", "PERFMON"];

/// `pod` without capability `cap`, or with `extra` arguments, never restarted
/// (so its exit is seen).
fn without(pod: &Value, name: &str, drop: &[&str], extra: &[&str]) -> Value {
    let mut pod = pod.clone();
    pod["metadata"]["name"] = json!(name);
    pod["spec"]["restartPolicy"] = json!("Never");
    let c = &mut pod["spec"]["containers"][0];
    if let Some(add) = c["securityContext"]["capabilities"]["add"].as_array_mut() {
        add.retain(|a| !drop.iter().any(|d| a == d));
    }
    if let Some(args) = c["args"].as_array_mut() {
        args.extend(extra.iter().map(|a| json!(a)));
    }
    pod
}

/// Waits for the pod's container to exit; its exit code.
fn wait_exit(pod: &RuntimePod<'_>) -> Option<i32> {
    let mut code = None;
    wait_until(POD_STARTUP, || {
        code = pod.exit_code();
        code.is_some()
    });
    code
}

#[test]
fn each_capability_the_daemonset_adds_is_needed_under_the_runtime() {
    let image = test_image();
    let f = Fixture::new(Mode::Ebpf);
    let (_api, kubeconfig) = cluster_with_web(&f);
    let node = node_of(&f, &kubeconfig);
    let podman = Podman {
        netns: Some(f.sandbox.netns_path()),
    };
    let shipped = pod_from_daemonset(&pod_name("proxy"), &image, &node);
    // SYS_ADMIN stands in for BPF and PERFMON to the kernel: it goes first
    // (README: the least-privilege set gives up only pods' UDP flows).
    for cap in EBPF_CAPABILITIES {
        let name = pod_name(&format!("no-{}", cap.to_lowercase().replace('_', "-")));
        let spec = without(&shipped, &name, &["SYS_ADMIN", cap], &["--mode=ebpf"]);
        let pod = play(&podman, &f, &spec);
        let code = wait_exit(&pod);
        let logs = pod.logs();
        assert_eq!(
            code,
            Some(1),
            "without {cap}, expected the proxy to stop at load:\n{logs}"
        );
        assert!(
            logs.contains("loading the dataplane"),
            "without {cap}:\n{logs}"
        );
    }
    // Without BPF, the ConfigMap's `mode: auto` falls back to the userspace
    // proxies, which serve with the capabilities left.
    let spec = without(&shipped, &pod_name("fallback"), &["SYS_ADMIN", "BPF"], &[]);
    let pod = play(&podman, &f, &spec);
    wait_serving(&pod);
    for (kind, vip) in [
        (Kind::Tcp, sock(WEB_VIP4, TCP_PORT)),
        (Kind::UdpConnected, sock(WEB_VIP6, UDP_PORT)),
    ] {
        assert_backends(
            &format!("{kind:?} to {vip} through the fallback"),
            &tally(kind, vip, 12),
            &names(
                if vip.is_ipv4() {
                    &BACKENDS_V4
                } else {
                    &BACKENDS_V6
                },
                if kind == Kind::Tcp {
                    TCP_TARGET
                } else {
                    UDP_TARGET
                },
            ),
        );
    }
    let healthz = SocketAddr::from(([127, 0, 0, 1], healthz_port()));
    let (code, body) = http_get(healthz, "/healthz").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        code == 200 && body.contains(r#""mode":"userspace""#),
        "/healthz: {code} {body}"
    );
}

/// What a steady stream of new TCP connections saw.
#[derive(Debug, Default)]
struct StreamReport {
    ok: u64,
    failed: u64,
    /// The first failures (at most 20).
    failures: Vec<String>,
}

/// New TCP connections, one request each, alternating over `web`'s VIPs,
/// until `stop` (bounded in count and time).
fn web_stream(stop: Arc<AtomicBool>) -> JoinHandle<StreamReport> {
    let mut expected = names(&BACKENDS_V4, TCP_TARGET);
    expected.extend(names(&BACKENDS_V6, TCP_TARGET));
    let vips = [sock(WEB_VIP4, TCP_PORT), sock(WEB_VIP6, TCP_PORT)];
    thread::spawn(move || {
        let started = Instant::now();
        let mut report = StreamReport::default();
        let mut n = 0usize;
        while !stop.load(Ordering::Relaxed)
            && n < 50_000
            && started.elapsed() < Duration::from_secs(120)
        {
            let vip = vips[n % vips.len()];
            n += 1;
            let failure = match Kind::Tcp.request(vip, REQUEST) {
                Ok(reply) if expected.contains(&reply.backend) => None,
                Ok(reply) => Some(format!("{vip} answered by {}", reply.backend)),
                Err(e) => Some(format!("{vip}: {e}")),
            };
            match failure {
                None => report.ok += 1,
                Some(f) => {
                    report.failed += 1;
                    if report.failures.len() < 20 {
                        report
                            .failures
                            .push(format!("at {:?}: {f}", started.elapsed()));
                    }
                }
            }
            thread::sleep(Duration::from_millis(5));
        }
        report
    })
}

#[test]
fn the_pod_is_replaced_under_traffic_stopped_and_cleaned_up_by_a_one_off_container() {
    let image = test_image();
    // A second tag of the image: what a rollout to a new version changes.
    let next = format!("{image}-next");
    Podman { netns: None }.ok(&["tag", &image, &next]);
    let f = Fixture::new(Mode::Ebpf);
    let (_api, kubeconfig) = cluster_with_web(&f);
    let node = node_of(&f, &kubeconfig);
    let podman = Podman {
        netns: Some(f.sandbox.netns_path()),
    };
    let old = play(
        &podman,
        &f,
        &pod_from_daemonset(&pod_name("old"), &image, &node),
    );
    wait_serving(&old);
    let stop = Arc::new(AtomicBool::new(false));
    let load = web_stream(Arc::clone(&stop));
    thread::sleep(Duration::from_millis(500));

    // The rollout (maxUnavailable: 1): the old pod is deleted (SIGTERM), then
    // the new one created; Services keep working in between.
    let status = podman.output(&["pod", "stop", "--time=10", &old.name]);
    assert!(status.status.success(), "{status:?}");
    assert_eq!(
        old.exit_code(),
        Some(0),
        "SIGTERM is a clean exit:\n{}",
        old.logs()
    );
    drop(old);
    thread::sleep(Duration::from_millis(500));
    let new = play(
        &podman,
        &f,
        &pod_from_daemonset(&pod_name("new"), &next, &node),
    );
    let took_over = wait_until(POD_STARTUP, || {
        new.logs()
            .lines()
            .any(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["took_over"] == json!(8)))
    });
    assert!(
        took_over,
        "the new pod did not take the 8 hooks over:\n{}",
        new.logs()
    );
    thread::sleep(Duration::from_millis(500));

    // Stopped, no daemon: traffic keeps flowing.
    let status = podman.output(&["pod", "stop", "--time=10", &new.name]);
    assert!(status.status.success(), "{status:?}");
    assert_eq!(new.exit_code(), Some(0), "{}", new.logs());
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let report = load
        .join()
        .unwrap_or_else(|_| panic!("the load thread panicked"));
    assert!(
        report.failed == 0 && report.ok >= 20,
        "expected no failed new connection across the rollout and the stop, saw {} of {}: \
         {:#?}",
        report.failed,
        report.failed + report.ok,
        report.failures
    );
    drop(new);

    // Removal: `proxy cleanup` in a one-off container of the image, with the
    // DaemonSet's environment, capabilities and bpffs mount.
    let ds = read_value(&deploy_dir().join("daemonset.yaml"));
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    let pin_path = c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == json!("PROXY_PIN_PATH"))
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("no PROXY_PIN_PATH"))
        .to_owned();
    let bpffs_mount = c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == json!("bpffs"))
        .and_then(|m| m["mountPath"].as_str())
        .unwrap_or_else(|| panic!("no bpffs mount"))
        .to_owned();
    let volume = format!("{}:{bpffs_mount}", node.bpffs.display());
    let env = format!("PROXY_PIN_PATH={pin_path}");
    let mut args = vec![
        "run",
        "--rm",
        "--network=host",
        "--read-only",
        "--cap-drop=ALL",
        "--env",
        &env,
        "--volume",
        &volume,
    ];
    let caps: Vec<String> = c["securityContext"]["capabilities"]["add"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|cap| format!("--cap-add={cap}"))
        .collect();
    args.extend(caps.iter().map(String::as_str));
    args.extend([next.as_str(), "cleanup"]);
    let out = podman.output(&args);
    assert!(
        out.status.success(),
        "proxy cleanup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pins = node.bpffs.join(
        Path::new(&pin_path)
            .strip_prefix(&bpffs_mount)
            .unwrap_or_else(|e| panic!("PROXY_PIN_PATH is not on the bpffs mount: {e}")),
    );
    let mut left = Vec::new();
    if pins.exists() {
        walk(&pins, &pins, &mut left);
    }
    let left: Vec<&str> = left
        .iter()
        .filter(|(_, m)| !m.is_dir())
        .map(|(p, _)| p.as_str())
        .collect();
    assert!(left.is_empty(), "pins left after cleanup: {left:?}");
    let vip = sock(WEB_VIP4, TCP_PORT);
    let mut last = None;
    let gone = wait_until(PROPAGATION, || {
        last = Some(Kind::Tcp.request(vip, PROBE));
        last.as_ref().is_some_and(Result::is_err)
    });
    assert!(gone, "{vip} is still translated after cleanup: {last:?}");
    Podman { netns: None }.ok(&["rmi", &next]);
}
