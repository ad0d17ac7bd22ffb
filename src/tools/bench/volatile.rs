//! Synthetic contents for a volatile database, written straight into each node's local TDB
//! file, for the recovery benchmark (`bench/recovery.sh`).
//!
//! Going through the daemon (`ctdb writekey`, record calls) would make populating a million
//! records take longer than the recovery being measured, so the records are stored with
//! libtdb next to the running daemon, the way smbd writes a volatile database: each value
//! starts with a valid `ctdb_ltdb_header` whose dmaster is the node holding the current copy.
//!
//! The layout imitates a database after some migrations: every key has one current copy on
//! its owner node (`i % nodes`), and some keys also have older copies (lower RSN) left behind
//! on other nodes. The first payload byte marks a copy as current (`W`) or stale (`S`), so a
//! count after the recovery proves the highest RSN won everywhere.

use super::output::KeyValues;
use crate::common::clock::MonotonicClock;
use crate::common::tdb::{StoreMode, Tdb, TdbError, TdbFlags, Traverse};
use crate::protocol::basic::Marshal;
use crate::protocol::ltdb::{LtdbHeader, LTDB_HEADER_LEN, REC_FLAG_MIGRATED_WITH_DATA};
use std::path::Path;

const CURRENT_MARK: u8 = b'W';
const STALE_MARK: u8 = b'S';

/// Which copies of which keys live on which node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub records: u64,
    pub nodes: u32,
    /// Every `stale_every`-th key also has a stale copy on the next node; every
    /// `2 * stale_every`-th one a second, older copy on the node after that. 0: none.
    pub stale_every: u64,
    /// Payload bytes after the header (at least 1, for the mark).
    pub value_len: usize,
}

/// One copy of a record as stored on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub index: u64,
    pub header: LtdbHeader,
    pub current: bool,
}

impl Layout {
    pub fn key(index: u64) -> Vec<u8> {
        format!("bench-rec-{index:010}").into_bytes()
    }

    fn owner(&self, index: u64) -> u32 {
        u32::try_from(index % u64::from(self.nodes.max(1))).unwrap_or(0)
    }

    fn current_rsn(index: u64) -> u64 {
        // At least 3, so two older copies still have RSNs above zero.
        3 + index % 7
    }

    /// How many older copies key `index` has on other nodes.
    fn stale_copies(&self, index: u64) -> u32 {
        if self.stale_every == 0 || self.nodes < 2 {
            return 0;
        }
        let mut n = 0;
        if index.is_multiple_of(self.stale_every) {
            n += 1;
        }
        if self.nodes >= 3 && index.is_multiple_of(2 * self.stale_every) {
            n += 1;
        }
        n
    }

    /// The copies node `pnn` holds, in key order.
    pub fn copies_on(&self, pnn: u32) -> impl Iterator<Item = Copy> + '_ {
        (0..self.records).filter_map(move |index| {
            let owner = self.owner(index);
            let rsn = Self::current_rsn(index);
            if owner == pnn {
                let flags = if self.stale_copies(index) > 0 {
                    REC_FLAG_MIGRATED_WITH_DATA
                } else {
                    0
                };
                return Some(Copy {
                    index,
                    header: LtdbHeader {
                        rsn,
                        dmaster: owner,
                        flags,
                        ..LtdbHeader::default()
                    },
                    current: true,
                });
            }
            let distance = (pnn + self.nodes - owner) % self.nodes;
            if distance == 0 || distance > self.stale_copies(index) {
                return None;
            }
            // A node the record migrated away from: it still names the new dmaster.
            Some(Copy {
                index,
                header: LtdbHeader {
                    rsn: rsn - u64::from(distance),
                    dmaster: owner,
                    ..LtdbHeader::default()
                },
                current: false,
            })
        })
    }

    fn value(&self, copy: &Copy) -> Vec<u8> {
        let mut value = Vec::with_capacity(LTDB_HEADER_LEN + self.value_len.max(1));
        copy.header.push(&mut value);
        value.push(if copy.current {
            CURRENT_MARK
        } else {
            STALE_MARK
        });
        value.resize(LTDB_HEADER_LEN + self.value_len.max(1), b'.');
        value
    }
}

/// Opens an existing volatile database file, usually one the daemon has open. Without
/// CLEAR_IF_FIRST, which would wipe a file nobody else holds; libtdb takes the hash function
/// from the file's header, and insists on MUTEX_LOCKING for a file with mutex chain locks
/// (ignoring it for one without).
fn open_volatile(path: &Path) -> Result<Tdb, TdbError> {
    Tdb::open(
        path,
        0,
        TdbFlags::NOSYNC | TdbFlags::MUTEX_LOCKING,
        libc::O_RDWR,
        0o600,
    )
}

/// Writes node `pnn`'s copies into `path` (after emptying it when `wipe`).
pub fn fill(path: &Path, pnn: u32, layout: &Layout, wipe: bool) -> Result<KeyValues, TdbError> {
    let clock = MonotonicClock::new();
    let started = clock.now();
    let tdb = open_volatile(path)?;
    // One all-record lock instead of a chain lock per store.
    tdb.lockall()?;
    let result = (|| {
        if wipe {
            tdb.wipe_all()?;
        }
        let mut written = 0u64;
        for copy in layout.copies_on(pnn) {
            tdb.store(
                &Layout::key(copy.index),
                &layout.value(&copy),
                StoreMode::Replace,
            )?;
            written += 1;
        }
        Ok(written)
    })();
    tdb.unlockall()?;
    let written = result?;
    let mut kv = KeyValues::new();
    kv.count("written", written).number(
        "fill_s",
        clock.now().saturating_since(started).as_secs_f64(),
    );
    Ok(kv)
}

/// What a database file holds, as the recovery left it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// Records with a payload (what a volatile recovery keeps).
    pub records: u64,
    /// Of those, how many carry a stale copy's payload.
    pub stale: u64,
    /// Header-only or malformed records.
    pub empty: u64,
}

pub fn census(path: &Path) -> Result<Census, TdbError> {
    let tdb = open_volatile(path)?;
    let mut census = Census::default();
    tdb.traverse_read(|_key, value| {
        match value.get(LTDB_HEADER_LEN) {
            Some(&STALE_MARK) => {
                census.records += 1;
                census.stale += 1;
            }
            Some(_) => census.records += 1,
            None => census.empty += 1,
        }
        Traverse::Continue
    })?;
    Ok(census)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(records: u64) -> Layout {
        Layout {
            records,
            nodes: 3,
            stale_every: 4,
            value_len: 16,
        }
    }

    #[test]
    fn every_key_has_exactly_one_current_copy_with_the_highest_rsn() {
        let l = layout(1000);
        let mut best: Vec<Option<(u64, bool)>> = vec![None; 1000];
        let mut copies = 0;
        for pnn in 0..3 {
            for c in l.copies_on(pnn) {
                copies += 1;
                let slot = &mut best[c.index as usize];
                match slot {
                    Some((rsn, _)) if *rsn > c.header.rsn => {}
                    Some((rsn, _)) => {
                        assert_ne!(*rsn, c.header.rsn, "tie for key {}", c.index);
                        *slot = Some((c.header.rsn, c.current));
                    }
                    None => *slot = Some((c.header.rsn, c.current)),
                }
            }
        }
        assert!(best.iter().all(|b| matches!(b, Some((_, true)))));
        // 1000 current + 250 first stale + 125 second stale copies.
        assert_eq!(copies, 1000 + 250 + 125);
    }

    #[test]
    fn fill_then_census_counts_what_was_written() {
        let dir = std::env::temp_dir().join(format!("ctdb-bench-volatile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.tdb");
        let _ = std::fs::remove_file(&path);
        // Created the way the daemon does (libtdb will not open one file twice in a process,
        // so it is closed again before the fill).
        let creator = Tdb::open(
            &path,
            1001,
            TdbFlags::NOSYNC | TdbFlags::CLEAR_IF_FIRST | TdbFlags::INCOMPATIBLE_HASH,
            libc::O_RDWR | libc::O_CREAT,
            0o600,
        )
        .unwrap();
        let l = layout(300);
        let expected = l.copies_on(1).count() as u64;
        let expected_stale = l.copies_on(1).filter(|c| !c.current).count() as u64;
        // 100 owned, 25 (i % 12 == 0) and 13 (i % 24 == 8) stale.
        assert_eq!((expected, expected_stale), (138, 38));
        drop(creator);
        let kv = fill(&path, 1, &l, true).unwrap();
        assert_eq!(kv.get("written"), Some("138"));
        let c = census(&path).unwrap();
        assert_eq!(
            c,
            Census {
                records: 138,
                stale: 38,
                empty: 0
            }
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
