//! The socket hooks' pre-filter bitmap (`SVC_FILTER`, see
//! `proxy_common::prefilter`) in model terms: a frontend's bit, the bitmap
//! of a set of frontends, and which words differ between two bitmaps.
//!
//! The writer keeps a mirror of the kernel's bitmap and [`BitRefs`], how
//! many published frontends hold each bit. Around each plan it first sets the
//! bits of every frontend the plan publishes (before its slot 0 is written),
//! then, once the plan ran, clears the bits of the frontends it removed that
//! no published frontend shares. Both steps cost what the plan touches, not
//! what the maps hold.

use std::{collections::HashMap, net::IpAddr};

use proxy_common::prefilter;

use super::{Applied, Op, Scope};
use crate::model::Frontend;

/// A bitmap of [`prefilter::WORDS`] words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefilter {
    words: Vec<u64>,
}

impl Default for Prefilter {
    fn default() -> Self {
        Self {
            words: vec![0; prefilter::WORDS as usize],
        }
    }
}

/// The kernel's hash of a frontend (`proxy_common::prefilter`).
pub fn hash(f: &Frontend) -> u32 {
    let protocol = f.protocol.number();
    match f.addr {
        IpAddr::V4(a) => prefilter::hash_v4(u32::from(a), f.port, protocol),
        IpAddr::V6(a) => prefilter::hash_v6(&a.octets(), f.port, protocol),
    }
}

/// A frontend's bit: its position in the whole bitmap.
fn position(f: &Frontend) -> u32 {
    hash(f) & ((1 << prefilter::BITS_LOG2) - 1)
}

/// Whether the socket hooks can find `f`: it has an internal slot 0.
pub fn is_published(applied: &Applied, f: &Frontend) -> bool {
    applied.services.contains_key(&(*f, Scope::Internal, 0))
}

/// The frontends the socket hooks can find.
pub fn published(applied: &Applied) -> impl Iterator<Item = &Frontend> {
    applied
        .services
        .keys()
        .filter(|(_, scope, slot)| *scope == Scope::Internal && *slot == 0)
        .map(|(f, _, _)| f)
}

/// The frontend whose internal slot 0 `op` writes or deletes, and whether it
/// writes it.
pub fn touched(op: &Op) -> Option<(Frontend, bool)> {
    match op {
        Op::PutService {
            frontend,
            scope: Scope::Internal,
            slot: 0,
            ..
        } => Some((*frontend, true)),
        Op::DeleteService {
            frontend,
            scope: Scope::Internal,
            slot: 0,
        } => Some((*frontend, false)),
        _ => None,
    }
}

impl Prefilter {
    /// The bitmap with the bits of `frontends` set.
    pub fn of<'a>(frontends: impl IntoIterator<Item = &'a Frontend>) -> Self {
        let mut filter = Self::default();
        for f in frontends {
            filter.insert(f);
        }
        filter
    }

    pub fn insert(&mut self, f: &Frontend) {
        let p = position(f);
        self.words[(p >> 6) as usize] |= 1 << (p & 63);
    }

    pub fn remove(&mut self, f: &Frontend) {
        let p = position(f);
        self.words[(p >> 6) as usize] &= !(1 << (p & 63));
    }

    /// Whether the kernel would go on to look `f` up.
    pub fn contains(&self, f: &Frontend) -> bool {
        let p = position(f);
        self.words[(p >> 6) as usize] & (1 << (p & 63)) != 0
    }

    /// `(index, word)` of each word of `to` that differs from this one.
    pub fn changes(&self, to: &Prefilter) -> Vec<(u32, u64)> {
        (0..prefilter::WORDS)
            .zip(self.words.iter().zip(&to.words))
            .filter(|(_, (a, b))| a != b)
            .map(|(i, (_, b))| (i, *b))
            .collect()
    }

    /// Every `(index, word)`.
    pub fn words(&self) -> Vec<(u32, u64)> {
        (0..prefilter::WORDS)
            .zip(self.words.iter().copied())
            .collect()
    }

    /// Sets word `index` (out of range: ignored).
    pub fn set_word(&mut self, index: u32, word: u64) {
        if let Some(w) = self.words.get_mut(index as usize) {
            *w = word;
        }
    }

    /// How many bits are set.
    pub fn bits_set(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
    }
}

/// How many published frontends hold each bit: a bit is cleared only when
/// none does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BitRefs {
    refs: HashMap<u32, u32>,
}

impl BitRefs {
    pub fn of<'a>(frontends: impl IntoIterator<Item = &'a Frontend>) -> Self {
        let mut refs = Self::default();
        for f in frontends {
            refs.add(f);
        }
        refs
    }

    pub fn add(&mut self, f: &Frontend) {
        *self.refs.entry(position(f)).or_insert(0) += 1;
    }

    pub fn remove(&mut self, f: &Frontend) {
        let p = position(f);
        if let Some(n) = self.refs.get_mut(&p) {
            *n -= 1;
            if *n == 0 {
                self.refs.remove(&p);
            }
        }
    }

    /// Whether some published frontend holds `f`'s bit.
    pub fn held(&self, f: &Frontend) -> bool {
        self.refs.contains_key(&position(f))
    }

    /// The bitmap these frontends need.
    pub fn bitmap(&self) -> Prefilter {
        let mut filter = Prefilter::default();
        for p in self.refs.keys() {
            filter.words[(p >> 6) as usize] |= 1 << (p & 63);
        }
        filter
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::model::Protocol;

    fn tcp(addr: [u8; 4], port: u16) -> Frontend {
        Frontend {
            addr: IpAddr::V4(Ipv4Addr::from(addr)),
            port,
            protocol: Protocol::Tcp,
        }
    }

    /// Two ClusterIP ports that share a bit.
    fn colliding() -> (Frontend, Frontend) {
        let first = tcp([10, 96, 0, 10], 1);
        let other = (2..=u16::MAX)
            .map(|port| tcp([10, 96, 0, 10], port))
            .find(|f| position(f) == position(&first))
            .expect("65,535 ports in 65,536 bits: some share a bit");
        (first, other)
    }

    #[test]
    fn the_hash_is_the_kernels() {
        // The kernel hashes the key's fields: the address and port in
        // network order, read back as numbers.
        let f = tcp([10, 96, 0, 10], 80);
        assert_eq!(hash(&f), 0x673c_2881);
        let udp = Frontend {
            protocol: Protocol::Udp,
            ..f
        };
        assert_eq!(hash(&udp), 0xf436_4fbc);
    }

    #[test]
    fn a_frontend_is_in_the_bitmap_of_a_set_holding_it() {
        let a = tcp([10, 96, 0, 10], 80);
        let b = tcp([10, 96, 0, 11], 443);
        let filter = Prefilter::of([&a]);
        assert!(filter.contains(&a));
        assert!(!filter.contains(&b));
        assert_eq!(filter.bits_set(), 1);
        let both = Prefilter::of([&a, &b]);
        assert!(both.contains(&a) && both.contains(&b));
        assert_eq!(BitRefs::of([&a, &b]).bitmap(), both);
        let mut less = both.clone();
        less.remove(&a);
        assert_eq!(less, Prefilter::of([&b]));
    }

    #[test]
    fn a_bit_shared_with_a_live_frontend_stays_set() {
        let (gone, live) = colliding();
        let before = Prefilter::of([&gone, &live]);
        let after = Prefilter::of([&live]);
        assert_eq!(before, after, "one bit for both");
        assert!(after.contains(&gone), "a collision reads as \"maybe\"");
        assert!(before.changes(&after).is_empty());
        let mut refs = BitRefs::of([&gone, &live]);
        refs.remove(&gone);
        assert!(refs.held(&gone), "the live frontend still holds the bit");
        assert_eq!(refs.bitmap(), after);
        refs.remove(&live);
        assert!(!refs.held(&live));
        assert_eq!(refs.bitmap(), Prefilter::default());
    }

    #[test]
    fn changes_name_the_words_that_differ() {
        let a = tcp([10, 96, 0, 10], 80);
        let empty = Prefilter::default();
        let with = Prefilter::of([&a]);
        let h = hash(&a);
        assert_eq!(
            empty.changes(&with),
            vec![(prefilter::word(h), prefilter::bit(h))]
        );
        assert_eq!(with.changes(&empty), vec![(prefilter::word(h), 0)]);
        let mut mirror = Prefilter::default();
        for (i, w) in empty.changes(&with) {
            mirror.set_word(i, w);
        }
        assert_eq!(mirror, with);
    }
}
