//! `proxy explain`: which endpoints each frontend of a Service uses, and the
//! rule that included or excluded each (see [`crate::model::explain`]).
//!
//! By default it asks the running daemon over its query socket
//! ([`crate::query`]), so the answer is the daemon's own state; with
//! `--manifests DIR` it computes offline from that directory, with no
//! daemon and no cluster.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::{
    model::{
        Index, NodeInfo, SourceId,
        explain::{self, Client, Target},
    },
    query::{self, ExplainRequest},
    source::manifests::ManifestDir,
};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// `NAMESPACE/NAME` (every frontend of the Service) or
    /// `VIP:PORT[/tcp|udp]` (one frontend; IPv6 as `[VIP]:PORT`).
    pub target: String,
    /// Also answer for this client: which backends it gets, or whether it is
    /// refused or dropped, and why.
    #[arg(long, value_name = "IP")]
    pub client: Option<IpAddr>,
    /// The client is on this node (its host or one of its pods): kube-proxy's
    /// internal traffic. Otherwise it comes from elsewhere.
    #[arg(long, requires = "client")]
    pub client_on_node: bool,
    #[command(flatten)]
    pub source: DesiredSource,
    /// Text for people, or JSON for scripts.
    #[arg(long, short = 'o', value_enum, default_value_t = ExplainOutput::Text)]
    pub output: ExplainOutput,
}

/// Where `explain` and `diff` take the desired state from: the daemon's
/// query socket, or a directory of manifests computed for a node.
#[derive(Debug, Args)]
pub struct DesiredSource {
    /// Compute offline from this directory of manifests (as `proxy run
    /// --manifests`) instead of asking the daemon.
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// With `--manifests`: the node to compute for (endpoints with this
    /// `nodeName` are local; node hints naming it apply).
    #[arg(long, value_name = "NAME", requires = "manifests")]
    pub node: Option<String>,
    /// With `--manifests`: the node's `topology.kubernetes.io/zone`.
    #[arg(long, value_name = "ZONE", requires = "manifests")]
    pub zone: Option<String>,
    /// With `--manifests`: an address NodePorts are served on (repeat for
    /// several); without one, no NodePort frontend is shown.
    #[arg(long = "nodeport-address", value_name = "IP", requires = "manifests")]
    pub nodeport_addresses: Vec<IpAddr>,
    /// The daemon's query socket (`proxy run --query-socket`).
    #[arg(long, value_name = "PATH", default_value = query::DEFAULT_SOCKET, env = query::SOCKET_ENV)]
    pub socket: PathBuf,
}

impl DesiredSource {
    /// The Index `dir`'s manifests give for the node of `--node`, `--zone`
    /// and `--nodeport-address`.
    pub fn offline_index(&self, dir: &Path) -> anyhow::Result<Index> {
        index_from_manifests(
            dir,
            NodeInfo {
                name: self.node.clone().unwrap_or_default(),
                zone: self.zone.clone(),
                nodeport_addresses: self.nodeport_addresses.clone(),
                ..NodeInfo::default()
            },
        )
    }
}

/// `proxy explain --output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExplainOutput {
    Text,
    Json,
}

impl ExplainArgs {
    pub fn execute(self) -> anyhow::Result<()> {
        let target: Target = self.target.parse()?;
        let json = self.output == ExplainOutput::Json;
        let text = match &self.source.manifests {
            Some(dir) => self.offline(dir, &target, json)?,
            None => {
                let request = ExplainRequest {
                    target: self.target.clone(),
                    client: self.client,
                    client_on_node: self.client_on_node,
                    json,
                };
                let body = serde_json::to_vec(&request).context("encoding the request")?;
                query::client::request(&self.source.socket, "POST", "/explain", Some(&body))?
            }
        };
        super::print(&text)
    }

    fn offline(&self, dir: &Path, target: &Target, json: bool) -> anyhow::Result<String> {
        let index = self.source.offline_index(dir)?;
        let client = self.client.map(|addr| Client {
            addr,
            on_node: self.client_on_node,
        });
        let explained = explain::explain_index(&index, target, client);
        if explained.is_empty() {
            bail!(
                "no Service or frontend in {} matches {}",
                dir.display(),
                self.target
            );
        }
        if json {
            Ok(serde_json::to_string_pretty(&explained)? + "\n")
        } else {
            Ok(explain::render::text(&explained))
        }
    }
}

/// An Index holding `dir`'s objects for `node`, as the daemon's manifest
/// source would feed it (same label selection, same conversion).
pub fn index_from_manifests(dir: &Path, node: NodeInfo) -> anyhow::Result<Index> {
    let mut manifests = ManifestDir::new(dir);
    manifests.scan()?;
    let (services, slices) = manifests.objects();
    let mut index = Index::new(node);
    for service in services {
        index.apply_service(SourceId::Manifests, service);
    }
    for slice in slices {
        index.apply_slice(SourceId::Manifests, slice);
    }
    Ok(index)
}
