//! Records as the daemon stores and fetches them: every value starts with the 24-byte
//! `ctdb_ltdb_header` (mirrors `common/ctdb_ltdb.c`, `ctdb_ltdb_store_server` in
//! `server/ctdb_ltdb_server.c`, and `GET_DB_SEQNUM` from `server/ctdb_persistent.c`).

use super::{Database, DatabaseSet, DbContext, DbReply, DB_SEQNUM_KEY};
use crate::common::tdb::TdbError;
use crate::protocol::hash;
use crate::protocol::ltdb::{
    LtdbHeader, LTDB_HEADER_LEN, REC_FLAG_AUTOMATIC, REC_FLAG_MIGRATED_WITH_DATA,
    REC_FLAG_VACUUM_MIGRATED, REC_RO_FLAGS,
};
use crate::protocol::Marshal;

/// The 24 bytes of `header` as stored in front of a record's data, without a heap allocation
/// (one per stored record adds up in a recovery).
pub(super) fn header_bytes(header: &LtdbHeader) -> [u8; LTDB_HEADER_LEN] {
    let mut out = [0u8; LTDB_HEADER_LEN];
    out[..8].copy_from_slice(&header.rsn.to_ne_bytes());
    out[8..12].copy_from_slice(&header.dmaster.to_ne_bytes());
    out[12..16].copy_from_slice(&header.reserved1.to_ne_bytes());
    out[16..20].copy_from_slice(&header.flags.to_ne_bytes());
    out
}

/// `ctdb_lmaster`. Stock divides by the map size; with an empty map no node is lmaster.
pub fn lmaster(ctx: &DbContext<'_>, key: &[u8]) -> u32 {
    hash::lmaster(hash::ctdb_hash(key), &ctx.vnn_map.map).unwrap_or(u32::MAX)
}

impl Database {
    /// `ctdb_ltdb_store`: persistent and replicated databases store what they are given;
    /// volatile ones go through `ctdb_ltdb_store_server`, which decides between storing and
    /// deleting and bumps the RSN when this node is the dmaster.
    pub(super) fn ltdb_store(
        &mut self,
        pnn: u32,
        ctx: &DbContext<'_>,
        key: &[u8],
        header: &LtdbHeader,
        data: &[u8],
    ) -> Result<(), TdbError> {
        let mut header = *header;
        self.ltdb_store_updating(pnn, ctx, key, &mut header, data)
    }

    /// [`Database::ltdb_store`] that leaves the header as stored (RSN bumped, transient flags
    /// cleared) in `header`, for the record-call path that keeps working with it.
    pub fn ltdb_store_updating(
        &mut self,
        pnn: u32,
        ctx: &DbContext<'_>,
        key: &[u8],
        header: &mut LtdbHeader,
        data: &[u8],
    ) -> Result<(), TdbError> {
        if !self.is_volatile() {
            return self.store.store(key, &[&header_bytes(header), data]);
        }
        let lmaster = lmaster(ctx, key);
        let flags = header.flags;
        // An empty record migrated away without ever carrying data is deleted, not stored.
        // A record the fetch logic created itself is queued for deletion right away.
        let mut schedule =
            flags & (REC_RO_FLAGS | REC_FLAG_AUTOMATIC) == REC_FLAG_AUTOMATIC && data.is_empty();
        let keep = if !data.is_empty()
            || flags & (REC_RO_FLAGS | REC_FLAG_AUTOMATIC | REC_FLAG_MIGRATED_WITH_DATA) != 0
        {
            true
        } else if pnn == lmaster {
            // The lmaster keeps empty records, except one that a vacuum run brought back
            // to it as dmaster.
            flags & REC_FLAG_VACUUM_MIGRATED == 0 || pnn != header.dmaster
        } else {
            pnn == header.dmaster
        };
        if keep && pnn == header.dmaster && flags & REC_RO_FLAGS == 0 {
            header.rsn = header.rsn.wrapping_add(1);
            schedule |= data.is_empty();
        }
        // Both flags only steer the decision above and never reach the file.
        header.flags &= !(REC_FLAG_VACUUM_MIGRATED | REC_FLAG_AUTOMATIC);
        let result = if keep {
            self.store.store(key, &[&header_bytes(header), data])
        } else {
            self.store.delete(key)
        };
        if result.is_ok() && keep {
            // An empty record waits for vacuuming; one with data again no longer does.
            self.note_stored(key, header, schedule);
        }
        result
    }

    /// `ctdb_ltdb_fetch`: the header and data of a record. A missing (or header-less) record
    /// gets an initial header naming the lmaster as dmaster, which is stored when the database
    /// is persistent or this node is that dmaster.
    pub(super) fn ltdb_fetch(
        &mut self,
        pnn: u32,
        ctx: &DbContext<'_>,
        key: &[u8],
    ) -> Result<(LtdbHeader, Vec<u8>), TdbError> {
        if let Some(value) = self.store.fetch(key)? {
            if let Ok((header, _)) = LtdbHeader::pull(&value) {
                return Ok((header, value[LTDB_HEADER_LEN..].to_vec()));
            }
        }
        let header = LtdbHeader {
            rsn: 0,
            dmaster: lmaster(ctx, key),
            reserved1: 0,
            flags: REC_FLAG_AUTOMATIC,
        };
        if self.is_persistent() || header.dmaster == pnn {
            if let Err(e) = self.ltdb_store(pnn, ctx, key, &header, &[]) {
                log::info!("failed to store initial header: {e}");
            }
        }
        Ok((header, Vec::new()))
    }
}

impl DatabaseSet {
    /// GET_DB_SEQNUM: the u64 in the `__db_sequence_number__` record, 0 when it has another
    /// size. Refused while the database is frozen outside the recovery transaction.
    pub(super) fn control_get_db_seqnum(&mut self, db_id: u32, ctx: &DbContext<'_>) -> DbReply {
        let pnn = self.config.pnn;
        let Some(db) = self.get_mut(db_id) else {
            log::error!("Unknown db 0x{db_id:08x}");
            return DbReply::fail();
        };
        if !db.allow_access() {
            return DbReply::fail();
        }
        match db.ltdb_fetch(pnn, ctx, DB_SEQNUM_KEY) {
            Ok((_, data)) => {
                let seqnum = <[u8; 8]>::try_from(data.as_slice())
                    .map(u64::from_ne_bytes)
                    .unwrap_or(0);
                DbReply::data(seqnum.to_ne_bytes().to_vec())
            }
            Err(e) => {
                log::error!("Failed to read the sequence number of {}: {e}", db.name);
                DbReply::fail()
            }
        }
    }
}
