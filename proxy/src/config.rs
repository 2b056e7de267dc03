//! Defaults for every path and interval, in one place. Tests and operators
//! override them through flags or the configuration file ([`file`]), never by
//! editing constants. Also the two value types the flags share with the file:
//! [`BindAddress`] and durations ([`parse_duration`]).
//!
//! Must not: import anything of this crate but itself (every layer reads it).

pub mod file;
pub mod kube_proxy;
pub mod map_entries;

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

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
/// How many frontends beyond the eBPF maps' capacity the userspace path
/// serves at most: enough for a map that is a little short, few enough that
/// their listeners and connections stay well inside the open-files limit.
pub const DEFAULT_USERSPACE_MAX_FRONTENDS: usize = 4096;

/// Where `/healthz` and `/livez` are served (kube-proxy's default).
pub const DEFAULT_HEALTHZ_BIND_ADDRESS: &str = "0.0.0.0:10256";
pub const DEFAULT_HEALTHZ_PORT: u16 = 10256;

/// How long a queued change may wait to be programmed before the health
/// checks fail: kube-proxy's 2 × its default 30 s sync period.
pub const DEFAULT_HEALTHZ_TIMEOUT: &str = "60s";
/// `--initial-list-timeout`: how long a streaming list may stall.
pub const DEFAULT_INITIAL_LIST_TIMEOUT: &str = "30s";

/// Every HTTP server of the daemon (metrics, health, health-check node
/// ports): how long a client may take to send a request's headers (probes
/// send theirs at once; kubelet's probes time out after 1 s by default).
pub const HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Every HTTP server of the daemon: connections served at once by one
/// server; a new one beyond that closes the oldest (`http_server`).
pub const HTTP_MAX_CONNECTIONS: usize = 4096;

/// How long a connection to a deleted endpoint may go on: the userspace path
/// closes it then, the tc path deletes the endpoint's backend entry then.
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

/// A listen address flag: `IP:port`, `[IPv6]:port`, a bare IP (the default
/// port), or empty to turn the server off (as kube-proxy's flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindAddress(pub(crate) Option<SocketAddr>);

impl BindAddress {
    pub fn parse(s: &str, default_port: u16) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Self(None));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Self(Some(addr)));
        }
        match s.parse::<IpAddr>() {
            Ok(ip) => Ok(Self(Some(SocketAddr::new(ip, default_port)))),
            Err(_) => Err(format!(
                "{s:?} is not IP:port, [IPv6]:port, an IP, or empty (off)"
            )),
        }
    }

    pub fn addr(self) -> Option<SocketAddr> {
        self.0
    }
}

impl fmt::Display for BindAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("off"),
        }
    }
}

/// Parses a duration such as `60s`, `1m`, `500ms` or `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 60s, 1m or 500ms"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use super::*;

    #[test]
    fn bind_addresses_parse_like_kube_proxys_flags() {
        let p = |s| BindAddress::parse(s, 10249).map(BindAddress::addr);
        assert_eq!(
            p("127.0.0.1:9000"),
            Ok(Some("127.0.0.1:9000".parse().unwrap()))
        );
        assert_eq!(p("[::1]:9000"), Ok(Some("[::1]:9000".parse().unwrap())));
        assert_eq!(p("0.0.0.0"), Ok(Some("0.0.0.0:10249".parse().unwrap())));
        assert_eq!(p(""), Ok(None));
        assert!(p("localhost:80").is_err());
    }

    /// reliability.md item 17: metrics (which name every Service) listen on
    /// loopback unless the operator says otherwise, as kube-proxy's do.
    #[test]
    fn metrics_listen_on_loopback_by_default() {
        let addr = BindAddress::parse(DEFAULT_METRICS_BIND_ADDRESS, DEFAULT_METRICS_PORT)
            .unwrap()
            .addr()
            .unwrap();
        assert!(addr.ip().is_loopback(), "{addr}");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("s").is_err());
    }
}
