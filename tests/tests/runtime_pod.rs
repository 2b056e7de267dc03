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
mod runtime_pod_kit;

use std::{
    fs,
    net::SocketAddr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use common::*;
use deploy_common::{deploy_dir, read_value};
use proxy_tests::wait_until;
use runtime_pod_kit::*;
use serde_json::{Value, json};

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
                &tally(kind, vip, 45),
                &names(backends, target),
            );
        }
    }

    // The probes' requests on the probes' port: eBPF, not `auto`'s fallback.
    let healthz = SocketAddr::from(([127, 0, 0, 1], healthz_port()));
    for path in ["/livez", "/healthz"] {
        let (code, body) = probe_get(healthz, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(code, 200, "{path}: {body}");
    }
    let (_, body) = probe_get(healthz, "/healthz").unwrap_or_else(|e| panic!("{e}"));
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
            &tally(kind, vip, 45),
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
    let (code, body) = probe_get(healthz, "/healthz").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        code == 200 && body.contains(r#""mode":"userspace""#),
        "/healthz: {code} {body}"
    );
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
