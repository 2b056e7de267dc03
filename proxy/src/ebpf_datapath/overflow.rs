//! Which frontends beyond the maps' capacity the userspace path serves.
//!
//! Each one it serves holds a listening socket (and a local route), and each
//! of its connections two more descriptors. Tens of thousands of frontends
//! beyond a too-small map would exhaust the daemon's descriptors and break
//! what it does serve, so the userspace path takes at most a budget of them
//! (`--userspace-max-frontends`); the rest are reported as not served.
//!
//! The choice is sticky: a frontend served stays served while it is beyond
//! capacity, so a newcomer never takes a working listener's place. Room that
//! frees up goes to the waiting frontends in their order.

use std::collections::BTreeSet;

use crate::model::Frontend;

/// The frontends the userspace path serves, out of those beyond capacity.
#[derive(Debug, Default)]
pub struct OverflowBudget {
    limit: usize,
    served: BTreeSet<Frontend>,
}

impl OverflowBudget {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            served: BTreeSet::new(),
        }
    }

    /// Brings the served set in line with `beyond` (the frontends beyond the
    /// maps' capacity): drops those no longer beyond, then admits waiting
    /// ones up to the limit. Returns the frontends whose service changed.
    pub fn update(&mut self, beyond: &BTreeSet<Frontend>) -> BTreeSet<Frontend> {
        let mut changed: BTreeSet<Frontend> = self.served.difference(beyond).copied().collect();
        self.served.retain(|f| beyond.contains(f));
        for frontend in beyond {
            if self.served.len() >= self.limit {
                break;
            }
            if self.served.insert(*frontend) {
                changed.insert(*frontend);
            }
        }
        changed
    }

    /// Whether the userspace path serves `frontend`.
    pub fn serves(&self, frontend: &Frontend) -> bool {
        self.served.contains(frontend)
    }

    /// The frontends the userspace path serves.
    pub fn served(&self) -> &BTreeSet<Frontend> {
        &self.served
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    fn fe(port: u16) -> Frontend {
        Frontend {
            addr: std::net::IpAddr::from([10, 96, 0, 10]),
            port,
            protocol: Protocol::Tcp,
        }
    }

    fn set(ports: &[u16]) -> BTreeSet<Frontend> {
        ports.iter().map(|p| fe(*p)).collect()
    }

    #[test]
    fn at_most_the_limit_is_served_and_the_served_stay() {
        let mut budget = OverflowBudget::new(2);
        assert_eq!(budget.update(&set(&[5, 6, 7])), set(&[5, 6]));
        assert_eq!(budget.served(), &set(&[5, 6]));
        // A newcomer that sorts first does not displace a served frontend.
        assert_eq!(budget.update(&set(&[1, 5, 6, 7])), set(&[]));
        assert_eq!(budget.served(), &set(&[5, 6]));
        // One fits the maps again: its place goes to the first waiting one.
        assert_eq!(budget.update(&set(&[1, 6, 7])), set(&[5, 1]));
        assert_eq!(budget.served(), &set(&[1, 6]));
        assert!(budget.serves(&fe(1)) && !budget.serves(&fe(7)));
        // Nothing beyond capacity: nothing served.
        assert_eq!(budget.update(&set(&[])), set(&[1, 6]));
        assert!(budget.served().is_empty());
    }

    #[test]
    fn a_zero_limit_serves_nothing() {
        let mut budget = OverflowBudget::new(0);
        assert_eq!(budget.update(&set(&[1, 2])), set(&[]));
        assert!(budget.served().is_empty());
    }
}
