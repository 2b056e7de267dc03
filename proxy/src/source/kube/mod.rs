//! The Kubernetes API source: list and watch Services and EndpointSlices (with
//! kube-proxy's label selector) and this node's Node, and feed the Index.
//!
//! - `client`: how to reach the cluster (`--kubeconfig`, or in-cluster) and this
//!   node's name;
//! - `feed`: the state machine from watcher events to Index calls (initial lists,
//!   relists, conversion problems);
//! - `event`: the start-up Event on this node's Node, as kube-proxy sends;
//! - `pod_cidrs`: this node's `spec.podCIDRs`, read once at start for
//!   `--detect-local-mode=NodeCIDR`;
//! - `retry`: how long a watcher waits after an error;
//! - this module: the watch task, one kube-runtime `watcher` per resource.
//!
//! Readiness: nothing is programmed before the initial lists of **both** Services
//! and EndpointSlices are complete. This source bumps its `changes` for the first
//! time only then, with both lists installed in the Index in one step; with
//! several sources, [`super::gate`] holds the sync loop until each has bumped
//! once. The Node is not waited for: a missing or unreadable Node only loses
//! topology hints, while the node's name (what makes an endpoint local) comes
//! from the flag.
//!
//! Failures: while the API server is unreachable the watchers retry (see
//! `retry`) and the Index keeps the last known state, which keeps
//! being served. A watch resumes from the last `resourceVersion` it saw (events or
//! bookmarks); when that is too old (410 Gone) the watcher relists, and the relist
//! prunes what was deleted meanwhile. Both forms of 410 restart the watcher here,
//! because a fresh watcher lists at once: kube-runtime would relist after a 410
//! delivered as a watch `ERROR` event (what kube-apiserver sends) only once its
//! backoff, grown through the outage, has passed (up to a minute), and it retries
//! a watch refused with an HTTP 410 forever with the same version (kube-rs
//! #1042). A watcher restarted less than [`RESTART_DELAY`] ago waits that long
//! first, so a server that answers every watch with 410 is not hammered.
//!
//! Reconnects follow [`retry::Retry`]: a short schedule while the server
//! cannot be reached (back within about a second of its return), client-go's
//! while it answers with errors (README, "Kubernetes API outages").
//!
//! Must not: decide anything about Services (the model does), or keep raw
//! `k8s-openapi` objects (they are converted as they arrive).

mod client;
mod event;
mod feed;
mod pod_cidrs;
mod retry;
mod service_events;

use std::{
    fmt::Debug,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt as _, TryStreamExt as _, stream::BoxStream};
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

pub use self::client::{
    ClientError, Cluster, client, client_and_addresses, in_pod_but_unset, node_name,
};
use self::feed::Feed;
pub use self::pod_cidrs::{PodCidrError, wait_for_pod_cidrs};
use crate::model::{Index, selection::label_selector};
use crate::telemetry::Telemetry;

/// The least time between two restarts of one watcher, so a server that
/// answers every watch with 410 Gone is not hammered.
const RESTART_DELAY: Duration = Duration::from_secs(1);

/// What the source watches.
#[derive(Debug)]
pub struct Settings {
    /// This node's name (see [`node_name`]): selects the Node object.
    pub node_name: String,
    /// `--service-proxy-name`: selects `service.kubernetes.io/service-proxy-name=<name>`
    /// instead of the objects without that label.
    pub proxy_name: Option<String>,
    /// Where rejected objects are counted (`proxy_config_rejects_total`) and
    /// this node's eligibility goes (`/healthz`).
    pub telemetry: Telemetry,
    /// Problems on Services, published as Events on them (see
    /// [`crate::events`]); the sync loop reports into the same sink.
    pub events: crate::events::EventSink,
    /// The receiver of `events`, taken by the publisher.
    pub event_messages: Option<tokio::sync::mpsc::Receiver<crate::events::Message>>,
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
    mut settings: Settings,
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
    let nodes_api: Api<core::Node> = Api::all(client.clone());
    let mut services = stream(services_api.clone(), selected.clone(), Duration::ZERO);
    let mut slices = stream(slices_api.clone(), selected.clone(), Duration::ZERO);
    let mut nodes = stream(nodes_api.clone(), this_node.clone(), Duration::ZERO);
    // kube-proxy's "birth cry", once its watches are started.
    tokio::spawn(event::announce(
        client.clone(),
        settings.node_name.clone(),
        shutdown.clone(),
    ));

    if let Some(messages) = settings.event_messages.take() {
        tokio::spawn(service_events::run(
            client.clone(),
            settings.node_name.clone(),
            messages,
            shutdown.clone(),
        ));
    }
    let mut feed = Feed::new(index, changes, settings.node_name.clone())
        .with_telemetry(settings.telemetry.clone())
        .with_events(settings.events.clone());
    let (mut services_restarts, mut slices_restarts, mut nodes_restarts) = (
        Restarts::default(),
        Restarts::default(),
        Restarts::default(),
    );
    loop {
        tokio::select! {
            Some(item) = services.next() => match step(item, "services") {
                Step::Event(event) => feed.on_service(event),
                Step::Restart => {
                    let delay = services_restarts.next(Instant::now());
                    services = stream(services_api.clone(), selected.clone(), delay);
                }
                Step::Wait => {}
            },
            Some(item) = slices.next() => match step(item, "endpointslices") {
                Step::Event(event) => feed.on_slice(event),
                Step::Restart => {
                    let delay = slices_restarts.next(Instant::now());
                    slices = stream(slices_api.clone(), selected.clone(), delay);
                }
                Step::Wait => {}
            },
            Some(item) = nodes.next() => match step(item, "nodes") {
                Step::Event(event) => feed.on_node(event),
                Step::Restart => {
                    let delay = nodes_restarts.next(Instant::now());
                    nodes = stream(nodes_api.clone(), this_node.clone(), delay);
                }
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

/// A watcher with [`retry::Retry`]'s backoff, started after `delay`.
fn stream<K>(api: Api<K>, config: watcher::Config, delay: Duration) -> Events<K>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let retry = retry::Retry::new();
    let classify = retry.classifier();
    let events = watcher(api, config)
        .inspect_err(move |error| classify(error))
        .backoff(retry);
    if delay.is_zero() {
        return events.boxed();
    }
    futures::stream::once(tokio::time::sleep(delay))
        .filter_map(|()| async { None })
        .chain(events)
        .boxed()
}

/// When one watcher was last restarted.
#[derive(Debug, Default)]
struct Restarts {
    last: Option<Instant>,
}

impl Restarts {
    /// How long the restart at `now` waits: nothing, unless the previous
    /// one was less than [`RESTART_DELAY`] ago.
    fn next(&mut self, now: Instant) -> Duration {
        let recent = self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < RESTART_DELAY);
        let delay = if recent {
            RESTART_DELAY
        } else {
            Duration::ZERO
        };
        self.last = Some(now + delay);
        delay
    }
}

enum Step<K> {
    Event(Event<K>),
    /// The watch expired (410 Gone): start a new watcher, which relists at
    /// once rather than after the old one's backoff.
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
            Step::Restart
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

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn gone_event() -> Result<Event<core::Service>, watcher::Error> {
        Err(watcher::Error::WatchError(Box::new(
            Status::failure("too old resource version: 5 (9)", "Expired").with_code(410),
        )))
    }

    #[test]
    fn a_gone_watch_event_restarts_the_watcher() {
        assert!(matches!(step(gone_event(), "services"), Step::Restart));
    }

    #[test]
    fn other_watch_errors_wait_for_the_backoff() {
        let other = Err(watcher::Error::WatchError(Box::new(
            Status::failure("internal error", "InternalError").with_code(500),
        )));
        assert!(matches!(
            step::<core::Service>(other, "services"),
            Step::Wait
        ));
    }

    #[test]
    fn restarts_are_immediate_unless_the_last_was_under_a_second_ago() {
        let t0 = Instant::now();
        let mut r = Restarts::default();
        assert_eq!(r.next(t0), Duration::ZERO);
        assert_eq!(r.next(t0 + Duration::from_millis(200)), RESTART_DELAY);
        // That one starts at 1.2 s; one at 2.1 s is less than 1 s after it.
        assert_eq!(r.next(t0 + Duration::from_millis(2100)), RESTART_DELAY);
        assert_eq!(r.next(t0 + Duration::from_secs(10)), Duration::ZERO);
    }
}
