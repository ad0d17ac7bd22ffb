//! Stock `ctdb_recovery_helper` recovering databases held by a [`DatabaseSet`].
//!
//! A minimal single-node daemon stands in for ctdbd: it answers the handful of non-database
//! controls the helper sends (node map, tunables, capabilities, recovery mode, vnn map,
//! srvid registrations, start/end of recovery) and hands every database control and message
//! to the set, exactly as the real daemon will.

use super::*;
use crate::protocol::packet::{
    Body, FrameReader, Packet, Padding, ReplyControl, ReqControl, ReqMessage,
};
use crate::protocol::types::{capabilities, NodeAndFlags, NodeMap};
use crate::protocol::SockAddr;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::time::Duration;

const HELPER: &str = "/usr/libexec/ctdb/ctdb_recovery_helper";

struct MiniDaemon {
    dbs: DatabaseSet,
    tunables: Tunables,
    vnn_map: VnnMap,
    recovery_mode: u32,
    runstate: Runstate,
    registered: BTreeSet<u64>,
    /// Deferred database controls and the reqid to answer.
    deferred: BTreeMap<DeferredId, u32>,
    /// Opcodes the helper sent that this stand-in does not know.
    unknown: Vec<ControlOpcode>,
    opcodes_seen: Vec<ControlOpcode>,
    /// How many controls were answered later.
    deferred_replies: usize,
    out: Vec<u8>,
}

impl MiniDaemon {
    fn ctx(&self) -> DbContext<'_> {
        DbContext {
            recovery_mode: self.recovery_mode,
            runstate: self.runstate,
            own_flags: 0,
            vnn_map: &self.vnn_map,
            tunables: &self.tunables,
            healthy_nodes: 1,
            active_nodes: 1,
        }
    }

    fn send(&mut self, reqid: u32, body: Body) {
        let packet = Packet {
            generation: self.vnn_map.generation,
            destnode: 0,
            srcnode: 0,
            reqid,
            body,
        };
        self.out.extend_from_slice(&packet.encode(Padding::Daemon));
    }

    fn reply(&mut self, reqid: u32, reply: DbReply) {
        self.send(
            reqid,
            Body::ReplyControl(ReplyControl {
                status: reply.status,
                data: reply.data,
                errmsg: reply.error.unwrap_or_default().into_bytes(),
            }),
        );
    }

    /// A message for this node: the set's DB push first, then the client if it registered.
    fn deliver(&mut self, srvid: u64, data: Vec<u8>) {
        let ctx_vnn = self.vnn_map.clone();
        let tunables = self.tunables;
        let ctx = DbContext {
            recovery_mode: self.recovery_mode,
            runstate: self.runstate,
            own_flags: 0,
            vnn_map: &ctx_vnn,
            tunables: &tunables,
            healthy_nodes: 1,
            active_nodes: 1,
        };
        self.dbs.on_message(srvid, &data, &ctx);
        if self.registered.contains(&srvid) {
            self.send(0, Body::ReqMessage(ReqMessage { srvid, data }));
        }
    }

    fn drain_effects(&mut self) {
        while let Some(effect) = self.dbs.poll_effect() {
            match effect {
                DbEffect::SendMessage { pnn, srvid, data } => {
                    assert_eq!(pnn, 0, "single node");
                    self.deliver(srvid, data.payload().to_vec());
                }
                DbEffect::Complete { id, reply } => {
                    if let Some(reqid) = self.deferred.remove(&id) {
                        self.deferred_replies += 1;
                        self.reply(reqid, reply);
                    }
                }
                DbEffect::BroadcastControl { .. } | DbEffect::Thawed { .. } => {}
                other => panic!("unexpected effect {other:?}"),
            }
        }
    }

    fn control(&mut self, reqid: u32, c: ReqControl) {
        use ControlOpcode as Op;
        self.opcodes_seen.push(c.opcode);
        let vnn_map = self.vnn_map.clone();
        let tunables = self.tunables;
        let ctx = DbContext {
            vnn_map: &vnn_map,
            tunables: &tunables,
            ..self.ctx()
        };
        let req = DbRequest {
            opcode: c.opcode,
            srvid: c.srvid,
            flags: c.flags,
            data: &c.data,
            srcnode: 0,
            client: Some(1),
        };
        let outcome = self.dbs.handle_control(Instant::ZERO, &req, &ctx);
        self.drain_effects();
        let reply = match outcome {
            DbControlOutcome::Reply(reply) => reply,
            DbControlOutcome::Deferred(id) => {
                self.deferred.insert(id, reqid);
                return;
            }
            DbControlOutcome::NotMine => match c.opcode {
                Op::GetPnn => DbReply::status(0),
                Op::GetAllTunables => DbReply::data(self.tunables.to_bytes().to_vec()),
                Op::GetNodemap => DbReply::data(
                    NodeMap {
                        nodes: vec![NodeAndFlags {
                            pnn: 0,
                            flags: 0,
                            addr: SockAddr::new("127.0.0.1".parse().unwrap(), 4379),
                        }],
                    }
                    .to_bytes(),
                ),
                Op::GetCapabilities => DbReply::data(capabilities::DEFAULT.to_ne_bytes().to_vec()),
                Op::Getvnnmap => DbReply::data(self.vnn_map.to_bytes()),
                Op::Setvnnmap => {
                    self.vnn_map = VnnMap::from_bytes_exact(&c.data).unwrap();
                    DbReply::status(0)
                }
                Op::GetRecmode => DbReply::status(self.recovery_mode.cast_signed()),
                Op::SetRecmode => {
                    let mode = u32::from_ne_bytes(c.data[..4].try_into().unwrap());
                    if mode == RECOVERY_NORMAL && self.recovery_mode != RECOVERY_NORMAL {
                        if !self.dbs.generations_match(self.vnn_map.generation) {
                            self.reply(reqid, DbReply::status(-1));
                            return;
                        }
                        if self.dbs.all_frozen() {
                            self.dbs.thaw_all();
                        }
                        self.dbs.process_deferred_attaches(Instant::ZERO);
                    }
                    self.recovery_mode = mode;
                    DbReply::status(0)
                }
                Op::StartRecovery | Op::EndRecovery => DbReply::status(0),
                Op::RegisterSrvid => {
                    self.registered.insert(c.srvid);
                    DbReply::status(0)
                }
                Op::DeregisterSrvid => {
                    self.registered.remove(&c.srvid);
                    DbReply::status(0)
                }
                Op::GetRunstate => DbReply::data(u32::from(self.runstate).to_ne_bytes().to_vec()),
                other => {
                    self.unknown.push(other);
                    DbReply::status(-1)
                }
            },
        };
        self.drain_effects();
        self.reply(reqid, reply);
    }

    fn frame(&mut self, frame: &[u8]) {
        let packet = Packet::pull(frame).unwrap();
        match packet.body {
            Body::ReqControl(c) => self.control(packet.reqid, c),
            Body::ReqMessage(m) => self.deliver(m.srvid, m.data),
            other => panic!("unexpected packet {other:?}"),
        }
    }

    /// Serves one client connection until it closes or `child` exits.
    /// `lock_holder` (another process holding a chain lock) is let go after a few idle turns,
    /// so that a freeze has to wait for it.
    fn serve(
        &mut self,
        mut stream: UnixStream,
        child: &mut std::process::Child,
        mut lock_holder: Option<tests::ChainHolder>,
    ) {
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut reader = FrameReader::new(64 * 1024 * 1024);
        let mut buf = vec![0u8; 65536];
        let mut waiting_turns = 0;
        for turn in 0..1200u64 {
            // Simulated time: 50 ms per turn, enough for every freeze retry to be due.
            let now = Instant::from_millis(turn * 50);
            if !self.deferred.is_empty() {
                waiting_turns += 1;
                if waiting_turns == 5 {
                    // The freeze has been retried a few times in vain; let go.
                    drop(lock_holder.take());
                }
            }
            if let Some(due) = self.dbs.poll_timeout() {
                if now >= due {
                    let vnn_map = self.vnn_map.clone();
                    let tunables = self.tunables;
                    let ctx = DbContext {
                        vnn_map: &vnn_map,
                        tunables: &tunables,
                        ..self.ctx()
                    };
                    self.dbs.handle_timeout(now, &ctx);
                    self.drain_effects();
                    let out = std::mem::take(&mut self.out);
                    stream.write_all(&out).unwrap();
                }
            }
            match stream.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    reader.feed(&buf[..n]);
                    while let Some(frame) = reader.next_frame().unwrap() {
                        self.frame(&frame);
                    }
                    let out = std::mem::take(&mut self.out);
                    stream.write_all(&out).unwrap();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    if child.try_wait().unwrap().is_some() {
                        return;
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("the recovery helper did not finish within a minute");
    }
}

fn value(rsn: u64, dmaster: u32, flags: u32, data: &[u8]) -> Vec<u8> {
    let mut v = LtdbHeader {
        rsn,
        dmaster,
        reserved1: 0,
        flags,
    }
    .to_bytes();
    v.extend_from_slice(data);
    v
}

use crate::protocol::ltdb::{LtdbHeader, REC_FLAG_MIGRATED_WITH_DATA};

#[test]
fn stock_recovery_helper_recovers_our_databases() {
    stock_recovery(true);
}

/// Not frozen beforehand, and an smbd-like process holds a chain lock of the volatile database
/// for a while: the helper's DB_FREEZE waits for it.
#[test]
fn stock_recovery_helper_waits_for_a_freeze() {
    stock_recovery(false);
}

fn stock_recovery(prefrozen: bool) {
    if !Path::new(HELPER).exists() {
        eprintln!("{HELPER} not installed: skipped");
        return;
    }
    let tmp = tests::TempDir::new(&format!("stockrh-{prefrozen}"));
    let dir = tmp.0.clone();
    let config = tmp.config(0);
    let mut daemon = MiniDaemon {
        dbs: DatabaseSet::new(config, Box::new(TdbBackend)).unwrap(),
        tunables: Tunables::default(),
        vnn_map: VnnMap {
            generation: crate::protocol::header::INVALID_GENERATION,
            map: vec![0],
        },
        recovery_mode: RECOVERY_ACTIVE,
        runstate: Runstate::FirstRecovery,
        registered: BTreeSet::new(),
        deferred: BTreeMap::new(),
        unknown: Vec::new(),
        opcodes_seen: Vec::new(),
        deferred_replies: 0,
        out: Vec::new(),
    };

    // Three databases as a previous life of this node left them.
    let ctx_vnn = daemon.vnn_map.clone();
    let tunables = daemon.tunables;
    let ctx = DbContext {
        recovery_mode: RECOVERY_ACTIVE,
        runstate: Runstate::FirstRecovery,
        own_flags: 0,
        vnn_map: &ctx_vnn,
        tunables: &tunables,
        healthy_nodes: 1,
        active_nodes: 1,
    };
    daemon.dbs.local_attach("locking.tdb", 0, &ctx).unwrap();
    daemon
        .dbs
        .local_attach("secrets.tdb", db_flags::PERSISTENT, &ctx)
        .unwrap();
    daemon
        .dbs
        .local_attach("repl.tdb", db_flags::REPLICATED, &ctx)
        .unwrap();
    let fill = |dbs: &mut DatabaseSet, name: &str, records: &[(&[u8], Vec<u8>)]| {
        let db_id = crate::protocol::hash::db_id(name);
        let store = dbs.get_mut(db_id).unwrap().store_mut();
        for (key, value) in records {
            store.store(key, &[value]).unwrap();
        }
    };
    fill(
        &mut daemon.dbs,
        "locking.tdb",
        &[
            (b"open-file", value(4, 0, 0, b"share-mode")),
            (b"remote-copy", value(7, 3, 0, b"from node 3")),
            (b"empty", value(2, 0, 0, b"")),
        ],
    );
    fill(
        &mut daemon.dbs,
        "secrets.tdb",
        &[
            (DB_SEQNUM_KEY, value(1, 0, 0, &5u64.to_ne_bytes())),
            (b"SECRETS/MACHINE_PASSWORD", value(1, 0, 0, b"pw")),
        ],
    );
    fill(&mut daemon.dbs, "repl.tdb", &[(b"r", value(1, 0, 0, b"x"))]);
    let mut lock_holder = None;
    if prefrozen {
        // As at start-up.
        daemon.dbs.freeze_all_blocking().unwrap();
    } else {
        let db = daemon
            .dbs
            .get(crate::protocol::hash::db_id("locking.tdb"))
            .unwrap();
        lock_holder = Some(tests::ChainHolder::start(
            db.path(),
            db.tdb_flags().bits(),
            "open-file",
        ));
    }

    let socket = dir.join("ctdbd.socket");
    let listener = UnixListener::bind(&socket).unwrap();
    // ctdbd exports these for its helpers; without them the helper refuses to start.
    let log = dir.join("helper.log");
    let mut child = Command::new(HELPER)
        .env("CTDB_LOGGING", format!("file:{}", log.display()))
        .env("CTDB_DEBUGLEVEL", "INFO")
        .arg("1")
        .arg(&socket)
        .arg("0x4242")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut stream = None;
    for _ in 0..200 {
        match listener.accept() {
            Ok((s, _)) => {
                stream = Some(s);
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(25)),
        }
    }
    let Some(stream) = stream else {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "the helper never connected: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    stream.set_nonblocking(false).unwrap();
    daemon.serve(stream, &mut child, lock_holder);
    let out = child.wait_with_output().unwrap();
    let stderr = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        out.status.success(),
        "helper failed: {}\n{stderr}",
        out.status
    );
    assert_eq!(out.stdout, 0i32.to_ne_bytes(), "{stderr}");
    assert!(daemon.unknown.is_empty(), "{:?}", daemon.unknown);
    // Without the start-up freeze the helper's DB_FREEZEs lock the databases; the one held by
    // the other process answers only after the retries got the lock.
    assert_eq!(daemon.deferred_replies, usize::from(!prefrozen));
    for op in [
        ControlOpcode::DbFreeze,
        ControlOpcode::DbTransactionStart,
        ControlOpcode::GetDbSeqnum,
        ControlOpcode::DbPull,
        ControlOpcode::WipeDatabase,
        ControlOpcode::DbPushStart,
        ControlOpcode::DbPushConfirm,
        ControlOpcode::DbTransactionCommit,
        ControlOpcode::DbThaw,
    ] {
        assert!(daemon.opcodes_seen.contains(&op), "{op:?} not used");
    }

    // Back to normal: every database at the new generation and thawed.
    assert_eq!(daemon.recovery_mode, RECOVERY_NORMAL);
    assert_eq!(daemon.vnn_map.generation, 0x4242);
    for db in daemon.dbs.databases() {
        assert_eq!(db.generation(), 0x4242, "{}", db.name());
        assert_eq!(db.freeze_mode(), FreezeMode::None, "{}", db.name());
    }
    let dump = |name: &str| {
        let db = daemon.dbs.get(crate::protocol::hash::db_id(name)).unwrap();
        tests::tdbdump(db.path())
    };
    // Volatile: the leader (this node) becomes dmaster with MIGRATED_WITH_DATA, and the
    // store bumps the RSN; header-only records are not pushed back.
    let mwd = REC_FLAG_MIGRATED_WITH_DATA;
    assert_eq!(
        dump("locking.tdb"),
        vec![
            (b"open-file".to_vec(), value(5, 0, mwd, b"share-mode")),
            (b"remote-copy".to_vec(), value(8, 0, mwd, b"from node 3")),
        ]
    );
    // Persistent: the content of the node with the highest seqnum, unchanged.
    assert_eq!(
        dump("secrets.tdb"),
        vec![
            (b"SECRETS/MACHINE_PASSWORD".to_vec(), value(1, 0, 0, b"pw")),
            (DB_SEQNUM_KEY.to_vec(), value(1, 0, 0, &5u64.to_ne_bytes())),
        ]
    );
    // Replicated: pulled like a persistent database but pushed like a volatile one (leader as
    // dmaster, MIGRATED_WITH_DATA), and stored without the volatile RSN bump.
    assert_eq!(
        dump("repl.tdb"),
        vec![(b"r".to_vec(), value(1, 0, mwd, b"x"))]
    );
    drop(daemon);
}
