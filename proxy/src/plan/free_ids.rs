//! [`FreeIds`]: the ids of `1..=max` not in use, kept as ranges, so the
//! lowest free ones are found without a walk of the used ones.
//!
//! A plan that adds one backend to maps holding a million needs one free
//! backend id: collecting and sorting the million used ids for it cost
//! milliseconds per change. [`super::Applied`] keeps this index up to date
//! as it records each operation (`O(log ranges)`), and the plan reads the
//! lowest free ids from it. Pure.

use std::collections::BTreeMap;

/// The free ids of `1..=max`, as disjoint, non-adjacent inclusive ranges
/// `start → end`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FreeIds {
    ranges: BTreeMap<u32, u32>,
    max: u32,
}

/// Every id of `1..=u32::MAX` free.
impl Default for FreeIds {
    fn default() -> Self {
        Self::new(u32::MAX)
    }
}

impl FreeIds {
    /// Every id of `1..=max` free.
    pub fn new(max: u32) -> Self {
        let mut ranges = BTreeMap::new();
        if max >= 1 {
            ranges.insert(1, max);
        }
        Self { ranges, max }
    }

    /// The ids of `1..=max` not in `used` (in any order, repeats allowed).
    pub fn without(used: impl IntoIterator<Item = u32>, max: u32) -> Self {
        let mut used: Vec<u32> = used
            .into_iter()
            .filter(|id| (1..=max).contains(id))
            .collect();
        used.sort_unstable();
        used.dedup();
        let mut ranges = BTreeMap::new();
        // The lowest id not yet known to be used (u64: it may pass u32::MAX).
        let mut next = 1u64;
        for id in used {
            if u64::from(id) > next {
                ranges.insert(next as u32, id - 1);
            }
            next = u64::from(id) + 1;
        }
        if next <= u64::from(max) {
            ranges.insert(next as u32, max);
        }
        Self { ranges, max }
    }

    /// Marks `id` used (ids outside `1..=max` are ignored).
    pub fn take(&mut self, id: u32) {
        let Some((&start, &end)) = self.ranges.range(..=id).next_back() else {
            return;
        };
        if id > end {
            return;
        }
        self.ranges.remove(&start);
        if start < id {
            self.ranges.insert(start, id - 1);
        }
        if id < end {
            self.ranges.insert(id + 1, end);
        }
    }

    /// Marks `id` free again (ids outside `1..=max` are ignored).
    pub fn give(&mut self, id: u32) {
        if !(1..=self.max).contains(&id) {
            return;
        }
        let (mut start, mut end) = (id, id);
        if let Some((&s, &e)) = self.ranges.range(..=id).next_back() {
            if e >= id {
                return;
            }
            if e.checked_add(1) == Some(id) {
                self.ranges.remove(&s);
                start = s;
            }
        }
        if let Some(after) = id.checked_add(1)
            && let Some(e) = self.ranges.remove(&after)
        {
            end = e;
        }
        self.ranges.insert(start, end);
    }

    /// The free ids, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.ranges.iter().flat_map(|(&start, &end)| start..=end)
    }

    /// How many disjoint ranges the free ids make.
    #[cfg(test)]
    pub fn ranges(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: ids of `1..=max` not in `used`, the first `n`.
    fn lowest_free(used: &[u32], max: u32, n: usize) -> Vec<u32> {
        (1..=max).filter(|id| !used.contains(id)).take(n).collect()
    }

    #[test]
    fn built_from_used_ids_yields_the_lowest_free_ones_in_order() {
        let used = [3, 1, 7, 7, 8, 0, 12, 20];
        let free = FreeIds::without(used, 10);
        assert_eq!(free.iter().collect::<Vec<_>>(), lowest_free(&used, 10, 100));
        assert_eq!(free.ranges(), 3, "{free:?}");
    }

    #[test]
    fn taking_and_giving_keep_the_ranges_equal_to_a_rebuild() {
        let max = 64;
        let mut free = FreeIds::new(max);
        let mut used: Vec<u32> = Vec::new();
        let mut x = 12_345u64;
        for _ in 0..2_000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let id = ((x >> 33) % (u64::from(max) + 2)) as u32;
            if (x >> 20).is_multiple_of(2) {
                free.take(id);
                used.push(id);
            } else {
                free.give(id);
                used.retain(|u| *u != id);
            }
            assert_eq!(free, FreeIds::without(used.iter().copied(), max));
        }
    }

    #[test]
    fn the_top_of_the_id_space_is_handled() {
        let mut free = FreeIds::without([u32::MAX - 1], u32::MAX);
        assert_eq!(free.iter().take(2).collect::<Vec<_>>(), vec![1, 2]);
        free.take(u32::MAX);
        free.give(u32::MAX - 1);
        assert_eq!(free, FreeIds::without([u32::MAX], u32::MAX));
        assert_eq!(FreeIds::without([u32::MAX], u32::MAX).ranges(), 1);
        assert_eq!(FreeIds::new(0).iter().next(), None);
    }
}
