//! `ctdb_ltdb_header`: the 24 bytes in front of every record of every CTDB TDB.

use super::basic::{Marshal, PullError, Reader, Writer};

pub const LTDB_HEADER_LEN: usize = 24;

pub const REC_FLAG_DEFAULT: u32 = 0;
pub const REC_FLAG_MIGRATED_WITH_DATA: u32 = 0x0001_0000;
pub const REC_FLAG_VACUUM_MIGRATED: u32 = 0x0002_0000;
pub const REC_FLAG_AUTOMATIC: u32 = 0x0004_0000;
pub const REC_RO_HAVE_DELEGATIONS: u32 = 0x0100_0000;
pub const REC_RO_HAVE_READONLY: u32 = 0x0200_0000;
pub const REC_RO_REVOKING_READONLY: u32 = 0x0400_0000;
pub const REC_RO_REVOKE_COMPLETE: u32 = 0x0800_0000;
pub const REC_RO_FLAGS: u32 = REC_RO_HAVE_DELEGATIONS
    | REC_RO_HAVE_READONLY
    | REC_RO_REVOKING_READONLY
    | REC_RO_REVOKE_COMPLETE;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LtdbHeader {
    /// Record sequence number: bumped by the daemon on every store that changes the record.
    pub rsn: u64,
    /// PNN of the node that holds the authoritative copy.
    pub dmaster: u32,
    pub reserved1: u32,
    pub flags: u32,
}

impl Marshal for LtdbHeader {
    fn wire_len(&self) -> usize {
        LTDB_HEADER_LEN
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_u64(self.rsn);
        out.put_u32(self.dmaster);
        out.put_u32(self.reserved1);
        out.put_u32(self.flags);
        out.put_zeros(4);
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let h = LtdbHeader {
            rsn: r.u64()?,
            dmaster: r.u32()?,
            reserved1: r.u32()?,
            flags: r.u32()?,
        };
        r.skip(4)?;
        Ok((h, r.pos()))
    }
}
