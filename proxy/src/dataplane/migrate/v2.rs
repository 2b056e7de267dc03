//! Layout 2's key and value layouts, as the v2 daemon left them pinned: plain
//! `#[repr(C)]` copies of `proxy_common`'s structs at `LAYOUT_VERSION` 2
//! (rev-NAT ids were `u16`), with their sizes asserted. Only what a
//! migration reads is here: the service, backend and LRU maps.

use proxy_common::{Be16, Be32};

/// `SVC_V4`'s key (unchanged in layout 3).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceKeyV4 {
    pub addr: Be32,
    pub port: Be16,
    pub slot: u16,
    pub proto: u8,
    pub scope: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<ServiceKeyV4>() == 12);

/// `SVC_V6`'s key (unchanged in layout 3).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceKeyV6 {
    pub addr: [u8; 16],
    pub port: Be16,
    pub slot: u16,
    pub proto: u8,
    pub scope: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<ServiceKeyV6>() == 24);

/// `SVC_V4`/`SVC_V6`'s value: a `u16` rev-NAT id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    pub backend_id: u32,
    pub count: u16,
    pub rev_nat_id: u16,
    pub flags: u16,
    pub maglev_table: u16,
    pub affinity_timeout: u32,
}
const _: () = assert!(size_of::<ServiceValue>() == 16);

/// `BACKEND_V4`'s value (unchanged in layout 3).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendV4 {
    pub addr: Be32,
    pub port: Be16,
    pub proto: u8,
    pub flags: u8,
}
const _: () = assert!(size_of::<BackendV4>() == 8);

/// `BACKEND_V6`'s value (unchanged in layout 3).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendV6 {
    pub addr: [u8; 16],
    pub port: Be16,
    pub proto: u8,
    pub flags: u8,
}
const _: () = assert!(size_of::<BackendV6>() == 20);

/// `SOCK_RNAT_V4`'s key (unchanged in layout 3).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockRevNatKeyV4 {
    pub cookie: u64,
    pub addr: Be32,
    pub port: Be16,
    pub _pad: u16,
}
const _: () = assert!(size_of::<SockRevNatKeyV4>() == 16);

/// `SOCK_RNAT_V4`'s value: a `u16` rev-NAT id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockRevNatV4 {
    pub addr: Be32,
    pub port: Be16,
    pub rev_nat_id: u16,
}
const _: () = assert!(size_of::<SockRevNatV4>() == 8);

/// `SOCK_RNAT_V6`'s key (unchanged in layout 3).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockRevNatKeyV6 {
    pub cookie: u64,
    pub addr: [u8; 16],
    pub port: Be16,
    pub _pad: [u8; 6],
}
const _: () = assert!(size_of::<SockRevNatKeyV6>() == 32);

/// `SOCK_RNAT_V6`'s value: a `u16` rev-NAT id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockRevNatV6 {
    pub addr: [u8; 16],
    pub port: Be16,
    pub rev_nat_id: u16,
}
const _: () = assert!(size_of::<SockRevNatV6>() == 20);

/// `AFFINITY`'s key: a `u16` rev-NAT id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AffinityKey {
    pub client: u64,
    pub rev_nat_id: u16,
    pub _pad: [u8; 6],
}
const _: () = assert!(size_of::<AffinityKey>() == 16);

/// `AFFINITY`'s value (unchanged in layout 3).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AffinityValue {
    pub last_used_ns: u64,
    pub backend_id: u32,
    pub slot: u16,
    pub _pad: u16,
}
const _: () = assert!(size_of::<AffinityValue>() == 16);

/// `CT_V4`/`CT_PENDING_V4`'s key (unchanged in layout 3).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtKeyV4 {
    pub saddr: Be32,
    pub daddr: Be32,
    pub sport: Be16,
    pub dport: Be16,
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<CtKeyV4>() == 16);

/// `CT_V4`/`CT_PENDING_V4`'s value: a `u16` rev-NAT id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtValueV4 {
    pub last_seen_ns: u64,
    pub saddr: Be32,
    pub daddr: Be32,
    pub sport: Be16,
    pub dport: Be16,
    pub rev_nat_id: u16,
    pub flags: u8,
    pub _pad: u8,
    pub backend_id: u32,
    pub _pad2: u32,
}
const _: () = assert!(size_of::<CtValueV4>() == 32);

/// `CT_V6`/`CT_PENDING_V6`'s key (unchanged in layout 3).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtKeyV6 {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: Be16,
    pub dport: Be16,
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<CtKeyV6>() == 40);

/// `CT_V6`/`CT_PENDING_V6`'s value: a `u16` rev-NAT id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtValueV6 {
    pub last_seen_ns: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: Be16,
    pub dport: Be16,
    pub rev_nat_id: u16,
    pub flags: u8,
    pub _pad: u8,
    pub backend_id: u32,
    pub _pad2: u32,
}
const _: () = assert!(size_of::<CtValueV6>() == 56);

macro_rules! pod {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: `#[repr(C)]`, `Copy`, only integers and byte arrays, every
        // padding byte a field: any bit pattern is valid, none uninitialised.
        unsafe impl aya::Pod for $t {}
    )*};
}
pod!(
    ServiceKeyV4,
    ServiceKeyV6,
    ServiceValue,
    BackendV4,
    BackendV6,
    SockRevNatKeyV4,
    SockRevNatV4,
    SockRevNatKeyV6,
    SockRevNatV6,
    AffinityKey,
    AffinityValue,
    CtKeyV4,
    CtValueV4,
    CtKeyV6,
    CtValueV6,
);
