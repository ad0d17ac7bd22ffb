//! Cluster-wide database traverse (mirrors `server/ctdb_traverse.c`).
//!
//! A local client asks its node (the *originator*) with TRAVERSE_START(_EXT); the originator
//! sends TRAVERSE_ALL(_EXT) to every active node (volatile databases) or to one node
//! (persistent and replicated ones: itself when it is in the vnn map), each of those walks its
//! own file and sends every record back as a NOREPLY TRAVERSE_DATA, then an empty record. The
//! originator hands each record to the client as a message on the client's srvid and, when
//! every walking node has sent its empty record, the empty record too.
//!
//! Stock forks a child per walk. Here the walk is a cursor over the file's hash chains run in
//! bounded steps from the daemon's timer ([`DatabaseSet::handle_timeout`]): each step takes
//! the all-record read lock *without waiting*, visits whole chains until
//! [`TRAVERSE_STEP_RECORDS`] records were seen, and releases the lock, so the event loop
//! serves other work between steps and never waits for a client's lock. A record that exists
//! for the whole walk is returned exactly once (a key always hashes to the same chain and
//! each chain is read under its lock in one go); a record stored or deleted during the walk
//! may or may not be returned — the same promise as stock's `tdb_traverse_read` in a child.

use super::{DatabaseSet, DbContext, DbEffect, DbReply, FreezeMode};
use crate::common::clock::Instant;
use crate::protocol::header::BROADCAST_ACTIVE;
use crate::protocol::ltdb::LTDB_HEADER_LEN;
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::types::{
    RecData, TraverseAll, TraverseAllExt, TraverseStart, TraverseStartExt,
};
use crate::protocol::{LtdbHeader, Marshal};
use crate::server::database::storage::ChainStep;
use crate::server::effect::{ClientId, Pnn};
use std::time::Duration;

/// Records visited (at least, whole chains at a time) per step of one local walk.
pub const TRAVERSE_STEP_RECORDS: usize = 256;
/// How long a walk waits before trying again when its database is frozen or locked.
pub const TRAVERSE_RETRY_INTERVAL: Duration = Duration::from_millis(10);
/// Walks of this node's files running at once; more TRAVERSE_ALLs fail (stock forks a child
/// for each without limit).
pub const MAX_LOCAL_TRAVERSES: usize = 64;
/// Cluster-wide traverses this node originates at once; more TRAVERSE_STARTs fail.
pub const MAX_ORIGIN_TRAVERSES: usize = 64;

/// Bytes queued towards a walk's records' next hop above which the walk waits.
pub const TRAVERSE_BACKLOG_LIMIT: usize = 4 << 20;

/// Where the records of a walk go next: the originator's client when this node is the
/// originator, else the originator node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraverseSink {
    Client(ClientId),
    Node(Pnn),
    /// This node's clients registered for the srvid (a DB_PULL for a local helper).
    Srvid(u64),
}

/// One walk of a local file for some originator (`struct ctdb_traverse_local_handle`).
#[derive(Debug, Clone)]
pub(super) struct LocalTraverse {
    db_id: u32,
    /// The originator's traverse id, echoed in every TRAVERSE_DATA.
    reqid: u32,
    /// The originator.
    srcnode: Pnn,
    /// The client's reqid and srvid: what TRAVERSE_KILL names.
    client_reqid: u32,
    srvid: u64,
    with_empty_records: bool,
    next_chain: u32,
    records_sent: u32,
    due: Instant,
    /// The last step found the sink congested: the walk goes on as soon as it is not (see
    /// [`DatabaseSet::walks_wait_for_readers`]), `due` is only the fallback.
    waiting_for_reader: bool,
}

/// A traverse this node originated for a local client (`struct traverse_start_state` with its
/// `struct ctdb_traverse_all_handle`).
#[derive(Debug, Clone)]
pub(super) struct OriginTraverse {
    reqid: u32,
    client: ClientId,
    client_reqid: u32,
    srvid: u64,
    db_id: u32,
    db_name: String,
    volatile: bool,
    /// Empty records received so far (one per walking node).
    null_count: u32,
    num_records: u32,
    /// `TraverseTimeout` after the start: the client gets its end record, the walks are killed.
    deadline: Instant,
}

#[derive(Debug, Default)]
pub(super) struct Traverses {
    local: Vec<LocalTraverse>,
    origin: Vec<OriginTraverse>,
    next_reqid: u32,
}

impl Traverses {
    fn alloc_reqid(&mut self) -> u32 {
        self.next_reqid = self.next_reqid.wrapping_add(1).max(1);
        while self.origin.iter().any(|o| o.reqid == self.next_reqid) {
            self.next_reqid = self.next_reqid.wrapping_add(1).max(1);
        }
        self.next_reqid
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let local = self.local.iter().map(|t| t.due).min();
        let origin = self.origin.iter().map(|o| o.deadline).min();
        [local, origin].into_iter().flatten().min()
    }

    pub(super) fn local_waiting_for_readers(&self) -> bool {
        self.local.iter().any(|t| t.waiting_for_reader)
    }
}

/// An empty record: the end of one node's part, or of the whole traverse.
fn end_record(reqid: u32) -> RecData {
    RecData {
        reqid,
        key: Vec::new(),
        data: Vec::new(),
    }
}

impl DatabaseSet {
    /// Walks of local files in progress (for tests and statistics).
    pub fn local_traverse_count(&self) -> usize {
        self.traverses.local.len()
    }

    /// Traverses originated here that have not ended.
    pub fn origin_traverse_count(&self) -> usize {
        self.traverses.origin.len()
    }

    /// `AllowUnhealthyDBRead`: an unhealthy database is traversed only when allowed.
    fn traverse_allowed(&self, db_id: u32, ctx: &DbContext<'_>, what: &str) -> bool {
        let Some(db) = self.get(db_id) else {
            return false;
        };
        if let Some(reason) = &db.unhealthy_reason {
            if ctx.tunables.allow_unhealthy_db_read() == 0 {
                log::error!("db({}) unhealty in {what}: {reason}", db.name);
                return false;
            }
            log::warn!("warn: db({}) unhealty in {what}: {reason}", db.name);
        }
        true
    }

    /// TRAVERSE_START and TRAVERSE_START_EXT from a local client.
    pub(super) fn control_traverse_start(
        &mut self,
        now: Instant,
        data: &[u8],
        client: Option<ClientId>,
        ext: bool,
        ctx: &DbContext<'_>,
    ) -> DbReply {
        let start = if ext {
            TraverseStartExt::from_bytes_exact(data).ok()
        } else {
            TraverseStart::from_bytes_exact(data)
                .ok()
                .map(|s| TraverseStartExt {
                    db_id: s.db_id,
                    reqid: s.reqid,
                    srvid: s.srvid,
                    with_empty_records: false,
                })
        };
        let Some(client) = client else {
            log::error!("No client found");
            return DbReply::fail();
        };
        let Some(start) = start else {
            log::error!("Bad record size in ctdb_control_traverse_start");
            return DbReply::fail();
        };
        if !self.traverse_allowed(start.db_id, ctx, "ctdb_control_traverse_start") {
            return DbReply::fail();
        }
        if self.traverses.origin.len() >= MAX_ORIGIN_TRAVERSES {
            log::error!("Too many traverses in progress");
            return DbReply::fail();
        }
        let Some(db) = self.get(start.db_id) else {
            return DbReply::fail();
        };
        let (db_name, volatile) = (db.name.clone(), db.is_volatile());
        let reqid = self.traverses.alloc_reqid();
        let pnn = self.config.pnn;
        let destnode = if volatile {
            BROADCAST_ACTIVE
        } else if ctx.vnn_map.map.contains(&pnn) {
            pnn
        } else {
            ctx.vnn_map.map.first().copied().unwrap_or(pnn)
        };
        let (opcode, payload) = if start.with_empty_records {
            let all = TraverseAllExt {
                db_id: start.db_id,
                reqid,
                pnn,
                client_reqid: start.reqid,
                srvid: start.srvid,
                with_empty_records: true,
            };
            (ControlOpcode::TraverseAllExt, all.to_bytes())
        } else {
            let all = TraverseAll {
                db_id: start.db_id,
                reqid,
                pnn,
                client_reqid: start.reqid,
                srvid: start.srvid,
            };
            (ControlOpcode::TraverseAll, all.to_bytes())
        };
        self.effects.push_back(DbEffect::SendControl {
            destnode,
            opcode,
            data: payload,
        });
        log::info!("Starting traverse on DB {db_name} (id {reqid})");
        let timeout = Duration::from_secs(u64::from(ctx.tunables.traverse_timeout()));
        self.traverses.origin.push(OriginTraverse {
            reqid,
            client,
            client_reqid: start.reqid,
            srvid: start.srvid,
            db_id: start.db_id,
            db_name,
            volatile,
            null_count: 0,
            num_records: 0,
            deadline: now.saturating_add(timeout),
        });
        DbReply::status(0)
    }

    /// TRAVERSE_ALL and TRAVERSE_ALL_EXT from an originator: start walking the local file.
    pub(super) fn control_traverse_all(
        &mut self,
        now: Instant,
        data: &[u8],
        ext: bool,
        ctx: &DbContext<'_>,
    ) -> DbReply {
        let all = if ext {
            TraverseAllExt::from_bytes_exact(data).ok()
        } else {
            TraverseAll::from_bytes_exact(data)
                .ok()
                .map(|a| TraverseAllExt {
                    db_id: a.db_id,
                    reqid: a.reqid,
                    pnn: a.pnn,
                    client_reqid: a.client_reqid,
                    srvid: a.srvid,
                    with_empty_records: false,
                })
        };
        let Some(all) = all else {
            log::error!("Invalid size in ctdb_control_traverse_all");
            return DbReply::fail();
        };
        if !self.traverse_allowed(all.db_id, ctx, "ctdb_control_traverse_all") {
            return DbReply::fail();
        }
        if self.traverses.local.len() >= MAX_LOCAL_TRAVERSES {
            log::error!("Too many local traverses in progress");
            return DbReply::fail();
        }
        self.traverses.local.push(LocalTraverse {
            db_id: all.db_id,
            reqid: all.reqid,
            srcnode: all.pnn,
            client_reqid: all.client_reqid,
            srvid: all.srvid,
            with_empty_records: all.with_empty_records,
            next_chain: 0,
            records_sent: 0,
            due: now,
            waiting_for_reader: false,
        });
        DbReply::status(0)
    }

    /// TRAVERSE_DATA: one record (or a node's empty end record) for a traverse we originated.
    pub(super) fn control_traverse_data(&mut self, data: &[u8], ctx: &DbContext<'_>) -> DbReply {
        let Ok(rec) = RecData::from_bytes_exact(data) else {
            log::error!("Bad record size in ctdb_control_traverse_data");
            return DbReply::fail();
        };
        self.traverse_data(rec, ctx)
    }

    fn traverse_data(&mut self, rec: RecData, ctx: &DbContext<'_>) -> DbReply {
        let Some(pos) = self
            .traverses
            .origin
            .iter()
            .position(|o| o.reqid == rec.reqid)
        else {
            // The traverse ended or timed out already.
            return DbReply::fail();
        };
        let end = rec.key.is_empty() && rec.data.is_empty();
        let origin = &mut self.traverses.origin[pos];
        if end {
            origin.null_count += 1;
            // Persistent databases are walked on one node only.
            if origin.volatile && origin.null_count != ctx.active_nodes {
                return DbReply::status(0);
            }
        }
        let forward = RecData {
            reqid: origin.client_reqid,
            key: rec.key,
            data: rec.data,
        };
        let srvid = origin.srvid;
        if end {
            log::info!(
                "Ending traverse on DB {} (id {}), records {}",
                origin.db_name,
                origin.reqid,
                origin.num_records
            );
            self.traverses.origin.remove(pos);
        } else {
            origin.num_records += 1;
        }
        self.effects.push_back(DbEffect::DispatchLocal {
            srvid,
            data: forward.to_bytes(),
        });
        DbReply::status(0)
    }

    /// TRAVERSE_KILL: the client of a traverse went away; stop our walk for it.
    pub(super) fn control_traverse_kill(&mut self, data: &[u8]) -> DbReply {
        let Ok(kill) = TraverseStart::from_bytes_exact(data) else {
            log::error!("Invalid data size in TRAVERSE_KILL");
            return DbReply::fail();
        };
        if self.get(kill.db_id).is_none() {
            return DbReply::fail();
        }
        if let Some(pos) = self.traverses.local.iter().position(|t| {
            t.db_id == kill.db_id && t.client_reqid == kill.reqid && t.srvid == kill.srvid
        }) {
            self.traverses.local.remove(pos);
        }
        DbReply::status(0)
    }

    /// Tells every connected node to stop walking for `origin` (stock's destructor of the
    /// traverse state).
    fn kill_traverse(&mut self, origin: &OriginTraverse) {
        let kill = TraverseStart {
            db_id: origin.db_id,
            reqid: origin.client_reqid,
            srvid: origin.srvid,
        };
        self.effects.push_back(DbEffect::BroadcastControl {
            opcode: ControlOpcode::TraverseKill,
            data: kill.to_bytes(),
        });
    }

    /// A local client disconnected: its traverses end and their walks are killed everywhere.
    pub(super) fn traverse_client_closed(&mut self, client: ClientId) {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.traverses.origin)
            .into_iter()
            .partition(|o| o.client == client);
        self.traverses.origin = kept;
        for origin in gone {
            log::error!(
                "Traverse cancelled by client disconnect for database:0x{:08x}",
                origin.db_id
            );
            self.kill_traverse(&origin);
        }
    }

    /// A database is going away (DB_DETACH): its walks stop without an end record.
    pub(super) fn traverse_db_detached(&mut self, db_id: u32) {
        self.traverses.local.retain(|t| t.db_id != db_id);
    }

    /// Timer work: expired traverses, then one step of every walk that is due.
    pub(super) fn traverse_timeout(
        &mut self,
        now: Instant,
        ctx: &DbContext<'_>,
        congested: &dyn Fn(TraverseSink) -> bool,
    ) {
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.traverses.origin)
            .into_iter()
            .partition(|o| now >= o.deadline);
        self.traverses.origin = kept;
        for origin in expired {
            log::error!("Traverse all timeout on database:{}", origin.db_name);
            self.effects.push_back(DbEffect::TraverseTimedOut);
            self.effects.push_back(DbEffect::DispatchLocal {
                srvid: origin.srvid,
                data: end_record(origin.client_reqid).to_bytes(),
            });
            log::info!(
                "Ending traverse on DB {} (id {}), records {}",
                origin.db_name,
                origin.reqid,
                origin.num_records
            );
            self.kill_traverse(&origin);
        }

        let due: Vec<usize> = (0..self.traverses.local.len())
            .filter(|&i| {
                let walk = &self.traverses.local[i];
                now >= walk.due || walk.waiting_for_reader
            })
            .collect();
        // Back to front so that removals keep the remaining indices valid.
        for i in due.into_iter().rev() {
            let waiting = congested(self.traverse_sink(i));
            let walk = &mut self.traverses.local[i];
            walk.waiting_for_reader = waiting;
            if waiting {
                walk.due = now.saturating_add(TRAVERSE_RETRY_INTERVAL);
                continue;
            }
            self.traverse_step(now, i, ctx);
        }
    }

    fn traverse_sink(&self, index: usize) -> TraverseSink {
        let walk = &self.traverses.local[index];
        if walk.srcnode != self.config.pnn {
            return TraverseSink::Node(walk.srcnode);
        }
        match self.traverses.origin.iter().find(|o| o.reqid == walk.reqid) {
            Some(origin) => TraverseSink::Client(origin.client),
            // The traverse is over; the next step notices and stops.
            None => TraverseSink::Node(walk.srcnode),
        }
    }

    /// One bounded step of local walk `index`.
    fn traverse_step(&mut self, now: Instant, index: usize, ctx: &DbContext<'_>) {
        let walk = self.traverses.local[index].clone();
        let pnn = self.config.pnn;
        let Some(db) = self.dbs.iter_mut().find(|db| db.db_id == walk.db_id) else {
            self.traverses.local.remove(index);
            return;
        };
        if db.freeze_mode != FreezeMode::None {
            // Stock's child would sit in its locks until the recovery is over.
            self.traverses.local[index].due = now.saturating_add(TRAVERSE_RETRY_INTERVAL);
            return;
        }
        let volatile = db.is_volatile();
        let mut records = Vec::new();
        let step =
            db.store
                .traverse_chains(walk.next_chain, TRAVERSE_STEP_RECORDS, &mut |key, data| {
                    if volatile {
                        if !walk.with_empty_records && data.len() <= LTDB_HEADER_LEN {
                            return;
                        }
                        // Only the authoritative copy: the one this node is dmaster of.
                        match LtdbHeader::pull(data) {
                            Ok((header, _)) if header.dmaster == pnn => {}
                            _ => return,
                        }
                    }
                    records.push(RecData {
                        reqid: walk.reqid,
                        key: key.to_vec(),
                        data: data.to_vec(),
                    });
                });
        let db_name = db.name.clone();
        let finished = match step {
            Ok(ChainStep::Busy) => {
                self.traverses.local[index].due = now.saturating_add(TRAVERSE_RETRY_INTERVAL);
                return;
            }
            Ok(ChainStep::More(next)) => {
                let t = &mut self.traverses.local[index];
                t.next_chain = next;
                t.due = now;
                false
            }
            Ok(ChainStep::Done) => true,
            Err(e) => {
                log::error!(
                    "Local traverse failed db:{db_name} reqid:{} records:{}: {e}",
                    walk.reqid,
                    walk.records_sent
                );
                true
            }
        };
        let sent = u32::try_from(records.len()).unwrap_or(u32::MAX);
        self.traverses.local[index].records_sent = walk.records_sent.saturating_add(sent);
        if finished {
            records.push(end_record(walk.reqid));
            log::info!(
                "Local traverse end db:{db_name} reqid:{} records:{}",
                walk.reqid,
                walk.records_sent.saturating_add(sent)
            );
            self.traverses.local.remove(index);
        }
        for rec in records {
            if walk.srcnode == pnn {
                if self.traverse_data(rec, ctx).status != 0 {
                    // The traverse is over (timed out): stop walking, as stock's child does
                    // when its TRAVERSE_DATA fails.
                    self.traverses
                        .local
                        .retain(|t| !(t.reqid == walk.reqid && t.srcnode == walk.srcnode));
                    return;
                }
            } else {
                self.effects.push_back(DbEffect::SendControl {
                    destnode: walk.srcnode,
                    opcode: ControlOpcode::TraverseData,
                    data: rec.to_bytes(),
                });
            }
        }
    }
}
