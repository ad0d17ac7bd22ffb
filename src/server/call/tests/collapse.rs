//! Fetch collapse: concurrent client calls for one remote key share one REQ_CALL.

use super::*;

/// Routes node packets until nothing moves; returns (node, client, reqid, status) of every
/// client reply and counts the REQ_CALLs that crossed the wire.
fn route(c: &mut Cluster, now: Instant) -> (Vec<(usize, ClientId, u32, i32)>, usize) {
    let mut replies = Vec::new();
    let mut req_calls = 0;
    for _ in 0..1000 {
        let mut moved = false;
        for pnn in 0..c.nodes.len() {
            while let Some(out) = c.nodes[pnn].calls.poll_output() {
                moved = true;
                match out {
                    CallOutput::Client { client, packet } => match packet.body {
                        Body::ReplyCall(r) => replies.push((pnn, client, packet.reqid, r.status)),
                        other => panic!("unexpected client packet {other:?}"),
                    },
                    CallOutput::Node { pnn: dest, packet } => {
                        if matches!(packet.body, Body::ReqCall(_)) {
                            req_calls += 1;
                        }
                        let ctx = c.env.ctx();
                        let node = &mut c.nodes[dest as usize];
                        node.calls.on_node_packet(&mut node.dbs, &ctx, now, packet);
                    }
                    CallOutput::SetRecoveryModeActive => panic!("recovery triggered"),
                }
            }
            let ctx = c.env.ctx();
            let node = &mut c.nodes[pnn];
            if node.calls.poll_timeout().is_some_and(|due| now >= due) {
                node.calls.handle_timeout(&mut node.dbs, &ctx, now);
                moved = true;
            }
        }
        if !moved {
            return (replies, req_calls);
        }
    }
    panic!("packets still moving after 1000 rounds");
}

fn fetch(db_id: u32, key: &[u8]) -> ReqCall {
    ReqCall {
        flags: CALL_FLAG_IMMEDIATE_MIGRATION,
        db_id,
        callid: FETCH_FUNC,
        hopcount: 0,
        key: key.to_vec(),
        calldata: Vec::new(),
    }
}

fn submit(c: &mut Cluster, pnn: usize, client: ClientId, reqid: u32, key: &[u8], now: Instant) {
    let ctx = c.env.ctx();
    let call = fetch(c.db_id, key);
    let node = &mut c.nodes[pnn];
    node.calls
        .on_client_call(&mut node.dbs, &ctx, now, client, reqid, call);
}

#[test]
fn concurrent_fetches_of_a_remote_key_share_one_request() {
    for seed in seeds(8) {
        let mut rng = Prng::new(seed);
        let mut c = Cluster::new(3, false);
        let key = key_with_lmaster(&c, 0);
        let now = Instant::from_secs(1);
        let callers = 2 + rng.below(6) as u32;
        for i in 0..callers {
            submit(&mut c, 1, 100 + u64::from(i), i, &key, now);
        }
        assert_eq!(c.nodes[1].calls.deferred_fetch_count(), 1, "seed {seed}");
        let (replies, req_calls) = route(&mut c, now);
        assert_eq!(req_calls, 1, "one REQ_CALL on the wire (seed {seed})");
        let answered: Vec<(ClientId, u32)> = replies
            .iter()
            .map(|&(pnn, client, reqid, status)| {
                assert_eq!((pnn, status), (1, 0), "seed {seed}");
                (client, reqid)
            })
            .collect();
        // Waiting calls run in the order they came, after the first.
        let expected: Vec<(ClientId, u32)> =
            (0..callers).map(|i| (100 + u64::from(i), i)).collect();
        assert_eq!(answered, expected, "seed {seed}");
        assert_eq!(c.record(1, &key).unwrap().0.dmaster, 1);
        assert_eq!(c.nodes[1].calls.deferred_fetch_count(), 0);
        assert_eq!(c.nodes[1].calls.poll_timeout(), None);
    }
}

#[test]
fn without_fetch_collapse_every_call_goes_out() {
    let mut c = Cluster::new(3, false);
    c.env.tunables.set("FetchCollapse", 0).unwrap();
    let key = key_with_lmaster(&c, 0);
    let now = Instant::from_secs(1);
    for i in 0..3 {
        submit(&mut c, 1, 100 + u64::from(i), i, &key, now);
    }
    assert_eq!(c.nodes[1].calls.deferred_fetch_count(), 0);
    let (replies, req_calls) = route(&mut c, now);
    assert_eq!(replies.len(), 3);
    assert!(req_calls >= 3, "{req_calls} REQ_CALLs");
}

#[test]
fn waiting_calls_run_when_the_first_client_goes_away_or_after_the_timeout() {
    let mut c = Cluster::new(3, false);
    let key = key_with_lmaster(&c, 0);
    let now = Instant::from_secs(1);
    submit(&mut c, 1, 100, 1, &key, now);
    submit(&mut c, 1, 101, 2, &key, now);
    submit(&mut c, 1, 102, 3, &key, now);
    // Hold back the first REQ_CALL: the first client disconnects before any answer.
    let first = c.nodes[1].calls.poll_output().expect("the first REQ_CALL");
    assert!(
        c.nodes[1].calls.poll_output().is_none(),
        "only one goes out"
    );
    c.nodes[1].calls.on_client_closed(100);
    c.nodes[1].calls.on_client_closed(102);
    assert_eq!(c.nodes[1].calls.poll_timeout(), Some(Instant::ZERO));
    let (replies, _) = route(&mut c, now);
    // The waiting call went out on its own and was answered; the gone clients hear nothing.
    assert_eq!(replies, vec![(1, 101, 2, 0)]);
    drop(first);

    // A fetch that never comes back releases its waiters after 30 seconds.
    let key2 = (0u32..)
        .map(|i| format!("other{i}").into_bytes())
        .find(|k| c.lmaster(k) == 0)
        .unwrap();
    submit(&mut c, 1, 200, 1, &key2, now);
    submit(&mut c, 1, 201, 2, &key2, now);
    let lost = c.nodes[1].calls.poll_output().expect("REQ_CALL");
    drop(lost);
    let due = c.nodes[1].calls.poll_timeout().unwrap();
    assert_eq!(
        due,
        now.saturating_add(crate::server::call::collapse::DEFERRED_FETCH_TIMEOUT)
    );
    let (replies, req_calls) = route(&mut c, due);
    assert_eq!(req_calls, 1, "the waiting call goes out at the timeout");
    assert_eq!(replies, vec![(1, 201, 2, 0)]);
}
