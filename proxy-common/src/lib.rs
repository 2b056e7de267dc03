//! Types shared by the kernel programs (`proxy-ebpf`) and userspace (`proxy`).
//!
//! Everything here is `#[repr(C)]` with explicit padding and no `bool`, `Option` or
//! enum fields, so the byte layout is the same on both sides. Each type carries a
//! compile-time size assertion. Byte order shows in the field types: [`Be16`] and
//! [`Be32`] hold network-order values, IPv6 addresses are network-order byte arrays.
//!
//! This crate must stay `no_std` and free of logic beyond trivial accessors, with
//! two exceptions: the Maglev hash (`maglev`) and the pre-filter's hash
//! (`prefilter`), which both sides must compute alike.
#![no_std]
// Every public item documented: both sides read these types, and the map layout
// they describe is a contract (`LAYOUT_VERSION`). Set here because a crate with
// `[lints] workspace = true` cannot add its own keys in Cargo.toml.
#![warn(missing_docs)]

pub mod guards;
pub mod maglev;
pub mod maps;
pub mod prefilter;
pub mod reason;

pub use guards::*;
pub use maglev::{MaglevConfig, MaglevTable};
pub use maps::*;
pub use reason::Reason;

/// A 16-bit value in network byte order.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Be16(pub u16);

impl Be16 {
    /// Converts a host-order value to network order.
    pub const fn from_host(v: u16) -> Self {
        Self(v.to_be())
    }
    /// The value in host order.
    pub const fn to_host(self) -> u16 {
        u16::from_be(self.0)
    }
}

/// A 32-bit value in network byte order (an IPv4 address, for example).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Be32(pub u32);

impl Be32 {
    /// Builds from the four octets of an IPv4 address, in order.
    pub const fn from_octets(o: [u8; 4]) -> Self {
        Self(u32::from_ne_bytes(o))
    }
    /// The four octets, in network order.
    pub const fn octets(self) -> [u8; 4] {
        self.0.to_ne_bytes()
    }
}

/// Protocol numbers as they appear in keys (`IPPROTO_*`).
pub mod proto {
    /// `IPPROTO_TCP`.
    pub const TCP: u8 = 6;
    /// `IPPROTO_UDP`.
    pub const UDP: u8 = 17;
}
