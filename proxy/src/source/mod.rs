//! Sources of Services and EndpointSlices. Each turns its input into calls on the
//! [`crate::model::Index`]; everything downstream is shared.
//!
//! - `manifests`: a directory of Kubernetes YAML;
//! - `kube`: the Kubernetes API (list and watch);
//! - `node_addresses`: the node's own addresses, for NodePorts;
//! - `gate`: holds the sync loop until every source in use has its first
//!   complete state.

pub mod gate;
pub mod kube;
pub mod manifests;
pub mod node_addresses;
