//! Attaching to a database and fetch-locking volatile records from the client side (mirrors
//! `ctdb_attach_send`, `ctdb_fetch_lock_send` and `ctdb_store_record` in
//! `ctdb/client/client_db.c`, and the volatile path of `source3/lib/dbwrap/dbwrap_ctdb.c`).
//!
//! This is what smbd does for every volatile record it touches: open the daemon's local TDB
//! file itself (path from GETDBPATH, flags from DB_OPEN_FLAGS), take the record's chain lock
//! and look at the 24-byte `ctdb_ltdb_header`. When this node is the record's dmaster the
//! record is used (and may be rewritten) under the chain lock; otherwise the lock is dropped,
//! the daemon is asked to migrate the record here (REQ_CALL, `NULL_FUNC`,
//! `CTDB_IMMEDIATE_MIGRATION`), and the check starts again when the REPLY_CALL arrives.
//!
//! The chain lock is libtdb's: fcntl byte ranges, or robust mutexes when the daemon opened the
//! database with `TDB_MUTEX_LOCKING`. Fcntl locks belong to the process, so two handles of one
//! node's database in one process would not exclude each other; libtdb refuses to open the
//! same file twice in a process anyway. Contending clients of one node must be separate
//! processes, as smbd's are.

use super::{Client, ClientError, DEFAULT_TIMEOUT};
use crate::common::tdb::{StoreMode, Tdb, TdbError, TdbFlags};
use crate::protocol::header::CURRENT_NODE;
use crate::protocol::ltdb::{
    LtdbHeader, LTDB_HEADER_LEN, REC_RO_HAVE_DELEGATIONS, REC_RO_HAVE_READONLY,
};
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::packet::{
    ReqCall, CALL_FLAG_IMMEDIATE_MIGRATION, CALL_FLAG_WANT_READONLY, NULL_FUNC,
};
use crate::protocol::Marshal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub enum DbError {
    Client(ClientError),
    Tdb(TdbError),
    /// A control answered with a failure status.
    Control {
        opcode: ControlOpcode,
        status: i32,
        message: Option<String>,
    },
    /// The daemon's migration call failed (REPLY_CALL status, or REPLY_ERROR).
    Call {
        status: i32,
    },
    /// The local record is shorter than its header.
    Corrupt {
        len: usize,
    },
    /// The record did not become ours within the time allowed.
    Timeout {
        migrations: u32,
    },
    /// A record obtained as a read-only copy cannot be changed.
    ReadOnly,
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::Client(e) => write!(f, "{e}"),
            DbError::Tdb(e) => write!(f, "{e}"),
            DbError::Control {
                opcode,
                status,
                message,
            } => write!(
                f,
                "control {} failed with status {status}{}",
                opcode.name(),
                message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
            DbError::Call { status } => write!(f, "migration call failed with status {status}"),
            DbError::Corrupt { len } => {
                write!(f, "local record of {len} bytes has no complete header")
            }
            DbError::Timeout { migrations } => {
                write!(f, "record not migrated here after {migrations} call(s)")
            }
            DbError::ReadOnly => write!(f, "record is a read-only copy"),
        }
    }
}

impl std::error::Error for DbError {}

impl From<ClientError> for DbError {
    fn from(e: ClientError) -> Self {
        DbError::Client(e)
    }
}

impl From<TdbError> for DbError {
    fn from(e: TdbError) -> Self {
        DbError::Tdb(e)
    }
}

/// What the chain-locked look at a local record says (`ctdb_fetch_lock_check`, read/write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalRecord {
    /// This node is the dmaster: the record (header and data) may be used.
    Ours { header: LtdbHeader, data: Vec<u8> },
    /// The record must be migrated here first.
    Elsewhere,
}

/// Classifies a local record for a read/write fetch-lock on node `pnn`: a missing record, a
/// record another node masters, and one with read-only delegations out all need a migration
/// (the migration revokes the delegations).
pub fn classify(record: Option<&[u8]>, pnn: u32) -> Result<LocalRecord, DbError> {
    let Some(bytes) = record else {
        return Ok(LocalRecord::Elsewhere);
    };
    let (header, used) =
        LtdbHeader::pull(bytes).map_err(|_| DbError::Corrupt { len: bytes.len() })?;
    if header.dmaster != pnn || header.flags & REC_RO_HAVE_DELEGATIONS != 0 {
        return Ok(LocalRecord::Elsewhere);
    }
    Ok(LocalRecord::Ours {
        header,
        data: bytes.get(used..).unwrap_or_default().to_vec(),
    })
}

/// Classifies a local record for a read-only fetch-lock on node `pnn`: the dmaster's record
/// and read-only copies (either side of a delegation) may be read; anything else needs a
/// read-only request to the dmaster.
pub fn classify_readonly(record: Option<&[u8]>, pnn: u32) -> Result<LocalRecord, DbError> {
    let Some(bytes) = record else {
        return Ok(LocalRecord::Elsewhere);
    };
    let (header, used) =
        LtdbHeader::pull(bytes).map_err(|_| DbError::Corrupt { len: bytes.len() })?;
    if header.dmaster != pnn && header.flags & (REC_RO_HAVE_READONLY | REC_RO_HAVE_DELEGATIONS) == 0
    {
        return Ok(LocalRecord::Elsewhere);
    }
    Ok(LocalRecord::Ours {
        header,
        data: bytes.get(used..).unwrap_or_default().to_vec(),
    })
}

/// The REQ_CALL a read-only fetch-lock sends: a migration call that asks for a delegation.
pub fn readonly_call(db_id: u32, key: &[u8]) -> ReqCall {
    let mut call = migration_call(db_id, key);
    call.flags |= CALL_FLAG_WANT_READONLY;
    call
}

/// The REQ_CALL a fetch-lock sends when the record lives elsewhere.
pub fn migration_call(db_id: u32, key: &[u8]) -> ReqCall {
    ReqCall {
        flags: CALL_FLAG_IMMEDIATE_MIGRATION,
        db_id,
        callid: NULL_FUNC,
        hopcount: 0,
        key: key.to_vec(),
        calldata: Vec::new(),
    }
}

/// A database attached through one daemon, with its local TDB file open in this process.
#[derive(Debug)]
pub struct DbHandle {
    name: String,
    db_id: u32,
    pnn: u32,
    path: PathBuf,
    tdb: Tdb,
}

impl DbHandle {
    /// Attaches the volatile database `name` (creating it cluster-wide if needed) and opens
    /// its local file with the daemon's open flags, as `ctdb_attach` does.
    pub fn attach(client: &mut Client, name: &str) -> Result<DbHandle, DbError> {
        let pnn = client.get_pnn()?;
        let mut cname = name.as_bytes().to_vec();
        cname.push(0);
        let reply = checked_control(client, ControlOpcode::DbAttach, cname)?;
        let db_id = u32_of(&reply, ControlOpcode::DbAttach)?;
        let id = db_id.to_ne_bytes().to_vec();
        let reply = checked_control(client, ControlOpcode::Getdbpath, id.clone())?;
        let path_bytes = reply.split(|&b| b == 0).next().unwrap_or_default();
        let path = PathBuf::from(String::from_utf8_lossy(path_bytes).into_owned());
        let reply = checked_control(client, ControlOpcode::DbOpenFlags, id)?;
        let tdb_flags = TdbFlags::from_bits(u32_of(&reply, ControlOpcode::DbOpenFlags)?);
        let tdb = Tdb::open(&path, 0, tdb_flags, libc::O_RDWR, 0)?;
        Ok(DbHandle {
            name: name.to_owned(),
            db_id,
            pnn,
            path,
            tdb,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn db_id(&self) -> u32 {
        self.db_id
    }

    /// The node this handle's daemon runs as.
    pub fn pnn(&self) -> u32 {
        self.pnn
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// [`DbHandle::fetch_lock_timeout`] with the client's default timeout.
    pub fn fetch_lock(&self, client: &mut Client, key: &[u8]) -> Result<RecordLock<'_>, DbError> {
        self.fetch_lock_timeout(client, key, DEFAULT_TIMEOUT)
    }

    /// Locks `key`'s chain with this node as the record's dmaster, migrating the record here
    /// as often as needed (another node may take it back between the REPLY_CALL and our
    /// lock). The lock is released when the returned guard is dropped.
    pub fn fetch_lock_timeout(
        &self,
        client: &mut Client,
        key: &[u8],
        timeout: Duration,
    ) -> Result<RecordLock<'_>, DbError> {
        self.fetch_lock_mode(client, key, timeout, false)
    }

    /// [`DbHandle::fetch_readonly_timeout`] with the client's default timeout.
    pub fn fetch_readonly(
        &self,
        client: &mut Client,
        key: &[u8],
    ) -> Result<RecordLock<'_>, DbError> {
        self.fetch_readonly_timeout(client, key, DEFAULT_TIMEOUT)
    }

    /// `ctdb_fetch_lock` with `readonly=true`: locks `key`'s chain with a readable copy of
    /// the record here — this node's own record when it is the dmaster, or a read-only
    /// delegation obtained from the dmaster (REQ_CALL with `CTDB_WANT_READONLY`) without
    /// moving the record. A lock on a delegated copy refuses [`RecordLock::store`]. On a
    /// database without the READONLY flag the daemon migrates the record instead.
    pub fn fetch_readonly_timeout(
        &self,
        client: &mut Client,
        key: &[u8],
        timeout: Duration,
    ) -> Result<RecordLock<'_>, DbError> {
        self.fetch_lock_mode(client, key, timeout, true)
    }

    fn fetch_lock_mode(
        &self,
        client: &mut Client,
        key: &[u8],
        timeout: Duration,
        readonly: bool,
    ) -> Result<RecordLock<'_>, DbError> {
        #[allow(clippy::disallowed_methods)] // Client-side timeout, outside any state machine.
        let deadline = Instant::now() + timeout;
        let mut migrations = 0u32;
        loop {
            self.tdb.chainlock(key)?;
            let mut lock = RecordLock {
                db: self,
                key: key.to_vec(),
                header: LtdbHeader::default(),
                data: Vec::new(),
                migrations,
                readonly: false,
            };
            let record = self.tdb.fetch(key)?;
            let local = if readonly {
                classify_readonly(record.as_deref(), self.pnn)?
            } else {
                classify(record.as_deref(), self.pnn)?
            };
            if let LocalRecord::Ours { header, data } = local {
                lock.readonly =
                    header.flags & (REC_RO_HAVE_READONLY | REC_RO_HAVE_DELEGATIONS) != 0;
                lock.header = header;
                lock.data = data;
                return Ok(lock);
            }
            drop(lock);
            #[allow(clippy::disallowed_methods)] // Client-side timeout.
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or(DbError::Timeout { migrations })?;
            let call = if readonly {
                readonly_call(self.db_id, key)
            } else {
                migration_call(self.db_id, key)
            };
            let reply = client.call(CURRENT_NODE, call, left)?;
            migrations += 1;
            if reply.status != 0 {
                return Err(DbError::Call {
                    status: reply.status,
                });
            }
        }
    }
}

fn checked_control(
    client: &mut Client,
    opcode: ControlOpcode,
    data: Vec<u8>,
) -> Result<Vec<u8>, DbError> {
    let reply = client.control(CURRENT_NODE, opcode, 0, 0, data, DEFAULT_TIMEOUT)?;
    if reply.status != 0 {
        return Err(DbError::Control {
            opcode,
            status: reply.status,
            message: reply.error_message(),
        });
    }
    Ok(reply.data)
}

fn u32_of(data: &[u8], opcode: ControlOpcode) -> Result<u32, DbError> {
    data.get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_ne_bytes)
        .ok_or_else(|| {
            DbError::Client(ClientError::Protocol(format!(
                "{} reply of {} bytes",
                opcode.name(),
                data.len()
            )))
        })
}

/// A fetch-locked record: the chain lock is held until this is dropped.
#[derive(Debug)]
pub struct RecordLock<'db> {
    db: &'db DbHandle,
    key: Vec<u8>,
    header: LtdbHeader,
    data: Vec<u8>,
    migrations: u32,
    /// Obtained as a read-only copy (or the dmaster's copy with delegations out).
    readonly: bool,
}

impl RecordLock<'_> {
    /// Whether this lock holds a read-only copy, which [`RecordLock::store`] refuses.
    pub fn is_readonly(&self) -> bool {
        self.readonly
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }

    pub fn header(&self) -> &LtdbHeader {
        &self.header
    }

    /// The record's data after the header (empty for a record that has never been stored).
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// How many migration calls this fetch-lock needed.
    pub fn migrations(&self) -> u32 {
        self.migrations
    }

    /// Replaces the record's data, keeping the header exactly as fetched. Stock's client
    /// library and smbd's volatile store do the same: the RSN moves only when the daemon
    /// migrates the record, so recovery still prefers this node's copy (its header says
    /// this node is dmaster). Storing the same data again writes nothing.
    pub fn store(&mut self, data: &[u8]) -> Result<(), DbError> {
        if self.readonly {
            return Err(DbError::ReadOnly);
        }
        if data == self.data.as_slice() {
            return Ok(());
        }
        let header = record_header_bytes(&self.header);
        self.db
            .tdb
            .store_parts(&self.key, &[&header, data], StoreMode::Replace)?;
        self.data = data.to_vec();
        Ok(())
    }
}

/// The 24 bytes written in front of the data on a store.
pub fn record_header_bytes(header: &LtdbHeader) -> [u8; LTDB_HEADER_LEN] {
    let mut out = [0u8; LTDB_HEADER_LEN];
    let bytes = header.to_bytes();
    if let Some(dst) = out.get_mut(..bytes.len()) {
        dst.copy_from_slice(bytes.get(..dst.len()).unwrap_or_default());
    }
    out
}

impl Drop for RecordLock<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.db.tdb.chainunlock(&self.key) {
            log::error!("fetch_lock: {} chain unlock failed: {e}", self.db.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ltdb::REC_RO_HAVE_READONLY;
    use crate::protocol::packet::{Body, Packet, Padding};
    use crate::testing::{seeds, Prng};

    fn record(header: &LtdbHeader, data: &[u8]) -> Vec<u8> {
        let mut out = record_header_bytes(header).to_vec();
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn missing_record_needs_migration() {
        assert_eq!(classify(None, 0).unwrap(), LocalRecord::Elsewhere);
    }

    #[test]
    fn short_record_is_corrupt() {
        for len in 0..LTDB_HEADER_LEN {
            let bytes = vec![0u8; len];
            assert!(matches!(
                classify(Some(&bytes), 0),
                Err(DbError::Corrupt { len: l }) if l == len
            ));
        }
    }

    #[test]
    fn dmaster_decides_ownership() {
        for seed in seeds(64) {
            let mut rng = Prng::new(seed);
            let pnn = rng.u32() % 4;
            let header = LtdbHeader {
                rsn: rng.next_u64(),
                dmaster: rng.u32() % 4,
                reserved1: 0,
                flags: rng.u32() & !REC_RO_HAVE_DELEGATIONS,
            };
            let data: Vec<u8> = (0..rng.u32() % 40).map(|_| rng.u8()).collect();
            let got = classify(Some(&record(&header, &data)), pnn).unwrap();
            if header.dmaster == pnn {
                assert_eq!(got, LocalRecord::Ours { header, data }, "seed {seed}");
            } else {
                assert_eq!(got, LocalRecord::Elsewhere, "seed {seed}");
            }
        }
    }

    #[test]
    fn delegations_force_migration_even_on_the_dmaster() {
        let header = LtdbHeader {
            rsn: 5,
            dmaster: 1,
            reserved1: 0,
            flags: REC_RO_HAVE_DELEGATIONS,
        };
        assert_eq!(
            classify(Some(&record(&header, b"x")), 1).unwrap(),
            LocalRecord::Elsewhere
        );
        // A read-only copy's own flag does not matter for the dmaster.
        let header = LtdbHeader {
            flags: REC_RO_HAVE_READONLY,
            ..header
        };
        assert!(matches!(
            classify(Some(&record(&header, b"x")), 1).unwrap(),
            LocalRecord::Ours { .. }
        ));
    }

    #[test]
    fn readonly_fetch_accepts_copies_and_the_dmaster() {
        for seed in seeds(64) {
            let mut rng = Prng::new(seed);
            let pnn = rng.u32() % 4;
            let header = LtdbHeader {
                rsn: rng.next_u64(),
                dmaster: rng.u32() % 4,
                reserved1: 0,
                flags: rng.u32(),
            };
            let data: Vec<u8> = (0..rng.u32() % 40).map(|_| rng.u8()).collect();
            let got = classify_readonly(Some(&record(&header, &data)), pnn).unwrap();
            let readable = header.dmaster == pnn
                || header.flags & (REC_RO_HAVE_READONLY | REC_RO_HAVE_DELEGATIONS) != 0;
            if readable {
                assert_eq!(got, LocalRecord::Ours { header, data }, "seed {seed}");
            } else {
                assert_eq!(got, LocalRecord::Elsewhere, "seed {seed}");
            }
        }
        assert_eq!(classify_readonly(None, 0).unwrap(), LocalRecord::Elsewhere);
        assert!(classify_readonly(Some(&[0u8; 10]), 0).is_err());
    }

    #[test]
    fn readonly_call_is_what_stock_sends() {
        let call = readonly_call(7, b"key");
        assert_eq!(
            call.flags,
            CALL_FLAG_IMMEDIATE_MIGRATION | CALL_FLAG_WANT_READONLY
        );
        assert_eq!(call.flags, 0x5);
        assert_eq!(call.callid, NULL_FUNC);
    }

    #[test]
    fn header_bytes_round_trip() {
        for seed in seeds(32) {
            let mut rng = Prng::new(seed);
            let header = LtdbHeader {
                rsn: rng.next_u64(),
                dmaster: rng.u32(),
                reserved1: rng.u32(),
                flags: rng.u32(),
            };
            let bytes = record_header_bytes(&header);
            let (back, used) = LtdbHeader::pull(&bytes).unwrap();
            assert_eq!((back, used), (header, LTDB_HEADER_LEN), "seed {seed}");
        }
    }

    #[test]
    fn migration_call_is_what_stock_sends() {
        let call = migration_call(0x1234_5678, b"key");
        assert_eq!(call.flags, CALL_FLAG_IMMEDIATE_MIGRATION);
        assert_eq!(call.callid, NULL_FUNC);
        assert!(call.calldata.is_empty());
        let packet = Packet {
            generation: 0,
            destnode: CURRENT_NODE,
            srcnode: 0,
            reqid: 7,
            body: Body::ReqCall(call.clone()),
        };
        let back = Packet::pull(&packet.encode(Padding::Align8)).unwrap();
        assert_eq!(back.body, Body::ReqCall(call));
    }

    /// Store, re-read and unlock against a real TDB file, without a daemon: the handle is
    /// built by hand around a file created as the daemon creates volatile databases.
    #[test]
    fn store_keeps_header_and_unlocks_on_drop() {
        let dir = std::env::temp_dir().join(format!("ctdb-rs-fetchlock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fl.tdb.0");
        let _ = std::fs::remove_file(&path);
        let flags = TdbFlags::INCOMPATIBLE_HASH | TdbFlags::NOSYNC;
        let tdb = Tdb::open(&path, 0, flags, libc::O_RDWR | libc::O_CREAT, 0o600).unwrap();
        let header = LtdbHeader {
            rsn: 9,
            dmaster: 2,
            reserved1: 0,
            flags: 0,
        };
        tdb.store(b"k", &record(&header, b"old"), StoreMode::Replace)
            .unwrap();
        let db = DbHandle {
            name: "fl.tdb".into(),
            db_id: 1,
            pnn: 2,
            path: path.clone(),
            tdb,
        };
        db.tdb.chainlock(b"k").unwrap();
        let record_bytes = db.tdb.fetch(b"k").unwrap();
        let LocalRecord::Ours { header: h, data } =
            classify(record_bytes.as_deref(), db.pnn).unwrap()
        else {
            panic!("record should be ours");
        };
        let mut lock = RecordLock {
            db: &db,
            key: b"k".to_vec(),
            header: h,
            data,
            migrations: 0,
            readonly: false,
        };
        assert_eq!(lock.data(), b"old");
        lock.store(b"new value").unwrap();
        drop(lock);
        assert_eq!(
            db.tdb.fetch(b"k").unwrap().unwrap(),
            record(&header, b"new value")
        );
        // The chain is free again: a non-blocking lock succeeds.
        db.tdb.chainlock_nonblock(b"k").unwrap();
        db.tdb.chainunlock(b"k").unwrap();
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
