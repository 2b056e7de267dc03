//! The built-in source that needs no cluster: a directory of Kubernetes YAML.
//!
//! - `limits`: what one file may cost to parse (size, depth, nodes);
//! - `parse`: one file → domain objects and per-object problems (pure);
//! - `dir`: the directory's current state, with last-good contents per file;
//! - `watch`: inotify plus a periodic rescan, feeding the Index.

pub mod dir;
pub mod limits;
pub mod parse;
pub mod watch;

pub use dir::ManifestDir;
pub use limits::Limits;
