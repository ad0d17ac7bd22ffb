//! The controls a database recovery runs on a frozen database: the recovery transaction
//! (mirrors `server/ctdb_freeze.c`), WIPE_DATABASE, DB_PULL and the DB push
//! (mirrors `server/ctdb_recover.c`).

use super::storage::ChainStep;
use super::traverse::{TraverseSink, TRAVERSE_RETRY_INTERVAL};
use super::{
    DatabaseSet, DbContext, DbControlOutcome, DbEffect, DbReply, DbRequest, DeferredId, FreezeMode,
    PushState,
};
use crate::common::clock::Instant;
use crate::protocol::basic::{PullError, Reader};
use crate::protocol::ltdb::LtdbHeader;
use crate::protocol::ltdb::{LTDB_HEADER_LEN, REC_RO_FLAGS};
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::packet::MessageBuffer;
use crate::protocol::types::{PulldbExt, Transdb, REC_DATA_HEADER_LEN};
use crate::protocol::Marshal;
use crate::server::effect::Pnn;

/// A buffer of pulled records (`ctdb_marshall_buffer`), encoded in place as it grows: the
/// 8-byte head (db_id, count) first, the count filled in by [`PullBuffer::finish`]. Each record
/// is copied once, from the traverse straight into the message, which becomes the frame sent.
#[derive(Debug)]
struct PullBuffer {
    count: u32,
    bytes: MessageBuffer,
}

impl PullBuffer {
    fn new(db_id: u32, capacity: usize) -> Self {
        let mut bytes = MessageBuffer::with_capacity(capacity);
        bytes.extend_from_slice(&db_id.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        PullBuffer { count: 0, bytes }
    }

    /// Size as `talloc_get_size` sees it: the 8-byte head and the records.
    fn size(&self) -> usize {
        self.bytes.payload_len()
    }

    /// Appends one `ctdb_rec_data` (reqid 0), as `RecData::push` encodes it.
    fn add(&mut self, key: &[u8], value: &[u8]) {
        let length = REC_DATA_HEADER_LEN + key.len() + value.len();
        let out = &mut self.bytes;
        out.reserve(length);
        for word in [length, 0, key.len(), value.len()] {
            out.extend_from_slice(&u32::try_from(word).unwrap_or(u32::MAX).to_ne_bytes());
        }
        out.extend_from_slice(key);
        out.extend_from_slice(value);
        self.count += 1;
    }

    fn finish(mut self) -> MessageBuffer {
        if let Some(count) = self.bytes.payload_mut().get_mut(4..8) {
            count.copy_from_slice(&self.count.to_ne_bytes());
        }
        self.bytes
    }
}

/// Records a DB_PULL walks per step before it lets the event loop serve others.
pub const PULL_STEP_RECORDS: usize = 4096;

/// Room for the limit and a typical record beyond it, so a message never regrows.
fn pull_capacity(limit: usize) -> usize {
    limit.saturating_add(1024)
}

/// A DB_PULL whose records are still being read (`DatabaseSet::db_pull`).
#[derive(Debug)]
pub(super) struct PullWalk {
    id: DeferredId,
    db_id: u32,
    srvid: u64,
    srcnode: Pnn,
    next_chain: u32,
    /// Records in the messages queued so far.
    sent: u32,
    /// The message being filled.
    buffer: PullBuffer,
    pub(super) due: Instant,
    /// As [`super::traverse`]'s walks: congested at the last try, goes on as soon as the
    /// reader catches up.
    pub(super) waiting_for_reader: bool,
}

/// The records of a `ctdb_marshall_buffer` as borrowed (key, data) slices, checked with the
/// rules of `RecBuffer::pull` before anything is handed out, so that a malformed buffer is
/// rejected as a whole without copying a valid one.
struct RecordsView<'a> {
    db_id: u32,
    count: u32,
    records: &'a [u8],
}

impl<'a> RecordsView<'a> {
    fn parse(buf: &'a [u8]) -> Result<Self, PullError> {
        let mut r = Reader::new(buf);
        let db_id = r.u32()?;
        let count = r.u32()?;
        let view = RecordsView {
            db_id,
            count,
            records: buf.get(r.pos()..).unwrap_or(&[]),
        };
        for record in view.iter() {
            record?;
        }
        Ok(view)
    }

    fn iter(&self) -> impl Iterator<Item = Result<(&'a [u8], &'a [u8]), PullError>> + 'a {
        let mut r = Reader::new(self.records);
        let mut left = self.count;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            let record = next_record(&mut r);
            if record.is_err() {
                left = 0;
            }
            Some(record)
        })
    }
}

/// The next `ctdb_rec_data` as (key, data); the rules are `RecData::pull`'s.
fn next_record<'a>(r: &mut Reader<'a>) -> Result<(&'a [u8], &'a [u8]), PullError> {
    let length = r.u32()? as usize;
    let _reqid = r.u32()?;
    let keylen = r.u32()? as usize;
    let datalen = r.u32()? as usize;
    let expected = REC_DATA_HEADER_LEN
        .checked_add(keylen)
        .and_then(|n| n.checked_add(datalen));
    if expected != Some(length) {
        return Err(PullError::BadLength {
            what: "rec_data length",
            value: length,
        });
    }
    Ok((r.bytes(keylen)?, r.bytes(datalen)?))
}

impl DatabaseSet {
    pub(super) fn recovery_control(
        &mut self,
        now: Instant,
        req: &DbRequest<'_>,
        ctx: &DbContext<'_>,
    ) -> DbControlOutcome {
        use ControlOpcode as Op;
        let data = req.data;
        let reply = match req.opcode {
            Op::DbTransactionStart | Op::DbTransactionCommit | Op::WipeDatabase => {
                let Ok(transdb) = Transdb::from_bytes_exact(data) else {
                    return super::invalid_size(req.opcode, data.len(), Transdb::WIRE_LEN);
                };
                match req.opcode {
                    Op::DbTransactionStart => self.transaction_start(transdb),
                    Op::DbTransactionCommit => self.transaction_commit(transdb, ctx),
                    _ => self.wipe_database(transdb),
                }
            }
            Op::DbPull | Op::DbPushStart => {
                let Ok(pulldb) = PulldbExt::from_bytes_exact(data) else {
                    return super::invalid_size(req.opcode, data.len(), PulldbExt::WIRE_LEN);
                };
                if req.opcode == Op::DbPull {
                    return self.db_pull(now, pulldb, req.srcnode, ctx);
                } else {
                    self.db_push_start(pulldb)
                }
            }
            Op::DbTransactionCancel | Op::DbPushConfirm => {
                let Some(db_id) = super::exact_u32(data) else {
                    return super::invalid_size(req.opcode, data.len(), 4);
                };
                if req.opcode == Op::DbTransactionCancel {
                    self.transaction_cancel(db_id)
                } else {
                    self.db_push_confirm(db_id)
                }
            }
            _ => return DbControlOutcome::NotMine,
        };
        DbControlOutcome::Reply(reply)
    }

    /// DB_TRANSACTION_START: the database must be frozen; a previous recovery transaction is
    /// cancelled first.
    fn transaction_start(&mut self, t: Transdb) -> DbReply {
        self.abort_pulls(t.db_id);
        let Some(db) = self.get_mut(t.db_id) else {
            log::error!("Transaction start for unknown dbid 0x{:08x}", t.db_id);
            return DbReply::fail();
        };
        if db.freeze_mode != FreezeMode::Frozen {
            log::error!("Database {} not frozen, cannot start transaction", db.name);
            return DbReply::fail();
        }
        match db.store.freeze_transaction_start() {
            Ok(()) => {
                db.freeze_transaction = Some(t.tid);
                DbReply::status(0)
            }
            Err(e) => {
                log::error!("Failed to start transaction for db {}: {e}", db.name);
                db.freeze_transaction = None;
                DbReply::fail()
            }
        }
    }

    /// DB_TRANSACTION_COMMIT: same tid as the start; the database takes the tid as its
    /// generation (what SET_RECMODE(NORMAL) checks).
    fn transaction_commit(&mut self, t: Transdb, ctx: &DbContext<'_>) -> DbReply {
        self.abort_pulls(t.db_id);
        let Some(index) = self.index_of(t.db_id) else {
            log::error!("Transaction commit for unknown dbid 0x{:08x}", t.db_id);
            return DbReply::fail();
        };
        let db = &mut self.dbs[index];
        if db.freeze_mode != FreezeMode::Frozen {
            log::error!("Database {} not frozen, cannot commit transaction", db.name);
            return DbReply::fail();
        }
        let Some(tid) = db.freeze_transaction else {
            log::error!("Transaction not started on {}", db.name);
            return DbReply::fail();
        };
        if tid != t.tid {
            log::error!(
                "Incorrect transaction commit id 0x{:08x} for {}",
                t.tid,
                db.name
            );
            return DbReply::fail();
        }
        let committed = db.store.freeze_transaction_commit();
        // libtdb ends the transaction whether or not the commit worked.
        db.freeze_transaction = None;
        if let Err(e) = committed {
            log::error!("Failed to commit transaction for db {}: {e}", db.name);
            return DbReply::fail();
        }
        if let Err(e) = self.update_health(index, None, ctx.healthy_nodes) {
            log::error!(
                "Failed to update persistent health for db {}: {e}",
                self.dbs[index].name
            );
            return DbReply::fail();
        }
        self.dbs[index].generation = t.tid;
        DbReply::status(0)
    }

    /// DB_TRANSACTION_CANCEL: succeeds even when there is nothing to cancel, as in stock.
    fn transaction_cancel(&mut self, db_id: u32) -> DbReply {
        self.abort_pulls(db_id);
        let Some(db) = self.get_mut(db_id) else {
            log::error!("Transaction cancel for unknown dbid 0x{db_id:08x}");
            return DbReply::fail();
        };
        log::error!("Recovery db transaction cancelled for {}", db.name);
        if let Err(e) = db.store.freeze_transaction_cancel() {
            log::error!("Failed to cancel transaction for db {}: {e}", db.name);
        }
        db.freeze_transaction = None;
        DbReply::status(0)
    }

    /// WIPE_DATABASE: inside the recovery transaction with the same tid.
    fn wipe_database(&mut self, t: Transdb) -> DbReply {
        self.abort_pulls(t.db_id);
        let Some(db) = self.get_mut(t.db_id) else {
            log::error!("Unknown db 0x{:x}", t.db_id);
            return DbReply::fail();
        };
        if db.freeze_mode != FreezeMode::Frozen {
            log::error!("Failed transaction_start while not frozen");
            return DbReply::fail();
        }
        let Some(tid) = db.freeze_transaction else {
            log::error!("transaction not started");
            return DbReply::fail();
        };
        if tid != t.tid {
            log::error!("incorrect transaction id 0x{:x} in commit", t.tid);
            return DbReply::fail();
        }
        if let Err(e) = db.store.wipe_all() {
            log::error!("Failed to wipe database for db '{}': {e}", db.name);
            return DbReply::fail();
        }
        let abandoned = if db.is_volatile() {
            db.vacuum.clear()
        } else {
            Vec::new()
        };
        for id in abandoned {
            self.complete(id, DbReply::fail());
        }
        DbReply::status(0)
    }

    /// DB_PULL: every record, as `rec_buffer` messages to `srvid` on the requesting node, each
    /// sent once it reaches `RecBufferSizeLimit` bytes (so it may exceed the limit by one
    /// record) and a last one for the rest; the reply is the number of records sent.
    ///
    /// Stock walks the whole file before it sends anything. Here the walk goes a few thousand
    /// records at a time ([`PULL_STEP_RECORDS`], first step at once, the rest from the timer):
    /// each finished message leaves while the walk goes on, so the recovery helper merges one
    /// message while the next is read, and a slow reader holds the walk back
    /// ([`DatabaseSet::handle_timeout_paced`]) instead of piling the whole database up in its
    /// queue. The messages, their cut points and the reply are the same as stock's.
    fn db_pull(
        &mut self,
        now: Instant,
        p: PulldbExt,
        srcnode: u32,
        ctx: &DbContext<'_>,
    ) -> DbControlOutcome {
        let Some(db) = self.get_mut(p.db_id) else {
            log::error!("Unknown db 0x{:08x}", p.db_id);
            return DbControlOutcome::Reply(DbReply::fail());
        };
        if db.freeze_mode != FreezeMode::Frozen {
            log::error!("rejecting ctdb_control_pull_db when not frozen");
            return DbControlOutcome::Reply(DbReply::fail());
        }
        if let Some(reason) = &db.unhealthy_reason {
            log::warn!("db({}) unhealty in ctdb_control_db_pull: {reason}", db.name);
        }
        if db.invalid_records {
            return DbControlOutcome::Reply(DbReply::data(0u32.to_ne_bytes().to_vec()));
        }
        let limit = ctx.tunables.rec_buffer_size_limit() as usize;
        let mut walk = PullWalk {
            id: self.alloc_deferred(),
            db_id: p.db_id,
            srvid: p.srvid,
            srcnode,
            next_chain: 0,
            sent: 0,
            buffer: PullBuffer::new(p.db_id, pull_capacity(limit)),
            due: now,
            waiting_for_reader: false,
        };
        match self.pull_step(&mut walk, limit) {
            Err(()) => DbControlOutcome::Reply(DbReply::fail()),
            Ok(true) => DbControlOutcome::Reply(DbReply::data(walk.sent.to_ne_bytes().to_vec())),
            Ok(false) => {
                let id = walk.id;
                self.pulls.push(walk);
                DbControlOutcome::Deferred(id)
            }
        }
    }

    /// One step of `walk`: at least [`PULL_STEP_RECORDS`] records (whole hash chains) into
    /// messages. True when the walk is over and every message is queued; an error (logged)
    /// when the database went away or was thawed, or the walk failed.
    fn pull_step(&mut self, walk: &mut PullWalk, limit: usize) -> Result<bool, ()> {
        let Some(index) = self.index_of(walk.db_id) else {
            log::error!("Database 0x{:08x} went away during DB_PULL", walk.db_id);
            return Err(());
        };
        let db = &mut self.dbs[index];
        if db.freeze_mode != FreezeMode::Frozen {
            log::error!("Database {} thawed during DB_PULL", db.name);
            return Err(());
        }
        let mut messages = Vec::new();
        let db_id = walk.db_id;
        let step = db
            .store
            .pull_chains(walk.next_chain, PULL_STEP_RECORDS, &mut |key, value| {
                walk.buffer.add(key, value);
                if walk.buffer.size() >= limit {
                    let full = std::mem::replace(
                        &mut walk.buffer,
                        PullBuffer::new(db_id, pull_capacity(limit)),
                    );
                    walk.sent += full.count;
                    messages.push(full.finish());
                }
            });
        let finished = match step {
            Ok(ChainStep::More(next)) => {
                walk.next_chain = next;
                false
            }
            Ok(ChainStep::Done) => true,
            Ok(ChainStep::Busy) => false,
            Err(e) => {
                if walk.next_chain == 0 {
                    log::error!("Failed to get lock on entire db - failing: {e}");
                } else {
                    log::error!("Failed to get traverse db '{}': {e}", db.name);
                }
                return Err(());
            }
        };
        if finished && walk.buffer.count > 0 {
            let last = std::mem::replace(&mut walk.buffer, PullBuffer::new(db_id, 0));
            walk.sent += last.count;
            messages.push(last.finish());
        }
        for data in messages {
            self.effects.push_back(DbEffect::SendMessage {
                pnn: walk.srcnode,
                srvid: walk.srvid,
                data,
            });
        }
        Ok(finished)
    }

    /// Fails the pulls still walking `db_id`: whatever comes next (a new transaction, a wipe,
    /// a push, the end of the transaction) changes what they would read. No helper, ours or
    /// stock's, does that before its pulls are answered; a walk left over from a helper that
    /// died must not go on under the next one.
    fn abort_pulls(&mut self, db_id: u32) {
        let (stale, kept): (Vec<PullWalk>, Vec<PullWalk>) = std::mem::take(&mut self.pulls)
            .into_iter()
            .partition(|walk| walk.db_id == db_id);
        self.pulls = kept;
        for walk in stale {
            log::error!("DB_PULL of db 0x{db_id:08x} abandoned: the recovery moved on");
            self.complete(walk.id, DbReply::fail());
        }
    }

    /// Where a pull's messages queue up: the requesting node's link, or this node's clients
    /// registered for the srvid.
    fn pull_sink(&self, walk: &PullWalk) -> TraverseSink {
        if walk.srcnode == self.config.pnn {
            TraverseSink::Srvid(walk.srvid)
        } else {
            TraverseSink::Node(walk.srcnode)
        }
    }

    /// The srvids whose local readers pace a running pull.
    pub fn local_pull_srvids(&self) -> Vec<u64> {
        self.pulls
            .iter()
            .filter(|w| w.srcnode == self.config.pnn)
            .map(|w| w.srvid)
            .collect()
    }

    /// Timer work: one step of every due pull whose reader keeps up.
    pub(super) fn pull_timeout(
        &mut self,
        now: Instant,
        ctx: &DbContext<'_>,
        congested: &dyn Fn(TraverseSink) -> bool,
    ) {
        let limit = ctx.tunables.rec_buffer_size_limit() as usize;
        let walks = std::mem::take(&mut self.pulls);
        for mut walk in walks {
            if now < walk.due && !walk.waiting_for_reader {
                self.pulls.push(walk);
                continue;
            }
            walk.waiting_for_reader = congested(self.pull_sink(&walk));
            if walk.waiting_for_reader {
                walk.due = now.saturating_add(TRAVERSE_RETRY_INTERVAL);
                self.pulls.push(walk);
                continue;
            }
            match self.pull_step(&mut walk, limit) {
                Ok(false) => {
                    walk.due = now;
                    self.pulls.push(walk);
                }
                Ok(true) => {
                    let reply = DbReply::data(walk.sent.to_ne_bytes().to_vec());
                    self.complete(walk.id, reply);
                }
                Err(()) => self.complete(walk.id, DbReply::fail()),
            }
        }
    }

    /// DB_PUSH_START: records sent to `srvid` from now on are stored into the recovery
    /// transaction (see [`DatabaseSet::on_message`]).
    fn db_push_start(&mut self, p: PulldbExt) -> DbReply {
        self.abort_pulls(p.db_id);
        let Some(db) = self.get_mut(p.db_id) else {
            log::error!("Unknown db 0x{:08x}", p.db_id);
            return DbReply::fail();
        };
        if db.freeze_mode != FreezeMode::Frozen {
            log::error!("rejecting ctdb_control_db_push_start when not frozen");
            return DbReply::fail();
        }
        if db.push.take().is_some() {
            log::warn!("DB push already started for {}", db.name);
        }
        if let Err(e) = db.store.mark_locked() {
            log::error!("Failed to get lock on entire db - failing: {e}");
            return DbReply::fail();
        }
        db.push = Some(PushState {
            srvid: p.srvid,
            num_records: 0,
            failed: false,
        });
        DbReply::status(0)
    }

    /// DB_PUSH_CONFIRM: ends the push; the reply is the number of records stored (records of
    /// a buffer that failed half-way are not counted).
    fn db_push_confirm(&mut self, db_id: u32) -> DbReply {
        let Some(db) = self.get_mut(db_id) else {
            log::error!("Unknown db 0x{db_id:08x}");
            return DbReply::fail();
        };
        if db.freeze_mode != FreezeMode::Frozen {
            log::error!("rejecting ctdb_control_db_push_confirm when not frozen");
            return DbReply::fail();
        }
        let Some(push) = db.push.take() else {
            log::error!("DB push not started");
            return DbReply::fail();
        };
        // A recovery revokes every delegation, so the tracking database starts empty again.
        if let Some(tracking) = db.readonly_tracking.as_mut() {
            log::error!("Clearing the tracking database for dbid 0x{:x}", db.db_id);
            if let Err(e) = tracking.wipe_all() {
                log::error!(
                    "Failed to wipe tracking database for 0x{:x}. Dropping read-only delegation support: {e}",
                    db.db_id
                );
                db.readonly_tracking = None;
                db.flags &= !crate::protocol::types::db_flags::READONLY;
            }
        }
        let _ = db.store.unmark_locked();
        DbReply::data(push.num_records.to_ne_bytes().to_vec())
    }

    /// Whether a DB push started with `srvid` is waiting for record buffers.
    pub fn push_waits_for(&self, srvid: u64) -> bool {
        self.dbs
            .iter()
            .any(|db| db.push.is_some_and(|push| push.srvid == srvid))
    }

    /// A REQ_MESSAGE for this node (from a client or another node). Returns whether a DB push
    /// was waiting for `srvid`; the daemon still delivers the message to any client registered
    /// for it, as stock's single srvid table does.
    pub fn on_message(&mut self, srvid: u64, data: &[u8], ctx: &DbContext<'_>) -> bool {
        let pnn = self.config.pnn;
        let mut matched = false;
        for db in &mut self.dbs {
            let Some(mut push) = db.push else {
                continue;
            };
            if push.srvid != srvid {
                continue;
            }
            matched = true;
            if push.failed {
                continue;
            }
            match RecordsView::parse(data) {
                Ok(buffer) => {
                    log::info!(
                        "starting push of {} records for dbid 0x{:x}",
                        buffer.count,
                        buffer.db_id
                    );
                    let mut ok = true;
                    for (key, data) in buffer.iter().flatten() {
                        let Ok((mut header, _)) = LtdbHeader::pull(data) else {
                            log::error!("bad ltdb record");
                            ok = false;
                            break;
                        };
                        // A recovery revokes every read-only delegation.
                        header.flags &= !REC_RO_FLAGS;
                        let value = data.get(LTDB_HEADER_LEN..).unwrap_or(&[]);
                        if let Err(e) = db.ltdb_store_updating(pnn, ctx, key, &mut header, value) {
                            log::error!("Unable to store record: {e}");
                            ok = false;
                            break;
                        }
                    }
                    if ok {
                        push.num_records = push.num_records.wrapping_add(buffer.count);
                    } else {
                        push.failed = true;
                    }
                }
                Err(e) => {
                    log::error!("Invalid record buffer for the DB push of {}: {e}", db.name);
                    push.failed = true;
                }
            }
            db.push = Some(push);
        }
        matched
    }
}
