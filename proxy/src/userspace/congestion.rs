//! The TCP congestion control of the connections the userspace proxies own
//! on the node side (`--userspace-congestion-control`, default `cubic`):
//! every connection to a backend, and ClusterIP connections, whose clients
//! are on this node. NodePort, ExternalIP and LoadBalancer clients may be far
//! away, so those connections keep the node's default.
//!
//! Why not the node's default there: a proxied connection is two TCP
//! connections in series. With BBR as the default and no `fq` qdisc (the
//! common case on pod interfaces), each leg is paced by a kernel timer, and
//! two paced legs with next to no round-trip time leave the CPUs idle between
//! timer ticks. On the bench (BBR by default), a `cubic` backend leg took bulk
//! throughput through the proxy from 0.7× to above direct-to-backend's.
//!
//! The name is checked once, at start, on a throwaway socket: an algorithm
//! the kernel lacks (or will not let this process use) is reported once and
//! the node's default is kept; one equal to the default needs no system call
//! per connection.

use socket2::{Domain, Protocol, Socket, Type};

/// The algorithm to set on the proxy's node-side sockets, or `None` to leave
/// them at the node's default (nothing asked, the same algorithm, or one that
/// cannot be used).
pub fn resolve(wanted: &str) -> Option<String> {
    let wanted = wanted.trim();
    if wanted.is_empty() {
        return None;
    }
    let probe = match Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)) {
        Ok(socket) => socket,
        Err(error) => {
            tracing::warn!(algorithm = wanted, error = %error, "cannot check the userspace congestion control; keeping the node's default");
            return None;
        }
    };
    let default = probe.tcp_congestion().map(|name| name_of(&name));
    if default.as_deref().is_ok_and(|d| d == wanted) {
        return None;
    }
    match probe.set_tcp_congestion(wanted.as_bytes()) {
        Ok(()) => {
            tracing::info!(
                algorithm = wanted,
                node_default = default.as_deref().unwrap_or("?"),
                "userspace: node-side TCP connections use their own congestion control"
            );
            Some(wanted.to_owned())
        }
        Err(error) => {
            tracing::warn!(
                algorithm = wanted,
                error = %error,
                node_default = default.as_deref().unwrap_or("?"),
                "userspace: congestion control not available (see net.ipv4.tcp_available_congestion_control and tcp_allowed_congestion_control); keeping the node's default"
            );
            None
        }
    }
}

/// Sets `algorithm` on `socket`.
pub fn apply(socket: &Socket, algorithm: Option<&str>) -> std::io::Result<()> {
    match algorithm {
        Some(name) => socket.set_tcp_congestion(name.as_bytes()),
        None => Ok(()),
    }
}

/// The name in a `TCP_CONGESTION` answer (NUL-padded).
fn name_of(raw: &[u8]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(raw.get(..end).unwrap_or_default()).into_owned()
}

/// The algorithm `socket` uses.
#[cfg(test)]
pub fn of(socket: &Socket) -> String {
    socket
        .tcp_congestion()
        .map(|n| name_of(&n))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_default() -> String {
        of(&Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket"))
    }

    #[test]
    fn nothing_the_default_or_an_unknown_name_sets_nothing() {
        assert_eq!(resolve(""), None);
        assert_eq!(resolve(&node_default()), None);
        assert_eq!(resolve("no-such-algorithm"), None);
    }

    #[test]
    fn another_available_algorithm_is_set() {
        // reno is built into every kernel; cubic into nearly all.
        let other = if node_default() == "reno" {
            "cubic"
        } else {
            "reno"
        };
        assert_eq!(resolve(&format!(" {other} ")), Some(other.to_owned()));
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        apply(&socket, Some(other)).expect("setsockopt");
        assert_eq!(of(&socket), other);
    }

    #[test]
    fn names_are_read_up_to_the_padding() {
        assert_eq!(name_of(b"bbr\0\0\0"), "bbr");
        assert_eq!(name_of(b"cubic"), "cubic");
    }
}
