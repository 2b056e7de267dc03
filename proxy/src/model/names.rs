//! Interned node and zone names: every endpoint on a node shares one
//! allocation of its name (and of its zone's), instead of a `String` each.
//! At 1,000,000 endpoints on a few thousand nodes that is one small `Arc`
//! per node rather than a heap string per endpoint.
//!
//! The table is process-wide (conversion happens in the sources, before the
//! Index). Names nobody holds any more (a deleted node) are dropped from it
//! when it has doubled since it was last swept, so it stays proportional to
//! the names in use.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, OnceLock, PoisonError},
};

/// A shared, immutable name (a node's or a zone's). One pointer wide (an
/// `Arc<str>` is two): every endpoint holds two of them, so 100,000
/// endpoints are 1.6 MB smaller. Compares, orders and hashes as its text.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(Arc<Box<str>>);

impl Name {
    /// Whether `a` and `b` share one allocation (interned together).
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl std::ops::Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Name {
    /// A name of its own, not interned (tests; sources use [`intern`]).
    fn from(name: &str) -> Self {
        Self(Arc::new(name.into()))
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

/// The table is swept when it reaches this size at least.
const MIN_SWEEP: usize = 1024;

struct Table {
    names: HashSet<Name>,
    /// Sweep when `names` reaches this many entries.
    sweep_at: usize,
}

fn table() -> &'static Mutex<Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    TABLE.get_or_init(|| {
        Mutex::new(Table {
            names: HashSet::new(),
            sweep_at: MIN_SWEEP,
        })
    })
}

/// The shared copy of `name`.
pub fn intern(name: &str) -> Name {
    let mut table = table().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = table.names.get(name) {
        return found.clone();
    }
    if table.names.len() >= table.sweep_at {
        // Only the table holds these: no endpoint uses them any more.
        table.names.retain(|n| Arc::strong_count(&n.0) > 1);
        table.sweep_at = (table.names.len() * 2).max(MIN_SWEEP);
    }
    let interned = Name::from(name);
    table.names.insert(interned.clone());
    interned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_names_share_one_allocation() {
        let a = intern("names-test-node-a");
        let b = intern(&String::from("names-test-node-a"));
        assert!(Name::ptr_eq(&a, &b));
        assert_eq!(&*a, "names-test-node-a");
        assert!(!Name::ptr_eq(&a, &intern("names-test-node-b")));
    }

    /// Every endpoint holds two: a name is one pointer, and no name is one
    /// pointer too, so an endpoint is 48 bytes, not 64.
    #[test]
    fn a_name_is_one_pointer() {
        assert_eq!(std::mem::size_of::<Option<Name>>(), 8);
        assert!(std::mem::size_of::<super::super::types::Endpoint>() <= 48);
    }

    #[test]
    fn unused_names_are_swept() {
        // Fill past a sweep with names nobody keeps; the table does not
        // keep them all.
        for i in 0..(3 * MIN_SWEEP) {
            drop(intern(&format!("names-test-gone-{i}")));
        }
        let kept = intern("names-test-kept");
        let size = table()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .names
            .len();
        assert!(size < 3 * MIN_SWEEP, "{size} names kept");
        assert!(Name::ptr_eq(&kept, &intern("names-test-kept")));
    }
}
