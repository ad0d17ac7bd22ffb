//! The call service on a simulated three-node cluster: packets between the services are
//! delivered in order by a tiny router, databases live in memory.

use super::*;
use crate::common::tunable::Tunables;
use crate::protocol::packet::CALL_FLAG_IMMEDIATE_MIGRATION;
use crate::protocol::types::{RecData, Runstate, VnnMap};
use crate::server::database::{DbConfig, DbControlOutcome, DbRequest, MemoryBackend};
use crate::testing::{seeds, Prng};
use std::path::PathBuf;

const GENERATION: u32 = 7;
const CLIENT: ClientId = 9;

struct Env {
    vnn_map: VnnMap,
    tunables: Tunables,
    recovery_mode: u32,
}

impl Env {
    fn new(nodes: u32) -> Self {
        Env {
            vnn_map: VnnMap {
                generation: GENERATION,
                map: (0..nodes).collect(),
            },
            tunables: Tunables::default(),
            recovery_mode: RECOVERY_NORMAL,
        }
    }

    fn ctx(&self) -> DbContext<'_> {
        DbContext {
            recovery_mode: self.recovery_mode,
            runstate: Runstate::Running,
            own_flags: 0,
            vnn_map: &self.vnn_map,
            tunables: &self.tunables,
            healthy_nodes: u32::try_from(self.vnn_map.map.len()).unwrap_or(0),
            active_nodes: u32::try_from(self.vnn_map.map.len()).unwrap_or(0),
        }
    }
}

struct Node {
    dbs: DatabaseSet,
    calls: CallService,
}

struct Cluster {
    env: Env,
    nodes: Vec<Node>,
    db_id: u32,
    /// Every packet that crossed the router, in order.
    trace: Vec<Packet>,
    recovery_triggered: bool,
    /// Advanced past [`MIGRATION_HOLD`] by every client call: the client that fetched a record
    /// before has long been done with it.
    now: Instant,
}

impl Cluster {
    fn new(nodes: u32, persistent: bool) -> Self {
        let env = Env::new(nodes);
        let opcode = if persistent {
            ControlOpcode::DbAttachPersistent
        } else {
            ControlOpcode::DbAttach
        };
        let mut db_id = 0;
        let nodes = (0..nodes)
            .map(|pnn| {
                let config = DbConfig {
                    pnn,
                    volatile_dir: PathBuf::from("/mem/volatile"),
                    persistent_dir: PathBuf::from("/mem/persistent"),
                    state_dir: PathBuf::from("/mem/state"),
                    tdb_mutexes: false,
                };
                let mut dbs = DatabaseSet::new(config, Box::new(MemoryBackend::new())).unwrap();
                let req = DbRequest {
                    opcode,
                    srvid: 0,
                    flags: 0,
                    data: b"test.tdb\0",
                    srcnode: (pnn + 1) % 3,
                    client: None,
                };
                match dbs.handle_control(Instant::ZERO, &req, &env.ctx()) {
                    DbControlOutcome::Reply(r) => {
                        assert_eq!(r.status, 0, "attach failed: {r:?}");
                        db_id = u32::from_ne_bytes(r.data.try_into().unwrap());
                    }
                    other => panic!("attach did not reply: {other:?}"),
                }
                while dbs.poll_effect().is_some() {}
                Node {
                    dbs,
                    calls: CallService::new(),
                }
            })
            .collect();
        Cluster {
            env,
            nodes,
            db_id,
            trace: Vec::new(),
            recovery_triggered: false,
            now: Instant::ZERO,
        }
    }

    /// A client call on node `pnn`, well after the one before.
    fn call(&mut self, pnn: u32, callid: u32, key: &[u8]) -> Vec<(i32, Vec<u8>)> {
        self.now = self.now.saturating_add(MIGRATION_HOLD * 2);
        self.call_now(pnn, callid, key)
    }

    /// Every node's timers at `now`; returns the client replies.
    fn tick(&mut self, now: Instant) -> Vec<(i32, Vec<u8>)> {
        self.now = now;
        let ctx = self.env.ctx();
        for node in &mut self.nodes {
            node.calls.handle_timeout(&mut node.dbs, &ctx, now);
        }
        self.run()
    }

    /// A client call on node `pnn` at the current time.
    fn call_now(&mut self, pnn: u32, callid: u32, key: &[u8]) -> Vec<(i32, Vec<u8>)> {
        let call = ReqCall {
            flags: CALL_FLAG_IMMEDIATE_MIGRATION,
            db_id: self.db_id,
            callid,
            hopcount: 0,
            key: key.to_vec(),
            calldata: Vec::new(),
        };
        let ctx = self.env.ctx();
        let node = &mut self.nodes[pnn as usize];
        node.calls
            .on_client_call(&mut node.dbs, &ctx, self.now, CLIENT, 77, call);
        self.run()
    }

    /// Delivers node packets until nothing moves; returns the client replies.
    fn run(&mut self) -> Vec<(i32, Vec<u8>)> {
        let mut replies = Vec::new();
        for _ in 0..1000 {
            let mut moved = false;
            for pnn in 0..self.nodes.len() {
                while let Some(out) = self.nodes[pnn].calls.poll_output() {
                    moved = true;
                    match out {
                        CallOutput::Client { client, packet } => {
                            assert_eq!(client, CLIENT);
                            match packet.body {
                                Body::ReplyCall(r) => {
                                    assert_eq!(packet.reqid, 77);
                                    replies.push((r.status, r.data));
                                }
                                Body::ReplyControl(r) => replies.push((r.status, r.data)),
                                other => panic!("unexpected client packet {other:?}"),
                            }
                        }
                        CallOutput::Node { pnn: dest, packet } => {
                            assert_eq!(dest, packet.destnode);
                            assert_ne!(dest as usize, pnn, "a node sent a packet to itself");
                            self.trace.push(packet.clone());
                            let ctx = self.env.ctx();
                            let node = &mut self.nodes[dest as usize];
                            if let Body::ReqControl(c) = &packet.body {
                                let status = update_record(&mut node.dbs, &ctx, &c.data);
                                let from = &mut self.nodes[pnn];
                                from.calls.on_control_reply(
                                    &mut from.dbs,
                                    &ctx,
                                    packet.reqid,
                                    status,
                                );
                            } else {
                                node.calls
                                    .on_node_packet(&mut node.dbs, &ctx, self.now, packet);
                            }
                        }
                        CallOutput::SetRecoveryModeActive => self.recovery_triggered = true,
                    }
                }
            }
            if !moved {
                return replies;
            }
        }
        panic!("packets still moving after 1000 rounds");
    }

    fn record(&mut self, pnn: u32, key: &[u8]) -> Option<(LtdbHeader, Vec<u8>)> {
        let db = self.nodes[pnn as usize].dbs.get_mut(self.db_id).unwrap();
        let value = db.store_mut().fetch(key).unwrap()?;
        let (header, _) = LtdbHeader::pull(&value).unwrap();
        Some((header, value[LTDB_HEADER_LEN..].to_vec()))
    }

    fn put(&mut self, pnn: u32, key: &[u8], header: LtdbHeader, data: &[u8]) {
        let db = self.nodes[pnn as usize].dbs.get_mut(self.db_id).unwrap();
        db.store_mut()
            .store(key, &[&header.to_bytes(), data])
            .unwrap();
    }

    fn lmaster(&self, key: &[u8]) -> u32 {
        lmaster_of(&self.env.ctx(), key)
    }
}

fn key_with_lmaster(c: &Cluster, lmaster: u32) -> Vec<u8> {
    (0u32..)
        .map(|i| format!("key{i}").into_bytes())
        .find(|k| c.lmaster(k) == lmaster)
        .unwrap()
}

#[test]
fn call_at_the_dmaster_runs_locally() {
    let mut c = Cluster::new(3, false);
    let key = key_with_lmaster(&c, 1);
    let replies = c.call(1, FETCH_WITH_HEADER_FUNC, &key);
    assert_eq!(replies.len(), 1);
    let (status, data) = &replies[0];
    assert_eq!(*status, 0);
    let (header, _) = LtdbHeader::pull(data).unwrap();
    assert_eq!(header.dmaster, 1);
    assert!(c.trace.is_empty(), "no packets expected: {:?}", c.trace);
    // The synthesized record was stored and the call's store bumped its RSN.
    let (stored, data) = c.record(1, &key).unwrap();
    assert_eq!(stored.dmaster, 1);
    assert!(stored.rsn >= 1);
    assert!(data.is_empty());
}

#[test]
fn record_migrates_from_lmaster_then_between_non_lmasters() {
    let mut c = Cluster::new(3, false);
    let key = key_with_lmaster(&c, 0);
    c.put(
        0,
        &key,
        LtdbHeader {
            rsn: 5,
            dmaster: 0,
            reserved1: 0,
            flags: 0,
        },
        b"value",
    );

    // Node 1 asks: lmaster 0 is dmaster and answers with REPLY_DMASTER.
    let replies = c.call(1, FETCH_FUNC, &key);
    assert_eq!(replies, vec![(0, b"value".to_vec())]);
    let ops: Vec<_> = c.trace.iter().map(|p| p.body.operation()).collect();
    assert_eq!(format!("{ops:?}"), "[ReqCall, ReplyDmaster]");
    let (h1, d1) = c.record(1, &key).unwrap();
    assert_eq!((h1.dmaster, d1.as_slice()), (1, &b"value"[..]));
    assert_eq!(c.record(0, &key).unwrap().0.dmaster, 1);
    assert!(h1.rsn > 5);

    // Node 2 asks the lmaster, is redirected to node 1, which hands over through node 0.
    c.trace.clear();
    let replies = c.call(2, FETCH_WITH_HEADER_FUNC, &key);
    assert_eq!(replies.len(), 1);
    let (header, data) = LtdbHeader::pull(&replies[0].1)
        .map(|(h, n)| (h, replies[0].1[n..].to_vec()))
        .unwrap();
    assert_eq!(header.dmaster, 2);
    assert_eq!(data, b"value");
    let ops: Vec<_> = c.trace.iter().map(|p| p.body.operation()).collect();
    assert_eq!(
        format!("{ops:?}"),
        "[ReqCall, ReqCall, ReqDmaster, ReplyDmaster]"
    );
    let Body::ReqCall(redirected) = &c.trace[1].body else {
        unreachable!()
    };
    assert_eq!(redirected.hopcount, 1);
    assert_eq!(
        c.trace[1].srcnode, 2,
        "a redirect keeps the original sender"
    );
    let Body::ReqDmaster(rd) = &c.trace[2].body else {
        unreachable!()
    };
    assert_eq!(
        rd.record_flags.unwrap() & REC_FLAG_MIGRATED_WITH_DATA,
        REC_FLAG_MIGRATED_WITH_DATA
    );
    for pnn in 0..3 {
        assert_eq!(c.record(pnn, &key).unwrap().0.dmaster, 2, "node {pnn}");
    }
    assert!(c.record(2, &key).unwrap().0.rsn > h1.rsn);
    assert!(c.trace.iter().all(|p| p.generation == GENERATION));
}

#[test]
fn random_call_sequences_keep_one_dmaster_and_the_data() {
    for seed in seeds(20) {
        let mut rng = Prng::new(seed);
        let mut c = Cluster::new(3, false);
        let key = rng.bytes(12);
        let lmaster = c.lmaster(&key);
        c.put(
            lmaster,
            &key,
            LtdbHeader {
                rsn: 1,
                dmaster: lmaster,
                reserved1: 0,
                flags: 0,
            },
            b"data",
        );
        let mut last_rsn = 0;
        for step in 0..10 {
            let pnn = u32::try_from(rng.below(3)).unwrap();
            let replies = c.call(pnn, FETCH_FUNC, &key);
            assert_eq!(
                replies,
                vec![(0, b"data".to_vec())],
                "seed {seed} step {step}"
            );
            let (header, data) = c.record(pnn, &key).unwrap();
            assert_eq!(header.dmaster, pnn, "seed {seed} step {step}");
            assert_eq!(data, b"data", "seed {seed} step {step}");
            assert_eq!(
                c.record(lmaster, &key).unwrap().0.dmaster,
                pnn,
                "seed {seed}"
            );
            assert!(
                header.rsn > last_rsn,
                "seed {seed} step {step}: RSN went back"
            );
            last_rsn = header.rsn;
            assert!(!c.recovery_triggered, "seed {seed}");
            assert!(c.nodes.iter().all(|n| n.calls.pending_count() == 0));
        }
    }
}

#[test]
fn unknown_database_gets_no_client_reply_but_a_node_error() {
    let mut c = Cluster::new(3, false);
    c.db_id = 0xdead_beef;
    assert!(c.call(0, NULL_FUNC, b"k").is_empty());
    assert!(c.trace.is_empty());
    let ctx = c.env.ctx();
    let node = &mut c.nodes[1];
    let packet = Packet {
        generation: GENERATION,
        destnode: 1,
        srcnode: 2,
        reqid: 44,
        body: Body::ReqCall(ReqCall {
            db_id: 0xdead_beef,
            key: b"k".to_vec(),
            ..ReqCall::default()
        }),
    };
    node.calls
        .on_node_packet(&mut node.dbs, &ctx, Instant::ZERO, packet);
    let Some(CallOutput::Node { pnn: 2, packet }) = node.calls.poll_output() else {
        panic!("expected a REPLY_ERROR to node 2");
    };
    assert_eq!(packet.reqid, 44);
    let Body::ReplyError(e) = packet.body else {
        panic!("not an error")
    };
    assert_eq!(e.status, -1);
    assert_eq!(e.msg, b"Unknown database in request. db_id==0xdeadbeef\0");
}

#[test]
fn packets_of_another_generation_are_dropped() {
    let mut c = Cluster::new(3, false);
    let key = key_with_lmaster(&c, 0);
    let db_id = c.db_id;
    let ctx = c.env.ctx();
    let node = &mut c.nodes[0];
    let packet = Packet {
        generation: GENERATION + 1,
        destnode: 0,
        srcnode: 1,
        reqid: 3,
        body: Body::ReqCall(ReqCall {
            db_id,
            key,
            ..ReqCall::default()
        }),
    };
    node.calls
        .on_node_packet(&mut node.dbs, &ctx, Instant::ZERO, packet);
    assert!(node.calls.poll_output().is_none());
}

#[test]
fn req_dmaster_from_a_node_that_is_not_dmaster_triggers_recovery() {
    let mut c = Cluster::new(3, false);
    let key = key_with_lmaster(&c, 0);
    c.put(
        0,
        &key,
        LtdbHeader {
            rsn: 3,
            dmaster: 1,
            reserved1: 0,
            flags: 0,
        },
        b"x",
    );
    let db_id = c.db_id;
    let ctx = c.env.ctx();
    let node = &mut c.nodes[0];
    let packet = Packet {
        generation: GENERATION,
        destnode: 0,
        srcnode: 2,
        reqid: 3,
        body: Body::ReqDmaster(ReqDmaster {
            db_id,
            rsn: 4,
            dmaster: 2,
            key,
            data: b"y".to_vec(),
            record_flags: Some(0),
        }),
    };
    node.calls
        .on_node_packet(&mut node.dbs, &ctx, Instant::ZERO, packet);
    assert_eq!(
        node.calls.poll_output(),
        Some(CallOutput::SetRecoveryModeActive)
    );
    assert!(node.calls.poll_output().is_none());
}

#[test]
fn empty_record_is_deleted_by_a_node_that_is_neither_lmaster_nor_dmaster() {
    let mut c = Cluster::new(3, false);
    let key = key_with_lmaster(&c, 0);
    c.put(
        1,
        &key,
        LtdbHeader {
            rsn: 3,
            dmaster: 1,
            reserved1: 0,
            flags: 0,
        },
        b"",
    );
    let ctx = c.env.ctx();
    let db = c.nodes[1].dbs.get_mut(c.db_id).unwrap();
    let mut header = LtdbHeader {
        rsn: 3,
        dmaster: 2,
        reserved1: 0,
        flags: 0,
    };
    ltdb_store(db, 1, &ctx, &key, &mut header, b"").unwrap();
    assert!(c.record(1, &key).is_none());
}

/// A persistent record buffer holding key `k` at `rsn` with `value`.
fn record_k(db_id: u32, rsn: u64, value: &[u8]) -> RecBuffer {
    let header = LtdbHeader {
        rsn,
        dmaster: 0,
        reserved1: 0,
        flags: 0,
    };
    let mut data = header.to_bytes();
    data.extend_from_slice(value);
    RecBuffer {
        db_id,
        records: vec![RecData {
            reqid: 0,
            key: b"k".to_vec(),
            data,
        }],
    }
}

impl Cluster {
    /// A local client's TRANS3_COMMIT of `buffer` at node `pnn`, to every node; the
    /// immediate reply, if any (the rest comes through [`Cluster::run`]).
    fn trans3_commit_from(&mut self, pnn: usize, buffer: &RecBuffer) -> Option<(i32, String)> {
        let control = ReqControl {
            opcode: ControlOpcode::Trans3Commit,
            srvid: u64::from(self.db_id),
            client_id: 1,
            flags: 0,
            data: buffer.to_bytes(),
        };
        let ctx = self.env.ctx();
        let targets: Vec<u32> = (0..self.nodes.len() as u32).collect();
        let node = &mut self.nodes[pnn];
        node.calls.trans3_commit(
            &mut node.dbs,
            &ctx,
            Instant::ZERO,
            CLIENT,
            77,
            &control,
            &targets,
            Duration::from_secs(60),
        )
    }
}

#[test]
fn trans3_commit_updates_every_node_and_refuses_older_rsns() {
    let mut c = Cluster::new(3, true);
    let immediate = c.trans3_commit_from(1, &record_k(c.db_id, 2, b"v"));
    assert_eq!(immediate, None);
    assert_eq!(c.run(), vec![(0, Vec::new())]);
    for pnn in 0..3 {
        let (header, data) = c.record(pnn, b"k").unwrap();
        assert_eq!((header.rsn, data.as_slice()), (2, &b"v"[..]), "node {pnn}");
    }
    // The same RSN with other data is refused.
    let stale = record_k(c.db_id, 2, b"other");
    assert_eq!(
        update_record(&mut c.nodes[0].dbs, &c.env.ctx(), &stale.to_bytes()),
        -1
    );
    assert_eq!(c.record(0, b"k").unwrap().1, b"v");
}

#[test]
fn trans3_commit_stores_the_local_copy_only_after_every_other_node() {
    let mut c = Cluster::new(3, true);
    // Node 2 already holds another value at the same RSN, so it refuses the update.
    let conflicting = record_k(c.db_id, 2, b"other");
    assert_eq!(
        update_record(&mut c.nodes[2].dbs, &c.env.ctx(), &conflicting.to_bytes()),
        0
    );
    let pending = c.trans3_commit_from(1, &record_k(c.db_id, 2, b"v"));
    assert_eq!(pending, None);
    assert!(c.record(1, b"k").is_none(), "stored before the others");
    assert_eq!(c.run(), Vec::new(), "no reply before the recovery");
    assert!(c.recovery_triggered);
    // Node 0 took it, node 2 refused: the committing node must not hold a commit that
    // failed, or it could later win a recovery tied on the sequence number.
    assert_eq!(c.record(0, b"k").unwrap().1, b"v");
    assert_eq!(c.record(2, b"k").unwrap().1, b"other");
    assert!(
        c.record(1, b"k").is_none(),
        "the failed commit is on the committer"
    );
}

#[test]
fn a_record_stays_until_the_client_it_came_for_changed_it_or_the_hold_ends() {
    let mut c = Cluster::new(3, false);
    for client_stores in [true, false] {
        let key = (0u32..)
            .map(|i| format!("hold{client_stores}{i}").into_bytes())
            .find(|k| c.lmaster(k) == 0)
            .unwrap();
        assert_eq!(c.call(1, NULL_FUNC, &key).len(), 1);
        let arrived = c.now;
        // Node 2 asks while node 1's client has not touched the record.
        assert!(c.call_now(2, NULL_FUNC, &key).is_empty());
        assert_eq!(c.record(1, &key).unwrap().0.dmaster, 1);
        if client_stores {
            let (header, _) = c.record(1, &key).unwrap();
            c.put(1, &key, header, b"changed");
            let replies = c.tick(arrived.saturating_add(CHAIN_RETRY));
            assert_eq!(replies.len(), 1, "a changed record goes on at the next try");
            assert_eq!(c.record(2, &key).unwrap().1, b"changed".to_vec());
        } else {
            assert!(c.tick(arrived.saturating_add(CHAIN_RETRY)).is_empty());
            let replies = c.tick(arrived.saturating_add(MIGRATION_HOLD));
            assert_eq!(replies.len(), 1, "the hold ends");
        }
        assert_eq!(c.record(2, &key).unwrap().0.dmaster, 2);
    }
}

#[test]
fn holds_that_ended_make_room_without_the_timer() {
    let mut c = Cluster::new(3, false);
    let keys: Vec<Vec<u8>> = (0u32..)
        .map(|i| format!("many{i}").into_bytes())
        .filter(|k| c.lmaster(k) == 0)
        .take(MAX_MIGRATION_HOLDS + 2)
        .collect();
    // Every migration to node 1 leaves a hold; no timer runs in between.
    for key in &keys[..=MAX_MIGRATION_HOLDS] {
        assert_eq!(c.call(1, NULL_FUNC, key).len(), 1);
    }
    let last = &keys[MAX_MIGRATION_HOLDS + 1];
    assert_eq!(c.call(1, NULL_FUNC, last).len(), 1);
    assert!(
        c.call_now(2, NULL_FUNC, last).is_empty(),
        "the newest record must still be held"
    );
}

/// Another process holding a chain lock of a real TDB file until dropped; it is the lock
/// helper body of the database tests (`server::database::tests::lock_child`).
struct ChainHolder {
    child: std::process::Child,
}

impl ChainHolder {
    fn start(path: &std::path::Path, flags: u32, key: &str) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "server::database::tests::lock_child",
                "--exact",
                "--nocapture",
            ])
            .env(
                "CTDB_RS_DB_TEST_CHILD",
                format!("{flags} hold {key} {}", path.display()),
            )
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        loop {
            let mut line = String::new();
            assert!(stdout.read_line(&mut line).unwrap() > 0, "holder died");
            if line.trim_end().ends_with("CHILD-READY") {
                break;
            }
        }
        ChainHolder { child }
    }
}

impl Drop for ChainHolder {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// One node (pnn 0) with a real TDB file, so that another process can hold a chain lock, and a
/// key whose lmaster it is.
struct LockFixture {
    dir: PathBuf,
    env: Env,
    dbs: DatabaseSet,
    db_id: u32,
    key: String,
}

impl LockFixture {
    fn new(name: &str, nodes: u32) -> Self {
        Self::on_node(name, 0, nodes)
    }

    /// The fixture as node `pnn`; its key is one whose lmaster is `pnn`.
    fn on_node(name: &str, pnn: u32, nodes: u32) -> Self {
        use crate::server::database::TdbBackend;
        let dir = std::env::temp_dir().join(format!("ctdb-rs-call-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["volatile", "persistent", "state"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let env = Env::new(nodes);
        let config = DbConfig {
            pnn,
            volatile_dir: dir.join("volatile"),
            persistent_dir: dir.join("persistent"),
            state_dir: dir.join("state"),
            tdb_mutexes: false,
        };
        let mut dbs = DatabaseSet::new(config, Box::new(TdbBackend)).unwrap();
        let req = DbRequest {
            opcode: ControlOpcode::DbAttach,
            srvid: 0,
            flags: 0,
            data: b"lock.tdb\0",
            srcnode: (pnn + 1) % nodes,
            client: None,
        };
        let outcome = dbs.handle_control(Instant::ZERO, &req, &env.ctx());
        let DbControlOutcome::Reply(reply) = outcome else {
            panic!("attach did not reply");
        };
        let db_id = u32::from_ne_bytes(reply.data.try_into().unwrap());
        let key = (0u32..)
            .map(|i| format!("key{i}"))
            .find(|k| lmaster_of(&env.ctx(), k.as_bytes()) == pnn)
            .unwrap();
        LockFixture {
            dir,
            env,
            dbs,
            db_id,
            key,
        }
    }

    fn hold_chain(&self) -> ChainHolder {
        self.hold_chain_of(&self.key)
    }

    fn hold_chain_of(&self, key: &str) -> ChainHolder {
        let db = self.dbs.get(self.db_id).unwrap();
        ChainHolder::start(db.path(), db.tdb_flags().bits(), key)
    }

    /// A migration request for the key from node `srcnode`.
    fn req_call(&self, srcnode: u32, reqid: u32) -> Packet {
        Packet {
            generation: GENERATION,
            destnode: 0,
            srcnode,
            reqid,
            body: Body::ReqCall(ReqCall {
                db_id: self.db_id,
                key: self.key.as_bytes().to_vec(),
                callid: NULL_FUNC,
                ..ReqCall::default()
            }),
        }
    }

    fn deliver(&mut self, calls: &mut CallService, now: Instant, packet: Packet) {
        calls.on_node_packet(&mut self.dbs, &self.env.ctx(), now, packet);
    }

    fn timeout(&mut self, calls: &mut CallService, now: Instant) {
        calls.handle_timeout(&mut self.dbs, &self.env.ctx(), now);
    }
}

impl Drop for LockFixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn request_for_a_chain_a_client_holds_is_retried_on_the_timer() {
    let mut f = LockFixture::new("lock", 2);
    let mut calls = CallService::new();
    let holder = f.hold_chain();
    f.deliver(&mut calls, Instant::ZERO, f.req_call(1, 5));
    assert!(calls.poll_output().is_none(), "must wait for the chain");
    let due = calls.poll_timeout().expect("a retry is scheduled");
    assert_eq!(due, Instant::ZERO.saturating_add(CHAIN_RETRY));
    f.timeout(&mut calls, due);
    assert!(calls.poll_output().is_none(), "chain still held");
    drop(holder);
    let due = calls.poll_timeout().expect("still scheduled");
    f.timeout(&mut calls, due);
    match calls.poll_output() {
        Some(CallOutput::Node { pnn: 1, packet }) => {
            assert!(matches!(packet.body, Body::ReplyDmaster(_)), "{packet:?}");
            assert_eq!(packet.reqid, 5);
        }
        other => panic!("expected REPLY_DMASTER to node 1, got {other:?}"),
    }
    assert_eq!(calls.poll_timeout(), None);
}

#[test]
fn a_request_for_a_record_waits_behind_older_requests_for_its_chain() {
    let mut f = LockFixture::new("lock-order", 3);
    let mut calls = CallService::new();
    let holder = f.hold_chain();
    f.deliver(&mut calls, Instant::ZERO, f.req_call(1, 5));
    assert!(calls.poll_output().is_none(), "must wait for the chain");
    drop(holder);
    // The chain is free now, but node 1 asked first: node 2 must not take the record.
    let later = Instant::ZERO.saturating_add(Duration::from_micros(100));
    f.deliver(&mut calls, later, f.req_call(2, 6));
    assert!(calls.poll_output().is_none(), "overtook the older request");
    let due = calls.poll_timeout().expect("both wait for the timer");
    f.timeout(&mut calls, due);
    let sent: Vec<(u32, u32, bool)> = std::iter::from_fn(|| calls.poll_output())
        .map(|out| match out {
            CallOutput::Node { pnn, packet } => (
                pnn,
                packet.reqid,
                matches!(packet.body, Body::ReplyDmaster(_)),
            ),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    // Node 1 gets the record; node 2's request follows it there (this node is the lmaster,
    // so it redirects to the dmaster it just recorded).
    assert_eq!(sent, vec![(1, 5, true), (1, 6, false)]);
    assert_eq!(calls.poll_timeout(), None);
}

#[path = "tests_readonly.rs"]
mod tests_readonly;

mod stats;

mod collapse;
