//! The `deploy/` manifests, read as the API server reads them: each file into
//! its `k8s-openapi` type, refusing any field the type does not know.
//!
//! `k8s-openapi`'s types skip unknown fields silently, as serde does by
//! default, so a typo (`hostNetwrk: true`) would deserialize to a DaemonSet
//! without host networking. Two checks catch that, and both must pass:
//! - `serde_ignored` reports every field the type's deserializer skipped, with
//!   its path (the error message names the typo);
//! - the typed value, serialized again, must equal the file's value exactly,
//!   which also catches anything else lost on the way (a value dropped or
//!   coerced).

#![allow(
    dead_code,
    reason = "each test binary compiles this module and uses only part of it"
)]

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{ConfigMap, Container, Namespace, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding},
    },
    serde::{Serialize, de::DeserializeOwned},
};
use serde_json::Value;

/// The repository's root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `deploy/`.
pub fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

/// A YAML file (one document) as a JSON value.
pub fn read_value(path: &Path) -> Value {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_norway::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not one YAML document: {e}", path.display()))
}

/// `value` as a `T`, with the path of every field `T` does not know (empty
/// when there is none). `Err` when it does not deserialize at all.
pub fn unknown_fields<T: DeserializeOwned>(value: &Value) -> Result<(T, Vec<String>), String> {
    let mut unknown = Vec::new();
    let typed = serde_ignored::deserialize(value, |path| {
        // `?` stands for an `Option` on the way (`spec.?.template`): drop it.
        let path = path.to_string();
        let segments: Vec<&str> = path.split('.').filter(|s| *s != "?").collect();
        unknown.push(segments.join("."));
    })
    .map_err(|e| e.to_string())?;
    Ok((typed, unknown))
}

/// Where `actual` differs from `expected`, as JSON paths.
pub fn differences(expected: &Value, actual: &Value) -> Vec<String> {
    fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for k in keys {
                    let p = format!("{path}.{k}");
                    match (a.get(k), b.get(k)) {
                        (Some(x), Some(y)) => walk(&p, x, y, out),
                        (Some(_), None) => out.push(format!("{p} (lost)")),
                        (None, Some(_)) => out.push(format!("{p} (added)")),
                        (None, None) => {}
                    }
                }
            }
            (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    walk(&format!("{path}[{i}]"), x, y, out);
                }
            }
            (a, b) if a == b => {}
            (a, b) => out.push(format!("{path}: {a} became {b}")),
        }
    }
    let mut out = Vec::new();
    walk("", expected, actual, &mut out);
    out
}

/// `value` as a `T`, or why it is not one exactly: a field `T` does not
/// know, or a value that does not come back the same when serialized again.
pub fn exactly<T: DeserializeOwned + Serialize>(value: &Value) -> Result<T, String> {
    let (typed, unknown) = unknown_fields::<T>(value)?;
    if !unknown.is_empty() {
        return Err(format!("unknown fields: {}", unknown.join(", ")));
    }
    let again = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    let diff = differences(value, &again);
    if !diff.is_empty() {
        return Err(format!("not kept by the type: {}", diff.join(", ")));
    }
    Ok(typed)
}

/// `deploy/FILE` as a `T`, exactly (see [`exactly`]); panics naming the file
/// and the problem.
pub fn load<T: DeserializeOwned + Serialize>(file: &str) -> T {
    let path = deploy_dir().join(file);
    exactly(&read_value(&path)).unwrap_or_else(|e| panic!("deploy/{file}: {e}"))
}

/// The files `deploy/kustomization.yaml` lists as resources.
pub fn kustomization_resources() -> Vec<String> {
    let k = read_value(&deploy_dir().join("kustomization.yaml"));
    k["resources"]
        .as_array()
        .unwrap_or_else(|| panic!("kustomization.yaml has no resources list"))
        .iter()
        .map(|r| {
            r.as_str()
                .unwrap_or_else(|| panic!("resource {r} is not a file name"))
                .to_owned()
        })
        .collect()
}

/// Every manifest, typed.
pub struct Deploy {
    pub namespace: Namespace,
    pub service_account: ServiceAccount,
    pub cluster_role: ClusterRole,
    pub binding: ClusterRoleBinding,
    pub apiserver: ConfigMap,
    pub config: ConfigMap,
    pub daemon_set: DaemonSet,
}

impl Deploy {
    pub fn load() -> Self {
        Deploy {
            namespace: load("namespace.yaml"),
            service_account: load("serviceaccount.yaml"),
            cluster_role: load("clusterrole.yaml"),
            binding: load("clusterrolebinding.yaml"),
            apiserver: load("kube-apiserver.yaml"),
            config: load("configmap.yaml"),
            daemon_set: load("daemonset.yaml"),
        }
    }

    /// The DaemonSet's pod spec.
    pub fn pod(&self) -> &k8s_openapi::api::core::v1::PodSpec {
        self.daemon_set
            .spec
            .template
            .spec
            .as_ref()
            .unwrap_or_else(|| panic!("the DaemonSet has no pod spec"))
    }

    /// The DaemonSet's one container, `proxy`.
    pub fn container(&self) -> &Container {
        let containers = &self.pod().containers;
        assert_eq!(containers.len(), 1, "one container");
        &containers[0]
    }

    /// The configuration file the ConfigMap holds (`config.yaml`).
    pub fn config_file(&self) -> &str {
        self.config
            .data
            .as_ref()
            .and_then(|d| d.get("config.yaml"))
            .unwrap_or_else(|| panic!("the ConfigMap has no config.yaml"))
    }

    /// An environment variable the container sets by value.
    pub fn env(&self, name: &str) -> Option<&str> {
        self.container()
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_deref())
    }

    /// The container's value of flag `--NAME=VALUE` (the args use that form).
    pub fn arg(&self, name: &str) -> Option<&str> {
        let prefix = format!("--{name}=");
        self.container()
            .args
            .iter()
            .flatten()
            .find_map(|a| a.strip_prefix(&prefix))
    }
}
