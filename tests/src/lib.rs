//! The sandbox kit: everything the integration tests, the demo and the benchmarks
//! need to run the proxy against real sockets without touching the host.
//!
//! - [`Sandbox`] owns a network namespace (with a dead-end route for the service
//!   ranges), a child cgroup v2 and a private bpffs; [`Sandbox::enter`] moves the
//!   process into the cgroup and the calling thread into the namespace.
//! - [`TcpBackend`] and [`UdpBackend`] answer each request with their name and the
//!   peer they saw; the client functions ([`tcp_request`], [`udp_unconnected_request`],
//!   …) parse that into a [`Reply`].
//! - [`ProxyProcess`] runs the `proxy` binary inside the sandbox, optionally
//!   confined as a container runtime would ([`Confinement`]).
//! - [`northsouth::Topology`] builds a two-node world around a sandbox (an
//!   external client, a LAN, pods on both nodes) for the per-packet path.
//! - [`pod::PodNetns`] is a pod's own namespace next to the sandbox's, and
//!   [`pod::PodUdpClient`] a client process in it (`pxt-udp-client`).
//! - [`Mode`] and [`both_modes!`] run one scenario against each dataplane mode
//!   (eBPF socket hooks, userspace proxies).
//! - [`tc_world::TcWorld`] loads the tc programs for `BPF_PROG_TEST_RUN`
//!   (the packet tests and the packet fuzzer).
//! - [`manifest`] writes realistic Kubernetes YAML, atomically.
//! - [`FakeApiServer`] serves those objects over the Kubernetes list/watch
//!   protocol, for the Kubernetes source's tests.
//! - [`soak`] judges the soak (`cargo xtask soak`): its samples, traffic and
//!   pass rule; `pxt-load` is its load generator.
//!
//! Must not: send anything outside the sandbox's namespace (see the network safety
//! rules in environment.md), or leave a namespace, cgroup or mount behind, even
//! when a test panics or is killed (a [`sweep`] at the start of each run removes
//! leftovers of dead processes).
//!
//! Tests that enter a sandbox must each run in their own process (cargo-nextest
//! does that): the cgroup is per process. Under plain `cargo test`, `enter()`
//! serialises sandboxes within one process through a global lock, but tests that
//! look at their own cgroup still need `--test-threads=1`.
//!
//! Running (as root): `./x test`, or `cargo build -p proxy` then
//! `cargo nextest run -p proxy-tests`. The integration tests find the proxy
//! through `$PROXY_BIN`, else `target/debug/proxy` (see [`proxy_bin`]); the
//! kit's self-tests (`--test sandbox`) need no proxy.

mod backend;
pub mod checksum;
mod client;
mod cmd;
pub mod container;
mod error;
pub mod fake_apiserver;
pub mod manifest;
mod mode;
pub mod northsouth;
pub mod pod;
mod proxy;
mod sandbox;
pub mod soak;
pub mod tc_world;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

pub use backend::{TcpBackend, UdpBackend};
pub use client::{
    DEFAULT_TIMEOUT, HttpResponse, Reply, TcpSession, http_get, tcp_peer_name, tcp_request,
    tcp_request_timeout, udp_ask, udp_connected_request, udp_connected_request_timeout,
    udp_connected_socket, udp_unconnected_request, udp_unconnected_request_timeout,
};
pub use container::Confinement;
pub use error::Error;
pub use fake_apiserver::FakeApiServer;
pub use mode::Mode;
pub use proxy::ProxyProcess;
pub use sandbox::{
    RESERVED_PORTS, SERVICE_CIDR_V4, SERVICE_CIDR_V6, Sandbox, SweepLock, cgroup2_root, lock_sweep,
    sweep,
};

/// Polls `condition` every 20 ms until it returns true or `timeout` has passed.
/// Returns whether it became true. The last call may run past the deadline by its
/// own duration, so keep each call bounded (the clients' timeouts do that).
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads a sysctl (`net/ipv4/...`, relative to `/proc/sys`) of the calling
/// thread's network namespace in one `read`: a bitmap sysctl such as
/// `ip_local_reserved_ports` answers only at offset 0, and `read_to_string`
/// starts with a short probe read that truncates it.
pub fn read_sysctl(key: &str) -> Result<String, Error> {
    use std::io::Read as _;
    let path = Path::new("/proc/sys").join(key);
    let mut buf = [0u8; 4096];
    let n = std::fs::File::open(&path)
        .and_then(|mut f| f.read(&mut buf))
        .map_err(|e| Error::io("reading a sysctl", path, e))?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_owned())
}

/// The index of the device `name` in the calling thread's network namespace.
///
/// # Panics
/// When there is no such device.
pub fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).expect("a device name");
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert!(index != 0, "no device {name}");
    index
}

/// The `proxy` binary the tests run: `$PROXY_BIN`, else
/// `<workspace>/target/debug/proxy` (or under `$CARGO_TARGET_DIR`).
///
/// # Panics
/// When the binary does not exist, with a message saying how to build it.
pub fn proxy_bin() -> PathBuf {
    let path = match std::env::var_os("PROXY_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                        .join("..")
                        .join("target")
                });
            target.join("debug").join("proxy")
        }
    };
    assert!(
        path.is_file(),
        "proxy binary not found at {}: build it with `cargo build -p proxy` or run `./x test` \
         (or point PROXY_BIN at it)",
        path.display()
    );
    path
}

/// The repository's `examples/` directory (the demo's manifests).
pub fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("examples")
}
