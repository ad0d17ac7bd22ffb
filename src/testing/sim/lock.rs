//! A cluster lock with `ctdb_mutex_fcntl_helper` semantics on a shared file system: one holder
//! at a time, a non-blocking take ('0' taken, '1' contention), the parent's timeout ('2'), and a
//! holder whose helper notices within the recheck interval when it lost access to the file.
//!
//! A node can lose access to the file system. A take from such a node blocks until access
//! returns or the take times out. A holder that loses access keeps the lock on the file system
//! for a lease period (the cluster file system's own failure detection); its helper notices at
//! the next recheck, well within the lease, and exits (the recovery daemon sees "lost").
//! Process death releases the lock at once if the file system is reachable.

use super::{Event, Pnn, Sim};
use crate::common::clock::Instant;
use crate::protocol::helper::{ClusterMutexResult, FCNTL_HELPER_DEFAULT_RECHECK_INTERVAL};
use crate::server::recoverd::ClusterLockEvent;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long the file system keeps the lock of a holder that lost access.
pub const LOCK_LEASE: Duration = Duration::from_secs(15);
/// The daemon's own test of the lock in SET_RECMODE(NORMAL).
pub const RECMODE_TEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Holder {
    pub(crate) node: Pnn,
    pub(crate) inc: u64,
    pub(crate) id: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Requester {
    /// A recovery daemon's take.
    Recoverd { inc: u64, id: u64 },
    /// A daemon's SET_RECMODE(NORMAL) test.
    DaemonTest { inc: u64, test: u64 },
}

#[derive(Debug, Clone)]
struct BlockedTake {
    node: Pnn,
    requester: Requester,
    deadline: Instant,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct LockService {
    pub(crate) holder: Option<Holder>,
    /// The holder lost access: when the file system frees the lock.
    free_at: Option<Instant>,
    /// The holder lost access: when its helper notices.
    lost_notice_at: Option<Instant>,
    blocked: Vec<BlockedTake>,
    pub(crate) unreachable: BTreeSet<Pnn>,
    /// Takes granted, for statistics.
    pub(crate) grants: u64,
    pub(crate) history: BTreeMap<u64, Holder>,
}

impl LockService {
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        [
            self.free_at,
            self.lost_notice_at,
            self.blocked.iter().map(|b| b.deadline).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

impl Sim {
    fn lock_result(&mut self, node: Pnn, requester: Requester, result: ClusterMutexResult) {
        let inc = self.nodes[node as usize].inc;
        match requester {
            Requester::Recoverd { inc: r_inc, id } => {
                if r_inc != inc {
                    return;
                }
                let event = ClusterLockEvent::from_result(result, 0.001);
                self.schedule_local(
                    node,
                    Event::ClusterLock {
                        node,
                        inc,
                        id,
                        event,
                    },
                );
            }
            Requester::DaemonTest { inc: r_inc, test } => {
                if r_inc != inc {
                    return;
                }
                self.schedule_local(
                    node,
                    Event::RecmodeTestDone {
                        node,
                        inc,
                        test,
                        result,
                    },
                );
            }
        }
    }

    /// One non-blocking fcntl take, or a blocked one when the file system is out of reach.
    fn lock_attempt(&mut self, node: Pnn, requester: Requester, timeout: Duration) {
        if self.lock.unreachable.contains(&node) {
            let deadline = self.now.saturating_add(timeout);
            self.lock.blocked.push(BlockedTake {
                node,
                requester,
                deadline,
            });
            return;
        }
        match (self.lock.holder, requester) {
            (None, Requester::Recoverd { inc, id }) => {
                let holder = Holder { node, inc, id };
                self.lock.holder = Some(holder);
                self.lock.grants += 1;
                let grant = self.lock.grants;
                self.lock.history.insert(grant, holder);
                self.lock_result(node, requester, ClusterMutexResult::Taken);
            }
            // The daemon's test takes the free lock and drops it again at once.
            (None, Requester::DaemonTest { .. }) => {
                self.lock_result(node, requester, ClusterMutexResult::Taken);
            }
            (Some(_), _) => self.lock_result(node, requester, ClusterMutexResult::Contended),
        }
    }

    pub(crate) fn lock_take(&mut self, node: Pnn, id: u64, timeout: Duration) {
        let inc = self.nodes[node as usize].inc;
        self.lock_attempt(node, Requester::Recoverd { inc, id }, timeout);
    }

    pub(crate) fn lock_test(&mut self, node: Pnn, test: u64) {
        let inc = self.nodes[node as usize].inc;
        self.lock_attempt(
            node,
            Requester::DaemonTest { inc, test },
            RECMODE_TEST_TIMEOUT,
        );
    }

    /// The recovery daemon stops the helper of take `id`.
    pub(crate) fn lock_release(&mut self, node: Pnn, id: u64) {
        let inc = self.nodes[node as usize].inc;
        self.lock
            .blocked
            .retain(|b| !(b.node == node && b.requester == Requester::Recoverd { inc, id }));
        if self.lock.holder == Some(Holder { node, inc, id }) {
            self.release_holder();
        }
    }

    /// The holder's helper died (release or process death).
    fn release_holder(&mut self) {
        let Some(holder) = self.lock.holder else {
            return;
        };
        if self.lock.unreachable.contains(&holder.node) {
            // The file system frees it when the lease runs out.
            if self.lock.free_at.is_none() {
                self.lock.free_at = Some(self.now.saturating_add(LOCK_LEASE));
            }
            self.lock.lost_notice_at = None;
        } else {
            self.lock.holder = None;
            self.lock.free_at = None;
            self.lock.lost_notice_at = None;
        }
    }

    /// Every process of `node` died.
    pub(crate) fn lock_node_died(&mut self, node: Pnn) {
        self.lock.blocked.retain(|b| b.node != node);
        if self.lock.holder.is_some_and(|h| h.node == node) {
            self.release_holder();
        }
    }

    pub(crate) fn set_lock_reachable(&mut self, node: Pnn, reachable: bool) {
        if !reachable {
            if !self.lock.unreachable.insert(node) {
                return;
            }
            if self.lock.holder.is_some_and(|h| h.node == node) && self.lock.free_at.is_none() {
                let recheck = FCNTL_HELPER_DEFAULT_RECHECK_INTERVAL * 1_000_000;
                let delay = Duration::from_micros(self.prng.below(recheck) + 1);
                self.lock.lost_notice_at = Some(self.now.saturating_add(delay));
                self.lock.free_at = Some(self.now.saturating_add(LOCK_LEASE));
            }
            return;
        }
        if !self.lock.unreachable.remove(&node) {
            return;
        }
        if self.lock.holder.is_some_and(|h| h.node == node) && self.lock.lost_notice_at.is_some() {
            // Access came back before the helper's recheck: nothing was lost.
            self.lock.lost_notice_at = None;
            self.lock.free_at = None;
        }
        let (retry, keep): (Vec<BlockedTake>, Vec<BlockedTake>) =
            self.lock.blocked.drain(..).partition(|b| b.node == node);
        self.lock.blocked = keep;
        for b in retry {
            let timeout = b.deadline.saturating_since(self.now);
            self.lock_attempt(node, b.requester, timeout);
        }
    }

    pub(crate) fn lock_timers(&mut self) {
        let now = self.now;
        if self.lock.lost_notice_at.is_some_and(|t| now >= t) {
            self.lock.lost_notice_at = None;
            if let Some(holder) = self.lock.holder {
                let inc = self.nodes[holder.node as usize].inc;
                if inc == holder.inc {
                    self.schedule_local(
                        holder.node,
                        Event::ClusterLock {
                            node: holder.node,
                            inc,
                            id: holder.id,
                            event: ClusterLockEvent::Lost,
                        },
                    );
                }
            }
        }
        if self.lock.free_at.is_some_and(|t| now >= t) {
            self.lock.free_at = None;
            self.lock.holder = None;
        }
        let (expired, keep): (Vec<BlockedTake>, Vec<BlockedTake>) =
            self.lock.blocked.drain(..).partition(|b| now >= b.deadline);
        self.lock.blocked = keep;
        for b in expired {
            self.lock_result(b.node, b.requester, ClusterMutexResult::Timeout);
        }
    }
}
