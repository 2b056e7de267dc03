//! This node's `spec.podCIDRs`, for `--detect-local-mode=NodeCIDR`: read once
//! at start, waiting (as kube-proxy's `waitForPodCIDR`) until the Node has
//! them and is not being deleted. Later changes are not followed: kube-proxy
//! exits when they change, and so does a restart of this daemon pick them up.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1 as core;
use kube::Api;

use crate::nodeport::Cidr;

/// How often the Node is read while it has no pod CIDRs.
const POLL: Duration = Duration::from_secs(1);

/// Waiting for the pod CIDRs failed.
#[derive(Debug, thiserror::Error)]
pub enum PodCidrError {
    #[error(
        "Node {node} got no spec.podCIDRs within {timeout:?} (needed by --detect-local-mode=NodeCIDR); last problem: {last}"
    )]
    Timeout {
        node: String,
        timeout: Duration,
        last: String,
    },
}

/// Reads the Node `node` until it has pod CIDRs (and no deletion timestamp),
/// for at most `timeout`. CIDRs that do not parse are logged and skipped.
pub async fn wait_for_pod_cidrs(
    client: kube::Client,
    node: &str,
    timeout: Duration,
) -> Result<Vec<Cidr>, PodCidrError> {
    let api: Api<core::Node> = Api::all(client);
    let start = Instant::now();
    let mut logged = false;
    loop {
        let last = match api.get_opt(node).await {
            Ok(Some(found)) => match pod_cidrs(&found) {
                Ok(cidrs) => return Ok(cidrs),
                Err(why) => why,
            },
            Ok(None) => "the Node does not exist".to_owned(),
            Err(error) => format!("reading the Node: {error}"),
        };
        if start.elapsed() >= timeout {
            return Err(PodCidrError::Timeout {
                node: node.to_owned(),
                timeout,
                last,
            });
        }
        if !logged {
            tracing::info!(node, reason = %last, "waiting for this node's spec.podCIDRs (--detect-local-mode=NodeCIDR)");
            logged = true;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The Node's pod CIDRs, or why it has none to use yet.
fn pod_cidrs(node: &core::Node) -> Result<Vec<Cidr>, String> {
    if node.metadata.deletion_timestamp.is_some() {
        return Err("the Node is being deleted".to_owned());
    }
    let spec = node.spec.as_ref();
    let listed: Vec<String> = spec
        .and_then(|s| s.pod_cidrs.clone())
        .filter(|l| !l.is_empty())
        .or_else(|| spec.and_then(|s| s.pod_cidr.clone()).map(|c| vec![c]))
        .unwrap_or_default();
    let cidrs: Vec<Cidr> = listed
        .iter()
        .filter_map(|c| match c.parse::<Cidr>() {
            Ok(cidr) => Some(cidr),
            Err(error) => {
                tracing::warn!(cidr = %c, error = %error, "a spec.podCIDRs entry of this Node is not a CIDR: skipped");
                None
            }
        })
        .collect();
    if cidrs.is_empty() {
        Err("the Node has no spec.podCIDRs".to_owned())
    } else {
        Ok(cidrs)
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use super::*;

    fn node(json: serde_json::Value) -> core::Node {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn pod_cidrs_come_from_the_spec_unless_the_node_is_going() {
        let n = node(serde_json::json!({"metadata": {"name": "n1"},
            "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:1::/64", "junk"]}}));
        let shown: Vec<String> = pod_cidrs(&n)
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(shown, ["10.244.1.0/24", "fd00:1::/64"]);
        let old = node(
            serde_json::json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.2.0/24"}}),
        );
        assert_eq!(pod_cidrs(&old).unwrap().len(), 1);
        assert!(
            pod_cidrs(&node(
                serde_json::json!({"metadata": {"name": "n1"}, "spec": {}})
            ))
            .is_err()
        );
        let going = node(
            serde_json::json!({"metadata": {"name": "n1", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"podCIDRs": ["10.244.1.0/24"]}}),
        );
        assert_eq!(pod_cidrs(&going).unwrap_err(), "the Node is being deleted");
    }
}
