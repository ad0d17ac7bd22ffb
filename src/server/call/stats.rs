//! Statistics kept by the record call service (the `CTDB_INCREMENT_STAT` and
//! `CTDB_INCREMENT_DB_STAT` calls of `ctdb/server/ctdb_call.c` and the lock statistics of
//! `ctdb/server/ctdb_lock.c`).
//!
//! Per-database counters live in the database ([`crate::server::database::stats::DbStats`]);
//! the node-wide ones are collected here and drained by the daemon into `ctdb_statistics`.
//! Lock statistics count what stock's lock helper would have counted: requests that found a
//! record's chain held by a client, and how long they polled until they got it.

use super::{CallService, Waiting};
use crate::common::clock::Instant;
use crate::protocol::packet::Body;
use crate::protocol::types::{LockStatistics, MAX_COUNT_BUCKETS};
use crate::server::database::stats::{add_latency, hop_count_bucket, lock_bucket};
use crate::server::database::Database;

/// Bound on requests whose first failed chain lock is remembered.
const MAX_LOCK_WAITS: usize = 4096;

/// Node-wide counters since the last [`CallService::take_counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallCounters {
    pub hop_count_bucket: [u32; MAX_COUNT_BUCKETS],
    pub max_hop_count: u32,
    /// `num_calls`, `latency` and `buckets` of the chain waits that ended.
    pub locks: LockStatistics,
}

/// Identifies a retried request across its attempts.
pub(super) type WaitKey = (u8, u64, u32);

pub(super) fn wait_key(work: &Waiting) -> Option<WaitKey> {
    match work {
        Waiting::Client { client, reqid, .. } => Some((0, *client, *reqid)),
        Waiting::Node(p) => match p.body {
            Body::ReqCall(_) => Some((1, u64::from(p.srcnode), p.reqid)),
            Body::ReqDmaster(_) => Some((2, u64::from(p.srcnode), p.reqid)),
            Body::ReplyDmaster(_) => Some((3, u64::from(p.srcnode), p.reqid)),
            _ => None,
        },
    }
}

impl CallService {
    /// Drains the node-wide counters.
    pub fn take_counters(&mut self) -> CallCounters {
        std::mem::take(&mut self.counters)
    }

    /// Requests now polling for a chain a client holds (`locks.num_pending`).
    pub fn lock_waits_pending(&self) -> usize {
        self.chain_waits.len()
    }

    /// A REQ_CALL runs here as dmaster (`ctdb_request_call`): hop count histograms.
    pub(super) fn note_hop_count(&mut self, db: &mut Database, hopcount: u32) {
        db.stats_mut().note_hop_count(hopcount);
        let bucket = hop_count_bucket(hopcount);
        let c = &mut self.counters;
        c.hop_count_bucket[bucket] = c.hop_count_bucket[bucket].saturating_add(1);
        c.max_hop_count = c.max_hop_count.max(hopcount);
    }

    /// The chain of `work` was held by a client at `now`.
    pub(super) fn note_chain_busy(&mut self, now: Instant, work: &Waiting) {
        if self.lock_waits.len() >= MAX_LOCK_WAITS {
            // Requests dropped while they waited (client gone, recovery) leave entries behind.
            let live: std::collections::HashSet<WaitKey> = self
                .chain_waits
                .iter()
                .filter_map(|(_, w)| wait_key(w))
                .collect();
            self.lock_waits.retain(|k, _| live.contains(k));
            if self.lock_waits.len() >= MAX_LOCK_WAITS {
                return;
            }
        }
        if let Some(k) = wait_key(work) {
            self.lock_waits.entry(k).or_insert(now);
        }
    }

    /// The chain of `work` was locked at `now`: a request that had to wait counts its wait.
    pub(super) fn note_chain_locked(&mut self, now: Instant, db: &mut Database, work: &Waiting) {
        if self.lock_waits.is_empty() {
            return;
        }
        let Some(since) = wait_key(work).and_then(|k| self.lock_waits.remove(&k)) else {
            return;
        };
        let seconds = now.saturating_since(since).as_secs_f64();
        db.stats_mut().note_lock_wait(seconds);
        let locks = &mut self.counters.locks;
        locks.num_calls = locks.num_calls.saturating_add(1);
        add_latency(&mut locks.latency, seconds);
        let bucket = lock_bucket(seconds);
        locks.buckets[bucket] = locks.buckets[bucket].saturating_add(1);
    }
}
