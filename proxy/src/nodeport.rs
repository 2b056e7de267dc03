//! The addresses NodePorts are served on (kube-proxy's `--nodeport-addresses`).
//!
//! Owns: the [`Cidr`] type of the flag, the pure choice of addresses
//! ([`select`]), and reading this network namespace's interface addresses
//! over rtnetlink ([`interface_addresses`], [`resolve`]). The daemon hands the
//! result to the Index (`Index::set_nodeport_addresses`); device discovery for
//! the tc path can reuse [`select`] on its own devices' addresses.
//!
//! Must not: change anything in the kernel (it only reads addresses).

use std::{fmt, net::IpAddr, str::FromStr};

use futures::TryStreamExt as _;
use netlink_packet_route::address::AddressAttribute;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum NodePortError {
    #[error("invalid --nodeport-addresses entry {value:?}: {reason}")]
    Parse { value: String, reason: &'static str },
    #[error("cannot open an rtnetlink socket")]
    Open(#[source] std::io::Error),
    #[error("cannot list the interface addresses")]
    List(#[source] rtnetlink::Error),
}

/// An IP prefix, `10.0.0.0/8` or `fd00::/64`; a bare address is a single-host
/// prefix. Host bits are allowed and ignored, as kube-proxy does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside the prefix (never across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
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

/// [`select`] over [`interface_addresses`]: the default nodeport addresses
/// when no device list narrows them.
pub async fn resolve(filter: &[Cidr]) -> Result<Vec<IpAddr>, NodePortError> {
    Ok(select(interface_addresses().await?, filter))
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
    fn prefix_zero_matches_its_family_only() {
        let any4: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(any4.contains("203.0.113.1".parse().unwrap()));
        assert!(!any4.contains("fd00::1".parse().unwrap()));
    }
}
