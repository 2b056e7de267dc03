//! Packet-level tests of the tc programs (`tc_ingress`, `tc_egress`) through
//! `BPF_PROG_TEST_RUN`: no device is attached and no packet is sent.
//!
//! The cases are data ([`CASES`]): the services and devices to install, then
//! steps, each a packet described by fields, the hook it goes through, the
//! expected verdict, the expected output packet and the reason counted in
//! `STATS`. Input and expected packets are built with `etherparse`, which
//! computes every checksum from scratch, and outputs are compared byte for
//! byte, so an incremental checksum update that is off shows up as a
//! mismatch. Each case loads the object the `proxy` binary embeds into its own
//! directory of the sandbox's private bpffs, so cases share no map.
//!
//! Runs as root (CAP_BPF, CAP_NET_ADMIN, mounting bpffs), like the other
//! integration tests. `test_run` runs with the loopback device as the packet's
//! device (ifindex 1), which is the ifindex the `DEVICES` entries use.
//!
//! Every test enters its sandbox's network namespace, where forwarding is
//! off: the FIB lookup that follows a translation on ingress therefore says
//! `FWD_DISABLED`, and the translated packet goes to the stack (`TC_ACT_OK`,
//! `tc_fib_forwarding_off` counted, which `run_case` checks).
//! [`fib_forwarding`] turns forwarding on and adds routes inside the sandbox
//! to see the redirects.

use std::{fmt::Write as _, net::IpAddr, path::Path};

use aya::{
    EbpfLoader,
    maps::{
        Array, HashMap, MapData,
        lpm_trie::{Key as LpmKey, LpmTrie},
    },
};
use etherparse::{
    EtherType, Ethernet2Header, Icmpv4Header, Icmpv4Type, Icmpv6Header, Icmpv6Type, IpFragOffset,
    IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, TcpHeader, UdpHeader, icmpv4, icmpv6,
};
use proxy_common::{
    Be16, Be32, CtKeyV4, CtValueV4, NodeConfig, SrcRangeV4, SrcRangeV6, backend_flags, ct_flags,
    ct_timeout, device_flags, names, programs, proto, scope, src_range, svc_flags, tail,
};
use proxy_tests::{
    Sandbox,
    checksum::{self, Checkable},
    ifindex,
    tc_world::{self, TcBackend, TcService, TcWorld},
};

// ---- The cases' vocabulary -------------------------------------------------

/// The loopback device: `test_run` hands the program a packet from it.
const IFINDEX: u32 = 1;
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const NODE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// The SNAT port range the world configures (`NODE_CFG`, as
/// `--snat-port-range` does): away from the programs' built-in 32768-60999,
/// so every case checks that the configured range is used.
const SNAT_MIN: u16 = 20000;
const SNAT_MAX: u16 = 20999;

use tc_world::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT};
/// What a translation on ingress counts after its FIB lookup in a sandbox
/// (forwarding off there).
const FIB_FALLBACK: &str = "tc_fib_forwarding_off";

const NODE4: &str = "192.168.0.10";
const NODE6: &str = "fd00:10::10";
const CLIENT4: &str = "198.51.100.7";
const CLIENT6: &str = "fd00:51::7";
const REMOTE4: &str = "10.244.2.5";
const REMOTE6: &str = "fd00:244::2:5";
const LOCAL4: &str = "10.244.1.5";
const LOCAL6: &str = "fd00:244::1:5";
const POD4: &str = "10.244.1.9";
const CLUSTER_IP4: &str = "10.96.0.10";
const CLUSTER_IP6: &str = "fd00:96::10";
const ROUTER4: &str = "203.0.113.1";
const ROUTER6: &str = "fd00:113::1";

const NODE_PORT: u16 = 30080;
const TARGET: u16 = 8080;
const CLIENT_PORT: u16 = 40000;

const EXT: u16 = svc_flags::EXTERNAL | svc_flags::NODE_PORT;
const EXT_LOCAL: u16 = EXT | svc_flags::ETP_LOCAL;

struct Case {
    name: &'static str,
    /// `DEVICES` entries: (ifindex, flags).
    devices: &'static [(u32, u32)],
    services: &'static [Svc],
    steps: &'static [Step],
}

struct Svc {
    vip: &'static str,
    port: u16,
    proto: u8,
    scope: u8,
    flags: u16,
    rev_nat_id: u32,
    /// Seconds of ClientIP affinity (with `svc_flags::AFFINITY`).
    affinity_timeout: u32,
    backends: &'static [Backend],
}

#[derive(Clone, Copy)]
struct Backend {
    id: u32,
    addr: &'static str,
    port: u16,
    flags: u8,
}

#[expect(
    clippy::large_enum_variant,
    reason = "cases are static data, never moved around"
)]
enum Step {
    /// Runs `input` through `hook`.
    Send {
        hook: Hook,
        input: Pkt,
        verdict: u32,
        output: Out,
        /// The `STATS` counter (snake_case name) that must go up by one.
        reason: &'static str,
    },
    /// Replaces service `svc`'s backends (by index in `services`) and deletes
    /// the backend ids that are no longer used.
    SetBackends {
        svc: usize,
        backends: &'static [Backend],
    },
}

#[derive(Clone, Copy)]
enum Hook {
    Ingress,
    Egress,
}

/// A packet by its fields.
#[derive(Clone, Copy)]
struct Pkt {
    src: Ep,
    dst: Ep,
    l4: L4,
    /// IPv4 only: (more fragments, fragment offset in 8-byte units).
    frag: (bool, u16),
    /// IPv4 only: options bytes (a multiple of 4).
    options: &'static [u8],
    /// Cut the built packet to this many bytes.
    truncate: Option<usize>,
}

#[derive(Clone, Copy)]
struct Ep {
    addr: &'static str,
    port: Port,
}

#[derive(Clone, Copy)]
enum Port {
    N(u16),
    /// The SNAT port the program chose for this case (learnt from the first
    /// output that has one, then required to stay the same).
    Snat,
}

#[derive(Clone, Copy)]
enum L4 {
    Tcp {
        syn: bool,
        fin: bool,
    },
    Udp,
    /// UDP over IPv4 without a checksum (the field is 0).
    UdpNoChecksum,
    /// Another IP protocol; 8 bytes of zeros as its payload.
    Other(u8),
    /// An ICMPv4 destination-unreachable (port) error, quoting nothing useful.
    IcmpUnreachable,
    /// An ICMP/ICMPv6 destination-unreachable quoting this packet's IP
    /// header and first 8 transport bytes.
    IcmpErrorAbout(&'static Pkt),
}

enum Out {
    /// The output is the input, byte for byte.
    Unchanged,
    /// The output is this packet (same MACs as the input).
    Packet(Pkt),
    /// An ICMP/ICMPv6 port-unreachable back to the input's sender.
    Reject,
    /// The TCP RST (RFC 793) back to the input's sender.
    Reset,
    /// Dropped: the output is not looked at.
    Dropped,
}

const fn ep(addr: &'static str, port: u16) -> Ep {
    Ep {
        addr,
        port: Port::N(port),
    }
}

const fn snat(addr: &'static str) -> Ep {
    Ep {
        addr,
        port: Port::Snat,
    }
}

const SYN: L4 = L4::Tcp {
    syn: true,
    fin: false,
};
const ACK: L4 = L4::Tcp {
    syn: false,
    fin: false,
};
const FIN: L4 = L4::Tcp {
    syn: false,
    fin: true,
};

const fn pkt(src: Ep, dst: Ep, l4: L4) -> Pkt {
    Pkt {
        src,
        dst,
        l4,
        frag: (false, 0),
        options: &[],
        truncate: None,
    }
}

const fn send(hook: Hook, input: Pkt, verdict: u32, output: Out, reason: &'static str) -> Step {
    Step::Send {
        hook,
        input,
        verdict,
        output,
        reason,
    }
}

const fn svc(
    vip: &'static str,
    port: u16,
    proto: u8,
    scope: u8,
    flags: u16,
    backends: &'static [Backend],
) -> Svc {
    Svc {
        vip,
        port,
        proto,
        scope,
        flags,
        rev_nat_id: 7,
        affinity_timeout: 0,
        backends,
    }
}

const REMOTE_BE4: Backend = Backend {
    id: 1,
    addr: REMOTE4,
    port: TARGET,
    flags: 0,
};
const LOCAL_BE4: Backend = Backend {
    id: 2,
    addr: LOCAL4,
    port: TARGET,
    flags: backend_flags::LOCAL,
};
const REMOTE_BE6: Backend = Backend {
    id: 3,
    addr: REMOTE6,
    port: TARGET,
    flags: 0,
};
const LOCAL_BE6: Backend = Backend {
    id: 4,
    addr: LOCAL6,
    port: TARGET,
    flags: backend_flags::LOCAL,
};

use Hook::{Egress, Ingress};
use Out::{Dropped, Packet, Reject, Reset, Unchanged};

// ---- The cases ---------------------------------------------------------------

static CASES: &[Case] = &[
    Case {
        name: "nodeport v4 TCP, remote backend: DNAT + SNAT, CT hit, reply on ingress",
        devices: &[],
        services: &[svc(
            NODE4,
            NODE_PORT,
            proto::TCP,
            scope::INTERNAL,
            EXT,
            &[REMOTE_BE4],
        )],
        steps: &[
            send(
                Ingress,
                pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), SYN),
                TC_ACT_OK,
                Packet(pkt(snat(NODE4), ep(REMOTE4, TARGET), SYN)),
                "tc_dnat",
            ),
            send(
                Ingress,
                pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), ACK),
                TC_ACT_OK,
                Packet(pkt(snat(NODE4), ep(REMOTE4, TARGET), ACK)),
                "tc_ct_forward",
            ),
            send(
                Ingress,
                pkt(ep(REMOTE4, TARGET), snat(NODE4), ACK),
                TC_ACT_OK,
                Packet(pkt(ep(NODE4, NODE_PORT), ep(CLIENT4, CLIENT_PORT), ACK)),
                "tc_ct_reply",
            ),
            // A SNATed reply is never rewritten on egress.
            send(
                Egress,
                pkt(ep(REMOTE4, TARGET), snat(NODE4), ACK),
                TC_ACT_OK,
                Unchanged,
                "tc_pass",
            ),
            send(
                Ingress,
                pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), FIN),
                TC_ACT_OK,
                Packet(pkt(snat(NODE4), ep(REMOTE4, TARGET), FIN)),
                "tc_ct_forward",
            ),
        ],
    },
    Case {
        name: "nodeport v4 TCP, local backend: DNAT only, reply rewritten on egress",
        devices: &[],
        services: &[svc(
            NODE4,
            NODE_PORT,
            proto::TCP,
            scope::INTERNAL,
            EXT,
            &[LOCAL_BE4],
        )],
        steps: &[
            send(
                Ingress,
                pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), SYN),
                TC_ACT_OK,
                Packet(pkt(ep(CLIENT4, CLIENT_PORT), ep(LOCAL4, TARGET), SYN)),
                "tc_dnat",
            ),
            send(
                Egress,
                pkt(ep(LOCAL4, TARGET), ep(CLIENT4, CLIENT_PORT), ACK),
                TC_ACT_OK,
                Packet(pkt(ep(NODE4, NODE_PORT), ep(CLIENT4, CLIENT_PORT), ACK)),
                "tc_ct_reply",
            ),
        ],
    },
    Case {
        name: "nodeport v4 UDP, remote backend: DNAT + SNAT and the reply",
        devices: &[],
        services: &[svc(
            NODE4,
            NODE_PORT,
            proto::UDP,
            scope::INTERNAL,
            EXT,
            &[REMOTE_BE4],
        )],
        steps: &[
            send(
                Ingress,
                pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), L4::Udp),
                TC_ACT_OK,
                Packet(pkt(snat(NODE4), ep(REMOTE4, TARGET), L4::Udp)),
                "tc_dnat",
            ),
            send(
                Ingress,
                pkt(ep(REMOTE4, TARGET), snat(NODE4), L4::Udp),
                TC_ACT_OK,
                Packet(pkt(ep(NODE4, NODE_PORT), ep(CLIENT4, CLIENT_PORT), L4::Udp)),
                "tc_ct_reply",
            ),
        ],
    },
    Case {
        name: "v4 UDP without checksum keeps checksum 0",
        devices: &[],
        services: &[svc(
            NODE4,
            NODE_PORT,
            proto::UDP,
            scope::INTERNAL,
            EXT,
            &[LOCAL_BE4],
        )],
        steps: &[
            send(
                Ingress,
                pkt(
                    ep(CLIENT4, CLIENT_PORT),
                    ep(NODE4, NODE_PORT),
                    L4::UdpNoChecksum,
                ),
                TC_ACT_OK,
                Packet(pkt(
                    ep(CLIENT4, CLIENT_PORT),
                    ep(LOCAL4, TARGET),
                    L4::UdpNoChecksum,
                )),
                "tc_dnat",
            ),
            send(
                Egress,
                pkt(
                    ep(LOCAL4, TARGET),
                    ep(CLIENT4, CLIENT_PORT),
                    L4::UdpNoChecksum,
                ),
                TC_ACT_OK,
                Packet(pkt(
                    ep(NODE4, NODE_PORT),
                    ep(CLIENT4, CLIENT_PORT),
                    L4::UdpNoChecksum,
                )),
                "tc_ct_reply",
            ),
        ],
    },
    Case {
        name: "v4 with IP options: the transport header is found after them",
        devices: &[],
        services: &[svc(
            NODE4,
            NODE_PORT,
            proto::TCP,
            scope::INTERNAL,
            EXT,
            &[LOCAL_BE4],
        )],
        steps: &[send(
            Ingress,
            Pkt {
                options: &[1, 1, 1, 0],
                ..pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), SYN)
            },
            TC_ACT_OK,
            Packet(Pkt {
                options: &[1, 1, 1, 0],
                ..pkt(ep(CLIENT4, CLIENT_PORT), ep(LOCAL4, TARGET), SYN)
            }),
            "tc_dnat",
        )],
    },
    Case {
        name: "nodeport v6 TCP, remote backend: DNAT + SNAT, CT hit, reply",
        devices: &[],
        services: &[svc(
            NODE6,
            NODE_PORT,
            proto::TCP,
            scope::INTERNAL,
            EXT,
            &[REMOTE_BE6],
        )],
        steps: &[
            send(
                Ingress,
                pkt(ep(CLIENT6, CLIENT_PORT), ep(NODE6, NODE_PORT), SYN),
                TC_ACT_OK,
                Packet(pkt(snat(NODE6), ep(REMOTE6, TARGET), SYN)),
                "tc_dnat",
            ),
            send(
                Ingress,
                pkt(ep(CLIENT6, CLIENT_PORT), ep(NODE6, NODE_PORT), ACK),
                TC_ACT_OK,
                Packet(pkt(snat(NODE6), ep(REMOTE6, TARGET), ACK)),
                "tc_ct_forward",
            ),
            send(
                Ingress,
                pkt(ep(REMOTE6, TARGET), snat(NODE6), ACK),
                TC_ACT_OK,
                Packet(pkt(ep(NODE6, NODE_PORT), ep(CLIENT6, CLIENT_PORT), ACK)),
                "tc_ct_reply",
            ),
        ],
    },
    Case {
        name: "nodeport v6 UDP, local backend: DNAT, reply on egress",
        devices: &[],
        services: &[svc(
            NODE6,
            NODE_PORT,
            proto::UDP,
            scope::INTERNAL,
            EXT,
            &[LOCAL_BE6],
        )],
        steps: &[
            send(
                Ingress,
                pkt(ep(CLIENT6, CLIENT_PORT), ep(NODE6, NODE_PORT), L4::Udp),
                TC_ACT_OK,
                Packet(pkt(ep(CLIENT6, CLIENT_PORT), ep(LOCAL6, TARGET), L4::Udp)),
                "tc_dnat",
            ),
            send(
                Egress,
                pkt(ep(LOCAL6, TARGET), ep(CLIENT6, CLIENT_PORT), L4::Udp),
                TC_ACT_OK,
                Packet(pkt(ep(NODE6, NODE_PORT), ep(CLIENT6, CLIENT_PORT), L4::Udp)),
                "tc_ct_reply",
            ),
        ],
    },
    Case {
        name: "ETP=Local without local endpoints: dropped, though the cluster has one",
        devices: &[],
        services: &[
            svc(
                NODE4,
                NODE_PORT,
                proto::TCP,
                scope::EXTERNAL,
                EXT_LOCAL,
                &[],
            ),
            svc(
                NODE4,
                NODE_PORT,
                proto::TCP,
                scope::INTERNAL,
                EXT,
                &[REMOTE_BE4],
            ),
        ],
        steps: &[send(
            Ingress,
            pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), SYN),
            TC_ACT_SHOT,
            Dropped,
            "tc_etp_local_dropped",
        )],
    },
    Case {
        name: "ETP=Local: the external scope's local endpoint, no SNAT",
        devices: &[],
        services: &[
            svc(
                NODE4,
                NODE_PORT,
                proto::TCP,
                scope::EXTERNAL,
                EXT_LOCAL,
                &[LOCAL_BE4],
            ),
            svc(
                NODE4,
                NODE_PORT,
                proto::TCP,
                scope::INTERNAL,
                EXT,
                &[REMOTE_BE4],
            ),
        ],
        steps: &[send(
            Ingress,
            pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), SYN),
            TC_ACT_OK,
            Packet(pkt(ep(CLIENT4, CLIENT_PORT), ep(LOCAL4, TARGET), SYN)),
            "tc_dnat",
        )],
    },
    Case {
        name: "no backend v4 TCP: RST out of the device (RST+ACK for a SYN, RST at SEG.ACK otherwise)",
        devices: &[],
        services: &[svc(NODE4, NODE_PORT, proto::TCP, scope::INTERNAL, EXT, &[])],
        steps: &[
            send(
                Ingress,
                pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), SYN),
                TC_ACT_REDIRECT,
                Reset,
                "tc_rejected",
            ),
            send(
                Ingress,
                pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), FIN),
                TC_ACT_REDIRECT,
                Reset,
                "tc_rejected",
            ),
        ],
    },
    Case {
        name: "no backend v4 UDP: ICMP port unreachable out of the device",
        devices: &[],
        services: &[svc(NODE4, NODE_PORT, proto::UDP, scope::INTERNAL, EXT, &[])],
        steps: &[send(
            Ingress,
            pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), L4::Udp),
            TC_ACT_REDIRECT,
            Reject,
            "tc_rejected",
        )],
    },
    Case {
        name: "no backend v6 UDP: ICMPv6 port unreachable out of the device",
        devices: &[],
        services: &[svc(NODE6, NODE_PORT, proto::UDP, scope::INTERNAL, EXT, &[])],
        steps: &[send(
            Ingress,
            pkt(ep(CLIENT6, CLIENT_PORT), ep(NODE6, NODE_PORT), L4::Udp),
            TC_ACT_REDIRECT,
            Reject,
            "tc_rejected",
        )],
    },
    Case {
        name: "no backend v6 TCP: RST out of the device",
        devices: &[],
        services: &[svc(NODE6, NODE_PORT, proto::TCP, scope::INTERNAL, EXT, &[])],
        steps: &[
            send(
                Ingress,
                pkt(ep(CLIENT6, CLIENT_PORT), ep(NODE6, NODE_PORT), SYN),
                TC_ACT_REDIRECT,
                Reset,
                "tc_rejected",
            ),
            send(
                Ingress,
                pkt(ep(CLIENT6, CLIENT_PORT), ep(NODE6, NODE_PORT), ACK),
                TC_ACT_REDIRECT,
                Reset,
                "tc_rejected",
            ),
        ],
    },
    Case {
        name: "hairpin: a pod reaching itself through a ClusterIP is SNATed",
        devices: &[(IFINDEX, device_flags::CLUSTER_IP)],
        services: &[svc(
            CLUSTER_IP4,
            80,
            proto::TCP,
            scope::INTERNAL,
            0,
            &[LOCAL_BE4],
        )],
        steps: &[
            send(
                Ingress,
                pkt(ep(LOCAL4, CLIENT_PORT), ep(CLUSTER_IP4, 80), SYN),
                TC_ACT_OK,
                Packet(pkt(snat(NODE4), ep(LOCAL4, TARGET), SYN)),
                "tc_dnat",
            ),
            send(
                Ingress,
                pkt(ep(LOCAL4, TARGET), snat(NODE4), ACK),
                TC_ACT_OK,
                Packet(pkt(ep(CLUSTER_IP4, 80), ep(LOCAL4, CLIENT_PORT), ACK)),
                "tc_ct_reply",
            ),
        ],
    },
    Case {
        name: "ClusterIP on a device without CLUSTER_IP: untouched",
        devices: &[],
        services: &[svc(
            CLUSTER_IP4,
            80,
            proto::TCP,
            scope::INTERNAL,
            0,
            &[REMOTE_BE4],
        )],
        steps: &[send(
            Ingress,
            pkt(ep(POD4, CLIENT_PORT), ep(CLUSTER_IP4, 80), SYN),
            TC_ACT_OK,
            Unchanged,
            "tc_cluster_ip_skipped",
        )],
    },
    Case {
        name: "ClusterIP on a CLUSTER_IP device: DNAT, no SNAT",
        devices: &[(IFINDEX, device_flags::CLUSTER_IP)],
        services: &[svc(
            CLUSTER_IP4,
            80,
            proto::TCP,
            scope::INTERNAL,
            0,
            &[REMOTE_BE4],
        )],
        steps: &[send(
            Ingress,
            pkt(ep(POD4, CLIENT_PORT), ep(CLUSTER_IP4, 80), SYN),
            TC_ACT_OK,
            Packet(pkt(ep(POD4, CLIENT_PORT), ep(REMOTE4, TARGET), SYN)),
            "tc_dnat",
        )],
    },
    Case {
        name: "a removed backend: the tracked flow is re-balanced to a live one",
        devices: &[],
        services: &[svc(
            NODE4,
            NODE_PORT,
            proto::TCP,
            scope::INTERNAL,
            EXT,
            &[LOCAL_BE4],
        )],
        steps: &[
            send(
                Ingress,
                pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), SYN),
                TC_ACT_OK,
                Packet(pkt(ep(CLIENT4, CLIENT_PORT), ep(LOCAL4, TARGET), SYN)),
                "tc_dnat",
            ),
            Step::SetBackends {
                svc: 0,
                backends: &[REMOTE_BE4],
            },
            send(
                Ingress,
                pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), ACK),
                TC_ACT_OK,
                Packet(pkt(snat(NODE4), ep(REMOTE4, TARGET), ACK)),
                "tc_rebalanced",
            ),
        ],
    },
    Case {
        name: "not a frontend: untouched",
        devices: &[],
        services: &[svc(
            NODE4,
            NODE_PORT,
            proto::TCP,
            scope::INTERNAL,
            EXT,
            &[REMOTE_BE4],
        )],
        steps: &[send(
            Ingress,
            pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, 22), SYN),
            TC_ACT_OK,
            Unchanged,
            "tc_pass",
        )],
    },
    Case {
        name: "truncated headers pass untouched",
        devices: &[],
        services: &[svc(
            NODE4,
            NODE_PORT,
            proto::TCP,
            scope::INTERNAL,
            EXT,
            &[REMOTE_BE4],
        )],
        steps: &[
            // An IPv4 header and nothing after it. (`BPF_PROG_TEST_RUN`
            // itself refuses frames shorter than the IP header.)
            send(
                Ingress,
                Pkt {
                    truncate: Some(14 + 20),
                    ..pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), SYN)
                },
                TC_ACT_OK,
                Unchanged,
                "tc_truncated",
            ),
            // IPv4 header, then 12 of the TCP header's 20 bytes.
            send(
                Ingress,
                Pkt {
                    truncate: Some(14 + 20 + 12),
                    ..pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), SYN)
                },
                TC_ACT_OK,
                Unchanged,
                "tc_truncated",
            ),
            // An IPv6 header and nothing after it.
            send(
                Ingress,
                Pkt {
                    truncate: Some(14 + 40),
                    ..pkt(ep(CLIENT6, CLIENT_PORT), ep(NODE6, NODE_PORT), SYN)
                },
                TC_ACT_OK,
                Unchanged,
                "tc_truncated",
            ),
            // IPv6 header, then 4 bytes of UDP.
            send(
                Ingress,
                Pkt {
                    truncate: Some(14 + 40 + 4),
                    ..pkt(ep(CLIENT6, CLIENT_PORT), ep(NODE6, NODE_PORT), L4::Udp)
                },
                TC_ACT_OK,
                Unchanged,
                "tc_truncated",
            ),
        ],
    },
    Case {
        name: "fragments: a first one is translated, a later one whose first was not seen is dropped",
        devices: &[],
        services: &[svc(
            NODE4,
            NODE_PORT,
            proto::UDP,
            scope::INTERNAL,
            EXT,
            &[LOCAL_BE4],
        )],
        steps: &[
            send(
                Ingress,
                Pkt {
                    frag: (false, 3),
                    ..pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), L4::Udp)
                },
                TC_ACT_SHOT,
                Dropped,
                "tc_fragment_unknown",
            ),
            // Later fragments of other protocols are none of our business.
            send(
                Ingress,
                Pkt {
                    frag: (false, 3),
                    ..pkt(ep(CLIENT4, 0), ep(NODE4, 0), L4::Other(47))
                },
                TC_ACT_OK,
                Unchanged,
                "tc_fragment_passed",
            ),
            send(
                Ingress,
                Pkt {
                    frag: (true, 0),
                    ..pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), L4::Udp)
                },
                TC_ACT_OK,
                Packet(Pkt {
                    frag: (true, 0),
                    ..pkt(ep(CLIENT4, CLIENT_PORT), ep(LOCAL4, TARGET), L4::Udp)
                }),
                "tc_dnat",
            ),
            // A first fragment to something else is none of our business.
            send(
                Ingress,
                Pkt {
                    frag: (true, 0),
                    ..pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, 53), L4::Udp)
                },
                TC_ACT_OK,
                Unchanged,
                "tc_pass",
            ),
        ],
    },
    Case {
        name: "ICMP errors about translated flows are translated back (v4 and v6)",
        devices: &[],
        services: &[
            svc(
                NODE4,
                NODE_PORT,
                proto::TCP,
                scope::INTERNAL,
                EXT,
                &[REMOTE_BE4],
            ),
            svc(
                NODE6,
                NODE_PORT,
                proto::UDP,
                scope::INTERNAL,
                EXT,
                &[LOCAL_BE6],
            ),
        ],
        steps: &[
            send(
                Ingress,
                pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), SYN),
                TC_ACT_OK,
                Packet(pkt(snat(NODE4), ep(REMOTE4, TARGET), SYN)),
                "tc_dnat",
            ),
            // A router on the way to the backend cannot deliver it.
            send(
                Ingress,
                pkt(
                    ep(ROUTER4, 0),
                    ep(NODE4, 0),
                    L4::IcmpErrorAbout(&pkt(snat(NODE4), ep(REMOTE4, TARGET), SYN)),
                ),
                TC_ACT_OK,
                Packet(pkt(
                    ep(ROUTER4, 0),
                    ep(CLIENT4, 0),
                    L4::IcmpErrorAbout(&pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), SYN)),
                )),
                "tc_icmp_error_translated",
            ),
            send(
                Ingress,
                pkt(ep(CLIENT6, CLIENT_PORT), ep(NODE6, NODE_PORT), L4::Udp),
                TC_ACT_OK,
                Packet(pkt(ep(CLIENT6, CLIENT_PORT), ep(LOCAL6, TARGET), L4::Udp)),
                "tc_dnat",
            ),
            // The client is unreachable for a reply that was already
            // reverse-translated: the error goes to the backend, quoting
            // the reply as the backend sent it.
            send(
                Ingress,
                pkt(
                    ep(ROUTER6, 0),
                    ep(NODE6, 0),
                    L4::IcmpErrorAbout(&pkt(
                        ep(NODE6, NODE_PORT),
                        ep(CLIENT6, CLIENT_PORT),
                        L4::Udp,
                    )),
                ),
                TC_ACT_OK,
                Packet(pkt(
                    ep(ROUTER6, 0),
                    ep(LOCAL6, 0),
                    L4::IcmpErrorAbout(&pkt(ep(LOCAL6, TARGET), ep(CLIENT6, CLIENT_PORT), L4::Udp)),
                )),
                "tc_icmp_error_translated",
            ),
            // About a flow nobody tracks: untouched.
            send(
                Ingress,
                pkt(
                    ep(ROUTER4, 0),
                    ep(NODE4, 0),
                    L4::IcmpErrorAbout(&pkt(ep(NODE4, 5555), ep(REMOTE4, 22), SYN)),
                ),
                TC_ACT_OK,
                Unchanged,
                "tc_icmp_error_passed",
            ),
        ],
    },
    Case {
        name: "other protocols and ICMP errors pass untouched",
        devices: &[],
        services: &[svc(
            NODE4,
            NODE_PORT,
            proto::TCP,
            scope::INTERNAL,
            EXT,
            &[REMOTE_BE4],
        )],
        steps: &[
            send(
                Ingress,
                pkt(ep(CLIENT4, 0), ep(NODE4, 0), L4::Other(47)),
                TC_ACT_OK,
                Unchanged,
                "tc_pass_protocol",
            ),
            send(
                Ingress,
                pkt(ep(CLIENT6, 0), ep(NODE6, 0), L4::Other(44)),
                TC_ACT_OK,
                Unchanged,
                "tc_fragment_passed",
            ),
            send(
                Ingress,
                pkt(ep(CLIENT6, 0), ep(NODE6, 0), L4::Other(0)),
                TC_ACT_OK,
                Unchanged,
                "tc_pass_protocol",
            ),
            send(
                Ingress,
                pkt(ep(CLIENT4, 0), ep(NODE4, 0), L4::IcmpUnreachable),
                TC_ACT_OK,
                Unchanged,
                "tc_icmp_error_passed",
            ),
        ],
    },
    // ---- Local-traffic detection (`--cluster-cidr`, `--detect-local-mode`):
    // `install` puts 10.244.0.0/16 and fd00:244::/32 in LOCAL_V4/LOCAL_V6.
    Case {
        name: "CIDR detector: an off-cluster source reaches a ClusterIP on any device, SNATed",
        devices: &[(IFINDEX, device_flags::DETECT_CIDR_V4)],
        services: &[svc(
            CLUSTER_IP4,
            80,
            proto::TCP,
            scope::INTERNAL,
            0,
            &[REMOTE_BE4],
        )],
        steps: &[
            send(
                Ingress,
                pkt(ep(CLIENT4, CLIENT_PORT), ep(CLUSTER_IP4, 80), SYN),
                TC_ACT_OK,
                Packet(pkt(snat(NODE4), ep(REMOTE4, TARGET), SYN)),
                "tc_cluster_ip_masqueraded",
            ),
            send(
                Ingress,
                pkt(ep(REMOTE4, TARGET), snat(NODE4), ACK),
                TC_ACT_OK,
                Packet(pkt(ep(CLUSTER_IP4, 80), ep(CLIENT4, CLIENT_PORT), ACK)),
                "tc_ct_reply",
            ),
        ],
    },
    Case {
        name: "CIDR detector: an in-cluster source on a device without CLUSTER_IP: untouched",
        devices: &[(IFINDEX, device_flags::DETECT_CIDR_V4)],
        services: &[svc(
            CLUSTER_IP4,
            80,
            proto::TCP,
            scope::INTERNAL,
            0,
            &[REMOTE_BE4],
        )],
        steps: &[send(
            Ingress,
            pkt(ep(POD4, CLIENT_PORT), ep(CLUSTER_IP4, 80), SYN),
            TC_ACT_OK,
            Unchanged,
            "tc_cluster_ip_skipped",
        )],
    },
    Case {
        name: "CIDR detector for IPv6 only: an IPv4 off-cluster source has no detector",
        devices: &[(IFINDEX, device_flags::DETECT_CIDR_V6)],
        services: &[svc(
            CLUSTER_IP4,
            80,
            proto::TCP,
            scope::INTERNAL,
            0,
            &[REMOTE_BE4],
        )],
        steps: &[send(
            Ingress,
            pkt(ep(CLIENT4, CLIENT_PORT), ep(CLUSTER_IP4, 80), SYN),
            TC_ACT_OK,
            Unchanged,
            "tc_cluster_ip_skipped",
        )],
    },
    Case {
        name: "CIDR detector: an off-cluster source to a local backend is not SNATed",
        devices: &[(IFINDEX, device_flags::DETECT_CIDR_V4)],
        services: &[svc(
            CLUSTER_IP4,
            80,
            proto::TCP,
            scope::INTERNAL,
            0,
            &[LOCAL_BE4],
        )],
        steps: &[send(
            Ingress,
            pkt(ep(CLIENT4, CLIENT_PORT), ep(CLUSTER_IP4, 80), SYN),
            TC_ACT_OK,
            Packet(pkt(ep(CLIENT4, CLIENT_PORT), ep(LOCAL4, TARGET), SYN)),
            "tc_dnat",
        )],
    },
    Case {
        name: "CIDR detector, IPv6: an off-cluster source is SNATed, a pod's is not",
        devices: &[(
            IFINDEX,
            device_flags::DETECT_CIDR_V6 | device_flags::CLUSTER_IP,
        )],
        services: &[svc(
            CLUSTER_IP6,
            80,
            proto::TCP,
            scope::INTERNAL,
            0,
            &[REMOTE_BE6],
        )],
        steps: &[
            send(
                Ingress,
                pkt(ep(CLIENT6, CLIENT_PORT), ep(CLUSTER_IP6, 80), SYN),
                TC_ACT_OK,
                Packet(pkt(snat(NODE6), ep(REMOTE6, TARGET), SYN)),
                "tc_cluster_ip_masqueraded",
            ),
            send(
                Ingress,
                pkt(ep(LOCAL6, CLIENT_PORT), ep(CLUSTER_IP6, 80), SYN),
                TC_ACT_OK,
                Packet(pkt(ep(LOCAL6, CLIENT_PORT), ep(REMOTE6, TARGET), SYN)),
                "tc_dnat",
            ),
        ],
    },
    Case {
        name: "device detector: traffic on a non-local device is masqueraded whatever its source",
        devices: &[(IFINDEX, device_flags::DETECT_BY_DEVICE)],
        services: &[svc(
            CLUSTER_IP4,
            80,
            proto::TCP,
            scope::INTERNAL,
            0,
            &[REMOTE_BE4],
        )],
        steps: &[send(
            Ingress,
            pkt(ep(POD4, CLIENT_PORT), ep(CLUSTER_IP4, 80), SYN),
            TC_ACT_OK,
            Packet(pkt(snat(NODE4), ep(REMOTE4, TARGET), SYN)),
            "tc_cluster_ip_masqueraded",
        )],
    },
    Case {
        name: "device detector: traffic on the pods' device keeps its source",
        devices: &[(
            IFINDEX,
            device_flags::DETECT_BY_DEVICE | device_flags::LOCAL_DEVICE | device_flags::CLUSTER_IP,
        )],
        services: &[svc(
            CLUSTER_IP4,
            80,
            proto::TCP,
            scope::INTERNAL,
            0,
            &[REMOTE_BE4],
        )],
        steps: &[send(
            Ingress,
            pkt(ep(CLIENT4, CLIENT_PORT), ep(CLUSTER_IP4, 80), SYN),
            TC_ACT_OK,
            Packet(pkt(ep(CLIENT4, CLIENT_PORT), ep(REMOTE4, TARGET), SYN)),
            "tc_dnat",
        )],
    },
    Case {
        name: "masquerade-all: a pod's ClusterIP flow is SNATed",
        devices: &[(
            IFINDEX,
            device_flags::MASQUERADE_ALL | device_flags::CLUSTER_IP,
        )],
        services: &[svc(
            CLUSTER_IP4,
            80,
            proto::TCP,
            scope::INTERNAL,
            0,
            &[REMOTE_BE4],
        )],
        steps: &[send(
            Ingress,
            pkt(ep(POD4, CLIENT_PORT), ep(CLUSTER_IP4, 80), SYN),
            TC_ACT_OK,
            Packet(pkt(snat(NODE4), ep(REMOTE4, TARGET), SYN)),
            "tc_masquerade_all",
        )],
    },
    Case {
        name: "short-circuit: a pod's flow to an ETP=Local frontend uses every endpoint, no SNAT",
        devices: &[(
            IFINDEX,
            device_flags::DETECT_CIDR_V4 | device_flags::CLUSTER_IP,
        )],
        services: &[
            svc(
                NODE4,
                NODE_PORT,
                proto::TCP,
                scope::EXTERNAL,
                EXT_LOCAL,
                &[],
            ),
            svc(
                NODE4,
                NODE_PORT,
                proto::TCP,
                scope::INTERNAL,
                EXT,
                &[REMOTE_BE4],
            ),
        ],
        steps: &[send(
            Ingress,
            pkt(ep(POD4, CLIENT_PORT), ep(NODE4, NODE_PORT), SYN),
            TC_ACT_OK,
            Packet(pkt(ep(POD4, CLIENT_PORT), ep(REMOTE4, TARGET), SYN)),
            "tc_dnat",
        )],
    },
    Case {
        name: "no short-circuit for an off-cluster source: ETP=Local without a local endpoint drops",
        devices: &[(
            IFINDEX,
            device_flags::DETECT_CIDR_V4 | device_flags::CLUSTER_IP,
        )],
        services: &[
            svc(
                NODE4,
                NODE_PORT,
                proto::TCP,
                scope::EXTERNAL,
                EXT_LOCAL,
                &[],
            ),
            svc(
                NODE4,
                NODE_PORT,
                proto::TCP,
                scope::INTERNAL,
                EXT,
                &[REMOTE_BE4],
            ),
        ],
        steps: &[send(
            Ingress,
            pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), SYN),
            TC_ACT_SHOT,
            Dropped,
            "tc_etp_local_dropped",
        )],
    },
];

// ---- Running them -------------------------------------------------------------

/// A new sandbox, entered: the programs' FIB lookups see its namespace.
fn sandbox() -> Sandbox {
    let mut sandbox = Sandbox::new().expect("sandbox");
    sandbox.enter().expect("entering the sandbox");
    sandbox
}

/// An address family of the NodePort worlds: the node's, the client's and
/// the backends' addresses of one family. Shown as `v4`/`v6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    const BOTH: [Family; 2] = [Family::V4, Family::V6];

    const fn node(self) -> &'static str {
        match self {
            Family::V4 => NODE4,
            Family::V6 => NODE6,
        }
    }

    const fn client(self) -> &'static str {
        match self {
            Family::V4 => CLIENT4,
            Family::V6 => CLIENT6,
        }
    }

    /// The address of the backend on another node.
    const fn remote(self) -> &'static str {
        match self {
            Family::V4 => REMOTE4,
            Family::V6 => REMOTE6,
        }
    }

    /// The address of the backend on this node.
    const fn local(self) -> &'static str {
        match self {
            Family::V4 => LOCAL4,
            Family::V6 => LOCAL6,
        }
    }

    /// The backend on another node, as a Service's backends.
    const fn remote_backends(self) -> &'static [Backend] {
        match self {
            Family::V4 => &[REMOTE_BE4],
            Family::V6 => &[REMOTE_BE6],
        }
    }

    /// The backend on this node, as a Service's backends.
    const fn local_backends(self) -> &'static [Backend] {
        match self {
            Family::V4 => &[LOCAL_BE4],
            Family::V6 => &[LOCAL_BE6],
        }
    }

    const fn maglev_addrs(self) -> &'static [&'static str] {
        match self {
            Family::V4 => &MAGLEV_ADDRS4,
            Family::V6 => &MAGLEV_ADDRS6,
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        })
    }
}

/// The NodePort Service on the node's address of `family` (port
/// [`NODE_PORT`], internal scope, [`EXT`]).
const fn node_port(family: Family, proto: u8, backends: &'static [Backend]) -> Svc {
    svc(
        family.node(),
        NODE_PORT,
        proto,
        scope::INTERNAL,
        EXT,
        backends,
    )
}

/// A world pinned in `name` under the sandbox's bpffs, with `services`
/// installed (no device flags).
fn world_with(sandbox: &Sandbox, name: &str, services: &[Svc]) -> World {
    let dir = sandbox.bpffs_path().join(name);
    std::fs::create_dir(&dir).expect("pin dir");
    let mut world = World::load(&dir).expect("load");
    world.install(&[], services).expect("install");
    world
}

#[test]
fn tc_packet_cases() {
    let sandbox = sandbox();
    // Fail once, not once per case, when the programs do not load.
    let probe = sandbox.bpffs_path().join("probe");
    std::fs::create_dir(&probe).expect("probe pin dir");
    if let Err(e) = World::load(&probe) {
        panic!("{e}");
    }
    let mut failures = String::new();
    for (i, case) in CASES.iter().enumerate() {
        let dir = sandbox.bpffs_path().join(format!("case{i}"));
        std::fs::create_dir(&dir).expect("case pin dir");
        if let Err(e) = run_case(case, &dir, true) {
            let _ = writeln!(failures, "case {i} ({}): {e}", case.name);
        }
    }
    assert!(failures.is_empty(), "failing cases:\n{failures}");
}

#[test]
fn non_ip_passes() {
    let sandbox = sandbox();
    let dir = sandbox.bpffs_path().join("arp");
    std::fs::create_dir(&dir).expect("pin dir");
    let mut world = World::load(&dir).expect("load");
    let mut arp = Vec::new();
    Ethernet2Header {
        source: CLIENT_MAC,
        destination: [0xff; 6],
        ether_type: EtherType::ARP,
    }
    .write(&mut arp)
    .expect("write");
    arp.extend_from_slice(&[0; 28]);
    for hook in [Ingress, Egress] {
        let before = world.stat("tc_pass_non_ip");
        let (verdict, out) = world.run(hook, &arp).expect("run");
        assert_eq!(verdict, TC_ACT_OK);
        assert_eq!(out, arp);
        assert_eq!(world.stat("tc_pass_non_ip"), before + 1);
    }
}

/// `tc_ingress` tail-calls its family's program (`TC_TAIL`), which
/// tail-calls the family's new-flow program for a packet no conntrack entry
/// knows. When a tail call fails (the slot is empty), the packet is passed
/// untouched, as with no program attached, and counted as
/// `tc_tail_call_failed`; the other family is still translated, refilling
/// the slot (as the daemon does at every reconcile) brings the translation
/// back, and with the new-flow slot empty tracked flows are still
/// translated.
#[test]
fn a_failed_tail_call_passes_the_packet_untouched_and_is_counted() {
    let sandbox = sandbox();
    let services = [
        node_port(Family::V4, proto::UDP, &[LOCAL_BE4]),
        node_port(Family::V6, proto::UDP, &[LOCAL_BE6]),
    ];
    let mut world = world_with(&sandbox, "tail", &services);
    let frame = |p: &Pkt| build(p, None).expect("build");
    let udp4 = frame(&pkt(
        ep(CLIENT4, CLIENT_PORT),
        ep(NODE4, NODE_PORT),
        L4::Udp,
    ));
    let udp6 = frame(&pkt(
        ep(CLIENT6, CLIENT_PORT),
        ep(NODE6, NODE_PORT),
        L4::Udp,
    ));
    world
        .set_tail_call(tail::INGRESS4, false)
        .expect("emptying the IPv4 slot");
    let (failed, dnat) = (world.stat("tc_tail_call_failed"), world.stat("tc_dnat"));
    let (verdict, out) = world.run(Ingress, &udp4).expect("run");
    assert_eq!(verdict, TC_ACT_OK, "v4: passed");
    assert_eq!(hex(&out), hex(&udp4), "v4: untouched");
    assert_eq!(world.stat("tc_tail_call_failed"), failed + 1, "v4: counted");
    assert_eq!(world.stat("tc_dnat"), dnat, "v4: not translated");

    let (verdict, out) = world.run(Ingress, &udp6).expect("run");
    assert_eq!(verdict, TC_ACT_OK, "v6");
    assert_eq!(destination(&out), ip(LOCAL6), "v6: still translated");
    assert_eq!(
        world.stat("tc_tail_call_failed"),
        failed + 1,
        "v6: no failure"
    );
    assert_eq!(world.stat("tc_dnat"), dnat + 1, "v6: translated");

    world
        .set_tail_call(tail::INGRESS4, true)
        .expect("refilling the IPv4 slot");
    let (_, out) = world.run(Ingress, &udp4).expect("run");
    assert_eq!(destination(&out), ip(LOCAL4), "v4: translated again");
    assert_eq!(
        world.stat("tc_tail_call_failed"),
        failed + 1,
        "v4: no failure"
    );

    // The new-flow program's slot empty: the tracked flow is still
    // translated, a new flow passes untouched.
    world
        .set_tail_call(tail::NEW4, false)
        .expect("emptying the IPv4 new-flow slot");
    let (_, out) = world.run(Ingress, &udp4).expect("run");
    assert_eq!(destination(&out), ip(LOCAL4), "v4: tracked, translated");
    assert_eq!(world.stat("tc_tail_call_failed"), failed + 1, "v4: tracked");
    let new4 = frame(&pkt(
        ep(CLIENT4, CLIENT_PORT + 1),
        ep(NODE4, NODE_PORT),
        L4::Udp,
    ));
    let (verdict, out) = world.run(Ingress, &new4).expect("run");
    assert_eq!(verdict, TC_ACT_OK, "v4 new flow: passed");
    assert_eq!(hex(&out), hex(&new4), "v4 new flow: untouched");
    assert_eq!(
        world.stat("tc_tail_call_failed"),
        failed + 2,
        "v4 new flow: counted"
    );
}

/// Not a check: what one packet costs through `tc_ingress`, as the kernel
/// times `BPF_PROG_TEST_RUN` (the median of many single runs, the run's own
/// time only), for a tracked flow's packet and for a packet to no frontend
/// (parsed, looked up in both conntrack maps and the service map). With
/// `TC_COST_OBJECT=<path>`, the object at that path is measured instead (an
/// older build, for a before/after).
/// `cargo nextest run -p proxy-tests --test tc_packets per_packet_cost
/// --run-ignored only --no-capture`.
#[test]
#[ignore = "a measurement, printed; run by hand"]
fn per_packet_cost() {
    const RUNS: usize = 20_000;
    let sandbox = sandbox();
    // aya wants the object 8-byte aligned: copied into `u64`s.
    let object: Option<(Vec<u64>, usize)> = std::env::var_os("TC_COST_OBJECT").map(|path| {
        let bytes = std::fs::read(&path).expect("reading TC_COST_OBJECT");
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            *word = u64::from_ne_bytes(b);
        }
        (words, bytes.len())
    });
    for family in Family::BOTH {
        let backends: &'static [Backend] = match family {
            Family::V4 => &[LOCAL_BE4],
            Family::V6 => &[LOCAL_BE6],
        };
        let dir = sandbox.bpffs_path().join(format!("cost-{family:?}"));
        std::fs::create_dir(&dir).expect("pin dir");
        let mut world = match &object {
            None => World::load(&dir).expect("load"),
            Some((words, len)) => {
                // SAFETY: `words` holds at least `len` initialized bytes,
                // and any byte is a valid u8.
                let bytes =
                    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), *len) };
                World(TcWorld::load(&dir, bytes, v4(NODE4), v6(NODE6)).expect("load"))
            }
        };
        world
            .install(&[], &[node_port(family, proto::UDP, backends)])
            .expect("install");
        let (node, client, backend) = (family.node(), family.client(), backends[0].addr);
        let elsewhere = match family {
            Family::V4 => ROUTER4,
            Family::V6 => ROUTER6,
        };
        let frame = |p: &Pkt| build(p, None).expect("build");
        let request = frame(&pkt(ep(client, CLIENT_PORT), ep(node, NODE_PORT), L4::Udp));
        let reply = frame(&pkt(ep(backend, TARGET), ep(client, CLIENT_PORT), L4::Udp));
        let other = frame(&pkt(
            ep(client, CLIENT_PORT + 1),
            ep(elsewhere, 80),
            L4::Udp,
        ));
        let median = |world: &mut World, frame: &[u8]| {
            let mut ns: Vec<u128> = (0..RUNS)
                .map(|_| {
                    let (_, _, took) = world.run_program(programs::TC_INGRESS, frame).expect("run");
                    took.as_nanos()
                })
                .collect();
            ns.sort_unstable();
            ns[RUNS / 2]
        };
        // The flow's first packet, then its answer: tracked from then on.
        world.run(Ingress, &request).expect("run");
        world.run(Ingress, &reply).expect("run");
        let tracked = median(&mut world, &request);
        let untracked = median(&mut world, &other);
        eprintln!("{family:?}: tracked flow {tracked} ns, packet to no frontend {untracked} ns");
    }
}

/// An ICMP error whose IP length ends inside the packet it quotes (the rest
/// of the quote lies in bytes past the datagram) passes untouched: the ICMP
/// checksum a translation updates covers the datagram alone. Found by the
/// fuzzer (`fuzz/fuzz_targets/tc_packet.rs`): such a quote was translated,
/// leaving a wrong ICMPv6 checksum. The same errors at their full length are
/// translated, with valid checksums.
#[test]
fn icmp_errors_quoting_past_their_ip_length_pass() {
    static QUOTE4: Pkt = pkt(snat(NODE4), ep(REMOTE4, TARGET), SYN);
    static QUOTE6: Pkt = pkt(ep(NODE6, NODE_PORT), ep(CLIENT6, CLIENT_PORT), L4::Udp);
    let sandbox = sandbox();
    let services = [
        node_port(Family::V4, proto::TCP, &[REMOTE_BE4]),
        node_port(Family::V6, proto::UDP, &[LOCAL_BE6]),
    ];
    let mut world = world_with(&sandbox, "icmp-short", &services);
    let frame = |p: &Pkt, snat: Option<u16>| build(p, snat).expect("build");
    let syn = frame(
        &pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), SYN),
        None,
    );
    let (_, out) = world.run(Ingress, &syn).expect("run");
    let snat_port = source_port(&out);
    assert!(snat_port.is_some(), "the SYN was translated");
    let udp = frame(
        &pkt(ep(CLIENT6, CLIENT_PORT), ep(NODE6, NODE_PORT), L4::Udp),
        None,
    );
    world.run(Ingress, &udp).expect("run");
    let err4 = frame(
        &pkt(ep(ROUTER4, 0), ep(NODE4, 0), L4::IcmpErrorAbout(&QUOTE4)),
        snat_port,
    );
    let err6 = frame(
        &pkt(ep(ROUTER6, 0), ep(NODE6, 0), L4::IcmpErrorAbout(&QUOTE6)),
        None,
    );
    // The IPv4 total length, the IPv6 payload length.
    for (name, error, length_at) in [("v4", err4, 14 + 2), ("v6", err6, 14 + 4)] {
        let (verdict, out) = world.run(Ingress, &error).expect("run");
        assert_eq!(verdict, TC_ACT_OK, "{name}");
        assert_ne!(out, error, "{name}: translated at full length");
        assert_eq!(checksum::verify(&out), Ok(Checkable::Yes), "{name}");
        let mut short = error.clone();
        let length = u16::from_be_bytes([short[length_at], short[length_at + 1]]);
        short[length_at..length_at + 2].copy_from_slice(&(length - 1).to_be_bytes());
        checksum::fix(&mut short);
        let before = world.stat("tc_icmp_error_passed");
        let (verdict, out) = world.run(Ingress, &short).expect("run");
        assert_eq!(verdict, TC_ACT_OK, "{name}");
        assert_eq!(hex(&out), hex(&short), "{name}: one byte short, untouched");
        assert_eq!(world.stat("tc_icmp_error_passed"), before + 1, "{name}");
    }
}

/// Without a SNAT address, a flow that needs SNAT is dropped, one that does
/// not is still translated.
#[test]
fn no_snat_address() {
    static CASE: Case = Case {
        name: "no SNAT address",
        devices: &[],
        services: &[
            svc(
                NODE4,
                NODE_PORT,
                proto::TCP,
                scope::INTERNAL,
                EXT,
                &[REMOTE_BE4],
            ),
            svc(
                NODE4,
                NODE_PORT,
                proto::UDP,
                scope::INTERNAL,
                EXT,
                &[LOCAL_BE4],
            ),
        ],
        steps: &[
            send(
                Ingress,
                pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), SYN),
                TC_ACT_SHOT,
                Dropped,
                "tc_no_snat_address",
            ),
            send(
                Ingress,
                pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), L4::Udp),
                TC_ACT_OK,
                Packet(pkt(ep(CLIENT4, CLIENT_PORT), ep(LOCAL4, TARGET), L4::Udp)),
                "tc_dnat",
            ),
        ],
    };
    let sandbox = sandbox();
    let dir = sandbox.bpffs_path().join("nosnat");
    std::fs::create_dir(&dir).expect("pin dir");
    if let Err(e) = run_case(&CASE, &dir, false) {
        panic!("{e}");
    }
}

/// `loadBalancerSourceRanges` (`SRC_RANGE_*`): a new flow to a frontend
/// with ranges is dropped unless its source is inside one; a frontend without
/// entries serves every source; an established flow carries on when the
/// ranges change (only new flows are checked, as kube-proxy's `ct state new`).
#[test]
fn source_ranges_drop_new_flows_from_outside_them() {
    const LB4: &str = "203.0.113.9";
    const LB6: &str = "fd00:113::9";
    const OTHER4: &str = "192.0.2.50";
    const ALLOWED6: &str = "fd00:99::5";
    const LB: u16 = svc_flags::EXTERNAL;
    // Frontends with ranges say so (the planner sets the bit with them).
    const RANGED: u16 = LB | svc_flags::SOURCE_RANGES;
    let sandbox = sandbox();
    let services = [
        Svc {
            rev_nat_id: 7,
            ..svc(LB4, 80, proto::TCP, scope::INTERNAL, RANGED, &[LOCAL_BE4])
        },
        Svc {
            rev_nat_id: 8,
            ..svc(LB6, 80, proto::TCP, scope::INTERNAL, RANGED, &[LOCAL_BE6])
        },
        // No ranges: every source.
        Svc {
            rev_nat_id: 9,
            ..svc(LB4, 81, proto::TCP, scope::INTERNAL, LB, &[LOCAL_BE4])
        },
    ];
    let mut world = world_with(&sandbox, "ranges", &services);
    let id = |n: u32| Be32(n.to_be());
    {
        let mut v4: LpmTrie<&mut MapData, SrcRangeV4, u32> =
            world.map(names::SRC_RANGE_V4).expect("SRC_RANGE_V4");
        let key = |prefix, addr: &str| {
            let addr: std::net::Ipv4Addr = addr.parse().expect("v4");
            LpmKey::new(
                src_range::ID_BITS + prefix,
                SrcRangeV4 {
                    rev_nat_id: id(7),
                    addr: Be32::from_octets(addr.octets()),
                },
            )
        };
        v4.insert(&key(24, "198.51.100.0"), &src_range::ALLOW, 0)
            .expect("insert");
        v4.insert(&key(0, "0.0.0.0"), &src_range::DENY, 0)
            .expect("insert");
        let mut v6: LpmTrie<&mut MapData, SrcRangeV6, u32> =
            world.map(names::SRC_RANGE_V6).expect("SRC_RANGE_V6");
        let key = |prefix, addr: &str| {
            let addr: std::net::Ipv6Addr = addr.parse().expect("v6");
            LpmKey::new(
                src_range::ID_BITS + prefix,
                SrcRangeV6 {
                    rev_nat_id: id(8),
                    addr: addr.octets(),
                },
            )
        };
        v6.insert(&key(64, "fd00:99::"), &src_range::ALLOW, 0)
            .expect("insert");
        v6.insert(&key(0, "::"), &src_range::DENY, 0)
            .expect("insert");
    }
    let steps = [
        (
            pkt(ep(CLIENT4, CLIENT_PORT), ep(LB4, 80), SYN),
            TC_ACT_OK,
            "tc_dnat",
        ),
        (
            pkt(ep(OTHER4, CLIENT_PORT), ep(LB4, 80), SYN),
            TC_ACT_SHOT,
            "tc_source_range_dropped",
        ),
        (
            pkt(ep(OTHER4, CLIENT_PORT), ep(LB4, 81), SYN),
            TC_ACT_OK,
            "tc_dnat",
        ),
        (
            pkt(ep(CLIENT6, CLIENT_PORT), ep(LB6, 80), SYN),
            TC_ACT_SHOT,
            "tc_source_range_dropped",
        ),
        (
            pkt(ep(ALLOWED6, CLIENT_PORT), ep(LB6, 80), SYN),
            TC_ACT_OK,
            "tc_dnat",
        ),
    ];
    for (n, (input, verdict, reason)) in steps.iter().enumerate() {
        let bytes = build(input, None).expect("build");
        let before = world.stat(reason);
        let (got, _) = world.run(Ingress, &bytes).expect("run");
        assert_eq!(got, *verdict, "step {n} ({reason})");
        assert_eq!(world.stat(reason), before + 1, "step {n}: {reason} counted");
    }
    // The allowed v4 client's flow is tracked: when its range goes, its next
    // packet still follows the flow, while a new flow from it is dropped.
    {
        let mut v4: LpmTrie<&mut MapData, SrcRangeV4, u32> =
            world.map(names::SRC_RANGE_V4).expect("SRC_RANGE_V4");
        let addr: std::net::Ipv4Addr = "198.51.100.0".parse().expect("v4");
        v4.remove(&LpmKey::new(
            src_range::ID_BITS + 24,
            SrcRangeV4 {
                rev_nat_id: id(7),
                addr: Be32::from_octets(addr.octets()),
            },
        ))
        .expect("remove");
    }
    let established = build(&pkt(ep(CLIENT4, CLIENT_PORT), ep(LB4, 80), ACK), None).expect("build");
    let before = world.stat("tc_ct_forward");
    assert_eq!(world.run(Ingress, &established).expect("run").0, TC_ACT_OK);
    assert_eq!(world.stat("tc_ct_forward"), before + 1);
    let new_flow =
        build(&pkt(ep(CLIENT4, CLIENT_PORT + 1), ep(LB4, 80), SYN), None).expect("build");
    assert_eq!(world.run(Ingress, &new_flow).expect("run").0, TC_ACT_SHOT);
}

/// The conntrack entries of a SNATed flow, as userspace sees them: the
/// forward and reply entries with their rewrites, and CLOSING after a FIN.
#[test]
fn conntrack_entries() {
    let sandbox = sandbox();
    let mut world = world_with(
        &sandbox,
        "ct",
        &[node_port(Family::V4, proto::TCP, &[REMOTE_BE4])],
    );
    let syn = pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), SYN);
    let (verdict, out) = world
        .run(Ingress, &build(&syn, None).expect("build"))
        .expect("run");
    assert_eq!(verdict, TC_ACT_OK);
    let snat_port = source_port(&out).expect("a source port");

    let forward_key = CtKeyV4 {
        saddr: be32(CLIENT4),
        daddr: be32(NODE4),
        sport: Be16::from_host(CLIENT_PORT),
        dport: Be16::from_host(NODE_PORT),
        proto: proto::TCP,
        _pad: [0; 3],
    };
    let reply_key = CtKeyV4 {
        saddr: be32(REMOTE4),
        daddr: be32(NODE4),
        sport: Be16::from_host(TARGET),
        dport: Be16::from_host(snat_port),
        proto: proto::TCP,
        _pad: [0; 3],
    };
    // A new flow's entries wait in the pending map until it is answered.
    let ct = |world: &mut World, key: &CtKeyV4| -> CtValueV4 {
        let map: HashMap<&mut MapData, CtKeyV4, CtValueV4> =
            world.map(names::CT_PENDING_V4).expect("CT_PENDING_V4");
        map.get(key, 0).expect("the entry")
    };
    assert_eq!(
        ct_len(&mut world, names::CT_V4),
        0,
        "nothing established yet"
    );
    let fwd = ct(&mut world, &forward_key);
    assert_eq!(
        (fwd.saddr, fwd.sport, fwd.daddr, fwd.dport),
        (
            be32(NODE4),
            Be16::from_host(snat_port),
            be32(REMOTE4),
            Be16::from_host(TARGET)
        )
    );
    assert_eq!(fwd.flags, ct_flags::SNAT | ct_flags::SYN_ONLY);
    assert_eq!((fwd.backend_id, fwd.rev_nat_id), (REMOTE_BE4.id, 7));
    assert_ne!(fwd.last_seen_ns, 0);
    let rep = ct(&mut world, &reply_key);
    assert_eq!(
        (rep.saddr, rep.sport, rep.daddr, rep.dport),
        (
            be32(NODE4),
            Be16::from_host(NODE_PORT),
            be32(CLIENT4),
            Be16::from_host(CLIENT_PORT)
        )
    );
    assert_eq!(
        rep.flags,
        ct_flags::REPLY | ct_flags::SNAT | ct_flags::SYN_ONLY
    );

    // A packet without SYN answers it: both entries move to `CT_V4`.
    let fin = pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), FIN);
    let promoted = world.stat("tc_ct_promoted");
    world
        .run(Ingress, &build(&fin, None).expect("build"))
        .expect("run");
    assert_eq!(world.stat("tc_ct_promoted"), promoted + 1);
    assert_eq!(
        ct_len(&mut world, names::CT_PENDING_V4),
        0,
        "nothing pending"
    );
    let established = |world: &mut World, key: &CtKeyV4| -> CtValueV4 {
        let map: HashMap<&mut MapData, CtKeyV4, CtValueV4> =
            world.map(names::CT_V4).expect("CT_V4");
        map.get(key, 0).expect("the established entry")
    };
    let fwd2 = established(&mut world, &forward_key);
    assert_eq!(fwd2.flags, ct_flags::SNAT | ct_flags::CLOSING);
    assert!(fwd2.last_seen_ns >= fwd.last_seen_ns);
    let rep2 = established(&mut world, &reply_key);
    assert_eq!(rep2.flags, ct_flags::REPLY | ct_flags::SNAT);
}

/// How many entries a conntrack map holds.
fn ct_len(world: &mut World, name: &str) -> usize {
    let map: HashMap<&mut MapData, CtKeyV4, CtValueV4> =
        world.map(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    map.keys().filter(Result::is_ok).count()
}

/// A new flow waits in `CT_PENDING_V4` until it is answered: its backend's
/// SYN-ACK, or a bare ACK from it, keeps it there; the client's ACK
/// moves both entries to `CT_V4`. A UDP flow moves on its first reply. A
/// flood of SYNs that are never answered churns only the pending LRU: an
/// established flow's entries stay, and so does its translation.
#[test]
fn unanswered_flows_never_evict_established_ones() {
    let sandbox = sandbox();
    let mut world = world_with(
        &sandbox,
        "pending",
        &[
            node_port(Family::V4, proto::TCP, &[LOCAL_BE4]),
            node_port(Family::V4, proto::UDP, &[LOCAL_BE4]),
        ],
    );
    let client = ep(CLIENT4, CLIENT_PORT);
    let frontend = ep(NODE4, NODE_PORT);
    let backend = ep(LOCAL4, TARGET);
    let run = |world: &mut World, hook: Hook, p: Pkt| -> Vec<u8> {
        let (verdict, out) = world
            .run(hook, &build(&p, None).expect("build"))
            .expect("run");
        assert_eq!(verdict, TC_ACT_OK);
        out
    };
    // The handshake: SYN (pending), SYN-ACK leaving towards the client
    // (still pending), ACK (promoted).
    run(&mut world, Ingress, pkt(client, frontend, SYN));
    assert_eq!(ct_len(&mut world, names::CT_PENDING_V4), 2);
    // (A SYN from the backend stands for its SYN-ACK: both carry SYN.)
    run(&mut world, Egress, pkt(backend, client, SYN));
    assert_eq!(
        (
            ct_len(&mut world, names::CT_PENDING_V4),
            ct_len(&mut world, names::CT_V4)
        ),
        (2, 0),
        "a SYN-ACK does not answer the flow"
    );
    // Nor does a bare ACK from the backend (its answer to a SYN on a port an
    // earlier flow left in SYN_RECV or TIME_WAIT).
    run(&mut world, Egress, pkt(backend, client, ACK));
    assert_eq!(
        (
            ct_len(&mut world, names::CT_PENDING_V4),
            ct_len(&mut world, names::CT_V4)
        ),
        (2, 0),
        "the backend's ACK does not answer the flow"
    );
    run(&mut world, Ingress, pkt(client, frontend, ACK));
    assert_eq!(
        (
            ct_len(&mut world, names::CT_PENDING_V4),
            ct_len(&mut world, names::CT_V4)
        ),
        (0, 2),
        "the client's ACK promotes both entries"
    );
    // UDP: the request waits, the reply promotes.
    run(&mut world, Ingress, pkt(client, frontend, L4::Udp));
    assert_eq!(ct_len(&mut world, names::CT_PENDING_V4), 2);
    run(&mut world, Ingress, pkt(client, frontend, L4::Udp));
    assert_eq!(
        ct_len(&mut world, names::CT_PENDING_V4),
        2,
        "a second request is no answer"
    );
    run(&mut world, Egress, pkt(backend, client, L4::Udp));
    assert_eq!(
        (
            ct_len(&mut world, names::CT_PENDING_V4),
            ct_len(&mut world, names::CT_V4)
        ),
        (0, 4),
        "the reply promotes the UDP flow"
    );
    // A flood of SYNs from other sources, more than the pending map holds.
    let flood = proxy_common::capacity::CONNTRACK_PENDING + 4_000;
    let before = world.stat("tc_ct_pending_created");
    for i in 0..flood {
        let src: &'static str = String::leak(format!("100.64.{}.{}", (i >> 8) & 0xff, i & 0xff));
        let sport = 1024 + (i >> 16) as u16;
        run(&mut world, Ingress, pkt(ep(src, sport), frontend, SYN));
    }
    assert_eq!(
        world.stat("tc_ct_pending_created"),
        before + u64::from(flood)
    );
    let pending = ct_len(&mut world, names::CT_PENDING_V4);
    assert!(
        pending <= proxy_common::capacity::CONNTRACK_PENDING as usize,
        "the pending map holds {pending} entries"
    );
    assert_eq!(
        ct_len(&mut world, names::CT_V4),
        4,
        "the established entries stay"
    );
    // The established flow is still translated as before.
    let out = run(&mut world, Ingress, pkt(client, frontend, ACK));
    let expected = build(&pkt(client, backend, ACK), None).expect("build");
    assert_eq!(hex(&out), hex(&expected));
    assert_eq!(world.stat("tc_ct_promoted"), 2);
}

/// Rejects are rate-limited per CPU (`proxy_common::reject_limit`): a burst
/// of packets to a frontend with no backend gets at most the bucket's worth
/// of ICMP errors (plus what the rate refills meanwhile, per CPU the runs
/// land on), and the rest is dropped and counted, so the node cannot be used
/// to reflect a flood one for one.
#[test]
fn rejects_are_rate_limited() {
    use proxy_common::reject_limit::BURST;
    let sandbox = sandbox();
    let mut world = world_with(
        &sandbox,
        "ratelimit",
        &[node_port(Family::V4, proto::UDP, &[])],
    );
    let udp = build(
        &pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), L4::Udp),
        None,
    )
    .expect("build");
    let sent = 4 * BURST;
    let mut answered = 0u64;
    let mut first_answered = 0u64;
    for i in 0..sent {
        let (verdict, _) = world.run(Ingress, &udp).expect("run");
        match verdict {
            TC_ACT_REDIRECT => {
                answered += 1;
                if i < BURST {
                    first_answered += 1;
                }
            }
            TC_ACT_SHOT => {}
            other => panic!("run {i}: verdict {other}"),
        }
    }
    let limited = world.stat("tc_reject_rate_limited");
    assert_eq!(first_answered, BURST, "a full bucket answers its burst");
    assert_eq!(world.stat("tc_rejected"), answered);
    assert_eq!(answered + limited, sent);
    // Two CPUs' buckets at most, plus the refill of the loop's few ms.
    assert!(
        limited >= BURST,
        "{limited} of {sent} rejects suppressed, {answered} answered"
    );
}

/// ClientIP affinity on the tc path is keyed by the client's address: new
/// flows (other source ports) of one client keep their backend.
#[test]
fn affinity_by_client_address() {
    let sandbox = sandbox();
    let sticky = Svc {
        flags: EXT | svc_flags::AFFINITY,
        affinity_timeout: 600,
        ..node_port(
            Family::V4,
            proto::TCP,
            &[
                LOCAL_BE4,
                Backend {
                    id: 5,
                    addr: "10.244.1.6",
                    ..LOCAL_BE4
                },
            ],
        )
    };
    let mut world = world_with(&sandbox, "affinity", &[sticky]);
    let mut seen = std::collections::BTreeSet::new();
    for n in 0..12 {
        let syn = pkt(ep(CLIENT4, CLIENT_PORT + n), ep(NODE4, NODE_PORT), SYN);
        let (verdict, out) = world
            .run(Ingress, &build(&syn, None).expect("build"))
            .expect("run");
        assert_eq!(verdict, TC_ACT_OK);
        let sliced = etherparse::SlicedPacket::from_ethernet(&out).expect("parse");
        let Some(etherparse::NetSlice::Ipv4(ip)) = sliced.net else {
            panic!("not IPv4");
        };
        seen.insert(ip.header().destination());
    }
    assert_eq!(
        seen.len(),
        1,
        "one client went to several backends: {seen:?}"
    );
    assert!(world.stat("affinity_hit") >= 11);
}

/// `CLOCK_MONOTONIC`, the clock of `bpf_ktime_get_ns()`.
fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// A conntrack entry idle past its timeout is a miss (the flow is balanced
/// anew); a fresh one is applied as stored, and so is one whose last use is
/// later than the packet's clock reading (another CPU refreshed it meanwhile).
#[test]
fn conntrack_timeout() {
    let sandbox = sandbox();
    let mut world = world_with(
        &sandbox,
        "timeout",
        &[node_port(Family::V4, proto::UDP, &[LOCAL_BE4])],
    );
    let key = CtKeyV4 {
        saddr: be32(CLIENT4),
        daddr: be32(NODE4),
        sport: Be16::from_host(CLIENT_PORT),
        dport: Be16::from_host(NODE_PORT),
        proto: proto::UDP,
        _pad: [0; 3],
    };
    // Stored: send the flow to 10.244.9.9:9 (not a backend of the service).
    let stored = |last_seen_ns: u64| CtValueV4 {
        last_seen_ns,
        saddr: be32(CLIENT4),
        daddr: be32("10.244.9.9"),
        sport: Be16::from_host(CLIENT_PORT),
        dport: Be16::from_host(9),
        rev_nat_id: 7,
        flags: 0,
        _pad: [0; 3],
        backend_id: LOCAL_BE4.id,
    };
    let input = pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), L4::Udp);
    let bytes = build(&input, None).expect("build");
    // Ages in ns; a negative one is an entry refreshed "in the future": by a
    // packet of the same flow on another CPU, after this packet read the
    // clock. That is a hit, not an idle entry (bulk TCP is processed on
    // several CPUs at once, and a miss would re-balance it mid-flow: a reset).
    for (age_ns, expected_to) in [
        (0, ep("10.244.9.9", 9)),
        (-1_000_000_000, ep("10.244.9.9", 9)),
        (
            ct_timeout::UDP_NS as i64 + 1_000_000_000,
            ep(LOCAL4, TARGET),
        ),
    ] {
        {
            let mut ct: HashMap<&mut MapData, CtKeyV4, CtValueV4> =
                world.map(names::CT_V4).expect("CT_V4");
            let last_seen = monotonic_ns().wrapping_sub(age_ns as u64);
            ct.insert(&key, &stored(last_seen), 0).expect("insert");
        }
        let (verdict, out) = world.run(Ingress, &bytes).expect("run");
        assert_eq!(verdict, TC_ACT_OK);
        let expected =
            build(&pkt(ep(CLIENT4, CLIENT_PORT), expected_to, L4::Udp), None).expect("build");
        assert_eq!(hex(&out), hex(&expected), "entry aged {age_ns} ns");
    }
}

/// An established entry is refreshed (`last_seen_ns`) by a packet only once
/// it is a second old: a packet of a flow refreshed less than a second ago
/// writes nothing, one of a flow idle longer refreshes it; a FIN marks the
/// entry `CLOSING` however recent it is.
#[test]
fn established_entries_are_refreshed_at_most_once_a_second() {
    let sandbox = sandbox();
    let mut world = world_with(
        &sandbox,
        "refresh",
        &[node_port(Family::V4, proto::TCP, &[LOCAL_BE4])],
    );
    let key = CtKeyV4 {
        saddr: be32(CLIENT4),
        daddr: be32(NODE4),
        sport: Be16::from_host(CLIENT_PORT),
        dport: Be16::from_host(NODE_PORT),
        proto: proto::TCP,
        _pad: [0; 3],
    };
    let stored = |last_seen_ns: u64| CtValueV4 {
        last_seen_ns,
        saddr: be32(CLIENT4),
        daddr: be32(LOCAL4),
        sport: Be16::from_host(CLIENT_PORT),
        dport: Be16::from_host(TARGET),
        rev_nat_id: 7,
        flags: 0,
        _pad: [0; 3],
        backend_id: LOCAL_BE4.id,
    };
    let ack = build(
        &pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), ACK),
        None,
    )
    .expect("build");
    let fin = build(
        &pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), FIN),
        None,
    )
    .expect("build");
    let entry = |world: &mut World| {
        let ct: HashMap<&mut MapData, CtKeyV4, CtValueV4> = world.map(names::CT_V4).expect("CT_V4");
        ct.get(&key, 0).expect("the entry")
    };
    let put = |world: &mut World, last_seen: u64| {
        let mut ct: HashMap<&mut MapData, CtKeyV4, CtValueV4> =
            world.map(names::CT_V4).expect("CT_V4");
        ct.insert(&key, &stored(last_seen), 0).expect("insert");
    };
    // Half a second old: translated, not written.
    let recent = monotonic_ns() - 500_000_000;
    put(&mut world, recent);
    let (_, out) = world.run(Ingress, &ack).expect("run");
    assert_eq!(destination(&out), ip(LOCAL4), "translated");
    assert_eq!(
        entry(&mut world).last_seen_ns,
        recent,
        "half a second old: kept"
    );
    // Two seconds old: refreshed.
    let old = monotonic_ns() - 2_000_000_000;
    put(&mut world, old);
    let before = monotonic_ns();
    world.run(Ingress, &ack).expect("run");
    assert!(
        entry(&mut world).last_seen_ns >= before,
        "two seconds old: refreshed"
    );
    // A FIN on a recent entry: marked closing, refreshed.
    put(&mut world, recent);
    world.run(Ingress, &fin).expect("run");
    let closed = entry(&mut world);
    assert_ne!(
        closed.flags & ct_flags::CLOSING,
        0,
        "a FIN marks it closing"
    );
    assert!(closed.last_seen_ns > recent, "and refreshes it");
}

/// A TCP entry that only ever saw SYNs lives `TCP_SYN_NS` (60 s), so a flood
/// of spoofed SYNs does not hold entries and SNAT ports for six hours; once a
/// packet without SYN went through, the established timeout applies.
#[test]
fn syn_only_entries_expire_after_a_minute() {
    let sandbox = sandbox();
    let mut world = world_with(
        &sandbox,
        "syn",
        &[node_port(Family::V4, proto::TCP, &[LOCAL_BE4])],
    );
    let key = CtKeyV4 {
        saddr: be32(CLIENT4),
        daddr: be32(NODE4),
        sport: Be16::from_host(CLIENT_PORT),
        dport: Be16::from_host(NODE_PORT),
        proto: proto::TCP,
        _pad: [0; 3],
    };
    // Stored: send the flow to 10.244.9.9:9 (not a backend of the service).
    let stored = |last_seen_ns: u64, flags: u8| CtValueV4 {
        last_seen_ns,
        saddr: be32(CLIENT4),
        daddr: be32("10.244.9.9"),
        sport: Be16::from_host(CLIENT_PORT),
        dport: Be16::from_host(9),
        rev_nat_id: 7,
        flags,
        _pad: [0; 3],
        backend_id: LOCAL_BE4.id,
    };
    let input = pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), ACK);
    let bytes = build(&input, None).expect("build");
    let minute_and_a_bit = ct_timeout::TCP_SYN_NS + 1_000_000_000;
    for (age_ns, flags, expected_to, what) in [
        (
            0,
            ct_flags::SYN_ONLY,
            ep("10.244.9.9", 9),
            "a fresh SYN-only entry holds",
        ),
        (
            minute_and_a_bit,
            ct_flags::SYN_ONLY,
            ep(LOCAL4, TARGET),
            "a SYN-only entry a minute old is gone",
        ),
        (
            minute_and_a_bit,
            0,
            ep("10.244.9.9", 9),
            "an established entry (or one older programs wrote) a minute old holds",
        ),
    ] {
        {
            let mut ct: HashMap<&mut MapData, CtKeyV4, CtValueV4> =
                world.map(names::CT_V4).expect("CT_V4");
            let last_seen = monotonic_ns().wrapping_sub(age_ns);
            ct.insert(&key, &stored(last_seen, flags), 0)
                .expect("insert");
        }
        let (verdict, out) = world.run(Ingress, &bytes).expect("run");
        assert_eq!(verdict, TC_ACT_OK, "{what}");
        let expected =
            build(&pkt(ep(CLIENT4, CLIENT_PORT), expected_to, ACK), None).expect("build");
        assert_eq!(hex(&out), hex(&expected), "{what}");
    }
    // The ACK that went through cleared SYN_ONLY.
    let ct: HashMap<&mut MapData, CtKeyV4, CtValueV4> = world.map(names::CT_V4).expect("CT_V4");
    let flags = ct.get(&key, 0).expect("the entry").flags;
    assert_eq!(flags & ct_flags::SYN_ONLY, 0, "flags {flags:#x}");

    // A real flow: its SYN makes both entries SYN-only; the client's ACK
    // clears both, so the reply entry of a connection idle after its
    // handshake keeps the established timeout too.
    const PORT: u16 = CLIENT_PORT + 1;
    for (l4, past_syn) in [(SYN, false), (ACK, true)] {
        let (verdict, _) = world
            .run(
                Ingress,
                &build(&pkt(ep(CLIENT4, PORT), ep(NODE4, NODE_PORT), l4), None).expect("build"),
            )
            .expect("run");
        assert_eq!(verdict, TC_ACT_OK);
        let forward = CtKeyV4 {
            sport: Be16::from_host(PORT),
            ..key
        };
        let reply = CtKeyV4 {
            saddr: be32(LOCAL4),
            daddr: be32(CLIENT4),
            sport: Be16::from_host(TARGET),
            dport: Be16::from_host(PORT),
            proto: proto::TCP,
            _pad: [0; 3],
        };
        // Pending after the SYN, established after the ACK.
        let map = if past_syn {
            names::CT_V4
        } else {
            names::CT_PENDING_V4
        };
        let ct: HashMap<&mut MapData, CtKeyV4, CtValueV4> = world.map(map).expect(map);
        for (which, k) in [("forward", forward), ("reply", reply)] {
            let syn_only = ct.get(&k, 0).expect("the entry").flags & ct_flags::SYN_ONLY != 0;
            assert_eq!(
                syn_only, !past_syn,
                "{which} entry, after the ACK: {past_syn}"
            );
        }
    }
}

/// When every SNAT port towards a backend is taken, a new flow is dropped;
/// ports whose flows closed and went idle are free again.
#[test]
fn snat_ports_exhausted() {
    snat_ports_taken(false);
}

#[test]
fn snat_ports_of_idle_closed_flows_are_reclaimed() {
    snat_ports_taken(true);
}

fn snat_ports_taken(idle: bool) {
    let sandbox = sandbox();
    let mut world = world_with(
        &sandbox,
        "ports",
        &[node_port(Family::V4, proto::TCP, &[REMOTE_BE4])],
    );
    {
        let mut ct: HashMap<&mut MapData, CtKeyV4, CtValueV4> =
            world.map(names::CT_V4).expect("CT_V4");
        let taken = CtValueV4 {
            // Closed flows idle for twice the closing timeout, or live ones.
            last_seen_ns: if idle {
                monotonic_ns().saturating_sub(2 * proxy_common::ct_timeout::TCP_CLOSING_NS)
            } else {
                monotonic_ns()
            },
            saddr: be32(NODE4),
            daddr: be32("198.51.100.99"),
            sport: Be16::from_host(NODE_PORT),
            dport: Be16::from_host(1234),
            rev_nat_id: 7,
            flags: ct_flags::REPLY | ct_flags::SNAT | ct_flags::CLOSING,
            _pad: [0; 3],
            backend_id: REMOTE_BE4.id,
        };
        for port in SNAT_MIN..=SNAT_MAX {
            let key = CtKeyV4 {
                saddr: be32(REMOTE4),
                daddr: be32(NODE4),
                sport: Be16::from_host(TARGET),
                dport: Be16::from_host(port),
                proto: proto::TCP,
                _pad: [0; 3],
            };
            ct.insert(&key, &taken, 0).expect("insert");
        }
    }
    let before = world.stat("tc_snat_ports_exhausted");
    let syn = pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), SYN);
    let (verdict, _) = world
        .run(Ingress, &build(&syn, None).expect("build"))
        .expect("run");
    if idle {
        assert_ne!(verdict, TC_ACT_SHOT, "an idle port must be reclaimed");
        assert_eq!(world.stat("tc_snat_ports_exhausted"), before);
    } else {
        assert_eq!(verdict, TC_ACT_SHOT);
        assert_eq!(world.stat("tc_snat_ports_exhausted"), before + 1);
    }
}

/// SNAT ports held by pending (unanswered) flows: a port whose pending entry
/// is fresh stays taken, one idle past the SYN timeout is taken over
/// (`tc_snat_port_reclaimed`). The pending map is filled with every port (it
/// keeps fewer: the LRU evicts the rest), and the ports it did not keep are
/// held by live established flows, so only the pending ones can be free.
#[test]
fn snat_ports_of_unanswered_flows_are_reclaimed_after_the_syn_timeout() {
    snat_ports_pending(true);
}

#[test]
fn snat_ports_of_fresh_unanswered_flows_stay_taken() {
    snat_ports_pending(false);
}

fn snat_ports_pending(idle: bool) {
    let sandbox = sandbox();
    let mut world = world_with(
        &sandbox,
        "pending-ports",
        &[node_port(Family::V4, proto::TCP, &[REMOTE_BE4])],
    );
    let now = monotonic_ns();
    let entry = |last_seen_ns: u64, flags: u8| CtValueV4 {
        last_seen_ns,
        saddr: be32(NODE4),
        daddr: be32("198.51.100.99"),
        sport: Be16::from_host(NODE_PORT),
        dport: Be16::from_host(1234),
        rev_nat_id: 7,
        flags,
        _pad: [0; 3],
        backend_id: REMOTE_BE4.id,
    };
    let key = |port: u16| CtKeyV4 {
        saddr: be32(REMOTE4),
        daddr: be32(NODE4),
        sport: Be16::from_host(TARGET),
        dport: Be16::from_host(port),
        proto: proto::TCP,
        _pad: [0; 3],
    };
    let syn_only = ct_flags::REPLY | ct_flags::SNAT | ct_flags::SYN_ONLY;
    let pending_seen = if idle {
        now.saturating_sub(proxy_common::ct_timeout::TCP_SYN_NS + 1_000_000_000)
    } else {
        now
    };
    let kept: std::collections::HashSet<u16> = {
        let mut pending: HashMap<&mut MapData, CtKeyV4, CtValueV4> =
            world.map(names::CT_PENDING_V4).expect("CT_PENDING_V4");
        for port in SNAT_MIN..=SNAT_MAX {
            pending
                .insert(&key(port), &entry(pending_seen, syn_only), 0)
                .expect("insert");
        }
        pending
            .keys()
            .filter_map(Result::ok)
            .map(|k| k.dport.to_host())
            .collect()
    };
    assert!(
        !kept.is_empty() && kept.len() <= proxy_common::capacity::CONNTRACK_PENDING as usize,
        "the pending map kept {} ports",
        kept.len()
    );
    {
        let mut ct: HashMap<&mut MapData, CtKeyV4, CtValueV4> =
            world.map(names::CT_V4).expect("CT_V4");
        for port in (SNAT_MIN..=SNAT_MAX).filter(|p| !kept.contains(p)) {
            ct.insert(&key(port), &entry(now, ct_flags::REPLY | ct_flags::SNAT), 0)
                .expect("insert");
        }
    }
    let (exhausted, reclaimed) = (
        world.stat("tc_snat_ports_exhausted"),
        world.stat("tc_snat_port_reclaimed"),
    );
    let syn = pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), SYN);
    let (verdict, out) = world
        .run(Ingress, &build(&syn, None).expect("build"))
        .expect("run");
    if idle {
        assert_ne!(
            verdict, TC_ACT_SHOT,
            "an idle pending port must be reclaimed"
        );
        let port = source_port(&out).expect("a source port");
        assert!(
            kept.contains(&port),
            "port {port} was held by a pending flow"
        );
        assert_eq!(world.stat("tc_snat_port_reclaimed"), reclaimed + 1);
        assert_eq!(world.stat("tc_snat_ports_exhausted"), exhausted);
    } else {
        assert_eq!(verdict, TC_ACT_SHOT, "every port is held by a live flow");
        assert_eq!(world.stat("tc_snat_ports_exhausted"), exhausted + 1);
        assert_eq!(world.stat("tc_snat_port_reclaimed"), reclaimed);
    }
}

/// The MACs of the device the FIB sends to (`fib0`) and of its gateway.
const FIB_DEV_MAC: [u8; 6] = [0x02, 0, 0, 0xfb, 0, 0];
const FIB_GW_MAC: [u8; 6] = [0x02, 0, 0, 0xfb, 0, 1];

/// With forwarding on and routes inside the sandbox, a packet translated on
/// ingress is sent straight out of the FIB's device (`TC_ACT_REDIRECT`): the
/// NodePort reply that the stack would drop as martian (its source is the
/// node's own address), the forward packet to a remote backend, each with
/// the gateway's and the device's MACs and the TTL decremented (IPv4
/// checksum updated). A next hop without a neighbour entry goes through
/// `bpf_redirect_neigh` (MACs left to it, hop limit decremented); a local
/// destination goes to the stack untouched by the FIB step. A device marked
/// `PEER_NETNS` gets `bpf_redirect_peer` instead of `bpf_redirect`.
#[test]
fn fib_forwarding() {
    let sandbox = sandbox();
    fib_routes(&sandbox);
    sandbox
        .ip("-6 addr add fd00:244::1:5/128 dev lo nodad")
        .expect("ip -6 addr add");
    let services = [
        node_port(Family::V4, proto::TCP, &[REMOTE_BE4]),
        node_port(Family::V6, proto::TCP, &[REMOTE_BE6]),
        node_port(Family::V6, proto::UDP, &[LOCAL_BE6]),
    ];
    let mut world = world_with(&sandbox, "fib", &services);
    let mut snat_port = None;
    let mut step =
        |world: &mut World, input: Pkt, expected: Pkt, verdict: u32, fib: &str, forwarded: bool| {
            let before = world.stat(fib);
            let bytes = build(&input, snat_port).expect("build");
            let (got, out) = world.run(Ingress, &bytes).expect("run");
            assert_eq!(got, verdict, "verdict of {}", hex(&bytes));
            assert_eq!(world.stat(fib), before + 1, "{fib} not counted");
            // A new flow's packet: learn the SNAT port it was given.
            if needs_snat(&expected) && !needs_snat(&input) {
                snat_port = source_port(&out);
            }
            let mut want = build(&expected, snat_port).expect("build");
            if forwarded {
                decrement_ttl(&mut want);
            }
            if fib == "tc_fib_redirected" || fib == "tc_fib_redirected_peer" {
                want[..6].copy_from_slice(&FIB_GW_MAC);
                want[6..12].copy_from_slice(&FIB_DEV_MAC);
            }
            assert_eq!(hex(&out), hex(&want), "{fib}");
        };
    // IPv4: the new flow to a remote backend, then the backend's reply.
    step(
        &mut world,
        pkt(ep(CLIENT4, CLIENT_PORT), ep(NODE4, NODE_PORT), SYN),
        pkt(snat(NODE4), ep(REMOTE4, TARGET), SYN),
        TC_ACT_REDIRECT,
        "tc_fib_redirected",
        true,
    );
    step(
        &mut world,
        pkt(ep(REMOTE4, TARGET), snat(NODE4), ACK),
        pkt(ep(NODE4, NODE_PORT), ep(CLIENT4, CLIENT_PORT), ACK),
        TC_ACT_REDIRECT,
        "tc_fib_redirected",
        true,
    );
    // IPv6: a next hop without a neighbour entry.
    step(
        &mut world,
        pkt(ep(CLIENT6, CLIENT_PORT), ep(NODE6, NODE_PORT), SYN),
        pkt(snat(NODE6), ep(REMOTE6, TARGET), SYN),
        TC_ACT_REDIRECT,
        "tc_fib_redirected_neigh",
        true,
    );
    // A backend on a local address: the stack delivers it.
    step(
        &mut world,
        pkt(ep(CLIENT6, CLIENT_PORT), ep(NODE6, NODE_PORT), L4::Udp),
        pkt(ep(CLIENT6, CLIENT_PORT), ep(LOCAL6, TARGET), L4::Udp),
        TC_ACT_OK,
        "tc_fib_not_forwarded",
        false,
    );
    // The FIB's device a veth whose peer is in another namespace (userspace
    // sets `PEER_NETNS`): `bpf_redirect_peer`, the frame as above.
    let fib0 = ifindex("fib0");
    world
        .set_device(fib0, device_flags::PEER_NETNS)
        .expect("DEVICES");
    let peer_client = CLIENT_PORT + 1;
    step(
        &mut world,
        pkt(ep(CLIENT4, peer_client), ep(NODE4, NODE_PORT), SYN),
        pkt(snat(NODE4), ep(REMOTE4, TARGET), SYN),
        TC_ACT_REDIRECT,
        "tc_fib_redirected_peer",
        true,
    );
    step(
        &mut world,
        pkt(ep(REMOTE4, TARGET), snat(NODE4), ACK),
        pkt(ep(NODE4, NODE_PORT), ep(CLIENT4, peer_client), ACK),
        TC_ACT_REDIRECT,
        "tc_fib_redirected_peer",
        true,
    );
}

/// Forwarding on inside the sandbox, and routes out of `fib0` (a veth)
/// via a gateway: IPv4's with a neighbour entry, IPv6's without.
fn fib_routes(sandbox: &Sandbox) {
    for cmd in [
        "link add fib0 address 02:00:00:fb:00:00 type veth peer name fib1 address 02:00:00:fb:00:01",
        "link set fib0 up",
        "link set fib1 up",
        "neigh add 192.0.2.1 lladdr 02:00:00:fb:00:01 dev fib0 nud permanent",
        "route add 198.51.100.0/24 via 192.0.2.1 dev fib0 onlink",
        "route add 10.244.2.0/24 via 192.0.2.1 dev fib0 onlink",
        "-6 route add fd00:244::2:0/112 via fd00:fb::1 dev fib0 onlink",
    ] {
        sandbox.ip(cmd).unwrap_or_else(|e| panic!("ip {cmd}: {e}"));
    }
    for key in [
        "net/ipv4/conf/all/forwarding",
        "net/ipv6/conf/all/forwarding",
    ] {
        std::fs::write(Path::new("/proc/sys").join(key), "1").expect("forwarding on");
    }
}

/// What forwarding does to a frame's IP header: TTL/hop limit minus one,
/// the IPv4 header checksum computed anew.
fn decrement_ttl(frame: &mut [u8]) {
    match frame[14] >> 4 {
        4 => {
            frame[22] -= 1;
            frame[24] = 0;
            frame[25] = 0;
            let ihl = usize::from(frame[14] & 0x0f) * 4;
            let mut sum: u32 = frame[14..14 + ihl]
                .chunks(2)
                .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
                .sum();
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            frame[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        }
        _ => frame[21] -= 1,
    }
}

/// Every program in the object the daemon embeds passes the verifier: the
/// tc programs, the socket hooks (which share `lb.rs`), `sock_egress` and
/// `xdp_ingress`.
#[test]
fn every_program_verifies() {
    let sandbox = sandbox();
    let dir = sandbox.bpffs_path().join("all");
    std::fs::create_dir(&dir).expect("pin dir");
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(&dir)
        .load(proxy::dataplane::loader::OBJECT)
        .expect("loading the object");
    let mut loaded = Vec::new();
    for (name, prog) in ebpf.programs_mut() {
        let result = match prog {
            aya::programs::Program::SchedClassifier(p) => p.load(),
            aya::programs::Program::CgroupSockAddr(p) => p.load(),
            aya::programs::Program::CgroupSkb(p) => p.load(),
            aya::programs::Program::Xdp(p) => p.load(),
            _ => panic!("unexpected program type for {name}"),
        };
        if let Err(e) = result {
            let text = format!("{e:?}");
            let tail = text.len().saturating_sub(3000);
            panic!("{name} rejected: {}", text.get(tail..).unwrap_or(&text));
        }
        // How close each program is to the verifier's limit of 1,000,000.
        if let Ok(info) = prog.info() {
            eprintln!(
                "{name}: {:?} instructions verified",
                info.verified_instruction_count()
            );
        }
        loaded.push(name.to_owned());
    }
    loaded.sort();
    assert_eq!(
        loaded,
        [
            "sock_connect4",
            "sock_connect6",
            programs::SOCK_EGRESS,
            "sock_getpeername4",
            "sock_getpeername6",
            "sock_recvmsg4",
            "sock_recvmsg6",
            "sock_sendmsg4",
            "sock_sendmsg6",
            programs::TC_DSR4,
            programs::TC_EGRESS,
            programs::TC_INGRESS,
            programs::TC_INGRESS4,
            programs::TC_INGRESS4_NEW,
            programs::TC_INGRESS6,
            programs::TC_INGRESS6_NEW,
            programs::XDP_INGRESS,
        ]
    );
}

// ---- Fragments ---------------------------------------------------------------

/// Bytes of each fragment's IP payload (multiples of 8 but the last): three
/// fragments of an 8 + 1,000-byte UDP datagram, each frame small enough for
/// `World::run`'s output buffer.
const FRAG_SIZES: [usize; 3] = [400, 400, 208];

/// A fragmented UDP datagram goes through as a whole (v4 and v6): the first
/// fragment is translated like any packet, the later ones get its conntrack
/// entry through `FRAG_V4`/`FRAG_V6` and an IP-header-only rewrite, and the
/// translated fragments reassemble into a datagram whose UDP checksum is
/// valid for its new addresses and ports. The reply, fragmented too, comes
/// back the same way; a later fragment whose first was never seen is dropped.
#[test]
fn fragmented_datagrams_are_translated_whole() {
    let sandbox = sandbox();
    let mut world = world_with(
        &sandbox,
        "frag",
        &Family::BOTH.map(|f| node_port(f, proto::UDP, f.remote_backends())),
    );
    for family in Family::BOTH {
        let (node, client, backend) = (family.node(), family.client(), family.remote());
        let payload: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let request = Datagram {
            src: (ip(client), CLIENT_PORT),
            dst: (ip(node), NODE_PORT),
            payload: payload.clone(),
        };
        let before = stats(&mut world);
        let out = run_fragments(&mut world, Ingress, &request.fragments(0x4242, &FRAG_SIZES));
        let got = reassemble(&out).unwrap_or_else(|e| panic!("{node}: the request: {e}"));
        assert_eq!(got.src.0, ip(node), "{node}: SNATed to the node");
        assert!(
            (SNAT_MIN..=SNAT_MAX).contains(&got.src.1),
            "{node}: a SNAT port"
        );
        assert_eq!(got.dst, (ip(backend), TARGET), "{node}: to the backend");
        assert_eq!(got.payload, payload, "{node}: the payload is untouched");
        let after = stats(&mut world);
        assert_eq!(
            counted(&before, &after),
            [1, 2, 2, 0, 0],
            "{node}: tc_dnat, tc_ct_forward, tc_fragment_forwarded, tc_fragment_unknown, \
             tc_fragment_dropped"
        );

        // The backend's reply, fragmented by the backend's kernel.
        let reply = Datagram {
            src: (ip(backend), TARGET),
            dst: got.src,
            payload: payload.iter().rev().copied().collect(),
        };
        let out = run_fragments(&mut world, Ingress, &reply.fragments(0x0707, &FRAG_SIZES));
        let back = reassemble(&out).unwrap_or_else(|e| panic!("{node}: the reply: {e}"));
        assert_eq!(back.src, (ip(node), NODE_PORT), "{node}: from the frontend");
        assert_eq!(back.dst, (ip(client), CLIENT_PORT), "{node}: to the client");
        assert_eq!(back.payload, reply.payload, "{node}: the reply's payload");

        // A later fragment of a datagram whose first fragment never came.
        let stray = request.fragments(0x5151, &FRAG_SIZES);
        let before = stats(&mut world);
        let (verdict, _) = world.run(Ingress, &stray[1]).expect("run");
        assert_eq!(
            verdict, TC_ACT_SHOT,
            "{node}: an unknown later fragment is dropped"
        );
        assert_eq!(counted(&before, &stats(&mut world)), [0, 0, 0, 1, 0]);
    }
}

/// A backend on this node (no SNAT): its fragmented reply leaves through
/// `tc_egress`, which rewrites every fragment to come from the frontend, the
/// later ones through the first's record (v4 and v6).
#[test]
fn fragmented_replies_are_translated_on_egress() {
    let sandbox = sandbox();
    let mut world = world_with(
        &sandbox,
        "frag-egress",
        &Family::BOTH.map(|f| node_port(f, proto::UDP, f.local_backends())),
    );
    for family in Family::BOTH {
        let (node, client, backend) = (family.node(), family.client(), family.local());
        let payload: Vec<u8> = (0..1000u32).map(|i| (i * 13 + 1) as u8).collect();
        let request = Datagram {
            src: (ip(client), CLIENT_PORT),
            dst: (ip(node), NODE_PORT),
            payload: payload.clone(),
        };
        let out = run_fragments(&mut world, Ingress, &request.fragments(0x1111, &FRAG_SIZES));
        let got = reassemble(&out).unwrap_or_else(|e| panic!("{node}: the request: {e}"));
        assert_eq!(
            got.src,
            (ip(client), CLIENT_PORT),
            "{node}: the client's address kept"
        );
        assert_eq!(
            got.dst,
            (ip(backend), TARGET),
            "{node}: to the local backend"
        );
        let reply = Datagram {
            src: (ip(backend), TARGET),
            dst: (ip(client), CLIENT_PORT),
            payload,
        };
        let before = world.stat("tc_fragment_forwarded");
        let out = run_fragments(&mut world, Egress, &reply.fragments(0x2222, &FRAG_SIZES));
        let back = reassemble(&out).unwrap_or_else(|e| panic!("{node}: the reply: {e}"));
        assert_eq!(back.src, (ip(node), NODE_PORT), "{node}: from the frontend");
        assert_eq!(back.dst, (ip(client), CLIENT_PORT), "{node}: to the client");
        assert_eq!(back.payload, reply.payload, "{node}: the reply's payload");
        assert_eq!(world.stat("tc_fragment_forwarded") - before, 2, "{node}");
    }
}

/// The fragment-related counters, in the order the test compares them.
fn stats(world: &mut World) -> [u64; 5] {
    [
        "tc_dnat",
        "tc_ct_forward",
        "tc_fragment_forwarded",
        "tc_fragment_unknown",
        "tc_fragment_dropped",
    ]
    .map(|name| world.stat(name))
}

fn counted(before: &[u64; 5], after: &[u64; 5]) -> [u64; 5] {
    std::array::from_fn(|i| after[i] - before[i])
}

/// Runs each frame through `hook`; every one must pass (`TC_ACT_OK`).
fn run_fragments(world: &mut World, hook: Hook, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    frames
        .iter()
        .enumerate()
        .map(|(i, frame)| {
            let (verdict, out) = world.run(hook, frame).expect("run");
            assert_eq!(verdict, TC_ACT_OK, "fragment {i}");
            out
        })
        .collect()
}

/// A UDP datagram: source, destination, payload.
struct Datagram {
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    payload: Vec<u8>,
}

impl Datagram {
    /// The UDP header and payload, with the checksum over the whole datagram.
    fn bytes(&self) -> Vec<u8> {
        let len = (8 + self.payload.len()) as u16;
        let mut d = Vec::new();
        d.extend_from_slice(&self.src.1.to_be_bytes());
        d.extend_from_slice(&self.dst.1.to_be_bytes());
        d.extend_from_slice(&len.to_be_bytes());
        d.extend_from_slice(&[0, 0]);
        d.extend_from_slice(&self.payload);
        let sum = !fold(pseudo_sum(self.src.0, self.dst.0, len) + ones_sum(&d));
        let sum = if sum == 0 { 0xffff } else { sum };
        d[6..8].copy_from_slice(&sum.to_be_bytes());
        d
    }

    /// The datagram cut into fragments of `sizes` bytes of IP payload
    /// (IPv4 fragments, or IPv6 ones with a Fragment header), as a kernel
    /// fragments it: each an Ethernet frame.
    fn fragments(&self, id: u16, sizes: &[usize]) -> Vec<Vec<u8>> {
        let data = self.bytes();
        let mut frames = Vec::new();
        let mut off = 0;
        for (i, &size) in sizes.iter().enumerate() {
            let chunk = &data[off..(off + size).min(data.len())];
            let more = i + 1 < sizes.len();
            let mut f = Vec::new();
            f.extend_from_slice(&NODE_MAC);
            f.extend_from_slice(&CLIENT_MAC);
            match (self.src.0, self.dst.0) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    f.extend_from_slice(&[0x08, 0x00]);
                    let mut h = [0u8; 20];
                    h[0] = 0x45;
                    h[2..4].copy_from_slice(&((20 + chunk.len()) as u16).to_be_bytes());
                    h[4..6].copy_from_slice(&id.to_be_bytes());
                    let frag = (off / 8) as u16 | if more { 0x2000 } else { 0 };
                    h[6..8].copy_from_slice(&frag.to_be_bytes());
                    h[8] = 64;
                    h[9] = proto::UDP;
                    h[12..16].copy_from_slice(&s.octets());
                    h[16..20].copy_from_slice(&d.octets());
                    let sum = !fold(ones_sum(&h));
                    h[10..12].copy_from_slice(&sum.to_be_bytes());
                    f.extend_from_slice(&h);
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    f.extend_from_slice(&[0x86, 0xdd]);
                    let mut h = [0u8; 48];
                    h[0] = 0x60;
                    h[4..6].copy_from_slice(&((8 + chunk.len()) as u16).to_be_bytes());
                    h[6] = 44;
                    h[7] = 64;
                    h[8..24].copy_from_slice(&s.octets());
                    h[24..40].copy_from_slice(&d.octets());
                    h[40] = proto::UDP;
                    let frag = off as u16 | u16::from(more);
                    h[42..44].copy_from_slice(&frag.to_be_bytes());
                    h[44..48].copy_from_slice(&(0xabcd_0000 | u32::from(id)).to_be_bytes());
                    f.extend_from_slice(&h);
                }
                _ => panic!("mixed address families"),
            }
            f.extend_from_slice(chunk);
            frames.push(f);
            off += chunk.len();
        }
        frames
    }
}

/// Puts translated fragments back together, checking every IPv4 header
/// checksum, that all fragments agree on their addresses and identification,
/// that the offsets follow one another, and that the UDP checksum is valid
/// over the whole datagram.
fn reassemble(frames: &[Vec<u8>]) -> Result<Datagram, String> {
    let mut data = Vec::new();
    let mut addrs: Option<(IpAddr, IpAddr, u32)> = None;
    for (i, f) in frames.iter().enumerate() {
        let (src, dst, id, off, chunk): (IpAddr, IpAddr, u32, usize, &[u8]) =
            match u16::from_be_bytes([f[12], f[13]]) {
                0x0800 => {
                    let h = &f[14..34];
                    if fold(ones_sum(h)) != 0xffff {
                        return Err(format!("fragment {i}: bad IPv4 header checksum"));
                    }
                    let s: [u8; 4] = h[12..16].try_into().map_err(|_| "short")?;
                    let d: [u8; 4] = h[16..20].try_into().map_err(|_| "short")?;
                    let frag = u16::from_be_bytes([h[6], h[7]]);
                    let id = u32::from(u16::from_be_bytes([h[4], h[5]]));
                    (
                        s.into(),
                        d.into(),
                        id,
                        usize::from(frag & 0x1fff) * 8,
                        &f[34..],
                    )
                }
                _ => {
                    let h = &f[14..62];
                    let s: [u8; 16] = h[8..24].try_into().map_err(|_| "short")?;
                    let d: [u8; 16] = h[24..40].try_into().map_err(|_| "short")?;
                    let frag = u16::from_be_bytes([h[42], h[43]]);
                    let id = u32::from_be_bytes([h[44], h[45], h[46], h[47]]);
                    (s.into(), d.into(), id, usize::from(frag & 0xfff8), &f[62..])
                }
            };
        if *addrs.get_or_insert((src, dst, id)) != (src, dst, id) {
            return Err(format!(
                "fragment {i}: addresses or id differ from the first's"
            ));
        }
        if off != data.len() {
            return Err(format!(
                "fragment {i}: offset {off}, expected {}",
                data.len()
            ));
        }
        data.extend_from_slice(chunk);
    }
    let (src, dst, _) = addrs.ok_or("no fragments")?;
    let len = u16::from_be_bytes([data[4], data[5]]);
    if usize::from(len) != data.len() {
        return Err(format!("UDP length {len}, datagram {} bytes", data.len()));
    }
    if fold(pseudo_sum(src, dst, len) + ones_sum(&data)) != 0xffff {
        return Err(format!(
            "bad UDP checksum over the reassembled datagram: {}",
            hex(&data[..8])
        ));
    }
    Ok(Datagram {
        src: (src, u16::from_be_bytes([data[0], data[1]])),
        dst: (dst, u16::from_be_bytes([data[2], data[3]])),
        payload: data[8..].to_vec(),
    })
}

/// The one's-complement sum of the UDP pseudo-header (unfolded).
fn pseudo_sum(src: IpAddr, dst: IpAddr, len: u16) -> u32 {
    let mut p = Vec::new();
    for a in [src, dst] {
        match a {
            IpAddr::V4(a) => p.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => p.extend_from_slice(&a.octets()),
        }
    }
    p.extend_from_slice(&[0, proto::UDP]);
    p.extend_from_slice(&len.to_be_bytes());
    ones_sum(&p)
}

/// The sum of `b`'s 16-bit big-endian words (odd length: a zero pad byte).
fn ones_sum(b: &[u8]) -> u32 {
    b.chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// One case's loaded programs and maps: the kit's [`TcWorld`] with the
/// cases' vocabulary.
struct World(TcWorld);

impl std::ops::Deref for World {
    type Target = TcWorld;
    fn deref(&self) -> &TcWorld {
        &self.0
    }
}

impl std::ops::DerefMut for World {
    fn deref_mut(&mut self) -> &mut TcWorld {
        &mut self.0
    }
}

impl World {
    fn load(dir: &Path) -> Result<Self, String> {
        let mut world = TcWorld::load(dir, proxy::dataplane::loader::OBJECT, v4(NODE4), v6(NODE6))?;
        world.set_node_config(&NodeConfig {
            snat_v4: Be32::from_octets(v4(NODE4)),
            snat_port_min: SNAT_MIN,
            snat_port_max: SNAT_MAX,
            snat_v6: v6(NODE6),
        })?;
        Ok(Self(world))
    }

    fn run(&mut self, hook: Hook, input: &[u8]) -> Result<(u32, Vec<u8>), String> {
        let hook = match hook {
            Ingress => tc_world::Hook::Ingress,
            Egress => tc_world::Hook::Egress,
        };
        self.0.run(hook, input)
    }

    fn stat(&mut self, name: &str) -> u64 {
        self.0.stat(name).expect("STATS")
    }

    fn install(&mut self, devices: &[(u32, u32)], services: &[Svc]) -> Result<(), String> {
        for &(ifindex, flags) in devices {
            self.set_device(ifindex, flags)?;
        }
        // The cluster CIDR (read only on devices with a DETECT_CIDR flag).
        self.add_local_cidr(ip("10.244.0.0"), 16)?;
        self.add_local_cidr(ip("fd00:244::"), 32)?;
        for svc in services {
            self.set_backends(svc, svc.backends, &[])?;
        }
        Ok(())
    }

    /// Writes `svc` with `backends` (backends, slots, then slot 0), and
    /// deletes the backend ids that are no longer used.
    fn set_backends(
        &mut self,
        svc: &Svc,
        backends: &[Backend],
        gone: &[u32],
    ) -> Result<(), String> {
        let service = TcService {
            vip: ip(svc.vip),
            port: svc.port,
            proto: svc.proto,
            scope: svc.scope,
            flags: svc.flags,
            rev_nat_id: svc.rev_nat_id,
            affinity_timeout: svc.affinity_timeout,
        };
        let backends: Vec<TcBackend> = backends
            .iter()
            .map(|b| TcBackend {
                id: b.id,
                addr: ip(b.addr),
                port: b.port,
                flags: b.flags,
            })
            .collect();
        self.set_service(&service, &backends, gone)
    }
}

/// Runs one case; `snat_configured: false` leaves `NODE_CFG` all zero.
fn run_case(case: &Case, dir: &Path, snat_configured: bool) -> Result<(), String> {
    let mut world = World::load(dir)?;
    if !snat_configured {
        world.set_node_config(&NodeConfig::default())?;
    }
    world.install(case.devices, case.services)?;
    let mut snat_port: Option<u16> = None;
    for (n, step) in case.steps.iter().enumerate() {
        match step {
            Step::SetBackends { svc, backends } => {
                let svc = case.services.get(*svc).ok_or("no such service")?;
                let gone: Vec<u32> = svc
                    .backends
                    .iter()
                    .map(|b| b.id)
                    .filter(|id| backends.iter().all(|b| b.id != *id))
                    .collect();
                world.set_backends(svc, backends, &gone)?;
            }
            Step::Send {
                hook,
                input,
                verdict,
                output,
                reason,
            } => {
                let ctx = |what: String| format!("step {n}: {what}");
                let bytes = build(input, snat_port).map_err(ctx)?;
                let before = world.stat(reason);
                // A translation on ingress is followed by a FIB lookup,
                // which the sandbox (forwarding off) sends to the stack.
                let fib = matches!(hook, Ingress)
                    && matches!(
                        *reason,
                        "tc_dnat"
                            | "tc_ct_forward"
                            | "tc_ct_reply"
                            | "tc_rebalanced"
                            | "tc_cluster_ip_masqueraded"
                            | "tc_masquerade_all"
                    );
                let fib_before = world.stat(FIB_FALLBACK);
                let (got, out) = world.run(*hook, &bytes).map_err(ctx)?;
                if got != *verdict {
                    return Err(ctx(format!("verdict {got}, expected {verdict}")));
                }
                let counted = world.stat(reason) - before;
                if counted != 1 {
                    return Err(ctx(format!(
                        "reason {reason} counted {counted} times, not once"
                    )));
                }
                let fib_counted = world.stat(FIB_FALLBACK) - fib_before;
                if fib_counted != u64::from(fib) {
                    return Err(ctx(format!(
                        "{FIB_FALLBACK} counted {fib_counted} times, expected {}",
                        u64::from(fib)
                    )));
                }
                let expected = match output {
                    Unchanged => Some(bytes.clone()),
                    Dropped => None,
                    Reject => Some(reject(input, &bytes)?),
                    Reset => Some(reset(input)?),
                    Packet(p) => {
                        if needs_snat(p) && snat_port.is_none() {
                            let port = source_port(&out).ok_or(ctx("no source port".into()))?;
                            if !(SNAT_MIN..=SNAT_MAX).contains(&port) {
                                return Err(ctx(format!("SNAT port {port} out of range")));
                            }
                            snat_port = Some(port);
                        }
                        Some(build(p, snat_port).map_err(ctx)?)
                    }
                };
                if let Some(expected) = expected
                    && out != expected
                {
                    return Err(ctx(format!(
                        "output differs\n  got      {}\n  expected {}",
                        hex(&out),
                        hex(&expected)
                    )));
                }
            }
        }
    }
    Ok(())
}

fn needs_snat(p: &Pkt) -> bool {
    matches!(p.src.port, Port::Snat) || matches!(p.dst.port, Port::Snat)
}

/// The TCP/UDP source port of an Ethernet frame, read with etherparse.
fn source_port(frame: &[u8]) -> Option<u16> {
    let sliced = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
    match sliced.transport? {
        etherparse::TransportSlice::Tcp(t) => Some(t.source_port()),
        etherparse::TransportSlice::Udp(u) => Some(u.source_port()),
        _ => None,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("bad address {s} in a case: {e}"))
}

fn be32(s: &str) -> Be32 {
    match ip(s) {
        IpAddr::V4(a) => Be32::from_octets(a.octets()),
        IpAddr::V6(_) => panic!("{s} is not IPv4"),
    }
}

fn v4(s: &str) -> [u8; 4] {
    match ip(s) {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => panic!("{s} is not IPv4"),
    }
}

fn v6(s: &str) -> [u8; 16] {
    match ip(s) {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => panic!("{s} is not IPv6"),
    }
}

fn port(p: Port, snat: Option<u16>) -> Result<u16, String> {
    match p {
        Port::N(n) => Ok(n),
        Port::Snat => snat.ok_or_else(|| "the SNAT port is not known yet".to_owned()),
    }
}

const PAYLOAD: &[u8] = b"hello, backend";

/// Builds the frame `p` describes, every checksum computed by etherparse.
fn build(p: &Pkt, snat: Option<u16>) -> Result<Vec<u8>, String> {
    let sport = port(p.src.port, snat)?;
    let dport = port(p.dst.port, snat)?;
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let (number, l4): (IpNumber, Vec<u8>) = match p.l4 {
        L4::Tcp { .. } => (IpNumber::TCP, Vec::new()),
        L4::Udp | L4::UdpNoChecksum => (IpNumber::UDP, Vec::new()),
        L4::Other(n) => (IpNumber(n), vec![0; 8]),
        L4::IcmpUnreachable => (IpNumber::ICMP, Vec::new()),
        L4::IcmpErrorAbout(_) if ip(p.src.addr).is_ipv6() => (IpNumber::IPV6_ICMP, Vec::new()),
        L4::IcmpErrorAbout(_) => (IpNumber::ICMP, Vec::new()),
    };
    let quote = match p.l4 {
        L4::IcmpErrorAbout(inner) => {
            let frame = build(inner, snat)?;
            let len = if ip(inner.src.addr).is_ipv6() { 40 } else { 20 } + 8;
            frame
                .get(14..14 + len)
                .ok_or("short quoted packet")?
                .to_vec()
        }
        _ => Vec::new(),
    };
    let mut frame = Vec::new();
    let transport = |pseudo: &dyn Fn(&TcpHeader, &UdpHeader) -> (u16, u16)| -> Vec<u8> {
        let mut t = Vec::new();
        match p.l4 {
            L4::Tcp { syn, fin } => {
                let mut tcp = TcpHeader::new(sport, dport, SEQ, 64240);
                tcp.syn = syn;
                tcp.fin = fin;
                tcp.ack = !syn;
                tcp.checksum = pseudo(&tcp, &UdpHeader::default()).0;
                tcp.write(&mut t).ok();
                t.extend_from_slice(PAYLOAD);
            }
            L4::Udp | L4::UdpNoChecksum => {
                let mut udp = UdpHeader {
                    source_port: sport,
                    destination_port: dport,
                    length: (8 + PAYLOAD.len()) as u16,
                    checksum: 0,
                };
                if !matches!(p.l4, L4::UdpNoChecksum) {
                    udp.checksum = pseudo(&TcpHeader::default(), &udp).1;
                }
                udp.write(&mut t).ok();
                t.extend_from_slice(PAYLOAD);
            }
            L4::Other(_) => t.extend_from_slice(&l4),
            L4::IcmpErrorAbout(_) => match (ip(p.src.addr), ip(p.dst.addr)) {
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    let kind =
                        Icmpv6Type::DestinationUnreachable(icmpv6::DestUnreachableCode::Port);
                    if let Ok(icmp) =
                        Icmpv6Header::with_checksum(kind, s.octets(), d.octets(), &quote)
                    {
                        icmp.write(&mut t).ok();
                    }
                    t.extend_from_slice(&quote);
                }
                _ => {
                    let kind =
                        Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Host);
                    Icmpv4Header::with_checksum(kind, &quote).write(&mut t).ok();
                    t.extend_from_slice(&quote);
                }
            },
            L4::IcmpUnreachable => {
                let quote = [0x45u8; 28];
                let icmp = Icmpv4Header::with_checksum(
                    Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Port),
                    &quote,
                );
                icmp.write(&mut t).ok();
                t.extend_from_slice(&quote);
            }
        }
        t
    };
    match (ip(p.src.addr), ip(p.dst.addr)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            Ethernet2Header {
                source: CLIENT_MAC,
                destination: NODE_MAC,
                ether_type: EtherType::IPV4,
            }
            .write(&mut frame)
            .map_err(|x| e(&x))?;
            let mut iph =
                Ipv4Header::new(0, 64, number, s.octets(), d.octets()).map_err(|x| e(&x))?;
            iph.identification = 0x1234;
            iph.dont_fragment = false;
            iph.more_fragments = p.frag.0;
            iph.fragment_offset = IpFragOffset::try_new(p.frag.1).map_err(|x| e(&x))?;
            iph.options = p.options.try_into().map_err(|x| e(&x))?;
            let body = transport(&|tcp, udp| {
                (
                    tcp.calc_checksum_ipv4(&iph, PAYLOAD).unwrap_or(0),
                    udp.calc_checksum_ipv4(&iph, PAYLOAD).unwrap_or(0),
                )
            });
            iph.set_payload_len(body.len()).map_err(|x| e(&x))?;
            iph.header_checksum = iph.calc_header_checksum();
            iph.write(&mut frame).map_err(|x| e(&x))?;
            frame.extend_from_slice(&body);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            Ethernet2Header {
                source: CLIENT_MAC,
                destination: NODE_MAC,
                ether_type: EtherType::IPV6,
            }
            .write(&mut frame)
            .map_err(|x| e(&x))?;
            let mut iph = Ipv6Header {
                traffic_class: 0,
                flow_label: Ipv6FlowLabel::ZERO,
                payload_length: 0,
                next_header: number,
                hop_limit: 64,
                source: s.octets(),
                destination: d.octets(),
            };
            let body = transport(&|tcp, udp| {
                (
                    tcp.calc_checksum_ipv6(&iph, PAYLOAD).unwrap_or(0),
                    udp.calc_checksum_ipv6(&iph, PAYLOAD).unwrap_or(0),
                )
            });
            iph.payload_length = body.len() as u16;
            iph.write(&mut frame).map_err(|x| e(&x))?;
            frame.extend_from_slice(&body);
        }
        _ => return Err("mixed address families".into()),
    }
    if let Some(n) = p.truncate {
        frame.truncate(n);
    }
    Ok(frame)
}

/// The sequence number every TCP packet of the cases carries (`build`).
const SEQ: u32 = 1000;

/// The RST the programs must produce for the TCP segment `p` (RFC 793): MACs,
/// addresses and ports swapped, no options, no payload; `<SEQ=SEG.ACK><RST>`
/// when the segment has ACK, else `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><RST,ACK>`
/// (`SEG.LEN`: the payload, plus one for SYN and for FIN).
fn reset(p: &Pkt) -> Result<Vec<u8>, String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let L4::Tcp { syn, fin } = p.l4 else {
        return Err("a reset answers TCP only".into());
    };
    let has_ack = !syn; // as `build` makes them
    let mut tcp = TcpHeader::new(port(p.dst.port, None)?, port(p.src.port, None)?, 0, 0);
    tcp.rst = true;
    if has_ack {
        tcp.sequence_number = 0; // the input's acknowledgment number
    } else {
        tcp.ack = true;
        tcp.acknowledgment_number = SEQ + PAYLOAD.len() as u32 + u32::from(syn) + u32::from(fin);
    }
    let mut frame = Vec::new();
    let ether = |ether_type| Ethernet2Header {
        source: NODE_MAC,
        destination: CLIENT_MAC,
        ether_type,
    };
    match (ip(p.src.addr), ip(p.dst.addr)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ether(EtherType::IPV4)
                .write(&mut frame)
                .map_err(|x| e(&x))?;
            let mut iph = Ipv4Header::new(20, 64, IpNumber::TCP, d.octets(), s.octets())
                .map_err(|x| e(&x))?;
            iph.dont_fragment = false;
            iph.header_checksum = iph.calc_header_checksum();
            tcp.checksum = tcp.calc_checksum_ipv4(&iph, &[]).map_err(|x| e(&x))?;
            iph.write(&mut frame).map_err(|x| e(&x))?;
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            ether(EtherType::IPV6)
                .write(&mut frame)
                .map_err(|x| e(&x))?;
            let iph = Ipv6Header {
                traffic_class: 0,
                flow_label: Ipv6FlowLabel::ZERO,
                payload_length: 20,
                next_header: IpNumber::TCP,
                hop_limit: 64,
                source: d.octets(),
                destination: s.octets(),
            };
            tcp.checksum = tcp.calc_checksum_ipv6(&iph, &[]).map_err(|x| e(&x))?;
            iph.write(&mut frame).map_err(|x| e(&x))?;
        }
        _ => return Err("mixed address families".into()),
    }
    tcp.write(&mut frame).map_err(|x| e(&x))?;
    Ok(frame)
}

/// The port-unreachable the programs must produce for `input`: MACs and
/// addresses swapped, the offending IP header plus 8 bytes quoted.
fn reject(p: &Pkt, input: &[u8]) -> Result<Vec<u8>, String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let mut frame = Vec::new();
    match (ip(p.src.addr), ip(p.dst.addr)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let quote = &input[14..14 + 28];
            Ethernet2Header {
                source: NODE_MAC,
                destination: CLIENT_MAC,
                ether_type: EtherType::IPV4,
            }
            .write(&mut frame)
            .map_err(|x| e(&x))?;
            let icmp = Icmpv4Header::with_checksum(
                Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Port),
                quote,
            );
            let mut iph = Ipv4Header::new(
                (icmp.header_len() + quote.len()) as u16,
                64,
                IpNumber::ICMP,
                d.octets(),
                s.octets(),
            )
            .map_err(|x| e(&x))?;
            iph.dont_fragment = false;
            iph.header_checksum = iph.calc_header_checksum();
            iph.write(&mut frame).map_err(|x| e(&x))?;
            icmp.write(&mut frame).map_err(|x| e(&x))?;
            frame.extend_from_slice(quote);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            // The IPv6 header and the whole fixed transport header.
            let l4 = if matches!(p.l4, L4::Tcp { .. }) {
                20
            } else {
                8
            };
            let quote = &input[14..14 + 40 + l4];
            Ethernet2Header {
                source: NODE_MAC,
                destination: CLIENT_MAC,
                ether_type: EtherType::IPV6,
            }
            .write(&mut frame)
            .map_err(|x| e(&x))?;
            let icmp = Icmpv6Header::with_checksum(
                Icmpv6Type::DestinationUnreachable(icmpv6::DestUnreachableCode::Port),
                d.octets(),
                s.octets(),
                quote,
            )
            .map_err(|x| e(&x))?;
            Ipv6Header {
                traffic_class: 0,
                flow_label: Ipv6FlowLabel::ZERO,
                payload_length: (icmp.header_len() + quote.len()) as u16,
                next_header: IpNumber::IPV6_ICMP,
                hop_limit: 64,
                source: d.octets(),
                destination: s.octets(),
            }
            .write(&mut frame)
            .map_err(|x| e(&x))?;
            icmp.write(&mut frame).map_err(|x| e(&x))?;
            frame.extend_from_slice(quote);
        }
        _ => return Err("mixed address families".into()),
    }
    Ok(frame)
}

// ---- Maglev ----------------------------------------------------------------

/// The seed of the Maglev tests (any value; both "nodes" use it).
const MAGLEV_SEED: u32 = 0x1234_5678;

/// Four local backends (no SNAT, so outputs show the client's address), by
/// identity; each "node" gives them its own ids.
const MAGLEV_ADDRS4: [&str; 4] = ["10.244.1.11", "10.244.1.12", "10.244.1.13", "10.244.1.14"];
const MAGLEV_ADDRS6: [&str; 4] = [
    "fd00:244::1:11",
    "fd00:244::1:12",
    "fd00:244::1:13",
    "fd00:244::1:14",
];

/// The backends of a Maglev test with ids from `first_id` on.
fn maglev_backends(addrs: &[&'static str], first_id: u32) -> Vec<Backend> {
    addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| Backend {
            id: first_id + i as u32,
            addr,
            port: TARGET,
            flags: backend_flags::LOCAL,
        })
        .collect()
}

/// A world (one "node") with one external frontend over `backends`, and,
/// when `size` is non-zero, the frontend's Maglev table as the daemon's
/// plan builds it (from the backends' addresses and ports).
fn maglev_world(
    dir: &Path,
    vip: &'static str,
    protocol: u8,
    backends: &[Backend],
    size: u32,
) -> World {
    std::fs::create_dir_all(dir).expect("pin dir");
    let mut world = World::load(dir).expect("load");
    let leaked: &'static [Backend] = Box::leak(backends.to_vec().into_boxed_slice());
    let service = svc(vip, NODE_PORT, protocol, scope::INTERNAL, EXT, leaked);
    world.install(&[], &[service]).expect("install");
    let mut cfg: Array<&mut MapData, proxy_common::MaglevConfig> =
        world.map(names::MAGLEV_CFG).expect("MAGLEV_CFG");
    cfg.set(
        0,
        &proxy_common::MaglevConfig {
            size,
            seed: MAGLEV_SEED,
        },
        0,
    )
    .expect("MAGLEV_CFG");
    if size != 0 {
        let maglev = proxy::plan::Maglev::new(size, MAGLEV_SEED).expect("a valid size");
        let identities: Vec<proxy::model::Backend> = backends
            .iter()
            .map(|b| proxy::model::Backend {
                addr: ip(b.addr),
                port: b.port,
                protocol: if protocol == proto::TCP {
                    proxy::model::Protocol::Tcp
                } else {
                    proxy::model::Protocol::Udp
                },
            })
            .collect();
        let table = maglev.table(&identities).expect("a table");
        let ids: Vec<u32> = table.iter().map(|i| backends[*i].id).collect();
        let mut tables: HashMap<&mut MapData, u64, proxy_common::MaglevTable> =
            world.map(names::MAGLEV).expect("MAGLEV");
        tables
            .insert(
                &proxy_common::maglev::key(7, scope::INTERNAL),
                &proxy::dataplane::maglev::value(&ids),
                0,
            )
            .expect("MAGLEV");
    }
    world
}

/// The backend address the daemon's table gives a 5-tuple (what every node
/// must pick).
fn maglev_expected(
    addrs: &[&'static str],
    protocol: u8,
    client: &str,
    sport: u16,
    vip: &str,
) -> IpAddr {
    let maglev = proxy::plan::Maglev::new(997, MAGLEV_SEED).expect("size");
    let identities: Vec<proxy::model::Backend> = addrs
        .iter()
        .map(|a| proxy::model::Backend {
            addr: ip(a),
            port: TARGET,
            protocol: proxy::model::Protocol::Tcp,
        })
        .collect();
    let table = maglev.table(&identities).expect("a table");
    let hash = match (ip(client), ip(vip)) {
        (IpAddr::V4(c), IpAddr::V4(v)) => {
            proxy::plan::maglev::flow_hash_v4(c, v, sport, NODE_PORT, protocol, MAGLEV_SEED)
        }
        (IpAddr::V6(c), IpAddr::V6(v)) => {
            proxy::plan::maglev::flow_hash_v6(c, v, sport, NODE_PORT, protocol, MAGLEV_SEED)
        }
        _ => panic!("mixed families"),
    };
    identities[table[(hash % 997) as usize]].addr
}

/// The destination of a translated packet.
fn destination(out: &[u8]) -> IpAddr {
    let sliced = etherparse::SlicedPacket::from_ethernet(out).expect("parse");
    match sliced.net {
        Some(etherparse::NetSlice::Ipv4(ip)) => ip.header().destination_addr().into(),
        Some(etherparse::NetSlice::Ipv6(ip)) => ip.header().destination_addr().into(),
        _ => panic!("not IP"),
    }
}

/// Runs 32 new flows (client ports from `base`) through a world; returns
/// how many went where the daemon's table says.
fn maglev_agreement(
    world: &mut World,
    addrs: &[&'static str],
    (vip, client): (&'static str, &'static str),
    protocol: u8,
    base: u16,
) -> usize {
    let l4 = if protocol == proto::TCP { SYN } else { L4::Udp };
    (0..32u16)
        .filter(|n| {
            let sport = base + n;
            let p = pkt(ep(client, sport), ep(vip, NODE_PORT), l4);
            let (verdict, out) = world
                .run(Ingress, &build(&p, None).expect("build"))
                .expect("run");
            assert_eq!(verdict, TC_ACT_OK);
            destination(&out) == maglev_expected(addrs, protocol, client, sport, vip)
        })
        .count()
}

/// `--lb-algorithm=maglev`: a new flow to an external frontend goes to the
/// backend of the frontend's Maglev table at `hash(5-tuple) % M`, the hash
/// computed by the kernel exactly as the daemon's `plan::maglev` does (v4
/// and v6, TCP and UDP). With Maglev off (`MAGLEV_CFG` size 0: random), the
/// same flows scatter: the test would fail under `--lb-algorithm=random`.
#[test]
fn maglev_picks_the_tables_backend() {
    let sandbox = sandbox();
    for family in Family::BOTH {
        let (vip, client, addrs) = (family.node(), family.client(), family.maglev_addrs());
        for protocol in [proto::TCP, proto::UDP] {
            let name = format!("maglev-{family}-{protocol}");
            let backends = maglev_backends(addrs, 10);
            let mut world = maglev_world(
                &sandbox.bpffs_path().join(&name),
                vip,
                protocol,
                &backends,
                997,
            );
            let agreed = maglev_agreement(&mut world, addrs, (vip, client), protocol, CLIENT_PORT);
            assert_eq!(agreed, 32, "{name}: flows that went where the table says");
            assert_eq!(world.stat("maglev_pick"), 32, "{name}");
            // `--lb-algorithm=random`: size 0 (new client ports: no
            // conntrack entry).
            let mut cfg: Array<&mut MapData, proxy_common::MaglevConfig> =
                world.map(names::MAGLEV_CFG).expect("MAGLEV_CFG");
            cfg.set(0, &proxy_common::MaglevConfig::default(), 0)
                .expect("MAGLEV_CFG");
            let agreed = maglev_agreement(
                &mut world,
                addrs,
                (vip, client),
                protocol,
                CLIENT_PORT + 100,
            );
            assert!(
                agreed < 32,
                "{name}: random selection agreed with Maglev {agreed} times of 32"
            );
            assert_eq!(
                world.stat("maglev_pick"),
                32,
                "{name}: random counted Maglev picks"
            );
        }
    }
}

/// A frontend sharing another's table: its slot 0's `maglev_table` names
/// table 9, and nothing is keyed by its own rev-NAT id (7). The kernel picks
/// from table 9 (a kernel reading its own rev-NAT id would find no table and
/// pick at random).
#[test]
fn maglev_picks_from_the_table_slot_0_names() {
    let sandbox = sandbox();
    let family = Family::V4;
    let (vip, client, addrs) = (family.node(), family.client(), family.maglev_addrs());
    let backends = maglev_backends(addrs, 10);
    let dir = sandbox.bpffs_path().join("maglev-shared");
    let mut world = maglev_world(&dir, vip, proto::TCP, &backends, 997);
    let (own, shared) = (
        proxy_common::maglev::key(7, scope::INTERNAL),
        proxy_common::maglev::key(9, scope::INTERNAL),
    );
    {
        let mut tables: HashMap<&mut MapData, u64, proxy_common::MaglevTable> =
            world.map(names::MAGLEV).expect("MAGLEV");
        let table = tables.get(&own, 0).expect("the frontend's table");
        tables.insert(&shared, &table, 0).expect("MAGLEV");
        tables.remove(&own).expect("MAGLEV");
    }
    {
        let IpAddr::V4(v4) = ip(vip) else {
            panic!("not IPv4")
        };
        let mut svcs: HashMap<
            &mut MapData,
            proxy_common::ServiceKeyV4,
            proxy_common::ServiceValue,
        > = world.map(names::SVC_V4).expect("SVC_V4");
        let key = proxy_common::ServiceKeyV4 {
            addr: Be32::from_octets(v4.octets()),
            port: Be16::from_host(NODE_PORT),
            slot: 0,
            proto: proto::TCP,
            scope: scope::INTERNAL,
            _pad: [0; 2],
        };
        let mut slot0 = svcs.get(&key, 0).expect("slot 0");
        slot0.maglev_table = 9;
        svcs.insert(&key, &slot0, 0).expect("SVC_V4");
    }
    let agreed = maglev_agreement(&mut world, addrs, (vip, client), proto::TCP, CLIENT_PORT);
    assert_eq!(agreed, 32, "flows that went where the shared table says");
    assert_eq!(world.stat("maglev_pick"), 32);
}

/// The same choice on every node: two worlds ("nodes") with their own
/// backend ids build the same table from the same backends; a flow that
/// began on node 1 and shows up on node 2 mid-stream (an ACK, no SYN, no
/// conntrack entry there) goes to the same backend, and node 2 creates
/// conntrack from it (its next packet is a conntrack hit), instead of
/// picking anew. Under random selection it would move (checked too).
#[test]
fn a_mid_flow_miss_takes_the_maglev_choice_and_creates_conntrack() {
    let sandbox = sandbox();
    for family in Family::BOTH {
        let (vip, client, addrs) = (family.node(), family.client(), family.maglev_addrs());
        let dir = |n: &str| sandbox.bpffs_path().join(format!("midflow-{family}-{n}"));
        let mut node1 = maglev_world(&dir("1"), vip, proto::TCP, &maglev_backends(addrs, 10), 997);
        let mut node2 = maglev_world(&dir("2"), vip, proto::TCP, &maglev_backends(addrs, 50), 997);
        let mut node2_random =
            maglev_world(&dir("2r"), vip, proto::TCP, &maglev_backends(addrs, 50), 0);
        let mut moved_under_random = 0;
        for n in 0..16u16 {
            let sport = CLIENT_PORT + n;
            let syn = pkt(ep(client, sport), ep(vip, NODE_PORT), SYN);
            let ack = pkt(ep(client, sport), ep(vip, NODE_PORT), ACK);
            let (_, first) = node1
                .run(Ingress, &build(&syn, None).expect("build"))
                .expect("run");
            let backend = destination(&first);
            let before = node2.stat("tc_mid_flow_miss");
            let (verdict, moved) = node2
                .run(Ingress, &build(&ack, None).expect("build"))
                .expect("run");
            assert_eq!(verdict, TC_ACT_OK, "{family} flow {n}");
            assert_eq!(
                destination(&moved),
                backend,
                "{family} flow {n} changed backend"
            );
            assert_eq!(node2.stat("tc_mid_flow_miss"), before + 1);
            let hits = node2.stat("tc_ct_forward");
            let (_, again) = node2
                .run(Ingress, &build(&ack, None).expect("build"))
                .expect("run");
            assert_eq!(destination(&again), backend);
            assert_eq!(
                node2.stat("tc_ct_forward"),
                hits + 1,
                "{family}: no conntrack entry was created"
            );
            let (_, random) = node2_random
                .run(Ingress, &build(&ack, None).expect("build"))
                .expect("run");
            if destination(&random) != backend {
                moved_under_random += 1;
            }
        }
        assert!(
            moved_under_random > 0,
            "{family}: random selection kept every flow's backend"
        );
    }
}

/// A client reusing its source port towards another frontend with the same
/// backend, without SNAT (the backend is local): the new flow's reply tuple
/// is the established flow's. The established flow's entries stay as they
/// are (a spoofed SYN must not end it) and its replies are still translated
/// for it; the new flow's source port is remapped (`tc_ct_reply_clash`), as
/// netfilter's implicit source NAT does, and its replies are translated for
/// it back to the client's own port.
#[test]
fn a_reply_tuple_clash_remaps_the_new_flows_source_port() {
    const OTHER_PORT: u16 = NODE_PORT + 1;
    let sandbox = sandbox();
    let dir = sandbox.bpffs_path().join("clash");
    std::fs::create_dir(&dir).expect("pin dir");
    let mut world = World::load(&dir).expect("load");
    let other = Svc {
        rev_nat_id: 8,
        ..svc(
            NODE4,
            OTHER_PORT,
            proto::TCP,
            scope::INTERNAL,
            EXT,
            &[LOCAL_BE4],
        )
    };
    world
        .install(
            &[],
            &[
                svc(
                    NODE4,
                    NODE_PORT,
                    proto::TCP,
                    scope::INTERNAL,
                    EXT,
                    &[LOCAL_BE4],
                ),
                other,
            ],
        )
        .expect("install");
    let client = ep(CLIENT4, CLIENT_PORT);
    let first = ep(NODE4, NODE_PORT);
    let second = ep(NODE4, OTHER_PORT);
    let backend = ep(LOCAL4, TARGET);
    let run = |world: &mut World, hook: Hook, p: Pkt| -> Vec<u8> {
        let (verdict, out) = world
            .run(hook, &build(&p, None).expect("build"))
            .expect("run");
        assert_eq!(verdict, TC_ACT_OK);
        out
    };
    // Flow A, established.
    run(&mut world, Ingress, pkt(client, first, SYN));
    run(&mut world, Ingress, pkt(client, first, ACK));
    assert_eq!(ct_len(&mut world, names::CT_V4), 2, "flow A is established");
    let reply_key = CtKeyV4 {
        saddr: be32(LOCAL4),
        daddr: be32(CLIENT4),
        sport: Be16::from_host(TARGET),
        dport: Be16::from_host(CLIENT_PORT),
        proto: proto::TCP,
        _pad: [0; 3],
    };
    let established = |world: &mut World| -> CtValueV4 {
        let map: HashMap<&mut MapData, CtKeyV4, CtValueV4> =
            world.map(names::CT_V4).expect("CT_V4");
        map.get(&reply_key, 0).expect("flow A's reply entry")
    };
    let a_reply = established(&mut world);

    // Flow B: the same client port, the other frontend, the same backend.
    let clashes = world.stat("tc_ct_reply_clash");
    let out = run(&mut world, Ingress, pkt(client, second, SYN));
    assert_eq!(world.stat("tc_ct_reply_clash"), clashes + 1);
    assert_eq!(destination(&out), ip(LOCAL4));
    let remapped = source_port(&out).expect("a source port");
    assert_ne!(remapped, CLIENT_PORT, "flow B's source port is remapped");
    let expected = build(&pkt(ep(CLIENT4, remapped), backend, SYN), None).expect("build");
    assert_eq!(hex(&out), hex(&expected), "only the port changes");
    let kept = established(&mut world);
    assert_eq!(
        (kept.saddr, kept.sport, kept.flags, kept.rev_nat_id),
        (
            a_reply.saddr,
            a_reply.sport,
            a_reply.flags,
            a_reply.rev_nat_id
        ),
        "flow A's reply entry is intact"
    );

    // Each flow's replies come from its own frontend, to the client's port.
    let out = run(&mut world, Egress, pkt(backend, client, ACK));
    let expected = build(&pkt(first, client, ACK), None).expect("build");
    assert_eq!(hex(&out), hex(&expected), "flow A's reply");
    let out = run(&mut world, Egress, pkt(backend, ep(CLIENT4, remapped), SYN));
    let expected = build(&pkt(second, client, SYN), None).expect("build");
    assert_eq!(hex(&out), hex(&expected), "flow B's reply");
    // And flow B goes on from its remapped port.
    let out = run(&mut world, Ingress, pkt(client, second, ACK));
    let expected = build(&pkt(ep(CLIENT4, remapped), backend, ACK), None).expect("build");
    assert_eq!(hex(&out), hex(&expected), "flow B's next packet");
    assert_eq!(world.stat("tc_ct_reply_clash"), clashes + 1);
}

// ---- Direct server return (`--lb-mode=dsr`) --------------------------------

/// The IPv4 DSR option the first node adds for frontend `NODE4:NODE_PORT`.
fn dsr_option() -> [u8; 8] {
    let mut opt = [0x9a, 8, 0, 0, 0, 0, 0, 0];
    opt[2..4].copy_from_slice(&NODE_PORT.to_be_bytes());
    if let IpAddr::V4(a) = ip(NODE4) {
        opt[4..].copy_from_slice(&a.octets());
    }
    opt
}

/// Checks a packet the first node sent by DSR: `input` with the option
/// inserted after the base header (before `input`'s own options), IHL and
/// total length 8 more, DNATed to the remote backend, both checksums right.
fn check_dsr_output(input: &[u8], out: &[u8]) -> Result<(), String> {
    if out.len() != input.len() + 8 {
        return Err(format!("{} bytes out for {} in", out.len(), input.len()));
    }
    let (ihl_in, ihl_out) = (input[14] & 0x0f, out[14] & 0x0f);
    if ihl_out != ihl_in + 2 {
        return Err(format!("IHL {ihl_out}, expected {}", ihl_in + 2));
    }
    let tot = |f: &[u8]| u16::from_be_bytes([f[16], f[17]]);
    if tot(out) != tot(input) + 8 {
        return Err(format!("total length {}, input {}", tot(out), tot(input)));
    }
    if out[34..42] != dsr_option() {
        return Err(format!("option bytes {:02x?}", &out[34..42]));
    }
    // The input's own options follow ours.
    let own = usize::from(ihl_in) * 4 - 20;
    if out[42..42 + own] != input[34..34 + own] {
        return Err("the packet's own options were not kept after ours".into());
    }
    let backend = match ip(REMOTE4) {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => unreachable!(),
    };
    if out[30..34] != backend {
        return Err(format!("destination {:?}", &out[30..34]));
    }
    let l4 = 14 + usize::from(ihl_out) * 4;
    if out[l4 + 2..l4 + 4] != TARGET.to_be_bytes() {
        return Err("destination port not the target port".into());
    }
    if out[26..30] != input[26..30] || out[l4..l4 + 2] != input[34 + own..36 + own] {
        return Err("the client's source address or port changed (SNATed?)".into());
    }
    match checksum::verify(out)? {
        Checkable::Yes => Ok(()),
        Checkable::No => Err("no transport checksum to check".into()),
    }
}

/// `frame` (IPv4 without options, TCP) as a SYN-ACK advertising `mss`: the
/// SYN flag set and an MSS option after the base TCP header, lengths and
/// checksums fixed.
fn syn_ack_with_mss(frame: &[u8], mss: u16) -> Vec<u8> {
    let (l4, opt) = (14 + 20, 14 + 20 + 20);
    let mut out = frame[..opt].to_vec();
    out.extend_from_slice(&[2, 4]);
    out.extend_from_slice(&mss.to_be_bytes());
    out.extend_from_slice(&frame[opt..]);
    out[l4 + 12] = 6 << 4;
    out[l4 + 13] |= 0x02;
    let tot = u16::from_be_bytes([out[16], out[17]]) + 4;
    out[16..18].copy_from_slice(&tot.to_be_bytes());
    checksum::fix(&mut out);
    out
}

/// Under `--lb-mode=dsr` (`device_flags::DSR`), a new flow to an external
/// frontend whose backend is on another node is DNATed, not SNATed, and
/// leaves with the DSR option (IPv4 header and TCP/UDP checksums right): a
/// SYN, a later segment (conntrack hit), a datagram, a packet that already
/// has options, and a full-size segment (1500 bytes in, 1508 out). The
/// backend's node (a second world) records the option and rewrites the
/// backend's reply to come from the frontend, its SYN-ACK's MSS lowered by
/// the option's 8 bytes (1460 → 1452, checksum right). Without the device flag the
/// same SYN is SNATed (no option).
#[test]
fn dsr_option_added_recorded_and_replies_rewritten() {
    let sandbox = sandbox();
    let services = [
        node_port(Family::V4, proto::TCP, &[REMOTE_BE4]),
        node_port(Family::V4, proto::UDP, &[REMOTE_BE4]),
    ];
    let mut node1 = world_with(&sandbox, "dsr-node1", &services);
    node1
        .set_device(IFINDEX, device_flags::DSR)
        .expect("DEVICES");
    let client = |port: u16, l4: L4| pkt(ep(CLIENT4, port), ep(NODE4, NODE_PORT), l4);
    let mut sent = Vec::new();
    let nop_options = Pkt {
        options: &[1, 1, 1, 0],
        ..client(CLIENT_PORT + 2, SYN)
    };
    let inputs = [
        ("SYN", client(CLIENT_PORT, SYN)),
        ("later segment", client(CLIENT_PORT, ACK)),
        ("datagram", client(CLIENT_PORT, L4::Udp)),
        ("packet with options", nop_options),
    ];
    for (what, p) in inputs {
        let input = build(&p, None).expect("building");
        let (verdict, out) = node1.run(Ingress, &input).expect("run");
        assert_eq!(verdict, TC_ACT_OK, "{what}: verdict");
        check_dsr_output(&input, &out).unwrap_or_else(|e| panic!("{what}: {e}"));
        sent.push(out);
    }
    // A full-size segment: 1500 bytes of IP.
    let mut full = build(&client(CLIENT_PORT + 3, SYN), None).expect("building");
    full.resize(14 + 1500, 0x5a);
    full[16..18].copy_from_slice(&1500u16.to_be_bytes());
    checksum::fix(&mut full);
    let (verdict, out) = node1.run(Ingress, &full).expect("run");
    assert_eq!(verdict, TC_ACT_OK, "full-size segment: verdict");
    check_dsr_output(&full, &out).unwrap_or_else(|e| panic!("full-size segment: {e}"));
    assert_eq!(node1.stat("tc_dsr_sent"), 5);

    // The backend's node: the SYN with its option is recorded and passed
    // on untouched; the backend's SYN-ACK leaves from the frontend.
    let mut node2 = world_with(&sandbox, "dsr-node2", &[]);
    let (verdict, out) = node2.run(Ingress, &sent[0]).expect("run");
    assert_eq!(verdict, TC_ACT_OK, "recording");
    assert_eq!(out, sent[0], "the recorded packet was changed");
    assert_eq!(node2.stat("tc_dsr_recorded"), 1);
    let reply = build(
        &pkt(ep(REMOTE4, TARGET), ep(CLIENT4, CLIENT_PORT), ACK),
        None,
    )
    .expect("building");
    let (verdict, out) = node2.run(Egress, &reply).expect("run");
    assert_eq!(verdict, TC_ACT_OK, "reply");
    let expected = build(
        &pkt(ep(NODE4, NODE_PORT), ep(CLIENT4, CLIENT_PORT), ACK),
        None,
    )
    .expect("building");
    assert_eq!(out, expected, "the reply was not rewritten to the frontend");
    assert_eq!(node2.stat("tc_dsr_reply"), 1);
    // The backend's SYN-ACK advertises 8 bytes less than it offered, so the
    // client's full-size segments still fit once they gain the option.
    let (verdict, out) = node2
        .run(Egress, &syn_ack_with_mss(&reply, 1460))
        .expect("run");
    assert_eq!(verdict, TC_ACT_OK, "SYN-ACK");
    assert_eq!(
        checksum::verify(&out),
        Ok(Checkable::Yes),
        "SYN-ACK checksums"
    );
    assert_eq!(
        out,
        syn_ack_with_mss(&expected, 1452),
        "the SYN-ACK's MSS was not lowered by the option's 8 bytes"
    );
    assert_eq!(node2.stat("tc_dsr_reply"), 2);

    // `--lb-mode=snat` (no device flag): SNATed, no option.
    let mut snat = world_with(&sandbox, "dsr-snat", &services);
    snat.set_node_config(&NodeConfig {
        snat_v4: Be32(u32::from_ne_bytes(match ip(NODE4) {
            IpAddr::V4(a) => a.octets(),
            IpAddr::V6(_) => unreachable!(),
        })),
        ..NodeConfig::default()
    })
    .expect("NODE_CFG");
    let input = build(&client(CLIENT_PORT, SYN), None).expect("building");
    let (_, out) = snat.run(Ingress, &input).expect("run");
    assert_eq!(out.len(), input.len(), "an option under SNAT");
    assert_eq!(snat.stat("tc_dsr_sent"), 0);
}

/// `XDP_REDIRECT` (`enum xdp_action`).
const XDP_REDIRECT: u32 = 4;
/// `XDP_PASS`.
const XDP_PASS: u32 = 2;

/// `xdp_ingress` (`--xdp`) on flows tc set up: once tc has seen a flow
/// answered (SYN, then the client's ACK promotes it), the flow's packets
/// both ways are rewritten by XDP exactly as tc rewrites them (addresses,
/// ports, checksums compared byte for byte with frames built with correct
/// checksums), TTL/hop limit decremented and MACs from the FIB, and
/// redirected. Passed to tc unchanged: a SYN or FIN (tc's conntrack moves
/// the flow's state), a packet of no established flow, and a next hop
/// without a neighbour entry (IPv6 until one is added).
#[test]
fn xdp_forwards_established_flows_and_passes_the_rest() {
    let sandbox = sandbox();
    fib_routes(&sandbox);
    let services = [
        node_port(Family::V4, proto::TCP, &[REMOTE_BE4]),
        node_port(Family::V6, proto::TCP, &[REMOTE_BE6]),
    ];
    let mut world = world_with(&sandbox, "xdp", &services);
    let client4 = ep(CLIENT4, CLIENT_PORT);
    let client6 = ep(CLIENT6, CLIENT_PORT);
    // tc sets the flows up: the SYN (a new flow, SNATed to the node), then
    // the client's ACK promotes both entries.
    let mut ports = Vec::new();
    for (client, node) in [(client4, NODE4), (client6, NODE6)] {
        let syn = build(&pkt(client, ep(node, NODE_PORT), SYN), None).expect("build");
        let (verdict, out) = world.run(Ingress, &syn).expect("run");
        assert_eq!(verdict, TC_ACT_REDIRECT, "tc: the SYN");
        ports.push(source_port(&out));
        let ack = build(&pkt(client, ep(node, NODE_PORT), ACK), None).expect("build");
        world.run(Ingress, &ack).expect("run");
    }
    assert_eq!(world.stat("tc_ct_promoted"), 2, "both flows promoted by tc");
    let mut xdp =
        |input: Pkt, snat_port: Option<u16>, action: u32, reason: &str, expected: Option<Pkt>| {
            let before = world.stat(reason);
            let bytes = build(&input, snat_port).expect("build");
            let (got, out) = world.run_xdp(&bytes).expect("run_xdp");
            assert_eq!(got, action, "{reason}: action for {}", hex(&bytes));
            assert_eq!(world.stat(reason), before + 1, "{reason} not counted");
            let want = match expected {
                Some(p) => {
                    let mut want = build(&p, snat_port).expect("build");
                    decrement_ttl(&mut want);
                    want[..6].copy_from_slice(&FIB_GW_MAC);
                    want[6..12].copy_from_slice(&FIB_DEV_MAC);
                    want
                }
                None => bytes,
            };
            assert_eq!(hex(&out), hex(&want), "{reason}");
        };
    // IPv4: the client's packet to the backend, the backend's reply back.
    let (p4, p6) = (ports[0], ports[1]);
    xdp(
        pkt(client4, ep(NODE4, NODE_PORT), ACK),
        p4,
        XDP_REDIRECT,
        "xdp_ct_forward",
        Some(pkt(snat(NODE4), ep(REMOTE4, TARGET), ACK)),
    );
    xdp(
        pkt(ep(REMOTE4, TARGET), snat(NODE4), ACK),
        p4,
        XDP_REDIRECT,
        "xdp_ct_reply",
        Some(pkt(ep(NODE4, NODE_PORT), client4, ACK)),
    );
    // tc's: a SYN, a FIN, a flow no entry knows.
    xdp(
        pkt(client4, ep(NODE4, NODE_PORT), SYN),
        p4,
        XDP_PASS,
        "xdp_pass_tc_state",
        None,
    );
    xdp(
        pkt(client4, ep(NODE4, NODE_PORT), FIN),
        p4,
        XDP_PASS,
        "xdp_pass_tc_state",
        None,
    );
    xdp(
        pkt(ep(CLIENT4, CLIENT_PORT + 1), ep(NODE4, NODE_PORT), ACK),
        p4,
        XDP_PASS,
        "xdp_pass",
        None,
    );
    // IPv6: no neighbour for the next hop yet (tc's `bpf_redirect_neigh`).
    xdp(
        pkt(client6, ep(NODE6, NODE_PORT), ACK),
        p6,
        XDP_PASS,
        "xdp_fib_passed",
        None,
    );
    sandbox
        .ip("-6 neigh add fd00:fb::1 lladdr 02:00:00:fb:00:01 dev fib0 nud permanent")
        .expect("ip -6 neigh add");
    xdp(
        pkt(client6, ep(NODE6, NODE_PORT), ACK),
        p6,
        XDP_REDIRECT,
        "xdp_ct_forward",
        Some(pkt(snat(NODE6), ep(REMOTE6, TARGET), ACK)),
    );
}
