//! Vacuuming of volatile databases: removing deleted (empty) records from every node's copy
//! without ever bringing one back (mirrors `server/ctdb_vacuum.c`, `delete_tdb_record` and
//! `ctdb_control_try_delete_records` in `server/ctdb_recover.c`).
//!
//! A record deleted by a client stays in the file as a bare `ctdb_ltdb_header`: the header
//! carries the RSN that orders copies during a recovery, so dropping it on one node only could
//! let an older copy with data win later. Vacuuming removes such records in an order that is
//! safe:
//! * The dmaster queues every empty record it stores or is told about (SCHEDULE_FOR_DELETION
//!   from smbd, and [`Database::ltdb_store_updating`]) in a per-database delete queue.
//! * Every `VacuumInterval` seconds a run takes the queue. A record still empty, still ours
//!   and with an unchanged RSN is
//!   - deleted at once when this node is also its lmaster and it never carried data to
//!     another node (no copy can exist elsewhere);
//!   - put on the delete list when this node is its lmaster but it was migrated with data:
//!     every other active node is asked to drop its copy (TRY_DELETE_RECORDS, which refuses
//!     copies with a higher RSN or that it is dmaster of) and the local copy goes only if all
//!     of them agreed;
//!   - otherwise sent to its lmaster in a VACUUM_FETCH, which migrates it there (a call with
//!     `CALL_FLAG_VACUUM_MIGRATION`) so the lmaster can finish the job in its own next run.
//! * Every `VacuumFastPathCount` runs, a full run also scans the whole file for empty records
//!   this node is dmaster of, catching what the queue missed (a full queue, a restart).
//!
//! Differences from stock, on purpose: stock forks a child per run that works on a copy of
//! the queue and talks to the daemon like a client. Here a run is a bounded batch inside the
//! event loop — every record step is a non-blocking chain lock, a header read and maybe a
//! delete, never a wait — and the queues have explicit limits ([`MAX_QUEUED_PER_DB`]).

use super::storage::ChainStep;
use super::{Database, DatabaseSet, DbControlOutcome, DbEffect, DbReply, DeferredId};
use crate::common::clock::Instant;
use crate::protocol::hash;
use crate::protocol::ltdb::{
    LtdbHeader, LTDB_HEADER_LEN, REC_FLAG_MIGRATED_WITH_DATA, REC_RO_FLAGS,
};
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::types::{DbVacuum, KeyData, RecBuffer, RecData};
use crate::protocol::Marshal;
use crate::server::effect::Pnn;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// At most this many records wait in one database's delete queue (and as many in its fetch
/// queue); more are dropped with a log line and found again by the next full run.
pub const MAX_QUEUED_PER_DB: usize = 200_000;

/// Records per step of a full run's scan (one all-record read lock each).
const SCAN_STEP_RECORDS: usize = 4096;

/// At most this many records are moved to one lmaster per VACUUM_FETCH control.
const MAX_FETCH_BATCH: usize = 5_000;

/// A record queued for deletion (`struct delete_record_data`): the header it had when queued.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Queued {
    key: Vec<u8>,
    header: LtdbHeader,
}

/// A TRY_DELETE_RECORDS round waiting for the other active nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DeleteRound {
    id: u64,
    waiting: BTreeSet<Pnn>,
    /// By key hash, as stock indexes it; `true` once some node refused the record.
    records: BTreeMap<u32, (Queued, bool)>,
    failed: bool,
    /// The DB_VACUUM control that started this run, answered when the round ends.
    waiter: Option<DeferredId>,
}

/// What one run did, logged like stock's statistics lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VacuumCounts {
    pub deleted: u32,
    pub skipped: u32,
    pub errors: u32,
    pub to_delete_list: u32,
    pub to_fetch_list: u32,
    pub scheduled_by_scan: u32,
}

/// The vacuuming state of one volatile database (`ctdb_vacuum_handle` plus the queues).
#[derive(Debug, Default)]
pub struct VacuumState {
    /// By key hash: stock keeps one entry per hash and skips colliding keys.
    delete_queue: BTreeMap<u32, Queued>,
    /// Keys other nodes sent with VACUUM_FETCH, by hash.
    fetch_queue: BTreeMap<u32, Vec<u8>>,
    next_run: Option<Instant>,
    fast_path_count: u32,
    round: Option<DeleteRound>,
    rounds_started: u64,
    /// The hash chain a full run's scan continues from (it stopped at a busy lock).
    scan_from: Option<u32>,
    /// A DB_VACUUM control waiting for the next run: whether it asked for a full run.
    forced: Option<(bool, DeferredId)>,
    /// A run happened since the last repack check.
    pub(super) repack_due: bool,
    pub last_counts: VacuumCounts,
}

impl VacuumState {
    /// Forgets both queues (the database was wiped by a recovery). Returns the DB_VACUUM
    /// controls whose run was abandoned; they fail, as stock's killed vacuum child does.
    pub fn clear(&mut self) -> Vec<DeferredId> {
        self.delete_queue.clear();
        self.fetch_queue.clear();
        let round = self.round.take().and_then(|r| r.waiter);
        let forced = self.forced.take().map(|(_, id)| id);
        round.into_iter().chain(forced).collect()
    }

    pub fn queued(&self) -> usize {
        self.delete_queue.len()
    }

    pub fn fetch_queued(&self) -> usize {
        self.fetch_queue.len()
    }

    /// `insert_record_into_delete_queue`: a colliding different key is skipped, the same key
    /// is updated.
    pub fn schedule(&mut self, key: &[u8], header: &LtdbHeader) {
        let hash = hash::ctdb_hash(key);
        if let Some(existing) = self.delete_queue.get(&hash) {
            if existing.key != key {
                log::info!("schedule for deletion: hash collision for key hash [0x{hash:08x}]");
                return;
            }
        } else if self.delete_queue.len() >= MAX_QUEUED_PER_DB {
            log::debug!("delete queue full, record 0x{hash:08x} waits for a full vacuum run");
            return;
        }
        self.delete_queue.insert(
            hash,
            Queued {
                key: key.to_vec(),
                header: *header,
            },
        );
    }

    /// `remove_record_from_delete_queue`: the record got data again.
    pub fn unschedule(&mut self, key: &[u8]) {
        // The common case in a recovery (the wipe emptied the queue): no hash to compute.
        if self.delete_queue.is_empty() {
            return;
        }
        let hash = hash::ctdb_hash(key);
        if self.delete_queue.get(&hash).is_some_and(|q| q.key == key) {
            self.delete_queue.remove(&hash);
        }
    }

    fn add_fetch(&mut self, key: &[u8]) {
        if self.fetch_queue.len() < MAX_QUEUED_PER_DB {
            self.fetch_queue.insert(hash::ctdb_hash(key), key.to_vec());
        }
    }
}

/// The header of a record that holds nothing but a header (`vacuum_record_parser`).
fn empty_record_header(value: &[u8]) -> Option<LtdbHeader> {
    if value.len() != LTDB_HEADER_LEN {
        return None;
    }
    LtdbHeader::pull(value).ok().map(|(h, _)| h)
}

fn interval(vacuum_interval_s: u32) -> Duration {
    Duration::from_secs(u64::from(vacuum_interval_s))
}

/// A key this node must migrate to itself for vacuuming (from a VACUUM_FETCH).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VacuumMigration {
    pub db_id: u32,
    pub key: Vec<u8>,
}

impl Database {
    /// The delete-queue half of `ctdb_ltdb_store_server`'s bookkeeping, called after a store
    /// decision of a volatile record.
    pub(super) fn note_stored(&mut self, key: &[u8], header: &LtdbHeader, schedule: bool) {
        if schedule {
            self.vacuum.schedule(key, header);
        } else {
            self.vacuum.unschedule(key);
        }
    }

    pub fn vacuum_state(&self) -> &VacuumState {
        &self.vacuum
    }

    /// Takes the delete queue and sorts each record as the run's first step
    /// (`delete_queue_traverse`). Records for other lmasters land in `fetch_lists`.
    fn process_delete_queue(
        &mut self,
        pnn: Pnn,
        vnn_map: &[u32],
        delete_list: &mut BTreeMap<u32, (Queued, bool)>,
        fetch_lists: &mut BTreeMap<Pnn, Vec<Vec<u8>>>,
        counts: &mut VacuumCounts,
    ) {
        let queue = std::mem::take(&mut self.vacuum.delete_queue);
        for (hash, queued) in queue {
            match self.store.chain_try_lock(&queued.key) {
                Ok(true) => {}
                Ok(false) | Err(_) => {
                    counts.errors += 1;
                    continue;
                }
            }
            let current = self
                .store
                .fetch(&queued.key)
                .ok()
                .flatten()
                .and_then(|v| empty_record_header(&v));
            match current {
                Some(h) if h.dmaster == pnn && h.rsn == queued.header.rsn => {
                    let lmaster = hash::lmaster(hash, vnn_map).unwrap_or(u32::MAX);
                    if lmaster != pnn {
                        fetch_lists
                            .entry(lmaster)
                            .or_default()
                            .push(queued.key.clone());
                        counts.to_fetch_list += 1;
                    } else if queued.header.flags & REC_FLAG_MIGRATED_WITH_DATA != 0 {
                        delete_list.insert(hash, (queued.clone(), false));
                        counts.to_delete_list += 1;
                    } else {
                        match self.store.delete(&queued.key) {
                            Ok(()) => counts.deleted += 1,
                            Err(e) => {
                                log::error!("Error deleting record from {}: {e}", self.name);
                                counts.errors += 1;
                            }
                        }
                    }
                }
                // Migrated away, revived with data, or migrated away and back: not ours to
                // delete now.
                _ => counts.skipped += 1,
            }
            if let Err(e) = self.store.chain_unlock(&queued.key) {
                log::error!("Failed to unlock a chain of {}: {e}", self.name);
            }
        }
    }

    /// The full run's scan (`vacuum_traverse`): every empty record this node is dmaster of.
    /// It walks the file chain by chain under the all-record read lock taken without waiting;
    /// when a client holds a lock the scan stops and the next run continues from there, so
    /// the loop never waits for smbd.
    fn scan_for_empty_records(&mut self, pnn: Pnn, counts: &mut VacuumCounts) {
        let mut found = Vec::new();
        let mut chain = self.vacuum.scan_from.take().unwrap_or(0);
        loop {
            let step = self
                .store
                .traverse_chains(chain, SCAN_STEP_RECORDS, &mut |key, value| {
                    if found.len() >= MAX_QUEUED_PER_DB {
                        return;
                    }
                    if let Some(h) = empty_record_header(value) {
                        if h.dmaster == pnn {
                            found.push((key.to_vec(), h));
                        }
                    }
                });
            match step {
                Ok(ChainStep::More(next)) => chain = next,
                Ok(ChainStep::Done) => break,
                Ok(ChainStep::Busy) => {
                    self.vacuum.scan_from = Some(chain);
                    break;
                }
                Err(e) => {
                    log::error!("Traverse error in vacuuming '{}': {e}", self.name);
                    break;
                }
            }
        }
        for (key, header) in found {
            self.vacuum.schedule(&key, &header);
            counts.scheduled_by_scan += 1;
        }
    }

    /// The lmaster's final step for one record (`delete_record_traverse`): still empty, still
    /// ours, same RSN, no read-only flags.
    fn delete_if_unchanged(&mut self, pnn: Pnn, lmaster: Pnn, queued: &Queued) -> bool {
        if !matches!(self.store.chain_try_lock(&queued.key), Ok(true)) {
            return false;
        }
        let current = self
            .store
            .fetch(&queued.key)
            .ok()
            .flatten()
            .and_then(|v| empty_record_header(&v));
        let deleted = match current {
            Some(h)
                if h.flags & REC_RO_FLAGS == 0
                    && h.dmaster == pnn
                    && h.rsn == queued.header.rsn
                    && lmaster == pnn =>
            {
                self.store.delete(&queued.key).is_ok()
            }
            _ => false,
        };
        if let Err(e) = self.store.chain_unlock(&queued.key) {
            log::error!("Failed to unlock a chain of {}: {e}", self.name);
        }
        deleted
    }

    /// `delete_tdb_record` on a node asked by the lmaster: `true` when the local copy is gone
    /// (or was never here).
    fn try_delete_copy(&mut self, pnn: Pnn, lmaster: Pnn, key: &[u8], given: &[u8]) -> bool {
        if lmaster == pnn {
            log::info!("Called delete on record where we are lmaster");
            return false;
        }
        let Some(given) = empty_record_header(given) else {
            log::error!("Bad record size");
            return false;
        };
        if !matches!(self.store.chain_try_lock(key), Ok(true)) {
            return false;
        }
        let ok = match self.store.fetch(key) {
            Ok(None) => true,
            Ok(Some(local)) if local.len() < LTDB_HEADER_LEN => self.store.delete(key).is_ok(),
            Ok(Some(local)) => match LtdbHeader::pull(&local) {
                Ok((h, _))
                    if h.rsn <= given.rsn
                        && given.flags & REC_RO_FLAGS == 0
                        && h.flags & REC_RO_FLAGS == 0
                        && h.dmaster != pnn =>
                {
                    self.store.delete(key).is_ok()
                }
                _ => false,
            },
            Err(_) => false,
        };
        if let Err(e) = self.store.chain_unlock(key) {
            log::error!("Failed to unlock a chain of {}: {e}", self.name);
        }
        ok
    }
}

impl DatabaseSet {
    /// Starts the vacuuming timer of a newly attached volatile database (`ctdb_vacuum_init`).
    pub(super) fn start_vacuuming(&mut self, now: Instant, db_id: u32, vacuum_interval_s: u32) {
        if let Some(db) = self.get_mut(db_id) {
            if db.is_volatile() {
                db.vacuum.next_run = Some(now.saturating_add(interval(vacuum_interval_s)));
            }
        }
    }

    /// DB_VACUUM (`ctdb_control_db_vacuum`): one vacuum run of a volatile database now; the
    /// reply comes when the run, including its TRY_DELETE_RECORDS round, is over. Refused
    /// during a recovery, while frozen, and while a run of the database is still going.
    pub(super) fn control_db_vacuum(
        &mut self,
        now: Instant,
        data: &[u8],
        recovery_active: bool,
    ) -> DbControlOutcome {
        let Ok(request) = DbVacuum::from_bytes_exact(data) else {
            log::error!("Invalid data in DB_VACUUM");
            return DbControlOutcome::Reply(DbReply::fail());
        };
        let Some(db) = self.get(request.db_id) else {
            log::error!("Unknown db id 0x{:08x}", request.db_id);
            return DbControlOutcome::Reply(DbReply::fail());
        };
        if !db.is_volatile() {
            log::error!("Not vacuuming {}: not a volatile database", db.name);
            return DbControlOutcome::Reply(DbReply::fail());
        }
        if recovery_active || db.freeze_mode != super::FreezeMode::None {
            log::info!("Not vacuuming {} (in recovery or frozen)", db.name);
            return DbControlOutcome::Reply(DbReply::fail());
        }
        if db.vacuum.round.is_some() || db.vacuum.forced.is_some() {
            log::warn!("Vacuuming collision on {}", db.name);
            return DbControlOutcome::Reply(DbReply::fail());
        }
        let id = self.alloc_deferred();
        if let Some(db) = self.get_mut(request.db_id) {
            db.vacuum.forced = Some((request.full_vacuum_run, id));
            db.vacuum.next_run = Some(now);
        }
        DbControlOutcome::Deferred(id)
    }

    /// SCHEDULE_FOR_DELETION from a client (smbd deleting a record).
    pub(super) fn control_schedule_for_deletion(&mut self, data: &[u8]) -> DbReply {
        let Ok(request) = KeyData::from_bytes_exact(data) else {
            return DbReply::status(-1);
        };
        let Some(db) = self.get_mut(request.db_id) else {
            log::error!("Unknown db id 0x{:08x}", request.db_id);
            return DbReply::status(-1);
        };
        db.vacuum.schedule(&request.key, &request.header);
        DbReply::status(0)
    }

    /// VACUUM_FETCH from a former dmaster: migrate these keys here in the next run.
    pub(super) fn control_vacuum_fetch(&mut self, data: &[u8]) -> DbReply {
        let Ok(records) = RecBuffer::from_bytes_exact(data) else {
            log::error!("Invalid data in vacuum_fetch");
            return DbReply::status(-1);
        };
        let Some(db) = self.get_mut(records.db_id) else {
            log::error!("Unknown db 0x{:08x}", records.db_id);
            return DbReply::status(-1);
        };
        for record in &records.records {
            db.vacuum.add_fetch(&record.key);
        }
        DbReply::status(0)
    }

    /// TRY_DELETE_RECORDS from a record's lmaster: drop the local copies that may go; the
    /// reply lists the records that could not be deleted.
    pub(super) fn control_try_delete_records(&mut self, data: &[u8], vnn_map: &[u32]) -> DbReply {
        let pnn = self.config.pnn;
        let Ok(records) = RecBuffer::from_bytes_exact(data) else {
            log::error!("invalid data in try_delete_records");
            return DbReply::status(-1);
        };
        let Some(db) = self.get_mut(records.db_id) else {
            log::error!("Unknown db 0x{:08x}", records.db_id);
            return DbReply::status(-1);
        };
        if records
            .records
            .iter()
            .any(|r| r.data.len() < LTDB_HEADER_LEN)
        {
            log::error!("bad ltdb record in try_delete_records");
            return DbReply::status(-1);
        }
        let mut kept = RecBuffer {
            db_id: records.db_id,
            records: Vec::new(),
        };
        for record in records.records {
            let lmaster = hash::lmaster(hash::ctdb_hash(&record.key), vnn_map).unwrap_or(u32::MAX);
            if !db.try_delete_copy(pnn, lmaster, &record.key, &record.data) {
                kept.records.push(record);
            }
        }
        DbReply::data(kept.to_bytes())
    }

    /// The next vacuum run due, if any.
    pub fn vacuum_timeout(&self) -> Option<Instant> {
        self.dbs.iter().filter_map(|db| db.vacuum.next_run).min()
    }

    /// Runs the vacuuming of every database whose run is due. `active_peers` are the other
    /// active nodes (TRY_DELETE_RECORDS goes to all of them).
    pub fn run_due_vacuums(
        &mut self,
        now: Instant,
        recovery_active: bool,
        vnn_map: &[u32],
        active_peers: &[Pnn],
        tunables: (u32, u32),
    ) {
        let (vacuum_interval_s, fast_path_max) = tunables;
        let pnn = self.config.pnn;
        let mut effects = Vec::new();
        for db in &mut self.dbs {
            let Some(due) = db.vacuum.next_run else {
                continue;
            };
            if now < due {
                continue;
            }
            db.vacuum.next_run = Some(now.saturating_add(interval(vacuum_interval_s.max(1))));
            let forced = db.vacuum.forced.take();
            if vacuum_interval_s == 0 && forced.is_none() {
                continue;
            }
            if recovery_active || db.freeze_mode != super::FreezeMode::None {
                log::info!("Not vacuuming {} (in recovery or frozen)", db.name);
                if let Some((_, id)) = forced {
                    effects.push(DbEffect::Complete {
                        id,
                        reply: DbReply::fail(),
                    });
                }
                continue;
            }
            if db.vacuum.round.is_some() {
                // The previous round still waits for answers (stock staggers likewise).
                if let Some((_, id)) = forced {
                    log::warn!("Vacuuming collision on {}", db.name);
                    effects.push(DbEffect::Complete {
                        id,
                        reply: DbReply::fail(),
                    });
                }
                continue;
            }
            let mut counts = VacuumCounts::default();
            let full = if let Some((full, _)) = forced {
                // A run asked for by DB_VACUUM leaves the fast-path schedule alone, as stock's
                // unscheduled child does.
                full
            } else if db.vacuum.fast_path_count >= fast_path_max {
                db.vacuum.fast_path_count = 0;
                fast_path_max > 0
            } else {
                false
            };
            if forced.is_none() {
                db.vacuum.fast_path_count += 1;
            }
            // Stock times its vacuum child; a run here is one step of the loop and takes no
            // time on the core's clock, so each run counts with a latency of zero.
            db.stats.note_vacuum_run(0.0);
            db.vacuum.repack_due = true;
            if full || db.vacuum.scan_from.is_some() {
                db.scan_for_empty_records(pnn, &mut counts);
            }
            // Keys other nodes handed over: migrate each one that is not ours yet.
            let fetch = std::mem::take(&mut db.vacuum.fetch_queue);
            for key in fetch.into_values() {
                let header = db
                    .store
                    .fetch(&key)
                    .ok()
                    .flatten()
                    .and_then(|v| LtdbHeader::pull(&v).ok().map(|(h, _)| h));
                if header.is_some_and(|h| h.dmaster != pnn) {
                    effects.push(DbEffect::VacuumMigrate(VacuumMigration {
                        db_id: db.db_id,
                        key,
                    }));
                }
            }
            let mut delete_list = BTreeMap::new();
            let mut fetch_lists: BTreeMap<Pnn, Vec<Vec<u8>>> = BTreeMap::new();
            db.process_delete_queue(
                pnn,
                vnn_map,
                &mut delete_list,
                &mut fetch_lists,
                &mut counts,
            );
            for (lmaster, keys) in fetch_lists {
                for chunk in keys.chunks(MAX_FETCH_BATCH) {
                    let buffer = RecBuffer {
                        db_id: db.db_id,
                        records: chunk
                            .iter()
                            .map(|key| RecData {
                                reqid: pnn,
                                key: key.clone(),
                                data: Vec::new(),
                            })
                            .collect(),
                    };
                    effects.push(DbEffect::SendControl {
                        destnode: lmaster,
                        opcode: ControlOpcode::VacuumFetch,
                        data: buffer.to_bytes(),
                    });
                }
            }
            if !delete_list.is_empty() {
                if active_peers.is_empty() {
                    for (queued, _) in delete_list.values() {
                        if db.delete_if_unchanged(pnn, pnn, queued) {
                            counts.deleted += 1;
                        } else {
                            counts.skipped += 1;
                        }
                    }
                } else {
                    db.vacuum.rounds_started += 1;
                    let id = db.vacuum.rounds_started;
                    let buffer = RecBuffer {
                        db_id: db.db_id,
                        records: delete_list
                            .values()
                            .map(|(q, _)| RecData::with_header(db.db_id, &q.header, &q.key, &[]))
                            .collect(),
                    };
                    let data = buffer.to_bytes();
                    for &peer in active_peers {
                        effects.push(DbEffect::TryDeleteRecords {
                            pnn: peer,
                            db_id: db.db_id,
                            round: id,
                            data: data.clone(),
                        });
                    }
                    db.vacuum.round = Some(DeleteRound {
                        id,
                        waiting: active_peers.iter().copied().collect(),
                        records: delete_list,
                        failed: false,
                        waiter: forced.map(|(_, id)| id),
                    });
                }
            }
            if let Some((_, id)) = forced {
                if db
                    .vacuum
                    .round
                    .as_ref()
                    .is_none_or(|r| r.waiter != Some(id))
                {
                    effects.push(DbEffect::Complete {
                        id,
                        reply: DbReply::status(0),
                    });
                }
            }
            if counts != VacuumCounts::default() {
                log::info!(
                    "{} vacuuming of {}: deleted {} skipped {} errors {} delete-list {} fetch-list {} scanned {}",
                    if full { "full" } else { "fast" },
                    db.name,
                    counts.deleted,
                    counts.skipped,
                    counts.errors,
                    counts.to_delete_list,
                    counts.to_fetch_list,
                    counts.scheduled_by_scan
                );
            }
            db.vacuum.last_counts = counts;
        }
        self.effects.extend(effects);
    }

    /// One node's answer to TRY_DELETE_RECORDS; once all answered, the records every node
    /// dropped are deleted here too.
    pub fn on_try_delete_reply(
        &mut self,
        db_id: u32,
        round: u64,
        from: Pnn,
        status: i32,
        data: &[u8],
        vnn_map: &[u32],
    ) {
        let pnn = self.config.pnn;
        let Some(db) = self.get_mut(db_id) else {
            return;
        };
        let Some(state) = db.vacuum.round.as_mut().filter(|r| r.id == round) else {
            return;
        };
        state.waiting.remove(&from);
        if status != 0 {
            log::error!("TRY_DELETE_RECORDS failed on node {from} for {}", db.name);
            state.failed = true;
        } else if let Ok(kept) = RecBuffer::from_bytes_exact(data) {
            for record in kept.records {
                if let Some(entry) = state.records.get_mut(&hash::ctdb_hash(&record.key)) {
                    entry.1 = true;
                }
            }
        } else {
            state.failed = true;
        }
        if !state.waiting.is_empty() {
            return;
        }
        let Some(state) = db.vacuum.round.take() else {
            return;
        };
        if let Some(id) = state.waiter {
            let status = if state.failed { -1 } else { 0 };
            self.effects.push_back(DbEffect::Complete {
                id,
                reply: DbReply::status(status),
            });
        }
        let Some(db) = self.get_mut(db_id) else {
            return;
        };
        if state.failed {
            return;
        }
        let (mut deleted, mut skipped) = (0u32, 0u32);
        for (hash, (queued, refused)) in state.records {
            let lmaster = hash::lmaster(hash, vnn_map).unwrap_or(u32::MAX);
            if !refused && db.delete_if_unchanged(pnn, lmaster, &queued) {
                deleted += 1;
            } else {
                skipped += 1;
            }
        }
        log::info!(
            "vacuum delete list of {}: deleted {deleted} skipped {skipped}",
            db.name
        );
    }

    /// A record migrated here for vacuuming: queue it when it is empty and ours now
    /// (`fetch_record_migrate_callback`).
    pub fn on_vacuum_migrated(&mut self, db_id: u32, key: &[u8]) {
        let pnn = self.config.pnn;
        let Some(db) = self.get_mut(db_id) else {
            return;
        };
        if !matches!(db.store.chain_try_lock(key), Ok(true)) {
            return;
        }
        let header = db
            .store
            .fetch(key)
            .ok()
            .flatten()
            .and_then(|v| LtdbHeader::pull(&v).ok().map(|(h, _)| h));
        if let Err(e) = db.store.chain_unlock(key) {
            log::error!("Failed to unlock a chain of {}: {e}", db.name);
        }
        if let Some(h) = header.filter(|h| h.dmaster == pnn) {
            db.vacuum.schedule(key, &h);
        }
    }
}
