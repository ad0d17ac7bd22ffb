//! Where a recovery collects one database (the `recdb_*` functions of
//! `ctdb/server/ctdb_recovery_helper.c`), and how the result is cut into push buffers.
//!
//! Stock collects into a scratch TDB file, `recdb.<dbname>`; this helper keeps the records in
//! a hash map keyed by record key. The merge rule and the set of records pushed are the
//! same; only the push order differs (stock pushes in libtdb traverse order, we push in the
//! order of the receiving database's hash chains, see [`RecDb::push_buffers`]), and the
//! order does not change what a node ends up with.
//!
//! Pulls from several nodes may arrive interleaved (see [`super::recovery`]), so each
//! collected copy remembers the position of the node it came from and [`RecDb::add`] decides
//! exactly as if the nodes had been pulled one after the other in node-list order, as stock
//! does.
//!
//! The push buffers are built in memory instead of in stock's unlinked `recdb.<dbname>.dat`
//! file; a buffer's boundaries follow stock's rule.

use crate::protocol::basic::Marshal;
use crate::protocol::hash;
use crate::protocol::ltdb::{LtdbHeader, LTDB_HEADER_LEN, REC_FLAG_MIGRATED_WITH_DATA};
use crate::protocol::packet::MessageBuffer;
use crate::protocol::types::{RecBuffer, RecBufferView, REC_DATA_HEADER_LEN};

/// Whether a pulled copy of a record replaces the copy already collected (stock's
/// `recdb_add_traverse`): a higher RSN always wins; on an RSN tie the newcomer wins only if
/// the collected copy names the recovering node (`leader`) as its dmaster.
pub fn pulled_copy_wins(pulled: &LtdbHeader, collected: &LtdbHeader, leader: u32) -> bool {
    pulled.rsn > collected.rsn || (pulled.rsn == collected.rsn && collected.dmaster == leader)
}

/// Whether the copy from the node at position `pulled_from` replaces the one collected from
/// position `collected_from`, with the outcome stock's one-node-after-the-other merge would
/// have: if the pulled copy comes from a later node it is the newcomer; if from an earlier
/// one, stock would have collected it first and kept it unless the other copy wins as the
/// newcomer. The result does not depend on the order in which the copies arrive: among the
/// copies with the highest RSN, the first (in node order) not naming the leader wins, or, if
/// all name the leader, the last.
pub fn replaces(
    pulled: &LtdbHeader,
    pulled_from: u32,
    collected: &LtdbHeader,
    collected_from: u32,
    leader: u32,
) -> bool {
    if pulled_from >= collected_from {
        pulled_copy_wins(pulled, collected, leader)
    } else {
        !pulled_copy_wins(collected, pulled, leader)
    }
}

/// Why pulled records could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddError {
    /// Not a `ctdb_rec_buffer`; nothing was added.
    Malformed,
    /// The buffer belongs to another database; nothing was added.
    WrongDb(u32),
    /// A record too short to hold an ltdb header, or cut short; the records before it were
    /// added.
    ShortRecord,
    /// A message too large to index with 32-bit offsets; nothing was added.
    TooLarge,
}

/// Who gets which records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination<'a> {
    /// Every node gets every record (stock). Outside persistent databases each record names
    /// `dmaster` (the leader) as its dmaster.
    Everyone { dmaster: u32 },
    /// Each record goes only to its lmaster under `vnnmap`, which becomes its dmaster; one
    /// share per node of `nodes` (in that order), possibly empty. Only for volatile
    /// databases.
    Lmaster { vnnmap: &'a [u32], nodes: &'a [u32] },
}

/// No entry (end of a bucket's chain, empty bucket).
const NONE: u32 = u32::MAX;

/// The collected copy of one key: where its key and data lie in the received messages
/// (`chunk`, offsets into it), its CTDB hash (bucket, lmaster and hash chain), the position
/// of the node it came from, and the next entry of its bucket.
#[derive(Debug, Clone, Copy)]
struct Entry {
    hash: u32,
    chunk: u32,
    key_offset: u32,
    key_len: u32,
    data_offset: u32,
    data_len: u32,
    from: u32,
    next: u32,
}

impl Entry {
    fn key<'c>(&self, chunks: &'c [Vec<u8>]) -> &'c [u8] {
        self.key_while(chunks, NOT_ADDING)
    }

    fn data<'c>(&self, chunks: &'c [Vec<u8>]) -> &'c [u8] {
        self.data_while(chunks, NOT_ADDING)
    }

    /// Bytes the record takes as a `ctdb_rec_data` (header, key and data).
    fn rec_data_len(&self) -> usize {
        REC_DATA_HEADER_LEN + self.key_len as usize + self.data_len as usize
    }

    /// The key while `adding` (see [`bytes_of`]) is being added.
    fn key_while<'c>(&self, chunks: &'c [Vec<u8>], adding: (&'c [u8], u32)) -> &'c [u8] {
        bytes_of(chunks, adding, self.chunk, self.key_offset, self.key_len)
    }

    fn data_while<'c>(&self, chunks: &'c [Vec<u8>], adding: (&'c [u8], u32)) -> &'c [u8] {
        bytes_of(chunks, adding, self.chunk, self.data_offset, self.data_len)
    }
}

/// The `len` bytes at `offset` of chunk `chunk`; chunk `adding` is `message`, the message
/// being added (not yet in `chunks`). Out of range reads as empty.
fn bytes_of<'c>(
    chunks: &'c [Vec<u8>],
    (message, adding): (&'c [u8], u32),
    chunk: u32,
    offset: u32,
    len: u32,
) -> &'c [u8] {
    let source: &[u8] = if chunk == adding {
        message
    } else {
        chunks.get(chunk as usize).map_or(&[], Vec::as_slice)
    };
    let start = offset as usize;
    source
        .get(start..start.saturating_add(len as usize))
        .unwrap_or(&[])
}

/// No message being added (see [`bytes_of`]).
const NOT_ADDING: (&[u8], u32) = (&[], NONE);

/// Spreads a CTDB hash over the bucket index bits (the low bits of the hash alone would
/// follow the TDB's own chains).
fn bucket_of(hash: u32, mask: usize) -> usize {
    ((u64::from(hash).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize) & mask
}

/// A hash table of [`Entry`]s chained through `next`, keyed by the key bytes in the chunks.
/// Written out because the standard map cannot compare a key that lives in a buffer it
/// does not own; a million records cost two vectors instead of two allocations each.
#[derive(Debug, Default)]
struct Table {
    buckets: Vec<u32>,
    entries: Vec<Entry>,
}

impl Table {
    /// Room for `more` entries without a rehash during the next adds.
    fn reserve(&mut self, more: usize) {
        let wanted = self.entries.len().saturating_add(more);
        self.entries.reserve(more);
        if wanted > self.buckets.len() {
            self.rehash(wanted.next_power_of_two().max(1024));
        }
    }

    fn rehash(&mut self, size: usize) {
        self.buckets = vec![NONE; size];
        let mask = size - 1;
        for (index, entry) in self.entries.iter_mut().enumerate() {
            let bucket = &mut self.buckets[bucket_of(entry.hash, mask)];
            entry.next = *bucket;
            *bucket = u32::try_from(index).unwrap_or(NONE);
        }
    }

    fn insert(&mut self, mut entry: Entry) {
        if self.entries.len() >= self.buckets.len() {
            self.rehash((self.buckets.len() * 2).max(1024));
        }
        let mask = self.buckets.len() - 1;
        let bucket = &mut self.buckets[bucket_of(entry.hash, mask)];
        entry.next = *bucket;
        *bucket = u32::try_from(self.entries.len()).unwrap_or(NONE);
        self.entries.push(entry);
    }
}

#[derive(Debug)]
pub struct RecDb {
    db_id: u32,
    name: String,
    persistent: bool,
    leader: u32,
    /// The received messages, kept whole; entries point into them.
    chunks: Vec<Vec<u8>>,
    table: Table,
}

impl RecDb {
    /// An empty collection. `persistent` decides only whether pushed records get their
    /// dmaster rewritten (stock passes the PERSISTENT flag, so replicated databases are
    /// rewritten like volatile ones); `leader` is the recovering node, for the merge rule.
    pub fn new(db_id: u32, name: &str, persistent: bool, leader: u32) -> Self {
        RecDb {
            db_id,
            name: name.to_owned(),
            persistent,
            leader,
            chunks: Vec::new(),
            table: Table::default(),
        }
    }

    pub fn db_id(&self) -> u32 {
        self.db_id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Distinct keys collected (deleted records included).
    pub fn len(&self) -> usize {
        self.table.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.entries.is_empty()
    }

    /// Every collected key with its data, in no particular order.
    pub fn records(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.table
            .entries
            .iter()
            .map(|e| (e.key(&self.chunks), e.data(&self.chunks)))
    }

    /// [`RecDb::add_message`] of an encoded `buffer`.
    pub fn add(&mut self, buffer: RecBuffer, from: u32) -> Result<u32, AddError> {
        self.add_message(buffer.to_bytes(), from)
    }

    /// Merges the records of one DB_PULL message (a `ctdb_rec_buffer`) pulled from the node
    /// at position `from` of the pull order, keeping for each key the copy [`replaces`]
    /// prefers, and returns how many records the message held. Stops at the first record
    /// without a header. The message is kept whole: collected copies point into it.
    pub fn add_message(&mut self, message: Vec<u8>, from: u32) -> Result<u32, AddError> {
        let all = 0..message.len();
        self.add_message_in(message, all, from)
    }

    /// [`RecDb::add_message`] of the rec_buffer at `message[range]` (a received frame, kept
    /// whole instead of copying its payload out).
    pub fn add_message_in(
        &mut self,
        message: Vec<u8>,
        range: std::ops::Range<usize>,
        from: u32,
    ) -> Result<u32, AddError> {
        let base = range.start;
        let buffer = message.get(range).ok_or(AddError::Malformed)?;
        let view = RecBufferView::parse(buffer).map_err(|_| AddError::Malformed)?;
        if view.db_id != self.db_id {
            return Err(AddError::WrongDb(view.db_id));
        }
        if u32::try_from(message.len()).is_err() {
            return Err(AddError::TooLarge);
        }
        let chunk = u32::try_from(self.chunks.len()).map_err(|_| AddError::TooLarge)?;
        self.table.reserve(view.count);
        let mut added: u32 = 0;
        let mut result = Ok(());
        for record in view.records() {
            let Ok(record) = record else {
                result = Err(AddError::ShortRecord);
                break;
            };
            let Some(pulled) = header_of(record.data) else {
                result = Err(AddError::ShortRecord);
                break;
            };
            // The message is at most u32::MAX bytes long (checked above).
            let entry = Entry {
                hash: hash::ctdb_hash(record.key),
                chunk,
                key_offset: (base + record.key_offset) as u32,
                key_len: record.key.len() as u32,
                data_offset: (base + record.data_offset) as u32,
                data_len: record.data.len() as u32,
                from,
                next: NONE,
            };
            added = added.wrapping_add(1);
            let chunks = &self.chunks;
            // The message joins `chunks` only after the loop, so copies collected from it
            // (a key twice in one message) are read from `message` itself.
            let adding = (message.as_slice(), chunk);
            match self.table.find(chunks, adding, entry.hash, record.key) {
                None => self.table.insert(entry),
                Some(index) => {
                    let collected = self.table.entries[index];
                    let known = header_of(collected.data_while(chunks, adding));
                    let wins = known.is_none_or(|known| {
                        replaces(&pulled, from, &known, collected.from, self.leader)
                    });
                    if wins {
                        let slot = &mut self.table.entries[index];
                        *slot = Entry {
                            next: slot.next,
                            ..entry
                        };
                    }
                }
            }
        }
        self.chunks.push(message);
        result.map(|()| added)
    }

    /// Cuts the records to push into `ctdb_rec_buffer`s and hands each to `send` (share,
    /// record count, buffer) as soon as it is full, so the first ones travel while the rest
    /// are cut; returns the record count of each share. One share for
    /// [`Destination::Everyone`], one per node for [`Destination::Lmaster`]. Header-only
    /// (deleted) records are left out; outside persistent databases every record gets its
    /// new dmaster and `MIGRATED_WITH_DATA`. Each share is ordered by the receiving TDB's
    /// hash chain (`hash % hash_size`, the jenkins hash of volatile databases), so the
    /// daemon's stores walk one chain after the other. Buffers are cut as stock cuts them: a
    /// buffer is closed as soon as it grows beyond `max_size`, and a last (possibly empty)
    /// buffer always follows; the last buffers come at the end, in share order. Stops at the
    /// first error of `send`.
    pub fn push_streamed<E>(
        self,
        destination: Destination<'_>,
        hash_size: u32,
        max_size: usize,
        send: impl FnMut(usize, u32, MessageBuffer) -> Result<(), E>,
    ) -> Result<Vec<u32>, E> {
        let partition = partition(&self.table.entries, destination, hash_size);
        let dmaster_of = |share: usize| {
            (!self.persistent)
                .then(|| partition.dmasters.get(share).copied())
                .flatten()
        };
        cut_buffers(
            self.db_id,
            &self.table.entries,
            &self.chunks,
            &partition,
            dmaster_of,
            max_size,
            send,
        )
    }
}

impl Table {
    /// The entry of `key` (with CTDB hash `hash`), while `adding` (see [`bytes_of`]) is being
    /// added.
    fn find(
        &self,
        chunks: &[Vec<u8>],
        adding: (&[u8], u32),
        hash: u32,
        key: &[u8],
    ) -> Option<usize> {
        if self.buckets.is_empty() {
            return None;
        }
        let mut at = self.buckets[bucket_of(hash, self.buckets.len() - 1)];
        while at != NONE {
            let entry = &self.entries[at as usize];
            if entry.hash == hash && entry.key_while(chunks, adding) == key {
                return Some(at as usize);
            }
            at = entry.next;
        }
        None
    }
}

/// Most chains [`partition`] counts into; beyond that it sorts instead.
const MAX_COUNTING_SLOTS: usize = 1 << 24;

/// The records with data in hash chain order, each with its share, and each share's dmaster
/// and encoded size.
#[derive(Debug)]
struct Partition {
    /// (index into the entries, share).
    order: Vec<(u32, u32)>,
    dmasters: Vec<u32>,
    /// Bytes each share's records take as `ctdb_rec_data`.
    share_bytes: Vec<usize>,
}

/// Splits the records with data into shares and puts them in hash chain order. A counting
/// sort over the chains: two passes over the entries and no comparisons (a comparison sort
/// of a million records was a fifth of the helper's time). One order for all shares, so that
/// [`cut_buffers`] reads the pulled messages once, front to back (each node sends its records
/// in chain order), instead of once per share.
fn partition(entries: &[Entry], destination: Destination<'_>, hash_size: u32) -> Partition {
    let hash_size = hash_size.max(1);
    let dmasters: Vec<u32> = match destination {
        Destination::Everyone { dmaster } => vec![dmaster],
        Destination::Lmaster { nodes, .. } => nodes.to_vec(),
    };
    // Where each vnnmap slot's records go (None: an lmaster outside `nodes`, which the
    // caller rules out).
    let slot_share: Vec<Option<u32>> = match destination {
        Destination::Everyone { .. } => Vec::new(),
        Destination::Lmaster { vnnmap, nodes } => vnnmap
            .iter()
            .map(|pnn| nodes.iter().position(|n| n == pnn).map(|at| at as u32))
            .collect(),
    };
    let slots = u32::try_from(slot_share.len()).unwrap_or(u32::MAX);
    let share_of = |entry: &Entry| -> Option<u32> {
        if entry.data_len as usize <= LTDB_HEADER_LEN {
            return None;
        }
        if slot_share.is_empty() {
            Some(0)
        } else {
            slot_share
                .get((entry.hash % slots) as usize)
                .copied()
                .flatten()
        }
    };
    let chain_of = |entry: &Entry| (entry.hash % hash_size) as usize;
    let mut share_bytes = vec![0usize; dmasters.len()];
    let mut order: Vec<(u32, u32)> = Vec::new();
    let chains = hash_size as usize;
    if chains > MAX_COUNTING_SLOTS {
        for (index, entry) in entries.iter().enumerate() {
            if let Some(share) = share_of(entry) {
                share_bytes[share as usize] += entry.rec_data_len();
                order.push((index as u32, share));
            }
        }
        order.sort_by_key(|&(i, _)| chain_of(&entries[i as usize]));
        return Partition {
            order,
            dmasters,
            share_bytes,
        };
    }
    // Pass one: how many records each chain gets, then where each chain starts.
    let mut starts: Vec<u32> = vec![0; chains + 1];
    for entry in entries {
        if let Some(share) = share_of(entry) {
            share_bytes[share as usize] += entry.rec_data_len();
            starts[chain_of(entry) + 1] += 1;
        }
    }
    for chain in 1..starts.len() {
        starts[chain] += starts[chain - 1];
    }
    // Pass two: every record into its chain's run, in entry order (stable).
    order.resize(starts[chains] as usize, (0, 0));
    for (index, entry) in entries.iter().enumerate() {
        if let Some(share) = share_of(entry) {
            let next = &mut starts[chain_of(entry)];
            order[*next as usize] = (index as u32, share);
            *next += 1;
        }
    }
    Partition {
        order,
        dmasters,
        share_bytes,
    }
}

/// Whether every lmaster of `vnnmap` is one of `nodes` (so [`Destination::Lmaster`] loses
/// no record).
pub fn lmasters_covered(vnnmap: &[u32], nodes: &[u32]) -> bool {
    !vnnmap.is_empty() && vnnmap.iter().all(|pnn| nodes.contains(pnn))
}

/// Encodes each share into `ctdb_rec_buffer`s cut as stock cuts them, rewriting the header
/// of every record to name the share's dmaster (when given) with `MIGRATED_WITH_DATA`, and
/// hands each buffer to `send` once it is complete (see [`RecDb::push_streamed`]).
fn cut_buffers<E>(
    db_id: u32,
    entries: &[Entry],
    chunks: &[Vec<u8>],
    partition: &Partition,
    dmaster_of: impl Fn(usize) -> Option<u32>,
    max_size: usize,
    mut send: impl FnMut(usize, u32, MessageBuffer) -> Result<(), E>,
) -> Result<Vec<u32>, E> {
    const EMPTY_LEN: usize = 8;
    // Length, reqid, key length and data length.
    const _: () = assert!(REC_DATA_HEADER_LEN == 16);
    let capacity = |left: usize| left.min(max_size.saturating_add(4096)).max(EMPTY_LEN);
    let start = |left: usize| {
        let mut buffer = MessageBuffer::with_capacity(capacity(left));
        buffer.extend_from_slice(&db_id.to_ne_bytes());
        buffer.extend_from_slice(&0u32.to_ne_bytes());
        buffer
    };
    struct Share {
        current: MessageBuffer,
        count: u32,
        total: u32,
        /// Bytes of records not yet written, to size the next buffer.
        left: usize,
        dmaster: Option<u32>,
    }
    let mut shares: Vec<Share> = partition
        .share_bytes
        .iter()
        .enumerate()
        .map(|(share, &bytes)| Share {
            current: start(bytes + EMPTY_LEN),
            count: 0,
            total: 0,
            left: bytes + EMPTY_LEN,
            dmaster: dmaster_of(share),
        })
        .collect();
    for &(index, share_index) in &partition.order {
        let entry = &entries[index as usize];
        let Some(share) = shares.get_mut(share_index as usize) else {
            continue;
        };
        let key = entry.key(chunks);
        let data = entry.data(chunks);
        let record_len = REC_DATA_HEADER_LEN + key.len() + data.len();
        let mut head = [0u8; REC_DATA_HEADER_LEN];
        for (at, word) in [record_len, 0, key.len(), data.len()]
            .into_iter()
            .enumerate()
        {
            // Every length fits: the records come from messages indexed with u32 offsets.
            head[at * 4..at * 4 + 4].copy_from_slice(&(word as u32).to_ne_bytes());
        }
        let current = &mut share.current;
        current.extend_from_slice(&head);
        current.extend_from_slice(key);
        let data_at = current.payload_len();
        current.extend_from_slice(data);
        if let Some(dmaster) = share.dmaster {
            rewrite_header(&mut current.payload_mut()[data_at..], dmaster);
        }
        share.count += 1;
        share.total += 1;
        share.left = share.left.saturating_sub(record_len);
        if current.payload_len() > max_size {
            let full = std::mem::replace(current, start(share.left));
            send(share_index as usize, share.count, finish(full, share.count))?;
            share.count = 0;
        }
    }
    let mut totals = Vec::with_capacity(shares.len());
    for (index, share) in shares.into_iter().enumerate() {
        send(index, share.count, finish(share.current, share.count))?;
        totals.push(share.total);
    }
    Ok(totals)
}

/// Writes the record count into a buffer built by [`cut_buffers`].
fn finish(mut buffer: MessageBuffer, count: u32) -> MessageBuffer {
    if let Some(field) = buffer.payload_mut().get_mut(4..8) {
        field.copy_from_slice(&count.to_ne_bytes());
    }
    buffer
}

fn header_of(data: &[u8]) -> Option<LtdbHeader> {
    LtdbHeader::pull(data).ok().map(|(header, _)| header)
}

/// Sets the dmaster and the MIGRATED_WITH_DATA flag of the header at the front of `data`,
/// in place (the fields of [`LtdbHeader`]: rsn at 0, dmaster at 8, flags at 16; the
/// trailing padding stays as it was, as stock leaves it).
fn rewrite_header(data: &mut [u8], dmaster: u32) {
    if data.len() < LTDB_HEADER_LEN {
        return;
    }
    data[8..12].copy_from_slice(&dmaster.to_ne_bytes());
    let mut flags = [0u8; 4];
    flags.copy_from_slice(&data[16..20]);
    let flags = u32::from_ne_bytes(flags) | REC_FLAG_MIGRATED_WITH_DATA;
    data[16..20].copy_from_slice(&flags.to_ne_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::types::RecData;
    use crate::testing::Prng;
    use std::collections::HashMap;

    /// Encoded push buffers and how many records each carries.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    struct PushBuffers {
        buffers: Vec<(u32, Vec<u8>)>,
    }

    impl PushBuffers {
        fn record_count(&self) -> u32 {
            self.buffers.iter().map(|(count, _)| *count).sum()
        }
    }

    impl RecDb {
        /// The records to push, one [`PushBuffers`] per share: [`RecDb::push_streamed`]
        /// collected.
        fn push_buffers(
            self,
            destination: Destination<'_>,
            hash_size: u32,
            max_size: usize,
        ) -> Vec<PushBuffers> {
            let mut shares: Vec<PushBuffers> = Vec::new();
            let pushed =
                self.push_streamed(destination, hash_size, max_size, |share, count, buffer| {
                    if shares.len() <= share {
                        shares.resize_with(share + 1, PushBuffers::default);
                    }
                    shares[share]
                        .buffers
                        .push((count, buffer.payload().to_vec()));
                    Ok::<(), ()>(())
                });
            debug_assert!(pushed.is_ok());
            shares
        }
    }

    fn header(rsn: u64, dmaster: u32, flags: u32) -> LtdbHeader {
        LtdbHeader {
            rsn,
            dmaster,
            reserved1: 0,
            flags,
        }
    }

    fn collected(recdb: &RecDb) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = recdb
            .records()
            .map(|(k, d)| (k.to_vec(), d.to_vec()))
            .collect();
        out.sort();
        out
    }

    fn buf(records: Vec<RecData>) -> RecBuffer {
        RecBuffer {
            db_id: 0x1234,
            records,
        }
    }

    fn rec(key: &str, h: LtdbHeader, v: &str) -> RecData {
        RecData::with_header(0, &h, key.as_bytes(), v.as_bytes())
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
        let mut recdb = RecDb::new(0x1234, "merge", false, 1);
        recdb
            .add(
                buf(vec![
                    rec("a", header(3, 0, 0), "a-from-0"),
                    rec("b", header(7, 1, 0), "b-from-0"),
                    rec("c", header(2, 0, 0), "c-from-0"),
                ]),
                0,
            )
            .unwrap();
        recdb
            .add(
                buf(vec![
                    rec("a", header(2, 2, 0), "a-from-2"),
                    rec("b", header(7, 2, 0), "b-from-2"),
                    rec("c", header(2, 2, 0), "c-from-2"),
                    rec("d", header(1, 2, 0), ""),
                ]),
                1,
            )
            .unwrap();
        let values: Vec<(String, u64, String)> = collected(&recdb)
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

    /// Copies of one key from several nodes, merged in every arrival order, give what
    /// stock's node-by-node merge gives.
    #[test]
    fn the_merge_does_not_depend_on_arrival_order() {
        let leader = 1;
        for seed in crate::testing::seeds(300) {
            let mut rng = Prng::new(seed);
            let nodes = 2 + rng.below(4) as u32;
            let mut copies: Vec<(u32, LtdbHeader)> = Vec::new();
            for from in 0..nodes {
                if rng.below(5) != 0 {
                    copies.push((from, header(rng.below(3), rng.below(3) as u32, 0)));
                }
            }
            if copies.is_empty() {
                continue;
            }
            // Stock: in node order, with pulled_copy_wins.
            let mut expected = copies[0];
            for copy in &copies[1..] {
                if pulled_copy_wins(&copy.1, &expected.1, leader) {
                    expected = *copy;
                }
            }
            let mut order = copies.clone();
            for _ in 0..6 {
                // A random arrival order.
                for i in (1..order.len()).rev() {
                    let j = rng.below(i as u64 + 1) as usize;
                    order.swap(i, j);
                }
                let mut recdb = RecDb::new(0x1234, "order", false, leader);
                for (from, h) in &order {
                    recdb
                        .add(buf(vec![rec("k", *h, &format!("from-{from}"))]), *from)
                        .unwrap();
                }
                let got = recdb
                    .table
                    .entries
                    .iter()
                    .find(|e| e.key(&recdb.chunks) == b"k")
                    .unwrap();
                assert_eq!(
                    (got.from, header_of(got.data(&recdb.chunks)).unwrap()),
                    expected,
                    "seed {seed}: copies {copies:?} arriving as {order:?}"
                );
            }
        }
    }

    #[test]
    fn add_stops_at_a_record_without_header() {
        let mut recdb = RecDb::new(0x1234, "short", false, 0);
        let good = RecData::with_header(0, &header(1, 0, 0), b"k1", b"v");
        let short = RecData {
            reqid: 0,
            key: b"k2".to_vec(),
            data: vec![0; 23],
        };
        let after = RecData::with_header(0, &header(1, 0, 0), b"k3", b"v");
        let result = recdb.add(buf(vec![good, short, after]), 0);
        assert_eq!(result, Err(AddError::ShortRecord));
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
            let mut recdb = RecDb::new(0x1234, "p", persistent, 0);
            let records = vec![
                RecData::with_header(0, &header(9, 0, 0x0100_0000), b"full", b"data"),
                RecData::with_header(0, &header(9, 0, 0), b"empty", b""),
            ];
            recdb.add(buf(records), 0).unwrap();
            let shares = recdb.push_buffers(Destination::Everyone { dmaster: 5 }, 131, 1_000_000);
            assert_eq!(shares.len(), 1);
            let decoded = decode(&shares[0]);
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

    /// A message kept inside its received frame merges exactly like the bare message.
    #[test]
    fn a_message_inside_a_larger_buffer_merges_like_the_message_alone() {
        for seed in crate::testing::seeds(30) {
            let mut rng = Prng::new(seed);
            let messages: Vec<(u32, Vec<u8>)> = (0..1 + rng.below(5))
                .map(|m| {
                    let records = (0..rng.below(20))
                        .map(|i| {
                            let h = header(rng.below(4), rng.below(3) as u32, 0);
                            rec(&format!("k{}", (i * 7 + m) % 13), h, &format!("v{m}.{i}"))
                        })
                        .collect();
                    (rng.below(3) as u32, buf(records).to_bytes())
                })
                .collect();
            let mut bare = RecDb::new(0x1234, "bare", false, 1);
            let mut framed = RecDb::new(0x1234, "framed", false, 1);
            for (from, message) in &messages {
                let before = rng.below(60) as usize;
                let mut frame = vec![0xa5; before];
                frame.extend_from_slice(message);
                frame.extend_from_slice(&vec![0x5a; rng.below(9) as usize]);
                let range = before..before + message.len();
                let n = bare.add_message(message.clone(), *from).unwrap();
                assert_eq!(framed.add_message_in(frame, range, *from), Ok(n));
            }
            let dest = Destination::Everyone { dmaster: 1 };
            assert_eq!(
                decode(&bare.push_buffers(dest, 131, 1 << 20)[0]),
                decode(&framed.push_buffers(dest, 131, 1 << 20)[0]),
                "seed {seed}"
            );
        }
        let mut recdb = RecDb::new(0x1234, "range", false, 0);
        assert_eq!(
            recdb.add_message_in(vec![0; 8], 4..12, 0),
            Err(AddError::Malformed)
        );
    }

    #[test]
    fn push_cuts_buffers_after_they_exceed_the_limit() {
        for seed in crate::testing::seeds(20) {
            let mut rng = Prng::new(seed);
            let mut recdb = RecDb::new(0x1234, "cut", false, 0);
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
            recdb.add(buf(records), 0).unwrap();
            let limit = 50 + rng.below(1000) as usize;
            let shares = recdb.push_buffers(Destination::Everyone { dmaster: 0 }, 131, limit);
            let decoded = decode(&shares[0]);
            assert_eq!(shares[0].record_count() as usize, with_data, "seed {seed}");
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

    /// Every record with data lands exactly once, at its lmaster, which becomes its
    /// dmaster; each share runs through the hash chains in order; nodes without a share
    /// still get an (empty) buffer.
    #[test]
    fn a_partitioned_push_sends_each_record_to_its_lmaster_in_chain_order() {
        for seed in crate::testing::seeds(30) {
            let mut rng = Prng::new(seed);
            let nodes: Vec<u32> = vec![0, 1, 2, 5];
            // Node 5 is no lmaster; node 1 holds two slots.
            let vnnmap: Vec<u32> = vec![2, 1, 0, 1];
            // Now and then more (share, chain) slots than the counting sort takes.
            let hash_size = if rng.below(4) == 0 {
                10_000_000 + rng.below(1000) as u32
            } else {
                1 + rng.below(200) as u32
            };
            let mut recdb = RecDb::new(0x1234, "part", false, 0);
            let n = rng.below(300) as usize;
            let mut expected: HashMap<Vec<u8>, u32> = HashMap::new();
            let mut records = Vec::new();
            for i in 0..n {
                let key = format!("key-{i}-{}", rng.below(1000)).into_bytes();
                let deleted = rng.below(6) == 0;
                let value = if deleted { Vec::new() } else { vec![b'v'; 5] };
                if !deleted {
                    let lmaster = hash::lmaster(hash::ctdb_hash(&key), &vnnmap).unwrap();
                    expected.insert(key.clone(), lmaster);
                }
                records.push(RecData::with_header(0, &header(3, 0, 0), &key, &value));
            }
            recdb.add(buf(records), 0).unwrap();
            let shares = recdb.push_buffers(
                Destination::Lmaster {
                    vnnmap: &vnnmap,
                    nodes: &nodes,
                },
                hash_size,
                200 + rng.below(2000) as usize,
            );
            assert_eq!(shares.len(), nodes.len(), "seed {seed}");
            let mut seen: HashMap<Vec<u8>, u32> = HashMap::new();
            for (share, &pnn) in shares.iter().zip(&nodes) {
                assert!(!share.buffers.is_empty(), "seed {seed}: node {pnn}");
                let mut last_chain = 0;
                for buffer in decode(share) {
                    for record in buffer.records {
                        let chain = hash::ctdb_hash(&record.key) % hash_size;
                        assert!(chain >= last_chain, "seed {seed}: chain order");
                        last_chain = chain;
                        let h = record.header().unwrap();
                        assert_eq!(h.dmaster, pnn, "seed {seed}");
                        assert_ne!(h.flags & REC_FLAG_MIGRATED_WITH_DATA, 0);
                        assert!(seen.insert(record.key, pnn).is_none(), "seed {seed}: twice");
                    }
                }
            }
            assert_eq!(seen, expected, "seed {seed}");
            assert_eq!(shares[3].record_count(), 0, "node 5 is no lmaster");
        }
    }

    /// Not a check: the merge and cut of a recovery-sized pull, timed
    /// (`cargo test --release --lib merge_timing -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn merge_timing() {
        let records: u32 = std::env::var("MERGE_RECORDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000);
        let nodes = [0u32, 1, 2];
        // Each node holds its third, and every fourth key has older copies elsewhere; the
        // messages are cut at 1 MB as the daemon cuts them.
        let mut messages: Vec<(u32, Vec<u8>)> = Vec::new();
        for &pnn in &nodes {
            let mut current = Vec::new();
            let mut size = 0;
            for index in 0..records {
                let owner = index % 3;
                let rsn = u64::from(index) + 10;
                let h = if owner == pnn {
                    header(rsn, owner, 0)
                } else if index % 4 == 0 {
                    header(rsn - 1, owner, 0)
                } else {
                    continue;
                };
                let key = format!("bench-key-{index:08}");
                let r = RecData::with_header(0, &h, key.as_bytes(), &[b'.'; 64]);
                size += 16 + key.len() + 24 + 64;
                current.push(r);
                if size >= 1 << 20 {
                    messages.push((pnn, buf(std::mem::take(&mut current)).to_bytes()));
                    size = 0;
                }
            }
            messages.push((pnn, buf(current).to_bytes()));
        }
        let vnnmap = [0u32, 1, 2];
        let (mut best_merge, mut best_cut) = (f64::MAX, f64::MAX);
        let clock = crate::common::clock::MonotonicClock::new();
        for _ in 0..20 {
            let batch = messages.clone();
            let start = clock.now();
            let mut recdb = RecDb::new(0x1234, "timing", false, 0);
            for (from, message) in batch {
                recdb.add_message(message, from).unwrap();
            }
            let merged = clock.now();
            let mut buffers = Vec::new();
            let pushed = recdb
                .push_streamed(
                    Destination::Lmaster {
                        vnnmap: &vnnmap,
                        nodes: &nodes,
                    },
                    131_071,
                    1 << 20,
                    |_, _, buffer| {
                        buffers.push(buffer);
                        Ok::<(), ()>(())
                    },
                )
                .unwrap();
            let cut = clock.now();
            assert_eq!(pushed.iter().sum::<u32>(), records);
            let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
            best_merge = best_merge.min(ms(merged.saturating_since(start)));
            best_cut = best_cut.min(ms(cut.saturating_since(merged)));
        }
        println!("{records} records, best of 20: merge {best_merge:.1} ms, cut {best_cut:.1} ms");
    }

    #[test]
    fn lmasters_must_all_receive() {
        assert!(lmasters_covered(&[0, 1], &[0, 1, 2]));
        assert!(!lmasters_covered(&[0, 3], &[0, 1, 2]));
        assert!(!lmasters_covered(&[], &[0, 1, 2]));
    }
}
