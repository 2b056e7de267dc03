//! Tests of the Index: sources, selection, the slice → Service join, counters.

use std::time::Instant;

use super::*;
use crate::model::{
    testkit::*,
    types::{
        Protocol::{Tcp, Udp},
        SourceId::{Kubernetes, Manifests},
        TrafficPolicy,
    },
};

fn web() -> SvcBuilder {
    svc("default", "web")
        .cluster_ip("10.96.0.10")
        .port("http", 80, Tcp)
}

fn web_slice(name: &str, addr: &str) -> SliceBuilder {
    slice("default", name)
        .for_service("web")
        .port("http", 8080, Tcp)
        .endpoint(addr)
}

fn backends(idx: &Index, frontend: &str) -> Vec<String> {
    let state = idx.desired();
    backends_of(&state, frontend)
        .unwrap_or_else(|| panic!("no frontend {frontend} in {:?}", frontends_of(&state)))
}

#[test]
fn scenario_from_the_style_guide() {
    let mut idx = Index::new(node("n1"));
    idx.apply_service(Manifests, web());
    idx.apply_slice(Manifests, web_slice("web-1", "10.1.0.5").ready());
    assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
}

#[test]
fn slice_before_service() {
    let mut idx = Index::new(node("n1"));
    idx.apply_slice(Manifests, web_slice("web-1", "10.1.0.5"));
    assert!(idx.desired().frontends.is_empty());
    idx.apply_service(Manifests, web());
    assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
}

#[test]
fn apply_reports_change() {
    let mut idx = Index::new(node("n1"));
    assert!(idx.apply_service(Manifests, web()));
    assert!(!idx.apply_service(Manifests, web()));
    assert!(idx.apply_slice(Manifests, web_slice("web-1", "10.1.0.5")));
    assert!(!idx.apply_slice(Manifests, web_slice("web-1", "10.1.0.5")));
    assert!(idx.apply_slice(Manifests, web_slice("web-1", "10.1.0.6")));
}

#[test]
fn slice_update_replaces_endpoints() {
    let mut idx = Index::new(node("n1"));
    idx.apply_service(Manifests, web());
    idx.apply_slice(
        Manifests,
        web_slice("web-1", "10.1.0.5").endpoint("10.1.0.6"),
    );
    idx.apply_slice(Manifests, web_slice("web-1", "10.1.0.7"));
    assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.7:8080"]);
}

#[test]
fn slice_relabelled_to_another_service_moves() {
    let mut idx = Index::new(node("n1"));
    idx.apply_service(Manifests, web());
    idx.apply_service(
        Manifests,
        svc("default", "api")
            .cluster_ip("10.96.0.11")
            .port("http", 80, Tcp),
    );
    idx.apply_slice(Manifests, web_slice("shared", "10.1.0.5"));
    idx.apply_slice(
        Manifests,
        slice("default", "shared")
            .for_service("api")
            .port("http", 8080, Tcp)
            .endpoint("10.1.0.5"),
    );
    assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), Vec::<String>::new());
    assert_eq!(backends(&idx, "10.96.0.11:80/TCP"), ["10.1.0.5:8080"]);
    assert_eq!(idx.slices_for(&ObjectRef::new("default", "web")).count(), 0);
    assert!(
        idx.slices_by_service.keys().all(|k| &*k.name == "api"),
        "no stale join entries"
    );
}

#[test]
fn delete_slice_leaves_frontend_without_backends() {
    let mut idx = Index::new(node("n1"));
    idx.apply_service(Manifests, web());
    idx.apply_slice(Manifests, web_slice("web-1", "10.1.0.5"));
    idx.apply_slice(Manifests, web_slice("web-2", "10.1.0.6"));
    assert!(idx.delete_slice(Manifests, &ObjectRef::new("default", "web-1")));
    assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.6:8080"]);
    assert!(idx.delete_slice(Manifests, &ObjectRef::new("default", "web-2")));
    assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), Vec::<String>::new());
    assert!(!idx.delete_slice(Manifests, &ObjectRef::new("default", "web-2")));
    assert!(idx.slices_by_service.is_empty(), "no stale join entries");
}

#[test]
fn delete_service_removes_its_frontends() {
    let mut idx = Index::new(node("n1"));
    idx.apply_service(Manifests, web());
    idx.apply_service(
        Manifests,
        svc("default", "dns")
            .cluster_ip("10.96.0.53")
            .port("", 53, Udp),
    );
    idx.apply_slice(Manifests, web_slice("web-1", "10.1.0.5"));
    assert!(idx.delete_service(Manifests, &ObjectRef::new("default", "web")));
    assert_eq!(frontends_of(&idx.desired()), ["10.96.0.53:53/UDP"]);
    assert!(!idx.delete_service(Manifests, &ObjectRef::new("default", "web")));
    // The slice stays, and serves the Service again when it comes back.
    idx.apply_service(Manifests, web());
    assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
}

#[test]
fn reset_forgets_what_is_not_relisted() {
    let mut idx = Index::new(node("n1"));
    idx.apply_service(Manifests, web());
    idx.apply_service(
        Manifests,
        svc("default", "gone")
            .cluster_ip("10.96.0.99")
            .port("", 80, Tcp),
    );
    idx.apply_slice(Manifests, web_slice("web-1", "10.1.0.5"));
    idx.apply_slice(Manifests, web_slice("web-old", "10.1.0.4"));
    idx.reset(
        Manifests,
        [web().into()],
        [web_slice("web-1", "10.1.0.6").into()],
    );
    assert_eq!(frontends_of(&idx.desired()), ["10.96.0.10:80/TCP"]);
    assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.6:8080"]);
    assert!(idx.slice(&ObjectRef::new("default", "web-old")).is_none());
}

#[test]
fn a_staged_initial_list_is_absorbed_whole_or_object_by_object() {
    // Into an Index with no objects: the staged maps, as they are.
    let mut idx = Index::new(node("n1")).with_proxy_name(Some("ebpf"));
    let mut staged = idx.staging();
    staged.apply_service(Kubernetes, web().proxy_name_label("ebpf"));
    staged.apply_service(
        Kubernetes,
        svc("default", "plain")
            .cluster_ip("10.96.0.20")
            .port("", 80, Tcp),
    );
    staged.apply_slice(
        Kubernetes,
        web_slice("web-1", "10.1.0.5").proxy_name_label("ebpf"),
    );
    assert!(idx.absorb(Kubernetes, staged));
    // The staging Index selected as this one does: only the labelled Service.
    assert_eq!(frontends_of(&idx.desired()), ["10.96.0.10:80/TCP"]);
    assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
    assert_eq!(idx.pending_changes().services, 1);
    assert!(idx.take_dirty().services.contains(&web_ref()));

    // Into an Index that has objects of another source: merged.
    let mut idx = Index::new(node("n1"));
    idx.apply_slice(Manifests, web_slice("web-manual", "10.1.0.6"));
    let mut staged = idx.staging();
    staged.apply_service(Kubernetes, web());
    staged.apply_slice(Kubernetes, web_slice("web-k8s", "10.1.0.5"));
    assert!(idx.absorb(Kubernetes, staged));
    assert_eq!(
        backends(&idx, "10.96.0.10:80/TCP"),
        ["10.1.0.5:8080", "10.1.0.6:8080"]
    );
    // Nothing staged, nothing changed.
    let staged = idx.staging();
    assert!(!idx.absorb(Kubernetes, staged));
}

#[test]
fn conflict_reported_through_desired_outcome() {
    let mut idx = Index::new(node("n1"));
    idx.apply_service(
        Manifests,
        svc("default", "b")
            .cluster_ip("10.96.0.10")
            .port("", 80, Tcp),
    );
    idx.apply_service(
        Manifests,
        svc("default", "a")
            .cluster_ip("10.96.0.10")
            .port("", 80, Tcp),
    );
    idx.apply_slice(
        Manifests,
        slice("default", "b-1")
            .for_service("b")
            .port("", 8080, Tcp)
            .endpoint("10.1.0.2"),
    );
    idx.apply_slice(
        Manifests,
        slice("default", "a-1")
            .for_service("a")
            .port("", 8080, Tcp)
            .endpoint("10.1.0.1"),
    );
    let out = idx.desired_outcome();
    assert_eq!(out.state, idx.desired());
    assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.1:8080"]);
    assert_eq!(out.conflicts.len(), 1);
    assert_eq!(out.conflicts[0].winner, ObjectRef::new("default", "a"));
    assert_eq!(out.conflicts[0].losers, [ObjectRef::new("default", "b")]);
    // Deleting the winner hands the frontend to the other Service.
    idx.delete_service(Manifests, &ObjectRef::new("default", "a"));
    assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.2:8080"]);
    assert!(idx.desired_outcome().conflicts.is_empty());
}

fn web_ref() -> ObjectRef {
    ObjectRef::new("default", "web")
}

#[test]
fn same_service_in_both_sources_kubernetes_wins() {
    let mut idx = Index::new(node("n1"));
    idx.apply_service(Manifests, web().port("metrics", 9090, Tcp));
    idx.apply_slice(Manifests, web_slice("web-1", "10.1.0.5"));
    assert_eq!(
        frontends_of(&idx.desired()),
        ["10.96.0.10:80/TCP", "10.96.0.10:9090/TCP"]
    );
    assert!(idx.apply_service(Kubernetes, web()));
    assert_eq!(frontends_of(&idx.desired()), ["10.96.0.10:80/TCP"]);
    // A change to the shadowed copy changes nothing in effect.
    assert!(!idx.apply_service(Manifests, web().port("admin", 8081, Tcp)));
    assert_eq!(frontends_of(&idx.desired()), ["10.96.0.10:80/TCP"]);
    // Without the Kubernetes copy, the manifest one is back.
    assert!(idx.delete_service(Kubernetes, &web_ref()));
    assert_eq!(
        frontends_of(&idx.desired()),
        ["10.96.0.10:80/TCP", "10.96.0.10:8081/TCP"]
    );
}

#[test]
fn same_slice_in_both_sources_kubernetes_wins_and_join_follows() {
    let mut idx = Index::new(node("n1"));
    idx.apply_service(Manifests, web());
    idx.apply_service(
        Manifests,
        svc("default", "api")
            .cluster_ip("10.96.0.11")
            .port("http", 80, Tcp),
    );
    idx.apply_slice(Manifests, web_slice("shared", "10.1.0.5"));
    idx.apply_slice(
        Kubernetes,
        slice("default", "shared")
            .for_service("api")
            .port("http", 8080, Tcp)
            .endpoint("10.1.0.6"),
    );
    assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), Vec::<String>::new());
    assert_eq!(backends(&idx, "10.96.0.11:80/TCP"), ["10.1.0.6:8080"]);
    idx.delete_slice(Kubernetes, &ObjectRef::new("default", "shared"));
    assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
    assert_eq!(backends(&idx, "10.96.0.11:80/TCP"), Vec::<String>::new());
    idx.delete_slice(Manifests, &ObjectRef::new("default", "shared"));
    assert!(idx.slices_by_service.is_empty(), "no stale join entries");
    assert!(idx.slices.is_empty(), "no empty layers left behind");
}

/// A selector-less Service from the cluster, with a hand-written slice, and
/// the other way round.
#[test]
fn slices_join_services_across_sources() {
    let mut idx = Index::new(node("n1"));
    idx.apply_service(Kubernetes, web());
    idx.apply_slice(Manifests, web_slice("web-manual", "10.1.0.5"));
    idx.apply_service(
        Manifests,
        svc("default", "db")
            .cluster_ip("10.96.0.12")
            .port("", 5432, Tcp),
    );
    idx.apply_slice(
        Kubernetes,
        slice("default", "db-abcde")
            .for_service("db")
            .port("", 5432, Tcp)
            .endpoint("10.1.0.9"),
    );
    assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
    assert_eq!(backends(&idx, "10.96.0.12:5432/TCP"), ["10.1.0.9:5432"]);
}

#[test]
fn reset_replaces_only_its_own_source() {
    let mut idx = Index::new(node("n1"));
    idx.apply_service(Kubernetes, web());
    idx.apply_slice(Kubernetes, web_slice("web-k8s", "10.1.0.5"));
    idx.reset(
        Manifests,
        [svc("default", "db")
            .cluster_ip("10.96.0.12")
            .port("", 5432, Tcp)
            .into()],
        [web_slice("web-manual", "10.1.0.6").into()],
    );
    assert_eq!(
        backends(&idx, "10.96.0.10:80/TCP"),
        ["10.1.0.5:8080", "10.1.0.6:8080"]
    );
    // An empty manifests relist removes only what the manifests held.
    assert!(idx.reset(Manifests, [], []));
    assert_eq!(frontends_of(&idx.desired()), ["10.96.0.10:80/TCP"]);
    assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
    // And the other way round.
    idx.reset(Manifests, [], [web_slice("web-manual", "10.1.0.6").into()]);
    idx.reset(Kubernetes, [web().into()], []);
    assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.6:8080"]);
}

#[test]
fn change_counters_count_changes_in_effect() {
    let mut idx = Index::new(node("n1"));
    assert_eq!((idx.service_changes(), idx.endpoint_changes()), (0, 0));
    let lists = || {
        (
            vec![
                web().into(),
                svc("default", "db")
                    .cluster_ip("10.96.0.12")
                    .port("", 5432, Tcp)
                    .into(),
            ],
            vec![
                web_slice("web-1", "10.1.0.5").into(),
                web_slice("web-2", "10.1.0.6").into(),
                web_slice("web-3", "10.1.0.7").into(),
            ],
        )
    };
    let (services, slices) = lists();
    assert!(idx.reset(Manifests, services, slices));
    assert_eq!((idx.service_changes(), idx.endpoint_changes()), (2, 3));

    // The same relist again: nothing.
    let (services, slices) = lists();
    assert!(!idx.reset(Manifests, services, slices));
    assert_eq!((idx.service_changes(), idx.endpoint_changes()), (2, 3));

    // One slice changed, one removed, one Service removed.
    assert!(idx.reset(
        Manifests,
        [web().into()],
        [
            web_slice("web-1", "10.1.0.5").into(),
            web_slice("web-2", "10.1.0.8").into(),
        ],
    ));
    assert_eq!((idx.service_changes(), idx.endpoint_changes()), (3, 5));

    // A Kubernetes copy equal to the manifest one changes nothing in effect;
    // a different one does, and so does its removal.
    assert!(!idx.apply_service(Kubernetes, web()));
    assert!(idx.apply_slice(Kubernetes, web_slice("web-1", "10.1.0.9")));
    assert!(idx.delete_slice(Kubernetes, &ObjectRef::new("default", "web-1")));
    assert!(!idx.delete_slice(Kubernetes, &ObjectRef::new("default", "web-1")));
    assert_eq!((idx.service_changes(), idx.endpoint_changes()), (3, 7));

    // Node changes are not Service or endpoint changes.
    assert!(idx.set_node(node("n2").into()));
    assert!(!idx.set_node(node("n2").into()));
    assert_eq!((idx.service_changes(), idx.endpoint_changes()), (3, 7));
}

#[test]
fn pending_changes_count_services_until_a_sync_takes_them() {
    let mut idx = Index::new(node("n1"));
    let pending = |idx: &Index| {
        let p = idx.pending_changes();
        (p.services, p.endpoints)
    };
    assert_eq!(pending(&idx), (0, 0));
    idx.apply_service(Manifests, web());
    idx.apply_service(Manifests, web().port("dns", 53, Udp));
    idx.apply_service(Manifests, svc("default", "db").cluster_ip("10.96.0.11"));
    assert_eq!(pending(&idx), (2, 0), "two Services, one changed twice");
    // Two slices of one Service: one Service with endpoint changes.
    idx.apply_slice(Manifests, web_slice("web-1", "10.1.0.5"));
    idx.apply_slice(Manifests, web_slice("web-2", "10.1.0.6"));
    assert_eq!(pending(&idx), (2, 1));
    // A no-op is not a change.
    idx.take_dirty();
    assert_eq!(pending(&idx), (0, 0), "a sync took them");
    idx.apply_slice(Manifests, web_slice("web-2", "10.1.0.6"));
    assert_eq!(pending(&idx), (0, 0));
    idx.delete_slice(Manifests, &ObjectRef::new("default", "web-2"));
    idx.delete_service(Manifests, &ObjectRef::new("default", "db"));
    assert_eq!(pending(&idx), (1, 1), "deletions count");
}

#[test]
fn nodeport_primary_keeps_the_nodes_primary_addresses_and_follows_them() {
    let mut idx = Index::new(node("n1")).with_nodeport_primary(true);
    let local = [
        ip("192.168.1.10"),
        ip("192.168.1.11"),
        ip("fd00::10"),
        ip("10.0.0.1"),
    ];
    assert!(idx.set_nodeport_addresses(local));
    // No Node address known yet: every address, as kube-proxy.
    assert_eq!(idx.node().nodeport_addresses.len(), 4);
    let mut n: NodeInfo = node("n1").into();
    // InternalIPs first; the first of each family is primary.
    n.addresses = vec![
        ip("192.168.1.11"),
        ip("fd00::10"),
        ip("192.168.1.10"),
        ip("203.0.113.9"),
    ];
    assert!(idx.set_node(n.clone()));
    assert_eq!(
        idx.node().nodeport_addresses,
        [ip("192.168.1.11"), ip("fd00::10")]
    );
    // A primary address not on any interface is not served.
    n.addresses = vec![ip("203.0.113.9"), ip("192.168.1.10")];
    assert!(idx.set_node(n));
    assert!(idx.node().nodeport_addresses.is_empty());
    // The interfaces change: narrowed again.
    assert!(!idx.set_nodeport_addresses([ip("10.0.0.1")]));
    assert!(idx.set_nodeport_addresses([ip("203.0.113.9"), ip("10.0.0.1")]));
    assert_eq!(idx.node().nodeport_addresses, [ip("203.0.113.9")]);
    // Without `primary`, the Node's addresses do not matter.
    let mut idx = Index::new(node("n1"));
    idx.set_nodeport_addresses(local);
    let mut n: NodeInfo = node("n1").into();
    n.addresses = vec![ip("192.168.1.11")];
    idx.set_node(n);
    assert_eq!(idx.node().nodeport_addresses.len(), 4);
}

#[test]
fn nodeport_addresses_survive_node_updates_and_mark_everything_dirty() {
    let mut idx = Index::new(node("n1"));
    idx.apply_service(
        Manifests,
        web()
            .service_type(crate::model::ServiceType::NodePort)
            .node_port(30080),
    );
    idx.take_dirty();
    let addrs = [ip("192.168.1.10"), ip("10.0.0.1"), ip("192.168.1.10")];
    assert!(idx.set_nodeport_addresses(addrs));
    assert!(!idx.set_nodeport_addresses([ip("10.0.0.1"), ip("192.168.1.10")]));
    assert!(idx.take_dirty().all);
    // A Node update (from the API) knows nothing of them: they stay.
    assert!(idx.set_node(node("n1").zone("a").into()));
    assert_eq!(
        idx.node().nodeport_addresses,
        [ip("10.0.0.1"), ip("192.168.1.10")]
    );
    assert_eq!(
        crate::model::testkit::frontends_of(&idx.desired()),
        [
            "10.0.0.1:30080/TCP",
            "10.96.0.10:80/TCP",
            "192.168.1.10:30080/TCP"
        ]
    );
}

/// `--external-ip-guard` is the daemon's: a Node update (which knows
/// nothing of it) keeps it, so a node-address ExternalIP stays refused.
#[test]
fn the_external_ip_guard_survives_node_updates() {
    let mut idx = Index::new(node("n1")).with_external_ip_guard(ExternalIpGuard::Strict);
    idx.apply_service(Manifests, web().external_ip("192.168.1.10"));
    assert!(idx.set_node(node("n1").address("192.168.1.10").into()));
    assert_eq!(idx.node().external_ip_guard, ExternalIpGuard::Strict);
    assert_eq!(
        crate::model::testkit::frontends_of(&idx.desired()),
        ["10.96.0.10:80/TCP"]
    );
}

#[test]
fn objects_of_another_proxy_are_ignored_by_default() {
    let mut idx = Index::new(node("n1"));
    assert!(!idx.apply_service(Manifests, web().proxy_name_label("other")));
    assert!(idx.desired().frontends.is_empty());
    assert!(idx.apply_service(Manifests, web()));
    assert!(!idx.apply_slice(Manifests, web_slice("web-h", "10.1.0.4").headless_label()));
    assert!(!idx.apply_slice(
        Manifests,
        web_slice("web-o", "10.1.0.3").proxy_name_label("other")
    ));
    idx.apply_slice(Manifests, web_slice("web-1", "10.1.0.5"));
    assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
    // Relabelling an object for another proxy removes it, as a watch with a
    // label selector reports a deletion.
    assert!(idx.apply_slice(
        Manifests,
        web_slice("web-1", "10.1.0.5").proxy_name_label("other")
    ));
    assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), Vec::<String>::new());
    assert!(idx.apply_service(Manifests, web().proxy_name_label("other")));
    assert!(idx.desired().frontends.is_empty());
    assert_eq!(idx.service_changes(), 2);
}

#[test]
fn named_proxy_uses_only_its_objects() {
    let mut idx = Index::new(node("n1")).with_proxy_name(Some("ebpf"));
    assert_eq!(idx.proxy_name(), Some("ebpf"));
    idx.reset(
        Manifests,
        [
            web().proxy_name_label("ebpf").into(),
            svc("default", "plain")
                .cluster_ip("10.96.0.20")
                .port("", 80, Tcp)
                .into(),
            svc("default", "other")
                .cluster_ip("10.96.0.21")
                .port("", 80, Tcp)
                .proxy_name_label("kube-router")
                .into(),
        ],
        [
            web_slice("web-1", "10.1.0.5")
                .proxy_name_label("ebpf")
                .into(),
            // The slice's own labels count, not its Service's.
            web_slice("web-2", "10.1.0.6").into(),
        ],
    );
    assert_eq!(frontends_of(&idx.desired()), ["10.96.0.10:80/TCP"]);
    assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
    assert_eq!(
        Index::new(node("n1"))
            .with_proxy_name(Some(""))
            .proxy_name(),
        None
    );
}

/// The node is learned (or changes) after the objects: locality follows.
#[test]
fn node_change_recomputes_locality_and_zone() {
    let mut idx = Index::default();
    idx.apply_service(Manifests, web().internal_policy(TrafficPolicy::Local));
    idx.apply_service(
        Manifests,
        svc("default", "api")
            .cluster_ip("10.96.0.11")
            .port("http", 80, Tcp),
    );
    idx.apply_slice(
        Manifests,
        web_slice("web-1", "10.1.0.5")
            .on_node("n1")
            .endpoint("10.1.0.6")
            .on_node("n2"),
    );
    idx.apply_slice(
        Manifests,
        slice("default", "api-1")
            .for_service("api")
            .port("http", 8080, Tcp)
            .endpoint("10.2.0.1")
            .zone_hints(&["a"])
            .endpoint("10.2.0.2")
            .zone_hints(&["b"]),
    );
    // No node name yet: nothing is local.
    assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), Vec::<String>::new());
    assert_eq!(idx.desired_outcome().no_local_endpoints, 1);
    assert_eq!(
        backends(&idx, "10.96.0.11:80/TCP"),
        ["10.2.0.1:8080", "10.2.0.2:8080"]
    );

    idx.set_node(node("n1").zone("a").into());
    assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
    assert_eq!(backends(&idx, "10.96.0.11:80/TCP"), ["10.2.0.1:8080"]);
    assert_eq!(idx.desired_outcome().no_local_endpoints, 0);

    idx.set_node(node("n2").zone("b").into());
    assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.6:8080"]);
    assert_eq!(backends(&idx, "10.96.0.11:80/TCP"), ["10.2.0.2:8080"]);
    assert_eq!(idx.node().name, "n2");
}

/// 10,000 Services × 10 endpoints must stay well within a sync interval.
/// The bound is generous (debug builds, shared CI machines); the join is what
/// keeps it linear.
#[test]
fn ten_thousand_services_compute_quickly() {
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for i in 0..10_000u32 {
        let name = format!("svc-{i}");
        let ns = format!("ns-{}", i % 100);
        let [_, _, hi, lo] = i.to_be_bytes();
        services.push(
            svc(&ns, &name)
                .cluster_ip(&format!("10.96.{hi}.{lo}"))
                .port("http", 80, Tcp)
                .into(),
        );
        let mut sl = slice(&ns, &format!("{name}-abcde"))
            .for_service(&name)
            .port("http", 8080, Tcp);
        for e in 0..10u8 {
            sl = sl.endpoint(&format!("10.{}.{hi}.{lo}", 100 + e));
        }
        slices.push(sl.into());
    }
    let mut idx = Index::new(node("n1"));
    let start = Instant::now();
    idx.reset(Manifests, services, slices);
    let state = idx.desired();
    let elapsed = start.elapsed();
    assert_eq!(state.frontends.len(), 10_000);
    assert!(state.frontends.values().all(|s| s.backends.len() == 10));
    assert!(elapsed.as_secs() < 5, "reset + desired took {elapsed:?}");
}
