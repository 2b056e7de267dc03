//! The cluster deployment (`deploy/`, `Dockerfile`), checked without a cluster:
//!
//! - every manifest is exactly its `k8s-openapi` type: no unknown field (a
//!   typo is an error naming it; the negative tests prove it), nothing lost;
//! - the offline schema validator `kubernetes-validate` (strict: unknown
//!   properties are errors), installed by `scripts/setup.sh`, accepts them,
//!   with no network;
//! - the rules the issue sets: RBAC no wider than kube-proxy's
//!   `system:node-proxier`, the DaemonSet's security context, probes, update
//!   strategy and mounts, and the API server's own rules that a schema does
//!   not carry (Bidirectional mount propagation only in a privileged
//!   container);
//! - the ConfigMap's configuration file is valid for this proxy;
//! - the Dockerfile's build stage runs exactly the README's commands.
//!
//! `deploy_e2e.rs` runs the DaemonSet's container against a fake API server.

mod deploy_common;

use std::{collections::BTreeSet, fs, process::Command};

use deploy_common::*;
use k8s_openapi::{
    api::{apps::v1::DaemonSet, core::v1::Capabilities},
    apimachinery::pkg::util::intstr::IntOrString,
};
use proxy::{cli::run::RunArgs, config::file};
use serde_json::{Value, json};

#[test]
fn every_manifest_is_exactly_its_kubernetes_type() {
    let mut files: Vec<String> = fs::read_dir(deploy_dir())
        .unwrap_or_else(|e| panic!("reading deploy/: {e}"))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("{e}"))
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
        .collect();
    files.sort();
    let mut listed = kustomization_resources();
    listed.sort();
    assert_eq!(
        listed, files,
        "kustomization.yaml must list every manifest in deploy/, and only those"
    );
    for file in &files {
        let value = read_value(&deploy_dir().join(file));
        let kind = (value["apiVersion"].as_str(), value["kind"].as_str());
        let result = match kind {
            (Some("v1"), Some("Namespace")) => {
                exactly::<k8s_openapi::api::core::v1::Namespace>(&value).map(|_| ())
            }
            (Some("v1"), Some("ServiceAccount")) => {
                exactly::<k8s_openapi::api::core::v1::ServiceAccount>(&value).map(|_| ())
            }
            (Some("v1"), Some("ConfigMap")) => {
                exactly::<k8s_openapi::api::core::v1::ConfigMap>(&value).map(|_| ())
            }
            (Some("rbac.authorization.k8s.io/v1"), Some("ClusterRole")) => {
                exactly::<k8s_openapi::api::rbac::v1::ClusterRole>(&value).map(|_| ())
            }
            (Some("rbac.authorization.k8s.io/v1"), Some("ClusterRoleBinding")) => {
                exactly::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>(&value).map(|_| ())
            }
            (Some("apps/v1"), Some("DaemonSet")) => exactly::<DaemonSet>(&value).map(|_| ()),
            other => Err(format!("no check for {other:?}: add its type here")),
        };
        if let Err(e) = result {
            panic!("deploy/{file}: {e}");
        }
    }
    // And every one of them, typed, where the other tests read them.
    let _ = Deploy::load();
}

#[test]
fn a_typo_anywhere_in_a_manifest_is_caught_and_named() {
    let original = read_value(&deploy_dir().join("daemonset.yaml"));
    assert_eq!(exactly::<DaemonSet>(&original).err(), None);

    let mut typo = original.clone();
    typo["spec"]["template"]["spec"]["hostNetwrk"] = json!(true);
    typo["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilitie"] =
        json!({"add": ["SYS_ADMIN"]});
    let (_, unknown) =
        unknown_fields::<DaemonSet>(&typo).unwrap_or_else(|e| panic!("still a DaemonSet: {e}"));
    assert_eq!(
        unknown,
        [
            "spec.template.spec.containers.0.securityContext.capabilitie",
            "spec.template.spec.hostNetwrk"
        ],
        "serde_ignored names both typos"
    );
    let error = exactly::<DaemonSet>(&typo).err().unwrap_or_default();
    assert!(
        error.contains("hostNetwrk") && error.contains("capabilitie"),
        "{error}"
    );

    // A value of the wrong type does not deserialize at all.
    let mut wrong = original.clone();
    wrong["spec"]["template"]["spec"]["hostNetwork"] = json!("yes");
    assert!(exactly::<DaemonSet>(&wrong).is_err());

    // A misplaced field (valid elsewhere, unknown here) is caught too.
    let mut misplaced = original;
    misplaced["spec"]["template"]["spec"]["readOnlyRootFilesystem"] = json!(true);
    let error = exactly::<DaemonSet>(&misplaced).err().unwrap_or_default();
    assert!(
        error.contains("spec.template.spec.readOnlyRootFilesystem"),
        "{error}"
    );
}

/// `kubernetes-validate`, as `scripts/setup.sh` installs it.
fn kubernetes_validate() -> Command {
    let tool = repo_root().join(".cache/kubernetes-validate/bin/kubernetes-validate");
    assert!(
        tool.is_file(),
        "{} is missing: run scripts/setup.sh (./x test does)",
        tool.display()
    );
    // In a network namespace of its own, with nothing in it: the schemas it
    // uses are the ones it ships.
    let mut cmd = Command::new("unshare");
    cmd.arg("--net").arg(tool).arg("--strict");
    cmd
}

#[test]
fn the_offline_schema_validator_accepts_every_manifest_and_rejects_a_typo() {
    let files = kustomization_resources();
    let out = kubernetes_validate()
        .args(files.iter().map(|f| deploy_dir().join(f)))
        .output()
        .unwrap_or_else(|e| panic!("running kubernetes-validate: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubernetes-validate failed:\n{text}");
    for file in &files {
        assert!(
            text.lines()
                .any(|l| l.contains(file.as_str()) && l.contains("passed")),
            "no pass reported for {file}:\n{text}"
        );
    }

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let typo = dir.path().join("daemonset.yaml");
    let text = fs::read_to_string(deploy_dir().join("daemonset.yaml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .replace(
            "readOnlyRootFilesystem: true",
            "readOnlyRootFileSystem: true",
        );
    fs::write(&typo, text).unwrap_or_else(|e| panic!("{e}"));
    let out = kubernetes_validate()
        .arg(&typo)
        .output()
        .unwrap_or_else(|e| panic!("running kubernetes-validate: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the typo was accepted:\n{text}");
    assert!(text.contains("readOnlyRootFileSystem"), "{text}");
}

#[test]
fn the_role_is_no_wider_than_kube_proxys_system_node_proxier() {
    let d = Deploy::load();
    // (API group, resource, verb): `system:node-proxier`'s list, as the issue
    // and docs/reliability.md give it.
    let mut allowed = BTreeSet::new();
    for (groups, resource, verbs) in [
        (&[""][..], "services", &["list", "watch"][..]),
        (&["discovery.k8s.io"], "endpointslices", &["list", "watch"]),
        (&[""], "nodes", &["get", "list", "watch"]),
        (
            &["", "events.k8s.io"],
            "events",
            &["create", "patch", "update"],
        ),
    ] {
        for g in groups {
            for v in verbs {
                allowed.insert((g.to_string(), resource.to_owned(), v.to_string()));
            }
        }
    }
    let mut granted = BTreeSet::new();
    for rule in d.cluster_role.rules.iter().flatten() {
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "{rule:?}"
        );
        for g in rule.api_groups.iter().flatten() {
            for r in rule.resources.iter().flatten() {
                for v in &rule.verbs {
                    assert!(g != "*" && r != "*" && v != "*", "no wildcards: {rule:?}");
                    granted.insert((g.clone(), r.clone(), v.clone()));
                }
            }
        }
    }
    let extra: Vec<_> = granted.difference(&allowed).collect();
    assert!(
        extra.is_empty(),
        "wider than system:node-proxier: {extra:?}"
    );
    assert_eq!(granted, allowed, "what the proxy needs");
    assert!(d.cluster_role.aggregation_rule.is_none());

    // Bound to the proxy's service account only.
    let role_name = d.cluster_role.metadata.name.as_deref();
    assert_eq!(d.binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(d.binding.role_ref.name.as_str()), role_name);
    let subjects = d.binding.subjects.as_deref().unwrap_or_default();
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(
        Some(subjects[0].name.as_str()),
        d.service_account.metadata.name.as_deref()
    );
    assert_eq!(
        subjects[0].namespace.as_deref(),
        d.service_account.metadata.namespace.as_deref()
    );
    assert_eq!(
        d.pod().service_account_name.as_deref(),
        d.service_account.metadata.name.as_deref()
    );
}

#[test]
fn everything_namespaced_is_in_the_proxys_namespace_which_admits_its_pods() {
    let d = Deploy::load();
    let ns = d.namespace.metadata.name.as_deref();
    for (what, namespace) in [
        ("ServiceAccount", &d.service_account.metadata.namespace),
        ("ConfigMap kube-apiserver", &d.apiserver.metadata.namespace),
        ("ConfigMap proxy-config", &d.config.metadata.namespace),
        ("DaemonSet", &d.daemon_set.metadata.namespace),
    ] {
        assert_eq!(namespace.as_deref(), ns, "{what}");
    }
    let labels = d.namespace.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("privileged"),
        "host access is admitted only at the privileged Pod Security level"
    );
}

fn capabilities(d: &Deploy) -> Capabilities {
    d.container()
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.clone())
        .unwrap_or_else(|| panic!("no capabilities"))
}

#[test]
fn the_daemonset_is_least_privilege_and_node_critical() {
    let d = Deploy::load();
    let pod = d.pod();
    let c = d.container();
    let sc = c
        .security_context
        .as_ref()
        .unwrap_or_else(|| panic!("no securityContext"));

    assert_eq!(pod.host_network, Some(true));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    // Tolerates every taint: `operator: Exists` with no key and no effect.
    assert!(
        pod.tolerations
            .iter()
            .flatten()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "{:?}",
        pod.tolerations
    );
    assert!(pod.host_pid.is_none_or(|v| !v) && pod.host_ipc.is_none_or(|v| !v));

    // Not privileged; only the capabilities the proxy needs.
    assert_eq!(sc.privileged, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    let caps = capabilities(&d);
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    let added: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
    let permitted: BTreeSet<&str> = [
        "BPF",
        "NET_ADMIN",
        "NET_BIND_SERVICE",
        "PERFMON",
        "SYS_ADMIN",
    ]
    .into();
    assert!(added.is_subset(&permitted), "{added:?}");
    // NET_BIND_SERVICE: for `mode: auto`'s userspace fallback.
    for needed in ["BPF", "NET_ADMIN", "NET_BIND_SERVICE", "PERFMON"] {
        assert!(
            added.contains(needed),
            "{needed} is needed (see the comments)"
        );
    }
    // The API server's rule: no_new_privs and CAP_SYS_ADMIN do not go together.
    if sc.allow_privilege_escalation == Some(false) {
        assert!(!added.contains("SYS_ADMIN"), "refused by the API server");
    }
    // Uid 0, or the added capabilities would not be effective.
    assert_eq!(sc.run_as_user, Some(0));

    // The API server's rule that a schema does not carry: Bidirectional
    // mount propagation is for privileged containers only.
    for m in c.volume_mounts.iter().flatten() {
        if m.mount_propagation.as_deref() == Some("Bidirectional") {
            assert_eq!(sc.privileged, Some(true), "{} is Bidirectional", m.name);
        }
    }

    // NODE_NAME from the downward API.
    let node_name = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NODE_NAME")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(node_name, Some("spec.nodeName"));

    // Rolling update, one node at a time.
    let strategy = d
        .daemon_set
        .spec
        .update_strategy
        .as_ref()
        .unwrap_or_else(|| panic!("no update strategy"));
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    assert_eq!(
        strategy
            .rolling_update
            .as_ref()
            .and_then(|r| r.max_unavailable.clone()),
        Some(IntOrString::Int(1))
    );
}

#[test]
fn the_daemonset_mounts_what_its_flags_and_probes_name() {
    let d = Deploy::load();
    let pod = d.pod();
    let c = d.container();
    let volume = |name: &str| {
        pod.volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    let mount_of = |host: &str| {
        let v = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.host_path.as_ref().is_some_and(|h| h.path == host))
            .unwrap_or_else(|| panic!("no hostPath volume for {host}"));
        c.volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == v.name)
            .unwrap_or_else(|| panic!("volume {} is not mounted", v.name))
    };

    // The host's BPF filesystem holds the pins: PROXY_PIN_PATH is below it.
    let bpffs = mount_of("/sys/fs/bpf");
    let pin_path = d
        .env("PROXY_PIN_PATH")
        .unwrap_or_else(|| panic!("no PROXY_PIN_PATH"));
    assert!(
        pin_path.starts_with(&format!("{}/", bpffs.mount_path)),
        "{pin_path} is not on the bpffs mount {}",
        bpffs.mount_path
    );
    assert_eq!(bpffs.mount_propagation.as_deref(), Some("HostToContainer"));
    assert_ne!(bpffs.read_only, Some(true), "pins are written");

    // The host's cgroup2 root is where the hooks attach (--cgroup).
    let cgroup = mount_of("/sys/fs/cgroup");
    assert_eq!(d.arg("cgroup"), Some(cgroup.mount_path.as_str()));
    assert_eq!(cgroup.read_only, Some(true));

    // The runtime's pinned pod namespaces are where --netns-dir looks,
    // read-only, with pods started later visible (HostToContainer).
    let netns = mount_of("/run/netns");
    assert_eq!(d.arg("netns-dir"), Some(netns.mount_path.as_str()));
    assert_eq!(netns.read_only, Some(true));
    assert_eq!(netns.mount_propagation.as_deref(), Some("HostToContainer"));
    // The pins must be on the host's bpffs: never one mounted in the
    // container, which would die with it.
    assert_eq!(d.arg("mount-bpffs"), Some("false"));

    // The query socket (`proxy explain`, `proxy diff`) is on a writable
    // emptyDir: the root filesystem is read-only.
    let socket = d
        .env("PROXY_QUERY_SOCKET")
        .unwrap_or_else(|| panic!("no PROXY_QUERY_SOCKET"));
    let query_mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| socket.starts_with(&format!("{}/", m.mount_path)))
        .unwrap_or_else(|| panic!("no volume mounted where the query socket {socket} goes"));
    assert_ne!(
        query_mount.read_only,
        Some(true),
        "the socket is made there"
    );
    assert!(
        volume(&query_mount.name).empty_dir.is_some(),
        "the query socket's directory is an emptyDir"
    );

    // The configuration file is the ConfigMap's config.yaml.
    let config = d.arg("config").unwrap_or_else(|| panic!("no --config"));
    let config_mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| config.starts_with(&format!("{}/", m.mount_path)))
        .unwrap_or_else(|| panic!("{config} is on no mount"));
    let source = volume(&config_mount.name)
        .config_map
        .as_ref()
        .unwrap_or_else(|| panic!("{config} is not from a ConfigMap"));
    assert_eq!(
        Some(source.name.as_str()),
        d.config.metadata.name.as_deref()
    );
    assert!(config.ends_with("/config.yaml"));
    assert_eq!(
        c.args.as_ref().and_then(|a| a.first()).map(String::as_str),
        Some("run")
    );

    // The API server's address comes from the kube-apiserver ConfigMap.
    let from: Vec<&str> = c
        .env_from
        .iter()
        .flatten()
        .filter_map(|e| e.config_map_ref.as_ref().map(|r| r.name.as_str()))
        .collect();
    assert_eq!(
        from,
        [d.apiserver.metadata.name.as_deref().unwrap_or_default()]
    );
    let keys: BTreeSet<&str> = d
        .apiserver
        .data
        .iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(
        keys,
        ["KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"].into()
    );

    // The probes ask /livez and /healthz on the port /healthz is served on.
    let settings: RunArgs = file::parse(d.config_file()).unwrap_or_else(|e| panic!("{e}"));
    let healthz = settings
        .healthz_bind_address
        .addr()
        .unwrap_or_else(|| panic!("/healthz is off in the configuration"));
    let port = c
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("healthz"))
        .unwrap_or_else(|| panic!("no healthz port"));
    assert_eq!(port.container_port, i32::from(healthz.port()));
    for (probe, path) in [
        (&c.liveness_probe, "/livez"),
        (&c.readiness_probe, "/healthz"),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("no HTTP probe for {path}"));
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.port, IntOrString::String("healthz".into()));
        assert!(get.host.is_none(), "the kubelet probes the node's address");
    }
}

#[test]
fn the_configmap_holds_a_valid_configuration_file() {
    let d = Deploy::load();
    let settings: RunArgs = file::parse(d.config_file())
        .unwrap_or_else(|e| panic!("deploy/configmap.yaml, config.yaml: {e}"));
    // Set in the DaemonSet, next to the mounts they name, not here.
    assert_eq!(settings.cgroup, None);
    assert_eq!(settings.pin_path, RunArgs::default().pin_path);
    assert_eq!(settings.node_name, None);
    assert_eq!(settings.kubeconfig, None, "in-cluster");
    assert_eq!(settings.manifests, None);
    // Metrics on the node's loopback only.
    let metrics = settings.metrics_bind_address.addr();
    assert!(metrics.is_none_or(|a| a.ip().is_loopback()), "{metrics:?}");

    // And a typo in it is refused, by name.
    let typo = d.config_file().replace("healthzTimeout", "healthzTimout");
    let error = file::parse::<RunArgs>(&typo)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("healthzTimout"), "{error}");
}

#[test]
fn the_kustomization_sets_the_daemonsets_image() {
    let d = Deploy::load();
    let image = d.container().image.clone().unwrap_or_default();
    let k = read_value(&deploy_dir().join("kustomization.yaml"));
    let names: Vec<&str> = k["images"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["name"].as_str())
        .collect();
    let repository = image.rsplit_once(':').map_or(image.as_str(), |(r, _)| r);
    assert_eq!(names, [repository], "images[].name must match {image}");
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = fs::read_to_string(repo_root().join("Dockerfile"))
        .unwrap_or_else(|e| panic!("reading the Dockerfile: {e}"));
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                let (op, rest) = current.split_once(' ').unwrap_or((current.as_str(), ""));
                out.push((op.to_uppercase(), rest.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

#[test]
fn the_dockerfile_builds_with_the_readmes_commands_for_any_oci_builder() {
    let instructions = dockerfile();
    let stages: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, (op, _))| op == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let (build, runtime) = instructions[stages[0]..].split_at(stages[1] - stages[0]);

    // The build stage runs the README's two commands, in order, and nothing
    // else: `scripts/setup.sh` (what `./x` runs first) and the release build.
    let runs: Vec<&str> = build
        .iter()
        .filter(|(op, _)| op == "RUN")
        .map(|(_, args)| args.as_str())
        .collect();
    assert_eq!(runs, ["scripts/setup.sh", "cargo xtask build --release"]);
    let readme = fs::read_to_string(repo_root().join("README.md")).unwrap_or_default();
    assert!(readme.contains("cargo xtask build --release"));
    let x = fs::read_to_string(repo_root().join("x")).unwrap_or_default();
    assert!(x.contains("scripts/setup.sh"), "./x runs scripts/setup.sh");
    // CI runs the build stage itself (`cargo xtask dockerfile`: its COPYs
    // from the build context, then these RUN lines).
    let ci = fs::read_to_string(repo_root().join(".ci/run")).unwrap_or_default();
    assert!(ci.lines().any(|l| l.trim() == "./x dockerfile"), "{ci}");
    // And builds the runtime stage with buildah, then runs the DaemonSet's
    // pod from that image (tests/tests/runtime_pod.rs).
    assert!(ci.lines().any(|l| l.trim() == "./x image --test"), "{ci}");

    // What the build stage copies exists and is in the build context.
    let ignored = fs::read_to_string(repo_root().join(".dockerignore"))
        .unwrap_or_else(|e| panic!("no .dockerignore: {e}"));
    for (op, args) in build {
        if op == "COPY" && !args.starts_with("--") {
            let parts: Vec<&str> = args.split_whitespace().collect();
            for source in &parts[..parts.len() - 1] {
                if *source == "." {
                    continue;
                }
                assert!(
                    repo_root().join(source).exists(),
                    "COPY {source}: not in the repository"
                );
                let top = source.trim_end_matches('/');
                assert!(
                    !ignored
                        .lines()
                        .any(|l| l.trim().trim_end_matches('/') == top),
                    "COPY {source} is excluded by .dockerignore"
                );
            }
        }
    }
    for needed in ["target", ".git"] {
        assert!(
            ignored
                .lines()
                .any(|l| l.trim().trim_end_matches('/') == needed),
            ".dockerignore must exclude {needed}"
        );
    }

    // The runtime stage: FROM scratch (nothing to pull), the binary, the C
    // runtime it links and the CA bundle, from the build stage (`cargo xtask dockerfile` checks
    // that the binary links nothing else; `cargo xtask image` builds it).
    let base = &runtime[0].1;
    assert_eq!(base, "scratch", "runtime base");
    assert!(
        runtime.iter().all(|(op, _)| op != "RUN"),
        "no RUN in the runtime stage"
    );
    let copies: Vec<&str> = runtime
        .iter()
        .filter(|(op, _)| op == "COPY")
        .map(|(_, a)| a.as_str())
        .collect();
    assert_eq!(
        copies,
        [
            "--from=build /lib64/ld-linux-x86-64.so.2 /lib64/ld-linux-x86-64.so.2",
            "--from=build /lib/x86_64-linux-gnu/libc.so.6 /lib/x86_64-linux-gnu/libc.so.6",
            "--from=build /lib/x86_64-linux-gnu/libm.so.6 /lib/x86_64-linux-gnu/libm.so.6",
            "--from=build /lib/x86_64-linux-gnu/libgcc_s.so.1 /lib/x86_64-linux-gnu/libgcc_s.so.1",
            "--from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt",
            "--from=build /src/target/release/proxy /usr/local/bin/proxy",
        ]
    );
    assert!(
        runtime
            .iter()
            .any(|(op, a)| op == "ENTRYPOINT" && a == "[\"/usr/local/bin/proxy\"]")
    );

    // Any OCI builder: base images named in full (registry included), and no
    // BuildKit-only syntax.
    for i in &stages {
        let image = instructions[*i]
            .1
            .split_whitespace()
            .next()
            .unwrap_or_default();
        if image == "scratch" {
            continue;
        }
        let registry = image.split('/').next().unwrap_or_default();
        assert!(
            registry.contains('.'),
            "FROM {image}: name the registry, builders differ in their default"
        );
    }
    for (op, args) in &instructions {
        assert!(
            !args.contains("--mount") && !args.contains("<<"),
            "{op} {args}: BuildKit-only syntax"
        );
    }
}

#[test]
fn the_config_file_reference_is_what_print_defaults_prints() {
    // The README's reference and the ConfigMap both name fields; each one
    // must be a field of the file.
    let defaults: Value = serde_json::to_value(RunArgs::default()).unwrap_or_default();
    let fields: BTreeSet<&str> = defaults
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .collect();
    let readme = fs::read_to_string(repo_root().join("README.md")).unwrap_or_default();
    for field in &fields {
        assert!(
            readme.contains(&format!("`{field}`")),
            "README.md does not mention the config field `{field}`"
        );
    }
}
