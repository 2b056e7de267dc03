//! [`FakeApiServer`]: a Kubernetes API server that speaks the real HTTP list/watch
//! protocol, for Services, EndpointSlices and Nodes, so the proxy's Kubernetes
//! source is tested through kube-rs exactly as it talks to a cluster.
//!
//! What it serves (plain HTTP/1.1 on `127.0.0.1:<ephemeral>`, bearer token checked):
//! - `GET /api/v1/services`, `/apis/discovery.k8s.io/v1/endpointslices`,
//!   `/api/v1/nodes` (and the namespaced and single-object forms): lists with
//!   `labelSelector` (`k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (…)`, `k notin (…)`),
//!   `fieldSelector` (`metadata.name`, `metadata.namespace`, `=`/`==`/`!=`),
//!   `limit` and `continue`;
//! - `?watch=true&resourceVersion=N`: newline-delimited JSON events
//!   (`ADDED`/`MODIFIED`/`DELETED`/`BOOKMARK`/`ERROR`) in a chunked response,
//!   replaying history after `N`; an object that starts or stops matching the
//!   selector arrives as `ADDED` or `DELETED`, as kube-apiserver sends it;
//!   `timeoutSeconds` ends the stream cleanly; `sendInitialEvents=true` (streaming
//!   lists, WatchList) is honoured: the current objects as `ADDED`, then a
//!   `BOOKMARK` annotated `k8s.io/initial-events-end`, unless
//!   [`FakeApiServer::set_watch_list`] makes it refuse them as an API server
//!   without the `WatchList` feature does, or leave the bookmark out, or
//!   [`FakeApiServer::expire_next_streaming_list`] cuts them with a 410;
//! - one global `resourceVersion`, bumped by every change;
//! - `410 Gone` for a watch from a compacted `resourceVersion`: by default a `200`
//!   whose only event is an `ERROR` carrying a `Status` with code 410 (what
//!   kube-apiserver's watch cache does), or an HTTP 410 ([`GoneStyle`]); an expired
//!   `continue` token is refused with an HTTP 410, as a real server does;
//! - `/version`, `/api`, `/apis`, `/healthz`, `/livez`, `/readyz`;
//! - `POST` of an Event (`events.k8s.io/v1` or core `v1`, namespaced): stored
//!   as sent, stamped with a `uid` and a `resourceVersion` of their own (the
//!   global one is left alone), and answered `201`;
//!   read back with [`FakeApiServer::events`]. No other write over HTTP.
//!
//! The test drives it through Rust methods, not HTTP: [`FakeApiServer::apply`]
//! and [`FakeApiServer::delete`] change objects, [`FakeApiServer::bookmark`],
//! [`FakeApiServer::compact`], [`FakeApiServer::expire_history`],
//! [`FakeApiServer::send_gone`] and [`FakeApiServer::drop_watches`] exercise the
//! watch protocol's failure paths, [`FakeApiServer::hold_lists`] delays lists, and
//! [`FakeApiServer::stop`] / [`FakeApiServer::restart`] make the server go away and
//! come back on the same port. Every request is recorded ([`FakeApiServer::requests`]).
//!
//! Objects are stored as JSON (the kit's [`crate::manifest`] builders' YAML,
//! converted), stamped with the server's `resourceVersion`.
//!
//! Simplifications: a `continue` page lists the current objects after the
//! previous page's last key (not a snapshot at the first page's version); a watch
//! from a version newer than the server's is accepted as if it were current.
//!
//! Network: the listener is bound on the **calling thread's** network namespace
//! (in [`FakeApiServer::start`] and [`FakeApiServer::restart`]), so a test that has
//! entered a [`crate::Sandbox`] serves inside it, where the proxy can reach it on
//! loopback. Nothing here connects anywhere.

use std::{
    collections::{BTreeMap, BTreeSet},
    convert::Infallible,
    fmt, fs, io,
    net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener},
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Body, Frame, Incoming},
    header,
};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::{
    sync::{mpsc, watch},
    task::AbortHandle,
};

use crate::{
    Error,
    manifest::{EndpointSlice, Node, Service},
};

/// The bearer token the server expects (and writes into its kubeconfig).
pub const TOKEN: &str = "fake-apiserver-token";

/// The label kube-proxy's selector looks at to skip Services of other proxies.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

/// The version `/version` reports.
const GIT_VERSION: &str = "v1.34.2";

/// The kinds of object the server stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Services,
    EndpointSlices,
    Nodes,
}

impl Resource {
    pub const ALL: [Resource; 3] = [
        Resource::Services,
        Resource::EndpointSlices,
        Resource::Nodes,
    ];

    pub fn kind(self) -> &'static str {
        match self {
            Resource::Services => "Service",
            Resource::EndpointSlices => "EndpointSlice",
            Resource::Nodes => "Node",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Resource::Services | Resource::Nodes => "v1",
            Resource::EndpointSlices => "discovery.k8s.io/v1",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Resource::Services => "services",
            Resource::EndpointSlices => "endpointslices",
            Resource::Nodes => "nodes",
        }
    }

    fn namespaced(self) -> bool {
        !matches!(self, Resource::Nodes)
    }

    fn from_kind(kind: &str) -> Option<Self> {
        Resource::ALL.into_iter().find(|r| r.kind() == kind)
    }

    fn from_plural(group_version: &str, plural: &str) -> Option<Self> {
        Resource::ALL
            .into_iter()
            .find(|r| r.api_version() == group_version && r.plural() == plural)
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.plural())
    }
}

/// How a watch from a compacted `resourceVersion` is refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GoneStyle {
    /// `200 OK` whose only event is `ERROR` with a 410 `Status`, as
    /// kube-apiserver's watch cache answers.
    #[default]
    ErrorEvent,
    /// An HTTP `410 Gone` response carrying the `Status`.
    HttpStatus,
}

/// Whether the server offers streaming lists (`sendInitialEvents=true`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WatchList {
    /// Served, as by kube-apiserver 1.32 and later.
    #[default]
    Offered,
    /// Refused with this HTTP status (422 `Invalid`, as kube-apiserver 1.27
    /// to 1.31 with the `WatchList` feature off answers; or 400, 403).
    Refused(u16),
    /// Served without the `k8s.io/initial-events-end` bookmark, as behind a
    /// proxy that strips bookmarks: the list never ends.
    WithoutEndBookmark,
}

/// One request the server received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: String,
    pub path: String,
    /// Decoded query parameters.
    pub query: BTreeMap<String, String>,
    /// The resource a list, watch or get was for.
    pub resource: Option<Resource>,
    pub watch: bool,
    /// When it arrived (compare requests with each other, not with the client).
    pub at: std::time::Instant,
}

impl ApiRequest {
    /// The `resourceVersion` parameter, when given.
    pub fn resource_version(&self) -> Option<&str> {
        self.query.get("resourceVersion").map(String::as_str)
    }

    /// A list (not a watch) of `resource`.
    pub fn is_list_of(&self, resource: Resource) -> bool {
        self.resource == Some(resource) && !self.watch
    }

    /// A watch of `resource`.
    pub fn is_watch_of(&self, resource: Resource) -> bool {
        self.resource == Some(resource) && self.watch
    }
}

/// A fake kube-apiserver. Dropping it stops it.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    running: Option<Running>,
    addr: SocketAddr,
    // Last, so it shuts down after the tasks above were aborted.
    runtime: Option<tokio::runtime::Runtime>,
}

/// What the request handlers and the test share.
struct Shared {
    state: Mutex<State>,
    /// Bumped when held lists are released.
    released: watch::Sender<u64>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The listener and connections of a running server.
struct Running {
    accept: AbortHandle,
    /// Says when the accept task has closed its listener.
    closed: std::sync::mpsc::Receiver<()>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
}

/// Owns the listening socket; tells `stop()` once it is closed, so a
/// `restart()` right after can bind the same port.
struct Listener {
    socket: Option<tokio::net::TcpListener>,
    closed: std::sync::mpsc::Sender<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        drop(self.socket.take());
        let _ = self.closed.send(());
    }
}

/// How long `stop()` waits for the listener to close.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

type Key = (String, String);

struct State {
    /// The last `resourceVersion` handed out.
    rv: u64,
    /// A watch from a version below this one gets 410 Gone.
    compacted: u64,
    objects: BTreeMap<Resource, BTreeMap<Key, Value>>,
    /// Every change since `compacted`, in order.
    history: Vec<Change>,
    watches: Vec<WatchSub>,
    gone_style: GoneStyle,
    page_cap: Option<usize>,
    watch_list: WatchList,
    /// Resources whose next streaming list is cut with a 410 `ERROR` event.
    expiring_streams: BTreeSet<Resource>,
    held: BTreeSet<Resource>,
    requests: Vec<ApiRequest>,
    /// Events created over HTTP, in order.
    events: Vec<Value>,
    next_uid: u64,
}

/// One change: `before` and `after` are the object's states (`after` is `None`
/// for a deletion), `after` stamped with `rv`.
struct Change {
    rv: u64,
    resource: Resource,
    before: Option<Value>,
    after: Option<Value>,
}

struct WatchSub {
    resource: Resource,
    filter: Filter,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<WatchMsg>,
}

enum WatchMsg {
    Line(Bytes),
    /// End the response cleanly (terminating chunk).
    End,
    /// Cut the connection mid-stream.
    Abort,
}

impl FakeApiServer {
    /// Starts the server on `127.0.0.1:<ephemeral>`, bound in the calling
    /// thread's network namespace, with no objects.
    pub fn start() -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fake-apiserver")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the fake API server's runtime", "tokio", e))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rv: 1000,
                compacted: 0,
                objects: BTreeMap::new(),
                history: Vec::new(),
                watches: Vec::new(),
                gone_style: GoneStyle::default(),
                page_cap: None,
                watch_list: WatchList::Offered,
                expiring_streams: BTreeSet::new(),
                held: BTreeSet::new(),
                requests: Vec::new(),
                events: Vec::new(),
                next_uid: 1,
            }),
            released: watch::channel(0).0,
        });
        let mut server = FakeApiServer {
            shared,
            running: None,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            runtime: Some(runtime),
        };
        server.listen()?;
        Ok(server)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig pointing at this server (token auth) to
    /// `dir/kubeconfig` and returns its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> Result<PathBuf, Error> {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: {url}\n  name: fake\n\
             contexts:\n- context:\n    cluster: fake\n    namespace: default\n    user: fake\n  \
             name: fake\ncurrent-context: fake\npreferences: {{}}\nusers:\n- name: fake\n  user:\n    \
             token: {TOKEN}\n",
            url = self.url()
        );
        fs::write(&path, text).map_err(|e| Error::io("writing the kubeconfig", &path, e))?;
        Ok(path)
    }

    /// Whether it is listening (between [`FakeApiServer::stop`] and
    /// [`FakeApiServer::restart`] it is not).
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The API server goes away: the listener closes and every connection is cut
    /// (open watches end mid-stream). The objects and the history stay, as etcd
    /// keeps them; the control methods keep working.
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.accept.abort();
            for conn in lock(&running.connections).drain(..) {
                conn.abort();
            }
            if running.closed.recv_timeout(STOP_TIMEOUT).is_err() {
                eprintln!("fake API server: the listener did not close within {STOP_TIMEOUT:?}");
            }
        }
        self.shared.state().watches.clear();
    }

    /// Listens again on the same port, bound in the calling thread's network
    /// namespace. A no-op when running.
    pub fn restart(&mut self) -> Result<(), Error> {
        if self.running.is_some() {
            return Ok(());
        }
        self.listen()
    }

    fn listen(&mut self) -> Result<(), Error> {
        let listener = StdTcpListener::bind(self.addr)
            .map_err(|e| Error::socket("binding the fake API server", self.addr, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::socket("binding the fake API server", self.addr, e))?;
        self.addr = listener
            .local_addr()
            .map_err(|e| Error::socket("binding the fake API server", self.addr, e))?;
        let Some(runtime) = self.runtime.as_ref() else {
            return Err(Error::Usage("the fake API server was shut down".into()));
        };
        let _guard = runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| Error::socket("binding the fake API server", self.addr, e))?;
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (closed_tx, closed) = std::sync::mpsc::channel();
        let listener = Listener {
            socket: Some(listener),
            closed: closed_tx,
        };
        let accept = runtime
            .spawn(accept_loop(
                listener,
                self.shared.clone(),
                connections.clone(),
            ))
            .abort_handle();
        self.running = Some(Running {
            accept,
            closed,
            connections,
        });
        Ok(())
    }

    /// The current global `resourceVersion`.
    pub fn resource_version(&self) -> u64 {
        self.shared.state().rv
    }

    /// Creates or replaces an object (its `kind` says which resource). The server
    /// stamps `resourceVersion` (and a `uid` and `creationTimestamp` when
    /// missing), keeps the first version's `uid`, and notifies matching watches.
    /// Returns the new `resourceVersion`.
    ///
    /// # Panics
    /// When `object` has no known `kind` or no `metadata.name` (a test bug).
    pub fn apply(&self, object: Value) -> u64 {
        let kind = object["kind"].as_str().unwrap_or_default();
        let resource = Resource::from_kind(kind)
            .unwrap_or_else(|| panic!("fake API server: unsupported kind {kind:?}"));
        let mut object = object;
        let key = key_of(resource, &mut object);
        let mut state = self.shared.state();
        state.rv += 1;
        let rv = state.rv;
        let before = state
            .objects
            .get(&resource)
            .and_then(|objects| objects.get(&key))
            .cloned();
        let meta = &mut object["metadata"];
        meta["resourceVersion"] = json!(rv.to_string());
        match before.as_ref() {
            Some(old) => {
                meta["uid"] = old["metadata"]["uid"].clone();
                meta["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
            }
            None => {
                if meta["uid"].is_null() {
                    meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", state.next_uid));
                    state.next_uid += 1;
                }
                if meta["creationTimestamp"].is_null() {
                    meta["creationTimestamp"] = json!("2026-11-20T09:14:03Z");
                }
            }
        }
        state
            .objects
            .entry(resource)
            .or_default()
            .insert(key, object.clone());
        state.record(Change {
            rv,
            resource,
            before,
            after: Some(object),
        });
        rv
    }

    /// [`FakeApiServer::apply`] for YAML (one document).
    ///
    /// # Panics
    /// When `yaml` is not one valid object (a test bug).
    pub fn apply_yaml(&self, yaml: &str) -> u64 {
        self.apply(json_from_yaml(yaml))
    }

    /// Creates or replaces a Service built with the kit's builder.
    pub fn apply_service(&self, service: &Service) -> u64 {
        self.apply_yaml(&service.to_yaml())
    }

    /// Creates or replaces an EndpointSlice built with the kit's builder.
    pub fn apply_slice(&self, slice: &EndpointSlice) -> u64 {
        self.apply_yaml(&slice.to_yaml())
    }

    /// Creates or replaces a Node built with the kit's builder.
    pub fn apply_node(&self, node: &Node) -> u64 {
        self.apply_yaml(&node.to_yaml())
    }

    /// Deletes an object (`namespace` is ignored for Nodes). Returns the
    /// deletion's `resourceVersion`, or `None` when there was no such object.
    pub fn delete(&self, resource: Resource, namespace: &str, name: &str) -> Option<u64> {
        let key = if resource.namespaced() {
            (namespace.to_owned(), name.to_owned())
        } else {
            (String::new(), name.to_owned())
        };
        let mut state = self.shared.state();
        let before = state.objects.get_mut(&resource)?.remove(&key)?;
        state.rv += 1;
        let rv = state.rv;
        state.record(Change {
            rv,
            resource,
            before: Some(before),
            after: None,
        });
        Some(rv)
    }

    /// The stored object, if any.
    pub fn object(&self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        let ns = if resource.namespaced() { namespace } else { "" };
        self.shared
            .state()
            .objects
            .get(&resource)?
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Sends a `BOOKMARK` at the current `resourceVersion` to every open watch
    /// that asked for bookmarks. Returns how many got one.
    pub fn bookmark(&self) -> usize {
        let mut state = self.shared.state();
        let rv = state.rv;
        state.watches.retain(|w| !w.tx.is_closed());
        let mut sent = 0;
        for w in state.watches.iter().filter(|w| w.bookmarks) {
            if w.tx
                .send(WatchMsg::Line(event_line(
                    "BOOKMARK",
                    &bookmark(w.resource, rv, false),
                )))
                .is_ok()
            {
                sent += 1;
            }
        }
        sent
    }

    /// Compacts the history at the current `resourceVersion`: a watch from an
    /// older version gets 410 Gone, one from the current version still works.
    pub fn compact(&self) {
        let mut state = self.shared.state();
        state.compacted = state.rv;
        state.history.clear();
    }

    /// Makes every `resourceVersion` handed out so far too old: the next watch
    /// that resumes (after its connection drops) gets 410 Gone and must relist.
    /// Open watches carry on.
    pub fn expire_history(&self) {
        let mut state = self.shared.state();
        state.rv += 1;
        state.compacted = state.rv;
        state.history.clear();
    }

    /// What kube-apiserver does when a watcher falls too far behind: every open
    /// watch gets an `ERROR` event (410, reason `Expired`) and ends; the history
    /// is expired, so the clients must relist. Returns how many watches got it.
    pub fn send_gone(&self) -> usize {
        self.expire_history();
        let mut state = self.shared.state();
        let line = event_line("ERROR", &gone_status(0, state.compacted));
        let mut sent = 0;
        for w in state.watches.drain(..) {
            if w.tx.send(WatchMsg::Line(line.clone())).is_ok() {
                sent += 1;
            }
            let _ = w.tx.send(WatchMsg::End);
        }
        sent
    }

    /// Cuts every open watch connection mid-stream (no terminating chunk), as a
    /// network failure or an API server crash would. Returns how many there were.
    pub fn drop_watches(&self) -> usize {
        let mut state = self.shared.state();
        let mut dropped = 0;
        for w in state.watches.drain(..) {
            if w.tx.send(WatchMsg::Abort).is_ok() {
                dropped += 1;
            }
        }
        dropped
    }

    /// The number of open watches (of any resource).
    pub fn open_watches(&self) -> usize {
        let mut state = self.shared.state();
        state.watches.retain(|w| !w.tx.is_closed());
        state.watches.len()
    }

    /// How a watch from a compacted version is refused from now on.
    pub fn set_gone_style(&self, style: GoneStyle) {
        self.shared.state().gone_style = style;
    }

    /// Caps every list page at `cap` items (as if the client had asked for that
    /// `limit`), so tests exercise `continue` tokens with few objects.
    pub fn set_page_cap(&self, cap: Option<usize>) {
        self.shared.state().page_cap = cap.map(|c| c.max(1));
    }

    /// Whether streaming lists are served from now on.
    pub fn set_watch_list(&self, watch_list: WatchList) {
        self.shared.state().watch_list = watch_list;
    }

    /// The next streaming list of `resource` sends half of its objects, then
    /// an `ERROR` event with a 410 `Status` (the version it started from
    /// expired), and ends. Per resource, so which lists are cut does not
    /// depend on the order the watchers' requests arrive in.
    pub fn expire_next_streaming_list(&self, resource: Resource) {
        self.shared.state().expiring_streams.insert(resource);
    }

    /// Lists of `resource`, streaming ones included, wait (their requests stay open, unanswered) until
    /// [`FakeApiServer::release_lists`].
    pub fn hold_lists(&self, resource: Resource) {
        self.shared.state().held.insert(resource);
    }

    /// Answers the held lists of `resource`, and future ones at once.
    pub fn release_lists(&self, resource: Resource) {
        self.shared.state().held.remove(&resource);
        self.shared.released.send_modify(|v| *v += 1);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<ApiRequest> {
        self.shared.state().requests.clone()
    }

    /// The Events created through the API so far, as stored (with the
    /// `resourceVersion` and `uid` the server gave them).
    pub fn events(&self) -> Vec<Value> {
        self.shared.state().events.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.state().requests.clear();
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(runtime) = self.runtime.take() {
            // Also fine from inside another runtime (a `#[tokio::test]`).
            runtime.shutdown_background();
        }
    }
}

/// Parses one YAML document into JSON.
///
/// # Panics
/// When `yaml` is not valid YAML (a test bug).
pub fn json_from_yaml(yaml: &str) -> Value {
    serde_norway::from_str(yaml)
        .unwrap_or_else(|e| panic!("fake API server: invalid YAML object: {e}\n{yaml}"))
}

/// Sets a label on an object (JSON as [`json_from_yaml`] returns it).
pub fn with_label(mut object: Value, key: &str, value: &str) -> Value {
    let meta = &mut object["metadata"];
    if !meta["labels"].is_object() {
        meta["labels"] = json!({});
    }
    meta["labels"][key] = json!(value);
    object
}

/// The object's (namespace, name); fills in the namespace default for
/// namespaced kinds and removes it for cluster-scoped ones.
fn key_of(resource: Resource, object: &mut Value) -> Key {
    let name = object["metadata"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| panic!("fake API server: object without metadata.name: {object}"))
        .to_owned();
    let meta = object["metadata"]
        .as_object_mut()
        .unwrap_or_else(|| panic!("fake API server: metadata is not a map"));
    if resource.namespaced() {
        let ns = meta
            .get("namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
            .to_owned();
        meta.insert("namespace".into(), json!(ns));
        (ns, name)
    } else {
        meta.remove("namespace");
        (String::new(), name)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    /// Appends to the history and tells every matching watch.
    fn record(&mut self, change: Change) {
        self.watches.retain(|w| !w.tx.is_closed());
        for w in self
            .watches
            .iter()
            .filter(|w| w.resource == change.resource)
        {
            if let Some(line) = w.filter.event_for(&change) {
                let _ = w.tx.send(WatchMsg::Line(line));
            }
        }
        self.history.push(change);
    }

    /// The current objects of `resource` that pass `filter`, in key order.
    fn matching(&self, resource: Resource, filter: &Filter) -> Vec<(Key, Value)> {
        self.objects
            .get(&resource)
            .into_iter()
            .flatten()
            .filter(|(_, o)| filter.matches(o))
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect()
    }
}

/// A request's namespace, label and field selectors.
#[derive(Clone, Debug, Default)]
struct Filter {
    namespace: Option<String>,
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

#[derive(Clone, Debug)]
enum LabelReq {
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

#[derive(Clone, Debug)]
struct FieldReq {
    path: String,
    value: String,
    equal: bool,
}

impl Filter {
    fn parse(
        namespace: Option<String>,
        labels: Option<&str>,
        fields: Option<&str>,
    ) -> Result<Self, String> {
        Ok(Filter {
            namespace,
            labels: labels.map(parse_labels).transpose()?.unwrap_or_default(),
            fields: fields.map(parse_fields).transpose()?.unwrap_or_default(),
        })
    }

    fn matches(&self, object: &Value) -> bool {
        let meta = &object["metadata"];
        if let Some(ns) = &self.namespace
            && meta["namespace"].as_str() != Some(ns)
        {
            return false;
        }
        let label = |k: &str| meta["labels"][k].as_str();
        let labels_ok = self.labels.iter().all(|req| match req {
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
            LabelReq::In(k, vs) => label(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            LabelReq::NotIn(k, vs) => label(k).is_none_or(|v| !vs.iter().any(|x| x == v)),
        });
        let fields_ok = self.fields.iter().all(|req| {
            let actual = match req.path.as_str() {
                "metadata.name" => meta["name"].as_str().unwrap_or_default(),
                "metadata.namespace" => meta["namespace"].as_str().unwrap_or_default(),
                _ => "",
            };
            (actual == req.value) == req.equal
        });
        labels_ok && fields_ok
    }

    /// The watch event a change means for a watch with this filter, if any.
    fn event_for(&self, change: &Change) -> Option<Bytes> {
        let was = change.before.as_ref().is_some_and(|o| self.matches(o));
        match &change.after {
            Some(after) => match (was, self.matches(after)) {
                (false, true) => Some(event_line("ADDED", after)),
                (true, true) => Some(event_line("MODIFIED", after)),
                // Left the selected set: kube-apiserver sends the new state as DELETED.
                (true, false) => Some(event_line("DELETED", after)),
                (false, false) => None,
            },
            None if was => {
                let mut gone = change.before.clone()?;
                gone["metadata"]["resourceVersion"] = json!(change.rv.to_string());
                Some(event_line("DELETED", &gone))
            }
            None => None,
        }
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_labels(s: &str) -> Result<Vec<LabelReq>, String> {
    split_top_level(s)
        .into_iter()
        .map(|req| {
            let set = |rest: &str| -> Result<Vec<String>, String> {
                let inner = rest
                    .trim()
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| format!("bad set in label selector {req:?}"))?;
                Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
            };
            if let Some(key) = req.strip_prefix('!') {
                Ok(LabelReq::NotExists(key.trim().to_owned()))
            } else if let Some((k, v)) = req.split_once("!=") {
                Ok(LabelReq::NotIn(k.trim().into(), vec![v.trim().into()]))
            } else if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
                Ok(LabelReq::In(k.trim().into(), vec![v.trim().into()]))
            } else if let Some((k, rest)) = req.split_once(" notin ") {
                Ok(LabelReq::NotIn(k.trim().into(), set(rest)?))
            } else if let Some((k, rest)) = req.split_once(" in ") {
                Ok(LabelReq::In(k.trim().into(), set(rest)?))
            } else if req
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                Ok(LabelReq::Exists(req.to_owned()))
            } else {
                Err(format!("unable to parse requirement {req:?}"))
            }
        })
        .collect()
}

fn parse_fields(s: &str) -> Result<Vec<FieldReq>, String> {
    split_top_level(s)
        .into_iter()
        .map(|req| {
            let (path, value, equal) = if let Some((p, v)) = req.split_once("!=") {
                (p, v, false)
            } else if let Some((p, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
                (p, v, true)
            } else {
                return Err(format!("invalid field selector {req:?}"));
            };
            let path = path.trim();
            if !matches!(path, "metadata.name" | "metadata.namespace") {
                return Err(format!("field label not supported: {path}"));
            }
            Ok(FieldReq {
                path: path.to_owned(),
                value: value.trim().to_owned(),
                equal,
            })
        })
        .collect()
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({ "type": kind, "object": object }).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn bookmark(resource: Resource, rv: u64, initial_events_end: bool) -> Value {
    let mut meta = json!({ "resourceVersion": rv.to_string() });
    if initial_events_end {
        meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    json!({ "kind": resource.kind(), "apiVersion": resource.api_version(), "metadata": meta })
}

fn status(code: StatusCode, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    })
}

/// The 410 kube-apiserver sends for a watch from a compacted version.
fn gone_status(requested: u64, compacted: u64) -> Value {
    status(
        StatusCode::GONE,
        "Expired",
        &format!("too old resource version: {requested} ({compacted})"),
    )
}

type ResponseBody = BoxBody<Bytes, io::Error>;

fn json_response(code: StatusCode, body: &Value) -> Response<ResponseBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(code: StatusCode, reason: &str, message: &str) -> Response<ResponseBody> {
    json_response(code, &status(code, reason, message))
}

/// A watch response: one line per event, flushed as it comes, until the
/// channel says to end or abort, or `timeoutSeconds` passes.
struct WatchBody {
    rx: mpsc::UnboundedReceiver<WatchMsg>,
    timeout: Pin<Box<tokio::time::Sleep>>,
}

impl Body for WatchBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(WatchMsg::Line(line))) => {
                return Poll::Ready(Some(Ok(Frame::data(line))));
            }
            Poll::Ready(Some(WatchMsg::End) | None) => return Poll::Ready(None),
            Poll::Ready(Some(WatchMsg::Abort)) => {
                // hyper closes the connection without the terminating chunk.
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "watch dropped by the test",
                ))));
            }
            Poll::Pending => {}
        }
        match self.timeout.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn watch_response(
    rx: mpsc::UnboundedReceiver<WatchMsg>,
    timeout: Duration,
) -> Response<ResponseBody> {
    let body = WatchBody {
        rx,
        timeout: Box::pin(tokio::time::sleep(timeout)),
    };
    let mut response = Response::new(body.boxed());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache, private"),
    );
    response
}

async fn accept_loop(
    listener: Listener,
    shared: Arc<Shared>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
) {
    let Some(socket) = listener.socket.as_ref() else {
        return;
    };
    loop {
        let Ok((stream, _peer)) = socket.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let shared = shared.clone();
        let task = tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let mut conns = lock(&connections);
        conns.retain(|c| !c.is_finished());
        conns.push(task.abort_handle());
    }
}

/// What a request path names.
enum Route {
    Version,
    Health,
    CoreGroup,
    Groups,
    Collection {
        resource: Resource,
        namespace: Option<String>,
    },
    Object {
        resource: Resource,
        namespace: Option<String>,
        name: String,
    },
}

fn route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group_version, rest) = match segments.as_slice() {
        ["version"] => return Some(Route::Version),
        ["healthz" | "livez" | "readyz"] => return Some(Route::Health),
        ["api"] => return Some(Route::CoreGroup),
        ["apis"] => return Some(Route::Groups),
        ["api", "v1", rest @ ..] => ("v1".to_owned(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let resource = Resource::from_plural(&group_version, rest.first()?)?;
    if namespace.is_some() && !resource.namespaced() {
        return None;
    }
    match rest {
        [_] => Some(Route::Collection {
            resource,
            namespace,
        }),
        [_, name] => Some(Route::Object {
            resource,
            namespace,
            name: (*name).to_owned(),
        }),
        _ => None,
    }
}

/// The namespace of an Event collection path (`events.k8s.io/v1` or core).
fn events_collection(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["apis", "events.k8s.io", "v1", "namespaces", ns, "events"]
        | ["api", "v1", "namespaces", ns, "events"] => Some((*ns).to_owned()),
        _ => None,
    }
}

/// Stores a posted Event: `422` unless it is a JSON object of kind `Event` in
/// the path's namespace, as the real server checks.
async fn create_event(
    shared: &Shared,
    namespace: String,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return error_response(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string());
        }
    };
    let mut event: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    };
    let in_namespace = event["metadata"]["namespace"]
        .as_str()
        .is_none_or(|ns| ns == namespace);
    if event["kind"] != "Event" || !in_namespace {
        return error_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "not an Event of the request's namespace",
        );
    }
    // Events leave the global resourceVersion alone, as when they are kept in
    // an etcd of their own (`--etcd-servers-overrides`): lists and watches of
    // the other kinds do not see them.
    let mut state = shared.state();
    let n = state.next_uid;
    state.next_uid += 1;
    let uid = format!("00000000-0000-4000-8000-{n:012x}");
    event["metadata"]["namespace"] = json!(namespace);
    event["metadata"]["resourceVersion"] = json!(n.to_string());
    event["metadata"]["uid"] = json!(uid);
    state.events.push(event.clone());
    json_response(StatusCode::CREATED, &event)
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<ResponseBody> {
    let path = req.uri().path().to_owned();
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let route = route(&path);
    let resource = match &route {
        Some(Route::Collection { resource, .. } | Route::Object { resource, .. }) => {
            Some(*resource)
        }
        _ => None,
    };
    shared.state().requests.push(ApiRequest {
        method: req.method().to_string(),
        path: path.clone(),
        query: query.clone(),
        resource,
        watch,
        at: std::time::Instant::now(),
    });

    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    if !authorized {
        return error_response(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    if req.method() == Method::POST
        && let Some(namespace) = events_collection(&path)
    {
        return create_event(shared, namespace, req).await;
    }
    if req.method() != Method::GET {
        return error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the fake API server is read-only over HTTP",
        );
    }
    match route {
        Some(Route::Version) => json_response(
            StatusCode::OK,
            &json!({
                "major": "1", "minor": "34", "gitVersion": GIT_VERSION,
                "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                "buildDate": "2026-11-01T00:00:00Z", "goVersion": "go1.25.3",
                "compiler": "gc", "platform": "linux/amd64",
            }),
        ),
        Some(Route::Health) => {
            let mut r = Response::new(
                Full::new(Bytes::from_static(b"ok"))
                    .map_err(|never| match never {})
                    .boxed(),
            );
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
        Some(Route::CoreGroup) => json_response(
            StatusCode::OK,
            &json!({ "kind": "APIVersions", "versions": ["v1"],
                     "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443" }] }),
        ),
        Some(Route::Groups) => json_response(
            StatusCode::OK,
            &json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": [{
                "name": "discovery.k8s.io",
                "versions": [{ "groupVersion": "discovery.k8s.io/v1", "version": "v1" }],
                "preferredVersion": { "groupVersion": "discovery.k8s.io/v1", "version": "v1" },
            }]}),
        ),
        Some(Route::Object {
            resource,
            namespace,
            name,
        }) => {
            let ns = if resource.namespaced() {
                namespace.unwrap_or_else(|| "default".into())
            } else {
                String::new()
            };
            let found = shared
                .state()
                .objects
                .get(&resource)
                .and_then(|o| o.get(&(ns, name.clone())))
                .cloned();
            match found {
                Some(object) => json_response(StatusCode::OK, &object),
                None => error_response(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{} \"{name}\" not found", resource.plural()),
                ),
            }
        }
        Some(Route::Collection {
            resource,
            namespace,
        }) => {
            let filter = match Filter::parse(
                namespace,
                query.get("labelSelector").map(String::as_str),
                query.get("fieldSelector").map(String::as_str),
            ) {
                Ok(f) => f,
                Err(message) => {
                    return error_response(StatusCode::BAD_REQUEST, "BadRequest", &message);
                }
            };
            if watch {
                if query.get("sendInitialEvents").map(String::as_str) == Some("true") {
                    // A streaming list is a list too.
                    wait_released(shared, resource).await;
                }
                start_watch(shared, resource, filter, &query)
            } else {
                list(shared, resource, filter, &query).await
            }
        }
        None => error_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}

async fn list(
    shared: &Shared,
    resource: Resource,
    filter: Filter,
    query: &BTreeMap<String, String>,
) -> Response<ResponseBody> {
    wait_released(shared, resource).await;
    let state = shared.state();
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let limit = match (limit, state.page_cap) {
        (Some(l), Some(c)) => Some(l.min(c)),
        (l, c) => l.or(c),
    };
    // A continue token is "<list resourceVersion>/<namespace>/<name>" of the
    // last item already returned.
    let (list_rv, after) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let mut parts = token.splitn(3, '/');
            let (Some(rv), Some(ns), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "invalid continue token",
                );
            };
            let Ok(rv) = rv.parse::<u64>() else {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "invalid continue token",
                );
            };
            if rv < state.compacted {
                return error_response(
                    StatusCode::GONE,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list \
                     result. You can start a new list without the continue parameter.",
                );
            }
            (rv, Some((ns.to_owned(), name.to_owned())))
        }
        None => (state.rv, None),
    };
    let all = state.matching(resource, &filter);
    let remaining: Vec<(Key, Value)> = all
        .into_iter()
        .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
        .collect();
    let take = limit.unwrap_or(remaining.len()).min(remaining.len());
    let mut metadata = json!({ "resourceVersion": list_rv.to_string() });
    if take < remaining.len()
        && let Some(((ns, name), _)) = remaining.get(take.wrapping_sub(1))
    {
        metadata["continue"] = json!(format!("{list_rv}/{ns}/{name}"));
        metadata["remainingItemCount"] = json!(remaining.len() - take);
    }
    // List items carry no kind or apiVersion, as kube-apiserver serves them.
    let items: Vec<Value> = remaining
        .into_iter()
        .take(take)
        .map(|(_, mut o)| {
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", resource.kind()),
            "apiVersion": resource.api_version(),
            "metadata": metadata,
            "items": items,
        }),
    )
}

/// Waits while lists of `resource` are held ([`FakeApiServer::hold_lists`]).
async fn wait_released(shared: &Shared, resource: Resource) {
    let mut released = shared.released.subscribe();
    while shared.state().held.contains(&resource) {
        if released.changed().await.is_err() {
            break;
        }
    }
}

fn start_watch(
    shared: &Shared,
    resource: Resource,
    filter: Filter,
    query: &BTreeMap<String, String>,
) -> Response<ResponseBody> {
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let bookmarks = query.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let initial_events = query.get("sendInitialEvents").map(String::as_str) == Some("true");
    let (tx, rx) = mpsc::unbounded_channel();
    let mut state = shared.state();
    let rv = query
        .get("resourceVersion")
        .map(String::as_str)
        .filter(|v| !v.is_empty() && *v != "0");
    match rv {
        // "Any" version (or a streaming list): the current objects first.
        None if initial_events && let WatchList::Refused(code) = state.watch_list => {
            let code = StatusCode::from_u16(code).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            return error_response(
                code,
                "Invalid",
                "Invalid value: true: sendInitialEvents is forbidden for watch unless the \
                 WatchList feature gate is enabled",
            );
        }
        None if initial_events && state.expiring_streams.remove(&resource) => {
            let objects = state.matching(resource, &filter);
            for (_, object) in objects.iter().take(objects.len() / 2) {
                let _ = tx.send(WatchMsg::Line(event_line("ADDED", object)));
            }
            let gone = gone_status(state.rv, state.rv + 1);
            let _ = tx.send(WatchMsg::Line(event_line("ERROR", &gone)));
            let _ = tx.send(WatchMsg::End);
            return watch_response(rx, timeout);
        }
        None => {
            for (_, object) in state.matching(resource, &filter) {
                let _ = tx.send(WatchMsg::Line(event_line("ADDED", &object)));
            }
            if initial_events && state.watch_list != WatchList::WithoutEndBookmark {
                let _ = tx.send(WatchMsg::Line(event_line(
                    "BOOKMARK",
                    &bookmark(resource, state.rv, true),
                )));
            }
        }
        Some(v) => {
            let Ok(from) = v.parse::<u64>() else {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("invalid resource version {v:?}"),
                );
            };
            if from < state.compacted {
                let gone = gone_status(from, state.compacted);
                return match state.gone_style {
                    GoneStyle::HttpStatus => json_response(StatusCode::GONE, &gone),
                    GoneStyle::ErrorEvent => {
                        let _ = tx.send(WatchMsg::Line(event_line("ERROR", &gone)));
                        let _ = tx.send(WatchMsg::End);
                        watch_response(rx, timeout)
                    }
                };
            }
            for change in state
                .history
                .iter()
                .filter(|c| c.resource == resource && c.rv > from)
            {
                if let Some(line) = filter.event_for(change) {
                    let _ = tx.send(WatchMsg::Line(line));
                }
            }
        }
    }
    state.watches.push(WatchSub {
        resource,
        filter,
        bookmarks,
        tx,
    });
    watch_response(rx, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(labels: &[(&str, &str)]) -> Value {
        let mut o = json!({ "kind": "Service", "metadata": { "name": "a", "namespace": "ns" } });
        for (k, v) in labels {
            o = with_label(o, k, v);
        }
        o
    }

    #[test]
    fn kube_proxy_selectors() {
        let default = Filter::parse(
            None,
            Some("!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"),
            None,
        )
        .expect("parses");
        assert!(default.matches(&svc(&[])));
        assert!(!default.matches(&svc(&[(SERVICE_PROXY_NAME_LABEL, "other")])));
        assert!(!default.matches(&svc(&[("service.kubernetes.io/headless", "")])));

        let named = Filter::parse(
            None,
            Some("service.kubernetes.io/service-proxy-name=mine"),
            None,
        )
        .expect("parses");
        assert!(named.matches(&svc(&[(SERVICE_PROXY_NAME_LABEL, "mine")])));
        assert!(!named.matches(&svc(&[(SERVICE_PROXY_NAME_LABEL, "other")])));
        assert!(!named.matches(&svc(&[])));
    }

    #[test]
    fn set_and_field_selectors() {
        let f = Filter::parse(
            None,
            Some("a in (x, y),b notin (z),c!=q"),
            Some("metadata.name=a"),
        )
        .expect("parses");
        assert!(f.matches(&svc(&[("a", "x")])));
        assert!(!f.matches(&svc(&[("a", "x"), ("b", "z")])));
        assert!(!f.matches(&svc(&[("a", "x"), ("c", "q")])));
        assert!(!f.matches(&svc(&[("a", "w")])));
        let other = Filter::parse(None, None, Some("metadata.name=b")).expect("parses");
        assert!(!other.matches(&svc(&[])));
        assert!(Filter::parse(None, None, Some("spec.clusterIP=x")).is_err());
    }

    #[test]
    fn routes() {
        assert!(matches!(
            route("/api/v1/services"),
            Some(Route::Collection {
                resource: Resource::Services,
                namespace: None
            })
        ));
        assert!(matches!(
            route("/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices"),
            Some(Route::Collection {
                resource: Resource::EndpointSlices,
                namespace: Some(_)
            })
        ));
        assert!(matches!(
            route("/api/v1/nodes/node-1"),
            Some(Route::Object {
                resource: Resource::Nodes,
                ..
            })
        ));
        assert!(route("/api/v1/namespaces/ns/nodes").is_none());
        assert!(route("/api/v1/pods").is_none());
    }
}
