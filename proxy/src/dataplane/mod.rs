//! Everything that touches the kernel: the conntrack GC (`ct_gc`), finding cgroup2 and bpffs, the
//! versioned pin layout (`pins`) and its one-daemon lock (`pin_lock`), loading and attaching the programs
//! (`loader`, with what it reports in `hooks`), the map seam (`maps`) with its
//! aya implementation (`kernel`), the map layouts ⇄ our types (`layout`), the
//! one read-only reader of the service, backend, rev-NAT and name maps
//! (`reader`, for the writer's mirror and `proxy inspect`), the `writer` that
//! executes plans (with `maglev`'s tables), the `sock_egress` source check attached only while a
//! Service has `loadBalancerSourceRanges` (`source_check`), and the tc programs' devices (`devices`: which ones; `tc`:
//! links, the `TC_TAIL` prog array and the `DEVICES`/`NODE_CFG`/`LOCAL_*` maps; `xdp`: the XDP fast path on the same devices (`--xdp`); `tail_calls`: reading
//! `TC_TAIL` back; `local_traffic`: the
//! local-traffic detector), and ending connected UDP sockets aimed at gone
//! backends in every network namespace (`netns`: finding and entering them;
//! `sockets`: sock_diag; `sock_frontends`: which frontend a socket went
//! through, and whether it must end; `udp_flows`: the three together).

pub mod batch;
pub mod bpffs;
pub mod cgroup;
pub mod ct_gc;
pub mod devices;
pub mod hooks;
pub mod kernel;
pub mod layout;
pub mod link_info;
pub mod loader;
pub mod local_traffic;
pub mod maglev;
pub mod maps;
pub mod migrate;
pub mod netns;
pub mod pin_lock;
pub mod pins;
pub mod reader;
pub mod sock_frontends;
pub mod sockets;
pub mod source_check;
pub mod tail_calls;
pub mod tc;
pub mod udp_flows;
pub mod usage;
pub mod writer;
pub mod xdp;

#[cfg(test)]
pub mod fake;

pub use maps::{BatchError, DataplaneMaps, MapError};
pub use writer::{ApplyReport, FrontendOutcome, Writer};
