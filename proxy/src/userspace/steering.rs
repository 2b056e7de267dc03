//! Steering without eBPF: makes each service IP local to the node, so the
//! kernel delivers traffic for it to the sockets that listen on it.
//!
//! Each VIP gets a `local` route (AnyIP) in table `local`, on `lo`:
//! `ip route add local 10.96.0.10/32 dev lo table local proto 158`, the same
//! effect as kube-proxy's IPVS mode putting VIPs on its `kube-ipvs0` dummy
//! device, without needing dummy devices (these kernels have none) or
//! touching any address list. Table `local` is consulted before `main`, so a
//! route for the whole service range elsewhere does not matter.
//!
//! Tracking: every route we add carries our own routing protocol number
//! ([`crate::config::ROUTE_PROTOCOL`]). A restarted proxy lists the routes
//! with that number and adopts them; whatever it then does not want is
//! deleted, and deletes name the protocol, so the kernel never removes a route
//! someone else added for the same address. `proxy cleanup` removes them all.
//!
//! All through netlink (`rtnetlink`); nothing shells out to `ip`.
//!
//! Must not: add or remove routes other than `local` host routes in table
//! `local` with our protocol number.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use futures::{StreamExt as _, TryStreamExt as _, stream};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};

/// Requests in flight at once when many routes change (a cold start).
const CONCURRENCY: usize = 64;

/// Table `local` (`RT_TABLE_LOCAL`).
const TABLE_LOCAL: u8 = 255;

/// Errors talking rtnetlink.
#[derive(Debug, thiserror::Error)]
pub enum SteeringError {
    #[error("opening an rtnetlink socket")]
    Open(#[source] std::io::Error),
    #[error("the loopback device was not found")]
    NoLoopback,
    #[error("listing routes")]
    List(#[source] rtnetlink::Error),
    #[error("adding the local route for {ip}")]
    Add {
        ip: IpAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("removing the local route for {ip}")]
    Remove {
        ip: IpAddr,
        #[source]
        source: std::io::Error,
    },
}

impl SteeringError {
    /// Missing privileges (no `CAP_NET_ADMIN`).
    pub fn is_permission(&self) -> bool {
        match self {
            SteeringError::Add { source, .. } | SteeringError::Remove { source, .. } => {
                source.kind() == std::io::ErrorKind::PermissionDenied
            }
            _ => false,
        }
    }
}

/// What adding a route found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    /// The route is ours now.
    Ours,
    /// The address was already local through a route that is not ours (it is
    /// an address of this node, for example): it works, and we never remove it.
    AlreadyLocal,
}

/// The VIP routes: an rtnetlink connection and the set of routes we own.
#[derive(Debug)]
pub struct Steering {
    handle: Handle,
    connection: tokio::task::JoinHandle<()>,
    loopback: u32,
    protocol: u8,
    installed: BTreeSet<IpAddr>,
}

impl Drop for Steering {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Steering {
    /// Opens an rtnetlink connection in the current network namespace (its
    /// task runs on the current tokio runtime). Owns nothing yet: see [`Steering::adopt`].
    pub async fn open(protocol: u8) -> Result<Self, SteeringError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(SteeringError::Open)?;
        let connection = tokio::spawn(connection);
        let loopback = loopback_index(&handle).await;
        let loopback = match loopback {
            Ok(index) => index,
            Err(error) => {
                connection.abort();
                return Err(error);
            }
        };
        Ok(Self {
            handle,
            connection,
            loopback,
            protocol,
            installed: BTreeSet::new(),
        })
    }

    /// The routes we own (added, or adopted from an earlier run).
    pub fn installed(&self) -> &BTreeSet<IpAddr> {
        &self.installed
    }

    /// Takes ownership of the routes an earlier run left (those carrying our
    /// protocol number); returns them.
    pub async fn adopt(&mut self) -> Result<&BTreeSet<IpAddr>, SteeringError> {
        self.installed = self.list().await?;
        Ok(&self.installed)
    }

    /// The local routes carrying our protocol number, as the kernel has them.
    pub async fn list(&self) -> Result<BTreeSet<IpAddr>, SteeringError> {
        let mut out = BTreeSet::new();
        let queries = [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ];
        for query in queries {
            let mut routes = self.handle.route().get(query).execute();
            while let Some(route) = routes.try_next().await.map_err(SteeringError::List)? {
                if let Some(ip) = ours(&route, self.protocol) {
                    out.insert(ip);
                }
            }
        }
        Ok(out)
    }

    /// Makes each of `ips` local. Returns one result per address, in no order.
    pub async fn add(&mut self, ips: &[IpAddr]) -> Vec<(IpAddr, Result<Added, SteeringError>)> {
        let results: Vec<(IpAddr, Result<Added, SteeringError>)> =
            stream::iter(ips.iter().copied())
                .map(|ip| {
                    let request = self
                        .handle
                        .route()
                        .add(route_message(ip, self.loopback, self.protocol))
                        .execute();
                    async move {
                        let result = match request.await {
                            Ok(()) => Ok(Added::Ours),
                            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(Added::AlreadyLocal),
                            Err(e) => Err(SteeringError::Add {
                                ip,
                                source: to_io(e),
                            }),
                        };
                        (ip, result)
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
        for (ip, result) in &results {
            if matches!(result, Ok(Added::Ours)) {
                self.installed.insert(*ip);
            }
        }
        // An EEXIST may be our own route, left by an earlier run and not
        // adopted: find out, so that it is removed when no longer wanted.
        if results
            .iter()
            .any(|(ip, r)| matches!(r, Ok(Added::AlreadyLocal)) && !self.installed.contains(ip))
            && let Ok(listed) = self.list().await
        {
            let mut results = results;
            for (ip, result) in &mut results {
                if matches!(result, Ok(Added::AlreadyLocal)) && listed.contains(ip) {
                    self.installed.insert(*ip);
                    *result = Ok(Added::Ours);
                }
            }
            return results;
        }
        results
    }

    /// Removes our routes for `ips` (only ours: the delete names our
    /// protocol). A route already gone is not an error.
    pub async fn remove(&mut self, ips: &[IpAddr]) -> Vec<(IpAddr, Result<(), SteeringError>)> {
        let results: Vec<(IpAddr, Result<(), SteeringError>)> = stream::iter(ips.iter().copied())
            .map(|ip| {
                let request = self
                    .handle
                    .route()
                    .del(route_message(ip, self.loopback, self.protocol))
                    .execute();
                async move {
                    let result = match request.await {
                        Ok(()) => Ok(()),
                        Err(e) if matches!(errno(&e), Some(libc::ESRCH | libc::ENOENT)) => Ok(()),
                        Err(e) => Err(SteeringError::Remove {
                            ip,
                            source: to_io(e),
                        }),
                    };
                    (ip, result)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (ip, result) in &results {
            if result.is_ok() {
                self.installed.remove(ip);
            }
        }
        results
    }

    /// Removes every route carrying our protocol number, owned or not (for
    /// `proxy cleanup`, and for a daemon that will not use the userspace path).
    /// Returns the addresses removed.
    pub async fn flush(&mut self) -> Result<Vec<IpAddr>, SteeringError> {
        let all: Vec<IpAddr> = self.list().await?.into_iter().collect();
        let mut removed = Vec::new();
        for (ip, result) in self.remove(&all).await {
            result?;
            removed.push(ip);
        }
        removed.sort();
        Ok(removed)
    }
}

/// The route that makes `ip` local: `local IP/32 dev lo table local proto P`.
fn route_message(ip: IpAddr, loopback: u32, protocol: u8) -> RouteMessage {
    let mut message = RouteMessageBuilder::<IpAddr>::new().build();
    message.header.address_family = match ip {
        IpAddr::V4(_) => netlink_packet_route::AddressFamily::Inet,
        IpAddr::V6(_) => netlink_packet_route::AddressFamily::Inet6,
    };
    message.header.destination_prefix_length = full_length(ip);
    message.header.table = TABLE_LOCAL;
    message.header.kind = RouteType::Local;
    message.header.scope = RouteScope::Host;
    message.header.protocol = RouteProtocol::from(protocol);
    message
        .attributes
        .push(RouteAttribute::Destination(RouteAddress::from(ip)));
    message.attributes.push(RouteAttribute::Oif(loopback));
    message
}

fn full_length(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The address of `route` when it is one of ours: a local host route in table
/// `local` with our protocol number.
fn ours(route: &RouteMessage, protocol: u8) -> Option<IpAddr> {
    let table = route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table));
    if table != u32::from(TABLE_LOCAL)
        || route.header.kind != RouteType::Local
        || u8::from(route.header.protocol) != protocol
    {
        return None;
    }
    let ip = route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    })?;
    (route.header.destination_prefix_length == full_length(ip)).then_some(ip)
}

async fn loopback_index(handle: &Handle) -> Result<u32, SteeringError> {
    let mut links = handle.link().get().match_name("lo".to_owned()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(link.header.index),
        _ => Err(SteeringError::NoLoopback),
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

fn to_io(e: rtnetlink::Error) -> std::io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => std::io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_is_a_local_host_route_in_table_local_with_our_protocol() {
        let m = route_message("10.96.0.10".parse().expect("ip"), 1, 158);
        assert_eq!(m.header.table, TABLE_LOCAL);
        assert_eq!(m.header.kind, RouteType::Local);
        assert_eq!(m.header.destination_prefix_length, 32);
        assert_eq!(ours(&m, 158), Some("10.96.0.10".parse().expect("ip")));
        assert_eq!(ours(&m, 159), None);
        let m6 = route_message("fd00:96::10".parse().expect("ip"), 1, 158);
        assert_eq!(m6.header.destination_prefix_length, 128);
        assert_eq!(ours(&m6, 158), Some("fd00:96::10".parse().expect("ip")));
    }
}
