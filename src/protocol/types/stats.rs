//! Statistics payloads: STATISTICS, GET_STAT_HISTORY and GET_DB_STATISTICS.
//!
//! The daemon sends these as raw copies of its C structs, so every alignment hole is explicit
//! here. Holes are written as zeros and ignored on input, except the two places where the stock
//! daemon puts meaningless but non-zero bytes on the wire ([`StatisticsList::hole`],
//! [`HotKey::key_ptr`]): those are kept so that captured replies re-encode byte for byte.

use crate::protocol::basic::{Marshal, PullError, Reader, Timeval, Writer};

use super::{pull_item, MAX_COUNT_BUCKETS, MAX_HOT_KEYS};

/// Size of `struct ctdb_statistics`.
pub const STATISTICS_LEN: usize = 488;
/// Size of the fixed part of the GET_DB_STATISTICS reply; the hot keys' bytes follow it.
pub const DB_STATISTICS_FIXED_LEN: usize = 464;

fn pull_buckets(r: &mut Reader<'_>) -> Result<[u32; MAX_COUNT_BUCKETS], PullError> {
    let mut buckets = [0u32; MAX_COUNT_BUCKETS];
    for bucket in &mut buckets {
        *bucket = r.u32()?;
    }
    Ok(buckets)
}

fn push_buckets(out: &mut Vec<u8>, buckets: &[u32; MAX_COUNT_BUCKETS]) {
    for &bucket in buckets {
        out.put_u32(bucket);
    }
}

/// `ctdb_latency_counter` (32 bytes): `num`, a 4-byte hole, then `min`, `max`, `total` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LatencyCounter {
    pub num: i32,
    pub min: f64,
    pub max: f64,
    pub total: f64,
}

impl LatencyCounter {
    pub const WIRE_LEN: usize = 32;
}

impl Marshal for LatencyCounter {
    fn wire_len(&self) -> usize {
        Self::WIRE_LEN
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_i32(self.num);
        out.put_zeros(4);
        out.put_f64(self.min);
        out.put_f64(self.max);
        out.put_f64(self.total);
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let num = r.i32()?;
        r.skip(4)?;
        let value = LatencyCounter {
            num,
            min: r.f64()?,
            max: r.f64()?,
            total: r.f64()?,
        };
        Ok((value, r.pos()))
    }
}

/// Packets received from other nodes, by operation (`ctdb_statistics.node`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodePacketCounters {
    pub req_call: u32,
    pub reply_call: u32,
    pub req_dmaster: u32,
    pub reply_dmaster: u32,
    pub reply_error: u32,
    pub req_message: u32,
    pub req_control: u32,
    pub reply_control: u32,
    pub req_tunnel: u32,
}

/// Packets received from local clients, by operation (`ctdb_statistics.client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientPacketCounters {
    pub req_call: u32,
    pub req_message: u32,
    pub req_control: u32,
    pub req_tunnel: u32,
}

/// `ctdb_statistics.timeouts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeoutCounters {
    pub call: u32,
    pub control: u32,
    pub traverse: u32,
}

/// `ctdb_statistics.reclock`: cluster lock latencies seen by the daemon and by recoverd.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ReclockLatency {
    pub ctdbd: LatencyCounter,
    pub recd: LatencyCounter,
}

/// Lock statistics (`locks` in both `ctdb_statistics` and `ctdb_db_statistics`, 112 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LockStatistics {
    pub num_calls: u32,
    pub num_current: u32,
    pub num_pending: u32,
    pub num_failed: u32,
    pub latency: LatencyCounter,
    pub buckets: [u32; MAX_COUNT_BUCKETS],
}

impl LockStatistics {
    pub const WIRE_LEN: usize = 16 + LatencyCounter::WIRE_LEN + 4 * MAX_COUNT_BUCKETS;
}

impl Marshal for LockStatistics {
    fn wire_len(&self) -> usize {
        Self::WIRE_LEN
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_u32(self.num_calls);
        out.put_u32(self.num_current);
        out.put_u32(self.num_pending);
        out.put_u32(self.num_failed);
        self.latency.push(out);
        push_buckets(out, &self.buckets);
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let value = LockStatistics {
            num_calls: r.u32()?,
            num_current: r.u32()?,
            num_pending: r.u32()?,
            num_failed: r.u32()?,
            latency: pull_item(&mut r)?,
            buckets: pull_buckets(&mut r)?,
        };
        Ok((value, r.pos()))
    }
}

/// `ctdb_statistics` (488 bytes): the STATISTICS reply and each GET_STAT_HISTORY entry.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Statistics {
    pub num_clients: u32,
    pub frozen: u32,
    pub recovering: u32,
    pub client_packets_sent: u32,
    pub client_packets_recv: u32,
    pub node_packets_sent: u32,
    pub node_packets_recv: u32,
    pub keepalive_packets_sent: u32,
    pub keepalive_packets_recv: u32,
    pub node: NodePacketCounters,
    pub client: ClientPacketCounters,
    pub timeouts: TimeoutCounters,
    pub reclock: ReclockLatency,
    pub locks: LockStatistics,
    pub total_calls: u32,
    pub pending_calls: u32,
    pub childwrite_calls: u32,
    pub pending_childwrite_calls: u32,
    pub memory_used: u32,
    /// `__last_counter`, a marker the C code uses to iterate the counters above.
    pub last_counter: u32,
    pub max_hop_count: u32,
    pub hop_count_bucket: [u32; MAX_COUNT_BUCKETS],
    pub call_latency: LatencyCounter,
    pub childwrite_latency: LatencyCounter,
    pub num_recoveries: u32,
    pub statistics_start_time: Timeval,
    pub statistics_current_time: Timeval,
    pub total_ro_delegations: u32,
    pub total_ro_revokes: u32,
}

impl Marshal for Statistics {
    fn wire_len(&self) -> usize {
        STATISTICS_LEN
    }
    fn push(&self, out: &mut Vec<u8>) {
        for v in [
            self.num_clients,
            self.frozen,
            self.recovering,
            self.client_packets_sent,
            self.client_packets_recv,
            self.node_packets_sent,
            self.node_packets_recv,
            self.keepalive_packets_sent,
            self.keepalive_packets_recv,
        ] {
            out.put_u32(v);
        }
        let n = &self.node;
        for v in [
            n.req_call,
            n.reply_call,
            n.req_dmaster,
            n.reply_dmaster,
            n.reply_error,
            n.req_message,
            n.req_control,
            n.reply_control,
            n.req_tunnel,
        ] {
            out.put_u32(v);
        }
        let c = &self.client;
        for v in [c.req_call, c.req_message, c.req_control, c.req_tunnel] {
            out.put_u32(v);
        }
        let t = &self.timeouts;
        for v in [t.call, t.control, t.traverse] {
            out.put_u32(v);
        }
        out.put_zeros(4);
        self.reclock.ctdbd.push(out);
        self.reclock.recd.push(out);
        self.locks.push(out);
        for v in [
            self.total_calls,
            self.pending_calls,
            self.childwrite_calls,
            self.pending_childwrite_calls,
            self.memory_used,
            self.last_counter,
            self.max_hop_count,
        ] {
            out.put_u32(v);
        }
        push_buckets(out, &self.hop_count_bucket);
        out.put_zeros(4);
        self.call_latency.push(out);
        self.childwrite_latency.push(out);
        out.put_u32(self.num_recoveries);
        out.put_zeros(4);
        self.statistics_start_time.push(out);
        self.statistics_current_time.push(out);
        out.put_u32(self.total_ro_delegations);
        out.put_u32(self.total_ro_revokes);
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let num_clients = r.u32()?;
        let frozen = r.u32()?;
        let recovering = r.u32()?;
        let client_packets_sent = r.u32()?;
        let client_packets_recv = r.u32()?;
        let node_packets_sent = r.u32()?;
        let node_packets_recv = r.u32()?;
        let keepalive_packets_sent = r.u32()?;
        let keepalive_packets_recv = r.u32()?;
        let node = NodePacketCounters {
            req_call: r.u32()?,
            reply_call: r.u32()?,
            req_dmaster: r.u32()?,
            reply_dmaster: r.u32()?,
            reply_error: r.u32()?,
            req_message: r.u32()?,
            req_control: r.u32()?,
            reply_control: r.u32()?,
            req_tunnel: r.u32()?,
        };
        let client = ClientPacketCounters {
            req_call: r.u32()?,
            req_message: r.u32()?,
            req_control: r.u32()?,
            req_tunnel: r.u32()?,
        };
        let timeouts = TimeoutCounters {
            call: r.u32()?,
            control: r.u32()?,
            traverse: r.u32()?,
        };
        r.skip(4)?;
        let reclock = ReclockLatency {
            ctdbd: pull_item(&mut r)?,
            recd: pull_item(&mut r)?,
        };
        let locks = pull_item(&mut r)?;
        let total_calls = r.u32()?;
        let pending_calls = r.u32()?;
        let childwrite_calls = r.u32()?;
        let pending_childwrite_calls = r.u32()?;
        let memory_used = r.u32()?;
        let last_counter = r.u32()?;
        let max_hop_count = r.u32()?;
        let hop_count_bucket = pull_buckets(&mut r)?;
        r.skip(4)?;
        let call_latency = pull_item(&mut r)?;
        let childwrite_latency = pull_item(&mut r)?;
        let num_recoveries = r.u32()?;
        r.skip(4)?;
        let statistics_start_time = pull_item(&mut r)?;
        let statistics_current_time = pull_item(&mut r)?;
        let total_ro_delegations = r.u32()?;
        let total_ro_revokes = r.u32()?;
        let value = Statistics {
            num_clients,
            frozen,
            recovering,
            client_packets_sent,
            client_packets_recv,
            node_packets_sent,
            node_packets_recv,
            keepalive_packets_sent,
            keepalive_packets_recv,
            node,
            client,
            timeouts,
            reclock,
            locks,
            total_calls,
            pending_calls,
            childwrite_calls,
            pending_childwrite_calls,
            memory_used,
            last_counter,
            max_hop_count,
            hop_count_bucket,
            call_latency,
            childwrite_latency,
            num_recoveries,
            statistics_start_time,
            statistics_current_time,
            total_ro_delegations,
            total_ro_revokes,
        };
        Ok((value, r.pos()))
    }
}

/// `ctdb_statistics_list`: the GET_STAT_HISTORY reply, an `int` count, a 4-byte hole and the
/// entries. A negative count is rejected (stock would fail the allocation).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatisticsList {
    /// The bytes in the hole after the count. The stock daemon does not initialise them (it
    /// `talloc_size`s the reply), so captured replies hold heap garbage here; they are kept so
    /// that such captures re-encode byte for byte. Set 0 when building a reply.
    pub hole: u32,
    pub stats: Vec<Statistics>,
}

impl Marshal for StatisticsList {
    fn wire_len(&self) -> usize {
        8 + STATISTICS_LEN * self.stats.len()
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_len(self.stats.len());
        out.put_u32(self.hole);
        for stats in &self.stats {
            stats.push(out);
        }
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let num = r.i32()?;
        let hole = r.u32()?;
        let num = usize::try_from(num).map_err(|_| PullError::BadValue {
            what: "statistics_list num",
            value: u64::from(num.unsigned_abs()),
        })?;
        if num.saturating_mul(STATISTICS_LEN) > r.remaining() {
            return Err(PullError::BadLength {
                what: "statistics_list num",
                value: num,
            });
        }
        let stats = super::pull_items(&mut r, num)?;
        Ok((StatisticsList { hole, stats }, r.pos()))
    }
}

/// One of the ten hot keys of GET_DB_STATISTICS. On the wire the fixed part holds `count`, a
/// hole and a raw C `TDB_DATA` (8-byte pointer, 8-byte size); the key bytes come after the fixed
/// part. `key_ptr` is the daemon's pointer value, meaningless to anyone else but kept so that
/// captured replies re-encode byte for byte; set it to 0 when building a reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HotKey {
    pub count: u32,
    pub key_ptr: u64,
    pub key: Vec<u8>,
}

/// `ctdb_db_statistics`: the GET_DB_STATISTICS reply (464 fixed bytes, then the hot keys).
///
/// Stock always sends and reads exactly [`MAX_HOT_KEYS`] entries whatever `num_hot_keys` says
/// (the daemon sets it to 10); the field is kept as received.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DbStatistics {
    pub locks: LockStatistics,
    pub vacuum_latency: LatencyCounter,
    pub db_ro_delegations: u32,
    pub db_ro_revokes: u32,
    pub hop_count_bucket: [u32; MAX_COUNT_BUCKETS],
    pub num_hot_keys: u32,
    pub hot_keys: [HotKey; MAX_HOT_KEYS],
}

impl Marshal for DbStatistics {
    fn wire_len(&self) -> usize {
        DB_STATISTICS_FIXED_LEN + self.hot_keys.iter().map(|k| k.key.len()).sum::<usize>()
    }
    fn push(&self, out: &mut Vec<u8>) {
        self.locks.push(out);
        self.vacuum_latency.push(out);
        out.put_u32(self.db_ro_delegations);
        out.put_u32(self.db_ro_revokes);
        push_buckets(out, &self.hop_count_bucket);
        out.put_u32(self.num_hot_keys);
        out.put_zeros(4);
        for hot in &self.hot_keys {
            out.put_u32(hot.count);
            out.put_zeros(4);
            out.put_u64(hot.key_ptr);
            out.put_u64(hot.key.len() as u64);
        }
        for hot in &self.hot_keys {
            out.put_bytes(&hot.key);
        }
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let locks = pull_item(&mut r)?;
        let vacuum_latency = pull_item(&mut r)?;
        let db_ro_delegations = r.u32()?;
        let db_ro_revokes = r.u32()?;
        let hop_count_bucket = pull_buckets(&mut r)?;
        let num_hot_keys = r.u32()?;
        r.skip(4)?;
        let mut counts = [(0u32, 0u64, 0u64); MAX_HOT_KEYS];
        for entry in &mut counts {
            let count = r.u32()?;
            r.skip(4)?;
            *entry = (count, r.u64()?, r.u64()?);
        }
        let mut hot_keys: [HotKey; MAX_HOT_KEYS] = Default::default();
        for (hot, &(count, key_ptr, size)) in hot_keys.iter_mut().zip(&counts) {
            // Stock trusts the size without a bounds check; here it must fit in what is left.
            let size = usize::try_from(size)
                .ok()
                .filter(|&s| s <= r.remaining())
                .ok_or_else(|| PullError::BadLength {
                    what: "db_statistics hot key",
                    value: usize::try_from(size).unwrap_or(usize::MAX),
                })?;
            *hot = HotKey {
                count,
                key_ptr,
                key: r.bytes(size)?.to_vec(),
            };
        }
        let value = DbStatistics {
            locks,
            vacuum_latency,
            db_ro_delegations,
            db_ro_revokes,
            hop_count_bucket,
            num_hot_keys,
            hot_keys,
        };
        Ok((value, r.pos()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::types::check::all_seeds;
    use crate::protocol::types::fill;

    #[test]
    fn seeded_round_trips_and_truncations() {
        all_seeds("LatencyCounter", fill::latency_counter);
        all_seeds("LockStatistics", fill::lock_statistics);
        all_seeds("Statistics", fill::statistics);
        all_seeds("StatisticsList", fill::statistics_list);
        all_seeds("DbStatistics", fill::db_statistics);
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_ne_bytes(b[off..off + 4].try_into().unwrap())
    }

    #[test]
    fn statistics_offsets_match_the_c_struct() {
        let mut s = Statistics {
            timeouts: TimeoutCounters {
                call: 1,
                control: 2,
                traverse: 3,
            },
            total_calls: 0x280,
            num_recoveries: 0x440,
            total_ro_delegations: 0x480,
            total_ro_revokes: 0x484,
            ..Statistics::default()
        };
        s.reclock.ctdbd.num = 0x104;
        s.reclock.recd.num = 0x136;
        s.locks.num_calls = 0x168;
        s.locks.latency.num = 0x184;
        s.locks.buckets[0] = 0x216;
        s.hop_count_bucket[0] = 0x308;
        s.call_latency.num = 0x376;
        s.childwrite_latency.num = 0x408;
        s.statistics_start_time.tv_sec = 0x448;
        s.statistics_current_time.tv_sec = 0x464;
        let b = s.to_bytes();
        assert_eq!(b.len(), 488);
        assert_eq!(u32_at(&b, 96), 3);
        assert_eq!(u32_at(&b, 100), 0, "hole after timeouts");
        for (off, v) in [
            (104, 0x104),
            (136, 0x136),
            (168, 0x168),
            (184, 0x184),
            (216, 0x216),
            (280, 0x280),
            (308, 0x308),
            (376, 0x376),
            (408, 0x408),
            (440, 0x440),
            (448, 0x448),
            (464, 0x464),
            (480, 0x480),
            (484, 0x484),
        ] {
            assert_eq!(u32_at(&b, off), v, "offset {off}");
        }
        assert_eq!(u32_at(&b, 372), 0, "hole after hop_count_bucket");
        assert_eq!(u32_at(&b, 444), 0, "hole after num_recoveries");
    }

    #[test]
    fn statistics_list_layout() {
        let list = StatisticsList {
            hole: 0,
            stats: vec![Statistics::default(); 2],
        };
        let b = list.to_bytes();
        assert_eq!(b.len(), 8 + 2 * 488);
        assert_eq!(u32_at(&b, 0), 2);
        let mut neg = b.clone();
        neg[0..4].copy_from_slice(&(-1i32).to_ne_bytes());
        assert!(StatisticsList::pull(&neg).is_err());
        let mut huge = b;
        huge[0..4].copy_from_slice(&i32::MAX.to_ne_bytes());
        assert!(StatisticsList::pull(&huge).is_err());
    }

    #[test]
    fn db_statistics_offsets_and_hot_keys() {
        let mut s = DbStatistics {
            db_ro_delegations: 0x144,
            db_ro_revokes: 0x148,
            num_hot_keys: 10,
            ..DbStatistics::default()
        };
        s.vacuum_latency.num = 0x112;
        s.hop_count_bucket[0] = 0x152;
        s.hot_keys[0] = HotKey {
            count: 7,
            key_ptr: 0x5555_0000_1111,
            key: b"ab".to_vec(),
        };
        s.hot_keys[9] = HotKey {
            count: 1,
            key_ptr: 0,
            key: b"z".to_vec(),
        };
        let b = s.to_bytes();
        assert_eq!(b.len(), 464 + 3);
        assert_eq!(u32_at(&b, 112), 0x112);
        assert_eq!(u32_at(&b, 144), 0x144);
        assert_eq!(u32_at(&b, 148), 0x148);
        assert_eq!(u32_at(&b, 152), 0x152);
        assert_eq!(u32_at(&b, 216), 10);
        assert_eq!(u32_at(&b, 224), 7);
        assert_eq!(&b[232..240], &0x5555_0000_1111u64.to_ne_bytes());
        assert_eq!(&b[240..248], &2u64.to_ne_bytes());
        assert_eq!(u32_at(&b, 224 + 9 * 24), 1);
        assert_eq!(&b[464..], b"abz");
        assert_eq!(DbStatistics::from_bytes_exact(&b).unwrap(), s);
    }

    #[test]
    fn db_statistics_reply_captured_from_stock() {
        // GET_DB_STATISTICS from a stock 4.17.12 node after one `ctdb writekey`: ten hot-key
        // slots, the first holding "key1" behind a live heap pointer.
        let mut b = vec![0u8; 464];
        b[216] = 10;
        b[224] = 1;
        b[232..240].copy_from_slice(&0x5577_f3a3_0300u64.to_ne_bytes());
        b[240] = 4;
        b.extend_from_slice(b"key1");
        let s = DbStatistics::from_bytes_exact(&b).unwrap();
        assert_eq!(s.num_hot_keys, 10);
        assert_eq!(s.hot_keys[0].count, 1);
        assert_eq!(s.hot_keys[0].key, b"key1");
        assert!(s.hot_keys[1..].iter().all(|k| k.key.is_empty()));
        assert_eq!(s.to_bytes(), b);
    }

    #[test]
    fn db_statistics_hot_key_size_is_bounded() {
        let mut b = DbStatistics::default().to_bytes();
        b[240..248].copy_from_slice(&u64::MAX.to_ne_bytes());
        assert!(DbStatistics::pull(&b).is_err());
        b[240..248].copy_from_slice(&1u64.to_ne_bytes());
        assert!(DbStatistics::pull(&b).is_err());
        b.push(b'k');
        assert_eq!(DbStatistics::pull(&b).unwrap().0.hot_keys[0].key, b"k");
    }
}
