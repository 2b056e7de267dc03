//! The source ports the tc programs SNAT to (`--snat-port-range`).
//!
//! A NodePort flow SNATed to the node's address leaves from `node:port`
//! towards `backend:bport`. If the node's own kernel gives one of its
//! connections to the same `backend:bport` the same local port, both flows
//! share one 5-tuple: the backend's replies to the node's connection match
//! the SNATed flow's conntrack entry and are rewritten towards the external
//! client (a hijacked reply; the node's connection times out). The kernel
//! picks local ports from `net.ipv4.ip_local_port_range` (both families), so
//! the SNAT range must not overlap it. `auto` takes the largest block of
//! 1024–65535 outside the ephemeral range and outside kube-apiserver's
//! default NodePort range (30000–32767, where NodePort listeners' ports
//! live); an explicit range that overlaps the ephemeral one is refused.
//!
//! Pure: the ephemeral range is read by the caller ([`read_ephemeral`]).

use std::{fmt, path::Path, str::FromStr};

/// An inclusive range of ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const fn new(first: u16, last: u16) -> Self {
        Self { first, last }
    }

    /// How many ports (never zero: `first <= last`).
    pub fn ports(self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    pub fn overlaps(self, other: PortRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// What `auto` chooses under Linux's default ephemeral range (32768-60999).
impl Default for PortRange {
    fn default() -> Self {
        Self::new(1024, 29999)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// The ports a SNAT range may use at all (not the privileged ones).
pub const USABLE: PortRange = PortRange::new(1024, 65535);
/// kube-apiserver's default `--service-node-port-range`.
pub const NODE_PORTS: PortRange = PortRange::new(30000, 32767);

/// `--snat-port-range`: `auto` or `FIRST-LAST`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnatPortRangeArg {
    Auto,
    Fixed(PortRange),
}

/// Why a SNAT port range cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnatRangeError {
    #[error("--snat-port-range {0:?}: expected `auto` or FIRST-LAST (for example 1024-29999)")]
    Syntax(String),
    #[error("--snat-port-range {0}: must lie within 1024-65535, first port not above the last")]
    Bounds(PortRange),
    #[error(
        "--snat-port-range {range} overlaps the node's ephemeral ports {ephemeral} \
         (net.ipv4.ip_local_port_range): the node's own connections to a backend could take a \
         SNATed flow's port, and their replies would be hijacked; choose a range outside it \
         (or `auto`)"
    )]
    OverlapsEphemeral {
        range: PortRange,
        ephemeral: PortRange,
    },
    #[error(
        "no SNAT port range is left outside the ephemeral ports {0} \
         (net.ipv4.ip_local_port_range) and the NodePort range 30000-32767: set \
         --snat-port-range, or narrow the ephemeral range"
    )]
    NothingLeft(PortRange),
    #[error("reading {path}: {reason}")]
    Read { path: String, reason: String },
}

impl FromStr for SnatPortRangeArg {
    type Err = SnatRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| SnatRangeError::Syntax(s.to_owned()))?;
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| SnatRangeError::Syntax(s.to_owned()))
        };
        let range = PortRange::new(port(a)?, port(b)?);
        if range.first < USABLE.first || range.first > range.last {
            return Err(SnatRangeError::Bounds(range));
        }
        Ok(Self::Fixed(range))
    }
}

/// The range to SNAT to, given the node's ephemeral range.
pub fn choose(arg: SnatPortRangeArg, ephemeral: PortRange) -> Result<PortRange, SnatRangeError> {
    match arg {
        SnatPortRangeArg::Fixed(range) if range.overlaps(ephemeral) => {
            Err(SnatRangeError::OverlapsEphemeral { range, ephemeral })
        }
        SnatPortRangeArg::Fixed(range) => Ok(range),
        SnatPortRangeArg::Auto => {
            largest_free(&[ephemeral, NODE_PORTS]).ok_or(SnatRangeError::NothingLeft(ephemeral))
        }
    }
}

/// The largest block of [`USABLE`] outside every range of `taken` (the
/// lower one on a tie).
fn largest_free(taken: &[PortRange]) -> Option<PortRange> {
    let mut taken: Vec<PortRange> = taken.to_vec();
    taken.sort_by_key(|r| r.first);
    let mut best: Option<PortRange> = None;
    let mut next = u32::from(USABLE.first);
    let mut consider = |first: u32, last: u32| {
        if first <= last {
            let block = PortRange::new(first as u16, last as u16);
            if best.is_none_or(|b| block.ports() > b.ports()) {
                best = Some(block);
            }
        }
    };
    for r in taken {
        if u32::from(r.first) > next {
            consider(next, u32::from(r.first) - 1);
        }
        next = next.max(u32::from(r.last) + 1);
    }
    consider(next, u32::from(USABLE.last));
    best
}

/// Parses `ip_local_port_range` ("32768\t60999\n").
pub fn parse_ephemeral(text: &str) -> Option<PortRange> {
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    let (Some(Ok(first)), Some(Ok(last))) = (it.next(), it.next()) else {
        return None;
    };
    (first <= last).then_some(PortRange::new(first, last))
}

/// The ephemeral range of the calling thread's network namespace
/// (`/proc/sys/net/ipv4/ip_local_port_range`; it applies to IPv6 too).
pub fn read_ephemeral(path: &Path) -> Result<PortRange, SnatRangeError> {
    let read_error = |reason: String| SnatRangeError::Read {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| read_error(e.to_string()))?;
    parse_ephemeral(&text).ok_or_else(|| read_error(format!("unexpected contents {text:?}")))
}

/// `net.ipv4.ip_local_reserved_ports` with each of `ranges` added that none
/// of its entries (`PORT` or `FIRST-LAST`, comma-separated) covers yet, or
/// `None` when every one is covered.
///
/// An ephemeral range overlapping the NodePort range lets the kernel give a
/// node's own connection (a ClusterIP client on the node, through the socket
/// hooks) a NodePort as its local port: the backend's replies to
/// `node:nodePort` then look like a new flow to that NodePort to the tc
/// programs, which translate them to the NodePort's backend, and the
/// connection times out. kube-proxy never sees this (netfilter's NAT rules
/// only see a connection's first packet); Cilium reserves the NodePort range
/// for the same reason (`--enable-auto-protect-node-port-range`). The
/// daemon's own listening ports (`/metrics`, `/healthz`) are reserved too:
/// a long-lived connection of the node's holding one as its local port kept
/// a restarted daemon from binding it.
pub fn reserved_with(current: &str, ranges: &[PortRange]) -> Option<String> {
    let current = current.trim();
    let entries: Vec<PortRange> = current
        .split(',')
        .filter_map(|entry| {
            let entry = entry.trim();
            let (a, b) = entry.split_once('-').unwrap_or((entry, entry));
            Some(PortRange::new(
                a.trim().parse().ok()?,
                b.trim().parse().ok()?,
            ))
        })
        .collect();
    let missing: Vec<String> = ranges
        .iter()
        .filter(|r| {
            !entries
                .iter()
                .any(|e| e.first <= r.first && r.last <= e.last)
        })
        .map(|r| {
            if r.first == r.last {
                r.first.to_string()
            } else {
                r.to_string()
            }
        })
        .collect();
    if missing.is_empty() {
        return None;
    }
    let missing = missing.join(",");
    Some(if current.is_empty() {
        missing
    } else {
        format!("{current},{missing}")
    })
}

/// Adds `ranges` to the calling thread's network namespace's
/// `ip_local_reserved_ports` at `path` (see [`reserved_with`]); what it
/// wrote, if anything.
pub fn reserve_ports(path: &Path, ranges: &[PortRange]) -> Result<Option<String>, SnatRangeError> {
    let io_error = |e: std::io::Error| SnatRangeError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let current = std::fs::read_to_string(path).map_err(io_error)?;
    match reserved_with(&current, ranges) {
        Some(list) => {
            std::fs::write(path, &list).map_err(io_error)?;
            Ok(Some(list))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_added_to_the_reserved_ports_once() {
        let node_ports = [NODE_PORTS];
        assert_eq!(
            reserved_with("\n", &node_ports).as_deref(),
            Some("30000-32767")
        );
        assert_eq!(
            reserved_with("8080,40000-40010\n", &node_ports).as_deref(),
            Some("8080,40000-40010,30000-32767")
        );
        // Partly reserved: added whole (the kernel merges overlaps).
        assert_eq!(
            reserved_with("30000-30100", &node_ports).as_deref(),
            Some("30000-30100,30000-32767")
        );
        assert_eq!(reserved_with("30000-32767\n", &node_ports), None);
        assert_eq!(reserved_with("1024,29000-33000", &node_ports), None);
        // Single ports, one of them already there.
        let admin = [NODE_PORTS, r(10249, 10249), r(10256, 10256)];
        assert_eq!(
            reserved_with("10249", &admin).as_deref(),
            Some("10249,30000-32767,10256")
        );
    }

    fn r(a: u16, b: u16) -> PortRange {
        PortRange::new(a, b)
    }

    #[test]
    fn auto_takes_the_largest_block_outside_the_ephemeral_and_node_port_ranges() {
        // Linux's default ephemeral range.
        assert_eq!(
            choose(SnatPortRangeArg::Auto, r(32768, 60999)),
            Ok(r(1024, 29999))
        );
        // An ephemeral range low down leaves the top.
        assert_eq!(
            choose(SnatPortRangeArg::Auto, r(1024, 20000)),
            Ok(r(32768, 65535))
        );
        // Covering the NodePort range: the gaps are computed on the union.
        assert_eq!(
            choose(SnatPortRangeArg::Auto, r(20000, 40000)),
            Ok(r(40001, 65535))
        );
        assert_eq!(
            choose(SnatPortRangeArg::Auto, r(31000, 45000)),
            Ok(r(1024, 29999))
        );
        // The top block when it is the larger one.
        assert_eq!(
            choose(SnatPortRangeArg::Auto, r(1024, 16383)),
            Ok(r(32768, 65535))
        );
    }

    #[test]
    fn auto_fails_when_nothing_is_left() {
        assert_eq!(
            choose(SnatPortRangeArg::Auto, r(1024, 65535)),
            Err(SnatRangeError::NothingLeft(r(1024, 65535)))
        );
    }

    #[test]
    fn a_fixed_range_overlapping_the_ephemeral_one_is_refused() {
        let fixed = SnatPortRangeArg::Fixed(r(32768, 60999));
        let err = choose(fixed, r(32768, 60999)).expect_err("an overlap");
        assert!(
            err.to_string()
                .contains("overlaps the node's ephemeral ports 32768-60999"),
            "{err}"
        );
        assert_eq!(
            choose(SnatPortRangeArg::Fixed(r(61000, 65535)), r(32768, 60999)),
            Ok(r(61000, 65535))
        );
        // Touching at one port is an overlap.
        assert!(choose(SnatPortRangeArg::Fixed(r(20000, 32768)), r(32768, 60999)).is_err());
    }

    #[test]
    fn the_flag_parses_auto_and_ranges_and_refuses_the_rest() {
        assert_eq!("auto".parse(), Ok(SnatPortRangeArg::Auto));
        assert_eq!(
            "1024-29999".parse(),
            Ok(SnatPortRangeArg::Fixed(r(1024, 29999)))
        );
        assert!(matches!(
            "80-1000".parse::<SnatPortRangeArg>(),
            Err(SnatRangeError::Bounds(_))
        ));
        assert!(matches!(
            "5000-4000".parse::<SnatPortRangeArg>(),
            Err(SnatRangeError::Bounds(_))
        ));
        assert!(matches!(
            "5000".parse::<SnatPortRangeArg>(),
            Err(SnatRangeError::Syntax(_))
        ));
        assert!(matches!(
            "a-b".parse::<SnatPortRangeArg>(),
            Err(SnatRangeError::Syntax(_))
        ));
    }

    #[test]
    fn the_sysctl_text_parses() {
        assert_eq!(parse_ephemeral("32768\t60999\n"), Some(r(32768, 60999)));
        assert_eq!(parse_ephemeral("garbage"), None);
        assert_eq!(parse_ephemeral("6000 5000"), None);
    }
}
