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
//! Initial lists ([`InitialList`], `--initial-list`): by default a streaming
//! list (WatchList: a watch with `sendInitialEvents=true` and
//! `resourceVersionMatch=NotOlderThan`, whose objects arrive one by one until a
//! bookmark annotated `k8s.io/initial-events-end`), as client-go's
//! `WatchListClient` (on by default since Kubernetes 1.35) makes kube-proxy do.
//! A server that refuses it (400, 403 or 422, as an API server without the
//! `WatchList` feature does) gets a paginated list (`limit=500` and `continue`
//! tokens) from then on, as client-go falls back. So does a streaming list
//! whose end bookmark does not come: one that has gone
//! [`Settings::initial_list_timeout`] (`--initial-list-timeout`, 30 s) since
//! its last event without ending (a proxy in front stripping bookmarks, a
//! non-conformant server) is abandoned for a paginated list, where client-go
//! waits for the watch's own timeout (5 to 10 minutes) to end it. Either way
//! the feed sees the same `Init`, `InitApply`…, `InitDone`.
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

/// How a watcher gets the initial state of its objects (`--initial-list`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InitialList {
    /// A streaming list (WatchList), falling back to `Paginated` for good
    /// once the server refuses it.
    #[default]
    Streaming,
    /// A paginated list (500 objects a page), then a watch from its version.
    Paginated,
}

/// What the source watches.
#[derive(Debug)]
pub struct Settings {
    /// How the initial lists are read.
    pub initial_list: InitialList,
    /// How long a streaming list may go without an event before it ending
    /// (the `k8s.io/initial-events-end` bookmark) is given up on, for a
    /// paginated list (`--initial-list-timeout`).
    pub initial_list_timeout: Duration,
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
    let mode = (settings.initial_list, settings.initial_list_timeout);
    let mut services = Watch::new(services_api, selected.clone(), mode, "services");
    let mut slices = Watch::new(slices_api, selected, mode, "endpointslices");
    let mut nodes = Watch::new(nodes_api, this_node, mode, "nodes");
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
    loop {
        tokio::select! {
            Some(item) = services.next() => {
                if let Some(event) = services.on_polled(item) {
                    feed.on_service(event);
                }
            }
            Some(item) = slices.next() => {
                if let Some(event) = slices.on_polled(item) {
                    feed.on_slice(event);
                }
            }
            Some(item) = nodes.next() => {
                if let Some(event) = nodes.on_polled(item) {
                    feed.on_node(event);
                }
            }
            _ = shutdown.changed() => return,
            else => {
                tracing::error!("every Kubernetes watch ended; the source stops");
                return;
            }
        }
    }
}

type Events<K> = BoxStream<'static, Result<Event<K>, watcher::Error>>;

/// What waiting on one watcher gives.
enum Polled<K> {
    Item(Result<Event<K>, watcher::Error>),
    /// The streaming list went its timeout without an event or its end.
    Stalled,
}

/// One resource's watcher: restarted after a 410 Gone, and switched to a
/// paginated list when the server refuses a streaming one.
struct Watch<K> {
    api: Api<K>,
    /// The selectors; the initial-list strategy is added by [`Self::config`].
    config: watcher::Config,
    mode: InitialList,
    /// Whether the current watcher has started its initial list (`Init`):
    /// until then a refused watch is the streaming list being refused.
    started: bool,
    /// How long a streaming list may go without an event.
    stall_timeout: Duration,
    /// While a streaming list is under way: when it is given up on.
    deadline: Option<tokio::time::Instant>,
    restarts: Restarts,
    resource: &'static str,
    events: Events<K>,
}

impl<K> Watch<K>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    fn new(
        api: Api<K>,
        config: watcher::Config,
        (mode, stall_timeout): (InitialList, Duration),
        resource: &'static str,
    ) -> Self {
        let events = stream(
            api.clone(),
            with_strategy(config.clone(), mode),
            Duration::ZERO,
        );
        Self {
            api,
            config,
            mode,
            started: false,
            stall_timeout,
            deadline: None,
            restarts: Restarts::default(),
            resource,
            events,
        }
    }

    /// The next item of the watcher, or [`Polled::Stalled`] once a
    /// streaming list has gone its timeout without an event.
    async fn next(&mut self) -> Option<Polled<K>> {
        match self.deadline {
            Some(deadline) => tokio::select! {
                item = self.events.next() => item.map(Polled::Item),
                () = tokio::time::sleep_until(deadline) => Some(Polled::Stalled),
            },
            None => self.events.next().await.map(Polled::Item),
        }
    }

    /// What the feed gets from what [`Self::next`] gave.
    fn on_polled(&mut self, polled: Polled<K>) -> Option<Event<K>> {
        match polled {
            Polled::Item(item) => self.on_item(item),
            Polled::Stalled => {
                tracing::warn!(
                    resource = self.resource,
                    timeout = ?self.stall_timeout,
                    "the streaming list (WatchList) did not end (no `k8s.io/initial-events-end` \
                     bookmark) within its timeout; using a paginated list instead"
                );
                self.mode = InitialList::Paginated;
                self.restart();
                None
            }
        }
    }

    /// What the feed gets from one watcher item, restarting the watcher
    /// when the item asks for it.
    fn on_item(&mut self, item: Result<Event<K>, watcher::Error>) -> Option<Event<K>> {
        let streaming_start = self.mode == InitialList::Streaming && !self.started;
        if self.deadline.is_some() {
            // Any sign of life of the streaming list postpones giving up.
            self.deadline = Some(tokio::time::Instant::now() + self.stall_timeout);
        }
        match step(item, self.resource, streaming_start) {
            Step::Event(event) => {
                match event {
                    Event::Init => {
                        self.started = true;
                        if self.mode == InitialList::Streaming {
                            self.deadline = Some(tokio::time::Instant::now() + self.stall_timeout);
                        }
                    }
                    Event::InitDone => self.deadline = None,
                    _ => {}
                }
                Some(event)
            }
            Step::Restart => {
                self.restart();
                None
            }
            Step::FallBack => {
                self.mode = InitialList::Paginated;
                self.restart();
                None
            }
            Step::Wait => None,
        }
    }

    fn restart(&mut self) {
        let delay = self.restarts.next(Instant::now());
        self.started = false;
        self.deadline = None;
        let config = with_strategy(self.config.clone(), self.mode);
        self.events = stream(self.api.clone(), config, delay);
    }
}

/// `config` with the initial-list strategy of `mode`.
fn with_strategy(config: watcher::Config, mode: InitialList) -> watcher::Config {
    match mode {
        InitialList::Streaming => config.streaming_lists(),
        InitialList::Paginated => config,
    }
}

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
    /// The server refused a streaming list: list with pages from now on.
    FallBack,
    /// An error the watcher recovers from by itself, after its backoff.
    Wait,
}

/// Whether a refused watch means the server does not offer streaming lists:
/// 400 or 422 (a server without the `WatchList` feature rejects
/// `sendInitialEvents`), or 403 (a proxy or policy in front refusing it; a
/// plain list then either works or fails with the same error, retried).
fn refuses_streaming(code: u16) -> bool {
    matches!(code, 400 | 403 | 422)
}

/// Classifies one watcher item. `streaming_start`: the watcher is starting a
/// streaming list (no `Init` yet), so a refused watch is that list refused.
fn step<K>(
    item: Result<Event<K>, watcher::Error>,
    resource: &'static str,
    streaming_start: bool,
) -> Step<K> {
    match item {
        Ok(event) => Step::Event(event),
        Err(watcher::Error::WatchStartFailed(kube::Error::Api(status)))
            if streaming_start && refuses_streaming(status.code) =>
        {
            tracing::warn!(
                resource,
                code = status.code,
                message = %status.message,
                "the API server refused a streaming list (WatchList); using a paginated list instead"
            );
            Step::FallBack
        }
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
        assert!(matches!(
            step(gone_event(), "services", false),
            Step::Restart
        ));
        assert!(matches!(
            step(gone_event(), "services", true),
            Step::Restart
        ));
    }

    #[test]
    fn other_watch_errors_wait_for_the_backoff() {
        let other = Err(watcher::Error::WatchError(Box::new(
            Status::failure("internal error", "InternalError").with_code(500),
        )));
        assert!(matches!(
            step::<core::Service>(other, "services", true),
            Step::Wait
        ));
    }

    fn refused(code: u16) -> Result<Event<core::Service>, watcher::Error> {
        Err(watcher::Error::WatchStartFailed(kube::Error::Api(
            Box::new(Status::failure("sendInitialEvents is forbidden", "Invalid").with_code(code)),
        )))
    }

    #[test]
    fn a_refused_streaming_list_falls_back_to_pages() {
        for code in [400, 403, 422] {
            assert!(
                matches!(step(refused(code), "services", true), Step::FallBack),
                "{code}"
            );
            // Once the list is done, a refused watch is only retried.
            assert!(
                matches!(step(refused(code), "services", false), Step::Wait),
                "{code}"
            );
        }
        assert!(matches!(step(refused(500), "services", true), Step::Wait));
        assert!(matches!(
            step(refused(410), "services", true),
            Step::Restart
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
