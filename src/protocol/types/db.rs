//! Database payloads: db maps, transactions, pulls, traverses, records and record buffers.

use crate::protocol::basic::{Marshal, PullError, Reader, Writer};
use crate::protocol::ltdb::{LtdbHeader, LTDB_HEADER_LEN};

use super::{pull_item, pull_items};

/// `ctdb_dbid` (8 bytes): a database id and its `CTDB_DB_FLAGS_*` byte, then 3 bytes of hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dbid {
    pub db_id: u32,
    /// See [`super::db_flags`].
    pub flags: u8,
}

impl Dbid {
    pub const WIRE_LEN: usize = 8;
}

impl Marshal for Dbid {
    fn wire_len(&self) -> usize {
        Self::WIRE_LEN
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_u32(self.db_id);
        out.put_u8(self.flags);
        out.put_zeros(3);
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let db_id = r.u32()?;
        let flags = r.u8()?;
        r.skip(3)?;
        Ok((Dbid { db_id, flags }, r.pos()))
    }
}

/// `ctdb_dbid_map`: the GET_DBMAP reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DbidMap {
    pub dbs: Vec<Dbid>,
}

impl Marshal for DbidMap {
    fn wire_len(&self) -> usize {
        4 + Dbid::WIRE_LEN * self.dbs.len()
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_len(self.dbs.len());
        for db in &self.dbs {
            db.push(out);
        }
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let num = r.count_u32("dbid_map num", Dbid::WIRE_LEN)?;
        let dbs = pull_items(&mut r, num)?;
        Ok((DbidMap { dbs }, r.pos()))
    }
}

/// Generates a plain struct of fixed-width fields with its `Marshal` impl, for the many small
/// payloads that are nothing but integers (and explicit zero holes).
macro_rules! fixed_struct {
    (
        $(#[$meta:meta])*
        $name:ident ($len:expr) {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty => $get:ident / $put:ident ),+ $(,)?
        }
        $( hole $hole:expr )?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )+
        }

        impl $name {
            pub const WIRE_LEN: usize = $len;
        }

        impl Marshal for $name {
            fn wire_len(&self) -> usize {
                Self::WIRE_LEN
            }
            fn push(&self, out: &mut Vec<u8>) {
                $( out.$put(self.$field); )+
                $( out.put_zeros($hole); )?
            }
            fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
                let mut r = Reader::new(buf);
                let value = $name { $( $field: r.$get()?, )+ };
                $( r.skip($hole)?; )?
                Ok((value, r.pos()))
            }
        }
    };
}

fixed_struct! {
    /// `ctdb_transdb` (8 bytes): WIPE_DATABASE, DB_TRANSACTION_START/COMMIT. `tid` is the new
    /// generation during recovery.
    Transdb (8) {
        db_id: u32 => u32 / put_u32,
        tid: u32 => u32 / put_u32,
    }
}

fixed_struct! {
    /// `ctdb_pulldb` (8 bytes): the payload of the obsolete PULL_DB, kept for completeness.
    Pulldb (8) {
        db_id: u32 => u32 / put_u32,
        /// [`super::LMASTER_ANY`] for every record.
        lmaster: u32 => u32 / put_u32,
    }
}

fixed_struct! {
    /// `ctdb_pulldb_ext` (16 bytes): DB_PULL and DB_PUSH_START. Records travel as messages to
    /// `srvid`.
    PulldbExt (16) {
        db_id: u32 => u32 / put_u32,
        lmaster: u32 => u32 / put_u32,
        srvid: u64 => u64 / put_u64,
    }
}

fixed_struct! {
    /// `ctdb_traverse_start` (16 bytes): TRAVERSE_START and TRAVERSE_KILL.
    TraverseStart (16) {
        db_id: u32 => u32 / put_u32,
        reqid: u32 => u32 / put_u32,
        srvid: u64 => u64 / put_u64,
    }
}

fixed_struct! {
    /// `ctdb_traverse_start_ext` (24 bytes): TRAVERSE_START_EXT; the bool is followed by a
    /// 7-byte hole.
    TraverseStartExt (24) {
        db_id: u32 => u32 / put_u32,
        reqid: u32 => u32 / put_u32,
        srvid: u64 => u64 / put_u64,
        with_empty_records: bool => bool / put_bool,
    }
    hole 7
}

fixed_struct! {
    /// `ctdb_traverse_all` (24 bytes): TRAVERSE_ALL between daemons.
    TraverseAll (24) {
        db_id: u32 => u32 / put_u32,
        reqid: u32 => u32 / put_u32,
        pnn: u32 => u32 / put_u32,
        client_reqid: u32 => u32 / put_u32,
        srvid: u64 => u64 / put_u64,
    }
}

fixed_struct! {
    /// `ctdb_traverse_all_ext` (32 bytes): TRAVERSE_ALL_EXT between daemons. The stock daemon
    /// sends a stack struct, so the 7 bytes after the bool can hold garbage; they are ignored
    /// on input and written as zeros.
    TraverseAllExt (32) {
        db_id: u32 => u32 / put_u32,
        reqid: u32 => u32 / put_u32,
        pnn: u32 => u32 / put_u32,
        client_reqid: u32 => u32 / put_u32,
        srvid: u64 => u64 / put_u64,
        with_empty_records: bool => bool / put_bool,
    }
    hole 7
}

fixed_struct! {
    /// `ctdb_pid_srvid` as CHECK_PID_SRVID sends it: 12 packed bytes (`srvid` at offset 4),
    /// not the 16-byte C struct.
    PidSrvid (12) {
        pid: i32 => i32 / put_i32,
        srvid: u64 => u64 / put_u64,
    }
}

fixed_struct! {
    /// `ctdb_db_vacuum` as marshalled (5 bytes, no tail padding): DB_VACUUM. The daemon
    /// requires exactly 5 bytes.
    DbVacuum (5) {
        db_id: u32 => u32 / put_u32,
        full_vacuum_run: bool => bool / put_bool,
    }
}

fixed_struct! {
    /// `ctdb_server_id` (24 bytes), Samba's `struct server_id`.
    ServerId (24) {
        pid: u64 => u64 / put_u64,
        task_id: u32 => u32 / put_u32,
        vnn: u32 => u32 / put_u32,
        unique_id: u64 => u64 / put_u64,
    }
}

/// `ctdb_key_data` / `ctdb_control_schedule_for_deletion`: SCHEDULE_FOR_DELETION. `db_id`, a
/// 4-byte hole, the record's ltdb header at 8, the key length at 32 and the key at 36.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyData {
    pub db_id: u32,
    pub header: LtdbHeader,
    pub key: Vec<u8>,
}

impl Marshal for KeyData {
    fn wire_len(&self) -> usize {
        8 + LTDB_HEADER_LEN + 4 + self.key.len()
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_u32(self.db_id);
        out.put_zeros(4);
        self.header.push(out);
        out.put_datan(&self.key);
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let db_id = r.u32()?;
        r.skip(4)?;
        let header = pull_item(&mut r)?;
        let key = r.datan()?;
        Ok((KeyData { db_id, header, key }, r.pos()))
    }
}

/// `ctdb_notify_data`: REGISTER_NOTIFY. `data` is sent to `srvid` when the client goes away.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NotifyData {
    pub srvid: u64,
    pub data: Vec<u8>,
}

impl Marshal for NotifyData {
    fn wire_len(&self) -> usize {
        8 + 4 + self.data.len()
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_u64(self.srvid);
        out.put_datan(&self.data);
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let srvid = r.u64()?;
        let data = r.datan()?;
        Ok((NotifyData { srvid, data }, r.pos()))
    }
}

/// `ctdb_echo_data`: ECHO_DATA request and reply (the daemon answers after `timeout` ms).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EchoData {
    pub timeout: u32,
    pub data: Vec<u8>,
}

impl Marshal for EchoData {
    fn wire_len(&self) -> usize {
        4 + 4 + self.data.len()
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_u32(self.timeout);
        out.put_datan(&self.data);
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let timeout = r.u32()?;
        let data = r.datan()?;
        Ok((EchoData { timeout, data }, r.pos()))
    }
}

/// Bytes of a record before its key: `length`, `reqid`, `keylen`, `datalen`.
pub const REC_DATA_HEADER_LEN: usize = 16;

/// `ctdb_rec_data`: one record, `length` (= 16 + key + data, never padded), `reqid`, the two
/// lengths, then the key and data bytes. `data` includes the 24-byte ltdb header whenever the
/// sender attached one (every use in 4.17 does, except the empty end-of-traverse marker); see
/// [`RecData::with_header`] and [`RecData::header`].
///
/// Stock's two walkers disagree about a `length` that is larger than 16 + key + data (the
/// protocol library steps by the sum, the daemon's `ctdb_marshall_loop_next` by `length`), and
/// no stock producer writes one, so such a record is rejected here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecData {
    /// Traverse id, generation or 0, depending on the user.
    pub reqid: u32,
    pub key: Vec<u8>,
    pub data: Vec<u8>,
}

impl RecData {
    /// A record whose data is `header` followed by `data`, as `ctdb_marshall_record` builds it.
    pub fn with_header(reqid: u32, header: &LtdbHeader, key: &[u8], data: &[u8]) -> Self {
        let mut full = Vec::with_capacity(LTDB_HEADER_LEN + data.len());
        header.push(&mut full);
        full.extend_from_slice(data);
        RecData {
            reqid,
            key: key.to_vec(),
            data: full,
        }
    }

    /// The ltdb header at the front of `data`, if `data` is long enough to hold one.
    pub fn header(&self) -> Option<LtdbHeader> {
        LtdbHeader::pull(&self.data).ok().map(|(header, _)| header)
    }

    /// `data` after the ltdb header (empty if there is no room for a header).
    pub fn value(&self) -> &[u8] {
        self.data.get(LTDB_HEADER_LEN..).unwrap_or(&[])
    }
}

impl Marshal for RecData {
    fn wire_len(&self) -> usize {
        REC_DATA_HEADER_LEN + self.key.len() + self.data.len()
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_len(self.wire_len());
        out.put_u32(self.reqid);
        out.put_len(self.key.len());
        out.put_len(self.data.len());
        out.put_bytes(&self.key);
        out.put_bytes(&self.data);
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let length = r.u32()? as usize;
        let reqid = r.u32()?;
        let keylen = r.u32()? as usize;
        let datalen = r.u32()? as usize;
        let expected = REC_DATA_HEADER_LEN + keylen + datalen;
        if length != expected {
            return Err(PullError::BadLength {
                what: "rec_data length",
                value: length,
            });
        }
        let key = r.bytes(keylen)?.to_vec();
        let data = r.bytes(datalen)?.to_vec();
        Ok((RecData { reqid, key, data }, r.pos()))
    }
}

/// `ctdb_rec_buffer` (`ctdb_marshall_buffer`): `db_id`, `count`, then `count` records back to
/// back. Used by DB_PULL/DB_PUSH messages, UPDATE_RECORD, TRY_DELETE_RECORDS, TRANS3_COMMIT and
/// VACUUM_FETCH. Bytes after the last record are not part of the buffer (stock ignores them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecBuffer {
    pub db_id: u32,
    pub records: Vec<RecData>,
}

impl Marshal for RecBuffer {
    fn wire_len(&self) -> usize {
        8 + self.records.iter().map(Marshal::wire_len).sum::<usize>()
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_u32(self.db_id);
        out.put_len(self.records.len());
        for record in &self.records {
            record.push(out);
        }
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let db_id = r.u32()?;
        let count = r.count_u32("rec_buffer count", REC_DATA_HEADER_LEN)?;
        let records = pull_items(&mut r, count)?;
        Ok((RecBuffer { db_id, records }, r.pos()))
    }
}

/// A `ctdb_rec_buffer` read in place, for bulk consumers (the recovery helper's merge) that
/// would otherwise copy every key and value into a [`RecData`] of their own. Records come
/// out of [`RecBufferView::records`] with their offsets in the buffer, so they can be found
/// again later without keeping a borrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecBufferView<'a> {
    pub db_id: u32,
    /// Records the buffer claims to hold.
    pub count: usize,
    buf: &'a [u8],
}

/// One record of a [`RecBufferView`]; `key_offset` and `data_offset` index the whole buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecDataView<'a> {
    pub reqid: u32,
    pub key: &'a [u8],
    pub data: &'a [u8],
    pub key_offset: usize,
    pub data_offset: usize,
}

impl<'a> RecBufferView<'a> {
    /// Reads the buffer's db_id and count; records are checked as they are iterated.
    pub fn parse(buf: &'a [u8]) -> Result<Self, PullError> {
        let mut r = Reader::new(buf);
        let db_id = r.u32()?;
        let count = r.count_u32("rec_buffer count", REC_DATA_HEADER_LEN)?;
        Ok(RecBufferView { db_id, count, buf })
    }

    /// The records in order. A malformed record ends the iteration with its error.
    pub fn records(&self) -> RecordsView<'a> {
        RecordsView {
            buf: self.buf,
            pos: 8,
            left: self.count,
        }
    }
}

/// Iterator over the records of a [`RecBufferView`].
#[derive(Debug, Clone)]
pub struct RecordsView<'a> {
    buf: &'a [u8],
    pos: usize,
    left: usize,
}

impl<'a> Iterator for RecordsView<'a> {
    type Item = Result<RecDataView<'a>, PullError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let record = self.read();
        match &record {
            Ok(_) => {}
            Err(_) => self.left = 0,
        }
        Some(record)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

impl<'a> RecordsView<'a> {
    fn read(&mut self) -> Result<RecDataView<'a>, PullError> {
        let start = self.pos;
        let mut r = Reader::new(self.buf.get(start..).unwrap_or(&[]));
        let length = r.u32()? as usize;
        let reqid = r.u32()?;
        let keylen = r.u32()? as usize;
        let datalen = r.u32()? as usize;
        if Some(length)
            != keylen
                .checked_add(datalen)
                .and_then(|n| n.checked_add(REC_DATA_HEADER_LEN))
        {
            return Err(PullError::BadLength {
                what: "rec_data length",
                value: length,
            });
        }
        let key = r.bytes(keylen)?;
        let data = r.bytes(datalen)?;
        self.pos = start + r.pos();
        Ok(RecDataView {
            reqid,
            key,
            data,
            key_offset: start + REC_DATA_HEADER_LEN,
            data_offset: start + REC_DATA_HEADER_LEN + keylen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::types::check::all_seeds;
    use crate::protocol::types::fill;

    #[test]
    fn seeded_round_trips_and_truncations() {
        all_seeds("Dbid", fill::dbid);
        all_seeds("DbidMap", fill::dbid_map);
        all_seeds("Transdb", fill::transdb);
        all_seeds("Pulldb", fill::pulldb);
        all_seeds("PulldbExt", fill::pulldb_ext);
        all_seeds("TraverseStart", fill::traverse_start);
        all_seeds("TraverseStartExt", fill::traverse_start_ext);
        all_seeds("TraverseAll", fill::traverse_all);
        all_seeds("TraverseAllExt", fill::traverse_all_ext);
        all_seeds("PidSrvid", fill::pid_srvid);
        all_seeds("DbVacuum", fill::db_vacuum);
        all_seeds("ServerId", fill::server_id);
        all_seeds("KeyData", fill::key_data);
        all_seeds("NotifyData", fill::notify_data);
        all_seeds("EchoData", fill::echo_data);
        all_seeds("RecData", fill::rec_data);
        all_seeds("RecBuffer", fill::rec_buffer);
    }

    #[test]
    fn the_view_reads_what_the_owned_decoder_reads() {
        let mut prng = crate::testing::Prng::new(0x5eed_0b0f);
        for _ in 0..200 {
            let buffer = fill::rec_buffer(&mut prng);
            let bytes = buffer.to_bytes();
            let view = RecBufferView::parse(&bytes).unwrap();
            assert_eq!(view.db_id, buffer.db_id);
            let records: Vec<RecDataView<'_>> = view.records().map(Result::unwrap).collect();
            assert_eq!(records.len(), buffer.records.len());
            for (seen, owned) in records.iter().zip(&buffer.records) {
                assert_eq!(seen.reqid, owned.reqid);
                assert_eq!(seen.key, owned.key.as_slice());
                assert_eq!(seen.data, owned.data.as_slice());
                assert_eq!(&bytes[seen.key_offset..][..seen.key.len()], seen.key);
                assert_eq!(&bytes[seen.data_offset..][..seen.data.len()], seen.data);
            }
            // Every strict prefix fails, in the header or in a record, and never panics.
            for cut in 0..bytes.len() {
                if let Ok(view) = RecBufferView::parse(&bytes[..cut]) {
                    assert!(view.records().any(|r| r.is_err()), "prefix of {cut} bytes");
                }
            }
        }
    }

    #[test]
    fn fixed_layouts() {
        let ext = TraverseAllExt {
            db_id: 1,
            reqid: 2,
            pnn: 3,
            client_reqid: 4,
            srvid: 0x0102_0304_0506_0708,
            with_empty_records: true,
        };
        let b = ext.to_bytes();
        assert_eq!(b.len(), 32);
        assert_eq!(&b[16..24], &0x0102_0304_0506_0708u64.to_ne_bytes());
        assert_eq!(&b[24..], &[1, 0, 0, 0, 0, 0, 0, 0]);

        let ps = PidSrvid {
            pid: 1234,
            srvid: 0xfe00_0000_0000_0002,
        };
        let b = ps.to_bytes();
        assert_eq!(b.len(), 12);
        assert_eq!(&b[4..], &0xfe00_0000_0000_0002u64.to_ne_bytes());

        let kd = KeyData {
            db_id: 7,
            header: LtdbHeader {
                rsn: 9,
                dmaster: 1,
                reserved1: 0,
                flags: 0x0001_0000,
            },
            key: b"key".to_vec(),
        };
        let b = kd.to_bytes();
        assert_eq!(&b[8..16], &9u64.to_ne_bytes());
        assert_eq!(&b[32..36], &3u32.to_ne_bytes());
        assert_eq!(&b[36..], b"key");

        assert_eq!(
            DbVacuum {
                db_id: 1,
                full_vacuum_run: true
            }
            .to_bytes(),
            [1, 0, 0, 0, 1]
        );
        assert_eq!(
            Dbid { db_id: 5, flags: 3 }.to_bytes(),
            [5, 0, 0, 0, 3, 0, 0, 0]
        );
    }

    #[test]
    fn bools_other_than_0_and_1_are_rejected() {
        let mut b = TraverseStartExt::default().to_bytes();
        b[16] = 2;
        assert!(TraverseStartExt::pull(&b).is_err());
        assert!(DbVacuum::pull(&[0, 0, 0, 0, 9]).is_err());
    }

    #[test]
    fn rec_data_layout_and_header_helpers() {
        let header = LtdbHeader {
            rsn: 5,
            dmaster: 2,
            reserved1: 0,
            flags: 0,
        };
        let rec = RecData::with_header(9, &header, b"k", b"value");
        let b = rec.to_bytes();
        assert_eq!(&b[0..4], &(16u32 + 1 + 24 + 5).to_ne_bytes());
        assert_eq!(&b[4..8], &9u32.to_ne_bytes());
        assert_eq!(&b[8..12], &1u32.to_ne_bytes());
        assert_eq!(&b[12..16], &29u32.to_ne_bytes());
        assert_eq!(b[16], b'k');
        assert_eq!(rec.header(), Some(header));
        assert_eq!(rec.value(), b"value");
        let empty = RecData::default();
        assert_eq!(empty.header(), None);
        assert_eq!(empty.value(), b"");
    }

    #[test]
    fn rec_data_length_must_match_its_parts() {
        let mut b = RecData {
            reqid: 0,
            key: vec![1],
            data: vec![2],
        }
        .to_bytes();
        b[0] = 19;
        assert!(RecData::pull(&b).is_err());
        b[0] = 17;
        assert!(RecData::pull(&b).is_err());
        // Lengths that would overflow a 32-bit sum are still just rejected.
        let mut huge = vec![0u8; 16];
        huge[8..12].copy_from_slice(&u32::MAX.to_ne_bytes());
        huge[12..16].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(RecData::pull(&huge).is_err());
    }

    #[test]
    fn rec_buffer_records_are_back_to_back_and_trailing_bytes_ignored() {
        let buf = RecBuffer {
            db_id: 0x1234,
            records: vec![
                RecData {
                    reqid: 1,
                    key: b"a".to_vec(),
                    data: b"xyz".to_vec(),
                },
                RecData {
                    reqid: 2,
                    key: vec![],
                    data: vec![],
                },
            ],
        };
        let mut b = buf.to_bytes();
        assert_eq!(b.len(), 8 + 20 + 16);
        assert_eq!(&b[28..32], &16u32.to_ne_bytes());
        b.extend_from_slice(&[0xee; 5]);
        let (back, used) = RecBuffer::pull(&b).unwrap();
        assert_eq!(back, buf);
        assert_eq!(used, 44);
    }

    #[test]
    fn huge_counts_are_rejected_without_allocating() {
        assert!(DbidMap::pull(&u32::MAX.to_ne_bytes()).is_err());
        let mut b = vec![0u8; 4];
        b.extend_from_slice(&u32::MAX.to_ne_bytes());
        assert!(RecBuffer::pull(&b).is_err());
        let mut nd = vec![0u8; 8];
        nd.extend_from_slice(&u32::MAX.to_ne_bytes());
        assert!(NotifyData::pull(&nd).is_err());
    }
}
