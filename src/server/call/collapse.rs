//! Fetch collapse (tunable `FetchCollapse`, mirrors `setup_deferred_fetch_locks`,
//! `requeue_duplicate_fetch` and `deferred_fetch_queue_destructor` of
//! `ctdb/server/ctdb_daemon.c`).
//!
//! When a client call sends a REQ_CALL for a record to another node, further client calls for
//! the same key wait instead of sending REQ_CALLs of their own; when the first call ends
//! (answered, failed, its client gone) or after 30 seconds, the waiting calls run again in the
//! order they came, usually finding the record local by then. Stock takes the duplicate check
//! before it looks at the dmaster, so a call waits even when the record has arrived in
//! between; so does this. Vacuum migrations are never collapsed (stock starts them without the
//! client path).

use super::{CallService, Waiting};
use crate::common::clock::Instant;
use crate::protocol::packet::{ReqCall, CALL_FLAG_VACUUM_MIGRATION};
use crate::server::database::{DatabaseSet, DbContext};
use crate::server::effect::ClientId;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long calls wait for the first one before they run anyway (`dfq_timeout`).
pub const DEFERRED_FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the calls waiting behind one fetch; beyond it calls go out on their own.
const MAX_DEFERRED_PER_KEY: usize = 4096;

#[derive(Debug)]
struct DeferredFetch {
    /// Daemon request id of the call that went to the network.
    owner: u32,
    deadline: Instant,
    calls: Vec<(ClientId, u32, ReqCall)>,
}

/// In-flight fetches by (db_id, key).
#[derive(Debug, Default)]
pub(super) struct DeferredFetches {
    queues: BTreeMap<(u32, Vec<u8>), DeferredFetch>,
    /// Calls whose fetch ended, to run next.
    released: Vec<(ClientId, u32, ReqCall)>,
    /// Set while released calls run, so that releases do not nest.
    releasing: bool,
}

fn collapsible(ctx: &DbContext<'_>, call: &ReqCall) -> bool {
    ctx.tunables.fetch_collapse() == 1 && call.flags & CALL_FLAG_VACUUM_MIGRATION == 0
}

impl DeferredFetches {
    /// The client's waiting calls are dropped.
    pub(super) fn forget_client(&mut self, client: ClientId) {
        for q in self.queues.values_mut() {
            q.calls.retain(|(c, _, _)| *c != client);
        }
        self.released.retain(|(c, _, _)| *c != client);
    }

    /// Fetches in flight (for tests and logs).
    pub(super) fn len(&self) -> usize {
        self.queues.len()
    }
}

impl CallService {
    /// `requeue_duplicate_fetch`: a client call for a key with a fetch in flight waits for
    /// it. Returns the call back when it must run now.
    pub(super) fn defer_duplicate_fetch(
        &mut self,
        ctx: &DbContext<'_>,
        client: ClientId,
        reqid: u32,
        call: ReqCall,
    ) -> Option<ReqCall> {
        if !collapsible(ctx, &call) {
            return Some(call);
        }
        let Some(q) = self
            .deferred_fetches
            .queues
            .get_mut(&(call.db_id, call.key.clone()))
        else {
            return Some(call);
        };
        if q.calls.len() >= MAX_DEFERRED_PER_KEY {
            return Some(call);
        }
        q.calls.push((client, reqid, call));
        None
    }

    /// `setup_deferred_fetch_locks`: the call with daemon request id `owner` went to another
    /// node; later calls for its key wait for it. A queue left from an earlier owner is
    /// released first, as stock frees the old one.
    pub(super) fn setup_deferred_fetch(
        &mut self,
        ctx: &DbContext<'_>,
        now: Instant,
        owner: u32,
        call: &ReqCall,
    ) {
        if !collapsible(ctx, call) {
            return;
        }
        let fetch = DeferredFetch {
            owner,
            deadline: now.saturating_add(DEFERRED_FETCH_TIMEOUT),
            calls: Vec::new(),
        };
        let key = (call.db_id, call.key.clone());
        if let Some(old) = self.deferred_fetches.queues.insert(key, fetch) {
            log::error!("Already have a deferred fetch queue for this key; releasing it");
            self.deferred_fetches.released.extend(old.calls);
        }
    }

    /// When the next release is due: now if a first call has ended, else the earliest
    /// timeout.
    pub(super) fn deferred_fetch_due(&self) -> Option<Instant> {
        if !self.deferred_fetches.released.is_empty() {
            return Some(Instant::ZERO);
        }
        let queues = self.deferred_fetches.queues.values();
        let mut due = None;
        for q in queues {
            if !self.pending.contains_key(&q.owner) {
                return Some(Instant::ZERO);
            }
            due = Some(due.map_or(q.deadline, |d: Instant| d.min(q.deadline)));
        }
        due
    }

    /// `deferred_fetch_queue_destructor`: the calls behind a fetch that ended or timed out run
    /// again, in the order they came.
    pub(super) fn release_deferred_fetches(
        &mut self,
        dbs: &mut DatabaseSet,
        ctx: &DbContext<'_>,
        now: Instant,
    ) {
        if self.deferred_fetches.releasing {
            return;
        }
        self.deferred_fetches.releasing = true;
        loop {
            let pending = &self.pending;
            let done: Vec<(u32, Vec<u8>)> = self
                .deferred_fetches
                .queues
                .iter()
                .filter(|(_, q)| !pending.contains_key(&q.owner) || now >= q.deadline)
                .map(|(k, _)| k.clone())
                .collect();
            for k in done {
                if let Some(q) = self.deferred_fetches.queues.remove(&k) {
                    self.deferred_fetches.released.extend(q.calls);
                }
            }
            if self.deferred_fetches.released.is_empty() {
                break;
            }
            let calls = std::mem::take(&mut self.deferred_fetches.released);
            for (client, reqid, call) in calls {
                let work = Waiting::Client {
                    client,
                    reqid,
                    call,
                };
                self.run_locked(dbs, ctx, now, work);
            }
        }
        self.deferred_fetches.releasing = false;
    }

    /// Fetches with calls waiting behind them.
    pub fn deferred_fetch_count(&self) -> usize {
        self.deferred_fetches.len()
    }
}
