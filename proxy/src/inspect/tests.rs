//! Golden tests of what `proxy inspect` prints (tables and JSON) for hand-made
//! snapshots, and tests of the views' filters.
//!
//! The goldens live in `testdata/`. After an intended change, rewrite them with
//! `UPDATE_GOLDEN=1 cargo test -p proxy --lib inspect::` and review the diff.
#![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

use std::{
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
};

use proxy_common::{
    AffinityKey, AffinityValue, Reason, ServiceName, ServiceValue, name_flags, names, proto,
    svc_flags,
};

use super::{
    compose::{conntrack_absent, stats_view},
    render::{Output, View, human_age, render},
    view::{
        BackendEntry, BackendsView, ConntrackView, LinkEntry, MapEntry, PINNED_MAPS, StatsView,
        StatusView, TcLinkEntry,
    },
    *,
};
use crate::dataplane::{
    layout::{BackendAddr, CtRaw, FrontendKey},
    reader::{Dataset, FrontendEntries},
};

// ---------------------------------------------------------------------------
// Fixtures.

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn name(namespace: &str, service: &str, port: &str, local: bool) -> ServiceName {
    let mut n = ServiceName::EMPTY;
    n.namespace[..namespace.len()].copy_from_slice(namespace.as_bytes());
    n.namespace_len = namespace.len() as u8;
    n.name[..service.len()].copy_from_slice(service.as_bytes());
    n.name_len = service.len() as u8;
    n.port_name[..port.len()].copy_from_slice(port.as_bytes());
    n.port_name_len = port.len() as u8;
    if local {
        n.flags = name_flags::INTERNAL_TRAFFIC_POLICY_LOCAL;
    }
    n
}

/// Builds a dataset one frontend at a time.
#[derive(Default)]
struct Data(Dataset);

impl Data {
    fn backend(mut self, id: u32, addr: &str, port: u16, protocol: u8) -> Self {
        self.0.backends.insert(
            id,
            BackendAddr {
                addr: ip(addr),
                port,
                proto: protocol,
                flags: 0,
            },
        );
        self
    }

    /// A frontend with `count` in slot 0 and `slots` as (slot, backend id).
    #[expect(clippy::too_many_arguments, reason = "a fixture reads best flat")]
    fn frontend(
        mut self,
        vip: &str,
        port: u16,
        protocol: u8,
        rev_nat_id: u32,
        affinity: Option<u32>,
        count: u16,
        slots: &[(u16, u32)],
        owner: Option<ServiceName>,
    ) -> Self {
        let (flags, affinity_timeout) = match affinity {
            Some(t) => (svc_flags::AFFINITY, t),
            None => (0, 0),
        };
        self.0.frontends.insert(
            FrontendKey {
                addr: ip(vip),
                port,
                proto: protocol,
                scope: proxy_common::scope::INTERNAL,
            },
            FrontendEntries {
                master: Some(ServiceValue {
                    count,
                    rev_nat_id,
                    flags,
                    affinity_timeout,
                    ..Default::default()
                }),
                slots: slots.iter().copied().collect(),
            },
        );
        if let Some(owner) = owner {
            self.0.names.insert(rev_nat_id, owner);
        }
        self
    }
}

impl Data {
    /// Flags backend `id` as running on this node.
    fn local_backend(mut self, id: u32) -> Self {
        if let Some(b) = self.0.backends.get_mut(&id) {
            b.flags |= proxy_common::backend_flags::LOCAL;
        }
        self
    }

    /// Marks frontend `vip:port/TCP` external (slot 0 flags `flags`, name
    /// flags `owner_flags`) and, with `local`, gives it an external-scope
    /// entry with those slots.
    fn external(
        mut self,
        vip: &str,
        port: u16,
        flags: u16,
        owner_flags: u8,
        local: &[(u16, u32)],
    ) -> Self {
        let key = FrontendKey {
            addr: ip(vip),
            port,
            proto: proto::TCP,
            scope: proxy_common::scope::INTERNAL,
        };
        let entries = self.0.frontends.get_mut(&key).unwrap();
        let master = entries.master.as_mut().unwrap();
        master.flags |= flags;
        let mut external = *master;
        let rev_nat_id = master.rev_nat_id;
        if let Some(name) = self.0.names.get_mut(&rev_nat_id) {
            name.flags |= owner_flags;
        }
        if !local.is_empty() {
            external.flags |= svc_flags::ETP_LOCAL;
            external.count = u16::try_from(local.len()).unwrap();
            self.0.frontends.insert(
                FrontendKey {
                    scope: proxy_common::scope::EXTERNAL,
                    ..key
                },
                FrontendEntries {
                    master: Some(external),
                    slots: local.iter().copied().collect(),
                },
            );
        }
        self
    }
}

/// v4 and v6, TCP and UDP, affinity, a Service with no endpoints and
/// `internalTrafficPolicy: Local`, a frontend from older pins (no name)
/// whose slots show a missing backend and a missing slot, a NodePort with
/// `externalTrafficPolicy: Local` (both scopes), a LoadBalancer IP and an
/// ExternalIP.
fn typical() -> Dataset {
    use proto::{TCP, UDP};
    Data::default()
        .backend(1, "10.244.1.1", 8080, TCP)
        .backend(2, "10.244.1.2", 8080, TCP)
        .backend(3, "10.244.1.3", 8080, TCP)
        .backend(4, "10.244.1.1", 5353, UDP)
        .backend(5, "10.244.1.2", 5353, UDP)
        .backend(6, "fd00:244::1", 8080, TCP)
        .frontend(
            "10.96.0.10",
            80,
            TCP,
            1,
            Some(10_800),
            3,
            &[(1, 1), (2, 2), (3, 3)],
            Some(name("pxt", "web", "http", false)),
        )
        .frontend(
            "10.96.0.10",
            53,
            UDP,
            2,
            Some(10_800),
            2,
            &[(1, 4), (2, 5)],
            Some(name("pxt", "web", "dns", false)),
        )
        .frontend(
            "fd00:96::10",
            80,
            TCP,
            3,
            None,
            1,
            &[(1, 6)],
            Some(name("pxt", "web", "http", false)),
        )
        .frontend(
            "10.96.0.20",
            443,
            TCP,
            4,
            None,
            0,
            &[],
            Some(name("kube-system", "metrics", "", true)),
        )
        .frontend(
            "10.96.0.30",
            8080,
            TCP,
            5,
            None,
            3,
            &[(1, 1), (2, 99)],
            None,
        )
        .frontend(
            "192.168.1.10",
            30080,
            TCP,
            6,
            None,
            2,
            &[(1, 1), (2, 2)],
            Some(name("pxt", "web", "http", false)),
        )
        .local_backend(1)
        .external(
            "192.168.1.10",
            30080,
            svc_flags::EXTERNAL | svc_flags::NODE_PORT,
            name_flags::EXTERNAL_TRAFFIC_POLICY_LOCAL,
            &[(1, 1)],
        )
        .frontend(
            "203.0.113.9",
            80,
            TCP,
            7,
            None,
            1,
            &[(1, 3)],
            Some(name("pxt", "web", "http", false)),
        )
        .external(
            "203.0.113.9",
            80,
            svc_flags::EXTERNAL,
            name_flags::LOAD_BALANCER,
            &[],
        )
        .frontend(
            "192.0.2.7",
            80,
            TCP,
            8,
            None,
            1,
            &[(1, 2)],
            Some(name("pxt", "web", "http", false)),
        )
        .external("192.0.2.7", 80, svc_flags::EXTERNAL, 0, &[])
        .0
}

const NOW_NS: u64 = 50_000_000_000_000;

fn affinity_entries() -> Vec<(AffinityKey, AffinityValue)> {
    let entry = |client, rev_nat_id, backend_id, slot, age_ms: u64| {
        (
            AffinityKey {
                client,
                rev_nat_id,
                _pad: 0,
            },
            AffinityValue {
                last_used_ns: NOW_NS - age_ms * 1_000_000,
                backend_id,
                slot,
                _pad: 0,
            },
        )
    };
    vec![
        // Live, on web's TCP port.
        entry(4097, 1, 2, 2, 1_500),
        // Past web's 3 h timeout on the UDP port.
        entry(4098, 2, 5, 2, 4 * 3_600_000 + 61_000),
        // A frontend that is gone, and its backend with it.
        entry(4099, 9, 42, 1, 12),
    ]
}

/// A NodePort-like flow to web's TCP port, SNATed (forward and reply), a
/// local client's flow to the IPv6 frontend (not SNATed, closing), and a
/// flow whose frontend and backend are gone.
fn ct_entries() -> Vec<CtRaw> {
    let sa = |s: &str| -> (std::net::IpAddr, u16) {
        let a: std::net::SocketAddr = s.parse().unwrap();
        (a.ip(), a.port())
    };
    let flow =
        |proto, src, dst, new_src, new_dst, rev_nat_id, flags, backend_id, idle_ms: u64| CtRaw {
            proto,
            src: sa(src),
            dst: sa(dst),
            new_src: sa(new_src),
            new_dst: sa(new_dst),
            rev_nat_id,
            flags,
            backend_id,
            last_seen_ns: NOW_NS - idle_ms * 1_000_000,
            pending: false,
        };
    use proxy_common::ct_flags::{CLOSING, REPLY, SNAT};
    vec![
        flow(
            proto::TCP,
            "10.244.1.2:8080",
            "192.0.2.1:40001",
            "10.96.0.10:80",
            "198.51.100.7:51000",
            1,
            REPLY | SNAT,
            2,
            20,
        ),
        flow(
            proto::TCP,
            "198.51.100.7:51000",
            "10.96.0.10:80",
            "192.0.2.1:40001",
            "10.244.1.2:8080",
            1,
            SNAT,
            2,
            20,
        ),
        flow(
            proto::TCP,
            "[fd00:1::5]:33000",
            "[fd00:96::10]:80",
            "[fd00:1::5]:33000",
            "[fd00:244::1]:8080",
            3,
            CLOSING,
            6,
            2_500,
        ),
        flow(
            proto::UDP,
            "10.1.0.9:5000",
            "10.96.0.99:53",
            "10.1.0.9:5000",
            "10.244.9.9:5353",
            9,
            0,
            42,
            61_000,
        ),
    ]
}

fn typical_stats() -> StatsView {
    let totals: Vec<(Reason, u64)> = Reason::ALL
        .iter()
        .map(|r| {
            let n = match r {
                Reason::Translated => 1_234,
                Reason::NotAService => 98_765,
                Reason::NoBackend => 3,
                Reason::ReplyRevNatted => 400,
                Reason::PeerRevNatted => 12,
                Reason::AffinityHit => 77,
                _ => 0,
            };
            (*r, n)
        })
        .collect();
    stats_view(&totals)
}

fn link(program: &str, link_id: u32, prog_id: u32, attach: &str) -> LinkEntry {
    LinkEntry {
        program: program.to_owned(),
        pin: PathBuf::from(format!("/sys/fs/bpf/proxy/v1/links/cgroup-4242/{program}")),
        link_id: Some(link_id),
        program_id: Some(prog_id),
        attach_type: Some(attach.to_owned()),
        cgroup_id: Some(4242),
        cgroup_path: Some(PathBuf::from("/sys/fs/cgroup")),
        error: None,
    }
}

fn typical_links() -> Vec<LinkEntry> {
    vec![
        link("sock_connect4", 11, 101, "cgroup_inet4_connect"),
        link("sock_connect6", 12, 102, "cgroup_inet6_connect"),
        link("sock_getpeername4", 17, 107, "cgroup_inet4_getpeername"),
        link("sock_getpeername6", 18, 108, "cgroup_inet6_getpeername"),
        link("sock_recvmsg4", 15, 105, "cgroup_udp4_recvmsg"),
        link("sock_recvmsg6", 16, 106, "cgroup_udp6_recvmsg"),
        link("sock_sendmsg4", 13, 103, "cgroup_udp4_sendmsg"),
        link("sock_sendmsg6", 14, 104, "cgroup_udp6_sendmsg"),
    ]
}

fn tc_link(device: Option<&str>, ifindex: u32, program: &str, link_id: u32) -> TcLinkEntry {
    TcLinkEntry {
        device: device.map(str::to_owned),
        ifindex,
        direction: if program == "tc_egress" {
            "egress"
        } else {
            "ingress"
        },
        program: program.to_owned(),
        pin: PathBuf::from(format!("/sys/fs/bpf/proxy/v2/links/tc-{ifindex}/{program}")),
        link_id: Some(link_id),
        program_id: Some(200 + link_id),
        attached: true,
        error: None,
    }
}

/// Two devices attached, one detached by hand (device gone), one unreadable.
fn typical_tc_links() -> Vec<TcLinkEntry> {
    let mut detached = tc_link(None, 9, "tc_ingress", 33);
    detached.attached = false;
    vec![
        tc_link(Some("eth0"), 2, "tc_egress", 21),
        tc_link(Some("eth0"), 2, "tc_ingress", 20),
        tc_link(Some("veth1"), 5, "tc_egress", 23),
        tc_link(Some("veth1"), 5, "tc_ingress", 22),
        detached,
        TcLinkEntry {
            link_id: None,
            program_id: None,
            error: Some("reading the link: Permission denied (os error 13)".to_owned()),
            ..tc_link(None, 9, "tc_egress", 0)
        },
    ]
}

/// The `TC_TAIL` slots holding these program ids (`None`: empty).
fn tail_calls(ids: &[Option<u32>]) -> Vec<crate::inspect::view::TailCallEntry> {
    proxy_common::tail::PROGRAMS
        .iter()
        .zip(ids)
        .map(
            |(&(slot, program), &program_id)| crate::inspect::view::TailCallEntry {
                slot,
                program,
                program_id,
                error: None,
            },
        )
        .collect()
}

/// Fill levels from `(name, kind, entries, max)`; `None` entries: not pinned.
fn maps(levels: &[(&'static str, &str, Option<u64>, u32)]) -> Vec<MapEntry> {
    levels
        .iter()
        .map(|(name, kind, entries, max)| match entries {
            Some(n) => MapEntry::new(name, kind, *n, *max),
            None => MapEntry::absent(name),
        })
        .collect()
}

fn status(links: Vec<LinkEntry>, maps: Vec<MapEntry>) -> StatusView {
    StatusView {
        mode: "ebpf",
        datapath: "socket-lb",
        pin_path: PathBuf::from("/sys/fs/bpf/proxy"),
        links,
        tc_links: Vec::new(),
        tail_calls: Vec::new(),
        maps,
        vip_routes: Some(Vec::new()),
    }
}

fn empty_maps() -> Vec<MapEntry> {
    maps(&[
        (names::SVC_V4, "hash", Some(0), 262_144),
        (names::SVC_V6, "hash", Some(0), 262_144),
        (names::BACKEND_V4, "hash", Some(0), 131_072),
        (names::BACKEND_V6, "hash", Some(0), 131_072),
        (names::REVNAT_V4, "hash", Some(0), 65_535),
        (names::REVNAT_V6, "hash", Some(0), 65_535),
        (names::SVC_NAMES, "hash", Some(0), 65_535),
        (names::SOCK_RNAT_V4, "lru_hash", Some(0), 131_072),
        (names::SOCK_RNAT_V6, "lru_hash", Some(0), 131_072),
        (names::AFFINITY, "lru_hash", Some(0), 65_536),
        (names::STATS, "percpu_array", Some(64), 64),
        (names::CT_V4, "lru_hash", Some(0), 262_144),
        (names::CT_V6, "lru_hash", Some(0), 262_144),
        (names::CT_PENDING_V4, "lru_hash", Some(0), 16_384),
        (names::CT_PENDING_V6, "lru_hash", Some(0), 16_384),
        (names::NODE_CFG, "array", Some(1), 1),
        (names::DEVICES, "hash", Some(0), 256),
        (names::SRC_RANGE_V4, "lpm_trie", Some(0), 65_536),
        (names::SRC_RANGE_V6, "lpm_trie", Some(0), 65_536),
        (names::LOCAL_V4, "lpm_trie", Some(0), 64),
        (names::LOCAL_V6, "lpm_trie", Some(0), 64),
        (names::MAGLEV, "hash", Some(0), 65_536),
        (names::MAGLEV_CFG, "array", Some(1), 1),
        (names::TC_TAIL, "prog_array", Some(2), 8),
    ])
}

// ---------------------------------------------------------------------------
// Goldens.

/// Renders each `(command, view)` in both formats into one golden per format.
struct Golden {
    table: String,
    json: String,
}

impl Golden {
    fn new() -> Self {
        Self {
            table: String::new(),
            json: String::new(),
        }
    }

    fn add<V: View>(&mut self, command: &str, view: &V) {
        if !self.table.is_empty() {
            self.table.push('\n');
            self.json.push('\n');
        }
        writeln!(self.table, "$ proxy inspect {command}").unwrap();
        self.table.push_str(&render(view, Output::Table).unwrap());
        writeln!(self.json, "$ proxy inspect {command} --output json").unwrap();
        self.json.push_str(&render(view, Output::Json).unwrap());
    }

    fn check(&self, scenario: &str) {
        check_golden(&format!("{scenario}.txt"), &self.table);
        check_golden(&format!("{scenario}.json.txt"), &self.json);
    }
}

fn golden_path(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/inspect/testdata")
        .join(file)
}

/// Compares `actual` with the golden file, or rewrites it under `UPDATE_GOLDEN=1`.
fn check_golden(file: &str, actual: &str) {
    let path = golden_path(file);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read golden {}: {e}\nCreate it with UPDATE_GOLDEN=1 cargo test -p proxy --lib inspect::",
            path.display()
        )
    });
    if expected != actual {
        panic!("{}", golden_diff(&path, &expected, actual));
    }
}

/// The lines that differ, as `-expected`/`+actual` pairs with line numbers.
fn golden_diff(path: &Path, expected: &str, actual: &str) -> String {
    let e: Vec<&str> = expected.lines().collect();
    let a: Vec<&str> = actual.lines().collect();
    let mut out = format!(
        "output differs from golden {} ({} lines expected, {} printed):\n",
        path.display(),
        e.len(),
        a.len()
    );
    let mut shown = 0;
    for i in 0..e.len().max(a.len()) {
        let (x, y) = (e.get(i), a.get(i));
        if x == y {
            continue;
        }
        if shown == 20 {
            out.push_str("…\n");
            break;
        }
        shown += 1;
        let _ = writeln!(out, "line {}:", i + 1);
        if let Some(x) = x {
            let _ = writeln!(out, "-{x}");
        }
        if let Some(y) = y {
            let _ = writeln!(out, "+{y}");
        }
    }
    out.push_str(
        "If the change is intended: UPDATE_GOLDEN=1 cargo test -p proxy --lib inspect:: \
         and review the diff.\n",
    );
    out
}

fn all_views(golden: &mut Golden, data: &Dataset, status_view: &StatusView) {
    let all = Filter::default();
    golden.add("services", &data.services(&all));
    golden.add("backends", &data.backends(&all));
    let entries = if data.frontends.is_empty() {
        Vec::new()
    } else {
        affinity_entries()
    };
    golden.add("affinity", &data.affinity(&entries, NOW_NS, &all));
    let flows = if data.frontends.is_empty() {
        Vec::new()
    } else {
        ct_entries()
    };
    golden.add("conntrack", &data.conntrack(&flows, NOW_NS, &all));
    golden.add(
        "stats",
        &if data.frontends.is_empty() {
            stats_view(&Reason::ALL.map(|r| (r, 0)))
        } else {
            typical_stats()
        },
    );
    golden.add("status", status_view);
}

#[test]
fn golden_empty_maps() {
    let mut golden = Golden::new();
    all_views(
        &mut golden,
        &Dataset::default(),
        &status(Vec::new(), empty_maps()),
    );
    golden.check("empty");
}

#[test]
fn golden_typical() {
    let mut golden = Golden::new();
    let mut fill = empty_maps();
    for (name, n) in [
        (names::SVC_V4, 12),
        (names::SVC_V6, 2),
        (names::BACKEND_V4, 5),
        (names::BACKEND_V6, 1),
        (names::REVNAT_V4, 4),
        (names::REVNAT_V6, 1),
        (names::SVC_NAMES, 4),
        (names::SOCK_RNAT_V4, 37),
        (names::AFFINITY, 3),
    ] {
        let m = fill.iter_mut().find(|m| m.name == name).unwrap();
        *m = MapEntry::new(name, m.kind.as_deref().unwrap(), n, m.max_entries.unwrap());
    }
    let mut view = status(typical_links(), fill);
    view.tc_links = typical_tc_links();
    view.tail_calls = tail_calls(&[Some(301), Some(302)]);
    all_views(&mut golden, &typical(), &view);
    golden.check("typical");
}

/// Maps close to their capacity, `SVC_NAMES` not pinned (older daemon), one
/// link detached by hand and one that cannot be read.
#[test]
fn golden_nearly_full() {
    let mut links = typical_links();
    links[1].cgroup_id = Some(0);
    links[1].cgroup_path = None;
    links[2] = LinkEntry {
        link_id: None,
        program_id: None,
        attach_type: None,
        cgroup_id: None,
        cgroup_path: None,
        error: Some("reading the link: Permission denied (os error 13)".to_owned()),
        ..links[2].clone()
    };
    let fill = maps(&[
        (names::SVC_V4, "hash", Some(262_000), 262_144),
        (names::SVC_V6, "hash", Some(262_144), 262_144),
        (names::BACKEND_V4, "hash", Some(130_000), 131_072),
        (names::BACKEND_V6, "hash", Some(1), 131_072),
        (names::REVNAT_V4, "hash", Some(65_500), 65_535),
        (names::REVNAT_V6, "hash", Some(35), 65_535),
        (names::SVC_NAMES, "hash", None, 0),
        (names::SOCK_RNAT_V4, "lru_hash", Some(131_072), 131_072),
        (names::SOCK_RNAT_V6, "lru_hash", Some(131_071), 131_072),
        (names::AFFINITY, "lru_hash", Some(65_536), 65_536),
        (names::STATS, "percpu_array", Some(64), 64),
        (names::CT_V4, "lru_hash", Some(0), 262_144),
        (names::CT_V6, "lru_hash", Some(0), 262_144),
        (names::CT_PENDING_V4, "lru_hash", Some(0), 16_384),
        (names::CT_PENDING_V6, "lru_hash", Some(0), 16_384),
        (names::NODE_CFG, "array", Some(1), 1),
        (names::DEVICES, "hash", Some(0), 256),
        (names::LOCAL_V4, "lpm_trie", Some(0), 64),
        (names::LOCAL_V6, "lpm_trie", Some(0), 64),
        (names::MAGLEV, "hash", Some(0), 65_536),
        (names::MAGLEV_CFG, "array", Some(1), 1),
    ]);
    let mut golden = Golden::new();
    // Two frontends did not fit: served from userspace, on VIP routes.
    let status =
        status(links, fill).with_vip_routes(Some(vec![ip("10.96.200.1"), ip("fd00:96::200:1")]));
    golden.add("status", &status);
    golden.check("nearly-full");
}

/// No maps pinned, VIP routes of ours: the userspace mode; and routes that
/// could not be listed.
#[test]
fn golden_userspace() {
    let mut golden = Golden::new();
    golden.add(
        "status",
        &StatusView::userspace(
            PathBuf::from("/sys/fs/bpf/proxy"),
            vec![ip("10.96.0.10"), ip("10.96.0.20"), ip("fd00:96::10")],
        ),
    );
    golden.add(
        "status",
        &status(typical_links(), empty_maps()).with_vip_routes(None),
    );
    golden.check("userspace");
}

// ---------------------------------------------------------------------------
// Views.

#[test]
fn status_lists_every_pinned_map() {
    assert_eq!(
        empty_maps().iter().map(|m| m.name).collect::<Vec<_>>(),
        PINNED_MAPS
    );
}

#[test]
fn services_filter_by_service_and_by_vip() {
    let data = typical();
    let web = Filter {
        service: Some("pxt/web".parse().unwrap()),
        vip: None,
    };
    let frontends: Vec<String> = data
        .services(&web)
        .services
        .into_iter()
        .map(|s| s.frontend)
        .collect();
    assert_eq!(
        frontends,
        [
            "10.96.0.10:53/UDP",
            "10.96.0.10:80/TCP",
            "192.0.2.7:80/TCP",
            // The NodePort's internal and external scopes.
            "192.168.1.10:30080/TCP",
            "192.168.1.10:30080/TCP",
            "203.0.113.9:80/TCP",
            "[fd00:96::10]:80/TCP"
        ]
    );

    let v6 = Filter {
        service: None,
        vip: Some(ip("fd00:96::10")),
    };
    let frontends: Vec<String> = data
        .services(&v6)
        .services
        .into_iter()
        .map(|s| s.frontend)
        .collect();
    assert_eq!(frontends, ["[fd00:96::10]:80/TCP"]);

    let both = Filter {
        service: Some("pxt/web".parse().unwrap()),
        vip: Some(ip("10.96.0.30")),
    };
    assert!(data.services(&both).services.is_empty());
}

#[test]
fn an_unnamed_frontend_is_shown_but_never_matches_a_service_filter() {
    let data = typical();
    let unnamed = data
        .services(&Filter::default())
        .services
        .into_iter()
        .find(|s| s.frontend == "10.96.0.30:8080/TCP")
        .unwrap();
    assert_eq!((unnamed.service, unnamed.traffic_policy), (None, None));
    let any = Filter {
        service: Some("default/anything".parse().unwrap()),
        vip: Some(ip("10.96.0.30")),
    };
    assert!(data.services(&any).services.is_empty());
}

#[test]
fn external_frontends_show_their_kind_scope_and_policy() {
    let rows: Vec<(String, &str, &str, Option<&str>, u16)> = typical()
        .services(&Filter::default())
        .services
        .into_iter()
        .filter(|s| s.kind != "ClusterIP")
        .map(|s| {
            (
                s.frontend,
                s.kind,
                s.scope,
                s.external_traffic_policy,
                s.slot_count,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                "192.0.2.7:80/TCP".into(),
                "ExternalIP",
                "internal",
                Some("Cluster"),
                1
            ),
            (
                "192.168.1.10:30080/TCP".into(),
                "NodePort",
                "internal",
                Some("Local"),
                2
            ),
            (
                "192.168.1.10:30080/TCP".into(),
                "NodePort",
                "external",
                Some("Local"),
                1
            ),
            (
                "203.0.113.9:80/TCP".into(),
                "LoadBalancer",
                "internal",
                Some("Cluster"),
                1
            ),
        ]
    );
}

/// A LoadBalancer frontend with `loadBalancerSourceRanges` shows the sources
/// it admits (the ALLOW entries); one whose list admits no source of its
/// family shows an empty list; others show none.
#[test]
fn load_balancer_frontends_show_the_sources_they_admit() {
    use crate::dataplane::reader::SourceRangeEntry;
    let mut data = typical();
    let lb = data
        .frontends
        .iter()
        .find(|(k, _)| k.addr == ip("203.0.113.9"))
        .and_then(|(_, e)| e.master)
        .unwrap()
        .rev_nat_id;
    let entry = |addr: &str, prefix, allow| SourceRangeEntry {
        addr: ip(addr),
        prefix,
        allow,
    };
    data.source_ranges.insert(
        lb,
        vec![entry("0.0.0.0", 0, false), entry("198.51.100.0", 24, true)],
    );
    let view = data.services(&Filter::default());
    let shown: Vec<(String, Option<Vec<String>>)> = view
        .services
        .iter()
        .filter(|s| s.kind != "ClusterIP")
        .map(|s| (s.frontend.clone(), s.source_ranges.clone()))
        .collect();
    assert_eq!(
        shown,
        [
            ("192.0.2.7:80/TCP".into(), None),
            ("192.168.1.10:30080/TCP".into(), None),
            ("192.168.1.10:30080/TCP".into(), None),
            (
                "203.0.113.9:80/TCP".into(),
                Some(vec!["198.51.100.0/24".into()])
            ),
        ]
    );
    assert!(
        view.table()
            .contains("203.0.113.9:80/TCP (internal) admits only: 198.51.100.0/24\n"),
        "{}",
        view.table()
    );
    data.source_ranges
        .insert(lb, vec![entry("0.0.0.0", 0, false)]);
    assert!(
        data.services(&Filter::default())
            .table()
            .contains("203.0.113.9:80/TCP (internal) admits only: no source\n")
    );
}

#[test]
fn backends_count_the_frontends_that_reach_them() {
    let data = typical();
    let all = data.backends(&Filter::default()).backends;
    let count = |id| all.iter().find(|b| b.id == id).unwrap().frontends;
    // Backend 1 is in web's TCP port, the unnamed frontend and the NodePort
    // (both its scopes count once); backend 2 in web's TCP port, the
    // NodePort and the ExternalIP.
    assert_eq!((count(1), count(2), count(6)), (3, 3, 1));
    let udp = data.backends(&Filter {
        service: Some("pxt/web".parse().unwrap()),
        vip: Some(ip("10.96.0.10")),
    });
    let ids: Vec<u32> = udp.backends.iter().map(|b| b.id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
}

/// A backend in no published slot (a terminating endpoint's, or a deleted
/// one's that drains) is listed with 0 frontends, marked in the table.
#[test]
fn a_backend_in_no_slot_shows_as_retained() {
    let view = BackendsView {
        backends: vec![BackendEntry {
            id: 9,
            addr: ip("10.244.2.11"),
            port: 8080,
            protocol: "TCP".into(),
            frontends: 0,
            local: false,
        }],
    };
    let table = view.table();
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|row| row.contains("0 (retained)")),
        "{table}"
    );
}

#[test]
fn affinity_ages_entries_with_the_kernel_clock_and_filters_by_frontend() {
    let data = typical();
    let view = data.affinity(&affinity_entries(), NOW_NS, &Filter::default());
    let summary: Vec<(u64, Option<bool>, u64)> = view
        .affinity
        .iter()
        .map(|a| (a.client_netns_cookie, a.expired, a.age_ms))
        .collect();
    assert_eq!(
        summary,
        [
            // Sorted by frontend: 10.96.0.10:53/UDP before :80/TCP; the
            // entry whose frontend is gone last.
            (4098, Some(true), 4 * 3_600_000 + 61_000),
            (4097, Some(false), 1_500),
            (4099, None, 12),
        ]
    );
    let tcp = Filter {
        service: None,
        vip: Some(ip("10.96.0.10")),
    };
    assert_eq!(
        data.affinity(&affinity_entries(), NOW_NS, &tcp)
            .affinity
            .len(),
        2
    );
}

#[test]
fn a_stamp_after_now_is_age_zero() {
    let data = typical();
    let mut entries = affinity_entries();
    entries[0].1.last_used_ns = NOW_NS + 5;
    let view = data.affinity(&entries[..1], NOW_NS, &Filter::default());
    assert_eq!(view.affinity[0].age_ms, 0);
}

#[test]
fn service_selectors_need_a_namespace_and_a_name() {
    assert_eq!(
        "pxt/web".parse::<ServiceSelector>(),
        Ok(ServiceSelector {
            namespace: "pxt".into(),
            name: "web".into()
        })
    );
    for bad in ["web", "/web", "pxt/", "a/b/c"] {
        assert!(
            bad.parse::<ServiceSelector>().is_err(),
            "{bad} was accepted"
        );
    }
}

#[test]
fn conntrack_filters_by_the_flows_frontend() {
    let data = typical();
    let vip = |v: &str| Filter {
        vip: Some(v.parse().unwrap()),
        service: None,
    };
    let view = data.conntrack(&ct_entries(), NOW_NS, &vip("10.96.0.10"));
    assert_eq!(view.flows.len(), 2, "{view:#?}");
    assert_eq!(view.flows[0].direction, "forward");
    assert_eq!(view.flows[1].direction, "reply");
    assert!(view.flows.iter().all(|f| f.snat && f.rev_nat_id == 1));
    let view = data.conntrack(&ct_entries(), NOW_NS, &vip("fd00:96::10"));
    assert_eq!(view.flows.len(), 1);
    assert!(view.flows[0].closing);
    assert_eq!(view.flows[0].idle_ms, 2_500);
    let view = data.conntrack(&ct_entries(), NOW_NS, &vip("10.96.0.99"));
    assert!(
        view.flows.is_empty(),
        "a flow whose frontend is gone matches no VIP"
    );
    let view = data.conntrack(&ct_entries(), NOW_NS, &Filter::default());
    assert_eq!(view.flows.len(), 4);
    assert_eq!(view.flows[3].frontend, None);
    assert_eq!(view.flows[3].backend, None);
    assert!(view.flows.iter().all(|f| !f.pending));
}

#[test]
fn conntrack_marks_flows_not_answered_yet() {
    let data = typical();
    let raw: Vec<CtRaw> = ct_entries().into_iter().map(CtRaw::pending).collect();
    let view = data.conntrack(&raw[..1], NOW_NS, &Filter::default());
    assert!(view.flows[0].pending, "{view:#?}");
    let table = render(&view, Output::Table).unwrap();
    assert!(table.contains("snat,pending"), "{table}");
}

#[test]
fn conntrack_says_the_map_is_absent() {
    let view: ConntrackView = conntrack_absent();
    let json: serde_json::Value =
        serde_json::from_str(&render(&view, Output::Json).unwrap()).unwrap();
    assert_eq!(json["map_present"], false);
    assert_eq!(json["flows"], serde_json::json!([]));
    assert_eq!(render(&view, Output::Table).unwrap().lines().count(), 1);
}

#[test]
fn ages_read_like_durations() {
    assert_eq!(
        [0, 999, 1_500, 59_999, 61_000, 3_600_000 + 60_000].map(human_age),
        ["0ms", "999ms", "1.5s", "59.9s", "1m01s", "1h01m"]
    );
}

#[test]
fn pins_of_another_layout_are_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    // The unversioned layout (v0) keeps `maps/` directly under the pin path.
    std::fs::create_dir(dir.path().join("maps")).unwrap();
    let layout = crate::dataplane::loader::PinLayout::new(dir.path());
    let message = Pins::open(layout).unwrap_err().to_string();
    assert!(
        message.contains("another layout version are there (v0)")
            && message.contains(&format!("reads layout v{}", proxy_common::LAYOUT_VERSION)),
        "{message}"
    );
}

#[test]
fn pins_outside_bpffs_are_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let layout = crate::dataplane::loader::PinLayout::new(dir.path());
    std::fs::create_dir_all(layout.maps()).unwrap();
    let error = Pins::open(layout).unwrap_err();
    assert!(matches!(error, InspectError::NotBpffs { .. }), "{error:?}");
    assert!(
        error.to_string().contains("not on a BPF filesystem"),
        "{error}"
    );
}

#[test]
fn a_missing_pin_path_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let layout = crate::dataplane::loader::PinLayout::new(dir.path().join("nowhere"));
    let error = Pins::open(layout.clone()).unwrap_err();
    assert!(matches!(error, InspectError::NoPins { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains(&layout.maps().display().to_string())
            && message.contains("is the proxy running"),
        "{message}"
    );
}

// ---------------------------------------------------------------------------
// `inspect maglev`.

const MAGLEV_SEED: u32 = 1_835_100_012;

/// Hand-made tables of [`typical`]'s external frontends (size 7, to stay
/// readable): the NodePort's two scopes, the LoadBalancer IP, the
/// ExternalIP with a backend id the backend maps lack, and a table whose
/// frontend is gone.
fn typical_maglev() -> (proxy_common::MaglevConfig, crate::dataplane::maglev::Tables) {
    use crate::plan::Scope;
    let config = proxy_common::MaglevConfig {
        size: 7,
        seed: MAGLEV_SEED,
    };
    let tables = [
        ((6, Scope::Internal), vec![1, 2, 1, 2, 1, 2, 1]),
        ((6, Scope::External), vec![1; 7]),
        ((7, Scope::Internal), vec![3; 7]),
        ((8, Scope::Internal), vec![2, 99, 2, 2, 99, 2, 2]),
        ((42, Scope::Internal), vec![5; 7]),
    ]
    .into_iter()
    .map(|(key, table)| (key, table.into()))
    .collect();
    (config, tables)
}

#[test]
fn golden_maglev() {
    let mut golden = Golden::new();
    let data = typical();
    let (config, tables) = typical_maglev();
    golden.add(
        "maglev",
        &data.maglev(Some(config), &tables, &Filter::default()),
    );
    golden.add(
        "maglev --vip 203.0.113.9",
        &data.maglev(
            Some(config),
            &tables,
            &Filter {
                vip: Some(ip("203.0.113.9")),
                ..Filter::default()
            },
        ),
    );
    golden.add(
        "maglev (--lb-algorithm=random)",
        &data.maglev(
            Some(proxy_common::MaglevConfig {
                size: 0,
                seed: MAGLEV_SEED,
            }),
            &Default::default(),
            &Filter::default(),
        ),
    );
    golden.add(
        "maglev (pins without the Maglev maps)",
        &data.maglev(None, &Default::default(), &Filter::default()),
    );
    golden.check("maglev");
}

/// `--service` keeps the tables of that Service's frontends; a table whose
/// frontend is gone shows only unfiltered.
#[test]
fn maglev_filters_by_service() {
    let data = typical();
    let (config, tables) = typical_maglev();
    let shown = |filter: &Filter| -> Vec<(u32, &'static str)> {
        data.maglev(Some(config), &tables, filter)
            .tables
            .iter()
            .map(|t| (t.rev_nat_id, t.scope))
            .collect()
    };
    let web = Filter {
        service: Some("pxt/web".parse().unwrap()),
        ..Filter::default()
    };
    assert_eq!(
        shown(&web),
        [
            (6, "internal"),
            (6, "external"),
            (7, "internal"),
            (8, "internal")
        ]
    );
    assert_eq!(shown(&Filter::default()).len(), 5);
    let view = data.maglev(Some(config), &tables, &web);
    assert_eq!(view.memory_bytes, 4 * 4096);
}

/// A table shared by two frontends (the ExternalIP's slot 0 names the
/// LoadBalancer IP's table, 7) lists both; the ExternalIP's own table, named
/// by no slot 0, lists none.
#[test]
fn maglev_shared_table_lists_every_frontend_naming_it() {
    let mut data = typical();
    let (config, tables) = typical_maglev();
    for (key, entries) in data.frontends.iter_mut() {
        if key.to_string().starts_with("192.0.2.7:80/")
            && let Some(master) = entries.master.as_mut()
        {
            master.maglev_table = 7;
        }
    }
    let view = data.maglev(Some(config), &tables, &Filter::default());
    let frontends = |id: u32| -> Vec<String> {
        view.tables
            .iter()
            .find(|t| t.rev_nat_id == id && t.scope == "internal")
            .unwrap()
            .frontends
            .clone()
    };
    assert_eq!(
        frontends(7),
        [
            "192.0.2.7:80/TCP".to_owned(),
            "203.0.113.9:80/TCP".to_owned()
        ]
    );
    assert!(frontends(8).is_empty());
}

/// A table the plan builds (997 entries, three backends) shows each
/// backend's share: ⌊M/N⌋ or ⌈M/N⌉ entries, all of them accounted for.
#[test]
fn maglev_shares_of_a_real_table() {
    use crate::{
        model::{Backend, Protocol},
        plan::{Maglev, Scope},
    };
    let data = typical();
    let backends: Vec<Backend> = ["10.244.1.1", "10.244.1.2", "10.244.1.3"]
        .iter()
        .map(|a| Backend {
            addr: ip(a),
            port: 8080,
            protocol: Protocol::Tcp,
        })
        .collect();
    let maglev = Maglev::new(997, MAGLEV_SEED).unwrap();
    let table: Vec<u32> = maglev
        .table(&backends)
        .unwrap()
        .into_iter()
        .map(|i| i as u32 + 1)
        .collect();
    let tables = [((6, Scope::Internal), table.into())].into_iter().collect();
    let config = proxy_common::MaglevConfig {
        size: 997,
        seed: MAGLEV_SEED,
    };
    let view = data.maglev(Some(config), &tables, &Filter::default());
    let shares: Vec<(u32, usize)> = view.tables[0]
        .backends
        .iter()
        .map(|b| (b.backend_id, b.entries))
        .collect();
    assert_eq!(shares.iter().map(|s| s.1).sum::<usize>(), 997);
    for (id, n) in &shares {
        assert!((332..=333).contains(n), "backend {id} owns {n} entries");
    }
    assert_eq!(view.tables[0].entries, 997);
    assert_eq!(
        view.tables[0].frontends,
        ["192.168.1.10:30080/TCP".to_owned()]
    );
}
