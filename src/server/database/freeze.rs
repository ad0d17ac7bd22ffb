//! Freezing and thawing databases, one at a time (DB_FREEZE, DB_THAW) or all of them
//! (FREEZE, when the node becomes inactive) (mirrors `server/ctdb_freeze.c`).
//!
//! A freeze is PENDING until the all-record lock is obtained. The first attempt is made at
//! once; while somebody holds a chain lock, attempts repeat every [`FREEZE_RETRY_INTERVAL`]
//! (stock's lock helper would block in `tdb_lockall` instead).

use super::{
    DatabaseSet, DbControlOutcome, DbEffect, DbReply, FreezeMode, FreezeWaiter, GlobalFreeze,
    FREEZE_RETRY_INTERVAL,
};
use crate::common::clock::Instant;
use crate::common::tdb::TdbError;

impl DatabaseSet {
    /// FREEZE: every database, replying when all are locked.
    pub(super) fn control_freeze(&mut self, now: Instant) -> DbControlOutcome {
        self.start_global_freeze(now);
        if self.global_mode == FreezeMode::Frozen {
            log::error!("Freeze all: frozen");
            return DbControlOutcome::Reply(DbReply::status(0));
        }
        match &self.global {
            None => {
                log::error!("No freeze lock handle when adding a waiter");
                return DbControlOutcome::Reply(DbReply::fail());
            }
            Some(global) if global.num_total == 0 => {
                return DbControlOutcome::Reply(DbReply::status(0));
            }
            Some(_) => {}
        }
        let id = self.alloc_deferred();
        if let Some(global) = self.global.as_mut() {
            global.waiters.push(id);
        }
        DbControlOutcome::Deferred(id)
    }

    /// DB_FREEZE: replies when the database is locked (at once if it already is).
    pub(super) fn control_db_freeze(&mut self, now: Instant, db_id: u32) -> DbControlOutcome {
        let Some(index) = self.index_of(db_id) else {
            log::error!("Freeze db for unknown dbid 0x{db_id:08x}");
            return DbControlOutcome::Reply(DbReply::fail());
        };
        if self.dbs[index].freeze_mode == FreezeMode::Frozen {
            log::error!("Freeze db: {} frozen", self.dbs[index].name);
            return DbControlOutcome::Reply(DbReply::status(0));
        }
        self.start_db_freeze(now, index);
        if self.dbs[index].freeze_mode == FreezeMode::Frozen {
            return DbControlOutcome::Reply(DbReply::status(0));
        }
        let id = self.alloc_deferred();
        self.dbs[index]
            .freeze_waiters
            .push(FreezeWaiter::Control(id));
        DbControlOutcome::Deferred(id)
    }

    /// DB_THAW: releases the lock, cancelling an open recovery transaction; pending freeze
    /// waiters get -1.
    pub(super) fn control_db_thaw(&mut self, db_id: u32) -> DbReply {
        let Some(index) = self.index_of(db_id) else {
            log::error!("Thaw db for unknown dbid 0x{db_id:08x}");
            return DbReply::fail();
        };
        log::error!(
            "Thaw db: {} generation {}",
            self.dbs[index].name,
            self.dbs[index].generation
        );
        self.release_db_freeze(index);
        self.effects.push_back(DbEffect::Thawed { db_id });
        DbReply::status(0)
    }

    /// `ctdb_control_thaw(ctdb, false)`: what SET_RECMODE(NORMAL) does after a node-wide
    /// freeze. Thaws every database, frozen one by one or all together.
    pub fn thaw_all(&mut self) {
        log::error!("Thawing all");
        for index in 0..self.dbs.len() {
            self.release_db_freeze(index);
        }
        self.destroy_global_freeze();
        let ids: Vec<u32> = self.dbs.iter().map(|db| db.db_id).collect();
        for db_id in ids {
            self.effects.push_back(DbEffect::Thawed { db_id });
        }
    }

    /// `ctdb_blocking_freeze`: start-up freezes every attached database, waiting for the
    /// locks (no client can be connected yet).
    pub fn freeze_all_blocking(&mut self) -> Result<(), TdbError> {
        for index in 0..self.dbs.len() {
            if self.dbs[index].freeze_mode == FreezeMode::Frozen {
                continue;
            }
            log::error!("Freeze db: {}", self.dbs[index].name);
            self.dbs[index].store.freeze_lock_blocking()?;
            self.db_locked(index);
        }
        Ok(())
    }

    /// `ctdb_start_db_freeze`: nothing if frozen or already being frozen.
    fn start_db_freeze(&mut self, now: Instant, index: usize) {
        let db = &mut self.dbs[index];
        if db.freeze_mode != FreezeMode::None {
            return;
        }
        log::error!("Freeze db: {}", db.name);
        db.freeze_mode = FreezeMode::Pending;
        if self.repacking.is_some() {
            self.effects.push_back(DbEffect::StopRepack);
        }
        self.try_freeze_lock(now, index);
    }

    fn try_freeze_lock(&mut self, now: Instant, index: usize) {
        match self.dbs[index].store.freeze_try_lock() {
            Ok(true) => self.db_locked(index),
            Ok(false) => {
                let due = now.saturating_add(FREEZE_RETRY_INTERVAL);
                self.freeze_retry = Some(self.freeze_retry.map_or(due, |d| d.min(due)));
            }
            Err(e) => {
                log::error!("Failed to get db lock for {}: {e}", self.dbs[index].name);
                self.release_db_freeze(index);
            }
        }
    }

    pub(super) fn retry_pending_freezes(&mut self, now: Instant) {
        for index in 0..self.dbs.len() {
            if self.dbs[index].freeze_mode == FreezeMode::Pending {
                self.try_freeze_lock(now, index);
            }
        }
    }

    /// `ctdb_db_freeze_handler(locked = true)`.
    fn db_locked(&mut self, index: usize) {
        self.dbs[index].freeze_mode = FreezeMode::Frozen;
        let waiters = std::mem::take(&mut self.dbs[index].freeze_waiters);
        for waiter in waiters {
            match waiter {
                FreezeWaiter::Control(id) => self.complete(id, DbReply::status(0)),
                FreezeWaiter::Global => self.global_db_result(true),
            }
        }
    }

    /// Frees the database's freeze handle (`ctdb_db_freeze_handle_destructor`): cancels the
    /// recovery transaction, releases the lock, clears "invalid records", and fails whoever
    /// was still waiting for the lock.
    fn release_db_freeze(&mut self, index: usize) {
        let db = &mut self.dbs[index];
        if db.freeze_mode == FreezeMode::None && db.freeze_waiters.is_empty() {
            return;
        }
        log::error!("Release freeze handle for db {}", db.name);
        if let Err(e) = db.store.freeze_release() {
            log::error!("Failed to release the freeze lock of {}: {e}", db.name);
        }
        db.freeze_transaction = None;
        db.freeze_mode = FreezeMode::None;
        db.invalid_records = false;
        if db.push.take().is_some() {
            log::warn!("DB push for {} abandoned by the thaw", db.name);
        }
        let waiters = std::mem::take(&mut db.freeze_waiters);
        for waiter in waiters {
            match waiter {
                FreezeWaiter::Control(id) => self.complete(id, DbReply::fail()),
                FreezeWaiter::Global => self.global_db_result(false),
            }
        }
    }

    /// `ctdb_start_freeze`: volatile records become invalid, then every database is frozen,
    /// counting towards the node-wide freeze. Databases attached since an earlier complete
    /// freeze are added incrementally.
    pub(super) fn start_global_freeze(&mut self, now: Instant) {
        for db in &mut self.dbs {
            if db.is_volatile() {
                db.invalid_records = true;
            }
        }
        let count = self.dbs.len();
        if self.global_mode == FreezeMode::Frozen {
            let Some(global) = self.global.as_mut() else {
                self.global_mode = FreezeMode::None;
                return;
            };
            if count != global.num_total {
                log::error!("Freeze all: incremental");
                global.num_total = count;
                global.num_locked = 0;
                global.num_failed = 0;
                self.global_mode = FreezeMode::Pending;
                self.freeze_every_db(now);
            }
            return;
        }
        if self.global.is_some() {
            return;
        }
        log::error!("Freeze all");
        self.global = Some(GlobalFreeze {
            num_total: count,
            ..GlobalFreeze::default()
        });
        self.global_mode = FreezeMode::Pending;
        self.freeze_every_db(now);
        if count == 0 {
            self.global_mode = FreezeMode::Frozen;
        }
    }

    fn freeze_every_db(&mut self, now: Instant) {
        for index in 0..self.dbs.len() {
            self.start_db_freeze(now, index);
            if self.dbs[index].freeze_mode == FreezeMode::Frozen {
                self.global_db_result(true);
            } else if self.dbs[index].freeze_mode == FreezeMode::Pending {
                self.dbs[index].freeze_waiters.push(FreezeWaiter::Global);
            } else {
                // The lock failed outright and the handle is gone already.
                self.global_db_result(false);
            }
        }
    }

    /// `db_freeze_waiter_destructor`: one database of the node-wide freeze is decided.
    fn global_db_result(&mut self, locked: bool) {
        let Some(global) = self.global.as_mut() else {
            return;
        };
        if locked {
            global.num_locked += 1;
        } else {
            global.num_failed += 1;
        }
        if global.num_locked + global.num_failed != global.num_total {
            return;
        }
        let all_locked = global.num_locked == global.num_total;
        // `ctdb_freeze_lock_handler`
        if self.global_mode == FreezeMode::Frozen {
            log::info!("freeze child died - unfreezing");
            self.destroy_global_freeze();
            return;
        }
        if !all_locked {
            log::error!("Failed to get locks in ctdb_freeze_child");
            self.destroy_global_freeze();
            return;
        }
        self.global_mode = FreezeMode::Frozen;
        let waiters = self
            .global
            .as_mut()
            .map(|g| std::mem::take(&mut g.waiters))
            .unwrap_or_default();
        for id in waiters {
            self.complete(id, DbReply::status(0));
        }
    }

    /// `ctdb_freeze_handle_destructor`: thaws every database; waiters still waiting get -1.
    fn destroy_global_freeze(&mut self) {
        let Some(global) = self.global.take() else {
            self.global_mode = FreezeMode::None;
            return;
        };
        log::error!("Release freeze handle");
        for index in 0..self.dbs.len() {
            self.release_db_freeze(index);
        }
        self.global_mode = FreezeMode::None;
        for id in global.waiters {
            self.complete(id, DbReply::fail());
        }
    }
}
