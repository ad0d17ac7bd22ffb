//! Attaching databases, the deferral of local attaches during recovery, the start-up scan of
//! the persistent directory and the persistent-health database (mirrors
//! `server/ctdb_ltdb_server.c`).

use super::storage::db_tdb_flags;
use super::vacuum;
use super::{
    Database, DatabaseSet, DbContext, DbControlOutcome, DbEffect, DbReply, DbRequest,
    DeferredAttach, FreezeMode, DEFERRED_ATTACH_REINJECT, RECOVERY_ACTIVE,
};
use crate::common::clock::Instant;
use crate::common::tdb::TdbError;
use crate::protocol::hash;
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::packet::CTRL_FLAG_ATTACH_RECOVERY;
use crate::protocol::types::{db_flags, node_flags, Runstate};
use crate::protocol::Marshal;
use std::time::Duration;

/// Prefix stock puts on an unhealthy reason that a recovery without healthy nodes kept.
const NO_HEALTHY_NODES_PREFIX: &str = "NO-HEALTHY-NODES - ";

fn attach_flags(opcode: ControlOpcode) -> u8 {
    match opcode {
        ControlOpcode::DbAttachPersistent => db_flags::PERSISTENT,
        ControlOpcode::DbAttachReplicated => db_flags::REPLICATED,
        _ => 0,
    }
}

fn attach_opcode(flags: u8) -> ControlOpcode {
    if flags & db_flags::PERSISTENT != 0 {
        ControlOpcode::DbAttachPersistent
    } else if flags & db_flags::REPLICATED != 0 {
        ControlOpcode::DbAttachReplicated
    } else {
        ControlOpcode::DbAttach
    }
}

/// The name in an attach payload: a C string (up to the first NUL, or all of it).
fn attach_name(data: &[u8]) -> Option<String> {
    let raw = data.split(|&b| b == 0).next().unwrap_or(data);
    if raw.is_empty() {
        return None;
    }
    String::from_utf8(raw.to_vec()).ok()
}

impl DatabaseSet {
    /// DB_ATTACH, DB_ATTACH_PERSISTENT, DB_ATTACH_REPLICATED (`ctdb_control_db_attach`).
    pub(super) fn control_db_attach(
        &mut self,
        now: Instant,
        req: &DbRequest<'_>,
        ctx: &DbContext<'_>,
    ) -> DbControlOutcome {
        match self.db_attach(now, req, ctx, None) {
            AttachResult::Reply(reply) => DbControlOutcome::Reply(reply),
            AttachResult::Deferred(id) => DbControlOutcome::Deferred(id),
        }
    }

    fn db_attach(
        &mut self,
        now: Instant,
        req: &DbRequest<'_>,
        ctx: &DbContext<'_>,
        deferred: Option<super::DeferredId>,
    ) -> AttachResult {
        let db_flags = attach_flags(req.opcode);
        let Some(name) = attach_name(req.data) else {
            log::error!("DB Attach with an invalid database name");
            return AttachResult::fail();
        };
        if ctx.tunables.allow_client_db_attach() == 0 {
            log::error!("DB Attach to database {name} denied by tunable AllowClientDBAccess == 0");
            return AttachResult::fail();
        }

        // Local clients wait while the node recovers; attaches from other nodes come from a
        // recovery and are never held back.
        if let Some(client) = req.client {
            if ctx.own_flags & node_flags::INACTIVE != 0 {
                log::error!(
                    "DB Attach to database {name} refused since node is inactive (flags=0x{:x})",
                    ctx.own_flags
                );
                return AttachResult::fail();
            }
            let for_recovery = req.flags & CTRL_FLAG_ATTACH_RECOVERY != 0;
            if for_recovery && ctx.recovery_mode != RECOVERY_ACTIVE {
                log::error!("Attach from recovery refused because recovery is not active");
                return AttachResult::fail();
            }
            if !for_recovery
                && (ctx.recovery_mode == RECOVERY_ACTIVE
                    || u32::from(ctx.runstate) < u32::from(Runstate::Startup))
            {
                let id = deferred.unwrap_or_else(|| self.alloc_deferred());
                let timeout_s = u64::from(ctx.tunables.deferred_attach_timeout());
                self.deferred_attaches.insert(
                    0,
                    DeferredAttach {
                        id,
                        opcode: req.opcode,
                        srvid: req.srvid,
                        flags: req.flags,
                        data: req.data.to_vec(),
                        srcnode: req.srcnode,
                        client,
                        timeout: now.saturating_add(Duration::from_secs(timeout_s)),
                        reinject_at: None,
                    },
                );
                log::error!(
                    "DB Attach to database {name} deferred for client {client} since node is in recovery mode."
                );
                return AttachResult::Deferred(id);
            }
        }

        if let Some(db) = self.by_name(&name) {
            if db.flags & db_flags != db_flags {
                log::error!(
                    "Error: Failed to re-attach with 0x{db_flags:x} flags, database has 0x{:x} flags",
                    db.flags
                );
                return AttachResult::fail();
            }
            return AttachResult::Reply(DbReply::data(db.db_id.to_bytes()));
        }

        if self.local_attach(&name, db_flags, ctx).is_err() {
            return AttachResult::fail();
        }
        let Some(db) = self.by_name(&name) else {
            return AttachResult::fail();
        };
        let db_id = db.db_id;
        self.start_vacuuming(now, db_id, ctx.tunables.vacuum_interval());
        // Tell every connected node (this one included) so that they attach it too.
        self.effects.push_back(DbEffect::BroadcastControl {
            opcode: attach_opcode(db_flags),
            data: req.data.to_vec(),
        });
        AttachResult::Reply(DbReply::data(db_id.to_bytes()))
    }

    /// `ctdb_local_attach`: opens (creating) `<dir>/<name>.<pnn>` and adds it to the set.
    pub(super) fn local_attach(
        &mut self,
        name: &str,
        flags: u8,
        ctx: &DbContext<'_>,
    ) -> Result<(), ()> {
        let db_id = hash::db_id(name);
        if let Some(other) = self.get(db_id) {
            log::error!(
                "db_id 0x{db_id:x} hash collision. name1='{name}' name2='{}'",
                other.name
            );
            return Err(());
        }
        let persistent = flags & db_flags::PERSISTENT != 0;
        let mut unhealthy_reason = None;
        if persistent {
            unhealthy_reason = match self.load_health(name) {
                Ok(reason) => reason,
                Err(e) => {
                    log::error!("ctdb_load_persistent_health('{name}') failed: {e}");
                    return Err(());
                }
            };
            // Stock retries only when `max_persistent_check_errors` is set, which 4.17 never
            // does: an unhealthy persistent database cannot be attached.
            if let Some(reason) = &unhealthy_reason {
                log::error!("ERROR: tdb {name} is marked as unhealthy: {reason}");
                return Err(());
            }
        }

        let dir = if persistent {
            &self.config.persistent_dir
        } else {
            &self.config.volatile_dir
        };
        let path = super::file_in(dir, name, self.config.pnn);
        let tdb_flags = db_tdb_flags(flags, self.config.tdb_mutexes, self.mutexes_supported);
        let mut store = match self
            .backend
            .open(&path, ctx.tunables.database_hash_size(), tdb_flags)
        {
            Ok(store) => store,
            Err(e) => {
                log::error!("Failed to open tdb '{}': {e}", path.display());
                return Err(());
            }
        };
        if persistent {
            if let Err(e) = store.check_integrity() {
                log::error!("tdb_check({}) failed: {e}", path.display());
                return Err(());
            }
        } else {
            // The first opener cleared it; records mean another process still has it open.
            let count = store.traverse_read(&mut |_, _| {}).unwrap_or(usize::MAX);
            if count != 0 {
                log::error!("tdb '{}' not empty on attach! aborting", path.display());
                self.effects.push_back(DbEffect::Fatal {
                    reason: "database not empty on attach".to_owned(),
                });
                return Err(());
            }
        }
        store.set_max_dead(ctx.tunables.database_max_dead());

        log::info!(
            "Attached to database '{}' with flags 0x{:x}",
            path.display(),
            tdb_flags.bits()
        );
        self.dbs.push(Database {
            name: name.to_owned(),
            db_id,
            flags,
            path,
            generation: ctx.vnn_map.generation,
            store,
            freeze_mode: FreezeMode::None,
            freeze_waiters: Vec::new(),
            freeze_transaction: None,
            invalid_records: false,
            push: None,
            unhealthy_reason,
            readonly_tracking: None,
            seqnum_watch: None,
            vacuum: vacuum::VacuumState::default(),
            stats: Default::default(),
        });
        Ok(())
    }

    /// SET_DB_READONLY (`ctdb_set_db_readonly`): volatile databases only; opens the tracking
    /// database `<path>.RO` and sets the READONLY flag.
    pub(super) fn set_db_readonly(&mut self, db_id: u32, ctx: &DbContext<'_>) -> DbReply {
        let Some(index) = self.index_of(db_id) else {
            return DbReply::fail();
        };
        let db = &self.dbs[index];
        if db.flags & db_flags::READONLY != 0 {
            return DbReply::status(0);
        }
        if !db.is_volatile() {
            log::error!("Non-volatile databases do not support readonly flag");
            return DbReply::fail();
        }
        let mut ro_path = db.path.as_os_str().to_owned();
        ro_path.push(".RO");
        let ro_path = std::path::PathBuf::from(ro_path);
        let flags = crate::common::tdb::TdbFlags::NOLOCK
            | crate::common::tdb::TdbFlags::CLEAR_IF_FIRST
            | crate::common::tdb::TdbFlags::NOSYNC;
        let tracking = match self
            .backend
            .open(&ro_path, ctx.tunables.database_hash_size(), flags)
        {
            Ok(tracking) => tracking,
            Err(e) => {
                log::error!(
                    "Failed to open/create the tracking database '{}': {e}",
                    ro_path.display()
                );
                return DbReply::fail();
            }
        };
        log::info!("OPENED tracking database : '{}'", ro_path.display());
        let db = &mut self.dbs[index];
        db.readonly_tracking = Some(tracking);
        db.flags |= db_flags::READONLY;
        log::info!("Readonly property set on DB {}", db.name);
        DbReply::status(0)
    }

    /// SET_DB_STICKY: volatile databases only.
    pub(super) fn set_db_sticky(&mut self, db_id: u32) -> DbReply {
        let Some(db) = self.get_mut(db_id) else {
            return DbReply::fail();
        };
        if db.flags & db_flags::STICKY != 0 {
            return DbReply::status(0);
        }
        if !db.is_volatile() {
            log::error!("Non-volatile databases do not support sticky flag");
            return DbReply::fail();
        }
        db.flags |= db_flags::STICKY;
        log::info!("set db sticky {}", db.name);
        DbReply::status(0)
    }

    /// The start-up scan (`ctdb_attach_persistent`): every `<name>.tdb.<own pnn>` in the
    /// persistent directory is attached; other files are ignored. A database that cannot be
    /// attached stops the scan with an error (stock then aborts).
    pub fn attach_persistent_databases(&mut self, ctx: &DbContext<'_>) -> Result<(), String> {
        let dir = self.config.persistent_dir.clone();
        for file in self.backend.list_dir(&dir) {
            let Some(file) = file.to_str() else {
                continue;
            };
            let Some(pos) = file.find(".tdb.") else {
                continue;
            };
            if file.len() < 7 {
                continue;
            }
            let suffix = &file[pos + 5..];
            let node_ok = !suffix.is_empty()
                && suffix.bytes().all(|b| b.is_ascii_digit())
                && suffix.parse::<u32>().ok() == Some(self.config.pnn);
            if !node_ok {
                log::error!("Ignoring persistent database '{file}'");
                continue;
            }
            let name = &file[..pos + 4];
            if self.local_attach(name, db_flags::PERSISTENT, ctx).is_err() {
                return Err(format!("Failed to attach to persistent database '{file}'"));
            }
            log::info!("Attached to persistent database {name}");
        }
        Ok(())
    }

    /// The recovery ended (recovery mode NORMAL): deferred attaches run again one second
    /// from now (`ctdb_process_deferred_attach`).
    pub fn process_deferred_attaches(&mut self, now: Instant) {
        let at = now.saturating_add(DEFERRED_ATTACH_REINJECT);
        for d in &mut self.deferred_attaches {
            if d.reinject_at.is_none() {
                d.reinject_at = Some(at);
            }
        }
    }

    pub(super) fn run_deferred_attaches(&mut self, now: Instant, ctx: &DbContext<'_>) {
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred_attaches)
            .into_iter()
            .partition(|d| d.reinject_at.is_some_and(|at| now >= at) || now >= d.timeout);
        self.deferred_attaches = waiting;
        for d in due {
            if d.reinject_at.is_some_and(|at| now >= at) {
                let req = d.request();
                if let AttachResult::Reply(reply) = self.db_attach(now, &req, ctx, Some(d.id)) {
                    self.complete(d.id, reply);
                }
            } else {
                self.complete(d.id, DbReply::fail());
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Persistent health

    /// `ctdb_load_persistent_health`: the reason stored under the database name, if any.
    fn load_health(&mut self, name: &str) -> Result<Option<String>, TdbError> {
        let value = self.health.fetch(name.as_bytes())?;
        Ok(value.filter(|v| !v.is_empty()).map(|v| {
            let text = v.split(|&b| b == 0).next().unwrap_or(&v);
            String::from_utf8_lossy(text).into_owned()
        }))
    }

    /// `ctdb_update_persistent_health`: `reason` None means healthy; without healthy nodes an
    /// old reason is kept (prefixed), since the recovery could not have restored the content.
    pub(super) fn update_health(
        &mut self,
        index: usize,
        reason: Option<&str>,
        healthy_nodes: u32,
    ) -> Result<(), TdbError> {
        let name = self.dbs[index].name.clone();
        self.health.transaction_start()?;
        let result = self.update_health_in_transaction(&name, reason, healthy_nodes);
        let new_reason = match result {
            Ok(new_reason) => new_reason,
            Err(e) => {
                let _ = self.health.transaction_cancel();
                return Err(e);
            }
        };
        self.health.transaction_commit()?;
        self.dbs[index].unhealthy_reason = new_reason;
        Ok(())
    }

    fn update_health_in_transaction(
        &mut self,
        name: &str,
        reason: Option<&str>,
        healthy_nodes: u32,
    ) -> Result<Option<String>, TdbError> {
        let old = self.load_health(name)?;
        let new_reason = match (reason, &old) {
            (Some(reason), _) => Some(reason.to_owned()),
            (None, Some(old)) if healthy_nodes == 0 => {
                if old.starts_with(NO_HEALTHY_NODES_PREFIX) {
                    Some(old.clone())
                } else {
                    Some(format!("{NO_HEALTHY_NODES_PREFIX}{old}"))
                }
            }
            (None, _) => None,
        };
        if let Some(new_reason) = &new_reason {
            self.health
                .store(name.as_bytes(), &[new_reason.as_bytes()])?;
            log::error!("Updated db health for db({name}) to: {new_reason}");
        } else if old.is_some() {
            self.health.delete(name.as_bytes())?;
            log::info!("Updated db health for db({name}): OK");
        }
        Ok(new_reason)
    }

    /// DB_GET_HEALTH: the reason with its NUL, or nothing when healthy.
    pub(super) fn control_db_get_health(&mut self, db_id: u32) -> DbReply {
        let Some(index) = self.index_of(db_id) else {
            log::error!("Unknown db 0x{db_id:x}");
            return DbReply::fail();
        };
        let name = self.dbs[index].name.clone();
        match self.load_health(&name) {
            Ok(reason) => {
                self.dbs[index].unhealthy_reason.clone_from(&reason);
                DbReply::data(reason.map_or_else(Vec::new, |r| super::nul_terminated(r.as_bytes())))
            }
            Err(e) => {
                log::error!("ctdb_load_persistent_health({name}) failed: {e}");
                DbReply::fail()
            }
        }
    }

    /// DB_SET_HEALTHY.
    pub(super) fn control_db_set_healthy(&mut self, db_id: u32, ctx: &DbContext<'_>) -> DbReply {
        let Some(index) = self.index_of(db_id) else {
            log::error!("Unknown db 0x{db_id:x}");
            return DbReply::fail();
        };
        let may_recover = self.dbs[index].unhealthy_reason.is_some();
        if let Err(e) = self.update_health(index, None, 1) {
            log::error!(
                "ctdb_update_persistent_health({}) failed: {e}",
                self.dbs[index].name
            );
            return DbReply::fail();
        }
        if may_recover && ctx.runstate == Runstate::Startup {
            log::error!(
                "db {} become healthy  - force recovery for startup",
                self.dbs[index].name
            );
            self.effects.push_back(DbEffect::SetRecoveryModeActive);
        }
        DbReply::status(0)
    }
}

enum AttachResult {
    Reply(DbReply),
    Deferred(super::DeferredId),
}

impl AttachResult {
    fn fail() -> Self {
        AttachResult::Reply(DbReply::fail())
    }
}
