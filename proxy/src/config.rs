//! Defaults for every path and interval, in one place. Tests and operators
//! override them through flags, never by editing constants.

use std::time::Duration;

/// Where maps and links are pinned.
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/proxy";

/// Minimum time between two syncs: bursts of changes within it are coalesced.
pub const DEFAULT_MIN_SYNC_INTERVAL: Duration = Duration::from_millis(20);

/// How often the maps are re-read and compared with the desired state, to
/// repair drift (entries edited by hand, writes whose outcome was lost).
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(60);

/// Retry backoff after a failed write: first delay and ceiling.
pub const RETRY_BACKOFF_START: Duration = Duration::from_millis(100);
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// How long the manifest watcher waits for a burst of file events to settle.
pub const MANIFEST_DEBOUNCE: Duration = Duration::from_millis(30);

/// Safety-net rescan of the manifest directory, in case an inotify event is lost.
pub const MANIFEST_RESCAN_INTERVAL: Duration = Duration::from_secs(5);
