//! The recovery daemon's sans-IO core (mirrors `ctdb/server/ctdb_recoverd.c`, with the
//! receiver-side facts it relies on from `ctdb_recover.c`, `ctdb_banning.c` and
//! `ctdb_monitor.c`).
//!
//! The recovery daemon is a *client* of its local ctdbd: every control it sends goes to the
//! local daemon, which forwards it when the destination is another node. Stock runs one
//! blocking `main_loop` a second and nests event loops wherever it waits for a reply; here each
//! of those waits is an explicit state (module `main_loop`), replies come back as inputs, and the
//! shell executes [`Effect`]s. Timers (the 1 s leader broadcast, the leader timeout, the
//! election timeout and resend, disabled operations, control deadlines, the 1 s main-loop
//! pace) are deadlines the shell honours through [`Recoverd::poll_timeout`].
//!
//! Inputs: [`Recoverd::handle_timeout`], [`Recoverd::on_control_reply`],
//! [`Recoverd::on_control_failed`], [`Recoverd::on_message`], [`Recoverd::on_helper_done`],
//! [`Recoverd::on_cluster_lock`], [`Recoverd::on_terminate`].
//!
//! Stock's nesting matters in one place: while it is inside `force_election` or a cluster lock
//! take, its main loop cannot move on, whereas messages and timers still run. The same holds
//! here (`Recoverd::main_loop_blocked`): main-loop replies and helper results are held back
//! and no new loop starts. Every other wait (a control, a helper) lets messages and timers run
//! in stock as well, so they simply interleave with the loop here.
//!
//! Behaviour is stock 4.17's, with these deliberate differences (all listed in
//! [`Extensions`] or below, each safe for mixed clusters because nothing on the wire changes):
//!
//! * A follower whose node map shows the current leader DISCONNECTED starts an election at
//!   once instead of waiting for the leader timeout ([`Extensions::election_on_leader_disconnect`]).
//! * A LEADER(unknown) broadcast without a cluster lock arms the election timeout when none is
//!   armed, so a lost ELECTION message cannot leave this node "in an election" forever
//!   ([`Extensions::bounded_unknown_leader_election`]).
//! * Controls stock sends without a timeout (GET_DEBUG, RECD_PING) use `RecoverTimeout`.
//! * The election data is computed from the cached node map; stock fetches a fresh node map
//!   first but uses it only for `num_connected`, which no receiver reads.
//! * Remote node maps shorter than ours are not indexed out of bounds (stock reads past them).
//! * Messages with short payloads are ignored (stock reads ELECTION and PUSH_NODE_FLAGS
//!   payloads without a size check).
//! * With a cluster lock the holder always leads ([`Extensions::lock_holder_leads`]).
//! * The leader timeout restarts when an election ends
//!   ([`Extensions::leader_timeout_restarts_after_election`]).
//! * A second `force_election` while one is still setting recovery mode is ignored.
//! * A recovery that fails while refreshing capabilities or pushing flags ends the
//!   "recovery in progress" state (stock leaves it set until the next successful recovery,
//!   so DISABLE_RECOVERIES answers -EAGAIN meanwhile).
//!
//! Not done here: `maybe_log_cluster_state` (a "cluster incomplete" log line every 60 s), the
//! talloc report of MEM_DUMP (a one-line summary is sent instead), and passing SIGHUP on to a
//! running helper (the shell's job).

mod banning;
mod election;
mod main_loop;
mod ops;

#[cfg(test)]
mod tests;

use crate::common::clock::Instant;
use crate::common::tunable::{Tunables, TUNABLE_COUNT};
use crate::protocol::control::ControlReplyData;
use crate::protocol::header::{BROADCAST_CONNECTED, CURRENT_NODE, UNKNOWN_PNN};
use crate::protocol::helper::ClusterMutexResult;
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::srvid;
use crate::protocol::types::{node_flags, IfaceList, NodeMap, Runstate};
use crate::protocol::{Marshal, SockAddr, Timeval};
use banning::BanCredits;
use main_loop::Cycle;
use ops::OpState;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

pub use ops::EAGAIN_NEG;

/// A node number.
pub type Pnn = u32;

/// Names one control sent by the core; replies and failures come back with it.
pub type Token = u64;

/// `CTDB_CAP_RECMASTER`: the node may become leader.
pub const CAP_RECMASTER: u32 = 0x1;
/// `CTDB_CAP_LMASTER`: the node may be an lmaster (be in the vnn map).
pub const CAP_LMASTER: u32 = 0x2;
/// `CTDB_RECOVERY_NORMAL` / `CTDB_RECOVERY_ACTIVE`.
pub const RECOVERY_NORMAL: u32 = 0;
pub const RECOVERY_ACTIVE: u32 = 1;

/// How long the leader's recovery daemon waits for the cluster lock (stock: 120 s).
pub const CLUSTER_LOCK_TAKE_TIMEOUT: Duration = Duration::from_secs(120);
/// Resend delay of our election message after receiving one we would beat.
pub const ELECTION_RESEND_DELAY: Duration = Duration::from_millis(500);
/// Election timeout while `fast_start` (test mode) is set.
pub const FAST_START_ELECTION_TIMEOUT: Duration = Duration::from_millis(500);
/// Period of the leader broadcast loop.
pub const LEADER_BROADCAST_INTERVAL: Duration = Duration::from_secs(1);
/// How long the leader disables takeover runs on the other nodes while it runs one.
pub const TAKEOVER_RUN_DISABLE_S: u32 = 60;

/// The srvids the recovery daemon listens on, in stock's registration order.
pub const REGISTERED_SRVIDS: [u64; 12] = [
    srvid::MEM_DUMP,
    srvid::BANNING,
    srvid::ELECTION,
    srvid::SET_NODE_FLAGS,
    srvid::PUSH_NODE_FLAGS,
    srvid::RELOAD_NODES,
    srvid::TAKEOVER_RUN,
    srvid::DISABLE_IP_CHECK,
    srvid::REBALANCE_NODE,
    srvid::DISABLE_TAKEOVER_RUNS,
    srvid::DISABLE_RECOVERIES,
    srvid::LEADER,
];

/// Where stock and this implementation part ways on purpose. `Default` enables every
/// extension; [`Extensions::STOCK`] is stock 4.17 behaviour (for simulations of mixed
/// clusters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extensions {
    /// Force an election as soon as the node map shows the leader DISCONNECTED.
    pub election_on_leader_disconnect: bool,
    /// Without a cluster lock, LEADER(unknown) arms the election timeout if none is armed.
    pub bounded_unknown_leader_election: bool,
    /// With a cluster lock, the holder is the leader: a LEADER broadcast naming another node
    /// is stale and ignored while we hold the lock, and an election that finds the lock
    /// already held makes us leader. Stock can end in a permanent stalemate otherwise: an old
    /// leader's broadcast that arrives just after we took the lock makes us follow a node
    /// that no longer leads, while we keep the lock nobody else can take.
    pub lock_holder_leads: bool,
    /// When an ELECTION-message election ends, a running leader timeout starts afresh. Stock
    /// lets a timer armed before the election run on, so a node that never saw the
    /// LEADER(unknown) can time out before the winner's first broadcast and start a second,
    /// needless election.
    pub leader_timeout_restarts_after_election: bool,
    /// Listen on [`srvid::CTDB_RS_LINK_CHANGE`] and run the main loop as soon as a node's link
    /// changes, instead of at the next once-a-second pass (a dead node's addresses move and a
    /// leader's death is noticed up to a second sooner; the pass itself is stock's).
    pub wake_on_link_change: bool,
    /// Cold start with a cluster lock: once every node of the map is connected and no leader
    /// has been heard of, try the lock at once instead of waiting for the leader timeout (5 s).
    /// Whoever holds the lock leads, so getting it starts the election that makes us leader,
    /// and failing it (somebody leads already) changes nothing.
    pub startup_lock_probe: bool,
    /// Listen on [`srvid::CTDB_RS_RECMODE_ACTIVE`]: when a client sets our node's recovery
    /// mode to ACTIVE and we lead, the main loop runs at once and starts the recovery, instead
    /// of finding the mode at its next once-a-second pass. A loop already running is left
    /// alone (it is the recovery itself, or an election, whose helper sets the mode too).
    pub wake_on_recmode_active: bool,
}

impl Extensions {
    pub const STOCK: Extensions = Extensions {
        election_on_leader_disconnect: false,
        bounded_unknown_leader_election: false,
        lock_holder_leads: false,
        leader_timeout_restarts_after_election: false,
        wake_on_link_change: false,
        startup_lock_probe: false,
        wake_on_recmode_active: false,
    };
}

impl Default for Extensions {
    fn default() -> Self {
        Extensions {
            election_on_leader_disconnect: true,
            bounded_unknown_leader_election: true,
            lock_holder_leads: true,
            leader_timeout_restarts_after_election: true,
            wake_on_link_change: true,
            startup_lock_probe: true,
            wake_on_recmode_active: true,
        }
    }
}

/// What the recovery daemon inherits from its parent at start-up.
#[derive(Debug, Clone)]
pub struct RecoverdConfig {
    pub pnn: Pnn,
    /// Entries in the nodes file (`ctdb->num_nodes`), deleted ones included.
    pub num_nodes: u32,
    /// `[cluster] cluster lock`; `None` runs elections with ELECTION messages.
    pub cluster_lock: Option<String>,
    /// `[cluster] leader timeout` in seconds.
    pub leader_timeout_s: u32,
    /// The daemon's capabilities at fork time; refreshed from GET_CAPABILITIES.
    pub capabilities: u32,
    /// The daemon's tunables at fork time; refreshed every loop.
    pub tunables: Tunables,
    /// `[failover] disabled`.
    pub failover_disabled: bool,
    /// `do_checkpublicip` (false in test mode).
    pub check_public_ips: bool,
    /// `fast_start` (test mode): the first election times out after 0.5 s.
    pub fast_start: bool,
    /// Seed of the generation-number generator (stock: `srandom(getpid() ^ time(NULL))`).
    pub seed: u64,
    pub extensions: Extensions,
}

/// Synchronous questions the core asks its host.
pub trait RecoverdHost {
    /// Whether the parent ctdbd still exists (`kill(ctdbd_pid, 0) == 0`).
    fn ctdbd_alive(&self) -> bool;
    /// Wall-clock time: election priority times are real timestamps compared across nodes.
    fn wall_clock(&self) -> Timeval;
    /// Whether `addr` is configured on a local interface (`ctdb_sys_have_ip`).
    fn have_ip(&self, addr: &SockAddr) -> bool;
    /// Entries in the nodes file read afresh, or why it could not be read.
    fn read_nodes_file(&self) -> Result<u32, String>;
}

/// The two helper programs the recovery daemon runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HelperKind {
    Recovery,
    Takeover,
}

/// What the cluster mutex handle reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClusterLockEvent {
    /// `'0'`; latency of the take in seconds.
    Taken { latency: f64 },
    /// `'1'`.
    Contention,
    /// `'2'`, produced by the parent when the take timeout expires.
    Timeout,
    /// `'3'`, a missing byte, or anything else.
    Error,
    /// The helper exited after taking the lock.
    Lost,
}

impl From<crate::server::cluster_mutex::ClusterMutexEvent> for ClusterLockEvent {
    fn from(event: crate::server::cluster_mutex::ClusterMutexEvent) -> Self {
        use crate::server::cluster_mutex::ClusterMutexEvent as E;
        match event {
            E::Result { result, latency } => Self::from_result(result, latency.as_secs_f64()),
            E::Lost => ClusterLockEvent::Lost,
        }
    }
}

impl ClusterLockEvent {
    /// The first answer of a cluster mutex helper.
    pub fn from_result(result: ClusterMutexResult, latency: f64) -> Self {
        match result {
            ClusterMutexResult::Taken => ClusterLockEvent::Taken { latency },
            ClusterMutexResult::Contended => ClusterLockEvent::Contention,
            ClusterMutexResult::Timeout => ClusterLockEvent::Timeout,
            ClusterMutexResult::Error | ClusterMutexResult::Unknown(_) => ClusterLockEvent::Error,
        }
    }
}

/// Work for the shell.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// REGISTER_SRVID on the connection to the local daemon (sent at start-up).
    RegisterSrvid { srvid: u64 },
    /// A control through the local daemon. The core enforces `timeout` itself; the shell may
    /// too (a late reply or failure for a finished token is ignored).
    SendControl {
        token: Token,
        destnode: u32,
        opcode: ControlOpcode,
        srvid: u64,
        flags: u32,
        data: Vec<u8>,
        timeout: Duration,
    },
    /// A message through the local daemon.
    SendMessage {
        destnode: u32,
        srvid: u64,
        data: Vec<u8>,
    },
    /// Run `ctdb_recovery_helper <fd> <socket> <generation>`; report with `on_helper_done`.
    StartRecoveryHelper { generation: u32 },
    /// Run `ctdb_takeover_helper <fd> <socket> [pnn,...]`; report with `on_helper_done`.
    StartTakeoverHelper { force_rebalance: Vec<Pnn> },
    /// SIGKILL a running helper; no `on_helper_done` is expected for it any more.
    KillHelper { kind: HelperKind },
    /// Start the cluster mutex helper; report with `on_cluster_lock(id, ..)`.
    TakeClusterLock { id: u64, timeout: Duration },
    /// Stop the cluster mutex helper of take `id` (held or still being taken).
    ReleaseClusterLock { id: u64 },
    /// Set this process's log level (Samba numeric level, from GET_DEBUG).
    SetLogLevel { level: i32 },
    /// Exit the process with `code`.
    Exit { code: i32 },
}

/// Counters for tests, simulations and `MEM_DUMP`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoverdStats {
    pub elections_started: u64,
    pub recoveries_started: u64,
    pub recoveries_completed: u64,
    pub recoveries_failed: u64,
    pub takeover_runs: u64,
    pub bans_sent: u64,
    pub main_loops: u64,
}

/// The result of one control to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// The control completed with a reply.
    Reply { status: i32, data: Vec<u8> },
    /// No reply: timeout, or the connection to the daemon failed.
    Failed,
}

impl Outcome {
    /// Stock's async-control success: a reply with status 0.
    fn ok(&self) -> bool {
        matches!(self, Outcome::Reply { status: 0, .. })
    }

    fn reply_data(&self, opcode: ControlOpcode) -> Option<ControlReplyData> {
        match self {
            Outcome::Reply { status: 0, data } => {
                crate::protocol::control::pull_reply_data(opcode, data).ok()
            }
            _ => None,
        }
    }
}

/// Why a batch of controls was sent, so the results can be routed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Purpose {
    /// Nobody waits (bans, pings, latency reports).
    Ignore,
    /// A step of the main loop.
    Cycle { cycle: u64, step: main_loop::Step },
    /// `force_election`: SET_RECMODE(ACTIVE) on all active nodes.
    ForceElection,
    /// PUSH_NODE_FLAGS: the leader's node map, then MODIFY_FLAGS with the message payload.
    PushFlagsNodemap { change: Vec<u8>, pnn: u32 },
}

#[derive(Debug)]
struct Batch {
    purpose: Purpose,
    opcode: ControlOpcode,
    remaining: usize,
    results: Vec<(Pnn, Outcome)>,
}

/// A finished batch waiting to be routed: why it was sent, the opcode, and each node's result.
type Completed = (Purpose, ControlOpcode, Vec<(Pnn, Outcome)>);

/// Main-loop input held back while the main loop is blocked.
#[derive(Debug)]
enum Deferred {
    Step(main_loop::Step, ControlOpcode, Vec<(Pnn, Outcome)>),
    HelperDone(HelperKind, i32),
}

#[derive(Debug)]
struct PendingControl {
    batch: u64,
    pnn: Pnn,
    deadline: Instant,
}

/// Who waits for a cluster lock take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LockWaiter {
    /// `cluster_lock_election`.
    Election,
    /// [`Extensions::startup_lock_probe`].
    StartupProbe,
    /// The end of an ELECTION-message election.
    ElectionTimeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LockState {
    None,
    Taking { id: u64, waiter: LockWaiter },
    Held { id: u64 },
}

/// The recovery daemon of one node.
#[derive(Debug)]
pub struct Recoverd {
    config: RecoverdConfig,
    pnn: Pnn,
    num_nodes: u32,
    capabilities: u32,
    tunables: Tunables,
    runstate: Runstate,
    log_level: Option<i32>,

    leader: u32,
    nodemap: Option<NodeMap>,
    node_flags: u32,
    priority_time: Timeval,
    need_takeover_run: bool,
    need_recovery: bool,
    fast_start: bool,

    election_in_progress: bool,
    election_timeout: Option<Instant>,
    send_election_at: Option<Instant>,
    leader_broadcast_at: Option<Instant>,
    leader_broadcast_timeout_at: Option<Instant>,
    force_election_pending: bool,
    /// `force_election` is waiting for its ELECTION-message election to end.
    force_election_waiting: bool,
    /// Main-loop work that completed while the main loop was blocked (see
    /// [`Recoverd::main_loop_blocked`]), replayed in order once it is not.
    deferred: VecDeque<Deferred>,

    ban_credits: BanCredits,
    last_culprit_node: u32,
    /// Queued TAKEOVER_RUN requests, newest first (stock prepends).
    reallocate_requests: Vec<crate::protocol::types::SrvidMessage>,
    takeover_run: OpState,
    recovery: OpState,
    ifaces: Option<IfaceList>,
    /// PNNs to rebalance onto at the next takeover run, and a version that changes whenever
    /// the list is replaced (stock compares the array pointer).
    force_rebalance: Option<Vec<Pnn>>,
    force_rebalance_version: u64,
    /// Capabilities per PNN from the last GET_CAPABILITIES round.
    caps: Vec<Option<u32>>,
    frozen_on_inactive: bool,

    lock: LockState,
    next_lock_id: u64,
    helper: Option<HelperKind>,

    next_token: Token,
    pending: BTreeMap<Token, PendingControl>,
    next_batch: u64,
    batches: BTreeMap<u64, Batch>,
    ready: VecDeque<Completed>,
    cycle: Option<Cycle>,
    /// A link changed while a main-loop pass was running: start the next one at once.
    rerun_cycle: bool,
    next_cycle_id: u64,
    next_cycle_at: Option<Instant>,

    rng_state: u64,
    /// [`Extensions::startup_lock_probe`] has not been tried yet.
    startup_probe_pending: bool,
    exited: bool,
    stats: RecoverdStats,
    effects: VecDeque<Effect>,
}

impl Recoverd {
    /// Starts the recovery daemon (`monitor_cluster`): registers its srvids and runs the first
    /// main loop at once.
    pub fn new(config: RecoverdConfig, now: Instant, host: &dyn RecoverdHost) -> Self {
        let mut effects = VecDeque::new();
        for srvid in REGISTERED_SRVIDS {
            effects.push_back(Effect::RegisterSrvid { srvid });
        }
        if config.extensions.wake_on_link_change {
            effects.push_back(Effect::RegisterSrvid {
                srvid: srvid::CTDB_RS_LINK_CHANGE,
            });
        }
        if config.extensions.wake_on_recmode_active {
            effects.push_back(Effect::RegisterSrvid {
                srvid: srvid::CTDB_RS_RECMODE_ACTIVE,
            });
        }
        Recoverd {
            pnn: config.pnn,
            num_nodes: config.num_nodes,
            capabilities: config.capabilities,
            tunables: config.tunables,
            runstate: Runstate::UnknownState,
            log_level: None,
            leader: UNKNOWN_PNN,
            nodemap: None,
            rerun_cycle: false,
            node_flags: 0,
            priority_time: host.wall_clock(),
            need_takeover_run: false,
            need_recovery: false,
            fast_start: config.fast_start,
            election_in_progress: false,
            election_timeout: None,
            send_election_at: None,
            leader_broadcast_at: None,
            leader_broadcast_timeout_at: None,
            force_election_pending: false,
            force_election_waiting: false,
            deferred: VecDeque::new(),
            ban_credits: BanCredits::default(),
            last_culprit_node: UNKNOWN_PNN,
            reallocate_requests: Vec::new(),
            takeover_run: OpState::new("takeover runs"),
            recovery: OpState::new("recoveries"),
            ifaces: None,
            force_rebalance: None,
            force_rebalance_version: 0,
            caps: Vec::new(),
            frozen_on_inactive: false,
            lock: LockState::None,
            next_lock_id: 1,
            helper: None,
            next_token: 1,
            pending: BTreeMap::new(),
            next_batch: 1,
            batches: BTreeMap::new(),
            ready: VecDeque::new(),
            cycle: None,
            next_cycle_id: 1,
            next_cycle_at: Some(now),
            rng_state: config.seed,
            startup_probe_pending: config.extensions.startup_lock_probe
                && config.cluster_lock.is_some(),
            exited: false,
            stats: RecoverdStats::default(),
            effects,
            config,
        }
    }

    // ------------------------------------------------------------------------------------
    // Introspection

    pub fn pnn(&self) -> Pnn {
        self.pnn
    }

    /// The leader as this node believes it (`UNKNOWN_PNN` when unknown).
    pub fn leader(&self) -> u32 {
        self.leader
    }

    pub fn is_leader(&self) -> bool {
        self.leader == self.pnn
    }

    pub fn election_in_progress(&self) -> bool {
        self.election_in_progress
    }

    /// Whether the cluster lock is held (a take still in progress does not count here).
    pub fn holds_cluster_lock(&self) -> bool {
        matches!(self.lock, LockState::Held { .. })
    }

    pub fn cluster_lock_enabled(&self) -> bool {
        self.config.cluster_lock.is_some()
    }

    pub fn can_be_leader(&self) -> bool {
        self.node_flags & node_flags::INACTIVE == 0 && self.capabilities & CAP_RECMASTER != 0
    }

    pub fn priority_time(&self) -> Timeval {
        self.priority_time
    }

    pub fn ban_credits(&self, pnn: Pnn) -> u32 {
        self.ban_credits.count(pnn)
    }

    pub fn recoveries_disabled(&self) -> bool {
        self.recovery.is_disabled()
    }

    pub fn takeover_runs_disabled(&self) -> bool {
        self.takeover_run.is_disabled()
    }

    pub fn need_recovery(&self) -> bool {
        self.need_recovery
    }

    pub fn running_helper(&self) -> Option<HelperKind> {
        self.helper
    }

    pub fn stats(&self) -> RecoverdStats {
        self.stats
    }

    pub fn has_exited(&self) -> bool {
        self.exited
    }

    /// Queued TAKEOVER_RUN requests (stock's `reallocate_requests`).
    pub fn queued_takeover_requests(&self) -> usize {
        self.reallocate_requests.len()
    }

    pub fn force_rebalance_nodes(&self) -> &[Pnn] {
        self.force_rebalance.as_deref().unwrap_or(&[])
    }

    pub fn log_level(&self) -> Option<i32> {
        self.log_level
    }

    // ------------------------------------------------------------------------------------
    // Shell interface

    /// The next effect for the shell to execute.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// The earliest instant at which `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.exited {
            return None;
        }
        let next_cycle = if self.main_loop_blocked() {
            None
        } else {
            self.next_cycle_at
        };
        [
            next_cycle,
            self.leader_broadcast_at,
            self.leader_broadcast_timeout_at,
            self.election_timeout,
            self.send_election_at,
            self.takeover_run.deadline(),
            self.recovery.deadline(),
            self.pending.values().map(|p| p.deadline).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs whatever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, host: &dyn RecoverdHost) {
        if self.exited {
            return;
        }
        self.takeover_run.handle_timeout(now);
        self.recovery.handle_timeout(now);

        let expired: Vec<Token> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.deadline)
            .map(|(&token, _)| token)
            .collect();
        for token in expired {
            log::info!("Control {token} timed out");
            self.complete_control(token, Outcome::Failed);
        }
        self.drain(now, host);

        if self.election_timeout.is_some_and(|t| now >= t) {
            self.election_timeout = None;
            self.on_election_timeout(now);
            self.drain(now, host);
        }
        if self.send_election_at.is_some_and(|t| now >= t) {
            self.send_election_at = None;
            self.send_election_request(host);
        }
        if self.leader_broadcast_at.is_some_and(|t| now >= t) {
            self.leader_broadcast_at = None;
            self.leader_broadcast_tick(now);
        }
        if self.leader_broadcast_timeout_at.is_some_and(|t| now >= t) {
            self.leader_broadcast_timeout_at = None;
            log::info!("Leader broadcast timeout");
            self.force_election(now);
            self.drain(now, host);
        }
        if self.cycle.is_none()
            && !self.main_loop_blocked()
            && self.next_cycle_at.is_some_and(|t| now >= t)
        {
            self.next_cycle_at = None;
            self.start_cycle(now, host);
            self.drain(now, host);
        }
        self.after_input(now, host);
    }

    /// A reply to control `token` from the local daemon.
    pub fn on_control_reply(
        &mut self,
        now: Instant,
        token: Token,
        status: i32,
        data: &[u8],
        host: &dyn RecoverdHost,
    ) {
        if self.exited {
            return;
        }
        self.complete_control(
            token,
            Outcome::Reply {
                status,
                data: data.to_vec(),
            },
        );
        self.drain(now, host);
        self.after_input(now, host);
    }

    /// Control `token` failed without a reply (the shell timed it out or lost the daemon).
    pub fn on_control_failed(&mut self, now: Instant, token: Token, host: &dyn RecoverdHost) {
        if self.exited {
            return;
        }
        self.complete_control(token, Outcome::Failed);
        self.drain(now, host);
        self.after_input(now, host);
    }

    /// A message for one of the registered srvids.
    pub fn on_message(&mut self, now: Instant, srvid: u64, data: &[u8], host: &dyn RecoverdHost) {
        if self.exited {
            return;
        }
        self.dispatch_message(now, srvid, data, host);
        self.drain(now, host);
        self.after_input(now, host);
    }

    /// A helper finished: `result` is what it wrote (0 success), or `EPIPE` if nothing.
    pub fn on_helper_done(
        &mut self,
        now: Instant,
        kind: HelperKind,
        result: i32,
        host: &dyn RecoverdHost,
    ) {
        if self.exited || self.helper != Some(kind) {
            return;
        }
        self.helper = None;
        if self.main_loop_blocked() {
            self.deferred.push_back(Deferred::HelperDone(kind, result));
        } else {
            self.helper_finished(now, kind, result, host);
        }
        self.drain(now, host);
        self.after_input(now, host);
    }

    /// News from the cluster mutex handle of take `id`.
    pub fn on_cluster_lock(
        &mut self,
        now: Instant,
        id: u64,
        event: ClusterLockEvent,
        host: &dyn RecoverdHost,
    ) {
        if self.exited {
            return;
        }
        self.cluster_lock_event(now, id, event);
        self.drain(now, host);
        self.after_input(now, host);
    }

    /// SIGTERM: release the cluster lock and exit 0.
    pub fn on_terminate(&mut self, now: Instant) {
        if self.exited {
            return;
        }
        log::error!("Received SIGTERM, exiting");
        self.cluster_lock_release(now);
        self.exit(0);
    }

    // ------------------------------------------------------------------------------------
    // Control machinery

    fn alloc_token(&mut self) -> Token {
        let token = self.next_token;
        self.next_token += 1;
        token
    }

    fn control_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.tunables.recover_timeout()))
    }

    /// Sends `opcode` to every node in `nodes` and routes the collected results to `purpose`
    /// once all have answered or failed. An empty list completes at once, as stock's async
    /// helpers do.
    fn send_batch(
        &mut self,
        now: Instant,
        purpose: Purpose,
        opcode: ControlOpcode,
        nodes: &[u32],
        flags: u32,
        data: Vec<u8>,
    ) {
        if nodes.is_empty() {
            self.ready.push_back((purpose, opcode, Vec::new()));
            return;
        }
        let batch = self.next_batch;
        self.next_batch += 1;
        self.batches.insert(
            batch,
            Batch {
                purpose,
                opcode,
                remaining: nodes.len(),
                results: Vec::with_capacity(nodes.len()),
            },
        );
        let timeout = self.control_timeout();
        for &destnode in nodes {
            let token = self.alloc_token();
            self.pending.insert(
                token,
                PendingControl {
                    batch,
                    pnn: destnode,
                    deadline: now.saturating_add(timeout),
                },
            );
            self.effects.push_back(Effect::SendControl {
                token,
                destnode,
                opcode,
                srvid: 0,
                flags,
                data: data.clone(),
                timeout,
            });
        }
    }

    /// One control to the local daemon.
    fn send_local(&mut self, now: Instant, purpose: Purpose, opcode: ControlOpcode, data: Vec<u8>) {
        self.send_batch(now, purpose, opcode, &[CURRENT_NODE], 0, data);
    }

    fn complete_control(&mut self, token: Token, outcome: Outcome) {
        let Some(pending) = self.pending.remove(&token) else {
            return;
        };
        let Some(batch) = self.batches.get_mut(&pending.batch) else {
            return;
        };
        batch.results.push((pending.pnn, outcome));
        batch.remaining -= 1;
        if batch.remaining == 0 {
            if let Some(batch) = self.batches.remove(&pending.batch) {
                self.ready
                    .push_back((batch.purpose, batch.opcode, batch.results));
            }
        }
    }

    /// Routes every completed batch to whoever waits for it.
    fn drain(&mut self, now: Instant, host: &dyn RecoverdHost) {
        while let Some((purpose, opcode, results)) = self.ready.pop_front() {
            if self.exited {
                return;
            }
            match purpose {
                Purpose::Ignore => {
                    for (pnn, outcome) in &results {
                        if !outcome.ok() {
                            log::error!("Control {} to node {pnn} failed", opcode.name());
                        }
                    }
                }
                Purpose::Cycle { cycle, step } => {
                    if self.cycle.as_ref().is_some_and(|c| c.id == cycle) {
                        if self.main_loop_blocked() {
                            self.deferred
                                .push_back(Deferred::Step(step, opcode, results));
                        } else {
                            self.cycle_step_done(now, step, opcode, results, host);
                        }
                    }
                }
                Purpose::ForceElection => self.force_election_recmode_done(now, &results, host),
                Purpose::PushFlagsNodemap { change, pnn } => {
                    self.push_flags_nodemap_done(now, opcode, &results, change, pnn);
                }
            }
        }
    }

    /// Whether stock's main loop would be stuck in a nested event loop right now: inside
    /// `force_election` (setting recovery mode, or waiting for its election to end) or inside
    /// a cluster lock take. Timers and messages still run meanwhile, but nothing of the main
    /// loop does: no new loop starts, replies to the current one wait, and a running helper's
    /// result is only looked at afterwards.
    pub(super) fn main_loop_blocked(&self) -> bool {
        self.force_election_pending
            || (self.force_election_waiting && self.election_in_progress)
            || matches!(self.lock, LockState::Taking { .. })
    }

    /// Checks shared by every input: main-loop work held back while it was blocked runs
    /// now, and a helper run is abandoned as soon as this node stops being leader (stock
    /// tests this after every event-loop turn in `helper_run`).
    fn after_input(&mut self, now: Instant, host: &dyn RecoverdHost) {
        while !self.main_loop_blocked() && !self.exited {
            let Some(item) = self.deferred.pop_front() else {
                break;
            };
            match item {
                Deferred::Step(step, opcode, results) => {
                    self.cycle_step_done(now, step, opcode, results, host);
                }
                Deferred::HelperDone(kind, result) => {
                    // Stock looks at leadership before the result once its wait unwinds.
                    let result = if self.is_leader() { result } else { 1 };
                    self.helper_finished(now, kind, result, host);
                }
            }
            self.drain(now, host);
        }
        if self.main_loop_blocked() {
            return;
        }
        if let Some(kind) = self.helper {
            if !self.is_leader() && !self.exited {
                log::error!(
                    "Leader changed to {}, aborting {:?} helper",
                    self.leader,
                    kind
                );
                self.helper = None;
                self.effects.push_back(Effect::KillHelper { kind });
                self.helper_finished(now, kind, 1, host);
                self.drain(now, host);
            }
        }
    }

    fn exit(&mut self, code: i32) {
        self.exited = true;
        self.effects.push_back(Effect::Exit { code });
    }

    /// Stock's `random()` (31 bits) from a seeded splitmix64 stream.
    fn random31(&mut self) -> u32 {
        self.rng_state = self.rng_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 33) as u32
    }

    /// `new_generation`: random, never `INVALID_GENERATION`.
    fn new_generation(&mut self) -> u32 {
        loop {
            let generation = self.random31();
            if generation != crate::protocol::types::INVALID_GENERATION {
                return generation;
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Node map helpers

    fn nodemap_nodes(&self) -> &[crate::protocol::types::NodeAndFlags] {
        self.nodemap.as_ref().map_or(&[], |m| m.nodes.as_slice())
    }

    /// `node_flags(rec, pnn, &flags)`.
    fn flags_of(&self, pnn: Pnn) -> Option<u32> {
        self.nodemap_nodes()
            .iter()
            .find(|n| n.pnn == pnn)
            .map(|n| n.flags)
    }

    /// `list_of_nodes`: PNNs whose flags have none of `mask`, optionally without this node.
    fn nodes_without(&self, mask: u32, include_self: bool) -> Vec<Pnn> {
        self.nodemap_nodes()
            .iter()
            .filter(|n| n.flags & mask == 0 && (include_self || n.pnn != self.pnn))
            .map(|n| n.pnn)
            .collect()
    }

    fn active_nodes(&self, include_self: bool) -> Vec<Pnn> {
        self.nodes_without(node_flags::INACTIVE, include_self)
    }

    fn connected_nodes(&self, include_self: bool) -> Vec<Pnn> {
        self.nodes_without(node_flags::DISCONNECTED, include_self)
    }

    fn has_capability(&self, pnn: Pnn, required: u32) -> bool {
        self.caps
            .get(pnn as usize)
            .copied()
            .flatten()
            .is_some_and(|c| c & required == required)
    }

    // ------------------------------------------------------------------------------------
    // Banning

    /// `ctdb_set_culprit_count`.
    fn set_culprit_count(&mut self, now: Instant, culprit: Pnn, count: u32) {
        if self.flags_of(culprit).is_none() {
            log::warn!("Unknown culprit node {culprit}");
            return;
        }
        if self.node_flags & node_flags::INACTIVE != 0 {
            log::warn!("This node is INACTIVE, cannot set culprit node {culprit}");
            return;
        }
        let grace = Duration::from_secs(u64::from(self.tunables.recovery_grace_period()));
        self.ban_credits.add(now, culprit, count, grace);
        self.last_culprit_node = culprit;
    }

    fn set_culprit(&mut self, now: Instant, culprit: Pnn) {
        self.set_culprit_count(now, culprit, 1);
    }

    /// `ctdb_ban_node`: SET_BAN_STATE sent to the node itself; nobody waits for the answer.
    fn ban_node(&mut self, now: Instant, pnn: Pnn) {
        if pnn >= self.num_nodes {
            log::error!("Bad pnn {pnn} in ctdb_ban_node");
            return;
        }
        let ban_time = self.tunables.recovery_ban_period();
        log::info!("Banning node {pnn} for {ban_time} seconds");
        self.stats.bans_sent += 1;
        let data = crate::protocol::types::BanState {
            pnn,
            time: ban_time,
        }
        .to_bytes();
        self.send_batch(
            now,
            Purpose::Ignore,
            ControlOpcode::SetBanState,
            &[pnn],
            0,
            data,
        );
    }

    /// `ban_misbehaving_nodes`; true when this node banned itself.
    fn ban_misbehaving_nodes(&mut self, now: Instant) -> bool {
        let Some(num) = self.nodemap.as_ref().map(|m| m.nodes.len()) else {
            return false;
        };
        let threshold = u32::try_from(num).unwrap_or(u32::MAX).saturating_mul(2);
        let mut self_ban = false;
        for (pnn, count) in self.ban_credits.take_over_threshold(threshold) {
            log::info!("Node {pnn} reached {count} banning credits");
            self.ban_node(now, pnn);
            if pnn == self.pnn {
                self_ban = true;
            }
        }
        self_ban
    }

    // ------------------------------------------------------------------------------------
    // Messages

    fn dispatch_message(&mut self, now: Instant, srvid: u64, data: &[u8], host: &dyn RecoverdHost) {
        match srvid {
            srvid::MEM_DUMP => self.mem_dump(data),
            srvid::BANNING => self.banning_message(now, data),
            srvid::ELECTION => self.election_message(now, data, host),
            srvid::SET_NODE_FLAGS => {
                log::warn!("SRVID CTDB_SRVID_SET_NODE_FLAGS (0x{srvid:x}) is obsolete");
            }
            srvid::PUSH_NODE_FLAGS => self.push_flags_message(now, data),
            srvid::RELOAD_NODES => {
                log::error!("Reload nodes file from recovery daemon");
                self.reload_nodes_file(host);
            }
            srvid::TAKEOVER_RUN => self.takeover_run_message(data),
            srvid::DISABLE_IP_CHECK => {
                let Some(timeout) = exact_u32(data) else {
                    log::error!("Wrong size for data :{} expecting 4", data.len());
                    return;
                };
                let _ = self.takeover_run.disable(now, timeout);
            }
            srvid::REBALANCE_NODE => self.rebalance_message(data),
            srvid::DISABLE_TAKEOVER_RUNS => self.disable_and_reply(now, data, false),
            srvid::DISABLE_RECOVERIES => self.disable_and_reply(now, data, true),
            srvid::LEADER => self.leader_message(now, data),
            srvid::CTDB_RS_LINK_CHANGE if self.config.extensions.wake_on_link_change => {
                self.wake_main_loop(now);
            }
            srvid::CTDB_RS_RECMODE_ACTIVE if self.config.extensions.wake_on_recmode_active => {
                if self.is_leader() && self.cycle.is_none() {
                    log::info!("Recovery mode set to ACTIVE by a client: checking the cluster now");
                    self.wake_main_loop(now);
                }
            }
            other => log::info!("Message for unexpected srvid 0x{other:x} ignored"),
        }
    }

    /// A node's link changed: the next main-loop pass starts now, or right after the running one.
    fn wake_main_loop(&mut self, now: Instant) {
        if self.cycle.is_some() {
            self.rerun_cycle = true;
        } else if self.next_cycle_at.is_some_and(|t| t > now) {
            self.next_cycle_at = Some(now);
        }
    }

    fn mem_dump(&mut self, data: &[u8]) {
        if data.len() != 16 {
            log::error!("Wrong size of return address.");
            return;
        }
        let Ok((reply_to, _)) = crate::protocol::types::SrvidMessage::pull(data) else {
            return;
        };
        log::error!("recovery daemon memory dump");
        let report = format!(
            "ctdb-rs recovery daemon pnn {}: leader {} pending controls {} queued takeover \
             requests {} stats {:?}\n",
            self.pnn,
            self.leader,
            self.pending.len(),
            self.reallocate_requests.len(),
            self.stats
        );
        self.effects.push_back(Effect::SendMessage {
            destnode: reply_to.pnn,
            srvid: reply_to.srvid,
            data: report.into_bytes(),
        });
    }

    fn banning_message(&mut self, now: Instant, data: &[u8]) {
        if !self.is_leader() {
            return;
        }
        let Some(pnn) = exact_u32(data) else {
            log::error!("invalid data size {}", data.len());
            return;
        };
        let num = self.nodemap_nodes().len();
        self.set_culprit_count(now, pnn, u32::try_from(num).unwrap_or(u32::MAX));
    }

    /// `push_flags_handler`: read the leader's node map, then send the change to every node
    /// connected according to it.
    fn push_flags_message(&mut self, now: Instant, data: &[u8]) {
        let Ok((change, _)) = crate::protocol::types::NodeFlagChange::pull(data) else {
            log::error!("Short PUSH_NODE_FLAGS message ignored");
            return;
        };
        if self.leader == UNKNOWN_PNN {
            log::error!("Unable to get nodemap from node {}", change.pnn);
            return;
        }
        let leader = self.leader;
        self.send_batch(
            now,
            Purpose::PushFlagsNodemap {
                change: data.to_vec(),
                pnn: change.pnn,
            },
            ControlOpcode::GetNodemap,
            &[leader],
            0,
            Vec::new(),
        );
    }

    fn push_flags_nodemap_done(
        &mut self,
        now: Instant,
        opcode: ControlOpcode,
        results: &[(Pnn, Outcome)],
        change: Vec<u8>,
        pnn: u32,
    ) {
        let Some(ControlReplyData::NodeMap(nodemap)) =
            results.first().and_then(|(_, o)| o.reply_data(opcode))
        else {
            log::error!("Unable to get nodemap from node {pnn}");
            return;
        };
        if pnn as usize >= nodemap.nodes.len() {
            log::error!("Nodemap from leader does not contain node {pnn}");
            return;
        }
        let nodes: Vec<Pnn> = nodemap
            .nodes
            .iter()
            .filter(|n| n.flags & node_flags::DISCONNECTED == 0)
            .map(|n| n.pnn)
            .collect();
        self.send_batch(
            now,
            Purpose::Ignore,
            ControlOpcode::ModifyFlags,
            &nodes,
            0,
            change,
        );
    }

    fn reload_nodes_file(&mut self, host: &dyn RecoverdHost) {
        match host.read_nodes_file() {
            Ok(num) => self.num_nodes = num,
            Err(e) => {
                log::error!("Failed to load nodes file: {e}");
                self.exit(1);
            }
        }
    }

    /// `ip_reallocate_handler`: queue the request for the next main loop.
    fn takeover_run_message(&mut self, data: &[u8]) {
        if data.len() != 16 {
            log::error!("Wrong size of return address.");
            return;
        }
        if let Ok((request, _)) = crate::protocol::types::SrvidMessage::pull(data) {
            self.reallocate_requests.insert(0, request);
        }
    }

    fn rebalance_message(&mut self, data: &[u8]) {
        if !self.is_leader() {
            return;
        }
        let Some(pnn) = exact_u32(data) else {
            log::error!(
                "Incorrect size of node rebalance message. Was {} but expected 4 bytes",
                data.len()
            );
            return;
        };
        log::info!("Setting up rebalance of IPs to node {pnn}");
        let mut list = self.force_rebalance.take().unwrap_or_default();
        list.push(pnn);
        self.force_rebalance = Some(list);
        self.force_rebalance_version += 1;
    }

    /// `srvid_disable_and_reply`: the reply is our PNN on success, else the error.
    fn disable_and_reply(&mut self, now: Instant, data: &[u8], recoveries: bool) {
        if data.len() != 24 {
            log::error!("Wrong size for data :{} expecting 24", data.len());
            return;
        }
        let Ok((request, _)) = crate::protocol::types::DisableMessage::pull(data) else {
            return;
        };
        let op = if recoveries {
            &mut self.recovery
        } else {
            &mut self.takeover_run
        };
        let result = match op.disable(now, request.timeout) {
            Ok(()) => self.pnn.cast_signed(),
            Err(e) => e,
        };
        self.srvid_reply(request.pnn, request.srvid, result);
    }

    /// `srvid_request_reply`: an int32 to `{pnn, srvid}`; srvid 0 wants no reply.
    fn srvid_reply(&mut self, pnn: u32, srvid: u64, result: i32) {
        if srvid == 0 {
            return;
        }
        self.effects.push_back(Effect::SendMessage {
            destnode: pnn,
            srvid,
            data: result.to_ne_bytes().to_vec(),
        });
    }

    fn broadcast_leader(&mut self, pnn: u32) {
        self.effects.push_back(Effect::SendMessage {
            destnode: BROADCAST_CONNECTED,
            srvid: srvid::LEADER,
            data: pnn.to_ne_bytes().to_vec(),
        });
    }

    fn store_tunables(&mut self, values: [u32; TUNABLE_COUNT]) {
        self.tunables = Tunables::from_wire(values);
    }
}

fn exact_u32(data: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(data).ok().map(u32::from_ne_bytes)
}

/// At least four bytes, the first four read as a u32 (`ctdb_uint32_pull`).
fn leading_u32(data: &[u8]) -> Option<u32> {
    data.get(..4).and_then(exact_u32)
}
