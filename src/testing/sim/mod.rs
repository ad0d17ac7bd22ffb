//! A seeded, deterministic simulation of a cluster's leadership and recovery machinery
//! (TigerBeetle's VOPR and quinn's test pair are the models).
//!
//! Each simulated node runs the real [`Recoverd`] core against a model of its ctdbd
//! (`daemon`), models of the recovery and takeover helpers (`helper`) and a shared cluster
//! lock with fcntl semantics (`lock`). Nodes talk over a network of per-pair TCP-like links:
//! FIFO with random delay, reset on faults (in-flight packets are lost), reconnected after a
//! delay; a silent peer (partitioned or hung) is detected after a keepalive period, a crashed one
//! at once. Faults: crashes and restarts, partitions, link resets, hangs of a whole node or of
//! its ctdbd only (SIGSTOP), loss of access to the lock, and administrative stop, ban and
//! leader-role changes.
//!
//! Time is simulated ([`Instant`] from zero) and every choice comes from one [`Prng`], so a
//! seed replays exactly: a failing seed prints itself and reruns with `CTDB_TEST_SEED=<seed>`.
//! Invariants are checked whenever simulated time advances:
//!
//! * with a cluster lock, at most one running recovery daemon is leader while holding it;
//! * no recovery daemon exits on its own;
//! * after faults heal, within a bound: one leader that everybody agrees on, every active node
//!   on the same generation (also in its database) with recovery mode NORMAL, flags propagated;
//!   then a quiet period without recoveries or bans (no endless loops).

mod daemon;
mod helper;
mod lock;

#[cfg(test)]
mod tests;

pub use daemon::{DaemonModel, SIM_DB_ID};

use crate::common::clock::Instant;
use crate::common::tunable::Tunables;
use crate::protocol::header::INVALID_GENERATION;
use crate::protocol::helper::ClusterMutexResult;
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::types::{capabilities, node_flags, Runstate};
use crate::protocol::{SockAddr, Timeval};
use crate::server::recoverd::{
    ClusterLockEvent, Effect, Extensions, HelperKind, Recoverd, RecoverdConfig, RecoverdHost,
    RECOVERY_NORMAL,
};
use crate::testing::Prng;
use helper::HelperRun;
use lock::LockService;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

pub type Pnn = u32;

/// A local client of a simulated daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Client {
    Recoverd,
    Helper(u64),
}

/// What travels between daemons.
#[derive(Debug, Clone)]
pub(crate) enum Packet {
    Control {
        reqid: u32,
        opcode: ControlOpcode,
        flags: u32,
        data: Vec<u8>,
    },
    Reply {
        reqid: u32,
        status: i32,
        data: Vec<u8>,
    },
    Message {
        srvid: u64,
        data: Vec<u8>,
    },
}

/// A control a local client hands to its daemon.
#[derive(Debug, Clone)]
pub(crate) struct ClientRequest {
    pub(crate) client: Client,
    pub(crate) token: u64,
    pub(crate) destnode: u32,
    pub(crate) opcode: ControlOpcode,
    pub(crate) flags: u32,
    pub(crate) data: Vec<u8>,
}

#[derive(Debug, Clone)]
pub(crate) enum Event {
    ClientControl {
        node: Pnn,
        inc: u64,
        request: ClientRequest,
    },
    ClientMessage {
        node: Pnn,
        inc: u64,
        destnode: u32,
        srvid: u64,
        data: Vec<u8>,
    },
    /// `epoch` is the connection it was sent on; `None` once it arrived (buffered while the
    /// receiver was stopped).
    NodePacket {
        from: Pnn,
        to: Pnn,
        epoch: Option<u64>,
        packet: Packet,
    },
    LinkDown {
        node: Pnn,
        inc: u64,
        peer: Pnn,
    },
    LinkUp {
        node: Pnn,
        inc: u64,
        peer: Pnn,
    },
    RecmodeTestDone {
        node: Pnn,
        inc: u64,
        test: u64,
        result: ClusterMutexResult,
    },
    ControlReply {
        node: Pnn,
        inc: u64,
        token: u64,
        status: i32,
        data: Vec<u8>,
    },
    RecoverdMessage {
        node: Pnn,
        inc: u64,
        srvid: u64,
        data: Vec<u8>,
    },
    HelperDone {
        node: Pnn,
        inc: u64,
        kind: HelperKind,
        result: i32,
    },
    ClusterLock {
        node: Pnn,
        inc: u64,
        id: u64,
        event: ClusterLockEvent,
    },
    HelperReply {
        node: Pnn,
        inc: u64,
        run: u64,
        token: u64,
        status: i32,
        data: Vec<u8>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Process {
    Daemon,
    Recoverd,
    Helper,
}

impl Event {
    fn node(&self) -> Pnn {
        match self {
            Event::ClientControl { node, .. }
            | Event::ClientMessage { node, .. }
            | Event::LinkDown { node, .. }
            | Event::LinkUp { node, .. }
            | Event::RecmodeTestDone { node, .. }
            | Event::ControlReply { node, .. }
            | Event::RecoverdMessage { node, .. }
            | Event::HelperDone { node, .. }
            | Event::ClusterLock { node, .. }
            | Event::HelperReply { node, .. } => *node,
            Event::NodePacket { to, .. } => *to,
        }
    }

    fn inc(&self) -> Option<u64> {
        match self {
            Event::ClientControl { inc, .. }
            | Event::ClientMessage { inc, .. }
            | Event::LinkDown { inc, .. }
            | Event::LinkUp { inc, .. }
            | Event::RecmodeTestDone { inc, .. }
            | Event::ControlReply { inc, .. }
            | Event::RecoverdMessage { inc, .. }
            | Event::HelperDone { inc, .. }
            | Event::ClusterLock { inc, .. }
            | Event::HelperReply { inc, .. } => Some(*inc),
            Event::NodePacket { .. } => None,
        }
    }

    fn process(&self) -> Process {
        match self {
            Event::ClientControl { .. }
            | Event::ClientMessage { .. }
            | Event::NodePacket { .. }
            | Event::LinkDown { .. }
            | Event::LinkUp { .. }
            | Event::RecmodeTestDone { .. } => Process::Daemon,
            Event::ControlReply { .. }
            | Event::RecoverdMessage { .. }
            | Event::HelperDone { .. }
            | Event::ClusterLock { .. } => Process::Recoverd,
            Event::HelperReply { .. } => Process::Helper,
        }
    }
}

/// Simulation parameters.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: usize,
    pub cluster_lock: bool,
    /// Per node; shorter than `nodes` means default extensions for the rest.
    pub extensions: Vec<Extensions>,
    pub fast_start: bool,
    pub leader_timeout_s: u32,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// How long a silent peer (partitioned or hung) takes to be declared dead.
    pub keepalive_detect: Duration,
    pub reconnect_delay: Duration,
    pub tunables: Tunables,
}

impl SimConfig {
    pub fn new(seed: u64, nodes: usize) -> Self {
        let tunables = Tunables::default();
        SimConfig {
            seed,
            nodes,
            cluster_lock: false,
            extensions: Vec::new(),
            fast_start: false,
            leader_timeout_s: 5,
            min_delay: Duration::from_micros(50),
            max_delay: Duration::from_millis(2),
            keepalive_detect: Duration::from_secs(
                u64::from(tunables.keepalive_interval()) * u64::from(tunables.keepalive_limit()),
            ),
            reconnect_delay: Duration::from_secs(1),
            tunables,
        }
    }
}

#[derive(Debug, Clone)]
struct Link {
    connected: bool,
    epoch: u64,
    partitioned: bool,
    /// The partition is noticed at once (interface down, RST) rather than by keepalives.
    immediate: bool,
    detect_at: Option<Instant>,
    reconnect_at: Option<Instant>,
    /// Last scheduled delivery per direction (low to high, high to low), for FIFO order.
    last_delivery: [Instant; 2],
}

#[derive(Debug)]
pub(crate) struct SimNode {
    pub(crate) inc: u64,
    pub(crate) daemon: Option<DaemonModel>,
    pub(crate) recoverd: Option<Recoverd>,
    pub(crate) helpers: BTreeMap<u64, HelperRun>,
    daemon_stopped: bool,
    recoverd_stopped: bool,
    backlog: Vec<Event>,
    extensions: Extensions,
    skew_us: i64,
    restart_at: Option<Instant>,
    last_leader: Option<u32>,
}

/// What happened during a run, for reports and scenario tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    pub elections_started: u64,
    pub recoveries_started: u64,
    pub recoveries_completed: u64,
    pub bans: u64,
}

/// The simulated cluster.
#[derive(Debug)]
pub struct Sim {
    pub(crate) now: Instant,
    pub(crate) prng: Prng,
    pub(crate) nodes: Vec<SimNode>,
    links: BTreeMap<(Pnn, Pnn), Link>,
    events: BTreeMap<(Instant, u64), Event>,
    seq: u64,
    next_id: u64,
    pub(crate) lock: LockService,
    /// Messages delivered to srvids nobody in the model listens on (replies to tools).
    pub other_messages: Vec<(Pnn, u64, Vec<u8>)>,
    config: SimConfig,
    bans: u64,
    /// Retired recovery daemons' counters (crashed nodes), so totals survive restarts.
    retired_elections: u64,
    retired_recoveries: u64,
    retired_recoveries_started: u64,
    trace: Vec<String>,
    trace_limit: usize,
    capture_logs: bool,
}

/// Wall-clock origin of the simulation (any realistic epoch works).
const WALL_EPOCH_S: i64 = 1_700_000_000;
const TRACE_LIMIT: usize = 4000;
/// Guard against a model bug spinning at one instant.
const MAX_STEPS_PER_INSTANT: usize = 100_000;

thread_local! {
    /// Log lines of the recovery daemons, captured while `SIM_LOG` is set.
    static CAPTURED_LOGS: std::cell::RefCell<Option<Vec<String>>> =
        const { std::cell::RefCell::new(None) };
}

/// Puts the recovery daemons' log lines into the trace of the simulation running on this
/// thread (enabled by the `SIM_LOG` environment variable; slow).
struct CaptureLogger;

impl log::Log for CaptureLogger {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        CAPTURED_LOGS.with(|c| {
            if let Some(lines) = c.borrow_mut().as_mut() {
                lines.push(format!("{}: {}", record.level(), record.args()));
            }
        });
    }
    fn flush(&self) {}
}

static CAPTURE_LOGGER: CaptureLogger = CaptureLogger;

fn start_log_capture() -> bool {
    if std::env::var_os("SIM_LOG").is_none() {
        return false;
    }
    if log::set_logger(&CAPTURE_LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
    CAPTURED_LOGS.with(|c| *c.borrow_mut() = Some(Vec::new()));
    true
}

fn take_captured_logs() -> Vec<String> {
    CAPTURED_LOGS.with(|c| {
        c.borrow_mut()
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    })
}

struct SimHost {
    wall: Timeval,
    num_nodes: u32,
}

impl RecoverdHost for SimHost {
    fn ctdbd_alive(&self) -> bool {
        true
    }
    fn wall_clock(&self) -> Timeval {
        self.wall
    }
    fn have_ip(&self, _addr: &SockAddr) -> bool {
        false
    }
    fn read_nodes_file(&self) -> Result<u32, String> {
        Ok(self.num_nodes)
    }
}

fn pair(a: Pnn, b: Pnn) -> (Pnn, Pnn) {
    (a.min(b), a.max(b))
}

impl Sim {
    pub fn new(config: SimConfig) -> Self {
        let mut prng = Prng::new(config.seed);
        let n = config.nodes;
        let mut links = BTreeMap::new();
        for a in 0..n {
            for b in a + 1..n {
                links.insert(
                    (a as Pnn, b as Pnn),
                    Link {
                        connected: false,
                        epoch: 0,
                        partitioned: false,
                        immediate: false,
                        detect_at: None,
                        reconnect_at: None,
                        last_delivery: [Instant::ZERO; 2],
                    },
                );
            }
        }
        let nodes = (0..n)
            .map(|i| SimNode {
                inc: 0,
                daemon: None,
                recoverd: None,
                helpers: BTreeMap::new(),
                daemon_stopped: false,
                recoverd_stopped: false,
                backlog: Vec::new(),
                extensions: config.extensions.get(i).copied().unwrap_or_default(),
                skew_us: prng.below(2_000_000).cast_signed() - 1_000_000,
                restart_at: None,
                last_leader: None,
            })
            .collect();
        let mut sim = Sim {
            now: Instant::ZERO,
            prng,
            nodes,
            links,
            events: BTreeMap::new(),
            seq: 0,
            next_id: 1,
            lock: LockService::default(),
            other_messages: Vec::new(),
            config,
            bans: 0,
            retired_elections: 0,
            retired_recoveries: 0,
            retired_recoveries_started: 0,
            trace: Vec::new(),
            trace_limit: TRACE_LIMIT,
            capture_logs: start_log_capture(),
        };
        if sim.capture_logs {
            sim.trace_limit = 1_000_000;
        }
        for pnn in 0..n {
            // Nodes come up within the first second, in random order.
            let delay = sim.prng.below(1_000_000);
            sim.nodes[pnn].restart_at = Some(Instant::from_micros(delay));
        }
        sim
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    pub fn num_nodes(&self) -> usize {
        self.nodes.len()
    }

    pub(crate) fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn note(&mut self, text: impl Into<String>) {
        if self.trace.len() < self.trace_limit {
            let line = format!("{:>10.3}s {}", self.now.micros as f64 / 1e6, text.into());
            self.trace.push(line);
        }
    }

    /// The notable events so far (faults, leader changes, recoveries, bans).
    pub fn trace(&self) -> String {
        self.trace.join("\n")
    }

    pub fn recoverd(&self, pnn: Pnn) -> Option<&Recoverd> {
        self.nodes.get(pnn as usize)?.recoverd.as_ref()
    }

    pub fn daemon(&self, pnn: Pnn) -> Option<&DaemonModel> {
        self.nodes.get(pnn as usize)?.daemon.as_ref()
    }

    pub fn is_up(&self, pnn: Pnn) -> bool {
        self.daemon(pnn).is_some()
    }

    pub fn stats(&self) -> SimStats {
        let live = |f: fn(&Recoverd) -> u64| -> u64 {
            self.nodes
                .iter()
                .filter_map(|n| n.recoverd.as_ref())
                .map(f)
                .sum()
        };
        SimStats {
            elections_started: self.retired_elections + live(|r| r.stats().elections_started),
            recoveries_started: self.retired_recoveries_started
                + live(|r| r.stats().recoveries_started),
            recoveries_completed: self.retired_recoveries
                + live(|r| r.stats().recoveries_completed),
            bans: self.bans,
        }
    }

    pub(crate) fn record_ban(&mut self, node: Pnn) {
        self.bans += 1;
        self.note(format!("node {node} banned"));
    }

    // ------------------------------------------------------------------------------------
    // Scheduling

    fn push_event(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.events.insert((at, self.seq), event);
    }

    /// An event between processes of one node (unix socket, pipe): a few microseconds.
    pub(crate) fn schedule_local(&mut self, _node: Pnn, event: Event) {
        let delay = Duration::from_micros(1 + self.prng.below(20));
        let at = self.now.saturating_add(delay);
        self.push_event(at, event);
    }

    pub(crate) fn reply_to_client(
        &mut self,
        node: Pnn,
        client: Client,
        token: u64,
        status: i32,
        data: Vec<u8>,
    ) {
        let inc = self.nodes[node as usize].inc;
        let event = match client {
            Client::Recoverd => Event::ControlReply {
                node,
                inc,
                token,
                status,
                data,
            },
            Client::Helper(run) => Event::HelperReply {
                node,
                inc,
                run,
                token,
                status,
                data,
            },
        };
        self.schedule_local(node, event);
    }

    pub(crate) fn send_packet(&mut self, from: Pnn, to: Pnn, packet: Packet) {
        let span = self
            .config
            .max_delay
            .saturating_sub(self.config.min_delay)
            .as_micros();
        let jitter = self.prng.below(u64::try_from(span).unwrap_or(0) + 1);
        let delay = self.config.min_delay + Duration::from_micros(jitter);
        let now = self.now;
        let Some(link) = self.links.get_mut(&pair(from, to)) else {
            return;
        };
        if !link.connected {
            return;
        }
        let dir = usize::from(from > to);
        let at = now.saturating_add(delay).max(link.last_delivery[dir]);
        link.last_delivery[dir] = at;
        let epoch = Some(link.epoch);
        self.push_event(
            at,
            Event::NodePacket {
                from,
                to,
                epoch,
                packet,
            },
        );
    }

    // ------------------------------------------------------------------------------------
    // Running

    fn next_time(&self) -> Option<Instant> {
        let mut next = self.events.first_key_value().map(|((t, _), _)| *t);
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for link in self.links.values() {
            consider(link.detect_at);
            consider(link.reconnect_at);
        }
        consider(self.lock.next_deadline());
        for node in &self.nodes {
            consider(node.restart_at);
            if let Some(d) = &node.daemon {
                if !node.daemon_stopped {
                    consider(d.next_deadline());
                }
            }
            for run in node.helpers.values() {
                consider(run.deadline());
            }
            if let Some(r) = &node.recoverd {
                if !node.recoverd_stopped {
                    consider(r.poll_timeout());
                }
            }
        }
        next
    }

    /// Runs until simulated time `end`, checking invariants as time advances.
    pub fn run_until(&mut self, end: Instant) -> Result<(), String> {
        loop {
            match self.next_time() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.step_instant()?;
                    self.check_invariants()?;
                }
                _ => {
                    self.now = self.now.max(end);
                    return Ok(());
                }
            }
        }
    }

    pub fn run_for(&mut self, duration: Duration) -> Result<(), String> {
        let end = self.now.saturating_add(duration);
        self.run_until(end)
    }

    /// Runs until [`Sim::healthy`] holds, for at most `bound`; returns how long it took.
    pub fn run_until_healthy(&mut self, bound: Duration) -> Result<Duration, String> {
        self.run_until_condition(bound, |sim: &Sim| sim.healthy())
    }

    /// Runs until `condition` holds, for at most `bound`; returns how long it took.
    pub fn run_until_condition(
        &mut self,
        bound: Duration,
        condition: impl Fn(&Sim) -> Result<(), String>,
    ) -> Result<Duration, String> {
        let start = self.now;
        let end = start.saturating_add(bound);
        loop {
            // Whatever is due now (a resumed node's buffered input) happens first.
            self.step_instant()?;
            self.check_invariants()?;
            if condition(self).is_ok() {
                self.note(format!("cluster healthy: {}", self.describe()));
                return Ok(self.now.saturating_since(start));
            }
            match self.next_time() {
                Some(t) if t <= end => self.now = self.now.max(t),
                _ => {
                    let why = condition(self).err().unwrap_or_default();
                    return Err(format!("cluster not healthy after {bound:?}: {why}"));
                }
            }
        }
    }

    /// Everything due at `now`, until nothing is.
    fn step_instant(&mut self) -> Result<(), String> {
        for _ in 0..MAX_STEPS_PER_INSTANT {
            let mut progressed = false;
            while let Some(entry) = self.events.first_entry() {
                if entry.key().0 > self.now {
                    break;
                }
                let event = entry.remove();
                self.process(event);
                progressed = true;
            }
            progressed |= self.run_timers();
            if !progressed {
                return Ok(());
            }
        }
        Err(format!("simulation stuck at {:?}", self.now))
    }

    fn run_timers(&mut self) -> bool {
        let now = self.now;
        let mut fired = false;
        let keys: Vec<(Pnn, Pnn)> = self.links.keys().copied().collect();
        for key in keys {
            let Some(link) = self.links.get(&key) else {
                continue;
            };
            if link.detect_at.is_some_and(|t| now >= t) {
                fired = true;
                self.disconnect(key.0, key.1);
            } else if link.reconnect_at.is_some_and(|t| now >= t) {
                fired = true;
                if let Some(l) = self.links.get_mut(&key) {
                    l.reconnect_at = None;
                }
                if self.link_can_connect(key.0, key.1) {
                    self.connect(key.0, key.1);
                }
            }
        }
        if self.lock.next_deadline().is_some_and(|t| now >= t) {
            fired = true;
            self.lock_timers();
        }
        for pnn in 0..self.nodes.len() {
            let p = pnn as Pnn;
            if self.nodes[pnn].restart_at.is_some_and(|t| now >= t) {
                fired = true;
                self.nodes[pnn].restart_at = None;
                self.start_node(p);
            }
            let node = &self.nodes[pnn];
            if !node.daemon_stopped
                && node
                    .daemon
                    .as_ref()
                    .and_then(DaemonModel::next_deadline)
                    .is_some_and(|t| now >= t)
            {
                fired = true;
                self.daemon_timers(p);
            }
            if self.nodes[pnn]
                .helpers
                .values()
                .any(|r| r.deadline().is_some_and(|t| now >= t))
            {
                fired = true;
                self.helper_timers(p);
            }
            let node = &self.nodes[pnn];
            if !node.recoverd_stopped
                && node
                    .recoverd
                    .as_ref()
                    .and_then(Recoverd::poll_timeout)
                    .is_some_and(|t| now >= t)
            {
                fired = true;
                let host = self.host(p);
                if let Some(r) = self.nodes[pnn].recoverd.as_mut() {
                    r.handle_timeout(now, &host);
                }
                self.apply_recoverd_effects(p);
            }
        }
        fired
    }

    fn host(&self, pnn: Pnn) -> SimHost {
        let skew = self.nodes[pnn as usize].skew_us;
        let micros = i64::try_from(self.now.micros).unwrap_or(i64::MAX) + skew;
        SimHost {
            wall: Timeval {
                tv_sec: WALL_EPOCH_S + micros.div_euclid(1_000_000),
                tv_usec: micros.rem_euclid(1_000_000),
            },
            num_nodes: u32::try_from(self.nodes.len()).unwrap_or(u32::MAX),
        }
    }

    fn stopped(&self, pnn: Pnn, process: Process) -> bool {
        let node = &self.nodes[pnn as usize];
        match process {
            Process::Daemon => node.daemon_stopped,
            Process::Recoverd => node.recoverd_stopped,
            Process::Helper => false,
        }
    }

    fn process(&mut self, mut event: Event) {
        let pnn = event.node();
        if pnn as usize >= self.nodes.len() {
            return;
        }
        match &mut event {
            Event::NodePacket {
                from, to, epoch, ..
            } => {
                if let Some(sent_on) = *epoch {
                    let current = self.links.get(&pair(*from, *to)).map(|l| l.epoch);
                    if current != Some(sent_on) || !self.is_up(*to) {
                        return;
                    }
                    // It arrived; a stopped receiver reads it later from its socket buffer.
                    *epoch = None;
                }
            }
            _ => {
                if event.inc() != Some(self.nodes[pnn as usize].inc) {
                    return;
                }
            }
        }
        if self.stopped(pnn, event.process()) {
            self.nodes[pnn as usize].backlog.push(event);
            return;
        }
        self.dispatch(event);
    }

    fn dispatch(&mut self, event: Event) {
        let now = self.now;
        match event {
            Event::ClientControl { node, request, .. } => self.daemon_client_control(node, request),
            Event::ClientMessage {
                node,
                destnode,
                srvid,
                data,
                ..
            } => self.daemon_client_message(node, destnode, srvid, data),
            Event::NodePacket {
                from, to, packet, ..
            } => self.daemon_packet(to, from, packet),
            Event::LinkDown { node, peer, .. } => self.daemon_link_down(node, peer),
            Event::LinkUp { node, peer, .. } => self.daemon_link_up(node, peer),
            Event::RecmodeTestDone {
                node, test, result, ..
            } => self.recmode_test_done(node, test, result),
            Event::ControlReply {
                node,
                token,
                status,
                data,
                ..
            } => {
                let host = self.host(node);
                if let Some(r) = self.nodes[node as usize].recoverd.as_mut() {
                    r.on_control_reply(now, token, status, &data, &host);
                }
                self.apply_recoverd_effects(node);
            }
            Event::RecoverdMessage {
                node, srvid, data, ..
            } => {
                let host = self.host(node);
                if let Some(r) = self.nodes[node as usize].recoverd.as_mut() {
                    r.on_message(now, srvid, &data, &host);
                }
                self.apply_recoverd_effects(node);
            }
            Event::HelperDone {
                node, kind, result, ..
            } => {
                let host = self.host(node);
                if let Some(r) = self.nodes[node as usize].recoverd.as_mut() {
                    r.on_helper_done(now, kind, result, &host);
                }
                self.apply_recoverd_effects(node);
            }
            Event::ClusterLock {
                node, id, event, ..
            } => {
                let host = self.host(node);
                if let Some(r) = self.nodes[node as usize].recoverd.as_mut() {
                    r.on_cluster_lock(now, id, event, &host);
                }
                self.apply_recoverd_effects(node);
            }
            Event::HelperReply {
                node,
                run,
                token,
                status,
                data,
                ..
            } => self.helper_reply(node, run, token, status, data),
        }
    }

    fn apply_recoverd_effects(&mut self, pnn: Pnn) {
        if self.capture_logs {
            for line in take_captured_logs() {
                self.note(format!("node {pnn} recoverd {line}"));
            }
        }
        let mut effects = Vec::new();
        if let Some(r) = self.nodes[pnn as usize].recoverd.as_mut() {
            while let Some(e) = r.poll_effect() {
                effects.push(e);
            }
        }
        let inc = self.nodes[pnn as usize].inc;
        for effect in effects {
            match effect {
                Effect::RegisterSrvid { srvid } => {
                    if let Some(d) = self.nodes[pnn as usize].daemon.as_mut() {
                        d.registered.insert(srvid);
                    }
                }
                Effect::SendControl {
                    token,
                    destnode,
                    opcode,
                    flags,
                    data,
                    ..
                } => self.schedule_local(
                    pnn,
                    Event::ClientControl {
                        node: pnn,
                        inc,
                        request: ClientRequest {
                            client: Client::Recoverd,
                            token,
                            destnode,
                            opcode,
                            flags,
                            data,
                        },
                    },
                ),
                Effect::SendMessage {
                    destnode,
                    srvid,
                    data,
                } => self.schedule_local(
                    pnn,
                    Event::ClientMessage {
                        node: pnn,
                        inc,
                        destnode,
                        srvid,
                        data,
                    },
                ),
                Effect::StartRecoveryHelper { generation } => {
                    self.note(format!(
                        "node {pnn} starts recovery, generation {generation}"
                    ));
                    self.start_helper(pnn, HelperKind::Recovery, generation);
                }
                Effect::StartTakeoverHelper { .. } => {
                    self.start_helper(pnn, HelperKind::Takeover, 0);
                }
                Effect::KillHelper { kind } => self.kill_helper(pnn, kind),
                Effect::TakeClusterLock { id, timeout } => self.lock_take(pnn, id, timeout),
                Effect::ReleaseClusterLock { id } => self.lock_release(pnn, id),
                Effect::SetLogLevel { .. } => {}
                Effect::Exit { code } => {
                    self.note(format!("node {pnn} recovery daemon exited with {code}"));
                    self.nodes[pnn as usize].recoverd = None;
                }
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Nodes

    fn start_node(&mut self, pnn: Pnn) {
        let n = self.nodes.len();
        let lock_path = self
            .config
            .cluster_lock
            .then(|| "/clusterfs/.ctdb/reclock".to_owned());
        let daemon = DaemonModel::new(pnn, n, lock_path.is_some(), self.config.tunables);
        self.note(format!(
            "node {pnn} starts (incarnation {})",
            self.nodes[pnn as usize].inc
        ));
        let node = &mut self.nodes[pnn as usize];
        node.daemon = Some(daemon);
        node.daemon_stopped = false;
        node.recoverd_stopped = false;
        node.backlog.clear();
        node.helpers.clear();
        node.last_leader = None;
        let seed = self.prng.next_u64();
        let config = RecoverdConfig {
            pnn,
            num_nodes: u32::try_from(n).unwrap_or(u32::MAX),
            cluster_lock: lock_path,
            leader_timeout_s: self.config.leader_timeout_s,
            capabilities: capabilities::DEFAULT,
            tunables: self.config.tunables,
            failover_disabled: false,
            check_public_ips: false,
            fast_start: self.config.fast_start,
            seed,
            extensions: self.nodes[pnn as usize].extensions,
        };
        let host = self.host(pnn);
        self.nodes[pnn as usize].recoverd = Some(Recoverd::new(config, self.now, &host));
        self.apply_recoverd_effects(pnn);
        self.update_links();
    }

    /// Kills every process of a node (ctdbd and, through its pipe, the recovery daemon).
    pub fn crash(&mut self, pnn: Pnn) {
        let node = &mut self.nodes[pnn as usize];
        if node.daemon.is_none() {
            return;
        }
        if let Some(r) = node.recoverd.take() {
            self.retired_elections += r.stats().elections_started;
            self.retired_recoveries += r.stats().recoveries_completed;
            self.retired_recoveries_started += r.stats().recoveries_started;
        }
        let node = &mut self.nodes[pnn as usize];
        node.daemon = None;
        node.helpers.clear();
        node.backlog.clear();
        node.daemon_stopped = false;
        node.recoverd_stopped = false;
        node.inc += 1;
        node.restart_at = None;
        self.note(format!("node {pnn} crashes"));
        self.lock_node_died(pnn);
        self.update_links();
    }

    /// Starts a crashed node again after `delay`.
    pub fn restart_after(&mut self, pnn: Pnn, delay: Duration) {
        if self.is_up(pnn) {
            return;
        }
        self.nodes[pnn as usize].restart_at = Some(self.now.saturating_add(delay));
    }

    /// SIGSTOP: the node's ctdbd, and its recovery daemon too when `whole_node`.
    pub fn hang(&mut self, pnn: Pnn, whole_node: bool) {
        if !self.is_up(pnn) {
            return;
        }
        self.note(format!(
            "node {pnn} hangs ({})",
            if whole_node { "whole node" } else { "ctdbd" }
        ));
        let node = &mut self.nodes[pnn as usize];
        node.daemon_stopped = true;
        node.recoverd_stopped |= whole_node;
        self.update_links();
    }

    /// SIGCONT: everything buffered is processed now.
    pub fn resume(&mut self, pnn: Pnn) {
        let node = &mut self.nodes[pnn as usize];
        if !node.daemon_stopped && !node.recoverd_stopped {
            return;
        }
        node.daemon_stopped = false;
        node.recoverd_stopped = false;
        let backlog = std::mem::take(&mut node.backlog);
        self.note(format!(
            "node {pnn} resumes ({} buffered events)",
            backlog.len()
        ));
        let now = self.now;
        for event in backlog {
            self.push_event(now, event);
        }
        self.update_links();
    }

    pub fn is_hung(&self, pnn: Pnn) -> bool {
        let node = &self.nodes[pnn as usize];
        node.daemon_stopped || node.recoverd_stopped
    }

    /// `ctdb stop` on the node.
    pub fn stop_node(&mut self, pnn: Pnn) {
        self.note(format!("node {pnn} stopped (admin)"));
        if let Some(d) = self.nodes[pnn as usize].daemon.as_mut() {
            d.stop_node();
        }
    }

    /// `ctdb continue` on the node.
    pub fn continue_node(&mut self, pnn: Pnn) {
        self.note(format!("node {pnn} continued (admin)"));
        if let Some(d) = self.nodes[pnn as usize].daemon.as_mut() {
            d.continue_node();
        }
    }

    /// `ctdb ban <secs>` on the node (0 unbans).
    pub fn ban(&mut self, pnn: Pnn, secs: u32) {
        let now = self.now;
        self.note(format!("node {pnn} banned for {secs} s (admin)"));
        if let Some(d) = self.nodes[pnn as usize].daemon.as_mut() {
            d.set_ban(now, secs);
        }
    }

    /// `ctdb setleaderrole on|off` (CAP_RECMASTER).
    pub fn set_leader_role(&mut self, pnn: Pnn, on: bool) {
        self.note(format!(
            "node {pnn} leader role {}",
            if on { "on" } else { "off" }
        ));
        if let Some(d) = self.nodes[pnn as usize].daemon.as_mut() {
            if on {
                d.capabilities |= capabilities::RECMASTER;
            } else {
                d.capabilities &= !capabilities::RECMASTER;
            }
        }
    }

    pub fn lock_reachable(&mut self, pnn: Pnn, reachable: bool) {
        self.note(format!(
            "node {pnn} {} the cluster lock file system",
            if reachable { "reaches" } else { "loses" }
        ));
        self.set_lock_reachable(pnn, reachable);
    }

    // ------------------------------------------------------------------------------------
    // Links

    fn link_can_connect(&self, a: Pnn, b: Pnn) -> bool {
        let Some(link) = self.links.get(&pair(a, b)) else {
            return false;
        };
        !link.partitioned
            && self.is_up(a)
            && self.is_up(b)
            && !self.nodes[a as usize].daemon_stopped
            && !self.nodes[b as usize].daemon_stopped
    }

    fn update_links(&mut self) {
        let now = self.now;
        let keys: Vec<(Pnn, Pnn)> = self.links.keys().copied().collect();
        for (a, b) in keys {
            let up = self.is_up(a) && self.is_up(b);
            let can = self.link_can_connect(a, b);
            let detect = self.config.keepalive_detect;
            let reconnect = self.config.reconnect_delay;
            let jitter = Duration::from_micros(self.prng.below(200_000));
            let Some(link) = self.links.get_mut(&(a, b)) else {
                continue;
            };
            if link.connected {
                if !up || (link.partitioned && link.immediate) {
                    self.disconnect(a, b);
                } else if !can {
                    if link.detect_at.is_none() {
                        link.detect_at = Some(now.saturating_add(detect));
                    }
                } else {
                    link.detect_at = None;
                }
            } else if can {
                if link.reconnect_at.is_none() {
                    link.reconnect_at = Some(now.saturating_add(reconnect + jitter));
                }
            } else {
                link.reconnect_at = None;
            }
        }
    }

    fn disconnect(&mut self, a: Pnn, b: Pnn) {
        let Some(link) = self.links.get_mut(&pair(a, b)) else {
            return;
        };
        link.detect_at = None;
        if !link.connected {
            return;
        }
        link.connected = false;
        link.epoch += 1;
        for (node, peer) in [(a, b), (b, a)] {
            if self.is_up(node) {
                let inc = self.nodes[node as usize].inc;
                self.schedule_local(node, Event::LinkDown { node, inc, peer });
            }
        }
        self.update_links();
    }

    fn connect(&mut self, a: Pnn, b: Pnn) {
        let Some(link) = self.links.get_mut(&pair(a, b)) else {
            return;
        };
        if link.connected {
            return;
        }
        link.connected = true;
        link.epoch += 1;
        link.detect_at = None;
        for (node, peer) in [(a, b), (b, a)] {
            let inc = self.nodes[node as usize].inc;
            self.schedule_local(node, Event::LinkUp { node, inc, peer });
        }
    }

    /// Cuts the link between `a` and `b`; `immediate` makes both sides notice at once.
    pub fn partition(&mut self, a: Pnn, b: Pnn, immediate: bool) {
        self.note(format!(
            "partition {a} <-> {b}{}",
            if immediate { " (links drop)" } else { "" }
        ));
        if let Some(link) = self.links.get_mut(&pair(a, b)) {
            link.partitioned = true;
            link.immediate = immediate;
        }
        self.update_links();
    }

    /// Cuts every link of `pnn`.
    pub fn isolate(&mut self, pnn: Pnn, immediate: bool) {
        for other in 0..self.nodes.len() as Pnn {
            if other != pnn {
                self.partition(pnn, other, immediate);
            }
        }
    }

    pub fn heal_partition(&mut self, a: Pnn, b: Pnn) {
        if let Some(link) = self.links.get_mut(&pair(a, b)) {
            if link.partitioned {
                link.partitioned = false;
                link.immediate = false;
                self.note(format!("partition {a} <-> {b} healed"));
            }
        }
        self.update_links();
    }

    /// Resets the connection (in-flight packets are lost); it comes back by itself.
    pub fn reset_link(&mut self, a: Pnn, b: Pnn) {
        self.note(format!("link {a} <-> {b} reset"));
        self.disconnect(a, b);
    }

    pub fn connected(&self, a: Pnn, b: Pnn) -> bool {
        self.links.get(&pair(a, b)).is_some_and(|l| l.connected)
    }

    /// Ends every fault: restarts crashed nodes, resumes hung ones, heals partitions, gives
    /// back lock access, continues stopped nodes, unbans admin-banned ones and restores the
    /// leader role.
    pub fn heal_all(&mut self) {
        self.note("heal all faults");
        let n = self.nodes.len() as Pnn;
        for pnn in 0..n {
            if !self.is_up(pnn) && self.nodes[pnn as usize].restart_at.is_none() {
                self.restart_after(pnn, Duration::ZERO);
            }
            self.resume(pnn);
            self.lock_reachable_quiet(pnn);
        }
        for a in 0..n {
            for b in a + 1..n {
                self.heal_partition(a, b);
            }
        }
    }

    fn lock_reachable_quiet(&mut self, pnn: Pnn) {
        if self.lock.unreachable.contains(&pnn) {
            self.lock_reachable(pnn, true);
        }
    }

    /// What the administrator undoes after the fault phase: stopped, banned (whoever banned
    /// it, so the cluster can become complete; a ban imposed after convergence is caught by the
    /// quiet-period check), leader role off.
    pub fn heal_admin(&mut self, pnn: Pnn) {
        let Some(d) = self.daemon(pnn) else {
            return;
        };
        let flags = d.own_flags();
        let caps = d.capabilities;
        if flags & node_flags::STOPPED != 0 {
            self.continue_node(pnn);
        }
        if flags & node_flags::BANNED != 0 {
            self.ban(pnn, 0);
        }
        if caps & capabilities::RECMASTER == 0 {
            self.set_leader_role(pnn, true);
        }
    }

    // ------------------------------------------------------------------------------------
    // Observations and invariants

    fn running_recoverd(&self, pnn: Pnn) -> Option<&Recoverd> {
        let node = &self.nodes[pnn as usize];
        if node.recoverd_stopped || node.daemon.is_none() {
            return None;
        }
        node.recoverd.as_ref()
    }

    /// The leader every running node (up, not hung) agrees on, if they do.
    pub fn agreed_leader(&self) -> Option<Pnn> {
        let mut leader = None;
        for pnn in self.running_nodes() {
            let r = self.running_recoverd(pnn)?;
            match leader {
                None => leader = Some(r.leader()),
                Some(l) if l == r.leader() => {}
                Some(_) => return None,
            }
        }
        leader.filter(|&l| (l as usize) < self.nodes.len())
    }

    /// Nodes that are up and not hung.
    pub fn running_nodes(&self) -> Vec<Pnn> {
        (0..self.nodes.len() as Pnn)
            .filter(|&p| self.is_up(p) && !self.is_hung(p))
            .collect()
    }

    /// Nodes that are up, not hung, and neither banned nor stopped by their own account.
    pub fn active_nodes(&self) -> Vec<Pnn> {
        (0..self.nodes.len() as Pnn)
            .filter(|&p| {
                !self.is_hung(p)
                    && self.daemon(p).is_some_and(|d| {
                        d.own_flags() & (node_flags::BANNED | node_flags::STOPPED) == 0
                    })
            })
            .collect()
    }

    fn check_invariants(&mut self) -> Result<(), String> {
        if self.config.cluster_lock {
            let holders: Vec<Pnn> = (0..self.nodes.len() as Pnn)
                .filter(|&p| {
                    self.running_recoverd(p)
                        .is_some_and(|r| r.is_leader() && r.holds_cluster_lock())
                })
                .collect();
            if holders.len() > 1 {
                return Err(format!(
                    "nodes {holders:?} all act as leader holding the cluster lock"
                ));
            }
        }
        for pnn in 0..self.nodes.len() {
            let node = &self.nodes[pnn];
            if node.daemon.is_some() && node.recoverd.is_none() {
                return Err(format!("recovery daemon of node {pnn} exited"));
            }
        }
        for pnn in 0..self.nodes.len() {
            let leader = self.nodes[pnn].recoverd.as_ref().map(Recoverd::leader);
            if leader != self.nodes[pnn].last_leader {
                self.nodes[pnn].last_leader = leader;
                if let Some(l) = leader {
                    let shown = if l == u32::MAX {
                        "unknown".to_owned()
                    } else {
                        l.to_string()
                    };
                    self.note(format!("node {pnn} now sees leader {shown}"));
                }
            }
        }
        Ok(())
    }

    /// Whether the whole cluster is healthy: every node up, and [`Sim::healthy_running`].
    pub fn healthy(&self) -> Result<(), String> {
        for a in 0..self.nodes.len() as Pnn {
            if !self.is_up(a) || self.is_hung(a) {
                return Err(format!("node {a} is down or hung"));
            }
        }
        self.healthy_running()
    }

    /// Whether the running nodes form a healthy cluster: all connected, one agreed leader,
    /// every active node on one valid generation in NORMAL mode and running, flags
    /// propagated, no recovery under way. `Err` says why not.
    pub fn healthy_running(&self) -> Result<(), String> {
        let running = self.running_nodes();
        for (i, &a) in running.iter().enumerate() {
            for &b in &running[i + 1..] {
                if !self.connected(a, b) {
                    return Err(format!("nodes {a} and {b} are not connected"));
                }
            }
        }
        let active = self.active_nodes();
        if active.is_empty() {
            return Err("no active node (all banned or stopped)".into());
        }
        let leader = self.agreed_leader().ok_or("no agreed leader")?;
        if !active.contains(&leader) {
            return Err(format!("leader {leader} is not active"));
        }
        let lr = self.running_recoverd(leader).ok_or("leader not running")?;
        if !lr.is_leader() {
            return Err("leader does not know it".into());
        }
        if !lr.can_be_leader() {
            return Err("leader still believes it cannot lead".into());
        }
        if lr.running_helper().is_some() || lr.need_recovery() {
            return Err("leader is still recovering".into());
        }
        for &p in &running {
            if self
                .running_recoverd(p)
                .is_some_and(Recoverd::election_in_progress)
            {
                return Err(format!("node {p} is in an election"));
            }
        }
        if self.config.cluster_lock
            && !(lr.holds_cluster_lock() && self.lock.holder.is_some_and(|h| h.node == leader))
        {
            return Err("leader does not hold the cluster lock".into());
        }
        let generation = self
            .daemon(leader)
            .map(|d| d.vnnmap.generation)
            .ok_or("leader daemon gone")?;
        if generation == INVALID_GENERATION {
            return Err("no recovery yet".into());
        }
        let lmasters: Vec<Pnn> = active
            .iter()
            .copied()
            .filter(|&p| {
                self.daemon(p)
                    .is_some_and(|d| d.capabilities & capabilities::LMASTER != 0)
            })
            .collect();
        for &p in &active {
            let d = self.daemon(p).ok_or("daemon gone")?;
            if d.recmode != RECOVERY_NORMAL {
                return Err(format!("node {p} in recovery mode"));
            }
            if d.vnnmap.generation != generation || d.db_generation != generation {
                return Err(format!(
                    "node {p} on generation {}/{} not {generation}",
                    d.vnnmap.generation, d.db_generation
                ));
            }
            if d.vnnmap.map != lmasters {
                return Err(format!(
                    "node {p} vnnmap {:?} not {lmasters:?}",
                    d.vnnmap.map
                ));
            }
            if d.runstate != Runstate::Running || d.own_flags() != 0 {
                return Err(format!(
                    "node {p} not running and healthy ({:?}, flags 0x{:x})",
                    d.runstate,
                    d.own_flags()
                ));
            }
        }
        for &a in &running {
            let da = self.daemon(a).ok_or("daemon gone")?;
            for &b in &running {
                let own = self.daemon(b).map(DaemonModel::own_flags).unwrap_or(0);
                if da.flags[b as usize] & !node_flags::DISCONNECTED != own {
                    return Err(format!(
                        "node {a} sees flags 0x{:x} for node {b}, which has 0x{own:x}",
                        da.flags[b as usize]
                    ));
                }
            }
        }
        Ok(())
    }

    /// A one-line picture of every node, for failure messages.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for p in 0..self.nodes.len() as Pnn {
            let _ = write!(out, "[{p}: ");
            match (self.daemon(p), self.recoverd(p)) {
                (Some(d), r) => {
                    let _ = write!(
                        out,
                        "flags 0x{:x} recmode {} gen {}/{} {:?}",
                        d.own_flags(),
                        d.recmode,
                        d.vnnmap.generation,
                        d.db_generation,
                        d.runstate
                    );
                    if let Some(r) = r {
                        let _ = write!(
                            out,
                            " leader {} election {} lock {}",
                            r.leader().cast_signed(),
                            r.election_in_progress(),
                            r.holds_cluster_lock()
                        );
                    }
                    if self.is_hung(p) {
                        out.push_str(" HUNG");
                    }
                }
                (None, _) => out.push_str("down"),
            }
            out.push_str("] ");
        }
        out
    }
}

// ----------------------------------------------------------------------------------------
// Randomised runs

/// Options of one randomised run.
#[derive(Debug, Clone)]
pub struct RandomRun {
    /// How long faults are injected.
    pub fault_phase: Duration,
    /// How long the cluster may take to become healthy after faults heal.
    pub converge_bound: Duration,
    /// Quiet time after convergence: no recoveries, no bans.
    pub quiet_period: Duration,
    /// Give every node these extensions instead of a random mix.
    pub extensions: Option<Extensions>,
    /// Recoveries tolerated in the quiet period. Stock's timing can cost one extra election
    /// and recovery right after healing (a follower's leader timeout, armed before the heal,
    /// expires just before the reconnected leader's first broadcast reaches it); a loop costs
    /// one every `RerecoveryTimeout` or so.
    pub max_quiet_recoveries: u64,
}

impl Default for RandomRun {
    fn default() -> Self {
        RandomRun {
            fault_phase: Duration::from_secs(40),
            converge_bound: Duration::from_secs(60),
            quiet_period: Duration::from_secs(40),
            extensions: None,
            max_quiet_recoveries: 1,
        }
    }
}

/// Extensions of the nodes that play stock daemons in randomised runs: stock election timing,
/// but with [`Extensions::lock_holder_leads`], because stock's behaviour there is a permanent
/// stalemate (a lock holder following a node that no longer leads) that no amount of waiting
/// heals, and the runs check that the cluster heals.
pub const STOCK_TIMING: Extensions = Extensions {
    lock_holder_leads: true,
    ..Extensions::STOCK
};

/// A cluster configuration chosen from `seed`: 2–5 nodes, with or without a cluster lock, a
/// random mix of stock-timed and extended recovery daemons, test-mode fast start or not.
pub fn random_config(seed: u64) -> SimConfig {
    let mut prng = Prng::new(seed ^ 0x5eed_c0de);
    let nodes = 2 + prng.below(4) as usize;
    let mut config = SimConfig::new(seed, nodes);
    config.cluster_lock = prng.bool();
    config.fast_start = prng.bool();
    config.extensions = (0..nodes)
        .map(|_| {
            if prng.bool() {
                Extensions::default()
            } else {
                STOCK_TIMING
            }
        })
        .collect();
    config.max_delay = Duration::from_micros(100 + prng.below(20_000));
    if prng.below(4) == 0 {
        // Faster failure detection than stock's 25 s, as some deployments tune it.
        config.keepalive_detect = Duration::from_secs(2 + prng.below(8));
    }
    config
}

#[derive(Debug, Clone, Copy)]
enum Heal {
    Restart(Pnn),
    Resume(Pnn),
    Partition(Pnn, Pnn),
    Isolation(Pnn),
    LockAccess(Pnn),
    Continue(Pnn),
    LeaderRole(Pnn),
}

impl Sim {
    fn pick_node(&mut self) -> Pnn {
        // Half the time aim at the leader: that is where elections start.
        if self.prng.bool() {
            if let Some(l) = self.agreed_leader() {
                return l;
            }
        }
        self.prng.below(self.nodes.len() as u64) as Pnn
    }

    fn inject_fault(&mut self, heals: &mut Vec<(Instant, Heal)>) {
        let n = self.nodes.len() as u64;
        let pnn = self.pick_node();
        let secs = |prng: &mut Prng, lo: u64, hi: u64| {
            Duration::from_millis(lo * 1000 + prng.below((hi - lo) * 1000 + 1))
        };
        let now = self.now;
        match self.prng.below(10) {
            0 => {
                self.crash(pnn);
                let d = secs(&mut self.prng, 1, 15);
                heals.push((now.saturating_add(d), Heal::Restart(pnn)));
            }
            1 => {
                let immediate = self.prng.bool();
                self.isolate(pnn, immediate);
                let d = secs(&mut self.prng, 2, 25);
                heals.push((now.saturating_add(d), Heal::Isolation(pnn)));
            }
            2 => {
                let other = self.prng.below(n) as Pnn;
                if other != pnn {
                    let immediate = self.prng.bool();
                    self.partition(pnn, other, immediate);
                    let d = secs(&mut self.prng, 2, 25);
                    heals.push((now.saturating_add(d), Heal::Partition(pnn, other)));
                }
            }
            3 => {
                let other = self.prng.below(n) as Pnn;
                if other != pnn {
                    self.reset_link(pnn, other);
                }
            }
            4 => {
                if self.is_up(pnn) && !self.is_hung(pnn) {
                    let whole = self.prng.bool();
                    self.hang(pnn, whole);
                    let d = secs(&mut self.prng, 1, 14);
                    heals.push((now.saturating_add(d), Heal::Resume(pnn)));
                }
            }
            5 => {
                if self.config.cluster_lock {
                    self.lock_reachable(pnn, false);
                    let d = secs(&mut self.prng, 2, 25);
                    heals.push((now.saturating_add(d), Heal::LockAccess(pnn)));
                }
            }
            6 => {
                self.stop_node(pnn);
                let d = secs(&mut self.prng, 2, 15);
                heals.push((now.saturating_add(d), Heal::Continue(pnn)));
            }
            7 => {
                // An administrator's ban; it runs out by itself.
                let t = 3 + self.prng.below(13) as u32;
                self.ban(pnn, t);
            }
            8 => {
                self.set_leader_role(pnn, false);
                let d = secs(&mut self.prng, 2, 20);
                heals.push((now.saturating_add(d), Heal::LeaderRole(pnn)));
            }
            _ => {
                // Several link resets at once: lossy network.
                for _ in 0..=self.prng.below(3) {
                    let a = self.prng.below(n) as Pnn;
                    let b = self.prng.below(n) as Pnn;
                    if a != b {
                        self.reset_link(a, b);
                    }
                }
            }
        }
    }

    fn apply_heal(&mut self, heal: Heal) {
        match heal {
            Heal::Restart(p) => self.restart_after(p, Duration::ZERO),
            Heal::Resume(p) => self.resume(p),
            Heal::Partition(a, b) => self.heal_partition(a, b),
            Heal::Isolation(p) => {
                for other in 0..self.nodes.len() as Pnn {
                    if other != p {
                        self.heal_partition(p, other);
                    }
                }
            }
            Heal::LockAccess(p) => self.lock_reachable_quiet(p),
            Heal::Continue(p) => {
                if self
                    .daemon(p)
                    .is_some_and(|d| d.own_flags() & node_flags::STOPPED != 0)
                {
                    self.continue_node(p);
                }
            }
            Heal::LeaderRole(p) => {
                if self
                    .daemon(p)
                    .is_some_and(|d| d.capabilities & capabilities::RECMASTER == 0)
                {
                    self.set_leader_role(p, true);
                }
            }
        }
    }
}

/// One randomised run: start-up, a fault phase, healing, convergence, a quiet period.
pub fn run_random(seed: u64, options: &RandomRun) -> Result<SimStats, String> {
    let mut config = random_config(seed);
    if let Some(extensions) = options.extensions {
        config.extensions = vec![extensions; config.nodes];
    }
    let mut sim = Sim::new(config);
    let fail = |sim: &Sim, phase: &str, e: String| {
        format!(
            "seed {seed} ({} nodes, lock {}, fast_start {}): {phase}: {e}\n  state: {}\n  \
             trace:\n{}",
            sim.config.nodes,
            sim.config.cluster_lock,
            sim.config.fast_start,
            sim.describe(),
            sim.trace()
        )
    };
    sim.run_until_healthy(Duration::from_secs(60))
        .map_err(|e| fail(&sim, "start-up", e))?;

    let fault_end = sim.now().saturating_add(options.fault_phase);
    let mut heals: Vec<(Instant, Heal)> = Vec::new();
    let mut next_fault = sim.now();
    while sim.now() < fault_end {
        if sim.now() >= next_fault {
            sim.inject_fault(&mut heals);
            next_fault = sim
                .now()
                .saturating_add(Duration::from_millis(500 + sim.prng.below(6000)));
        }
        let next_heal = heals.iter().map(|(t, _)| *t).min();
        let until = [Some(next_fault), next_heal, Some(fault_end)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(fault_end);
        sim.run_until(until).map_err(|e| fail(&sim, "faults", e))?;
        let now = sim.now();
        let (due, rest): (Vec<_>, Vec<_>) = heals.into_iter().partition(|(t, _)| *t <= now);
        heals = rest;
        for (_, heal) in due {
            sim.apply_heal(heal);
        }
    }
    sim.heal_all();
    for p in 0..sim.num_nodes() as Pnn {
        sim.heal_admin(p);
    }
    sim.run_until_healthy(options.converge_bound)
        .map_err(|e| fail(&sim, "convergence", e))?;
    let before = sim.stats();
    sim.run_for(options.quiet_period)
        .map_err(|e| fail(&sim, "quiet period", e))?;
    let after = sim.stats();
    if after.recoveries_started > before.recoveries_started + options.max_quiet_recoveries
        || after.bans != before.bans
    {
        return Err(fail(
            &sim,
            "quiet period",
            format!("recoveries or bans continued: {before:?} -> {after:?}"),
        ));
    }
    sim.healthy()
        .map_err(|e| fail(&sim, "after quiet period", e))?;
    Ok(after)
}
