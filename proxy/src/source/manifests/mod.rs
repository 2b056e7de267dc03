//! The built-in source that needs no cluster: a directory of Kubernetes YAML.
//!
//! - `parse`: one file → domain objects and per-object problems (pure);
//! - `dir`: the directory's current state, with last-good contents per file;
//! - `watch`: inotify plus a periodic rescan, feeding the Index.

pub mod dir;
pub mod parse;
pub mod watch;

pub use dir::ManifestDir;
