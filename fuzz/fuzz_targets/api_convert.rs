//! The conversion of API objects into the model, as the Kubernetes source
//! receives them: JSON (one object, or a `kind: List` of them) decoded into
//! `k8s-openapi` types, then `model::convert::{service, endpoint_slice,
//! node}`, each result applied to an Index one at a time.
//!
//! Invariants: no panic; every kept object satisfies the model's invariants;
//! after each change the incremental desired state equals a full recompute
//! and satisfies the desired state's invariants.

#![no_main]

use k8s_openapi::api::{core::v1 as core, discovery::v1 as discovery};
use libfuzzer_sys::fuzz_target;
use proxy::model::convert;
use proxy_fuzz::Model;
use serde_json::Value;

/// Objects per input; more only slows the fuzzer down.
const MAX_OBJECTS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let objects = match value.get("items").and_then(Value::as_array) {
        Some(items) => items.clone(),
        None => vec![value],
    };
    let mut model = Model::default();
    for object in objects.into_iter().take(MAX_OBJECTS) {
        match object.get("kind").and_then(Value::as_str) {
            Some("Service") => {
                let Ok(svc) = serde_json::from_value::<core::Service>(object) else {
                    continue;
                };
                if let Ok(converted) = convert::service(&svc) {
                    model.service(converted);
                }
            }
            Some("EndpointSlice") => {
                let Ok(slice) = serde_json::from_value::<discovery::EndpointSlice>(object) else {
                    continue;
                };
                if let Ok(converted) = convert::endpoint_slice(&slice) {
                    model.slice(converted);
                }
            }
            Some("Node") => {
                let Ok(node) = serde_json::from_value::<core::Node>(object) else {
                    continue;
                };
                let mut info = convert::node(&node);
                // The daemon's own settings, kept across Node updates.
                info.nodeport_addresses = info.addresses.clone();
                model.index.set_node(info);
            }
            _ => continue,
        }
        model.check();
    }
});
