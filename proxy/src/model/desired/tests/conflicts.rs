//! Two Services claiming one frontend.

use super::*;

#[test]
fn conflict_lowest_object_ref_wins_in_any_order() {
    let services = || {
        vec![
            svc("team-b", "web")
                .cluster_ip("10.96.0.10")
                .port("http", 80, Tcp),
            svc("team-a", "web")
                .cluster_ip("10.96.0.10")
                .port("web", 80, Tcp)
                .port("other", 81, Tcp),
            svc("team-a", "zzz")
                .cluster_ip("10.96.0.10")
                .port("http", 80, Tcp),
        ]
    };
    let forward = compute(services(), vec![]);
    let mut reversed_input = services();
    reversed_input.reverse();
    let backward = compute(reversed_input, vec![]);
    assert_eq!(forward, backward);

    let spec = forward
        .state
        .frontends
        .values()
        .next()
        .expect("frontend 80");
    assert_eq!(spec.service, ObjectRef::new("team-a", "web"));
    assert_eq!(spec.port_name, "web");
    assert_eq!(forward.conflicts.len(), 1);
    let conflict = &forward.conflicts[0];
    assert_eq!(conflict.winner, ObjectRef::new("team-a", "web"));
    assert_eq!(
        conflict.losers,
        [
            ObjectRef::new("team-a", "zzz"),
            ObjectRef::new("team-b", "web")
        ]
    );
    assert_eq!(
        conflict.to_string(),
        "frontend 10.96.0.10:80/TCP is claimed by several Services: using Service team-a/web, \
         ignoring Service team-a/zzz, Service team-b/web"
    );
    // The unshared port of the winner is unaffected.
    assert_eq!(
        frontends_of(&forward.state),
        ["10.96.0.10:80/TCP", "10.96.0.10:81/TCP"]
    );
}

#[test]
fn same_port_different_protocols_is_no_conflict() {
    let out = compute(
        vec![
            svc("default", "a")
                .cluster_ip("10.96.0.10")
                .port("", 53, Udp),
            svc("default", "b")
                .cluster_ip("10.96.0.10")
                .port("", 53, Tcp),
        ],
        vec![],
    );
    assert!(out.conflicts.is_empty());
    assert_eq!(out.state.frontends.len(), 2);
}
