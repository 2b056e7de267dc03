//! Which network devices the tc programs go on, and the node addresses they
//! give (NodePort addresses, SNAT addresses).
//!
//! Settings: `--devices` ([`DeviceSelection`]: `auto`, or names) names the
//! node's external devices; `--pod-devices` ([`PodDevices`]: names or globs
//! such as `veth*`) the devices facing pods, where ClusterIPs are translated
//! per packet (`DEVICES` flag `CLUSTER_IP`); `--socket-lb=false` gives every
//! device that flag.
//!
//! The pure part, [`select`], turns the links the kernel lists ([`Link`]) into
//! [`Device`]s; [`read_links`] reads them through rtnetlink. `auto` picks the
//! links (loopback excluded) that carry a global address or the default
//! route, in ifindex order, leaving out bridges, Open vSwitch, veths and
//! netkit devices that do not carry the default route (the pods' side of the
//! node, [`Link::pod_side`]); pod devices come after the external ones.
//! [`Selected::node_addresses`] are the global addresses of the external
//! devices, in device order; the first of each family is the SNAT address
//! (`NODE_CFG`).

use std::{
    collections::BTreeSet,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use futures::{StreamExt as _, TryStreamExt as _};
use netlink_packet_route::{
    address::{AddressAttribute, AddressScope},
    link::{LinkAttribute, LinkFlags, LinkInfo},
    route::{RouteAttribute, RouteHeader},
};
use proxy_common::device_flags;
use serde::{Deserialize, Serialize};

/// Longest interface name (`IFNAMSIZ` - 1).
const MAX_NAME: usize = 15;

/// A `--devices` or `--pod-devices` value the kernel could never match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceSpecError {
    #[error("empty interface name in {0:?}")]
    Empty(String),
    #[error("interface name {0:?} is longer than {MAX_NAME} bytes")]
    TooLong(String),
    #[error(
        "interface name {0:?} has a character interface names cannot have ('/', ':', whitespace)"
    )]
    BadChar(String),
    #[error("interface name {0:?} is not a name")]
    Dots(String),
    #[error("{0:?}: only --pod-devices takes globs ('*', '?')")]
    Glob(String),
}

/// Errors while listing links and addresses.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("opening an rtnetlink socket")]
    Open(#[source] std::io::Error),
    #[error("listing {what} through rtnetlink")]
    List {
        what: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("the netlink reader thread failed")]
    Thread(#[source] std::io::Error),
}

/// `--devices`: the node's external devices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DeviceSelection {
    /// The links that carry the node's addresses or its default route.
    #[default]
    Auto,
    /// These, in this order (missing ones are skipped until they appear).
    Names(Vec<String>),
}

impl FromStr for DeviceSelection {
    type Err = DeviceSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "auto" {
            return Ok(Self::Auto);
        }
        split(s, false).map(Self::Names)
    }
}

impl fmt::Display for DeviceSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Names(names) => f.write_str(&names.join(",")),
        }
    }
}

/// `--pod-devices`: names or globs of the devices facing pods (empty: none).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodDevices(pub Vec<String>);

impl FromStr for PodDevices {
    type Err = DeviceSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Ok(Self(Vec::new()));
        }
        split(s, true).map(Self)
    }
}

impl fmt::Display for PodDevices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

impl PodDevices {
    pub fn matches(&self, name: &str) -> bool {
        self.0.iter().any(|p| glob_match(p, name))
    }
}

macro_rules! string_serde {
    ($t:ty, $expecting:literal) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                crate::config::file::from_str_with(d, $expecting, <$t>::from_str)
            }
        }
    };
}
string_serde!(DeviceSelection, "`auto` or comma-separated interface names");
string_serde!(PodDevices, "comma-separated interface names or globs");

/// Splits a comma-separated list and checks each name (or glob).
fn split(s: &str, globs: bool) -> Result<Vec<String>, DeviceSpecError> {
    s.split(',')
        .map(|name| {
            let name = name.trim();
            check_name(name, globs).map(|()| name.to_owned())
        })
        .collect()
}

/// The kernel's `dev_valid_name`, plus: globs only where allowed.
fn check_name(name: &str, globs: bool) -> Result<(), DeviceSpecError> {
    if name.is_empty() {
        return Err(DeviceSpecError::Empty(name.to_owned()));
    }
    if name.len() > MAX_NAME {
        return Err(DeviceSpecError::TooLong(name.to_owned()));
    }
    if name == "." || name == ".." {
        return Err(DeviceSpecError::Dots(name.to_owned()));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(DeviceSpecError::BadChar(name.to_owned()));
    }
    if !globs && name.contains(['*', '?']) {
        return Err(DeviceSpecError::Glob(name.to_owned()));
    }
    Ok(())
}

/// Shell-style match: `*` any run of characters, `?` one character.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// One link as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub loopback: bool,
    /// The link's kind (`IFLA_INFO_KIND`: `veth`, `bridge`, `vxlan`...), if
    /// it has one (physical NICs have none).
    pub kind: Option<String>,
    /// Global-scope addresses, in the kernel's order.
    pub addrs: Vec<IpAddr>,
    /// The kernel names the network namespace of the link's peer
    /// (`IFLA_LINK_NETNSID`): for a veth or netkit, the peer is in another
    /// namespace.
    pub peer_netns: bool,
}

impl Link {
    /// A software link on the pods' side of the node: a bridge or Open
    /// vSwitch that pod interfaces hang off (`cni0`, `docker0`), or a pod's
    /// veth or netkit. `auto` leaves them out unless they carry the default
    /// route (a node whose uplink is a bridge): the tc programs there would
    /// cost every packet between pods, for traffic the socket hooks already
    /// serve. Cilium's auto-detection leaves out veths without the default
    /// route, and bridges and Open vSwitch always, for the same reason.
    fn pod_side(&self) -> bool {
        matches!(
            self.kind.as_deref(),
            Some("bridge" | "openvswitch" | "veth" | "netkit")
        )
    }

    /// `DEVICES` flag `PEER_NETNS`: a veth or netkit whose peer is in
    /// another namespace, so tc ingress can forward to it with
    /// `bpf_redirect_peer` (the kernel drops such a redirect to a device
    /// without a peer, or with its peer in the same namespace).
    fn peer_flags(&self) -> u32 {
        if self.peer_netns && matches!(self.kind.as_deref(), Some("veth" | "netkit")) {
            device_flags::PEER_NETNS
        } else {
            0
        }
    }
}

/// A device the tc programs go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub index: u32,
    pub name: String,
    /// `proxy_common::device_flags` (the `DEVICES` map's value).
    pub flags: u32,
    /// True for an external device (`--devices`), whose addresses are node
    /// addresses; false for a pod-facing device only.
    pub external: bool,
    /// A virtual device (`IFLA_INFO_KIND` set: veth, bridge, vxlan...), not
    /// a NIC's (`--xdp=auto` attaches generic XDP there).
    pub virtual_kind: bool,
}

/// What [`select`] chose.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selected {
    /// External devices in `--devices` order (`auto`: ifindex order), then
    /// pod-only devices in ifindex order.
    pub devices: Vec<Device>,
    /// Names given to `--devices` that no link has (yet).
    pub missing: Vec<String>,
    node_addresses: Vec<IpAddr>,
}

impl Selected {
    /// The global addresses of the external devices, in device order, with
    /// no duplicates: where NodePorts answer.
    pub fn node_addresses(&self) -> &[IpAddr] {
        &self.node_addresses
    }

    /// The SNAT addresses: the first node address of each family.
    pub fn snat(&self) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
        let v4 = self.node_addresses.iter().find_map(|a| match a {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        });
        let v6 = self.node_addresses.iter().find_map(|a| match a {
            IpAddr::V6(a) => Some(*a),
            IpAddr::V4(_) => None,
        });
        (v4, v6)
    }
}

/// Chooses the devices among `links`. `default_oifs`: the ifindexes the
/// default routes go out of. Pure.
pub fn select(
    links: &[Link],
    default_oifs: &BTreeSet<u32>,
    devices: &DeviceSelection,
    pods: &PodDevices,
    socket_lb: bool,
) -> Selected {
    let mut by_index: Vec<&Link> = links.iter().collect();
    by_index.sort_by_key(|l| l.index);
    let mut out = Selected::default();
    let external: Vec<&Link> = match devices {
        DeviceSelection::Auto => by_index
            .iter()
            .copied()
            .filter(|l| !l.loopback && !pods.matches(&l.name))
            .filter(|l| {
                let default_route = default_oifs.contains(&l.index);
                (!l.addrs.is_empty() && !l.pod_side()) || default_route
            })
            .collect(),
        DeviceSelection::Names(names) => {
            let mut found = Vec::new();
            for name in names {
                match links.iter().find(|l| &l.name == name) {
                    Some(link) if !found.iter().any(|f: &&Link| f.index == link.index) => {
                        found.push(link);
                    }
                    Some(_) => {}
                    None => out.missing.push(name.clone()),
                }
            }
            found
        }
    };
    let flags_of = |link: &Link| {
        let cluster_ip = if !socket_lb || pods.matches(&link.name) {
            device_flags::CLUSTER_IP
        } else {
            0
        };
        cluster_ip | link.peer_flags()
    };
    for link in &external {
        out.devices.push(Device {
            index: link.index,
            name: link.name.clone(),
            flags: flags_of(link),
            external: true,
            virtual_kind: link.kind.is_some(),
        });
        for addr in &link.addrs {
            if !out.node_addresses.contains(addr) {
                out.node_addresses.push(*addr);
            }
        }
    }
    for link in by_index {
        if link.loopback
            || !pods.matches(&link.name)
            || external.iter().any(|e| e.index == link.index)
        {
            continue;
        }
        out.devices.push(Device {
            index: link.index,
            name: link.name.clone(),
            flags: flags_of(link),
            external: false,
            virtual_kind: link.kind.is_some(),
        });
    }
    out
}

/// The name of the device with index `ifindex` in the current network
/// namespace, if there is one.
pub fn name_of(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write; it
    // returns NULL or a pointer to `buf`, NUL-terminated.
    let name = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if name.is_null() {
        return None;
    }
    // SAFETY: non-NULL: `buf` now holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// True for an address that can be a node address: not loopback, not
/// link-local, not unspecified or multicast.
fn usable(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            !(a.is_loopback() || a.is_link_local() || a.is_unspecified() || a.is_multicast())
        }
        IpAddr::V6(a) => {
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || a.is_unicast_link_local())
        }
    }
}

/// Every link of the current network namespace with its global addresses,
/// and the ifindexes of the default routes (main table). Runs the netlink
/// dump on a thread of its own (callable from sync code and from inside the
/// tokio runtime alike).
pub fn read_links() -> Result<(Vec<Link>, BTreeSet<u32>), DeviceError> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                    .map_err(DeviceError::Thread)?;
                runtime.block_on(read_links_async())
            })
            .join()
            .unwrap_or_else(|_| Err(DeviceError::Thread(std::io::Error::other("panicked"))))
    })
}

async fn read_links_async() -> Result<(Vec<Link>, BTreeSet<u32>), DeviceError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(DeviceError::Open)?;
    let connection = tokio::spawn(connection);
    let result = dump(&handle).await;
    connection.abort();
    result
}

async fn dump(handle: &rtnetlink::Handle) -> Result<(Vec<Link>, BTreeSet<u32>), DeviceError> {
    let list = |what| move |source| DeviceError::List { what, source };
    let mut links = Vec::new();
    let mut stream = handle.link().get().execute();
    while let Some(msg) = stream.try_next().await.map_err(list("links"))? {
        let name = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        });
        let kind = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                LinkInfo::Kind(kind) => Some(kind.to_string()),
                _ => None,
            }),
            _ => None,
        });
        let peer_netns = msg
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::LinkNetNsId(_)));
        links.push(Link {
            index: msg.header.index,
            name: name.unwrap_or_default(),
            loopback: msg.header.flags.contains(LinkFlags::Loopback),
            kind,
            addrs: Vec::new(),
            peer_netns,
        });
    }
    let mut stream = handle.address().get().execute();
    while let Some(msg) = stream.try_next().await.map_err(list("addresses"))? {
        if msg.header.scope != AddressScope::Universe {
            continue;
        }
        // IPv4 point-to-point links list the peer as `Address`: `Local` wins.
        let local = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let addr = local.or_else(|| {
            msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        });
        if let (Some(addr), Some(link)) =
            (addr, links.iter_mut().find(|l| l.index == msg.header.index))
            && usable(&addr)
            && !link.addrs.contains(&addr)
        {
            link.addrs.push(addr);
        }
    }
    let mut oifs = BTreeSet::new();
    for query in [
        rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build(),
        rtnetlink::RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let mut stream = handle.route().get(query).execute();
        while let Some(route) = stream.try_next().await.map_err(list("routes"))? {
            let table = route
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(u32::from(route.header.table));
            if route.header.destination_prefix_length != 0
                || table != u32::from(RouteHeader::RT_TABLE_MAIN)
            {
                continue;
            }
            oifs.extend(route.attributes.iter().filter_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            }));
        }
    }
    Ok((links, oifs))
}

/// How long link and address notifications are gathered before one wake-up.
const NOTIFY_DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(100);

/// Watches link and address changes (rtnetlink `RTMGRP_LINK`,
/// `RTMGRP_IPV4_IFADDR`, `RTMGRP_IPV6_IFADDR`) in the current network
/// namespace and bumps `events` once per burst (debounced), so the tc
/// programs reach a new pod device at once instead of at the next reconcile.
/// The task ends when every receiver is gone.
pub fn watch_links(
    events: tokio::sync::watch::Sender<u64>,
) -> Result<tokio::task::JoinHandle<()>, DeviceError> {
    use netlink_sys::{AsyncSocket as _, SocketAddr};
    let (mut connection, _handle, mut messages) =
        rtnetlink::new_connection().map_err(DeviceError::Open)?;
    let groups = rtnetlink::constants::RTMGRP_LINK
        | rtnetlink::constants::RTMGRP_IPV4_IFADDR
        | rtnetlink::constants::RTMGRP_IPV6_IFADDR;
    connection
        .socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, groups))
        .map_err(DeviceError::Open)?;
    let connection = tokio::spawn(connection);
    Ok(tokio::spawn(async move {
        while messages.next().await.is_some() {
            // Gather the rest of the burst (a veth pair is several messages).
            let _ = tokio::time::timeout(NOTIFY_DEBOUNCE, async {
                while messages.next().await.is_some() {}
            })
            .await;
            tracing::debug!("links or addresses changed: checking the tc devices");
            if events.is_closed() {
                break;
            }
            events.send_modify(|n| *n = n.wrapping_add(1));
        }
        connection.abort();
    }))
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use super::*;

    fn link(index: u32, name: &str, addrs: &[&str]) -> Link {
        Link {
            index,
            name: name.to_owned(),
            loopback: name == "lo",
            kind: None,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            peer_netns: false,
        }
    }

    fn kind(mut link: Link, kind: &str) -> Link {
        link.kind = Some(kind.to_owned());
        link
    }

    #[test]
    fn auto_leaves_out_the_pods_side_unless_it_carries_the_default_route() {
        let links = vec![
            link(1, "lo", &["127.0.0.1"]),
            link(2, "eth0", &["192.0.2.10"]),
            kind(link(3, "cni0", &["10.244.0.1"]), "bridge"),
            kind(link(4, "flannel.1", &["10.244.0.0"]), "vxlan"),
            kind(link(5, "vethab12", &["169.254.1.1"]), "veth"),
            kind(link(6, "ovs-system", &["10.1.0.1"]), "openvswitch"),
            kind(link(7, "nk0", &["10.2.0.1"]), "netkit"),
            kind(link(8, "br0", &["198.51.100.7"]), "bridge"),
        ];
        let auto = |oifs: &[u32]| {
            select(
                &links,
                &oifs.iter().copied().collect(),
                &DeviceSelection::Auto,
                &PodDevices::default(),
                true,
            )
        };
        assert_eq!(
            names(&auto(&[2])),
            [("eth0", 0, true), ("flannel.1", 0, true)]
        );
        // A node whose uplink is a bridge.
        let s = auto(&[8]);
        assert_eq!(
            names(&s),
            [("eth0", 0, true), ("flannel.1", 0, true), ("br0", 0, true)]
        );
        assert_eq!(s.snat().0, Some("192.0.2.10".parse().unwrap()));
        // Named, a bridge is taken as asked.
        let named = select(
            &links,
            &BTreeSet::new(),
            &"cni0".parse().unwrap(),
            &PodDevices::default(),
            true,
        );
        assert_eq!(names(&named), [("cni0", 0, true)]);
    }

    #[test]
    fn a_veth_or_netkit_with_its_peer_in_another_namespace_gets_peer_netns() {
        let peer = |mut l: Link| {
            l.peer_netns = true;
            l
        };
        let links = vec![
            peer(kind(link(2, "veth0", &[]), "veth")),
            kind(link(3, "veth1", &[]), "veth"),
            peer(kind(link(4, "nk0", &[]), "netkit")),
            peer(kind(link(5, "vx0", &[]), "vxlan")),
        ];
        let named = select(
            &links,
            &BTreeSet::new(),
            &"veth0,veth1,nk0,vx0".parse().unwrap(),
            &"veth0".parse().unwrap(),
            true,
        );
        const P: u32 = device_flags::PEER_NETNS;
        assert_eq!(
            names(&named),
            [
                ("veth0", C | P, true),
                ("veth1", 0, true),
                ("nk0", P, true),
                ("vx0", 0, true)
            ]
        );
    }

    fn links() -> Vec<Link> {
        vec![
            link(1, "lo", &["127.0.0.1", "::1"]),
            link(2, "eth0", &["192.0.2.10", "2001:db8::10", "192.0.2.11"]),
            link(3, "eth1", &[]),
            link(4, "veth1a", &[]),
            link(5, "veth2b", &["10.0.0.1"]),
            link(6, "eth2", &["198.51.100.1"]),
        ]
    }

    fn names(s: &Selected) -> Vec<(&str, u32, bool)> {
        s.devices
            .iter()
            .map(|d| (d.name.as_str(), d.flags, d.external))
            .collect()
    }

    const C: u32 = device_flags::CLUSTER_IP;

    #[test]
    fn auto_takes_addressed_links_and_the_default_route_but_not_loopback_or_pods() {
        let pods: PodDevices = "veth*".parse().unwrap();
        let s = select(
            &links(),
            &BTreeSet::from([3]),
            &DeviceSelection::Auto,
            &pods,
            true,
        );
        assert_eq!(
            names(&s),
            [
                ("eth0", 0, true),
                ("eth1", 0, true),
                ("eth2", 0, true),
                ("veth1a", C, false),
                ("veth2b", C, false)
            ]
        );
        let addrs: Vec<String> = s.node_addresses().iter().map(|a| a.to_string()).collect();
        assert_eq!(
            addrs,
            ["192.0.2.10", "2001:db8::10", "192.0.2.11", "198.51.100.1"]
        );
        assert_eq!(
            s.snat(),
            (
                Some("192.0.2.10".parse().unwrap()),
                Some("2001:db8::10".parse().unwrap())
            )
        );
        assert!(s.missing.is_empty());
    }

    #[test]
    fn auto_without_a_default_route_skips_links_without_addresses() {
        let s = select(
            &links(),
            &BTreeSet::new(),
            &DeviceSelection::Auto,
            &PodDevices::default(),
            true,
        );
        assert_eq!(
            names(&s),
            [("eth0", 0, true), ("veth2b", 0, true), ("eth2", 0, true)]
        );
    }

    #[test]
    fn named_devices_keep_their_order_and_report_the_missing() {
        let sel: DeviceSelection = "eth2, eth0,nope,eth0".parse().unwrap();
        let s = select(
            &links(),
            &BTreeSet::new(),
            &sel,
            &PodDevices::default(),
            true,
        );
        assert_eq!(names(&s), [("eth2", 0, true), ("eth0", 0, true)]);
        assert_eq!(s.missing, ["nope"]);
        assert_eq!(s.snat().0, Some("198.51.100.1".parse().unwrap()));
        assert_eq!(s.snat().1, Some("2001:db8::10".parse().unwrap()));
    }

    #[test]
    fn without_socket_lb_every_device_translates_cluster_ips() {
        let sel: DeviceSelection = "eth0".parse().unwrap();
        let pods: PodDevices = "veth1a".parse().unwrap();
        let s = select(&links(), &BTreeSet::new(), &sel, &pods, false);
        assert_eq!(names(&s), [("eth0", C, true), ("veth1a", C, false)]);
    }

    #[test]
    fn a_named_device_that_is_also_a_pod_device_is_listed_once_with_both_roles() {
        let sel: DeviceSelection = "veth2b".parse().unwrap();
        let pods: PodDevices = "veth*".parse().unwrap();
        let s = select(&links(), &BTreeSet::new(), &sel, &pods, true);
        assert_eq!(names(&s), [("veth2b", C, true), ("veth1a", C, false)]);
        assert_eq!(s.node_addresses(), ["10.0.0.1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn no_devices_no_snat() {
        let s = select(
            &[],
            &BTreeSet::new(),
            &DeviceSelection::Auto,
            &PodDevices::default(),
            true,
        );
        assert_eq!(s.snat(), (None, None));
        assert!(s.devices.is_empty());
    }

    #[test]
    fn globs() {
        for (p, n, m) in [
            ("veth*", "veth123", true),
            ("veth*", "veth", true),
            ("veth*", "eth0", false),
            ("*", "x", true),
            ("v?th*", "vath9", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("eth0", "eth0", true),
            ("eth0", "eth01", false),
            ("*0", "eth10", true),
        ] {
            assert_eq!(glob_match(p, n), m, "{p} ~ {n}");
        }
    }

    #[test]
    fn parsing_names_and_rejections() {
        assert_eq!(
            "auto".parse::<DeviceSelection>().unwrap(),
            DeviceSelection::Auto
        );
        assert_eq!(
            "eth0,eth1".parse::<DeviceSelection>().unwrap(),
            DeviceSelection::Names(vec!["eth0".into(), "eth1".into()])
        );
        assert_eq!("".parse::<PodDevices>().unwrap(), PodDevices::default());
        assert_eq!(
            "eth0,eth1".parse::<DeviceSelection>().unwrap().to_string(),
            "eth0,eth1"
        );
        for (bad, err) in [
            ("", DeviceSpecError::Empty(String::new())),
            ("eth0,", DeviceSpecError::Empty(String::new())),
            (
                "a-very-long-interface",
                DeviceSpecError::TooLong("a-very-long-interface".into()),
            ),
            ("eth0:1", DeviceSpecError::BadChar("eth0:1".into())),
            ("a/b", DeviceSpecError::BadChar("a/b".into())),
            ("..", DeviceSpecError::Dots("..".into())),
            ("veth*", DeviceSpecError::Glob("veth*".into())),
        ] {
            assert_eq!(bad.parse::<DeviceSelection>(), Err(err), "{bad:?}");
        }
        assert!("veth*,tap?".parse::<PodDevices>().is_ok());
        assert!("veth*,".parse::<PodDevices>().is_err());
    }

    #[test]
    fn device_names_by_index() {
        let (links, _) = read_links().unwrap();
        let lo = links.iter().find(|l| l.loopback).unwrap();
        assert_eq!(name_of(lo.index).as_deref(), Some(lo.name.as_str()));
        assert!(
            lo.addrs.is_empty(),
            "loopback addresses are not global: {lo:?}"
        );
        assert_eq!(name_of(u32::MAX), None);
    }

    #[test]
    fn usable_addresses() {
        for (a, ok) in [
            ("192.0.2.1", true),
            ("127.0.0.1", false),
            ("169.254.1.1", false),
            ("2001:db8::1", true),
            ("fe80::1", false),
            ("::1", false),
        ] {
            assert_eq!(usable(&a.parse().unwrap()), ok, "{a}");
        }
    }
}
