//! Everything that touches the kernel: finding cgroup2 and bpffs, loading and
//! attaching the programs (`loader`), the map seam (`maps`) with its aya
//! implementation (`kernel`), and the `writer` that executes plans.

pub mod bpffs;
pub mod cgroup;
pub mod kernel;
pub mod loader;
pub mod maps;
pub mod writer;

#[cfg(test)]
pub mod fake;

pub use maps::{DataplaneMaps, MapError};
pub use writer::{ApplyReport, Writer};
