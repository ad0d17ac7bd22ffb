//! The storage boundary of the database service: what `server/ctdb_ltdb_server.c`,
//! `server/ctdb_freeze.c`, `server/ctdb_lock.c` and `server/ctdb_recover.c` do to a TDB, behind
//! a trait so that a simulation can swap libtdb for memory ([`super::memory`]).
//!
//! # The freeze lock lives in this process
//!
//! Stock ctdbd freezes a database by running `ctdb_lock_helper`, a child that takes
//! `tdb_lockall` and holds it; the daemon then only *marks* its own handle locked (or runs with
//! `TDB_NOLOCK`) while it pulls, wipes and pushes. The helper exists so that ctdbd never blocks
//! on a lock an smbd holds. Here the daemon takes the all-record lock itself, with
//! `tdb_lockall_nonblock`, and simply tries again later while somebody holds a chain
//! ([`DbStore::freeze_try_lock`] answers "busy"). The lock is then owned by this process (fcntl)
//! or this thread (robust mutexes) exactly as the helper would own it, so smbd's
//! `tdb_chainlock` blocks and `tdb_chainlock_nonblock` fails until the thaw.
//!
//! To keep libtdb's bookkeeping consistent with a lock it did not take for the transaction code,
//! [`TdbStore`] keeps one invariant while frozen: the handle's all-record count is exactly 1,
//! either from the `tdb_lockall` itself or, inside the recovery transaction, from the
//! transaction (whose own all-record lock was taken with `TDB_NOLOCK`, so it is bookkeeping
//! only). Moving between the two uses `tdb_lockall_unmark`/`tdb_lockall_mark`, which change
//! the count without touching the real lock, and every transaction start, commit and cancel runs
//! with `TDB_NOLOCK` as stock's do. Because the count never drops to 0 outside those calls, no
//! libtdb call made by this process while frozen issues a real unlock (which for fcntl locks
//! would punch a hole into the freeze lock) or waits on its own mutex.
//!
//! # Recovery transactions of databases libtdb clears on open
//!
//! Volatile and replicated databases are opened with `TDB_CLEAR_IF_FIRST`: the first process
//! to open the file wipes it, and smbd exits as soon as its ctdbd dies, so after a crash the
//! restarted daemon starts with an empty file whatever state the old one left it in. A libtdb
//! transaction protects nothing such a file would keep, yet it costs three copies of every page
//! a recovery touches (copy-on-write blocks, the recovery area, the write back) plus a copy of
//! every record read through it. For these databases the recovery transaction
//! ([`FreezeState::FrozenWithUndo`]) is an undo log instead: reads, the wipe and the stores go
//! straight to the file under the freeze lock (the all-record lock covers every chain and the
//! free list, so they take no locks), the first change saves every record in memory, a commit
//! forgets the copy and a cancel puts it back. Persistent databases keep real transactions.
//!
//! Consequences for the rest of the daemon:
//! * This process's own handle does *not* see a frozen database as locked. Code that serves
//!   record requests must ask [`super::DatabaseSet::allow_access`] first, where stock would
//!   find the chain lock taken and queue a lock helper.
//! * fcntl locks belong to the process and are all dropped when the process closes *any*
//!   descriptor of the file. Nothing in the daemon may open a database file other than through
//!   its one handle (libtdb refuses a second `tdb_open` for the same reason) — not even to
//!   read it.

use crate::common::tdb::{self, StoreMode, Tdb, TdbError, TdbErrorCode, TdbFlags, Traverse};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// How far [`DbStore::traverse_chains`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainStep {
    /// Somebody holds a lock that conflicts with reading: nothing was visited, try later.
    Busy,
    /// Continue with this chain.
    More(u32),
    Done,
}

/// One open database file.
pub trait DbStore: fmt::Debug {
    /// `tdb_get_flags` (DB_OPEN_FLAGS).
    fn tdb_flags(&self) -> u32;
    /// `tdb_fetch`.
    fn fetch(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, TdbError>;
    /// `tdb_storev(..., TDB_REPLACE)` of the concatenated parts.
    fn store(&mut self, key: &[u8], parts: &[&[u8]]) -> Result<(), TdbError>;
    /// `tdb_delete`; a missing record fails with `TdbErrorCode::NoExist`.
    fn delete(&mut self, key: &[u8]) -> Result<(), TdbError>;
    /// `tdb_traverse_read` over every record, in the store's order.
    fn traverse_read(&mut self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<usize, TdbError>;
    /// One bounded step of a chain-by-chain walk (the daemon's traverse): visits every record
    /// of hash chains `first_chain..` until at least `budget` records were visited, a whole
    /// chain at a time, under the all-record read lock taken *without waiting* for the step.
    /// A store without hash chains visits everything in the step of chain 0.
    fn traverse_chains(
        &mut self,
        first_chain: u32,
        _budget: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<ChainStep, TdbError> {
        if first_chain == 0 {
            self.traverse_read(visit)?;
        }
        Ok(ChainStep::Done)
    }
    /// One bounded step of DB_PULL's walk of a database frozen in the recovery transaction:
    /// like [`DbStore::traverse_chains`], but under the freeze lock marked for the step (what
    /// DB_PULL's whole-file traverse does), so it never waits and fails where that fails.
    fn pull_chains(
        &mut self,
        first_chain: u32,
        _budget: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<ChainStep, TdbError> {
        if first_chain == 0 {
            self.mark_locked()?;
            let traversed = self.traverse_read(visit);
            let _ = self.unmark_locked();
            traversed?;
        }
        Ok(ChainStep::Done)
    }
    /// `tdb_wipe_all`.
    fn wipe_all(&mut self) -> Result<(), TdbError>;
    /// `tdb_check` without a record checker.
    fn check_integrity(&mut self) -> Result<(), TdbError>;
    /// `tdb_set_max_dead` (`DatabaseMaxDead`).
    fn set_max_dead(&mut self, max_dead: u32);

    /// `tdb_get_seqnum`: changes whenever a writer with `TDB_SEQNUM` stores or deletes.
    fn seqnum(&self) -> u32 {
        0
    }
    /// `tdb_enable_seqnum` (ENABLE_SEQNUM: smbd watches the number to notice remote changes).
    fn enable_seqnum(&mut self) {}
    /// `tdb_increment_seqnum_nonblock` (UPDATE_SEQNUM from another node).
    fn increment_seqnum_nonblock(&mut self) {}

    /// `tdb_chainlock_nonblock` for the record-call path: `Ok(false)` when somebody else (a
    /// client such as smbd) holds the chain, so the daemon retries later instead of blocking.
    fn chain_try_lock(&mut self, _key: &[u8]) -> Result<bool, TdbError> {
        Ok(true)
    }
    /// `tdb_chainunlock` after a successful [`DbStore::chain_try_lock`].
    fn chain_unlock(&mut self, _key: &[u8]) -> Result<(), TdbError> {
        Ok(())
    }

    /// An ordinary (locking) transaction, used for the persistent-health database.
    fn transaction_start(&mut self) -> Result<(), TdbError>;
    fn transaction_commit(&mut self) -> Result<(), TdbError>;
    fn transaction_cancel(&mut self) -> Result<(), TdbError>;

    /// Tries to take the freeze lock without waiting: `Ok(true)` locked, `Ok(false)` somebody
    /// else holds a lock in the way (try again later).
    fn freeze_try_lock(&mut self) -> Result<bool, TdbError>;
    /// Takes the freeze lock, waiting as long as it takes (start-up only, as stock's
    /// `ctdb_blocking_freeze`).
    fn freeze_lock_blocking(&mut self) -> Result<(), TdbError>;
    /// Thaw: cancels an open recovery transaction, drops marks and releases the freeze lock.
    fn freeze_release(&mut self) -> Result<(), TdbError>;
    /// DB_TRANSACTION_START on a frozen database: cancels a previous recovery transaction,
    /// then starts a new one without taking locks (the freeze lock covers everything).
    fn freeze_transaction_start(&mut self) -> Result<(), TdbError>;
    fn freeze_transaction_commit(&mut self) -> Result<(), TdbError>;
    /// Cancels the recovery transaction if there is one.
    fn freeze_transaction_cancel(&mut self) -> Result<(), TdbError>;
    /// `ctdb_lockdb_mark`: lets the traverse of DB_PULL and the stores of a DB push run inside
    /// the recovery transaction. Fails outside one, as libtdb does for stock.
    fn mark_locked(&mut self) -> Result<(), TdbError>;
    fn unmark_locked(&mut self) -> Result<(), TdbError>;
}

/// Where database files come from.
pub trait StorageBackend: fmt::Debug {
    /// `tdb_open(path, hash_size, tdb_flags, O_CREAT|O_RDWR, 0600)`.
    fn open(
        &mut self,
        path: &Path,
        hash_size: u32,
        tdb_flags: TdbFlags,
    ) -> Result<Box<dyn DbStore>, TdbError>;
    /// File names in `dir` in directory order (empty if it cannot be read).
    fn list_dir(&self, dir: &Path) -> Vec<OsString>;
    /// `tdb_runtime_check_for_robust_mutexes`.
    fn robust_mutexes_supported(&self) -> bool;
}

/// The TDB flags a database is opened with (`ctdb_db_tdb_flags`).
pub fn db_tdb_flags(db_flags: u8, mutexes_enabled: bool, mutexes_supported: bool) -> TdbFlags {
    use crate::protocol::types::db_flags::{PERSISTENT, REPLICATED};
    let volatile_base = TdbFlags::NOSYNC | TdbFlags::CLEAR_IF_FIRST | TdbFlags::INCOMPATIBLE_HASH;
    let flags = if db_flags & PERSISTENT != 0 {
        TdbFlags::DEFAULT
    } else if db_flags & REPLICATED != 0 {
        volatile_base
    } else if mutexes_enabled && mutexes_supported {
        volatile_base | TdbFlags::MUTEX_LOCKING
    } else {
        volatile_base
    };
    flags | TdbFlags::DISALLOW_NESTING
}

// ------------------------------------------------------------------------------------------
// libtdb

/// The real thing: files opened with the system libtdb.
#[derive(Debug, Default)]
pub struct TdbBackend;

impl StorageBackend for TdbBackend {
    fn open(
        &mut self,
        path: &Path,
        hash_size: u32,
        tdb_flags: TdbFlags,
    ) -> Result<Box<dyn DbStore>, TdbError> {
        let tdb = Tdb::open(
            path,
            hash_size,
            tdb_flags,
            libc::O_CREAT | libc::O_RDWR,
            0o600,
        )?;
        // libtdb drops flags it does not need for an existing file (MUTEX_LOCKING among them);
        // stock adds them back so that DB_OPEN_FLAGS tells smbd what to open with.
        tdb.add_flags(tdb_flags);
        Ok(Box::new(TdbStore {
            tdb,
            state: FreezeState::Thawed,
            marked: false,
            wiped: false,
            undo_transactions: tdb_flags.contains(TdbFlags::CLEAR_IF_FIRST),
            undo: None,
        }))
    }

    fn list_dir(&self, dir: &Path) -> Vec<OsString> {
        match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn robust_mutexes_supported(&self) -> bool {
        tdb::robust_mutexes_supported()
    }
}

/// Where a [`TdbStore`] is in the freeze protocol; see the module documentation for what the
/// handle's all-record count is in each state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FreezeState {
    Thawed,
    /// This process holds the all-record lock; count 1 from `tdb_lockall`.
    Frozen,
    /// Frozen with the recovery transaction open; count 1 from the transaction.
    FrozenInTransaction,
    /// Frozen with the recovery transaction of a database libtdb clears on open: count 1 from
    /// `tdb_lockall`, changes go to the file, [`TdbStore::undo`] can take them back.
    FrozenWithUndo,
}

/// Every record of a database as it was before the recovery transaction changed it.
///
/// Records are kept in chunks that are never reallocated, so saving a record copies it once.
#[derive(Debug, Default)]
struct UndoLog {
    chunks: Vec<Vec<u8>>,
    /// Key length and data length of each record, in order; a record never spans chunks.
    lengths: Vec<(usize, usize)>,
    /// The next chain to save while a DB_PULL walk builds the log; `None` once every chain is
    /// saved.
    next_chain: Option<u32>,
}

impl UndoLog {
    const CHUNK_BYTES: usize = 1 << 20;

    fn save(&mut self, key: &[u8], data: &[u8]) {
        let len = key.len() + data.len();
        let fits = self
            .chunks
            .last()
            .is_some_and(|chunk| chunk.capacity() - chunk.len() >= len);
        if !fits {
            self.chunks
                .push(Vec::with_capacity(len.max(Self::CHUNK_BYTES)));
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.extend_from_slice(key);
            chunk.extend_from_slice(data);
        }
        self.lengths.push((key.len(), data.len()));
    }

    fn is_complete(&self) -> bool {
        self.next_chain.is_none()
    }

    fn records(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut chunk = 0;
        let mut at = 0;
        self.lengths.iter().map(move |&(key_len, data_len)| {
            let len = key_len + data_len;
            if self.chunks.get(chunk).is_some_and(|c| c.len() < at + len) {
                chunk += 1;
                at = 0;
            }
            let record = self
                .chunks
                .get(chunk)
                .and_then(|c| c.get(at..at + len))
                .unwrap_or_default();
            at += len;
            record.split_at(key_len.min(record.len()))
        })
    }
}

pub struct TdbStore {
    tdb: Tdb,
    state: FreezeState,
    /// `ctdb_lockdb_mark` in effect (count 2 plus the transaction-lock mark).
    marked: bool,
    /// The open recovery transaction wiped the database: it holds only what was stored since,
    /// so a store first tries `TDB_INSERT`, which skips libtdb's search for an old copy to
    /// update in place and its delete of one (a recovery pushes each key once per node).
    wiped: bool,
    /// Recovery transactions use an undo log instead of a libtdb transaction (see the module
    /// documentation): the file is opened with `TDB_CLEAR_IF_FIRST`.
    undo_transactions: bool,
    /// In [`FreezeState::FrozenWithUndo`]: the records as the transaction found them, saved
    /// by the first change or, as it goes, by a DB_PULL walk from the first chain.
    undo: Option<UndoLog>,
}

impl fmt::Debug for TdbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TdbStore")
            .field("path", &self.tdb.name_lossy())
            .field("state", &self.state)
            .field("marked", &self.marked)
            .field("wiped", &self.wiped)
            .field("undo_transactions", &self.undo_transactions)
            .finish_non_exhaustive()
    }
}

impl TdbStore {
    pub fn path(&self) -> PathBuf {
        PathBuf::from(self.tdb.name_lossy())
    }

    fn not_frozen(&self, op: &'static str) -> TdbError {
        TdbError {
            op,
            name: self.tdb.name_lossy(),
            code: TdbErrorCode::Lock,
            errno: None,
            message: "database is not frozen".to_owned(),
        }
    }

    /// Drops the `ctdb_lockdb_mark` marks if they are in effect.
    fn drop_marks(&mut self) {
        if self.marked {
            self.marked = false;
            if let Err(e) = self.tdb.transaction_write_lock_unmark() {
                log::error!("{e}");
            }
            if let Err(e) = self.tdb.lockall_unmark() {
                log::error!("{e}");
            }
        }
    }

    /// Cancels the recovery transaction with `TDB_NOLOCK`; libtdb releases its bookkeeping
    /// (count 0, marks gone), so the count is put back to 1 with a mark.
    fn cancel_recovery_transaction(&mut self) -> Result<(), TdbError> {
        self.wiped = false;
        let result = self
            .tdb
            .with_flags(TdbFlags::NOLOCK, Tdb::transaction_cancel);
        self.marked = false;
        self.restore_frozen_count();
        result
    }

    /// Before the first change inside an undo-log transaction: saves every record (unless a
    /// pull walk already did).
    fn save_for_undo(&mut self) -> Result<(), TdbError> {
        if self.state != FreezeState::FrozenWithUndo
            || self.undo.as_ref().is_some_and(UndoLog::is_complete)
        {
            return Ok(());
        }
        let mut undo = UndoLog::default();
        // The freeze lock covers every chain, so the walk takes no lock of its own.
        let (_, result) = walk_chains(&self.tdb, 0, usize::MAX, &mut |key, data| {
            undo.save(key, data)
        });
        result?;
        self.undo = Some(undo);
        Ok(())
    }

    /// Ends an undo-log transaction; with `restore`, the database holds again what it held
    /// when the transaction started.
    fn end_undo_transaction(&mut self, restore: bool) -> Result<(), TdbError> {
        self.state = FreezeState::Frozen;
        self.wiped = false;
        let Some(undo) = self.undo.take() else {
            return Ok(());
        };
        if !restore {
            return Ok(());
        }
        self.tdb.wipe_all()?;
        let mut first_error = None;
        for (key, data) in undo.records() {
            if let Err(e) = self.tdb.store_parts(key, &[data], StoreMode::Insert) {
                log::error!("Restoring a record after a cancelled recovery: {e}");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Ends the recovery transaction without committing it, whichever kind is open; the
    /// database is left frozen (or thawed, if it was).
    fn cancel_open_transaction(&mut self) -> Result<(), TdbError> {
        match self.state {
            FreezeState::FrozenInTransaction => self.cancel_recovery_transaction(),
            FreezeState::FrozenWithUndo => self.end_undo_transaction(true),
            FreezeState::Frozen => {
                self.drop_marks();
                Ok(())
            }
            FreezeState::Thawed => Ok(()),
        }
    }

    fn restore_frozen_count(&mut self) {
        self.state = FreezeState::Frozen;
        if let Err(e) = self.tdb.lockall_mark() {
            // Cannot happen with no other locks held; if it did, the thaw would find the count
            // at 0 and leave the lock to the process exit.
            log::error!("Failed to restore the freeze lock count: {e}");
        }
    }
}

impl DbStore for TdbStore {
    fn tdb_flags(&self) -> u32 {
        self.tdb.flags().bits()
    }

    fn fetch(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, TdbError> {
        self.tdb.fetch(key)
    }

    fn store(&mut self, key: &[u8], parts: &[&[u8]]) -> Result<(), TdbError> {
        self.save_for_undo()?;
        if self.wiped {
            // A key stored twice since the wipe (a helper that pushes duplicates) is replaced.
            match self.tdb.store_parts(key, parts, StoreMode::Insert) {
                Err(e) if e.code == TdbErrorCode::Exists => {}
                done => return done,
            }
        }
        self.tdb.store_parts(key, parts, StoreMode::Replace)
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), TdbError> {
        self.save_for_undo()?;
        self.tdb.delete(key)
    }

    fn seqnum(&self) -> u32 {
        self.tdb.seqnum()
    }

    fn enable_seqnum(&mut self) {
        self.tdb.enable_seqnum();
    }

    fn increment_seqnum_nonblock(&mut self) {
        self.tdb.increment_seqnum_nonblock();
    }

    fn chain_try_lock(&mut self, key: &[u8]) -> Result<bool, TdbError> {
        match self.tdb.chainlock_nonblock(key) {
            Ok(()) => Ok(true),
            Err(e) if e.is_lock_failure() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn chain_unlock(&mut self, key: &[u8]) -> Result<(), TdbError> {
        self.tdb.chainunlock(key)
    }

    fn traverse_read(&mut self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<usize, TdbError> {
        self.tdb.traverse_read(|k, v| {
            visit(k, v);
            Traverse::Continue
        })
    }

    fn traverse_chains(
        &mut self,
        first_chain: u32,
        budget: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<ChainStep, TdbError> {
        let hash_size = self.tdb.hash_size();
        if first_chain >= hash_size {
            return Ok(ChainStep::Done);
        }
        // With the all-record read lock held, tdb_traverse_chain's own chain lock is covered
        // and never waits; without it, a chain held by a client would block the daemon.
        if let Err(e) = self.tdb.lockall_read_nonblock() {
            log::debug!("Traverse step of {} postponed: {e}", self.tdb.name_lossy());
            return Ok(ChainStep::Busy);
        }
        let (chain, result) = walk_chains(&self.tdb, first_chain, budget, visit);
        if let Err(e) = self.tdb.unlockall_read() {
            log::error!(
                "Releasing the traverse lock of {}: {e}",
                self.tdb.name_lossy()
            );
        }
        result?;
        Ok(step_after(chain, hash_size))
    }

    fn pull_chains(
        &mut self,
        first_chain: u32,
        budget: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<ChainStep, TdbError> {
        let hash_size = self.tdb.hash_size();
        if first_chain >= hash_size {
            return Ok(ChainStep::Done);
        }
        self.mark_locked()?;
        // A pull walks every record of the unchanged database in chain order: the undo log
        // of the transaction is a copy of what it visits, so the first change need not walk
        // the database again.
        let saving = self.state == FreezeState::FrozenWithUndo
            && match &self.undo {
                None => first_chain == 0,
                Some(undo) => undo.next_chain == Some(first_chain),
            };
        let (chain, result) = if saving {
            let undo = self.undo.get_or_insert_with(|| UndoLog {
                next_chain: Some(0),
                ..UndoLog::default()
            });
            walk_chains(&self.tdb, first_chain, budget, &mut |key, data| {
                undo.save(key, data);
                visit(key, data);
            })
        } else {
            walk_chains(&self.tdb, first_chain, budget, visit)
        };
        self.drop_marks();
        if let Err(e) = result {
            if saving {
                self.undo = None;
            }
            return Err(e);
        }
        let step = step_after(chain, hash_size);
        if saving {
            if let Some(undo) = self.undo.as_mut() {
                undo.next_chain = match step {
                    ChainStep::More(next) => Some(next),
                    _ => None,
                };
            }
        }
        Ok(step)
    }

    fn wipe_all(&mut self) -> Result<(), TdbError> {
        self.save_for_undo()?;
        self.tdb.wipe_all()?;
        // Outside the recovery transaction other processes may store at any time.
        self.wiped = matches!(
            self.state,
            FreezeState::FrozenInTransaction | FreezeState::FrozenWithUndo
        );
        Ok(())
    }

    fn check_integrity(&mut self) -> Result<(), TdbError> {
        self.tdb.check_integrity()
    }

    fn set_max_dead(&mut self, max_dead: u32) {
        self.tdb.set_max_dead(max_dead);
    }

    fn transaction_start(&mut self) -> Result<(), TdbError> {
        self.tdb.transaction_start()
    }

    fn transaction_commit(&mut self) -> Result<(), TdbError> {
        self.tdb.transaction_commit()
    }

    fn transaction_cancel(&mut self) -> Result<(), TdbError> {
        self.tdb.transaction_cancel()
    }

    fn freeze_try_lock(&mut self) -> Result<bool, TdbError> {
        if self.state != FreezeState::Thawed {
            return Ok(true);
        }
        match self.tdb.lockall_nonblock() {
            Ok(()) => {
                self.state = FreezeState::Frozen;
                Ok(true)
            }
            Err(e) if e.is_lock_failure() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn freeze_lock_blocking(&mut self) -> Result<(), TdbError> {
        if self.state == FreezeState::Thawed {
            self.tdb.lockall()?;
            self.state = FreezeState::Frozen;
        }
        Ok(())
    }

    fn freeze_release(&mut self) -> Result<(), TdbError> {
        if self.state == FreezeState::Thawed {
            return Ok(());
        }
        if let Err(e) = self.cancel_open_transaction() {
            log::error!("{e}");
        }
        self.state = FreezeState::Thawed;
        self.tdb.unlockall()
    }

    fn freeze_transaction_start(&mut self) -> Result<(), TdbError> {
        if self.state == FreezeState::Thawed {
            return Err(self.not_frozen("tdb_transaction_start"));
        }
        if let Err(e) = self.cancel_open_transaction() {
            log::error!("{e}");
        }
        if self.undo_transactions {
            self.state = FreezeState::FrozenWithUndo;
            return Ok(());
        }
        // Count 1 -> 0 without releasing anything, so that libtdb sees no locks held.
        self.tdb.lockall_unmark()?;
        match self
            .tdb
            .with_flags(TdbFlags::NOLOCK, Tdb::transaction_start)
        {
            Ok(()) => {
                self.state = FreezeState::FrozenInTransaction;
                Ok(())
            }
            Err(e) => {
                self.restore_frozen_count();
                Err(e)
            }
        }
    }

    fn freeze_transaction_commit(&mut self) -> Result<(), TdbError> {
        if self.state == FreezeState::FrozenWithUndo {
            return self.end_undo_transaction(false);
        }
        if self.state != FreezeState::FrozenInTransaction {
            return Err(self.not_frozen("tdb_transaction_commit"));
        }
        self.wiped = false;
        let result = self
            .tdb
            .with_flags(TdbFlags::NOLOCK, Tdb::transaction_commit);
        if self.tdb.transaction_active() {
            // A failed commit that left the transaction open: cancel it to keep the invariant.
            let _ = self
                .tdb
                .with_flags(TdbFlags::NOLOCK, Tdb::transaction_cancel);
        }
        self.marked = false;
        self.restore_frozen_count();
        result
    }

    fn freeze_transaction_cancel(&mut self) -> Result<(), TdbError> {
        self.cancel_open_transaction()
    }

    fn mark_locked(&mut self) -> Result<(), TdbError> {
        match self.state {
            FreezeState::Thawed => Err(self.not_frozen("tdb_lockall_mark")),
            // libtdb refuses the all-record mark next to the transaction-lock mark outside a
            // transaction, so stock's DB_PULL and DB_PUSH_START fail there; say so the same way.
            FreezeState::Frozen => Err(TdbError {
                op: "tdb_lockall_mark",
                name: self.tdb.name_lossy(),
                code: TdbErrorCode::Lock,
                errno: None,
                message: "locking error".to_owned(),
            }),
            // No libtdb transaction, so nothing to mark: the freeze lock covers the walk.
            FreezeState::FrozenWithUndo => Ok(()),
            FreezeState::FrozenInTransaction => {
                if self.marked {
                    return Ok(());
                }
                self.tdb.transaction_write_lock_mark()?;
                if let Err(e) = self.tdb.lockall_mark() {
                    let _ = self.tdb.transaction_write_lock_unmark();
                    return Err(e);
                }
                self.marked = true;
                Ok(())
            }
        }
    }

    fn unmark_locked(&mut self) -> Result<(), TdbError> {
        self.drop_marks();
        Ok(())
    }
}

/// Visits every record of chains `first_chain..` until at least `budget` records were seen,
/// a whole chain at a time, under locks the caller holds. Returns the next chain to visit
/// and how the walk ended.
fn walk_chains(
    tdb: &Tdb,
    first_chain: u32,
    budget: usize,
    visit: &mut dyn FnMut(&[u8], &[u8]),
) -> (u32, Result<(), TdbError>) {
    let hash_size = tdb.hash_size();
    let mut visited = 0;
    let mut chain = first_chain;
    while chain < hash_size && visited < budget {
        match tdb.traverse_chain(chain, |k, v| {
            visit(k, v);
            Traverse::Continue
        }) {
            Ok(n) => visited += n,
            Err(e) => return (chain, Err(e)),
        }
        chain += 1;
    }
    (chain, Ok(()))
}

fn step_after(chain: u32, hash_size: u32) -> ChainStep {
    if chain >= hash_size {
        ChainStep::Done
    } else {
        ChainStep::More(chain)
    }
}

impl Drop for TdbStore {
    fn drop(&mut self) {
        // A robust mutex still held when the mapping goes away stays locked for everybody.
        if self.state != FreezeState::Thawed {
            if let Err(e) = self.freeze_release() {
                log::error!("Releasing the freeze lock on close: {e}");
            }
        }
    }
}
