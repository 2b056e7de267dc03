//! Where the cluster is and who we are in it: the API client configuration
//! (a kubeconfig file, or the in-cluster service account) and this node's name.

use std::path::{Path, PathBuf};

use kube::config::{InClusterError, KubeConfigOptions, Kubeconfig, KubeconfigError};

/// How to reach the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cluster {
    /// A kubeconfig file (its current context). Plain `http://` servers work.
    Kubeconfig(PathBuf),
    /// The pod's service account: `KUBERNETES_SERVICE_HOST`/`_PORT`, and the
    /// token and CA under `/var/run/secrets/kubernetes.io/serviceaccount`.
    InCluster,
}

impl Cluster {
    /// `--kubeconfig` when given, else in-cluster when running in a pod (the
    /// service environment variables are set), else no cluster.
    pub fn detect(kubeconfig: Option<&Path>) -> Option<Self> {
        match kubeconfig {
            Some(path) => Some(Cluster::Kubeconfig(path.to_owned())),
            None if in_pod() => Some(Cluster::InCluster),
            None => None,
        }
    }
}

impl std::fmt::Display for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cluster::Kubeconfig(path) => write!(f, "kubeconfig {}", path.display()),
            Cluster::InCluster => f.write_str("in-cluster service account"),
        }
    }
}

/// Whether the kubelet's service environment for the API server is present.
fn in_pod() -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    set("KUBERNETES_SERVICE_HOST") && set("KUBERNETES_SERVICE_PORT")
}

/// Whether the API server's environment variables are there but one is
/// empty: a deployment that was to set them (they must not be the
/// `kubernetes` Service's ClusterIP) and did not.
pub fn in_pod_but_unset() -> bool {
    let empty = |name: &str| std::env::var_os(name).is_some_and(|v| v.is_empty());
    !in_pod() && (empty("KUBERNETES_SERVICE_HOST") || empty("KUBERNETES_SERVICE_PORT"))
}

/// Errors setting up the Kubernetes source.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot use the kubeconfig {path}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    #[error("cannot load the in-cluster configuration")]
    InCluster {
        #[source]
        source: InClusterError,
    },
    #[error("cannot build the Kubernetes client")]
    Client {
        #[source]
        source: kube::Error,
    },
    #[error("cannot read this machine's hostname (pass --node-name or set NODE_NAME)")]
    Hostname {
        #[source]
        source: nix::Error,
    },
    #[error("the node name is empty (pass --node-name or set NODE_NAME)")]
    EmptyNodeName,
}

/// A client for `cluster`. Nothing is sent yet: an unreachable API server shows
/// up later, as watch errors that are retried.
pub async fn client(cluster: &Cluster) -> Result<kube::Client, ClientError> {
    client_and_addresses(cluster)
        .await
        .map(|(client, _)| client)
}

/// [`client`], and the API server's addresses: its URL's host, an IP
/// literal or a name resolved once now (a name that does not resolve gives
/// none, logged). No frontend may take one of them (CVE-2020-8554).
pub async fn client_and_addresses(
    cluster: &Cluster,
) -> Result<(kube::Client, Vec<std::net::IpAddr>), ClientError> {
    let config = config(cluster).await?;
    let addresses = api_server_addresses(&config.cluster_url).await;
    let client = kube::Client::try_from(config).map_err(|source| ClientError::Client { source })?;
    Ok((client, addresses))
}

async fn api_server_addresses(url: &hyper::Uri) -> Vec<std::net::IpAddr> {
    let Some(host) = url.host() else {
        return Vec::new();
    };
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse() {
        return vec![ip];
    }
    let port = url.port_u16().unwrap_or(443);
    match tokio::net::lookup_host((host, port)).await {
        Ok(found) => {
            let mut ips: Vec<std::net::IpAddr> = found.map(|a| a.ip()).collect();
            ips.sort_unstable();
            ips.dedup();
            ips
        }
        Err(error) => {
            tracing::warn!(host, error = %error, "cannot resolve the API server's name: frontends on its addresses are not refused");
            Vec::new()
        }
    }
}

async fn config(cluster: &Cluster) -> Result<kube::Config, ClientError> {
    let config = match cluster {
        Cluster::Kubeconfig(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|source| ClientError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|source| ClientError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?
        }
        Cluster::InCluster => {
            kube::Config::incluster().map_err(|source| ClientError::InCluster { source })?
        }
    };
    Ok(config)
}

/// This node's name: `flag` (`--node-name`, or `NODE_NAME` through clap) when
/// set, else the hostname. Trimmed and lowercased, as kube-proxy does, since Node
/// names are lowercase.
pub fn node_name(flag: Option<&str>) -> Result<String, ClientError> {
    let raw = match flag.map(str::trim).filter(|s| !s.is_empty()) {
        Some(name) => name.to_owned(),
        None => nix::unistd::gethostname()
            .map_err(|source| ClientError::Hostname { source })?
            .to_string_lossy()
            .into_owned(),
    };
    let name = raw.trim().to_lowercase();
    if name.is_empty() {
        return Err(ClientError::EmptyNodeName);
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_name_flag_wins_and_is_normalised() {
        assert_eq!(node_name(Some(" Node-1 ")).ok().as_deref(), Some("node-1"));
    }

    #[test]
    fn node_name_falls_back_to_the_hostname() {
        let name = node_name(None).ok();
        assert!(name.is_some_and(|n| !n.is_empty() && n == n.to_lowercase()));
        assert!(node_name(Some("  ")).is_ok(), "blank flag means unset");
    }

    #[test]
    fn kubeconfig_flag_is_the_cluster() {
        assert_eq!(
            Cluster::detect(Some(Path::new("/k"))),
            Some(Cluster::Kubeconfig("/k".into()))
        );
    }
}
