//! [`Topology`]: a two-node world for north-south tests, built around a
//! [`Sandbox`] whose namespace is node 1 (where `proxy run` runs).
//!
//! ```text
//!  client ns ──eth0┐                     ┌ pods1 ns: eth0 10.244.1.11-13, fd00:244:1::11-13
//!  198.51.100.10   │   lan ns: bridge    │   default via node 1
//!                  ├── br0 ──────────────┤
//!  node 1 = sandbox┘ eth0 198.51.100.1   └─ `pods` veth 10.244.1.1 (node 1's side)
//!  node 2 ns:        eth0 198.51.100.2   ── `pods` veth 10.244.2.1 ── pods2 ns: 10.244.2.11-13
//! ```
//!
//! IPv6 mirrors it: the LAN is `fd00:50::/64` (client `::10`, node 1 `::1`, node
//! 2 `::2`), node N's pods are `fd00:244:N::/64`. Node 1 routes node 2's pod
//! range via node 2 and the other way round; pods reach the client through
//! their node; the client routes the ExternalIP/LoadBalancer range
//! ([`EXTERNAL_V4`], [`EXTERNAL_V6`]) via node 1, like an upstream router
//! would. Forwarding is on in both node namespaces (but not on node 1's dead
//! end, `pxv1`), `rp_filter` off everywhere.
//! No namespace has a default route out, and every address is a documentation
//! or unique-local one that exists only inside these namespaces.
//!
//! Namespaces are named `<sandbox netns>-<role>` (`pxt-<pid>-<n>-client`, …),
//! so the kit's [`crate::sweep`] removes what a killed run left; `Drop` deletes
//! them (also on a half-built topology). Node 1's namespace belongs to the
//! sandbox and goes with it.
//!
//! [`Topology::in_ns`] runs a closure on a helper thread inside one of the
//! namespaces: clients there send from the client, backends started there
//! live in a pod (a socket belongs to the namespace it was created in).

use std::{
    fs::{self, File},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsFd,
    path::{Path, PathBuf},
    thread,
};

use nix::sched::CloneFlags;

use crate::{Error, Sandbox, TcpBackend, UdpBackend, cmd};

/// The client's LAN address.
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// Node 1's LAN address (a NodePort address).
pub const NODE1_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// Node 2's LAN address.
pub const NODE2_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The client's LAN address (IPv6).
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x50, 0, 0, 0, 0, 0, 0x10);
/// Node 1's LAN address (IPv6).
pub const NODE1_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x50, 0, 0, 0, 0, 0, 1);
/// Node 2's LAN address (IPv6).
pub const NODE2_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x50, 0, 0, 0, 0, 0, 2);
/// The range the client routes via node 1 (ExternalIPs, LoadBalancer IPs).
pub const EXTERNAL_V4: &str = "203.0.113.0/24";
/// The IPv6 range the client routes via node 1.
pub const EXTERNAL_V6: &str = "fd00:203::/64";
/// The LAN device's name in the client and node namespaces (`proxy run --devices`).
pub const LAN_DEVICE: &str = "eth0";
/// Node N's device towards its pods.
pub const POD_DEVICE: &str = "pods";
/// Pod addresses per node and family (`.11`, `.12`, `.13` / `::11`, …).
pub const PODS_PER_NODE: u8 = 3;

const LAN_V4_PREFIX: u8 = 24;
const LAN_V6_PREFIX: u8 = 64;
const BRIDGE: &str = "br0";

/// A namespace of the topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// The external client.
    Client,
    /// The bridge that joins the client and both nodes.
    Lan,
    /// Node 1: the sandbox's namespace, where the proxy runs.
    Node1,
    /// Node 2.
    Node2,
    /// Node 1's pods.
    Pods1,
    /// Node 2's pods.
    Pods2,
}

impl Place {
    fn suffix(self) -> &'static str {
        match self {
            Place::Client => "client",
            Place::Lan => "lan",
            Place::Node1 => "node1",
            Place::Node2 => "node2",
            Place::Pods1 => "pods1",
            Place::Pods2 => "pods2",
        }
    }
}

/// Node `node`'s (1 or 2) pod `i` (1..=[`PODS_PER_NODE`]), IPv4: `10.244.<node>.<10 + i>`.
pub fn pod_v4(node: u8, i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, node, 10 + i)
}

/// Node `node`'s pod `i`, IPv6: `fd00:244:<node>::<10 + i>` (hex digits as decimal).
pub fn pod_v6(node: u8, i: u8) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfd00,
        0x244,
        u16::from(node),
        0,
        0,
        0,
        0,
        0x10 + u16::from(i),
    )
}

fn pod_gateway_v4(node: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, node, 1)
}

fn pod_gateway_v6(node: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x244, u16::from(node), 0, 0, 0, 0, 1)
}

/// The namespaces, links, addresses and routes of a two-node world. Removes the
/// namespaces it created in `Drop`; node 1's belongs to the sandbox.
pub struct Topology {
    base: String,
    created: Vec<String>,
}

impl Topology {
    /// Builds the topology around `sandbox` (entered or not); the sandbox's
    /// namespace becomes node 1 (forwarding turned on there).
    pub fn build(sandbox: &Sandbox) -> Result<Self, Error> {
        let mut topo = Topology {
            base: sandbox.netns_name().to_owned(),
            created: Vec::new(),
        };
        for place in [
            Place::Lan,
            Place::Client,
            Place::Node2,
            Place::Pods1,
            Place::Pods2,
        ] {
            let name = topo.name(place);
            if Path::new("/run/netns").join(&name).exists() {
                // A killed run whose pid we now have; the sandbox's own name was
                // fresh, so this is a leftover.
                cmd::ip(&["netns", "del", &name])?;
            }
            cmd::ip(&["netns", "add", &name])?;
            topo.created.push(name);
        }
        topo.sysctls()?;
        topo.links()?;
        topo.addresses_and_routes()?;
        Ok(topo)
    }

    /// The namespace's name (`pxt-<pid>-<n>-<role>`; node 1: the sandbox's).
    pub fn name(&self, place: Place) -> String {
        match place {
            Place::Node1 => self.base.clone(),
            other => format!("{}-{}", self.base, other.suffix()),
        }
    }

    /// `/run/netns/<name>`.
    pub fn netns_path(&self, place: Place) -> PathBuf {
        Path::new("/run/netns").join(self.name(place))
    }

    /// `ip -n <place's netns> <args>` (split on whitespace); its stdout.
    pub fn ip(&self, place: Place, args: &str) -> Result<String, Error> {
        let name = self.name(place);
        let mut argv = vec!["-n", name.as_str()];
        argv.extend(args.split_whitespace());
        cmd::ip(&argv)
    }

    /// Runs `f` on a helper thread inside `place`'s namespace and returns what
    /// it returned. Sockets made there stay in that namespace.
    pub fn in_ns<T: Send>(&self, place: Place, f: impl FnOnce() -> T + Send) -> Result<T, Error> {
        in_netns(&self.netns_path(place), f)
    }

    /// A [`TcpBackend`] on `bind` inside `place` (a pods namespace, usually).
    pub fn tcp_backend(
        &self,
        place: Place,
        bind: SocketAddr,
        name: &str,
    ) -> Result<TcpBackend, Error> {
        self.in_ns(place, || TcpBackend::start(bind, name))?
    }

    /// A [`TcpBackend`] that answers every line of a connection
    /// ([`TcpBackend::start_sessions`]) on `bind` inside `place`.
    pub fn tcp_session_backend(
        &self,
        place: Place,
        bind: SocketAddr,
        name: &str,
    ) -> Result<TcpBackend, Error> {
        self.in_ns(place, || TcpBackend::start_sessions(bind, name))?
    }

    /// A [`UdpBackend`] on `bind` inside `place`.
    pub fn udp_backend(
        &self,
        place: Place,
        bind: SocketAddr,
        name: &str,
    ) -> Result<UdpBackend, Error> {
        self.in_ns(place, || UdpBackend::start(bind, name))?
    }

    fn sysctls(&self) -> Result<(), Error> {
        for place in [
            Place::Client,
            Place::Lan,
            Place::Node1,
            Place::Node2,
            Place::Pods1,
            Place::Pods2,
        ] {
            let node = matches!(place, Place::Node1 | Place::Node2);
            let forwarding = if node { "1" } else { "0" };
            let mut settings = vec![
                ("net/ipv4/conf/all/rp_filter", "0"),
                ("net/ipv4/conf/default/rp_filter", "0"),
                ("net/ipv4/conf/all/forwarding", forwarding),
                ("net/ipv4/conf/default/forwarding", forwarding),
                ("net/ipv6/conf/all/forwarding", forwarding),
                ("net/ipv6/conf/default/forwarding", forwarding),
                ("net/ipv6/conf/default/accept_dad", "0"),
            ];
            if node {
                // Translated replies leave by the device they came in on; no
                // ICMP redirects about that.
                settings.push(("net/ipv4/conf/all/send_redirects", "0"));
                settings.push(("net/ipv4/conf/default/send_redirects", "0"));
            }
            if place == Place::Node1 {
                // The sandbox's dead end (`pxv1`) keeps forwarding off, so a
                // packet routed into it still dies there instead of looping.
                settings.push(("net/ipv4/conf/pxv1/forwarding", "0"));
                settings.push(("net/ipv6/conf/pxv1/forwarding", "0"));
            }
            if place == Place::Client {
                // Many short connections in the benchmarks and churn tests.
                settings.push(("net/ipv4/ip_local_port_range", "10000 65000"));
                settings.push(("net/ipv4/tcp_tw_reuse", "1"));
            }
            self.in_ns(place, || {
                for (key, value) in &settings {
                    let path = Path::new("/proc/sys").join(key);
                    fs::write(&path, value).map_err(|e| Error::io("setting a sysctl", path, e))?;
                }
                Ok::<_, Error>(())
            })??;
            self.ip(place, "link set lo up")?;
        }
        Ok(())
    }

    fn links(&self) -> Result<(), Error> {
        self.ip(Place::Lan, &format!("link add {BRIDGE} type bridge"))?;
        self.ip(Place::Lan, &format!("link set {BRIDGE} up"))?;
        for (place, port) in [
            (Place::Client, "client"),
            (Place::Node1, "node1"),
            (Place::Node2, "node2"),
        ] {
            let ns = self.name(place);
            self.ip(
                Place::Lan,
                &format!("link add {port} type veth peer name {LAN_DEVICE} netns {ns}"),
            )?;
            self.ip(Place::Lan, &format!("link set {port} master {BRIDGE} up"))?;
            self.ip(place, &format!("link set {LAN_DEVICE} up"))?;
        }
        for (node, pods) in [(Place::Node1, Place::Pods1), (Place::Node2, Place::Pods2)] {
            let ns = self.name(pods);
            self.ip(
                node,
                &format!("link add {POD_DEVICE} type veth peer name eth0 netns {ns}"),
            )?;
            self.ip(node, &format!("link set {POD_DEVICE} up"))?;
            self.ip(pods, "link set eth0 up")?;
        }
        Ok(())
    }

    fn addresses_and_routes(&self) -> Result<(), Error> {
        let lan = [
            (Place::Client, CLIENT_V4, CLIENT_V6),
            (Place::Node1, NODE1_V4, NODE1_V6),
            (Place::Node2, NODE2_V4, NODE2_V6),
        ];
        for (place, v4, v6) in lan {
            self.ip(
                place,
                &format!("addr add {v4}/{LAN_V4_PREFIX} dev {LAN_DEVICE}"),
            )?;
            self.ip(
                place,
                &format!("-6 addr add {v6}/{LAN_V6_PREFIX} dev {LAN_DEVICE} nodad"),
            )?;
        }
        for (node, place, pods, peer_v4, peer_v6) in [
            (1, Place::Node1, Place::Pods1, NODE2_V4, NODE2_V6),
            (2, Place::Node2, Place::Pods2, NODE1_V4, NODE1_V6),
        ] {
            let (gw4, gw6) = (pod_gateway_v4(node), pod_gateway_v6(node));
            self.ip(place, &format!("addr add {gw4}/24 dev {POD_DEVICE}"))?;
            self.ip(
                place,
                &format!("-6 addr add {gw6}/64 dev {POD_DEVICE} nodad"),
            )?;
            for i in 1..=PODS_PER_NODE {
                self.ip(pods, &format!("addr add {}/24 dev eth0", pod_v4(node, i)))?;
                self.ip(
                    pods,
                    &format!("-6 addr add {}/64 dev eth0 nodad", pod_v6(node, i)),
                )?;
            }
            self.ip(pods, &format!("route add default via {gw4} dev eth0"))?;
            self.ip(pods, &format!("-6 route add default via {gw6} dev eth0"))?;
            // The other node's pods, via the other node.
            let other = 3 - node;
            self.ip(
                place,
                &format!("route add 10.244.{other}.0/24 via {peer_v4} dev {LAN_DEVICE}"),
            )?;
            self.ip(
                place,
                &format!("-6 route add fd00:244:{other}::/64 via {peer_v6} dev {LAN_DEVICE}"),
            )?;
        }
        self.ip(
            Place::Client,
            &format!("route add {EXTERNAL_V4} via {NODE1_V4} dev {LAN_DEVICE}"),
        )?;
        self.ip(
            Place::Client,
            &format!("-6 route add {EXTERNAL_V6} via {NODE1_V6} dev {LAN_DEVICE}"),
        )?;
        Ok(())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for name in self.created.iter().rev() {
            if let Err(e) = cmd::ip(&["netns", "del", name]) {
                eprintln!("topology: {e}");
            }
        }
    }
}

/// Runs `f` on a helper thread that has joined the network namespace at `path`.
pub fn in_netns<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T, Error> {
    let ns = File::open(path).map_err(|e| Error::io("opening a netns", path, e))?;
    thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::sys(format!("setns into {}", path.display()), e))?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(Error::Usage("netns helper thread panicked".into())))
    })
}

/// Node 1's LAN address of `ip`'s family (where NodePorts are served).
pub fn node1_addr(family_of: IpAddr) -> IpAddr {
    match family_of {
        IpAddr::V4(_) => NODE1_V4.into(),
        IpAddr::V6(_) => NODE1_V6.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_addresses() {
        assert_eq!(pod_v4(1, 1).to_string(), "10.244.1.11");
        assert_eq!(pod_v4(2, 3).to_string(), "10.244.2.13");
        assert_eq!(pod_v6(1, 1).to_string(), "fd00:244:1::11");
        assert_eq!(pod_v6(2, 2).to_string(), "fd00:244:2::12");
    }
}
