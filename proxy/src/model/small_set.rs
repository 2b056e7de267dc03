//! [`SmallSet`]: a sorted vector used as a set. The Index and the desired-state
//! cache keep many tiny sets (the slices of one Service, the Services claiming
//! one frontend: almost always one element), where a `BTreeSet` would allocate
//! a whole tree node per set. The first element is allocated alone (a `Vec`
//! would reserve room for four: 10,000 one-element sets of `ObjectRef`s held
//! ~1 MB of empty room in each of the Index and the cache). Pure.

/// A set kept as a sorted, de-duplicated vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmallSet<T>(Vec<T>);

impl<T> Default for SmallSet<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T: Ord> SmallSet<T> {
    /// Adds `value`; returns whether it was new.
    pub fn insert(&mut self, value: T) -> bool {
        match self.0.binary_search(&value) {
            Ok(_) => false,
            Err(at) => {
                if self.0.capacity() == 0 {
                    self.0.reserve_exact(1);
                }
                self.0.insert(at, value);
                true
            }
        }
    }

    /// Removes `value`; returns whether it was there.
    pub fn remove(&mut self, value: &T) -> bool {
        match self.0.binary_search(value) {
            Ok(at) => {
                self.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    pub fn contains(&self, value: &T) -> bool {
        self.0.binary_search(value).is_ok()
    }

    /// The smallest element.
    pub fn first(&self) -> Option<&T> {
        self.0.first()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The elements in order.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }
}

impl<'a, T> IntoIterator for &'a SmallSet<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_sorted_set() {
        let mut s = SmallSet::default();
        assert!(s.insert(3));
        assert!(s.insert(1));
        assert!(!s.insert(3));
        assert!(s.insert(2));
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(s.first(), Some(&1));
        assert!(s.remove(&2));
        assert!(!s.remove(&2));
        assert!(s.contains(&3) && !s.contains(&2));
        assert_eq!(s.len(), 2);
    }

    /// Almost every set holds one element: it must not reserve room for more.
    #[test]
    fn a_single_element_is_allocated_alone() {
        let mut s = SmallSet::default();
        s.insert(7u64);
        assert_eq!(s.0.capacity(), 1);
        s.insert(8);
        assert!(s.0.capacity() >= 2);
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), [7, 8]);
    }
}
