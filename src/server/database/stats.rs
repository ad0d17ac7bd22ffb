//! Per-database statistics (mirrors `ctdb_db->statistics`, the hot key table of
//! `ctdb_update_db_stat_hot_keys` and the migration counter `migratedb` of
//! `ctdb/server/ctdb_call.c`, and `ctdb_control_get_db_statistics` of
//! `ctdb/server/ctdb_ltdb_server.c`).
//!
//! Hot keys are the records migrated to this node most often within one second: each
//! migration that completes a call of this node counts for its key, a key's count restarts when
//! its first migration is more than a second old, and the ten highest counts ever seen are kept
//! (stock's `hash_count` with a one-second interval). Old counters are dropped every ten seconds.

use crate::common::clock::Instant;
use crate::protocol::types::{
    DbStatistics, HotKey, LatencyCounter, LockStatistics, MAX_COUNT_BUCKETS, MAX_HOT_KEYS,
};
use std::collections::HashMap;
use std::time::Duration;

/// The window in which migrations of one key add up (`hash_count_init`'s interval).
const MIGRATION_WINDOW: Duration = Duration::from_secs(1);
/// How often stale migration counters are dropped (`ctdb_migration_cleandb_event`).
const MIGRATION_EXPIRY_EVERY: Duration = Duration::from_secs(10);
/// Bound on the migration counters kept between expiries; beyond it new keys are not counted
/// until the next expiry (stock's table is unbounded).
const MAX_MIGRATION_COUNTERS: usize = 65536;

#[derive(Debug, Clone, PartialEq, Eq)]
struct HotKeySlot {
    key: Vec<u8>,
    count: u32,
    last_logged_count: u32,
}

/// The statistics of one attached database.
#[derive(Debug, Clone, Default)]
pub struct DbStats {
    locks: LockStatistics,
    vacuum_latency: LatencyCounter,
    ro_delegations: u32,
    ro_revokes: u32,
    hop_count_bucket: [u32; MAX_COUNT_BUCKETS],
    /// Sorted by count, lowest first, as stock's `qsort` leaves them.
    hot_keys: Vec<HotKeySlot>,
    /// Migrations per key: start of the current window and the count in it.
    migrations: HashMap<Vec<u8>, (Instant, u32)>,
    next_expiry: Option<Instant>,
}

/// The bucket of a hop count: the number of significant bits, at most 15.
pub fn hop_count_bucket(hopcount: u32) -> usize {
    let bits = (u32::BITS - hopcount.leading_zeros()) as usize;
    bits.min(MAX_COUNT_BUCKETS - 1)
}

/// The bucket of a lock wait (`lock_bucket_id`): <1 ms, <10 ms, <100 ms, <1 s, then doubling
/// seconds up to 16 s and beyond.
pub fn lock_bucket(seconds: f64) -> usize {
    const LIMITS: [f64; 8] = [0.001, 0.01, 0.1, 1.0, 2.0, 4.0, 8.0, 16.0];
    LIMITS
        .iter()
        .position(|&l| seconds < l)
        .unwrap_or(LIMITS.len())
}

/// Adds one sample (seconds) to a latency counter.
pub fn add_latency(counter: &mut LatencyCounter, seconds: f64) {
    if counter.num == 0 || seconds < counter.min {
        counter.min = seconds;
    }
    if seconds > counter.max {
        counter.max = seconds;
    }
    counter.total += seconds;
    counter.num = counter.num.saturating_add(1);
}

impl DbStats {
    /// A REQ_CALL ran here as dmaster after `hopcount` redirections.
    pub fn note_hop_count(&mut self, hopcount: u32) {
        let bucket = hop_count_bucket(hopcount);
        self.hop_count_bucket[bucket] = self.hop_count_bucket[bucket].saturating_add(1);
    }

    /// A call waited `seconds` for a record's chain that a client held (stock's lock helper
    /// statistics; here the wait is the polling of [`crate::server::call::CHAIN_RETRY`]).
    pub fn note_lock_wait(&mut self, seconds: f64) {
        let locks = &mut self.locks;
        locks.num_calls = locks.num_calls.saturating_add(1);
        add_latency(&mut locks.latency, seconds);
        let bucket = lock_bucket(seconds);
        locks.buckets[bucket] = locks.buckets[bucket].saturating_add(1);
    }

    pub fn note_vacuum_run(&mut self, seconds: f64) {
        add_latency(&mut self.vacuum_latency, seconds);
    }

    /// For read-only delegations (`db_ro_delegations`, `db_ro_revokes`); nothing grants them
    /// yet.
    pub fn note_ro_delegation(&mut self) {
        self.ro_delegations = self.ro_delegations.saturating_add(1);
    }

    pub fn note_ro_revoke(&mut self) {
        self.ro_revokes = self.ro_revokes.saturating_add(1);
    }

    /// A record migrated here to complete one of this node's calls (`hash_count_increment`
    /// on `migratedb`). Returns the key's count in its current one-second window.
    pub fn note_migration(&mut self, now: Instant, key: &[u8]) -> u32 {
        self.expire(now);
        let count = match self.migrations.get_mut(key) {
            Some((start, count)) => {
                if now.saturating_since(*start) < MIGRATION_WINDOW {
                    *count = count.saturating_add(1);
                } else {
                    *start = now;
                    *count = 1;
                }
                *count
            }
            None => {
                if self.migrations.len() < MAX_MIGRATION_COUNTERS {
                    self.migrations.insert(key.to_vec(), (now, 1));
                }
                1
            }
        };
        self.update_hot_keys(key, count);
        count
    }

    fn expire(&mut self, now: Instant) {
        match self.next_expiry {
            Some(at) if now < at => {}
            _ => {
                self.migrations
                    .retain(|_, (start, _)| now.saturating_since(*start) < MIGRATION_WINDOW);
                self.next_expiry = Some(now.saturating_add(MIGRATION_EXPIRY_EVERY));
            }
        }
    }

    /// `ctdb_update_db_stat_hot_keys`: keep the ten highest counts, lowest in slot 0.
    fn update_hot_keys(&mut self, key: &[u8], count: u32) {
        if self.hot_keys.len() == MAX_HOT_KEYS && count <= self.hot_keys[0].count {
            return;
        }
        if let Some(slot) = self.hot_keys.iter_mut().find(|s| s.key == key) {
            if count <= slot.count {
                return;
            }
            if count >= slot.last_logged_count.saturating_mul(2) {
                log::info!("Updated hot key key={} count={count}", hex(key));
                slot.last_logged_count = count;
            }
            slot.count = count;
        } else {
            let slot = HotKeySlot {
                key: key.to_vec(),
                count,
                last_logged_count: count,
            };
            log::info!("Added hot key key={} count={count}", hex(key));
            if self.hot_keys.len() < MAX_HOT_KEYS {
                self.hot_keys.push(slot);
            } else {
                self.hot_keys[0] = slot;
            }
        }
        self.hot_keys.sort_by_key(|s| s.count);
    }

    /// The GET_DB_STATISTICS reply. Like stock, `num_hot_keys` is always ten on the wire and
    /// unused slots are empty.
    pub fn to_wire(&self) -> DbStatistics {
        let mut hot_keys: [HotKey; MAX_HOT_KEYS] = Default::default();
        for (wire, slot) in hot_keys.iter_mut().zip(&self.hot_keys) {
            *wire = HotKey {
                count: slot.count,
                key_ptr: 0,
                key: slot.key.clone(),
            };
        }
        DbStatistics {
            locks: self.locks,
            vacuum_latency: self.vacuum_latency,
            db_ro_delegations: self.ro_delegations,
            db_ro_revokes: self.ro_revokes,
            hop_count_bucket: self.hop_count_bucket,
            num_hot_keys: MAX_HOT_KEYS as u32,
            hot_keys,
        }
    }
}

fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{seeds, Prng};

    fn at(ms: u64) -> Instant {
        Instant::ZERO.saturating_add(Duration::from_millis(ms))
    }

    #[test]
    fn hop_count_buckets_follow_significant_bits() {
        assert_eq!(hop_count_bucket(0), 0);
        assert_eq!(hop_count_bucket(1), 1);
        assert_eq!(hop_count_bucket(2), 2);
        assert_eq!(hop_count_bucket(3), 2);
        assert_eq!(hop_count_bucket(4), 3);
        assert_eq!(hop_count_bucket(1 << 14), 15);
        assert_eq!(hop_count_bucket(u32::MAX), 15);
    }

    #[test]
    fn lock_buckets_match_stock_limits() {
        assert_eq!(lock_bucket(0.0005), 0);
        assert_eq!(lock_bucket(0.005), 1);
        assert_eq!(lock_bucket(0.05), 2);
        assert_eq!(lock_bucket(0.5), 3);
        assert_eq!(lock_bucket(1.5), 4);
        assert_eq!(lock_bucket(15.0), 7);
        assert_eq!(lock_bucket(100.0), 8);
    }

    #[test]
    fn migrations_count_within_one_second_window() {
        let mut s = DbStats::default();
        assert_eq!(s.note_migration(at(0), b"k"), 1);
        assert_eq!(s.note_migration(at(500), b"k"), 2);
        assert_eq!(s.note_migration(at(999), b"k"), 3);
        // The window starts at the first migration and is not extended by later ones.
        assert_eq!(s.note_migration(at(1000), b"k"), 1);
        let wire = s.to_wire();
        assert_eq!(wire.num_hot_keys, 10);
        assert_eq!(wire.hot_keys[0].key, b"k");
        assert_eq!(wire.hot_keys[0].count, 3, "the highest count is kept");
        assert!(wire.hot_keys[1].key.is_empty());
    }

    #[test]
    fn stale_counters_expire() {
        let mut s = DbStats::default();
        s.note_migration(at(0), b"a");
        s.note_migration(at(10_001), b"b");
        assert_eq!(s.migrations.len(), 1);
    }

    /// Against a simple model: the hot key table holds the ten keys with the highest maximum
    /// count seen, sorted ascending (keys are distinct counts here so the set is unique).
    #[test]
    fn hot_keys_keep_the_top_ten_sorted() {
        for seed in seeds(20) {
            let mut rng = Prng::new(seed);
            let mut s = DbStats::default();
            let mut best: HashMap<Vec<u8>, u32> = HashMap::new();
            // Keys i get i+1 migrations in one window, in shuffled order.
            let mut order: Vec<u32> = Vec::new();
            for key in 0..25u32 {
                for _ in 0..=key {
                    order.push(key);
                }
            }
            for i in (1..order.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                order.swap(i, j);
            }
            for key in order {
                let k = key.to_le_bytes().to_vec();
                let count = s.note_migration(at(0), &k);
                let e = best.entry(k).or_default();
                *e = (*e).max(count);
            }
            let wire = s.to_wire();
            let counts: Vec<u32> = wire.hot_keys.iter().map(|h| h.count).collect();
            assert_eq!(counts, (16..=25).collect::<Vec<u32>>(), "seed {seed}");
            for h in &wire.hot_keys {
                assert_eq!(best[&h.key], h.count, "seed {seed}");
            }
        }
    }

    #[test]
    fn lock_waits_fill_counters_and_buckets() {
        let mut s = DbStats::default();
        s.note_lock_wait(0.002);
        s.note_lock_wait(0.0001);
        let w = s.to_wire();
        assert_eq!(w.locks.num_calls, 2);
        assert_eq!(w.locks.buckets[0], 1);
        assert_eq!(w.locks.buckets[1], 1);
        assert_eq!(w.locks.latency.num, 2);
        assert!((w.locks.latency.min - 0.0001).abs() < 1e-12);
        assert!((w.locks.latency.max - 0.002).abs() < 1e-12);
    }
}
