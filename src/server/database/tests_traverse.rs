//! Traverse and DB_DETACH against real TDB files (stock rules from `server/ctdb_traverse.c`
//! and `ctdb_control_db_detach`).

use super::tests::{ChainHolder, TempDir};
use super::*;
use crate::protocol::header::BROADCAST_ACTIVE;
use crate::protocol::ltdb::{LtdbHeader, LTDB_HEADER_LEN};
use crate::protocol::types::{RecData, TraverseAll, TraverseStart, TraverseStartExt};
use std::collections::BTreeMap;

const OWN: Pnn = 1;
const CLIENT: ClientId = 9;
const CLIENT_REQID: u32 = 77;
const SRVID: u64 = 0xF100_0000_0000_0042;

struct Env {
    vnn_map: VnnMap,
    tunables: Tunables,
    recovery_mode: u32,
    active_nodes: u32,
}

impl Env {
    fn new() -> Self {
        Env {
            vnn_map: VnnMap {
                generation: 7,
                map: vec![0, 1, 2],
            },
            tunables: Tunables::default(),
            recovery_mode: RECOVERY_NORMAL,
            active_nodes: 1,
        }
    }

    fn ctx(&self) -> DbContext<'_> {
        DbContext {
            recovery_mode: self.recovery_mode,
            runstate: Runstate::Running,
            own_flags: 0,
            vnn_map: &self.vnn_map,
            tunables: &self.tunables,
            healthy_nodes: 3,
            active_nodes: self.active_nodes,
        }
    }
}

fn run(
    dbs: &mut DatabaseSet,
    env: &Env,
    opcode: ControlOpcode,
    data: &[u8],
    client: Option<ClientId>,
) -> i32 {
    let req = DbRequest {
        opcode,
        srvid: 0,
        flags: 0,
        data,
        srcnode: OWN,
        client,
    };
    match dbs.handle_control(Instant::ZERO, &req, &env.ctx()) {
        DbControlOutcome::Reply(reply) => reply.status,
        other => panic!("{} did not reply at once: {other:?}", opcode.name()),
    }
}

fn effects(dbs: &mut DatabaseSet) -> Vec<DbEffect> {
    std::iter::from_fn(|| dbs.poll_effect()).collect()
}

fn attach(dbs: &mut DatabaseSet, env: &Env, opcode: ControlOpcode, name: &str) -> u32 {
    let mut data = name.as_bytes().to_vec();
    data.push(0);
    let req = DbRequest {
        opcode,
        srvid: 0,
        flags: 0,
        data: &data,
        srcnode: 0,
        client: None,
    };
    let DbControlOutcome::Reply(reply) = dbs.handle_control(Instant::ZERO, &req, &env.ctx()) else {
        panic!("attach deferred");
    };
    assert_eq!(reply.status, 0);
    effects(dbs);
    exact_u32(&reply.data).unwrap()
}

fn value(dmaster: Pnn, data: &[u8]) -> Vec<u8> {
    let mut v = LtdbHeader {
        rsn: 3,
        dmaster,
        reserved1: 0,
        flags: 0,
    }
    .to_bytes();
    v.extend_from_slice(data);
    v
}

fn start_ext(db_id: u32, with_empty_records: bool) -> Vec<u8> {
    TraverseStartExt {
        db_id,
        reqid: CLIENT_REQID,
        srvid: SRVID,
        with_empty_records,
    }
    .to_bytes()
}

/// Starts a traverse from the local client and returns the TRAVERSE_ALL(_EXT) it sends.
fn start(
    dbs: &mut DatabaseSet,
    env: &Env,
    db_id: u32,
    empty: bool,
) -> (u32, ControlOpcode, Vec<u8>) {
    let op = ControlOpcode::TraverseStartExt;
    assert_eq!(run(dbs, env, op, &start_ext(db_id, empty), Some(CLIENT)), 0);
    match effects(dbs).as_slice() {
        [DbEffect::SendControl {
            destnode,
            opcode,
            data,
        }] => (*destnode, *opcode, data.clone()),
        other => panic!("unexpected effects {other:?}"),
    }
}

/// Runs the timer until no walk is left; returns the records handed to the client and how
/// many timer steps it took.
fn drain(dbs: &mut DatabaseSet, env: &Env) -> (Vec<RecData>, usize) {
    let mut out = Vec::new();
    let mut steps = 0;
    let mut now = Instant::ZERO;
    while dbs.local_traverse_count() > 0 {
        steps += 1;
        assert!(steps < 10_000, "traverse does not end");
        dbs.handle_timeout(now, &env.ctx());
        for e in effects(dbs) {
            match e {
                DbEffect::DispatchLocal { srvid, data } => {
                    assert_eq!(srvid, SRVID);
                    out.push(RecData::from_bytes_exact(&data).unwrap());
                }
                other => panic!("unexpected effect {other:?}"),
            }
        }
        now = now.saturating_add(TRAVERSE_RETRY_INTERVAL);
    }
    (out, steps)
}

fn volatile_fixture(tag: &str) -> (TempDir, DatabaseSet, Env, u32, BTreeMap<Vec<u8>, Vec<u8>>) {
    let dir = TempDir::new(tag);
    let mut dbs = DatabaseSet::new(dir.config(OWN), Box::new(TdbBackend)).unwrap();
    let env = Env::new();
    let db_id = attach(&mut dbs, &env, ControlOpcode::DbAttach, "trav.tdb");
    let mut expected = BTreeMap::new();
    let store = dbs.get_mut(db_id).unwrap().store_mut();
    for i in 0..700u32 {
        let key = format!("key-{i}").into_bytes();
        let (dmaster, data) = match i % 7 {
            0 => (0, b"elsewhere".to_vec()), // not authoritative here: skipped
            1 => (OWN, Vec::new()),          // header only: skipped without empty records
            _ => (OWN, format!("value-{i}").into_bytes()),
        };
        let v = value(dmaster, &data);
        store.store(&key, &[&v]).unwrap();
        if i % 7 != 0 {
            expected.insert(key, v);
        }
    }
    (dir, dbs, env, db_id, expected)
}

#[test]
fn volatile_traverse_returns_each_authoritative_record_once_in_bounded_steps() {
    for empty in [false, true] {
        let (_dir, mut dbs, env, db_id, mut expected) = volatile_fixture("trav-volatile");
        if !empty {
            expected.retain(|_, v| v.len() > LTDB_HEADER_LEN);
        }
        let (dest, opcode, all) = start(&mut dbs, &env, db_id, empty);
        assert_eq!(dest, BROADCAST_ACTIVE);
        let want = if empty {
            ControlOpcode::TraverseAllExt
        } else {
            ControlOpcode::TraverseAll
        };
        assert_eq!(opcode, want);
        // The broadcast reaches this node too.
        assert_eq!(run(&mut dbs, &env, opcode, &all, None), 0);
        let (records, steps) = drain(&mut dbs, &env);
        assert!(steps > 1, "700 records should take several steps");
        let (last, records) = records.split_last().unwrap();
        assert!(last.key.is_empty() && last.data.is_empty());
        assert_eq!(last.reqid, CLIENT_REQID);
        let mut got = BTreeMap::new();
        for r in records {
            assert_eq!(r.reqid, CLIENT_REQID);
            assert!(
                got.insert(r.key.clone(), r.data.clone()).is_none(),
                "duplicate"
            );
        }
        assert_eq!(got, expected, "with empty records: {empty}");
        assert_eq!(dbs.origin_traverse_count(), 0);
    }
}

#[test]
fn remote_originator_gets_traverse_data_controls_and_one_end_record() {
    let (_dir, mut dbs, env, db_id, expected) = volatile_fixture("trav-remote");
    let all = TraverseAll {
        db_id,
        reqid: 5,
        pnn: 0,
        client_reqid: 1,
        srvid: 2,
    }
    .to_bytes();
    assert_eq!(
        run(&mut dbs, &env, ControlOpcode::TraverseAll, &all, None),
        0
    );
    let mut got = Vec::new();
    let mut now = Instant::ZERO;
    while dbs.local_traverse_count() > 0 {
        dbs.handle_timeout(now, &env.ctx());
        now = now.saturating_add(TRAVERSE_RETRY_INTERVAL);
        for e in effects(&mut dbs) {
            let DbEffect::SendControl {
                destnode,
                opcode,
                data,
            } = e
            else {
                panic!("unexpected {e:?}");
            };
            assert_eq!((destnode, opcode), (0, ControlOpcode::TraverseData));
            got.push(RecData::from_bytes_exact(&data).unwrap());
        }
    }
    let last = got.pop().unwrap();
    assert!(last.key.is_empty() && last.data.is_empty() && last.reqid == 5);
    let non_empty = expected
        .values()
        .filter(|v| v.len() > LTDB_HEADER_LEN)
        .count();
    assert_eq!(got.len(), non_empty);
    assert!(got.iter().all(|r| r.reqid == 5 && !r.key.is_empty()));
}

#[test]
fn originator_waits_for_an_end_record_from_every_active_node() {
    let (_dir, mut dbs, mut env, db_id, _) = volatile_fixture("trav-origin");
    env.active_nodes = 3;
    let (_, _, all) = start(&mut dbs, &env, db_id, false);
    let reqid = TraverseAll::from_bytes_exact(&all).unwrap().reqid;
    let rec = |key: &[u8], data: &[u8]| {
        RecData {
            reqid,
            key: key.to_vec(),
            data: data.to_vec(),
        }
        .to_bytes()
    };
    let op = ControlOpcode::TraverseData;
    assert_eq!(
        run(&mut dbs, &env, op, &rec(b"a", &value(0, b"x")), None),
        0
    );
    assert_eq!(run(&mut dbs, &env, op, &rec(b"", b""), None), 0);
    assert_eq!(run(&mut dbs, &env, op, &rec(b"", b""), None), 0);
    let seen = effects(&mut dbs);
    assert_eq!(seen.len(), 1, "only the record so far: {seen:?}");
    assert_eq!(run(&mut dbs, &env, op, &rec(b"", b""), None), 0);
    let DbEffect::DispatchLocal { data, .. } = &effects(&mut dbs)[0] else {
        panic!("no end record");
    };
    assert_eq!(RecData::from_bytes_exact(data).unwrap().key.len(), 0);
    assert_eq!(dbs.origin_traverse_count(), 0);
    // The traverse is gone: late data fails, as do malformed records.
    assert_eq!(run(&mut dbs, &env, op, &rec(b"", b""), None), -1);
    assert_eq!(run(&mut dbs, &env, op, &[1, 2, 3], None), -1);
}

#[test]
fn persistent_traverse_asks_one_node_and_start_needs_a_client() {
    let dir = TempDir::new("trav-persistent");
    let mut dbs = DatabaseSet::new(dir.config(OWN), Box::new(TdbBackend)).unwrap();
    let mut env = Env::new();
    let db_id = attach(&mut dbs, &env, ControlOpcode::DbAttachPersistent, "p.tdb");
    let (dest, opcode, _) = start(&mut dbs, &env, db_id, false);
    assert_eq!((dest, opcode), (OWN, ControlOpcode::TraverseAll));
    env.vnn_map.map = vec![2, 0];
    let (dest, _, _) = start(&mut dbs, &env, db_id, false);
    assert_eq!(dest, 2);
    let op = ControlOpcode::TraverseStartExt;
    assert_eq!(run(&mut dbs, &env, op, &start_ext(db_id, false), None), -1);
    assert_eq!(
        run(
            &mut dbs,
            &env,
            op,
            &start_ext(db_id ^ 1, false),
            Some(CLIENT)
        ),
        -1
    );
    assert_eq!(run(&mut dbs, &env, op, &[0; 16], Some(CLIENT)), -1);
}

#[test]
fn client_disconnect_and_timeout_kill_the_walks() {
    let (_dir, mut dbs, env, db_id, _) = volatile_fixture("trav-kill");
    let (_, opcode, all) = start(&mut dbs, &env, db_id, false);
    assert_eq!(run(&mut dbs, &env, opcode, &all, None), 0);
    dbs.on_client_closed(CLIENT);
    let kill = match effects(&mut dbs).as_slice() {
        [DbEffect::BroadcastControl {
            opcode: ControlOpcode::TraverseKill,
            data,
        }] => data.clone(),
        other => panic!("unexpected {other:?}"),
    };
    let parsed = TraverseStart::from_bytes_exact(&kill).unwrap();
    assert_eq!((parsed.reqid, parsed.srvid), (CLIENT_REQID, SRVID));
    assert_eq!(dbs.local_traverse_count(), 1);
    assert_eq!(
        run(&mut dbs, &env, ControlOpcode::TraverseKill, &kill, None),
        0
    );
    assert_eq!(dbs.local_traverse_count(), 0);

    // TraverseTimeout: the client gets its end record and the walks are killed.
    let (_, _, _) = start(&mut dbs, &env, db_id, false);
    let late = Instant::from_secs(u64::from(env.tunables.traverse_timeout()));
    dbs.handle_timeout(late, &env.ctx());
    let got = effects(&mut dbs);
    assert_eq!(got[0], DbEffect::TraverseTimedOut);
    let got = &got[1..];
    assert!(
        matches!(&got[0], DbEffect::DispatchLocal { srvid: SRVID, data }
        if RecData::from_bytes_exact(data).unwrap().key.is_empty())
    );
    assert!(matches!(
        &got[1],
        DbEffect::BroadcastControl {
            opcode: ControlOpcode::TraverseKill,
            ..
        }
    ));
    assert_eq!(dbs.origin_traverse_count(), 0);
}

#[test]
fn a_locked_chain_postpones_the_walk_instead_of_blocking() {
    let (_dir, mut dbs, env, db_id, _) = volatile_fixture("trav-busy");
    let db = dbs.get(db_id).unwrap();
    let (path, flags) = (db.path().to_path_buf(), db.tdb_flags().bits());
    let (_, opcode, all) = start(&mut dbs, &env, db_id, false);
    assert_eq!(run(&mut dbs, &env, opcode, &all, None), 0);
    let holder = ChainHolder::start(&path, flags, "key-3");
    dbs.handle_timeout(Instant::ZERO, &env.ctx());
    assert!(
        effects(&mut dbs).is_empty(),
        "nothing may be read while a chain is held"
    );
    assert_eq!(dbs.local_traverse_count(), 1);
    assert!(dbs.poll_timeout().unwrap() > Instant::ZERO);
    drop(holder);
    let (records, _) = drain(&mut dbs, &env);
    assert!(records.len() > 500);
}

#[test]
fn a_congested_sink_pauses_the_walk() {
    let (_dir, mut dbs, env, db_id, _) = volatile_fixture("trav-paced");
    let (_, opcode, all) = start(&mut dbs, &env, db_id, false);
    assert_eq!(run(&mut dbs, &env, opcode, &all, None), 0);
    let mut asked = Vec::new();
    dbs.handle_timeout_paced(Instant::ZERO, &env.ctx(), &|sink| {
        assert_eq!(sink, TraverseSink::Client(CLIENT));
        true
    });
    asked.extend(effects(&mut dbs));
    assert!(asked.is_empty(), "a congested client gets nothing more");
    assert!(dbs.poll_timeout().unwrap() > Instant::ZERO);
    assert!(dbs.walks_wait_for_readers());
    // Once the client catches up, the walk goes on at once, not at its fallback timer.
    dbs.handle_timeout_paced(Instant::ZERO, &env.ctx(), &|_| false);
    let resumed = effects(&mut dbs).len();
    assert!(resumed > 0);
    assert!(!dbs.walks_wait_for_readers());
    let (records, _) = drain(&mut dbs, &env);
    assert!(resumed + records.len() > 500);
}

#[test]
fn detach_rules() {
    let (_dir, mut dbs, mut env, db_id, _) = volatile_fixture("trav-detach");
    let pdb = attach(&mut dbs, &env, ControlOpcode::DbAttachPersistent, "p.tdb");
    let op = ControlOpcode::DbDetach;
    let id = db_id.to_ne_bytes();
    // AllowClientDBAttach=1 (the default) refuses.
    assert_eq!(run(&mut dbs, &env, op, &id, Some(CLIENT)), -1);
    env.tunables.set("AllowClientDBAttach", 0).unwrap();
    assert_eq!(run(&mut dbs, &env, op, &pdb.to_ne_bytes(), None), -1);
    assert_eq!(run(&mut dbs, &env, op, &[1, 2], None), -1);
    assert_eq!(run(&mut dbs, &env, op, &0x1234u32.to_ne_bytes(), None), -1);
    env.recovery_mode = RECOVERY_ACTIVE;
    assert_eq!(run(&mut dbs, &env, op, &id, None), -1);
    env.recovery_mode = RECOVERY_NORMAL;
    // From a client: broadcast only.
    assert_eq!(run(&mut dbs, &env, op, &id, Some(CLIENT)), 0);
    assert!(matches!(
        effects(&mut dbs).as_slice(),
        [DbEffect::BroadcastControl {
            opcode: ControlOpcode::DbDetach,
            ..
        }]
    ));
    assert!(dbs.get(db_id).is_some());
    // From a daemon: gone, walks included.
    let (_, opcode, all) = start(&mut dbs, &env, db_id, false);
    assert_eq!(run(&mut dbs, &env, opcode, &all, None), 0);
    assert_eq!(run(&mut dbs, &env, op, &id, None), 0);
    assert!(dbs.get(db_id).is_none());
    assert_eq!(dbs.local_traverse_count(), 0);
}
