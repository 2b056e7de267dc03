//! The daemon's side of the query socket: bind it owner-only, answer
//! `POST /explain` and `GET /desired` from the Index.
//!
//! The socket is made in a private (0700) directory next to its path, given
//! mode 0600, then renamed into place, so no one else can connect even for
//! an instant. A stale socket at the path (a killed daemon's) is replaced.
//! The Index's lock is held only to clone what is asked about (explain) or to
//! compute the desired state (diff), on a blocking thread.

use std::{
    os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{CONTENT_TYPE, HeaderValue},
};
use tokio::{net::UnixListener, sync::watch};

use super::{DesiredDump, ExplainRequest, QueryError};
use crate::{
    http_server::{self, Listener},
    model::{
        Index,
        explain::{self, Client, Target},
    },
};

/// The largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

/// The bound socket.
#[derive(Debug)]
pub struct QueryListener {
    inner: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket we made: on stop it is removed only if
    /// it is still ours.
    identity: (u64, u64),
}

impl QueryListener {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Listener for QueryListener {
    type Stream = tokio::net::UnixStream;
    fn describe(&self) -> String {
        self.path.display().to_string()
    }
    async fn accept(&self) -> std::io::Result<Self::Stream> {
        self.inner.accept().await.map(|(stream, _)| stream)
    }
}

/// Binds `path` owner-only (see the module docs). Must run in a Tokio runtime.
pub fn bind(path: &Path) -> Result<QueryListener, QueryError> {
    let err = |source| QueryError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(err)?;
    let staging = parent.join(format!(".proxy-query-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(err)?;
    let made = staging.join("sock");
    let bound = (|| {
        let inner = UnixListener::bind(&made)?;
        std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&made, path)?;
        let meta = std::fs::symlink_metadata(path)?;
        Ok::<_, std::io::Error>((inner, (meta.dev(), meta.ino())))
    })();
    let _ = std::fs::remove_dir_all(&staging);
    let (inner, identity) = bound.map_err(err)?;
    Ok(QueryListener {
        inner,
        path: path.to_path_buf(),
        identity,
    })
}

/// Answers until `stop` flips, then removes the socket if it is still ours.
pub async fn serve(listener: QueryListener, index: Arc<Mutex<Index>>, stop: watch::Receiver<bool>) {
    let path = listener.path.clone();
    let identity = listener.identity;
    let handler = move |req: Request<Incoming>| {
        let index = index.clone();
        async move { route(index, req).await }
    };
    http_server::serve(listener, "query socket", handler, stop).await;
    if let Ok(meta) = std::fs::symlink_metadata(&path)
        && (meta.dev(), meta.ino()) == identity
    {
        let _ = std::fs::remove_file(&path);
    }
}

async fn route(index: Arc<Mutex<Index>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method().clone(), req.uri().path()) {
        (Method::POST, "/explain") => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => {
                    return text(StatusCode::BAD_REQUEST, "cannot read the request body\n");
                }
            };
            let request: ExplainRequest = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => return text(StatusCode::BAD_REQUEST, format!("bad request: {e}\n")),
            };
            blocking(move || answer_explain(&index, &request)).await
        }
        (Method::GET, "/desired") => blocking(move || answer_desired(&index)).await,
        (_, "/explain" | "/desired") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST /explain, GET /desired\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "404 page not found\n"),
    }
}

async fn blocking(
    f: impl FnOnce() -> Response<Full<Bytes>> + Send + 'static,
) -> Response<Full<Bytes>> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "the query failed\n"))
}

fn answer_explain(index: &Mutex<Index>, request: &ExplainRequest) -> Response<Full<Bytes>> {
    let target: Target = match request.target.parse() {
        Ok(t) => t,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let client = request.client.map(|addr| Client {
        addr,
        on_node: request.client_on_node,
    });
    let (node, owned) = {
        let index = index.lock().unwrap_or_else(PoisonError::into_inner);
        (index.node().clone(), explain::select(&index, &target))
    };
    let explained = explain::explain_owned(&node, &owned, &target, client);
    if explained.is_empty() {
        return text(
            StatusCode::NOT_FOUND,
            format!("no Service or frontend matches {}\n", request.target),
        );
    }
    if request.json {
        json(&explained)
    } else {
        text(StatusCode::OK, explain::render::text(&explained))
    }
}

fn answer_desired(index: &Mutex<Index>) -> Response<Full<Bytes>> {
    let state = index
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .desired();
    json(&DesiredDump::from_state(&state))
}

fn json(value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n"),
    }
}

use crate::http_server::text;

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::{
        model::{
            NodeInfo, SourceId,
            testkit::{slice, svc},
            types::Protocol::Tcp,
        },
        query::client,
    };

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn explains_over_an_owner_only_socket() {
        let dir = tempfile::tempdir().expect("query round trip");
        let path = dir.path().join("run/proxy.sock");
        let mut index = Index::new(NodeInfo::named("n1"));
        index.apply_service(
            SourceId::Manifests,
            svc("default", "web")
                .cluster_ip("10.96.0.10")
                .port("http", 80, Tcp),
        );
        index.apply_slice(
            SourceId::Manifests,
            slice("default", "web-1")
                .for_service("web")
                .port("http", 8080, Tcp)
                .endpoint("10.1.0.1")
                .ready(),
        );
        let listener = bind(&path).expect("query round trip");
        let mode = std::fs::metadata(&path)
            .expect("query round trip")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
        let (stop_tx, stop_rx) = watch::channel(false);
        let server = tokio::spawn(serve(listener, Arc::new(Mutex::new(index)), stop_rx));

        let ask = |target: &str, json: bool| {
            let path = path.clone();
            let body = serde_json::to_vec(&ExplainRequest {
                target: target.to_owned(),
                client: None,
                client_on_node: false,
                json,
            })
            .expect("query round trip");
            tokio::task::spawn_blocking(move || {
                client::request(&path, "POST", "/explain", Some(&body))
            })
        };
        let answer = ask("default/web", false)
            .await
            .expect("query round trip")
            .expect("query round trip");
        assert!(
            answer.contains("endpoint 10.1.0.1:8080 [ready, serving]"),
            "{answer}"
        );
        let answer = ask("10.96.0.10:80/tcp", true)
            .await
            .expect("query round trip")
            .expect("query round trip");
        assert!(answer.contains("\"rule\": \"ready\""), "{answer}");
        match ask("default/nothing", false)
            .await
            .expect("query round trip")
        {
            Err(QueryError::Status { status: 404, .. }) => {}
            other => panic!("expected 404, got {other:?}"),
        }
        let p = path.clone();
        let desired =
            tokio::task::spawn_blocking(move || client::request(&p, "GET", "/desired", None))
                .await
                .expect("query round trip")
                .expect("query round trip");
        let dump: DesiredDump = serde_json::from_str(&desired).expect("query round trip");
        assert_eq!(
            dump.frontends["10.96.0.10:80/TCP"].backends,
            ["10.1.0.1:8080"]
        );

        stop_tx.send(true).expect("query round trip");
        server.await.expect("query round trip");
        assert!(!path.exists(), "the socket is removed on stop");
    }
}
