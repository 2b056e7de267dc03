//! The pure core: an Index of Services and EndpointSlices (our own types), and the
//! function from the Index to desired state. No I/O, no aya, no kube client.
#![forbid(unsafe_code)]

pub mod convert;
pub mod desired;
pub mod explain;
pub mod incremental;
pub mod index;
pub mod names;
pub mod selection;
pub mod small_set;
#[cfg(test)]
pub(crate) mod testkit;
pub mod types;

pub use index::{Index, PendingChanges};
pub use types::*;
