//! The feed's state machine with synthetic watcher events.

use serde_json::json;

use super::*;

fn service(name: &str, ip: &str, rv: u32) -> core::Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name, "namespace": "ns", "resourceVersion": rv.to_string() },
        "spec": { "clusterIP": ip, "ports": [{ "name": "http", "port": 80, "protocol": "TCP" }] },
    }))
    .unwrap()
}

fn slice(name: &str, service: &str, addr: &str, rv: u32) -> discovery::EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": name, "namespace": "ns", "resourceVersion": rv.to_string(),
            "labels": { "kubernetes.io/service-name": service },
        },
        "addressType": "IPv4",
        "endpoints": [{ "addresses": [addr], "conditions": { "ready": true } }],
        "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
    }))
    .unwrap()
}

fn node(zone: &str) -> core::Node {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": "node-1", "labels": { "topology.kubernetes.io/zone": zone } },
        "status": { "addresses": [{ "type": "InternalIP", "address": "192.168.0.1" }] },
    }))
    .unwrap()
}

struct Harness {
    feed: Feed,
    index: Arc<Mutex<Index>>,
    changes: watch::Receiver<u64>,
}

impl Harness {
    fn new() -> Self {
        let index = Arc::new(Mutex::new(Index::new(NodeInfo::named("node-1"))));
        let (tx, changes) = watch::channel(0);
        let feed = Feed::new(index.clone(), tx, "node-1".into());
        Self {
            feed,
            index,
            changes,
        }
    }

    fn services(&mut self, list: Vec<core::Service>) {
        self.feed.on_service(Event::Init);
        for s in list {
            self.feed.on_service(Event::InitApply(s));
        }
        self.feed.on_service(Event::InitDone);
    }

    fn slices(&mut self, list: Vec<discovery::EndpointSlice>) {
        self.feed.on_slice(Event::Init);
        for s in list {
            self.feed.on_slice(Event::InitApply(s));
        }
        self.feed.on_slice(Event::InitDone);
    }

    fn bumps(&self) -> u64 {
        *self.changes.borrow()
    }

    fn service_names(&self) -> Vec<String> {
        lock(&self.index)
            .services()
            .map(|s| s.id.name.to_string())
            .collect()
    }

    fn backends(&self) -> usize {
        lock(&self.index)
            .desired()
            .frontends
            .values()
            .map(|f| f.backends.len())
            .sum()
    }
}

#[test]
fn nothing_reaches_the_index_before_both_lists() {
    let mut h = Harness::new();
    h.services(vec![service("a", "10.96.0.1", 1)]);
    h.feed
        .on_service(Event::Apply(service("b", "10.96.0.2", 2)));
    assert_eq!(h.bumps(), 0);
    assert!(
        h.service_names().is_empty(),
        "services applied before slices were listed"
    );
    assert!(!h.feed.is_ready());

    h.slices(vec![slice("a-1", "a", "10.1.0.1", 3)]);
    assert!(h.feed.is_ready());
    assert_eq!(h.bumps(), 1, "one bump for the initial state");
    assert_eq!(h.service_names(), ["a", "b"]);
    assert_eq!(h.backends(), 1);
}

#[test]
fn events_before_ready_edit_the_pending_list() {
    let mut h = Harness::new();
    h.slices(vec![]);
    h.services(vec![service("a", "10.96.0.1", 1)]);
    // Slices listed first, Services second: ready.
    assert_eq!(h.service_names(), ["a"]);

    let mut h = Harness::new();
    h.services(vec![
        service("a", "10.96.0.1", 1),
        service("b", "10.96.0.2", 1),
    ]);
    h.feed
        .on_service(Event::Delete(service("a", "10.96.0.1", 2)));
    // A relist of Services while slices still list replaces the pending list.
    h.services(vec![
        service("b", "10.96.0.2", 1),
        service("c", "10.96.0.3", 3),
    ]);
    h.slices(vec![]);
    assert_eq!(h.service_names(), ["b", "c"]);
    assert_eq!(h.bumps(), 1);
}

#[test]
fn relist_prunes_what_was_deleted_meanwhile() {
    let mut h = Harness::new();
    h.services(vec![
        service("a", "10.96.0.1", 1),
        service("b", "10.96.0.2", 1),
    ]);
    h.slices(vec![
        slice("a-1", "a", "10.1.0.1", 1),
        slice("b-1", "b", "10.1.0.2", 1),
    ]);
    assert_eq!(h.bumps(), 1);

    h.services(vec![service("a", "10.96.0.1", 1)]);
    assert_eq!(h.service_names(), ["a"]);
    assert_eq!(h.bumps(), 2);
    // The slices were not relisted and stay.
    assert!(lock(&h.index).slice(&ObjectRef::new("ns", "b-1")).is_some());

    // A relist that changes nothing does not bump.
    h.services(vec![service("a", "10.96.0.1", 1)]);
    assert_eq!(h.bumps(), 2);

    h.slices(vec![slice("a-1", "a", "10.1.0.1", 1)]);
    assert!(lock(&h.index).slice(&ObjectRef::new("ns", "b-1")).is_none());
    assert_eq!(h.bumps(), 3);
}

#[test]
fn a_list_started_again_before_ready_drops_what_it_no_longer_has() {
    let mut h = Harness::new();
    // A list cut short (a 410 during a streaming list), then a full one.
    h.feed.on_service(Event::Init);
    h.feed
        .on_service(Event::InitApply(service("a", "10.96.0.1", 1)));
    h.feed
        .on_service(Event::InitApply(service("b", "10.96.0.2", 1)));
    h.services(vec![service("a", "10.96.0.1", 1)]);
    h.slices(vec![slice("a-1", "a", "10.1.0.1", 1)]);
    assert!(h.feed.is_ready());
    assert_eq!(h.service_names(), ["a"]);
    assert_eq!(h.bumps(), 1);
    // Then a relist of Services knows what it put in the Index.
    h.services(vec![]);
    assert!(h.service_names().is_empty());
    assert_eq!(h.bumps(), 2);
}

#[test]
fn apply_and_delete_after_ready_bump() {
    let mut h = Harness::new();
    h.services(vec![]);
    h.slices(vec![]);
    assert_eq!(h.bumps(), 1);
    h.feed
        .on_service(Event::Apply(service("a", "10.96.0.1", 5)));
    assert_eq!((h.service_names(), h.bumps()), (vec!["a".to_owned()], 2));
    h.feed
        .on_service(Event::Apply(service("a", "10.96.0.1", 5)));
    assert_eq!(h.bumps(), 2, "an unchanged object is not a change");
    h.feed
        .on_service(Event::Delete(service("a", "10.96.0.1", 6)));
    assert!(h.service_names().is_empty());
    assert_eq!(h.bumps(), 3);
}

#[test]
fn an_object_that_stops_converting_leaves_the_index() {
    let mut h = Harness::new();
    h.services(vec![service("a", "10.96.0.1", 1)]);
    h.slices(vec![]);
    assert_eq!(h.service_names(), ["a"]);
    h.feed
        .on_service(Event::Apply(service("a", "not-an-ip", 2)));
    assert!(h.service_names().is_empty());
    assert_eq!(h.bumps(), 2);
    // Headless now: skipped on purpose, not an error, but gone all the same.
    h.feed
        .on_service(Event::Apply(service("a", "10.96.0.1", 3)));
    h.feed.on_service(Event::Apply(service("a", "None", 4)));
    assert!(h.service_names().is_empty());
}

#[test]
fn problems_are_reported_once_per_version() {
    let mut r = Reports::default();
    let id = ObjectRef::new("ns", "a");
    assert!(r.first_time(convert::Kind::Service, &id, "1"));
    assert!(!r.first_time(convert::Kind::Service, &id, "1"));
    assert!(r.first_time(convert::Kind::EndpointSlice, &id, "1"));
    assert!(r.first_time(convert::Kind::Service, &id, "2"));
    r.retain(convert::Kind::Service, &BTreeSet::new());
    assert!(r.first_time(convert::Kind::Service, &id, "2"));
    assert!(!r.first_time(convert::Kind::EndpointSlice, &id, "1"));
}

fn node_with(extra: serde_json::Value) -> core::Node {
    let mut value = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": "node-1" },
    });
    if let (Some(base), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if k == "metadata" {
                for (mk, mv) in v.as_object().unwrap() {
                    base["metadata"][mk] = mv.clone();
                }
            } else {
                base.insert(k.clone(), v.clone());
            }
        }
    }
    serde_json::from_value(value).unwrap()
}

fn tainted(key: &str) -> core::Node {
    node_with(json!({ "spec": { "taints": [{ "key": key, "effect": "NoSchedule" }] } }))
}

fn deleting() -> core::Node {
    node_with(json!({ "metadata": { "deletionTimestamp": "2026-01-01T00:00:00Z" } }))
}

#[test]
fn a_node_is_ineligible_while_deleted_or_tainted_for_deletion() {
    assert!(node_eligible(&node_with(json!({}))));
    assert!(node_eligible(&tainted("node.kubernetes.io/unschedulable")));
    assert!(!node_eligible(&tainted(TO_BE_DELETED_TAINT)));
    assert!(!node_eligible(&deleting()));
    // Any effect counts, as in kube-proxy.
    let prefer = node_with(json!({ "spec": { "taints": [
        { "key": "other", "effect": "NoExecute" },
        { "key": TO_BE_DELETED_TAINT, "value": "1700000000", "effect": "PreferNoSchedule" },
    ] } }));
    assert!(!node_eligible(&prefer));
}

#[test]
fn healthz_follows_the_node_objects_eligibility() {
    use crate::telemetry::{Mode, Probe};
    let telemetry = Telemetry::new(Mode::Ebpf, std::time::Duration::from_secs(60));
    let mut h = Harness::new();
    h.feed = Feed::new(h.index.clone(), watch::channel(0).0, "node-1".into())
        .with_telemetry(telemetry.clone());
    let healthz = || telemetry.probe(Probe::Healthz).0;
    let livez = || telemetry.probe(Probe::Livez).0;
    assert_eq!(healthz(), 200, "eligible until a Node says otherwise");

    h.feed.on_node(Event::Init);
    h.feed
        .on_node(Event::InitApply(tainted(TO_BE_DELETED_TAINT)));
    assert_eq!(healthz(), 200, "not before the list is complete");
    h.feed.on_node(Event::InitDone);
    assert!(!h.feed.is_eligible());
    assert_eq!((healthz(), livez()), (503, 200));

    h.feed.on_node(Event::Apply(node("zone-a")));
    assert_eq!(healthz(), 200, "the taint was removed");
    h.feed.on_node(Event::Apply(deleting()));
    assert_eq!((healthz(), livez()), (503, 200));
    // Another node's object says nothing about this one.
    let mut other = node("zone-a");
    other.metadata.name = Some("node-2".into());
    h.feed.on_node(Event::Apply(other));
    assert_eq!(healthz(), 503);
    // A relist without the Node keeps the last answer (kube-proxy judges
    // the last known object).
    h.feed.on_node(Event::Init);
    h.feed.on_node(Event::InitDone);
    assert_eq!(healthz(), 503);
    // The deletion event's object decides, as in kube-proxy.
    h.feed.on_node(Event::Delete(node("zone-a")));
    assert_eq!(healthz(), 200);
}

#[test]
fn node_topology_follows_the_node_object() {
    let mut h = Harness::new();
    h.feed.on_node(Event::Init);
    h.feed.on_node(Event::InitApply(node("zone-a")));
    h.feed.on_node(Event::InitDone);
    assert_eq!(lock(&h.index).node().zone.as_deref(), Some("zone-a"));
    assert_eq!(h.bumps(), 0, "no bump before ready");
    h.services(vec![]);
    h.slices(vec![]);
    h.feed.on_node(Event::Apply(node("zone-b")));
    assert_eq!(lock(&h.index).node().zone.as_deref(), Some("zone-b"));
    assert_eq!(h.bumps(), 2);
    h.feed.on_node(Event::Delete(node("zone-b")));
    let node = lock(&h.index).node().clone();
    assert_eq!((node.name.as_str(), node.zone), ("node-1", None));
}
