//! The scratch database a recovery collects one database into (the `recdb_*` functions of
//! `ctdb/server/ctdb_recovery_helper.c`).
//!
//! Like stock, the scratch copy is a real TDB, `recdb.<dbname>`, created afresh in
//! `CTDB_DBDIR_STATE` (or next to the database) with `TDB_NOLOCK | TDB_INCOMPATIBLE_HASH |
//! TDB_DISALLOW_NESTING` and `DatabaseHashSize` buckets. Using libtdb rather than a map keeps
//! the push order (libtdb's traverse order) identical to stock's; the order does not affect
//! the result, but identical traffic makes the two helpers easy to compare. As in stock, the
//! file is left behind when the recovery is over and removed by the next recovery of the same
//! database.
//!
//! The push buffers are built in memory instead of in stock's unlinked `recdb.<dbname>.dat`
//! file; their contents and boundaries are the same.

use crate::common::tdb::{StoreMode, Tdb, TdbError, TdbFlags, Traverse};
use crate::protocol::basic::Marshal;
use crate::protocol::ltdb::{LtdbHeader, LTDB_HEADER_LEN, REC_FLAG_MIGRATED_WITH_DATA};
use crate::protocol::types::{RecBuffer, RecData};
use std::path::{Path, PathBuf};

/// Whether a pulled copy of a record replaces the copy already collected (stock's
/// `recdb_add_traverse`): a higher RSN always wins; on an RSN tie the newcomer wins only if
/// the collected copy names the recovering node (`leader`) as its dmaster.
pub fn pulled_copy_wins(pulled: &LtdbHeader, collected: &LtdbHeader, leader: u32) -> bool {
    pulled.rsn > collected.rsn || (pulled.rsn == collected.rsn && collected.dmaster == leader)
}

/// Why pulled records could not be added.
#[derive(Debug)]
pub enum AddError {
    /// A record too short to hold an ltdb header; the records before it were added.
    ShortRecord,
    Tdb(TdbError),
}

/// Encoded push buffers and how many records each carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PushBuffers {
    pub buffers: Vec<(u32, Vec<u8>)>,
}

impl PushBuffers {
    pub fn record_count(&self) -> u32 {
        self.buffers.iter().map(|(count, _)| *count).sum()
    }
}

#[derive(Debug)]
pub struct RecDb {
    db_id: u32,
    name: String,
    path: PathBuf,
    persistent: bool,
    tdb: Tdb,
}

impl RecDb {
    /// The scratch file for database `name`: in `state_dir` if given (stock reads
    /// `CTDB_DBDIR_STATE`), else in the directory of the database itself.
    pub fn path_for(state_dir: Option<&Path>, db_path: &str, name: &str) -> PathBuf {
        let dir = match state_dir {
            Some(dir) => dir.to_path_buf(),
            None => c_dirname(db_path),
        };
        dir.join(format!("recdb.{name}"))
    }

    /// Removes any old file and creates an empty scratch database. `persistent` decides only
    /// whether pushed records get their dmaster rewritten (stock passes the PERSISTENT flag,
    /// so replicated databases are rewritten like volatile ones).
    pub fn create(
        path: PathBuf,
        db_id: u32,
        name: &str,
        hash_size: u32,
        persistent: bool,
    ) -> Result<Self, TdbError> {
        let _ = std::fs::remove_file(&path);
        let tdb = Tdb::open(
            &path,
            hash_size,
            TdbFlags::NOLOCK | TdbFlags::INCOMPATIBLE_HASH | TdbFlags::DISALLOW_NESTING,
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
            0o600,
        )?;
        Ok(RecDb {
            db_id,
            name: name.to_owned(),
            path,
            persistent,
            tdb,
        })
    }

    pub fn db_id(&self) -> u32 {
        self.db_id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Merges pulled records in buffer order, keeping for each key the copy that
    /// [`pulled_copy_wins`] prefers. Stops at the first record without a header.
    pub fn add(&self, buffer: &RecBuffer, leader: u32) -> Result<(), AddError> {
        for record in &buffer.records {
            let Some(pulled) = record.header() else {
                return Err(AddError::ShortRecord);
            };
            let collected = self.tdb.fetch(&record.key).map_err(AddError::Tdb)?;
            if let Some(collected) = collected.as_deref().and_then(header_of) {
                if !pulled_copy_wins(&pulled, &collected, leader) {
                    continue;
                }
            }
            self.tdb
                .store(&record.key, &record.data, StoreMode::Replace)
                .map_err(AddError::Tdb)?;
        }
        Ok(())
    }

    /// The records to push, in traverse order, cut into buffers as stock cuts them: a buffer
    /// is closed as soon as it grows beyond `max_size`, and a last (possibly empty) buffer is
    /// always sent. Header-only (deleted) records are left out; in databases that are not
    /// persistent every record gets `dmaster` and `MIGRATED_WITH_DATA`.
    pub fn push_buffers(&self, dmaster: u32, max_size: usize) -> Result<PushBuffers, TdbError> {
        let mut out = PushBuffers::default();
        let mut current = RecBuffer {
            db_id: self.db_id,
            records: Vec::new(),
        };
        let mut current_len = current.wire_len();
        self.tdb.traverse_read(|key, data| {
            if data.len() <= LTDB_HEADER_LEN {
                return Traverse::Continue;
            }
            let mut data = data.to_vec();
            if !self.persistent {
                rewrite_header(&mut data, dmaster);
            }
            let record = RecData {
                reqid: 0,
                key: key.to_vec(),
                data,
            };
            current_len += record.wire_len();
            current.records.push(record);
            if current_len > max_size {
                let full = std::mem::replace(
                    &mut current,
                    RecBuffer {
                        db_id: self.db_id,
                        records: Vec::new(),
                    },
                );
                out.buffers.push((count_of(&full), full.to_bytes()));
                current_len = current.wire_len();
            }
            Traverse::Continue
        })?;
        out.buffers.push((count_of(&current), current.to_bytes()));
        Ok(out)
    }
}

fn count_of(buffer: &RecBuffer) -> u32 {
    u32::try_from(buffer.records.len()).unwrap_or(u32::MAX)
}

fn header_of(data: &[u8]) -> Option<LtdbHeader> {
    LtdbHeader::pull(data).ok().map(|(header, _)| header)
}

/// Sets the dmaster and the MIGRATED_WITH_DATA flag of the header at the front of `data`.
fn rewrite_header(data: &mut [u8], dmaster: u32) {
    if let Some(mut header) = header_of(data) {
        header.dmaster = dmaster;
        header.flags |= REC_FLAG_MIGRATED_WITH_DATA;
        let mut bytes = Vec::with_capacity(LTDB_HEADER_LEN);
        header.push(&mut bytes);
        // Only the fields, not the trailing padding, which stock leaves as it was.
        data[..20].copy_from_slice(&bytes[..20]);
    }
}

/// `dirname(3)` for the paths GETDBPATH returns.
fn c_dirname(path: &str) -> PathBuf {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return PathBuf::from(if path.is_empty() { "." } else { "/" });
    }
    match trimmed.rfind('/') {
        None => PathBuf::from("."),
        Some(at) => {
            let dir = trimmed[..at].trim_end_matches('/');
            PathBuf::from(if dir.is_empty() { "/" } else { dir })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Prng;

    fn header(rsn: u64, dmaster: u32, flags: u32) -> LtdbHeader {
        LtdbHeader {
            rsn,
            dmaster,
            reserved1: 0,
            flags,
        }
    }

    fn scratch(tag: &str, persistent: bool) -> (tempdir::Dir, RecDb) {
        let dir = tempdir::Dir::new(tag);
        let path = RecDb::path_for(Some(dir.path()), "/ignored/x.tdb.0", tag);
        let recdb = RecDb::create(path, 0x1234, tag, 131, persistent).unwrap();
        (dir, recdb)
    }

    /// A private temporary directory removed on drop.
    mod tempdir {
        use std::path::{Path, PathBuf};
        use std::sync::atomic::{AtomicU64, Ordering};

        pub struct Dir(PathBuf);

        impl Dir {
            pub fn new(tag: &str) -> Self {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                let path = std::env::temp_dir().join(format!(
                    "ctdb-rs-recdb-{tag}-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                let _ = std::fs::remove_dir_all(&path);
                std::fs::create_dir_all(&path).unwrap();
                Dir(path)
            }

            pub fn path(&self) -> &Path {
                &self.0
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn collected(recdb: &RecDb) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        recdb
            .tdb
            .traverse_read(|k, v| {
                out.push((k.to_vec(), v.to_vec()));
                Traverse::Continue
            })
            .unwrap();
        out.sort();
        out
    }

    #[test]
    fn merge_rule_matches_stock() {
        let leader = 2;
        assert!(pulled_copy_wins(&header(5, 0, 0), &header(4, 1, 0), leader));
        assert!(!pulled_copy_wins(
            &header(3, 0, 0),
            &header(4, 2, 0),
            leader
        ));
        assert!(pulled_copy_wins(&header(4, 0, 0), &header(4, 2, 0), leader));
        assert!(!pulled_copy_wins(
            &header(4, 2, 0),
            &header(4, 1, 0),
            leader
        ));
    }

    #[test]
    fn add_keeps_the_winning_copy_per_key() {
        let (_dir, recdb) = scratch("merge", false);
        let leader = 1;
        let buf = |records: Vec<RecData>| RecBuffer {
            db_id: 0x1234,
            records,
        };
        let rec = |key: &str, h: LtdbHeader, v: &str| {
            RecData::with_header(0, &h, key.as_bytes(), v.as_bytes())
        };
        recdb
            .add(
                &buf(vec![
                    rec("a", header(3, 0, 0), "a-from-0"),
                    rec("b", header(7, 1, 0), "b-from-0"),
                    rec("c", header(2, 0, 0), "c-from-0"),
                ]),
                leader,
            )
            .unwrap();
        recdb
            .add(
                &buf(vec![
                    rec("a", header(2, 2, 0), "a-from-2"),
                    rec("b", header(7, 2, 0), "b-from-2"),
                    rec("c", header(2, 2, 0), "c-from-2"),
                    rec("d", header(1, 2, 0), ""),
                ]),
                leader,
            )
            .unwrap();
        let got = collected(&recdb);
        let values: Vec<(String, u64, String)> = got
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    header_of(v).unwrap().rsn,
                    String::from_utf8_lossy(&v[LTDB_HEADER_LEN..]).into_owned(),
                )
            })
            .collect();
        assert_eq!(
            values,
            vec![
                ("a".into(), 3, "a-from-0".into()),
                // Tie, and the collected copy named the leader: the newcomer wins.
                ("b".into(), 7, "b-from-2".into()),
                // Tie, collected copy not the leader's: it stays.
                ("c".into(), 2, "c-from-0".into()),
                ("d".into(), 1, "".into()),
            ]
        );
    }

    #[test]
    fn add_stops_at_a_record_without_header() {
        let (_dir, recdb) = scratch("short", false);
        let good = RecData::with_header(0, &header(1, 0, 0), b"k1", b"v");
        let short = RecData {
            reqid: 0,
            key: b"k2".to_vec(),
            data: vec![0; 23],
        };
        let after = RecData::with_header(0, &header(1, 0, 0), b"k3", b"v");
        let result = recdb.add(
            &RecBuffer {
                db_id: 0x1234,
                records: vec![good, short, after],
            },
            0,
        );
        assert!(matches!(result, Err(AddError::ShortRecord)));
        let keys: Vec<Vec<u8>> = collected(&recdb).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![b"k1".to_vec()]);
    }

    fn decode(buffers: &PushBuffers) -> Vec<RecBuffer> {
        buffers
            .buffers
            .iter()
            .map(|(count, bytes)| {
                let (buf, used) = RecBuffer::pull(bytes).unwrap();
                assert_eq!(used, bytes.len());
                assert_eq!(buf.records.len() as u32, *count);
                buf
            })
            .collect()
    }

    #[test]
    fn push_drops_empty_records_and_rewrites_volatile_headers() {
        for persistent in [false, true] {
            let (_dir, recdb) = scratch(if persistent { "pp" } else { "pv" }, persistent);
            let records = vec![
                RecData::with_header(0, &header(9, 0, 0x0100_0000), b"full", b"data"),
                RecData::with_header(0, &header(9, 0, 0), b"empty", b""),
            ];
            recdb
                .add(
                    &RecBuffer {
                        db_id: 0x1234,
                        records,
                    },
                    0,
                )
                .unwrap();
            let buffers = recdb.push_buffers(5, 1_000_000).unwrap();
            let decoded = decode(&buffers);
            assert_eq!(decoded.len(), 1);
            assert_eq!(decoded[0].db_id, 0x1234);
            assert_eq!(decoded[0].records.len(), 1);
            let record = &decoded[0].records[0];
            assert_eq!(record.key, b"full");
            assert_eq!(record.value(), b"data");
            let h = record.header().unwrap();
            if persistent {
                assert_eq!(h, header(9, 0, 0x0100_0000));
            } else {
                assert_eq!(h, header(9, 5, 0x0100_0000 | REC_FLAG_MIGRATED_WITH_DATA));
            }
        }
    }

    #[test]
    fn push_cuts_buffers_after_they_exceed_the_limit() {
        for seed in crate::testing::seeds(20) {
            let mut rng = Prng::new(seed);
            let (_dir, recdb) = scratch("cut", false);
            let n = rng.below(60) as usize;
            let mut records = Vec::new();
            for i in 0..n {
                let len = rng.below(200) as usize;
                records.push(RecData::with_header(
                    0,
                    &header(1, 0, 0),
                    format!("key{i}").as_bytes(),
                    &vec![b'x'; len],
                ));
            }
            let with_data = records
                .iter()
                .filter(|r| r.data.len() > LTDB_HEADER_LEN)
                .count();
            recdb
                .add(
                    &RecBuffer {
                        db_id: 0x1234,
                        records,
                    },
                    0,
                )
                .unwrap();
            let limit = 50 + rng.below(1000) as usize;
            let buffers = recdb.push_buffers(0, limit).unwrap();
            let decoded = decode(&buffers);
            assert_eq!(buffers.record_count() as usize, with_data, "seed {seed}");
            let (last, full) = decoded.split_last().unwrap();
            for buf in full {
                // Closed as soon as it went over the limit: without its last record it fit.
                assert!(buf.wire_len() > limit, "seed {seed}");
                let without_last = buf.wire_len() - buf.records.last().unwrap().wire_len();
                assert!(without_last <= limit, "seed {seed}");
            }
            assert!(last.wire_len() <= limit, "seed {seed}");
        }
    }

    #[test]
    fn dirname_like_c() {
        assert_eq!(c_dirname("/a/b/c.tdb.0"), PathBuf::from("/a/b"));
        assert_eq!(c_dirname("c.tdb"), PathBuf::from("."));
        assert_eq!(c_dirname("/c.tdb"), PathBuf::from("/"));
        assert_eq!(c_dirname("/a//b/"), PathBuf::from("/a"));
        assert_eq!(
            RecDb::path_for(None, "/var/db/volatile/x.tdb.1", "x.tdb"),
            PathBuf::from("/var/db/volatile/recdb.x.tdb")
        );
        assert_eq!(
            RecDb::path_for(Some(Path::new("/s")), "/var/x.tdb.1", "x.tdb"),
            PathBuf::from("/s/recdb.x.tdb")
        );
    }
}
