//! Defaults for every path and interval, in one place. Tests and operators
//! override them through flags or the configuration file ([`file`]), never by
//! editing constants.

pub mod file;

use std::time::Duration;

/// Where maps and links are pinned.
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/proxy";
/// The environment variable that sets `--pin-path` (`run`, `cleanup`, `inspect`).
pub const PIN_PATH_ENV: &str = "PROXY_PIN_PATH";

/// Minimum time between two syncs: bursts of changes within it are coalesced.
pub const DEFAULT_MIN_SYNC_INTERVAL: Duration = Duration::from_millis(20);

/// How often the maps are re-read and compared with the desired state, to
/// repair drift (entries edited by hand, writes whose outcome was lost).
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(60);

/// The hooks are attached (or taken over) after the first sync that wrote
/// everything; if syncs keep failing, after the first sync this long after the
/// first one, so a persistent failure of one Service does not keep the node
/// on old programs.
pub const ATTACH_GRACE: Duration = Duration::from_secs(10);

/// Retry backoff after a failed write: first delay and ceiling.
pub const RETRY_BACKOFF_START: Duration = Duration::from_millis(100);
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// How long the manifest watcher waits for a burst of file events to settle.
pub const MANIFEST_DEBOUNCE: Duration = Duration::from_millis(30);

/// Safety-net rescan of the manifest directory, in case an inotify event is lost.
pub const MANIFEST_RESCAN_INTERVAL: Duration = Duration::from_secs(5);

/// Where Prometheus metrics are served (kube-proxy's default).
pub const DEFAULT_METRICS_BIND_ADDRESS: &str = "127.0.0.1:10249";
pub const DEFAULT_METRICS_PORT: u16 = 10249;

/// Where `/healthz` and `/livez` are served (kube-proxy's default).
pub const DEFAULT_HEALTHZ_BIND_ADDRESS: &str = "0.0.0.0:10256";
pub const DEFAULT_HEALTHZ_PORT: u16 = 10256;

/// How long a queued change may wait to be programmed before the health
/// checks fail: kube-proxy's 2 × its default 30 s sync period.
pub const DEFAULT_HEALTHZ_TIMEOUT: &str = "60s";

/// The LRU maps have no userspace mirror; counting their entries walks every
/// key, so a scrape does it at most this often.
pub const MAP_COUNT_INTERVAL: Duration = Duration::from_secs(30);

/// The userspace path: how long a connection to a backend that left the
/// Service may go on before it is closed.
pub const DEFAULT_BACKEND_GRACE: Duration = Duration::from_secs(30);
pub const DEFAULT_BACKEND_GRACE_TEXT: &str = "30s";

/// The userspace path: the TCP congestion control of its node-side
/// connections (`userspace::congestion`).
pub const DEFAULT_USERSPACE_CONGESTION_CONTROL: &str = "cubic";

/// The userspace path: a UDP session idle this long ends.
pub const DEFAULT_UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_UDP_IDLE_TIMEOUT_TEXT: &str = "30s";

/// The userspace path: one timeout per backend tried by a new connection, in
/// order (kube-proxy's old userspace proxier used the same escalation).
pub const CONNECT_TIMEOUTS: [Duration; 3] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
];

/// The routing protocol number (`proto` in `ip route`) on the `local` routes
/// that make VIPs local in userspace mode. Unassigned in iproute2's
/// `rt_protos`; it is how a restarted proxy recognises its own routes.
pub const ROUTE_PROTOCOL: u8 = 158;
