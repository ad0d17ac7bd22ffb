//! The daemon's I/O shell: one mio event loop on one thread that owns every socket, signal and
//! child process and drives the sans-IO core (mirrors the tevent plumbing of
//! `server/ctdb_daemon.c`, `server/ctdbd.c` and `tcp/`).
//!
//! Each loop turn reads the clock once, dispatches readiness (each connection drained until it
//! would block, within a per-turn byte budget so one busy peer cannot starve the rest), runs the
//! core's due timers, and executes the effects the core queued. Every input to the core is
//! followed at once by executing its effects, so that a `CloseClient` or `ResetNode` takes
//! effect before the next frame of that connection is looked at, as in stock, where packets are
//! handled one at a time.

pub mod clients;
pub mod eventd;
pub mod frames;
pub mod lock_test;
pub mod pacing;
pub mod queue;
pub mod tcp;

use crate::common::clock::{Instant, MonotonicClock};
use crate::common::logging::CtdbLogger;
use crate::common::nodes;
use crate::common::sys::PidFile;
use crate::protocol::types::{node_flags, NodeAndFlags};
use crate::protocol::Timeval;
use crate::server::daemon::{Backlog, Daemon, Host};
use crate::server::effect::{ClientId, Effect, EventOutcome, Pnn};
use clients::{ClientFrame, ClientLimits, Clients};
use eventd::Eventd;
use log::{debug, error, info, trace, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use pacing::{NodeReadPacing, PacingLimits};
use queue::{QueueLimits, ReadMode, ReadOutcome};
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;
use tcp::{LinkDir, LinkEvent, Transport};

pub const SIGNAL_TOKEN: Token = Token(1);
pub const STDIN_TOKEN: Token = Token(2);
// Tokens 0 (unix listener), 3 (node listener), 4 and 5 (eventd) belong to the submodules.

/// How often stalled partial frames are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Pause before accepting again after EMFILE and similar failures.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The inputs the shell feeds and the effects it drains: implemented by
/// [`crate::server::daemon::Daemon`], and by scripted cores in tests.
pub trait Core {
    fn on_client_connected(&mut self, now: Instant, client: ClientId, pid: i32);
    fn on_client_frame(&mut self, now: Instant, client: ClientId, frame: &[u8], host: &dyn Host);
    fn on_client_closed(&mut self, now: Instant, client: ClientId);
    fn on_node_connected(&mut self, now: Instant, pnn: Pnn);
    fn on_node_disconnected(&mut self, now: Instant, pnn: Pnn);
    fn on_node_frame(&mut self, now: Instant, pnn: Pnn, frame: &[u8], host: &dyn Host);
    fn on_event_done(&mut self, now: Instant, outcome: EventOutcome);
    fn on_shutdown_request(&mut self, now: Instant);
    fn on_cluster_lock_test(&mut self, now: Instant, token: u64, result: u8, latency_s: f64);
    fn on_recoverd_exited(&mut self, now: Instant);
    /// A repack helper started for `Effect::Repack` exited (`None`: no exit code).
    fn on_repack_done(&mut self, _now: Instant, _db_id: u32, _code: Option<i32>) {}
    fn handle_timeout(&mut self, now: Instant);
    /// `handle_timeout` for a core that paces bulk output by the queues' fill levels.
    fn handle_timeout_with_backlog(&mut self, now: Instant, _backlog: &dyn Backlog) {
        self.handle_timeout(now);
    }
    fn poll_timeout(&self) -> Option<Instant>;
    fn poll_effect(&mut self) -> Option<Effect>;
}

impl Core for Daemon {
    fn on_client_connected(&mut self, now: Instant, client: ClientId, pid: i32) {
        Daemon::on_client_connected(self, now, client, pid);
    }
    fn on_client_frame(&mut self, now: Instant, client: ClientId, frame: &[u8], host: &dyn Host) {
        Daemon::on_client_frame(self, now, client, frame, host);
    }
    fn on_client_closed(&mut self, now: Instant, client: ClientId) {
        Daemon::on_client_closed(self, now, client);
    }
    fn on_node_connected(&mut self, now: Instant, pnn: Pnn) {
        Daemon::on_node_connected(self, now, pnn);
    }
    fn on_node_disconnected(&mut self, now: Instant, pnn: Pnn) {
        Daemon::on_node_disconnected(self, now, pnn);
    }
    fn on_node_frame(&mut self, now: Instant, pnn: Pnn, frame: &[u8], host: &dyn Host) {
        Daemon::on_node_frame(self, now, pnn, frame, host);
    }
    fn on_event_done(&mut self, now: Instant, outcome: EventOutcome) {
        Daemon::on_event_done(self, now, outcome);
    }
    fn on_shutdown_request(&mut self, now: Instant) {
        Daemon::on_shutdown_request(self, now);
    }
    fn on_cluster_lock_test(&mut self, now: Instant, token: u64, result: u8, latency_s: f64) {
        Daemon::on_cluster_lock_test(self, now, token, result, latency_s);
    }
    fn on_recoverd_exited(&mut self, now: Instant) {
        Daemon::on_recoverd_exited(self, now);
    }
    fn on_repack_done(&mut self, now: Instant, db_id: u32, code: Option<i32>) {
        Daemon::on_repack_done(self, now, db_id, code);
    }
    fn handle_timeout(&mut self, now: Instant) {
        Daemon::handle_timeout(self, now);
    }
    fn handle_timeout_with_backlog(&mut self, now: Instant, backlog: &dyn Backlog) {
        Daemon::handle_timeout_with_backlog(self, now, backlog);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Daemon::poll_timeout(self)
    }
    fn poll_effect(&mut self) -> Option<Effect> {
        Daemon::poll_effect(self)
    }
}

/// The shell's queues as the core's [`Backlog`].
struct ShellBacklog<'a> {
    clients: &'a Clients,
    transport: &'a Transport,
}

impl Backlog for ShellBacklog<'_> {
    fn client_bytes(&self, client: ClientId) -> usize {
        self.clients.pending_bytes(client)
    }
    fn node_bytes(&self, pnn: Pnn) -> usize {
        self.transport.pending_bytes(pnn)
    }
}

/// The operating system as the core's [`Host`].
#[derive(Debug, Clone, Default)]
pub struct OsHost {
    /// The nodes file, re-read for GET_NODES_FILE.
    pub nodes_file: Option<PathBuf>,
}

impl Host for OsHost {
    fn process_exists(&self, pid: i32) -> bool {
        if pid <= 0 {
            return false;
        }
        // EPERM means the process exists but belongs to someone else.
        matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Ok(()) | Err(nix::errno::Errno::EPERM)
        )
    }

    fn wall_clock(&self) -> Timeval {
        let (tv_sec, tv_usec) = crate::common::clock::wall_clock_now();
        Timeval { tv_sec, tv_usec }
    }

    fn read_nodes_file(&self) -> Result<Vec<NodeAndFlags>, String> {
        let path = self.nodes_file.as_ref().ok_or("no nodes file")?;
        nodes::load(path)
            .map(|entries| node_list(&entries))
            .map_err(|e| e.to_string())
    }
}

/// The nodes file as the core's node map: deleted entries carry `NODE_FLAGS_DELETED`.
pub fn node_list(entries: &[nodes::NodeEntry]) -> Vec<NodeAndFlags> {
    entries
        .iter()
        .map(|n| NodeAndFlags {
            pnn: n.pnn,
            flags: if n.deleted { node_flags::DELETED } else { 0 },
            addr: n.addr,
        })
        .collect()
}

/// Resource limits of the shell. Stock has none of these; each one turns unbounded growth
/// into a dropped connection, which peers already survive.
#[derive(Debug, Clone, Copy)]
pub struct ShellLimits {
    /// Largest frame accepted from a client or a node (stock reallocates up to whatever the
    /// length word says).
    pub max_frame: u32,
    pub client_queue: QueueLimits,
    pub node_queue: QueueLimits,
    /// When a backlogged client holds node reads back (see [`pacing`]).
    pub pacing: PacingLimits,
    /// Bytes read from one connection per loop turn.
    pub read_budget: usize,
    /// A connection holding an incomplete frame for longer is dropped (slowloris).
    pub partial_frame_timeout: Duration,
    /// How long the core may take to finish shutting down after SIGTERM before the shell exits
    /// on its own (stock's shutdown event has the 30 s event timeout).
    pub shutdown_grace: Duration,
}

impl Default for ShellLimits {
    fn default() -> Self {
        ShellLimits {
            max_frame: 256 << 20,
            client_queue: QueueLimits {
                max_bytes: 64 << 20,
                max_frames: 100_000,
            },
            node_queue: QueueLimits {
                max_bytes: 256 << 20,
                max_frames: 1_000_000,
            },
            pacing: PacingLimits::default(),
            read_budget: 256 << 10,
            partial_frame_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(60),
        }
    }
}

/// Everything the shell runs, prepared by the binary (or a test).
#[derive(Debug)]
pub struct ShellParts<C> {
    pub core: C,
    pub clock: MonotonicClock,
    /// The bound, listening unix socket.
    pub unix_listener: std::os::unix::net::UnixListener,
    /// Its path, removed at exit if it is still our socket.
    pub socket_path: PathBuf,
    pub pid_file: Option<PidFile>,
    pub transport: Transport,
    pub eventd: Option<Eventd>,
    /// The installed logger, for SET_DEBUG and SIGHUP; `None` when logging is not ours.
    pub logger: Option<&'static CtdbLogger>,
    pub host: OsHost,
    /// SIGTERM, SIGINT, SIGHUP and SIGCHLD, blocked and delivered here.
    pub signals: Option<SignalFd>,
    /// Test mode with a piped stdin: EOF shuts the daemon down.
    pub watch_stdin: bool,
    pub limits: ShellLimits,
    /// The cluster mutex helper (`$CTDB_CLUSTER_MUTEX_HELPER` or the helper dir's
    /// `ctdb_mutex_fcntl_helper`) used to test the cluster lock.
    pub cluster_mutex_helper: PathBuf,
    /// How to start the recovery daemon (`None`: the core's requests are ignored, for tests
    /// that drive a scripted core).
    pub recoverd_argv: Option<Vec<String>>,
}

/// Why the shell stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// The core's `Exit` effect.
    Core,
    /// A second SIGTERM/SIGINT, or the shutdown grace period ran out.
    Forced,
    /// ctdb-eventd went away.
    EventdDied,
    /// The loop itself failed (poll error, transport could not start).
    Fatal,
}

#[derive(Debug)]
pub struct Shell<C> {
    poll: Poll,
    core: C,
    clock: MonotonicClock,
    clients: Clients,
    transport: Transport,
    eventd: Option<Eventd>,
    logger: Option<&'static CtdbLogger>,
    host: OsHost,
    signals: Option<SignalFd>,
    watch_stdin: bool,
    socket_path: PathBuf,
    socket_identity: Option<(u64, u64)>,
    pid_file: Option<PidFile>,
    limits: ShellLimits,
    /// Connections whose read budget ran out: read again next turn without waiting.
    revisit: Vec<Token>,
    /// Node links left unread while a client is far behind.
    pacing: NodeReadPacing,
    client_accept_retry: Option<Instant>,
    node_accept_retry: Option<Instant>,
    next_sweep: Instant,
    /// When freed heap memory goes back to the system.
    heap_trim: crate::common::heap::HeapTrim,
    shutdown_deadline: Option<Instant>,
    lock_tests: lock_test::LockTests,
    cluster_mutex_helper: PathBuf,
    recoverd_argv: Option<Vec<String>>,
    recoverd: Option<crate::common::spawn::Child>,
    /// The running repack helper and its database.
    repack: Option<(crate::common::spawn::Child, u32)>,
    /// Exit code for a forced exit (EPIPE after stdin EOF, as stock's shutdown uses).
    forced_code: i32,
    exit: Option<(ExitReason, i32)>,
}

fn socket_identity(path: &std::path::Path) -> Option<(u64, u64)> {
    nix::sys::stat::lstat(path)
        .ok()
        .map(|st| (st.st_dev, st.st_ino))
}

fn until(now: Instant, deadline: Instant) -> Duration {
    deadline.saturating_since(now)
}

impl<C: Core> Shell<C> {
    pub fn new(parts: ShellParts<C>) -> io::Result<Shell<C>> {
        let poll = Poll::new()?;
        let limits = parts.limits;
        let clients = Clients::new(
            parts.unix_listener,
            ClientLimits {
                max_frame: limits.max_frame,
                queue: limits.client_queue,
                read_budget: limits.read_budget,
            },
        );
        let mut eventd = parts.eventd;
        if let Some(eventd) = &mut eventd {
            eventd.register(poll.registry())?;
        }
        if let Some(signals) = &parts.signals {
            poll.registry().register(
                &mut SourceFd(&signals.as_raw_fd()),
                SIGNAL_TOKEN,
                Interest::READABLE,
            )?;
        }
        if parts.watch_stdin {
            poll.registry()
                .register(&mut SourceFd(&0), STDIN_TOKEN, Interest::READABLE)?;
            debug!("Set up stdin handler");
        }
        let now = parts.clock.now();
        Ok(Shell {
            poll,
            core: parts.core,
            clock: parts.clock,
            clients,
            transport: parts.transport,
            eventd,
            logger: parts.logger,
            host: parts.host,
            signals: parts.signals,
            watch_stdin: parts.watch_stdin,
            socket_identity: socket_identity(&parts.socket_path),
            socket_path: parts.socket_path,
            pid_file: parts.pid_file,
            limits,
            revisit: Vec::new(),
            pacing: NodeReadPacing::new(limits.pacing),
            client_accept_retry: None,
            node_accept_retry: None,
            next_sweep: now.saturating_add(SWEEP_INTERVAL),
            heap_trim: crate::common::heap::HeapTrim::new(now),
            shutdown_deadline: None,
            forced_code: 0,
            exit: None,
            lock_tests: lock_test::LockTests::default(),
            cluster_mutex_helper: parts.cluster_mutex_helper,
            recoverd_argv: parts.recoverd_argv,
            recoverd: None,
            repack: None,
        })
    }

    /// The core, for tests that inspect it after the loop ends.
    pub fn core(&self) -> &C {
        &self.core
    }

    /// Runs until the core says `Exit` (or a forced exit), then stops eventd, closes every
    /// connection, removes the socket and the pid file. Returns why and the exit code.
    pub fn run(&mut self) -> (ExitReason, i32) {
        let mut events = Events::with_capacity(256);
        let now = self.clock.now();
        self.run_effects(now);
        while self.exit.is_none() {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("Event loop failed: {e}");
                self.exit = Some((ExitReason::Fatal, 1));
                break;
            }
            let now = self.clock.now();
            for event in events.iter() {
                let hangup = event.is_read_closed() || event.is_error();
                let readable = event.is_readable() || hangup;
                let writable = event.is_writable() || event.is_write_closed();
                let mode = if hangup {
                    ReadMode::UntilWouldBlock
                } else {
                    ReadMode::UntilShortRead
                };
                self.dispatch(now, event.token(), readable, writable, mode);
                if self.exit.is_some() {
                    break;
                }
            }
            if self.exit.is_some() {
                break;
            }
            self.release_held_nodes(now);
            for token in std::mem::take(&mut self.revisit) {
                self.dispatch(now, token, true, false, ReadMode::UntilWouldBlock);
            }
            self.handle_shell_timers(now);
            for (token, result, latency) in
                self.lock_tests.check_timeouts(self.poll.registry(), now)
            {
                self.core.on_cluster_lock_test(now, token, result, latency);
            }
            let backlog = ShellBacklog {
                clients: &self.clients,
                transport: &self.transport,
            };
            self.core.handle_timeout_with_backlog(now, &backlog);
            self.run_effects(now);
        }
        let (reason, code) = self.exit.unwrap_or((ExitReason::Fatal, 1));
        self.finish(code);
        (reason, code)
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.revisit.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = self.clock.now();
        [
            self.core.poll_timeout(),
            self.transport.next_deadline(),
            self.client_accept_retry,
            self.node_accept_retry,
            self.shutdown_deadline,
            self.lock_tests.next_deadline(),
            self.pacing.deadline(),
            Some(self.next_sweep),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|deadline| until(now, deadline))
    }

    fn dispatch(
        &mut self,
        now: Instant,
        token: Token,
        readable: bool,
        writable: bool,
        mode: ReadMode,
    ) {
        match token {
            clients::LISTENER_TOKEN => self.accept_clients(now),
            SIGNAL_TOKEN => self.handle_signals(now),
            STDIN_TOKEN => self.handle_stdin(now),
            tcp::LISTENER_TOKEN => self.accept_nodes(now),
            eventd::PIPE_TOKEN => self.check_eventd_alive(),
            eventd::SOCKET_TOKEN => self.eventd_ready(now, readable, writable),
            other => {
                if let Some((dir, pnn)) = tcp::classify(other) {
                    match dir {
                        LinkDir::Incoming => self.node_incoming_ready(now, pnn, mode),
                        LinkDir::Outgoing => {
                            self.node_outgoing_ready(now, pnn, readable, writable);
                        }
                    }
                } else if let Some(id) = clients::client_of(other) {
                    self.client_ready(now, id, readable, writable, mode);
                } else if let Some(id) = lock_test::test_of(other) {
                    if let Some((token, result, latency)) =
                        self.lock_tests.on_ready(self.poll.registry(), id, now)
                    {
                        self.core.on_cluster_lock_test(now, token, result, latency);
                    }
                }
            }
        }
        self.run_effects(now);
    }

    /// Executes queued effects until the core has none left. Effects that feed the core again
    /// (a closed client, a failed event) queue more effects, which the same loop picks up.
    fn run_effects(&mut self, now: Instant) {
        while let Some(effect) = self.core.poll_effect() {
            if self.exit.is_some() {
                debug!("Ignoring effect after exit: {effect:?}");
                continue;
            }
            self.execute(now, effect);
        }
    }

    fn execute(&mut self, now: Instant, effect: Effect) {
        match effect {
            Effect::SendClient { client, frame } => {
                if let Err(reason) = self.clients.send(client, frame) {
                    self.drop_client(now, client, &reason);
                } else {
                    self.pacing
                        .client_level(now, client, self.clients.pending_bytes(client));
                }
            }
            Effect::CloseClient { client } => self.close_client(now, client),
            Effect::SendNode { pnn, frame } => {
                if let Err(reason) = self.transport.send(pnn, frame) {
                    self.node_dead(now, pnn, &reason);
                }
            }
            Effect::ResetNode { pnn } => {
                info!("Tearing down connection to dead node :{pnn}");
                self.transport.restart(pnn, self.poll.registry(), now);
            }
            Effect::StartTransport => self.start_transport(now),
            Effect::RunEvent {
                id,
                event,
                args,
                timeout_s,
            } => {
                let sent = match &mut self.eventd {
                    Some(eventd) => eventd.run(self.poll.registry(), id, &event, &args, timeout_s),
                    None => Err("no event daemon".to_string()),
                };
                if let Err(reason) = sent {
                    error!("Failed to run event {event}: {reason}");
                    self.core.on_event_done(
                        now,
                        EventOutcome {
                            id,
                            result: libc::EIO,
                        },
                    );
                }
            }
            Effect::TestClusterLock { token, lock } => {
                let helper = self.cluster_mutex_helper.display().to_string();
                if let Err(e) =
                    self.lock_tests
                        .start(self.poll.registry(), token, &lock, &helper, now)
                {
                    error!("Failed to test the cluster lock: {e}");
                    self.core.on_cluster_lock_test(now, token, b'3', 0.0);
                }
            }
            Effect::StartRecoverd => self.start_recoverd(now),
            Effect::Repack(request) => self.start_repack(now, request),
            Effect::StopRepack => {
                if let Some((child, _)) = &self.repack {
                    let _ = child.signal(libc::SIGKILL);
                }
            }
            Effect::StopRecoverd => {
                if let Some(child) = &self.recoverd {
                    let _ = child.signal(libc::SIGTERM);
                }
            }
            Effect::SendArp { addr, iface } => {
                if let Err(e) = crate::server::takeover::system::send_arp(&addr, &iface) {
                    error!("Failed to send ARP on interface {iface}: {e}");
                }
            }
            Effect::SendTickleAck { src, dst } => {
                if let Err(e) = crate::server::takeover::system::send_tickle_ack(&src, &dst) {
                    error!(
                        "Failed to send TCP tickle ACK {src}:{} -> {dst}:{}: {e}",
                        src.port(),
                        dst.port()
                    );
                }
            }
            Effect::SetLogLevel { level } => {
                if let Some(logger) = self.logger {
                    logger.set_level(level);
                }
            }
            Effect::Exit { code } => {
                info!("Core finished; exiting with code {code}");
                self.exit = Some((ExitReason::Core, code));
            }
        }
    }

    /// Starts accepting clients and nodes and connecting out: stock adds the client accept
    /// handler right before it starts the transport, once the init event has run.
    fn start_transport(&mut self, now: Instant) {
        if self.transport.is_started() {
            return;
        }
        if let Err(e) = self.clients.register(self.poll.registry()) {
            error!("Failed to add daemon socket to event loop: {e}");
            self.exit = Some((ExitReason::Fatal, 1));
            return;
        }
        if let Err(e) = self.transport.start(self.poll.registry(), now) {
            error!("transport failed to start: {e}");
            self.exit = Some((ExitReason::Fatal, 1));
            return;
        }
        debug!("Transport started; accepting clients");
        self.transport.handle_timers(self.poll.registry(), now);
    }

    // --- clients -------------------------------------------------------------------------

    fn accept_clients(&mut self, now: Instant) {
        let (accepted, retry) = self.clients.accept(self.poll.registry());
        self.client_accept_retry = retry.then(|| now.saturating_add(ACCEPT_RETRY));
        for (id, pid) in accepted {
            self.core.on_client_connected(now, id, pid);
            self.run_effects(now);
        }
    }

    fn client_ready(
        &mut self,
        now: Instant,
        id: ClientId,
        readable: bool,
        writable: bool,
        mode: ReadMode,
    ) {
        if writable {
            if let Err(reason) = self.clients.flush(id) {
                self.drop_client(now, id, &reason);
                return;
            }
            self.pacing
                .client_level(now, id, self.clients.pending_bytes(id));
        }
        if !readable {
            return;
        }
        let outcome = self.clients.read(id, now, mode);
        loop {
            match self.clients.next_frame(id) {
                ClientFrame::None => break,
                ClientFrame::Frame(frame) => {
                    self.core.on_client_frame(now, id, &frame, &self.host);
                    self.run_effects(now);
                    if !self.clients.exists(id) {
                        return;
                    }
                }
                ClientFrame::Fatal(reason) => {
                    self.drop_client(now, id, &reason);
                    return;
                }
            }
        }
        match outcome {
            Ok(ReadOutcome::Drained) => {}
            Ok(ReadOutcome::BudgetSpent) => self.revisit.push(clients::client_token(id)),
            Ok(ReadOutcome::Eof) => {
                trace!("Client {id} disconnected");
                self.close_client(now, id);
            }
            Err(reason) => self.drop_client(now, id, &reason),
        }
    }

    fn drop_client(&mut self, now: Instant, id: ClientId, reason: &str) {
        let pid = self.clients.pid(id).unwrap_or(0);
        warn!("Closing client {id} (pid {pid}): {reason}");
        self.close_client(now, id);
    }

    fn close_client(&mut self, now: Instant, id: ClientId) {
        self.pacing.client_level(now, id, 0);
        if self.clients.close(id, self.poll.registry()) {
            self.core.on_client_closed(now, id);
        }
    }

    // --- nodes ---------------------------------------------------------------------------

    fn accept_nodes(&mut self, now: Instant) {
        let (connected, retry) = self.transport.accept(self.poll.registry());
        self.node_accept_retry = retry.then(|| now.saturating_add(ACCEPT_RETRY));
        for pnn in connected {
            self.node_connected(now, pnn);
        }
    }

    fn node_connected(&mut self, now: Instant, pnn: Pnn) {
        debug!("Both connections to node {pnn} are up");
        self.core.on_node_connected(now, pnn);
        self.run_effects(now);
    }

    /// Any failure of an established link: both directions are torn down and reconnected
    /// (`ctdb_node_dead` → `ctdb_tcp_restart`), and the core is told once.
    fn node_dead(&mut self, now: Instant, pnn: Pnn, reason: &str) {
        warn!("Connection to node {pnn} failed: {reason}");
        self.transport.restart(pnn, self.poll.registry(), now);
        self.core.on_node_disconnected(now, pnn);
    }

    fn node_incoming_ready(&mut self, now: Instant, pnn: Pnn, mode: ReadMode) {
        let Some(link) = self.transport.incoming_id(pnn) else {
            return;
        };
        if self.pacing.hold(now, pnn) {
            trace!("Holding back reads from node {pnn}: a client is far behind");
            return;
        }
        let outcome = self.transport.read_incoming(pnn, now, mode);
        loop {
            if self.transport.incoming_id(pnn) != Some(link) {
                return;
            }
            match self.transport.next_incoming_frame(pnn) {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    self.core.on_node_frame(now, pnn, &frame, &self.host);
                    self.run_effects(now);
                }
                Err(reason) => {
                    self.node_dead(now, pnn, &reason);
                    return;
                }
            }
        }
        match outcome {
            Ok(ReadOutcome::Drained) => {}
            Ok(ReadOutcome::BudgetSpent) => self.revisit.push(tcp::in_token(pnn)),
            Ok(ReadOutcome::Eof) => self.node_dead(now, pnn, "incoming connection closed"),
            Err(reason) => self.node_dead(now, pnn, &reason),
        }
    }

    /// Node links held back by [`NodeReadPacing`] are read again once the hold is over.
    fn release_held_nodes(&mut self, now: Instant) {
        for pnn in self.pacing.release(now) {
            let token = tcp::in_token(pnn);
            if !self.revisit.contains(&token) {
                self.revisit.push(token);
            }
        }
    }

    fn node_outgoing_ready(&mut self, now: Instant, pnn: Pnn, readable: bool, writable: bool) {
        match self
            .transport
            .outgoing_ready(pnn, self.poll.registry(), now, readable, writable)
        {
            LinkEvent::Quiet => {}
            LinkEvent::Connected => self.node_connected(now, pnn),
            LinkEvent::Dead(reason) => self.node_dead(now, pnn, &reason),
        }
    }

    // --- eventd --------------------------------------------------------------------------

    fn check_eventd_alive(&mut self) {
        let gone = self.eventd.as_ref().is_some_and(Eventd::pipe_closed);
        if gone {
            error!("Eventd went away - exiting");
            self.exit = Some((ExitReason::EventdDied, 1));
        }
    }

    fn eventd_ready(&mut self, now: Instant, readable: bool, writable: bool) {
        let Some(eventd) = &mut self.eventd else {
            return;
        };
        for outcome in eventd.socket_ready(self.poll.registry(), readable, writable) {
            self.core.on_event_done(now, outcome);
            self.run_effects(now);
        }
    }

    // --- signals, stdin, timers ----------------------------------------------------------

    fn handle_signals(&mut self, now: Instant) {
        loop {
            let Some(signals) = &mut self.signals else {
                return;
            };
            let info = match signals.read_signal() {
                Ok(Some(info)) => info,
                Ok(None) => return,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    error!("Reading signals failed: {e}");
                    return;
                }
            };
            let signo = i32::try_from(info.ssi_signo).unwrap_or(0);
            match Signal::try_from(signo) {
                Ok(Signal::SIGTERM | Signal::SIGINT) => {
                    self.request_shutdown(now, &format!("Received signal {signo}"), 0);
                }
                Ok(Signal::SIGHUP) => {
                    if let Some(logger) = self.logger {
                        if let Err(e) = logger.reopen() {
                            error!("Failed to reopen logs: {e}");
                        }
                    }
                    info!("Received SIGHUP, reopened logs");
                }
                Ok(Signal::SIGCHLD) => self.reap_children(),
                _ => debug!("Ignoring signal {signo}"),
            }
        }
    }

    /// The first request starts the core's shutdown sequence; a second one (or the grace
    /// period running out) ends the process without waiting for the core.
    fn request_shutdown(&mut self, now: Instant, why: &str, forced_code: i32) {
        if self.shutdown_deadline.is_some() {
            warn!("{why} while shutting down; exiting now");
            self.exit = Some((ExitReason::Forced, self.forced_code));
            return;
        }
        info!("{why}; shutting down");
        self.forced_code = forced_code;
        self.shutdown_deadline = Some(now.saturating_add(self.limits.shutdown_grace));
        self.core.on_shutdown_request(now);
    }

    fn reap_children(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
                Ok(status) => {
                    let Some(pid) = status.pid() else { return };
                    let pid = pid.as_raw();
                    let is_eventd = self.eventd.as_mut().is_some_and(|e| e.reaped(pid));
                    self.lock_tests.reaped(pid);
                    if self.repack.as_ref().is_some_and(|(c, _)| c.pid() == pid) {
                        if let Some((_, db_id)) = self.repack.take() {
                            let code = match status {
                                WaitStatus::Exited(_, code) => Some(code),
                                _ => None,
                            };
                            let now = self.clock.now();
                            self.core.on_repack_done(now, db_id, code);
                            self.run_effects(now);
                        }
                    }
                    if self.recoverd.as_ref().is_some_and(|c| c.pid() == pid) {
                        warn!("Recovery daemon (pid {pid}) exited: {status:?}");
                        self.recoverd = None;
                        let now = self.clock.now();
                        self.core.on_recoverd_exited(now);
                    }
                    if is_eventd {
                        warn!("Event daemon (pid {pid}) exited: {status:?}");
                    } else {
                        debug!("SIGCHLD from {pid}: {status:?}");
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    error!("waitpid failed: {e}");
                    return;
                }
            }
        }
    }

    /// Test mode: EOF on a piped stdin shuts the daemon down (stock's `stdin_handler`).
    /// Bytes that arrive are ignored.
    fn handle_stdin(&mut self, now: Instant) {
        if !self.watch_stdin {
            return;
        }
        use nix::poll::{PollFd, PollFlags, PollTimeout};
        // SAFETY: fd 0 stays open for the life of the process.
        let stdin = unsafe { std::os::fd::BorrowedFd::borrow_raw(0) };
        let eof = loop {
            let mut fds = [PollFd::new(stdin, PollFlags::POLLIN)];
            match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
                Ok(0) => break false,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break true,
            }
            // poll said readable, so this read cannot block.
            let mut buf = [0u8; 256];
            match nix::unistd::read(0, &mut buf) {
                Ok(0) => break true,
                Ok(_) | Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                Err(_) => break true,
            }
        };
        if eof {
            let _ = self.poll.registry().deregister(&mut SourceFd(&0));
            self.watch_stdin = false;
            error!("stdin closed, exiting");
            self.request_shutdown(now, "stdin closed", libc::EPIPE);
        }
    }

    fn handle_shell_timers(&mut self, now: Instant) {
        self.transport.handle_timers(self.poll.registry(), now);
        if self.client_accept_retry.is_some_and(|t| t <= now) {
            self.client_accept_retry = None;
            self.accept_clients(now);
        }
        if self.node_accept_retry.is_some_and(|t| t <= now) {
            self.node_accept_retry = None;
            self.accept_nodes(now);
        }
        if self.next_sweep <= now {
            self.next_sweep = now.saturating_add(SWEEP_INTERVAL);
            self.sweep_stalled(now);
            if self.heap_trim.due(now) {
                crate::common::heap::HeapTrim::trim();
            }
        }
        if self.shutdown_deadline.is_some_and(|t| t <= now) && self.exit.is_none() {
            error!(
                "Shutdown did not complete within {} s; exiting",
                self.limits.shutdown_grace.as_secs()
            );
            self.exit = Some((ExitReason::Forced, self.forced_code));
        }
    }

    /// Drops connections that have held an incomplete frame for too long.
    fn sweep_stalled(&mut self, now: Instant) {
        let Some(cutoff) = now
            .micros
            .checked_sub(
                u64::try_from(self.limits.partial_frame_timeout.as_micros()).unwrap_or(u64::MAX),
            )
            .map(Instant::from_micros)
        else {
            return;
        };
        for id in self.clients.stalled(cutoff) {
            self.drop_client(now, id, "incomplete packet timed out");
            self.run_effects(now);
        }
        for pnn in self.transport.stalled_incoming(cutoff) {
            self.node_dead(now, pnn, "incomplete packet timed out");
            self.run_effects(now);
        }
    }

    /// `ctdb_shutdown_sequence`'s tail: eventd stopped, transport closed, socket and pid
    /// file removed.
    /// Starts a repack helper: this binary in repack mode (see `database::repack`).
    fn start_repack(
        &mut self,
        now: Instant,
        request: crate::server::database::repack::RepackRequest,
    ) {
        let Some(exe) = self.recoverd_argv.as_ref().and_then(|a| a.first()).cloned() else {
            self.core.on_repack_done(now, request.db_id, None);
            return;
        };
        let mut argv = vec![exe];
        argv.extend(request.args());
        match crate::common::spawn::Spawn::from_argv(&argv).and_then(|s| s.spawn_child()) {
            Ok(child) => {
                debug!(
                    "Started repack helper (pid {}) for {}",
                    child.pid(),
                    request.path.display()
                );
                self.repack = Some((child, request.db_id));
            }
            Err(e) => {
                error!("Failed to start a repack helper: {e}");
                self.core.on_repack_done(now, request.db_id, None);
            }
        }
    }

    /// Starts the recovery daemon as a client of this daemon.
    fn start_recoverd(&mut self, now: Instant) {
        let Some(argv) = &self.recoverd_argv else {
            return;
        };
        match crate::common::spawn::Spawn::from_argv(argv).and_then(|s| s.spawn_child()) {
            Ok(child) => {
                info!("Started recovery daemon (pid {})", child.pid());
                self.recoverd = Some(child);
            }
            Err(e) => {
                error!("Failed to start the recovery daemon: {e}");
                self.core.on_recoverd_exited(now);
            }
        }
    }

    fn finish(&mut self, code: i32) {
        if let Some(recoverd) = self.recoverd.take() {
            let _ = recoverd.signal(libc::SIGTERM);
        }
        if let Some(eventd) = &mut self.eventd {
            eventd.stop();
        }
        self.transport.shutdown(self.poll.registry());
        self.clients.shutdown(self.poll.registry());
        if self.socket_identity.is_some()
            && socket_identity(&self.socket_path) == self.socket_identity
        {
            if let Err(e) = std::fs::remove_file(&self.socket_path) {
                warn!("Failed to remove {}: {e}", self.socket_path.display());
            }
        }
        self.pid_file = None;
        info!("Shutdown complete, exit code {code}");
    }
}
