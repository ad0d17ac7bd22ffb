//! Read-only delegations and sticky records (mirrors the `CTDB_WANT_READONLY` paths of
//! `ctdb_request_call`, `ctdb_reply_call` and `daemon_request_call_from_client`, the revoke
//! child `ctdb_start_revoke_ro_record` / `ctdb_revoke_all_delegations` and the sticky-record
//! functions of `ctdb/server/ctdb_call.c`).
//!
//! A node asking the dmaster of a record in a READONLY database for a read-only copy gets
//! the header and data in a REPLY_CALL; the dmaster keeps the record, marks it
//! `HAVE_DELEGATIONS` and sets the requester's bit in the tracking database `<db>.RO`. The
//! requester stores the copy with `HAVE_READONLY`, and its clients read it under the chain
//! lock without migrating.
//!
//! Any other request for such a record first revokes the delegations: the dmaster marks the
//! record `REVOKING_READONLY`, sends UPDATE_RECORD with a plain header (the copy stops being
//! read-only) to every tracked node, and on success marks it `REVOKE_COMPLETE`; the next
//! request that sees that flag clears the read-only flags and the tracking record and goes
//! on normally. Requests that meet `REVOKING_READONLY` wait for the revoke; afterwards write
//! requests run at once and read-only ones one second later, as in stock.
//!
//! Differences from stock: the revoke runs inside the daemon's event loop (its UPDATE_RECORDs
//! are ordinary node controls and its replies arrive through
//! [`CallService::on_control_reply`]) instead of in a forked child; a revoke with no tracked
//! node completes at once (stock's child waits for ControlTimeout and fails); a record that
//! claims `REVOKING_READONLY` with no revoke in progress (stock aborts) starts a new revoke.
//!
//! Sticky records: a REQ_CALL with a hop count of at least HopcountMakeSticky makes its
//! record sticky on the node serving it for StickyDuration seconds; when such a node becomes
//! the record's dmaster again, the record is pinned down for StickyPindown milliseconds and
//! node requests for it wait until then.

use super::{CallOutput, CallService, Waiting, CHAIN_RETRY};
use crate::common::clock::Instant;
use crate::protocol::ltdb::{
    LtdbHeader, LTDB_HEADER_LEN, REC_FLAG_MIGRATED_WITH_DATA, REC_RO_FLAGS,
    REC_RO_HAVE_DELEGATIONS, REC_RO_HAVE_READONLY, REC_RO_REVOKE_COMPLETE,
    REC_RO_REVOKING_READONLY,
};
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::packet::{
    Body, Packet, ReplyCall, ReqCall, ReqControl, CALL_FLAG_WANT_READONLY, FETCH_FUNC,
    FETCH_WITH_HEADER_FUNC,
};
use crate::protocol::types::{RecBuffer, RecData};
use crate::protocol::Marshal;
use crate::server::database::{Database, DatabaseSet, DbContext};
use crate::server::effect::Pnn;
use std::collections::BTreeMap;
use std::time::Duration;

/// Read-only requests that waited for a successful revoke run this much later, so that the
/// writer the revoke was for gets the record first.
pub const READONLY_GRACE: Duration = Duration::from_secs(1);

type RecordKey = (u32, Vec<u8>);

/// Delegation and sticky-record state of the call service.
#[derive(Debug, Default)]
pub(super) struct ReadonlyState {
    /// The time of the entry point being processed.
    pub(super) now: Instant,
    revokes: BTreeMap<RecordKey, Revoke>,
    sticky: BTreeMap<RecordKey, StickyRecord>,
    /// Delegations handed out and revokes completed, by database
    /// (`db_ro_delegations` / `db_ro_revokes` of the statistics).
    counts: BTreeMap<u32, (u32, u32)>,
}

/// A revoke in progress (`struct revokechild_handle` plus `struct ctdb_revoke_state`).
#[derive(Debug)]
struct Revoke {
    /// The RSN the record is expected to have while revoking.
    rsn: u64,
    /// UPDATE_RECORD request ids not answered yet.
    waiting: Vec<u32>,
    failed: bool,
    /// When the revoke is looked at next: ControlTimeout at first, "now" once all replied.
    due: Instant,
    complete: bool,
    deferred: Vec<Waiting>,
}

#[derive(Debug, Default)]
struct StickyRecord {
    expires: Option<Instant>,
    pinned_until: Option<Instant>,
    deferred: Vec<Packet>,
}

/// What the read-only checks decided about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RoCheck {
    Proceed,
    /// The request waits for a revoke.
    Deferred,
}

/// The call the daemon runs for a client call: read-only requests fetch with the header.
pub(super) fn daemon_call(call: &ReqCall) -> ReqCall {
    let mut out = call.clone();
    if call.flags & CALL_FLAG_WANT_READONLY != 0 {
        out.callid = FETCH_WITH_HEADER_FUNC;
    }
    out
}

/// The reply data for the client: a read-only FETCH was run as FETCH_WITH_HEADER, whose
/// header the client did not ask for.
pub(super) fn client_reply_data(client_call: &ReqCall, data: Vec<u8>) -> Vec<u8> {
    if client_call.flags & CALL_FLAG_WANT_READONLY != 0 && client_call.callid == FETCH_FUNC {
        return data.get(LTDB_HEADER_LEN..).unwrap_or_default().to_vec();
    }
    data
}

/// Sets `pnn`'s bit in a tracking record (`ctdb_trackingdb_add_pnn`).
pub fn tracking_add(record: &mut Vec<u8>, pnn: Pnn) {
    let byte = (pnn / 8) as usize;
    if record.len() < byte + 1 {
        record.resize(byte + 1, 0);
    }
    if let Some(b) = record.get_mut(byte) {
        *b |= 1 << (pnn % 8);
    }
}

/// The nodes whose bits are set in a tracking record (`ctdb_trackingdb_traverse`).
pub fn tracking_nodes(record: &[u8]) -> Vec<Pnn> {
    let mut out = Vec::new();
    for (i, byte) in record.iter().enumerate() {
        for bit in 0..8u32 {
            if byte & (1 << bit) != 0 {
                out.push(i as u32 * 8 + bit);
            }
        }
    }
    out
}

/// The header the dmaster hands out with a delegation (`ctdb_request_call`): two RSNs below
/// its own, read-only, without the dmaster-side flag.
pub fn delegated_header(dmaster_header: &LtdbHeader) -> LtdbHeader {
    let mut h = *dmaster_header;
    h.rsn = h.rsn.wrapping_sub(2);
    h.flags |= REC_RO_HAVE_READONLY;
    h.flags &= !REC_RO_HAVE_DELEGATIONS;
    h
}

/// The header a revoke sends to the holders of read-only copies
/// (`ctdb_start_revoke_ro_record`): newer than their copies, no read-only flags.
pub fn revoke_header(dmaster_header: &LtdbHeader) -> LtdbHeader {
    let mut h = *dmaster_header;
    h.flags &= !(REC_RO_REVOKING_READONLY | REC_RO_HAVE_DELEGATIONS | REC_RO_HAVE_READONLY);
    h.flags |= REC_FLAG_MIGRATED_WITH_DATA;
    h.rsn = h.rsn.wrapping_sub(1);
    h
}

/// UPDATE_RECORD on a volatile database, which only revokes send: each record that exists
/// here is replaced when the new RSN is higher (or the data is the same). Stock writes in a
/// child that waits for the chain locks inside a transaction; the daemon must not wait for a
/// client holding a chain (a reader of a read-only copy, typically), so a busy chain fails
/// the update and the revoking node retries a second later. Without a transaction the
/// records of one buffer are not written atomically; a revoke sends a single record.
pub fn update_volatile(
    db: &mut Database,
    pnn: Pnn,
    ctx: &DbContext<'_>,
    buffer: &RecBuffer,
) -> i32 {
    for rec in &buffer.records {
        let Ok((mut header, _)) = LtdbHeader::pull(&rec.data) else {
            log::error!("UPDATE_RECORD on {}: bad record header", db.name());
            return -1;
        };
        let value = rec.data.get(LTDB_HEADER_LEN..).unwrap_or_default();
        match db.store_mut().chain_try_lock(&rec.key) {
            Ok(true) => {}
            Ok(false) => {
                log::info!("UPDATE_RECORD on {}: chain held by a client", db.name());
                return -1;
            }
            Err(e) => {
                log::error!("UPDATE_RECORD on {}: chain lock failed: {e}", db.name());
                return -1;
            }
        }
        let result = (|| -> Result<(), String> {
            let Some(old) = db.store_mut().fetch(&rec.key).map_err(|e| e.to_string())? else {
                return Ok(());
            };
            let (old_header, _) =
                LtdbHeader::pull(&old).map_err(|e| format!("bad local record: {e}"))?;
            let old_data = old.get(LTDB_HEADER_LEN..).unwrap_or_default();
            if old_header.rsn >= header.rsn && old_data != value {
                return Err(format!(
                    "old rsn {} >= new rsn {} with different data",
                    old_header.rsn, header.rsn
                ));
            }
            super::ltdb_store(db, pnn, ctx, &rec.key, &mut header, value).map_err(|e| e.to_string())
        })();
        if let Err(e) = db.store_mut().chain_unlock(&rec.key) {
            log::error!("Failed to unlock a chain of {}: {e}", db.name());
        }
        if let Err(e) = result {
            log::error!("UPDATE_RECORD on {} failed: {e}", db.name());
            return -1;
        }
    }
    0
}

fn wants_readonly(work: &Waiting) -> bool {
    match work {
        Waiting::Client { call, .. } => call.flags & CALL_FLAG_WANT_READONLY != 0,
        Waiting::Node(p) => {
            matches!(&p.body, Body::ReqCall(c) if c.flags & CALL_FLAG_WANT_READONLY != 0)
        }
    }
}

impl CallService {
    fn ro_now(&self) -> Instant {
        self.ro.now
    }

    /// The checks every record request makes after fetching the record: WANT_READONLY only
    /// on READONLY databases, clean-up after a completed revoke, and waiting for a running
    /// one. `work` rebuilds the request if it has to wait.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ro_prelude(
        &mut self,
        db: &mut Database,
        pnn: Pnn,
        ctx: &DbContext<'_>,
        call: &mut ReqCall,
        header: &mut LtdbHeader,
        data: &[u8],
        work: impl FnOnce(&ReqCall) -> Waiting,
    ) -> RoCheck {
        if call.flags & CALL_FLAG_WANT_READONLY != 0 && !db.is_readonly() {
            call.flags &= !CALL_FLAG_WANT_READONLY;
        }
        if header.flags & REC_RO_REVOKE_COMPLETE != 0 {
            let counts = self.ro.counts.entry(db.db_id()).or_default();
            counts.1 = counts.1.wrapping_add(1);
            header.flags &= !REC_RO_FLAGS;
            if let Err(e) = super::ltdb_store(db, pnn, ctx, &call.key, header, data) {
                log::error!("Failed to write header with cleared REVOKE flag: {e}");
            }
            if let Some(tracking) = db.readonly_tracking_mut() {
                if let Err(e) = tracking.delete(&call.key) {
                    if e.code != crate::common::tdb::TdbErrorCode::NoExist {
                        log::error!("Failed to clear out trackingdb record: {e}");
                    }
                }
            }
        }
        if header.flags & REC_RO_REVOKING_READONLY != 0 {
            let key = (db.db_id(), call.key.clone());
            let waiting = work(call);
            if let Some(revoke) = self.ro.revokes.get_mut(&key) {
                revoke.deferred.push(waiting);
            } else {
                log::error!("Record is being revoked but no revoke runs; revoking again");
                self.ro_start_revoke(db, pnn, ctx, &call.key, header, data, waiting);
            }
            return RoCheck::Deferred;
        }
        RoCheck::Proceed
    }

    /// A request that is not read-only, for a record with read-only copies out, revokes them
    /// first and waits.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ro_revoke_if_needed(
        &mut self,
        db: &mut Database,
        pnn: Pnn,
        ctx: &DbContext<'_>,
        call: &ReqCall,
        header: &mut LtdbHeader,
        data: &[u8],
        work: impl FnOnce(&ReqCall) -> Waiting,
    ) -> RoCheck {
        if call.flags & CALL_FLAG_WANT_READONLY != 0
            || header.flags & (REC_RO_HAVE_DELEGATIONS | REC_RO_HAVE_READONLY) == 0
        {
            return RoCheck::Proceed;
        }
        let waiting = work(call);
        self.ro_start_revoke(db, pnn, ctx, &call.key, header, data, waiting);
        RoCheck::Deferred
    }

    /// The dmaster's answer to a read-only request from another node: a delegation in a
    /// REPLY_CALL. Returns false when the request is not one.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ro_delegate(
        &mut self,
        db: &mut Database,
        pnn: Pnn,
        ctx: &DbContext<'_>,
        packet: &Packet,
        call: &ReqCall,
        header: &mut LtdbHeader,
        data: &[u8],
    ) -> bool {
        if call.flags & CALL_FLAG_WANT_READONLY == 0 || call.callid != FETCH_WITH_HEADER_FUNC {
            return false;
        }
        if header.flags & REC_RO_HAVE_DELEGATIONS == 0 {
            header.rsn = header.rsn.wrapping_add(3);
            header.flags |= REC_RO_HAVE_DELEGATIONS;
            if let Err(e) = super::ltdb_store(db, pnn, ctx, &call.key, header, data) {
                log::error!("Failed to store record with HAVE_DELEGATIONS set: {e}");
            }
        }
        if let Some(tracking) = db.readonly_tracking_mut() {
            let mut record = match tracking.fetch(&call.key) {
                Ok(r) => r.unwrap_or_default(),
                Err(e) => {
                    log::error!("Failed to read the tracking record: {e}");
                    Vec::new()
                }
            };
            tracking_add(&mut record, packet.srcnode);
            if let Err(e) = tracking.store(&call.key, &[&record]) {
                log::error!("Failed to store trackingdb data: {e}");
            }
        }
        let mut reply = delegated_header(header).to_bytes();
        reply.extend_from_slice(data);
        let out = Packet {
            generation: db.generation(),
            destnode: packet.srcnode,
            srcnode: pnn,
            reqid: packet.reqid,
            body: Body::ReplyCall(ReplyCall {
                status: 0,
                data: reply,
            }),
        };
        self.out.push_back(CallOutput::Node {
            pnn: packet.srcnode,
            packet: out,
        });
        let counts = self.ro.counts.entry(db.db_id()).or_default();
        counts.0 = counts.0.wrapping_add(1);
        true
    }

    /// Read-only delegations handed out and revokes completed by this node, for one
    /// database or (with `None`) in total, for the statistics controls.
    pub fn readonly_counts(&self, db_id: Option<u32>) -> (u32, u32) {
        self.ro
            .counts
            .iter()
            .filter(|(id, _)| db_id.is_none_or(|want| **id == want))
            .fold((0, 0), |(d, r), (_, c)| {
                (d.wrapping_add(c.0), r.wrapping_add(c.1))
            })
    }

    /// `ctdb_start_revoke_ro_record` (with the REVOKING flag stored first, as its callers
    /// do): UPDATE_RECORD to every node holding a copy.
    #[allow(clippy::too_many_arguments)]
    fn ro_start_revoke(
        &mut self,
        db: &mut Database,
        pnn: Pnn,
        ctx: &DbContext<'_>,
        key: &[u8],
        header: &mut LtdbHeader,
        data: &[u8],
        first: Waiting,
    ) {
        header.flags |= REC_RO_REVOKING_READONLY;
        if let Err(e) = super::ltdb_store(db, pnn, ctx, key, header, data) {
            log::error!("Failed to store record with REVOKING set: {e}");
        }
        let holders = match db.readonly_tracking_mut().map(|t| t.fetch(key)) {
            Some(Ok(Some(record))) => tracking_nodes(&record),
            Some(Err(e)) => {
                log::error!("Failed to read the tracking record: {e}");
                Vec::new()
            }
            _ => Vec::new(),
        };
        let sent = revoke_header(header);
        let buffer = RecBuffer {
            db_id: db.db_id(),
            records: vec![RecData::with_header(0, &sent, key, data)],
        };
        let payload = buffer.to_bytes();
        let now = self.ro_now();
        let mut waiting = Vec::new();
        for holder in holders {
            if holder == pnn {
                continue;
            }
            let reqid = self.alloc_reqid();
            waiting.push(reqid);
            let packet = Packet {
                generation: ctx.vnn_map.generation,
                destnode: holder,
                srcnode: pnn,
                reqid,
                body: Body::ReqControl(ReqControl {
                    opcode: ControlOpcode::UpdateRecord,
                    srvid: 0,
                    client_id: 0,
                    flags: 0,
                    data: payload.clone(),
                }),
            };
            self.out.push_back(CallOutput::Node {
                pnn: holder,
                packet,
            });
        }
        let timeout = Duration::from_secs(u64::from(ctx.tunables.control_timeout()));
        let due = if waiting.is_empty() {
            now
        } else {
            now.saturating_add(timeout)
        };
        let complete = waiting.is_empty();
        let entry = (db.db_id(), key.to_vec());
        let mut deferred = vec![first];
        if let Some(old) = self.ro.revokes.remove(&entry) {
            deferred.extend(old.deferred);
        }
        self.ro.revokes.insert(
            entry,
            Revoke {
                rsn: header.rsn,
                waiting,
                failed: false,
                due,
                complete,
                deferred,
            },
        );
    }

    /// A REPLY_CONTROL for one of the revokes' UPDATE_RECORDs; false when it is not ours.
    pub(super) fn ro_control_reply(&mut self, reqid: u32, status: i32) -> bool {
        let now = self.ro_now();
        let Some(revoke) = self
            .ro
            .revokes
            .values_mut()
            .find(|r| r.waiting.contains(&reqid))
        else {
            return false;
        };
        if status != 0 {
            log::error!("Recv for revoke update record failed res:{status}");
            revoke.failed = true;
        }
        revoke.waiting.retain(|&r| r != reqid);
        if revoke.waiting.is_empty() {
            revoke.complete = true;
            revoke.due = now;
        }
        true
    }

    /// A REPLY_CALL that may carry a delegation for us (`ctdb_reply_call`): stored when it
    /// is newer than our copy. False when the record's chain is held by a client; the packet
    /// must then be retried.
    pub(super) fn ro_store_delegation(&mut self, dbs: &mut DatabaseSet, packet: &Packet) -> bool {
        let Body::ReplyCall(reply) = &packet.body else {
            return true;
        };
        let Some(pending) = self.pending.get(&packet.reqid) else {
            return true;
        };
        if daemon_call(&pending.call).callid != FETCH_WITH_HEADER_FUNC {
            return true;
        }
        let Ok((header, _)) = LtdbHeader::pull(&reply.data) else {
            return true;
        };
        if header.flags & REC_RO_HAVE_READONLY == 0 {
            return true;
        }
        let (db_id, key) = (pending.call.db_id, pending.call.key.clone());
        let Some(db) = dbs.get_mut(db_id) else {
            return true;
        };
        if !db.allow_access() {
            return true;
        }
        match db.store_mut().chain_try_lock(&key) {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                log::error!("Failed to get lock in ctdb_reply_call: {e}");
                return true;
            }
        }
        let old_rsn = match db.store_mut().fetch(&key) {
            Ok(Some(v)) => LtdbHeader::pull(&v).map(|(h, _)| h.rsn).unwrap_or(0),
            Ok(None) => 0,
            Err(e) => {
                log::error!("Failed to fetch old record in ctdb_reply_call: {e}");
                u64::MAX
            }
        };
        if header.rsn > old_rsn {
            let data = reply.data.get(LTDB_HEADER_LEN..).unwrap_or_default();
            let head = header.to_bytes();
            if let Err(e) = db.store_mut().store(&key, &[&head, data]) {
                log::error!("Failed to store new record in ctdb_reply_call: {e}");
            }
        }
        if let Err(e) = db.store_mut().chain_unlock(&key) {
            log::error!("Failed to unlock a chain of {}: {e}", db.name());
        }
        true
    }

    /// `ctdb_defer_pinned_down_request`: true when the request waits for a pin-down.
    pub(super) fn ro_pinned_down(&mut self, db: &Database, packet: &Packet, key: &[u8]) -> bool {
        if !db.is_sticky() {
            return false;
        }
        let now = self.ro_now();
        let Some(sticky) = self.ro.sticky.get_mut(&(db.db_id(), key.to_vec())) else {
            return false;
        };
        if sticky.pinned_until.is_some_and(|until| now < until) {
            log::warn!("Defer request for pinned down record in {}", db.name());
            sticky.deferred.push(packet.clone());
            return true;
        }
        false
    }

    /// `ctdb_make_record_sticky` for a request that travelled far.
    pub(super) fn ro_note_hopcount(&mut self, db: &Database, ctx: &DbContext<'_>, call: &ReqCall) {
        if !db.is_sticky() || call.hopcount < ctx.tunables.hopcount_make_sticky() {
            return;
        }
        let now = self.ro_now();
        let entry = (db.db_id(), call.key.clone());
        if self.ro.sticky.contains_key(&entry) {
            return;
        }
        let duration = Duration::from_secs(u64::from(ctx.tunables.sticky_duration()));
        log::error!(
            "Make record sticky for {} seconds in db {}",
            duration.as_secs(),
            db.name()
        );
        self.ro.sticky.insert(
            entry,
            StickyRecord {
                expires: Some(now.saturating_add(duration)),
                ..StickyRecord::default()
            },
        );
    }

    /// `ctdb_set_sticky_pindown`, after this node became the dmaster.
    pub(super) fn ro_became_dmaster(&mut self, db: &Database, ctx: &DbContext<'_>, key: &[u8]) {
        if !db.is_sticky() {
            return;
        }
        let now = self.ro_now();
        let Some(sticky) = self.ro.sticky.get_mut(&(db.db_id(), key.to_vec())) else {
            return;
        };
        if sticky.pinned_until.is_none() {
            let pindown = ctx.tunables.sticky_pindown();
            log::error!("Pinning down record in {} for {pindown} ms", db.name());
            sticky.pinned_until =
                Some(now.saturating_add(Duration::from_millis(u64::from(pindown))));
        }
    }

    pub(super) fn ro_poll_timeout(&self) -> Option<Instant> {
        let revokes = self.ro.revokes.values().map(|r| r.due);
        let sticky = self
            .ro
            .sticky
            .values()
            .flat_map(|s| [s.pinned_until, s.expires].into_iter().flatten());
        revokes.chain(sticky).min()
    }

    /// Finishes revokes that are answered or timed out, ends pin-downs and forgets expired
    /// sticky records.
    pub(super) fn ro_handle_timeout(&mut self, dbs: &mut DatabaseSet, now: Instant) {
        self.ro.now = now;
        let due: Vec<RecordKey> = self
            .ro
            .revokes
            .iter()
            .filter(|(_, r)| now >= r.due)
            .map(|(k, _)| k.clone())
            .collect();
        for entry in due {
            self.ro_finish_revoke(dbs, now, entry);
        }
        let mut requeue = Vec::new();
        self.ro.sticky.retain(|_, s| {
            let unpinned = s.pinned_until.is_some_and(|until| now >= until);
            let expired = s.expires.is_some_and(|at| now >= at);
            if unpinned || expired {
                s.pinned_until = None;
                requeue.append(&mut s.deferred);
            }
            !expired
        });
        for packet in requeue {
            self.retry.push((now, Waiting::Node(packet)));
        }
    }

    /// The end of `ctdb_revoke_all_delegations` and `revokechild_destructor`.
    fn ro_finish_revoke(&mut self, dbs: &mut DatabaseSet, now: Instant, entry: RecordKey) {
        let Some(revoke) = self.ro.revokes.get_mut(&entry) else {
            return;
        };
        if !revoke.complete {
            log::error!("Timed out waiting for revoke to finish");
            revoke.failed = true;
            revoke.complete = true;
        }
        let (db_id, key) = &entry;
        let mut success = !revoke.failed;
        if let Some(db) = dbs.get_mut(*db_id).filter(|db| db.allow_access()) {
            match db.store_mut().chain_try_lock(key) {
                Ok(true) => {}
                Ok(false) => {
                    revoke.due = now.saturating_add(CHAIN_RETRY);
                    return;
                }
                Err(e) => {
                    log::error!("Failed to chainlock the database in revoke: {e}");
                    success = false;
                }
            }
            let record = db.store_mut().fetch(key).ok().flatten();
            let parsed = record.as_deref().and_then(|v| {
                let (h, _) = LtdbHeader::pull(v).ok()?;
                Some((h, v.get(LTDB_HEADER_LEN..).unwrap_or_default().to_vec()))
            });
            match parsed {
                Some((mut header, data)) => {
                    let both = REC_RO_REVOKING_READONLY | REC_RO_HAVE_DELEGATIONS;
                    if header.rsn > revoke.rsn {
                        log::error!("RSN too high in tdb record in revoke");
                        success = false;
                    } else if header.flags & both != both {
                        log::error!("Flags are wrong in tdb record in revoke");
                        success = false;
                    }
                    if success {
                        header.rsn = header.rsn.wrapping_add(1);
                        header.flags |= REC_RO_REVOKE_COMPLETE;
                    } else {
                        log::info!("Revoke all delegations failed, retrying.");
                        header.flags &= !REC_RO_REVOKING_READONLY;
                    }
                    let head = header.to_bytes();
                    if let Err(e) = db.store_mut().store(key, &[&head, &data]) {
                        log::error!("Failed to write new record in revoke: {e}");
                        success = false;
                    }
                }
                None => {
                    log::error!("Failed for fetch tdb record in revoke");
                    success = false;
                }
            }
            if let Err(e) = db.store_mut().chain_unlock(key) {
                log::error!("Failed to unlock a chain of {}: {e}", db.name());
            }
        } else {
            success = false;
        }
        let Some(revoke) = self.ro.revokes.remove(&entry) else {
            return;
        };
        for work in revoke.deferred {
            let at = if success && !wants_readonly(&work) {
                now
            } else {
                now.saturating_add(READONLY_GRACE)
            };
            self.retry.push((at, work));
        }
    }

    /// A client went away: its requests waiting for revokes are dropped (the revokes go on).
    pub(super) fn ro_on_client_closed(&mut self, client: crate::server::effect::ClientId) {
        for revoke in self.ro.revokes.values_mut() {
            revoke
                .deferred
                .retain(|w| !matches!(w, Waiting::Client { client: c, .. } if *c == client));
        }
    }

    /// A recovery revokes everything: revokes of the database end and their requests run
    /// again.
    pub(super) fn ro_on_thawed(&mut self, now: Instant, db_id: u32) {
        let ended: Vec<RecordKey> = self
            .ro
            .revokes
            .keys()
            .filter(|(id, _)| *id == db_id)
            .cloned()
            .collect();
        for entry in ended {
            if let Some(revoke) = self.ro.revokes.remove(&entry) {
                for work in revoke.deferred {
                    self.retry.push((now, work));
                }
            }
        }
    }
}
