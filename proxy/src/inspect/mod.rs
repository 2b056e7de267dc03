//! `proxy inspect`: read-only views of what the dataplane holds, for people
//! (aligned tables) and scripts (`--output json`, shape documented in the
//! README). It works whether or not the daemon runs: it opens the pins under
//! the pin path, never the daemon's handles.
//!
//! - [`pins`] reads the pinned links, and the pinned maps through the one
//!   reader of them (`dataplane::reader`): the only part that does I/O;
//! - [`compose`] builds each subcommand's view from what was read (pure);
//! - [`view`] holds the views' types (the JSON shape), [`filter`] the filters;
//! - [`render`] turns a view into a table or JSON (pure);
//! - [`maglev`] is `inspect maglev`'s view, builder and table.
//!
//! Must not: write to a map, or create, move or remove a pin. The writer
//! (`dataplane::writer`) is the only place map contents change.

pub mod compose;
pub mod diff;
pub mod filter;
pub mod maglev;
pub mod pins;
pub mod render;
pub mod view;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use filter::{Filter, ServiceSelector};
pub use pins::Pins;
pub use render::Output;

use crate::dataplane::reader::PinError;

fn other_layouts(found: &[u32]) -> String {
    if found.is_empty() {
        return String::new();
    }
    let list: Vec<String> = found.iter().map(|v| format!("v{v}")).collect();
    format!(
        "; pins of another layout version are there ({}): this inspect reads layout v{}, \
         use the proxy binary that wrote them",
        list.join(", "),
        proxy_common::LAYOUT_VERSION
    )
}

/// Why an inspection failed. Each variant names the pin path or map involved.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(
        "no pinned maps at {dir}: is the proxy running, or has it run on this node? \
         (pass --pin-path if it used another pin path){other}",
        dir = dir.display(),
        other = other_layouts(found)
    )]
    NoPins {
        dir: PathBuf,
        /// Layout versions found under the pin path instead (an older or
        /// newer daemon's pins), for the message.
        found: Vec<u32>,
    },
    #[error(
        "{dir} is not on a BPF filesystem, so it holds no pinned maps: pass the \
         daemon's --pin-path (a directory on bpffs)",
        dir = dir.display()
    )]
    NotBpffs { dir: PathBuf },
    /// The pinned maps or their directory could not be read (the one
    /// reader's error, word for word).
    #[error(transparent)]
    Pin(Box<PinError>),
    #[error("reading CLOCK_MONOTONIC (the clock the kernel stamps affinity entries with)")]
    Clock(#[source] nix::Error),
    #[error("encoding JSON")]
    Json(#[source] serde_json::Error),
}

// Boxed: the reader's error is large, and inspect returns it on every path.
impl From<PinError> for InspectError {
    fn from(error: PinError) -> Self {
        Self::Pin(Box::new(error))
    }
}
