//! The addresses NodePorts are served on (kube-proxy's `--nodeport-addresses`).
//!
//! Owns: the flag's entries ([`NodePortAddress`]: a [`Cidr`], or `primary`)
//! and what they mean together ([`NodePortFilter`]), the pure choice of
//! addresses ([`select`]), and reading this network namespace's interface
//! addresses over rtnetlink ([`interface_addresses`], [`resolve`]). The daemon
//! hands the result to the Index (`Index::set_nodeport_addresses`); device
//! discovery for the tc path can reuse [`select`] on its own devices' addresses.
//!
//! `primary` is kube-proxy's (and its nftables mode's default): NodePorts only
//! on the node's primary IPv4 and IPv6 addresses, as the Node object gives
//! them (its first InternalIP of each family, else ExternalIP). The Node is
//! the Index's, so the Index narrows the interface addresses to those
//! (`Index::with_nodeport_primary`); while no Node address is known, every
//! address qualifies, as kube-proxy does when it cannot tell the node's IP.
//!
//! Must not: change anything in the kernel (it only reads addresses).

use std::{fmt, net::IpAddr, str::FromStr};

use futures::TryStreamExt as _;
use netlink_packet_route::address::AddressAttribute;

use crate::model::SourceRange;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum NodePortError {
    #[error("invalid --nodeport-addresses entry {value:?}: {reason}")]
    Parse { value: String, reason: &'static str },
    #[error("cannot open an rtnetlink socket")]
    Open(#[source] std::io::Error),
    #[error("cannot list the interface addresses")]
    List(#[source] rtnetlink::Error),
    #[error("invalid --nodeport-addresses: `primary` must be the only entry, not one of {count}")]
    PrimaryNotAlone { count: usize },
}

/// One `--nodeport-addresses` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodePortAddress {
    Cidr(Cidr),
    /// The node's primary addresses (see the module docs).
    Primary,
}

impl NodePortAddress {
    const PRIMARY: &'static str = "primary";
}

impl FromStr for NodePortAddress {
    type Err = NodePortError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == Self::PRIMARY {
            return Ok(Self::Primary);
        }
        s.parse().map(Self::Cidr)
    }
}

impl fmt::Display for NodePortAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cidr(cidr) => cidr.fmt(f),
            Self::Primary => f.write_str(Self::PRIMARY),
        }
    }
}

impl serde::Serialize for NodePortAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for NodePortAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What the flag's entries mean together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodePortFilter {
    /// The interface addresses inside one of these (all when empty).
    Cidrs(Vec<Cidr>),
    /// The node's primary addresses.
    Primary,
}

impl NodePortFilter {
    /// `primary` alone, or prefixes only (as kube-proxy validates it).
    pub fn new(entries: &[NodePortAddress]) -> Result<Self, NodePortError> {
        if entries.contains(&NodePortAddress::Primary) {
            if entries.len() > 1 {
                return Err(NodePortError::PrimaryNotAlone {
                    count: entries.len(),
                });
            }
            return Ok(Self::Primary);
        }
        let cidrs = entries
            .iter()
            .filter_map(|e| match e {
                NodePortAddress::Cidr(c) => Some(*c),
                NodePortAddress::Primary => None,
            })
            .collect();
        Ok(Self::Cidrs(cidrs))
    }
}

/// An IP prefix, `10.0.0.0/8` or `fd00::/64`; a bare address is a single-host
/// prefix. Host bits are allowed and ignored, as kube-proxy does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside the prefix (never across families); the
    /// masking is [`SourceRange`]'s, the one prefix type of the model.
    pub fn contains(&self, ip: IpAddr) -> bool {
        SourceRange::new(self.addr, self.prefix).is_some_and(|net| net.contains(ip))
    }
}

/// Whether `cidrs` hold at most one IPv4 and one IPv6 prefix (kube-proxy's
/// rule for `--cluster-cidr`, kube-apiserver's for
/// `--service-cluster-ip-range`).
pub fn at_most_one_per_family(cidrs: &[Cidr]) -> bool {
    let v4 = cidrs.iter().filter(|c| c.addr.is_ipv4()).count();
    v4 <= 1 && cidrs.len() - v4 <= 1
}

impl FromStr for Cidr {
    type Err = NodePortError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| NodePortError::Parse {
            value: s.to_owned(),
            reason,
        };
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err("not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| err("bad prefix length"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The nodeport addresses among `candidates`: those inside one of `filter`'s
/// prefixes, or all when `filter` is empty. Loopback, unspecified and IPv6
/// link-local addresses never qualify (a NodePort on them would need
/// `route_localnet`, which the proxy never sets, or a scope). Sorted, each once.
pub fn select(candidates: impl IntoIterator<Item = IpAddr>, filter: &[Cidr]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = candidates
        .into_iter()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified() && !is_link_local_v6(*ip))
        .filter(|ip| filter.is_empty() || filter.iter().any(|c| c.contains(*ip)))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn is_link_local_v6(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80)
}

/// Every address assigned to an interface of the current network namespace.
pub async fn interface_addresses() -> Result<Vec<IpAddr>, NodePortError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(NodePortError::Open)?;
    let connection = tokio::spawn(connection);
    let mut stream = handle.address().get().execute();
    let mut out = Vec::new();
    let result = loop {
        match stream.try_next().await {
            Ok(Some(msg)) => {
                // IPv4 point-to-point links carry the peer in `Address` and
                // this end in `Local`; elsewhere both are the same.
                let local = msg.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                });
                let address = msg.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                });
                out.extend(local.or(address));
            }
            Ok(None) => break Ok(out),
            Err(e) => break Err(NodePortError::List(e)),
        }
    };
    connection.abort();
    result
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use rstest::rstest;

    use super::*;

    fn ips(s: &[&str]) -> Vec<IpAddr> {
        s.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[rstest]
    #[case("10.0.0.0/8", "10.0.0.0/8")]
    #[case("192.168.1.7", "192.168.1.7/32")]
    #[case(" fd00::/64", "fd00::/64")]
    #[case("10.1.2.3/0", "10.1.2.3/0")]
    fn parses(#[case] input: &str, #[case] shown: &str) {
        assert_eq!(input.parse::<Cidr>().unwrap().to_string(), shown);
    }

    #[rstest]
    #[case("10.0.0.0/33", "bad prefix length")]
    #[case("fd00::/129", "bad prefix length")]
    #[case("10.0.0.0/x", "bad prefix length")]
    #[case("eth0", "not an IP address")]
    fn rejects(#[case] input: &str, #[case] reason: &str) {
        let e = input.parse::<Cidr>().unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("invalid --nodeport-addresses entry {input:?}: {reason}")
        );
    }

    #[test]
    fn selects_by_prefix_and_never_loopback_or_link_local() {
        let all = ips(&[
            "127.0.0.1",
            "::1",
            "fe80::1",
            "192.168.1.10",
            "10.0.0.5",
            "fd00::10",
            "192.168.1.10",
        ]);
        assert_eq!(
            select(all.clone(), &[]),
            ips(&["10.0.0.5", "192.168.1.10", "fd00::10"])
        );
        let filter = [
            "192.168.0.0/16".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ];
        assert_eq!(
            select(all.clone(), &filter),
            ips(&["192.168.1.10", "fd00::10"])
        );
        let lo = ["127.0.0.0/8".parse().unwrap()];
        assert!(select(all, &lo).is_empty());
    }

    #[test]
    fn primary_is_a_keyword_that_stands_alone() {
        let entries: Vec<NodePortAddress> = ["10.0.0.0/8", "primary"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(entries[1], NodePortAddress::Primary);
        assert_eq!(entries[1].to_string(), "primary");
        assert_eq!(
            NodePortFilter::new(&entries[1..]).unwrap(),
            NodePortFilter::Primary
        );
        assert_eq!(
            NodePortFilter::new(&entries[..1]).unwrap(),
            NodePortFilter::Cidrs(vec!["10.0.0.0/8".parse().unwrap()])
        );
        assert_eq!(
            NodePortFilter::new(&[]).unwrap(),
            NodePortFilter::Cidrs(vec![])
        );
        let e = NodePortFilter::new(&entries).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid --nodeport-addresses: `primary` must be the only entry, not one of 2"
        );
        assert!(
            "Primary".parse::<NodePortAddress>().is_err(),
            "as kube-proxy: lowercase"
        );
    }

    #[test]
    fn prefix_zero_matches_its_family_only() {
        let any4: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(any4.contains("203.0.113.1".parse().unwrap()));
        assert!(!any4.contains("fd00::1".parse().unwrap()));
    }
}
