//! The controls a database recovery runs on a frozen database: the recovery transaction
//! (mirrors `server/ctdb_freeze.c`), WIPE_DATABASE, DB_PULL and the DB push
//! (mirrors `server/ctdb_recover.c`).

use super::{
    DatabaseSet, DbContext, DbControlOutcome, DbEffect, DbReply, DbRequest, FreezeMode, PushState,
};
use crate::protocol::basic::{PullError, Reader};
use crate::protocol::ltdb::LtdbHeader;
use crate::protocol::ltdb::{LTDB_HEADER_LEN, REC_RO_FLAGS};
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::types::{PulldbExt, Transdb, REC_DATA_HEADER_LEN};
use crate::protocol::Marshal;

/// A buffer of pulled records (`ctdb_marshall_buffer`), encoded in place as it grows: the
/// 8-byte head (db_id, count) first, the count filled in by [`PullBuffer::finish`]. Each record
/// is copied once, from the traverse straight into the message.
struct PullBuffer {
    count: u32,
    bytes: Vec<u8>,
}

impl PullBuffer {
    fn new(db_id: u32, capacity: usize) -> Self {
        let mut bytes = Vec::with_capacity(capacity);
        bytes.extend_from_slice(&db_id.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        PullBuffer { count: 0, bytes }
    }

    /// Size as `talloc_get_size` sees it: the 8-byte head and the records.
    fn size(&self) -> usize {
        self.bytes.len()
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

    fn finish(mut self) -> Vec<u8> {
        if let Some(count) = self.bytes.get_mut(4..8) {
            count.copy_from_slice(&self.count.to_ne_bytes());
        }
        self.bytes
    }
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
                    self.db_pull(pulldb, req.srcnode, ctx)
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
    fn db_pull(&mut self, p: PulldbExt, srcnode: u32, ctx: &DbContext<'_>) -> DbReply {
        let limit = ctx.tunables.rec_buffer_size_limit() as usize;
        let Some(db) = self.get_mut(p.db_id) else {
            log::error!("Unknown db 0x{:08x}", p.db_id);
            return DbReply::fail();
        };
        if db.freeze_mode != FreezeMode::Frozen {
            log::error!("rejecting ctdb_control_pull_db when not frozen");
            return DbReply::fail();
        }
        if let Some(reason) = &db.unhealthy_reason {
            log::warn!("db({}) unhealty in ctdb_control_db_pull: {reason}", db.name);
        }
        let mut messages = Vec::new();
        let mut num_records: u32 = 0;
        if !db.invalid_records {
            if let Err(e) = db.store.mark_locked() {
                log::error!("Failed to get lock on entire db - failing: {e}");
                return DbReply::fail();
            }
            let db_id = db.db_id;
            // Room for the limit and a typical record beyond it, so a buffer never regrows.
            let capacity = limit.saturating_add(1024);
            let mut buffer = PullBuffer::new(db_id, capacity);
            let traversed = db.store.traverse_read(&mut |key, value| {
                buffer.add(key, value);
                if buffer.size() >= limit {
                    let full = std::mem::replace(&mut buffer, PullBuffer::new(db_id, capacity));
                    num_records += full.count;
                    messages.push(full.finish());
                }
            });
            if let Err(e) = traversed {
                log::error!("Failed to get traverse db '{}': {e}", db.name);
                let _ = db.store.unmark_locked();
                return DbReply::fail();
            }
            if buffer.count > 0 {
                num_records += buffer.count;
                messages.push(buffer.finish());
            }
            let _ = db.store.unmark_locked();
        }
        for data in messages {
            self.effects.push_back(DbEffect::SendMessage {
                pnn: srcnode,
                srvid: p.srvid,
                data,
            });
        }
        DbReply::data(num_records.to_ne_bytes().to_vec())
    }

    /// DB_PUSH_START: records sent to `srvid` from now on are stored into the recovery
    /// transaction (see [`DatabaseSet::on_message`]).
    fn db_push_start(&mut self, p: PulldbExt) -> DbReply {
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
