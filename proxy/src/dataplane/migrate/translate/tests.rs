//! Translation of layout 2's LRU entries into layout 3's ids.
#![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

use std::net::IpAddr;

use proxy_common::{Be16, Be32, ServiceValue, proto};

use super::*;

const VIP: [u8; 4] = [10, 96, 0, 10];
const BE_A: [u8; 4] = [10, 0, 0, 1];
const BE_B: [u8; 4] = [10, 0, 0, 2];

fn frontend(protocol: Protocol) -> Frontend {
    Frontend {
        addr: IpAddr::from(VIP),
        port: 80,
        protocol,
    }
}

fn backend(addr: [u8; 4]) -> Backend {
    Backend {
        addr: IpAddr::from(addr),
        port: 8080,
        protocol: Protocol::Tcp,
    }
}

/// Layout 2: the TCP frontend was rev-NAT id 5 and the UDP one 6 (same
/// address and port); backends A and B were ids 1 and 2.
fn old() -> OldIds {
    let key = |p, slot| v2::ServiceKeyV4 {
        addr: Be32::from_octets(VIP),
        port: Be16::from_host(80),
        slot,
        proto: p,
        scope: 0,
        _pad: [0; 2],
    };
    let slot0 = |id| v2::ServiceValue {
        count: 2,
        rev_nat_id: id,
        ..v2::ServiceValue::default()
    };
    let be = |addr| v2::BackendV4 {
        addr: Be32::from_octets(addr),
        port: Be16::from_host(8080),
        proto: proto::TCP,
        flags: 0,
    };
    OldIds::new(
        &[
            (key(proto::TCP, 0), slot0(5)),
            (key(proto::UDP, 0), slot0(6)),
            (key(proto::TCP, 1), v2::ServiceValue::default()),
        ],
        &[],
        &[(1, be(BE_A)), (2, be(BE_B))],
        &[],
    )
}

/// Layout 3's writer gave the TCP frontend id 70,000 (past 16 bits), with
/// backend B (id 40) in slot 1 and A (id 30) in slot 2.
fn new() -> Applied {
    let mut a = Applied::default();
    let f = frontend(Protocol::Tcp);
    a.backends.insert(30, backend(BE_A));
    a.backends.insert(40, backend(BE_B));
    a.services.insert(
        (f, Scope::Internal, 0),
        ServiceValue {
            count: 2,
            rev_nat_id: 70_000,
            ..ServiceValue::default()
        },
    );
    for (slot, id) in [(1, 40), (2, 30)] {
        let v = ServiceValue {
            backend_id: id,
            ..ServiceValue::default()
        };
        a.services.insert((f, Scope::Internal, slot), v);
    }
    a.rev_nat.insert(70_000, f);
    a.reindex();
    a
}

fn ct(rev_nat_id: u16, backend_id: u32) -> (v2::CtKeyV4, v2::CtValueV4) {
    let key = v2::CtKeyV4 {
        saddr: Be32::from_octets([192, 0, 2, 7]),
        daddr: Be32::from_octets(VIP),
        sport: Be16::from_host(40_000),
        dport: Be16::from_host(80),
        proto: proto::TCP,
        _pad: [0; 3],
    };
    let value = v2::CtValueV4 {
        last_seen_ns: 123,
        saddr: Be32::from_octets([192, 0, 2, 7]),
        daddr: Be32::from_octets(BE_A),
        sport: Be16::from_host(40_000),
        dport: Be16::from_host(8080),
        rev_nat_id,
        flags: 3,
        _pad: 0,
        backend_id,
        _pad2: 0,
    };
    (key, value)
}

#[test]
fn a_conntrack_entry_keeps_its_rewrite_with_the_new_ids() {
    let (old, new) = (old(), new());
    let t = Translator::new(&old, &new);
    let (k, v) = ct(5, 1);
    let (key, value) = t.ct_v4(&k, &v).unwrap();
    assert_eq!(
        (key.saddr, key.dport, key.proto),
        (k.saddr, k.dport, k.proto)
    );
    assert_eq!((value.rev_nat_id, value.backend_id), (70_000, 30));
    assert_eq!(
        (value.last_seen_ns, value.daddr, value.dport, value.flags),
        (123, v.daddr, v.dport, 3)
    );
}

#[test]
fn an_entry_whose_frontend_or_backend_is_gone_is_dropped() {
    let (old, new) = (old(), new());
    let t = Translator::new(&old, &new);
    // Id 6 was the UDP frontend on the same address and port: the new state
    // has no UDP frontend, so it does not borrow the TCP one's id.
    let (k, v) = ct(6, 1);
    assert_eq!(t.ct_v4(&k, &v), None);
    // An id the old maps did not know.
    let (k, v) = ct(9, 1);
    assert_eq!(t.ct_v4(&k, &v), None);
    // Backend 3 was never in the old maps; backend ids are not reused blindly.
    let (k, v) = ct(5, 3);
    assert_eq!(t.ct_v4(&k, &v), None);
}

#[test]
fn affinity_keeps_the_backend_at_its_new_slot() {
    let (old, new) = (old(), new());
    let t = Translator::new(&old, &new);
    let key = v2::AffinityKey {
        client: 4242,
        rev_nat_id: 5,
        _pad: [0; 6],
    };
    let value = v2::AffinityValue {
        last_used_ns: 99,
        backend_id: 1,
        slot: 1,
        _pad: 0,
    };
    let (k, v) = t.affinity(&key, &value).unwrap();
    assert_eq!((k.client, k.rev_nat_id), (4242, 70_000));
    // A (old id 1, slot 1) is now id 30 in slot 2.
    assert_eq!((v.backend_id, v.slot, v.last_used_ns), (30, 2, 99));
    let gone = v2::AffinityKey {
        rev_nat_id: 6,
        ..key
    };
    assert_eq!(t.affinity(&gone, &value), None);
}

#[test]
fn a_socket_keeps_its_vip_with_the_new_id() {
    let (old, new) = (old(), new());
    let t = Translator::new(&old, &new);
    let key = v2::SockRevNatKeyV4 {
        cookie: 77,
        addr: Be32::from_octets(BE_A),
        port: Be16::from_host(8080),
        _pad: 0,
    };
    let value = v2::SockRevNatV4 {
        addr: Be32::from_octets(VIP),
        port: Be16::from_host(80),
        rev_nat_id: 5,
    };
    let (k, v) = t.sock_v4(&key, &value).unwrap();
    assert_eq!((k.cookie, k.addr, k.port), (77, key.addr, key.port));
    assert_eq!(
        (v.addr, v.port, v.rev_nat_id),
        (value.addr, value.port, 70_000)
    );
    let gone = v2::SockRevNatV4 {
        rev_nat_id: 6,
        ..value
    };
    assert_eq!(t.sock_v4(&key, &gone), None);
}
