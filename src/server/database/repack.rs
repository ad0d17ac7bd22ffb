//! Repacking after vacuuming (mirrors the repack step of `ctdb_vacuum_and_repack_db` in
//! `ctdb/server/ctdb_vacuum.c`).
//!
//! Stock repacks inside its vacuum child: when `tdb_freelist_size` reaches `RepackLimit` it
//! calls `tdb_repack`. That call starts a transaction, which waits (there is no non-blocking
//! variant) for an all-record lock that any chain lock held by smbd delays, and then copies the
//! whole file twice. Run in the daemon's loop it would stall every client and node for that
//! long, and could deadlock against an smbd that holds a chain lock while it waits for an
//! answer from ctdbd. So here, as in stock, it runs in a separate process: ctdbd's own binary
//! started with [`REPACK_HELPER_ARG`], at most one at a time per node, after a vacuum run of
//! the database. The helper checks the free list itself and exits with [`EXIT_REPACKED`],
//! [`EXIT_NOT_NEEDED`] or [`EXIT_FAILED`]. While it works, the daemon's non-blocking chain
//! locks simply fail and are retried; a freeze kills it ([`super::DbEffect::StopRepack`]), as
//! stock's `ctdb_stop_vacuuming` kills the vacuum child.

use super::DatabaseSet;
use crate::common::tdb::{Tdb, TdbFlags};
use std::path::PathBuf;

/// The argument that turns ctdbd into a repack helper:
/// `ctdbd --repack-helper <path> <tdb_flags> <repack_limit>`.
pub const REPACK_HELPER_ARG: &str = "--repack-helper";
pub const EXIT_REPACKED: i32 = 0;
pub const EXIT_NOT_NEEDED: i32 = 1;
pub const EXIT_FAILED: i32 = 2;

/// A repack for the shell to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepackRequest {
    pub db_id: u32,
    pub path: PathBuf,
    pub tdb_flags: u32,
    pub limit: u32,
}

impl RepackRequest {
    /// The helper's arguments after the program name.
    pub fn args(&self) -> Vec<String> {
        vec![
            REPACK_HELPER_ARG.to_string(),
            self.path.display().to_string(),
            self.tdb_flags.to_string(),
            self.limit.to_string(),
        ]
    }
}

impl DatabaseSet {
    /// The next repack to start: a database that vacuumed since its last check, when
    /// `RepackLimit` is set and no helper runs. Marks it running until
    /// [`DatabaseSet::repack_finished`].
    pub fn next_repack(&mut self, repack_limit: u32) -> Option<RepackRequest> {
        if repack_limit == 0 || self.repacking.is_some() {
            return None;
        }
        let db = self
            .dbs
            .iter_mut()
            .find(|db| db.vacuum.repack_due && db.freeze_mode == super::FreezeMode::None)?;
        db.vacuum.repack_due = false;
        let request = RepackRequest {
            db_id: db.db_id,
            path: db.path.clone(),
            tdb_flags: db.store.tdb_flags(),
            limit: repack_limit,
        };
        self.repacking = Some(db.db_id);
        Some(request)
    }

    /// The helper of `db_id` exited with `code` (`None`: it could not start or was killed).
    pub fn repack_finished(&mut self, db_id: u32, code: Option<i32>) {
        if self.repacking == Some(db_id) {
            self.repacking = None;
        }
        let name = self.get(db_id).map_or("?", |db| db.name());
        match code {
            Some(EXIT_REPACKED) => log::info!("Repacked {name}"),
            Some(EXIT_NOT_NEEDED) => log::debug!("{name} needs no repack"),
            _ => log::error!("Failed to repack {name} ({code:?})"),
        }
    }

    /// Whether a repack helper runs.
    pub fn repack_running(&self) -> Option<u32> {
        self.repacking
    }
}

/// The helper process: repack `path` when its free list has at least `limit` entries.
/// Returns the exit code.
pub fn run_repack_helper(args: &[String]) -> i32 {
    let [path, flags, limit] = args else {
        eprintln!("usage: ctdbd {REPACK_HELPER_ARG} <path> <tdb_flags> <repack_limit>");
        return EXIT_FAILED;
    };
    let (Ok(flags), Ok(limit)) = (flags.parse::<u32>(), limit.parse::<usize>()) else {
        eprintln!("{REPACK_HELPER_ARG}: bad flags or limit");
        return EXIT_FAILED;
    };
    // The daemon has the file open: never wipe it.
    let flags = TdbFlags::from_bits(flags & !TdbFlags::CLEAR_IF_FIRST.bits());
    let tdb = match Tdb::open(path, 0, flags, libc::O_RDWR, 0o600) {
        Ok(tdb) => tdb,
        Err(e) => {
            eprintln!("{REPACK_HELPER_ARG}: cannot open {path}: {e}");
            return EXIT_FAILED;
        }
    };
    let entries = match tdb.freelist_size() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{REPACK_HELPER_ARG}: freelist size of {path}: {e}");
            return EXIT_FAILED;
        }
    };
    if entries < limit {
        return EXIT_NOT_NEEDED;
    }
    match tdb.repack() {
        Ok(()) => EXIT_REPACKED,
        Err(e) => {
            eprintln!("{REPACK_HELPER_ARG}: repack of {path}: {e}");
            EXIT_FAILED
        }
    }
}
