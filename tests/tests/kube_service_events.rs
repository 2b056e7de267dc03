//! Events on Services: with the Kubernetes source, a Service the proxy
//! cannot serve in part gets a Warning Event (`events.k8s.io/v1`) regarding
//! it, by UID, so `kubectl describe service` shows it: an ExternalIP refused,
//! an invalid `loadBalancerSourceRanges` entry, an unsupported protocol.
//! One Event per (Service, reason), however often the Service is synced.
//!
//! The fake API server listens on loopback inside the sandbox's namespace.

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::*;
use proxy_tests::{
    FakeApiServer, ProxyProcess,
    fake_apiserver::json_from_yaml,
    manifest::{AddressType, Node, Protocol, Service},
    proxy_bin,
};
use serde_json::{Value, json};

const NODE: &str = "node-1";
const BAD: &str = "bad";
const BAD_UID: &str = "00000000-0000-4000-8000-0000000000bd";

/// `bad`: a LoadBalancer Service with a loopback ExternalIP (refused), a
/// source range that is not a CIDR, and an SCTP port; `label` makes a new
/// version of it.
fn bad_service(label: &str) -> Value {
    let mut svc = json_from_yaml(
        &Service::new(NAMESPACE, BAD)
            .cluster_ip("10.96.0.20")
            .service_type("LoadBalancer")
            .port("http", Protocol::Tcp, TCP_PORT, TCP_TARGET)
            .external_ip("127.0.0.1")
            .load_balancer_ingress("203.0.113.20")
            .load_balancer_source_range("not-a-cidr")
            .to_yaml(),
    );
    svc["metadata"]["uid"] = json!(BAD_UID);
    svc["metadata"]["labels"] = json!({ "version": label });
    if let Some(ports) = svc["spec"]["ports"].as_array_mut() {
        ports.push(json!({ "name": "sctp", "protocol": "SCTP", "port": 9999, "targetPort": 9999 }));
    }
    svc
}

/// Events regarding `bad`, counted by reason.
fn bad_events(api: &FakeApiServer) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for e in api.events() {
        if e.pointer("/regarding/name").and_then(Value::as_str) == Some(BAD) {
            let reason = e["reason"].as_str().unwrap_or_default().to_owned();
            out.entry(reason).or_default().push(e);
        }
    }
    out
}

const REASONS: [&str; 3] = [
    "ExternalIPRefused",
    "InvalidLoadBalancerSourceRange",
    "UnsupportedProtocol",
];

#[test]
fn a_service_the_proxy_cannot_fully_serve_gets_one_event_per_reason() {
    let mut f = Fixture::new(Mode::Ebpf);
    let api = FakeApiServer::start().expect("starting the fake API server in the sandbox");
    api.apply(json_from_yaml(
        &Node::new(NODE).internal_ip("192.168.96.1").to_yaml(),
    ));
    api.apply_yaml(&service(WEB, &[WEB_VIP4], TCP_PORT, UDP_PORT));
    api.apply_yaml(&slice(
        WEB,
        &slice_name(WEB, AddressType::IPv4),
        AddressType::IPv4,
        &BACKENDS_V4,
    ));
    api.apply(bad_service("1"));
    let kubeconfig = api
        .write_kubeconfig(f.sandbox.dir())
        .expect("writing the kubeconfig");
    let source = [std::ffi::OsStr::new("--kubeconfig"), kubeconfig.as_os_str()];
    let mut extra = vec!["--node-name", NODE];
    extra.extend_from_slice(&f.mode.args());
    f.proxy = Some(
        ProxyProcess::start_with_source(&proxy_bin(), &f.sandbox, &source, &extra)
            .unwrap_or_else(|e| panic!("starting the proxy: {e}")),
    );
    f.wait_ready();

    f.wait_for(STARTUP, "an Event per reason on Service bad", || {
        let got = bad_events(&api);
        REASONS.iter().all(|r| got.contains_key(*r))
    });
    let got = bad_events(&api);
    for reason in REASONS {
        let e = &got[reason][0];
        for (field, want) in [
            ("/apiVersion", "events.k8s.io/v1"),
            ("/type", "Warning"),
            ("/metadata/namespace", NAMESPACE),
            ("/regarding/kind", "Service"),
            ("/regarding/namespace", NAMESPACE),
            ("/regarding/uid", BAD_UID),
            ("/reportingController", "ebpf-proxy"),
            ("/reportingInstance", "ebpf-proxy-node-1"),
        ] {
            assert_eq!(
                e.pointer(field).and_then(Value::as_str),
                Some(want),
                "{field} of {e:#}"
            );
        }
        let note = e["note"].as_str().unwrap_or_default();
        assert!(note.contains(". "), "the note says what to do: {note}");
    }
    assert!(
        got["ExternalIPRefused"][0]["note"]
            .as_str()
            .is_some_and(|n| n.contains("127.0.0.1:80/TCP") && n.contains("Remove this address")),
        "{:#}",
        got["ExternalIPRefused"][0]
    );

    // New versions of the Service: synced and converted again, no new Events.
    api.apply(bad_service("2"));
    api.apply(bad_service("3"));
    std::thread::sleep(Duration::from_secs(1));
    f.wait_ready();
    let again = bad_events(&api);
    for reason in REASONS {
        assert_eq!(
            again[reason].len(),
            1,
            "one {reason} Event: {:#?}",
            again[reason]
        );
    }
    // The good Service has none.
    assert!(
        api.events()
            .iter()
            .all(|e| e.pointer("/regarding/name").and_then(Value::as_str) != Some(WEB)),
        "no Event on web"
    );
}

/// The service maps sized for exactly `web` (as in `capacity.rs`): a second
/// Service does not fit, and whichever is left out gets a `NoRoomInMaps`
/// Event saying it is served from userspace and what to raise.
#[test]
fn a_frontend_with_no_room_in_the_maps_gets_an_event() {
    let mut f = Fixture::new(Mode::Ebpf);
    let api = FakeApiServer::start().expect("starting the fake API server in the sandbox");
    api.apply(json_from_yaml(
        &Node::new(NODE).internal_ip("192.168.96.1").to_yaml(),
    ));
    api.apply_yaml(&service(WEB, &[WEB_VIP4], TCP_PORT, UDP_PORT));
    api.apply_yaml(&slice(
        WEB,
        &slice_name(WEB, AddressType::IPv4),
        AddressType::IPv4,
        &BACKENDS_V4,
    ));
    api.apply_yaml(&service("big", &["10.96.0.30"], TCP_PORT, UDP_PORT));
    let kubeconfig = api
        .write_kubeconfig(f.sandbox.dir())
        .expect("writing the kubeconfig");
    let source = [std::ffi::OsStr::new("--kubeconfig"), kubeconfig.as_os_str()];
    let mut extra = vec!["--node-name", NODE, "--service-map-entries", "8"];
    extra.extend_from_slice(&f.mode.args());
    f.proxy = Some(
        ProxyProcess::start_with_source(&proxy_bin(), &f.sandbox, &source, &extra)
            .unwrap_or_else(|e| panic!("starting the proxy: {e}")),
    );
    f.wait_ready();
    let no_room = || -> Vec<Value> {
        api.events()
            .into_iter()
            .filter(|e| e["reason"] == "NoRoomInMaps")
            .collect()
    };
    f.wait_for(STARTUP, "a NoRoomInMaps Event", || !no_room().is_empty());
    let e = &no_room()[0];
    assert_eq!(e["type"], "Warning", "{e:#}");
    assert_eq!(
        e.pointer("/regarding/kind").and_then(Value::as_str),
        Some("Service"),
        "{e:#}"
    );
    let note = e["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("served from the userspace path") && note.contains("--service-map-entries"),
        "{note}"
    );
}
