//! Unit tests of the daemon core, driven through its inputs with a table-backed host.

use super::*;
use crate::protocol::header::BROADCAST_CONNECTED;
use crate::protocol::types::{IfaceList, PublicIpList};

struct FakeHost {
    live_pids: Vec<i32>,
}

impl Host for FakeHost {
    fn process_exists(&self, pid: i32) -> bool {
        self.live_pids.contains(&pid)
    }
    fn wall_clock(&self) -> Timeval {
        Timeval {
            tv_sec: 1_700_000_000,
            tv_usec: 0,
        }
    }
    fn read_nodes_file(&self) -> Result<Vec<NodeAndFlags>, String> {
        Ok(three_nodes())
    }
}

const HOST: FakeHost = FakeHost {
    live_pids: Vec::new(),
};

fn three_nodes() -> Vec<NodeAndFlags> {
    (0..3)
        .map(|pnn| NodeAndFlags {
            pnn,
            flags: 0,
            addr: SockAddr::new(format!("127.0.0.{}", pnn + 1).parse().unwrap(), 4379),
        })
        .collect()
}

fn config(pnn: Pnn) -> DaemonConfig {
    DaemonConfig {
        pnn,
        nodes: three_nodes(),
        public_addresses: vec![
            PublicAddress {
                addr: SockAddr::new("10.0.0.1".parse().unwrap(), 0),
                mask_bits: 24,
                ifaces: vec!["eth0".into()],
            },
            PublicAddress {
                addr: SockAddr::new("10.0.0.2".parse().unwrap(), 0),
                mask_bits: 24,
                ifaces: vec!["eth1".into(), "eth0".into()],
            },
        ],
        tunables: Tunables::default(),
        cluster_lock: Some("/shared/lock".into()),
        capabilities: CAP_DEFAULT,
        log_level: 3,
        pid: 4242,
        start_time: Timeval {
            tv_sec: 1_699_999_000,
            tv_usec: 5,
        },
        start_as_stopped: false,
        start_as_disabled: false,
        test_mode: true,
        failover: FailoverConfig::detached(),
    }
}

/// A core over in-memory databases.
fn new_daemon(pnn: Pnn, now: Instant) -> Daemon {
    let dbs = DatabaseSet::new(
        crate::server::database::DbConfig {
            pnn,
            volatile_dir: "/v".into(),
            persistent_dir: "/p".into(),
            state_dir: "/s".into(),
            tdb_mutexes: false,
        },
        Box::new(crate::server::database::MemoryBackend::new()),
    )
    .unwrap();
    Daemon::new(config(pnn), dbs, now, &HOST).unwrap()
}

fn drain(d: &mut Daemon) -> Vec<Effect> {
    std::iter::from_fn(|| d.poll_effect()).collect()
}

/// A daemon that has run init and setup successfully.
fn started(pnn: Pnn) -> Daemon {
    let now = Instant::ZERO;
    let mut d = new_daemon(pnn, now);
    for _ in 0..2 {
        let id = drain(&mut d)
            .into_iter()
            .find_map(|e| match e {
                Effect::RunEvent { id, .. } => Some(id),
                _ => None,
            })
            .expect("an event run");
        d.on_event_done(now, EventOutcome { id, result: 0 });
    }
    drain(&mut d);
    d
}

fn control(opcode: ControlOpcode, destnode: u32, reqid: u32, data: Vec<u8>) -> Vec<u8> {
    Packet {
        generation: 0,
        destnode,
        srcnode: 0,
        reqid,
        body: Body::ReqControl(ReqControl {
            opcode,
            srvid: 0,
            client_id: 0,
            flags: 0,
            data,
        }),
    }
    .encode(Padding::Exact)
}

fn client_replies(effects: &[Effect], to: ClientId) -> Vec<(u32, ReplyControl)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::SendClient { client, frame } if *client == to => {
                let p = Packet::pull(frame).unwrap();
                match p.body {
                    Body::ReplyControl(r) => Some((p.reqid, r)),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

fn node_frames(effects: &[Effect], to: Pnn) -> Vec<Packet> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::SendNode { pnn, frame } if *pnn == to => {
                assert_eq!(frame.len() % 8, 0, "node frames are padded to 8");
                Some(Packet::pull(frame).unwrap())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn start_up_runs_init_then_setup_and_waits_for_first_recovery() {
    let now = Instant::ZERO;
    let mut d = new_daemon(1, now);
    let effects = drain(&mut d);
    let Some(Effect::RunEvent { id, event, .. }) = effects.first().cloned() else {
        panic!("init first: {effects:?}");
    };
    assert_eq!(event, "init");
    assert_eq!(d.runstate(), Runstate::Init);
    d.on_event_done(now, EventOutcome { id, result: 0 });
    let effects = drain(&mut d);
    assert_eq!(effects[0], Effect::StartTransport);
    assert!(matches!(&effects[1], Effect::RunEvent { event, .. } if event == "setup"));
    assert_eq!(d.runstate(), Runstate::Setup);
    let d = started(1);
    assert_eq!(d.runstate(), Runstate::FirstRecovery);
    assert_eq!(d.node_flags(1), Some(NODE_FLAGS_UNHEALTHY));
    assert_eq!(
        d.node_flags(0),
        Some(NODE_FLAGS_UNHEALTHY | NODE_FLAGS_DISCONNECTED)
    );
}

#[test]
fn failed_init_exits_with_an_error() {
    let mut d = new_daemon(0, Instant::ZERO);
    let Some(Effect::RunEvent { id, .. }) = d.poll_effect() else {
        panic!()
    };
    d.on_event_done(Instant::ZERO, EventOutcome { id, result: 8 });
    assert_eq!(drain(&mut d), vec![Effect::Exit { code: 1 }]);
}

#[test]
fn local_controls_answer_like_stock() {
    let mut d = started(2);
    let now = Instant::from_secs(1);
    d.on_client_connected(now, 7, 999);
    d.on_client_frame(
        now,
        7,
        &control(ControlOpcode::GetPnn, CURRENT_NODE, 0x65, vec![]),
        &HOST,
    );
    d.on_client_frame(
        now,
        7,
        &control(ControlOpcode::GetPid, 2, 0x66, vec![]),
        &HOST,
    );
    d.on_client_frame(
        now,
        7,
        &control(ControlOpcode::Ping, 2, 0x67, vec![]),
        &HOST,
    );
    d.on_client_frame(
        now,
        7,
        &control(ControlOpcode::Unknown(999), 2, 0x68, vec![]),
        &HOST,
    );
    d.on_client_frame(
        now,
        7,
        &control(ControlOpcode::GetNodemapV4, 2, 0x69, vec![]),
        &HOST,
    );
    d.on_client_frame(
        now,
        7,
        &control(ControlOpcode::GetRecmode, 2, 0x6a, vec![]),
        &HOST,
    );
    let effects = drain(&mut d);
    for e in &effects {
        if let Effect::SendClient { frame, .. } = e {
            assert_eq!(
                frame.len(),
                48,
                "data-less replies are 48 bytes like stock's"
            );
        }
    }
    let replies = client_replies(&effects, 7);
    let statuses: Vec<(u32, i32)> = replies.iter().map(|(id, r)| (*id, r.status)).collect();
    assert_eq!(
        statuses,
        vec![
            (0x65, 2),
            (0x66, 4242),
            (0x67, 1),
            (0x68, -1),
            (0x69, -1),
            (0x6a, 1)
        ]
    );
    assert!(replies
        .iter()
        .all(|(_, r)| r.data.is_empty() && r.errmsg.is_empty()));
}

#[test]
fn payload_controls_encode_stock_layouts() {
    let mut d = started(0);
    let now = Instant::from_secs(1);
    d.on_client_connected(now, 1, 10);
    let get = |d: &mut Daemon, op, data: Vec<u8>| {
        d.on_client_frame(now, 1, &control(op, 0, 1, data), &HOST);
        let effects = drain(d);
        client_replies(&effects, 1).pop().unwrap().1
    };
    let nodemap = get(&mut d, ControlOpcode::GetNodemap, vec![]);
    assert_eq!(nodemap.data.len(), 4 + 3 * 36);
    let ips = get(&mut d, ControlOpcode::GetPublicIps, vec![]);
    let list = PublicIpList::from_bytes_exact(&ips.data).unwrap();
    let addrs: Vec<String> = list.ips.iter().map(|ip| ip.addr.to_string()).collect();
    assert_eq!(addrs, vec!["10.0.0.2", "10.0.0.1"], "reverse file order");
    assert!(list.ips.iter().all(|ip| ip.pnn == u32::MAX));
    let ifaces =
        IfaceList::from_bytes_exact(&get(&mut d, ControlOpcode::GetIfaces, vec![]).data).unwrap();
    let names: Vec<&str> = ifaces.ifaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, vec!["eth1", "eth0"]);
    let reclock = get(&mut d, ControlOpcode::GetReclockFile, vec![]);
    assert_eq!(reclock.data, b"/shared/lock\0");
    let caps = get(&mut d, ControlOpcode::GetCapabilities, vec![]);
    assert_eq!(caps.data, 0x0003_0003u32.to_ne_bytes());
    let tunables = get(&mut d, ControlOpcode::GetAllTunables, vec![]);
    assert_eq!(tunables.data.len(), 248);
    let stats = get(&mut d, ControlOpcode::Statistics, vec![]);
    assert_eq!(stats.data.len(), 488);
    let uptime = get(&mut d, ControlOpcode::Uptime, vec![]);
    assert_eq!(uptime.data.len(), 64);
    let vnnmap = get(&mut d, ControlOpcode::Getvnnmap, vec![]);
    assert_eq!(
        vnnmap.data,
        [1u32, 3, 0, 1, 2]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect::<Vec<_>>()
    );
}

#[test]
fn tunable_controls_follow_stock_status_conventions() {
    let mut d = started(0);
    let now = Instant::from_secs(1);
    d.on_client_connected(now, 1, 10);
    let name = |s: &str| {
        let mut v = (s.len() as u32 + 1).to_ne_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        v
    };
    let set = |value: u32, s: &str| {
        let mut v = value.to_ne_bytes().to_vec();
        v.extend(name(s));
        v
    };
    d.on_client_frame(
        now,
        1,
        &control(ControlOpcode::GetTunable, 0, 1, name("recovertimeout")),
        &HOST,
    );
    d.on_client_frame(
        now,
        1,
        &control(ControlOpcode::GetTunable, 0, 2, name("bogus")),
        &HOST,
    );
    d.on_client_frame(
        now,
        1,
        &control(ControlOpcode::SetTunable, 0, 3, set(7, "RecoverTimeout")),
        &HOST,
    );
    d.on_client_frame(
        now,
        1,
        &control(ControlOpcode::SetTunable, 0, 4, set(1, "VacuumLimit")),
        &HOST,
    );
    d.on_client_frame(
        now,
        1,
        &control(ControlOpcode::SetTunable, 0, 5, set(1, "bogus")),
        &HOST,
    );
    d.on_client_frame(
        now,
        1,
        &control(ControlOpcode::GetTunable, 0, 6, name("RecoverTimeout")),
        &HOST,
    );
    d.on_client_frame(
        now,
        1,
        &control(ControlOpcode::ListTunables, 0, 7, vec![]),
        &HOST,
    );
    let replies = client_replies(&drain(&mut d), 1);
    assert_eq!(replies[0].1.data, 30u32.to_ne_bytes());
    assert_eq!(replies[1].1.status, -22);
    assert_eq!(replies[2].1.status, 0);
    assert_eq!(replies[3].1.status, 1, "obsolete tunables answer 1");
    assert_eq!(replies[4].1.status, -1);
    assert_eq!(replies[5].1.data, 7u32.to_ne_bytes());
    let list = &replies[6].1.data;
    assert!(list[4..].starts_with(b":SeqnumInterval:ControlTimeout:"));
    assert_eq!(
        u32::from_ne_bytes(list[..4].try_into().unwrap()) as usize,
        list.len() - 4
    );
}

#[test]
fn remote_controls_are_forwarded_and_answered_with_the_clients_reqid() {
    let mut d = started(0);
    let now = Instant::from_secs(1);
    d.on_node_connected(now, 1);
    d.on_client_connected(now, 5, 10);
    d.on_client_frame(
        now,
        5,
        &control(ControlOpcode::GetPid, 1, 0x77, vec![]),
        &HOST,
    );
    let effects = drain(&mut d);
    let sent = node_frames(&effects, 1);
    assert_eq!(sent.len(), 1);
    let Body::ReqControl(c) = &sent[0].body else {
        panic!()
    };
    assert_eq!(c.client_id, 5, "the daemon stamps the client id");
    assert_eq!(sent[0].srcnode, 0);
    let reply = Packet {
        generation: 1,
        destnode: 0,
        srcnode: 1,
        reqid: sent[0].reqid,
        body: Body::ReplyControl(ReplyControl {
            status: 555,
            data: vec![],
            errmsg: vec![],
        }),
    };
    d.on_node_frame(now, 1, &reply.encode(Padding::Daemon), &HOST);
    let replies = client_replies(&drain(&mut d), 5);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0, 0x77);
    assert_eq!(replies[0].1.status, 555);
}

#[test]
fn controls_to_dead_nodes_fail_now_and_pending_ones_fail_when_the_node_dies() {
    let mut d = started(0);
    let now = Instant::from_secs(1);
    d.on_client_connected(now, 5, 10);
    d.on_client_frame(now, 5, &control(ControlOpcode::GetPid, 2, 1, vec![]), &HOST);
    let replies = client_replies(&drain(&mut d), 5);
    assert_eq!(replies[0].1.status, -1);
    assert_eq!(replies[0].1.errmsg, b"ctdb_control to disconnected node");

    d.on_node_connected(now, 2);
    d.on_client_frame(now, 5, &control(ControlOpcode::GetPid, 2, 2, vec![]), &HOST);
    drain(&mut d);
    d.on_node_disconnected(now, 2);
    let replies = client_replies(&drain(&mut d), 5);
    assert_eq!(replies[0].0, 2);
    assert_eq!(replies[0].1.errmsg, b"node is disconnected");
    assert_eq!(
        d.node_flags(2),
        Some(NODE_FLAGS_DISCONNECTED | NODE_FLAGS_UNHEALTHY)
    );
}

#[test]
fn forwarded_controls_time_out() {
    let mut d = started(0);
    let now = Instant::from_secs(1);
    d.on_node_connected(now, 1);
    d.on_client_connected(now, 5, 10);
    d.on_client_frame(now, 5, &control(ControlOpcode::GetPid, 1, 9, vec![]), &HOST);
    drain(&mut d);
    let later = Instant::from_secs(62);
    assert!(d.poll_timeout().unwrap() <= later);
    d.handle_timeout(later);
    let replies = client_replies(&drain(&mut d), 5);
    assert!(replies
        .iter()
        .any(|(id, r)| *id == 9 && r.errmsg == b"ctdb_control timed out"));
}

#[test]
fn keepalives_are_sent_and_silent_nodes_are_declared_dead() {
    let mut d = started(0);
    d.on_node_connected(Instant::ZERO, 1);
    let mut t = Instant::ZERO;
    let mut reset = false;
    while t < Instant::from_secs(31) {
        t = d.poll_timeout().unwrap().max(t);
        d.handle_timeout(t);
        let effects = drain(&mut d);
        for p in node_frames(&effects, 1) {
            let Body::ReqKeepalive(k) = p.body else {
                continue;
            };
            assert_eq!(k.version, Some(KEEPALIVE_VERSION));
        }
        reset |= effects.contains(&Effect::ResetNode { pnn: 1 });
    }
    assert!(reset, "five silent intervals kill the link");
    assert_eq!(
        d.node_flags(1).unwrap() & NODE_FLAGS_DISCONNECTED,
        NODE_FLAGS_DISCONNECTED
    );
}

#[test]
fn a_newer_peer_version_shuts_down_the_younger_node() {
    let mut d = started(0);
    d.on_node_connected(Instant::ZERO, 1);
    let keepalive = |version| Packet {
        generation: 1,
        destnode: 0,
        srcnode: 1,
        reqid: 0,
        body: Body::ReqKeepalive(ReqKeepalive {
            version: Some(version),
            uptime: Some(100),
        }),
    };
    d.on_node_frame(
        Instant::from_secs(1),
        1,
        &keepalive(KEEPALIVE_VERSION).encode(Padding::Daemon),
        &HOST,
    );
    assert!(drain(&mut d).is_empty());
    d.on_node_frame(
        Instant::from_secs(1),
        1,
        &keepalive(0x0004_0012).encode(Padding::Daemon),
        &HOST,
    );
    let effects = drain(&mut d);
    assert!(
        effects.contains(&Effect::StopRecoverd),
        "the recovery daemon is stopped first"
    );
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::RunEvent { event, .. } if event == "shutdown")));
    assert_eq!(d.runstate(), Runstate::Shutdown);
}

#[test]
fn messages_reach_local_registrations_and_broadcasts_include_self() {
    let mut d = started(0);
    let now = Instant::ZERO;
    d.on_node_connected(now, 1);
    d.on_client_connected(now, 1, 10);
    d.on_client_connected(now, 2, 11);
    let register = |srvid| {
        Packet {
            generation: 0,
            destnode: CURRENT_NODE,
            srcnode: 0,
            reqid: 3,
            body: Body::ReqControl(ReqControl {
                opcode: ControlOpcode::RegisterSrvid,
                srvid,
                client_id: 0,
                flags: 0,
                data: vec![],
            }),
        }
        .encode(Padding::Exact)
    };
    d.on_client_frame(now, 2, &register(0xF101_0000_0000_0000), &HOST);
    drain(&mut d);
    let msg = Packet {
        generation: 0,
        destnode: BROADCAST_CONNECTED,
        srcnode: 0,
        reqid: 0,
        body: Body::ReqMessage(ReqMessage {
            srvid: 0xF101_0000_0000_0000,
            data: vec![1, 0, 0, 0],
        }),
    };
    d.on_client_frame(now, 1, &msg.encode(Padding::Align8), &HOST);
    let effects = drain(&mut d);
    assert_eq!(
        node_frames(&effects, 1).len(),
        1,
        "sent to the connected peer"
    );
    let delivered: Vec<&Effect> = effects
        .iter()
        .filter(|e| matches!(e, Effect::SendClient { client: 2, .. }))
        .collect();
    assert_eq!(delivered.len(), 1, "and delivered locally");
    let Effect::SendClient { frame, .. } = delivered[0] else {
        unreachable!()
    };
    let p = Packet::pull(frame).unwrap();
    assert_eq!((p.srcnode, p.destnode, p.reqid), (0, 0, 0));
    d.on_client_closed(now, 2);
    d.on_client_frame(now, 1, &msg.encode(Padding::Align8), &HOST);
    assert!(drain(&mut d)
        .iter()
        .all(|e| !matches!(e, Effect::SendClient { client: 2, .. })));
}

#[test]
fn process_exists_requires_a_live_connected_client() {
    let host = FakeHost {
        live_pids: vec![10],
    };
    let mut d = started(0);
    let now = Instant::ZERO;
    d.on_client_connected(now, 1, 10);
    for (reqid, pid) in [(1u32, 10u32), (2, 11)] {
        d.on_client_frame(
            now,
            1,
            &control(
                ControlOpcode::ProcessExists,
                0,
                reqid,
                pid.to_ne_bytes().to_vec(),
            ),
            &host,
        );
    }
    let replies = client_replies(&drain(&mut d), 1);
    assert_eq!(replies[0].1.status, 0);
    assert_eq!(replies[1].1.status, -1);
}

#[test]
fn monitoring_starts_after_startup_and_tracks_health() {
    let mut d = started(0);
    // The recovery daemon will drive this; here the runstate path is exercised directly.
    d.set_runstate(Runstate::Startup);
    d.recovery_mode = RECOVERY_NORMAL;
    d.startup_due = Some(Instant::ZERO);
    d.handle_timeout(Instant::ZERO);
    let id = drain(&mut d)
        .into_iter()
        .find_map(|e| match e {
            Effect::RunEvent { id, event, .. } if event == "startup" => Some(id),
            _ => None,
        })
        .unwrap();
    d.on_event_done(Instant::ZERO, EventOutcome { id, result: 0 });
    assert_eq!(d.runstate(), Runstate::Running);
    let mut t = Instant::ZERO;
    for (result, healthy) in [(0, true), (8, false), (125, false), (0, true)] {
        let due = d.monitor.due.expect("a monitor is scheduled");
        t = due.max(t);
        d.handle_timeout(t);
        let id = drain(&mut d)
            .into_iter()
            .find_map(|e| match e {
                Effect::RunEvent { id, event, .. } if event == "monitor" => Some(id),
                _ => None,
            })
            .expect("monitor runs");
        d.on_event_done(t, EventOutcome { id, result });
        assert_eq!(
            d.node_flags(0).unwrap() & NODE_FLAGS_UNHEALTHY == 0,
            healthy,
            "after result {result}"
        );
    }
}

mod notify;

#[test]
fn a_client_setting_recovery_mode_active_wakes_the_local_recovery_daemon() {
    let mut d = started(0);
    let now = Instant::ZERO;
    d.on_client_connected(now, 1, 10);
    d.on_client_connected(now, 2, 11);
    let register = control(ControlOpcode::RegisterSrvid, CURRENT_NODE, 1, vec![]);
    let mut register = Packet::pull(&register).unwrap();
    if let Body::ReqControl(c) = &mut register.body {
        c.srvid = crate::protocol::srvid::CTDB_RS_RECMODE_ACTIVE;
    }
    d.on_client_frame(now, 2, &register.encode(Padding::Exact), &HOST);
    drain(&mut d);
    let set_recmode = |mode: u32, reqid| {
        control(
            ControlOpcode::SetRecmode,
            CURRENT_NODE,
            reqid,
            mode.to_ne_bytes().to_vec(),
        )
    };
    let woken = |effects: &[Effect]| {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::SendClient { client: 2, frame } => Packet::pull(frame).ok(),
                _ => None,
            })
            .filter(|p| {
                matches!(&p.body, Body::ReqMessage(m) if m.srvid == crate::protocol::srvid::CTDB_RS_RECMODE_ACTIVE)
            })
            .count()
    };
    // Start-up leaves the node in recovery; NORMAL needs the cluster lock test.
    d.on_client_frame(now, 1, &set_recmode(RECOVERY_NORMAL, 2), &HOST);
    let effects = drain(&mut d);
    assert_eq!(woken(&effects), 0);
    if let Some(token) = effects.iter().find_map(|e| match e {
        Effect::TestClusterLock { token, .. } => Some(*token),
        _ => None,
    }) {
        d.on_cluster_lock_test(now, token, b'1', 0.0);
    }
    let effects = drain(&mut d);
    assert_eq!(d.recovery_mode, RECOVERY_NORMAL, "{effects:?}");
    d.on_client_frame(now, 1, &set_recmode(RECOVERY_ACTIVE, 3), &HOST);
    let effects = drain(&mut d);
    assert_eq!(client_replies(&effects, 1)[0].1.status, 0);
    assert_eq!(woken(&effects), 1);
    // Already ACTIVE: nothing changes, nobody is woken.
    d.on_client_frame(now, 1, &set_recmode(RECOVERY_ACTIVE, 4), &HOST);
    assert_eq!(woken(&drain(&mut d)), 0);
}

/// DB push buffers arrive from another node and from a local client (the recovery helper on
/// this node); both are stored, a client registered for the same srvid still gets them, and a
/// message for another srvid is not taken by the push.
#[test]
fn db_push_buffers_from_nodes_and_clients_are_stored() {
    use crate::protocol::ltdb::LtdbHeader;
    use crate::protocol::types::{PulldbExt, RecBuffer, RecData, Transdb};
    const PUSH_SRVID: u64 = 0xF600_0000_0000_0007;
    let mut d = started(0);
    let now = Instant::ZERO;
    d.on_node_connected(now, 1);
    d.on_client_connected(now, 1, 10);
    d.on_client_connected(now, 2, 11);
    let mut reqid = 100;
    let mut call = |d: &mut Daemon, opcode, data: Vec<u8>| {
        reqid += 1;
        d.on_client_frame(now, 1, &control(opcode, CURRENT_NODE, reqid, data), &HOST);
        let replies = client_replies(&drain(d), 1);
        assert_eq!(replies.len(), 1, "{opcode:?}");
        assert_eq!(replies[0].1.status, 0, "{opcode:?}");
        replies[0].1.data.clone()
    };
    let mut name = b"push.tdb".to_vec();
    name.push(0);
    // The recovery helper's attach, allowed while the node recovers.
    let mut attach =
        Packet::pull(&control(ControlOpcode::DbAttach, CURRENT_NODE, 2, name)).unwrap();
    if let Body::ReqControl(c) = &mut attach.body {
        c.flags = crate::protocol::control::CTRL_FLAG_ATTACH_RECOVERY;
    }
    d.on_client_frame(now, 1, &attach.encode(Padding::Exact), &HOST);
    let replies = client_replies(&drain(&mut d), 1);
    assert_eq!(replies[0].1.status, 0);
    let db_id = u32::from_ne_bytes(replies[0].1.data[..4].try_into().unwrap());
    call(
        &mut d,
        ControlOpcode::DbFreeze,
        db_id.to_ne_bytes().to_vec(),
    );
    let transdb = Transdb { db_id, tid: 9 }.to_bytes();
    call(&mut d, ControlOpcode::DbTransactionStart, transdb.clone());
    call(&mut d, ControlOpcode::WipeDatabase, transdb.clone());
    let pulldb = PulldbExt {
        db_id,
        lmaster: 0,
        srvid: PUSH_SRVID,
    };
    call(&mut d, ControlOpcode::DbPushStart, pulldb.to_bytes());
    // Client 2 listens on the push srvid too, as any client may.
    let mut register = Packet::pull(&control(
        ControlOpcode::RegisterSrvid,
        CURRENT_NODE,
        1,
        vec![],
    ))
    .unwrap();
    if let Body::ReqControl(c) = &mut register.body {
        c.srvid = PUSH_SRVID;
    }
    d.on_client_frame(now, 2, &register.encode(Padding::Exact), &HOST);
    drain(&mut d);

    let header = LtdbHeader {
        rsn: 2,
        dmaster: 0,
        reserved1: 0,
        flags: 0,
    };
    let buffer = |keys: &[&[u8]]| RecBuffer {
        db_id,
        records: keys
            .iter()
            .map(|k| RecData::with_header(0, &header, k, b"value"))
            .collect(),
    };
    let message = |destnode, srvid, buffer: &RecBuffer| Packet {
        generation: 0,
        destnode,
        srcnode: 1,
        reqid: 0,
        body: Body::ReqMessage(ReqMessage {
            srvid,
            data: buffer.to_bytes(),
        }),
    };
    let from_node = message(0, PUSH_SRVID, &buffer(&[b"a", b"b"]));
    d.on_node_frame(now, 1, &from_node.encode(Padding::Daemon), &HOST);
    let from_client = message(CURRENT_NODE, PUSH_SRVID, &buffer(&[b"c"]));
    d.on_client_frame(now, 1, &from_client.encode(Padding::Align8), &HOST);
    let other = message(0, PUSH_SRVID + 1, &buffer(&[b"x"]));
    d.on_node_frame(now, 1, &other.encode(Padding::Daemon), &HOST);
    let delivered = drain(&mut d)
        .iter()
        .filter(|e| matches!(e, Effect::SendClient { client: 2, .. }))
        .count();
    assert_eq!(delivered, 2, "the registered client got both push buffers");
    let stored = call(
        &mut d,
        ControlOpcode::DbPushConfirm,
        db_id.to_ne_bytes().to_vec(),
    );
    assert_eq!(stored, 3u32.to_ne_bytes());
}
