//! The main daemon's sans-IO core (mirrors `ctdb/server/ctdb_daemon.c`, `ctdb_control.c`,
//! `ctdb_keepalive.c`, `ctdb_monitor.c` and `ctdb_server.c`).
//!
//! The core owns all daemon state. The shell calls one `on_*` method per input, passing `now`,
//! then drains [`Daemon::poll_effect`] and sleeps until [`Daemon::poll_timeout`]. Nothing here
//! blocks, reads a clock or touches a file descriptor, so the whole daemon can run inside a
//! deterministic simulation.

use super::call::{CallOutput, CallService};
use super::database::{
    DatabaseSet, DbContext, DbControlOutcome, DbEffect, DbReply, DbRequest, DeferredId,
    TraverseSink, TRAVERSE_BACKLOG_LIMIT,
};
use super::effect::{ClientId, Effect, EventOutcome, Pnn};
use super::srvid::SrvidRegistry;
use super::takeover::{FailoverConfig, Takeover};
use crate::common::clock::Instant;
use crate::common::tunable::{self, Tunables};
use crate::protocol::header::{
    Operation, ReqHeader, BROADCAST_ACTIVE, BROADCAST_ALL, BROADCAST_CONNECTED, CURRENT_NODE,
    INVALID_GENERATION,
};
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::packet::{
    encode_message, Body, MessageBuffer, MessageView, Packet, Padding, ReplyControl, ReqCall,
    ReqControl, ReqKeepalive, ReqMessage, CALL_FLAG_IMMEDIATE_MIGRATION,
    CALL_FLAG_VACUUM_MIGRATION, CTRL_FLAG_NOREPLY, KEEPALIVE_VERSION, NULL_FUNC,
};
use crate::protocol::types::{
    BanState, LatencyCounter, NodeAndFlags, NodeFlagChange, NodeMap, Statistics, StatisticsList,
    Uptime, VnnMap,
};
use crate::protocol::{Marshal, SockAddr, Timeval};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

pub use crate::protocol::types::capabilities::DEFAULT as CAP_DEFAULT;
use crate::protocol::types::capabilities::{LMASTER as CAP_LMASTER, RECMASTER as CAP_RECMASTER};
use crate::protocol::types::node_flags::{
    BANNED as NODE_FLAGS_BANNED, DELETED as NODE_FLAGS_DELETED,
    DISCONNECTED as NODE_FLAGS_DISCONNECTED, INACTIVE as NODE_FLAGS_INACTIVE,
    PERMANENTLY_DISABLED as NODE_FLAGS_PERMANENTLY_DISABLED, STOPPED as NODE_FLAGS_STOPPED,
    UNHEALTHY as NODE_FLAGS_UNHEALTHY,
};

pub const RECOVERY_NORMAL: u32 = 0;
pub const RECOVERY_ACTIVE: u32 = 1;

pub use crate::protocol::types::Runstate;

/// Upper bound on controls this node has forwarded and not yet seen answered; past it new
/// forwards fail at once instead of growing the table without limit.
pub const MAX_PENDING_CONTROLS: usize = 100_000;
/// How many statistics snapshots GET_STAT_HISTORY returns (`MAX_STAT_HISTORY`).
pub const STAT_HISTORY_LEN: usize = 100;
/// Interval of the first monitor event after `startup`, and after a health change.
const MONITOR_FIRST_INTERVAL_S: u64 = 2;
const MONITOR_AFTER_CHANGE_INTERVAL_S: u64 = 5;
const STARTUP_RETRY_S: u64 = 5;

/// One public address from `public_addresses`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicAddress {
    pub addr: SockAddr,
    pub mask_bits: u32,
    pub ifaces: Vec<String>,
}

/// Everything the core needs to know at start-up, gathered by the binary from the
/// configuration files.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub pnn: Pnn,
    /// The nodes file, one entry per PNN; deleted nodes carry `NODE_FLAGS_DELETED`.
    pub nodes: Vec<NodeAndFlags>,
    pub public_addresses: Vec<PublicAddress>,
    pub tunables: Tunables,
    /// `[cluster] cluster lock` exactly as configured (`None` when unset).
    pub cluster_lock: Option<String>,
    pub capabilities: u32,
    /// Samba numeric debug level.
    pub log_level: i32,
    pub pid: i32,
    /// Wall-clock start time, for UPTIME.
    pub start_time: Timeval,
    pub start_as_stopped: bool,
    pub start_as_disabled: bool,
    /// `CTDB_TEST_MODE`: stock skips the wait after the first recovery.
    pub test_mode: bool,
    /// IP failover settings and system hooks.
    pub failover: FailoverConfig,
}

/// Synchronous questions the core asks its host. The real shell answers from the OS; tests
/// and simulations answer from tables.
pub trait Host {
    /// `kill(pid, 0) == 0`.
    fn process_exists(&self, pid: i32) -> bool;
    /// The wall clock, for the protocol fields that carry real timestamps.
    fn wall_clock(&self) -> Timeval;
    /// The nodes file parsed afresh (GET_NODES_FILE), or why it could not be read.
    fn read_nodes_file(&self) -> Result<Vec<NodeAndFlags>, String>;
}

/// How much the shell still has to write to each peer, so that bulk producers (traverse
/// walks) wait for slow readers instead of filling queues until the shell's limits drop the
/// connection.
pub trait Backlog {
    fn client_bytes(&self, client: ClientId) -> usize;
    fn node_bytes(&self, pnn: Pnn) -> usize;
}

/// No backlog anywhere (tests, and callers that cannot see the queues).
#[derive(Debug)]
pub struct NoBacklog;

impl Backlog for NoBacklog {
    fn client_bytes(&self, _client: ClientId) -> usize {
        0
    }
    fn node_bytes(&self, _pnn: Pnn) -> usize {
        0
    }
}

/// The host for database work started by the daemon's own timer or by a client going away
/// (traverse steps, timeouts and kills): the controls such work runs on this node
/// (TRAVERSE_KILL, TRAVERSE_DATA) never ask the host anything, so the answers here are only
/// defaults.
struct NoHostQueries;

impl Host for NoHostQueries {
    fn process_exists(&self, _pid: i32) -> bool {
        true
    }
    fn wall_clock(&self) -> Timeval {
        Timeval::default()
    }
    fn read_nodes_file(&self) -> Result<Vec<NodeAndFlags>, String> {
        Err("not available from a timer".into())
    }
}

#[derive(Debug)]
struct Node {
    pnn: Pnn,
    addr: SockAddr,
    flags: u32,
    /// Packets received since the last keepalive check.
    rx_cnt: u32,
    /// Consecutive keepalive intervals without a packet.
    dead_count: u32,
}

#[derive(Debug)]
struct Client {
    pid: i32,
    /// REGISTER_NOTIFY: (srvid, data) messages broadcast when the client goes away.
    notify: Vec<(u64, Vec<u8>)>,
}

/// Bound on REGISTER_NOTIFY entries per client (stock has none).
const MAX_NOTIFY_PER_CLIENT: usize = 1024;
/// Bound on client calls whose start time is kept for `call_latency`.
const MAX_TIMED_CALLS: usize = 65536;

/// Where the reply to a control goes once it is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyRoute {
    /// A local client, with the reqid it used.
    Client { client: ClientId, reqid: u32 },
    /// Another node, with the reqid its daemon used.
    Node { pnn: Pnn, reqid: u32 },
    /// NOREPLY: nobody waits.
    Nobody,
}

/// Who waits for the answer to a control this daemon sent to another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PendingOwner {
    /// Forwarded for a local client.
    Client { client: ClientId, reqid: u32 },
    /// START_RECOVERY's consistency check: the leader's GET_RECLOCK_FILE answer completes the
    /// deferred control `token`.
    ReclockCheck { token: u64 },
    /// A vacuuming run's TRY_DELETE_RECORDS to node `pnn`.
    VacuumTryDelete { db_id: u32, round: u64, pnn: Pnn },
}

/// The pseudo client that owns the record migrations vacuuming starts: its call replies never
/// leave the daemon.
const VACUUM_CLIENT: ClientId = ClientId::MAX;

/// At most this many vacuum migrations are in flight; more wait for a later run.
const MAX_VACUUM_CALLS: usize = 10_000;

/// A control this node sent to another node and whose reply it waits for.
#[derive(Debug)]
struct PendingControl {
    owner: PendingOwner,
    pnn: Pnn,
    deadline: Instant,
}

/// A control whose reply waits for an event run, a lock test or another node.
#[derive(Debug)]
struct DeferredControl {
    route: ReplyRoute,
}

/// Why the core asked for an event run, so the outcome can be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventPurpose {
    Init,
    Setup,
    Startup,
    Monitor,
    Shutdown,
    /// An event run on behalf of a control (startrecovery, recovered, ipreallocated) whose
    /// deferred reply `token` carries the event's status.
    Control {
        token: u64,
        kind: ControlEvent,
    },
    /// takeip, updateip or releaseip for public address operation `op`.
    Failover {
        op: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ControlEvent {
    StartRecovery,
    Recovered,
    Ipreallocated,
}

#[derive(Debug)]
struct Monitor {
    next_interval_s: u64,
    timeouts_in_a_row: u32,
    due: Option<Instant>,
    running: bool,
}

#[derive(Debug)]
pub struct Daemon {
    config: DaemonConfig,
    pnn: Pnn,
    nodes: Vec<Node>,
    tunables: Tunables,
    runstate: Runstate,
    recovery_mode: u32,
    vnn_map: VnnMap,
    log_level: i32,
    capabilities: u32,
    ban_state: BanState,
    /// Wall-clock times of the last recovery start and finish, for UPTIME.
    last_recovery_started: Timeval,
    last_recovery_finished: Timeval,

    clients: BTreeMap<ClientId, Client>,
    srvids: SrvidRegistry,
    /// The attached databases (volatile, persistent, replicated).
    dbs: DatabaseSet,
    /// Record calls and migrations in flight (see [`super::call`]).
    calls: CallService,
    /// Start times of client calls in progress, for `call_latency` and `pending_calls`.
    call_starts: std::collections::HashMap<(ClientId, u32), Instant>,
    /// Database controls waiting for the database service, and the token of their reply.
    db_deferred: BTreeMap<DeferredId, u64>,
    /// Record migrations started for vacuuming, by the request id the call service answers
    /// [`VACUUM_CLIENT`] with: the database and key.
    vacuum_calls: BTreeMap<u32, (u32, Vec<u8>)>,
    next_vacuum_call: u32,
    next_reqid: u32,
    pending: BTreeMap<u32, PendingControl>,
    deferred: BTreeMap<u64, DeferredControl>,
    next_token: u64,
    /// Set while the `startup` event may be started: checked every second until it runs.
    wait_recovered_due: Option<Instant>,
    startup_running: bool,
    /// Wall-clock end of the last recovery, as monotonic time, for the re-recovery wait.
    last_recovery_finished_at: Option<Instant>,
    /// Last time the recovery daemon pinged (RECD_PING), once it runs.
    last_recd_ping: Option<Instant>,
    /// Consecutive `RecdPingTimeout` periods without a ping.
    recd_ping_misses: u32,
    recoverd_running: bool,
    /// When to start the recovery daemon again after it exited.
    recoverd_restart_due: Option<Instant>,
    /// When a ban lifts, if this node is banned.
    ban_ends: Option<Instant>,

    statistics: Statistics,
    statistics_current: Statistics,
    stat_history: VecDeque<Statistics>,
    next_stat_history: Instant,

    next_keepalive: Option<Instant>,
    next_event_id: u64,
    events: BTreeMap<u64, EventPurpose>,
    monitor: Monitor,
    /// Public addresses, interfaces and tickles.
    takeover: Takeover,
    startup_due: Option<Instant>,
    shutting_down: bool,
    exit_code: i32,

    effects: VecDeque<Effect>,
}

impl Daemon {
    /// Builds the core around an opened database set: attaches the persistent databases found
    /// on disk and freezes every database until the first recovery, as stock does at start-up.
    pub fn new(
        config: DaemonConfig,
        dbs: DatabaseSet,
        now: Instant,
        host: &dyn Host,
    ) -> Result<Self, String> {
        let pnn = config.pnn;
        assert!(
            (pnn as usize) < config.nodes.len(),
            "own PNN {pnn} is not in the nodes file"
        );
        let nodes = config
            .nodes
            .iter()
            .map(|n| {
                let mut flags = if n.flags & NODE_FLAGS_DELETED != 0 {
                    NODE_FLAGS_DELETED
                } else {
                    NODE_FLAGS_UNHEALTHY
                };
                if n.pnn != pnn {
                    flags |= NODE_FLAGS_DISCONNECTED;
                }
                Node {
                    pnn: n.pnn,
                    addr: n.addr,
                    flags,
                    rx_cnt: 0,
                    dead_count: 0,
                }
            })
            .collect();
        let vnn_map = VnnMap {
            generation: INVALID_GENERATION,
            map: config
                .nodes
                .iter()
                .filter(|n| n.flags & NODE_FLAGS_DELETED == 0)
                .map(|n| n.pnn)
                .collect(),
        };
        let wall = host.wall_clock();
        let statistics = Statistics {
            statistics_start_time: wall,
            ..Statistics::default()
        };
        let mut daemon = Daemon {
            pnn,
            nodes,
            tunables: config.tunables,
            runstate: Runstate::Init,
            recovery_mode: RECOVERY_ACTIVE,
            vnn_map,
            log_level: config.log_level,
            capabilities: config.capabilities,
            ban_state: BanState { pnn, time: 0 },
            last_recovery_started: Timeval::default(),
            last_recovery_finished: Timeval::default(),
            clients: BTreeMap::new(),
            srvids: SrvidRegistry::default(),
            dbs,
            calls: CallService::new(),
            call_starts: std::collections::HashMap::new(),
            db_deferred: BTreeMap::new(),
            vacuum_calls: BTreeMap::new(),
            next_vacuum_call: 1,
            next_reqid: 1,
            pending: BTreeMap::new(),
            deferred: BTreeMap::new(),
            next_token: 1,
            wait_recovered_due: None,
            startup_running: false,
            last_recovery_finished_at: None,
            last_recd_ping: None,
            recd_ping_misses: 0,
            recoverd_running: false,
            recoverd_restart_due: None,
            ban_ends: None,
            statistics,
            statistics_current: statistics,
            stat_history: VecDeque::with_capacity(STAT_HISTORY_LEN),
            next_stat_history: now,
            next_keepalive: None,
            next_event_id: 1,
            events: BTreeMap::new(),
            monitor: Monitor {
                next_interval_s: MONITOR_AFTER_CHANGE_INTERVAL_S,
                timeouts_in_a_row: 0,
                due: None,
                running: false,
            },
            takeover: Takeover::new(&config.public_addresses, config.failover.clone()),
            startup_due: None,
            shutting_down: false,
            exit_code: 0,
            effects: VecDeque::new(),
            config,
        };
        let view = daemon.failover_view();
        daemon.takeover.start(now, &view);
        if daemon.config.start_as_stopped {
            daemon.own_node_mut().flags |= NODE_FLAGS_STOPPED;
        }
        if daemon.config.start_as_disabled {
            daemon.own_node_mut().flags |= NODE_FLAGS_PERMANENTLY_DISABLED;
        }
        daemon.next_stat_history = now.saturating_add(Duration::from_secs(u64::from(
            daemon.tunables.stat_history_interval().max(1),
        )));
        {
            let Daemon {
                dbs,
                vnn_map,
                tunables,
                recovery_mode,
                runstate,
                nodes,
                pnn,
                ..
            } = &mut daemon;
            let ctx = DbContext {
                recovery_mode: *recovery_mode,
                runstate: *runstate,
                own_flags: nodes[*pnn as usize].flags,
                vnn_map,
                tunables,
                healthy_nodes: 0,
                active_nodes: 0,
            };
            dbs.attach_persistent_databases(&ctx)?;
            dbs.freeze_all_blocking()
                .map_err(|e| format!("Failed to freeze databases: {e}"))?;
        }
        // Stock runs "init" before the transport comes up; a failure is fatal.
        let _ = daemon.run_event(EventPurpose::Init, "init", Vec::new());
        Ok(daemon)
    }

    /// Runs `f` with the database set and the daemon state database controls depend on.
    fn with_dbs<T>(&mut self, f: impl FnOnce(&mut DatabaseSet, &DbContext<'_>) -> T) -> T {
        let healthy_nodes =
            u32::try_from(self.nodes.iter().filter(|n| n.flags == 0).count()).unwrap_or(0);
        let active_nodes = u32::try_from(
            self.nodes
                .iter()
                .filter(|n| n.flags & NODE_FLAGS_INACTIVE == 0)
                .count(),
        )
        .unwrap_or(0);
        let own_flags = self.own_flags();
        let Daemon {
            dbs,
            vnn_map,
            tunables,
            recovery_mode,
            runstate,
            ..
        } = self;
        let ctx = DbContext {
            recovery_mode: *recovery_mode,
            runstate: *runstate,
            own_flags,
            vnn_map,
            tunables,
            healthy_nodes,
            active_nodes,
        };
        f(dbs, &ctx)
    }

    /// Sends a NOREPLY control (srvid 0, client_id 0) for the database service to the nodes of
    /// `broadcast`, running it here too when this node is one of them.
    fn broadcast_db_control(
        &mut self,
        now: Instant,
        broadcast: Pnn,
        opcode: ControlOpcode,
        data: Vec<u8>,
        host: &dyn Host,
    ) {
        let c = ReqControl {
            opcode,
            srvid: 0,
            client_id: 0,
            flags: CTRL_FLAG_NOREPLY,
            data,
        };
        for pnn in self.broadcast_targets(broadcast) {
            if pnn == self.pnn {
                self.run_control(now, &c, self.pnn, ReplyRoute::Nobody, host);
            } else {
                self.send_node_control(pnn, 0, &c);
            }
        }
    }

    /// Migrates a record here for vacuuming, as a call of the [`VACUUM_CLIENT`].
    fn start_vacuum_migration(&mut self, now: Instant, db_id: u32, key: Vec<u8>) {
        if self.vacuum_calls.len() >= MAX_VACUUM_CALLS {
            return;
        }
        let reqid = self.next_vacuum_call;
        self.next_vacuum_call = self.next_vacuum_call.wrapping_add(1).max(1);
        self.vacuum_calls.insert(reqid, (db_id, key.clone()));
        let call = ReqCall {
            flags: CALL_FLAG_IMMEDIATE_MIGRATION | CALL_FLAG_VACUUM_MIGRATION,
            db_id,
            callid: NULL_FUNC,
            hopcount: 0,
            key,
            calldata: Vec::new(),
        };
        self.with_calls(now, |calls, dbs, ctx| {
            calls.on_client_call(dbs, ctx, now, VACUUM_CLIENT, reqid, call);
        });
    }

    /// Executes what the database service asked for, in order.
    fn run_db_effects(&mut self, now: Instant, host: &dyn Host) {
        while let Some(effect) = self.dbs.poll_effect() {
            match effect {
                DbEffect::SendMessage { pnn, srvid, data } => {
                    if pnn == self.pnn {
                        self.deliver_to_databases(now, srvid, data.payload(), host);
                        self.deliver_to_clients_buffer(srvid, data);
                    } else {
                        self.send_node_message_buffer(pnn, srvid, data);
                    }
                }
                DbEffect::BroadcastControl { opcode, data } => {
                    self.broadcast_db_control(now, BROADCAST_CONNECTED, opcode, data, host);
                }
                DbEffect::BroadcastActiveControl { opcode, data } => {
                    self.broadcast_db_control(now, BROADCAST_ACTIVE, opcode, data, host);
                }
                DbEffect::TryDeleteRecords {
                    pnn,
                    db_id,
                    round,
                    data,
                } => {
                    let c = ReqControl {
                        opcode: ControlOpcode::TryDeleteRecords,
                        srvid: 0,
                        client_id: 0,
                        flags: 0,
                        data,
                    };
                    let owner = PendingOwner::VacuumTryDelete { db_id, round, pnn };
                    self.send_pending_control(now, pnn, &c, owner);
                }
                DbEffect::VacuumMigrate(m) => self.start_vacuum_migration(now, m.db_id, m.key),
                DbEffect::SendControl {
                    destnode,
                    opcode,
                    data,
                } => {
                    let c = ReqControl {
                        opcode,
                        srvid: 0,
                        client_id: 0,
                        flags: CTRL_FLAG_NOREPLY,
                        data,
                    };
                    let targets = if is_broadcast_dest(destnode) {
                        self.broadcast_targets(destnode)
                    } else {
                        vec![destnode]
                    };
                    for pnn in targets {
                        if pnn == self.pnn {
                            self.run_control(now, &c, self.pnn, ReplyRoute::Nobody, host);
                        } else if self.nodes.get(pnn as usize).is_some_and(|n| {
                            n.flags & (NODE_FLAGS_DISCONNECTED | NODE_FLAGS_DELETED) == 0
                        }) {
                            self.send_node_control(pnn, 0, &c);
                        }
                    }
                }
                DbEffect::DispatchLocal { srvid, data } => {
                    let m = ReqMessage { srvid, data };
                    for client in self.srvids.exact_targets(srvid) {
                        let packet = Packet {
                            generation: self.vnn_map.generation,
                            destnode: 0,
                            srcnode: self.pnn,
                            reqid: 0,
                            body: Body::ReqMessage(m.clone()),
                        };
                        self.send_client_packet(client, &packet);
                    }
                }
                DbEffect::TraverseTimedOut => self.bump(|s| s.timeouts.traverse += 1),
                DbEffect::StopRepack => self.effects.push_back(Effect::StopRepack),
                DbEffect::Complete { id, reply } => {
                    if let Some(token) = self.db_deferred.remove(&id) {
                        self.finish_deferred(token, db_result(reply));
                    }
                }
                DbEffect::SetRecoveryModeActive => self.recovery_mode = RECOVERY_ACTIVE,
                DbEffect::Thawed { db_id } => {
                    self.with_calls(now, |calls, dbs, ctx| calls.on_thawed(dbs, ctx, now, db_id));
                }
                DbEffect::Fatal { reason } => {
                    log::error!("Fatal database error: {reason}");
                    self.shutdown(1);
                }
            }
        }
    }

    /// Runs `f` on the record call service, then sends what it produced.
    fn with_calls(
        &mut self,
        now: Instant,
        f: impl FnOnce(&mut CallService, &mut DatabaseSet, &DbContext<'_>),
    ) {
        let mut calls = std::mem::take(&mut self.calls);
        self.with_dbs(|dbs, ctx| f(&mut calls, dbs, ctx));
        while let Some(out) = calls.poll_output() {
            match out {
                CallOutput::Client { client, packet } if client == VACUUM_CLIENT => {
                    if let Some((db_id, key)) = self.vacuum_calls.remove(&packet.reqid) {
                        if matches!(&packet.body, Body::ReplyCall(r) if r.status == 0) {
                            self.dbs.on_vacuum_migrated(db_id, &key);
                        }
                    }
                }
                CallOutput::Client { client, packet } => {
                    self.client_call_answered(now, client, &packet);
                    self.send_client_packet(client, &packet);
                }
                CallOutput::Node { pnn, packet } => self.send_node_packet(pnn, &packet),
                CallOutput::SetRecoveryModeActive => self.recovery_mode = RECOVERY_ACTIVE,
            }
        }
        let counters = calls.take_counters();
        let locks_pending = calls.lock_waits_pending() as u32;
        self.calls = calls;
        self.add_call_counters(&counters, locks_pending);
    }

    pub fn pnn(&self) -> Pnn {
        self.pnn
    }

    pub fn runstate(&self) -> Runstate {
        self.runstate
    }

    /// Current flags of node `pnn` as this node sees them.
    pub fn node_flags(&self, pnn: Pnn) -> Option<u32> {
        self.nodes.get(pnn as usize).map(|n| n.flags)
    }

    fn own_node_mut(&mut self) -> &mut Node {
        let pnn = self.pnn as usize;
        &mut self.nodes[pnn]
    }

    fn own_flags(&self) -> u32 {
        self.nodes[self.pnn as usize].flags
    }

    fn alloc_reqid(&mut self) -> u32 {
        let id = self.next_reqid;
        self.next_reqid = self.next_reqid.wrapping_add(1).max(1);
        id
    }

    // ------------------------------------------------------------------------------------
    // Clients

    /// A client connected to the unix socket; `pid` from SO_PEERCRED.
    pub fn on_client_connected(&mut self, _now: Instant, client: ClientId, pid: i32) {
        self.clients.insert(
            client,
            Client {
                pid,
                notify: Vec::new(),
            },
        );
        self.statistics.num_clients = self.clients.len() as u32;
    }

    /// A client's connection closed (EOF, error, or after `CloseClient`).
    pub fn on_client_closed(&mut self, now: Instant, client: ClientId) {
        let Some(gone) = self.clients.remove(&client) else {
            return;
        };
        let before = self.call_starts.len();
        self.call_starts.retain(|&(c, _), _| c != client);
        let dropped = (before - self.call_starts.len()) as u32;
        self.bump(|s| s.pending_calls = s.pending_calls.saturating_sub(dropped));
        self.dbs.on_client_closed(client);
        // The client's traverses end: TRAVERSE_KILL goes out now.
        self.run_db_effects(now, &NoHostQueries);
        self.calls.on_client_closed(client);
        self.srvids.remove_client(client);
        self.failover_client_closed(client);
        self.pending.retain(
            |_, p| !matches!(p.owner, PendingOwner::Client { client: c, .. } if c == client),
        );
        self.deferred
            .retain(|_, d| !matches!(d.route, ReplyRoute::Client { client: c, .. } if c == client));
        self.statistics.num_clients = self.clients.len() as u32;
        // `ctdb_client_notify_destructor`: each registered notification goes to every
        // connected node (the client's own registrations are gone by now).
        for (srvid, data) in gone.notify {
            log::info!("Sending client notify message for srvid:{srvid}");
            self.client_message(now, BROADCAST_CONNECTED, srvid, &data, &NoHostQueries);
        }
    }

    /// One complete frame from a client.
    pub fn on_client_frame(
        &mut self,
        now: Instant,
        client: ClientId,
        frame: &[u8],
        host: &dyn Host,
    ) {
        if !self.clients.contains_key(&client) {
            return;
        }
        if let Some(message) = MessageView::parse(frame) {
            self.bump(|s| {
                s.client_packets_recv += 1;
                s.client.req_message += 1;
            });
            let data = &frame[message.data];
            self.client_message(now, message.header.destnode, message.srvid, data, host);
            return;
        }
        let packet = match Packet::pull(frame) {
            Ok(p) => p,
            Err(e) => {
                // Stock drops a client packet with a bad header and keeps the connection.
                log::error!("Dropping malformed packet from client: {e}");
                return;
            }
        };
        self.bump(|s| s.client_packets_recv += 1);
        match packet.body {
            Body::ReqControl(c) => {
                self.bump(|s| s.client.req_control += 1);
                self.client_control(now, client, packet.destnode, packet.reqid, c, host);
            }
            Body::ReqMessage(m) => {
                self.bump(|s| s.client.req_message += 1);
                self.client_message(now, packet.destnode, m.srvid, &m.data, host);
            }
            Body::ReqCall(call) => {
                self.bump(|s| s.client.req_call += 1);
                let reqid = packet.reqid;
                self.bump(|s| {
                    s.total_calls = s.total_calls.wrapping_add(1);
                    s.pending_calls = s.pending_calls.saturating_add(1);
                });
                if self.call_starts.len() < MAX_TIMED_CALLS {
                    self.call_starts.insert((client, reqid), now);
                }
                self.with_calls(now, |calls, dbs, ctx| {
                    calls.on_client_call(dbs, ctx, now, client, reqid, call)
                });
            }
            other => {
                log::error!(
                    "Unexpected operation {:?} from client, dropping",
                    other.operation()
                );
            }
        }
    }

    fn client_control(
        &mut self,
        now: Instant,
        client: ClientId,
        destnode: u32,
        client_reqid: u32,
        mut c: ReqControl,
        host: &dyn Host,
    ) {
        // The daemon stamps the control with the client's identity, whatever the client sent.
        c.client_id = client_id_u32(client);
        let noreply = c.flags & CTRL_FLAG_NOREPLY != 0;
        let destnode = if destnode == CURRENT_NODE {
            self.pnn
        } else {
            destnode
        };
        let route = if noreply {
            ReplyRoute::Nobody
        } else {
            ReplyRoute::Client {
                client,
                reqid: client_reqid,
            }
        };

        if is_broadcast_dest(destnode) {
            if !noreply {
                self.reply_client_control(client, client_reqid, -1, Vec::new(), b"");
                return;
            }
            for pnn in self.broadcast_targets(destnode) {
                if pnn == self.pnn {
                    self.run_control(now, &c, self.pnn, ReplyRoute::Nobody, host);
                } else {
                    self.send_node_control(pnn, 0, &c);
                }
            }
            return;
        }

        if destnode == self.pnn {
            self.run_control(now, &c, self.pnn, route, host);
            return;
        }

        let reachable = self
            .nodes
            .get(destnode as usize)
            .is_some_and(|n| n.flags & (NODE_FLAGS_DISCONNECTED | NODE_FLAGS_DELETED) == 0);
        if !reachable {
            if !noreply {
                let error = b"ctdb_control to disconnected node";
                self.reply_client_control(client, client_reqid, -1, Vec::new(), error);
            }
            return;
        }
        if noreply {
            self.send_node_control(destnode, 0, &c);
            return;
        }
        self.send_pending_control(
            now,
            destnode,
            &c,
            PendingOwner::Client {
                client,
                reqid: client_reqid,
            },
        );
    }

    /// Sends a control to another node and remembers who waits for the answer. Past
    /// `MAX_PENDING_CONTROLS` the control fails at once instead.
    fn send_pending_control(
        &mut self,
        now: Instant,
        pnn: Pnn,
        c: &ReqControl,
        owner: PendingOwner,
    ) {
        if self.pending.len() >= MAX_PENDING_CONTROLS {
            self.pending_failed(owner, -1, Vec::new(), b"too many pending controls");
            return;
        }
        let reqid = self.alloc_reqid();
        let timeout_s = u64::from(self.tunables.control_timeout().max(1));
        self.pending.insert(
            reqid,
            PendingControl {
                owner,
                pnn,
                deadline: now.saturating_add(Duration::from_secs(timeout_s)),
            },
        );
        self.send_node_control(pnn, reqid, c);
    }

    /// Delivers the answer (or failure) of a control this daemon sent.
    fn pending_failed(&mut self, owner: PendingOwner, status: i32, data: Vec<u8>, error: &[u8]) {
        match owner {
            PendingOwner::Client { client, reqid } => {
                self.reply_client_control(client, reqid, status, data, error);
            }
            PendingOwner::ReclockCheck { token } => {
                self.reclock_check_done(token, status, &data, error);
            }
            PendingOwner::VacuumTryDelete { db_id, round, pnn } => {
                let map = self.vnn_map.map.clone();
                self.dbs
                    .on_try_delete_reply(db_id, round, pnn, status, &data, &map);
            }
        }
    }

    /// Runs a control here and sends its reply along `route`, now or when it completes.
    fn run_control(
        &mut self,
        now: Instant,
        c: &ReqControl,
        srcnode: Pnn,
        route: ReplyRoute,
        host: &dyn Host,
    ) {
        if let Some(result) = self.local_control(now, c, srcnode, route, host) {
            self.send_reply(route, result);
        }
    }

    fn send_reply(&mut self, route: ReplyRoute, result: ControlResult) {
        let ControlResult {
            status,
            data,
            error,
        } = result;
        match route {
            ReplyRoute::Nobody => {}
            ReplyRoute::Client { client, reqid } => {
                self.reply_client_control(client, reqid, status, data, error.as_bytes());
            }
            ReplyRoute::Node { pnn, reqid } => {
                let reply = Packet {
                    generation: self.vnn_map.generation,
                    destnode: pnn,
                    srcnode: self.pnn,
                    reqid,
                    body: Body::ReplyControl(ReplyControl {
                        status,
                        data,
                        errmsg: error.into_bytes(),
                    }),
                };
                self.send_node_packet(pnn, &reply);
            }
        }
    }

    /// Parks a control whose reply comes later; returns the token that completes it.
    fn defer(&mut self, route: ReplyRoute) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        self.deferred.insert(token, DeferredControl { route });
        token
    }

    /// Completes a deferred control.
    fn finish_deferred(&mut self, token: u64, result: ControlResult) {
        if let Some(d) = self.deferred.remove(&token) {
            self.send_reply(d.route, result);
        }
    }

    /// A client's message, read in place from its frame: a push buffer from the recovery
    /// helper is up to `RecBufferSizeLimit` bytes, and is copied once, into the frame that
    /// carries it on.
    fn client_message(
        &mut self,
        now: Instant,
        destnode: u32,
        srvid: u64,
        data: &[u8],
        host: &dyn Host,
    ) {
        let destnode = if destnode == CURRENT_NODE {
            self.pnn
        } else {
            destnode
        };
        if is_broadcast_dest(destnode) {
            for pnn in self.broadcast_targets(destnode) {
                if pnn == self.pnn {
                    self.deliver_message_ref(now, srvid, data, host);
                } else {
                    self.send_node_message_ref(pnn, srvid, data);
                }
            }
        } else if destnode == self.pnn {
            self.deliver_message_ref(now, srvid, data, host);
        } else if self
            .nodes
            .get(destnode as usize)
            .is_some_and(|n| n.flags & (NODE_FLAGS_DISCONNECTED | NODE_FLAGS_DELETED) == 0)
        {
            self.send_node_message_ref(destnode, srvid, data);
        } else {
            log::info!("Dropping message to disconnected or unknown node {destnode}");
        }
    }

    /// Hands a message to every local client registered for its srvid (or for all srvids).
    fn deliver_message(&mut self, now: Instant, m: ReqMessage, host: &dyn Host) {
        self.deliver_message_ref(now, m.srvid, &m.data, host);
    }

    /// [`Daemon::deliver_message`] of a borrowed payload, copied once, into the frame of the
    /// last client (and once more per further client).
    fn deliver_message_ref(&mut self, now: Instant, srvid: u64, data: &[u8], host: &dyn Host) {
        self.deliver_to_databases(now, srvid, data, host);
        self.deliver_to_clients_ref(srvid, data);
    }

    /// DB_PUSH registers its srvid inside the daemon, ahead of clients.
    fn deliver_to_databases(&mut self, now: Instant, srvid: u64, data: &[u8], host: &dyn Host) {
        let claimed = self.with_dbs(|dbs, ctx| dbs.on_message(srvid, data, ctx));
        if claimed {
            self.run_db_effects(now, host);
        }
    }

    /// A REQ_MESSAGE frame from another node for this one, used in place: a DB_PULL buffer
    /// for the recovery helper or a push buffer for a database is up to `RecBufferSizeLimit`
    /// bytes, and decoding it into a [`Packet`] would copy it first. `None` when the frame is
    /// anything else, to be decoded as usual.
    fn take_node_message(&mut self, now: Instant, frame: &[u8], host: &dyn Host) -> Option<()> {
        let message = MessageView::parse(frame)?;
        if message.header.destnode != self.pnn {
            return None;
        }
        self.deliver_message_ref(now, message.srvid, &frame[message.data], host);
        Some(())
    }

    fn deliver_to_clients(&mut self, m: &ReqMessage) {
        self.deliver_to_clients_ref(m.srvid, &m.data);
    }

    fn deliver_to_clients_ref(&mut self, srvid: u64, data: &[u8]) {
        if !self.srvids.targets(srvid).is_empty() {
            self.deliver_to_clients_buffer(srvid, MessageBuffer::from_payload(data));
        }
    }

    /// Sends a message built in place to every client registered for `srvid`: the last one
    /// (usually the only one: the recovery helper waiting for a DB_PULL) gets the buffer
    /// itself as its frame, any others a copy.
    fn deliver_to_clients_buffer(&mut self, srvid: u64, data: MessageBuffer) {
        let live: Vec<ClientId> = self
            .srvids
            .targets(srvid)
            .into_iter()
            .filter(|client| self.clients.contains_key(client))
            .collect();
        let Some((&last, others)) = live.split_last() else {
            return;
        };
        let header = self.message_header(0);
        for &client in others {
            self.bump(|s| s.client_packets_sent += 1);
            self.effects.push_back(Effect::SendClient {
                client,
                frame: encode_message(&header, srvid, data.payload(), Padding::Daemon),
            });
        }
        self.bump(|s| s.client_packets_sent += 1);
        self.effects.push_back(Effect::SendClient {
            client: last,
            frame: data.into_frame(&header, srvid, Padding::Daemon),
        });
    }

    /// The header of a message this node sends to `destnode` (0 for its own clients).
    fn message_header(&self, destnode: u32) -> ReqHeader {
        ReqHeader::new(
            self.vnn_map.generation,
            Operation::ReqMessage,
            destnode,
            self.pnn,
            0,
        )
    }

    fn reply_client_control(
        &mut self,
        client: ClientId,
        reqid: u32,
        status: i32,
        data: Vec<u8>,
        error: &[u8],
    ) {
        let packet = Packet {
            generation: self.vnn_map.generation,
            destnode: 0,
            srcnode: self.pnn,
            reqid,
            body: Body::ReplyControl(ReplyControl {
                status,
                data,
                errmsg: error.to_vec(),
            }),
        };
        self.send_client_packet(client, &packet);
    }

    fn send_client_packet(&mut self, client: ClientId, packet: &Packet) {
        if !self.clients.contains_key(&client) {
            return;
        }
        self.bump(|s| s.client_packets_sent += 1);
        self.effects.push_back(Effect::SendClient {
            client,
            frame: packet.encode(Padding::Daemon),
        });
    }

    // ------------------------------------------------------------------------------------
    // Nodes

    fn broadcast_targets(&self, destnode: u32) -> Vec<Pnn> {
        self.nodes
            .iter()
            .filter(|n| match destnode {
                BROADCAST_ALL => n.flags & NODE_FLAGS_DELETED == 0,
                BROADCAST_ACTIVE => n.flags & NODE_FLAGS_INACTIVE == 0,
                BROADCAST_CONNECTED => {
                    n.flags & (NODE_FLAGS_DELETED | NODE_FLAGS_DISCONNECTED) == 0
                }
                _ => false,
            })
            .map(|n| n.pnn)
            .collect()
    }

    fn send_node_packet(&mut self, pnn: Pnn, packet: &Packet) {
        if pnn == self.pnn {
            return;
        }
        self.bump(|s| s.node_packets_sent += 1);
        self.effects.push_back(Effect::SendNode {
            pnn,
            frame: packet.encode(Padding::Daemon),
        });
    }

    fn send_node_control(&mut self, pnn: Pnn, reqid: u32, c: &ReqControl) {
        let packet = Packet {
            generation: self.vnn_map.generation,
            destnode: pnn,
            srcnode: self.pnn,
            reqid,
            body: Body::ReqControl(c.clone()),
        };
        self.send_node_packet(pnn, &packet);
    }

    fn send_node_message(&mut self, pnn: Pnn, m: &ReqMessage) {
        self.send_node_message_ref(pnn, m.srvid, &m.data);
    }

    /// [`Daemon::send_node_message`] of a borrowed payload, copied once, into the frame.
    fn send_node_message_ref(&mut self, pnn: Pnn, srvid: u64, data: &[u8]) {
        if pnn != self.pnn {
            self.send_node_message_buffer(pnn, srvid, MessageBuffer::from_payload(data));
        }
    }

    /// [`Daemon::send_node_message`] of a message built in place: the buffer is the frame.
    fn send_node_message_buffer(&mut self, pnn: Pnn, srvid: u64, data: MessageBuffer) {
        if pnn == self.pnn {
            return;
        }
        let frame = data.into_frame(&self.message_header(pnn), srvid, Padding::Daemon);
        self.bump(|s| s.node_packets_sent += 1);
        self.effects.push_back(Effect::SendNode { pnn, frame });
    }

    /// Both TCP directions to `pnn` are up.
    pub fn on_node_connected(&mut self, _now: Instant, pnn: Pnn) {
        let connected_before = self.num_connected();
        let Some(node) = self.nodes.get_mut(pnn as usize) else {
            return;
        };
        if node.flags & NODE_FLAGS_DISCONNECTED == 0 || pnn == self.pnn {
            return;
        }
        node.flags &= !NODE_FLAGS_DISCONNECTED;
        node.dead_count = 0;
        log::error!(
            "ctdb: connected to {}:{} - {} connected",
            node.addr,
            node.addr.port(),
            connected_before + 1
        );
        self.tell_recoverd_link_changed(pnn);
    }

    /// Wakes our recovery daemon's main loop (see `srvid::CTDB_RS_LINK_CHANGE`); a local
    /// message only, delivered to whoever registered the srvid.
    fn tell_recoverd_link_changed(&mut self, pnn: Pnn) {
        self.deliver_to_clients(&ReqMessage {
            srvid: crate::protocol::srvid::CTDB_RS_LINK_CHANGE,
            data: pnn.to_ne_bytes().to_vec(),
        });
    }

    /// Wakes our recovery daemon when a client set recovery mode ACTIVE (see
    /// `srvid::CTDB_RS_RECMODE_ACTIVE`; only a leading recovery daemon acts on it); a local
    /// message only.
    fn tell_recoverd_recmode_active(&mut self) {
        self.deliver_to_clients(&ReqMessage {
            srvid: crate::protocol::srvid::CTDB_RS_RECMODE_ACTIVE,
            data: Vec::new(),
        });
    }

    /// A connection to `pnn` failed or closed (either direction).
    pub fn on_node_disconnected(&mut self, _now: Instant, pnn: Pnn) {
        self.node_dead(pnn);
    }

    fn num_connected(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| {
                n.pnn != self.pnn && n.flags & (NODE_FLAGS_DISCONNECTED | NODE_FLAGS_DELETED) == 0
            })
            .count()
    }

    /// Mirrors `ctdb_node_dead`: the node is marked DISCONNECTED|UNHEALTHY and every control
    /// waiting on it fails with "node is disconnected".
    fn node_dead(&mut self, pnn: Pnn) {
        let Some(node) = self.nodes.get_mut(pnn as usize) else {
            return;
        };
        if pnn == self.pnn || node.flags & NODE_FLAGS_DISCONNECTED != 0 {
            return;
        }
        node.flags |= NODE_FLAGS_DISCONNECTED | NODE_FLAGS_UNHEALTHY;
        node.rx_cnt = 0;
        node.dead_count = 0;
        let addr = node.addr;
        self.tell_recoverd_link_changed(pnn);
        log::error!(
            "ctdb: node {}:{} is dead: {} connected",
            addr,
            addr.port(),
            self.num_connected()
        );
        let failed: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.pnn == pnn)
            .map(|(&id, _)| id)
            .collect();
        for reqid in failed {
            if let Some(p) = self.pending.remove(&reqid) {
                self.pending_failed(p.owner, -1, Vec::new(), b"node is disconnected");
            }
        }
    }

    /// One complete, already length/magic/version-checked frame from `pnn`'s incoming link.
    pub fn on_node_frame(&mut self, now: Instant, pnn: Pnn, frame: &[u8], host: &dyn Host) {
        if self.take_node_message(now, frame, host).is_some() {
            if let Some(node) = self.nodes.get_mut(pnn as usize) {
                node.rx_cnt = node.rx_cnt.saturating_add(1);
            }
            self.bump(|s| {
                s.node_packets_recv += 1;
                s.node.req_message += 1;
            });
            return;
        }
        let packet = match Packet::pull(frame) {
            Ok(p) => p,
            Err(e) => {
                log::error!("Malformed packet from node {pnn}: {e}; resetting the link");
                self.effects.push_back(Effect::ResetNode { pnn });
                return;
            }
        };
        if let Some(node) = self.nodes.get_mut(pnn as usize) {
            node.rx_cnt = node.rx_cnt.saturating_add(1);
        }
        self.bump(|s| s.node_packets_recv += 1);
        // The header says who sent it; replies go there, as in stock.
        let srcnode = packet.srcnode;
        match packet.body {
            Body::ReqKeepalive(k) => {
                self.bump(|s| s.keepalive_packets_recv += 1);
                self.check_keepalive_version(now, srcnode, k);
            }
            Body::ReqControl(c) => {
                self.bump(|s| s.node.req_control += 1);
                let route = if c.flags & CTRL_FLAG_NOREPLY != 0 {
                    ReplyRoute::Nobody
                } else {
                    ReplyRoute::Node {
                        pnn: srcnode,
                        reqid: packet.reqid,
                    }
                };
                self.run_control(now, &c, srcnode, route, host);
            }
            Body::ReplyControl(r) => {
                self.bump(|s| s.node.reply_control += 1);
                if let Some(p) = self.pending.remove(&packet.reqid) {
                    self.pending_failed(p.owner, r.status, r.data, &r.errmsg);
                } else {
                    let reqid = packet.reqid;
                    self.with_calls(now, |calls, dbs, ctx| {
                        calls.on_control_reply(dbs, ctx, reqid, r.status);
                    });
                }
            }
            Body::ReqMessage(m) => {
                self.bump(|s| s.node.req_message += 1);
                self.deliver_message(now, m, host);
            }
            Body::ReqCall(_)
            | Body::ReplyCall(_)
            | Body::ReqDmaster(_)
            | Body::ReplyDmaster(_)
            | Body::ReplyError(_) => {
                self.bump(|s| match packet.body {
                    Body::ReqCall(_) => s.node.req_call += 1,
                    Body::ReplyCall(_) => s.node.reply_call += 1,
                    Body::ReqDmaster(_) => s.node.req_dmaster += 1,
                    Body::ReplyDmaster(_) => s.node.reply_dmaster += 1,
                    _ => s.node.reply_error += 1,
                });
                self.with_calls(now, |calls, dbs, ctx| {
                    calls.on_node_packet(dbs, ctx, now, packet)
                });
            }
            Body::ReqTunnel(_) => self.bump(|s| s.node.req_tunnel += 1),
            Body::Unknown { operation, .. } => {
                log::error!("Unknown operation {operation} from node {pnn}");
            }
        }
    }

    /// Mirrors `ctdb_request_keepalive`: in a cluster of mixed versions the node that started
    /// later leaves.
    fn check_keepalive_version(&mut self, now: Instant, srcnode: Pnn, k: ReqKeepalive) {
        if self.tunables.allow_mixed_versions() == 1 {
            return;
        }
        let my_uptime = self.uptime_s(now);
        let Some(version) = k.version else {
            log::error!("Keepalive version missing from node {srcnode}");
            log::error!("CTDB Cluster with mixed versions, cannot continue");
            self.on_shutdown_request(now);
            return;
        };
        let uptime = k.uptime.unwrap_or(0);
        if version != KEEPALIVE_VERSION
            && (uptime > my_uptime || (uptime == my_uptime && version > KEEPALIVE_VERSION))
        {
            log::error!(
                "Keepalive version mismatch 0x{KEEPALIVE_VERSION:08x} != 0x{version:08x} from node {srcnode}"
            );
            log::error!("CTDB Cluster with mixed versions, cannot continue");
            self.on_shutdown_request(now);
        }
    }

    fn uptime_s(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_since(Instant::ZERO).as_secs()).unwrap_or(u32::MAX)
    }

    /// Mirrors `ctdb_check_for_dead_nodes`.
    fn keepalive_tick(&mut self, now: Instant) {
        let limit = self.tunables.keepalive_limit();
        let uptime = self.uptime_s(now);
        let mut dead = Vec::new();
        let mut send = Vec::new();
        for node in &mut self.nodes {
            if node.flags & NODE_FLAGS_DELETED != 0 || node.pnn == self.pnn {
                continue;
            }
            if node.flags & NODE_FLAGS_DISCONNECTED != 0 {
                continue;
            }
            if node.rx_cnt == 0 {
                node.dead_count += 1;
            } else {
                node.dead_count = 0;
            }
            node.rx_cnt = 0;
            if node.dead_count >= limit {
                log::info!("dead count reached for node {}", node.pnn);
                dead.push(node.pnn);
            }
            send.push(node.pnn);
        }
        for pnn in dead {
            self.node_dead(pnn);
            self.effects.push_back(Effect::ResetNode { pnn });
        }
        for pnn in send {
            let packet = Packet {
                generation: self.vnn_map.generation,
                destnode: pnn,
                srcnode: self.pnn,
                reqid: 0,
                body: Body::ReqKeepalive(ReqKeepalive {
                    version: Some(KEEPALIVE_VERSION),
                    uptime: Some(uptime),
                }),
            };
            self.bump(|s| s.keepalive_packets_sent += 1);
            self.send_node_packet(pnn, &packet);
        }
    }

    // ------------------------------------------------------------------------------------
    // Controls

    /// Runs a control on this node. `srcnode` is the PNN the request came from (own PNN for
    /// local clients).
    /// Returns `None` when the reply comes later (the route was parked with [`Daemon::defer`]).
    fn local_control(
        &mut self,
        now: Instant,
        c: &ReqControl,
        srcnode: Pnn,
        route: ReplyRoute,
        host: &dyn Host,
    ) -> Option<ControlResult> {
        let client = self.local_client(c.client_id, srcnode);
        let req = DbRequest {
            opcode: c.opcode,
            srvid: c.srvid,
            flags: c.flags,
            data: &c.data,
            srcnode,
            client,
        };
        let outcome = self.with_dbs(|dbs, ctx| dbs.handle_control(now, &req, ctx));
        match outcome {
            DbControlOutcome::NotMine => {}
            DbControlOutcome::Reply(reply) => {
                // Effects first: DB_PULL's record messages must precede its reply.
                self.run_db_effects(now, host);
                return Some(db_result(reply));
            }
            DbControlOutcome::Deferred(id) => {
                let token = self.defer(route);
                self.db_deferred.insert(id, token);
                self.run_db_effects(now, host);
                return None;
            }
        }
        use ControlOpcode as Op;
        match c.opcode {
            Op::SetRecmode => self.control_set_recmode(now, &c.data, route),
            Op::StartRecovery => self.control_start_recovery(now, srcnode, route, host),
            Op::EndRecovery => {
                self.with_calls(now, |calls, _, ctx| calls.on_recovery_finished(ctx));
                self.control_end_recovery(route)
            }
            Op::UpdateRecord => {
                let status =
                    self.with_dbs(|dbs, ctx| super::call::update_record(dbs, ctx, &c.data));
                Some(ControlResult::status(status))
            }
            Op::Trans3Commit => self.control_trans3_commit(now, c, route),
            Op::Ipreallocated => {
                self.control_event(route, ControlEvent::Ipreallocated, "ipreallocated")
            }
            op if ip_failover::handles(op) => self.failover_control(now, c, srcnode, route),
            _ => Some(self.immediate_control(now, c, srcnode, host)),
        }
    }

    /// Controls answered on the spot.
    fn immediate_control(
        &mut self,
        now: Instant,
        c: &ReqControl,
        srcnode: Pnn,
        host: &dyn Host,
    ) -> ControlResult {
        let data = c.data.as_slice();
        use ControlOpcode as Op;
        match c.opcode {
            Op::ProcessExists => {
                let Some(pid) = exact_u32(data) else {
                    return ControlResult::status(-1);
                };
                let pid = pid.cast_signed();
                let is_client = self.clients.values().any(|cl| cl.pid == pid);
                if is_client && host.process_exists(pid) {
                    if self.own_flags() & NODE_FLAGS_INACTIVE != 0 {
                        // Stock disconnects the client of an inactive node and reports it gone.
                        let victims: Vec<ClientId> = self
                            .clients
                            .iter()
                            .filter(|(_, cl)| cl.pid == pid)
                            .map(|(&id, _)| id)
                            .collect();
                        for id in victims {
                            self.effects.push_back(Effect::CloseClient { client: id });
                        }
                        return ControlResult::status(-1);
                    }
                    ControlResult::status(0)
                } else {
                    ControlResult::status(-1)
                }
            }
            Op::CheckPidSrvid => {
                if data.len() != 12 {
                    return ControlResult::status(-1);
                }
                let pid = i32::from_ne_bytes([data[0], data[1], data[2], data[3]]);
                let mut srvid_bytes = [0u8; 8];
                srvid_bytes.copy_from_slice(&data[4..12]);
                let srvid = u64::from_ne_bytes(srvid_bytes);
                let found = self
                    .clients
                    .iter()
                    .any(|(&id, cl)| cl.pid == pid && self.srvids.is_registered(srvid, id));
                ControlResult::status(if found { 0 } else { -1 })
            }
            Op::Statistics => {
                if !data.is_empty() {
                    return ControlResult::status(-1);
                }
                self.statistics.num_clients = self.clients.len() as u32;
                self.statistics.frozen = u32::from(self.dbs.all_frozen());
                self.statistics.recovering = u32::from(self.recovery_mode == RECOVERY_ACTIVE);
                self.statistics.statistics_current_time = host.wall_clock();
                ControlResult::data(self.statistics.to_bytes())
            }
            Op::StatisticsReset => {
                if !data.is_empty() {
                    return ControlResult::status(-1);
                }
                self.statistics = Statistics {
                    statistics_start_time: host.wall_clock(),
                    ..Statistics::default()
                };
                ControlResult::status(0)
            }
            Op::GetStatHistory => {
                if !data.is_empty() {
                    return ControlResult::status(-1);
                }
                // Stock always sends all MAX_STAT_HISTORY slots, zeroed until they fill up.
                let mut stats: Vec<Statistics> = self.stat_history.iter().copied().collect();
                stats.resize(STAT_HISTORY_LEN, Statistics::default());
                let list = StatisticsList { hole: 0, stats };
                ControlResult::data(list.to_bytes())
            }
            Op::Ping => {
                if !data.is_empty() {
                    return ControlResult::status(-1);
                }
                ControlResult::status(i32::try_from(self.clients.len()).unwrap_or(i32::MAX))
            }
            Op::GetPid => ControlResult::status(self.config.pid),
            Op::GetPnn => ControlResult::status(self.pnn.cast_signed()),
            Op::Getvnnmap => ControlResult::data(self.vnn_map.to_bytes()),
            Op::GetRecmode => ControlResult::status(self.recovery_mode.cast_signed()),
            Op::GetRunstate => {
                if !data.is_empty() {
                    return ControlResult::status(-1);
                }
                ControlResult::data(u32::from(self.runstate).to_bytes())
            }
            Op::GetCapabilities => ControlResult::data(self.capabilities.to_bytes()),
            Op::Uptime => {
                let uptime = Uptime {
                    current_time: host.wall_clock(),
                    ctdbd_start_time: self.config.start_time,
                    last_recovery_started: self.last_recovery_started,
                    last_recovery_finished: self.last_recovery_finished,
                };
                ControlResult::data(uptime.to_bytes())
            }
            Op::GetDebug => {
                if !data.is_empty() {
                    return ControlResult::status(-1);
                }
                ControlResult::data(self.log_level.to_bytes())
            }
            Op::SetDebug => {
                let Some(level) = exact_u32(data) else {
                    return ControlResult::status(-1);
                };
                self.log_level = level.cast_signed();
                self.effects.push_back(Effect::SetLogLevel {
                    level: self.log_level,
                });
                ControlResult::status(0)
            }
            Op::GetTunable => {
                // `struct ctdb_control_get_tunable` is 8 bytes: length, then the name.
                let Some(name) = tunable_name(data, 4, 8) else {
                    return ControlResult::status(-1);
                };
                match self.tunables.get(&name) {
                    Ok(value) => ControlResult::data(value.to_bytes()),
                    Err(_) => ControlResult::status(tunable::GET_UNKNOWN_STATUS),
                }
            }
            Op::SetTunable => {
                // `struct ctdb_tunable_old` is 12 bytes: value, length, then the name.
                let (Some(name), Some(value)) =
                    (tunable_name(data, 8, 12), data.get(..4).and_then(exact_u32))
                else {
                    return ControlResult::status(-1);
                };
                match self.tunables.set(&name, value) {
                    Ok(outcome) => {
                        if outcome == tunable::SetOutcome::Obsolete {
                            log::warn!("Setting obsolete tunable \"{name}\"");
                        }
                        ControlResult::status(outcome.status())
                    }
                    Err(_) => ControlResult::status(tunable::SET_UNKNOWN_STATUS),
                }
            }
            Op::ListTunables => {
                let mut text = tunable::names_to_string().into_bytes();
                text.push(0);
                let mut out = Vec::with_capacity(4 + text.len());
                (text.len() as u32).push(&mut out);
                out.extend_from_slice(&text);
                ControlResult::data(out)
            }
            Op::GetAllTunables => {
                if !data.is_empty() {
                    return ControlResult::status(-1);
                }
                ControlResult::data(self.tunables.to_bytes().to_vec())
            }
            Op::GetNodemap => ControlResult::data(self.node_map().to_bytes()),
            Op::GetNodesFile => match host.read_nodes_file() {
                Ok(nodes) => ControlResult::data(NodeMap { nodes }.to_bytes()),
                Err(e) => {
                    log::error!("Failed to read nodes file: {e}");
                    ControlResult::status(-1)
                }
            },
            Op::GetReclockFile => ControlResult::data(match &self.config.cluster_lock {
                Some(lock) => {
                    let mut v = lock.as_bytes().to_vec();
                    v.push(0);
                    v
                }
                None => Vec::new(),
            }),
            Op::GetBanState => ControlResult::data(self.ban_state.to_bytes()),
            Op::RegisterSrvid => {
                let Some(client) = self.local_client(c.client_id, srcnode) else {
                    return ControlResult::status(-1);
                };
                self.srvids.register(c.srvid, client);
                ControlResult::status(0)
            }
            Op::DeregisterSrvid => {
                let Some(client) = self.local_client(c.client_id, srcnode) else {
                    return ControlResult::status(-1);
                };
                // `srvid_deregister` answers ENOENT for a registration that does not exist.
                const ENOENT: i32 = 2;
                let found = self.srvids.deregister(c.srvid, client);
                ControlResult::status(if found { 0 } else { ENOENT })
            }
            Op::RegisterNotify => self.control_register_notify(c.client_id, srcnode, data),
            Op::DeregisterNotify => self.control_deregister_notify(c.client_id, srcnode, data),
            Op::EchoData => ControlResult::data(data.to_vec()),
            Op::Shutdown => {
                log::info!("Received SHUTDOWN command.");
                self.on_shutdown_request(now);
                ControlResult::status(0)
            }
            Op::Setvnnmap => {
                if self.recovery_mode != RECOVERY_ACTIVE {
                    log::error!("Attempt to set vnnmap when not in recovery");
                    return ControlResult::status(-1);
                }
                match VnnMap::from_bytes_exact(data) {
                    Ok(map) => {
                        log::info!("Setting vnnmap with generation {}", map.generation);
                        self.vnn_map = map;
                        ControlResult::status(0)
                    }
                    Err(_) => ControlResult::status(-1),
                }
            }
            Op::ModifyFlags => match NodeFlagChange::from_bytes_exact(data) {
                Ok(change) => ControlResult::status(self.modify_flags(change)),
                Err(_) => ControlResult::status(-1),
            },
            Op::SetBanState => match BanState::from_bytes_exact(data) {
                Ok(ban) => ControlResult::status(self.set_ban_state(now, ban)),
                Err(_) => ControlResult::status(-1),
            },
            Op::StopNode => {
                log::error!("Stopping node");
                self.own_node_mut().flags |= NODE_FLAGS_STOPPED;
                self.become_inactive(now);
                ControlResult::status(0)
            }
            Op::ContinueNode => {
                log::error!("Continue node");
                self.own_node_mut().flags &= !NODE_FLAGS_STOPPED;
                ControlResult::status(0)
            }
            Op::DisableNode if data.is_empty() => {
                log::error!("Disable node");
                self.own_node_mut().flags |= NODE_FLAGS_PERMANENTLY_DISABLED;
                ControlResult::status(0)
            }
            Op::EnableNode if data.is_empty() => {
                log::error!("Enable node");
                self.own_node_mut().flags &= !NODE_FLAGS_PERMANENTLY_DISABLED;
                ControlResult::status(0)
            }
            Op::SetRecmasterrole | Op::SetLmasterrole => {
                let Some(on) = exact_u32(data) else {
                    return ControlResult::status(-1);
                };
                let bit = if c.opcode == Op::SetRecmasterrole {
                    CAP_RECMASTER
                } else {
                    CAP_LMASTER
                };
                if on == 0 {
                    self.capabilities &= !bit;
                } else {
                    self.capabilities |= bit;
                }
                ControlResult::status(0)
            }
            Op::RecdPing if data.is_empty() => {
                self.last_recd_ping = Some(now);
                self.recd_ping_misses = 0;
                ControlResult::status(0)
            }
            Op::RecdReclockLatency => match <[u8; 8]>::try_from(data) {
                Ok(bytes) => {
                    let latency = f64::from_ne_bytes(bytes);
                    self.bump(|s| record_latency(&mut s.reclock.recd, latency));
                    ControlResult::status(0)
                }
                Err(_) => ControlResult::status(-1),
            },
            op => {
                if op.is_obsolete() {
                    log::error!("Control {} is obsolete", op.name());
                } else {
                    log::error!("Unknown CTDB control opcode {}", u32::from(op));
                }
                ControlResult::status(-1)
            }
        }
    }

    /// Mirrors `ctdb_control_set_recmode`.
    fn control_set_recmode(
        &mut self,
        now: Instant,
        data: &[u8],
        route: ReplyRoute,
    ) -> Option<ControlResult> {
        let Some(recmode) = exact_u32(data) else {
            return Some(ControlResult::status(-1));
        };
        if recmode == self.recovery_mode {
            return Some(ControlResult::status(0));
        }
        let name = if recmode == RECOVERY_NORMAL {
            "NORMAL"
        } else {
            "ACTIVE"
        };
        log::info!("Recovery mode set to {name}");
        if recmode != RECOVERY_NORMAL {
            self.recovery_mode = RECOVERY_ACTIVE;
            self.failover_recovery_mode(now, true);
            if matches!(route, ReplyRoute::Client { .. }) {
                self.tell_recoverd_recmode_active();
            }
            return Some(ControlResult::status(0));
        }
        // Stock stops the deferred release of all addresses before anything can fail.
        self.failover_recovery_mode(now, false);
        // Back to NORMAL: every database must have been recovered into this generation.
        if !self.dbs.generations_match(self.vnn_map.generation) {
            log::error!("Recovery mode set to ACTIVE");
            return Some(ControlResult::status(-1));
        }
        if self.dbs.all_frozen() {
            self.dbs.thaw_all();
        }
        let Some(lock) = self.config.cluster_lock.clone() else {
            self.recovery_mode = RECOVERY_NORMAL;
            self.dbs.process_deferred_attaches(now);
            return Some(ControlResult::status(0));
        };
        // The leader must hold the cluster lock: test that another process cannot take it.
        let token = self.defer(route);
        self.effects
            .push_back(Effect::TestClusterLock { token, lock });
        None
    }

    /// The outcome of the cluster lock test started by SET_RECMODE(NORMAL): `'0'` taken,
    /// `'1'` contention, `'2'` timeout, anything else an error (mirrors `set_recmode_handler`).
    pub fn on_cluster_lock_test(&mut self, now: Instant, token: u64, result: u8, latency_s: f64) {
        let result = match result {
            b'0' => {
                log::error!("ERROR: Daemon able to take recovery lock during recovery");
                ControlResult::error(
                    -1,
                    "Took recovery lock from daemon during recovery - probably a cluster filesystem lock coherence problem",
                )
            }
            b'1' => {
                self.recovery_mode = RECOVERY_NORMAL;
                self.dbs.process_deferred_attaches(now);
                self.bump(|s| record_latency(&mut s.reclock.ctdbd, latency_s));
                ControlResult::status(0)
            }
            b'2' => {
                log::warn!("Time out getting recovery lock, allowing recmode set anyway");
                self.recovery_mode = RECOVERY_NORMAL;
                self.dbs.process_deferred_attaches(now);
                ControlResult::status(0)
            }
            _ => {
                log::error!("Unexpected error when testing recovery lock");
                ControlResult::error(-1, "Unexpected error when testing recovery lock")
            }
        };
        self.finish_deferred(token, result);
    }

    /// Mirrors `ctdb_control_start_recovery`: checks that the leader uses the same cluster
    /// lock, then runs `startrecovery`.
    fn control_start_recovery(
        &mut self,
        now: Instant,
        leader: Pnn,
        route: ReplyRoute,
        host: &dyn Host,
    ) -> Option<ControlResult> {
        log::error!("Recovery has started");
        self.last_recovery_started = host.wall_clock();
        let token = self.defer(route);
        let leader_connected = self
            .nodes
            .get(leader as usize)
            .is_some_and(|n| n.flags & NODE_FLAGS_DISCONNECTED == 0);
        if leader == self.pnn || !leader_connected {
            // Asking ourselves would compare our string with itself; a leader we think is
            // disconnected cannot be asked (stock defers the check the same way).
            self.start_control_event(token, ControlEvent::StartRecovery, "startrecovery");
        } else {
            let c = ReqControl {
                opcode: ControlOpcode::GetReclockFile,
                srvid: 0,
                client_id: 0,
                flags: 0,
                data: Vec::new(),
            };
            self.send_pending_control(now, leader, &c, PendingOwner::ReclockCheck { token });
        }
        None
    }

    /// The leader's cluster lock setting arrived: a mismatch shuts this node down, as in stock.
    fn reclock_check_done(&mut self, token: u64, status: i32, data: &[u8], error: &[u8]) {
        if status != 0 {
            log::error!("GET_RECLOCK failed");
            let error = String::from_utf8_lossy(error).into_owned();
            self.finish_deferred(
                token,
                ControlResult {
                    status,
                    data: Vec::new(),
                    error,
                },
            );
            return;
        }
        let remote = if data.is_empty() {
            None
        } else {
            let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
            Some(String::from_utf8_lossy(&data[..end]).into_owned())
        };
        if remote.as_deref() != self.config.cluster_lock.as_deref() {
            log::error!(
                "Recovery lock configuration inconsistent: recmaster has {}, this node has {}, shutting down",
                remote.as_deref().unwrap_or("NULL"),
                self.config.cluster_lock.as_deref().unwrap_or("NULL")
            );
            self.finish_deferred(token, ControlResult::status(-1));
            self.shutdown(1);
            return;
        }
        log::info!("Recovery lock consistency check successful");
        self.start_control_event(token, ControlEvent::StartRecovery, "startrecovery");
    }

    /// Mirrors `ctdb_control_end_recovery`: runs `recovered`, then counts the recovery.
    /// TRANS3_COMMIT: handled by the call service, which answers the client itself.
    fn control_trans3_commit(
        &mut self,
        now: Instant,
        c: &ReqControl,
        route: ReplyRoute,
    ) -> Option<ControlResult> {
        let ReplyRoute::Client { client, reqid } = route else {
            return Some(ControlResult::status(-1));
        };
        let targets: Vec<Pnn> = self
            .vnn_map
            .map
            .iter()
            .copied()
            .filter(|&p| {
                self.nodes
                    .get(p as usize)
                    .is_some_and(|n| n.flags & NODE_FLAGS_INACTIVE == 0)
            })
            .collect();
        let timeout = Duration::from_secs(u64::from(self.tunables.control_timeout().max(1)));
        let mut reply = None;
        self.with_calls(now, |calls, dbs, ctx| {
            reply = calls.trans3_commit(dbs, ctx, now, client, reqid, c, &targets, timeout);
        });
        reply.map(|(status, error)| ControlResult::error(status, &error))
    }

    fn control_end_recovery(&mut self, route: ReplyRoute) -> Option<ControlResult> {
        log::error!("Recovery has finished");
        self.control_event(route, ControlEvent::Recovered, "recovered")
    }

    fn control_event(
        &mut self,
        route: ReplyRoute,
        kind: ControlEvent,
        event: &str,
    ) -> Option<ControlResult> {
        let token = self.defer(route);
        self.start_control_event(token, kind, event);
        None
    }

    fn start_control_event(&mut self, token: u64, kind: ControlEvent, event: &str) {
        if !self.run_event(EventPurpose::Control { token, kind }, event, Vec::new()) {
            self.finish_deferred(token, ControlResult::status(-1));
        }
    }

    /// An event run for a control finished.
    fn control_event_done(&mut self, now: Instant, token: u64, kind: ControlEvent, result: i32) {
        const ETIMEDOUT: i32 = 110;
        // A hung startrecovery or recovered script does not fail the recovery (stock ignores
        // timeouts of these events).
        let status = match (kind, result) {
            (ControlEvent::StartRecovery | ControlEvent::Recovered, ETIMEDOUT) => 0,
            (_, r) => r,
        };
        if status != 0 {
            log::error!("{kind:?} event script failed (status {status})");
        }
        self.finish_deferred(token, ControlResult::status(status));
        if kind == ControlEvent::Recovered {
            self.bump(|s| s.num_recoveries += 1);
            self.last_recovery_finished = self.wall_clock_at(now);
            self.last_recovery_finished_at = Some(now);
            if self.runstate == Runstate::FirstRecovery {
                self.set_runstate(Runstate::Startup);
            }
        }
    }

    /// Mirrors `ctdb_control_modflags`: another node's flags as the leader sees them.
    fn modify_flags(&mut self, change: NodeFlagChange) -> i32 {
        if change.pnn == self.pnn {
            return 0;
        }
        let runstate = self.runstate;
        let Some(node) = self.nodes.get_mut(change.pnn as usize) else {
            log::error!("Node {} is invalid", change.pnn);
            return -1;
        };
        if node.flags & NODE_FLAGS_DISCONNECTED != 0 {
            return 0;
        }
        let old = node.flags;
        node.flags =
            (old & NODE_FLAGS_DISCONNECTED) | (change.new_flags & !NODE_FLAGS_DISCONNECTED);
        if node.flags == old {
            return 0;
        }
        log::info!(
            "Node {} has changed flags - 0x{old:x} -> 0x{:x}",
            change.pnn,
            node.flags
        );
        if node.flags == 0 && runstate <= Runstate::Startup {
            log::error!(
                "Node {} became healthy - force recovery for startup",
                change.pnn
            );
            self.recovery_mode = RECOVERY_ACTIVE;
        }
        0
    }

    /// Mirrors `ctdb_control_set_ban_state`.
    fn set_ban_state(&mut self, now: Instant, ban: BanState) -> i32 {
        if ban.pnn != self.pnn {
            log::warn!("SET_BAN_STATE control for PNN {} ignored", ban.pnn);
            return -1;
        }
        let already_banned = self.ban_ends.take().is_some();
        if ban.time == 0 {
            log::error!("Unbanning this node");
            self.own_node_mut().flags &= !NODE_FLAGS_BANNED;
            self.ban_state = BanState {
                pnn: self.pnn,
                time: 0,
            };
            return 0;
        }
        if self.tunables.enable_bans() == 0 {
            log::error!("Bans are disabled - ignoring ban of node {}", ban.pnn);
            return 0;
        }
        log::error!("Banning this node for {} seconds", ban.time);
        self.ban_state = ban;
        self.own_node_mut().flags |= NODE_FLAGS_BANNED;
        self.ban_ends = Some(now.saturating_add(Duration::from_secs(u64::from(ban.time))));
        if !already_banned {
            self.become_inactive(now);
        }
        0
    }

    /// Mirrors `ctdb_node_become_inactive`: stop serving database calls until a recovery
    /// includes this node again.
    fn become_inactive(&mut self, now: Instant) {
        log::warn!("Making node INACTIVE");
        self.dbs.become_inactive(now);
        self.vnn_map.generation = INVALID_GENERATION;
        if self.recovery_mode != RECOVERY_ACTIVE {
            log::info!("Recovery mode set to ACTIVE");
            self.recovery_mode = RECOVERY_ACTIVE;
        }
        self.failover_release_all(now);
    }

    /// The local client a control came from, when it came from one (`client_id` is only
    /// meaningful on the node where the client is connected).
    fn local_client(&self, client_id: u32, srcnode: Pnn) -> Option<ClientId> {
        if srcnode != self.pnn {
            return None;
        }
        let id = ClientId::from(client_id);
        self.clients.contains_key(&id).then_some(id)
    }

    fn node_map(&self) -> NodeMap {
        NodeMap {
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeAndFlags {
                    pnn: n.pnn,
                    flags: n.flags,
                    addr: n.addr,
                })
                .collect(),
        }
    }

    // ------------------------------------------------------------------------------------
    // Events and runstates

    /// Asks eventd to run `event`; false when stock's rules forbid it during recovery
    /// (`event_allowed_during_recovery`).
    fn run_event(&mut self, purpose: EventPurpose, event: &str, args: Vec<String>) -> bool {
        const ALLOWED_DURING_RECOVERY: [&str; 6] = [
            "init",
            "setup",
            "startrecovery",
            "shutdown",
            "releaseip",
            "ipreallocated",
        ];
        if self.recovery_mode != RECOVERY_NORMAL && !ALLOWED_DURING_RECOVERY.contains(&event) {
            log::error!("Refusing to run event '{event}' while in recovery");
            return false;
        }
        let id = self.next_event_id;
        self.next_event_id += 1;
        self.events.insert(id, purpose);
        let timeout_s = self.tunables.script_timeout();
        self.effects.push_back(Effect::RunEvent {
            id,
            event: event.to_string(),
            args,
            timeout_s,
        });
        true
    }

    fn set_runstate(&mut self, runstate: Runstate) {
        log::info!(
            "Set runstate to {} ({})",
            runstate.name(),
            u32::from(runstate)
        );
        self.runstate = runstate;
    }

    /// The event daemon finished (or could not run) a `RunEvent`.
    pub fn on_event_done(&mut self, now: Instant, outcome: EventOutcome) {
        let Some(purpose) = self.events.remove(&outcome.id) else {
            return;
        };
        let ok = outcome.result == 0;
        match purpose {
            EventPurpose::Init => {
                if !ok {
                    log::error!("Failed to run init event");
                    self.exit(1);
                    return;
                }
                self.effects.push_back(Effect::StartTransport);
                let interval = u64::from(self.tunables.keepalive_interval().max(1));
                self.next_keepalive = Some(now.saturating_add(Duration::from_secs(interval)));
                self.set_runstate(Runstate::Setup);
                let _ = self.run_event(EventPurpose::Setup, "setup", Vec::new());
            }
            EventPurpose::Setup => {
                if !ok {
                    log::error!("Failed to run setup event");
                    self.exit(1);
                    return;
                }
                self.set_runstate(Runstate::FirstRecovery);
                self.wait_recovered_due = Some(now.saturating_add(Duration::from_secs(1)));
                self.start_recoverd(now);
            }
            EventPurpose::Startup => {
                self.startup_running = false;
                if !ok {
                    log::error!("startup event failed");
                    self.startup_due =
                        Some(now.saturating_add(Duration::from_secs(STARTUP_RETRY_S)));
                    return;
                }
                self.set_runstate(Runstate::Running);
                self.monitor.next_interval_s = MONITOR_FIRST_INTERVAL_S;
                let c = ReqControl {
                    opcode: ControlOpcode::Startup,
                    srvid: 0,
                    client_id: 0,
                    flags: CTRL_FLAG_NOREPLY,
                    data: Vec::new(),
                };
                for pnn in self.broadcast_targets(BROADCAST_CONNECTED) {
                    if pnn != self.pnn {
                        self.send_node_control(pnn, 0, &c);
                    }
                }
                self.schedule_monitor(now);
            }
            EventPurpose::Monitor => {
                self.monitor.running = false;
                self.monitor_done(now, outcome.result);
            }
            EventPurpose::Shutdown => self.exit(self.exit_code),
            EventPurpose::Control { token, kind } => {
                self.control_event_done(now, token, kind, outcome.result);
            }
            EventPurpose::Failover { op } => self.failover_event_done(now, op, outcome.result),
        }
    }

    fn start_recoverd(&mut self, now: Instant) {
        if self.shutting_down || self.recoverd_running {
            return;
        }
        self.recoverd_running = true;
        self.recoverd_restart_due = None;
        self.last_recd_ping = Some(now);
        self.recd_ping_misses = 0;
        self.effects.push_back(Effect::StartRecoverd);
    }

    /// The recovery daemon exited: start another one shortly, as stock's `ctdb_check_recd`
    /// does (unless the daemon is shutting down).
    pub fn on_recoverd_exited(&mut self, now: Instant) {
        self.recoverd_running = false;
        if self.shutting_down {
            return;
        }
        log::error!("Recovery daemon has exited, restarting it");
        self.recoverd_restart_due = Some(now.saturating_add(Duration::from_secs(1)));
    }

    /// Mirrors `ctdb_recd_ping_timeout`: after `RecdFailCount` silent `RecdPingTimeout`
    /// periods the recovery daemon is restarted.
    fn recd_ping_check(&mut self, now: Instant) {
        let Some(last) = self.last_recd_ping else {
            return;
        };
        let period = Duration::from_secs(u64::from(self.tunables.recd_ping_timeout().max(1)));
        if now.saturating_since(last) < period {
            return;
        }
        self.recd_ping_misses += 1;
        self.last_recd_ping = Some(now);
        log::error!(
            "Recovery daemon ping timeout. Count : {}",
            self.recd_ping_misses
        );
        if self.recd_ping_misses >= self.tunables.recd_ping_failcount() && self.recoverd_running {
            log::error!("Final timeout for recovery daemon ping. Restarting recovery daemon");
            self.effects.push_back(Effect::StopRecoverd);
        }
    }

    fn recd_ping_due(&self) -> Option<Instant> {
        let last = self.last_recd_ping?;
        let period = Duration::from_secs(u64::from(self.tunables.recd_ping_timeout().max(1)));
        Some(last.saturating_add(period))
    }

    /// Mirrors `ctdb_wait_until_recovered`: once a recovery has given this node a generation
    /// and recovery mode is back to NORMAL, run `startup`. Outside test mode stock also waits
    /// `RerecoveryTimeout + 3` seconds after the last recovery, in case another follows.
    fn wait_until_recovered(&mut self, now: Instant) {
        self.wait_recovered_due = Some(now.saturating_add(Duration::from_secs(1)));
        if self.vnn_map.generation == INVALID_GENERATION || self.recovery_mode != RECOVERY_NORMAL {
            return;
        }
        if !self.config.test_mode {
            let settle = Duration::from_secs(u64::from(self.tunables.rerecovery_timeout()) + 3);
            let finished = self.last_recovery_finished_at.unwrap_or(Instant::ZERO);
            if now.saturating_since(finished) < settle {
                return;
            }
        }
        self.wait_recovered_due = None;
        self.start_startup_event(now);
    }

    fn start_startup_event(&mut self, now: Instant) {
        if self.startup_running || self.runstate >= Runstate::Running {
            return;
        }
        self.startup_running = self.run_event(EventPurpose::Startup, "startup", Vec::new());
        if !self.startup_running {
            self.startup_due = Some(now.saturating_add(Duration::from_secs(STARTUP_RETRY_S)));
        }
    }

    fn schedule_monitor(&mut self, now: Instant) {
        let interval = self.monitor.next_interval_s;
        self.monitor.due = Some(now.saturating_add(Duration::from_secs(interval)));
    }

    /// Mirrors `ctdb_health_callback`.
    fn monitor_done(&mut self, now: Instant, result: i32) {
        const ECANCELED: i32 = 125;
        const ETIMEDOUT: i32 = 110;
        let old_flags = self.own_flags();
        let mut change_health = true;
        if result == ECANCELED {
            log::error!("Monitoring event was cancelled");
            change_health = false;
        } else if result == ETIMEDOUT {
            self.monitor.timeouts_in_a_row += 1;
            let limit = self.tunables.monitor_timeout_count();
            if self.monitor.timeouts_in_a_row >= limit {
                log::error!("Maximum monitor timeout count {limit} reached. Making node unhealthy");
            } else {
                change_health = false;
            }
        } else {
            self.monitor.timeouts_in_a_row = 0;
        }
        if change_health {
            if result != 0 && old_flags & NODE_FLAGS_UNHEALTHY == 0 {
                log::info!("monitor event failed - disabling node");
                self.own_node_mut().flags |= NODE_FLAGS_UNHEALTHY;
                self.monitor.next_interval_s = MONITOR_AFTER_CHANGE_INTERVAL_S;
            } else if result == 0 && old_flags & NODE_FLAGS_UNHEALTHY != 0 {
                log::info!("monitor event OK - node re-enabled");
                self.own_node_mut().flags &= !NODE_FLAGS_UNHEALTHY;
                self.monitor.next_interval_s = MONITOR_AFTER_CHANGE_INTERVAL_S;
            }
        }
        let this_interval = self.monitor.next_interval_s;
        let max = u64::from(self.tunables.monitor_interval().max(1));
        self.monitor.next_interval_s = (this_interval * 2).min(max);
        self.monitor.due = Some(now.saturating_add(Duration::from_secs(this_interval)));
        if self.own_flags() != old_flags {
            self.health_changed(old_flags);
        }
    }

    fn monitor_tick(&mut self, now: Instant) {
        self.monitor.due = None;
        let skip = self.recovery_mode != RECOVERY_NORMAL
            || self.own_flags() & NODE_FLAGS_INACTIVE != 0
            || self.runstate != Runstate::Running;
        if skip || self.monitor.running {
            self.schedule_monitor(now);
            return;
        }
        self.monitor.running = self.run_event(EventPurpose::Monitor, "monitor", Vec::new());
        if !self.monitor.running {
            self.monitor.next_interval_s = MONITOR_AFTER_CHANGE_INTERVAL_S;
            self.schedule_monitor(now);
        }
    }

    /// SIGTERM/SIGINT, or EOF on a piped stdin in test mode: start the shutdown sequence.
    pub fn on_shutdown_request(&mut self, _now: Instant) {
        self.shutdown(0);
    }

    /// Mirrors `ctdb_shutdown_sequence(ctdb, exit_code)`.
    fn shutdown(&mut self, exit_code: i32) {
        if self.shutting_down {
            return;
        }
        self.exit_code = exit_code;
        self.wait_recovered_due = None;
        self.recoverd_restart_due = None;
        self.last_recd_ping = None;
        if self.recoverd_running {
            self.effects.push_back(Effect::StopRecoverd);
        }
        self.shutting_down = true;
        self.set_runstate(Runstate::Shutdown);
        self.next_keepalive = None;
        self.monitor.due = None;
        self.startup_due = None;
        let _ = self.run_event(EventPurpose::Shutdown, "shutdown", Vec::new());
    }

    fn exit(&mut self, code: i32) {
        self.effects.push_back(Effect::Exit { code });
    }

    // ------------------------------------------------------------------------------------
    // Time

    /// Runs whatever timers are due at `now`; a no-op when nothing is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.handle_timeout_with_backlog(now, &NoBacklog);
    }

    /// [`Daemon::handle_timeout`] with the shell's queue fill levels, which pace traverses.
    pub fn handle_timeout_with_backlog(&mut self, now: Instant, backlog: &dyn Backlog) {
        if let Some(due) = self.next_keepalive {
            if now >= due {
                self.keepalive_tick(now);
                let interval = u64::from(self.tunables.keepalive_interval().max(1));
                self.next_keepalive = Some(now.saturating_add(Duration::from_secs(interval)));
            }
        }
        if self.monitor.due.is_some_and(|due| now >= due) {
            self.monitor_tick(now);
        }
        if self.startup_due.is_some_and(|due| now >= due) {
            self.startup_due = None;
            self.start_startup_event(now);
        }
        if self.wait_recovered_due.is_some_and(|due| now >= due) {
            self.wait_until_recovered(now);
        }
        if self.recoverd_restart_due.is_some_and(|due| now >= due) {
            self.start_recoverd(now);
        }
        if self.recd_ping_due().is_some_and(|due| now >= due) {
            self.recd_ping_check(now);
        }
        if self.ban_ends.is_some_and(|due| now >= due) {
            self.ban_ends = None;
            log::error!("Banning timed out");
            self.own_node_mut().flags &= !NODE_FLAGS_BANNED;
            self.ban_state = BanState {
                pnn: self.pnn,
                time: 0,
            };
        }
        self.failover_timeout(now);
        if now >= self.next_stat_history {
            self.stat_history_tick(now);
            let interval = u64::from(self.tunables.stat_history_interval().max(1));
            self.next_stat_history = now.saturating_add(Duration::from_secs(interval));
        }
        if self.calls.poll_timeout().is_some_and(|due| now >= due) {
            self.with_calls(now, |calls, dbs, ctx| calls.handle_timeout(dbs, ctx, now));
        }
        if self.dbs.poll_timeout().is_some_and(|due| now >= due)
            || self.dbs.walks_wait_for_readers()
        {
            let congested_srvids: Vec<u64> = self
                .dbs
                .local_pull_srvids()
                .into_iter()
                .filter(|&srvid| {
                    self.srvids
                        .exact_targets(srvid)
                        .into_iter()
                        .any(|client| backlog.client_bytes(client) > TRAVERSE_BACKLOG_LIMIT)
                })
                .collect();
            let congested = |sink: TraverseSink| match sink {
                TraverseSink::Client(client) => {
                    backlog.client_bytes(client) > TRAVERSE_BACKLOG_LIMIT
                }
                TraverseSink::Node(pnn) => backlog.node_bytes(pnn) > TRAVERSE_BACKLOG_LIMIT,
                TraverseSink::Srvid(srvid) => congested_srvids.contains(&srvid),
            };
            self.with_dbs(|dbs, ctx| dbs.handle_timeout_paced(now, ctx, &congested));
            self.run_db_effects(now, &NoHostQueries);
        }
        if self.dbs.vacuum_timeout().is_some_and(|due| now >= due) {
            let peers: Vec<Pnn> = self
                .broadcast_targets(BROADCAST_ACTIVE)
                .into_iter()
                .filter(|&pnn| pnn != self.pnn)
                .collect();
            let recovery_active = self.recovery_mode == RECOVERY_ACTIVE;
            let map = self.vnn_map.map.clone();
            let tunables = (
                self.tunables.vacuum_interval(),
                self.tunables.vacuum_fast_path_count(),
            );
            self.dbs
                .run_due_vacuums(now, recovery_active, &map, &peers, tunables);
            self.run_db_effects(now, &NoHostQueries);
            self.start_repack();
        }
        let expired: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.deadline)
            .map(|(&id, _)| id)
            .collect();
        for reqid in expired {
            if let Some(p) = self.pending.remove(&reqid) {
                self.bump(|s| s.timeouts.control += 1);
                self.pending_failed(p.owner, -1, Vec::new(), b"ctdb_control timed out");
            }
        }
    }

    /// Mirrors `ctdb_statistics_update`: the current slot becomes history and a new one starts.
    fn stat_history_tick(&mut self, now: Instant) {
        let wall = self.wall_clock_at(now);
        let fresh = Statistics {
            statistics_start_time: wall,
            ..Statistics::default()
        };
        let mut snapshot = std::mem::replace(&mut self.statistics_current, fresh);
        snapshot.statistics_current_time = wall;
        if self.stat_history.len() == STAT_HISTORY_LEN {
            self.stat_history.pop_back();
        }
        self.stat_history.push_front(snapshot);
    }

    /// Wall-clock time at monotonic `now`: the start time plus the time since start. Timers and
    /// history stamps use it so that the core never needs to ask the host for the time.
    fn wall_clock_at(&self, now: Instant) -> Timeval {
        let start = self.config.start_time;
        let micros = now
            .micros
            .saturating_add(u64::try_from(start.tv_usec).unwrap_or(0));
        Timeval {
            tv_sec: start
                .tv_sec
                .saturating_add(i64::try_from(micros / 1_000_000).unwrap_or(i64::MAX)),
            tv_usec: i64::try_from(micros % 1_000_000).unwrap_or(0),
        }
    }

    /// The earliest instant at which `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.next_keepalive,
            self.monitor.due,
            self.startup_due,
            self.wait_recovered_due,
            self.ban_ends,
            self.recoverd_restart_due,
            self.recd_ping_due(),
            Some(self.next_stat_history),
            self.pending.values().map(|p| p.deadline).min(),
            self.takeover.next_deadline(),
            self.calls.poll_timeout(),
            self.dbs.poll_timeout(),
            self.dbs.vacuum_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next effect for the shell to execute.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// Applies a counter update to both the running totals and the current history slot.
    fn bump(&mut self, f: impl Fn(&mut Statistics)) {
        f(&mut self.statistics);
        f(&mut self.statistics_current);
    }
}

/// The outcome of running a control locally: what goes into the REPLY_CONTROL.
#[derive(Debug)]
struct ControlResult {
    status: i32,
    data: Vec<u8>,
    error: String,
}

impl ControlResult {
    fn status(status: i32) -> Self {
        ControlResult {
            status,
            data: Vec::new(),
            error: String::new(),
        }
    }
    fn data(data: Vec<u8>) -> Self {
        ControlResult {
            status: 0,
            data,
            error: String::new(),
        }
    }
    fn error(status: i32, error: &str) -> Self {
        ControlResult {
            status,
            data: Vec::new(),
            error: error.to_string(),
        }
    }
}

/// The name in a tunable control: a u32 length at `len_at`, the name right after it, and at
/// least `min_len` bytes in all (the C struct size), as `ctdb_control_{get,set}_tunable` check.
/// The name ends at its length or its first NUL, whichever comes first.
fn tunable_name(data: &[u8], name_at: usize, min_len: usize) -> Option<String> {
    if data.len() < min_len {
        return None;
    }
    let len = exact_u32(data.get(name_at - 4..name_at)?)? as usize;
    let raw = data.get(name_at..)?.get(..len)?;
    let raw = raw.split(|&b| b == 0).next().unwrap_or(raw);
    Some(String::from_utf8_lossy(raw).into_owned())
}

/// Adds one sample (seconds) to a latency counter, as `CTDB_UPDATE_RECLOCK_LATENCY` does.
fn record_latency(counter: &mut LatencyCounter, latency: f64) {
    if counter.num == 0 || latency < counter.min {
        counter.min = latency;
    }
    if latency > counter.max {
        counter.max = latency;
    }
    counter.total += latency;
    counter.num += 1;
}

fn db_result(reply: DbReply) -> ControlResult {
    ControlResult {
        status: reply.status,
        data: reply.data,
        error: reply.error.unwrap_or_default(),
    }
}

fn exact_u32(data: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(data).ok().map(u32::from_ne_bytes)
}

fn is_broadcast_dest(destnode: u32) -> bool {
    matches!(
        destnode,
        BROADCAST_ALL | BROADCAST_ACTIVE | BROADCAST_CONNECTED
    )
}

/// Client ids travel in the 32-bit `client_id` field; the shell numbers clients from 1 and a
/// daemon would need four billion connections to wrap.
fn client_id_u32(client: ClientId) -> u32 {
    u32::try_from(client).unwrap_or(u32::MAX)
}

mod call_stats;
mod ip_failover;
#[cfg(test)]
mod tests;
