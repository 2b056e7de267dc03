//! The start-up Event, as kube-proxy's "birth cry" (`cmd/kube-proxy/app/server.go`):
//! an `events.k8s.io/v1` Event of type `Normal`, reason `Starting`, action
//! `StartKubeProxy`, regarding this node's Node, sent once the watches are
//! started. Named and filled as client-go's events recorder does: the Node's
//! name and the time in hex nanoseconds, in namespace `default` (a Node has
//! none), `reportingController` the component, `reportingInstance` the
//! component and the node.
//!
//! Best effort, as in client-go: a failure is logged and retried a few times
//! ([`TRIES`], [`RETRY_AFTER`] apart), never fatal.

use std::time::Duration;

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, api::PostParams};
use tokio::sync::watch;

/// Who reports the Event (`reportingController`). Not `kube-proxy`: the
/// Event says which proxy started.
pub const COMPONENT: &str = "ebpf-proxy";

/// client-go's `maxTriesPerEvent` and its wait between tries.
const TRIES: u32 = 12;
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The Event announcing that the proxy started on `node`, at `now`.
pub fn starting(node: &str, now: Timestamp) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{node}.{:x}", now.as_nanosecond())),
            namespace: Some("default".to_owned()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some("Normal".to_owned()),
        reason: Some("Starting".to_owned()),
        action: Some("StartKubeProxy".to_owned()),
        note: Some(format!("Starting {COMPONENT}.")),
        // kube-proxy's NodeRef: the UID is the node's name.
        regarding: Some(ObjectReference {
            kind: Some("Node".to_owned()),
            name: Some(node.to_owned()),
            uid: Some(node.to_owned()),
            ..ObjectReference::default()
        }),
        reporting_controller: Some(COMPONENT.to_owned()),
        reporting_instance: Some(format!("{COMPONENT}-{node}")),
        ..Event::default()
    }
}

/// Sends [`starting`] for `node`, retrying until it is accepted, the tries
/// are spent or `shutdown`.
pub async fn announce(client: kube::Client, node: String, mut shutdown: watch::Receiver<bool>) {
    let event = starting(&node, Timestamp::now());
    let api: Api<Event> = Api::namespaced(client, "default");
    for attempt in 1..=TRIES {
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                tracing::debug!(node = %node, "start-up Event sent");
                return;
            }
            Err(error) => tracing::warn!(
                node = %node,
                attempt,
                error = %error,
                "cannot send the start-up Event (best effort; retried)"
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY_AFTER) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use super::*;

    #[test]
    fn the_event_is_kube_proxys_birth_cry_on_this_node() {
        let now: Timestamp = "2026-12-07T11:00:00.123456789Z".parse().unwrap();
        let json = serde_json::to_value(starting("node-1", now)).unwrap();
        assert_eq!(json["apiVersion"], "events.k8s.io/v1");
        assert_eq!(json["kind"], "Event");
        assert_eq!(json["metadata"]["namespace"], "default");
        assert_eq!(
            json["metadata"]["name"],
            format!("node-1.{:x}", now.as_nanosecond())
        );
        assert_eq!(json["type"], "Normal");
        assert_eq!(json["reason"], "Starting");
        assert_eq!(json["action"], "StartKubeProxy");
        assert_eq!(json["regarding"]["kind"], "Node");
        assert_eq!(json["regarding"]["name"], "node-1");
        assert_eq!(json["reportingController"], "ebpf-proxy");
        assert_eq!(json["reportingInstance"], "ebpf-proxy-node-1");
        assert_eq!(json["eventTime"], "2026-12-07T11:00:00.123456Z");
    }
}
