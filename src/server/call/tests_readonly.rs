//! Read-only delegations, their revoke, and sticky records, on the in-memory cluster of the
//! call tests.

use super::*;
use crate::protocol::ltdb::{
    REC_RO_FLAGS, REC_RO_HAVE_READONLY, REC_RO_REVOKE_COMPLETE, REC_RO_REVOKING_READONLY,
};
use crate::protocol::packet::CALL_FLAG_WANT_READONLY;
use crate::server::call::readonly::{
    delegated_header, revoke_header, tracking_add, tracking_nodes, READONLY_GRACE,
};

impl Cluster {
    fn set_db_flag(&mut self, opcode: ControlOpcode) {
        let id = self.db_id.to_ne_bytes();
        for node in &mut self.nodes {
            let req = DbRequest {
                opcode,
                srvid: 0,
                flags: 0,
                data: &id,
                srcnode: 0,
                client: None,
            };
            match node
                .dbs
                .handle_control(Instant::ZERO, &req, &self.env.ctx())
            {
                DbControlOutcome::Reply(r) => assert_eq!(r.status, 0, "{r:?}"),
                other => panic!("no reply: {other:?}"),
            }
            while node.dbs.poll_effect().is_some() {}
        }
    }

    fn start_call(&mut self, pnn: u32, now: Instant, call: ReqCall) {
        self.now = now;
        let ctx = self.env.ctx();
        let node = &mut self.nodes[pnn as usize];
        node.calls
            .on_client_call(&mut node.dbs, &ctx, now, CLIENT, 77, call);
    }

    fn req(&self, flags: u32, callid: u32, key: &[u8]) -> ReqCall {
        ReqCall {
            flags: CALL_FLAG_IMMEDIATE_MIGRATION | flags,
            db_id: self.db_id,
            callid,
            hopcount: 0,
            key: key.to_vec(),
            calldata: Vec::new(),
        }
    }

    /// Runs timers of every node at `now`, then delivers packets.
    fn tracking(&mut self, pnn: u32, key: &[u8]) -> Option<Vec<u8>> {
        let db = self.nodes[pnn as usize].dbs.get_mut(self.db_id).unwrap();
        db.readonly_tracking_mut().unwrap().fetch(key).unwrap()
    }

    fn update_records(&self) -> Vec<u32> {
        self.trace
            .iter()
            .filter(|p| {
                matches!(&p.body, Body::ReqControl(c) if c.opcode == ControlOpcode::UpdateRecord)
            })
            .map(|p| p.destnode)
            .collect()
    }
}

fn dmaster_header(rsn: u64, dmaster: u32) -> LtdbHeader {
    LtdbHeader {
        rsn,
        dmaster,
        reserved1: 0,
        flags: REC_FLAG_MIGRATED_WITH_DATA,
    }
}

/// A readonly cluster with `key` mastered by its lmaster 0, holding "v1" at RSN 5.
fn readonly_cluster() -> (Cluster, Vec<u8>) {
    let mut c = Cluster::new(3, false);
    c.set_db_flag(ControlOpcode::SetDbReadonly);
    let key = key_with_lmaster(&c, 0);
    c.put(0, &key, dmaster_header(5, 0), b"v1");
    (c, key)
}

#[test]
fn tracking_bitmap_matches_stock_layout() {
    let mut rec = Vec::new();
    tracking_add(&mut rec, 1);
    tracking_add(&mut rec, 2);
    assert_eq!(rec, vec![0b110]);
    tracking_add(&mut rec, 9);
    assert_eq!(rec, vec![0b110, 0b10]);
    assert_eq!(tracking_nodes(&rec), vec![1, 2, 9]);
    tracking_add(&mut rec, 1);
    assert_eq!(tracking_nodes(&rec), vec![1, 2, 9]);
    for seed in seeds(20) {
        let mut prng = Prng::new(seed);
        let mut rec = Vec::new();
        let mut want: Vec<u32> = (0..prng.below(10)).map(|_| prng.below(64) as u32).collect();
        for &p in &want {
            tracking_add(&mut rec, p);
        }
        want.sort_unstable();
        want.dedup();
        assert_eq!(tracking_nodes(&rec), want, "seed {seed}");
    }
}

#[test]
fn delegation_and_revoke_headers_follow_stock() {
    let mut h = dmaster_header(8, 0);
    h.flags |= REC_RO_HAVE_DELEGATIONS | REC_RO_REVOKING_READONLY;
    let d = delegated_header(&h);
    assert_eq!(d.rsn, 6);
    assert_eq!(d.flags & REC_RO_HAVE_READONLY, REC_RO_HAVE_READONLY);
    assert_eq!(d.flags & REC_RO_HAVE_DELEGATIONS, 0);
    let r = revoke_header(&h);
    assert_eq!((r.rsn, r.flags), (7, REC_FLAG_MIGRATED_WITH_DATA));
    assert!(
        r.rsn > d.rsn,
        "holders must accept the revoke's UPDATE_RECORD"
    );
}

#[test]
fn readonly_fetch_delegates_without_moving_the_dmaster() {
    let (mut c, key) = readonly_cluster();
    let call = c.req(CALL_FLAG_WANT_READONLY, NULL_FUNC, &key);
    c.start_call(1, Instant::ZERO, call);
    let replies = c.run();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0, 0);
    let (h0, d0) = c.record(0, &key).unwrap();
    assert_eq!((h0.dmaster, h0.rsn, d0.as_slice()), (0, 8, &b"v1"[..]));
    assert_ne!(h0.flags & REC_RO_HAVE_DELEGATIONS, 0);
    let (h1, d1) = c.record(1, &key).unwrap();
    assert_eq!((h1.dmaster, h1.rsn, d1.as_slice()), (0, 6, &b"v1"[..]));
    assert_eq!(h1.flags & REC_RO_FLAGS, REC_RO_HAVE_READONLY);
    // A read-only FETCH from node 2 returns the data without the header.
    let call = c.req(CALL_FLAG_WANT_READONLY, FETCH_FUNC, &key);
    c.start_call(2, Instant::ZERO, call);
    assert_eq!(c.run(), vec![(0, b"v1".to_vec())]);
    assert_eq!(
        c.record(2, &key).unwrap().0.flags & REC_RO_HAVE_READONLY,
        REC_RO_HAVE_READONLY
    );
    assert_eq!(c.tracking(0, &key), Some(vec![0b110]));
    // The dmaster's RSN moved only on the first delegation.
    assert_eq!(c.record(0, &key).unwrap().0.rsn, 8);
    assert!(c.update_records().is_empty());
}

#[test]
fn readonly_flag_is_ignored_without_the_readonly_database_flag() {
    let mut c = Cluster::new(3, false);
    let key = key_with_lmaster(&c, 0);
    c.put(0, &key, dmaster_header(5, 0), b"v1");
    let call = c.req(CALL_FLAG_WANT_READONLY, FETCH_FUNC, &key);
    c.start_call(1, Instant::ZERO, call);
    assert_eq!(c.run(), vec![(0, b"v1".to_vec())]);
    // A normal migration happened.
    assert_eq!(c.record(1, &key).unwrap().0.dmaster, 1);
    assert_eq!(c.record(0, &key).unwrap().0.dmaster, 1);
}

#[test]
fn write_request_revokes_delegations_then_migrates() {
    let (mut c, key) = readonly_cluster();
    for pnn in [1, 2] {
        let call = c.req(CALL_FLAG_WANT_READONLY, NULL_FUNC, &key);
        c.start_call(pnn, Instant::ZERO, call);
        assert_eq!(c.run().len(), 1);
    }
    // A write fetch from node 1: the dmaster revokes first, the client waits.
    let call = c.req(0, FETCH_FUNC, &key);
    c.start_call(1, Instant::ZERO, call);
    assert!(c.run().is_empty());
    let mut holders = c.update_records();
    holders.sort_unstable();
    assert_eq!(holders, vec![1, 2]);
    let (h0, _) = c.record(0, &key).unwrap();
    assert_ne!(h0.flags & REC_RO_REVOKING_READONLY, 0);
    assert_eq!(
        h0.flags & REC_RO_REVOKE_COMPLETE,
        0,
        "completed on the timer"
    );
    // Node 2's copy is no longer read-only.
    let (h2, d2) = c.record(2, &key).unwrap();
    assert_eq!(
        (h2.dmaster, h2.flags & REC_RO_FLAGS, d2.as_slice()),
        (0, 0, &b"v1"[..])
    );
    // The deferred request runs on the next timer turn and migrates the record.
    let now = Instant::from_millis(1);
    assert_eq!(c.tick(now), vec![(0, b"v1".to_vec())]);
    let (h1, d1) = c.record(1, &key).unwrap();
    assert_eq!(
        (h1.dmaster, h1.flags & REC_RO_FLAGS, d1.as_slice()),
        (1, 0, &b"v1"[..])
    );
    assert_eq!(c.record(0, &key).unwrap().0.dmaster, 1);
    assert_eq!(c.record(0, &key).unwrap().0.flags & REC_RO_FLAGS, 0);
    assert_eq!(c.tracking(0, &key), None);
    assert!(c.nodes.iter().all(|n| n.calls.pending_count() == 0));
    assert_eq!(c.nodes[0].calls.readonly_counts(None), (2, 1));
    assert_eq!(c.nodes[0].calls.readonly_counts(Some(c.db_id)), (2, 1));
    assert_eq!(c.nodes[0].calls.readonly_counts(Some(c.db_id + 1)), (0, 0));
}

#[test]
fn requests_wait_while_revoking_and_readonly_ones_get_a_grace_second() {
    let (mut c, key) = readonly_cluster();
    let call = c.req(CALL_FLAG_WANT_READONLY, NULL_FUNC, &key);
    c.start_call(2, Instant::ZERO, call);
    assert_eq!(c.run().len(), 1);
    // A local write on the dmaster starts the revoke; hold back node 2's answer.
    let call = c.req(0, FETCH_FUNC, &key);
    c.start_call(0, Instant::ZERO, call);
    let update = match c.nodes[0].calls.poll_output() {
        Some(CallOutput::Node { packet, .. }) => packet,
        other => panic!("expected an UPDATE_RECORD, got {other:?}"),
    };
    assert!(matches!(&update.body, Body::ReqControl(r) if r.opcode == ControlOpcode::UpdateRecord));
    // A read-only request on node 0 meets REVOKING and waits too.
    c.start_call(
        0,
        Instant::ZERO,
        c.req(CALL_FLAG_WANT_READONLY, FETCH_FUNC, &key),
    );
    assert!(c.run().is_empty());
    // The holder answers; the write runs at once, the read-only request a second later.
    let ctx = c.env.ctx();
    let status = match &update.body {
        Body::ReqControl(r) => update_record(&mut c.nodes[2].dbs, &ctx, &r.data),
        _ => unreachable!(),
    };
    assert_eq!(status, 0);
    let node = &mut c.nodes[0];
    assert!(node
        .calls
        .on_control_reply(&mut node.dbs, &ctx, update.reqid, 0));
    assert_eq!(c.tick(Instant::ZERO), vec![(0, b"v1".to_vec())]);
    assert!(c.tick(Instant::from_millis(10)).is_empty());
    let later = Instant::ZERO.saturating_add(READONLY_GRACE);
    assert_eq!(c.tick(later), vec![(0, b"v1".to_vec())]);
}

#[test]
fn revoke_without_answers_times_out_and_retries() {
    let (mut c, key) = readonly_cluster();
    let call = c.req(CALL_FLAG_WANT_READONLY, NULL_FUNC, &key);
    c.start_call(2, Instant::ZERO, call);
    assert_eq!(c.run().len(), 1);
    c.start_call(0, Instant::ZERO, c.req(0, FETCH_FUNC, &key));
    // Lose the UPDATE_RECORD.
    while c.nodes[0].calls.poll_output().is_some() {}
    let timeout = Duration::from_secs(u64::from(c.env.tunables.control_timeout()));
    let at = Instant::ZERO.saturating_add(timeout);
    assert!(c.tick(at).is_empty());
    let (h0, _) = c.record(0, &key).unwrap();
    assert_eq!(
        h0.flags & (REC_RO_REVOKING_READONLY | REC_RO_REVOKE_COMPLETE),
        0
    );
    // After the grace second the request starts a new revoke, which succeeds.
    let replies = c.tick(at.saturating_add(READONLY_GRACE));
    assert!(replies.is_empty());
    let replies = c.tick(at.saturating_add(READONLY_GRACE));
    assert_eq!(replies, vec![(0, b"v1".to_vec())]);
    assert_eq!(c.record(0, &key).unwrap().0.flags & REC_RO_FLAGS, 0);
}

#[test]
fn sticky_record_is_pinned_down_after_coming_back() {
    let mut c = Cluster::new(3, false);
    c.set_db_flag(ControlOpcode::SetDbSticky);
    let key = key_with_lmaster(&c, 0);
    c.put(0, &key, dmaster_header(5, 0), b"v1");
    // A request that travelled far makes the record sticky on node 0, which serves it.
    let hot = Packet {
        generation: GENERATION,
        destnode: 0,
        srcnode: 1,
        reqid: 5,
        body: Body::ReqCall(ReqCall {
            hopcount: c.env.tunables.hopcount_make_sticky(),
            ..c.req(0, NULL_FUNC, &key)
        }),
    };
    let ctx = c.env.ctx();
    let node = &mut c.nodes[0];
    node.calls
        .on_node_packet(&mut node.dbs, &ctx, Instant::ZERO, hot);
    c.run();
    assert_eq!(c.record(0, &key).unwrap().0.dmaster, 1);
    // Node 0 takes it back: pinned down for StickyPindown ms.
    c.start_call(0, Instant::ZERO, c.req(0, FETCH_FUNC, &key));
    assert_eq!(c.run(), vec![(0, b"v1".to_vec())]);
    c.start_call(2, Instant::ZERO, c.req(0, FETCH_FUNC, &key));
    assert!(
        c.run().is_empty(),
        "node 2's request waits for the pin-down"
    );
    assert_eq!(c.record(0, &key).unwrap().0.dmaster, 0);
    let pindown = u64::from(c.env.tunables.sticky_pindown());
    assert!(c.tick(Instant::from_millis(pindown - 1)).is_empty());
    assert_eq!(
        c.tick(Instant::from_millis(pindown)),
        vec![(0, b"v1".to_vec())]
    );
    assert_eq!(c.record(2, &key).unwrap().0.dmaster, 2);
}

#[test]
fn non_sticky_database_never_pins() {
    let mut c = Cluster::new(3, false);
    let key = key_with_lmaster(&c, 0);
    c.put(0, &key, dmaster_header(5, 0), b"v1");
    c.start_call(1, Instant::ZERO, c.req(0, FETCH_FUNC, &key));
    assert_eq!(c.run().len(), 1);
    let later = Instant::from_millis(10);
    c.start_call(0, later, c.req(0, FETCH_FUNC, &key));
    assert_eq!(c.run().len(), 1);
    // Node 2's request waits only for node 0's client (the migration hold), not for a pin-down.
    c.start_call(2, later, c.req(0, FETCH_FUNC, &key));
    assert!(c.run().is_empty());
    assert_eq!(c.tick(later.saturating_add(MIGRATION_HOLD)).len(), 1);
}

#[test]
fn closed_client_is_not_answered_after_the_revoke() {
    let (mut c, key) = readonly_cluster();
    c.start_call(
        2,
        Instant::ZERO,
        c.req(CALL_FLAG_WANT_READONLY, NULL_FUNC, &key),
    );
    assert_eq!(c.run().len(), 1);
    c.start_call(0, Instant::ZERO, c.req(0, FETCH_FUNC, &key));
    c.nodes[0].calls.on_client_closed(CLIENT);
    assert!(c.run().is_empty());
    assert!(c.tick(Instant::from_millis(1)).is_empty());
    assert!(c.tick(Instant::from_secs(2)).is_empty());
    // The revoke itself finished and the next request cleans up.
    let (h0, _) = c.record(0, &key).unwrap();
    assert_ne!(h0.flags & REC_RO_REVOKE_COMPLETE, 0);
    c.start_call(1, Instant::from_secs(2), c.req(0, FETCH_FUNC, &key));
    assert_eq!(c.run(), vec![(0, b"v1".to_vec())]);
    assert_eq!(c.record(1, &key).unwrap().0.flags & REC_RO_FLAGS, 0);
}

#[test]
fn volatile_update_record_fails_instead_of_waiting_for_a_held_chain() {
    let mut f = LockFixture::on_node("ro-lock", 1, 2);
    let (db_id, ctx) = (f.db_id, f.env.ctx());
    let key = "held";
    // A read-only copy from node 0, as a delegation leaves it.
    let mut copy = dmaster_header(6, 0);
    copy.flags |= REC_RO_HAVE_READONLY;
    {
        let db = f.dbs.get_mut(db_id).unwrap();
        db.store_mut()
            .store(key.as_bytes(), &[&copy.to_bytes(), b"v1"])
            .unwrap();
    }
    let revoke = RecBuffer {
        db_id,
        records: vec![RecData::with_header(
            0,
            &revoke_header(&dmaster_header(8, 0)),
            key.as_bytes(),
            b"v1",
        )],
    }
    .to_bytes();
    let holder = f.hold_chain_of(key);
    assert_eq!(update_record(&mut f.dbs, &ctx, &revoke), -1);
    drop(holder);
    assert_eq!(update_record(&mut f.dbs, &ctx, &revoke), 0);
    let db = f.dbs.get_mut(db_id).unwrap();
    let stored = db.store_mut().fetch(key.as_bytes()).unwrap().unwrap();
    let (h, _) = LtdbHeader::pull(&stored).unwrap();
    assert_eq!((h.rsn, h.dmaster, h.flags & REC_RO_FLAGS), (7, 0, 0));
    assert_eq!(&stored[LTDB_HEADER_LEN..], b"v1");
    // Records this node does not have are left alone.
    let other = RecBuffer {
        db_id,
        records: vec![RecData::with_header(
            0,
            &dmaster_header(9, 0),
            b"absent",
            b"x",
        )],
    };
    assert_eq!(update_record(&mut f.dbs, &ctx, &other.to_bytes()), 0);
    assert_eq!(db_fetch(&mut f.dbs, db_id, b"absent"), None);
}

fn db_fetch(dbs: &mut DatabaseSet, db_id: u32, key: &[u8]) -> Option<Vec<u8>> {
    dbs.get_mut(db_id).unwrap().store_mut().fetch(key).unwrap()
}

/// Seeded random reads (read-only fetch-locks) and writes (fetch-lock and store) from the
/// three nodes, each done as the client library does it: use the local record when it is
/// readable (writable), otherwise ask the daemon and look again. Every read sees the last
/// value written, there is always exactly one dmaster, and no call is left waiting.
#[test]
fn random_readonly_and_write_sequences_never_read_stale_data() {
    use crate::client::db::{classify, classify_readonly, LocalRecord};
    for seed in seeds(40) {
        let (mut c, key) = readonly_cluster();
        let mut prng = Prng::new(seed);
        let mut now = Instant::ZERO;
        let mut last = b"v1".to_vec();
        for step in 0..40 {
            let pnn = prng.below(3) as u32;
            let write = prng.below(3) == 0;
            let mut attempts = 0;
            loop {
                attempts += 1;
                assert!(attempts < 10, "seed {seed} step {step}: no progress");
                let local = c.nodes[pnn as usize]
                    .dbs
                    .get_mut(c.db_id)
                    .unwrap()
                    .store_mut()
                    .fetch(&key)
                    .unwrap();
                let class = if write {
                    classify(local.as_deref(), pnn).unwrap()
                } else {
                    classify_readonly(local.as_deref(), pnn).unwrap()
                };
                if let LocalRecord::Ours { header, data } = class {
                    if write {
                        last = format!("s{seed}-{step}").into_bytes();
                        c.put(pnn, &key, header, &last);
                    } else {
                        assert_eq!(data, last, "seed {seed} step {step}: stale read on {pnn}");
                    }
                    break;
                }
                let flags = if write { 0 } else { CALL_FLAG_WANT_READONLY };
                c.start_call(pnn, now, c.req(flags, NULL_FUNC, &key));
                let mut replies = c.run();
                while replies.is_empty() {
                    now = now.saturating_add(Duration::from_millis(300));
                    replies = c.tick(now);
                }
                assert_eq!(replies.len(), 1, "seed {seed} step {step}");
                assert_eq!(replies[0].0, 0, "seed {seed} step {step}");
            }
            let dmasters: Vec<u32> = (0..3u32)
                .filter(|&p| c.record(p, &key).is_some_and(|(h, _)| h.dmaster == p))
                .collect();
            assert_eq!(dmasters.len(), 1, "seed {seed} step {step}: {dmasters:?}");
            assert!(c.nodes.iter().all(|n| n.calls.pending_count() == 0));
        }
    }
}
