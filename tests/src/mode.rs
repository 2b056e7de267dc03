//! Running one scenario in each dataplane mode: [`Mode`] names the mode (and
//! gives the `proxy run` flags for it), and [`both_modes!`] turns one scenario
//! function into a test per mode, so the same namespaces and assertions cover
//! the eBPF socket hooks and the userspace proxies.
//!
//! ```ignore
//! both_modes! {
//!     /// Doc comments and attributes go on the scenario.
//!     fn tcp_connections_spread_over_all_endpoints(mode) {
//!         let _f = Fixture::with_web(mode);
//!         // …
//!     }
//! }
//! ```
//!
//! expands to a module `tcp_connections_spread_over_all_endpoints` with the
//! tests `ebpf` and `userspace` (nextest names them
//! `tcp_connections_spread_over_all_endpoints::ebpf`, …), each running the body
//! with its mode. A scenario that only makes sense for one mode is a plain
//! `#[test]` that says why in a comment.

use std::fmt;

/// How the proxy under test implements Services (`proxy run --mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The socket hooks: `--mode ebpf` (a load failure fails the test rather
    /// than falling back).
    Ebpf,
    /// The userspace proxies on local VIPs: `--mode userspace`.
    Userspace,
}

impl Mode {
    pub const ALL: [Mode; 2] = [Mode::Ebpf, Mode::Userspace];

    /// The value of `--mode`, which is also what `/healthz`, `/proxyMode` and
    /// the `proxy_mode` metric report.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Ebpf => "ebpf",
            Mode::Userspace => "userspace",
        }
    }

    /// The `proxy run` arguments that select it.
    pub fn args(self) -> [&'static str; 2] {
        ["--mode", self.as_str()]
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Declares each scenario once and a test per [`Mode`]; see the module docs.
#[macro_export]
macro_rules! both_modes {
    () => {};
    (
        $(#[$meta:meta])*
        fn $name:ident($mode:ident) $body:block
        $($rest:tt)*
    ) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports, reason = "the scenario sees what its file imports")]
            use super::*;

            fn scenario($mode: $crate::Mode) $body

            #[test]
            fn ebpf() {
                scenario($crate::Mode::Ebpf)
            }

            #[test]
            fn userspace() {
                scenario($crate::Mode::Userspace)
            }
        }
        $crate::both_modes! { $($rest)* }
    };
}
