//! Statistics of the call service: hop counts, hot keys, chain waits.

use super::*;

fn hop_buckets(c: &Cluster, pnn: u32) -> [u32; 16] {
    let db = c.nodes[pnn as usize].dbs.get(c.db_id).unwrap();
    db.stats().to_wire().hop_count_bucket
}

#[test]
fn executed_calls_count_their_hops_and_migrations_make_hot_keys() {
    let mut c = Cluster::new(3, false);
    let key = key_with_lmaster(&c, 0);
    // Node 1 asks the lmaster, which is dmaster: no hop.
    assert_eq!(c.call(1, FETCH_FUNC, &key).len(), 1);
    assert_eq!(hop_buckets(&c, 0)[0], 1);
    // Node 2 asks the lmaster, which redirects to node 1: one hop, executed on node 1.
    assert_eq!(c.call(2, FETCH_FUNC, &key).len(), 1);
    assert_eq!(hop_buckets(&c, 1)[1], 1);
    assert_eq!(hop_buckets(&c, 0), {
        let mut b = [0; 16];
        b[0] = 1;
        b
    });
    let counters = c.nodes[1].calls.take_counters();
    assert_eq!(counters.hop_count_bucket[1], 1);
    assert_eq!(counters.max_hop_count, 1);
    assert_eq!(
        c.nodes[1].calls.take_counters(),
        crate::server::call::stats::CallCounters::default()
    );

    // Each requester counted one migration of the key (all at the same instant).
    for pnn in [1, 2] {
        let wire = c.nodes[pnn].dbs.get(c.db_id).unwrap().stats().to_wire();
        assert_eq!(wire.num_hot_keys, 10);
        assert_eq!(wire.hot_keys[0].key, key, "node {pnn}");
        assert_eq!(wire.hot_keys[0].count, 1);
    }
    // Back and forth within one second: node 1 sees the key twice.
    c.call(1, FETCH_FUNC, &key);
    let wire = c.nodes[1].dbs.get(c.db_id).unwrap().stats().to_wire();
    assert_eq!(wire.hot_keys[0].count, 2);
    // Node 0 only served: no hot keys there.
    let wire = c.nodes[0].dbs.get(c.db_id).unwrap().stats().to_wire();
    assert!(wire
        .hot_keys
        .iter()
        .all(|h| h.count == 0 && h.key.is_empty()));
}

#[test]
fn chain_waits_count_once_per_request_with_their_latency() {
    let mut c = Cluster::new(3, false);
    let db_id = c.db_id;
    let node = &mut c.nodes[0];
    let work = Waiting::Client {
        client: CLIENT,
        reqid: 3,
        call: ReqCall::default(),
    };
    let at = |ms| Instant::from_millis(ms);
    node.calls.note_chain_busy(at(0), &work);
    node.calls.note_chain_busy(at(1), &work);
    let db = node.dbs.get_mut(db_id).unwrap();
    node.calls.note_chain_locked(at(5), db, &work);
    // A request that never waited counts nothing.
    node.calls.note_chain_locked(at(6), db, &work);
    let locks = db.stats().to_wire().locks;
    assert_eq!(locks.num_calls, 1);
    assert_eq!(locks.buckets[1], 1, "5 ms is in the 1-10 ms bucket");
    assert!((locks.latency.max - 0.005).abs() < 1e-9);
    let counters = node.calls.take_counters();
    assert_eq!(counters.locks.num_calls, 1);
    assert_eq!(counters.locks.latency.num, 1);
}
