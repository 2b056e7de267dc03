//! The Kubernetes API source: list and watch Services and EndpointSlices (with
//! kube-proxy's label selector) and this node's Node, and feed the Index.
//!
//! - `client`: how to reach the cluster (`--kubeconfig`, or in-cluster) and this
//!   node's name;
//! - `feed`: the state machine from watcher events to Index calls (initial lists,
//!   relists, conversion problems);
//! - `pod_cidrs`: this node's `spec.podCIDRs`, read once at start for
//!   `--detect-local-mode=NodeCIDR`;
//! - this module: the watch task, one kube-runtime `watcher` per resource with
//!   kube's default backoff.
//!
//! Readiness: nothing is programmed before the initial lists of **both** Services
//! and EndpointSlices are complete. This source bumps its `changes` for the first
//! time only then, with both lists installed in the Index in one step; with
//! several sources, [`super::gate`] holds the sync loop until each has bumped
//! once. The Node is not waited for: a missing or unreadable Node only loses
//! topology hints, while the node's name (what makes an endpoint local) comes
//! from the flag.
//!
//! Failures: while the API server is unreachable the watchers retry with backoff
//! (0.8 s doubling to 30 s) and the Index keeps the last known state, which keeps
//! being served. A watch resumes from the last `resourceVersion` it saw (events or
//! bookmarks); when that is too old (410 Gone) the watcher relists, and the relist
//! prunes what was deleted meanwhile. kube-runtime relists on a 410 delivered as
//! a watch `ERROR` event (what kube-apiserver sends), but retries a watch refused
//! with an HTTP 410 forever with the same version (kube-rs #1042); this module
//! restarts that watcher, which relists.
//!
//! Must not: decide anything about Services (the model does), or keep raw
//! `k8s-openapi` objects (they are converted as they arrive).

mod client;
mod feed;
mod pod_cidrs;

use std::{
    fmt::Debug,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt as _, stream::BoxStream};
use k8s_openapi::api::{core::v1 as core, discovery::v1 as discovery};
use kube::{
    Api,
    runtime::{
        WatchStreamExt as _,
        watcher::{self, Event, watcher},
    },
};
use serde::de::DeserializeOwned;
use tokio::{sync::watch, task::JoinHandle};

pub use self::client::{ClientError, Cluster, client, in_pod_but_unset, node_name};
use self::feed::Feed;
pub use self::pod_cidrs::{PodCidrError, wait_for_pod_cidrs};
use crate::model::{Index, selection::label_selector};
use crate::telemetry::ConfigRejects;

/// How long to wait before restarting a watcher whose watch was refused with an
/// HTTP 410, so a server that refuses every version is not hammered.
const RESTART_DELAY: Duration = Duration::from_secs(1);

/// What the source watches.
#[derive(Clone, Debug)]
pub struct Settings {
    /// This node's name (see [`node_name`]): selects the Node object.
    pub node_name: String,
    /// `--service-proxy-name`: selects `service.kubernetes.io/service-proxy-name=<name>`
    /// instead of the objects without that label.
    pub proxy_name: Option<String>,
    /// Where rejected objects are counted (`proxy_config_rejects_total`).
    pub rejects: ConfigRejects,
}

/// Starts watching. The returned task runs until `shutdown`; it bumps `changes`
/// for the first time once both initial lists are in the Index.
pub fn start(
    client: kube::Client,
    settings: Settings,
    index: Arc<Mutex<Index>>,
    changes: watch::Sender<u64>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(run(client, settings, index, changes, shutdown))
}

async fn run(
    client: kube::Client,
    settings: Settings,
    index: Arc<Mutex<Index>>,
    changes: watch::Sender<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let selector = label_selector(settings.proxy_name.as_deref());
    let selected = watcher::Config::default().labels(&selector);
    let this_node =
        watcher::Config::default().fields(&format!("metadata.name={}", settings.node_name));
    tracing::info!(
        label_selector = %selector,
        node = %settings.node_name,
        "watching Services, EndpointSlices and this node's Node"
    );

    let services_api: Api<core::Service> = Api::all(client.clone());
    let slices_api: Api<discovery::EndpointSlice> = Api::all(client.clone());
    let nodes_api: Api<core::Node> = Api::all(client);
    let mut services = stream(services_api.clone(), selected.clone(), Duration::ZERO);
    let mut slices = stream(slices_api.clone(), selected.clone(), Duration::ZERO);
    let mut nodes = stream(nodes_api.clone(), this_node.clone(), Duration::ZERO);

    let mut feed = Feed::new(index, changes, settings.node_name.clone())
        .with_rejects(settings.rejects.clone());
    loop {
        tokio::select! {
            Some(item) = services.next() => match step(item, "services") {
                Step::Event(event) => feed.on_service(event),
                Step::Restart => services = stream(services_api.clone(), selected.clone(), RESTART_DELAY),
                Step::Wait => {}
            },
            Some(item) = slices.next() => match step(item, "endpointslices") {
                Step::Event(event) => feed.on_slice(event),
                Step::Restart => slices = stream(slices_api.clone(), selected.clone(), RESTART_DELAY),
                Step::Wait => {}
            },
            Some(item) = nodes.next() => match step(item, "nodes") {
                Step::Event(event) => feed.on_node(event),
                Step::Restart => nodes = stream(nodes_api.clone(), this_node.clone(), RESTART_DELAY),
                Step::Wait => {}
            },
            _ = shutdown.changed() => return,
            else => {
                tracing::error!("every Kubernetes watch ended; the source stops");
                return;
            }
        }
    }
}

type Events<K> = BoxStream<'static, Result<Event<K>, watcher::Error>>;

/// A watcher with kube's default backoff, started after `delay`.
fn stream<K>(api: Api<K>, config: watcher::Config, delay: Duration) -> Events<K>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let events = watcher(api, config).default_backoff();
    if delay.is_zero() {
        return events.boxed();
    }
    futures::stream::once(tokio::time::sleep(delay))
        .filter_map(|()| async { None })
        .chain(events)
        .boxed()
}

enum Step<K> {
    Event(Event<K>),
    /// The watcher is stuck: start a new one (which relists).
    Restart,
    /// An error the watcher recovers from by itself, after its backoff.
    Wait,
}

fn step<K>(item: Result<Event<K>, watcher::Error>, resource: &'static str) -> Step<K> {
    match item {
        Ok(event) => Step::Event(event),
        Err(watcher::Error::WatchStartFailed(kube::Error::Api(status))) if status.code == 410 => {
            tracing::warn!(
                resource,
                message = %status.message,
                "watch refused with 410 Gone; relisting"
            );
            Step::Restart
        }
        Err(watcher::Error::WatchError(status)) if status.code == 410 => {
            tracing::info!(
                resource,
                message = %status.message,
                "watch expired (410 Gone); relisting"
            );
            Step::Wait
        }
        Err(error) => {
            tracing::warn!(
                resource,
                error = %error,
                "Kubernetes watch failed; retrying with backoff, the last known state stays in effect"
            );
            Step::Wait
        }
    }
}
