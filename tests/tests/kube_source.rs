//! The Kubernetes source (`proxy::source::kube`) against the fake API server, over
//! real HTTP on loopback: the list/watch protocol as kube-runtime's watcher speaks
//! it, and what reaches the Index. No dataplane here (see `kube_e2e.rs`).
//!
//! Each test runs the source on its own tokio runtime and polls the shared Index
//! from the test thread, with bounded waits.

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use proxy::{
    model::{Index, NodeInfo},
    source::kube::{self as kube_source, Cluster, InitialList, Settings},
    telemetry::{Mode, Telemetry},
};
use proxy_tests::{
    FakeApiServer,
    fake_apiserver::{
        ApiRequest, GoneStyle, Resource, SERVICE_PROXY_NAME_LABEL, WatchList, json_from_yaml,
        with_label,
    },
    manifest::{AddressType, Endpoint, EndpointSlice, Node, Protocol, Service},
    wait_until,
};
use tokio::sync::watch;

const NS: &str = "pxt";
const NODE: &str = "node-1";
/// Bound on every wait for the source to react (it reacts in milliseconds;
/// reconnecting after an outage takes up to one backoff step, about 11 s here).
const WAIT: Duration = Duration::from_secs(15);
const DEFAULT_SELECTOR: &str =
    "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name";

fn service(name: &str, ip: &str) -> Service {
    Service::new(NS, name)
        .cluster_ip(ip)
        .port("http", Protocol::Tcp, 80, 8080)
}

fn slice(service: &str, addrs: &[&str]) -> EndpointSlice {
    let mut s = EndpointSlice::new(NS, &format!("{service}-x7k2p"), service, AddressType::IPv4)
        .port("http", Protocol::Tcp, 8080);
    for a in addrs {
        s = s.endpoint(Endpoint::ready(a));
    }
    s
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The source running against `api`. Field order is drop order: the source's
/// runtime stops before the API server.
struct World {
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: watch::Sender<bool>,
    changes: watch::Receiver<u64>,
    index: Arc<Mutex<Index>>,
    api: FakeApiServer,
    _dir: tempfile::TempDir,
}

impl World {
    /// A fake API server on loopback, with no objects yet.
    fn api() -> FakeApiServer {
        init_logs();
        FakeApiServer::start().expect("starting the fake API server")
    }

    /// Starts the source against `api` through a kubeconfig, as `proxy run
    /// --kubeconfig --initial-list=paginated` does (the tests of the
    /// list/watch protocol).
    fn start(api: FakeApiServer, proxy_name: Option<&str>) -> Self {
        Self::start_with(api, proxy_name, InitialList::Paginated)
    }

    /// As [`World::start`], with streaming lists (the default of `proxy run`).
    fn start_streaming(api: FakeApiServer) -> Self {
        Self::start_with(api, None, InitialList::Streaming)
    }

    fn start_with(api: FakeApiServer, proxy_name: Option<&str>, initial_list: InitialList) -> Self {
        Self::start_with_timeout(api, proxy_name, initial_list, Duration::from_secs(30))
    }

    /// As [`World::start_with`], giving up on a stalled streaming list after
    /// `initial_list_timeout`.
    fn start_with_timeout(
        api: FakeApiServer,
        proxy_name: Option<&str>,
        initial_list: InitialList,
        initial_list_timeout: Duration,
    ) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let kubeconfig = api
            .write_kubeconfig(dir.path())
            .expect("writing the kubeconfig");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let client = runtime
            .block_on(kube_source::client(&Cluster::Kubeconfig(kubeconfig)))
            .expect("a client from the fake's kubeconfig");
        let index = Arc::new(Mutex::new(
            Index::new(NodeInfo::named(NODE)).with_proxy_name(proxy_name),
        ));
        let (changes_tx, changes) = watch::channel(0);
        let (shutdown, shutdown_rx) = watch::channel(false);
        {
            let _guard = runtime.enter();
            kube_source::start(
                client,
                Settings {
                    initial_list,
                    initial_list_timeout,
                    node_name: NODE.into(),
                    proxy_name: proxy_name.map(str::to_owned),
                    telemetry: Telemetry::new(Mode::Ebpf, Duration::from_secs(60)),
                    events: Default::default(),
                    event_messages: None,
                },
                index.clone(),
                changes_tx,
                shutdown_rx,
            );
        }
        World {
            runtime: Some(runtime),
            shutdown,
            changes,
            index,
            api,
            _dir: dir,
        }
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many times the source has signalled a change (0: not ready yet).
    fn bumps(&self) -> u64 {
        *self.changes.borrow()
    }

    /// The Services in the Index, by name.
    fn services(&self) -> Vec<String> {
        self.index()
            .services()
            .map(|s| s.id.name.to_string())
            .collect()
    }

    /// The endpoint addresses of all slices in the Index, sorted.
    fn endpoints(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .index()
            .slices()
            .flat_map(|s| s.endpoints.iter().map(|e| e.address.to_string()))
            .collect();
        v.sort();
        v
    }

    fn wait_for(&self, what: &str, mut condition: impl FnMut(&World) -> bool) {
        assert!(
            wait_until(WAIT, || condition(self)),
            "expected {what} within {WAIT:?}; Index has services {:?}, endpoints {:?}; \
             {} bumps; requests: {:#?}",
            self.services(),
            self.endpoints(),
            self.bumps(),
            self.api.requests()
        );
    }

    fn wait_services(&self, want: &[&str]) {
        self.wait_for(&format!("services {want:?}"), |w| w.services() == want);
    }

    fn wait_ready(&self) {
        self.wait_for("the first bump (both initial lists complete)", |w| {
            w.bumps() >= 1
        });
    }

    /// Waits until the Services, EndpointSlices and Node watches are all open.
    fn wait_watching(&self) {
        self.wait_for("three open watches", |w| w.api.open_watches() == 3);
    }

    fn requests_for(&self, resource: Resource) -> Vec<ApiRequest> {
        self.api
            .requests()
            .into_iter()
            .filter(|r| r.resource == Some(resource))
            .collect()
    }

    fn lists_of(&self, resource: Resource) -> usize {
        self.requests_for(resource)
            .iter()
            .filter(|r| r.is_list_of(resource))
            .count()
    }

    fn watches_of(&self, resource: Resource) -> Vec<ApiRequest> {
        self.requests_for(resource)
            .into_iter()
            .filter(|r| r.is_watch_of(resource))
            .collect()
    }

    /// The streaming lists (watches with `sendInitialEvents=true`) of `resource`.
    fn streaming_lists_of(&self, resource: Resource) -> Vec<ApiRequest> {
        self.watches_of(resource)
            .into_iter()
            .filter(is_streaming_list)
            .collect()
    }
}

fn is_streaming_list(r: &ApiRequest) -> bool {
    r.query.get("sendInitialEvents").map(String::as_str) == Some("true")
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

#[test]
fn lists_then_watches_from_the_list_version() {
    let api = World::api();
    api.apply_service(&service("a", "10.96.0.1"));
    api.apply_slice(&slice("a", &["10.1.0.1"]));
    let listed_at = api.resource_version();
    let w = World::start(api, None);
    w.wait_ready();
    assert_eq!(w.bumps(), 1, "one bump for the complete initial state");
    assert_eq!(w.services(), ["a"]);
    assert_eq!(w.endpoints(), ["10.1.0.1"]);
    w.wait_watching();

    for resource in [Resource::Services, Resource::EndpointSlices] {
        let requests = w.requests_for(resource);
        let (list, watch) = (&requests[0], &requests[1]);
        assert!(
            list.is_list_of(resource),
            "expected a list of {resource} first, saw {list:?}"
        );
        assert_eq!(
            list.query.get("labelSelector").map(String::as_str),
            Some(DEFAULT_SELECTOR),
            "kube-proxy's selector on {list:?}"
        );
        assert!(
            watch.is_watch_of(resource),
            "expected a watch of {resource} next, saw {watch:?}"
        );
        assert_eq!(
            watch.resource_version(),
            Some(listed_at.to_string().as_str()),
            "the watch starts at the list's resourceVersion: {watch:?}"
        );
        assert_eq!(
            watch.query.get("allowWatchBookmarks").map(String::as_str),
            Some("true")
        );
        assert_eq!(
            watch.query.get("labelSelector").map(String::as_str),
            Some(DEFAULT_SELECTOR)
        );
    }
    let node_list = &w.requests_for(Resource::Nodes)[0];
    assert_eq!(
        node_list.query.get("fieldSelector").map(String::as_str),
        Some("metadata.name=node-1"),
        "only this node's Node: {node_list:?}"
    );

    // Changes arrive through the watch, without another list.
    w.api.apply_service(&service("b", "10.96.0.2"));
    w.api.apply_slice(&slice("a", &["10.1.0.1", "10.1.0.2"]));
    w.wait_services(&["a", "b"]);
    w.wait_for("the added endpoint", |w| {
        w.endpoints() == ["10.1.0.1", "10.1.0.2"]
    });
    w.api.delete(Resource::Services, NS, "a");
    w.wait_services(&["b"]);
    assert_eq!(w.lists_of(Resource::Services), 1);
    assert_eq!(w.lists_of(Resource::EndpointSlices), 1);
}

#[test]
fn nothing_is_programmed_before_both_initial_lists() {
    nothing_is_programmed_before_both(InitialList::Paginated);
}

#[test]
fn nothing_is_programmed_before_both_streaming_lists() {
    nothing_is_programmed_before_both(InitialList::Streaming);
}

fn nothing_is_programmed_before_both(initial_list: InitialList) {
    let api = World::api();
    api.apply_service(&service("a", "10.96.0.1"));
    api.apply_slice(&slice("a", &["10.1.0.1"]));
    api.hold_lists(Resource::EndpointSlices);
    let w = World::start_with(api, None, initial_list);

    // The Services list completes and its watch opens (with the Node's); the
    // slices list hangs.
    w.wait_for("the Services and Node watches to open", |w| {
        w.api.open_watches() == 2
    });
    w.api.apply_service(&service("b", "10.96.0.2"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        w.bumps(),
        0,
        "a bump before the EndpointSlices list completed"
    );
    assert!(
        w.services().is_empty(),
        "Services reached the Index before the EndpointSlices list completed: {:?}",
        w.services()
    );

    w.api.release_lists(Resource::EndpointSlices);
    w.wait_ready();
    // Both lists land together, with what the Services watch said meanwhile.
    assert_eq!(w.services(), ["a", "b"]);
    assert_eq!(w.endpoints(), ["10.1.0.1"]);
    assert_eq!(w.bumps(), 1);
}

#[test]
fn a_bookmark_moves_the_resume_point() {
    let api = World::api();
    api.apply_service(&service("a", "10.96.0.1"));
    api.apply_slice(&slice("a", &["10.1.0.1"]));
    let w = World::start(api, None);
    w.wait_ready();
    w.wait_watching();

    // Slice changes move the global resourceVersion past the Services watch's
    // last event; only a bookmark tells the Services watch about it.
    for n in 2..=4 {
        w.api.apply_slice(&slice("a", &[&format!("10.1.0.{n}")]));
    }
    w.wait_for("the last slice change", |w| w.endpoints() == ["10.1.0.4"]);
    assert_eq!(w.api.bookmark(), 3, "every watch asked for bookmarks");
    let bookmarked = w.api.resource_version();
    // Give the client a moment to read the bookmarks off the sockets.
    std::thread::sleep(Duration::from_millis(500));

    // Versions older than the bookmark are gone: resuming from the Services
    // watch's last event would be a 410 and a relist.
    w.api.compact();
    assert_eq!(w.api.drop_watches(), 3);
    w.wait_for("the Services watch to resume", |w| {
        w.watches_of(Resource::Services).len() == 2
    });
    let resumed = &w.watches_of(Resource::Services)[1];
    assert_eq!(
        resumed.resource_version(),
        Some(bookmarked.to_string().as_str()),
        "resumed from the bookmark: {resumed:?}"
    );
    w.api.apply_service(&service("b", "10.96.0.2"));
    w.wait_services(&["a", "b"]);
    assert_eq!(w.lists_of(Resource::Services), 1, "no relist was needed");
}

#[test]
fn a_dropped_connection_resumes_without_relisting() {
    let api = World::api();
    api.apply_service(&service("a", "10.96.0.1"));
    let w = World::start(api, None);
    w.wait_ready();
    w.wait_watching();

    assert_eq!(w.api.drop_watches(), 3);
    w.api.apply_service(&service("b", "10.96.0.2"));
    w.api.delete(Resource::Services, NS, "a");
    w.wait_services(&["b"]);
    assert_eq!(w.lists_of(Resource::Services), 1);
    let watches = w.watches_of(Resource::Services);
    assert!(watches.len() >= 2, "expected a resumed watch: {watches:#?}");
    let version = |r: &ApiRequest| r.resource_version().and_then(|v| v.parse::<u64>().ok());
    assert!(
        version(&watches[1]) >= version(&watches[0]),
        "the watch resumes where it was: {watches:#?}"
    );
}

/// The API server goes away; a Service is deleted and history is compacted
/// meanwhile; when it comes back the watch gets 410 Gone and the relist prunes.
fn deleted_while_down_is_pruned(style: GoneStyle) {
    let api = World::api();
    api.set_gone_style(style);
    api.apply_service(&service("a", "10.96.0.1"));
    api.apply_service(&service("b", "10.96.0.2"));
    api.apply_slice(&slice("a", &["10.1.0.1"]));
    api.apply_slice(&slice("b", &["10.1.0.2"]));
    let mut w = World::start(api, None);
    w.wait_ready();
    w.wait_watching();
    let bumps = w.bumps();

    w.api.stop();
    w.api.delete(Resource::Services, NS, "b");
    w.api.delete(Resource::EndpointSlices, NS, "b-x7k2p");
    w.api.expire_history();
    // Down long enough for the reconnect backoff to grow past 3 s (0.8 s
    // doubling, jittered): the Index keeps the last known state, untouched.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(w.services(), ["a", "b"]);
    assert_eq!(
        w.bumps(),
        bumps,
        "nothing changes while the API server is away"
    );

    let back = std::time::Instant::now();
    w.api.restart().expect("restarting the fake API server");
    w.wait_services(&["a"]);
    w.wait_for("the slice deleted meanwhile to be pruned", |w| {
        w.endpoints() == ["10.1.0.1"]
    });
    eprintln!(
        "{style:?}: deleted objects pruned {:?} after the API server came back",
        back.elapsed()
    );
    assert_eq!(w.lists_of(Resource::Services), 2, "a relist after 410 Gone");
    // The watchers try again within about a second of the server's return
    // (an unreachable server is retried on a short schedule), not after the
    // 3.2 s or more the outage grew client-go's backoff to. The request times
    // are the server's.
    let first_back = w
        .requests_for(Resource::Services)
        .into_iter()
        .find(|r| r.at >= back)
        .expect("a request once the server was back");
    let wait = first_back.at.saturating_duration_since(back);
    eprintln!("{style:?}: first request {wait:?} after the API server came back");
    assert!(
        wait < Duration::from_millis(1500),
        "expected a reconnect within 1.5 s of the API server's return, it came {wait:?} after"
    );
    // The first watch once the server is back: it resumes from the expired
    // version and gets the 410. (Not simply the second watch: the first may
    // have been re-established before the server went away.)
    let gone_watch = w
        .watches_of(Resource::Services)
        .into_iter()
        .find(|r| r.at >= back)
        .expect("a watch resumed after the restart");
    assert!(
        gone_watch
            .resource_version()
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|v| v < w.api.resource_version()),
        "the resume was from an expired version: {gone_watch:?}"
    );
    // The relist follows the 410 at once, not after the backoff the outage
    // grew (which would be 3.2 s or more here). Both times are the server's.
    let relist = w
        .requests_for(Resource::Services)
        .into_iter()
        .find(|r| r.is_list_of(Resource::Services) && r.at >= gone_watch.at)
        .expect("the relist");
    let gap = relist.at.saturating_duration_since(gone_watch.at);
    eprintln!("{style:?}: relist {gap:?} after the 410");
    assert!(
        gap < Duration::from_millis(1500),
        "expected the relist within 1.5 s of the 410 Gone, it came {gap:?} after"
    );
    // And the watch works again.
    w.api.apply_service(&service("c", "10.96.0.3"));
    w.wait_services(&["a", "c"]);
}

#[test]
fn gone_as_an_error_event_forces_a_relist_that_prunes() {
    deleted_while_down_is_pruned(GoneStyle::ErrorEvent);
}

#[test]
fn gone_as_an_http_status_forces_a_relist_that_prunes() {
    deleted_while_down_is_pruned(GoneStyle::HttpStatus);
}

#[test]
fn a_gone_event_on_an_open_watch_relists() {
    let api = World::api();
    api.apply_service(&service("a", "10.96.0.1"));
    let w = World::start(api, None);
    w.wait_ready();
    w.wait_watching();

    assert!(w.api.send_gone() >= 1);
    w.wait_for("a relist of Services", |w| {
        w.lists_of(Resource::Services) == 2
    });
    w.api.apply_service(&service("b", "10.96.0.2"));
    w.wait_services(&["a", "b"]);
}

#[test]
fn outage_without_compaction_resumes_and_replays() {
    let api = World::api();
    api.apply_service(&service("a", "10.96.0.1"));
    let mut w = World::start(api, None);
    w.wait_ready();
    w.wait_watching();

    w.api.stop();
    w.api.apply_service(&service("b", "10.96.0.2"));
    w.api.delete(Resource::Services, NS, "a");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(w.services(), ["a"], "the last known state while away");
    w.api.restart().expect("restarting the fake API server");
    w.wait_services(&["b"]);
    assert_eq!(
        w.lists_of(Resource::Services),
        1,
        "history replayed, no relist"
    );
}

#[test]
fn lists_are_paginated() {
    let api = World::api();
    api.set_page_cap(Some(2));
    for n in 1..=5 {
        api.apply_service(&service(&format!("s{n}"), &format!("10.96.0.{n}")));
    }
    let w = World::start(api, None);
    w.wait_ready();
    assert_eq!(w.services(), ["s1", "s2", "s3", "s4", "s5"]);
    let lists: Vec<ApiRequest> = w
        .requests_for(Resource::Services)
        .into_iter()
        .filter(|r| r.is_list_of(Resource::Services))
        .collect();
    assert_eq!(lists.len(), 3, "three pages of two: {lists:#?}");
    assert!(lists[1].query.contains_key("continue") && lists[2].query.contains_key("continue"));
}

#[test]
fn service_proxy_name_selects_objects() {
    let api = World::api();
    let labelled = |name: &str, ip: &str, proxy: &str| {
        with_label(
            json_from_yaml(&service(name, ip).to_yaml()),
            SERVICE_PROXY_NAME_LABEL,
            proxy,
        )
    };
    api.apply(labelled("mine", "10.96.0.1", "ebpf"));
    api.apply(labelled("theirs", "10.96.0.2", "other"));
    api.apply_service(&service("plain", "10.96.0.3"));
    let w = World::start(api, Some("ebpf"));
    w.wait_ready();
    assert_eq!(w.services(), ["mine"]);
    let list = &w.requests_for(Resource::Services)[0];
    assert_eq!(
        list.query.get("labelSelector").map(String::as_str),
        Some("!service.kubernetes.io/headless,service.kubernetes.io/service-proxy-name=ebpf")
    );
    w.wait_watching();

    // Handed to another proxy: leaves the selection, arrives as DELETED.
    w.api.apply(labelled("mine", "10.96.0.1", "other"));
    w.wait_services(&[]);
    w.api.apply(labelled("theirs", "10.96.0.2", "ebpf"));
    w.wait_services(&["theirs"]);
}

#[test]
fn default_selection_ignores_other_proxies_services() {
    let api = World::api();
    api.apply_service(&service("web", "10.96.0.1"));
    api.apply(with_label(
        json_from_yaml(&service("other", "10.96.0.2").to_yaml()),
        SERVICE_PROXY_NAME_LABEL,
        "other",
    ));
    let w = World::start(api, None);
    w.wait_ready();
    assert_eq!(w.services(), ["web"]);
}

#[test]
fn an_invalid_object_is_skipped_alone() {
    let api = World::api();
    api.apply_service(&service("good", "10.96.0.1"));
    api.apply_service(&service("bad", "10.96.0.999"));
    let w = World::start(api, None);
    w.wait_ready();
    assert_eq!(w.services(), ["good"]);
    w.wait_watching();
    w.api.apply_service(&service("bad", "10.96.0.9"));
    w.wait_services(&["bad", "good"]);
}

#[test]
fn node_topology_comes_from_this_nodes_object() {
    let api = World::api();
    api.apply_node(&Node::new(NODE).zone("zone-a").internal_ip("192.168.1.10"));
    api.apply_node(&Node::new("node-2").zone("zone-b"));
    let w = World::start(api, None);
    w.wait_for("the node's zone", |w| {
        w.index().node().zone.as_deref() == Some("zone-a")
    });
    assert_eq!(
        w.index().node().addresses,
        ["192.168.1.10".parse::<std::net::IpAddr>().expect("an IP")]
    );
    w.wait_ready();
    w.wait_watching();
    let before = w.bumps();
    w.api
        .apply_node(&Node::new(NODE).zone("zone-c").internal_ip("192.168.1.10"));
    w.wait_for("the new zone", |w| {
        w.index().node().zone.as_deref() == Some("zone-c")
    });
    w.wait_for("a bump for the node change", |w| w.bumps() > before);
}

#[test]
fn streams_the_initial_lists_when_the_server_offers_it() {
    let api = World::api();
    api.apply_service(&service("a", "10.96.0.1"));
    api.apply_service(&service("b", "10.96.0.2"));
    api.apply_slice(&slice("a", &["10.1.0.1"]));
    let w = World::start_streaming(api);
    w.wait_ready();
    assert_eq!(w.bumps(), 1, "one bump for the complete initial state");
    assert_eq!(w.services(), ["a", "b"]);
    assert_eq!(w.endpoints(), ["10.1.0.1"]);
    for resource in [
        Resource::Services,
        Resource::EndpointSlices,
        Resource::Nodes,
    ] {
        assert_eq!(w.lists_of(resource), 0, "no list of {resource}");
        let streams = w.streaming_lists_of(resource);
        assert_eq!(streams.len(), 1, "one streaming list of {resource}");
        let stream = &streams[0];
        assert_eq!(
            stream.query.get("resourceVersionMatch").map(String::as_str),
            Some("NotOlderThan"),
            "{stream:?}"
        );
        assert_eq!(
            stream.query.get("allowWatchBookmarks").map(String::as_str),
            Some("true")
        );
    }
    // The same watch goes on with the changes.
    w.api.apply_service(&service("c", "10.96.0.3"));
    w.api.delete(Resource::Services, NS, "a");
    w.wait_services(&["b", "c"]);
    assert_eq!(w.lists_of(Resource::Services), 0);
    assert_eq!(w.watches_of(Resource::Services).len(), 1);
}

#[test]
fn a_server_refusing_streaming_lists_gets_paginated_ones() {
    for code in [422, 400, 403] {
        let api = World::api();
        api.set_watch_list(WatchList::Refused(code));
        api.set_page_cap(Some(2));
        for n in 1..=5 {
            api.apply_service(&service(&format!("s{n}"), &format!("10.96.0.{n}")));
        }
        api.apply_slice(&slice("s1", &["10.1.0.1"]));
        let w = World::start_streaming(api);
        w.wait_ready();
        assert_eq!(w.services(), ["s1", "s2", "s3", "s4", "s5"], "{code}");
        assert_eq!(w.endpoints(), ["10.1.0.1"], "{code}");
        let requests = w.requests_for(Resource::Services);
        assert!(
            is_streaming_list(&requests[0]),
            "{code}: a streaming list first: {requests:#?}"
        );
        assert_eq!(
            w.lists_of(Resource::Services),
            3,
            "{code}: then three pages of two: {requests:#?}"
        );
        assert_eq!(
            w.streaming_lists_of(Resource::Services).len(),
            1,
            "{code}: the refusal is not retried"
        );
        w.wait_watching();
        w.api.apply_service(&service("s6", "10.96.0.6"));
        w.wait_services(&["s1", "s2", "s3", "s4", "s5", "s6"]);
    }
}

/// A streaming list whose `k8s.io/initial-events-end` bookmark never comes
/// is given up on after `--initial-list-timeout`, for a paginated list.
#[test]
fn a_streaming_list_that_never_ends_falls_back_to_pages() {
    let api = World::api();
    api.set_watch_list(WatchList::WithoutEndBookmark);
    api.set_page_cap(Some(2));
    for n in 1..=3 {
        api.apply_service(&service(&format!("s{n}"), &format!("10.96.0.{n}")));
    }
    api.apply_slice(&slice("s1", &["10.1.0.1"]));
    let w = World::start_with_timeout(api, None, InitialList::Streaming, Duration::from_secs(1));
    w.wait_ready();
    assert_eq!(w.services(), ["s1", "s2", "s3"]);
    assert_eq!(w.endpoints(), ["10.1.0.1"]);
    let requests = w.requests_for(Resource::Services);
    assert!(
        is_streaming_list(&requests[0]),
        "a streaming list first: {requests:#?}"
    );
    assert_eq!(
        w.lists_of(Resource::Services),
        2,
        "then two pages: {requests:#?}"
    );
    assert_eq!(
        w.streaming_lists_of(Resource::Services).len(),
        1,
        "the streaming list is not tried again"
    );
    w.wait_watching();
    w.api.apply_service(&service("s4", "10.96.0.4"));
    w.wait_services(&["s1", "s2", "s3", "s4"]);
}

#[test]
fn a_gone_during_the_streaming_list_lists_again() {
    let api = World::api();
    for n in 1..=4 {
        api.apply_service(&service(&format!("s{n}"), &format!("10.96.0.{n}")));
    }
    api.apply_slice(&slice("s1", &["10.1.0.1"]));
    // The first streaming list of each of the three resources is cut.
    for resource in Resource::ALL {
        api.expire_next_streaming_list(resource);
    }
    let w = World::start_streaming(api);
    w.wait_ready();
    assert_eq!(w.bumps(), 1, "one bump, for the complete initial state");
    assert_eq!(w.services(), ["s1", "s2", "s3", "s4"]);
    assert_eq!(w.endpoints(), ["10.1.0.1"]);
    let streams: usize = [
        Resource::Services,
        Resource::EndpointSlices,
        Resource::Nodes,
    ]
    .into_iter()
    .map(|r| w.streaming_lists_of(r).len())
    .sum();
    assert_eq!(
        streams,
        6,
        "three cut, three complete: {:#?}",
        w.api.requests()
    );
    assert_eq!(w.lists_of(Resource::Services), 0, "still streaming");

    // After the start, a 410 on an open watch lists again, still streaming.
    w.wait_watching();
    let before = w.streaming_lists_of(Resource::Services).len();
    assert!(w.api.send_gone() >= 1);
    w.wait_for("one more streaming list of Services", |w| {
        w.streaming_lists_of(Resource::Services).len() == before + 1
    });
    w.api.apply_service(&service("s5", "10.96.0.5"));
    w.wait_services(&["s1", "s2", "s3", "s4", "s5"]);
    assert_eq!(w.lists_of(Resource::Services), 0, "still streaming");
}
