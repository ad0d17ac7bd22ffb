//! Record calls and record migration (mirrors `ctdb/server/ctdb_call.c`,
//! `daemon_request_call_from_client` in `ctdb/server/ctdb_daemon.c`, the fetch functions of
//! `ctdb/common/ctdb_ltdb.c` and `ctdb_ltdb_store_server` in `ctdb/server/ctdb_ltdb_server.c`).
//!
//! A client asks for a record with REQ_CALL. When this node is the record's dmaster the call
//! runs here; otherwise the request travels to the last known dmaster (redirected via the
//! lmaster when that guess is stale), and the dmaster migrates the record to the requester:
//! directly with REPLY_DMASTER when it is also the lmaster, or through the lmaster with
//! REQ_DMASTER followed by REPLY_DMASTER. The requester stores the record as its new dmaster
//! and then completes the waiting client call.
//!
//! The service is sans-IO like the daemon core: every entry point takes the database set and
//! the daemon context, and the packets to send are drained with [`CallService::poll_output`].
//!
//! Differences from stock, on purpose or for now:
//! * No lock helper process. Stock tries `tdb_chainlock_nonblock` and spawns a helper when a
//!   client holds the chain. Here the daemon tries `tdb_chainlock_nonblock` and, when a client
//!   (smbd, the `ctdb` tool's fetch-lock) holds the chain, tries a bounded number of times
//!   more ([`CHAIN_SPIN_TRIES`]) and then retries the whole request after [`CHAIN_RETRY`] from
//!   its timer; the event loop never blocks on a record lock. Retried
//!   node packets pass the generation check again, so a recovery in between drops them.
//! * While a database is frozen (recovery) requests for it are queued and re-processed on the
//!   thaw ([`CallService::on_thawed`]); queued node packets of an older generation are dropped
//!   then, and pending client calls of the database are started afresh with new request ids
//!   (`ctdb_call_resend_db`).
//! * A REQ_DMASTER that reaches a node which is not the key's lmaster makes stock abort; here
//!   it is logged and dropped.
//! * Read-only delegations and sticky records live in [`readonly`] (their revoke runs in the
//!   event loop, not in a child).
//!
//! Fetch collapse (`FetchCollapse`) is in [`collapse`].
//!
//! Statistics (hop counts, chain waits, hot keys) are in [`stats`].

use super::database::RECOVERY_NORMAL;
use super::database::{Database, DatabaseSet, DbContext};
use super::effect::{ClientId, Pnn};
use crate::common::clock::Instant;
use crate::common::tdb::TdbError;
use crate::protocol::ltdb::{
    LtdbHeader, LTDB_HEADER_LEN, REC_FLAG_AUTOMATIC, REC_FLAG_MIGRATED_WITH_DATA,
    REC_FLAG_VACUUM_MIGRATED, REC_RO_HAVE_DELEGATIONS,
};
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::packet::{
    Body, Packet, ReplyCall, ReplyControl, ReplyDmaster, ReplyError, ReqCall, ReqControl,
    ReqDmaster, CALL_FLAG_VACUUM_MIGRATION, FETCH_FUNC, FETCH_WITH_HEADER_FUNC, NULL_FUNC,
};
use crate::protocol::types::node_flags::BANNED as NODE_FLAGS_BANNED;
use crate::protocol::types::RecBuffer;
use crate::protocol::Marshal;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Request ids of calls this node started; kept apart from control request ids for readability
/// of packet traces only (the two tables never see each other's replies).
const FIRST_CALL_REQID: u32 = 0x4000_0000;

/// How long a request waits before trying a chain that a client held again. One millisecond
/// is the poll loop's resolution; with 10 ms, worker processes relocking a hot record on the
/// dmaster starved remote requests (`ctdb-bench fetch-lock`: 253 vs 1387 migrations/s,
/// remote p99 640 ms vs 166 ms; stock's blocking lock helpers: 195/s, 380 ms). A try is one
/// non-blocking lock call, so polling this often costs little.
pub const CHAIN_RETRY: Duration = Duration::from_millis(1);

/// Extra `tdb_chainlock_nonblock` tries, a few CPU pause hints apart, before a request whose
/// chain a client holds waits for [`CHAIN_RETRY`]. Clients that relock a hot record leave
/// it free only for moments; a single try at each millisecond rarely met one of them (remote
/// fetch-lock p50 11 ms, p99 43 ms with four processes per node on one key, `ctdb-bench
/// fetch-lock`; with 64 tries 4-7 ms and 25-31 ms, and twice the remote locks served). More
/// tries gained nothing measurable and cost more CPU. 64 failed tries take about 20 µs with
/// TDB mutexes and 45-65 µs with fcntl chain locks (one system call each).
pub const CHAIN_SPIN_TRIES: u32 = 64;

/// CPU pause hints between two tries of [`CHAIN_SPIN_TRIES`].
const CHAIN_SPIN_PAUSES: u32 = 8;

/// Bound on the extra tries of all requests at one instant (one pass of the event loop), so
/// that many requests waiting for held chains never keep the loop spinning for long.
pub const CHAIN_SPIN_BUDGET: u32 = 256;

/// How long a record that just arrived for a local client stays here for other nodes'
/// requests while that client has not changed it yet (see [`MigrationHold`]).
pub const MIGRATION_HOLD: Duration = Duration::from_millis(2);

/// Bound on records held for local clients at once; further arrivals are not held.
const MAX_MIGRATION_HOLDS: usize = 1024;

/// A record migrated here for a local client, kept from other nodes for a moment so that the
/// client sees it before it moves on.
///
/// Without it, a record contended from several nodes could leave again before the client
/// that asked for it woke up and took its chain lock: the REQ_CALL of another node, queued
/// behind the migration, found the chain free and took the record, and the client had to ask
/// again (1.7 migration calls per remote fetch-lock with four processes per node on one key,
/// `ctdb-bench fetch-lock`; smbd logs "needed N attempts" for this). Stock has the same race.
/// A node's request that arrives within [`MIGRATION_HOLD`] of the arrival, while the record
/// still holds the data it arrived with, waits until the hold ends; once the client has stored
/// anything (smbd and `client::db` store what they change), requests go on at once. No wire
/// change: other nodes only see an answer up to [`MIGRATION_HOLD`] later.
#[derive(Debug, Clone)]
struct MigrationHold {
    until: Instant,
    data: Vec<u8>,
}

/// Something the daemon must do for the call service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutput {
    /// A packet for a local client.
    Client { client: ClientId, packet: Packet },
    /// A packet for another node (`packet.destnode`).
    Node { pnn: Pnn, packet: Packet },
    /// Stock sets the recovery mode to ACTIVE when a REQ_DMASTER contradicts what the lmaster
    /// knows, so that the recovery master repairs the record placement.
    SetRecoveryModeActive,
}

/// A client call waiting for the record to arrive (`struct ctdb_call_state`).
#[derive(Debug, Clone)]
struct PendingCall {
    client: ClientId,
    client_reqid: u32,
    call: ReqCall,
}

/// Work that waits for a frozen database to thaw.
#[derive(Debug, Clone)]
enum Waiting {
    Client {
        client: ClientId,
        reqid: u32,
        call: ReqCall,
    },
    Node(Packet),
}

/// The record call state of one daemon.
#[derive(Debug)]
pub struct CallService {
    /// This node's PNN, refreshed at every entry point.
    pnn: Pnn,
    next_reqid: u32,
    /// Requests to run again at a time: those that waited for a read-only revoke or a sticky
    /// record's pin-down, and replies whose delegation could not be stored yet.
    retry: Vec<(Instant, Waiting)>,
    /// Requests whose chain a client held, in arrival order, with the time of the next
    /// attempt. A later request for the same record queues behind them (see
    /// [`CallService::queue_behind_chain_waiters`]).
    chain_waits: Vec<(Instant, Waiting)>,
    /// TRANS3_COMMIT controls waiting for their UPDATE_RECORDs, by db_id.
    trans3: BTreeMap<u32, Trans3Commit>,
    pending: BTreeMap<u32, PendingCall>,
    waiting: BTreeMap<u32, Vec<Waiting>>,
    out: VecDeque<CallOutput>,
    /// Read-only delegations being revoked and sticky records.
    ro: readonly::ReadonlyState,
    /// The `now` of the current entry point.
    now: Instant,
    counters: stats::CallCounters,
    /// When retried requests first found their chain held.
    lock_waits: std::collections::HashMap<stats::WaitKey, Instant>,
    deferred_fetches: collapse::DeferredFetches,
    /// Records that arrived for local clients, by database and key.
    holds: std::collections::HashMap<(u32, Vec<u8>), MigrationHold>,
    /// The instant of the current spin budget and the extra chain lock tries left in it.
    spin_budget: (Instant, u32),
}

impl Default for CallService {
    fn default() -> Self {
        Self::new()
    }
}

/// What a call function produced.
struct CallResult {
    status: i32,
    data: Vec<u8>,
}

impl CallService {
    pub fn new() -> Self {
        Self {
            pnn: 0,
            retry: Vec::new(),
            chain_waits: Vec::new(),
            trans3: BTreeMap::new(),
            next_reqid: FIRST_CALL_REQID,
            pending: BTreeMap::new(),
            waiting: BTreeMap::new(),
            out: VecDeque::new(),
            ro: readonly::ReadonlyState::default(),
            now: Instant::ZERO,
            counters: stats::CallCounters::default(),
            lock_waits: std::collections::HashMap::new(),
            deferred_fetches: collapse::DeferredFetches::default(),
            holds: std::collections::HashMap::new(),
            spin_budget: (Instant::ZERO, CHAIN_SPIN_BUDGET),
        }
    }

    /// The next thing for the daemon to send or do.
    pub fn poll_output(&mut self) -> Option<CallOutput> {
        self.out.pop_front()
    }

    /// Client calls waiting for a record from another node.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    fn alloc_reqid(&mut self) -> u32 {
        let id = self.next_reqid;
        self.next_reqid = self.next_reqid.wrapping_add(1).max(FIRST_CALL_REQID);
        id
    }

    /// A client went away: its calls are forgotten (a record that arrives later is still
    /// stored, as in stock).
    pub fn on_client_closed(&mut self, client: ClientId) {
        self.pending.retain(|_, p| p.client != client);
        let others = |(_, w): &(Instant, Waiting)| !matches!(w, Waiting::Client { client: c, .. } if *c == client);
        self.retry.retain(others);
        self.chain_waits.retain(others);
        for queue in self.waiting.values_mut() {
            queue.retain(|w| !matches!(w, Waiting::Client { client: c, .. } if *c == client));
        }
        self.ro_on_client_closed(client);
        self.deferred_fetches.forget_client(client);
    }

    /// `daemon_request_call_from_client`: a REQ_CALL from a local client with its `reqid`.
    pub fn on_client_call(
        &mut self,
        dbs: &mut DatabaseSet,
        ctx: &DbContext<'_>,
        now: Instant,
        client: ClientId,
        reqid: u32,
        call: ReqCall,
    ) {
        let work = Waiting::Client {
            client,
            reqid,
            call,
        };
        self.run_locked(dbs, ctx, now, work);
    }

    /// A REQ_CALL, REPLY_CALL, REQ_DMASTER, REPLY_DMASTER or REPLY_ERROR from another node.
    /// Other bodies are ignored.
    pub fn on_node_packet(
        &mut self,
        dbs: &mut DatabaseSet,
        ctx: &DbContext<'_>,
        now: Instant,
        packet: Packet,
    ) {
        self.run_locked(dbs, ctx, now, Waiting::Node(packet));
    }

    /// Runs one request with the record's chain locked (`ctdb_ltdb_lock_requeue`). When a
    /// client holds the chain the request is retried after [`CHAIN_RETRY`] instead of
    /// blocking the daemon; stock hands the wait to a lock helper child instead.
    fn run_locked(
        &mut self,
        dbs: &mut DatabaseSet,
        ctx: &DbContext<'_>,
        now: Instant,
        work: Waiting,
    ) {
        self.pnn = dbs.pnn();
        self.ro.now = now;
        self.now = now;
        if self.queue_behind_chain_waiters(now, &work) {
            return;
        }
        let target = record_of(&work).map(|(db_id, key)| (db_id, key.to_vec()));
        let mut locked = None;
        if let Some((db_id, key)) = target {
            if let Some(db) = dbs.get_mut(db_id) {
                if db.allow_access() {
                    match self.chain_lock_spinning(now, db, &key) {
                        Ok(true) => {
                            self.note_chain_locked(now, db, &work);
                            locked = Some((db_id, key));
                        }
                        Ok(false) => {
                            self.note_chain_busy(now, &work);
                            self.chain_waits
                                .push((now.saturating_add(CHAIN_RETRY), work));
                            return;
                        }
                        Err(e) => log::error!("Failed to lock a chain of {}: {e}", db.name()),
                    }
                }
            }
        }
        match work {
            Waiting::Client {
                client,
                reqid,
                call,
            } => self.client_call(dbs, ctx, now, client, reqid, call),
            Waiting::Node(packet) => self.node_packet(dbs, ctx, now, packet),
        }
        if let Some((db_id, key)) = locked {
            if let Some(db) = dbs.get_mut(db_id) {
                if let Err(e) = db.store_mut().chain_unlock(&key) {
                    log::error!("Failed to unlock a chain of {}: {e}", db.name());
                }
            }
        }
        self.release_deferred_fetches(dbs, ctx, now);
    }

    /// `tdb_chainlock_nonblock`, tried again up to [`CHAIN_SPIN_TRIES`] times while a client
    /// holds the chain, within a budget of [`CHAIN_SPIN_BUDGET`] extra tries per instant.
    fn chain_lock_spinning(
        &mut self,
        now: Instant,
        db: &mut Database,
        key: &[u8],
    ) -> Result<bool, TdbError> {
        if self.spin_budget.0 != now {
            self.spin_budget = (now, CHAIN_SPIN_BUDGET);
        }
        let mut tries = 0;
        loop {
            let locked = db.store_mut().chain_try_lock(key)?;
            if locked || tries == CHAIN_SPIN_TRIES || self.spin_budget.1 == 0 {
                return Ok(locked);
            }
            tries += 1;
            self.spin_budget.1 -= 1;
            for _ in 0..CHAIN_SPIN_PAUSES {
                std::hint::spin_loop();
            }
        }
    }

    /// Requests for one record take its chain in the order they arrived (stock's lock
    /// requests queue in order, and its `dmaster_defer` holds REQ_CALLs back while a
    /// REQ_DMASTER or REPLY_DMASTER of the record waits for the lock). Without this a request
    /// that arrived while an older one waited for a client's chain lock could take the chain
    /// first, in a gap between the client's locks: a REQ_CALL then overtook the REQ_DMASTER
    /// it came after, read the old dmaster and bounced between lmaster and old dmaster until
    /// the REQ_DMASTER ran (hop counts over 50 with four processes per node relocking one
    /// key), and remote requests could be overtaken by newer ones again and again.
    /// Returns whether `work` was queued.
    fn queue_behind_chain_waiters(&mut self, now: Instant, work: &Waiting) -> bool {
        let Some(record) = record_of(work) else {
            return false;
        };
        let Some(due) = self
            .chain_waits
            .iter()
            .find(|(_, w)| record_of(w) == Some(record))
            .map(|(due, _)| *due)
        else {
            return false;
        };
        self.note_chain_busy(now, work);
        self.chain_waits.push((due, work.clone()));
        true
    }

    fn client_call(
        &mut self,
        dbs: &mut DatabaseSet,
        ctx: &DbContext<'_>,
        now: Instant,
        client: ClientId,
        reqid: u32,
        call: ReqCall,
    ) {
        let pnn = dbs.pnn();
        self.pnn = pnn;
        let Some(db) = dbs.get_mut(call.db_id) else {
            // Stock answers nothing at all here.
            log::error!("Unknown database 0x{:08x} in call from client", call.db_id);
            return;
        };
        if !db.allow_access() {
            self.waiting
                .entry(call.db_id)
                .or_default()
                .push(Waiting::Client {
                    client,
                    reqid,
                    call,
                });
            return;
        }
        let (mut header, data) = match ltdb_fetch(db, pnn, ctx, &call.key) {
            Ok(r) => r,
            Err(e) => {
                log::error!("Failed to fetch a record of {}: {e}", db.name());
                self.reply_client(client, reqid, ctx, -1, Vec::new());
                return;
            }
        };
        // Stock: duplicate fetches are collapsed first, then the read-only rules apply.
        let Some(mut call) = self.defer_duplicate_fetch(ctx, client, reqid, call) else {
            return;
        };
        let work = |c: &ReqCall| Waiting::Client {
            client,
            reqid,
            call: c.clone(),
        };
        if self.ro_prelude(db, pnn, ctx, &mut call, &mut header, &data, work) == RoCheck::Deferred {
            return;
        }
        if header.dmaster == pnn
            && self.ro_revoke_if_needed(db, pnn, ctx, &call, &mut header, &data, work)
                == RoCheck::Deferred
        {
            return;
        }
        if header.dmaster == pnn {
            let run = readonly::daemon_call(&call);
            let result = call_local(db, pnn, ctx, &run, &mut header, &data);
            let reply = readonly::client_reply_data(&call, result.data);
            self.reply_client(client, reqid, ctx, result.status, reply);
            return;
        }
        let generation = db.generation();
        let dest = header.dmaster;
        if dest == u32::MAX {
            // No VNN map yet: nobody can be asked.
            self.reply_client(client, reqid, ctx, -1, Vec::new());
            return;
        }
        let daemon_reqid = self.alloc_reqid();
        let packet = Packet {
            generation,
            destnode: dest,
            srcnode: pnn,
            reqid: daemon_reqid,
            body: Body::ReqCall(ReqCall {
                hopcount: 0,
                ..readonly::daemon_call(&call)
            }),
        };
        self.setup_deferred_fetch(ctx, now, daemon_reqid, &call);
        self.pending.insert(
            daemon_reqid,
            PendingCall {
                client,
                client_reqid: reqid,
                call,
            },
        );
        self.out.push_back(CallOutput::Node { pnn: dest, packet });
    }

    fn node_packet(
        &mut self,
        dbs: &mut DatabaseSet,
        ctx: &DbContext<'_>,
        _now: Instant,
        packet: Packet,
    ) {
        let checks_generation = matches!(
            packet.body,
            Body::ReqCall(_) | Body::ReplyCall(_) | Body::ReqDmaster(_) | Body::ReplyDmaster(_)
        );
        if checks_generation {
            // ctdb_input_pkt: a banned node takes no part, and packets of another generation
            // are stale (they are re-sent after the recovery).
            if ctx.own_flags & NODE_FLAGS_BANNED != 0 {
                return;
            }
            if packet.generation != ctx.vnn_map.generation {
                log::info!(
                    "Dropping record packet of generation {} (current {}) from node {}",
                    packet.generation,
                    ctx.vnn_map.generation,
                    packet.srcnode
                );
                return;
            }
        }
        match &packet.body {
            Body::ReqCall(_) => self.request_call(dbs, ctx, packet),
            Body::ReqDmaster(_) => self.request_dmaster(dbs, ctx, packet),
            Body::ReplyDmaster(_) => self.reply_dmaster(dbs, ctx, packet),
            Body::ReplyCall(r) => {
                if !self.ro_store_delegation(dbs, &packet) {
                    let retry_at = self.ro.now.saturating_add(CHAIN_RETRY);
                    self.retry.push((retry_at, Waiting::Node(packet)));
                    return;
                }
                if let Some(p) = self.pending.remove(&packet.reqid) {
                    let reply = readonly::client_reply_data(&p.call, r.data.clone());
                    self.reply_client(p.client, p.client_reqid, ctx, r.status, reply);
                }
            }
            Body::ReplyError(e) => {
                if let Some(p) = self.pending.remove(&packet.reqid) {
                    log::error!(
                        "Call failed on node {}: {}",
                        packet.srcnode,
                        String::from_utf8_lossy(&e.msg).trim_end_matches('\0')
                    );
                    self.reply_client(p.client, p.client_reqid, ctx, e.status, Vec::new());
                }
            }
            _ => {}
        }
    }

    /// `ctdb_call_resend_db` after a thaw: queued packets run again, pending calls of the
    /// database restart with new request ids.
    pub fn on_thawed(
        &mut self,
        dbs: &mut DatabaseSet,
        ctx: &DbContext<'_>,
        now: Instant,
        db_id: u32,
    ) {
        let restart: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.call.db_id == db_id)
            .map(|(&id, _)| id)
            .collect();
        let mut work: Vec<Waiting> = Vec::new();
        for id in restart {
            if let Some(p) = self.pending.remove(&id) {
                work.push(Waiting::Client {
                    client: p.client,
                    reqid: p.client_reqid,
                    call: p.call,
                });
            }
        }
        work.extend(self.waiting.remove(&db_id).unwrap_or_default());
        self.holds.retain(|(id, _), _| *id != db_id);
        self.ro_on_thawed(now, db_id);
        for w in work {
            match w {
                Waiting::Client {
                    client,
                    reqid,
                    call,
                } => self.on_client_call(dbs, ctx, now, client, reqid, call),
                Waiting::Node(packet) => self.on_node_packet(dbs, ctx, now, packet),
            }
        }
    }

    fn reply_client(
        &mut self,
        client: ClientId,
        reqid: u32,
        ctx: &DbContext<'_>,
        status: i32,
        data: Vec<u8>,
    ) {
        let packet = Packet {
            generation: ctx.vnn_map.generation,
            destnode: 0,
            srcnode: self.pnn,
            reqid,
            body: Body::ReplyCall(ReplyCall { status, data }),
        };
        self.out.push_back(CallOutput::Client { client, packet });
    }

    fn send_error(&mut self, to: &Packet, pnn: Pnn, generation: u32, msg: String) {
        let mut msg = msg.into_bytes();
        msg.push(0);
        let packet = Packet {
            generation,
            destnode: to.srcnode,
            srcnode: pnn,
            reqid: to.reqid,
            body: Body::ReplyError(ReplyError { status: -1, msg }),
        };
        self.out.push_back(CallOutput::Node {
            pnn: to.srcnode,
            packet,
        });
    }

    /// Looks up the database of a node packet: unknown ones get REPLY_ERROR (`reply_error`)
    /// or are dropped; frozen ones queue the packet. `None` means "done with this packet".
    fn node_db<'d>(
        &mut self,
        dbs: &'d mut DatabaseSet,
        ctx: &DbContext<'_>,
        packet: &Packet,
        db_id: u32,
        reply_error: bool,
    ) -> Option<&'d mut Database> {
        let pnn = dbs.pnn();
        if dbs.get(db_id).is_none() {
            log::error!(
                "Unknown database 0x{db_id:08x} in request from node {}",
                packet.srcnode
            );
            if reply_error {
                self.send_error(
                    packet,
                    pnn,
                    ctx.vnn_map.generation,
                    format!("Unknown database in request. db_id==0x{db_id:08x}"),
                );
            }
            return None;
        }
        let db = dbs.get_mut(db_id)?;
        if !db.allow_access() {
            self.waiting
                .entry(db_id)
                .or_default()
                .push(Waiting::Node(packet.clone()));
            return None;
        }
        Some(db)
    }

    /// `ctdb_request_call`.
    fn request_call(&mut self, dbs: &mut DatabaseSet, ctx: &DbContext<'_>, packet: Packet) {
        let Body::ReqCall(call) = &packet.body else {
            return;
        };
        let pnn = dbs.pnn();
        let Some(db) = self.node_db(dbs, ctx, &packet, call.db_id, true) else {
            return;
        };
        if self.ro_pinned_down(db, &packet, &call.key) {
            return;
        }
        let (mut header, data) = match ltdb_fetch(db, pnn, ctx, &call.key) {
            Ok(r) => r,
            Err(e) => {
                log::error!("Failed to fetch a record of {}: {e}", db.name());
                return;
            }
        };
        let mut call = call.clone();
        let work = |c: &ReqCall| {
            let mut deferred = packet.clone();
            deferred.body = Body::ReqCall(c.clone());
            Waiting::Node(deferred)
        };
        if self.ro_prelude(db, pnn, ctx, &mut call, &mut header, &data, work) == RoCheck::Deferred {
            return;
        }
        let call = &call;
        let lmaster = lmaster_of(ctx, &call.key);
        if header.dmaster != pnn && header.flags & REC_RO_HAVE_DELEGATIONS == 0 {
            // Redirect: the lmaster always knows the dmaster; if we are the lmaster, our header
            // names it.
            let dest = if lmaster == pnn {
                header.dmaster
            } else {
                lmaster
            };
            let mut forwarded = packet.clone();
            forwarded.destnode = dest;
            if let Body::ReqCall(c) = &mut forwarded.body {
                c.hopcount = c.hopcount.saturating_add(1);
            }
            if dest == pnn {
                log::error!("Record call loops back to this node; dropping it");
                return;
            }
            self.out.push_back(CallOutput::Node {
                pnn: dest,
                packet: forwarded,
            });
            return;
        }
        if self.ro_revoke_if_needed(db, pnn, ctx, call, &mut header, &data, work)
            == RoCheck::Deferred
            || self.ro_delegate(db, pnn, ctx, &packet, call, &mut header, &data)
        {
            return;
        }
        if packet.srcnode != pnn {
            if let Some(until) = self.held_for_local_client(call.db_id, &call.key, &data) {
                // Looked at again at the next try: the client may have stored by then.
                let due = until.min(self.now.saturating_add(CHAIN_RETRY));
                self.chain_waits.push((due, Waiting::Node(packet)));
                return;
            }
        }
        self.ro_note_hopcount(db, ctx, call);
        self.note_hop_count(db, call.hopcount);
        let generation = db.generation();
        if packet.srcnode != pnn {
            // We are dmaster: the record moves to the caller.
            if !data.is_empty() {
                header.flags |= REC_FLAG_MIGRATED_WITH_DATA;
            }
            let new_dmaster = packet.srcnode;
            if lmaster == pnn {
                self.send_dmaster_reply(
                    db,
                    pnn,
                    ctx,
                    header,
                    &call.key,
                    &data,
                    new_dmaster,
                    packet.reqid,
                );
                return;
            }
            let out = Packet {
                generation,
                destnode: lmaster,
                srcnode: pnn,
                reqid: packet.reqid,
                body: Body::ReqDmaster(ReqDmaster {
                    db_id: call.db_id,
                    rsn: header.rsn,
                    dmaster: new_dmaster,
                    key: call.key.clone(),
                    data: data.clone(),
                    record_flags: Some(header.flags),
                }),
            };
            header.dmaster = new_dmaster;
            if let Err(e) = ltdb_store(db, pnn, ctx, &call.key, &mut header, &data) {
                log::error!("Failed to store a migrated record of {}: {e}", db.name());
            }
            self.out.push_back(CallOutput::Node {
                pnn: lmaster,
                packet: out,
            });
            return;
        }
        // Our own call came back to us, and we are dmaster now.
        let result = call_local(db, pnn, ctx, call, &mut header, &data);
        if let Some(p) = self.pending.remove(&packet.reqid) {
            self.reply_client(p.client, p.client_reqid, ctx, result.status, result.data);
        }
    }

    /// `ctdb_send_dmaster_reply`: as lmaster, record the new dmaster and hand it the record.
    #[allow(clippy::too_many_arguments)]
    fn send_dmaster_reply(
        &mut self,
        db: &mut Database,
        pnn: Pnn,
        ctx: &DbContext<'_>,
        mut header: LtdbHeader,
        key: &[u8],
        data: &[u8],
        new_dmaster: Pnn,
        reqid: u32,
    ) {
        if lmaster_of(ctx, key) != pnn {
            log::error!("Not sending a dmaster reply: this node is not the lmaster");
            return;
        }
        header.dmaster = new_dmaster;
        if let Err(e) = ltdb_store(db, pnn, ctx, key, &mut header, data) {
            log::error!(
                "Failed to update the dmaster of a record of {}: {e}",
                db.name()
            );
            return;
        }
        let packet = Packet {
            generation: db.generation(),
            destnode: new_dmaster,
            srcnode: pnn,
            reqid,
            body: Body::ReplyDmaster(ReplyDmaster {
                db_id: db.db_id(),
                rsn: header.rsn,
                key: key.to_vec(),
                data: data.to_vec(),
                record_flags: Some(header.flags),
            }),
        };
        self.out.push_back(CallOutput::Node {
            pnn: new_dmaster,
            packet,
        });
    }

    /// `ctdb_request_dmaster`, at the lmaster.
    fn request_dmaster(&mut self, dbs: &mut DatabaseSet, ctx: &DbContext<'_>, packet: Packet) {
        let Body::ReqDmaster(req) = &packet.body else {
            return;
        };
        let pnn = dbs.pnn();
        let Some(db) = self.node_db(dbs, ctx, &packet, req.db_id, true) else {
            return;
        };
        let (mut header, _old_data) = match ltdb_fetch(db, pnn, ctx, &req.key) {
            Ok(r) => r,
            Err(e) => {
                log::error!("Failed to fetch a record of {}: {e}", db.name());
                return;
            }
        };
        if lmaster_of(ctx, &req.key) != pnn {
            log::error!(
                "REQ_DMASTER from node {} reached a node that is not the lmaster; dropped",
                packet.srcnode
            );
            return;
        }
        if header.dmaster != packet.srcnode && (header.rsn != 0 || header.dmaster != pnn) {
            log::error!(
                "REQ_DMASTER from node {} which is not the dmaster ({}); starting recovery",
                packet.srcnode,
                header.dmaster
            );
            self.out.push_back(CallOutput::SetRecoveryModeActive);
            return;
        }
        let record_flags = req.record_flags.unwrap_or(0);
        header.rsn = req.rsn;
        header.flags = record_flags;
        if req.dmaster == pnn {
            let (key, data, rsn) = (req.key.clone(), req.data.clone(), req.rsn);
            self.become_dmaster(db, pnn, ctx, &packet, &key, &data, rsn, record_flags);
        } else {
            let (key, data, dest) = (req.key.clone(), req.data.clone(), req.dmaster);
            self.send_dmaster_reply(db, pnn, ctx, header, &key, &data, dest, packet.reqid);
        }
    }

    /// `ctdb_reply_dmaster`, at the requester.
    fn reply_dmaster(&mut self, dbs: &mut DatabaseSet, ctx: &DbContext<'_>, packet: Packet) {
        let Body::ReplyDmaster(reply) = &packet.body else {
            return;
        };
        let pnn = dbs.pnn();
        let Some(db) = self.node_db(dbs, ctx, &packet, reply.db_id, false) else {
            return;
        };
        let (key, data, rsn) = (reply.key.clone(), reply.data.clone(), reply.rsn);
        let flags = reply.record_flags.unwrap_or(0);
        self.become_dmaster(db, pnn, ctx, &packet, &key, &data, rsn, flags);
    }

    /// `ctdb_become_dmaster`: store the record as its dmaster, then finish the waiting call.
    #[allow(clippy::too_many_arguments)]
    fn become_dmaster(
        &mut self,
        db: &mut Database,
        pnn: Pnn,
        ctx: &DbContext<'_>,
        packet: &Packet,
        key: &[u8],
        data: &[u8],
        rsn: u64,
        record_flags: u32,
    ) {
        let mut header = LtdbHeader {
            rsn,
            dmaster: pnn,
            reserved1: 0,
            flags: record_flags,
        };
        // A record fetched back by vacuuming is marked so that the store may delete it instead
        // (the flag itself never reaches the file).
        if self
            .pending
            .get(&packet.reqid)
            .is_some_and(|p| p.call.flags & CALL_FLAG_VACUUM_MIGRATION != 0 && p.call.key == key)
        {
            header.flags |= REC_FLAG_VACUUM_MIGRATED;
        }
        if let Err(e) = ltdb_store(db, pnn, ctx, key, &mut header, data) {
            log::error!("Failed to store a record we became dmaster of: {e}");
            return;
        }
        self.ro_became_dmaster(db, ctx, key);
        let Some(pending) = self.pending.get(&packet.reqid) else {
            log::error!(
                "pnn {pnn} invalid reqid {} in dmaster reply from node {}",
                packet.reqid,
                packet.srcnode
            );
            return;
        };
        if pending.call.key != key {
            log::error!(
                "Bogus dmaster packet reqid {} from node {}: key mismatch",
                packet.reqid,
                packet.srcnode
            );
            return;
        }
        let Some(pending) = self.pending.remove(&packet.reqid) else {
            return;
        };
        db.stats_mut().note_migration(self.now, key);
        if self.holds.len() >= MAX_MIGRATION_HOLDS {
            // Holds end on the timer, which may not have run for a while.
            let now = self.now;
            self.holds.retain(|_, h| now < h.until);
        }
        if pending.call.flags & CALL_FLAG_VACUUM_MIGRATION == 0
            && self.holds.len() < MAX_MIGRATION_HOLDS
        {
            let hold = MigrationHold {
                until: self.now.saturating_add(MIGRATION_HOLD),
                data: data.to_vec(),
            };
            self.holds.insert((db.db_id(), key.to_vec()), hold);
        }
        let run = readonly::daemon_call(&pending.call);
        let result = call_local(db, pnn, ctx, &run, &mut header, data);
        let reply = readonly::client_reply_data(&pending.call, result.data);
        self.reply_client(
            pending.client,
            pending.client_reqid,
            ctx,
            result.status,
            reply,
        );
    }
}

impl CallService {
    /// Until when a node's request for a record must wait for its [`MigrationHold`], if it
    /// must: the record arrived for a local client less than [`MIGRATION_HOLD`] ago and still
    /// holds `data`, the data it arrived with. A hold that no longer applies is dropped.
    fn held_for_local_client(&mut self, db_id: u32, key: &[u8], data: &[u8]) -> Option<Instant> {
        if self.holds.is_empty() {
            return None;
        }
        let entry = (db_id, key.to_vec());
        let hold = self.holds.get(&entry)?;
        if self.now < hold.until && hold.data == data {
            return Some(hold.until);
        }
        self.holds.remove(&entry);
        None
    }
}

/// A TRANS3_COMMIT in progress (`struct ctdb_persistent_state`).
#[derive(Debug, Clone)]
struct Trans3Commit {
    client: ClientId,
    client_reqid: u32,
    /// Request ids of the UPDATE_RECORD controls not yet answered.
    waiting: Vec<u32>,
    failed: bool,
    deadline: Instant,
    /// The marshalled records, kept until every other node has stored them: only then does
    /// this node store its own copy.
    local_update: Option<Vec<u8>>,
}

impl CallService {
    /// TRANS3_COMMIT from a local client (`ctdb_control_trans3_commit`): the marshalled
    /// records go to every active node of the VNN map as UPDATE_RECORD; the client hears back
    /// when all have succeeded. Returns the reply when it is known at once; otherwise the
    /// reply comes later through [`CallService::poll_output`].
    ///
    /// Unlike stock, which updates its own copy alongside the others, this node stores the
    /// records only after every other node has: a node that dies in the middle of a commit
    /// then never holds a transaction the others lack. Such a copy would carry the same
    /// `__db_sequence_number__` as the next commit the survivors make, and a later recovery
    /// that finds the two tied could pick it and drop an acknowledged write.
    #[allow(clippy::too_many_arguments)]
    pub fn trans3_commit(
        &mut self,
        dbs: &mut DatabaseSet,
        ctx: &DbContext<'_>,
        now: Instant,
        client: ClientId,
        client_reqid: u32,
        control: &ReqControl,
        targets: &[Pnn],
        timeout: Duration,
    ) -> Option<(i32, String)> {
        self.pnn = dbs.pnn();
        if ctx.recovery_mode != RECOVERY_NORMAL {
            return Some((-1, String::new()));
        }
        let Ok(buffer) = RecBuffer::from_bytes_exact(&control.data) else {
            return Some((-1, String::new()));
        };
        if dbs.get(buffer.db_id).is_none() || self.trans3.contains_key(&buffer.db_id) {
            return Some((-1, String::new()));
        }
        let mut commit = Trans3Commit {
            client,
            client_reqid,
            waiting: Vec::new(),
            failed: false,
            deadline: now.saturating_add(timeout),
            local_update: None,
        };
        for &pnn in targets {
            if pnn == self.pnn {
                commit.local_update = Some(control.data.clone());
                continue;
            }
            let reqid = self.alloc_reqid();
            commit.waiting.push(reqid);
            let packet = Packet {
                generation: ctx.vnn_map.generation,
                destnode: pnn,
                srcnode: self.pnn,
                reqid,
                body: Body::ReqControl(ReqControl {
                    opcode: ControlOpcode::UpdateRecord,
                    srvid: 0,
                    client_id: control.client_id,
                    flags: 0,
                    data: control.data.clone(),
                }),
            };
            self.out.push_back(CallOutput::Node { pnn, packet });
        }
        if commit.waiting.is_empty() {
            if !self.store_local_copy(dbs, ctx, &mut commit) {
                self.trans3.insert(buffer.db_id, commit);
                return None;
            }
            return Some((0, String::new()));
        }
        self.trans3.insert(buffer.db_id, commit);
        None
    }

    /// Every other node has the commit: stores this node's copy. False when that failed;
    /// the commit is then left to the recovery this asks for, as stock does with a failed
    /// UPDATE_RECORD.
    fn store_local_copy(
        &mut self,
        dbs: &mut DatabaseSet,
        ctx: &DbContext<'_>,
        commit: &mut Trans3Commit,
    ) -> bool {
        let Some(data) = commit.local_update.take() else {
            return true;
        };
        if update_record(dbs, ctx, &data) == 0 {
            return true;
        }
        commit.failed = true;
        self.out.push_back(CallOutput::SetRecoveryModeActive);
        false
    }

    /// A REPLY_CONTROL that may answer one of our UPDATE_RECORDs; false when it is not ours.
    pub fn on_control_reply(
        &mut self,
        dbs: &mut DatabaseSet,
        ctx: &DbContext<'_>,
        reqid: u32,
        status: i32,
    ) -> bool {
        if self.ro_control_reply(reqid, status) {
            return true;
        }
        let Some((&db_id, commit)) = self
            .trans3
            .iter_mut()
            .find(|(_, t)| t.waiting.contains(&reqid))
        else {
            return false;
        };
        if ctx.recovery_mode != RECOVERY_NORMAL {
            return true;
        }
        if status != 0 {
            // Stock leaves the commit to the recovery it triggers.
            log::error!("UPDATE_RECORD failed with status {status}; starting recovery");
            commit.failed = true;
            self.out.push_back(CallOutput::SetRecoveryModeActive);
            return true;
        }
        commit.waiting.retain(|&r| r != reqid);
        if !commit.waiting.is_empty() || commit.failed {
            return true;
        }
        let Some(mut done) = self.trans3.remove(&db_id) else {
            return true;
        };
        if self.store_local_copy(dbs, ctx, &mut done) {
            self.reply_control(done.client, done.client_reqid, ctx, 0, "");
        } else {
            self.trans3.insert(db_id, done);
        }
        true
    }

    /// `ctdb_persistent_finish_trans3_commits`: after a recovery, commits still waiting
    /// end with status 2.
    pub fn on_recovery_finished(&mut self, ctx: &DbContext<'_>) {
        for (_, commit) in std::mem::take(&mut self.trans3) {
            let msg = "trans3 commit ended by recovery";
            self.reply_control(commit.client, commit.client_reqid, ctx, 2, msg);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let commits = self.trans3.values().map(|t| t.deadline);
        let retries = self.retry.iter().chain(&self.chain_waits);
        commits
            .chain(retries.map(|(due, _)| *due))
            .chain(self.ro_poll_timeout())
            .chain(self.deferred_fetch_due())
            .min()
    }

    /// Retries requests whose chain was locked; commits past ControlTimeout answer 1
    /// (outside a recovery, as stock).
    pub fn handle_timeout(&mut self, dbs: &mut DatabaseSet, ctx: &DbContext<'_>, now: Instant) {
        // Revokes and pin-downs that end now put their requests on the retry list first.
        self.ro_handle_timeout(dbs, now);
        self.holds.retain(|_, h| now < h.until);
        // Chain waits first, oldest first: each one still waiting re-enters `chain_waits`
        // before the younger requests for its record are tried, so they queue behind it.
        let (due_chain, later_chain): (Vec<_>, Vec<_>) = std::mem::take(&mut self.chain_waits)
            .into_iter()
            .partition(|(at, _)| now >= *at);
        self.chain_waits = later_chain;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retry)
            .into_iter()
            .partition(|(at, _)| now >= *at);
        self.retry = later;
        for (_, work) in due_chain.into_iter().chain(due) {
            self.run_locked(dbs, ctx, now, work);
        }
        self.release_deferred_fetches(dbs, ctx, now);
        let expired: Vec<u32> = self
            .trans3
            .iter()
            .filter(|(_, t)| now >= t.deadline)
            .map(|(&id, _)| id)
            .collect();
        for db_id in expired {
            if let Some(commit) = self.trans3.remove(&db_id) {
                if ctx.recovery_mode == RECOVERY_NORMAL {
                    let msg = "timeout in ctdb_persistent_state";
                    self.reply_control(commit.client, commit.client_reqid, ctx, 1, msg);
                }
            }
        }
    }

    fn reply_control(
        &mut self,
        client: ClientId,
        reqid: u32,
        ctx: &DbContext<'_>,
        status: i32,
        error: &str,
    ) {
        let packet = Packet {
            generation: ctx.vnn_map.generation,
            destnode: 0,
            srcnode: self.pnn,
            reqid,
            body: Body::ReplyControl(ReplyControl {
                status,
                data: Vec::new(),
                errmsg: error.as_bytes().to_vec(),
            }),
        };
        self.out.push_back(CallOutput::Client { client, packet });
    }
}

/// UPDATE_RECORD (`ctdb_control_update_record` and `ctdb_persistent_store`): the records of
/// a marshalled buffer are written in one transaction; an older or equal RSN with different
/// data fails the whole update. Volatile databases only replace records that exist. Stock
/// writes from a child process; here the transaction runs in the daemon.
pub fn update_record(dbs: &mut DatabaseSet, ctx: &DbContext<'_>, data: &[u8]) -> i32 {
    if ctx.recovery_mode != RECOVERY_NORMAL {
        return -1;
    }
    let pnn = dbs.pnn();
    let Ok(buffer) = RecBuffer::from_bytes_exact(data) else {
        return -1;
    };
    let Some(db) = dbs.get_mut(buffer.db_id) else {
        log::error!("Unknown database 0x{:08x} in UPDATE_RECORD", buffer.db_id);
        return -1;
    };
    if !db.allow_access() {
        return -1;
    }
    if db.is_volatile() {
        return readonly::update_volatile(db, pnn, ctx, &buffer);
    }
    if let Err(e) = db.store_mut().transaction_start() {
        log::error!("Failed to start a transaction on {}: {e}", db.name());
        return -1;
    }
    let result = (|| -> Result<(), String> {
        for rec in &buffer.records {
            let (mut header, _) =
                LtdbHeader::pull(&rec.data).map_err(|e| format!("bad record header: {e}"))?;
            let value = rec.data.get(LTDB_HEADER_LEN..).unwrap_or_default();
            let replace_only = db.is_volatile();
            if replace_only
                && db
                    .store_mut()
                    .fetch(&rec.key)
                    .map_err(|e| e.to_string())?
                    .is_none()
            {
                continue;
            }
            let (old_header, old_data) =
                ltdb_fetch(db, pnn, ctx, &rec.key).map_err(|e| e.to_string())?;
            if old_header.rsn >= header.rsn && old_data != value {
                return Err(format!(
                    "old rsn {} >= new rsn {} with different data",
                    old_header.rsn, header.rsn
                ));
            }
            ltdb_store(db, pnn, ctx, &rec.key, &mut header, value).map_err(|e| e.to_string())?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => match db.store_mut().transaction_commit() {
            Ok(()) => 0,
            Err(e) => {
                log::error!("Failed to commit UPDATE_RECORD on {}: {e}", db.name());
                -1
            }
        },
        Err(e) => {
            log::error!("UPDATE_RECORD on {} failed: {e}", db.name());
            let _ = db.store_mut().transaction_cancel();
            -1
        }
    }
}

/// `ctdb_lmaster`; no node with an empty map.
pub use super::database::lmaster as lmaster_of;

/// `ctdb_call_local` with the built-in functions: runs the call on the record and stores it
/// back (which bumps the RSN, as stock does for every local call).
/// The record a request needs the chain lock of, if any.
fn record_of(work: &Waiting) -> Option<(u32, &[u8])> {
    match work {
        Waiting::Client { call, .. } => Some((call.db_id, &call.key)),
        Waiting::Node(p) => match &p.body {
            Body::ReqCall(c) => Some((c.db_id, &c.key)),
            Body::ReqDmaster(d) => Some((d.db_id, &d.key)),
            Body::ReplyDmaster(d) => Some((d.db_id, &d.key)),
            _ => None,
        },
    }
}

fn call_local(
    db: &mut Database,
    pnn: Pnn,
    ctx: &DbContext<'_>,
    call: &ReqCall,
    header: &mut LtdbHeader,
    data: &[u8],
) -> CallResult {
    let result = match call.callid {
        NULL_FUNC => CallResult {
            status: 0,
            data: Vec::new(),
        },
        FETCH_FUNC => CallResult {
            status: 0,
            data: data.to_vec(),
        },
        FETCH_WITH_HEADER_FUNC => {
            let mut out = header.to_bytes();
            out.extend_from_slice(data);
            CallResult {
                status: 0,
                data: out,
            }
        }
        other => {
            log::error!("Unknown call id {other:#x}");
            return CallResult {
                status: -1,
                data: Vec::new(),
            };
        }
    };
    if let Err(e) = ltdb_store(db, pnn, ctx, &call.key, header, data) {
        log::error!("Call store failed: {e}");
        return CallResult {
            status: -1,
            data: Vec::new(),
        };
    }
    result
}

/// `ctdb_ltdb_fetch`: header and data; a missing record gets an initial header naming the
/// lmaster as dmaster, stored at once when the database is persistent or we are that lmaster.
pub fn ltdb_fetch(
    db: &mut Database,
    pnn: Pnn,
    ctx: &DbContext<'_>,
    key: &[u8],
) -> Result<(LtdbHeader, Vec<u8>), TdbError> {
    if let Some(value) = db.store_mut().fetch(key)? {
        if let Ok((header, _)) = LtdbHeader::pull(&value) {
            let data = value.get(LTDB_HEADER_LEN..).unwrap_or_default().to_vec();
            return Ok((header, data));
        }
    }
    let mut header = LtdbHeader {
        rsn: 0,
        dmaster: lmaster_of(ctx, key),
        reserved1: 0,
        flags: REC_FLAG_AUTOMATIC,
    };
    let initial = header;
    if db.is_persistent() || header.dmaster == pnn {
        if let Err(e) = ltdb_store(db, pnn, ctx, key, &mut header, &[]) {
            log::info!("failed to store initial header: {e}");
        }
    }
    Ok((initial, Vec::new()))
}

/// `ctdb_ltdb_store` / `ctdb_ltdb_store_server`: persistent and replicated databases store the
/// header as given; volatile ones decide between storing and deleting and bump the RSN when
/// this node is the dmaster. Updates `header` in place as stock does.
pub fn ltdb_store(
    db: &mut Database,
    pnn: Pnn,
    ctx: &DbContext<'_>,
    key: &[u8],
    header: &mut LtdbHeader,
    data: &[u8],
) -> Result<(), TdbError> {
    match db.ltdb_store_updating(pnn, ctx, key, header, data) {
        // Deleting a record that is already gone is not a failure for a call.
        Err(e) if e.code == crate::common::tdb::TdbErrorCode::NoExist => Ok(()),
        other => other,
    }
}

mod collapse;
mod readonly;
pub mod stats;
use readonly::RoCheck;

#[cfg(test)]
mod tests;
