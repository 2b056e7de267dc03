//! Bounded logging of per-item problems in one pass (a sync, a plan): the
//! first few items are logged one by one, the rest only counted, and the
//! caller logs the count once. When a map overflows at 100,000 Services,
//! tens of thousands of items fail alike at every sync; a line for each
//! buries everything else (and costs seconds).
//!
//! Pure: it decides, the caller logs.

/// Items logged one by one per pass.
pub const PER_PASS: usize = 10;

/// How many items of one pass were logged, and how many were not.
#[derive(Debug, Default)]
pub struct LogBudget {
    shown: usize,
    hidden: usize,
}

impl LogBudget {
    /// True while the item may be logged on its own; false: it is counted
    /// in [`LogBudget::hidden`].
    pub fn admit(&mut self) -> bool {
        if self.shown < PER_PASS {
            self.shown += 1;
            true
        } else {
            self.hidden += 1;
            false
        }
    }

    /// Items not logged one by one.
    pub fn hidden(&self) -> usize {
        self.hidden
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_few_are_admitted_and_the_rest_counted() {
        let mut budget = LogBudget::default();
        let admitted = (0..25).filter(|_| budget.admit()).count();
        assert_eq!(admitted, PER_PASS);
        assert_eq!(budget.hidden(), 25 - PER_PASS);
    }
}
