//! Holding back node reads while a local client is far behind on its output.
//!
//! Bulk data from other nodes (DB_PULL records during a recovery, traverse data) arrives on the
//! node links and goes straight into a local client's output queue. The daemon can read the
//! links much faster than a busy client (the recovery helper merging records) reads its socket,
//! so without a brake the client's queue grows until it passes the queue limit and the client
//! is dropped. Stock has no limit and no brake: its queue just grows.
//!
//! The brake: while some client has more than [`PacingLimits::high_bytes`] queued, node links
//! are not read; TCP then pushes back on the senders, and a ctdb-rs sender's pull or traverse
//! walk waits for its own link queue to drain. Reading resumes when every such client is below
//! [`PacingLimits::low_bytes`]. A client holds reads back for at most [`PacingLimits::max_hold`],
//! so one that stopped reading costs the cluster at most that long: after it, the links are
//! read again whatever that client does, until its queue drains or it is dropped at the queue
//! limit. Other clients that fall behind meanwhile still hold reads back, each with its own
//! bound.
//!
//! Pure bookkeeping: the shell reports queue levels and asks whether to read; no I/O here.

use crate::common::clock::Instant;
use crate::server::effect::{ClientId, Pnn};
use log::warn;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacingLimits {
    /// A client whose queue passes this many bytes holds node reads back.
    pub high_bytes: usize,
    /// ... until its queue is down to this many.
    pub low_bytes: usize,
    /// The longest one hold lasts, however the clients do.
    pub max_hold: Duration,
}

impl Default for PacingLimits {
    fn default() -> Self {
        PacingLimits {
            high_bytes: 16 << 20,
            low_bytes: 8 << 20,
            max_hold: Duration::from_secs(1),
        }
    }
}

#[derive(Debug)]
pub struct NodeReadPacing {
    limits: PacingLimits,
    /// Clients that passed the high mark and are not yet down to the low one, with when they
    /// passed it.
    backlogged: BTreeMap<ClientId, Instant>,
    /// Backlogged clients that have held reads for `max_hold` already: they no longer do,
    /// until they drain or go away.
    ignored: BTreeSet<ClientId>,
    /// Nodes whose incoming link has data we did not read.
    held: Vec<Pnn>,
}

impl NodeReadPacing {
    pub fn new(limits: PacingLimits) -> Self {
        assert!(limits.low_bytes <= limits.high_bytes);
        NodeReadPacing {
            limits,
            backlogged: BTreeMap::new(),
            ignored: BTreeSet::new(),
            held: Vec::new(),
        }
    }

    /// `client` has `pending_bytes` queued at `now` (0 once it is closed).
    pub fn client_level(&mut self, now: Instant, client: ClientId, pending_bytes: usize) {
        if pending_bytes > self.limits.high_bytes {
            self.backlogged.entry(client).or_insert(now);
        } else if pending_bytes <= self.limits.low_bytes {
            self.backlogged.remove(&client);
            self.ignored.remove(&client);
        }
    }

    /// Whether some client holds node reads back at `now`; clients whose hold ran out are
    /// logged and ignored from then on.
    fn holding(&mut self, now: Instant) -> bool {
        let mut holding = false;
        for (&client, &since) in &self.backlogged {
            if self.ignored.contains(&client) {
                continue;
            }
            if now.saturating_since(since) < self.limits.max_hold {
                holding = true;
            } else {
                warn!(
                    "Client {client} has been more than {} bytes behind for {} ms; \
                     reading node links anyway",
                    self.limits.low_bytes,
                    self.limits.max_hold.as_millis()
                );
                self.ignored.insert(client);
            }
        }
        holding
    }

    /// Whether a node link that is ready to read must wait; if so it is remembered and
    /// handed back by [`NodeReadPacing::release`].
    pub fn hold(&mut self, now: Instant, pnn: Pnn) -> bool {
        if !self.holding(now) {
            return false;
        }
        if !self.held.contains(&pnn) {
            self.held.push(pnn);
        }
        true
    }

    /// The held nodes, once nothing holds reads back any more at `now` (the backlogged
    /// clients drained, went away or ran out of time); they must be read again, since their
    /// readiness was consumed.
    pub fn release(&mut self, now: Instant) -> Vec<Pnn> {
        if self.held.is_empty() || self.holding(now) {
            return Vec::new();
        }
        std::mem::take(&mut self.held)
    }

    /// When the first running hold runs out, while nodes are held.
    pub fn deadline(&self) -> Option<Instant> {
        if self.held.is_empty() {
            return None;
        }
        self.backlogged
            .iter()
            .filter(|(client, _)| !self.ignored.contains(client))
            .map(|(_, since)| since.saturating_add(self.limits.max_hold))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn pacing() -> NodeReadPacing {
        NodeReadPacing::new(PacingLimits {
            high_bytes: 100,
            low_bytes: 50,
            max_hold: 1000 * MS,
        })
    }

    fn at(ms: u64) -> Instant {
        Instant::from_micros(1_000_000 + ms * 1000)
    }

    #[test]
    fn reads_are_held_between_the_high_and_the_low_mark() {
        let mut p = pacing();
        p.client_level(at(0), 7, 100);
        assert!(!p.hold(at(0), 1), "at the high mark is not over it");
        p.client_level(at(0), 7, 101);
        assert!(p.hold(at(0), 1));
        assert!(p.hold(at(1), 2));
        assert!(p.hold(at(2), 1));
        p.client_level(at(3), 7, 60);
        assert!(
            p.release(at(3)).is_empty(),
            "above the low mark still holds"
        );
        assert!(p.hold(at(3), 2));
        p.client_level(at(4), 7, 50);
        assert_eq!(
            p.release(at(4)),
            vec![1, 2],
            "each held node once, in order"
        );
        assert!(!p.hold(at(4), 1));
        assert!(p.release(at(5)).is_empty());
    }

    #[test]
    fn every_backlogged_client_must_drain() {
        let mut p = pacing();
        p.client_level(at(0), 1, 200);
        p.client_level(at(0), 2, 200);
        assert!(p.hold(at(0), 0));
        p.client_level(at(1), 1, 0);
        assert!(p.release(at(1)).is_empty());
        p.client_level(at(1), 2, 0);
        assert_eq!(p.release(at(1)), vec![0]);
    }

    #[test]
    fn a_client_holds_reads_for_a_bounded_time_until_it_drains() {
        let mut p = pacing();
        p.client_level(at(0), 9, 1000);
        assert!(p.hold(at(0), 3));
        assert_eq!(p.deadline(), Some(at(1000)));
        assert!(p.release(at(999)).is_empty());
        assert_eq!(p.release(at(1000)), vec![3]);
        assert_eq!(p.deadline(), None);
        assert!(
            !p.hold(at(1000), 3),
            "the stuck client no longer holds reads"
        );
        p.client_level(at(3000), 9, 2000);
        assert!(
            !p.hold(at(5000), 3),
            "not even when it falls further behind"
        );
        // Once it drained (or was dropped), a new backlog holds again, with a fresh bound.
        p.client_level(at(5000), 9, 0);
        p.client_level(at(6000), 9, 1000);
        assert!(p.hold(at(6000), 3));
        assert_eq!(p.deadline(), Some(at(7000)));
    }

    #[test]
    fn a_stuck_client_does_not_switch_the_brake_off_for_others() {
        let mut p = pacing();
        p.client_level(at(0), 1, 1000);
        assert!(p.hold(at(0), 0));
        assert_eq!(p.release(at(1000)), vec![0]);
        assert!(!p.hold(at(1000), 0));
        p.client_level(at(1500), 2, 1000);
        assert!(
            p.hold(at(1500), 0),
            "a second client falling behind holds reads"
        );
        assert_eq!(p.deadline(), Some(at(2500)));
        p.client_level(at(1600), 2, 10);
        assert_eq!(p.release(at(1600)), vec![0]);
        assert!(!p.hold(at(1600), 0), "client 1 is still ignored");
    }

    #[test]
    fn nothing_is_held_without_a_backlog() {
        let mut p = pacing();
        p.client_level(at(0), 1, 10);
        assert!(!p.hold(at(0), 1));
        assert_eq!(p.deadline(), None);
        assert!(p.release(at(0)).is_empty());
    }
}
