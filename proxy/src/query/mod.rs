//! The daemon's local query socket: a Unix socket (`--query-socket`, owner-only)
//! over which `proxy explain` and `proxy diff` ask the running daemon, so their
//! answers reflect exactly its state.
//!
//! - `server`: binds the socket and answers (HTTP/1 over the shared accept
//!   loop, [`crate::http_server`]);
//! - `client`: the CLI's side, blocking.
//!
//! Routes (JSON bodies):
//! - `POST /explain` with an [`ExplainRequest`]: the explanation, as text or
//!   JSON as asked;
//! - `GET /desired`: the desired frontends ([`DesiredDump`]).
//!
//! Must not: write to the dataplane or hold the Index's lock while computing.

pub mod client;
pub mod server;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::model::{DesiredState, Frontend};

/// The default `--query-socket`.
pub const DEFAULT_SOCKET: &str = "/run/proxy/proxy.sock";

/// The environment variable both the daemon and the CLI read it from.
pub const SOCKET_ENV: &str = "PROXY_QUERY_SOCKET";

/// A request to `POST /explain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainRequest {
    /// `NAMESPACE/NAME` or `VIP:PORT[/tcp|udp]`.
    pub target: String,
    pub client: Option<IpAddr>,
    #[serde(default)]
    pub client_on_node: bool,
    /// JSON rather than text.
    #[serde(default)]
    pub json: bool,
}

/// `GET /desired`: every frontend the daemon wants programmed, and its
/// backends, for `proxy diff`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredDump {
    /// Frontend (`VIP:port/PROTO`) → what it should hold.
    pub frontends: BTreeMap<String, DesiredFrontend>,
}

/// One frontend's desired contents, as `proxy diff` compares them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredFrontend {
    pub service: String,
    pub kind: String,
    /// Backends (`addr:port`), sorted.
    pub backends: Vec<String>,
    /// The external scope's backends when they differ (`externalTrafficPolicy: Local`).
    pub external_backends: Option<Vec<String>>,
    pub affinity_timeout: Option<u32>,
}

impl DesiredDump {
    pub fn from_state(state: &DesiredState) -> Self {
        let frontends = state
            .frontends
            .iter()
            .map(|(f, spec): (&Frontend, _)| {
                let show = |b: &[crate::model::Backend]| {
                    let mut v: Vec<String> = b.iter().map(ToString::to_string).collect();
                    v.sort();
                    v
                };
                (
                    f.to_string(),
                    DesiredFrontend {
                        service: spec.service.to_string(),
                        kind: spec.kind.to_string(),
                        backends: show(&spec.backends),
                        external_backends: spec.external_backends.as_deref().map(show),
                        affinity_timeout: spec.affinity_timeout,
                    },
                )
            })
            .collect();
        Self { frontends }
    }
}

/// Errors of the query socket, on either side.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("cannot listen on the query socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot reach the daemon on {path} (is `proxy run` running, with this --query-socket? \
         or pass --manifests DIR to compute offline)"
    )]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the daemon on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon on {path} answered {status}: {body}")]
    Status {
        path: PathBuf,
        status: u16,
        body: String,
    },
    #[error("the daemon on {path} sent a malformed answer")]
    Malformed { path: PathBuf },
}

impl QueryError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        QueryError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
