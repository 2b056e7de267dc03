//! Sources of Services and EndpointSlices. Each turns its input into calls on the
//! [`crate::model::Index`]; everything downstream is shared.

pub mod manifests;
