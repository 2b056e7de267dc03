//! The kit of `runtime_pod.rs`: podman run in the sandbox's network
//! namespace, the image under test, the DaemonSet's pod template turned into
//! a Pod on the sandbox's paths, and the pod's life cycle (see
//! `runtime_pod.rs`'s module docs for what is changed and why).

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

use proxy_tests::{FakeApiServer, manifest::AddressType, manifest::Node, proxy_bin, wait_until};
use serde_json::{Value, json};

use crate::common::*;
use crate::deploy_common::{deploy_dir, read_value, repo_root};

pub const NODE: &str = "node-1";
/// Where the kubeconfig is mounted in the container.
pub const KUBECONFIG_DIR: &str = "/run/proxy/kube";
/// How long a pod may take from `podman pod start` to serving.
pub const POD_STARTUP: Duration = Duration::from_secs(30);

/// podman; with a sandbox, every command run in its network namespace.
pub struct Podman {
    pub netns: Option<PathBuf>,
}

impl Podman {
    pub fn command(&self, args: &[&str]) -> Command {
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

    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap_or_else(|e| {
            panic!("running podman {args:?} (scripts/setup.sh installs it): {e}")
        })
    }

    /// Stdout of a command that must succeed.
    pub fn ok(&self, args: &[&str]) -> String {
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
pub fn test_image() -> String {
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
pub struct HostPaths {
    pub bpffs: PathBuf,
    pub cgroup: PathBuf,
    pub netns_dir: PathBuf,
    pub kubeconfig_dir: PathBuf,
}

/// `deploy/daemonset.yaml`'s pod template as a Pod named `name`, mapped onto
/// the test's node (see the module docs for every change).
pub fn pod_from_daemonset(name: &str, image: &str, node: &HostPaths) -> Value {
    // The hooks attach where the cgroup volume points: it must be the test's
    // own child cgroup, never the machine's cgroup2 root.
    assert!(
        node.cgroup
            .parent()
            .is_some_and(|p| p.join("cgroup.procs").exists())
            && !node.cgroup.ends_with("sys/fs/cgroup")
            && !node.cgroup.ends_with("sys/fs/cgroup/unified"),
        "the pod's cgroup volume must be a child cgroup the test created, not {}",
        node.cgroup.display()
    );
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
pub fn healthz_port() -> u16 {
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
pub struct RuntimePod<'a> {
    pub podman: &'a Podman,
    pub name: String,
    /// The pod's ConfigMap volumes, removed after it.
    pub volumes: Vec<String>,
}

impl RuntimePod<'_> {
    /// The proxy's container.
    pub fn container(&self) -> String {
        format!("{}-proxy", self.name)
    }

    pub fn logs(&self) -> String {
        let out = self.podman.output(&["logs", &self.container()]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    pub fn running(&self) -> bool {
        self.podman.ok(&[
            "inspect",
            "--format",
            "{{.State.Running}}",
            &self.container(),
        ]) == "true"
    }

    pub fn exit_code(&self) -> Option<i32> {
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
    pub fn pid(&self) -> u32 {
        let pid = self
            .podman
            .ok(&["inspect", "--format", "{{.State.Pid}}", &self.container()]);
        pid.parse().unwrap_or_else(|e| panic!("pid {pid:?}: {e}"))
    }

    /// `kubectl exec`: `podman exec` of the image's binary.
    pub fn exec(&self, args: &[&str]) -> Output {
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
pub fn node_of(f: &Fixture, kubeconfig: &Path) -> HostPaths {
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
pub fn play<'a>(podman: &'a Podman, f: &Fixture, pod: &Value) -> RuntimePod<'a> {
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

/// The status code of `GET path` on `addr` (HTTP/1.0, as a probe), and the body.
pub fn probe_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
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
pub fn cluster_with_web(f: &Fixture) -> (FakeApiServer, PathBuf) {
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
pub fn wait_serving(pod: &RuntimePod<'_>) {
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
pub fn cap_mask(names: &[&str]) -> u64 {
    names
        .iter()
        .map(|n| {
            proxy_tests::container::capability_number(n)
                .unwrap_or_else(|| panic!("unknown capability {n}"))
        })
        .fold(0, |m, n| m | 1 << n)
}

/// A `/proc/PID/status` field.
pub fn status_field(pid: u32, field: &str) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A unique pod name for this test process.
pub fn pod_name(what: &str) -> String {
    format!("pxt-{what}-{}", std::process::id())
}

/// Every file of a directory tree, relative, with its metadata.
pub fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, fs::Metadata)>) {
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

/// The capabilities the eBPF path needs (`daemonset.yaml` says why).
pub const EBPF_CAPABILITIES: [&str; 3] = ["BPF", "NET_ADMIN", "PERFMON"];

/// `pod` without capability `cap`, or with `extra` arguments, never restarted
/// (so its exit is seen).
pub fn without(pod: &Value, name: &str, drop: &[&str], extra: &[&str]) -> Value {
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
pub fn wait_exit(pod: &RuntimePod<'_>) -> Option<i32> {
    let mut code = None;
    wait_until(POD_STARTUP, || {
        code = pod.exit_code();
        code.is_some()
    });
    code
}

/// What a steady stream of new TCP connections saw.
#[derive(Debug, Default)]
pub struct StreamReport {
    pub ok: u64,
    pub failed: u64,
    /// The first failures (at most 20).
    pub failures: Vec<String>,
}

/// New TCP connections, one request each, alternating over `web`'s VIPs,
/// until `stop` (bounded in count and time).
pub fn web_stream(stop: Arc<AtomicBool>) -> JoinHandle<StreamReport> {
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
