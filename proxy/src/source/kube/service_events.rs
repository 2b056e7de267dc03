//! Publishes the problems found on Services ([`crate::events`]) as
//! `events.k8s.io/v1` Events of type Warning regarding each Service, through
//! kube-rs' [`Recorder`], so `kubectl describe service` shows them. One per
//! (Service, reason) per [`REPEAT_AFTER`] (the [`Gate`]); best effort: a
//! failed Event is logged, never retried.

use std::{collections::HashMap, time::Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::{mpsc, watch};

use super::event::COMPONENT;
use crate::{
    events::{Gate, Message, REPEAT_AFTER},
    model::ObjectRef,
};

/// The Event's `action`: what the proxy was doing.
const ACTION: &str = "ProxyService";

/// Runs until `shutdown` or the sink is dropped.
pub async fn run(
    client: kube::Client,
    node: String,
    mut messages: mpsc::Receiver<Message>,
    mut shutdown: watch::Receiver<bool>,
) {
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: COMPONENT.to_owned(),
            instance: Some(format!("{COMPONENT}-{node}")),
        },
    );
    let mut uids: HashMap<ObjectRef, String> = HashMap::new();
    let mut gate = Gate::new(REPEAT_AFTER);
    loop {
        let message = tokio::select! {
            m = messages.recv() => match m {
                Some(m) => m,
                None => return,
            },
            _ = shutdown.changed() => return,
        };
        match message {
            Message::Seen { service, uid } => {
                uids.insert(service, uid);
            }
            Message::Problem(problem) => {
                // A Service the API never showed us (the manifests source's).
                let Some(uid) = uids.get(&problem.service) else {
                    continue;
                };
                if !gate.admit(&problem, Instant::now()) {
                    continue;
                }
                let regarding = ObjectReference {
                    api_version: Some("v1".to_owned()),
                    kind: Some("Service".to_owned()),
                    namespace: Some(problem.service.namespace.to_string()),
                    name: Some(problem.service.name.to_string()),
                    uid: Some(uid.clone()),
                    ..ObjectReference::default()
                };
                let event = Event {
                    type_: EventType::Warning,
                    reason: problem.reason.as_str().to_owned(),
                    note: Some(problem.note.clone()),
                    action: ACTION.to_owned(),
                    secondary: None,
                };
                match recorder.publish(&event, &regarding).await {
                    Ok(()) => tracing::debug!(
                        service = %problem.service, reason = problem.reason.as_str(),
                        "Service Event sent"
                    ),
                    Err(error) => tracing::warn!(
                        service = %problem.service, reason = problem.reason.as_str(),
                        error = %error, "cannot send a Service Event (best effort)"
                    ),
                }
            }
        }
    }
}
