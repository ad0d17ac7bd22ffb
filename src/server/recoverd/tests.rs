//! Unit tests of the recovery daemon core against a scripted local daemon. Whole-cluster
//! behaviour (elections across nodes, recoveries, faults) is tested by the simulation in
//! `crate::testing::sim`.

use super::*;
use crate::protocol::control::{ControlRequestData, PUBLIC_IP_FLAGS_ONLY_AVAILABLE};
use crate::protocol::header::BROADCAST_ALL;
use crate::protocol::types::{
    BanState, DisableMessage, ElectionMessage, NodeAndFlags, PublicIpList, SrvidMessage,
    TunableList, VnnMap,
};
use std::collections::BTreeMap;

const START_WALL_S: i64 = 1_700_000_000;

struct TestHost {
    wall: std::cell::Cell<Timeval>,
}

impl RecoverdHost for TestHost {
    fn ctdbd_alive(&self) -> bool {
        true
    }
    fn wall_clock(&self) -> Timeval {
        self.wall.get()
    }
    fn have_ip(&self, _addr: &SockAddr) -> bool {
        false
    }
    fn read_nodes_file(&self) -> Result<u32, String> {
        Ok(3)
    }
}

/// Answers the recovery daemon's controls the way a healthy 3-node cluster would, with
/// knobs for the cases under test.
struct Harness {
    rd: Recoverd,
    host: TestHost,
    now: Instant,
    flags: Vec<u32>,
    /// Node maps other nodes answer with, when they differ from `flags`.
    views: BTreeMap<u32, Vec<u32>>,
    recmode: u32,
    capabilities: Vec<u32>,
    generation: u32,
    /// Controls that are not answered (the test answers or times them out itself).
    hold: Vec<ControlOpcode>,
    held: Vec<(Token, u32, ControlOpcode, Vec<u8>)>,
    sent: Vec<(u32, ControlOpcode, u32, Vec<u8>)>,
    messages: Vec<(u32, u64, Vec<u8>)>,
    others: Vec<Effect>,
}

fn config(pnn: Pnn, lock: bool) -> RecoverdConfig {
    RecoverdConfig {
        pnn,
        num_nodes: 3,
        cluster_lock: lock.then(|| "/shared/reclock".to_owned()),
        leader_timeout_s: 5,
        capabilities: CAP_RECMASTER | CAP_LMASTER,
        tunables: Tunables::default(),
        failover_disabled: false,
        check_public_ips: false,
        fast_start: false,
        seed: 7,
        extensions: Extensions::STOCK,
    }
}

impl Harness {
    fn new(config: RecoverdConfig) -> Self {
        let host = TestHost {
            wall: std::cell::Cell::new(Timeval {
                tv_sec: START_WALL_S,
                tv_usec: 0,
            }),
        };
        let now = Instant::from_secs(1000);
        let rd = Recoverd::new(config, now, &host);
        Harness {
            rd,
            host,
            now,
            flags: vec![0; 3],
            views: BTreeMap::new(),
            recmode: RECOVERY_NORMAL,
            capabilities: vec![CAP_RECMASTER | CAP_LMASTER; 3],
            generation: 42,
            hold: Vec::new(),
            held: Vec::new(),
            sent: Vec::new(),
            messages: Vec::new(),
            others: Vec::new(),
        }
    }

    fn pnn(&self) -> u32 {
        self.rd.pnn()
    }

    fn answer(&self, destnode: u32, opcode: ControlOpcode, data: &[u8]) -> (i32, Vec<u8>) {
        let dest = if destnode == CURRENT_NODE {
            self.pnn()
        } else {
            destnode
        };
        let reply = |d: ControlReplyData| (0, d.to_bytes());
        match opcode {
            ControlOpcode::GetDebug => reply(ControlReplyData::DebugLevel(2)),
            ControlOpcode::GetAllTunables => reply(ControlReplyData::TunableList(Box::new(
                TunableList::from_array(Tunables::default().to_wire()),
            ))),
            ControlOpcode::GetRunstate => reply(ControlReplyData::Runstate(Runstate::Running)),
            ControlOpcode::GetNodemap => reply(ControlReplyData::NodeMap(NodeMap {
                nodes: self
                    .views
                    .get(&dest)
                    .unwrap_or(&self.flags)
                    .iter()
                    .enumerate()
                    .map(|(i, &flags)| NodeAndFlags {
                        pnn: i as u32,
                        flags,
                        addr: SockAddr::default(),
                    })
                    .collect(),
            })),
            ControlOpcode::GetRecmode => (self.recmode.cast_signed(), Vec::new()),
            ControlOpcode::GetCapabilities => reply(ControlReplyData::Capabilities(
                self.capabilities[dest as usize],
            )),
            ControlOpcode::GetIfaces => reply(ControlReplyData::IfaceList(IfaceList::default())),
            ControlOpcode::GetPublicIps => {
                reply(ControlReplyData::PublicIpList(PublicIpList::default()))
            }
            ControlOpcode::Getvnnmap => reply(ControlReplyData::VnnMap(VnnMap {
                generation: self.generation,
                map: (0..3)
                    .filter(|&p| self.flags[p as usize] & node_flags::INACTIVE == 0)
                    .collect(),
            })),
            _ => {
                let _ = data;
                (0, Vec::new())
            }
        }
    }

    /// Executes effects until none are left, answering controls at once.
    fn pump(&mut self) {
        loop {
            let mut effects = Vec::new();
            while let Some(e) = self.rd.poll_effect() {
                effects.push(e);
            }
            if effects.is_empty() {
                return;
            }
            for effect in effects {
                match effect {
                    Effect::SendControl {
                        token,
                        destnode,
                        opcode,
                        flags,
                        data,
                        ..
                    } => {
                        self.sent.push((destnode, opcode, flags, data.clone()));
                        if self.hold.contains(&opcode) {
                            self.held.push((token, destnode, opcode, data));
                            continue;
                        }
                        let (status, reply) = self.answer(destnode, opcode, &data);
                        self.rd
                            .on_control_reply(self.now, token, status, &reply, &self.host);
                    }
                    Effect::SendMessage {
                        destnode,
                        srvid,
                        data,
                    } => self.messages.push((destnode, srvid, data)),
                    other => self.others.push(other),
                }
            }
        }
    }

    /// Advances time to `until`, firing timers on the way.
    fn run_until(&mut self, until: Instant) {
        self.pump();
        while let Some(t) = self.rd.poll_timeout() {
            if t > until {
                break;
            }
            self.now = self.now.max(t);
            self.rd.handle_timeout(self.now, &self.host);
            self.pump();
        }
        self.now = self.now.max(until);
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now.saturating_add(d);
        self.run_until(until);
    }

    fn message(&mut self, srvid: u64, data: &[u8]) {
        self.rd.on_message(self.now, srvid, data, &self.host);
        self.pump();
    }

    fn clear(&mut self) {
        self.sent.clear();
        self.messages.clear();
        self.others.clear();
    }

    fn sent_opcodes(&self) -> Vec<ControlOpcode> {
        self.sent.iter().map(|(_, op, _, _)| *op).collect()
    }

    fn messages_to(&self, srvid: u64) -> Vec<(u32, Vec<u8>)> {
        self.messages
            .iter()
            .filter(|(_, s, _)| *s == srvid)
            .map(|(d, _, data)| (*d, data.clone()))
            .collect()
    }

    /// Makes this node leader through a LEADER broadcast of its own PNN.
    fn become_leader(&mut self) {
        let pnn = self.pnn();
        self.rd.leader = pnn;
        self.message(srvid::LEADER, &pnn.to_ne_bytes());
    }
}

fn election(pnn: u32, priority_s: i64, node_flags: u32) -> Vec<u8> {
    ElectionMessage {
        num_connected: 3,
        priority_time: Timeval {
            tv_sec: priority_s,
            tv_usec: 0,
        },
        pnn,
        node_flags,
    }
    .to_bytes()
}

#[test]
fn start_up_registers_the_twelve_srvids_in_stock_order() {
    let mut h = Harness::new(config(1, false));
    let mut registered = Vec::new();
    while let Some(e) = h.rd.poll_effect() {
        if let Effect::RegisterSrvid { srvid } = e {
            registered.push(srvid);
        } else {
            break;
        }
    }
    assert_eq!(registered, REGISTERED_SRVIDS.to_vec());
    assert_eq!(h.rd.leader(), UNKNOWN_PNN);
}

#[test]
fn a_follower_loop_reads_state_and_stops_before_the_leader_checks() {
    let mut h = Harness::new(config(1, false));
    h.run_until(h.now);
    assert_eq!(
        h.sent_opcodes(),
        vec![
            ControlOpcode::RecdPing,
            ControlOpcode::GetDebug,
            ControlOpcode::GetAllTunables,
            ControlOpcode::GetRunstate,
            ControlOpcode::GetNodemap,
            ControlOpcode::GetRecmode,
            ControlOpcode::GetCapabilities,
            ControlOpcode::GetCapabilities,
            ControlOpcode::GetCapabilities,
            ControlOpcode::GetIfaces,
            ControlOpcode::GetPublicIps,
        ]
    );
    // GET_NODEMAP goes to our own PNN, GET_PUBLIC_IPS asks for available addresses only.
    assert_eq!(h.sent[4].0, 1);
    assert_eq!(h.sent[10].2, PUBLIC_IP_FLAGS_ONLY_AVAILABLE);
    assert_eq!(h.rd.log_level(), Some(2));
    // The first interface fetch counts as a change: a takeover run is requested.
    let requests = h.messages_to(srvid::TAKEOVER_RUN);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].0, BROADCAST_CONNECTED);
    let (request, _) = SrvidMessage::pull(&requests[0].1).expect("srvid message");
    assert_eq!(request, SrvidMessage { pnn: 1, srvid: 0 });

    // The next loop starts one RecoverInterval after the previous one started.
    h.clear();
    let started = h.now;
    h.run_until(started.saturating_add(Duration::from_millis(999)));
    assert!(h.sent.is_empty());
    h.run_until(started.saturating_add(Duration::from_secs(1)));
    assert_eq!(
        h.sent_opcodes()[..2],
        [ControlOpcode::RecdPing, ControlOpcode::GetDebug]
    );
    assert!(h.messages_to(srvid::TAKEOVER_RUN).is_empty());
}

#[test]
fn the_leader_checks_the_cluster_and_recovers_a_node_in_recovery_mode() {
    let mut h = Harness::new(config(0, false));
    h.become_leader();
    h.recmode = RECOVERY_ACTIVE;
    h.clear();
    h.run_for(Duration::ZERO);
    let ops = h.sent_opcodes();
    let recmode_checks = ops
        .iter()
        .filter(|&&o| o == ControlOpcode::GetRecmode)
        .count();
    // Our own recmode, then every active node's.
    assert_eq!(recmode_checks, 1 + 3);
    assert!(ops.contains(&ControlOpcode::GetNodemap));
    assert!(ops.contains(&ControlOpcode::Getvnnmap));
    let Some(Effect::StartRecoveryHelper { generation }) = h
        .others
        .iter()
        .find(|e| matches!(e, Effect::StartRecoveryHelper { .. }))
        .cloned()
    else {
        panic!("no recovery started: {:?}", h.others);
    };
    assert_ne!(generation, INVALID_GENERATION_FOR_TESTS);
    assert!(generation < 1 << 31);
    assert_eq!(h.rd.running_helper(), Some(HelperKind::Recovery));
    // Flags of every connected node were pushed to every connected node first.
    let pushes = h
        .sent
        .iter()
        .filter(|(_, op, _, _)| *op == ControlOpcode::ModifyFlags)
        .count();
    assert_eq!(pushes, 3 * 3);

    h.clear();
    h.rd.on_helper_done(h.now, HelperKind::Recovery, 0, &h.host);
    h.pump();
    assert_eq!(h.rd.running_helper(), Some(HelperKind::Takeover));
    // Takeover runs are paused on the other connected nodes for 60 s.
    let pauses = h.messages_to(srvid::DISABLE_TAKEOVER_RUNS);
    assert_eq!(
        pauses.iter().map(|(d, _)| *d).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let (pause, _) = DisableMessage::pull(&pauses[0].1).expect("disable message");
    assert_eq!(
        pause,
        DisableMessage {
            pnn: UNKNOWN_PNN,
            srvid: 0,
            timeout: 60
        }
    );
    h.clear();
    h.rd.on_helper_done(h.now, HelperKind::Takeover, 0, &h.host);
    h.pump();
    let resumes = h.messages_to(srvid::DISABLE_TAKEOVER_RUNS);
    assert_eq!(resumes.len(), 2);
    assert_eq!(
        DisableMessage::pull(&resumes[0].1).map(|(m, _)| m.timeout),
        Ok(0)
    );
    assert_eq!(
        h.messages_to(srvid::RECONFIGURE),
        vec![(BROADCAST_CONNECTED, vec![])]
    );
    assert!(h.rd.recoveries_disabled(), "rerecovery timeout");
    assert!(!h.rd.need_recovery());
    assert_eq!(h.rd.stats().recoveries_completed, 1);

    // Recoveries stay disabled for RerecoveryTimeout (10 s).
    h.run_for(Duration::from_secs(9));
    assert!(h.rd.recoveries_disabled());
    h.run_for(Duration::from_secs(2));
    assert!(!h.rd.recoveries_disabled());
}

const INVALID_GENERATION_FOR_TESTS: u32 = 1;

#[test]
fn a_failed_recovery_is_retried_and_losing_leadership_kills_the_helper() {
    let mut h = Harness::new(config(0, false));
    h.become_leader();
    h.recmode = RECOVERY_ACTIVE;
    h.run_for(Duration::ZERO);
    assert_eq!(h.rd.running_helper(), Some(HelperKind::Recovery));
    h.rd.on_helper_done(h.now, HelperKind::Recovery, EPIPE_FOR_TESTS, &h.host);
    h.pump();
    assert!(h.rd.need_recovery());
    h.recmode = RECOVERY_NORMAL;
    h.clear();
    h.run_for(Duration::from_secs(1));
    // need_recovery short-cuts the checks: only our own recovery mode is read.
    let recmode_reads = h
        .sent_opcodes()
        .iter()
        .filter(|&&o| o == ControlOpcode::GetRecmode)
        .count();
    assert_eq!(recmode_reads, 1);
    assert_eq!(h.rd.running_helper(), Some(HelperKind::Recovery));

    // Another node wins an election: the helper is killed at once.
    h.clear();
    h.message(srvid::ELECTION, &election(2, START_WALL_S - 100, 0));
    assert_eq!(h.rd.leader(), 2);
    assert_eq!(h.rd.running_helper(), None);
    assert!(h.others.contains(&Effect::KillHelper {
        kind: HelperKind::Recovery
    }));
}

const EPIPE_FOR_TESTS: i32 = 32;

#[test]
fn election_rules_are_stock_ctdb_election_win() {
    // Our priority time is the harness start (START_WALL_S).
    let cases = [
        // (other pnn, other priority time, other flags, we win)
        (2, START_WALL_S + 10, 0, true),  // we are older
        (2, START_WALL_S - 10, 0, false), // they are older
        (0, START_WALL_S, 0, true),       // tie: higher PNN (ours, 1) wins
        (2, START_WALL_S, 0, false),      // tie: their PNN is higher
        (2, START_WALL_S - 10, node_flags::BANNED, true), // inactive opponent loses
        (2, START_WALL_S - 10, node_flags::STOPPED, true),
        (2, START_WALL_S - 10, node_flags::UNHEALTHY, false), // unhealthy is not inactive
    ];
    for (other, when, flags, win) in cases {
        let mut h = Harness::new(config(1, false));
        h.run_for(Duration::ZERO);
        h.clear();
        h.message(srvid::ELECTION, &election(other, when, flags));
        assert!(h.rd.election_in_progress());
        if win {
            assert_eq!(h.rd.leader(), UNKNOWN_PNN, "case {other} {when} {flags:x}");
            // We answer with our own election message 0.5 s later.
            h.run_for(Duration::from_millis(499));
            assert!(h.messages_to(srvid::ELECTION).is_empty());
            h.run_for(Duration::from_millis(1));
            let sent = h.messages_to(srvid::ELECTION);
            assert_eq!(sent.len(), 1, "case {other} {when} {flags:x}");
            assert_eq!(sent[0].0, BROADCAST_ALL);
            let (em, _) = ElectionMessage::pull(&sent[0].1).expect("election message");
            assert_eq!(em.pnn, 1);
            assert_eq!(em.priority_time.tv_sec, START_WALL_S);
            assert_eq!(em.num_connected, 3);
            assert_eq!(h.rd.leader(), 1);
        } else {
            assert_eq!(h.rd.leader(), other, "case {other} {when} {flags:x}");
            h.run_for(Duration::from_secs(1));
            assert!(h.messages_to(srvid::ELECTION).is_empty());
        }
        // The election ends ElectionTimeout (3 s) after the last message.
        h.run_until(Instant::from_secs(1003));
        assert!(!h.rd.election_in_progress());
    }
}

#[test]
fn a_node_that_cannot_lead_loses_and_campaigns_to_lose() {
    let mut h = Harness::new(config(1, false));
    h.capabilities[1] = CAP_LMASTER;
    h.run_for(Duration::ZERO);
    assert!(!h.rd.can_be_leader());
    // Even against a banned opponent.
    h.message(
        srvid::ELECTION,
        &election(2, START_WALL_S + 100, node_flags::BANNED),
    );
    assert_eq!(h.rd.leader(), 2);
    // Our own election data says "try to lose": no connections, priority time now.
    h.host.wall.set(Timeval {
        tv_sec: START_WALL_S + 50,
        tv_usec: 5,
    });
    let em = h.rd.election_data(&h.host);
    assert_eq!(em.num_connected, 0);
    assert_eq!(
        em.priority_time,
        Timeval {
            tv_sec: START_WALL_S + 50,
            tv_usec: 5
        }
    );
}

#[test]
fn leader_broadcasts_every_second_and_followers_follow_them() {
    let mut h = Harness::new(config(0, false));
    h.run_for(Duration::ZERO);
    h.become_leader();
    h.clear();
    h.run_for(Duration::from_millis(3500));
    let broadcasts = h.messages_to(srvid::LEADER);
    assert_eq!(broadcasts.len(), 3);
    assert!(broadcasts
        .iter()
        .all(|(d, data)| *d == BROADCAST_CONNECTED && data == &0u32.to_ne_bytes().to_vec()));

    let mut f = Harness::new(config(1, false));
    f.run_for(Duration::ZERO);
    f.message(srvid::LEADER, &2u32.to_ne_bytes());
    assert_eq!(f.rd.leader(), 2);
    // Short payloads are ignored; longer ones are read from their first four bytes.
    f.message(srvid::LEADER, &[0, 0]);
    assert_eq!(f.rd.leader(), 2);
    f.message(srvid::LEADER, &[0, 0, 0, 0, 9]);
    assert_eq!(f.rd.leader(), 0);
}

#[test]
fn leader_timeout_forces_an_election_with_election_messages() {
    let mut h = Harness::new(config(1, false));
    h.run_for(Duration::ZERO);
    h.clear();
    // The leader timeout (5 s) was armed by the first loop.
    h.run_for(Duration::from_millis(4999));
    assert!(h.messages_to(srvid::ELECTION).is_empty());
    h.run_for(Duration::from_millis(1));
    // SET_RECMODE(ACTIVE) to every active node, then "leader unknown" and our campaign.
    let recmodes: Vec<_> = h
        .sent
        .iter()
        .filter(|(_, op, _, _)| *op == ControlOpcode::SetRecmode)
        .collect();
    assert_eq!(recmodes.len(), 3);
    assert_eq!(recmodes[0].3, RECOVERY_ACTIVE.to_ne_bytes().to_vec());
    assert_eq!(
        h.messages_to(srvid::LEADER),
        vec![(BROADCAST_CONNECTED, UNKNOWN_PNN.to_ne_bytes().to_vec())]
    );
    assert_eq!(h.messages_to(srvid::ELECTION).len(), 1);
    assert!(h.rd.election_in_progress());
    assert_eq!(h.rd.leader(), 1);
    assert_eq!(h.rd.stats().elections_started, 1);
    // Main loops do nothing while the election runs.
    h.clear();
    h.run_for(Duration::from_millis(2999));
    assert!(!h.sent_opcodes().contains(&ControlOpcode::GetDebug));
    h.run_for(Duration::from_millis(1));
    assert!(!h.rd.election_in_progress());
    h.run_for(Duration::from_secs(1));
    assert!(h.sent_opcodes().contains(&ControlOpcode::GetDebug));
}

#[test]
fn fast_start_shortens_only_the_first_election() {
    let mut c = config(1, false);
    c.fast_start = true;
    let mut h = Harness::new(c);
    h.run_for(Duration::ZERO);
    h.message(srvid::ELECTION, &election(2, START_WALL_S - 1, 0));
    h.run_for(Duration::from_millis(500));
    assert!(!h.rd.election_in_progress());
    h.message(srvid::ELECTION, &election(2, START_WALL_S - 1, 0));
    h.run_for(Duration::from_millis(2999));
    assert!(h.rd.election_in_progress());
    h.run_for(Duration::from_millis(1));
    assert!(!h.rd.election_in_progress());
}

#[test]
fn with_a_cluster_lock_the_lock_holder_leads_and_no_election_messages_are_sent() {
    let mut h = Harness::new(config(1, true));
    h.run_for(Duration::from_secs(5));
    assert!(h.messages_to(srvid::ELECTION).is_empty());
    let Some(Effect::TakeClusterLock { id, timeout }) = h
        .others
        .iter()
        .find(|e| matches!(e, Effect::TakeClusterLock { .. }))
        .cloned()
    else {
        panic!("no lock take: {:?}", h.others);
    };
    assert_eq!(timeout, Duration::from_secs(120));
    assert!(h.rd.election_in_progress());
    assert_eq!(h.rd.leader(), UNKNOWN_PNN);
    h.rd.on_cluster_lock(
        h.now,
        id,
        ClusterLockEvent::Taken { latency: 0.25 },
        &h.host,
    );
    h.pump();
    assert_eq!(h.rd.leader(), 1);
    assert!(h.rd.holds_cluster_lock());
    assert!(!h.rd.election_in_progress());
    // The latency is reported to the daemon.
    assert!(h
        .sent
        .iter()
        .any(|(_, op, _, data)| *op == ControlOpcode::RecdReclockLatency
            && data == &0.25f64.to_ne_bytes().to_vec()));

    // Another election keeps the lock and the leadership.
    h.clear();
    h.message(srvid::LEADER, &UNKNOWN_PNN.to_ne_bytes());
    assert!(!h.rd.election_in_progress());
    assert!(h.rd.holds_cluster_lock());
    assert!(!h
        .others
        .iter()
        .any(|e| matches!(e, Effect::ReleaseClusterLock { .. })));

    // Losing the lock starts an election.
    h.clear();
    h.rd.on_cluster_lock(h.now, id, ClusterLockEvent::Lost, &h.host);
    h.pump();
    assert!(!h.rd.holds_cluster_lock());
    assert_eq!(h.rd.stats().elections_started, 2);
    assert!(h
        .others
        .iter()
        .any(|e| matches!(e, Effect::TakeClusterLock { .. })));
}

#[test]
fn contention_leaves_the_leader_unknown() {
    let mut h = Harness::new(config(2, true));
    h.run_for(Duration::ZERO);
    h.message(srvid::LEADER, &UNKNOWN_PNN.to_ne_bytes());
    // LEADER(unknown) while the leader is already unknown only restarts the timeout.
    assert!(!h.rd.election_in_progress());
    h.message(srvid::LEADER, &0u32.to_ne_bytes());
    h.clear();
    h.message(srvid::LEADER, &UNKNOWN_PNN.to_ne_bytes());
    assert!(h.rd.election_in_progress());
    let Some(Effect::TakeClusterLock { id, .. }) = h.others.first().cloned() else {
        panic!("no lock take: {:?}", h.others);
    };
    h.rd.on_cluster_lock(h.now, id, ClusterLockEvent::Contention, &h.host);
    h.pump();
    assert_eq!(h.rd.leader(), UNKNOWN_PNN);
    assert!(!h.rd.election_in_progress());
    assert!(h.others.contains(&Effect::ReleaseClusterLock { id }));
}

#[test]
fn an_inactive_node_gives_up_leadership_and_the_lock() {
    let mut h = Harness::new(config(1, true));
    h.run_for(Duration::from_secs(5));
    let Some(Effect::TakeClusterLock { id, .. }) = h
        .others
        .iter()
        .find(|e| matches!(e, Effect::TakeClusterLock { .. }))
        .cloned()
    else {
        panic!("no lock take");
    };
    h.rd.on_cluster_lock(h.now, id, ClusterLockEvent::Taken { latency: 0.0 }, &h.host);
    h.pump();
    assert!(h.rd.is_leader());
    h.flags[1] = node_flags::STOPPED;
    h.clear();
    // The next loop sees the flag, the next broadcast tick acts on it.
    h.run_for(Duration::from_secs(2));
    assert!(!h.rd.is_leader());
    assert!(h.others.contains(&Effect::ReleaseClusterLock { id }));
    // An inactive node's loop sets recovery mode ACTIVE and freezes once, then returns.
    let ops = h.sent_opcodes();
    assert!(ops.contains(&ControlOpcode::SetRecmode));
    assert!(ops.contains(&ControlOpcode::Freeze));
    assert!(!ops.contains(&ControlOpcode::GetCapabilities));
    h.clear();
    h.recmode = RECOVERY_ACTIVE;
    h.run_for(Duration::from_secs(1));
    assert!(!h.sent_opcodes().contains(&ControlOpcode::Freeze));
    // Its priority time keeps moving while it is inactive.
    h.host.wall.set(Timeval {
        tv_sec: START_WALL_S + 30,
        tv_usec: 0,
    });
    h.run_for(Duration::from_secs(1));
    assert_eq!(h.rd.priority_time().tv_sec, START_WALL_S + 30);
}

#[test]
fn disable_messages_reply_with_our_pnn_and_expire() {
    let mut h = Harness::new(config(2, false));
    h.run_for(Duration::ZERO);
    let request = DisableMessage {
        pnn: 0,
        srvid: 0xCE00_0000_0000_0042,
        timeout: 30,
    };
    h.message(srvid::DISABLE_RECOVERIES, &request.to_bytes());
    assert!(h.rd.recoveries_disabled());
    assert_eq!(
        h.messages_to(0xCE00_0000_0000_0042),
        vec![(0, 2i32.to_ne_bytes().to_vec())]
    );
    // srvid 0: no reply. Wrong size: ignored.
    h.clear();
    let quiet = DisableMessage {
        srvid: 0,
        ..request
    };
    h.message(srvid::DISABLE_TAKEOVER_RUNS, &quiet.to_bytes());
    assert!(h.rd.takeover_runs_disabled());
    assert!(h.messages.is_empty());
    h.message(srvid::DISABLE_RECOVERIES, &request.to_bytes()[..16]);
    assert!(h.messages.is_empty());
    h.run_for(Duration::from_secs(30));
    assert!(!h.rd.recoveries_disabled());
    assert!(!h.rd.takeover_runs_disabled());
    // Timeout 0 re-enables at once; DISABLE_IP_CHECK takes a bare u32.
    h.message(srvid::DISABLE_IP_CHECK, &10u32.to_ne_bytes());
    assert!(h.rd.takeover_runs_disabled());
    h.message(
        srvid::DISABLE_TAKEOVER_RUNS,
        &DisableMessage {
            timeout: 0,
            ..request
        }
        .to_bytes(),
    );
    assert!(!h.rd.takeover_runs_disabled());
}

#[test]
fn disabling_recoveries_during_a_recovery_answers_eagain() {
    let mut h = Harness::new(config(0, false));
    h.become_leader();
    h.recmode = RECOVERY_ACTIVE;
    h.run_for(Duration::ZERO);
    assert_eq!(h.rd.running_helper(), Some(HelperKind::Recovery));
    h.clear();
    let request = DisableMessage {
        pnn: 1,
        srvid: 77,
        timeout: 30,
    };
    h.message(srvid::DISABLE_RECOVERIES, &request.to_bytes());
    assert_eq!(
        h.messages_to(77),
        vec![(1, EAGAIN_NEG.to_ne_bytes().to_vec())]
    );
}

#[test]
fn takeover_run_requests_are_queued_and_answered_by_the_leader() {
    let mut h = Harness::new(config(0, false));
    h.become_leader();
    h.run_for(Duration::ZERO);
    // Let the loop's own first takeover request pass.
    if h.rd.running_helper() == Some(HelperKind::Takeover) {
        h.rd.on_helper_done(h.now, HelperKind::Takeover, 0, &h.host);
        h.pump();
    }
    h.clear();
    for (pnn, srvid) in [(1u32, 11u64), (2, 22), (1, 0)] {
        h.message(srvid::TAKEOVER_RUN, &SrvidMessage { pnn, srvid }.to_bytes());
    }
    // A wrong-sized request is dropped.
    h.message(srvid::TAKEOVER_RUN, &[0; 8]);
    assert_eq!(h.rd.queued_takeover_requests(), 3);
    h.run_for(Duration::from_secs(1));
    assert_eq!(h.rd.running_helper(), Some(HelperKind::Takeover));
    assert_eq!(h.rd.queued_takeover_requests(), 0);
    h.rd.on_helper_done(h.now, HelperKind::Takeover, 0, &h.host);
    h.pump();
    // Newest first, srvid 0 gets nothing.
    let replies: Vec<_> = h
        .messages
        .iter()
        .filter(|(_, s, _)| *s == 11 || *s == 22)
        .map(|(d, s, data)| (*d, *s, data.clone()))
        .collect();
    assert_eq!(
        replies,
        vec![
            (2, 22, 0i32.to_ne_bytes().to_vec()),
            (1, 11, 0i32.to_ne_bytes().to_vec())
        ]
    );

    // A failed run answers -1 and is retried by the next loop.
    h.clear();
    h.message(
        srvid::TAKEOVER_RUN,
        &SrvidMessage { pnn: 2, srvid: 33 }.to_bytes(),
    );
    h.run_for(Duration::from_secs(1));
    h.rd.on_helper_done(h.now, HelperKind::Takeover, 1, &h.host);
    h.pump();
    assert_eq!(h.messages_to(33), vec![(2, (-1i32).to_ne_bytes().to_vec())]);
    h.clear();
    h.run_for(Duration::from_secs(1));
    assert_eq!(h.rd.running_helper(), Some(HelperKind::Takeover));
}

#[test]
fn rebalance_targets_are_passed_to_the_takeover_helper_and_cleared_on_success() {
    let mut h = Harness::new(config(0, false));
    h.become_leader();
    h.run_for(Duration::ZERO);
    if h.rd.running_helper() == Some(HelperKind::Takeover) {
        h.rd.on_helper_done(h.now, HelperKind::Takeover, 0, &h.host);
        h.pump();
    }
    h.message(srvid::REBALANCE_NODE, &2u32.to_ne_bytes());
    h.message(srvid::REBALANCE_NODE, &1u32.to_ne_bytes());
    assert_eq!(h.rd.force_rebalance_nodes(), &[2, 1]);
    h.message(
        srvid::TAKEOVER_RUN,
        &SrvidMessage { pnn: 2, srvid: 0 }.to_bytes(),
    );
    h.clear();
    h.run_for(Duration::from_secs(1));
    assert!(h.others.contains(&Effect::StartTakeoverHelper {
        force_rebalance: vec![2, 1]
    }));
    h.rd.on_helper_done(h.now, HelperKind::Takeover, 0, &h.host);
    h.pump();
    assert!(h.rd.force_rebalance_nodes().is_empty());
    // Followers ignore rebalance requests.
    let mut f = Harness::new(config(1, false));
    f.run_for(Duration::ZERO);
    f.message(srvid::REBALANCE_NODE, &2u32.to_ne_bytes());
    assert!(f.rd.force_rebalance_nodes().is_empty());
}

#[test]
fn ban_credits_from_the_banning_message_ban_at_twice_the_node_count() {
    let mut h = Harness::new(config(0, false));
    h.become_leader();
    h.run_for(Duration::ZERO);
    // A follower ignores BANNING; the leader adds num_nodes credits.
    let mut f = Harness::new(config(1, false));
    f.run_for(Duration::ZERO);
    f.message(srvid::BANNING, &2u32.to_ne_bytes());
    assert_eq!(f.rd.ban_credits(2), 0);

    h.message(srvid::BANNING, &2u32.to_ne_bytes());
    assert_eq!(h.rd.ban_credits(2), 3);
    h.clear();
    h.run_for(Duration::from_secs(1));
    assert!(!h.sent_opcodes().contains(&ControlOpcode::SetBanState));
    h.message(srvid::BANNING, &2u32.to_ne_bytes());
    h.clear();
    h.run_for(Duration::from_secs(1));
    let bans: Vec<_> = h
        .sent
        .iter()
        .filter(|(_, op, _, _)| *op == ControlOpcode::SetBanState)
        .collect();
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0].0, 2, "sent to the banned node itself");
    assert_eq!(
        pull_request(ControlOpcode::SetBanState, &bans[0].3),
        ControlRequestData::BanState(BanState { pnn: 2, time: 300 })
    );
    assert_eq!(h.rd.ban_credits(2), 0);
    assert_eq!(h.rd.stats().bans_sent, 1);
}

fn pull_request(opcode: ControlOpcode, data: &[u8]) -> ControlRequestData {
    crate::protocol::control::pull_request_data(opcode, data).expect("request data")
}

#[test]
fn the_leader_adopts_and_pushes_flags() {
    let mut h = Harness::new(config(0, false));
    h.become_leader();
    // We think node 1 is unhealthy; node 1 says it is fine. Node 2 thinks we are disabled.
    h.flags = vec![0, node_flags::UNHEALTHY, 0];
    h.views.insert(1, vec![0, 0, 0]);
    h.views
        .insert(2, vec![node_flags::PERMANENTLY_DISABLED, 0, 0]);
    h.clear();
    h.run_for(Duration::ZERO);
    let pushes: Vec<_> = h
        .sent
        .iter()
        .filter(|(_, op, _, _)| *op == ControlOpcode::ModifyFlags)
        .map(|(d, op, _, data)| (*d, pull_request(*op, data)))
        .collect();
    let change = |pnn, new_flags, old_flags| {
        ControlRequestData::NodeFlagChange(crate::protocol::types::NodeFlagChange {
            pnn,
            new_flags,
            old_flags,
        })
    };
    // Node 0's flags (ours) first, then node 1's adopted ones; each to every connected node.
    let expected: Vec<_> = [change(0, 0, 0), change(1, 0, 0)]
        .into_iter()
        .flat_map(|c| (0..3).map(move |d| (d, c.clone())))
        .collect();
    assert_eq!(pushes, expected);

    // Nothing to push when every view agrees.
    h.views.clear();
    h.flags = vec![0, 0, 0];
    h.clear();
    h.run_for(Duration::from_secs(1));
    assert!(!h.sent_opcodes().contains(&ControlOpcode::ModifyFlags));
}

#[test]
fn push_node_flags_reads_the_leaders_map_and_modifies_flags_everywhere() {
    let mut h = Harness::new(config(1, false));
    h.run_for(Duration::ZERO);
    h.message(srvid::LEADER, &0u32.to_ne_bytes());
    h.clear();
    let change = crate::protocol::types::NodeFlagChange {
        pnn: 2,
        new_flags: node_flags::PERMANENTLY_DISABLED,
        old_flags: 0,
    };
    h.message(srvid::PUSH_NODE_FLAGS, &change.to_bytes());
    let ops: Vec<_> = h.sent.iter().map(|(d, op, _, _)| (*d, *op)).collect();
    assert_eq!(
        ops,
        vec![
            (0, ControlOpcode::GetNodemap),
            (0, ControlOpcode::ModifyFlags),
            (1, ControlOpcode::ModifyFlags),
            (2, ControlOpcode::ModifyFlags),
        ]
    );
    assert_eq!(h.sent[1].3, change.to_bytes());
}

#[test]
fn generations_are_seeded_31_bit_and_never_invalid() {
    let mut a = Harness::new(config(0, false));
    let mut b = Harness::new(config(0, false));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10_000 {
        let g = a.rd.new_generation();
        assert_eq!(g, b.rd.new_generation());
        assert_ne!(g, 1);
        assert!(g < 1 << 31);
        seen.insert(g);
    }
    assert!(seen.len() > 9_900);
}

#[test]
fn extension_leader_disconnect_starts_the_election_at_the_next_loop() {
    for (extensions, expect) in [(Extensions::default(), true), (Extensions::STOCK, false)] {
        let mut c = config(1, false);
        c.extensions = extensions;
        let mut h = Harness::new(c);
        h.run_for(Duration::ZERO);
        h.message(srvid::LEADER, &2u32.to_ne_bytes());
        h.flags[2] = node_flags::DISCONNECTED | node_flags::UNHEALTHY;
        h.clear();
        h.run_for(Duration::from_secs(1));
        assert_eq!(
            h.rd.stats().elections_started == 1,
            expect,
            "{extensions:?}"
        );
    }
}

#[test]
fn extension_link_change_runs_the_main_loop_at_once() {
    for (extensions, expect) in [(Extensions::default(), true), (Extensions::STOCK, false)] {
        let mut c = config(1, false);
        c.extensions = extensions;
        let mut h = Harness::new(c);
        h.run_for(Duration::ZERO);
        h.message(srvid::LEADER, &2u32.to_ne_bytes());
        h.run_for(Duration::from_millis(300));
        h.flags[2] = node_flags::DISCONNECTED | node_flags::UNHEALTHY;
        h.message(srvid::CTDB_RS_LINK_CHANGE, &2u32.to_ne_bytes());
        h.clear();
        h.run_for(Duration::from_millis(100));
        assert_eq!(
            h.rd.stats().elections_started == 1,
            expect,
            "{extensions:?}"
        );
    }
}

/// Cold start with a cluster lock: once every node is connected, a node that has heard of no
/// leader tries the lock in its first loop instead of after the 5 s leader timeout, and
/// holding it runs the election it wins.
#[test]
fn extension_startup_lock_probe_elects_the_holder_at_once() {
    let first_take = |h: &Harness| {
        h.others.iter().find_map(|e| match e {
            Effect::TakeClusterLock { id, .. } => Some(*id),
            _ => None,
        })
    };
    for (extensions, expect) in [(Extensions::default(), true), (Extensions::STOCK, false)] {
        let mut c = config(1, true);
        c.extensions = extensions;
        let mut h = Harness::new(c);
        h.run_for(Duration::from_millis(100));
        assert_eq!(first_take(&h).is_some(), expect, "{extensions:?}");
        if let Some(id) = first_take(&h) {
            h.rd.on_cluster_lock(h.now, id, ClusterLockEvent::Taken { latency: 0.0 }, &h.host);
            h.pump();
            h.run_for(Duration::from_millis(100));
            assert_eq!(h.rd.leader(), 1);
            assert_eq!(h.rd.stats().elections_started, 1);
        }
    }

    // Contention (somebody leads already) changes nothing; the probe is not repeated.
    let mut c = config(1, true);
    c.extensions = Extensions::default();
    let mut h = Harness::new(c);
    h.run_for(Duration::from_millis(100));
    let id = first_take(&h).expect("probe");
    h.rd.on_cluster_lock(h.now, id, ClusterLockEvent::Contention, &h.host);
    h.pump();
    h.clear();
    h.run_for(Duration::from_secs(3));
    assert_eq!(h.rd.leader(), UNKNOWN_PNN);
    assert_eq!(h.rd.stats().elections_started, 0);
    assert!(first_take(&h).is_none(), "probed twice: {:?}", h.others);

    // With a node still disconnected the probe waits.
    let mut c = config(1, true);
    c.extensions = Extensions::default();
    let mut h = Harness::new(c);
    h.flags[2] = node_flags::DISCONNECTED;
    h.run_for(Duration::from_secs(2));
    assert!(first_take(&h).is_none(), "{:?}", h.others);
    h.flags[2] = 0;
    h.run_for(Duration::from_secs(1));
    assert!(first_take(&h).is_some());
}

#[test]
fn extension_recmode_active_wakes_the_leader_at_once() {
    let recovery_started = |h: &Harness| {
        h.others
            .iter()
            .any(|e| matches!(e, Effect::StartRecoveryHelper { .. }))
    };
    for (extensions, expect) in [(Extensions::default(), true), (Extensions::STOCK, false)] {
        let mut c = config(0, false);
        c.extensions = extensions;
        let mut h = Harness::new(c);
        h.become_leader();
        h.run_for(Duration::from_millis(300));
        h.recmode = RECOVERY_ACTIVE;
        h.message(srvid::CTDB_RS_RECMODE_ACTIVE, &[]);
        h.clear();
        h.run_for(Duration::from_millis(100));
        assert_eq!(recovery_started(&h), expect, "{extensions:?}");
        // Either way the next regular pass recovers.
        h.run_for(Duration::from_secs(1));
        assert!(recovery_started(&h), "{extensions:?}");
    }

    // A node that does not lead leaves it to the leader's recovery daemon.
    let mut c = config(1, false);
    c.extensions = Extensions::default();
    let mut h = Harness::new(c);
    h.run_for(Duration::ZERO);
    h.message(srvid::LEADER, &0u32.to_ne_bytes());
    h.run_for(Duration::from_millis(300));
    h.recmode = RECOVERY_ACTIVE;
    h.clear();
    h.message(srvid::CTDB_RS_RECMODE_ACTIVE, &[]);
    h.run_for(Duration::from_millis(100));
    assert!(h.sent.is_empty(), "{:?}", h.sent_opcodes());
}

#[test]
fn extension_lock_holder_ignores_stale_leader_broadcasts() {
    for (extensions, expect_leader) in [(Extensions::default(), 1), (Extensions::STOCK, 0)] {
        let mut c = config(1, true);
        c.extensions = extensions;
        let mut h = Harness::new(c);
        h.run_for(Duration::from_secs(5));
        let Some(Effect::TakeClusterLock { id, .. }) = h
            .others
            .iter()
            .find(|e| matches!(e, Effect::TakeClusterLock { .. }))
            .cloned()
        else {
            panic!("no lock take");
        };
        h.rd.on_cluster_lock(h.now, id, ClusterLockEvent::Taken { latency: 0.0 }, &h.host);
        h.pump();
        // The old leader's last broadcast arrives late.
        h.message(srvid::LEADER, &0u32.to_ne_bytes());
        assert_eq!(h.rd.leader(), expect_leader, "{extensions:?}");
    }
}

#[test]
fn unknown_and_malformed_messages_are_ignored() {
    let mut h = Harness::new(config(1, false));
    h.run_for(Duration::ZERO);
    h.clear();
    h.message(srvid::ELECTION, &[1, 2, 3]);
    h.message(srvid::BANNING, &[1, 2, 3]);
    h.message(srvid::SET_NODE_FLAGS, &[0; 12]);
    h.message(srvid::PUSH_NODE_FLAGS, &[0; 4]);
    h.message(0x1234, b"hello");
    assert!(!h.rd.election_in_progress());
    assert!(h.sent.is_empty());
    assert!(h.messages.is_empty());
    // MEM_DUMP answers with a report to the given address.
    h.message(
        srvid::MEM_DUMP,
        &SrvidMessage { pnn: 0, srvid: 99 }.to_bytes(),
    );
    assert_eq!(h.messages_to(99).len(), 1);
}

#[test]
fn control_timeouts_fail_the_loop_and_it_retries() {
    let mut h = Harness::new(config(1, false));
    h.hold = vec![ControlOpcode::GetNodemap];
    h.run_for(Duration::ZERO);
    assert_eq!(h.held.len(), 1);
    h.clear();
    // No new loop while one waits (RecoverTimeout 30 s).
    h.run_for(Duration::from_secs(29));
    assert!(!h.sent_opcodes().contains(&ControlOpcode::GetDebug));
    h.hold.clear();
    h.run_for(Duration::from_secs(2));
    assert!(h.sent_opcodes().contains(&ControlOpcode::GetDebug));
    // A late reply to the timed-out control is harmless.
    let (token, ..) = h.held[0].clone();
    h.rd.on_control_reply(h.now, token, 0, &[], &h.host);
    h.pump();
}

#[test]
fn terminate_releases_the_lock_and_exits() {
    let mut h = Harness::new(config(1, true));
    h.run_for(Duration::from_secs(5));
    let Some(Effect::TakeClusterLock { id, .. }) = h
        .others
        .iter()
        .find(|e| matches!(e, Effect::TakeClusterLock { .. }))
        .cloned()
    else {
        panic!("no lock take");
    };
    h.rd.on_cluster_lock(h.now, id, ClusterLockEvent::Taken { latency: 0.0 }, &h.host);
    h.pump();
    h.clear();
    h.rd.on_terminate(h.now);
    h.pump();
    assert_eq!(
        h.others,
        vec![Effect::ReleaseClusterLock { id }, Effect::Exit { code: 0 }]
    );
    assert!(h.rd.has_exited());
    assert_eq!(h.rd.poll_timeout(), None);
}

#[test]
fn the_main_loop_waits_while_an_election_is_being_forced() {
    let mut h = Harness::new(config(1, true));
    h.run_for(Duration::from_secs(5));
    let Some(Effect::TakeClusterLock { id, .. }) = h
        .others
        .iter()
        .find(|e| matches!(e, Effect::TakeClusterLock { .. }))
        .cloned()
    else {
        panic!("no lock take");
    };
    h.rd.on_cluster_lock(h.now, id, ClusterLockEvent::Taken { latency: 0.0 }, &h.host);
    h.pump();
    h.run_for(Duration::from_secs(2));
    assert!(h.rd.is_leader());

    // The lock is lost; the election's SET_RECMODE hangs on some node.
    h.hold = vec![ControlOpcode::SetRecmode];
    h.clear();
    h.rd.on_cluster_lock(h.now, id, ClusterLockEvent::Lost, &h.host);
    h.pump();
    assert_eq!(h.held.len(), 3);
    h.run_for(Duration::from_secs(10));
    // No main loop ran: in particular no "recovery without the lock" self-ban.
    let ops = h.sent_opcodes();
    assert!(!ops.contains(&ControlOpcode::GetDebug), "{ops:?}");
    assert!(!ops.contains(&ControlOpcode::SetBanState));
    // Leader broadcasts go on meanwhile.
    assert!(!h.messages_to(srvid::LEADER).is_empty());

    // The recovery mode is set, the lock is contended: the leader becomes unknown, and only
    // then does the main loop run again.
    h.hold.clear();
    for (token, ..) in std::mem::take(&mut h.held) {
        h.rd.on_control_reply(h.now, token, 0, &[], &h.host);
    }
    h.pump();
    let Some(Effect::TakeClusterLock { id: retake, .. }) = h
        .others
        .iter()
        .rev()
        .find(|e| matches!(e, Effect::TakeClusterLock { .. }))
        .cloned()
    else {
        panic!("no second lock take");
    };
    h.run_for(Duration::from_secs(3));
    assert!(!h.sent_opcodes().contains(&ControlOpcode::GetDebug));
    h.rd.on_cluster_lock(h.now, retake, ClusterLockEvent::Contention, &h.host);
    h.pump();
    assert_eq!(h.rd.leader(), UNKNOWN_PNN);
    h.clear();
    h.run_for(Duration::from_secs(1));
    assert!(h.sent_opcodes().contains(&ControlOpcode::GetDebug));
    assert!(!h.sent_opcodes().contains(&ControlOpcode::SetBanState));
}
