//! The kernel packet path: mutated packets through the real tc programs
//! (`tc_ingress`, `tc_egress`) with `BPF_PROG_TEST_RUN`. No device is
//! attached and no packet is sent.
//!
//! Once per process: a sandbox (its own network namespace, cgroup and
//! bpffs, entered; forwarding on, with routes to the remote backends and
//! the clients through a veth of its own, so both the FIB redirects and the
//! fall-back to the stack are reached), the object the `proxy` binary embeds loaded into it,
//! and ClusterIP, NodePort (Cluster and Local policy, and one without
//! backends) frontends of both families programmed in its maps. Conntrack
//! state carries over from one input to the next, as on a node.
//!
//! An input is one control byte, then an IP packet: bit 0 picks the hook
//! (ingress, egress), bits 1-2 the device's flags; the frame gets an
//! Ethernet header (IPv4 or IPv6 by the packet's version nibble, else ARP)
//! and its checksums fixed ([`proxy_tests::checksum::fix`]), so that only a
//! program's own checksum mistakes show.
//!
//! Frames `test_run` itself refuses are not run: an IPv4 or IPv6 frame
//! shorter than its fixed header (EINVAL), or longer than about a page.
//!
//! Invariants: `test_run` succeeds; the verdict is `TC_ACT_OK`, `SHOT` or
//! `REDIRECT`; a frame the program changed (and did not drop) has a valid
//! IPv4 header checksum and, when the input's could be checked, a valid
//! transport checksum.
//!
//! Runs as root (CAP_BPF, CAP_NET_ADMIN, mounting bpffs).

#![no_main]

use std::{cell::RefCell, net::IpAddr};

use libfuzzer_sys::fuzz_target;
use proxy_common::{backend_flags, device_flags, proto, scope, svc_flags};
use proxy_tests::{
    Sandbox,
    checksum::{self, Checkable},
    tc_world::{Hook, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, TcBackend, TcService, TcWorld},
};

/// The loopback device: `test_run` hands the program a packet from it.
const IFINDEX: u32 = 1;
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const NODE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// Larger packets than a page are refused by `test_run` itself.
const MAX_PACKET: usize = 1500;
/// `test_run` refuses (EINVAL) an IPv4 or IPv6 frame shorter than the
/// fixed header (Linux 6.18); such frames are not run.
const MIN_IPV4: usize = 20;
const MIN_IPV6: usize = 40;
const DEVICE_FLAGS: [u32; 4] = [
    0,
    device_flags::CLUSTER_IP,
    device_flags::CLUSTER_IP | device_flags::DETECT_CIDR_V4 | device_flags::DETECT_CIDR_V6,
    device_flags::CLUSTER_IP | device_flags::DETECT_BY_DEVICE | device_flags::LOCAL_DEVICE,
];

struct State {
    world: TcWorld,
    /// Dropped after `world` (field order): it holds the bpffs.
    _sandbox: Sandbox,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

extern "C" fn cleanup() {
    // libFuzzer exits through exit(3) from the thread that ran the inputs:
    // leave the namespace, cgroup and bpffs behind us. (A crash leaves them
    // to the next sandbox's sweep.)
    let _ = STATE.try_with(|s| s.borrow_mut().take());
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("a constant address")
}

fn setup() -> Result<State, String> {
    let mut sandbox = Sandbox::new().map_err(|e| e.to_string())?;
    sandbox.enter().map_err(|e| e.to_string())?;
    // Routes to the remote backends and the clients through a veth of the
    // sandbox, forwarding on (as `tc_packets::fib_forwarding`): translated
    // packets to them are redirected (MACs, TTL), others fall back to the
    // stack.
    for cmd in [
        "link add fib0 address 02:00:00:fb:00:00 type veth peer name fib1 address 02:00:00:fb:00:01",
        "link set fib0 up",
        "link set fib1 up",
        "neigh add 192.0.2.1 lladdr 02:00:00:fb:00:01 dev fib0 nud permanent",
        "route add 198.51.100.0/24 via 192.0.2.1 dev fib0 onlink",
        "route add 10.244.2.0/24 via 192.0.2.1 dev fib0 onlink",
        "-6 route add fd00:244::2:0/112 via fd00:fb::1 dev fib0 onlink",
        "-6 addr add fd00:244::1:5/128 dev lo nodad",
    ] {
        sandbox.ip(cmd).map_err(|e| format!("ip {cmd}: {e}"))?;
    }
    for key in [
        "net/ipv4/conf/all/forwarding",
        "net/ipv6/conf/all/forwarding",
    ] {
        std::fs::write(std::path::Path::new("/proc/sys").join(key), "1")
            .map_err(|e| format!("{key}: {e}"))?;
    }
    let dir = sandbox.bpffs_path().join("fuzz");
    std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
    let node6 = match ip("fd00:10::10") {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => unreachable!(),
    };
    let mut world = TcWorld::load(
        &dir,
        proxy::dataplane::loader::OBJECT,
        [192, 168, 0, 10],
        node6,
    )?;
    world.add_local_cidr(ip("10.244.0.0"), 16)?;
    world.add_local_cidr(ip("fd00:244::"), 32)?;
    let be = |id, addr, flags| TcBackend {
        id,
        addr: ip(addr),
        port: 8080,
        flags,
    };
    let local = backend_flags::LOCAL;
    let ext = svc_flags::EXTERNAL | svc_flags::NODE_PORT;
    let svc = |vip, port, proto, scope, flags, rev_nat_id| TcService {
        vip: ip(vip),
        port,
        proto,
        scope,
        flags,
        rev_nat_id,
        affinity_timeout: if flags & svc_flags::AFFINITY != 0 {
            60
        } else {
            0
        },
    };
    let (tcp4, udp4) = (
        [be(1, "10.244.2.5", 0), be(2, "10.244.1.5", local)],
        [be(3, "10.244.2.5", 0), be(4, "10.244.1.5", local)],
    );
    let (tcp6, udp6) = (
        [be(5, "fd00:244::2:5", 0), be(6, "fd00:244::1:5", local)],
        [be(7, "fd00:244::2:5", 0), be(8, "fd00:244::1:5", local)],
    );
    let (tcp, udp) = (proto::TCP, proto::UDP);
    let (int, ext_scope) = (scope::INTERNAL, scope::EXTERNAL);
    let services: [(TcService, &[TcBackend]); 12] = [
        (svc("10.96.0.10", 80, tcp, int, 0, 1), &tcp4),
        (
            svc("10.96.0.10", 53, udp, int, svc_flags::AFFINITY, 2),
            &udp4,
        ),
        (svc("192.168.0.10", 30080, tcp, int, ext, 3), &tcp4),
        (svc("192.168.0.10", 30080, udp, int, ext, 4), &udp4),
        // externalTrafficPolicy: Local: the external scope has the local one.
        (svc("192.168.0.10", 30081, tcp, int, ext, 5), &tcp4),
        (
            svc(
                "192.168.0.10",
                30081,
                tcp,
                ext_scope,
                ext | svc_flags::ETP_LOCAL,
                5,
            ),
            &tcp4[1..],
        ),
        // No backend: rejected.
        (svc("192.168.0.10", 30082, tcp, int, ext, 6), &[]),
        (svc("192.168.0.10", 30082, udp, int, ext, 7), &[]),
        (svc("fd00:96::10", 80, tcp, int, 0, 8), &tcp6),
        (
            svc("fd00:96::10", 53, udp, int, svc_flags::AFFINITY, 9),
            &udp6,
        ),
        (svc("fd00:10::10", 30080, tcp, int, ext, 10), &tcp6),
        (svc("fd00:10::10", 30080, udp, int, ext, 11), &udp6[..1]),
    ];
    for (service, backends) in &services {
        world.set_service(service, backends, &[])?;
    }
    // SAFETY: `cleanup` is an `extern "C" fn()` that does not unwind.
    unsafe { libc::atexit(cleanup) };
    Ok(State {
        world,
        _sandbox: sandbox,
    })
}

fn frame(packet: &[u8]) -> Vec<u8> {
    let ethertype: u16 = match packet.first().map(|b| b >> 4) {
        Some(4) => 0x0800,
        Some(6) => 0x86dd,
        _ => 0x0806,
    };
    let mut frame = Vec::with_capacity(14 + packet.len());
    frame.extend_from_slice(&NODE_MAC);
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(packet);
    frame
}

/// `match` with one arm per value, each its own basic block.
macro_rules! branch {
    ($x:expr; $($n:literal)*) => {
        match $x {
            $($n => { std::hint::black_box($n); })*
            _ => {}
        }
    };
}

/// One branch per class of outcome, for libFuzzer's coverage: the kernel's
/// own branches are invisible to it, so an input is kept as new when its
/// outcome (verdict, length change, which parts of the frame changed: the
/// Ethernet header, the first 20 bytes of IP, the next 8, the rest) has not
/// been seen yet.
#[inline(never)]
fn outcome(verdict: u32, input: &[u8], output: &[u8]) {
    let verdict = match verdict {
        TC_ACT_OK => 0,
        TC_ACT_SHOT => 1,
        _ => 2,
    };
    let length = match output.len().cmp(&input.len()) {
        std::cmp::Ordering::Less => 0,
        std::cmp::Ordering::Equal => 1,
        std::cmp::Ordering::Greater => 2,
    };
    let mut changed = 0;
    for (i, (a, b)) in input.iter().zip(output).enumerate() {
        if a != b {
            changed |= match i {
                0..14 => 1,
                14..34 => 2,
                34..42 => 4,
                _ => 8,
            };
        }
    }
    branch!((verdict * 3 + length) * 16 + changed; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63 64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83 84 85 86 87 88 89 90 91 92 93 94 95 96 97 98 99 100 101 102 103 104 105 106 107 108 109 110 111 112 113 114 115 116 117 118 119 120 121 122 123 124 125 126 127 128 129 130 131 132 133 134 135 136 137 138 139 140 141 142 143);
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, packet)) = data.split_first() else {
        return;
    };
    let min = match packet.first().map(|b| b >> 4) {
        Some(4) => MIN_IPV4,
        Some(6) => MIN_IPV6,
        _ => 0,
    };
    if packet.len() > MAX_PACKET || packet.len() < min {
        return;
    }
    let hook = if control & 1 == 0 {
        Hook::Ingress
    } else {
        Hook::Egress
    };
    let mut input = frame(packet);
    let checkable = checksum::fix(&mut input);
    STATE.with(|state| {
        let mut state = state.borrow_mut();
        if state.is_none() {
            *state = Some(setup().unwrap_or_else(|e| panic!("setting up: {e}")));
        }
        let Some(State { world, .. }) = state.as_mut() else {
            unreachable!()
        };
        world
            .set_device(IFINDEX, DEVICE_FLAGS[usize::from(control >> 1 & 3)])
            .expect("DEVICES");
        let (verdict, output) = world
            .run(hook, &input)
            .unwrap_or_else(|e| panic!("{hook:?}: {e}"));
        assert!(
            [TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT].contains(&verdict),
            "{hook:?}: verdict {verdict}"
        );
        outcome(verdict, &input, &output);
        if verdict != TC_ACT_SHOT && output != input {
            match checksum::verify(&output) {
                Ok(_) => {}
                Err(e) if e.starts_with("IPv4 header") || checkable == Checkable::Yes => {
                    panic!("{hook:?}: rewritten packet with a wrong {e}: {output:02x?}")
                }
                Err(_) => {}
            }
        }
    });
});
