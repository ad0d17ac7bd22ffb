//! The database service of the main daemon: attached databases and the controls a recovery
//! needs (mirrors `server/ctdb_ltdb_server.c`, `server/ctdb_freeze.c`, the database parts of
//! `server/ctdb_recover.c` and `server/ctdb_control.c`, `GET_DB_SEQNUM` from
//! `server/ctdb_persistent.c`, and `common/ctdb_ltdb.c`).
//!
//! Like the rest of the core this is sans-IO towards the network and the clock: the daemon
//! hands every control to [`DatabaseSet::handle_control`] and gets back an immediate reply, a
//! deferred one (completed later through a [`DbEffect::Complete`]) or "not mine"; messages and
//! broadcasts it must send come out of [`DatabaseSet::poll_effect`] and must be forwarded
//! *before* the immediate reply of the same call (DB_PULL's records precede its count). The
//! files themselves are real TDBs opened through a [`StorageBackend`] — the system libtdb in the
//! daemon ([`TdbBackend`]), memory in simulations ([`MemoryBackend`]).
//!
//! Freezing takes the all-record lock in this process rather than in a `ctdb_lock_helper`
//! child; [`storage`] explains why that is equivalent for everybody else and what it means for
//! this process's own record access ([`DatabaseSet::allow_access`]).
//!
//! # Wiring into the daemon
//!
//! * Start-up, before clients are accepted: [`DatabaseSet::new`] (opens the persistent-health
//!   database), [`DatabaseSet::attach_persistent_databases`], then
//!   [`DatabaseSet::freeze_all_blocking`]; an error in any of them is fatal, as in stock.
//! * Every REQ_CONTROL run on this node, from a local client or from another node: build a
//!   [`DbRequest`] (with `client` set only for a connected local client) and a [`DbContext`]
//!   and call [`DatabaseSet::handle_control`] *before* the daemon's own dispatch. On
//!   [`DbControlOutcome::Reply`] forward every pending effect, then send the reply; on
//!   [`DbControlOutcome::Deferred`] remember where the reply goes under that id.
//! * Every REQ_MESSAGE for this node (a client's to its own node, one from another node, or a
//!   [`DbEffect::SendMessage`] to the own PNN): [`DatabaseSet::on_message`], then the usual
//!   delivery to registered clients.
//! * Effects: [`DbEffect::SendMessage`] is `ctdb_daemon_send_message`;
//!   [`DbEffect::BroadcastControl`] a NOREPLY control to `BROADCAST_CONNECTED` (this node
//!   included); [`DbEffect::SendControl`] a NOREPLY control to one node or to
//!   `BROADCAST_ACTIVE`; [`DbEffect::DispatchLocal`] a message to the local clients registered
//!   for exactly that srvid; [`DbEffect::TraverseTimedOut`] counts a statistic;
//!   [`DbEffect::Complete`] the deferred reply (ignore an unknown id);
//!   [`DbEffect::SetRecoveryModeActive`], [`DbEffect::Thawed`] (resend waiting record
//!   requests) and [`DbEffect::Fatal`] (exit) as named.
//! * Time: fold [`DatabaseSet::poll_timeout`] into the daemon's and call
//!   [`DatabaseSet::handle_timeout_paced`] (or [`DatabaseSet::handle_timeout`]) from its timer
//!   handler; while a traverse walk is running the timeout is "now", one bounded step per
//!   call. Forward the effects afterwards.
//! * SET_RECMODE(NORMAL), when the mode changes: fail with -1 unless
//!   [`DatabaseSet::generations_match`] the vnn map's generation; [`DatabaseSet::thaw_all`] if
//!   [`DatabaseSet::all_frozen`]; once the mode is NORMAL (after the cluster-lock test),
//!   [`DatabaseSet::process_deferred_attaches`].
//! * Becoming inactive: [`DatabaseSet::become_inactive`] (with the vnn map generation set to
//!   `INVALID_GENERATION` and recovery mode ACTIVE by the daemon).
//! * A local client disconnects: [`DatabaseSet::on_client_closed`], then forward the effects
//!   (TRAVERSE_KILL for its traverses).
//! * STATISTICS `frozen`: [`DatabaseSet::all_frozen`].

mod attach;
mod detach;
mod freeze;
mod ltdb;
pub mod repack;
mod seqnum;
pub mod stats;
pub mod vacuum;
pub use ltdb::lmaster;
pub mod memory;
mod recovery;
pub mod storage;
mod traverse;
pub use traverse::{
    TraverseSink, MAX_LOCAL_TRAVERSES, MAX_ORIGIN_TRAVERSES, TRAVERSE_BACKLOG_LIMIT,
    TRAVERSE_RETRY_INTERVAL, TRAVERSE_STEP_RECORDS,
};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_stock;
#[cfg(test)]
mod tests_traverse;

pub use memory::MemoryBackend;
pub use storage::{db_tdb_flags, DbStore, StorageBackend, TdbBackend};

use super::effect::{ClientId, Pnn};
use crate::common::clock::Instant;
use crate::common::tdb::{TdbError, TdbFlags};
use crate::common::tunable::Tunables;
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::packet::MessageBuffer;
use crate::protocol::types::{db_flags, Dbid, DbidMap, Runstate, VnnMap};
use crate::protocol::Marshal;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};

pub const RECOVERY_NORMAL: u32 = 0;
pub const RECOVERY_ACTIVE: u32 = 1;

/// The persistent-health database in the state directory (`PERSISTENT_HEALTH_TDB`).
pub const PERSISTENT_HEALTH_TDB: &str = "persistent_health.tdb";

/// The record of a persistent database that holds its sequence number (`CTDB_DB_SEQNUM_KEY`,
/// the NUL is part of the key).
pub const DB_SEQNUM_KEY: &[u8] = b"__db_sequence_number__\0";

/// Where the database files live and how volatile ones are locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbConfig {
    pub pnn: Pnn,
    pub volatile_dir: PathBuf,
    pub persistent_dir: PathBuf,
    pub state_dir: PathBuf,
    /// `[database] tdb mutexes`; used only where libtdb supports robust mutexes.
    pub tdb_mutexes: bool,
}

/// The daemon state a database control depends on, passed with every call.
#[derive(Debug, Clone, Copy)]
pub struct DbContext<'a> {
    pub recovery_mode: u32,
    pub runstate: Runstate,
    /// This node's flags (an INACTIVE node refuses local attaches).
    pub own_flags: u32,
    pub vnn_map: &'a VnnMap,
    pub tunables: &'a Tunables,
    /// Nodes whose flags are exactly 0; DB_TRANSACTION_COMMIT passes it to the health update.
    pub healthy_nodes: u32,
    /// Nodes without `NODE_FLAGS_INACTIVE` (`ctdb_get_num_active_nodes`): how many end
    /// records a traverse of a volatile database waits for.
    pub active_nodes: u32,
}

/// One control as the database service needs to see it.
#[derive(Debug, Clone, Copy)]
pub struct DbRequest<'a> {
    pub opcode: ControlOpcode,
    /// The header's `srvid` field.
    pub srvid: u64,
    /// The control flags (`CTRL_FLAG_ATTACH_RECOVERY` matters).
    pub flags: u32,
    pub data: &'a [u8],
    /// The node the control came from (own PNN for local clients).
    pub srcnode: Pnn,
    /// The connected local client that sent it, when it came from one on this node
    /// (`srcnode == own PNN` and `client_id` names a connected client).
    pub client: Option<ClientId>,
}

/// What goes into the REPLY_CONTROL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbReply {
    pub status: i32,
    pub data: Vec<u8>,
    pub error: Option<String>,
}

impl DbReply {
    pub fn status(status: i32) -> Self {
        DbReply {
            status,
            data: Vec::new(),
            error: None,
        }
    }

    pub fn data(data: Vec<u8>) -> Self {
        DbReply {
            status: 0,
            data,
            error: None,
        }
    }

    fn fail() -> Self {
        Self::status(-1)
    }
}

/// Names a control whose reply comes later, as a [`DbEffect::Complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeferredId(pub u64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbControlOutcome {
    /// Not a database control: the daemon handles it.
    NotMine,
    /// Reply now (after forwarding the pending effects).
    Reply(DbReply),
    /// No reply yet; one [`DbEffect::Complete`] with this id follows (unless the requesting
    /// client goes away first, see [`DatabaseSet::on_client_closed`]).
    Deferred(DeferredId),
}

/// Work for the daemon, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbEffect {
    /// A REQ_MESSAGE to `srvid` on node `pnn` (`ctdb_daemon_send_message`); for the own PNN it
    /// is dispatched locally, including to [`DatabaseSet::on_message`].
    SendMessage {
        pnn: Pnn,
        srvid: u64,
        data: MessageBuffer,
    },
    /// A NOREPLY control with srvid 0 and client_id 0 to `BROADCAST_CONNECTED` (after a new
    /// attach, so that every node attaches the database too).
    BroadcastControl {
        opcode: ControlOpcode,
        data: Vec<u8>,
    },
    /// A NOREPLY control with srvid 0 and client_id 0 to `destnode`, a PNN (the own one
    /// included) or `BROADCAST_ACTIVE` (traverses).
    SendControl {
        destnode: u32,
        opcode: ControlOpcode,
        data: Vec<u8>,
    },
    /// A message to the local clients registered for exactly `srvid` (`srvid_dispatch`
    /// without the `CTDB_SRVID_ALL` fan-out): traverse records for their client.
    DispatchLocal { srvid: u64, data: Vec<u8> },
    /// A traverse this node originated timed out (statistics `timeouts.traverse`).
    TraverseTimedOut,
    /// TRY_DELETE_RECORDS to `pnn`; its answer goes to [`DatabaseSet::on_try_delete_reply`].
    TryDeleteRecords {
        pnn: Pnn,
        db_id: u32,
        round: u64,
        data: Vec<u8>,
    },
    /// Migrate a record here for vacuuming (a NULL_FUNC call with `CALL_FLAG_IMMEDIATE_MIGRATION
    /// | CALL_FLAG_VACUUM_MIGRATION`); then [`DatabaseSet::on_vacuum_migrated`].
    VacuumMigrate(vacuum::VacuumMigration),
    /// The same to `BROADCAST_ACTIVE` (UPDATE_SEQNUM).
    BroadcastActiveControl {
        opcode: ControlOpcode,
        data: Vec<u8>,
    },
    /// The reply to a deferred control.
    Complete { id: DeferredId, reply: DbReply },
    /// Kill the running repack helper (a freeze started, `ctdb_stop_vacuuming`).
    StopRepack,
    /// Stock sets the recovery mode to ACTIVE here (DB_SET_HEALTHY of an unhealthy database
    /// during STARTUP).
    SetRecoveryModeActive,
    /// A database was thawed: record requests waiting for it can be resent
    /// (`ctdb_call_resend_db`).
    Thawed { db_id: u32 },
    /// Stock aborts the daemon here (`ctdb_fatal`).
    Fatal { reason: String },
}

/// `CTDB_FREEZE_*` of a database, or of the whole node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezeMode {
    None,
    Pending,
    Frozen,
}

/// Somebody waiting for a database to be frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FreezeWaiter {
    Control(DeferredId),
    /// The node-wide freeze counts this database.
    Global,
}

/// An open DB push (`struct db_push_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PushState {
    srvid: u64,
    num_records: u32,
    failed: bool,
}

/// One attached database (`struct ctdb_db_context`).
#[derive(Debug)]
pub struct Database {
    name: String,
    db_id: u32,
    /// `CTDB_DB_FLAGS_*`.
    flags: u8,
    path: PathBuf,
    generation: u32,
    store: Box<dyn DbStore>,
    freeze_mode: FreezeMode,
    freeze_waiters: Vec<FreezeWaiter>,
    /// The recovery transaction and its id, while one is open.
    freeze_transaction: Option<u32>,
    /// Set by the node-wide freeze of an inactive node: DB_PULL then returns nothing.
    invalid_records: bool,
    push: Option<PushState>,
    unhealthy_reason: Option<String>,
    /// The read-only delegation tracking database `<path>.RO` (SET_DB_READONLY).
    readonly_tracking: Option<Box<dyn DbStore>>,
    /// Set by ENABLE_SEQNUM.
    seqnum_watch: Option<seqnum::SeqnumWatch>,
    /// Delete and fetch queues of a volatile database.
    vacuum: vacuum::VacuumState,
    /// GET_DB_STATISTICS counters and hot keys.
    stats: stats::DbStats,
}

impl Database {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn db_id(&self) -> u32 {
        self.db_id
    }

    pub fn flags(&self) -> u8 {
        self.flags
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    pub fn freeze_mode(&self) -> FreezeMode {
        self.freeze_mode
    }

    pub fn is_persistent(&self) -> bool {
        self.flags & db_flags::PERSISTENT != 0
    }

    pub fn is_replicated(&self) -> bool {
        self.flags & db_flags::REPLICATED != 0
    }

    pub fn is_volatile(&self) -> bool {
        !self.is_persistent() && !self.is_replicated()
    }

    /// `ctdb_db_allow_access`: not frozen, or frozen with the recovery transaction open.
    pub fn allow_access(&self) -> bool {
        self.freeze_mode == FreezeMode::None || self.freeze_transaction.is_some()
    }

    /// The TDB flags the file is open with (DB_OPEN_FLAGS).
    pub fn tdb_flags(&self) -> TdbFlags {
        TdbFlags::from_bits(self.store.tdb_flags())
    }

    /// Direct access to the file, for the record-request and vacuuming code. Check
    /// [`Database::allow_access`] first.
    pub fn stats(&self) -> &stats::DbStats {
        &self.stats
    }

    pub fn stats_mut(&mut self) -> &mut stats::DbStats {
        &mut self.stats
    }

    pub fn store_mut(&mut self) -> &mut dyn DbStore {
        self.store.as_mut()
    }

    /// The read-only delegation tracking database (`rottdb`), open while the database has
    /// the READONLY flag.
    pub fn readonly_tracking_mut(&mut self) -> Option<&mut dyn DbStore> {
        match self.readonly_tracking.as_mut() {
            Some(store) => Some(store.as_mut()),
            None => None,
        }
    }

    pub fn is_readonly(&self) -> bool {
        self.flags & db_flags::READONLY != 0 && self.readonly_tracking.is_some()
    }

    pub fn is_sticky(&self) -> bool {
        self.flags & db_flags::STICKY != 0
    }
}

/// A local attach waiting for the recovery to end (`struct ctdb_deferred_attach_context`).
#[derive(Debug, Clone)]
struct DeferredAttach {
    id: DeferredId,
    opcode: ControlOpcode,
    srvid: u64,
    flags: u32,
    data: Vec<u8>,
    srcnode: Pnn,
    client: ClientId,
    /// `DeferredAttachTO` after the deferral: fail with -1.
    timeout: Instant,
    /// Set when the recovery ended: run the attach again at this time.
    reinject_at: Option<Instant>,
}

/// The node-wide freeze (`struct ctdb_freeze_handle`).
#[derive(Debug, Default)]
struct GlobalFreeze {
    num_total: usize,
    num_locked: usize,
    num_failed: usize,
    waiters: Vec<DeferredId>,
}

/// All attached databases of this node and the recovery state around them.
#[derive(Debug)]
pub struct DatabaseSet {
    config: DbConfig,
    backend: Box<dyn StorageBackend>,
    /// In attach order; stock lists the newest first.
    dbs: Vec<Database>,
    health: Box<dyn DbStore>,
    mutexes_supported: bool,

    global_mode: FreezeMode,
    global: Option<GlobalFreeze>,
    /// When the next attempt to lock pending freezes is due.
    freeze_retry: Option<Instant>,

    deferred_attaches: Vec<DeferredAttach>,
    next_deferred: u64,
    /// The database a repack helper works on.
    repacking: Option<u32>,

    traverses: traverse::Traverses,
    /// DB_PULLs being streamed, see [`recovery::PullWalk`].
    pulls: Vec<recovery::PullWalk>,

    effects: VecDeque<DbEffect>,
}

/// How often a freeze blocked by somebody's chain lock is tried again.
pub const FREEZE_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);
/// Stock re-injects deferred attaches one second after the recovery ends.
const DEFERRED_ATTACH_REINJECT: std::time::Duration = std::time::Duration::from_secs(1);

impl DatabaseSet {
    /// Opens the persistent-health database (`<state dir>/persistent_health.tdb.<pnn>`), as
    /// the first step of stock's `ctdb_attach_databases`. No database is attached yet; see
    /// [`DatabaseSet::attach_persistent_databases`].
    pub fn new(config: DbConfig, mut backend: Box<dyn StorageBackend>) -> Result<Self, TdbError> {
        let health_path = file_in(&config.state_dir, PERSISTENT_HEALTH_TDB, config.pnn);
        let mut health = backend.open(&health_path, 0, TdbFlags::DISALLOW_NESTING)?;
        health.check_integrity()?;
        let mutexes_supported = config.tdb_mutexes && backend.robust_mutexes_supported();
        Ok(DatabaseSet {
            config,
            backend,
            dbs: Vec::new(),
            health,
            mutexes_supported,
            global_mode: FreezeMode::None,
            global: None,
            freeze_retry: None,
            deferred_attaches: Vec::new(),
            next_deferred: 1,
            repacking: None,
            traverses: traverse::Traverses::default(),
            pulls: Vec::new(),
            effects: VecDeque::new(),
        })
    }

    pub fn config(&self) -> &DbConfig {
        &self.config
    }

    pub fn pnn(&self) -> Pnn {
        self.config.pnn
    }

    /// The next effect for the daemon.
    pub fn poll_effect(&mut self) -> Option<DbEffect> {
        self.effects.pop_front()
    }

    /// Attached databases in attach order.
    pub fn databases(&self) -> impl Iterator<Item = &Database> {
        self.dbs.iter()
    }

    pub fn get(&self, db_id: u32) -> Option<&Database> {
        self.dbs.iter().find(|db| db.db_id == db_id)
    }

    pub fn get_mut(&mut self, db_id: u32) -> Option<&mut Database> {
        self.dbs.iter_mut().find(|db| db.db_id == db_id)
    }

    pub fn by_name(&self, name: &str) -> Option<&Database> {
        self.dbs.iter().find(|db| db.name == name)
    }

    pub fn len(&self) -> usize {
        self.dbs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dbs.is_empty()
    }

    /// Local attaches waiting for the recovery to end.
    pub fn deferred_attach_count(&self) -> usize {
        self.deferred_attaches.len()
    }

    fn index_of(&self, db_id: u32) -> Option<usize> {
        self.dbs.iter().position(|db| db.db_id == db_id)
    }

    /// `ctdb_db_allow_access` for `db_id` (false for an unknown database).
    pub fn allow_access(&self, db_id: u32) -> bool {
        self.get(db_id).is_some_and(Database::allow_access)
    }

    /// `ctdb_db_all_frozen`: the node-wide freeze is complete (STATISTICS `frozen`).
    pub fn all_frozen(&self) -> bool {
        self.global_mode == FreezeMode::Frozen
    }

    /// The GET_DBMAP reply: newest database first, as stock's list.
    pub fn dbmap(&self) -> DbidMap {
        DbidMap {
            dbs: self
                .dbs
                .iter()
                .rev()
                .map(|db| Dbid {
                    db_id: db.db_id,
                    flags: db.flags,
                })
                .collect(),
        }
    }

    /// The SET_RECMODE(NORMAL) check: every database must be at the vnn map's generation
    /// (the recovery's DB_TRANSACTION_COMMIT put it there). Logs the first offender.
    pub fn generations_match(&self, vnn_generation: u32) -> bool {
        for db in self.dbs.iter().rev() {
            if db.generation != vnn_generation {
                log::error!(
                    "Inconsistent DB generation {} for {}",
                    db.generation,
                    db.name
                );
                return false;
            }
        }
        true
    }

    /// `ctdb_node_become_inactive`, the database half: every database drops to the invalid
    /// generation and the node-wide freeze starts (stock sends itself a NOREPLY FREEZE).
    pub fn become_inactive(&mut self, now: Instant) {
        for db in &mut self.dbs {
            db.generation = crate::protocol::header::INVALID_GENERATION;
        }
        self.start_global_freeze(now);
    }

    /// A local client went away: its deferred attaches are dropped without a reply.
    pub fn on_client_closed(&mut self, client: ClientId) {
        self.deferred_attaches.retain(|d| d.client != client);
        self.traverse_client_closed(client);
    }

    fn alloc_deferred(&mut self) -> DeferredId {
        let id = DeferredId(self.next_deferred);
        self.next_deferred += 1;
        id
    }

    fn complete(&mut self, id: DeferredId, reply: DbReply) {
        self.effects.push_back(DbEffect::Complete { id, reply });
    }

    /// The earliest instant at which [`DatabaseSet::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let attaches = self
            .deferred_attaches
            .iter()
            .map(|d| d.reinject_at.map_or(d.timeout, |at| at.min(d.timeout)))
            .min();
        [
            self.freeze_retry,
            attaches,
            self.seqnum_timeout(),
            self.traverses.poll_timeout(),
            self.pulls.iter().map(|p| p.due).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether a traverse or pull walk waits for its reader to catch up: the daemon then
    /// offers it a step on every loop turn (any turn may follow a queue draining), not only
    /// when its fallback timer is due.
    pub fn walks_wait_for_readers(&self) -> bool {
        self.pulls.iter().any(|p| p.waiting_for_reader)
            || self.traverses.local_waiting_for_readers()
    }

    /// Runs whatever is due at `now`: freeze retries, deferred-attach timeouts and
    /// re-injections, traverse timeouts and one bounded step of every due traverse walk.
    pub fn handle_timeout(&mut self, now: Instant, ctx: &DbContext<'_>) {
        self.handle_timeout_paced(now, ctx, &|_| false);
    }

    /// [`DatabaseSet::handle_timeout`] where a traverse walk whose records would go to a
    /// `congested` sink waits for a later step.
    pub fn handle_timeout_paced(
        &mut self,
        now: Instant,
        ctx: &DbContext<'_>,
        congested: &dyn Fn(TraverseSink) -> bool,
    ) {
        if self.freeze_retry.is_some_and(|due| now >= due) {
            self.freeze_retry = None;
            self.retry_pending_freezes(now);
        }
        self.run_deferred_attaches(now, ctx);
        self.check_seqnums(now, ctx.tunables.seqnum_interval());
        self.traverse_timeout(now, ctx, congested);
        self.pull_timeout(now, ctx, congested);
    }

    /// Runs a control if it is a database control.
    pub fn handle_control(
        &mut self,
        now: Instant,
        req: &DbRequest<'_>,
        ctx: &DbContext<'_>,
    ) -> DbControlOutcome {
        use ControlOpcode as Op;
        let data = req.data;
        let reply = match req.opcode {
            Op::DbAttach | Op::DbAttachPersistent | Op::DbAttachReplicated => {
                return self.control_db_attach(now, req, ctx);
            }
            Op::GetDbmap => {
                if !data.is_empty() {
                    return invalid_size(req.opcode, data.len(), 0);
                }
                DbReply::data(self.dbmap().to_bytes())
            }
            Op::GetDbname | Op::Getdbpath | Op::DbOpenFlags => {
                let Some(db_id) = exact_u32(data) else {
                    return invalid_size(req.opcode, data.len(), 4);
                };
                let Some(db) = self.get(db_id) else {
                    return DbControlOutcome::Reply(DbReply::fail());
                };
                match req.opcode {
                    Op::GetDbname => DbReply::data(nul_terminated(db.name.as_bytes())),
                    Op::Getdbpath => {
                        DbReply::data(nul_terminated(db.path.as_os_str().as_encoded_bytes()))
                    }
                    _ => DbReply::data(db.store.tdb_flags().to_ne_bytes().to_vec()),
                }
            }
            Op::GetDbSeqnum => {
                // The payload is a u64 on the wire; the db_id is its first four bytes.
                if data.len() != 8 {
                    return invalid_size(req.opcode, data.len(), 8);
                }
                let db_id = data.get(..4).and_then(exact_u32).unwrap_or_default();
                self.control_get_db_seqnum(db_id, ctx)
            }
            Op::GetDbStatistics => {
                let Some(db_id) = exact_u32(data) else {
                    return invalid_size(req.opcode, data.len(), 4);
                };
                match self.get(db_id) {
                    Some(db) => DbReply::data(db.stats.to_wire().to_bytes()),
                    None => {
                        log::error!("Unknown db_id 0x{db_id:x} in get_db_statistics");
                        DbReply::fail()
                    }
                }
            }
            Op::DbGetHealth => {
                let Some(db_id) = exact_u32(data) else {
                    return invalid_size(req.opcode, data.len(), 4);
                };
                self.control_db_get_health(db_id)
            }
            Op::DbSetHealthy => {
                let Some(db_id) = exact_u32(data) else {
                    return invalid_size(req.opcode, data.len(), 4);
                };
                self.control_db_set_healthy(db_id, ctx)
            }
            Op::SetDbReadonly | Op::SetDbSticky => {
                let Some(db_id) = exact_u32(data) else {
                    return invalid_size(req.opcode, data.len(), 4);
                };
                if req.opcode == Op::SetDbReadonly {
                    self.set_db_readonly(db_id, ctx)
                } else {
                    self.set_db_sticky(db_id)
                }
            }
            Op::ScheduleForDeletion => self.control_schedule_for_deletion(data),
            Op::DbVacuum => {
                let recovery_active = ctx.recovery_mode != RECOVERY_NORMAL;
                return self.control_db_vacuum(now, data, recovery_active);
            }
            Op::VacuumFetch => self.control_vacuum_fetch(data),
            Op::TryDeleteRecords => self.control_try_delete_records(data, &ctx.vnn_map.map),
            Op::EnableSeqnum => {
                let Some(db_id) = exact_u32(data) else {
                    return invalid_size(req.opcode, data.len(), 4);
                };
                self.control_enable_seqnum(now, db_id, ctx.tunables.seqnum_interval())
            }
            Op::UpdateSeqnum => {
                let Some(db_id) = exact_u32(data) else {
                    return invalid_size(req.opcode, data.len(), 4);
                };
                self.control_update_seqnum(db_id, req.srcnode)
            }
            Op::Freeze => {
                if !data.is_empty() {
                    return invalid_size(req.opcode, data.len(), 0);
                }
                return self.control_freeze(now);
            }
            Op::DbFreeze => {
                let Some(db_id) = exact_u32(data) else {
                    return invalid_size(req.opcode, data.len(), 4);
                };
                return self.control_db_freeze(now, db_id);
            }
            Op::DbThaw => {
                let Some(db_id) = exact_u32(data) else {
                    return invalid_size(req.opcode, data.len(), 4);
                };
                self.control_db_thaw(db_id)
            }
            Op::DbTransactionStart
            | Op::DbTransactionCommit
            | Op::WipeDatabase
            | Op::DbTransactionCancel
            | Op::DbPull
            | Op::DbPushStart
            | Op::DbPushConfirm => return self.recovery_control(now, req, ctx),
            Op::TraverseStart | Op::TraverseStartExt => self.control_traverse_start(
                now,
                data,
                req.client,
                req.opcode == Op::TraverseStartExt,
                ctx,
            ),
            Op::TraverseAll | Op::TraverseAllExt => {
                self.control_traverse_all(now, data, req.opcode == Op::TraverseAllExt, ctx)
            }
            Op::TraverseData => self.control_traverse_data(data, ctx),
            Op::TraverseKill => self.control_traverse_kill(data),
            Op::DbDetach => self.control_db_detach(data, req.client, ctx),
            _ => return DbControlOutcome::NotMine,
        };
        DbControlOutcome::Reply(reply)
    }
}

impl Drop for DatabaseSet {
    fn drop(&mut self) {
        // Release freeze locks before the files close (robust mutexes must be unlocked while
        // still mapped); the stores' own Drop would do it too, this just logs in one place.
        for db in &mut self.dbs {
            if db.freeze_mode != FreezeMode::None {
                if let Err(e) = db.store.freeze_release() {
                    log::error!("Releasing the freeze of {}: {e}", db.name);
                }
            }
        }
    }
}

/// `CHECK_CONTROL_DATA_SIZE` failing: status -1, logged.
fn invalid_size(opcode: ControlOpcode, got: usize, expected: usize) -> DbControlOutcome {
    log::error!(
        "Invalid data size in opcode {}. Got {got} expected {expected}",
        u32::from(opcode)
    );
    DbControlOutcome::Reply(DbReply::fail())
}

/// `"%s/%s.%u"`, as stock builds database paths: the directory exactly as configured.
fn file_in(dir: &Path, name: &str, pnn: Pnn) -> PathBuf {
    let mut path = dir.as_os_str().to_owned();
    path.push(format!("/{name}.{pnn}"));
    PathBuf::from(path)
}

fn exact_u32(data: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(data).ok().map(u32::from_ne_bytes)
}

fn nul_terminated(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 1);
    out.extend_from_slice(bytes);
    out.push(0);
    out
}

impl DeferredAttach {
    /// The request again, for the re-injection.
    fn request(&self) -> DbRequest<'_> {
        DbRequest {
            opcode: self.opcode,
            srvid: self.srvid,
            flags: self.flags,
            data: &self.data,
            srcnode: self.srcnode,
            client: Some(self.client),
        }
    }
}
