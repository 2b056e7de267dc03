//! The service proxy as a library: the binary (`main.rs`) is a thin CLI over it.
//!
//! Data flows sources → [`model`] (pure) → [`plan`] (pure) → [`dataplane`] (aya,
//! driven by [`ebpf_datapath`]), or → [`userspace`] (tokio proxies), both
//! behind the [`datapath`] seam. Every layer reports to [`telemetry`] (a leaf);
//! [`admin`] serves it, [`healthcheck`] serves the health-check node ports.
//! See ARCHITECTURE.md.

pub mod admin;
pub mod cli;
pub mod config;
pub mod datapath;
pub mod dataplane;
pub mod ebpf_datapath;
pub mod error_chain;
pub mod events;
pub mod healthcheck;
pub mod http_server;
pub mod inspect;
pub mod log_budget;
pub mod model;
pub mod nodeport;
pub mod plan;
pub mod query;
pub mod snat_ports;
pub mod source;
pub mod sync;
pub mod telemetry;
pub mod userspace;
