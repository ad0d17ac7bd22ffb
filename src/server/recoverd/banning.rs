//! Ban credits kept by the leader's recovery daemon (mirrors `ctdb_set_culprit_count`,
//! `ban_counts_reset` and the threshold test of `ban_misbehaving_nodes` in `ctdb_recoverd.c`).

use crate::common::clock::Instant;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Culprit {
    pub(crate) pnn: u32,
    pub(crate) count: u32,
    pub(crate) last_reported: Instant,
}

/// Credits per node, in the order nodes were first blamed (stock appends to an array).
#[derive(Debug, Clone, Default)]
pub(crate) struct BanCredits {
    culprits: Vec<Culprit>,
}

impl BanCredits {
    /// Adds `count` credits to `pnn`. Credits older than `grace` are forgiven first; the test
    /// is strictly "older than", as `timeval_elapsed(...) > recovery_grace_period`.
    pub(crate) fn add(&mut self, now: Instant, pnn: u32, count: u32, grace: Duration) {
        match self.culprits.iter_mut().find(|c| c.pnn == pnn) {
            Some(c) => {
                if c.count > 0 && now.saturating_since(c.last_reported) > grace {
                    c.count = 0;
                }
                c.count = c.count.saturating_add(count);
                c.last_reported = now;
            }
            None => self.culprits.push(Culprit {
                pnn,
                count,
                last_reported: now,
            }),
        }
    }

    /// Nodes at or over `threshold` credits, in array order; their counts drop to 0.
    pub(crate) fn take_over_threshold(&mut self, threshold: u32) -> Vec<(u32, u32)> {
        let mut banned = Vec::new();
        for c in &mut self.culprits {
            if c.count < threshold {
                continue;
            }
            banned.push((c.pnn, c.count));
            c.count = 0;
        }
        banned
    }

    pub(crate) fn reset(&mut self) {
        self.culprits.clear();
    }

    pub(crate) fn count(&self, pnn: u32) -> u32 {
        self.culprits
            .iter()
            .find(|c| c.pnn == pnn)
            .map_or(0, |c| c.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_accumulate_are_forgiven_and_reset() {
        let grace = Duration::from_secs(120);
        let mut credits = BanCredits::default();
        credits.add(Instant::from_secs(10), 2, 1, grace);
        credits.add(Instant::from_secs(20), 2, 3, grace);
        credits.add(Instant::from_secs(20), 1, 1, grace);
        assert_eq!(credits.count(2), 4);
        // Exactly the grace period later nothing is forgiven; one microsecond more is.
        credits.add(Instant::from_secs(140), 2, 1, grace);
        assert_eq!(credits.count(2), 5);
        credits.add(
            Instant::from_secs(260).saturating_add(Duration::from_micros(1)),
            2,
            1,
            grace,
        );
        assert_eq!(credits.count(2), 1);
        credits.add(Instant::from_secs(261), 1, 5, grace);
        assert_eq!(credits.take_over_threshold(6), vec![]);
        credits.add(Instant::from_secs(262), 1, 1, grace);
        assert_eq!(credits.take_over_threshold(6), vec![(1, 6)]);
        assert_eq!(credits.count(1), 0);
        credits.reset();
        assert_eq!(credits.count(2), 0);
    }
}
