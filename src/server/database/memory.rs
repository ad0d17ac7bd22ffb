//! An in-memory [`StorageBackend`] for simulations and fast tests: a shared map of "files",
//! each an ordered key/value map. It keeps the parts of TDB behaviour the database service
//! relies on — `CLEAR_IF_FIRST` wipes on open when nobody else has the file open, transactions
//! commit or roll back as a whole, the freeze lock can be reported busy — and nothing else.

use super::storage::{DbStore, StorageBackend};
use crate::common::tdb::{TdbError, TdbErrorCode, TdbFlags};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::rc::Rc;

type Records = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Default)]
struct MemFile {
    records: Records,
    /// Open handles (for `CLEAR_IF_FIRST`).
    opens: usize,
    /// `tdb_get_seqnum`: bumped by every committed change (as if `TDB_SEQNUM` were set) and
    /// by [`MemoryBackend::bump_seqnum`].
    seqnum: u32,
}

#[derive(Debug, Default)]
struct MemFs {
    files: BTreeMap<PathBuf, MemFile>,
    /// Files whose freeze lock attempts report "busy", as if an smbd held a chain lock.
    busy: BTreeSet<PathBuf>,
}

/// A shared in-memory file system; clones see the same files.
#[derive(Debug, Clone, Default)]
pub struct MemoryBackend {
    fs: Rc<RefCell<MemFs>>,
    mutexes_supported: bool,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the simulated libtdb claims robust-mutex support (default: no).
    pub fn with_mutexes_supported(mut self, supported: bool) -> Self {
        self.mutexes_supported = supported;
        self
    }

    /// Makes freeze attempts on `path` fail as busy (or succeed again).
    pub fn set_busy(&self, path: &Path, busy: bool) {
        let mut fs = self.fs.borrow_mut();
        if busy {
            fs.busy.insert(path.to_path_buf());
        } else {
            fs.busy.remove(path);
        }
    }

    /// Creates (or replaces) a file with the given records, as a previous run would have left it.
    pub fn put_file(&self, path: &Path, records: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) {
        let mut fs = self.fs.borrow_mut();
        let file = fs.files.entry(path.to_path_buf()).or_default();
        file.records = records.into_iter().collect();
    }

    /// Bumps a file's sequence number, as a client's write with `TDB_SEQNUM` would.
    pub fn bump_seqnum(&self, path: &Path) {
        let mut fs = self.fs.borrow_mut();
        let file = fs.files.entry(path.to_path_buf()).or_default();
        file.seqnum = file.seqnum.wrapping_add(1);
    }

    /// A file's sequence number.
    pub fn seqnum(&self, path: &Path) -> u32 {
        self.fs.borrow().files.get(path).map_or(0, |f| f.seqnum)
    }

    /// The committed records of a file, `None` if it does not exist.
    pub fn file_records(&self, path: &Path) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
        let fs = self.fs.borrow();
        fs.files.get(path).map(|f| {
            f.records
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }
}

impl StorageBackend for MemoryBackend {
    fn open(
        &mut self,
        path: &Path,
        _hash_size: u32,
        tdb_flags: TdbFlags,
    ) -> Result<Box<dyn DbStore>, TdbError> {
        let mut fs = self.fs.borrow_mut();
        let file = fs.files.entry(path.to_path_buf()).or_default();
        if file.opens == 0 && tdb_flags.contains(TdbFlags::CLEAR_IF_FIRST) {
            file.records.clear();
        }
        file.opens += 1;
        Ok(Box::new(MemoryStore {
            fs: Rc::clone(&self.fs),
            path: path.to_path_buf(),
            flags: tdb_flags.bits(),
            frozen: false,
            transaction: None,
        }))
    }

    fn list_dir(&self, dir: &Path) -> Vec<OsString> {
        let fs = self.fs.borrow();
        fs.files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(ToOwned::to_owned))
            .collect()
    }

    fn robust_mutexes_supported(&self) -> bool {
        self.mutexes_supported
    }
}

fn error(op: &'static str, path: &Path, code: TdbErrorCode, message: &str) -> TdbError {
    TdbError {
        op,
        name: path.display().to_string(),
        code,
        errno: None,
        message: message.to_owned(),
    }
}

#[derive(Debug)]
struct MemoryStore {
    fs: Rc<RefCell<MemFs>>,
    path: PathBuf,
    flags: u32,
    frozen: bool,
    /// The records as the open transaction sees them.
    transaction: Option<Records>,
}

impl MemoryStore {
    fn with_records<R>(&mut self, f: impl FnOnce(&mut Records) -> R) -> R {
        if let Some(records) = self.transaction.as_mut() {
            return f(records);
        }
        let mut fs = self.fs.borrow_mut();
        let file = fs.files.entry(self.path.clone()).or_default();
        f(&mut file.records)
    }

    fn err(&self, op: &'static str, code: TdbErrorCode, message: &str) -> TdbError {
        error(op, &self.path, code, message)
    }

    fn start(&mut self, op: &'static str) -> Result<(), TdbError> {
        if self.transaction.is_some() {
            return Err(self.err(op, TdbErrorCode::Nesting, "transaction already started"));
        }
        let snapshot = self.with_records(|r| r.clone());
        self.transaction = Some(snapshot);
        Ok(())
    }

    fn commit(&mut self, op: &'static str) -> Result<(), TdbError> {
        let Some(records) = self.transaction.take() else {
            return Err(self.err(op, TdbErrorCode::Einval, "no transaction"));
        };
        self.with_records(|r| *r = records);
        Ok(())
    }
}

impl DbStore for MemoryStore {
    fn tdb_flags(&self) -> u32 {
        self.flags
    }

    fn seqnum(&self) -> u32 {
        self.fs
            .borrow()
            .files
            .get(&self.path)
            .map_or(0, |f| f.seqnum)
    }

    fn increment_seqnum_nonblock(&mut self) {
        let mut fs = self.fs.borrow_mut();
        let file = fs.files.entry(self.path.clone()).or_default();
        file.seqnum = file.seqnum.wrapping_add(1);
    }

    fn fetch(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, TdbError> {
        Ok(self.with_records(|r| r.get(key).cloned()))
    }

    fn store(&mut self, key: &[u8], parts: &[&[u8]]) -> Result<(), TdbError> {
        let value = parts.concat();
        self.with_records(|r| r.insert(key.to_vec(), value));
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), TdbError> {
        match self.with_records(|r| r.remove(key)) {
            Some(_) => Ok(()),
            None => Err(self.err("tdb_delete", TdbErrorCode::NoExist, "Record does not exist")),
        }
    }

    fn traverse_read(&mut self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<usize, TdbError> {
        let records: Vec<(Vec<u8>, Vec<u8>)> =
            self.with_records(|r| r.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        for (k, v) in &records {
            visit(k, v);
        }
        Ok(records.len())
    }

    fn wipe_all(&mut self) -> Result<(), TdbError> {
        self.with_records(BTreeMap::clear);
        Ok(())
    }

    fn check_integrity(&mut self) -> Result<(), TdbError> {
        Ok(())
    }

    fn set_max_dead(&mut self, _max_dead: u32) {}

    fn transaction_start(&mut self) -> Result<(), TdbError> {
        self.start("tdb_transaction_start")
    }

    fn transaction_commit(&mut self) -> Result<(), TdbError> {
        self.commit("tdb_transaction_commit")
    }

    fn transaction_cancel(&mut self) -> Result<(), TdbError> {
        self.transaction = None;
        Ok(())
    }

    fn freeze_try_lock(&mut self) -> Result<bool, TdbError> {
        if !self.frozen {
            if self.fs.borrow().busy.contains(&self.path) {
                return Ok(false);
            }
            self.frozen = true;
        }
        Ok(true)
    }

    fn freeze_lock_blocking(&mut self) -> Result<(), TdbError> {
        self.frozen = true;
        Ok(())
    }

    fn freeze_release(&mut self) -> Result<(), TdbError> {
        self.transaction = None;
        self.frozen = false;
        Ok(())
    }

    fn freeze_transaction_start(&mut self) -> Result<(), TdbError> {
        if !self.frozen {
            return Err(self.err("tdb_transaction_start", TdbErrorCode::Lock, "not frozen"));
        }
        self.transaction = None;
        self.start("tdb_transaction_start")
    }

    fn freeze_transaction_commit(&mut self) -> Result<(), TdbError> {
        self.commit("tdb_transaction_commit")
    }

    fn freeze_transaction_cancel(&mut self) -> Result<(), TdbError> {
        self.transaction = None;
        Ok(())
    }

    fn mark_locked(&mut self) -> Result<(), TdbError> {
        if self.frozen && self.transaction.is_some() {
            Ok(())
        } else {
            Err(self.err("tdb_lockall_mark", TdbErrorCode::Lock, "locking error"))
        }
    }

    fn unmark_locked(&mut self) -> Result<(), TdbError> {
        Ok(())
    }
}

impl Drop for MemoryStore {
    fn drop(&mut self) {
        let mut fs = self.fs.borrow_mut();
        if let Some(file) = fs.files.get_mut(&self.path) {
            file.opens = file.opens.saturating_sub(1);
        }
    }
}
